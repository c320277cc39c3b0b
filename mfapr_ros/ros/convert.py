"""The ONLY place ROS messages and package types are converted into each other.

Why one place: the quaternion order (ROS ``x, y, z, w`` vs. the package's ``w, x, y, z``), ROS ``Time`` vs. integer
nanoseconds and image fields are classic sources of silent bugs; keeping every conversion here (and tested both
ways) means the node, the evaluator node and the bag player cannot disagree. Decoding itself stays in
:mod:`mfapr_ros.core.images` (ROS-free, shared with the offline readers); this module only hands it the message fields.

Message data (``uint8[]``) arrives from rclpy as ``array.array('B')``; it is passed on as a zero-copy
``memoryview`` so a 10-camera node does not copy every frame once more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, PoseWithCovarianceStamped, TransformStamped
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import quat_normalize, quat_wxyz_to_xyzw, quat_xyzw_to_wxyz

NS_PER_S = 1_000_000_000


class PoseLike(Protocol):
    """What the pose converters need from a :class:`mfapr_ros.inference.localizer.RigPose` (structural: no import)."""

    stamp_ns: int
    t: np.ndarray
    q: np.ndarray


# ---------------------------------------------------------------- time
def time_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec``/``nanosec``) → integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """Integer nanoseconds → ``builtin_interfaces/Time`` (negative stamps are invalid in ROS messages)."""
    ns = int(ns)
    if ns < 0:
        raise DataError(f"cannot convert a negative stamp ({ns} ns) to a ROS Time; stamps must be >= 0")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def header(stamp_ns: int, frame_id: str) -> Header:
    """A ``std_msgs/Header`` from integer nanoseconds and a frame id."""
    return Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------- images
def image_fields(msg: Image) -> dict[str, Any]:
    """``sensor_msgs/Image`` → keyword arguments of :func:`mfapr_ros.core.images.decode_raw` (data zero-copy)."""
    return {"encoding": msg.encoding, "height": int(msg.height), "width": int(msg.width), "step": int(msg.step),
            "data": _buffer(msg.data), "is_bigendian": bool(msg.is_bigendian)}


def compressed_fields(msg: CompressedImage) -> dict[str, Any]:
    """``sensor_msgs/CompressedImage`` → keyword arguments of :func:`mfapr_ros.core.images.decode_compressed`."""
    return {"format": msg.format, "data": _buffer(msg.data)}


def decode_image_msg(msg: Image | CompressedImage, device: Any = None) -> np.ndarray:
    """Decode either image message with the package's one decoder; raises ``DataError`` on bad input.

    ``device`` is only used for compressed images (JPEG decoding on CUDA where available).
    """
    from mfapr_ros.core import images

    if isinstance(msg, CompressedImage):
        f = compressed_fields(msg)
        if device is None:
            return images.decode_compressed(f["format"], f["data"])
        return images.decode_compressed(f["format"], f["data"], device=device)
    if isinstance(msg, Image):
        return images.decode_raw(**image_fields(msg))
    raise DataError(f"decode_image_msg: expected sensor_msgs Image or CompressedImage, got {type(msg).__name__}")


def _buffer(data: Any) -> memoryview | bytes:
    if isinstance(data, (bytes, bytearray)):
        return data if isinstance(data, bytes) else bytes(data)
    try:
        return memoryview(data).cast("B")
    except TypeError:
        return bytes(data)


def numpy_to_image_msg(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "",
                       step: int | None = None) -> Image:
    """A ``sensor_msgs/Image`` from an HWC/HW array already in ``encoding`` (rgb8, bgr8, mono8, mono16, …).

    Used by the bag player, tests and benchmarks. ``step`` larger than the row size pads each row with zeros
    (as some drivers do) to exercise row-padding handling.
    """
    arr = np.ascontiguousarray(image)
    if arr.ndim not in (2, 3):
        raise DataError(f"numpy_to_image_msg: expected an HxW or HxWxC array, got shape {arr.shape}")
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8).reshape(h, -1) if arr.dtype != np.uint8 else arr.reshape(h, -1)
    row_bytes = row.shape[1]
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise DataError(f"numpy_to_image_msg: step {step} is smaller than a row ({row_bytes} bytes)")
    if step > row_bytes:
        padded = np.zeros((h, step), np.uint8)
        padded[:, :row_bytes] = row
        row = padded
    msg = Image()
    msg.header = header(stamp_ns, frame_id)
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.is_bigendian = 0
    msg.data = row.tobytes()
    return msg


def encoded_to_compressed_msg(data: bytes, fmt: str, stamp_ns: int, frame_id: str = "") -> CompressedImage:
    """A ``sensor_msgs/CompressedImage`` from encoded bytes; ``fmt``: ``jpeg``, ``png``, ``rgb8; jpeg ...``."""
    msg = CompressedImage()
    msg.header = header(stamp_ns, frame_id)
    msg.format = fmt
    msg.data = bytes(data)
    return msg


# ---------------------------------------------------------------- poses
def _fill_pose(p: Pose, t: Sequence[float] | np.ndarray, q_wxyz: Sequence[float] | np.ndarray) -> Pose:
    x, y, z, w = (float(v) for v in quat_wxyz_to_xyzw(quat_normalize(np.asarray(q_wxyz, dtype=np.float64))))
    p.position.x, p.position.y, p.position.z = (float(v) for v in np.asarray(t, dtype=np.float64).reshape(3))
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = x, y, z, w
    return p


def pose_to_msg(t: Sequence[float] | np.ndarray, q_wxyz: Sequence[float] | np.ndarray) -> Pose:
    """``(t, q wxyz)`` → ``geometry_msgs/Pose``."""
    return _fill_pose(Pose(), t, q_wxyz)


def msg_to_pose(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """``geometry_msgs/Pose`` (or ``Transform``: translation/rotation) → ``(t (3,), q wxyz (4,))``."""
    if hasattr(p, "position"):
        pos, rot = p.position, p.orientation
    else:
        pos, rot = p.translation, p.rotation
    t = np.array([pos.x, pos.y, pos.z], dtype=np.float64)
    q = quat_xyzw_to_wxyz(np.array([rot.x, rot.y, rot.z, rot.w], dtype=np.float64))
    return t, q


def rig_pose_to_pose_stamped(pose: PoseLike, frame_id: str) -> PoseStamped:
    """A RigPose (``T_frame_rig``) → ``PoseStamped`` stamped with the bundle stamp."""
    msg = PoseStamped()
    msg.header = header(pose.stamp_ns, frame_id)
    _fill_pose(msg.pose, pose.t, pose.q)
    return msg


def covariance_to_msg(cov: np.ndarray | Sequence[float]) -> list[float]:
    """A 6×6 covariance [x y z roll pitch yaw] → the row-major 36 floats of ``PoseWithCovariance``.

    The package's order is the ROS order (rotation about fixed X, Y, Z); the matrix is symmetrised and checked.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.shape == (36,):
        c = c.reshape(6, 6)
    if c.shape != (6, 6) or not np.all(np.isfinite(c)):
        raise DataError(f"covariance must be a finite 6x6 matrix [x y z roll pitch yaw], got shape {c.shape}")
    c = 0.5 * (c + c.T)
    return [float(v) for v in c.reshape(-1)]


def rig_pose_to_pose_with_covariance(pose: PoseLike, frame_id: str,
                                     covariance: np.ndarray | Sequence[float] | None = None
                                     ) -> PoseWithCovarianceStamped:
    """A RigPose → ``PoseWithCovarianceStamped`` (covariance from the pose unless ``covariance`` is given)."""
    msg = PoseWithCovarianceStamped()
    msg.header = header(pose.stamp_ns, frame_id)
    _fill_pose(msg.pose.pose, pose.t, pose.q)
    cov = covariance if covariance is not None else getattr(pose, "covariance", None)
    if cov is None:
        raise DataError("rig_pose_to_pose_with_covariance: the pose has no covariance and none was given")
    msg.pose.covariance = covariance_to_msg(cov)
    return msg


def transform_stamped(t: Sequence[float] | np.ndarray, q_wxyz: Sequence[float] | np.ndarray, stamp_ns: int,
                      parent: str, child: str) -> TransformStamped:
    """``T_parent_child`` → ``TransformStamped`` (header.frame_id = parent, child_frame_id = child)."""
    msg = TransformStamped()
    msg.header = header(stamp_ns, parent)
    msg.child_frame_id = child
    x, y, z, w = (float(v) for v in quat_wxyz_to_xyzw(quat_normalize(np.asarray(q_wxyz, dtype=np.float64))))
    tr = msg.transform
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in np.asarray(t, np.float64).reshape(3))
    tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = x, y, z, w
    return msg
