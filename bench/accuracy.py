#!/usr/bin/env python3
"""Accuracy of the demo recipe with its seed spread: one synthetic world, N training seeds, both query bags.

    .venv/bin/python bench/accuracy.py [--seeds 0,1,2] [--out out/bench_accuracy] [--config demo] [--set K=V ...]
    # the ablation: the same world without track augmentation
    .venv/bin/python bench/accuracy.py --out out/bench_accuracy_noaug --world out/bench_accuracy/synth \
        --set data.track_aug=none

For each seed: `mfapr train` (the demo config, wall time measured) and `mfapr eval-bag` on the forward query bag
(the mapped heading) and the reversed one (the same places driven the other way); then per query one table per
seed and the median / min–max over seeds of training time, median and mean error (m, °), the recall bins, and the
baselines (mean training pose, image retrieval from the training split, shift-aware retrieval over the ring's
cyclic slot shifts) and the query's distance from the map (the nearest mapped position: no lookup can be more
precise); per seed also the network fused with the bag's odometry (eval-bag's fused row: median,
worst error after 2 s, covariance coverage), with the fusion's covariance settings fitted per seed on the world's
validation drive (`mfapr fit-fusion`, as `make demo` does; `--no-fit-fusion`: the node's defaults).
CPU-scale training is noisy: a change to the recipe counts when it moves the median over seeds, not one run.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def figures(m: dict) -> dict[str, float]:
    return {"median_m": m["translation_m"]["median"], "median_deg": m["rotation_deg"]["median"],
            "mean_m": m["translation_m"]["mean"], "mean_deg": m["rotation_deg"]["mean"],
            **{f"recall_{k}": 100 * v for k, v in m["recall"].items()}}


def calibration_table(rows: list[dict]) -> list[str]:
    """Markdown lines: per seed, each block's 1σ/2σ/3σ coverage (%) and mean NLL; the Gaussian targets last."""
    blocks = list(rows[0]["calibration"])
    if not blocks:
        return []
    lines = ["", "| covariance | " + " | ".join(f"{b} 1σ/2σ/3σ (NLL)" for b in blocks) + " |",
             "|" + "---|" * (len(blocks) + 1)]
    for r in rows:
        cal = r["calibration"]
        lines.append(f"| seed {r['seed']} | " + " | ".join(
            "/".join(f"{v:.1f}" for v in cal[b]["coverage"]) + f" ({cal[b]['nll']:.2f})" for b in blocks) + " |")
    lines.append("| Gaussian target | " + " | ".join(
        "/".join(f"{v:.1f}" for v in rows[0]["calibration"][b]["target"]) for b in blocks) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="out/bench_accuracy")
    p.add_argument("--config", default="demo")
    p.add_argument("--world", help="an existing `mfapr synth` folder (default: generate the demo world)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="training config override")
    p.add_argument("--fit-fusion", action=argparse.BooleanOptionalAction, default=True,
                   help="fit fusion.* on the world's validation bag per seed (mfapr fit-fusion) and fuse the queries "
                        "with it, as make demo does (default on; --no-fit-fusion: the node's defaults)")
    args = p.parse_args(argv)
    from mfapr_ros.ros.env import localhost_env

    os.environ.update(localhost_env())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    world = Path(args.world).resolve() if args.world else out / "synth"
    if not (world / "world.json").exists():
        from mfapr_training.demo import SCALES, synth  # the demo's own world, the same flags

        world = synth(out, SCALES["default"], fresh=False)
    from mfapr_training.demo import FIT_MAX_MAP_DISTANCE_M, QUERIES, VALIDATION

    per_query: dict[str, list[dict]] = {q: [] for q in QUERIES}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run_dir = out / f"seed{seed}"
        if not (run_dir / "best.json").exists():
            cmd = [py, "-m", "mfapr_ros.cli", "train", "--config", args.config, "--out", str(run_dir), "-q",
                   "--set", f"data.root={world}", "--set", f"train.seed={seed}"]
            for o in args.overrides:
                cmd += ["--set", o]
            train_s = run(cmd, out / f"train_seed{seed}.log")
            (run_dir / "train_seconds.txt").write_text(f"{train_s:.1f}\n")
        train_s = float((run_dir / "train_seconds.txt").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        # the fusion's covariance settings fitted on the validation drive, as `make demo` does (never on a query)
        params = run_dir / "fusion.yaml"
        if args.fit_fusion and (world / "bags" / VALIDATION).exists() and not params.exists():
            run([py, "-m", "mfapr_ros.cli", "fit-fusion", "--checkpoint", str(run_dir / "best.json"), "--bag",
                 str(world / "bags" / VALIDATION), "--out", str(params), "--no-progress",
                 "--max-map-distance", f"{FIT_MAX_MAP_DISTANCE_M:g}"],
                out / f"fit_fusion_seed{seed}.log")
        use_params = args.fit_fusion and params.exists()
        for query, split in QUERIES.items():
            if not (world / "bags" / split).exists():
                continue
            rep = out / f"eval_{query}_seed{seed}"
            if not (rep / "report.json").exists():
                run([py, "-m", "mfapr_ros.cli", "eval-bag", "--checkpoint", str(run_dir / "best.json"), "--bag",
                     str(world / "bags" / split), "--out", str(rep), "--no-plots", "--no-progress",
                     *(["--params", str(params)] if use_params else [])],
                    out / f"eval_{query}_seed{seed}.log")
            doc = json.loads((rep / "report.json").read_text())
            fz = doc.get("fused") or {}
            per_query[query].append({
                "seed": seed, "train_s": train_s, "model": figures(doc["metrics"]),
                "fused": figures(fz["metrics"]) if fz else None,
                "fused_max_after_2s_m": (fz.get("after_warmup") or {}).get("max_translation_m"),
                "fusion_settings": fz.get("settings"),
                "fused_calibration": {name: {"coverage": list(b["coverage"].values()),
                                             "target": list(b["target"].values()), "nll": b["nll"]}
                                      for name, b in ((fz.get("calibration") or {}).get("blocks") or {}).items()},
                **{name: figures(doc[key]["metrics"]) if doc.get(key) else None
                   for name, key in (("mean_pose", "baseline"), ("retrieval", "retrieval"),
                                     ("shift_aware_retrieval", "retrieval_shift"))},
                "calibration": {name: {"coverage": list(b["coverage"].values()),
                                       "target": list(b["target"].values()), "nll": b["nll"]}
                                for name, b in ((doc.get("calibration") or {}).get("blocks") or {}).items()},
                "map_distance_m": ((doc.get("map_distance") or {}).get("translation_m") or {}).get("median"),
                "robot_frame_m": doc["metrics"].get("robot_frame_m"),
                "health_warnings": summary.get("health_warnings", [])})
    result: dict[str, dict] = {}
    text = []
    for query, rows in per_query.items():
        if not rows:
            continue
        table, stats = seed_table(rows)
        text += [f"## {query} query", "", table, ""]
        result[query] = {"rows": rows, **stats}
    print("\n".join(text))
    warn = [f"seed {r['seed']}: {w}" for r in next(iter(per_query.values())) for w in r["health_warnings"]]
    if warn:
        print("health warnings:\n" + "\n".join(warn))
    (out / "accuracy.json").write_text(json.dumps(result, indent=2))
    (out / "accuracy.md").write_text("\n".join(text) + "\n")
    return 0


def seed_table(rows: list[dict]) -> tuple[str, dict]:
    """One Markdown table: a row per seed, the median (min–max) over seeds, the baselines, the calibration."""
    keys = list(rows[0]["model"])
    head = "| run | train (s) | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]

    def fmt(v: float) -> str:
        return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"

    for r in rows:
        cells = " | ".join(fmt(r["model"][k]) for k in keys)
        lines.append(f"| seed {r['seed']} | {r['train_s']:.0f} | {cells} |")
        for name in ("fused", "retrieval", "mean_pose"):  # per seed: raw network, fused network, retrieval, mean
            if r.get(name):
                lines.append(f"| ↳ {name.replace('_', '-')} | – | " + " | ".join(fmt(r[name][k]) for k in keys)
                             + " |")
    med = {k: float(np.median([r["model"][k] for r in rows])) for k in keys}
    lo = {k: min(r["model"][k] for r in rows) for k in keys}
    hi = {k: max(r["model"][k] for r in rows) for k in keys}
    tr = [r["train_s"] for r in rows]
    lines.append(f"| **median (min–max)** | {np.median(tr):.0f} ({min(tr):.0f}–{max(tr):.0f}) | "
                 + " | ".join(f"{fmt(med[k])} ({fmt(lo[k])}–{fmt(hi[k])})" for k in keys) + " |")
    if all(r.get("fused") for r in rows):
        fmed = {k: float(np.median([r["fused"][k] for r in rows])) for k in keys}
        lines.append("| **fused median** | – | " + " | ".join(fmt(fmed[k]) for k in keys) + " |")
    for name in ("mean_pose", "retrieval", "shift_aware_retrieval"):
        if rows[0][name]:
            lines.append(f"| {name.replace('_', '-')} baseline | – | " + " | ".join(fmt(rows[0][name][k]) for k in keys)
                         + " |")
    away = rows[0].get("map_distance_m")
    if away is not None:  # the same training split for every seed: the floor of any lookup
        lines += ["", f"Distance from the map (nearest mapped position to the truth, the floor of any lookup, "
                      f"median): {away:.3f} m"]
    if all(r.get("robot_frame_m") for r in rows):
        lines += ["", "Raw position error in the robot frame, per seed (median size forward / left, signed median "
                      "left — a bias when it is near the size): " + "; ".join(
                          f"seed {r['seed']} {r['robot_frame_m']['forward']['median_abs']:.3f} / "
                          f"{r['robot_frame_m']['left']['median_abs']:.3f} m, "
                          f"{r['robot_frame_m']['left']['median_signed']:+.3f} m" for r in rows)]
    lines += calibration_table(rows)
    if any(r.get("fused") for r in rows):
        lines += ["", "| fused with odometry | max error after 2 s (m) | "
                  + " | ".join(f"{b} 1σ/2σ/3σ" for b in rows[0]["fused_calibration"])
                  + " | worst gap, position-2D and yaw (points) |",
                  "|" + "---|" * (len(rows[0]["fused_calibration"]) + 3)]
        for r in rows:
            cal = r["fused_calibration"]
            mx = r["fused_max_after_2s_m"]
            fs = r.get("fusion_settings") or {}
            how = (f" (measurement_scale {fs['measurement_scale']:g}, correlated_fraction "
                   f"{fs['correlated_fraction']:g})" if fs else "")
            gap = max((abs(c - t) for b in ("position_2d", "yaw") if b in cal
                       for c, t in zip(cal[b]["coverage"], cal[b]["target"], strict=True)), default=None)
            lines.append(f"| seed {r['seed']}{how} | {'–' if mx is None else f'{mx:.2f}'} | " + " | ".join(
                "/".join(f"{v:.0f}" for v in cal[b]["coverage"]) for b in cal)
                + f" | {'–' if gap is None else f'{gap:.0f}'} |")
    return "\n".join(lines), {"median": med, "min": lo, "max": hi}

if __name__ == "__main__":
    sys.exit(main())
