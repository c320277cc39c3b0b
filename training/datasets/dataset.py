"""``BundleDataset``: training samples — tuples of multi-camera bundles along a track — as model tensors.

A sample (``steps`` = S frames ``i, i+skip, …`` of one track, T cameras) is a dict::

    images  (S, T, 3, H, W) float32   preprocess: resize_crop → yaw augmentation → photometric jitter → normalize
    mask    (S, T) bool                False where a camera is absent (its slot is zeros, as in preprocess_bundle)
    t       (S, 3) float32             rig position in the world (NaN for inference-only records)
    q       (S, 4) float32             rig orientation (w, x, y, z)
    stamp_ns (S,) int64, index (S,) int64, perm (T,) int64 (slot ← camera), track (str)

Speed: decoding a JPEG costs far more than the rest of a sample, and a demo-sized set (1-2k bundles × 4 cameras at
64-128 px) fits in RAM after resizing, so images are decoded once, resized/cropped once by the *shared*
``preprocess.resize_crop``, and cached as uint8 ``(3, crop, crop)`` tensors (``cache="lru"`` bounded by
``cache_bytes``; ``predecode()`` fills it up front, in threads, before DataLoader workers fork and share it). The
only difference from the node's path is the uint8 quantisation of the resized image (≤ 0.5/255 per pixel, tested).
A batch is built in one pass (``__getitems__``, what the DataLoader calls): each sample's draws from its own
generator first, then jitter and normalisation once for the batch — the same samples, bit for bit.

Bad images (missing file, truncated JPEG) either raise (``on_bad_image="raise"``) or mask that slot, counted in
``dataset.drops`` and logged (default ``"mask"``): one broken file must not kill a long training run.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.preprocess import PreprocessConfig, normalize_, resize_crop, to_float_chw
from mfapr_ros.core.rig import Rig

from .photometric import JitterDraw, PhotometricConfig, apply_jitter, jitter_from_uniforms, jitter_uniforms
from .records import BundleRecord, BundleSet, ImageRef, decode_ref
from .shift_augmentation import ShiftAugmentation
from .track_augmentation import TrackAugmentation
from .yaw_augmentation import YawAugmentation

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "lru")


def load_image(ref: ImageRef) -> np.ndarray:
    """Decode one reference to uint8 RGB HWC (the project's one decoder); :class:`DataError` if it cannot."""
    return decode_ref(ref)


def preprocess_to_uint8(image: np.ndarray | torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """The shared ``resize_crop`` of one decoded image, quantised back to uint8 ``(3, crop, crop)`` for caching."""
    x = resize_crop(to_float_chw(image), cfg)
    return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


class ImageCache:
    """Thread-safe LRU of resized uint8 images keyed by ``ImageRef.key``, bounded by total bytes.

    A failed decode is cached as ``None`` so a broken file is reported once, not every epoch.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._d: OrderedDict[str, torch.Tensor | None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str) -> tuple[bool, torch.Tensor | None]:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                return True, self._d[key]
            self.misses += 1
            return False, None

    def put(self, key: str, value: torch.Tensor | None) -> None:
        size = value.numel() if value is not None else 0
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            self.bytes -= old.numel() if old is not None else 0
            self._d[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes and self._d:
                _, v = self._d.popitem(last=False)
                self.bytes -= v.numel() if v is not None else 0


def build_tuples(records: Sequence[BundleRecord], steps: int, skip: int) -> list[list[int]]:
    """Record positions of every tuple ``(i, i+skip, …, i+(steps−1)·skip)`` inside one track, in time order."""
    if steps < 1 or skip < 1:
        raise ConfigError(f"data.steps and data.skip must be ≥ 1, got steps={steps}, skip={skip}")
    by_track: dict[str, list[int]] = {}
    for k, r in enumerate(records):
        by_track.setdefault(r.track, []).append(k)
    out = []
    span = (steps - 1) * skip
    for track in sorted(by_track):
        idx = sorted(by_track[track], key=lambda k: records[k].stamp_ns)
        for i in range(len(idx) - span):
            out.append([idx[i + j * skip] for j in range(steps)])
    return out


class BundleDataset(Dataset):
    """Tuples of bundles as tensors for training and evaluation (see the module docstring for the sample).

    Args:
        records: a :class:`BundleSet` (its rig is used) or a list of records (then ``rig`` is required).
        preprocess_cfg: the model's :class:`PreprocessConfig` (stored in its checkpoint).
        steps, skip: tuple length and stride (MapNet); ``steps=1`` gives single bundles with S=1.
        track_aug: a :class:`TrackAugmentation`, a mode name (``"cyclic"``, ``"any"``…), ``True`` (= cyclic) or
            ``None``/``False``.
        photometric: a :class:`PhotometricConfig`, ``True`` (defaults) or ``None``/``False``.
        yaw_aug: a :class:`YawAugmentation` (the rig turned by a small random yaw, images re-projected between
            its cameras, target turned with it) or ``None``.
        shift_aug: a :class:`ShiftAugmentation` (the rig moved sideways, images re-projected, target moved with
            it) or ``None``.
        cache: ``"lru"`` (default) or ``"none"``; ``cache_bytes`` bounds the LRU (default 2 GiB).
        seed: if given, each sample's randomness is drawn from a generator seeded by ``(seed, epoch, index)``
            (call :meth:`set_epoch`); if ``None`` the global torch RNG is used (the trainer's ``SeededDataset``
            reseeds it per item).
        on_bad_image: ``"mask"`` (count, log, mask the slot) or ``"raise"``.
    """

    def __init__(self, records: BundleSet | Sequence[BundleRecord], rig: Rig | None = None,
                 preprocess_cfg: PreprocessConfig | None = None, steps: int = 1, skip: int = 1,
                 track_aug: TrackAugmentation | str | bool | None = None,
                 photometric: PhotometricConfig | bool | None = None, yaw_aug: YawAugmentation | None = None,
                 shift_aug: ShiftAugmentation | None = None, cache: str = "lru",
                 cache_bytes: int = 2 << 30, seed: int | None = None, on_bad_image: str = "mask") -> None:
        if isinstance(records, BundleSet):
            rig = rig or records.rig
            name = records.name
            records = records.records
        else:
            name = ""
        if rig is None:
            raise ConfigError("BundleDataset needs the rig (pass a BundleSet or rig=...)")
        self.records = list(records)
        self.rig = rig
        self.name = name
        self.cfg = preprocess_cfg or PreprocessConfig()
        self.steps, self.skip = int(steps), int(skip)
        for r in self.records:
            if len(r.images) != rig.num_cameras:
                raise DataError(f"record {r.index} ({r.track}) has {len(r.images)} image slots but the rig "
                                f"'{rig.name}' has {rig.num_cameras} cameras; read the data with the same camera list")
        self.tuples = build_tuples(self.records, self.steps, self.skip)
        if not self.tuples:
            raise DataError(f"dataset {name or '<records>'}: no samples: {len(self.records)} bundles give no tuple of "
                            f"steps={self.steps}, skip={self.skip} inside one track (empty split, or tracks too short)")
        if track_aug is True:
            track_aug = "cyclic"
        if isinstance(track_aug, str):
            track_aug = TrackAugmentation(rig, track_aug)
        self.track_aug: TrackAugmentation | None = track_aug or None
        if photometric is True:
            photometric = PhotometricConfig()
        self.photometric: PhotometricConfig | None = photometric or None
        self.yaw_aug = yaw_aug
        self.shift_aug = shift_aug
        if cache not in CACHE_MODES:
            raise ConfigError(f"dataset cache must be one of {CACHE_MODES}, got {cache!r}")
        self.cache = ImageCache(cache_bytes) if cache == "lru" else None
        if on_bad_image not in ("mask", "raise"):
            raise ConfigError(f"on_bad_image must be 'mask' or 'raise', got {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self.seed = seed
        self.epoch = 0
        self.drops = DropCounter.for_reader()

    def __len__(self) -> int:
        return len(self.tuples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ images
    def image(self, ref: ImageRef) -> torch.Tensor | None:
        """Resized uint8 ``(3, crop, crop)`` of one reference (cached), or ``None`` if it cannot be decoded."""
        if self.cache is not None:
            hit, val = self.cache.get(ref.key)
            if hit:
                return val
        try:
            val = preprocess_to_uint8(load_image(ref), self.cfg)
        except DataError as e:
            if self.on_bad_image == "raise":
                raise
            self.drops.add("bad_image", str(e))
            val = None
        if self.cache is not None:
            self.cache.put(ref.key, val)
        return val

    def predecode(self, num_threads: int = 2) -> dict[str, float]:
        """Decode and resize every image once into the cache (threads: decoders release the GIL).

        Call before creating DataLoader workers so they inherit the filled cache. Returns counts and the
        cache size in MB; warns if the cache is too small to hold everything.
        """
        if self.cache is None:
            raise ConfigError("predecode() needs cache='lru'")
        refs = {ref.key: ref for r in self.records for ref in r.images if ref is not None}
        need = len(refs) * 3 * self.cfg.crop * self.cfg.crop
        if need > self.cache.max_bytes:
            log.warning("predecode: %d images need %.0f MB but cache_bytes is %.0f MB; the cache will evict",
                        len(refs), need / 1e6, self.cache.max_bytes / 1e6)
        with ThreadPoolExecutor(max(1, num_threads)) as ex:
            list(ex.map(self.image, refs.values()))
        return {"images": float(len(refs)), "cache_mb": self.cache.bytes / 1e6,
                "bad": float(self.drops.get("bad_image", 0))}

    # ------------------------------------------------------------------ samples
    def _generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + index) % (2**63 - 1))
        return g

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.getitems([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of samples (the ``DataLoader`` calls this with a whole batch): the same samples, bit for bit, as
        ``[self[i] for i in indices]``, with the colour jitter and normalisation done once for the batch."""
        return self.getitems(indices)

    def getitems(self, indices: Sequence[int], generators: Sequence[torch.Generator | None] | None = None
                 ) -> list[dict[str, Any]]:
        """Samples ``indices``; sample ``k`` draws its randomness from ``generators[k]`` (default: the dataset's
        ``(seed, epoch, index)`` generator, or the global torch generator when ``seed`` is None).

        Why batched: per sample, the tensor work is small (4 images of 64 px) and each operation's fixed cost
        dominated — a demo batch of 32 cost 44 ms of data against ~50 ms of model step (now 28–31 ms). Every
        sample's random draws happen first, in the per-sample order (yaw, jitter factors, slot permutation), each
        from its own generator, so a sample is the same whichever batch it is in (the resume invariant); only the
        arithmetic is shared."""
        if generators is None:
            generators = [self._generator(i) for i in indices]
        if len(generators) != len(indices):
            raise ValueError(f"getitems: {len(generators)} generators for {len(indices)} indices")
        n, c = self.rig.num_cameras, self.cfg.crop
        jitter = self.photometric if self.photometric is not None and self.photometric.enabled else None
        samples: list[dict[str, Any]] = []
        xs: list[torch.Tensor] = []
        draws = []
        for index, gen in zip(indices, generators, strict=True):
            rows = [self.records[k] for k in self.tuples[index]]
            s = len(rows)
            u8 = torch.zeros(s, n, 3, c, c, dtype=torch.uint8)
            mask = torch.zeros(s, n, dtype=torch.bool)
            for i, r in enumerate(rows):
                for j, ref in enumerate(r.images):
                    if ref is None or not bool(r.mask[j]):
                        continue
                    im = self.image(ref)
                    if im is not None:
                        u8[i, j] = im
                        mask[i, j] = True
            g = gen if gen is not None else torch.default_generator
            t = np.array([r.t_world_rig if r.has_pose else [np.nan] * 3 for r in rows], dtype=np.float64)
            q = np.array([r.q_world_rig if r.has_pose else [np.nan] * 4 for r in rows], dtype=np.float64)
            x = u8.float().div_(255.0)
            if self.yaw_aug is not None:  # geometry before lighting: the jitter's shading lands on the turned view
                x, q = self.yaw_aug.apply(self.yaw_aug.sample(g), x, q)
            if self.shift_aug is not None:  # in the turned rig's frame: its left axis
                x, t = self.shift_aug.apply(self.shift_aug.sample(g), x, t, q)
            if jitter is not None:  # the uniforms only; the factors are computed for the batch below
                draws.append(torch.rand(1, jitter_uniforms(s * n, jitter), generator=g))
            perm = self.track_aug.sample(g) if self.track_aug is not None else None
            xs.append(x)
            samples.append({"rows": rows, "mask": mask, "t": t, "q": q, "perm": perm})
        sizes = [len(x) for x in xs]
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        if jitter is not None:
            if len(set(sizes)) == 1:
                draw = jitter_from_uniforms(torch.cat(draws), sizes[0] * n, jitter)
            else:
                draw = JitterDraw.cat([jitter_from_uniforms(u, k * n, jitter)
                                       for u, k in zip(draws, sizes, strict=True)])
            x = apply_jitter(x, jitter, draw)
        x = normalize_(x, self.cfg)  # in place: x is this batch's own tensor (same bits as normalize)
        out = []
        for xi, smp in zip(torch.split(x, sizes), samples, strict=True):
            mask, t, q, perm, rows = smp["mask"], smp["t"], smp["q"], smp["perm"], smp["rows"]
            xi = xi * mask[..., None, None, None]  # absent slots are zeros, exactly as preprocess_bundle makes them
            if self.track_aug is not None:
                xi, mask, t, q = self.track_aug.apply(perm, xi, mask, t, q)
            out.append({
                "images": xi,
                "mask": mask,
                "t": torch.as_tensor(t, dtype=torch.float64),  # float64: large map coordinates (see PoseRegressor)
                "q": torch.as_tensor(q, dtype=torch.float32),
                "stamp_ns": torch.tensor([r.stamp_ns for r in rows], dtype=torch.int64),
                "index": torch.tensor([r.index for r in rows], dtype=torch.int64),
                "perm": torch.tensor(perm if perm is not None else list(range(n)), dtype=torch.int64),
                "track": rows[0].track,
            })
        return out
