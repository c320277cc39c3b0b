"""Image decoding throughput (images/s): JPEG through ``images.decode_compressed`` (torchvision.io) vs PIL, at
224 px and 128 px, in the same run; plus raw bgr8 → RGB (``images.decode_raw``), and nvjpeg on CUDA when present.

    .venv/bin/python bench/decode.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from mfapr_ros.core.images import decode_compressed, decode_raw


def scene(size: int, seed: int = 0) -> np.ndarray:
    """A textured image (gradients + noise), so JPEG sizes resemble camera frames rather than flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x ^ y) % 256], axis=2)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second (best of 3 windows)."""
    fn()
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < seconds / 3:
            fn()
            n += 1
        best = max(best, n / dt)
    return best


def pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per row")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"{'size':>5} {'decoder':<34} {'images/s':>10} {'vs PIL':>7}")
    for size in (224, 128):
        img = scene(size)
        b = io.BytesIO()
        Image.fromarray(img).save(b, format="JPEG", quality=90)
        jpg = b.getvalue()
        pil = rate(lambda jpg=jpg: pil_decode(jpg), args.seconds)
        rows = [("PIL (baseline)", pil),
                ("torchvision.io (decode_compressed)", rate(lambda jpg=jpg: decode_compressed("jpeg", jpg),
                                                            args.seconds))]
        if torch.cuda.is_available():
            def gpu(jpg: bytes = jpg) -> None:
                decode_compressed("jpeg", jpg, device="cuda")
                torch.cuda.synchronize()
            rows.append(("nvjpeg on CUDA (decode_compressed)", rate(gpu, args.seconds)))
        bgr = img[:, :, ::-1].tobytes()
        rows.append(("raw bgr8 → RGB (decode_raw)",
                     rate(lambda bgr=bgr, size=size: decode_raw("bgr8", size, size, size * 3, bgr), args.seconds)))
        print(f"{size:>5} JPEG q90, {len(jpg) / 1024:.1f} KiB")
        for name, r in rows:
            print(f"{size:>5} {name:<34} {r:10.0f} {r / pil:7.2f}")


if __name__ == "__main__":
    main()
