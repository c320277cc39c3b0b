"""ros_convert: ROS messages ↔ package types, both directions, with the quaternion order and ns stamps checked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("rclpy")

from hypothesis import given, settings
from hypothesis import strategies as st

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import quat_from_axis_angle, quat_mul, quat_rotate
from mfapr_ros.ros import convert as rc


@dataclass
class _Pose:
    stamp_ns: int
    t: np.ndarray
    q: np.ndarray
    covariance: np.ndarray


def _has_images() -> bool:
    try:
        import mfapr_ros.core.images  # noqa: F401
    except ImportError:
        return False
    return True


@given(st.integers(min_value=0, max_value=2**62))
@settings(max_examples=200, deadline=None)
def test_time_round_trip_is_exact(ns: int) -> None:
    t = rc.ns_to_time(ns)
    assert 0 <= t.nanosec < 1_000_000_000
    assert rc.time_to_ns(t) == ns


def test_ns_to_time_values_and_negative() -> None:
    t = rc.ns_to_time(1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789)
    with pytest.raises(DataError, match="negative"):
        rc.ns_to_time(-1)


def test_pose_quaternion_order_and_round_trip() -> None:
    q_wxyz = quat_from_axis_angle([0.0, 0.0, 1.0], np.pi / 2)  # yaw 90°: (cos45, 0, 0, sin45)
    p = rc.pose_to_msg([1.0, 2.0, 3.0], q_wxyz)
    assert p.orientation.w == pytest.approx(np.cos(np.pi / 4))
    assert p.orientation.z == pytest.approx(np.sin(np.pi / 4))
    assert p.orientation.x == 0.0 and p.orientation.y == 0.0
    assert (p.position.x, p.position.y, p.position.z) == (1.0, 2.0, 3.0)
    t, q = rc.msg_to_pose(p)
    np.testing.assert_allclose(t, [1, 2, 3])
    np.testing.assert_allclose(q, q_wxyz, atol=1e-12)


def test_pose_stamped_and_covariance() -> None:
    cov = np.diag([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    cov[0, 1] = 0.05  # asymmetric on purpose: the message gets the symmetric part
    pose = _Pose(12_345_678_901, np.array([1.0, -2.0, 0.5]), np.array([1.0, 0, 0, 0]), cov)
    ps = rc.rig_pose_to_pose_stamped(pose, "map")
    assert ps.header.frame_id == "map" and rc.time_to_ns(ps.header.stamp) == 12_345_678_901
    pc = rc.rig_pose_to_pose_with_covariance(pose, "map")
    c = np.array(pc.pose.covariance).reshape(6, 6)
    assert c[0, 1] == pytest.approx(0.025) and c[1, 0] == pytest.approx(0.025)
    np.testing.assert_allclose(np.diag(c), [0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    assert pc.pose.pose.position.y == -2.0
    with pytest.raises(DataError, match="6x6"):
        rc.covariance_to_msg(np.eye(5))
    with pytest.raises(DataError, match="6x6"):
        rc.covariance_to_msg(np.full((6, 6), np.nan))


def test_transform_stamped_maps_child_points_into_parent() -> None:
    q = quat_mul(quat_from_axis_angle([0, 0, 1], 0.3), quat_from_axis_angle([1, 0, 0], -0.2))
    tr = rc.transform_stamped([1.0, 2.0, 3.0], q, 5_000_000_001, "map", "base_link")
    assert tr.header.frame_id == "map" and tr.child_frame_id == "base_link"
    assert (tr.header.stamp.sec, tr.header.stamp.nanosec) == (5, 1)
    t2, q2 = rc.msg_to_pose(tr.transform)
    p = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(quat_rotate(q2, p) + t2, quat_rotate(q, p) + [1, 2, 3], atol=1e-12)


def test_image_fields_zero_copy_and_padding() -> None:
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    msg = rc.numpy_to_image_msg(img, "rgb8", 42, "cam0", step=20)  # 15 bytes of pixels + 5 bytes padding
    f = rc.image_fields(msg)
    assert (f["encoding"], f["height"], f["width"], f["step"]) == ("rgb8", 3, 5, 20)
    buf = np.frombuffer(f["data"], np.uint8).reshape(3, 20)
    np.testing.assert_array_equal(buf[:, :15].reshape(3, 5, 3), img)
    assert not buf[:, 15:].any()
    assert rc.time_to_ns(msg.header.stamp) == 42 and msg.header.frame_id == "cam0"
    with pytest.raises(DataError, match="step"):
        rc.numpy_to_image_msg(img, "rgb8", 0, step=10)


def test_mono16_message_bytes() -> None:
    img = np.array([[0, 256], [65535, 1]], dtype=np.uint16)
    msg = rc.numpy_to_image_msg(img, "mono16", 0)
    assert msg.step == 4 and len(msg.data) == 8
    np.testing.assert_array_equal(np.frombuffer(rc.image_fields(msg)["data"], np.uint16).reshape(2, 2), img)
    assert rc.image_fields(msg)["is_bigendian"] is False
    grey = rc.decode_image_msg(msg) if _has_images() else None
    if grey is not None:  # mono16 scaled to 8 bit by the package decoder
        np.testing.assert_array_equal(grey[..., 0], [[0, 1], [255, 0]])


def test_compressed_fields() -> None:
    msg = rc.encoded_to_compressed_msg(b"\xff\xd8abc", "jpeg", 7, "cam1")
    f = rc.compressed_fields(msg)
    assert f["format"] == "jpeg" and bytes(f["data"]) == b"\xff\xd8abc"


def test_decode_image_msg_uses_the_package_decoder() -> None:
    images = pytest.importorskip("mfapr_ros.core.images")
    img = (np.random.default_rng(0).random((8, 6, 3)) * 255).astype(np.uint8)
    out = rc.decode_image_msg(rc.numpy_to_image_msg(img[..., ::-1], "bgr8", 1))
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(out, images.decode_raw("bgr8", 8, 6, 18, img[..., ::-1].tobytes()))
    with pytest.raises(DataError) as e:
        rc.decode_image_msg(rc.encoded_to_compressed_msg(b"not a jpeg", "jpeg", 1))
    assert getattr(e.value, "cause", None) == "corrupt"
    with pytest.raises(DataError) as e:
        rc.decode_image_msg(rc.numpy_to_image_msg(img, "yuv422", 1))
    assert getattr(e.value, "cause", None) == "unsupported_encoding"
    with pytest.raises(DataError):
        rc.decode_image_msg("not a message")  # type: ignore[arg-type]
