"""Expected-output tests of image decoding (every raw encoding, JPEG/PNG) and of the throttled drop counter."""

from __future__ import annotations

import array
import io
import logging
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.images import ImageDecodeError, decode_compressed, decode_raw

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

# A 2x3 RGB image with distinct channel values everywhere.
RGB = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]],
                [[100, 110, 120], [130, 140, 150], [160, 170, 180]]], dtype=np.uint8)


def pad_rows(a: np.ndarray, step: int) -> bytes:
    """Rows of ``a`` (H, W*C bytes) padded with 0xEE to ``step`` bytes — padding must never leak into pixels."""
    h = a.shape[0]
    rows = a.reshape(h, -1)
    out = np.full((h, step), 0xEE, dtype=np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.tobytes()


@pytest.mark.parametrize("step_pad", [0, 5])
def test_rgb8_bgr8_rgba8_bgra8(step_pad: int) -> None:
    h, w = RGB.shape[:2]
    bgr = RGB[:, :, ::-1]
    alpha = np.full((h, w, 1), 7, dtype=np.uint8)
    cases = {
        "rgb8": RGB, "bgr8": bgr,
        "rgba8": np.concatenate([RGB, alpha], axis=2), "bgra8": np.concatenate([bgr, alpha], axis=2),
        "8UC3": bgr,
    }
    for enc, src in cases.items():
        step = w * src.shape[2] + step_pad
        out = decode_raw(enc, h, w, step, pad_rows(src, step))
        assert out.dtype == np.uint8 and out.shape == (2, 3, 3) and out.flags["C_CONTIGUOUS"], enc
        assert out.flags["WRITEABLE"] and out.flags["OWNDATA"], enc  # never a view of the message buffer
        np.testing.assert_array_equal(out, RGB, err_msg=enc)


def test_mono8_and_mono16_scaling_and_endianness() -> None:
    grey = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    out = decode_raw("mono8", 2, 3, 4, pad_rows(grey, 4))
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[:, :, 0], grey)
    np.testing.assert_array_equal(out[:, :, 1], out[:, :, 2])
    v16 = np.array([[0, 65535, 257], [32767, 32768, 1000]], dtype=np.uint16)
    expected = np.array([[0, 255, 1], [127, 128, 4]], dtype=np.uint8)  # round(v * 255 / 65535)
    le = decode_raw("mono16", 2, 3, 6, v16.astype("<u2").tobytes())
    be = decode_raw("mono16", 2, 3, 8, pad_rows(v16.astype(">u2").view(np.uint8).reshape(2, 6), 8),
                    is_bigendian=True)
    np.testing.assert_array_equal(le[:, :, 0], expected)
    np.testing.assert_array_equal(be, le)
    assert decode_raw("16UC1", 2, 3, 6, v16.tobytes())[0, 1, 0] == 255


def test_accepts_rclpy_buffer_types() -> None:
    data = RGB.tobytes()
    for buf in (bytearray(data), memoryview(data), array.array("B", data), list(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(decode_raw("rgb8", 2, 3, 9, buf), RGB)


def test_raw_errors_are_clear() -> None:
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'yuv422'") as e:
        decode_raw("yuv422", 2, 3, 6, b"\0" * 12)
    assert e.value.cause == "unsupported_encoding" and isinstance(e.value, DataError)
    with pytest.raises(ImageDecodeError, match="step 8 is shorter than a row") as e:
        decode_raw("rgb8", 2, 3, 8, b"\0" * 18)
    assert e.value.cause == "wrong_size"
    with pytest.raises(ImageDecodeError, match="needs step\\*height = 18 bytes, got 17"):
        decode_raw("rgb8", 2, 3, 9, b"\0" * 17)
    with pytest.raises(ImageDecodeError, match="not positive"):
        decode_raw("rgb8", 0, 3, 9, b"")


def encode(img: np.ndarray, fmt: str, **kw: object) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, format=fmt, **kw)
    return b.getvalue()


def smooth_image(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=2).astype(np.uint8)


def test_png_roundtrip_exact() -> None:
    img = smooth_image()
    for fmt in ("png", "bgr8; png compressed bgr8", ""):
        out = decode_compressed(fmt, encode(img, "PNG"))
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, img)
    grey = img[:, :, 0]
    np.testing.assert_array_equal(decode_compressed("png", encode(grey, "PNG")), np.repeat(grey[:, :, None], 3, 2))


def test_png_16bit_grey_scaled() -> None:
    v = np.array([[0, 65535], [257, 32768]], dtype=np.uint16)
    out = decode_compressed("png", encode(v, "PNG"))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [1, 128]])


def test_jpeg_roundtrip_close() -> None:
    img = smooth_image()
    out = decode_compressed("rgb8; jpeg compressed bgr8", encode(img, "JPEG", quality=95))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 3.0  # lossy, but the colours are RGB, not BGR
    assert out[:, -1, 0].mean() > 200 and out[-1, :, 1].mean() > 200 and out[0, :, 1].mean() < 30


def test_cmyk_jpeg_falls_back_to_pil() -> None:
    img = smooth_image()
    b = io.BytesIO()
    Image.fromarray(img).convert("CMYK").save(b, format="JPEG", quality=95)
    out = decode_compressed("jpeg", b.getvalue())
    assert out.shape == img.shape and np.abs(out.astype(int) - img.astype(int)).mean() < 8.0


def test_cuda_request_without_cuda_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    img = smooth_image()
    out = decode_compressed("png", encode(img, "PNG"), device="cuda")
    if torch.cuda.is_available():
        assert out.device.type == "cuda"
        out = out.cpu().numpy()
    np.testing.assert_array_equal(np.asarray(out), img)


def test_compressed_errors() -> None:
    jpg = encode(smooth_image(), "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt") as e:
        decode_compressed("jpeg", jpg[: len(jpg) // 3])  # truncated
    assert e.value.cause == "corrupt"
    with pytest.raises(ImageDecodeError, match="not a valid JPEG/PNG"):
        decode_compressed("jpeg", b"hello world")
    with pytest.raises(ImageDecodeError, match="not a valid JPEG/PNG"):
        decode_compressed("png", b"")
    with pytest.raises(ImageDecodeError, match="unsupported compressed format 'tiff'") as e:
        decode_compressed("tiff", b"II*\0abcd")
    assert e.value.cause == "unsupported_encoding"
    with pytest.raises(ImageDecodeError, match="depth"):
        decode_compressed("16UC1; compressedDepth png", encode(smooth_image(), "PNG"))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_drop_counter_counts_and_throttles() -> None:
    lines: list[str] = []
    clock = FakeClock()
    c = DropCounter(logger=lines.append, period_s=5.0, clock=clock)
    assert c.drop("cam0", "corrupt", "bad bytes") is True
    for _ in range(9):
        clock.t += 0.1
        assert c.drop("cam0", "corrupt") is False
    assert c.drop("cam1", "corrupt") is True  # another camera has its own budget
    assert c.drop("cam0", "wrong_size") is True  # and another cause too
    clock.t += 5.0
    assert c.drop("cam0", "corrupt") is True
    assert len(lines) == 4
    assert "camera 'cam0'" in lines[0] and "bad bytes" in lines[0]
    assert "+9 more since the last report" in lines[3] and "11 dropped" in lines[3]
    assert c.counts == {("cam0", "corrupt"): 11, ("cam1", "corrupt"): 1, ("cam0", "wrong_size"): 1}
    assert c.by_cause() == {"corrupt": 12, "wrong_size": 1}
    assert c.by_camera() == {"cam0": 12, "cam1": 1} and c.total == 13


def test_decode_errors_are_counted_by_cause(caplog: pytest.LogCaptureFixture) -> None:
    """What a subscription callback does (localize_node): a DataError's cause is the counted drop, nothing raises."""
    c = DropCounter()

    def decode(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except DataError as e:
            c.drop("front", getattr(e, "cause", "bad_data"), str(e))
            return None

    with caplog.at_level(logging.WARNING, logger="mfapr_ros.core.drops"):
        assert decode(decode_raw, "yuv422", 2, 2, 4, b"\0" * 8) is None
        assert decode(decode_compressed, "jpeg", b"junk") is None
        ok = decode(decode_raw, "rgb8", 2, 3, 9, RGB.tobytes())
    np.testing.assert_array_equal(ok, RGB)
    assert c.counts == {("front", "unsupported_encoding"): 1, ("front", "corrupt"): 1}
    assert "camera 'front'" in caplog.text
