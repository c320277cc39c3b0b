"""Benchmark of the synthetic world: ray-caster throughput and the full render + JPEG + kapture pipeline.

Prints images/s for
  1. baseline: a naive loop rendering one camera at a time with the per-pixel reference caster,
  2. the batched column-separable caster (what `mfapr synth` uses), single process,
  3. render + JPEG + kapture write with `generate()` at 1 and N workers,
and, with ``--full``, the default demo world (ring4, 4 tracks × 500 frames = 8,000 images at 128 px) end to end
(bag of the query split included) against the 60 s target. Ratios are against the baseline measured in the same run.

    .venv/bin/python bench/synth.py [--images 128] [--size 128] [--workers 2] [--full]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from mfapr_training.synth.generate import SynthConfig, camera_models, generate
from mfapr_training.synth.render import render
from mfapr_training.synth.tracks import plan_tracks
from mfapr_training.synth.world import build_world, make_lighting

from mfapr_ros.core.geometry import pose_compose
from mfapr_ros.core.rig import load_rig


def _poses(n_frames: int) -> tuple[np.ndarray, np.ndarray, object, object]:
    world = build_world()
    rig = load_rig("ring4")
    track = plan_tracks(world, 0, n_frames, 10.0, 1, 0, 0)[0]
    t, q = track.pose_at(track.start_ns + np.arange(n_frames, dtype=np.int64) * 100_000_000)
    t_bc, q_bc = rig.extrinsics()
    tc, qc = pose_compose(t[:, None], q[:, None], t_bc[None], q_bc[None])
    return tc.reshape(-1, 3), qc.reshape(-1, 4), world, rig


def _rate(fn, n: int, min_s: float = 1.0) -> float:
    fn()  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_s:
        fn()
        done += n
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128, help="images in the render sample (multiple of 4)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also time the default demo world end to end")
    args = ap.parse_args()
    tc, qc, world, rig = _poses(max(1, args.images // 4))
    light = make_lighting(world, (0, 0))
    model = camera_models(rig, args.size)[0]
    n = len(tc)
    print(f"synth bench: {n} images at {model.width}x{model.height}, {world.num_walls} walls, "
          f"{os.cpu_count()} CPUs visible")

    def naive() -> None:
        for k in range(n):
            render(world, light, model, tc[k:k + 1], qc[k:k + 1], force_general=True)

    def batched() -> None:
        for k in range(0, n, 64):
            render(world, light, model, tc[k:k + 64], qc[k:k + 64])

    base = _rate(naive, n)
    fast = _rate(batched, n)
    print(f"  baseline per-camera loop, per-pixel caster : {base:8.1f} images/s  (1.00x)")
    print(f"  batched column caster, 1 process          : {fast:8.1f} images/s  ({fast / base:.2f}x)")

    tmp = tempfile.mkdtemp(prefix="synth_bench_")
    try:
        frames = max(8, args.images // 4)
        for workers in sorted({1, args.workers}):
            cfg = SynthConfig(out=os.path.join(tmp, f"w{workers}"), frames=frames, mapping_tracks=1,
                              validation_tracks=0, query_tracks=0, bags=(), size=args.size, workers=workers)
            res = generate(cfg, rig)
            print(f"  render + JPEG + kapture, {workers} worker(s)     : {res.images_per_s:8.1f} images/s  "
                  f"({res.images_per_s / base:.2f}x), {res.frames_per_s:.1f} frames/s")
        if args.full:
            cfg = SynthConfig(out=os.path.join(tmp, "full"), workers=args.workers)
            res = generate(cfg, rig)
            verdict = "OK" if res.seconds <= 60 else "OVER"
            print(f"  default demo world (ring4, {res.frames} frames, {res.images} images, 128 px, query bag raw):"
                  f" {res.seconds:.1f} s = {res.frames_per_s:.1f} frames/s, {res.images_per_s:.1f} images/s "
                  f"[target <= 60 s: {verdict}]")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
