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
