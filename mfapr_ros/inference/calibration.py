"""Covariance calibration: is the published ``~/pose_with_covariance`` as (un)sure as the errors say?

robot_localization weighs each measurement by its covariance; an over-confident one makes the EKF trust a wrong
pose, an under-confident one wastes a good one. This module measures it and fixes the scale (ROS-free, numpy):

* :func:`coverage` — squared Mahalanobis distance ``d² = eᵀ Σ⁻¹ e`` of each error under its covariance, the share
  of rows inside the 1σ/2σ/3σ ellipsoids (``d² ≤ 1, 4, 9``) and the mean Gaussian NLL. For a calibrated k-D
  Gaussian the shares are the χ² CDF at 1, 4, 9 (:func:`coverage_targets`): k=1 68.3/95.4/99.7 %, k=2
  39.3/86.5/98.9 %, k=3 19.9/73.9/97.1 %.
* Three blocks are scored (:func:`calibration_blocks`): horizontal position ``x, y`` (2-D — the figure a ground
  robot's EKF fuses and the one the 39/86/99 % acceptance refers to), 3-D position, and yaw. **Yaw assumption**:
  the rotation block is ``[rot_x rot_y rot_z]`` about the fixed world axes (``PoseWithCovariance``); for a ground rig
  (roll, pitch ≈ 0, world z up) a rotation about world z *is* a yaw change, so the yaw variance is ``Σ[5, 5]`` and
  the yaw error is the signed, wrapped difference of the ZYX yaw angles of GT and estimate.
* :func:`fit_scales` — one standard-deviation factor per block (position, rotation), fitted on a validation split:
  the factor on a log grid minimising the worst ``|coverage − target|`` over the three levels (position on the
  2-D block, rotation on yaw), ties broken by the lower NLL then the smaller factor — deterministic, and a single
  factor keeps the covariance monotone in what the network reports. :func:`apply_scales` multiplies the position
  block by ``s_p²``, the rotation block by ``s_r²`` and the cross terms by ``s_p·s_r`` (``D Σ D``, PSD preserved).

The checkpoint stores the result under :data:`META_KEY` (``mfapr calibrate``, end of ``mfapr train``); the
:class:`~mfapr_ros.inference.localizer.Localizer` applies it to every covariance it outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mfapr_ros.core.errors import DataError

#: Checkpoint meta key of the stored calibration.
META_KEY = "covariance_calibration"
#: Mahalanobis radii (in σ) whose coverage is reported.
LEVELS: tuple[int, ...] = (1, 2, 3)
#: Blocks scored in every report: name → dimension.
BLOCKS: dict[str, int] = {"position_2d": 2, "position_3d": 3, "yaw": 1}
#: The search grid of :func:`fit_scales` (σ factors from 1/1000 to 1000, ~0.35 % apart).
SCALE_GRID = np.exp(np.linspace(math.log(1e-3), math.log(1e3), 4001))


def chi2_cdf(x: float, k: int) -> float:
    """χ² CDF for k = 1, 2, 3 degrees of freedom (closed forms; no scipy at runtime)."""
    if x <= 0:
        return 0.0
    if k == 1:
        return math.erf(math.sqrt(x / 2))
    if k == 2:
        return 1.0 - math.exp(-x / 2)
    if k == 3:
        return math.erf(math.sqrt(x / 2)) - math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    raise ValueError(f"chi2_cdf: k must be 1, 2 or 3, got {k}")


def coverage_targets(k: int) -> dict[str, float]:
    """The shares (%) of a calibrated k-D Gaussian inside the 1σ/2σ/3σ ellipsoids."""
    return {f"{s}sigma": 100.0 * chi2_cdf(s * s, k) for s in LEVELS}


def _check(err: Any, cov: Any) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(err, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if e.ndim == 1:
        e = e[:, None]
    if c.ndim == 1:
        c = c[:, None, None]
    n, k = e.shape
    if c.shape != (n, k, k):
        raise DataError(f"coverage: errors are {e.shape} but covariances {c.shape}; expected (N, {k}, {k})")
    return e, c


def mahalanobis_sq(err: Any, cov: Any) -> np.ndarray:
    """``eᵀ Σ⁻¹ e`` per row; a singular or non-finite covariance gives ``inf`` (counted outside every ellipsoid)."""
    e, c = _check(err, cov)
    if np.all(np.isfinite(c)) and np.all(np.isfinite(e)):
        try:
            out = np.einsum("ni,ni->n", e, np.linalg.solve(c, e[..., None])[..., 0])
            out[~np.isfinite(out) | (out < 0)] = np.inf
            return out
        except np.linalg.LinAlgError:
            pass
    return _mahalanobis_rows(e, c)  # a singular / non-finite row: only that row becomes inf


def _mahalanobis_rows(e: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.full(len(e), np.inf)
    for i in range(len(e)):
        try:
            if np.all(np.isfinite(c[i])) and np.all(np.isfinite(e[i])):
                out[i] = float(e[i] @ np.linalg.solve(c[i], e[i]))
        except np.linalg.LinAlgError:
            pass
    out[~np.isfinite(out) | (out < 0)] = np.inf
    return out


def coverage(err: Any, cov: Any) -> dict[str, Any]:
    """Coverage of errors ``(N, k)`` under covariances ``(N, k, k)``: shares (%) inside 1σ/2σ/3σ, targets, mean NLL.

    NLL is the mean Gaussian negative log-likelihood ``½(d² + log det Σ + k log 2π)`` in nats (position in m, yaw
    in rad); lower is better and it punishes over- and under-confidence alike.
    """
    e, c = _check(err, cov)
    if len(e) == 0:
        raise DataError("coverage: no rows")
    k = e.shape[1]
    d2 = mahalanobis_sq(e, c)
    sign, logdet = np.linalg.slogdet(c)
    logdet = np.where(sign > 0, logdet, np.inf)
    nll = 0.5 * (d2 + logdet + k * math.log(2 * math.pi))
    return {"dim": k, "count": len(e),
            "coverage": {f"{s}sigma": float(100.0 * np.mean(d2 <= s * s)) for s in LEVELS},
            "target": coverage_targets(k), "nll": float(np.mean(nll)), "median_d2": float(np.median(d2))}


def levels_text(shares: Mapping[str, float], digits: int = 0) -> str:
    """``"42/82/97"``: the 1σ/2σ/3σ shares of a coverage (or target) dict, as every console summary prints them."""
    return "/".join(f"{v:.{digits}f}" for v in shares.values())


def max_coverage_gap(section: Mapping[str, Any]) -> float:
    """The worst ``|coverage − target|`` (points) over the levels of one :func:`coverage` result."""
    return max(abs(section["coverage"][key] - section["target"][key]) for key in section["target"])


def quat_yaw(q: Any) -> np.ndarray:
    """ZYX yaw (rad, about world z) of ``(N, 4)`` quaternions ``(w, x, y, z)``."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    w, x, y, z = q.T
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def wrap_pi(a: Any) -> np.ndarray:
    """Angles wrapped to ``[−π, π)``."""
    return (np.asarray(a, dtype=np.float64) + math.pi) % (2 * math.pi) - math.pi


def calibration_blocks(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any,
                       cov: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{block: (errors (N,k), covariances (N,k,k))}`` for :data:`BLOCKS` from poses and ``(N, 6, 6)`` covariances
    (``[x y z rot_x rot_y rot_z]``; yaw = ``rot_z``, see the module docstring)."""
    tg = np.asarray(t_gt, dtype=np.float64).reshape(-1, 3)
    te = np.asarray(t_est, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (len(tg), 6, 6) or te.shape != tg.shape:
        raise DataError(f"calibration: {len(tg)} GT poses, {len(te)} estimates, covariances {c.shape}; expected "
                        "one 6x6 covariance per pose")
    e = te - tg
    yaw = wrap_pi(quat_yaw(q_est) - quat_yaw(q_gt))
    return {"position_2d": (e[:, :2], c[:, :2, :2]), "position_3d": (e, c[:, :3, :3]),
            "yaw": (yaw[:, None], c[:, 5:6, 5:6])}


def calibration_report(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any, cov: Any) -> dict[str, Any]:
    """:func:`coverage` of every block of :func:`calibration_blocks` (the ``calibration`` section of a report)."""
    return {name: coverage(e, c) for name, (e, c) in calibration_blocks(t_gt, q_gt, t_est, q_est, cov).items()}


def fit_scale(err: Any, cov: Any, grid: np.ndarray = SCALE_GRID) -> float:
    """The σ factor ``s`` (covariance × s²) on ``grid`` minimising the worst 1σ/2σ/3σ coverage gap of one block.

    ``d²`` scales as ``1/s²``, so each level's coverage at every grid point is a ``searchsorted`` of the sorted
    ``d²`` — exact and fast. Ties (coverage is a step function) go to the lower NLL, then the smaller factor.
    """
    e, c = _check(err, cov)
    k = e.shape[1]
    d2 = np.sort(mahalanobis_sq(e, c))
    n = len(d2)
    if n == 0:
        raise DataError("fit_scale: no rows to fit on")
    s2 = np.asarray(grid, dtype=np.float64) ** 2
    targets = coverage_targets(k)
    gap = np.zeros(len(s2))
    for lv in LEVELS:
        cov_pct = 100.0 * np.searchsorted(d2, lv * lv * s2, side="right") / n
        gap = np.maximum(gap, np.abs(cov_pct - targets[f"{lv}sigma"]))
    finite = np.isfinite(d2)
    # NLL change with s: ½(d²/s² + k log s²), up to a constant (only finite rows matter for the tie-break)
    nll = 0.5 * (d2[finite].sum() / s2 / max(finite.sum(), 1) + k * np.log(s2))
    order = np.lexsort((np.arange(len(s2)), np.round(nll, 12), np.round(gap, 9)))
    return float(grid[order[0]])


def fit_scales(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any, cov: Any) -> dict[str, float]:
    """``{"position_scale", "rotation_scale"}``: σ factors fitted on position-2D and yaw (see :func:`fit_scale`)."""
    blocks = calibration_blocks(t_gt, q_gt, t_est, q_est, cov)
    return {"position_scale": fit_scale(*blocks["position_2d"]), "rotation_scale": fit_scale(*blocks["yaw"])}


def apply_scales(cov: Any, position_scale: float = 1.0, rotation_scale: float = 1.0) -> np.ndarray:
    """``D Σ D`` with ``D = diag(s_p, s_p, s_p, s_r, s_r, s_r)`` for ``(…, 6, 6)`` covariances (a new array)."""
    c = np.asarray(cov, dtype=np.float64)
    d = np.array([position_scale] * 3 + [rotation_scale] * 3, dtype=np.float64)
    return c * d[:, None] * d[None, :]


def stored_scales(meta: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """``(position_scale, rotation_scale)`` of a checkpoint meta, or ``None`` when it has no valid calibration."""
    cal = (meta or {}).get(META_KEY)
    if not isinstance(cal, Mapping):
        return None
    try:
        sp, sr = float(cal["position_scale"]), float(cal["rotation_scale"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(sp) and math.isfinite(sr) and sp > 0 and sr > 0):
        return None
    return sp, sr


def uses_anchor_covariance(meta: Mapping[str, Any] | None) -> bool:
    """Whether an anchor-head model's covariance includes the anchor mixture's spread: yes unless the stored
    calibration was fitted on the constant default (``source``), so the Localizer and ``mfapr evaluate`` publish
    and score the covariance the scales were fitted on."""
    return ((meta or {}).get(META_KEY) or {}).get("source") != "default_covariance"


def report_section(t_gt: Any, q_gt: Any, t_est: Any, q_est: Any, cov: Any,
                   checkpoint_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``calibration`` section every evaluation report carries: per-block coverage/NLL of the covariances as
    published (i.e. after any stored scaling), plus the checkpoint's stored calibration (``None`` if uncalibrated)."""
    stored = (checkpoint_meta or {}).get(META_KEY) if checkpoint_meta is not None else None
    return {"blocks": calibration_report(t_gt, q_gt, t_est, q_est, cov),
            "stored": dict(stored) if isinstance(stored, Mapping) else None,
            "yaw_assumption": "yaw variance = covariance[rot_z, rot_z] (ground rig, world z up)"}


def markdown_table(section: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines of one report ``calibration`` section (empty when there is none)."""
    if not section or not section.get("blocks"):
        return []
    lines = ["", "### Covariance calibration (published covariance)", "",
             "| block | 1σ | 2σ | 3σ | mean NLL |", "|---|---|---|---|---|"]
    for name, b in section["blocks"].items():
        cells = [f"{b['coverage'][k]:.1f} % ({b['target'][k]:.1f})" for k in b["target"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {b['nll']:.3f} |")
    st = section.get("stored")
    lines.append("")
    if st:
        lines.append(f"Coverage in % (Gaussian target in brackets). Stored scales: position "
                     f"×{st['position_scale']:.3g}, rotation ×{st['rotation_scale']:.3g} "
                     f"(σ factors fitted on {st.get('fitted_on', '?')}, n={st.get('n', '?')}).")
    else:
        lines.append("Coverage in % (Gaussian target in brackets). The checkpoint has no stored calibration "
                     "(`mfapr calibrate`).")
    return lines
