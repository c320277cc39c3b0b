"""rosbag2 reader (sqlite3 and MCAP) for training: a thin adapter over :mod:`mfapr_ros.bag.bundles`, the one bag →
bundles pipeline (camera binding, stamps, synchronizer, drop counts), which `mfapr eval-bag` uses too — so training
learns from exactly the bundles the node and eval-bag would form from the same recording.

What this module adds is training's: the bundles become :class:`BundleRecord` with undecoded :class:`ImageRef`
payloads (decoded lazily, through ``mfapr_ros.core.images``, by ``records.decode_ref``) and the GT rig pose
interpolated at each bundle stamp (linear + slerp, ``Trajectory.at``); bundles outside GT coverage, or inside a GT
gap longer than ``max_gap_ns``, are dropped and counted (``outside_ground_truth``). GT reading (PoseStamped,
PoseWithCovarianceStamped, Odometry, TransformStamped or a TF chain ``parent → child`` over /tf + /tf_static) is
``mfapr_ros.bag.reader``'s. Only numpy and ``mfapr_ros`` are imported (no torch, no rclpy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.bag.bundles import bind_bag_topics, iter_bundles
from mfapr_ros.bag.reader import BagMessage, BagReader, Trajectory, image_fields, read_gt
from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.rig import Rig
from mfapr_ros.core.sync import SyncSettings

from .records import BundleRecord, BundleSet, ImageRef, split_tracks_on_gaps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruthSpec:
    """Where the ground-truth rig pose comes from.

    ``topic`` (PoseStamped, PoseWithCovarianceStamped, Odometry, TransformStamped of the rig in the world), or
    ``tf="map:base_link"`` (``T_parent_child`` through /tf and /tf_static, chained), or neither: the usual GT
    topic names are tried (``/ground_truth/pose`` …). GT samples further apart than ``max_gap_ns`` do not
    interpolate (bundles there are dropped and counted).
    """

    topic: str | None = None
    tf: str | None = None
    max_gap_ns: int | None = 500_000_000

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GroundTruthSpec:
        d = dict(d or {})
        if "parent_frame" in d or "child_frame" in d:
            d["tf"] = f"{d.pop('parent_frame', '')}:{d.pop('child_frame', '')}"
        unknown = set(d) - {"topic", "tf", "max_gap_ns"}
        if unknown:
            raise DataError(f"ground_truth: unknown keys {sorted(unknown)}; use topic, or tf: 'parent:child' "
                            "(or parent_frame + child_frame), and max_gap_ns")
        return cls(**d)


def image_ref(m: BagMessage, key: str) -> ImageRef:
    """An undecoded :class:`ImageRef` of a bundled bag image (raw Image or CompressedImage)."""
    fields = image_fields(m.msgtype, m.msg)
    data = fields["data"].tobytes() if hasattr(fields["data"], "tobytes") else bytes(fields["data"])
    if fields["kind"] == "compressed":
        return ImageRef.compressed(key, fields["format"], data)
    return ImageRef.raw(key, fields["encoding"], fields["height"], fields["width"], fields["step"], data)


def _read_trajectory(reader: BagReader, spec: GroundTruthSpec | None, require_gt: bool) -> Trajectory | None:
    """The GT trajectory, or None for an inference-only bag (``require_gt=False`` and no GT asked for by name)."""
    try:
        return read_gt(reader, spec.topic if spec else None, spec.tf if spec else None)
    except DataError:
        if require_gt or (spec is not None and (spec.topic or spec.tf)):
            raise
        log.info("bag %s: no ground truth; bundles are inference-only (pose None)", reader.path)
        return None


def iter_bag_bundles(bag: str | Path | BagReader, rig: Rig, topics: dict[str, str] | None = None,
                     gt: GroundTruthSpec | dict | None = None, sync: SyncSettings | dict | None = None,
                     start_ns: int | None = None, end_ns: int | None = None, *, require_gt: bool = True,
                     allow_missing_cameras: bool = False, drops: DropCounter | None = None,
                     track: str | None = None) -> Iterator[BundleRecord]:
    """Stream a bag's bundles in time order, each with undecoded images (:class:`ImageRef`) and the GT rig pose.

    ``start_ns``/``end_ns`` bound the bag log time. ``require_gt=False``: a bag without GT yields poses ``None``
    (inference only). Otherwise bundles outside GT coverage are dropped and counted in ``drops`` (pass a
    :class:`DropCounter` to read the counts afterwards). Decode images with ``records.decode_ref``. Errors (not a bag,
    unknown storage, camera topics absent, no GT) are :class:`DataError` raised before the first bundle.
    """
    own = not isinstance(bag, BagReader)
    reader = BagReader(bag).open() if own else bag  # type: ignore[arg-type]
    drops = drops if drops is not None else DropCounter.for_reader()
    sync = sync if isinstance(sync, SyncSettings) else SyncSettings.from_dict(sync)
    spec = gt if isinstance(gt, GroundTruthSpec) or gt is None else GroundTruthSpec.from_dict(gt)
    name = track or reader.path.name
    try:
        bindings = bind_bag_topics(rig, reader.topic_types(), topics, allow_missing=allow_missing_cameras,
                                   source=f"bag {reader.path}")
        traj = _read_trajectory(reader, spec, require_gt)
        if traj is not None:
            drops.merge(traj.drops, prefix="gt_")
        max_gap = spec.max_gap_ns if spec is not None else GroundTruthSpec.max_gap_ns
        index = 0
        for b in iter_bundles(reader, bindings, sync.make(rig.num_cameras), start_ns, end_ns, drops):
            t = q = None
            if traj is not None:
                tt, qq, ok = traj.at([int(b.stamp_ns)], max_gap_ns=max_gap)
                if not ok[0]:
                    drops.add("outside_ground_truth", f"bag {reader.path}: bundle at {b.stamp_ns} ns is outside the "
                              f"GT ({traj.source}) coverage [{traj.stamps_ns[0]}, {traj.stamps_ns[-1]}] ns or in a "
                              f"gap > {max_gap} ns")
                    continue
                t, q = tt[0], qq[0]
            stamps = [None if m is None else int(s) for m, s in zip(b.payloads, b.stamps_ns, strict=True)]
            images = [None if m is None else image_ref(m, f"{reader.path}:{m.topic}:{s}")
                      for m, s in zip(b.payloads, stamps, strict=True)]
            yield BundleRecord(int(b.stamp_ns), images, stamps, np.asarray(b.mask, dtype=bool), t, q, name, index)
            index += 1
    finally:
        if own:
            reader.close()


def read_rosbag(bag: str | Path, rig: Rig, topics: dict[str, str] | None = None,
                gt: GroundTruthSpec | dict | None = None, sync: SyncSettings | dict | None = None,
                start_ns: int | None = None, end_ns: int | None = None, *, require_gt: bool = True,
                allow_missing_cameras: bool = False, track: str | None = None,
                track_gap_ns: int | None = 1_000_000_000) -> BundleSet:
    """A whole bag as a :class:`BundleSet` (images kept encoded in memory; decode lazily in the dataset)."""
    drops = DropCounter.for_reader()
    records = list(iter_bag_bundles(bag, rig, topics, gt, sync, start_ns, end_ns, require_gt=require_gt,
                                    allow_missing_cameras=allow_missing_cameras, drops=drops, track=track))
    name = track or Path(bag).name
    if not records:
        raise DataError(f"{bag}: no bundles ({drops.summary(str(bag), 0)}); check camera topics, the GT coverage "
                        "and sync.slop")
    split_tracks_on_gaps(records, track_gap_ns)
    out = BundleSet(rig, records, dict(drops), name, {"bag": str(bag)})
    log.info(out.summary())
    return out
