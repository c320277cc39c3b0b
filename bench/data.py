"""Data-loading throughput: decode + resize/crop + colour jitter + normalise, images/s, for JPEGs → 224 px.

Compares, in one run on the same files and thread budget (default 2 threads, the target machine):
  pil        plain PIL baseline: Image.open → RGB → resize (bilinear) → centre crop → tensor → normalise
  project    the project's path: mfapr_ros.core.images.decode_compressed (torchvision.io) → preprocess.resize_crop
             (the one preprocessing) → photometric.color_jitter → preprocess.normalize
  cached     BundleDataset's second epoch: resized uint8 images from the in-memory cache → jitter → normalise
Prints one line per pipeline and the ratios vs the PIL baseline.

Then the training batch of the demo recipe (`--batch`, default 32 samples of a 4-camera ring at `--demo-size` 64 px,
yaw augmentation ±5°, colour jitter, cached images), the way the trainer reads it (`SeededDataset`): item by item
(``[ds[i] for i in batch]``, the path before batching) against one ``__getitems__`` call (what the DataLoader
calls), both bit-identical, in ms per batch and the ratio.

    .venv/bin/python bench/data.py [--n 64] [--src 640x480] [--size 224] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image


def make_jpegs(n: int, w: int, h: int, seed: int = 0) -> list[bytes]:
    """Smooth random images (compress like real photos, unlike white noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def run(fn, items: list, repeat: int) -> float:
    fn(items[0])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn(it)
    return repeat * len(items) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="distinct JPEG files")
    ap.add_argument("--src", default="640x480", help="source JPEG size WxH")
    ap.add_argument("--size", type=int, default=224, help="model input (resize shorter side + centre crop)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="samples per training batch (demo: 32)")
    ap.add_argument("--demo-size", type=int, default=64, help="image size of the training-batch section (demo: 64)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.src.split("x"))

    from mfapr_training.datasets.dataset import BundleDataset
    from mfapr_training.datasets.photometric import PhotometricConfig, color_jitter
    from mfapr_training.datasets.records import BundleRecord, ImageRef

    from mfapr_ros.core.images import decode_compressed
    from mfapr_ros.core.preprocess import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        PreprocessConfig,
        normalize,
        resize_crop,
        to_float_chw,
    )
    from mfapr_ros.core.rig import ring_rig

    cfg = PreprocessConfig(resize=a.size, crop=a.size)
    pcfg = PhotometricConfig()
    jpegs = make_jpegs(a.n, w, h)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    g = torch.Generator().manual_seed(0)

    def pil(data: bytes) -> torch.Tensor:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        s = a.size / min(im.size)
        im = im.resize((max(a.size, round(im.size[0] * s)), max(a.size, round(im.size[1] * s))), Image.BILINEAR)
        left, top = (im.size[0] - a.size) // 2, (im.size[1] - a.size) // 2
        im = im.crop((left, top, left + a.size, top + a.size))
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
        return (color_jitter(x, pcfg, g) - mean) / std

    def project(data: bytes) -> torch.Tensor:
        x = resize_crop(to_float_chw(decode_compressed("jpeg", data)), cfg)
        return normalize(color_jitter(x, pcfg, g), cfg)

    rig = ring_rig(4)
    recs = [BundleRecord(i, [ImageRef.compressed(f"k{i}_{c}", "jpeg", jpegs[(4 * i + c) % a.n]) for c in range(4)],
                         [i] * 4, np.ones(4, bool), np.zeros(3), np.array([1.0, 0, 0, 0]), "t", i)
            for i in range(max(1, a.n // 4))]
    ds = BundleDataset(recs, rig=rig, preprocess_cfg=cfg, photometric=pcfg, seed=0)
    project(jpegs[0])  # warm-up (imports, first-call allocations) outside the timed region
    t0 = time.perf_counter()
    ds.predecode(num_threads=a.threads)
    predecode_ips = 4 * len(recs) / (time.perf_counter() - t0)

    def cached(i: int) -> None:
        ds[i]

    r_pil = run(pil, jpegs, a.repeat)
    r_proj = run(project, jpegs, a.repeat)
    r_cached = run(cached, list(range(len(ds))), a.repeat) * 4  # 4 images per sample
    print(f"bench/data.py: {a.n} JPEGs {w}x{h} → {a.size}px, decode + resize/crop + colour jitter + normalise, "
          f"{a.threads} threads (torch {torch.__version__})")
    print(f"  pil (baseline)               {r_pil:8.1f} images/s   1.00x")
    print(f"  project (torchvision.io)     {r_proj:8.1f} images/s   {r_proj / r_pil:.2f}x")
    print(f"  predecode into cache         {predecode_ips:8.1f} images/s   {predecode_ips / r_pil:.2f}x"
          "  (once per run, thread pool)")
    print(f"  cached samples (epoch ≥ 2)   {r_cached:8.1f} images/s   {r_cached / r_pil:.2f}x")
    demo_batch(a, jpegs)


def demo_batch(a: argparse.Namespace, jpegs: list[bytes]) -> None:
    """The demo recipe's training batch: item by item vs batched, same samples (checked), ms per batch."""
    from mfapr_training.batches import SeededDataset
    from mfapr_training.datasets.dataset import BundleDataset
    from mfapr_training.datasets.photometric import PhotometricConfig
    from mfapr_training.datasets.records import BundleRecord, ImageRef
    from mfapr_training.datasets.yaw_augmentation import YawAugmentation

    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig

    size = a.demo_size
    cfg = PreprocessConfig(resize=size, crop=size)
    rig = ring_rig(4, image_size=size, hfov_deg=90.0)
    n = 8 * a.batch
    recs = [BundleRecord(i, [ImageRef.compressed(f"k{i}_{c}", "jpeg", jpegs[(4 * i + c) % len(jpegs)])
                             for c in range(4)], [i] * 4, np.ones(4, bool), np.array([0.01 * i, 0.0, 1.2]),
                         np.array([1.0, 0, 0, 0]), "t", i) for i in range(n)]
    inner = BundleDataset(recs, rig=rig, preprocess_cfg=cfg, photometric=PhotometricConfig(),
                          yaw_aug=YawAugmentation(rig, cfg, 5.0))
    inner.predecode(num_threads=a.threads)
    ds = SeededDataset(inner, 0)
    batches = [list(range(k * a.batch, (k + 1) * a.batch)) for k in range(n // a.batch)]
    for i in range(n):  # warm: every yaw lookup table built once (a run builds each once too)
        ds[i]
    ref = [ds[i] for i in batches[0]]
    got = ds.__getitems__(batches[0])
    same = all(torch.equal(r[k], g[k]) for r, g in zip(ref, got, strict=True) for k in r
               if isinstance(r[k], torch.Tensor))

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            for b in batches:
                fn(b)
        return (time.perf_counter() - t0) / (a.repeat * len(batches)) * 1e3

    per_item = timed(lambda b: [ds[i] for i in b])
    batched = timed(ds.__getitems__)
    print(f"training batch (demo recipe: {a.batch} samples × 4 cameras × {size} px, yaw ±5°, colour jitter, "
          f"cached): {'identical samples' if same else 'SAMPLES DIFFER'}")
    print(f"  item by item                {per_item:8.1f} ms/batch   1.00x")
    print(f"  batched __getitems__         {batched:8.1f} ms/batch   {per_item / batched:.2f}x faster")


if __name__ == "__main__":
    main()
