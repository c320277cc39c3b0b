"""Accuracy metrics of a pose regressor: the one implementation behind `mfapr evaluate`, `mfapr eval-bag` and
`evaluator_node`, so the three report the same numbers for the same poses.

Errors come from :mod:`mfapr_ros.core.geometry` (translation in metres, rotation ``2·acos|<q, q̂>|`` in degrees) and the
recall bins are the kapture / NAVER LABS ones (:data:`mfapr_ros.core.geometry.RECALL_BINS`). Percentiles use numpy's
default linear interpolation; every number is a plain ``float``/``int`` so the dict is JSON-ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import (
    RECALL_BINS,
    mean_pose,
    quat_conj,
    quat_rotate,
    recall_at_bins,
    rotation_error_deg,
    translation_error,
)

#: Percentiles reported for both error kinds (the median is also reported as ``median``).
PERCENTILES: tuple[int, ...] = (75, 90, 95)


def bin_label(bin_: tuple[float, float]) -> str:
    """Stable key of a recall bin, e.g. ``"0.25m_2deg"`` (used in JSON, Markdown and plots alike)."""
    m, d = bin_
    return f"{m:g}m_{d:g}deg"


def _as_poses(t: Any, q: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3:
        raise DataError(f"{what}: translations must be (N, 3), got {t.shape}")
    if q.ndim != 2 or q.shape[1] != 4:
        raise DataError(f"{what}: quaternions must be (N, 4) (w, x, y, z), got {q.shape}")
    if len(t) != len(q):
        raise DataError(f"{what}: {len(t)} translations but {len(q)} quaternions")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise DataError(f"{what}: poses contain NaN/inf; drop those rows (and count them) before computing metrics")
    return t, q


def pose_errors(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-pose ``(translation error m, rotation error °)`` after shape checks."""
    t_gt, q_gt = _as_poses(t_gt, q_gt, "ground truth")
    t_est, q_est = _as_poses(t_est, q_est, "estimate")
    if len(t_gt) != len(t_est):
        raise DataError(f"{len(t_gt)} ground-truth poses but {len(t_est)} estimates; they must be paired row by row")
    if len(t_gt) == 0:
        return np.zeros(0), np.zeros(0)
    return translation_error(t_gt, t_est), rotation_error_deg(q_gt, q_est)


def _stats(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"mean": None, "median": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    out: dict[str, float | None] = {"mean": float(np.mean(x)), "median": float(np.median(x))}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(x, p))
    out["max"] = float(np.max(x))
    return out


def metrics_from_errors(t_err: np.ndarray, r_err: np.ndarray,
                        bins: Sequence[tuple[float, float]] = RECALL_BINS) -> dict[str, Any]:
    """Summary of already computed per-pose errors (count, stats in m and °, recall per bin)."""
    t_err = np.asarray(t_err, dtype=np.float64)
    r_err = np.asarray(r_err, dtype=np.float64)
    recalls = recall_at_bins(t_err, r_err, bins)
    return {
        "count": int(t_err.size),
        "translation_m": _stats(t_err),
        "rotation_deg": _stats(r_err),
        "recall": {bin_label(b): float(r) for b, r in zip(bins, recalls, strict=True)},
    }


def compute_metrics(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any, tracks: Sequence[str] | None = None,
                    latency_s: Sequence[float] | np.ndarray | None = None,
                    bins: Sequence[tuple[float, float]] = RECALL_BINS) -> dict[str, Any]:
    """Metrics of estimates against ground truth (rows paired), JSON-ready.

    Returns ``{"count", "translation_m": {mean, median, p75, p90, p95, max}, "rotation_deg": {...},
    "recall": {"0.25m_2deg": share, ...}, "bins": [[m, deg], ...]}`` plus ``"per_track": {track: same}`` when
    ``tracks`` (one label per row) is given and ``"latency_s": {count, mean, p50, p99, max}`` when latencies are
    given (NaN latencies — poses whose latency is unknown — are skipped and counted as ``missing``).
    """
    t_err, r_err = pose_errors(t_gt, q_gt, t_est, q_est)
    out = metrics_from_errors(t_err, r_err, bins)
    out["bins"] = [[float(m), float(d)] for m, d in bins]
    out["robot_frame_m"] = robot_frame_errors(t_gt, q_gt, t_est)
    if tracks is not None:
        labels = [str(x) for x in tracks]
        if len(labels) != len(t_err):
            raise DataError(f"tracks has {len(labels)} labels for {len(t_err)} poses; give one label per pose")
        arr = np.asarray(labels, dtype=object)
        out["per_track"] = {
            name: metrics_from_errors(t_err[arr == name], r_err[arr == name], bins) for name in sorted(set(labels))
        }
    if latency_s is not None:
        out["latency_s"] = latency_stats(latency_s)
    return out


def robot_frame_errors(t_gt: Any, q_gt: Any, t_est: Any) -> dict[str, dict[str, float | None]]:
    """The position error in the ground truth's own frame (REP 103 base_link: x forward, y left, z up): per axis the
    median and p90 of its size and its signed median. Why: "0.25 m off" reads differently as 0.12 m along the track
    and a 0.21 m steady offset to one side — the second is a bias (e.g. a regressor that snaps to the mapped lane),
    which neither averaging over a track nor odometry removes."""
    t_gt = np.asarray(t_gt, dtype=np.float64).reshape(-1, 3)
    e = quat_rotate(quat_conj(np.asarray(q_gt, dtype=np.float64).reshape(-1, 4)),
                    np.asarray(t_est, dtype=np.float64).reshape(-1, 3) - t_gt)
    out: dict[str, dict[str, float | None]] = {}
    for i, axis in enumerate(("forward", "left", "up")):
        c = e[:, i] if len(e) else np.zeros(0)
        out[axis] = ({"median_abs": float(np.median(np.abs(c))), "p90_abs": float(np.percentile(np.abs(c), 90)),
                      "median_signed": float(np.median(c))} if c.size else
                     {"median_abs": None, "p90_abs": None, "median_signed": None})
    return out


def latency_stats(latency_s: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """Latency summary in seconds: p50 / p99 are what a deployment cares about (typical and tail)."""
    lat = np.asarray(latency_s, dtype=np.float64).reshape(-1)
    ok = lat[np.isfinite(lat)]
    if ok.size == 0:
        return {"count": 0, "missing": int(lat.size), "mean": None, "p50": None, "p99": None, "max": None}
    return {
        "count": int(ok.size),
        "missing": int(lat.size - ok.size),
        "mean": float(np.mean(ok)),
        "p50": float(np.percentile(ok, 50)),
        "p99": float(np.percentile(ok, 99)),
        "max": float(np.max(ok)),
    }


def mean_pose_baseline(t_train: Any, q_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """The mean-pose baseline: one constant pose (mean position, Markley mean rotation) of the training set.

    A regressor that does not beat it has learned nothing about the images; reports always show both.
    """
    t, q = _as_poses(t_train, q_train, "baseline training poses")
    if len(t) == 0:
        raise DataError("mean-pose baseline needs at least one training pose")
    return mean_pose(t, q)


def baseline_metrics(t_train: Any, q_train: Any, t_gt: Any, q_gt: Any, tracks: Sequence[str] | None = None,
                     bins: Sequence[tuple[float, float]] = RECALL_BINS) -> dict[str, Any]:
    """Metrics of the mean-pose baseline (from the training poses) on the same ground truth as the model."""
    t_b, q_b = mean_pose_baseline(t_train, q_train)
    t_gt = np.asarray(t_gt, dtype=np.float64)
    n = len(t_gt)
    return compute_metrics(t_gt, q_gt, np.broadcast_to(t_b, (n, 3)), np.broadcast_to(q_b, (n, 4)),
                           tracks=tracks, bins=bins)


#: Distances (m) at which :func:`map_distance` reports the share of poses that close to a mapped pose.
MAP_DISTANCE_BINS: tuple[float, ...] = (0.1, 0.25, 0.5, 5.0)


def nearest_distance(t: Any, t_map: Any, chunk: int = 2048) -> np.ndarray:
    """``(N,)`` distance (m) from each position ``t`` (N,3) to the nearest of ``t_map`` (M,3); chunked, so M·chunk
    floats at a time."""
    t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
    t_map = np.asarray(t_map, dtype=np.float64).reshape(-1, 3)
    if len(t_map) == 0:
        raise DataError("map distance: no mapped positions")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(t_map))):
        raise DataError("map distance: positions contain NaN/inf")
    d = np.empty(len(t))
    m2 = (t_map ** 2).sum(1)
    for i in range(0, len(t), chunk):
        g = t[i:i + chunk]
        # |g - m|² = |g|² - 2 g·m + |m|² picks the nearest; its distance is then computed exactly
        j = ((g ** 2).sum(1)[:, None] - 2.0 * g @ t_map.T + m2[None, :]).argmin(1)
        d[i:i + chunk] = np.linalg.norm(g - t_map[j], axis=1)
    return d


def map_distance(t_gt: Any, t_map: Any, chunk: int = 2048) -> dict[str, Any]:
    """How far each ground-truth position is from the nearest mapped (training) position: ``{"count",
    "translation_m": {mean, median, p75, p90, p95, max}, "within_m": {"0.25": share, ...}}``.

    Why: it is the position error of an oracle that answers every query with the mapped pose nearest the truth —
    no method that answers with a mapped pose (image retrieval, however good its descriptor) can be more precise,
    and a regressor has to *extrapolate* from the map to do better. It also says how hard a drive is: a drive far
    off the mapped lanes is harder for every method, and a covariance fitted on one drive covers another drive as
    well only if both lie as far from the map (``mfapr fit-fusion``). Distances are 3-D (the poses' frame).
    """
    d = nearest_distance(t_gt, t_map, chunk)
    return {"count": int(d.size), "translation_m": _stats(d),
            "within_m": {f"{b:g}": (float(np.mean(d <= b)) if d.size else None) for b in MAP_DISTANCE_BINS}}
