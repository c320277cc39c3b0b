"""ROS-free rosbag2 access with `rosbags`: open a bag (sqlite3 or MCAP), list topics, iterate deserialised messages,
read ground-truth trajectories (PoseStamped, PoseWithCovarianceStamped, Odometry, or TF between two frames).

Why here: `mfapr eval-bag`, `mfapr play` and training's rosbag reader all need the same bag handling, and
``mfapr_training`` depends on ``mfapr_ros`` (never the reverse), so the one implementation lives in the runtime
package. Nothing here imports rclpy: `rosbags` deserialises CDR with its own type store, and its message objects have
the same field names as the rclpy ones (``header.stamp.sec``, ``pose.pose.position`` ...).

Typical use::

    with BagReader("run1/") as bag:
        print(bag.info().topics)                       # {"/cam0/image_raw": TopicInfo(msgtype, count), ...}
        for m in bag.messages(["/cam0/image_raw"]):    # time order over all files
            m.topic, m.log_time_ns, m.msg              # m.raw is the CDR payload (what `mfapr play` publishes)
        gt = bag.read_trajectory("/ground_truth/pose")  # or bag.read_tf_trajectory("map", "base_link")

Every failure is a :class:`DataError` that names the bag, the topic and what to do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import interpolate_poses, pose_compose, pose_inverse, quat_normalize, quat_xyzw_to_wxyz

#: Storage plugins rosbags reads (``storage_identifier`` in metadata.yaml).
STORAGE_FORMATS = ("sqlite3", "mcap")

POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_COV_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
#: Message types a ground-truth topic may have.
GT_POSE_TYPES = (POSE_STAMPED, POSE_COV_STAMPED, ODOMETRY, TRANSFORM_STAMPED)
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


@dataclass(frozen=True)
class TopicInfo:
    """Type and message count of one topic in a bag."""

    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    """Summary of a bag: storage plugin, time span (ns, log time) and topics."""

    path: Path
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicInfo]

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass
class BagMessage:
    """One message: topic, type, bag log time (ns), CDR bytes; ``msg`` deserialises on first access."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    _reader: Any = field(repr=False, default=None)
    _msg: Any = field(repr=False, default=None)

    @property
    def msg(self) -> Any:
        if self._msg is None:
            try:
                self._msg = self._reader.deserialize(self.raw, self.msgtype)
            except Exception as e:  # rosbags raises several unrelated types for corrupt CDR
                raise DataError(f"cannot deserialise a {self.msgtype} message on {self.topic} at "
                                f"{self.log_time_ns} ns ({e}); the bag is corrupt or was written with another "
                                "message definition") from e
        return self._msg


@dataclass
class Trajectory:
    """Poses ``T_world_body`` at strictly increasing integer-ns stamps, with where they came from."""

    stamps_ns: np.ndarray
    t: np.ndarray
    q: np.ndarray  # (N, 4) w, x, y, z
    source: str
    drops: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, query_ns: Sequence[int] | np.ndarray, max_gap_ns: int | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated poses at ``query_ns`` → ``(t, q, valid)`` (see :func:`geometry.interpolate_poses`)."""
        return interpolate_poses(self.stamps_ns, self.t, self.q, query_ns, max_gap_ns=max_gap_ns)


def stamp_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (rosbags or rclpy object) → integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def pose_fields(pose: Any) -> tuple[np.ndarray, np.ndarray]:
    """A ``geometry_msgs/Pose`` → ``(t, q_wxyz)``; the one xyzw→wxyz conversion is geometry's."""
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z], dtype=np.float64), quat_xyzw_to_wxyz([o.x, o.y, o.z, o.w])


def transform_fields(tr: Any) -> tuple[np.ndarray, np.ndarray]:
    """A ``geometry_msgs/Transform`` → ``(t, q_wxyz)``."""
    p, o = tr.translation, tr.rotation
    return np.array([p.x, p.y, p.z], dtype=np.float64), quat_xyzw_to_wxyz([o.x, o.y, o.z, o.w])


def gt_message_pose(msgtype: str, msg: Any) -> tuple[int, np.ndarray, np.ndarray, str]:
    """``(stamp_ns, t, q_wxyz, frame_id)`` of a GT message of any supported type (header stamp, not log time)."""
    if msgtype == POSE_STAMPED:
        t, q = pose_fields(msg.pose)
    elif msgtype in (POSE_COV_STAMPED, ODOMETRY):
        t, q = pose_fields(msg.pose.pose)
    elif msgtype == TRANSFORM_STAMPED:
        t, q = transform_fields(msg.transform)
    else:
        raise DataError(f"unsupported ground-truth message type {msgtype}; use one of {', '.join(GT_POSE_TYPES)} "
                        "or --gt-tf PARENT:CHILD")
    return stamp_ns(msg.header.stamp), t, q, str(msg.header.frame_id)


def build_trajectory(stamps: Iterable[int], ts: Iterable[np.ndarray], qs: Iterable[np.ndarray], source: str,
                     drops: dict[str, int] | None = None) -> Trajectory:
    """Sort by stamp, drop (and count) duplicate stamps and non-finite/zero quaternions."""
    drops = dict(drops or {})
    s = np.asarray(list(stamps), dtype=np.int64)
    t = np.asarray(list(ts), dtype=np.float64).reshape(-1, 3)
    q = np.asarray(list(qs), dtype=np.float64).reshape(-1, 4)
    good = np.all(np.isfinite(t), 1) & np.all(np.isfinite(q), 1) & (np.linalg.norm(q, axis=1) > 1e-6)
    if (~good).any():
        drops["invalid_pose"] = drops.get("invalid_pose", 0) + int((~good).sum())
    s, t, q = s[good], t[good], q[good]
    order = np.argsort(s, kind="stable")
    s, t, q = s[order], t[order], q[order]
    if len(s):
        keep = np.concatenate([[True], np.diff(s) > 0])
        if (~keep).any():
            drops["duplicate_stamp"] = drops.get("duplicate_stamp", 0) + int((~keep).sum())
        s, t, q = s[keep], t[keep], q[keep]
    return Trajectory(s, t, quat_normalize(q) if len(q) else q, source, drops)


def ros1_hint(bag: Path) -> str:
    """The conversion command for a ROS 1 bag (``rosbags-convert`` ships with rosbags, a dependency)."""
    dst = bag.with_name(bag.stem + "_ros2")
    return (f"{bag} is not a rosbag2 but a ROS 1 bag; convert it first: rosbags-convert --src {bag} --dst {dst} "
            "(rosbags-convert is installed with mfapr_ros' dependencies, e.g. .venv/bin/rosbags-convert)")


def _is_ros1_bag(p: Path) -> bool:
    """A ROS 1 bag file: the ``#ROSBAG V2.0`` magic (or a ``.bag`` name when unreadable)."""
    try:
        with open(p, "rb") as f:
            return f.read(13) == b"#ROSBAG V2.0\n"
    except OSError:
        return p.suffix == ".bag"


def detect_storage(path: str | Path) -> str:
    """Storage plugin of a rosbag2 directory (or a bare .db3/.mcap file); DataError when unknown or not a bag
    (a ROS 1 bag, or a folder holding one, names the converter)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"bag {p} does not exist; pass a rosbag2 directory (with metadata.yaml)")
    if p.is_file() and (p.suffix == ".bag" or _is_ros1_bag(p)):
        raise DataError(ros1_hint(p))
    if p.is_dir() and not (p / "metadata.yaml").exists():
        ros1 = sorted(f for f in p.glob("*.bag") if f.is_file())
        if ros1:
            raise DataError(f"{p} has no metadata.yaml but holds ROS 1 bag(s) {[f.name for f in ros1]}: "
                            f"{ros1_hint(ros1[0])}")
    if p.is_file():
        ext = {".db3": "sqlite3", ".mcap": "mcap"}.get(p.suffix)
        if ext is None:
            raise DataError(f"{p} is not a rosbag2: expected a directory with metadata.yaml, or a .db3/.mcap file")
        return ext
    meta_path = p / "metadata.yaml"
    if not meta_path.exists():
        raise DataError(f"{p} has no metadata.yaml, so it is not a rosbag2 directory; record it with `ros2 bag "
                        "record` or write it with rosbags")
    try:
        meta = yaml.safe_load(meta_path.read_text())
        storage = meta["rosbag2_bagfile_information"]["storage_identifier"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{meta_path} is not valid rosbag2 metadata ({e!r})") from e
    if storage not in STORAGE_FORMATS:
        raise DataError(f"bag {p} uses storage format '{storage}', which is not supported; supported: "
                        f"{', '.join(STORAGE_FORMATS)} (convert it with `ros2 bag convert`)")
    return str(storage)


class BagReader:
    """A rosbag2 opened with rosbags' AnyReader (sqlite3 or MCAP, optional zstd compression). Context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.storage = detect_storage(self.path)
        self._reader: Any = None

    def open(self) -> BagReader:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        try:
            reader = AnyReader([self.path], default_typestore=get_typestore(Stores.LATEST))
            reader.open()
        except Exception as e:  # rosbags raises ReaderError, AnyReaderError, OSError ...
            raise DataError(f"cannot open bag {self.path} ({type(e).__name__}: {e})") from e
        self._reader = reader
        return self

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise DataError(f"bag {self.path} is not open; use `with BagReader(path) as bag:`")
        return self._reader

    def info(self) -> BagInfo:
        """Storage, time span and topics (message counts summed over connections)."""
        r = self.reader
        counts: dict[str, int] = defaultdict(int)
        types: dict[str, str] = {}
        for c in r.connections:
            counts[c.topic] += int(c.msgcount)
            types[c.topic] = c.msgtype
        topics = {k: TopicInfo(types[k], counts[k]) for k in sorted(types)}
        n = int(r.message_count)
        return BagInfo(self.path, self.storage, int(r.start_time) if n else 0, int(r.end_time) if n else 0, n,
                       topics)

    def topic_types(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}

    def require_topics(self, topics: Iterable[str], what: str = "topic") -> None:
        """DataError listing the missing topics and the ones the bag has."""
        have = self.topic_types()
        missing = [t for t in topics if t not in have]
        if missing:
            listing = "\n".join(f"  {k}  [{v}]" for k, v in sorted(have.items())) or "  (none)"
            raise DataError(f"bag {self.path} has no {what} {', '.join(missing)}. Topics in the bag:\n{listing}\n"
                            "Remap with --topics cam=/topic,... (or --gt-topic / --gt-tf).")

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in log-time order, with ``start_ns <= log time < end_ns``."""
        r = self.reader
        wanted = None if topics is None else set(topics)
        conns = [c for c in r.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, ts, raw in r.messages(connections=conns, start=start_ns, stop=end_ns):
            yield BagMessage(conn.topic, conn.msgtype, int(ts), bytes(raw), _reader=r)

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.reader.deserialize(raw, msgtype)

    # ------------------------------------------------------------------------------------------- ground truth
    def read_trajectory(self, topic: str, start_ns: int | None = None, end_ns: int | None = None) -> Trajectory:
        """GT trajectory from a PoseStamped / PoseWithCovarianceStamped / Odometry / TransformStamped topic."""
        self.require_topics([topic], "ground-truth topic")
        msgtype = self.topic_types()[topic]
        if msgtype not in GT_POSE_TYPES:
            raise DataError(f"ground-truth topic {topic} in {self.path} has type {msgtype}; supported: "
                            f"{', '.join(GT_POSE_TYPES)} (for /tf use --gt-tf PARENT:CHILD)")
        stamps, ts, qs = [], [], []
        for m in self.messages([topic], start_ns, end_ns):
            s, t, q, _ = gt_message_pose(msgtype, m.msg)
            stamps.append(s)
            ts.append(t)
            qs.append(q)
        traj = build_trajectory(stamps, ts, qs, f"{topic} [{msgtype}]")
        if len(traj) == 0:
            raise DataError(f"ground-truth topic {topic} in {self.path} has no usable poses in the selected time "
                            "range")
        return traj

    def read_tf_trajectory(self, parent: str, child: str, start_ns: int | None = None, end_ns: int | None = None,
                           tf_topics: Sequence[str] = ("/tf", "/tf_static")) -> Trajectory:
        """``T_parent_child`` over time from /tf (+ /tf_static), chaining intermediate frames (e.g. map→odom→
        base_link). Stamps are those of the fastest-changing edge; other dynamic edges are interpolated there."""
        have = self.topic_types()
        topics = [t for t in tf_topics if t in have]
        if not topics:
            self.require_topics([tf_topics[0]], "TF topic")
        edges: dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        static: set[tuple[str, str]] = set()
        for m in self.messages(topics, None if "/tf_static" in topics else start_ns, end_ns):
            if m.msgtype != TF_MESSAGE:
                continue
            for tr in m.msg.transforms:
                key = (str(tr.header.frame_id).lstrip("/"), str(tr.child_frame_id).lstrip("/"))
                t, q = transform_fields(tr.transform)
                edges[key].append((stamp_ns(tr.header.stamp), t, q))
                if m.topic.endswith("tf_static"):
                    static.add(key)
        traj = tf_trajectory(edges, static, parent, child, start_ns)
        if traj is None:
            frames = sorted({f for k in edges for f in k})
            raise DataError(f"no TF path from '{parent}' to '{child}' in {self.path} (frames: {frames}); check "
                            "--gt-tf PARENT:CHILD")
        if len(traj) == 0:
            raise DataError(f"TF {parent}->{child} in {self.path} has no usable poses in the selected time range")
        return traj


TfEdges = dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]]


def tf_trajectory(edges: TfEdges, static: set[tuple[str, str]], parent: str, child: str,
                  start_ns: int | None = None) -> Trajectory | None:
    """``T_parent_child`` over time from TF samples ``{(parent, child): [(stamp_ns, t, q_wxyz), ...]}``.

    Intermediate frames are chained (either direction); static edges (and edges with one sample) are constant;
    the output stamps are those of the dynamic edge with the most samples, the other dynamic edges are interpolated
    there (stamps outside them are dropped and counted). None when no chain links the two frames. Shared by the
    bag reader and ``evaluator_node``.
    """
    parent, child = parent.lstrip("/"), child.lstrip("/")
    chain = _tf_chain(edges, parent, child)
    if chain is None:
        return None
    trajs = {k: build_trajectory([e[0] for e in edges[k]], [e[1] for e in edges[k]], [e[2] for e in edges[k]],
                                 f"tf {k[0]}->{k[1]}") for k, _ in chain}
    if any(len(tr) == 0 for tr in trajs.values()):  # an edge whose every sample was invalid: no usable chain yet
        return None
    dynamic = [k for k, _ in chain if k not in static and len(trajs[k]) > 1]
    ref = max(dynamic, key=lambda k: len(trajs[k])) if dynamic else chain[-1][0]
    stamps = trajs[ref].stamps_ns
    if start_ns is not None:
        stamps = stamps[stamps >= start_ns]
    t_acc = np.zeros((len(stamps), 3))
    q_acc = np.tile([1.0, 0.0, 0.0, 0.0], (len(stamps), 1))
    valid = np.ones(len(stamps), bool)
    for key, forward in chain:
        tr = trajs[key]
        if len(stamps) == 0:
            break
        if key in static or len(tr) == 1:
            te, qe = np.broadcast_to(tr.t[-1], (len(stamps), 3)), np.broadcast_to(tr.q[-1], (len(stamps), 4))
        else:
            te, qe, ok = tr.at(stamps)
            valid &= ok
        if not forward:
            te, qe = pose_inverse(te, qe)
        t_acc, q_acc = pose_compose(t_acc, q_acc, te, qe)
    drops = {"tf_outside_other_edges": int((~valid).sum())} if (~valid).any() else {}
    return build_trajectory(stamps[valid], t_acc[valid], q_acc[valid], f"tf {parent}->{child}", drops)


def _tf_chain(edges: dict[tuple[str, str], Any], parent: str, child: str
              ) -> list[tuple[tuple[str, str], bool]] | None:
    """Edges (with direction: True = parent→child as stored) linking ``parent`` to ``child``, by BFS."""
    adj: dict[str, list[tuple[str, tuple[str, str], bool]]] = defaultdict(list)
    for a, b in edges:
        adj[a].append((b, (a, b), True))
        adj[b].append((a, (a, b), False))
    prev: dict[str, tuple[str, tuple[str, str], bool]] = {}
    queue, seen = [parent], {parent}
    while queue:
        f = queue.pop(0)
        if f == child:
            break
        for nxt, key, fwd in adj[f]:
            if nxt not in seen:
                seen.add(nxt)
                prev[nxt] = (f, key, fwd)
                queue.append(nxt)
    if child not in seen or parent == child:
        return None
    chain = []
    f = child
    while f != parent:
        g, key, fwd = prev[f]
        chain.append((key, fwd))
        f = g
    return chain[::-1]


def read_gt(bag: BagReader, gt_topic: str | None = None, gt_tf: str | None = None, start_ns: int | None = None,
            end_ns: int | None = None) -> Trajectory:
    """GT from ``--gt-topic`` or ``--gt-tf PARENT:CHILD``; with neither, the first of the usual GT topics found."""
    if gt_tf:
        if gt_tf.count(":") != 1 or not all(gt_tf.split(":")):
            raise DataError(f"--gt-tf '{gt_tf}' must be PARENT:CHILD, e.g. map:base_link")
        parent, child = gt_tf.split(":")
        return bag.read_tf_trajectory(parent, child, start_ns, end_ns)
    if gt_topic:
        return bag.read_trajectory(gt_topic, start_ns, end_ns)
    types = bag.topic_types()
    for cand in ("/ground_truth/pose", "/ground_truth", "/gt/pose", "/ground_truth/odom", "/odom_gt"):
        if cand in types and types[cand] in GT_POSE_TYPES:
            return bag.read_trajectory(cand, start_ns, end_ns)
    listing = ", ".join(f"{k} [{v}]" for k, v in sorted(types.items()))
    raise DataError(f"bag {bag.path} has no ground truth: no --gt-topic/--gt-tf given and none of the usual GT "
                    f"topics found. Topics: {listing}. Pass --gt-topic TOPIC or --gt-tf map:base_link.")


def image_fields(msgtype: str, msg: Any) -> dict[str, Any]:
    """The fields `mfapr_ros.core.images` decodes, from a rosbags (or rclpy) Image / CompressedImage message."""
    if msgtype == IMAGE:
        return {"kind": "raw", "stamp_ns": stamp_ns(msg.header.stamp), "encoding": str(msg.encoding),
                "height": int(msg.height), "width": int(msg.width), "step": int(msg.step),
                "is_bigendian": bool(msg.is_bigendian), "data": np.asarray(msg.data, dtype=np.uint8)}
    if msgtype == COMPRESSED_IMAGE:
        return {"kind": "compressed", "stamp_ns": stamp_ns(msg.header.stamp), "format": str(msg.format),
                "data": np.asarray(msg.data, dtype=np.uint8)}
    raise DataError(f"expected {IMAGE} or {COMPRESSED_IMAGE}, got {msgtype}")
