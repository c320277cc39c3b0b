"""Write small, fully controlled rosbag2 files (rosbags; ROS-free) for tests, benchmarks and examples.

Why: eval-bag, the player and the evaluator node must be tested on bags whose every stamp, image and pose is known,
in both storage plugins, with raw and compressed images, GT of every supported kind, and cameras that drop out.
Images are smooth colour patterns that depend on the rig pose, so a model can (in principle) learn from them and
the JPEG codec has something realistic to compress.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_from_yaw, quat_wxyz_to_xyzw
from mfapr_ros.core.odometry import OdometryDrift, simulate_odometry

GT_KINDS = ("pose", "pose_cov", "odom", "tf", "none")


@dataclass
class SynthBagSpec:
    """What to write. Times are seconds from ``t0_ns``; ``missing`` = ``{camera_index: (from_s, to_s)}``."""

    camera_topics: Sequence[str]
    frames: int = 40
    hz: float = 10.0
    size: int = 32
    storage: str = "sqlite3"  # sqlite3 | mcap
    compressed: bool | Sequence[bool] = False
    gt: str = "pose"
    gt_topic: str = "/ground_truth/pose"
    gt_hz: float = 50.0
    missing: dict[int, tuple[float, float]] = field(default_factory=dict)
    jitter_ms: float = 3.0
    t0_ns: int = 1_700_000_000_000_000_000
    radius: float = 3.0
    seed: int = 0
    extra_topics: bool = True  # a /rosout-like string topic to prove unrelated topics are ignored
    zero_header_stamps: bool = False  # camera header stamps left 0 (some drivers): readers use the recording time
    # drifting wheel odometry odom -> base_link on /tf at the GT rate (core.odometry; not with gt "tf", whose
    # odom -> base_link is exact); None = none
    odometry: OdometryDrift | None = None


def trajectory(t_s: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth loop: positions on a circle (z = 0) and yaw tangent to it (T_world_rig)."""
    a = 2 * np.pi * np.asarray(t_s) / 8.0
    t = np.stack([radius * np.cos(a), radius * np.sin(a), np.zeros_like(a)], -1)
    return t, quat_from_yaw(a + np.pi / 2)


def render(t: np.ndarray, yaw: float, cam: int, size: int) -> np.ndarray:
    """A uint8 RGB image that varies smoothly with position, heading and camera index."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    ph = yaw + cam * np.pi / 2
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + 0.3 * t[0]) + ph)
    g = 0.5 + 0.5 * np.sin(2 * np.pi * (yy + 0.3 * t[1]) - ph)
    b = 0.5 + 0.5 * np.cos(2 * np.pi * (xx + yy) + 0.5 * ph)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


#: one message to write: (log time ns, topic, message type, message)
BagRecord = tuple[int, str, str, Any]


def write_synth_bag(path: str | Path, spec: SynthBagSpec) -> dict[str, Any]:
    """Write the bag; returns the truth: per-camera stamps/images written and the GT samples."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if spec.gt not in GT_KINDS:
        raise ConfigError(f"gt kind must be one of {GT_KINDS}, got {spec.gt!r}")
    if spec.storage not in ("sqlite3", "mcap"):
        raise ConfigError(f"storage must be sqlite3 or mcap, got {spec.storage!r}")
    ts = get_typestore(Stores.LATEST)
    T = ts.types
    period_ns = int(round(1e9 / spec.hz))
    records, truth = _camera_records(spec, T, period_ns)
    gt_records, truth["gt"] = _gt_records(spec, T, period_ns)
    records += gt_records
    if spec.extra_topics:
        records.append((spec.t0_ns, "/chatter", "std_msgs/msg/String", T["std_msgs/msg/String"](data="hello")))
    records.sort(key=lambda r: r[0])
    plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(Path(path), version=9, storage_plugin=plugin) as w:
        conns: dict[str, Any] = {}
        for log_ns, topic, mt, msg in records:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, mt, typestore=ts)
            w.write(conns[topic], log_ns, ts.serialize_cdr(msg, mt))
    truth["duration_s"] = (records[-1][0] - records[0][0]) / 1e9
    return truth


def _header(T: Any, ns: int, frame: str) -> Any:
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000,
                                                                          nanosec=ns % 1_000_000_000), frame_id=frame)


def _pose_msg(T: Any, t: np.ndarray, q: np.ndarray) -> Any:
    xyzw = quat_wxyz_to_xyzw(q)
    return T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=T["geometry_msgs/msg/Quaternion"](x=float(xyzw[0]), y=float(xyzw[1]), z=float(xyzw[2]),
                                                      w=float(xyzw[3])))


def _camera_records(spec: SynthBagSpec, T: Any, period_ns: int
                    ) -> tuple[list[BagRecord], dict[str, Any]]:
    """The image messages (jittered stamps, missing intervals skipped) and the truth of what was written."""
    n_cam = len(spec.camera_topics)
    comp = [bool(spec.compressed)] * n_cam if isinstance(spec.compressed, bool) else [bool(c) for c in spec.compressed]
    rng = np.random.default_rng(spec.seed)
    records: list[BagRecord] = []
    truth: dict[str, Any] = {"stamps_ns": {i: [] for i in range(n_cam)}, "images": {i: [] for i in range(n_cam)}}
    for k in range(spec.frames):
        base = spec.t0_ns + k * period_ns
        for i, topic in enumerate(spec.camera_topics):
            rel = (base - spec.t0_ns) / 1e9
            lo_hi = spec.missing.get(i)
            if lo_hi is not None and lo_hi[0] <= rel < lo_hi[1]:
                continue
            st = base + int(rng.uniform(-1, 1) * spec.jitter_ms * 1e6)
            t, q = trajectory(np.array([(st - spec.t0_ns) / 1e9]), spec.radius)
            img = render(t[0], float(2 * np.pi * rel / 8.0), i, spec.size)
            hdr = _header(T, 0 if spec.zero_header_stamps else st, f"cam{i}")
            if comp[i]:
                msgtype = "sensor_msgs/msg/CompressedImage"
                data = encode_jpeg(img)
                msg = T[msgtype](header=hdr, format="rgb8; jpeg compressed bgr8", data=np.frombuffer(data, np.uint8))
                topic = topic if topic.endswith("/compressed") else topic + "/compressed"
            else:
                msgtype = "sensor_msgs/msg/Image"
                msg = T[msgtype](header=hdr, height=spec.size, width=spec.size, encoding="rgb8",
                                 is_bigendian=0, step=3 * spec.size, data=img.reshape(-1))
            truth["stamps_ns"][i].append(st)
            truth["images"][i].append(img)
            records.append((st + 2_000_000, topic, msgtype, msg))  # arrives 2 ms after its stamp
    return records, truth


def _gt_records(spec: SynthBagSpec, T: Any, period_ns: int
                ) -> tuple[list[BagRecord], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ground-truth messages of ``spec.gt`` (covering the images with margin) and the samples ``(stamps, t, q)``."""
    gt_period = int(round(1e9 / spec.gt_hz))
    n_gt = int((spec.frames + 1) * period_ns / gt_period) + 1
    gt_stamps = spec.t0_ns - 2 * gt_period + np.arange(n_gt + 4) * gt_period
    gt_t, gt_q = trajectory((gt_stamps - spec.t0_ns) / 1e9, spec.radius)
    records = [] if spec.gt == "none" else [_gt_record(spec, T, s, t, q)
                                            for s, t, q in zip(gt_stamps.tolist(), gt_t, gt_q, strict=True)]
    if spec.odometry is not None:
        if spec.gt == "tf":
            raise ConfigError("odometry: the gt kind 'tf' already writes odom -> base_link (exact); use another")
        od_t, od_q = simulate_odometry(gt_t, gt_q, spec.odometry, np.random.default_rng((spec.seed, 0x0D0)))
        for s, t, q in zip(gt_stamps.tolist(), od_t, od_q, strict=True):
            p = _pose_msg(T, t, q)
            tr = T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=p.position.x, y=p.position.y, z=p.position.z),
                rotation=p.orientation)
            records.append((s, "/tf", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](transforms=[
                T["geometry_msgs/msg/TransformStamped"](header=_header(T, s, "odom"), child_frame_id="base_link",
                                                        transform=tr)])))
    if spec.gt == "tf":
        st_tr = T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=1.0, y=0.0, z=0.0),
            rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        records.append((int(gt_stamps[0]), "/tf_static", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](
            transforms=[T["geometry_msgs/msg/TransformStamped"](header=_header(T, int(gt_stamps[0]), "map"),
                                                                 child_frame_id="odom", transform=st_tr)])))
    return records, (gt_stamps, gt_t, gt_q)


def _gt_record(spec: SynthBagSpec, T: Any, s: int, t: np.ndarray, q: np.ndarray) -> BagRecord:
    """One ground-truth sample as the message kind ``spec.gt`` names (not ``none``)."""
    hdr = _header(T, s, "map")
    if spec.gt == "pose":
        return (s, spec.gt_topic, "geometry_msgs/msg/PoseStamped",
                T["geometry_msgs/msg/PoseStamped"](header=hdr, pose=_pose_msg(T, t, q)))
    if spec.gt == "pose_cov":
        mt = "geometry_msgs/msg/PoseWithCovarianceStamped"
        pc = T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose_msg(T, t, q), covariance=np.zeros(36))
        return (s, spec.gt_topic, mt, T[mt](header=hdr, pose=pc))
    if spec.gt == "odom":
        mt = "nav_msgs/msg/Odometry"
        pc = T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose_msg(T, t, q), covariance=np.zeros(36))
        tw = T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                               angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36))
        return (s, spec.gt_topic, mt, T[mt](header=hdr, child_frame_id="base_link", pose=pc, twist=tw))
    # tf: map -> odom is static (a 1 m shift); odom -> base_link carries the motion, so the chain is exercised
    p = _pose_msg(T, t - np.array([1.0, 0.0, 0.0]), q)
    tr = T["geometry_msgs/msg/Transform"](
        translation=T["geometry_msgs/msg/Vector3"](x=p.position.x, y=p.position.y, z=p.position.z),
        rotation=p.orientation)
    ts_msg = T["geometry_msgs/msg/TransformStamped"](header=_header(T, s, "odom"), child_frame_id="base_link",
                                                     transform=tr)
    return (s, "/tf", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](transforms=[ts_msg]))
