"""Reader output: bundles of per-camera image references with the rig pose, and counted drops.

Every reader (kapture, rosbag2, the synthetic world through kapture) produces a :class:`BundleSet`; the dataset,
the trainer's normalisation statistics and the evaluators consume only this shape, so no consumer knows which
reader made it. Images are *references* (a file path, or encoded bytes with their format/encoding fields) so a
2k-bundle set costs kilobytes until the dataset decodes — lazily and once, see :mod:`.dataset`.

Nothing is dropped silently: readers count every skipped item by cause in a
:class:`mfapr_ros.core.drops.DropCounter` (``DropCounter.for_reader()``), log the first few
occurrences with their location, and log one summary line at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.drops import DropCounter, summarize_drops
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.rig import Rig

#: File suffix → compressed format name understood by ``mfapr_ros.core.images.decode_compressed``.
SUFFIX_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


@dataclass(frozen=True)
class ImageRef:
    """Where one camera image lives, undecoded: a file, encoded bytes (CompressedImage) or raw pixels (Image).

    ``key`` identifies the image for caches (a path, or ``<bag>:<topic>:<stamp>``). Decoding happens in
    :func:`mfapr_training.datasets.dataset.load_image` through the project's one decoder (``mfapr_ros.core.images``).
    """

    key: str
    path: str | None = None
    data: bytes | None = None
    format: str | None = None  # compressed: "jpeg"/"png"/ROS CompressedImage.format string; raw: None
    encoding: str | None = None  # raw Image fields
    height: int = 0
    width: int = 0
    step: int = 0

    @classmethod
    def from_path(cls, path: str | Path) -> ImageRef:
        p = str(path)
        return cls(key=p, path=p, format=SUFFIX_FORMATS.get(Path(p).suffix.lower(), "jpeg"))

    @classmethod
    def compressed(cls, key: str, fmt: str, data: bytes) -> ImageRef:
        return cls(key=key, data=bytes(data), format=fmt)

    @classmethod
    def raw(cls, key: str, encoding: str, height: int, width: int, step: int, data: bytes) -> ImageRef:
        return cls(key=key, data=bytes(data), encoding=encoding, height=int(height), width=int(width), step=int(step))

    @property
    def is_raw(self) -> bool:
        return self.encoding is not None


@dataclass
class BundleRecord:
    """One multi-camera bundle: images in rig slot order (``None`` = camera absent) and the rig pose.

    ``t_world_rig``/``q_world_rig`` (wxyz) are ``None`` for inference-only data (e.g. a test split without
    trajectories). ``track`` names a continuous sequence (tuples for the relative loss never cross tracks) and
    ``index`` is the bundle's position in the reader's output.
    """

    stamp_ns: int
    images: list[ImageRef | None]
    stamps_ns: list[int | None]
    mask: np.ndarray
    t_world_rig: np.ndarray | None
    q_world_rig: np.ndarray | None
    track: str
    index: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_pose(self) -> bool:
        return self.t_world_rig is not None and self.q_world_rig is not None


@dataclass
class BundleSet:
    """A reader's result: the rig (slot order = model input order), bundles in time order, drop counts, and
    reader facts in ``info`` (e.g. pose disagreement between cameras)."""

    rig: Rig
    records: list[BundleRecord]
    drops: dict[str, int] = field(default_factory=dict)
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_poses(self) -> bool:
        """True when every bundle has a ground-truth pose (trainable); False for inference-only splits."""
        return bool(self.records) and all(r.has_pose for r in self.records)

    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t (N,3), q (N,4))`` of the bundles that have a pose (for normalisation stats and metrics)."""
        rs = [r for r in self.records if r.has_pose]
        if not rs:
            return np.zeros((0, 3)), np.zeros((0, 4))
        return np.stack([r.t_world_rig for r in rs]), np.stack([r.q_world_rig for r in rs])  # type: ignore[misc]

    def tracks(self) -> list[str]:
        return sorted({r.track for r in self.records})

    def summary(self) -> str:
        return summarize_drops(self.drops, self.name or self.rig.name, len(self.records))


def concat_sets(sets: Sequence[BundleSet], name: str = "") -> BundleSet:
    """Join several sets that share a rig (e.g. several bags or kapture floors) into one, renumbering records.

    Tracks stay distinct because readers prefix them with their source name; rigs must have the same camera
    order (a model slot means one camera), otherwise this is a clear error.
    """
    if not sets:
        raise DataError("concat_sets: no datasets given; check the dataset paths in the config")
    rig = sets[0].rig
    drops = DropCounter.for_reader()
    records: list[BundleRecord] = []
    for s in sets:
        if s.rig.camera_names != rig.camera_names:
            raise DataError(f"cannot join datasets with different camera orders: {rig.camera_names} "
                            f"({sets[0].name}) vs {s.rig.camera_names} ({s.name}); use the same `cameras:` list")
        drops.merge(s.drops)
        for r in s.records:
            records.append(BundleRecord(r.stamp_ns, r.images, r.stamps_ns, r.mask, r.t_world_rig, r.q_world_rig,
                                        r.track, len(records), r.info))
    return BundleSet(rig, records, dict(drops), name or "+".join(s.name for s in sets))


def validate_pose(t: Iterable[float], q: Iterable[float], where: str, tol: float = 1e-3
                  ) -> tuple[np.ndarray, np.ndarray] | str:
    """Return ``(t, q_normalised)`` for a valid pose, or a message saying why it is not (for a counted drop).

    A quaternion whose norm is off by more than ``tol`` is not a rounding error but a wrong column order or a
    corrupt row, so it is rejected rather than silently normalised.
    """
    t_arr = np.asarray(list(t), dtype=np.float64)
    q_arr = np.asarray(list(q), dtype=np.float64)
    if t_arr.shape != (3,) or q_arr.shape != (4,) or not (np.all(np.isfinite(t_arr)) and np.all(np.isfinite(q_arr))):
        return f"{where}: pose is not 3 + 4 finite numbers (t={t_arr.tolist()}, q={q_arr.tolist()})"
    n = float(np.linalg.norm(q_arr))
    if abs(n - 1.0) > tol:
        return f"{where}: quaternion {q_arr.tolist()} has norm {n:.4f}, not 1 (expected (w, x, y, z) unit quaternion)"
    q_arr = q_arr / n
    if q_arr[0] < 0:
        q_arr = -q_arr
    return t_arr, q_arr


def split_tracks_on_gaps(records: list[BundleRecord], max_gap_ns: int | None) -> None:
    """Give records a new track suffix (``name#1``, ``#2`` …) wherever two consecutive bundles of a track are
    further apart than ``max_gap_ns``, so relative-loss tuples never bridge a recording gap. In place."""
    if max_gap_ns is None or not records:
        return
    seg: dict[str, int] = {}
    last: dict[str, int] = {}
    for r in records:
        base = r.track
        if base in last and r.stamp_ns - last[base] > max_gap_ns:
            seg[base] = seg.get(base, 0) + 1
        last[base] = r.stamp_ns
        if seg.get(base, 0):
            r.track = f"{base}#{seg[base]}"


def read_ref_bytes(ref: ImageRef) -> bytes:
    """The encoded bytes of a reference (reading the file for path references), with a clear error if missing."""
    if ref.data is not None:
        return ref.data
    if ref.path is None:
        raise DataError(f"image reference '{ref.key}' has neither a path nor data")
    try:
        with open(ref.path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"image file not found: {ref.path}; re-download or regenerate the dataset, or remove the "
                        "record from records_camera.txt") from None
    except OSError as e:
        raise DataError(f"cannot read image file {ref.path}: {e}") from None


def decode_ref(ref: ImageRef) -> np.ndarray:
    """Decode a reference to uint8 RGB HWC through the project's one decoder (``mfapr_ros.core.images``).

    Raises :class:`DataError` naming the image (missing file, truncated/corrupt data, unknown encoding).
    """
    from mfapr_ros.core import images

    data = read_ref_bytes(ref)
    try:
        if ref.is_raw:
            return images.decode_raw(ref.encoding, ref.height, ref.width, ref.step, data)
        return images.decode_compressed(ref.format or "jpeg", data)
    except DataError as e:
        raise DataError(f"cannot decode image {ref.key}: {e}") from None
