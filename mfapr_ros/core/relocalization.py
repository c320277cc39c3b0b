"""Relocalization decisions for a localizer stack (nav2 AMCL and the like), and the "lost" state: ROS-free.

Why: an absolute pose regressor answers without an initial guess, which is exactly what AMCL (manual
``/initialpose``), RTAB-Map and cuVSLAM users miss after a start-up or a kidnapping. :class:`Relocalizer` decides when
the node hands its calibrated pose to such a stack as a seed (``geometry_msgs/PoseWithCovarianceStamped`` on
``/initialpose``, published by ``ros/relocalize.py``):

* **start-up**: the first *confident* pose (the uncertainty gate gave no reason: not skipped, not inflated);
* **on request** (the ``~/relocalize`` service): the latest confident pose, refused (with the reason) when there is
  none, when it is older than ``max_pose_age_s``, or while lost;
* **on disagreement** (optional): a watched pose (e.g. AMCL's ``amcl_pose``) that disagrees with ours beyond a
  Mahalanobis bound for ``watch_bundles`` confident poses in a row; then the counter restarts and no further
  disagreement seed is sent for ``cooldown_s`` of bundle time (the stack needs a moment to take the seed in).

The disagreement is measured in the plane a 2-D localizer estimates: ``δ = (dx, dy, dyaw)`` (yaw wrapped to
(-π, π]) against the sum of both covariances' ``[x y yaw]`` blocks, ``d = √(δᵀ (Σ_ours + Σ_watched)⁻¹ δ)``. With
Gaussian errors ``d²`` is χ² with 3 degrees of freedom: ``d`` > 3.37 happens by chance for 1 % of the poses, so a
bound near 3.4 with a few bundles in a row is a kidnapping, not noise. Watched poses whose stamp is farther than
``watch_max_age_s`` from ours are not compared (a stationary AMCL publishes rarely; the comparison needs the same
instant), and leave the counter as it is.

**Lost**: the gate has skipped every pose for longer than ``lost_timeout_s`` (measured on the caller's monotonic clock
from the first skip after the last kept pose). A kept pose (confident or inflated) ends it. Nothing skipped means not
lost, even if no pose arrives at all: silent cameras are another diagnosis (the node's WARN).

Thread-safe: the node calls :meth:`observe` on its inference thread and the service / diagnostics on the executor's.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .geometry import quat_to_yaw

#: why a seed was published (counted per reason in /diagnostics)
SEED_REASONS = ("startup", "service", "disagreement")
#: the planar [x y yaw] indices of a 6×6 covariance [x y z roll pitch yaw]
_PLANAR = [0, 1, 5]
#: eigenvalue floor (m², rad²) of the summed planar covariance: a zero-variance estimate stays comparable
_EIG_FLOOR = 1e-12


@dataclass(frozen=True)
class RelocalizationSettings:
    """What triggers a seed and when the node is lost (the ``relocalization.*`` / ``uncertainty.lost_timeout``
    parameters; seconds, metres, radians through the covariances). Every check validated here, once."""

    enabled: bool = False
    on_startup: bool = True
    max_pose_age_s: float = 1.0
    watch_enabled: bool = False
    watch_mahalanobis: float = 3.4
    watch_bundles: int = 5
    watch_max_age_s: float = 0.5
    cooldown_s: float = 5.0
    lost_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        def number(name: str, lo: float, strict: bool) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                    v <= lo if strict else v < lo):
                raise ConfigError(f"RelocalizationSettings.{name} = {v!r}: expected a finite number "
                                  f"{'>' if strict else '>='} {lo:g}")
        number("max_pose_age_s", 0.0, True)
        number("watch_mahalanobis", 0.0, True)
        number("watch_max_age_s", 0.0, True)
        number("cooldown_s", 0.0, False)
        number("lost_timeout_s", 0.0, False)
        if isinstance(self.watch_bundles, bool) or not isinstance(self.watch_bundles, int) or self.watch_bundles < 1:
            raise ConfigError(f"RelocalizationSettings.watch_bundles = {self.watch_bundles!r}: expected an integer "
                              ">= 1")


@dataclass(frozen=True)
class Seed:
    """A pose to publish as the stack's initial pose: what :meth:`Relocalizer.observe` / :meth:`request` hand out."""

    stamp_ns: int
    t: np.ndarray
    q: np.ndarray
    covariance: np.ndarray
    reason: str


def planar_mahalanobis(t_a: Any, q_a: Any, cov_a: Any, t_b: Any, q_b: Any, cov_b: Any) -> float:
    """``√(δᵀ (Σ_a + Σ_b)⁻¹ δ)`` over ``(x, y, yaw)``: how many combined σ two planar poses are apart (module
    docstring). Eigenvalues of the sum are floored so two zero covariances still give a finite, large distance."""
    ta, tb = np.asarray(t_a, dtype=np.float64).reshape(3), np.asarray(t_b, dtype=np.float64).reshape(3)
    dyaw = float(quat_to_yaw(np.asarray(q_b, dtype=np.float64))) - float(quat_to_yaw(np.asarray(q_a, np.float64)))
    dyaw = math.atan2(math.sin(dyaw), math.cos(dyaw))
    delta = np.array([tb[0] - ta[0], tb[1] - ta[1], dyaw])
    ca, cb = np.asarray(cov_a, dtype=np.float64), np.asarray(cov_b, dtype=np.float64)
    s = ca[np.ix_(_PLANAR, _PLANAR)] + cb[np.ix_(_PLANAR, _PLANAR)]
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    w = np.maximum(w, _EIG_FLOOR)
    proj = v.T @ delta
    return float(math.sqrt(float(np.sum(proj * proj / w))))


@dataclass
class _Watched:
    stamp_ns: int
    t: np.ndarray
    q: np.ndarray
    covariance: np.ndarray


@dataclass
class RelocalizationStats:
    """Counters for /diagnostics: seeds per reason, refused requests, comparisons with the watched pose."""

    seeds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEED_REASONS, 0))
    refused: int = 0
    watched: int = 0
    compared: int = 0
    disagreed: int = 0
    watch_stale: int = 0
    last_distance: float = float("nan")


class Relocalizer:
    """The seed and lost decisions (module docstring); the ROS side only converts and publishes."""

    def __init__(self, settings: RelocalizationSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.stats = RelocalizationStats()
        self._last_confident: Seed | None = None
        self._last_confident_s: float | None = None
        self._started = False
        self._watched: _Watched | None = None
        self._in_a_row = 0
        self._last_disagreement_seed_ns: int | None = None
        self._skip_run_since: float | None = None  # monotonic time of the first skip after the last kept pose

    # ------------------------------------------------------------------ inputs
    def observe(self, stamp_ns: int, t: Any, q: Any, covariance: Any, *, kept: bool, confident: bool,
                now_s: float) -> Seed | None:
        """One judged pose of ours (every one, skipped too): returns the seed to publish now, if any.

        ``kept``: published (confident or inflated); ``confident``: the gate gave no reason; ``covariance``: the one
        published (after inflation); ``now_s``: the caller's monotonic clock (lost timing, request age)."""
        s = self.settings
        with self._lock:
            if not kept:
                if self._skip_run_since is None:
                    self._skip_run_since = now_s
                return None
            self._skip_run_since = None
            if not confident:
                return None
            seed = Seed(int(stamp_ns), np.asarray(t, dtype=np.float64).reshape(3).copy(),
                        np.asarray(q, dtype=np.float64).reshape(4).copy(),
                        np.asarray(covariance, dtype=np.float64).reshape(6, 6).copy(), "")
            self._last_confident, self._last_confident_s = seed, now_s
            if not s.enabled:
                return None
            if not self._started:
                self._started = True
                if s.on_startup:
                    return self._count(seed, "startup")
            return self._compare(seed)

    def watch(self, stamp_ns: int, t: Any, q: Any, covariance: Any) -> None:
        """The latest pose of the watched localizer (e.g. ``amcl_pose``)."""
        with self._lock:
            self.stats.watched += 1
            self._watched = _Watched(int(stamp_ns), np.asarray(t, dtype=np.float64).reshape(3),
                                     np.asarray(q, dtype=np.float64).reshape(4),
                                     np.asarray(covariance, dtype=np.float64).reshape(6, 6))

    def request(self, now_s: float) -> tuple[Seed | None, str]:
        """The service: ``(seed, message)``; ``seed`` is None when refused, and the message says why."""
        s = self.settings
        with self._lock:
            if self._lost(now_s):
                self.stats.refused += 1
                return None, (f"lost: the uncertainty gate has skipped every pose for "
                              f"{now_s - self._skip_run_since:.1f} s; no confident pose to seed with")  # type: ignore[operator]
            if self._last_confident is None or self._last_confident_s is None:
                self.stats.refused += 1
                return None, "no confident pose yet (none has passed the uncertainty gate)"
            age = now_s - self._last_confident_s
            if age > s.max_pose_age_s:
                self.stats.refused += 1
                return None, (f"the last confident pose is {age:.1f} s old (relocalization.max_pose_age "
                              f"{s.max_pose_age_s:g} s); not seeding with it")
            seed = self._count(self._last_confident, "service")
        return seed, f"published the pose at {seed.stamp_ns} ns (age {age:.2f} s)"

    # ------------------------------------------------------------------ state
    def lost(self, now_s: float) -> bool:
        """True while the gate has skipped every pose for longer than ``lost_timeout_s`` (0 = never lost)."""
        with self._lock:
            return self._lost(now_s)

    def lost_for(self, now_s: float) -> float:
        """Seconds every pose has been skipped (0 when the last judged pose was kept)."""
        with self._lock:
            return 0.0 if self._skip_run_since is None else max(0.0, now_s - self._skip_run_since)

    def in_a_row(self) -> int:
        """Consecutive confident poses that disagreed with the watched pose."""
        with self._lock:
            return self._in_a_row

    # ------------------------------------------------------------------ internals (lock held)
    def _lost(self, now_s: float) -> bool:
        timeout = self.settings.lost_timeout_s
        return timeout > 0 and self._skip_run_since is not None and now_s - self._skip_run_since > timeout

    def _count(self, seed: Seed, reason: str) -> Seed:
        self.stats.seeds[reason] += 1
        return Seed(seed.stamp_ns, seed.t, seed.q, seed.covariance, reason)

    def _compare(self, seed: Seed) -> Seed | None:
        s, w = self.settings, self._watched
        if not s.watch_enabled or w is None:
            return None
        if abs(seed.stamp_ns - w.stamp_ns) > s.watch_max_age_s * 1e9:
            self.stats.watch_stale += 1
            return None
        d = planar_mahalanobis(seed.t, seed.q, seed.covariance, w.t, w.q, w.covariance)
        self.stats.compared += 1
        self.stats.last_distance = d
        if d <= s.watch_mahalanobis:
            self._in_a_row = 0
            return None
        self.stats.disagreed += 1
        self._in_a_row += 1
        if self._in_a_row < s.watch_bundles:
            return None
        last = self._last_disagreement_seed_ns
        if last is not None and seed.stamp_ns - last < s.cooldown_s * 1e9:
            return None
        self._in_a_row = 0
        self._last_disagreement_seed_ns = seed.stamp_ns
        return self._count(seed, "disagreement")
