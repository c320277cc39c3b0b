"""When the model is unsure: judge one pose against thresholds and say whether to keep it and with which covariance.

Why: a pose regressor always answers, also far outside its training distribution, and a fusion filter
(robot_localization, AMCL-style consumers) believes whatever covariance comes with it. Two cheap signals say that an
answer deserves less trust: the model's own predicted σ (when it predicts variances) and, when a retrieval database
sits beside the checkpoint, its disagreement with the nearest training bundle's pose. :func:`judge` turns them into a
:class:`Verdict` — keep (possibly with an inflated covariance) or skip — and :class:`UncertaintyStats` counts the
verdicts by reason for ``/diagnostics`` and logs skips throttled, so no pose ever disappears silently.

ROS-free (the node applies it in ``_on_pose``; eval-bag or a notebook can apply it to recorded poses the same way).

Definitions (covariance order ``[x y z rot_x rot_y rot_z]``, m² and rad², as in ``localizer.RigPose``):

* **position σ** = √(largest eigenvalue of the 3×3 position block): the longest 1σ semi-axis of the position
  ellipsoid, so the check does not depend on the map's axes and a long thin ellipse along any direction counts. The
  full 3×3 (not the horizontal 2×2): an APR model's z is as unsure as its x/y, and a ground robot's consumers that
  ignore z also ignore z's variance, so nothing is lost by being conservative.
* **yaw σ** = √(rot_z variance), in degrees (rotation about the world z axis: the heading for a near-level rig).
* **retrieval disagreement** = ``|t − retrieval_t|`` (m) and the angle of the relative rotation between ``q`` and
  ``retrieval_q`` (degrees, the full rotation angle, never smaller than the yaw difference). Only checked when the
  pose's extras hold ``retrieval_t``, ``retrieval_q`` and a finite ``retrieval_score``; otherwise there is no prior
  and nothing to disagree with.

A threshold of 0 switches its check off; with every threshold 0 the gate is off and :func:`judge` returns the pose's
own covariance untouched.

Inflation rule (``action="inflate"``), per block so position and rotation stay in their own units:

* ``position_sigma`` → the position block (and its cross terms) × ``inflate_factor²``: the model already says it
  is unsure, and such σ are the least calibrated (tails of the training distribution), so a consumer is told to
  lean on odometry by a fixed further factor rather than by an invented number.
* ``yaw_sigma`` → the rotation block × ``inflate_factor²`` (same reasoning).
* ``retrieval_disagreement`` → the block whose disagreement exceeded its threshold is scaled by
  ``max(1, δᵀ Σ⁻¹ δ)`` (the squared Mahalanobis distance of the retrieval prior), i.e. just enough that the prior
  lies on or inside the 1σ ellipsoid: the spread the two estimates actually show. ``δ`` is ``retrieval_t − t`` for
  position and the rotation vector of ``retrieval_q · q⁻¹`` (world axes, as the covariance) for rotation.

When several reasons apply to one block the largest factor wins (they are not multiplied). The result is
``S Σ S`` with ``S = diag(√s_pos ×3, √s_rot ×3)``, so it stays symmetric positive semi-definite and the
position–rotation correlations are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from mfapr_ros.core.geometry import quat_conj, quat_log, quat_mul, rotation_error_deg
from mfapr_ros.core.log_sink import warn
from mfapr_ros.core.settings import SettingError, finite_number, setting

_LOG = logging.getLogger(__name__)

ACTIONS = ("inflate", "skip")
#: every reason :func:`judge` can give, in the order it reports them
REASONS = ("position_sigma", "yaw_sigma", "retrieval_disagreement")
#: eigenvalue floor (relative to the block's largest, absolute in m² / rad²) for the Mahalanobis distance of a
#: degenerate block (a zero variance would otherwise make any disagreement infinitely far)
_EIG_FLOOR_REL, _EIG_FLOOR_ABS = 1e-12, 1e-18


@dataclass(frozen=True)
class UncertaintyGate:
    """Thresholds and action of the uncertainty check (every threshold 0 = that check off): the one schema of the
    node's ``uncertainty.<field>`` parameters (``ros.params`` generates them from these fields), validated once here.

    ``inflate_factor`` multiplies the σ (the variances by its square) of a block whose predicted σ exceeded its
    threshold; retrieval disagreement inflates by the Mahalanobis rule instead (module docstring). Distances are in
    metres; angles in degrees, as the ``_deg`` suffix says (a threshold a person types).
    """

    max_position_sigma: float = setting(0.0, "Poses whose predicted position sigma (m; sqrt of the largest "
                                        "eigenvalue of the 3x3 position covariance) exceeds this are uncertain; "
                                        "0 = off.", ">= 0")
    max_yaw_sigma_deg: float = setting(0.0, "Poses whose predicted yaw sigma (degrees, from the rot_z variance) "
                                       "exceeds this are uncertain; 0 = off.", ">= 0")
    max_retrieval_disagreement: float = setting(0.0, "Poses farther than this (m) from the retrieval prior are "
                                                "uncertain (only with a retrieval database beside the checkpoint); "
                                                "0 = off.", ">= 0")
    max_retrieval_disagreement_deg: float = setting(0.0, "Poses whose rotation differs from the retrieval prior's "
                                                    "by more than this (degrees) are uncertain; 0 = off.", ">= 0")
    action: str = setting("inflate", "What to do with an uncertain pose: inflate its covariance (published, "
                          "counted) or skip it (not published, counted, logged throttled).", "|".join(ACTIONS))
    inflate_factor: float = setting(3.0, "inflate: the sigma of a block whose predicted sigma exceeded its threshold "
                                    "is multiplied by this (retrieval disagreement instead inflates just enough for "
                                    "the prior to lie within 1 sigma).", ">= 1")

    def __post_init__(self) -> None:
        for name in ("max_position_sigma", "max_yaw_sigma_deg", "max_retrieval_disagreement",
                     "max_retrieval_disagreement_deg"):
            object.__setattr__(self, name, finite_number(f"uncertainty.{name}", getattr(self, name), 0.0,
                                                         what="a finite number >= 0 (0 = off)"))
        if self.action not in ACTIONS:
            raise SettingError("uncertainty.action", self.action, f"one of {ACTIONS}")
        object.__setattr__(self, "inflate_factor", finite_number("uncertainty.inflate_factor", self.inflate_factor,
                                                                 1.0))

    @property
    def enabled(self) -> bool:
        """True when at least one check is on (otherwise :func:`judge` is a no-op)."""
        return any(v > 0 for v in (self.max_position_sigma, self.max_yaw_sigma_deg,
                                   self.max_retrieval_disagreement, self.max_retrieval_disagreement_deg))


@dataclass(frozen=True)
class Verdict:
    """What to do with one pose: ``keep`` it (publish ``covariance``) or not; ``reasons`` empty = confident."""

    keep: bool
    covariance: np.ndarray
    reasons: tuple[str, ...] = ()


def position_sigma(cov: np.ndarray) -> float:
    """√(largest eigenvalue) of the 3×3 position block, metres (the longest 1σ semi-axis)."""
    block = np.asarray(cov, dtype=np.float64)[:3, :3]
    return float(math.sqrt(max(float(np.linalg.eigvalsh(0.5 * (block + block.T)).max()), 0.0)))


def yaw_sigma_deg(cov: np.ndarray) -> float:
    """√(rot_z variance), degrees."""
    return math.degrees(math.sqrt(max(float(np.asarray(cov, dtype=np.float64)[5, 5]), 0.0)))


def retrieval_prior(extras: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(retrieval_t, retrieval_q)`` when the extras hold a usable prior (finite score, t and q), else None."""
    if not isinstance(extras, dict) or "retrieval_t" not in extras or "retrieval_q" not in extras:
        return None
    try:
        score = float(extras.get("retrieval_score", math.nan))
        t = np.asarray(extras["retrieval_t"], dtype=np.float64).reshape(3)
        q = np.asarray(extras["retrieval_q"], dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(score) and np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.linalg.norm(q) > 0):
        return None
    return t, q


def _mahalanobis_sq(block: np.ndarray, delta: np.ndarray) -> float:
    """δᵀ Σ⁻¹ δ with the eigenvalues floored (a degenerate block still gives a finite, large factor)."""
    w, v = np.linalg.eigh(0.5 * (block + block.T))
    w = np.maximum(w, max(float(w.max()) * _EIG_FLOOR_REL, _EIG_FLOOR_ABS))
    proj = v.T @ delta
    return float(np.sum(proj * proj / w))


def judge(pose: Any, gate: UncertaintyGate) -> Verdict:
    """Judge one pose (a :class:`~mfapr_ros.inference.localizer.RigPose` or anything with ``t``, ``q``, ``covariance``
    and optionally ``extras``) against ``gate``; pure (the pose is not changed). See the module docstring for the
    definitions and the inflation rule."""
    cov = np.asarray(pose.covariance, dtype=np.float64)
    if not gate.enabled:
        return Verdict(True, cov)
    reasons: list[str] = []
    s_pos = s_rot = 1.0
    f2 = float(gate.inflate_factor) ** 2
    if gate.max_position_sigma > 0 and position_sigma(cov) > gate.max_position_sigma:
        reasons.append("position_sigma")
        s_pos = max(s_pos, f2)
    if gate.max_yaw_sigma_deg > 0 and yaw_sigma_deg(cov) > gate.max_yaw_sigma_deg:
        reasons.append("yaw_sigma")
        s_rot = max(s_rot, f2)
    prior = retrieval_prior(getattr(pose, "extras", None))
    if prior is not None and (gate.max_retrieval_disagreement > 0 or gate.max_retrieval_disagreement_deg > 0):
        t_ret, q_ret = prior
        t = np.asarray(pose.t, dtype=np.float64).reshape(3)
        q = np.asarray(pose.q, dtype=np.float64).reshape(4)
        d_t = t_ret - t
        far = gate.max_retrieval_disagreement > 0 and float(np.linalg.norm(d_t)) > gate.max_retrieval_disagreement
        turned = (gate.max_retrieval_disagreement_deg > 0
                  and float(rotation_error_deg(q, q_ret)) > gate.max_retrieval_disagreement_deg)
        if far or turned:
            reasons.append("retrieval_disagreement")
        if far:
            s_pos = max(s_pos, _mahalanobis_sq(cov[:3, :3], d_t))
        if turned:
            q_rel = quat_mul(q_ret / np.linalg.norm(q_ret), quat_conj(q / np.linalg.norm(q)))
            rotvec = 2.0 * quat_log(q_rel)  # world-axis rotation vector taking q to the prior (quat_log: half angle)
            s_rot = max(s_rot, _mahalanobis_sq(cov[3:, 3:], rotvec))
    if not reasons:
        return Verdict(True, cov)
    if gate.action == "skip":
        return Verdict(False, cov, tuple(reasons))
    scale = np.sqrt(np.array([s_pos] * 3 + [s_rot] * 3))
    return Verdict(True, cov * np.outer(scale, scale), tuple(reasons))


def with_covariance(pose: Any, covariance: np.ndarray) -> Any:
    """The pose with another covariance (a copy; a frozen RigPose is replaced, anything else wrapped)."""
    if dataclasses.is_dataclass(pose) and not isinstance(pose, type):
        return dataclasses.replace(pose, covariance=covariance)
    return SimpleNamespace(**{**vars(pose), "covariance": covariance})


class UncertaintyStats:
    """Verdict counts by action and reason, the share of uncertain poses over the last ``window`` judged ones, and
    the throttled warning of skipped poses (first one at once, then at most one per ``period_s`` per reason with the
    number suppressed in between). Thread-safe: the node records on its inference thread and /diagnostics reads on
    the executor's."""

    def __init__(self, logger: Any = None, period_s: float = 5.0, window: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self.period_s = float(period_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {"skipped": {}, "inflated": {}}
        self._recent: collections.deque[bool] = collections.deque(maxlen=int(window))
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.judged = 0
        self.poses = {"skipped": 0, "inflated": 0}  # poses per action (a pose with two reasons counts once here)

    def record(self, verdict: Verdict, stamp_ns: int = 0) -> None:
        """Count one verdict (confident ones too: they make up the share's window)."""
        lines: list[str] = []
        with self._lock:
            self.judged += 1
            self._recent.append(bool(verdict.reasons))
            if not verdict.reasons:
                return
            kind = "inflated" if verdict.keep else "skipped"
            counts = self._counts[kind]
            self.poses[kind] += 1
            for r in verdict.reasons:
                counts[r] = counts.get(r, 0) + 1
            if kind == "skipped":
                now = self._clock()
                key = ",".join(verdict.reasons)
                last = self._last_log.get(key)
                if last is not None and now - last < self.period_s:
                    self._suppressed[key] = self._suppressed.get(key, 0) + 1
                else:
                    more = self._suppressed.pop(key, 0)
                    self._last_log[key] = now
                    lines.append(f"pose at {int(stamp_ns)} ns skipped: the model is unsure ({key})"
                                 + (f" (+{more} more since the last report)" if more else "")
                                 + f"; {self.poses['skipped']} uncertain poses skipped so far")
        for line in lines:
            warn(self._logger, _LOG, line)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"skipped": {reason: n}, "inflated": {reason: n}}`` (a pose with two reasons counts under both)."""
        with self._lock:
            return {k: dict(v) for k, v in self._counts.items()}

    def share(self) -> tuple[float, int]:
        """(share of uncertain poses, number of poses) over the last ``window`` judged poses; (0, 0) before any."""
        with self._lock:
            n = len(self._recent)
            return (sum(self._recent) / n if n else 0.0), n
