"""Image decoding at the boundary (ROS-free: takes message *fields*, not messages) and counted, throttled drops.

Everything downstream (the one :mod:`~mfapr_ros.core.preprocess`, the
synchronizer payloads, the bag evaluator) sees uint8
RGB HWC images, whatever the camera sends:

* ``sensor_msgs/Image`` fields → :func:`decode_raw`: rgb8, bgr8, rgba8, bgra8, mono8, mono16 (+ the OpenCV aliases
  8UC1, 8UC3, 8UC4, 16UC1); row ``step`` padding honoured; ``is_bigendian`` honoured for 16-bit data; mono16 is
  scaled linearly to 8 bit (0…65535 → 0…255, rounded) so a given camera looks the same in training and live.
* ``sensor_msgs/CompressedImage`` fields → :func:`decode_compressed`: JPEG and PNG, recognised by their magic bytes
  (the ``format`` string of image_transport varies: ``jpeg``, ``rgb8; jpeg compressed bgr8``, ``png`` …), decoded by
  ``torchvision.io`` — on the GPU (nvjpeg) when ``device`` is CUDA and available, returning a CUDA tensor so the image
  never goes back to the host — else on the CPU; PIL is the fallback for what torchvision cannot read (CMYK JPEG,
  16-bit PNG) or when torchvision.io is unavailable.

Bad input raises :class:`ImageDecodeError` (a ``DataError``) carrying a ``cause`` (``unsupported_encoding``,
``wrong_size``, ``corrupt``) so a callback can count it by camera and cause with
:class:`mfapr_ros.core.drops.DropCounter` — a node never lets an exception out of a subscription callback.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np

from .errors import DataError

_LOG = logging.getLogger(__name__)
# torchvision 0.29 deprecates its decoders in favour of torchcodec (not a dependency here); they work, and one
# warning per decoded image would flood a node's log.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

#: encoding → (channels, bytes per channel, channel slice giving RGB, or None for grey).
RAW_ENCODINGS: dict[str, tuple[int, int, slice | None]] = {
    "rgb8": (3, 1, slice(0, 3)),
    "bgr8": (3, 1, slice(2, None, -1)),
    "rgba8": (4, 1, slice(0, 3)),
    "bgra8": (4, 1, slice(2, None, -1)),
    "mono8": (1, 1, None),
    "mono16": (1, 2, None),
}
#: OpenCV-style aliases (cv_bridge conventions: 3/4-channel 8-bit data is BGR(A)).
ALIASES = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8", "16UC1": "mono16"}

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(DataError):
    """An image could not be decoded; ``cause`` is one of ``unsupported_encoding``, ``wrong_size``, ``corrupt``."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def _as_bytes_view(data: Any) -> np.ndarray:
    """Zero-copy uint8 view of bytes / bytearray / memoryview / array.array('B') / numpy / list of ints."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)  # e.g. a list of ints (rclpy sequence<uint8>)
        except (TypeError, ValueError) as e:
            raise ImageDecodeError(f"image data of type {type(data).__name__} is not a byte buffer ({e})",
                                   "corrupt") from None


def decode_raw(encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False
               ) -> np.ndarray:
    """``sensor_msgs/Image`` fields → uint8 RGB ``(height, width, 3)`` (a new contiguous array).

    Raises :class:`ImageDecodeError` for an unsupported encoding, non-positive size, a ``step`` shorter than a row,
    or ``data`` shorter than ``step * height`` (trailing bytes beyond that are ignored, as cv_bridge does).
    """
    enc = ALIASES.get(encoding, encoding)
    if enc not in RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding '{encoding}'; supported: {sorted(RAW_ENCODINGS)} (+ {sorted(ALIASES)}). "
            "Publish one of these or use the compressed transport", "unsupported_encoding")
    ch, bpc, order = RAW_ENCODINGS[enc]
    if not (isinstance(height, int | np.integer) and isinstance(width, int | np.integer)) or height <= 0 or width <= 0:
        raise ImageDecodeError(f"image size {width}x{height} ({encoding}) is not positive", "wrong_size")
    row = width * ch * bpc
    if step < row:
        raise ImageDecodeError(f"{encoding} image {width}x{height}: step {step} is shorter than a row "
                               f"({width} px x {ch * bpc} bytes = {row})", "wrong_size")
    buf = _as_bytes_view(data)
    if buf.size < step * height:
        raise ImageDecodeError(f"{encoding} image {width}x{height} (step {step}) needs step*height = "
                               f"{step * height} bytes, got {buf.size}", "wrong_size")
    px = buf[: step * height].reshape(height, step)[:, :row]
    if bpc == 2:
        v = np.ascontiguousarray(px).view(">u2" if is_bigendian else "<u2").reshape(height, width)
        grey = ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    img = px.reshape(height, width, ch)
    if order is None:
        return np.repeat(img, 3, axis=2)
    # Always a fresh, writable array (never a view of the message buffer); per-channel copies are ~3x faster than
    # copying a channel-reversed view in one go.
    out = np.empty((height, width, 3), dtype=np.uint8)
    for c, src in enumerate(range(3)[order]):
        out[:, :, c] = img[:, :, src]
    return out


def _is_cuda(device: Any) -> bool:
    return device is not None and str(device).startswith("cuda")


_warned_cuda = False


#: torchvision's CPU JPEG operator, called directly (see :func:`_cpu_jpeg_op`); False = not usable, None = not probed
_jpeg_op: Any = None
#: with it: the torch module and ``ImageReadMode.RGB.value`` (looked up once: the function-level imports and the
#: enum lookup were ~15 µs of a 64 px frame's ~45 µs decode, 10 frames per bundle; issue 25)
_torch: Any = None
_RGB: int = 0


def _cpu_jpeg_op() -> Any:
    """``torch.ops.image.decode_jpeg`` (bytes tensor, mode, exif) when it works here, else ``None``.

    Why not ``torchvision.io.decode_jpeg``: on the CPU that wrapper only checks its arguments, logs API usage and
    issues a deprecation warning (filtered, but still raised) before calling this operator — 28 % of a 64 px frame's
    decode time (issue 25: 0.60 → 0.43 ms for 10 frames). The operator is probed once on a tiny JPEG, so a
    torchvision whose operator differs falls back to the public function."""
    global _jpeg_op, _torch, _RGB
    if _jpeg_op is None:
        _jpeg_op = False
        try:
            import torch
            from torchvision.io import ImageReadMode, encode_jpeg

            op = torch.ops.image.decode_jpeg
            probe = encode_jpeg(torch.full((3, 8, 8), 128, dtype=torch.uint8))
            if tuple(op(probe, ImageReadMode.RGB.value, False).shape) == (3, 8, 8):
                _torch, _RGB, _jpeg_op = torch, ImageReadMode.RGB.value, op
        except Exception:  # noqa: BLE001 - any failure means: use the public function
            _LOG.debug("torchvision's decode_jpeg operator is not usable directly; using torchvision.io.decode_jpeg")
    return _jpeg_op or None


def warm_up() -> None:
    """Import the compressed-image decoders now (and probe :func:`_cpu_jpeg_op`).

    The first ``import torchvision`` takes seconds; done lazily inside several camera callbacks at once it holds the
    import lock while every camera's first frame waits, so a node calls this before it subscribes.
    """
    try:
        import torchvision.io  # noqa: F401
    except ImportError:  # pragma: no cover - PIL fallback, see decode_compressed
        return
    _cpu_jpeg_op()


def decode_compressed(fmt: str, data: Any, device: Any = None) -> Any:
    """``sensor_msgs/CompressedImage`` fields → uint8 RGB HWC.

    Returns a numpy array, or a ``torch.Tensor`` (H, W, 3) on the GPU when ``device`` is a CUDA device that is
    available (the one preprocessing accepts both). A CUDA device that is not available falls back to the CPU with
    one warning. Raises :class:`ImageDecodeError` for depth (``compressedDepth``) or unknown formats and for
    corrupt or truncated bytes.
    """
    global _warned_cuda
    f = (fmt or "").lower()
    if "compresseddepth" in f:
        raise ImageDecodeError(f"compressed format '{fmt}' is a depth image; only colour/mono JPEG and PNG are "
                               "supported", "unsupported_encoding")
    buf = _as_bytes_view(data)
    head = bytes(buf[:8])
    if head.startswith(JPEG_MAGIC):
        kind = "jpeg"
    elif head.startswith(PNG_MAGIC):
        kind = "png"
    elif "jpeg" in f or "jpg" in f or "png" in f or not f:
        raise ImageDecodeError(f"compressed image ({fmt or 'no format'}, {buf.size} bytes) is not a valid "
                               "JPEG/PNG: corrupt or empty data", "corrupt")
    else:
        raise ImageDecodeError(f"unsupported compressed format '{fmt}'; use jpeg or png", "unsupported_encoding")
    if kind == "jpeg" and device is None and (op := _cpu_jpeg_op()) is not None:  # the live node's usual frame
        try:
            out = op(_torch.from_numpy(np.array(buf, dtype=np.uint8, copy=True)), _RGB, False)
        except (RuntimeError, ValueError):  # e.g. CMYK: PIL decides whether it is really corrupt (as below)
            return _decode_pil(buf, fmt)
        return out.permute(1, 2, 0).contiguous().numpy()
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg, decode_png
    except ImportError:  # pragma: no cover - torchvision is a dependency; PIL keeps the node alive without it
        return _decode_pil(buf, fmt)
    use_cuda = _is_cuda(device)
    if use_cuda and not torch.cuda.is_available():
        if not _warned_cuda:
            _LOG.warning("decode_compressed: device %s requested but CUDA is not available; decoding on the CPU",
                         device)
            _warned_cuda = True
        use_cuda = False
    t = torch.from_numpy(np.array(buf, dtype=np.uint8, copy=True))
    try:
        if kind == "jpeg" and not use_cuda and (op := _cpu_jpeg_op()) is not None:
            out = op(t, ImageReadMode.RGB.value, False)
        elif kind == "jpeg":
            out = decode_jpeg(t, mode=ImageReadMode.RGB, device=device if use_cuda else "cpu")
        else:
            out = decode_png(t, mode=ImageReadMode.RGB)
            if use_cuda:
                out = out.to(device)
    except (RuntimeError, ValueError):
        # torchvision refuses some valid files (CMYK JPEG, 16-bit PNG): PIL decides whether it is really corrupt.
        img = _decode_pil(buf, fmt)
        if use_cuda:
            return torch.from_numpy(img).to(device)
        return img
    if out.dtype != torch.uint8:  # 16-bit PNG read by torchvision
        out = (out.float() / 257.0).round().clamp(0, 255).to(torch.uint8)
    hwc = out.permute(1, 2, 0)
    if use_cuda:
        return hwc.contiguous()
    return hwc.contiguous().numpy()


def _decode_pil(buf: np.ndarray, fmt: str) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover
        raise ImageDecodeError(f"cannot decode '{fmt}': neither torchvision.io nor PIL is usable ({e})",
                               "unsupported_encoding") from None
    try:
        with Image.open(io.BytesIO(buf.tobytes())) as im:
            if im.mode in ("I;16", "I;16B", "I"):
                a = np.asarray(im, dtype=np.uint32)
                grey = ((a * 255 + 32767) // 65535).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"compressed image ({fmt or 'no format'}, {buf.size} bytes) is corrupt: {e}",
                               "corrupt") from None
