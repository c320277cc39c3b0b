"""The node reads image fields straight from serialized messages (no deserialize_message): the same fields and the
same decoded pixels as rclpy's deserialization, for every string-length alignment; truncated buffers are a
``corrupt`` decode error, never an exception of another kind."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers import jpeg


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "cam0", "camera_1", "a_longer_frame_id_"])
def test_cdr_fields_match_deserialization(frame_id: str) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from mfapr_ros.core.images import decode_compressed, decode_raw
    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.cdr import cdr_compressed_fields, cdr_header_stamp_ns, cdr_image_fields

    rng = np.random.default_rng(len(frame_id))
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    stamp = 1_700_000_123_456_789_012
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8"):
        msg = rc.encoded_to_compressed_msg(jpeg(img), fmt, stamp, frame_id)
        data = serialize_message(msg)
        f, view = cdr_compressed_fields(data)
        back = deserialize_message(data, CompressedImage)
        assert f == back.format == fmt and bytes(view) == bytes(back.data)
        assert cdr_header_stamp_ns(data) == stamp
        assert np.array_equal(decode_compressed(f, view), rc.decode_image_msg(back))
    for enc, arr, step in (("rgb8", img, None), ("bgr8", img, 17), ("mono8", img[:, :, 0], None),
                           ("mono16", (img[:, :, 0].astype(np.uint16) * 257), 11)):
        msg = rc.numpy_to_image_msg(arr, enc, stamp, frame_id, step=step)
        msg.is_bigendian = 0
        data = serialize_message(msg)
        fields = cdr_image_fields(data)
        back = deserialize_message(data, Image)
        assert (fields["encoding"], fields["height"], fields["width"], fields["step"], fields["is_bigendian"]) == \
            (back.encoding, back.height, back.width, back.step, bool(back.is_bigendian))
        assert bytes(fields["data"]) == bytes(back.data)
        assert np.array_equal(decode_raw(**fields), rc.decode_image_msg(back))


def test_cdr_truncated_is_corrupt() -> None:
    from rclpy.serialization import serialize_message

    from mfapr_ros.core.images import ImageDecodeError
    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.cdr import cdr_compressed_fields, cdr_image_fields

    img = np.zeros((4, 4, 3), dtype=np.uint8)
    comp = serialize_message(rc.encoded_to_compressed_msg(jpeg(img), "jpeg", 1, "cam0"))
    raw = serialize_message(rc.numpy_to_image_msg(img, "rgb8", 1, "cam0"))
    for parse, data in ((cdr_compressed_fields, comp), (cdr_image_fields, raw)):
        for cut in (0, 5, 11, 16, 20, 27, 33, len(data) // 2, len(data) - 1):
            with pytest.raises(ImageDecodeError) as e:
                parse(data[:cut])
            assert e.value.cause == "corrupt"


@pytest.mark.parametrize("frame_id", ["", "m", "map", "odom", "world_", "a_longer_map_frame", "kärta"])
def test_pose_cdr_is_what_serialize_message_writes(frame_id: str) -> None:
    """The node publishes its poses as CDR packed by hand (issue 25): what rclpy serializes for the message the
    converters build, byte for byte outside the alignment padding (which Fast-CDR leaves uninitialised; ours is
    zero), for every frame-id length and with a sign-flipped, unnormalised q; and it deserializes to that message."""
    from rclpy.serialization import deserialize_message, serialize_message

    from mfapr_ros.core.errors import DataError
    from mfapr_ros.inference.localizer import RigPose
    from mfapr_ros.ros import convert as rc

    rng = np.random.default_rng(len(frame_id))
    for stamp in (0, 1_700_000_123_456_789_012, 2**31 * 10**9 - 1):
        a = rng.normal(size=(6, 6))
        pose = RigPose(stamp, rng.normal(size=3) * 1e5, -2.0 * rng.normal(size=4), a @ a.T, 0.0, np.ones(3, bool))
        msg, msg_cov = rc.rig_pose_to_pose_stamped(pose, frame_id), rc.rig_pose_to_pose_with_covariance(pose, frame_id)
        cdr, cov = rc.pose_stamped_cdr(pose, frame_id), rc.pose_with_covariance_cdr(pose, frame_id)
        header = 12 + len(frame_id.encode()) + 1  # sec, nanosec, string length, text, NUL (after the encapsulation)
        pad = slice(4 + header, 4 + (header + 7) // 8 * 8)  # up to the 8-aligned float64 fields
        for mine, theirs in ((cdr, bytes(serialize_message(msg))), (cov, bytes(serialize_message(msg_cov)))):
            assert len(mine) == len(theirs) and set(mine[pad]) <= {0}
            assert mine[:pad.start] == theirs[:pad.start] and mine[pad.stop:] == theirs[pad.stop:]
        assert deserialize_message(cdr, rc.PoseStamped) == msg and deserialize_message(cov, type(msg_cov)) == msg_cov
        back = deserialize_message(cov, rc.PoseWithCovarianceStamped)
        assert rc.time_to_ns(back.header.stamp) == stamp and back.header.frame_id == frame_id
        np.testing.assert_allclose(np.array(back.pose.covariance).reshape(6, 6), 0.5 * (a @ a.T + (a @ a.T).T))
    bad = RigPose(-1, np.zeros(3), np.array([1.0, 0, 0, 0]), np.eye(6), 0.0, np.ones(3, bool))
    with pytest.raises(DataError, match="stamp"):
        rc.pose_stamped_cdr(bad, "map")
    with pytest.raises(DataError, match="finite"):
        rc.pose_with_covariance_cdr(RigPose(1, np.zeros(3), np.array([1.0, 0, 0, 0]), np.full((6, 6), np.nan), 0.0,
                                            np.ones(3, bool)), "map")
