"""`mfapr split`: cut one recording (a kapture folder or a rosbag2) into training / validation / test splits by time.

    mfapr split RECORDING --out DATA                                   # 10 time blocks: 70 % / 15 % / 15 %
    mfapr split RECORDING --out DATA --by fraction --val 0.1 --test 0.2  # one cut each: mapping | validation | query
    mfapr split RECORDING --out DATA --by ranges --range mapping=0:60 --range validation=60:75 --range query=75:100

Why blocks of time and not random frames: neighbouring frames of a recording are near-duplicates, so a random split
puts every test frame next to a training frame and measures memorisation. Contiguous blocks keep the test (and
validation) frames away from the training ones except at block edges; ``--gap-s`` drops the frames within that
many seconds of an edge between different splits (counted). ``--by time`` spreads the held-out blocks over the
recording (every part of the place is seen in training and tested), ``--by fraction`` takes the end of it,
``--by ranges`` takes named ranges in seconds from the recording's first frame.

The output is ordinary split folders, ``DATA/mapping``, ``DATA/validation``, ``DATA/query`` — the names the
training config expects by default (``data.train_split``, ``data.val_split``; ``query`` for evaluation) — so
`mfapr train`, `mfapr evaluate` and `mfapr eval-bag` read them like any dataset:

- kapture: each split has ``sensors/`` with ``sensors.txt`` and ``rigs.txt`` copied, ``records_camera.txt`` and
  ``trajectories.txt`` filtered (trajectory rows within the split's time plus the one before and after each block,
  so poses interpolate at its edges), and ``records_data`` a link to the recording's images (``--copy-images``
  copies the split's images instead). Timestamps are copied as they are (the same ``data.stamp_unit`` applies).
- rosbag2: each split is a bag (same storage plugin). Image topics are split by recording time; every other topic
  (ground truth, /tf) is kept within ``--margin-s`` of the split's blocks so interpolation works at their edges;
  ``/tf_static`` goes to every split. Messages are copied as CDR bytes (nothing is re-encoded).

``DATA/split.json`` records the plan (blocks in ns and in seconds from the start) and the counts.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.io import atomic_write_json

log = logging.getLogger("mfapr_training")

#: Output split names: the training config's defaults (data.train_split / val_split; query for evaluation).
TRAIN, VAL, TEST = "mapping", "validation", "query"
METHODS = ("time", "fraction", "ranges")
SPLIT_HINT = "--stamp-unit {unit} (mfapr split)"


@dataclass(frozen=True)
class SplitPlan:
    """Half-open time blocks ``[start_ns, end_ns)`` per split name, and the recording's span."""

    blocks: dict[str, list[tuple[int, int]]]
    t0_ns: int
    t1_ns: int

    def assign(self, stamp_ns: int) -> str | None:
        """The split holding ``stamp_ns``, or None (outside every block: a gap or outside the ranges)."""
        for name, bl in self.blocks.items():
            for a, b in bl:
                if a <= stamp_ns < b:
                    return name
        return None

    def near(self, stamp_ns: int, margin_ns: int) -> list[str]:
        """Every split with a block within ``margin_ns`` of ``stamp_ns`` (ground truth and TF for interpolation)."""
        return [n for n, bl in self.blocks.items() if any(a - margin_ns <= stamp_ns < b + margin_ns for a, b in bl)]

    def to_dict(self) -> dict[str, Any]:
        return {"t0_ns": self.t0_ns, "t1_ns": self.t1_ns,
                "blocks_ns": {n: [list(x) for x in bl] for n, bl in self.blocks.items()},
                "blocks_s": {n: [[round((a - self.t0_ns) / 1e9, 6), round((b - self.t0_ns) / 1e9, 6)] for a, b in bl]
                             for n, bl in self.blocks.items()}}


def parse_ranges(items: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    """``["mapping=0:60", "query=60:90,120:130"]`` → ``{name: [(start_s, end_s), …]}`` with clear errors."""
    out: dict[str, list[tuple[float, float]]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--range '{item}': expected NAME=START:END (seconds from the first frame), e.g. "
                              "mapping=0:60")
        name, spans = item.split("=", 1)
        name = name.strip()
        if not name or "/" in name:
            raise ConfigError(f"--range '{item}': the split name must be a plain folder name")
        for span in spans.split(","):
            try:
                a, b = (float(x) for x in span.split(":"))
            except ValueError:
                raise ConfigError(f"--range '{item}': '{span}' is not START:END in seconds") from None
            if not (0 <= a < b):
                raise ConfigError(f"--range '{item}': need 0 <= START < END, got {span}")
            out.setdefault(name, []).append((a, b))
    if not out:
        raise ConfigError("--by ranges needs at least one --range NAME=START:END")
    flat = sorted((a, b, n) for n, spans in out.items() for a, b in spans)
    for (a0, b0, n0), (a1, _, n1) in zip(flat, flat[1:], strict=False):
        if a1 < b0:
            raise ConfigError(f"--range: {n0} [{a0}, {b0}) s overlaps {n1} from {a1} s")
    return out


def _spread(n_pick: int, candidates: list[int]) -> list[int]:
    """``n_pick`` of ``candidates`` spread evenly (centred in equal shares), deterministic."""
    if n_pick <= 0 or not candidates:
        return []
    n_pick = min(n_pick, len(candidates))
    return sorted({candidates[min(len(candidates) - 1, int((k + 0.5) * len(candidates) / n_pick))]
                   for k in range(n_pick)})


def plan_split(t0_ns: int, t1_ns: int, method: str = "time", val: float = 0.15, test: float = 0.15,
               blocks: int = 10, ranges: dict[str, list[tuple[float, float]]] | None = None,
               gap_s: float = 0.0) -> SplitPlan:
    """Blocks per split over the span ``[t0_ns, t1_ns]`` (inclusive: the last frame belongs to a block).

    ``time``: ``blocks`` equal blocks, ``round(blocks·test)`` (≥ 1 when ``test`` > 0) spread over the recording for
    the test split, then validation blocks spread over the rest, the others training. ``fraction``: one cut each, in
    time order training | validation | test. ``ranges``: the named ranges (seconds from ``t0_ns``). ``gap_s``: each
    block is shortened by ``gap_s / 2`` at an edge it shares with another split.
    """
    if method not in METHODS:
        raise ConfigError(f"--by '{method}': expected one of {list(METHODS)}")
    if method != "ranges":
        if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
            raise ConfigError(f"--val {val} and --test {test} must be fractions in [0, 1) with val + test < 1")
    if blocks < 1:
        raise ConfigError(f"--blocks must be >= 1, got {blocks}")
    if gap_s < 0:
        raise ConfigError(f"--gap-s must be >= 0, got {gap_s}")
    end = t1_ns + 1
    span = end - t0_ns
    seq: list[tuple[int, int, str]] = []  # (start, end, name) in time order
    if method == "time":
        edges = [t0_ns + span * k // blocks for k in range(blocks + 1)]
        n_test = max(1, round(blocks * test)) if test > 0 else 0
        n_val = max(1, round(blocks * val)) if val > 0 else 0
        if n_test + n_val >= blocks:
            raise ConfigError(f"--blocks {blocks} is too few for --val {val} and --test {test}: at least one block "
                              "must stay for training; raise --blocks")
        test_idx = _spread(n_test, list(range(blocks)))
        val_idx = _spread(n_val, [k for k in range(blocks) if k not in test_idx])
        names = [TEST if k in test_idx else VAL if k in val_idx else TRAIN for k in range(blocks)]
        seq = [(edges[k], edges[k + 1], names[k]) for k in range(blocks)]
    elif method == "fraction":
        c1 = t0_ns + int(round(span * (1 - val - test)))
        c2 = t0_ns + int(round(span * (1 - test)))
        seq = [(a, b, n) for a, b, n in ((t0_ns, c1, TRAIN), (c1, c2, VAL), (c2, end, TEST)) if b > a]
    else:
        for name, spans in (ranges or {}).items():
            for a, b in spans:
                seq.append((t0_ns + int(round(a * 1e9)), t0_ns + int(round(b * 1e9)), name))
        seq.sort()
    # merge neighbouring blocks of one split, then open the gaps between different splits
    merged: list[list[Any]] = []
    for a, b, n in seq:
        if merged and merged[-1][2] == n and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b, n])
    half = int(round(gap_s * 1e9 / 2))
    out: dict[str, list[tuple[int, int]]] = {}
    for i, (a, b, n) in enumerate(merged):
        if i > 0 and merged[i - 1][2] != n and merged[i - 1][1] == a:
            a += half
        if i + 1 < len(merged) and merged[i + 1][2] != n and merged[i + 1][0] == b:
            b -= half
        if b > a:
            out.setdefault(n, []).append((a, b))
    return SplitPlan(out, t0_ns, t1_ns)


# --------------------------------------------------------------------------------------------- kapture
def _kapture_rows(path: Path) -> list[tuple[str, list[str]]]:
    """``(line, fields)`` of a kapture CSV, comments and blank lines skipped (the header is rewritten on output)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append((line, [c.strip() for c in line.split(",")]))
    return out


def _header(path: Path) -> str:
    """The leading comment lines of a kapture file (format version and columns), kept on output."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.lstrip().startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def split_kapture(src: Path, out: Path, plan_args: dict[str, Any], stamp_unit: str = "auto",
                  copy_images: bool = False) -> dict[str, Any]:
    """Split one kapture split folder (``src/sensors/…``) into ``out/<split>/sensors/…``; returns the summary."""
    from .datasets.kapture_reader import find_kapture_split
    from .datasets.kapture_text import detect_stamp_unit

    root = find_kapture_split(src, None)
    sd = root / "sensors"
    rec_path = sd / "records_camera.txt"
    if not rec_path.is_file():
        raise DataError(f"{rec_path} is missing; a kapture split needs records_camera.txt")
    recs = [(ln, f) for ln, f in _kapture_rows(rec_path) if len(f) >= 3]
    stamps: dict[str, list[int]] = {}
    for _, f in recs:
        try:
            stamps.setdefault(f[1], []).append(int(f[0]))
        except ValueError:
            raise DataError(f"{rec_path}: timestamp '{f[0]}' is not an integer") from None
    if not stamps:
        raise DataError(f"{rec_path} lists no images: nothing to split")
    to_ns = detect_stamp_unit(stamps, str(rec_path), stamp_unit, hint=SPLIT_HINT)
    allv = [v for vs in stamps.values() for v in vs]
    plan = plan_split(min(allv) * to_ns, max(allv) * to_ns, **plan_args)
    by_split: dict[str, list[str]] = {n: [] for n in plan.blocks}
    dropped = 0
    for ln, f in recs:
        name = plan.assign(int(f[0]) * to_ns)
        if name is None:
            dropped += 1
        else:
            by_split[name].append(ln)
    traj_path = sd / "trajectories.txt"
    traj_rows = _kapture_rows(traj_path) if traj_path.is_file() else []
    carried = {"sensors.txt", "rigs.txt", "records_camera.txt", "trajectories.txt", "records_data"}
    left = sorted(p.name for p in sd.iterdir() if p.name not in carried)
    if left:
        log.info("mfapr split: %s: not carried into the splits (not read by training): %s", sd, left)
    counts: dict[str, dict[str, int]] = {}
    for name, lines in by_split.items():
        dst = out / name / "sensors"
        if (out / name).exists():
            shutil.rmtree(out / name)
        dst.mkdir(parents=True)
        for fname in ("sensors.txt", "rigs.txt"):
            if (sd / fname).is_file():
                shutil.copyfile(sd / fname, dst / fname)
        (dst / "records_camera.txt").write_text(_header(rec_path) + "\n".join(lines) + "\n", encoding="utf-8")
        traj_keep = _trajectory_rows(traj_rows, plan.blocks[name], to_ns)
        if traj_path.is_file():
            (dst / "trajectories.txt").write_text(_header(traj_path) + "\n".join(traj_keep) + "\n",
                                                  encoding="utf-8")
        _link_images(sd / "records_data", dst / "records_data", lines, copy_images)
        counts[name] = {"images": len(lines), "poses": len(traj_keep)}
    return {"source": str(root), "format": "kapture", "plan": plan.to_dict(), "counts": counts,
            "dropped_images": dropped, "stamp_unit_ns": to_ns}


def _trajectory_rows(rows: list[tuple[str, list[str]]], blocks: list[tuple[int, int]], to_ns: int) -> list[str]:
    """Trajectory rows inside ``blocks`` plus, per device, the row just before and just after each block."""
    per: dict[str, list[tuple[int, str]]] = {}
    for ln, f in rows:
        try:
            per.setdefault(f[1], []).append((int(f[0]) * to_ns, ln))
        except (ValueError, IndexError):
            continue  # the reader counts malformed rows; the split copies what it can place in time
    keep: list[tuple[int, str]] = []
    for items in per.values():
        items.sort()
        chosen: set[int] = set()
        for a, b in blocks:
            inside = [i for i, (s, _) in enumerate(items) if a <= s < b]
            before = [i for i, (s, _) in enumerate(items) if s < a]
            after = [i for i, (s, _) in enumerate(items) if s >= b]
            chosen.update(inside)
            chosen.update(before[-1:] + after[:1])
        keep += [items[i] for i in sorted(chosen)]
    keep.sort(key=lambda x: x[0])
    return [ln for _, ln in keep]


def _link_images(src: Path, dst: Path, lines: list[str], copy: bool) -> None:
    """``records_data``: a link to the recording's folder, or (``copy``) a copy of this split's images only."""
    if not src.is_dir():
        return
    if not copy:
        os.symlink(src.resolve(), dst, target_is_directory=True)
        return
    for ln in lines:
        rel = ",".join(c.strip() for c in ln.split(",")[2:])
        s = src / rel
        if s.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, dst / rel)


# --------------------------------------------------------------------------------------------- rosbag2
def split_bag(src: Path, out: Path, plan_args: dict[str, Any], margin_s: float = 1.0) -> dict[str, Any]:
    """Split one rosbag2 into ``out/<split>`` bags by recording time (images strictly, other topics with margin)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from mfapr_ros.bag.reader import IMAGE_TYPES, BagReader

    ts = get_typestore(Stores.LATEST)
    margin = int(round(margin_s * 1e9))
    with BagReader(src) as bag:
        types = bag.topic_types()
        images = [t for t, ty in types.items() if ty in IMAGE_TYPES]
        if not images:
            raise DataError(f"bag {src} has no image topics (sensor_msgs/Image or CompressedImage); topics: "
                            f"{sorted(types)}")
        stamps = [m.log_time_ns for m in bag.messages(images)]
        plan = plan_split(min(stamps), max(stamps), **plan_args)
        conns = {c.topic: c for c in bag.reader.connections}
        plugin = StoragePlugin.MCAP if bag.storage == "mcap" else StoragePlugin.SQLITE3
        writers: dict[str, Any] = {}
        wconns: dict[tuple[str, str], Any] = {}
        counts: dict[str, dict[str, int]] = {n: {"images": 0, "other": 0} for n in plan.blocks}
        dropped = 0
        try:
            for name in plan.blocks:
                if (out / name).exists():
                    shutil.rmtree(out / name)
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                w = Writer(out / name, version=9, storage_plugin=plugin)
                w.open()
                writers[name] = w
            for m in bag.messages():
                if m.topic in images:
                    name = plan.assign(m.log_time_ns)
                    targets = [name] if name is not None else []
                    dropped += name is None
                elif m.topic.endswith("tf_static"):
                    targets = list(writers)
                else:
                    targets = plan.near(m.log_time_ns, margin)
                for name in targets:
                    key = (name, m.topic)
                    if key not in wconns:
                        wconns[key] = _add_connection(writers[name], conns[m.topic], ts)
                    writers[name].write(wconns[key], m.log_time_ns, m.raw)
                    counts[name]["images" if m.topic in images else "other"] += 1
        finally:
            for w in writers.values():
                w.close()
    return {"source": str(src), "format": "rosbag", "plan": plan.to_dict(), "counts": counts,
            "dropped_images": dropped, "image_topics": images}


def _add_connection(writer: Any, conn: Any, ts: Any) -> Any:
    """A writer connection with the source's type: the bag's own message definition when it has one (custom
    types), else the typestore's."""
    msgdef = getattr(conn, "msgdef", None)
    data = getattr(msgdef, "data", None)
    if conn.msgtype in ts.types or not data:
        return writer.add_connection(conn.topic, conn.msgtype, typestore=ts)
    return writer.add_connection(conn.topic, conn.msgtype, msgdef=data, rihs01=getattr(conn, "digest", "") or "")


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mfapr split", description="Cut one recording (a kapture split folder or a "
                                "rosbag2) into mapping / validation / query splits by time, written as ordinary "
                                "split folders (kapture) or bags that mfapr train / evaluate / eval-bag read.")
    p.add_argument("recording", help="kapture folder containing sensors/, or a rosbag2 directory")
    p.add_argument("--out", required=True, help="output folder: OUT/mapping, OUT/validation, OUT/query")
    p.add_argument("--by", choices=METHODS, default="time",
                   help="time: held-out blocks spread over the recording (default); fraction: one cut each, "
                        "in time order; ranges: named ranges (--range)")
    p.add_argument("--val", type=float, default=0.15, help="validation share (0 = none; default 0.15)")
    p.add_argument("--test", type=float, default=0.15, help="test (query) share (default 0.15)")
    p.add_argument("--blocks", type=int, default=10, help="--by time: number of equal time blocks (default 10)")
    p.add_argument("--range", dest="ranges", action="append", default=[], metavar="NAME=START:END[,START:END]",
                   help="--by ranges: seconds from the first frame, e.g. mapping=0:60 (repeatable)")
    p.add_argument("--gap-s", type=float, default=0.0,
                   help="drop frames within this many seconds of an edge between different splits (default 0)")
    p.add_argument("--stamp-unit", default="auto", help="kapture timestamp unit: auto | ns | us | ms | s | "
                   "frame@<N>hz (as data.stamp_unit)")
    p.add_argument("--copy-images", action="store_true", help="kapture: copy each split's images instead of "
                   "linking records_data")
    p.add_argument("--margin-s", type=float, default=1.0, help="rosbag: keep non-image topics (GT, /tf) this long "
                   "beyond each block (default 1 s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    src, out = Path(args.recording), Path(args.out)
    if not src.exists():
        raise DataError(f"{src} does not exist")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ConfigError(f"--out {out} must not be the recording or inside it")
    plan_args = {"method": args.by, "val": args.val, "test": args.test, "blocks": args.blocks,
                 "ranges": parse_ranges(args.ranges) if args.by == "ranges" else None, "gap_s": args.gap_s}
    if args.by == "ranges" and not args.ranges:
        raise ConfigError("--by ranges needs --range NAME=START:END (repeatable)")
    is_bag = (src / "metadata.yaml").is_file() or src.suffix in (".db3", ".mcap", ".bag") or \
        (src.is_dir() and not (src / "sensors").is_dir() and any(src.glob("*.bag")))
    out.mkdir(parents=True, exist_ok=True)
    summary = split_bag(src, out, plan_args, args.margin_s) if is_bag else \
        split_kapture(src, out, plan_args, args.stamp_unit, args.copy_images)
    atomic_write_json(out / "split.json", summary)
    for name, c in summary["counts"].items():
        spans = ", ".join(f"{a:g}–{b:g} s" for a, b in summary["plan"]["blocks_s"][name])
        print(f"mfapr split: {out / name}: {c['images']} images ({spans})")
    if summary["dropped_images"]:
        print(f"mfapr split: {summary['dropped_images']} images outside every split (--gap-s / --range) dropped")
    names = list(summary["counts"])
    train = TRAIN if TRAIN in names else names[0]
    val = f"data.val_split={VAL}" if VAL in names else "data.val_split=null"
    unit = f" --set data.stamp_unit={args.stamp_unit}" if not is_bag and args.stamp_unit != "auto" else ""
    print(f"mfapr split: train with --set data.root={out} --set data.train_split={train} --set {val}{unit}")
    return 0
