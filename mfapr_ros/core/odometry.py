"""Simulated wheel odometry with realistic drift (ROS-free, numpy): ``odom → base_link`` for synthetic bags.

Why: the fusion of the network's poses with odometry (:mod:`mfapr_ros.core.fusion`) must be tested on odometry
that is wrong the way a robot's is, not on the ground truth. Each step's true body-frame increment (from the GT
poses, any rate) is corrupted by

* a **scale error** (wheel radius): the planar translation is multiplied by ``1 ± scale_error`` (sign drawn per
  track);
* a **yaw drift** (wheel-base / gyro bias): ``± yaw_drift_per_m`` rad added per metre travelled (sign per track);
* **heavy-tailed noise** (slip, bumps): Student-t (``tail_dof`` degrees of freedom, scaled to the stated σ) on the
  planar translation (``translation_noise`` m per √m travelled) and on yaw (``yaw_noise`` rad per √(m + rad)).

Height, roll and pitch increments are passed through (a ground robot's odometry is planar). ``odom`` starts at the
first pose (``T_odom_base(0) = I``), as a robot's odometry starts where it is switched on; the map → odom offset is
then the first GT pose and grows with the drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .geometry import pose_between, pose_compose, quat_from_yaw, quat_mul, quat_normalize, quat_to_yaw


@dataclass(frozen=True)
class OdometryDrift:
    """How wrong the simulated odometry is (SI units; magnitudes, signs of the systematic errors drawn per track)."""

    scale_error: float = 0.02  # fraction of distance travelled
    yaw_drift_per_m: float = 0.005  # rad per metre travelled (0.29°/m)
    translation_noise: float = 0.01  # m per √m travelled (1σ of the heavy-tailed noise)
    yaw_noise: float = 0.004  # rad per √(m travelled + rad turned)
    tail_dof: float = 3.0  # Student-t degrees of freedom (> 2); math.inf = Gaussian

    def __post_init__(self) -> None:
        for name in ("scale_error", "yaw_drift_per_m", "translation_noise", "yaw_noise"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"odometry drift '{name}' = {v!r}: expected a finite number >= 0")
        if not self.tail_dof > 2:
            raise ConfigError(f"odometry drift 'tail_dof' = {self.tail_dof!r}: expected > 2 (finite variance)")
        if self.scale_error >= 0.5:
            raise ConfigError(f"odometry drift 'scale_error' = {self.scale_error}: expected < 0.5")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (world.json / report meta), ``tail_dof`` inf as the string ``"inf"``."""
        d = asdict(self)
        if not math.isfinite(d["tail_dof"]):
            d["tail_dof"] = "inf"
        return d


def _heavy_tailed(rng: np.random.Generator, dof: float, n: int) -> np.ndarray:
    """Unit-variance samples: Student-t with ``dof`` degrees of freedom (Gaussian when infinite)."""
    if not math.isfinite(dof):
        return rng.standard_normal(n)
    return rng.standard_t(dof, n) / math.sqrt(dof / (dof - 2.0))


def simulate_odometry(t_gt: np.ndarray, q_gt: np.ndarray, drift: OdometryDrift, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``T_odom_base`` ``(N,3)``, ``(N,4)`` wxyz for time-ordered GT poses ``T_map_base`` (``(N,3)``, ``(N,4)``).

    Deterministic for a given ``rng`` state; the first pose is the identity.
    """
    t_gt = np.asarray(t_gt, dtype=np.float64).reshape(-1, 3)
    q_gt = np.asarray(q_gt, dtype=np.float64).reshape(-1, 4)
    n = len(t_gt)
    if len(q_gt) != n:
        raise ConfigError(f"simulate_odometry: {n} positions but {len(q_gt)} orientations")
    out_t, out_q = np.zeros((n, 3)), np.zeros((n, 4))
    out_q[:, 0] = 1.0
    if n < 2:
        return out_t, out_q
    scale = 1.0 + drift.scale_error * (1.0 if rng.random() < 0.5 else -1.0)
    yaw_bias = drift.yaw_drift_per_m * (1.0 if rng.random() < 0.5 else -1.0)
    d_t, d_q = pose_between(t_gt[:-1], q_gt[:-1], t_gt[1:], q_gt[1:])  # true body-frame increments
    dist = np.linalg.norm(d_t[:, :2], axis=1)
    turn = np.abs(quat_to_yaw(d_q))
    nt = _heavy_tailed(rng, drift.tail_dof, 2 * (n - 1)).reshape(n - 1, 2)
    ny = _heavy_tailed(rng, drift.tail_dof, n - 1)
    meas_t = d_t.copy()
    meas_t[:, :2] = d_t[:, :2] * scale + nt * (drift.translation_noise * np.sqrt(dist))[:, None]
    dyaw_err = yaw_bias * dist + ny * drift.yaw_noise * np.sqrt(dist + turn)
    meas_q = quat_normalize(quat_mul(d_q, quat_from_yaw(dyaw_err)))
    t_cur, q_cur = out_t[0], out_q[0]
    for k in range(n - 1):  # sequential: each pose is the previous one times the measured increment
        t_cur, q_cur = pose_compose(t_cur, q_cur, meas_t[k], meas_q[k])
        q_cur = quat_normalize(q_cur)
        out_t[k + 1], out_q[k + 1] = t_cur, q_cur
    return out_t, out_q
