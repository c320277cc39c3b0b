"""Benchmark `mfapr eval-bag`: bundles/s and speed-up over real time, batched vs unbatched inference, same run.

    .venv/bin/python bench/eval_bag.py [--preset demo] [--frames 100] [--size 64] [--batches 1 4 16] [--repeat 2]

Writes a synthetic 4-camera bag (10 Hz, raw images) and a randomly initialised checkpoint of the preset (accuracy is
irrelevant here, only throughput), then evaluates the bag once per batch size (after one warm-up pass) and prints
a table with the ratio to batch 1. Figures depend on the machine: run on an idle one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", help="model preset (default demo, the `make demo` model)")
    ap.add_argument("--frames", type=int, default=100, help="bundles in the bag (10 Hz)")
    ap.add_argument("--size", type=int, default=64, help="image size (px), = model input size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeat", type=int, default=2, help="runs per batch size (best is reported)")
    ap.add_argument("--storage", default="mcap", choices=("sqlite3", "mcap"))
    ap.add_argument("--compressed", action="store_true", help="JPEG images instead of raw")
    args = ap.parse_args(argv)

    import torch

    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.evaluation.eval_bag import evaluate_bag
    from mfapr_ros.inference.localizer import Localizer
    from mfapr_ros.models import build_model, model_meta, preset

    rig = ring_rig(4)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = build_model(preset(args.preset, image_size=args.size, num_cameras=4))
        ck = save_checkpoint(Path(tmp) / "bench", model,
                             model_meta(model, rig, PreprocessConfig(resize=args.size, crop=args.size)))
        bag = Path(tmp) / "bag"
        write_synth_bag(bag, SynthBagSpec([c.topic for c in rig.cameras], frames=args.frames, size=args.size,
                                          storage=args.storage, compressed=args.compressed))
        loc = Localizer(str(ck), device="cpu")
        evaluate_bag(ck, bag, batch=max(args.batches), max_duration_s=1.0, progress=False, localizer=loc)  # warm-up
        print(f"eval-bag benchmark: preset {args.preset}, {args.size} px, 4 cameras, {args.frames} bundles "
              f"({args.frames / 10:.1f} s of bag, {args.storage}, {'jpeg' if args.compressed else 'raw'}), "
              f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
        ref = f"vs batch {args.batches[0]}"
        print(f"{'batch':>5}  {'bundles/s':>10}  {'x real time':>11}  {'inference s':>11}  {ref:>11}")
        base = None
        for b in args.batches:
            best = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = evaluate_bag(ck, bag, batch=b, progress=False, localizer=loc)
                wall = time.perf_counter() - t0
                if best is None or res.wall_seconds < best[0].wall_seconds:
                    best = (res, wall)
            res = best[0]
            base = base or res.bundles_per_s
            print(f"{b:>5}  {res.bundles_per_s:>10.1f}  {res.speedup:>11.1f}  {res.infer_seconds:>11.2f}  "
                  f"{res.bundles_per_s / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
