#!/usr/bin/env python3
"""Model zoo benchmark: parameters, GFLOPs and latency per backbone × fusion at T=4 and T=10.

CPU section always (batch 1, eval, no_grad: p50/p99 ms); GPU section only when CUDA is available (fp32/fp16/bf16,
with/without torch.compile and channels_last, p50/p99 from CUDA events). A training-speed proxy (images/s of
forward+backward at batch 8) is printed for the presets given by ``--train-proxy``. Figures, not assertions:
``python bench/models.py --size 64 --iters 10`` on a shared box; ``--size 224`` (default) for the paper's setting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from mfapr_ros.core.rig import ring_rig
from mfapr_ros.models import BACKBONES, PRESETS, build_model, extrinsics_from_rig, preset
from mfapr_ros.models.base import get_backbone


def default_rows() -> list[tuple[str, dict[str, Any]]]:
    """Each registered backbone at every fusion position it offers, one representative setting per position:
    input ``tile`` plus the backbone's other default (``tokens`` where it is the default, else ``channel``), its
    default mid block, late ``fc-1`` — read from the registry so a new backbone file gets bench rows for free."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for name in BACKBONES:
        bb = get_backbone(name)
        fusions = [{"position": "none"}, {"position": "input", "mode": "tile"},
                   {"position": "input", "mode": bb.default_input_mode if bb.default_input_mode != "tile"
                    else "channel"}]
        if bb.mid_blocks:
            fusions.append({"position": "mid", "block": bb.mid_blocks[min(1, len(bb.mid_blocks) - 1)]})
        fusions.append({"position": "late", "fc": "fc-1"})
        rows += [(name, f) for f in fusions]
    return rows


#: the default rows: each backbone at every fusion position (one representative setting per position)
ROWS: list[tuple[str, dict[str, Any]]] = default_rows()


def fusion_name(f: dict[str, Any]) -> str:
    return f["position"] + ("/" + str(f.get("mode") or f.get("block") or f.get("fc")) if len(f) > 1 else "")


def make_cfg(backbone: str, fusion: dict[str, Any], T: int, size: int, shared: bool, vit: str) -> dict[str, Any]:
    # the paper's preset where there is one; a backbone without a preset runs at its registered defaults
    base = preset(vit) if backbone == "vit" else preset(backbone) if backbone in PRESETS else {"backbone": backbone}
    cfg = dict(base, num_cameras=T, image_size=size, fusion=dict(fusion))
    if fusion["position"] in ("mid", "late"):
        cfg["fusion"]["shared_weights"] = shared
    if fusion["position"] == "none":
        cfg["extrinsics"] = extrinsics_from_rig(ring_rig(T))
    return cfg


def gflops(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    # grad mode on: FlopCounterMode's module tracker trips over no_grad views of parameters (learned queries)
    fc = FlopCounterMode(display=False)
    with fc:
        model(x, m)
    return fc.get_total_flops() / 1e9


def time_cpu(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor, iters: int, warmup: int) -> list[float]:
    ts = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(x, m)
            if i >= warmup:
                ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def time_gpu(fn: Any, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return ts


def pct(ts: list[float], p: float) -> float:
    s = sorted(ts)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def gpu_section(cfgs: list[tuple[str, dict[str, Any]]], iters: int, warmup: int) -> None:
    print("\n## GPU latency, batch 1 (ms, p50/p99)\n")
    print(f"device: {torch.cuda.get_device_name(0)}")
    print("| model | fusion | T | dtype | compile | channels_last | p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for label, cfg in cfgs:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for compiled in (False, True):
                for cl in (False, True):
                    model = build_model(cfg).eval().cuda()
                    if cl:
                        model = model.to(memory_format=torch.channels_last)
                    T, S = cfg["num_cameras"], cfg["image_size"]
                    x = torch.randn(1, T, 3, S, S, device="cuda")
                    m = torch.ones(1, T, dtype=torch.bool, device="cuda")
                    fwd = model.forward_unchecked
                    if compiled:
                        fwd = torch.compile(fwd, mode="max-autotune-no-cudagraphs")

                    def run(fwd: Any = fwd, x: torch.Tensor = x, m: torch.Tensor = m, dtype: Any = dtype) -> None:
                        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                            fwd(x, m)

                    try:
                        ts = time_gpu(run, iters, warmup + (5 if compiled else 0))
                        print(f"| {label} | {fusion_name(cfg['fusion'])} | {T} | {str(dtype)[6:]} | {compiled} | {cl} "
                              f"| {pct(ts, 50):.2f} | {pct(ts, 99):.2f} |", flush=True)
                    except Exception as e:  # noqa: BLE001 - report and continue the table
                        print(f"| {label} | {fusion_name(cfg['fusion'])} | {T} | {str(dtype)[6:]} | {compiled} | {cl} "
                              f"| failed: {type(e).__name__} | |", flush=True)


def train_proxy(names: list[str], size: int | None, batch: int, iters: int) -> None:
    print("\n## Training-speed proxy (forward+backward+AdamW step, CPU)\n")
    print("| preset | T | px | batch | bundles/s | images/s |")
    print("|---|---|---|---|---|---|")
    for name in names:
        cfg = preset(name)
        if size:
            cfg["image_size"] = size
        model = build_model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        T, S = cfg["num_cameras"], cfg["image_size"]
        x, m = torch.randn(batch, T, 3, S, S), torch.ones(batch, T, dtype=torch.bool)
        ts = []
        for i in range(iters + 2):
            t0 = time.perf_counter()
            out = model(x, m)
            loss = out["t_norm"].pow(2).mean() + (1 - out["q"][:, 0]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                ts.append(time.perf_counter() - t0)
        s = statistics.median(ts)
        print(f"| {name} | {T} | {S} | {batch} | {batch / s:.1f} | {batch * T / s:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224, help="input image size in px (default 224)")
    p.add_argument("--cameras", type=int, nargs="+", default=[4, 10])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--backbones", nargs="+", default=None, help="subset of backbones")
    p.add_argument("--shared", action="store_true", help="mid/late with shared weights (default per-camera)")
    p.add_argument("--vit", default="vit", choices=["vit", "vit_small"], help="ViT preset (ViT-B/16 or small)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU latency table")
    p.add_argument("--train-proxy", nargs="*", default=["tiny", "demo"], help="presets for the training proxy")
    p.add_argument("--proxy-batch", type=int, default=8)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = [r for r in ROWS if a.backbones is None or r[0] in a.backbones]
    print(f"# mfapr model benchmark — torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{a.size} px, batch 1, {'shared' if a.shared else 'per-camera'} weights for mid/late\n")
    if not a.no_cpu:
        print("| backbone | fusion | T | params (M) | GFLOPs | CPU p50 (ms) | CPU p99 (ms) |")
        print("|---|---|---|---|---|---|---|")
        for backbone, fusion in rows:
            for T in a.cameras:
                cfg = make_cfg(backbone, fusion, T, a.size, a.shared, a.vit)
                torch.manual_seed(0)
                model = build_model(cfg).eval()
                n = sum(p.numel() for p in model.parameters()) / 1e6
                x = torch.randn(1, T, 3, a.size, a.size)
                m = torch.ones(1, T, dtype=torch.bool)
                g = gflops(model, x, m)
                ts = time_cpu(model, x, m, a.iters, a.warmup)
                print(f"| {backbone} | {fusion_name(fusion)} | {T} | {n:.2f} | {g:.2f} | {pct(ts, 50):.1f} | "
                      f"{pct(ts, 99):.1f} |", flush=True)
                del model
    if a.train_proxy:
        train_proxy(a.train_proxy, None, a.proxy_batch, max(3, a.iters // 2))
    if torch.cuda.is_available():
        cfgs = [(f"transposenet T={T}", make_cfg("transposenet", {"position": "input", "mode": "tokens"}, T, a.size,
                                                 True, a.vit)) for T in a.cameras]
        cfgs += [(f"mapnet T={T}", make_cfg("mapnet", {"position": "input", "mode": "tile"}, T, a.size, True, a.vit))
                 for T in a.cameras]
        gpu_section(cfgs, max(a.iters, 50), a.warmup + 10)
    else:
        print("\nGPU section skipped: CUDA is not available on this machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
