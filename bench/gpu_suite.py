#!/usr/bin/env python3
"""GPU figures in one command: what the robot runs, measured in minutes, printed as one table and written as JSON.

    .venv/bin/python bench/gpu_suite.py                    # on a CUDA machine: <= 6 min, 224 px, the paper's models
    .venv/bin/python bench/gpu_suite.py --quick            # the same code paths on the CPU at tiny sizes, <= 2 min
    .venv/bin/python bench/gpu_suite.py --quick --tiny     # what test/test_gpu_suite.py runs (< 60 s)
    .venv/bin/python bench/gpu_suite.py --only models,node # a selection (eval_bag needs train: added automatically)

Sections (issue 13), each a list of rows in the JSON and in the table:

* ``models``: batch-1 latency p50/p99 per backbone × fusion (the demo model, TransPoseNet input/tokens, MapNet
  input/tile and late/fc-1, ViT input/tokens) at T = 4 and 10 cameras in fp32/fp16/bf16, eager and
  ``torch.compile``, default layout and channels_last, with peak GPU memory. Times are wall clock around one call
  followed by ``torch.cuda.synchronize()`` (what a caller waits for, launch overhead included). Compiled rows run
  last, inside a compile budget and the suite's deadline, so a slow compiler cannot push the run past 6 minutes;
  rows that do not fit (or do not apply: fp16 on the CPU, bf16 without support) are kept with the reason.
* ``localizer``: :class:`~mfapr_ros.inference.localizer.Localizer` end to end per bundle (JPEG decode + preprocess +
  model + de-normalisation) at T = 4 and 10, JPEG decoded on the device (nvjpeg, ``decode_compressed(device=cuda)``)
  vs on the CPU, fp32 and half precision.
* ``node``: ``localize_node`` over loopback DDS with 10 compressed cameras paced at 30 Hz, through
  ``bench/node.py``'s ``run`` (imported, not copied): sustained poses/s, end-to-end p50/p99, and the share of time
  outside the model (decode + sync + publish per bundle against the inference time), with ``decode_on_device`` off
  and on.
* ``train``: the demo recipe at a larger scale through the CLI (``mfapr synth`` then ``mfapr train --config demo``
  with ``--set`` overrides, so the suite does not depend on trainer internals) with AMP; images/s from the trainer's
  own log, plus a model-only proxy (synthetic batch, same AMP) that shows the data-loading ceiling.
* ``eval_bag``: offline ``evaluate_bag`` on the trained model's query bag on the GPU and on the CPU in the same run
  (bundles/s, × real time, query error).

Targets (issue 13) are pass/fail columns on a GPU and ``n/a (cpu)`` in ``--quick``: the 4-camera input-fused model
<= 5 ms p99 in fp16/bf16 (10 cameras <= 10 ms), node overhead <= 20 % of model time at 10 cameras, offline evaluation
>= 50x real time on the GPU. Exit status 1 when a section failed (its error is in the JSON and under the table).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfapr_ros.ros.env import apply_localhost_env, localhost_env  # noqa: E402

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


def section_models(ctx: Ctx) -> dict[str, Any]:
    """Eager rows now; compiled rows are queued in ``ctx.shared`` and run by :func:`models_compiled` at the end."""
    import torch

    sc = ctx.scale
    ctx.shared["model_px"] = sc.size
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, int, str, bool]] = []  # (case index, T, dtype, channels_last) for compiled rows
    for ci, case in enumerate(MODEL_CASES):
        for T in sc.cameras:
            model = _build(ctx, case, T)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            on_dev = all(p.device.type == ctx.device.type for p in model.parameters())
            has_conv = any(isinstance(mod, torch.nn.Conv2d) for mod in model.modules())
            ctx.shared.setdefault("model_params", {})[(ci, T)] = (params, has_conv)
            for cl in (False, True):
                if cl and has_conv:
                    model = model.to(memory_format=torch.channels_last)
                for dtype in DTYPES:
                    pending.append((ci, T, dtype, cl))
                    why = _dtype_skip(ctx, dtype) or (None if has_conv or not cl else "no Conv2d layer")
                    if why:
                        rows.append(_model_row(case, T, sc.size, params, dtype, False, cl, skipped=why))
                        continue
                    try:
                        ts, _ = _measure_model(ctx, model.forward_unchecked, T, dtype, sc.iters, sc.warmup)
                    except Exception as e:  # noqa: BLE001 - one failing mode is a finding, not the end of the run
                        rows.append(_model_row(case, T, sc.size, params, dtype, False, cl,
                                               failed=f"{type(e).__name__}: {e}"))
                        continue
                    rows.append(_model_row(case, T, sc.size, params, dtype, False, cl, p50_ms=_pct(ts, 50),
                                           p99_ms=_pct(ts, 99), peak_mib=_peak_mib(ctx), n=len(ts),
                                           on_device=on_dev))
            del model
            _free(ctx)
    # compiled rows, most wanted first: the reduced precision the targets judge (fp16 on a GPU, bf16 on the CPU,
    # where fp16 is skipped), default layout, input-fused target models; fp32 and channels_last after
    order = {"fp16": 0, "bf16": 1, "fp32": 2} if ctx.gpu else {"bf16": 0, "fp32": 1, "fp16": 2}
    pending.sort(key=lambda r: (order[r[2]], r[3], not MODEL_CASES[r[0]].target, r[0], r[1]))
    ctx.shared["compile_pending"] = pending
    return {"rows": rows, "timing": "wall clock per call + torch.cuda.synchronize(); forward_unchecked (no input "
                                    "validation) so eager and compiled rows run the same graph",
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def models_compiled(ctx: Ctx, section: dict[str, Any]) -> None:
    """The queued ``torch.compile`` rows, while the compile budget and the deadline allow (skipped rows say why)."""
    import torch

    sc = ctx.scale
    spent, done, slowest = 0.0, 0, 0.0
    for ci, T, dtype, cl in ctx.shared.get("compile_pending", []):
        case = MODEL_CASES[ci]
        params, has_conv = ctx.shared["model_params"][(ci, T)]
        why = _dtype_skip(ctx, dtype) or (None if has_conv or not cl else "no Conv2d layer")
        if why is None and done and spent >= sc.compile_budget_s:
            why = f"compile budget used up ({spent:.0f} of {sc.compile_budget_s:.0f} s; --compile-budget)"
        if why is None and done and ctx.time_left() < max(slowest, 5.0):
            why = f"suite deadline ({sc.deadline_s:.0f} s) too close for another compile"
        if why:
            section["rows"].append(_model_row(case, T, sc.size, params, dtype, True, cl, skipped=why))
            continue
        model = None
        try:
            model = _build(ctx, case, T)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            torch._dynamo.reset()
            fwd = torch.compile(model.forward_unchecked, backend=ctx.compile_backend, mode=ctx.compile_mode,
                                dynamic=False)
            ts, first_s = _measure_model(ctx, fwd, T, dtype, sc.iters, sc.warmup)
            row = _model_row(case, T, sc.size, params, dtype, True, cl, p50_ms=_pct(ts, 50), p99_ms=_pct(ts, 99),
                             peak_mib=_peak_mib(ctx), n=len(ts), compile_s=first_s,
                             backend=ctx.compile_backend + (f"/{ctx.compile_mode}" if ctx.compile_mode else ""))
        except Exception as e:  # noqa: BLE001
            first_s = 0.0
            row = _model_row(case, T, sc.size, params, dtype, True, cl, failed=f"{type(e).__name__}: {e}"[:300])
        section["rows"].append(row)
        spent += first_s
        slowest = max(slowest, first_s)
        done += 1
        del model
        torch._dynamo.reset()
        _free(ctx)
    section["compile"] = {"backend": ctx.compile_backend, "spent_s": spent, "rows_compiled": done,
                          "budget_s": sc.compile_budget_s}


# ----------------------------------------------------------------------------------------------- localizer
def section_localizer(ctx: Ctx) -> dict[str, Any]:
    """Localizer.infer per bundle with JPEG decode on the CPU and on the device (nvjpeg)."""
    import torch

    from mfapr_ros.core.images import decode_compressed
    from mfapr_ros.inference.localizer import Localizer

    bench_node, bench_decode = _load_bench("node"), _load_bench("decode")
    sc = ctx.scale
    rows: list[dict[str, Any]] = []
    for T in sc.cameras:
        ck = bench_node.make_checkpoint(ctx.tmp / f"localizer{T}", T, sc.size, ctx.deploy_preset)
        jpegs = [_jpeg(bench_decode.scene(sc.size, seed=i)) for i in range(T)]
        for prec in ("fp32", ctx.half):
            loc = Localizer(str(ck), device=str(ctx.device), precision=prec, strict=True, warmup=2)
            t_ref = None
            for where in ("cpu", "device"):
                base = {"T": T, "px": sc.size, "preset": ctx.deploy_preset, "precision": loc.precision,
                        "decode": where, "localizer_device": str(loc.device)}
                if where == "device" and not ctx.gpu:
                    rows.append({**base, "skipped": "n/a (cpu): nvjpeg decode needs a CUDA device"})
                    continue
                dec_dev = ctx.device if where == "device" else None
                dec, inf, tot = [], [], []
                fallback = False
                pose = None
                stamp = 0
                _reset_peak(ctx)
                for i in range(sc.warmup + sc.loc_iters):
                    t0 = time.perf_counter()
                    imgs = [decode_compressed("jpeg", j, device=dec_dev) for j in jpegs]
                    _sync(ctx)
                    t1 = time.perf_counter()
                    pose = loc.infer(imgs, stamp)  # returns numpy: synchronised
                    t2 = time.perf_counter()
                    stamp += 33_333_333
                    if where == "device":
                        fallback |= not all(isinstance(im, torch.Tensor) and im.is_cuda for im in imgs)
                    if i >= sc.warmup:
                        dec.append((t1 - t0) * 1e3)
                        inf.append((t2 - t1) * 1e3)
                        tot.append((t2 - t0) * 1e3)
                assert pose is not None
                row = {**base, "p50_ms": _pct(tot, 50), "p99_ms": _pct(tot, 99), "decode_p50_ms": _pct(dec, 50),
                       "infer_p50_ms": _pct(inf, 50), "infer_p99_ms": _pct(inf, 99),
                       "bundles_per_s": 1e3 / _pct(tot, 50), "peak_mib": _peak_mib(ctx), "n": len(tot),
                       "decode_fell_back_to_cpu": fallback}
                if t_ref is None:
                    t_ref = pose.t
                else:  # nvjpeg and libjpeg round differently; a large difference would be a bug
                    row["t_diff_vs_cpu_decode_m"] = float(np.abs(pose.t - t_ref).max())
                rows.append(row)
            del loc
            _free(ctx)
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------- node
class _FixedRate(float):
    """A ``fractions`` entry for ``bench/node.py``'s ``run`` that paces at a fixed rate.

    ``run`` paces each sweep step at ``model-only rate × fraction`` (its sustained-rate sweep); the camera rate of
    issue 13 is absolute (30 Hz). Multiplying by this value yields the value itself, so ``run`` — imported, not
    copied — drives the node at 30 Hz whatever model-only rate it measured. The offered rate it reports is measured.
    """

    def __mul__(self, other: object) -> float:
        return float(self)

    __rmul__ = __mul__


@contextlib.contextmanager
def _node_params(extra: dict[str, Any], seen: list[Any]) -> Iterator[None]:
    """Add parameters to the LocalizeNode that ``bench/node.py``'s ``run`` builds (it has no knob for
    ``decode_on_device`` / ``precision`` / ``strict_device``), and keep the node so its devices can be checked."""
    from rclpy.parameter import Parameter

    import mfapr_ros.ros.localize_node as node_mod

    base = node_mod.LocalizeNode

    class _Node(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            kw["parameter_overrides"] = [*kw.get("parameter_overrides", []),
                                         *(Parameter(k, value=v) for k, v in extra.items())]
            super().__init__(*args, **kw)
            seen.append(self)

    with mock.patch.object(node_mod, "LocalizeNode", _Node):
        yield


def section_node(ctx: Ctx) -> dict[str, Any]:
    """localize_node over loopback DDS, N compressed cameras paced at 30 Hz, decode on the CPU and on the device."""
    bench_node = _load_bench("node")
    sc = ctx.scale
    T, hz = sc.node_cameras, 30.0
    prec = ctx.deploy_precision
    fractions = (_FixedRate(hz), 1.0)  # 30 Hz, then the model-only rate (the max sustained rate)
    rows: list[dict[str, Any]] = []
    for on_device in (False, True):
        base = {"cameras": T, "px": sc.size, "transport": "compressed", "preset": ctx.deploy_preset,
                "precision": prec, "decode_on_device": on_device, "target_hz": hz}
        if on_device and not ctx.gpu:
            rows.append({**base, "skipped": "n/a (cpu): decode_on_device needs a CUDA inference device"})
            continue
        seen: list[Any] = []
        extra = {"decode_on_device": on_device, "precision": prec, "strict_device": ctx.gpu}
        with _node_params(extra, seen):
            r = bench_node.run(T, sc.size, "compressed", sc.node_seconds, str(ctx.device), ctx.deploy_preset,
                               sc.node_latency_samples, threads=1, fractions=fractions)
        node = seen[-1] if seen else None
        at30, full = r["sweep"][0], r["sweep"][-1]
        overhead = r["decode_p50"] + T * r["sync_p50"] + r["publish_p50"]  # decode is per bundle, sync per message
        model_ms = r["inference_p50"]
        rows.append({
            **base, "p50_ms": r["e2e_p50"], "p99_ms": r["e2e_p99"], "latency_n": r["lat_n"],
            "offered_hz": at30["offered"], "poses_hz": at30["poses"],
            "kept": at30["poses"] / at30["offered"] if at30["offered"] else 0.0,
            "stale_at_30hz": at30["stale"], "sync_drops_at_30hz": at30["sync_drops"],
            "max_sustained_hz": r["sustained_hz"], "offered_max_hz": full["offered"], "model_only_hz": r["baseline_hz"],
            "decode_per_bundle_p50_ms": r["decode_p50"], "sync_per_message_p50_ms": r["sync_p50"],
            "wait_p50_ms": r["wait_p50"],
            "publish_p50_ms": r["publish_p50"], "inference_p50_ms": model_ms, "inference_p99_ms": r["inference_p99"],
            "overhead_ms": overhead, "overhead_vs_model": overhead / model_ms if model_ms > 0 else float("inf"),
            "outside_model_share_e2e": 1.0 - model_ms / r["e2e_p50"] if r["e2e_p50"] > 0 else float("nan"),
            "node_device": str(getattr(node, "device", "?")),
            "decode_device": str(getattr(node, "_decode_device", None)),
        })
    return {"rows": rows, "note": "overhead = decode (per bundle, after the synchronizer) + cameras × sync (per "
                                  "message) + publish, p50, against the node's inference time with one bundle in "
                                  "flight"}


# ----------------------------------------------------------------------------------------------- train
def _cli(args: list[str], log: Path, timeout: float) -> tuple[float, str]:
    """Run ``mfapr <args>`` as a child (the CLI is the stable interface); returns (seconds, output)."""
    t0 = time.perf_counter()
    env = localhost_env(int(os.environ["ROS_DOMAIN_ID"]))
    proc = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    log.write_text(out)
    if proc.returncode != 0:
        raise RuntimeError(f"mfapr {args[0]} failed (exit {proc.returncode}): ...{out[-1500:]}")
    return time.perf_counter() - t0, out


def _train_proxy(ctx: Ctx, amp: str | None) -> dict[str, Any]:
    """Forward + backward + AdamW of the demo model on a synthetic batch under the same AMP: the data-free rate."""
    import torch

    from mfapr_ros.inference.localizer import PRECISIONS
    from mfapr_ros.models import build_model, preset

    sc = ctx.scale
    torch.manual_seed(0)
    model = build_model(preset("demo", image_size=sc.train_px, num_cameras=4)).train().to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    B = sc.train_batch * 3  # the recipe's samples hold data.steps = 3 bundles each
    x = torch.randn(B, 4, 3, sc.train_px, sc.train_px, device=ctx.device)
    m = torch.ones(B, 4, dtype=torch.bool, device=ctx.device)

    def step() -> None:
        with torch.autocast(ctx.device.type, dtype=PRECISIONS[amp] if amp else torch.float32, enabled=bool(amp)):
            out = model(x, m)
            loss = out["t_norm"].float().pow(2).mean() + (1 - out["q"][:, 0].float()).mean()
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    ts = _time_ms(ctx, step, sc.proxy_iters, 2)
    return {"images_per_s": B * 4 / (_pct(ts, 50) / 1e3), "step_p50_ms": _pct(ts, 50), "batch_bundles": B}


def section_train(ctx: Ctx) -> dict[str, Any]:
    """`mfapr synth` + `mfapr train --config demo` at a larger scale with AMP; images/s from the trainer's log."""
    import torch

    sc = ctx.scale
    world, run = ctx.tmp / "synth", ctx.tmp / "train"
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))  # render processes; the loader gets sc.train_workers
    synth_s, _ = _cli(["synth", "--out", str(world), "--rig", "ring4", "--frames", str(sc.synth_frames),
                       "--size", str(sc.synth_size), "--transport", "compressed", "--bags", "query",
                       "--query-direction", "forward", "--seed", "0", "--quiet", "--workers", str(workers)],
                      ctx.tmp / "synth.log", 600)
    amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if ctx.gpu else None
    sets = [f"data.root={world}", f"train.max_steps={sc.train_steps}", "train.epochs=1000",
            f"train.batch_size={sc.train_batch}", f"data.max_val={sc.max_val}", f"preprocess.resize={sc.train_px}",
            f"preprocess.crop={sc.train_px}", f"data.num_workers={sc.train_workers}", "train.tensorboard=false",
            "train.progress=false", f"train.log_every={10 if ctx.gpu else 1}", "train.ckpt_every=0",
            f"train.device={'cuda' if ctx.gpu else 'cpu'}"]
    if amp:
        sets.append(f"train.amp={amp}")
    args = ["train", "--config", "demo", "--out", str(run)]
    for s in sets:
        args += ["--set", s]
    train_s, out = _cli(args, ctx.tmp / "train.log", 900)
    rates = []
    with (run / "scalars.csv").open() as f:
        for r in csv.DictReader(f):
            if r["name"] == "train/images_per_s":
                rates.append(float(r["value"]))
    steady = rates[1:] or rates  # the first logged window holds start-up (data loader, CUDA/cuDNN warm-up)
    summary = json.loads((run / "summary.json").read_text())
    hist = summary.get("history") or [{}]
    dev = re.search(r"device (\S+?),", out)
    ctx.shared["train_ckpt"] = run / "best.json"
    ctx.shared["query_bag"] = world / "bags" / "query"
    row = {"case": "demo recipe", "px": sc.train_px, "steps": summary.get("global_step"), "batch": sc.train_batch,
           "amp": amp or "off (cpu)", "images_per_s": float(np.median(steady)) if steady else float("nan"),
           "synth_s": synth_s, "train_wall_s": train_s, "synth_frames": sc.synth_frames,
           "val_median_t_m": hist[-1].get("median_t"), "val_median_r_deg": hist[-1].get("median_r"),
           "train_device": dev.group(1) if dev else "?"}
    proxy = {"case": "model-only proxy (synthetic batch)", "px": sc.train_px, "amp": amp or "off (cpu)",
             **_train_proxy(ctx, amp)}
    _free(ctx)
    return {"rows": [row, proxy], "overrides": sets}


# ----------------------------------------------------------------------------------------------- eval-bag
def section_eval_bag(ctx: Ctx) -> dict[str, Any]:
    """evaluate_bag on the trained model's query bag, GPU and CPU in the same run (one warm-up pass each)."""
    from mfapr_ros.evaluation import compute_metrics
    from mfapr_ros.evaluation.eval_bag import evaluate_bag
    from mfapr_ros.inference.localizer import Localizer

    ck, bag = ctx.shared["train_ckpt"], ctx.shared["query_bag"]
    rows: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    for dev in ("cuda", "cpu"):
        # evaluate_bag calls decode_bundles without a device, so JPEGs are decoded on the CPU even for a CUDA run
        base = {"device": dev, "batch": 16, "decode": "cpu (evaluate_bag passes no device to decode_bundles)"}
        if dev == "cuda" and not ctx.gpu:
            rows.append({**base, "skipped": "n/a (cpu): no CUDA device in this run"})
            continue
        loc = Localizer(str(ck), device=dev, strict=True)
        evaluate_bag(ck, bag, batch=16, max_duration_s=1.0, progress=False, localizer=loc)  # warm-up
        res = evaluate_bag(ck, bag, batch=16, progress=False, localizer=loc)
        met = compute_metrics(res.t_gt, res.q_gt, res.t_est, res.q_est)
        rates[dev] = res.bundles_per_s
        rows.append({**base, "bundles": res.bundles, "bundles_per_s": res.bundles_per_s,
                     "x_real_time": res.speedup, "wall_s": res.wall_seconds, "inference_s": res.infer_seconds,
                     "query_median_t_m": met["translation_m"]["median"],
                     "query_median_r_deg": met["rotation_deg"]["median"], "localizer_device": str(loc.device)})
        del loc
        _free(ctx)
    if "cuda" in rates:
        rows[0]["gpu_vs_cpu"] = rates["cuda"] / rates["cpu"]
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------- targets
def targets(ctx: Ctx, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the best configuration measured (pass/fail on a GPU, n/a on the CPU)."""
    out: list[dict[str, Any]] = []
    mrows = [r for r in (doc.get("models") or {}).get("rows", []) if "p99_ms" in r]
    for case in (c for c in MODEL_CASES if c.target):
        for T, limit in LATENCY_TARGET_MS.items():
            cand = [r for r in mrows if r["model"] == case.label and r["T"] == T and r["dtype"] in ("fp16", "bf16")]
            best = min(cand, key=lambda r: r["p99_ms"]) if cand else None
            out.append({"target": f"{case.label} T={T} p99 <= {limit:g} ms (fp16/bf16)",
                        "value": best["p99_ms"] if best else None, "limit": limit,
                        "best_mode": (f"{best['dtype']}{' compile' if best['compile'] else ''}"
                                      f"{' channels_last' if best['channels_last'] else ''}") if best else None,
                        "result": _verdict(ctx, best["p99_ms"] <= limit if best else None)})
    nrows = [r for r in (doc.get("node") or {}).get("rows", []) if "overhead_vs_model" in r]
    best = min(nrows, key=lambda r: r["overhead_vs_model"]) if nrows else None
    out.append({"target": f"node overhead (decode+sync+publish) <= {NODE_OVERHEAD_TARGET:.0%} of model time, "
                          f"{ctx.scale.node_cameras} cameras",
                "value": best["overhead_vs_model"] if best else None, "limit": NODE_OVERHEAD_TARGET,
                "best_mode": f"decode_on_device={best['decode_on_device']}" if best else None,
                "result": _verdict(ctx, best["overhead_vs_model"] <= NODE_OVERHEAD_TARGET if best else None)})
    erows = [r for r in (doc.get("eval_bag") or {}).get("rows", []) if r.get("device") == "cuda" and "x_real_time" in r]
    out.append({"target": f"offline eval-bag >= {EVAL_SPEEDUP_TARGET:g}x real time on the GPU",
                "value": erows[0]["x_real_time"] if erows else None, "limit": EVAL_SPEEDUP_TARGET, "best_mode": None,
                "result": _verdict(ctx, erows[0]["x_real_time"] >= EVAL_SPEEDUP_TARGET if erows else None)})
    return out


# ----------------------------------------------------------------------------------------------- table
def _f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{nd}f}"
    return str(v)


def table_rows(ctx: Ctx, doc: dict[str, Any]) -> list[list[str]]:
    """One table for every section: section | case | mode | p50 | p99 | rate | peak MiB | note | target | result."""
    out: list[list[str]] = []

    def skip_note(r: dict[str, Any]) -> str:
        return f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r['failed']}" if "failed" in r else ""

    mrows = sorted((doc.get("models") or {}).get("rows", []),
                   key=lambda r: ([c.label for c in MODEL_CASES].index(r["model"]), r["T"], DTYPES.index(r["dtype"]),
                                  r["compile"], r["channels_last"]))
    for r in mrows:
        mode = f"{r['dtype']}{' +compile' if r['compile'] else ''}{' +CL' if r['channels_last'] else ''}"
        tgt, res = "", ""
        case = next(c for c in MODEL_CASES if c.label == r["model"])
        if case.target and r["dtype"] in ("fp16", "bf16") and r["T"] in LATENCY_TARGET_MS:
            tgt = f"p99 <= {LATENCY_TARGET_MS[r['T']]:g} ms"
            res = _verdict(ctx, r["p99_ms"] <= LATENCY_TARGET_MS[r["T"]] if "p99_ms" in r else None)
        note = skip_note(r) or f"{r['params_m']:.2f} M params" + (
            f", compile {r['compile_s']:.1f} s ({r['backend']})" if r.get("compile_s") is not None else "")
        out.append(["models", f"{r['model']} T={r['T']} {r['px']}px", mode, _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                    _f(1e3 / r["p50_ms"], 0) if r.get("p50_ms") else "–", _f(r.get("peak_mib"), 0), note, tgt, res])
    for r in (doc.get("localizer") or {}).get("rows", []):
        note = skip_note(r) or (f"decode {_f(r['decode_p50_ms'])} + infer {_f(r['infer_p50_ms'])} ms"
                                + (", DECODE FELL BACK TO CPU" if r.get("decode_fell_back_to_cpu") else "")
                                + (f", max Δt vs cpu decode {r['t_diff_vs_cpu_decode_m']:.1e} m"
                                   if "t_diff_vs_cpu_decode_m" in r else ""))
        out.append(["localizer", f"{r['preset']} T={r['T']} {r['px']}px jpeg",
                    f"{r['precision']}, decode {r['decode']}", _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                    _f(r.get("bundles_per_s"), 0), _f(r.get("peak_mib"), 0), note, "", ""])
    for r in (doc.get("node") or {}).get("rows", []):
        tgt = f"overhead <= {NODE_OVERHEAD_TARGET:.0%} of model"
        if "skipped" in r:
            out.append(["node", f"{r['cameras']} cams × 30 Hz", f"decode_on_device={r['decode_on_device']}", "–", "–",
                        "–", "–", skip_note(r), tgt, NA_CPU if not ctx.gpu else "n/a"])
            continue
        note = (f"offered {r['offered_hz']:.1f}/s kept {r['kept']:.0%}; max sustained {r['max_sustained_hz']:.1f}/s "
                f"(model alone {r['model_only_hz']:.1f}/s); overhead {r['overhead_ms']:.2f} ms = "
                f"{r['overhead_vs_model']:.0%} of model {r['inference_p50_ms']:.2f} ms; outside model "
                f"{r['outside_model_share_e2e']:.0%} of e2e; device {r['node_device']}")
        out.append(["node", f"{r['cameras']} cams × 30 Hz {r['px']}px jpeg", f"{r['precision']}, decode_on_device="
                    f"{r['decode_on_device']}", _f(r["p50_ms"]), _f(r["p99_ms"]), _f(r["poses_hz"], 1), "–", note,
                    tgt, _verdict(ctx, r["overhead_vs_model"] <= NODE_OVERHEAD_TARGET)])
    for r in (doc.get("train") or {}).get("rows", []):
        if "steps" in r:
            note = (f"{r['steps']} steps batch {r['batch']} in {r['train_wall_s']:.0f} s (synth {r['synth_s']:.0f} s),"
                    f" device {r['train_device']}, val median {_f(r['val_median_t_m'])} m / "
                    f"{_f(r['val_median_r_deg'], 1)}°")
        else:
            note = f"step p50 {r['step_p50_ms']:.1f} ms, {r['batch_bundles']} bundles × 4 cameras"
        out.append(["train", f"{r['case']} {r['px']}px", f"amp {r['amp']}", "–", "–",
                    _f(r["images_per_s"], 0) + " img/s", "–", note, "", ""])
    for r in (doc.get("eval_bag") or {}).get("rows", []):
        tgt = f">= {EVAL_SPEEDUP_TARGET:g}x real time" if r["device"] == "cuda" else ""
        if "skipped" in r:
            out.append(["eval_bag", "query bag", r["device"], "–", "–", "–", "–", skip_note(r), tgt,
                        NA_CPU if tgt else ""])
            continue
        note = (f"{r['x_real_time']:.1f}x real time, {r['bundles']} bundles, inference {r['inference_s']:.2f} of "
                f"{r['wall_s']:.2f} s; query median {_f(r['query_median_t_m'])} m / {_f(r['query_median_r_deg'], 1)}°"
                + (f"; GPU/CPU {r['gpu_vs_cpu']:.1f}x" if "gpu_vs_cpu" in r else ""))
        out.append(["eval_bag", "query bag", f"{r['device']}, batch {r['batch']}", "–", "–",
                    _f(r["bundles_per_s"], 1) + " bundles/s", "–", note, tgt,
                    _verdict(ctx, r["x_real_time"] >= EVAL_SPEEDUP_TARGET) if tgt else ""])
    for t in doc.get("targets", []):
        out.append(["target", t["target"], t["best_mode"] or "", "–", "–", _f(t["value"], 3), "–", "", "",
                    t["result"]])
    return out


def print_table(rows: list[list[str]]) -> None:
    head = ["section", "case", "mode", "p50 ms", "p99 ms", "rate /s", "peak MiB", "note", "target", "result"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


# ----------------------------------------------------------------------------------------------- main
def _finite_json(x: Any, path: str, bad: list[str]) -> Any:
    """JSON-safe copy: NaN/inf become null and their paths are listed (a non-finite figure is a finding)."""
    if isinstance(x, dict):
        return {str(k): _finite_json(v, f"{path}.{k}", bad) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_json(v, f"{path}[{i}]", bad) for i, v in enumerate(x)]
    if isinstance(x, float | np.floating):
        if not math.isfinite(float(x)):
            bad.append(path)
            return None
        return float(x)
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def machine_info(ctx: Ctx) -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(ctx.device), "quick": ctx.quick, "compile_backend": ctx.compile_backend,
            "deploy_preset": ctx.deploy_preset, "deploy_precision": ctx.deploy_precision,
            "ros_domain_id": os.environ.get("ROS_DOMAIN_ID")}
    if ctx.gpu:
        p = torch.cuda.get_device_properties(ctx.device)
        info.update(gpu=torch.cuda.get_device_name(ctx.device), gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Sections: " + ", ".join(SECTIONS) + ". Figures, not assertions; targets are "
                                "judged only on a GPU.")
    p.add_argument("--quick", action="store_true", help="CPU, tiny models and sizes: the same code paths in <= 2 min")
    p.add_argument("--tiny", action="store_true", help="with --quick: the cut the test runs (< 60 s)")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections (default all)")
    p.add_argument("--json", default=None, help="JSON path (default out/gpu_suite/{gpu,quick}.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N; --quick forces cpu")
    p.add_argument("--compile-budget", type=float, default=None, help="seconds of torch.compile before compiled "
                   "rows are skipped (default 100 on a GPU, 15 quick)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor on CUDA; "
                   "aot_eager on the CPU, where inductor needs ~1 min of C++ builds per graph on 2 cores)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per model row (default 100 GPU, 10 quick)")
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps of the training run (default 300 "
                   "GPU, 6 quick)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode: default, reduce-overhead (CUDA "
                   "graphs: what batch-1 latency of small models gains most from), max-autotune-no-cudagraphs")
    p.add_argument("--deploy-preset", default=None, help="model of the localizer/node sections (default "
                   "transposenet at 224 px on a GPU, tiny on the CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 with --quick: on a shared "
                   "box a second intra-op thread stalls on a busy core; torch's default otherwise)")
    p.add_argument("--keep", default=None, help="keep the scratch folder (worlds, runs, logs) here")
    a = p.parse_args(argv)
    if a.tiny and not a.quick:
        p.error("--tiny is a cut of --quick; pass both")
    return a


def _pick_device(args: argparse.Namespace) -> Any:
    """The torch device of the run, or ``None`` (exit 2) when CUDA was asked for but is missing.

    ``--quick`` forces the CPU; without CUDA a full run falls back to ``--quick`` (``args.quick`` is set), since the
    GPU sizes would take far longer than the suite's deadline on a CPU."""
    import torch

    if args.quick:
        device = torch.device("cpu")
    elif args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gpu_suite: --device cuda but CUDA is not available; use --quick for the CPU run", file=sys.stderr)
            return None
    if device.type != "cuda" and not args.quick:
        print("gpu_suite: no CUDA device: running the --quick (CPU) variant", file=sys.stderr)
        args.quick = True
    return device


def _pick_scale(args: argparse.Namespace) -> Scale:
    """The run's sizes (GPU / quick / tiny) with the command-line overrides applied: a rerun on the device can trade
    one section's time for another's."""
    from dataclasses import replace

    scale = (TINY_SCALE if args.tiny else QUICK_SCALE) if args.quick else GPU_SCALE
    for key, val in (("compile_budget_s", args.compile_budget), ("iters", args.iters),
                     ("train_steps", args.train_steps)):
        if val is not None:
            scale = replace(scale, **{key: val})
    return scale


def _set_threads(args: argparse.Namespace) -> None:
    """Torch CPU threads (1 by default with --quick); the CLI children (synth, train) inherit the same count."""
    import torch

    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _pick_sections(spec: str) -> list[str] | None:
    """Sections named by ``--only`` (``train`` added for ``eval_bag``, which evaluates the model it trains), or
    ``None`` (exit 2) when a name is unknown."""
    only = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"gpu_suite: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}", file=sys.stderr)
        return None
    if "eval_bag" in only and "train" not in only:
        only.append("train")
    return only


def _scratch(stack: contextlib.ExitStack, keep: str | None) -> Path:
    """The scratch folder: ``--keep`` (kept for inspection) or a temporary one removed when ``stack`` closes."""
    if keep:
        tmp = Path(keep).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mfapr_gpu_suite_")))


def _run_sections(ctx: Ctx, doc: dict[str, Any], only: list[str]) -> None:
    """Run the selected sections in SECTIONS order, then the compiled model rows (they use whatever time the
    deadline leaves); a failed section is recorded in ``doc["errors"]`` and the others still run."""
    funcs: dict[str, Callable[[Ctx], dict[str, Any]]] = {
        "models": section_models, "localizer": section_localizer, "node": section_node, "train": section_train,
        "eval_bag": section_eval_bag}
    steps: list[tuple[str, Callable[[], None]]] = []
    for name in SECTIONS:
        if name in only:
            steps.append((name, lambda name=name: doc.__setitem__(name, funcs[name](ctx))))
    if "models" in only:
        steps.append(("models_compiled", lambda: models_compiled(ctx, doc["models"])))
    for name, fn in steps:
        if name == "eval_bag" and "train" in doc["errors"]:
            doc["errors"][name] = "not run: the train section failed (it provides the checkpoint and bag)"
            continue
        if name == "models_compiled" and "models" not in doc:
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failed section is reported and the others still run
            doc["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        dt = time.perf_counter() - t0
        doc["meta"]["section_s"][name] = dt
        print(f"  {name}: {dt:.1f} s{' FAILED' if name in doc['errors'] else ''}", flush=True)


def _finish(ctx: Ctx, doc: dict[str, Any], out_json: Path) -> None:
    """Judge the targets, write the JSON (non-finite figures as null, their paths listed) and print the table and
    any section errors."""
    doc["targets"] = targets(ctx, doc)
    doc["meta"]["total_s"] = ctx.elapsed()
    bad: list[str] = []
    clean = _finite_json(doc, "$", bad)
    clean["meta"]["non_finite"] = bad
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(clean, indent=1))
    print()
    print_table(table_rows(ctx, doc))
    print(f"\ntotal {ctx.elapsed():.1f} s; JSON: {out_json}")
    if bad:
        print(f"non-finite figures (null in the JSON): {bad}")
    for name, err in doc["errors"].items():
        print(f"\nsection {name} FAILED: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    t_start = time.perf_counter()
    device = _pick_device(args)
    if device is None:
        return 2
    gpu = device.type == "cuda"
    scale = _pick_scale(args)
    _set_threads(args)
    only = _pick_sections(args.only)
    if only is None:
        return 2
    out_json = Path(args.json or ROOT / "out" / "gpu_suite" / ("quick.json" if args.quick else "gpu.json"))
    with contextlib.ExitStack() as stack:
        ctx = Ctx(device=device, scale=scale, quick=args.quick, tmp=_scratch(stack, args.keep), t_start=t_start,
                  compile_backend=args.compile_backend or ("inductor" if gpu else "aot_eager"),
                  compile_mode=None if args.compile_mode in (None, "default") else args.compile_mode,
                  deploy_preset=args.deploy_preset or ("transposenet" if gpu else "tiny"),
                  deploy_precision="fp16" if gpu else "fp32", half="fp16" if gpu else "bf16")
        doc: dict[str, Any] = {"meta": machine_info(ctx), "errors": {}}
        doc["meta"].update(section_s={}, sections=[s for s in SECTIONS if s in only], scale=vars(scale))
        print(f"# bench/gpu_suite.py — {doc['meta'].get('gpu', 'CPU')} ({device}), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, {'quick (CPU)' if args.quick else 'full'}{' tiny' if args.tiny else ''}",
              flush=True)
        _run_sections(ctx, doc, only)
        _finish(ctx, doc, out_json)
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
