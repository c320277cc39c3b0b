"""Training data: kapture / NAVER LABS and rosbag2 readers → :class:`BundleSet`, and :class:`BundleDataset` samples.

Readers import only numpy, kapture/rosbags and ``mfapr_ros``; torch enters with :mod:`.dataset`. Names are
imported lazily so ``from mfapr_training.datasets import read_rosbag`` does not pull torch in.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BundleRecord": "records", "BundleSet": "records", "ImageRef": "records",
    "concat_sets": "records", "decode_ref": "records",
    "SyncSettings": "bundling",
    "read_kapture": "kapture_reader", "read_kapture_splits": "kapture_reader", "find_kapture_split": "kapture_reader",
    "NAVER_GALAXY": "kapture_reader", "NAVER_BASLER": "kapture_reader",
    "read_rosbag": "rosbag_reader", "iter_bag_bundles": "rosbag_reader", "GroundTruthSpec": "rosbag_reader",
    "BundleDataset": "dataset", "load_image": "dataset",
    "TrackAugmentation": "track_augmentation", "permutation_offset": "track_augmentation",
    "permute_target": "track_augmentation", "cyclic_shifts": "track_augmentation",
    "PhotometricConfig": "photometric", "color_jitter": "photometric", "YawAugmentation": "yaw_augmentation",
    "ShiftAugmentation": "shift_augmentation",
    "pose_normalization": "normalization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
