"""Pose normalisation statistics from the training split: ``{"t_mean": [3], "t_scale": float}``.

Models regress positions in a normalised frame ``(t − t_mean) / t_scale`` (buffers inside the model, from
``cfg["pose_normalization"]``), so a 50 m floor and a 5 m room train with the same loss weights. The statistics
come from the *training* split only — computing them on validation/test would leak where the test poses are —
and travel in the checkpoint with the model config.

``t_scale`` is the RMS distance of the training positions from their mean (one isotropic scale keeps rotations of
the world frame harmless). A degenerate split (all positions equal) gets ``t_scale = 1`` with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from mfapr_ros.core.errors import DataError

from .records import BundleRecord, BundleSet

log = logging.getLogger(__name__)


def pose_normalization(data: BundleSet | Iterable[BundleRecord] | np.ndarray, min_scale: float = 1e-3
                       ) -> dict[str, object]:
    """``{"t_mean": [x, y, z], "t_scale": s}`` from a training set's rig positions (records without pose skipped).

    Raises :class:`DataError` when there is no pose at all (an inference-only split cannot be a training split).
    """
    if isinstance(data, np.ndarray):
        t = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    else:
        records = data.records if isinstance(data, BundleSet) else list(data)
        t = np.array([r.t_world_rig for r in records if r.has_pose], dtype=np.float64).reshape(-1, 3)
    if len(t) == 0:
        raise DataError("pose normalisation needs training bundles with ground-truth poses; the training split has "
                        "none (is it a test split without trajectories?)")
    if not np.all(np.isfinite(t)):
        raise DataError("pose normalisation: training positions contain NaN/inf; check the trajectories")
    mean = t.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((t - mean) ** 2, axis=-1))))
    if scale < min_scale:
        log.warning("pose normalisation: training positions span %.2g m (< %.2g); using t_scale = 1", scale, min_scale)
        scale = 1.0
    return {"t_mean": [float(v) for v in mean], "t_scale": scale}
