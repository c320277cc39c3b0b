"""The optimizer, its learning-rate schedule and AMP precision, from the config (no state of their own to lose:
the schedule is a function of the step)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import ExperimentConfig

log = logging.getLogger("mfapr_training")


def lr_at(step: int, cfg: ExperimentConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant / step / cosine."""
    base, sc = cfg.optim.lr, cfg.schedule
    if sc.warmup_steps and step < sc.warmup_steps:
        return base * (step + 1) / sc.warmup_steps
    k = step - sc.warmup_steps
    if sc.name == "constant":
        return base
    if sc.name == "step":
        return base * sc.gamma ** (k // sc.step_size)
    span = max(1, total_steps - sc.warmup_steps)
    progress = min(1.0, k / span)
    floor = base * sc.min_lr_ratio
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: Sequence[nn.Parameter], cfg: ExperimentConfig,
                   weight_params: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Network parameters in group 0; the learned loss weights (sx, sq, …) in group 1 with ``loss.weights_lr``
    and no weight decay. Why their own group: Adam moves a parameter by about lr per step, so at a network lr of
    1e-4 the weights cannot travel the few units to their equilibrium within a run (they moved 0.35 in the old
    demo), and decaying them towards 0 biases the balance."""
    o = cfg.optim
    kw = dict(lr=o.lr, weight_decay=o.weight_decay)  # betas (0.9, 0.999), eps 1e-8: torch's defaults
    ids = {id(p) for p in weight_params}
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in ids]}]
    if weight_params:
        groups.append({"params": list(weight_params), "weight_decay": 0.0, "lr_scale": weights_lr_scale(cfg)})
    return torch.optim.AdamW(groups, **kw) if o.name == "adamw" else torch.optim.Adam(groups, **kw)


def weights_lr_scale(cfg: ExperimentConfig) -> float:
    """The loss weights' lr as a multiple of the network lr (the schedule scales both alike)."""
    return 1.0 if cfg.loss.weights_lr is None else cfg.loss.weights_lr / cfg.optim.lr


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls/convolutions natively (AVX512-BF16 or AMX), where CPU autocast pays;
    elsewhere oneDNN emulates them and bf16 is slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - an unknown torch build: treat as not native
            pass
    return False


def amp_dtype(cfg: ExperimentConfig, device: str) -> torch.dtype | None:
    """``None`` = full precision. ``auto`` picks bf16 on GPUs that support it (fp16 otherwise), off on CPU.

    On the CPU an explicit ``bf16`` is honoured where the CPU has native bfloat16 (:func:`cpu_has_native_bf16`):
    the demo's training loop 7.5 → 9.2 steps/s on this AVX512-BF16 machine (docs/training.md); without it, and for
    ``fp16``, training runs in fp32 with a warning (emulated bf16 and CPU fp16 are slower than fp32)."""
    mode = cfg.train.amp
    if not device.startswith("cuda"):
        if mode == "bf16" and cpu_has_native_bf16():
            return torch.bfloat16
        if mode in ("bf16", "fp16"):
            why = ("this CPU has no native bfloat16 (AVX512-BF16 or AMX): emulated, it is slower than fp32"
                   if mode == "bf16" else "no fp16 autocast worth it on a CPU; bf16 is, on CPUs with native bf16")
            log.warning("train.amp=%s ignored on %s (%s); training in fp32", mode, device, why)
        return None
    if mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16
