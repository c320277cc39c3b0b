"""rosbag2 reader (sqlite3 and MCAP): camera topics + ground truth → bundles with rig poses.

Shared by training (:func:`read_rosbag` → :class:`BundleSet`) and the bag evaluator (:func:`iter_bag_bundles`
streams bundles, so a long bag never sits in memory). Bag access, GT reading (PoseStamped,
PoseWithCovarianceStamped, Odometry, TransformStamped or a TF chain ``parent → child`` over /tf + /tf_static) and
message field extraction are ``mfapr_ros.bag.reader``'s — the one bag implementation; this module adds the camera
binding, the bundling (the node's one ``ApproximateTimeSynchronizer`` with the same :class:`SyncSettings`) and the
GT interpolation at bundle stamps. Only numpy and ``mfapr_ros`` are imported (no torch, no rclpy), so the
module can move under ``mfapr_ros`` unchanged if the evaluator wants it there.

- Cameras bind by *name* to topics: ``topics={camera: topic}``, else the rig's ``topic`` (or its
  ``/compressed`` variant). ``sensor_msgs/Image`` and ``CompressedImage`` stay undecoded in :class:`ImageRef`
  (bytes + encoding fields); decoding is lazy, through ``mfapr_ros.core.images`` (``records.decode_ref``).
- Stamps are header stamps in integer ns. A camera stamp not after the previous one on its topic is dropped and
  counted (``out_of_order_image``).
- GT is interpolated at each bundle stamp (linear + slerp, ``geometry.interpolate_poses``); bundles outside GT
  coverage, or inside a GT gap longer than ``max_gap_ns``, are dropped and counted (``outside_ground_truth``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.bag.reader import IMAGE_TYPES, BagReader, image_fields, read_gt
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.rig import Rig

from .bundling import SyncSettings, run_synchronizer, sync_stats
from .records import BundleRecord, BundleSet, Drops, ImageRef, split_tracks_on_gaps

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


def bind_camera_topics(bag: BagReader, rig: Rig, topics: dict[str, str] | None = None,
                       allow_missing: bool = False) -> list[str | None]:
    """Topic of each rig camera in slot order. A camera whose topic is not in the bag is a :class:`DataError`
    (or, with ``allow_missing``, a slot that is always masked, logged)."""
    present = bag.topic_types()
    topics = dict(topics or {})
    for n in topics:
        rig.index(n)  # unknown camera name → ConfigError listing the rig's cameras
    out: list[str | None] = []
    missing = []
    for cam in rig.cameras:
        cands = [topics[cam.name]] if cam.name in topics else [cam.topic, cam.subscribe_topic,
                                                                 cam.topic.rstrip("/") + "/compressed"]
        hit = next((t for t in cands if present.get(t) in IMAGE_TYPES), None)
        if hit is None:
            missing.append(f"{cam.name} ({' or '.join(dict.fromkeys(cands))})")
        out.append(hit)
    if missing and (not allow_missing or all(t is None for t in out)):
        images = sorted(t for t, ty in present.items() if ty in IMAGE_TYPES)
        raise DataError(f"bag {bag.path}: camera topic(s) absent: {', '.join(missing)}; image topics in the bag: "
                        f"{images or 'none'}. Map cameras to topics (topics: {{camera: topic}}) or fix the rig YAML")
    if missing:
        log.warning("bag %s: cameras without a topic (always masked): %s", bag.path, ", ".join(missing))
    for cam, hit in zip(rig.cameras, out, strict=True):
        if hit is not None and cam.name not in topics and hit != cam.subscribe_topic:
            # the checkpoint keeps the rig as written: say so, or the robot node subscribes to a topic that is silent
            log.warning("bag %s: camera %s: the rig's %s topic %s is not in the bag; using %s. A checkpoint trained "
                        "on it keeps transport '%s': on the robot set transport.%s:=%s (or fix the rig YAML) if the "
                        "camera publishes only %s", bag.path, cam.name, cam.transport, cam.subscribe_topic, hit,
                        cam.transport, cam.name, "compressed" if hit.endswith("/compressed") else "raw", hit)
    return out


def image_ref(fields: dict[str, Any], key: str) -> ImageRef:
    """An undecoded :class:`ImageRef` from ``bag_io.image_fields`` output (raw Image or CompressedImage)."""
    data = fields["data"].tobytes() if hasattr(fields["data"], "tobytes") else bytes(fields["data"])
    if fields["kind"] == "compressed":
        return ImageRef.compressed(key, fields["format"], data)
    return ImageRef.raw(key, fields["encoding"], fields["height"], fields["width"], fields["step"], data)


def iter_bag_bundles(bag: str | Path | BagReader, rig: Rig, topics: dict[str, str] | None = None,
                     gt: GroundTruthSpec | dict | None = None, sync: SyncSettings | dict | None = None,
                     start_ns: int | None = None, end_ns: int | None = None, *, require_gt: bool = True,
                     allow_missing_cameras: bool = False, drops: Drops | None = None,
                     track: str | None = None) -> Iterator[BundleRecord]:
    """Stream a bag's bundles in time order, each with undecoded images (:class:`ImageRef`) and the GT rig pose.

    ``start_ns``/``end_ns`` bound the bag log time. ``require_gt=False``: a bag without GT yields poses ``None``
    (inference only). Otherwise bundles outside GT coverage are dropped and counted in ``drops`` (pass a
    :class:`Drops` to read the counts afterwards). Decode images with ``records.decode_ref``. Errors (not a bag,
    unknown storage, camera topics absent, no GT) are :class:`DataError` raised before the first bundle.
    """
    own = not isinstance(bag, BagReader)
    reader = BagReader(bag).open() if own else bag  # type: ignore[arg-type]
    drops = drops if drops is not None else Drops()
    sync = sync if isinstance(sync, SyncSettings) else SyncSettings.from_dict(sync)
    spec = gt if isinstance(gt, GroundTruthSpec) or gt is None else GroundTruthSpec.from_dict(gt)
    name = track or reader.path.name
    try:
        cam_topics = bind_camera_topics(reader, rig, topics, allow_missing_cameras)
        traj: Any = None
        try:
            traj = read_gt(reader, spec.topic if spec else None, spec.tf if spec else None)
        except DataError:
            if require_gt or (spec is not None and (spec.topic or spec.tf)):
                raise
            log.info("bag %s: no ground truth; bundles are inference-only (pose None)", reader.path)
        if traj is not None:
            drops.merge({f"gt_{k}": v for k, v in traj.drops.items()})
        max_gap = spec.max_gap_ns if spec is not None else GroundTruthSpec.max_gap_ns
        slot = {t: i for i, t in enumerate(cam_topics) if t is not None}
        syncer = sync.synchronizer(rig.num_cameras)

        def events() -> Iterator[tuple[int, int, Any]]:
            for m in reader.messages(list(slot), start_ns, end_ns):
                f = image_fields(m.msgtype, m.msg)
                if f["stamp_ns"] == 0:  # a driver that leaves header.stamp unset: the recording time, as eval-bag
                    drops.add("zero_header_stamp", f"bag {reader.path}: {m.topic} has header stamp 0; using the "
                              "recording time instead")
                    f = dict(f, stamp_ns=int(m.log_time_ns))
                yield slot[m.topic], f["stamp_ns"], image_ref(f, f"{reader.path}:{m.topic}:{f['stamp_ns']}")

        index = 0
        for b in run_synchronizer(syncer, events()):
            mask = np.asarray(b.mask, dtype=bool)
            t = q = None
            if traj is not None:
                tt, qq, ok = traj.at([int(b.stamp_ns)], max_gap_ns=max_gap)
                if not ok[0]:
                    drops.add("outside_ground_truth", f"bag {reader.path}: bundle at {b.stamp_ns} ns is outside the "
                              f"GT ({traj.source}) coverage [{traj.stamps_ns[0]}, {traj.stamps_ns[-1]}] ns or in a "
                              f"gap > {max_gap} ns")
                    continue
                t, q = tt[0], qq[0]
            yield BundleRecord(int(b.stamp_ns), [b.payloads[i] if mask[i] else None for i in range(len(mask))],
                               [int(b.stamps_ns[i]) if mask[i] else None for i in range(len(mask))], mask, t, q,
                               name, index)
            index += 1
        drops.merge(sync_stats(syncer))
    finally:
        if own:
            reader.close()


def read_rosbag(bag: str | Path, rig: Rig, topics: dict[str, str] | None = None,
                gt: GroundTruthSpec | dict | None = None, sync: SyncSettings | dict | None = None,
                start_ns: int | None = None, end_ns: int | None = None, *, require_gt: bool = True,
                allow_missing_cameras: bool = False, track: str | None = None,
                track_gap_ns: int | None = 1_000_000_000) -> BundleSet:
    """A whole bag as a :class:`BundleSet` (images kept encoded in memory; decode lazily in the dataset)."""
    drops = Drops()
    records = list(iter_bag_bundles(bag, rig, topics, gt, sync, start_ns, end_ns, require_gt=require_gt,
                                    allow_missing_cameras=allow_missing_cameras, drops=drops, track=track))
    name = track or Path(bag).name
    if not records:
        raise DataError(f"{bag}: no bundles ({drops.summary(str(bag), 0)}); check camera topics, the GT coverage "
                        "and sync.max_interval_ns")
    split_tracks_on_gaps(records, track_gap_ns)
    out = BundleSet(rig, records, dict(drops), name, {"bag": str(bag)})
    log.info(out.summary())
    return out
