"""What a synchronized bundle with a bad frame becomes: THE rule of the node, ``eval-bag`` and ``mfapr explain``.

Decoding (and the image-size check) runs *after* the synchronizer, on the bundle chosen for inference: work spent
on a frame the synchronizer or latest-wins would throw away is wasted (issue 25), and the live node and the bag
evaluator must score the same bundles of the same recording (issue 22). Each member of the bundle is decoded
(:mod:`mfapr_ros.core.images`) and, under ``enforce_image_size``, checked against its camera's size; then:

* a member that fails is a **frame drop**, counted by camera and cause (``corrupt``, ``unsupported_encoding``,
  ``wrong_size``, ``bad_data`` for another :class:`DataError`, ``error`` for anything unexpected), and its slot is
  masked;
* the bundle is **scored** with those slots masked when at least ``min_present`` frames are left (the
  synchronizer's ``min_streams``: the node's ``sync.min_cameras``, eval-bag's ``--min-cameras``; all cameras by
  default), else **dropped**, counted once as :data:`BAD_FRAME_BUNDLE`.

So with the default (all cameras required) one bad JPEG costs its whole bundle, offline and live; with
``min_cameras`` below the camera count the bundle is scored without that camera, offline and live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError

#: drop cause of a bundle left with fewer than ``min_present`` good frames after its bad ones were masked
BAD_FRAME_BUNDLE = "bad_frame_bundle"


@dataclass(frozen=True)
class FrameDrop:
    """One member of a bundle that could not be used: its stream (synchronizer index), cause and a one-line why."""

    stream: int
    cause: str
    detail: str


@dataclass
class BundleVerdict:
    """The decoded bundle (stream order; ``None`` = absent or dropped) and what becomes of it.

    ``keep`` False: the bundle is dropped (:data:`BAD_FRAME_BUNDLE`); ``frame_drops`` lists the members that
    failed, whether or not the bundle is kept (each is one counted frame drop).
    """

    images: list[Any | None]
    mask: np.ndarray
    frame_drops: list[FrameDrop]
    keep: bool

    @property
    def num_present(self) -> int:
        return int(self.mask.sum())


def _cause(e: BaseException) -> str:
    if isinstance(e, DataError):
        return str(getattr(e, "cause", "bad_data"))
    return "error"


def _image_size(image: Any) -> tuple[int, int]:
    """(width, height) of a decoded HWC image (numpy array or tensor)."""
    return int(image.shape[1]), int(image.shape[0])


def decode_bundle(payloads: Sequence[Any | None], decode: Callable[[int, Any], Any], min_present: int,
                  size_mismatch: Callable[[int, int, int], str | None] | None = None,
                  pool: Executor | None = None) -> BundleVerdict:
    """Decode a synchronized bundle's payloads and decide what it becomes (the module docstring's rule).

    Args:
        payloads: per stream, the synchronizer's undecoded payload or ``None`` (stream absent from the bundle).
        decode: ``decode(stream, payload) -> image`` (uint8 RGB HWC); raises on bad input (an
            :class:`~mfapr_ros.core.images.ImageDecodeError` carries its cause).
        min_present: fewest good frames for the bundle to be scored (≥ 1).
        size_mismatch: ``size_mismatch(stream, width, height) -> why | None`` (``enforce_image_size``; ``None`` = off).
        pool: decode the members concurrently on this executor (the decoders release the GIL); ``None`` = in turn.
    """

    def one(i: int) -> tuple[Any | None, FrameDrop | None]:
        p = payloads[i]
        if p is None:
            return None, None
        try:
            image = decode(i, p)
        except Exception as e:  # noqa: BLE001 - a bad frame is a counted drop, never an exception out of here
            return None, FrameDrop(i, _cause(e), f"{type(e).__name__}: {e}" if _cause(e) == "error" else str(e))
        if size_mismatch is not None:
            why = size_mismatch(i, *_image_size(image))
            if why is not None:
                return None, FrameDrop(i, "wrong_size", why)
        return image, None

    streams = range(len(payloads))
    results = list(pool.map(one, streams)) if pool is not None else [one(i) for i in streams]
    images = [r[0] for r in results]
    drops = [r[1] for r in results if r[1] is not None]
    mask = np.array([im is not None for im in images], dtype=bool)
    keep = bool(mask.sum() >= max(1, int(min_present)))
    return BundleVerdict(images, mask, drops, keep)


class ParallelDecodePolicy:
    """Whether a bundle's frames are decoded concurrently on a pool (``executor_threads > 1``): only when measured
    to pay.

    Why measured, not assumed: a thread hand-over per frame and the GIL cost more than they save for small images
    (64 px JPEGs: 0.15 ms per frame), and the previous rule — start on the pool and stay there while a frame took
    >= 1 ms — fed on itself: frames decoded on four threads that wait for each other's GIL *look* slow, so a loaded
    machine never left the pool (issue 25: p99 138 ms against 9.8 ms at p50). Here decoding starts sequential; the
    pool is tried only once the sequential time per frame reaches ``min_frame_s`` (and a pool exists), and is kept
    only while its time per bundle stays below the sequential one (running means); every ``probe_every`` bundles the
    mode not in use is measured once more, so a change of load or image size is followed.
    """

    def __init__(self, enabled: bool, min_frame_s: float = 2e-3, probe_every: int = 50, alpha: float = 0.2) -> None:
        self.enabled = enabled
        self.min_frame_s = min_frame_s
        self.probe_every = probe_every
        self.alpha = alpha
        self.sequential_s: float | None = None  # running mean of a bundle's sequential decode time per frame
        self.parallel_s: float | None = None  # same, on the pool
        self.bundles = 0
        self.parallel_bundles = 0

    def use_pool(self) -> bool:
        """Decide for the next bundle (call :meth:`record` with the outcome)."""
        if not self.enabled or self.sequential_s is None or self.sequential_s < self.min_frame_s:
            return False
        if self.parallel_s is None:
            return True
        best_parallel = self.parallel_s < self.sequential_s
        probe = self.bundles % self.probe_every == self.probe_every - 1
        return best_parallel != probe

    def record(self, parallel: bool, seconds: float, frames: int) -> None:
        """The time one bundle's decode took, on the pool or not, for ``frames`` frames (> 0)."""
        self.bundles += 1
        self.parallel_bundles += parallel
        per_frame = seconds / max(1, frames)
        old = self.parallel_s if parallel else self.sequential_s
        new = per_frame if old is None else old + self.alpha * (per_frame - old)
        if parallel:
            self.parallel_s = new
        else:
            self.sequential_s = new
