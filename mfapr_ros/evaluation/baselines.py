"""The baselines every report compares a model against, read in one place.

Why: a pose regressor that does not beat "always answer the training set's mean pose" has learned nothing, and one
that does not approach image retrieval over the training images is not worth its weights. The mean pose is written
by training into the checkpoint (``provenance.train_mean_pose``); the retrieval database lives beside the checkpoint
(:mod:`mfapr_ros.evaluation.retrieval`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: where training records the mean pose in a checkpoint's metadata (``{"t": [3], "q_wxyz": [4]}``)
MEAN_POSE_KEY = "train_mean_pose"


def mean_pose_record(t: np.ndarray, q_wxyz: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """The provenance entry training writes, so that :func:`checkpoint_mean_pose` reads exactly what was written."""
    return {MEAN_POSE_KEY: {"t": [float(x) for x in t], "q_wxyz": [float(x) for x in q_wxyz]}}


def checkpoint_mean_pose(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The training set's mean pose (t, q_wxyz) recorded in a checkpoint's metadata, or None when it has none."""
    mp = (meta.get("provenance") or {}).get(MEAN_POSE_KEY)
    if isinstance(mp, dict) and "t" in mp and "q_wxyz" in mp:
        return np.asarray(mp["t"], dtype=np.float64), np.asarray(mp["q_wxyz"], dtype=np.float64)
    return None
