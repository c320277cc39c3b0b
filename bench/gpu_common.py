"""Shared parts of bench/gpu_suite.py: settings (scales, model cases, targets), the run context and timing
helpers. Split out so each file of the suite stays readable (bench/gpu_sections.py: the sections)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfapr_ros.ros.env import apply_localhost_env  # noqa: E402

apply_localhost_env()  # before any rclpy import: DDS stays on this machine, our own domain id

SECTIONS = ("models", "localizer", "node", "train", "eval_bag")
DTYPES = ("fp32", "fp16", "bf16")
NA_CPU = "n/a (cpu)"


def _load_bench(name: str) -> ModuleType:
    """Import a sibling bench script as a module (bench/ is not a package), so its machinery is reused, not copied.

    Imported by its own name from bench/ on ``sys.path`` (not from a file spec under another name): bench/node.py
    starts its camera process with multiprocessing's ``spawn``, whose child re-imports the target's module by name
    with the parent's ``sys.path`` — a module only registered under an alias is not importable there.
    """
    bench_dir = str(ROOT / "bench")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    return importlib.import_module(name)


# ----------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Scale:
    """Sizes of one run. GPU: the issue's setting; quick: tiny models on the CPU; tiny: the test's cut of quick."""

    size: int  # model input px for models / localizer / node
    cameras: tuple[int, ...]
    iters: int
    warmup: int
    compile_budget_s: float  # compiled rows start only while less than this has been spent compiling
    deadline_s: float  # compiled rows also stop when the whole run nears this
    loc_iters: int
    node_seconds: float  # per paced step of the node sweep
    node_latency_samples: int
    node_cameras: int
    synth_frames: int
    synth_size: int
    train_px: int
    train_steps: int
    train_batch: int
    train_workers: int
    max_val: int
    proxy_iters: int


GPU_SCALE = Scale(size=224, cameras=(4, 10), iters=100, warmup=10, compile_budget_s=100.0, deadline_s=330.0,
                  loc_iters=50, node_seconds=4.0, node_latency_samples=50, node_cameras=10, synth_frames=500,
                  synth_size=128, train_px=128, train_steps=300, train_batch=32, train_workers=6, max_val=120,
                  proxy_iters=20)
QUICK_SCALE = Scale(size=32, cameras=(4, 10), iters=10, warmup=2, compile_budget_s=30.0, deadline_s=105.0,
                    loc_iters=10, node_seconds=2.0, node_latency_samples=20, node_cameras=10, synth_frames=40,
                    synth_size=48, train_px=32, train_steps=6, train_batch=4, train_workers=0, max_val=8,
                    proxy_iters=5)
TINY_SCALE = Scale(size=32, cameras=(4, 10), iters=3, warmup=1, compile_budget_s=0.0, deadline_s=50.0,
                   loc_iters=3, node_seconds=1.0, node_latency_samples=10, node_cameras=10, synth_frames=40,
                   synth_size=48, train_px=32, train_steps=2, train_batch=4, train_workers=0, max_val=4,
                   proxy_iters=2)

#: model overrides that shrink each backbone for the CPU (same backbone and fusion code, tiny widths)
_TPN_TINY = {"arch": "tiny", "width": 8, "d_model": 32, "num_heads": 2, "num_layers": 1, "dim_feedforward": 64,
             "fc_dim": 64}
_CNN_TINY = {"arch": "tiny", "width": 8, "fc_dim": 64}
_VIT_TINY = {"patch": 8, "d_model": 32, "num_layers": 1, "num_heads": 2, "dim_feedforward": 64, "fc_dim": 64}


@dataclass(frozen=True)
class ModelCase:
    """One backbone × fusion row group; ``target`` marks the input-fused models the latency targets apply to."""

    label: str
    preset: str
    fusion: dict[str, Any] | None
    quick: dict[str, Any]
    target: bool = False

    def config(self, num_cameras: int, size: int, quick: bool) -> dict[str, Any]:
        from mfapr_ros.models import preset

        cfg = preset(self.preset, num_cameras=num_cameras, image_size=size, **(self.quick if quick else {}))
        if self.fusion is not None:
            cfg["fusion"] = dict(self.fusion)
        return cfg


MODEL_CASES = (
    ModelCase("demo (transposenet input/tokens)", "demo", None, {}, target=True),
    ModelCase("transposenet input/tokens", "transposenet", {"position": "input", "mode": "tokens"}, _TPN_TINY,
              target=True),
    ModelCase("mapnet input/tile", "mapnet", {"position": "input", "mode": "tile"}, _CNN_TINY),
    ModelCase("mapnet late/fc-1", "mapnet_late", {"position": "late", "fc": "fc-1", "shared_weights": False},
              _CNN_TINY),
    ModelCase("vit input/tokens", "vit", {"position": "input", "mode": "tokens"}, _VIT_TINY),
)
#: per-bundle p99 limits (ms) of the input-fused model in fp16/bf16, by camera count (issue 13)
LATENCY_TARGET_MS = {4: 5.0, 10: 10.0}
NODE_OVERHEAD_TARGET = 0.20
EVAL_SPEEDUP_TARGET = 50.0


@dataclass
class Ctx:
    """Everything a section needs: device, scale, scratch folder, deadline, and results shared between sections."""

    device: Any  # torch.device
    scale: Scale
    quick: bool
    tmp: Path
    t_start: float
    compile_backend: str
    compile_mode: str | None  # torch.compile mode (None = default; reduce-overhead adds CUDA graphs)
    deploy_preset: str
    deploy_precision: str
    half: str  # the reduced precision the Localizer can run here: fp16 on CUDA, bf16 on the CPU
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def time_left(self) -> float:
        return self.scale.deadline_s - self.elapsed()


# ----------------------------------------------------------------------------------------------- helpers
def _sync(ctx: Ctx) -> None:
    if ctx.gpu:
        import torch

        torch.cuda.synchronize(ctx.device)


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), p)) if values else float("nan")


def _time_ms(ctx: Ctx, fn: Callable[[], Any], iters: int, warmup: int) -> list[float]:
    """Wall-clock ms per call, synchronised after each call (batch-1 latency as a caller sees it)."""
    for _ in range(warmup):
        fn()
    _sync(ctx)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(ctx)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _autocast(ctx: Ctx, dtype: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    from mfapr_ros.inference.localizer import PRECISIONS

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(ctx.device.type, dtype=PRECISIONS[dtype])


def _dtype_skip(ctx: Ctx, dtype: str) -> str | None:
    """Why ``dtype`` does not apply on this device (None = it applies)."""
    import torch

    if dtype == "fp16" and not ctx.gpu:
        return "fp16 not run on the CPU (slow/missing kernels; the Localizer turns it into fp32)"
    if dtype == "bf16" and ctx.gpu and not torch.cuda.is_bf16_supported():
        return "bf16 not supported by this GPU"
    return None


def _peak_mib(ctx: Ctx) -> float | None:
    if not ctx.gpu:
        return None
    import torch

    return torch.cuda.max_memory_allocated(ctx.device) / 2**20


def _reset_peak(ctx: Ctx) -> None:
    if ctx.gpu:
        import torch

        torch.cuda.reset_peak_memory_stats(ctx.device)


def _free(ctx: Ctx) -> None:
    import gc

    gc.collect()
    if ctx.gpu:
        import torch

        torch.cuda.empty_cache()


def _jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", quality=quality)
    return b.getvalue()


def _verdict(ctx: Ctx, ok: bool | None) -> str:
    if not ctx.gpu:
        return NA_CPU
    if ok is None:
        return "n/a (not measured)"
    return "pass" if ok else "fail"


# ----------------------------------------------------------------------------------------------- models
def _model_row(case: ModelCase, T: int, size: int, params_m: float, dtype: str, compiled: bool, cl: bool,
               **kw: Any) -> dict[str, Any]:
    return {"model": case.label, "preset": case.preset, "T": T, "px": size, "params_m": round(params_m, 3),
            "dtype": dtype, "compile": compiled, "channels_last": cl, **kw}


def _measure_model(ctx: Ctx, fwd: Callable[..., Any], T: int, dtype: str, iters: int, warmup: int
                   ) -> tuple[list[float], float]:
    """(latencies ms, seconds of the first call — the compile time for a compiled function)."""
    import torch

    S = ctx.shared["model_px"]
    x = torch.randn(1, T, 3, S, S, device=ctx.device)
    m = torch.ones(1, T, dtype=torch.bool, device=ctx.device)

    def call() -> None:
        with torch.inference_mode(), _autocast(ctx, dtype):
            fwd(x, m)

    t0 = time.perf_counter()
    call()
    _sync(ctx)
    first_s = time.perf_counter() - t0
    _reset_peak(ctx)
    return _time_ms(ctx, call, iters, warmup), first_s


def _build(ctx: Ctx, case: ModelCase, T: int) -> Any:
    import torch

    from mfapr_ros.models import build_model

    torch.manual_seed(0)
    return build_model(case.config(T, ctx.shared["model_px"], ctx.quick)).eval().to(ctx.device)
