"""`mfapr synth`: generate the synthetic multi-camera world (kapture + rosbag2) from the command line.

Example (the demo's default world: ring4, 4 tracks × 500 frames = 2,000 frames, 8,000 images at 128 px)::

    mfapr synth --out data/synth --rig ring4 --seed 0 --frames 500 --bags query

Bad arguments raise :class:`~mfapr_ros.core.errors.ConfigError` (the `mfapr` dispatcher prints one line, exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.progress import StatusLine
from mfapr_ros.core.rig import Rig, load_rig, ring_rig

from .generate import SPLITS, SynthConfig, generate
from .world import WorldConfig


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so callers and tests get a clear exception."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"mfapr synth: {message} (see `mfapr synth --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mfapr synth", description="Generate a synthetic indoor floor seen by a camera rig: "
                "kapture folders (mapping/validation/query) and rosbag2 bags for replay.")
    p.add_argument("--out", required=True, help="output folder (must not hold a dataset yet)")
    p.add_argument("--rig", default="ring4", help="rig YAML path or shipped name (ring4, ring6, ring10, ...), or "
                   "ringN for an N-camera ring (default ring4)")
    p.add_argument("--seed", type=int, default=0, help="world/track/lighting seed (default 0)")
    p.add_argument("--frames", type=int, default=500, help="frames per track (default 500)")
    p.add_argument("--mapping-tracks", type=int, default=2, help="mapping routes (default 2)")
    p.add_argument("--mapping-lanes", type=int, default=1,
                   help="passes per mapping route, each in its own lane and lighting, like a mapping platform "
                        "that drives a floor several times (default 1)")
    p.add_argument("--validation-route", default="walk", choices=("walk", "revisit"),
                   help="validation tracks: new random walks, or revisits of mapping routes like the query "
                        "(default walk)")
    p.add_argument("--validation-tracks", type=int, default=1, help="validation tracks (default 1)")
    p.add_argument("--query-tracks", type=int, default=1,
                   help="query tracks; the first ones revisit mapping routes (see --query-direction) (default 1)")
    p.add_argument("--query-direction", default="reverse",
                   help="reverse: query k drives mapping route k the other way (the paper's case: a heading mapping "
                        "never drove, over the stretch mapping drove); forward: same way, another lane/speed/"
                        "lighting; both: forward tracks in 'query' and their reversed twins in 'query_reverse' "
                        "(default reverse)")
    p.add_argument("--mapping-side", default="both",
                   help="both: mapping passes span both sides of the corridor centre line (a reversed query drives "
                        "mapped places); right: only the right side, so a reversed query also drives the unmapped "
                        "side (the named hard case) (default both)")
    p.add_argument("--size", type=int, default=128, help="image width in px; height keeps the rig aspect (128)")
    p.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    p.add_argument("--speed", type=float, default=1.0, help="mean speed in m/s (default 1)")
    p.add_argument("--transport", default="raw", help="bag image transport: raw (Image rgb8) | compressed (jpeg)")
    p.add_argument("--bag-storage", default="sqlite3", help="rosbag2 storage: sqlite3 | mcap (default sqlite3)")
    p.add_argument("--bags", default="query", help=f"splits to write as bags: comma list of {','.join(SPLITS)}, "
                   "'all' or 'none' (default query)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="probability that an image is dropped (0)")
    p.add_argument("--shared-trigger", action="store_true", help="identical stamps for all cameras (Basler-like)")
    p.add_argument("--offset-ms", type=float, default=15.0, help="max |constant per-camera offset| in ms (15)")
    p.add_argument("--jitter-ms", type=float, default=3.0, help="max |per-image jitter| in ms (3)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    p.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    p.add_argument("--no-lighting-variation", action="store_true", help="same lighting on every track")
    p.add_argument("--blocks", default="2x2", help="shop blocks of the floor plan, e.g. 2x2 or 3x2 (default 2x2)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def resolve_rig(spec: str) -> Rig:
    """A rig from a YAML path, a shipped rig name, or ``ringN`` (a generated N-camera ring)."""
    if not Path(spec).exists() and spec.startswith("ring") and spec[4:].isdigit():
        try:
            return load_rig(spec)
        except ConfigError:
            return ring_rig(int(spec[4:]), image_size=128, hfov_deg=90.0)
    return load_rig(spec)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    if args.bags.strip() in ("", "none"):
        bags: tuple[str, ...] = ()
    elif args.bags.strip() == "all":
        bags = SPLITS
    else:
        bags = tuple(b.strip() for b in args.bags.split(",") if b.strip())
    try:
        bx, by = (int(v) for v in args.blocks.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--blocks: expected COLSxROWS like 2x2, got '{args.blocks}'") from None
    world = WorldConfig(seed=args.seed, blocks_x=bx, blocks_y=by, open_halls=1 if bx * by > 1 else 0)
    cfg = SynthConfig(out=args.out, rig=args.rig, seed=args.seed, frames=args.frames,
                      mapping_tracks=args.mapping_tracks, mapping_lanes=args.mapping_lanes,
                      validation_route=args.validation_route, validation_tracks=args.validation_tracks,
                      query_tracks=args.query_tracks, query_direction=args.query_direction,
                      mapping_side=args.mapping_side,
                      size=args.size, rate_hz=args.rate, speed_mps=args.speed,
                      transport=args.transport, bag_storage=args.bag_storage, bags=bags, drop_rate=args.drop_rate,
                      shared_trigger=args.shared_trigger, offset_ms=args.offset_ms, jitter_ms=args.jitter_ms,
                      jpeg_quality=args.jpeg_quality, workers=args.workers,
                      lighting_variation=not args.no_lighting_variation, world=world)
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr synth`; returns the exit code (errors are raised as ConfigError)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(args)
    rig = resolve_rig(cfg.rig)
    status = None if args.quiet else StatusLine()  # a \r-updated line on a terminal, plain lines in a log
    try:
        res = generate(cfg, rig, progress=status)
    finally:
        if status is not None:
            status.close()
    print(f"mfapr synth: wrote {res.out} — {res.frames} frames, {res.images} images ({res.dropped} dropped) from "
          f"{rig.num_cameras} cameras in {res.seconds:.1f} s: {res.frames_per_s:.1f} frames/s, "
          f"{res.images_per_s:.1f} images/s ({cfg.workers} workers)")
    for split, info in res.splits.items():
        print(f"  {split:<10} kapture/{split} ({info['images']} images)" + (f", bags/{split}" if info["bag"] else ""))
    return 0
