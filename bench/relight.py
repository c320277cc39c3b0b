#!/usr/bin/env python3
"""How much a trained network uses the *lighting* of a place: the forward query re-rendered under other lights.

    .venv/bin/python bench/relight.py --world out/demo/synth --checkpoint out/demo/train/best.json \
        [--track query_00] [--every 4] [--out out/relight]

Every mapping pass of the synthetic world has its own ceiling-light pattern (``make_lighting``: lights off at
random, random intensities, a global gain and tint), and so has the query. A network that learned "this light
pattern = this lane" places the query better under the lights of the mapping pass it drives beside than under its
own — a shortcut that real sessions (other lights on, daylight) would break. This bench rebuilds the scene from
``world.json`` (:func:`mfapr_training.synth.generate.build_scene`: the seed fixes every draw; the query rendered
under its own lighting must reproduce the recorded images byte for byte, checked), renders every ``--every``-th
frame of ``--track`` under

* its own lighting (as recorded),
* the lighting of each mapping pass of the same route (light map, gain and tint),
* its own gain and tint with the light map of the nearest pass (the light *pattern* alone),

and prints per variant the median / mean position error, the mean lateral error towards the corridor centre
(the pull a lane cue causes) and the median rotation error. Not a test: it prints figures (docs/results.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mfapr_training.synth.generate import Scene, SynthConfig
    from mfapr_training.synth.world import Lighting

REPO = Path(__file__).resolve().parents[1]


def render_variant(scene: Scene, cfg: SynthConfig, ti: int, lighting: Lighting, frames: list[int],
                   out: Path) -> dict[tuple[int, int], bytes]:
    """Render ``frames`` of track ``ti`` under ``lighting`` into the kapture split ``out``; the JPEG bytes."""
    from mfapr_training.synth.generate import _Job, _write_chunk, render_chunk
    from mfapr_training.synth.kapture_writer import KaptureSplitWriter

    lightings = list(scene.lightings)
    lightings[ti] = lighting
    job = _Job(scene.world, scene.rig, scene.models, scene.tracks, lightings, scene.plans, cfg.seed,
               cfg.jpeg_quality, set(), None)
    kw = KaptureSplitWriter(out, scene.rig, scene.models)
    first: dict[tuple[int, int], bytes] = {}
    try:
        for f in frames:
            items = render_chunk(job, ti, f, f + 1)
            for fr, slot, jpeg, _ in items:
                first.setdefault((fr, slot), jpeg)
            _write_chunk(job, ti, f, f + 1, items, kw, None, cfg)
        kw.close()
    except BaseException:
        kw.abort()
        raise
    return first


def recorded_jpeg(world: Path, split: str, camera: str, stamp_ns: int) -> bytes | None:
    """The recorded image of ``camera`` at ``stamp_ns`` in the dataset's kapture split (None if absent)."""
    root = world / "kapture" / split / "sensors"
    for line in (root / "records_camera.txt").read_text().splitlines():
        parts = [x.strip() for x in line.split(",")]
        if line.startswith("#") or len(parts) != 3:
            continue
        ts, cam, rel = parts
        if cam == camera and int(ts) in (stamp_ns, stamp_ns // 1000):
            return (root / "records_data" / rel).read_bytes()
    return None


def evaluate_split(ckpt: Path, root: Path, split: str, lane_offset: float) -> dict[str, float]:
    """Errors of ``ckpt`` on the kapture split ``root/kapture/split`` (the model's own preprocessing)."""
    from mfapr_training.data import load_split
    from mfapr_training.datasets import BundleDataset
    from mfapr_training.evaluate import evaluate

    from mfapr_ros.core.checkpoint import load_checkpoint
    from mfapr_ros.core.geometry import rotation_error_deg
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.inference.calibration import quat_yaw
    from mfapr_ros.models import load_model

    meta = load_checkpoint(ckpt)
    rig, pre = meta.rig, PreprocessConfig.from_dict(meta.preprocess)
    data = load_split("synth", str(root), split, rig=rig, cameras=rig.camera_names)
    recs = [r for r in data.records if r.has_pose]
    model, _ = load_model(ckpt, device="cpu")
    res = evaluate(model, BundleDataset(recs, rig, pre, steps=1, track_aug=None, photometric=False), 16, "cpu")
    e = np.asarray(res["t_est"])[:, :2] - np.asarray(res["t_gt"])[:, :2]
    yaw = quat_yaw(np.asarray(res["q_gt"]))
    left = np.stack([-np.sin(yaw), np.cos(yaw)], -1)  # lane offsets are metres right of the centre line
    towards_centre = np.sign(lane_offset) * (e * left).sum(-1)
    along = (e * np.stack([np.cos(yaw), np.sin(yaw)], -1)).sum(-1)
    dist = np.linalg.norm(np.asarray(res["t_est"]) - np.asarray(res["t_gt"]), axis=1)
    rot = rotation_error_deg(np.asarray(res["q_est"]), np.asarray(res["q_gt"]))
    return {"n": len(dist), "median_m": float(np.median(dist)), "mean_m": float(dist.mean()),
            "lateral_to_centre_m": float(towards_centre.mean()), "median_abs_along_m": float(np.median(np.abs(along))),
            "mean_along_m": float(along.mean()),
            "median_deg": float(np.median(rot))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True, help="an `mfapr synth` output folder (with world.json)")
    p.add_argument("--checkpoint", required=True, help="the trained checkpoint (NAME.json)")
    p.add_argument("--track", default=None, help="track to re-render (default: the first forward query track)")
    p.add_argument("--every", type=int, default=4, help="render every N-th frame (default 4: 125 of 500)")
    p.add_argument("--out", default="out/relight")
    args = p.parse_args(argv)

    from mfapr_training.synth.cli import resolve_rig
    from mfapr_training.synth.generate import build_scene, config_from_world_doc

    world = Path(args.world).resolve()
    out = Path(args.out).resolve()
    doc = json.loads((world / "world.json").read_text())
    cfg = config_from_world_doc(doc, out=str(out))
    scene = build_scene(cfg, resolve_rig(cfg.rig))
    names = [t.name for t in scene.tracks]
    name = args.track or next((t.name for t in scene.tracks if t.split == "query" and t.direction == "forward"), None)
    if name not in names:
        sys.exit(f"relight: no track {name!r} in {world} (tracks: {names})")
    ti = names.index(name)
    track = scene.tracks[ti]
    mates = [i for i, t in enumerate(scene.tracks) if t.split == "mapping" and t.route == track.route]
    if not mates:
        sys.exit(f"relight: no mapping pass drives the route of {name}")
    nearest = min(mates, key=lambda i: abs(scene.tracks[i].lane_offset - track.lane_offset))
    own = scene.lightings[ti]
    variants = {"own lighting (as recorded)": own}
    for i in mates:
        t = scene.tracks[i]
        variants[f"lighting of {t.name} (lane {t.lane_offset:+.2f} m)"] = scene.lightings[i]
    variants[f"own gain and tint, light map of {scene.tracks[nearest].name}"] = dataclasses.replace(
        own, light_map=scene.lightings[nearest].light_map)

    if out.exists():
        shutil.rmtree(out)
    (out / "kapture").mkdir(parents=True)
    frames = list(range(0, cfg.frames, max(1, args.every)))
    rows = []
    for k, (label, lighting) in enumerate(variants.items()):
        split = f"v{k}"
        jpegs = render_variant(scene, cfg, ti, lighting, frames, out / "kapture" / split)
        if k == 0:  # the rebuilt scene must be the recorded one
            (fr, slot), jpeg = next(iter(sorted(jpegs.items())))
            stamp = int(scene.plans[ti].camera_ns[fr, slot])
            rec = recorded_jpeg(world, track.split, scene.rig.cameras[slot].name, stamp)
            if rec != jpeg:
                sys.exit(f"relight: the rebuilt scene does not reproduce {world}'s recorded images (frame {fr}, "
                         f"camera {scene.rig.cameras[slot].name}); was it generated by another version?")
            print(f"rebuilt scene reproduces the recorded images of {name} (checked frame {fr}, slot {slot})")
        r = evaluate_split(Path(args.checkpoint), out, split, track.lane_offset)
        rows.append((label, r))
        print(f"{label}: {r['median_m']:.3f} m median, lateral towards centre {r['lateral_to_centre_m']:+.3f} m",
              flush=True)
    print(f"\n{name} (lane {track.lane_offset:+.2f} m right of the centre line), {rows[0][1]['n']} bundles, "
          f"checkpoint {args.checkpoint}\n")
    print("| query rendered under | median | mean | lateral towards centre (mean) | along-track: median abs, "
          "mean | rotation |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['median_m']:.3f} m | {r['mean_m']:.3f} m | {r['lateral_to_centre_m']:+.3f} m | "
              f"{r['median_abs_along_m']:.3f} m, {r['mean_along_m']:+.3f} m | {r['median_deg']:.2f}° |")
    (out / "relight.json").write_text(json.dumps({"track": name, "checkpoint": str(args.checkpoint),
                                                  "rows": [{"variant": lb, **r} for lb, r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
