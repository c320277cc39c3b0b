"""``mfapr fit-fusion``: the fused covariance's two shaping settings fitted on a held-out drive (ROS-free part).

The drives are synthetic with known errors: the network's errors carry a slowly varying bias (a share of their
variance that averaging over the track cannot remove) plus white noise, under a covariance that states their total
variance; the odometry drifts like the synthetic bags' (:func:`mfapr_ros.core.odometry.simulate_odometry`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import quat_from_axis_angle, quat_from_yaw, quat_mul
from mfapr_ros.core.odometry import OdometryDrift, simulate_odometry
from mfapr_ros.inference.calibration import calibration_report

pytest.importorskip("gtsam")
from mfapr_ros.core.fusion import FusionSettings, fuse_track
from mfapr_ros.evaluation.fusion_fit import MIN_POSES, fit_fusion

HZ = 10.0
SIG = np.array([0.3, 0.3, 0.05])  # the network's stated σ: x, y (m), yaw (rad)
COV = np.diag([SIG[0] ** 2, SIG[1] ** 2, 0.01, 0.0025, 0.0025, SIG[2] ** 2])
#: the starting settings: a model whose errors are white (correlated_fraction 0) — wrong for these drives
BASE = FusionSettings(enabled=True, measurement_scale=1.0, correlated_fraction=0.0, odom_rotation_per_m=0.03)


def drive(n: int, seed: int, share: float = 0.5, tau_s: float = 20.0):
    """GT (1 m/s, a gently curving heading), the network poses (bias with ``share`` of the variance, correlation
    time ``tau_s``, plus white noise) and the drifting odometry; stamps at ``HZ``."""
    rng = np.random.default_rng(seed)
    yaw = 0.3 * np.sin(np.arange(n) / HZ / 5.0)
    pos = np.zeros((n, 3))
    for k in range(1, n):
        pos[k] = pos[k - 1] + np.array([np.cos(yaw[k - 1]), np.sin(yaw[k - 1]), 0.0]) / HZ
    q = quat_from_yaw(yaw)
    a = np.exp(-1.0 / (tau_s * HZ))
    bias = np.zeros((n, 3))
    bias[0] = rng.normal(0, 1, 3) * SIG * np.sqrt(share)
    for k in range(1, n):
        bias[k] = a * bias[k - 1] + rng.normal(0, 1, 3) * SIG * np.sqrt(share * (1 - a * a))
    err = bias + rng.normal(0, 1, (n, 3)) * SIG * np.sqrt(1 - share)
    t_meas = pos.copy()
    t_meas[:, :2] += err[:, :2]
    t_meas[:, 2] += rng.normal(0, 0.1, n)
    q_meas = quat_mul(q, quat_from_axis_angle(np.array([0.0, 0.0, 1.0]), err[:, 2]))
    odom_t, odom_q = simulate_odometry(pos, q, OdometryDrift(), rng)
    stamps = 1_700_000_000_000_000_000 + (np.arange(n) * 1e9 / HZ).astype(np.int64)
    cov = np.tile(COV, (n, 1, 1))
    return stamps, t_meas, q_meas, cov, odom_t, odom_q, np.ones(n, bool), pos, q


def _gaps(cal: dict, block: str) -> list[float]:
    return [cal[block]["coverage"][k] - cal[block]["target"][k] for k in cal[block]["target"]]


def test_fit_on_one_drive_calibrates_the_fused_covariance_of_other_drives():
    """The starting settings assume white errors (``correlated_fraction`` 0) where half the error variance is a
    bias that decorrelates over ~2 s: the fused covariance claims far too little (most errors outside 2σ). Fitted
    on one 100 s drive, the kept settings cover three other drives of the same error process within ±10 points
    (pooled; position-2D and yaw, 1σ/2σ/3σ); the scored candidate is exactly what the node's fusion publishes with
    the kept settings (σ factors applied inside :class:`PoseFusion`)."""
    fit = fit_fusion(BASE, *drive(1000, seed=1, tau_s=2.0))
    assert fit.count == 1000 and fit.settings.enabled
    assert fit.base.gap > 40 and fit.best.gap <= 10
    assert fit.best.position_scale > 1.0 and fit.best.rotation_scale > 1.0  # it had claimed too little
    # the settings the fit does not touch stay as given (the odometry σ describe the robot)
    assert dataclasses.replace(fit.settings, measurement_scale=BASE.measurement_scale, position_scale=1.0,
                               rotation_scale=1.0) == BASE
    s, t, q, cov, ot, oq, ok, pos, qg = drive(1000, seed=1, tau_s=2.0)
    tr = fuse_track(fit.settings, s, t, q, cov, ot, oq, ok)
    direct = calibration_report(pos, qg, tr.t, tr.q, tr.covariance)
    for block in ("position_2d", "yaw"):
        assert direct[block]["coverage"] == pytest.approx(fit.best.coverage[block], abs=1e-9)
    worst = {}
    for name, settings in (("fitted", fit.settings), ("base", BASE)):
        rows = []
        for seed in (2, 3, 4):
            s, t, q, cov, ot, oq, ok, pos, qg = drive(1000, seed=seed, tau_s=2.0)
            tr = fuse_track(settings, s, t, q, cov, ot, oq, ok)
            rows.append((pos[20:], qg[20:], tr.t[20:], tr.q[20:], tr.covariance[20:]))
        cal = calibration_report(*(np.concatenate([r[i] for r in rows]) for i in range(5)))
        worst[name] = max(abs(g) for b in ("position_2d", "yaw") for g in _gaps(cal, b))
    assert worst["fitted"] <= 10 and worst["base"] > 40, worst


def test_fit_of_white_errors_keeps_sigma_factors_near_one():
    """Independent errors and the starting settings' model right: nothing to correct, the σ factors stay within
    ±25 % of 1 and the coverage within ±10 points."""
    fit = fit_fusion(BASE, *drive(600, seed=3, share=0.0))
    assert fit.best.gap <= 10
    assert 0.75 <= fit.best.position_scale <= 1.25 and 0.75 <= fit.best.rotation_scale <= 1.25, fit.best


def test_fit_needs_a_drive_with_odometry():
    s, t, q, cov, ot, oq, ok, pos, qg = drive(MIN_POSES + 10, seed=4)
    ok[:] = False
    ok[:MIN_POSES - 1] = True
    with pytest.raises(DataError, match=f"{MIN_POSES - 1} poses have odometry; at least {MIN_POSES}"):
        fit_fusion(BASE, s, t, q, cov, ot, oq, ok, pos, qg)


def test_fit_scores_only_the_rows_it_is_given():
    """``scored`` (fit-fusion's ``--max-map-distance``): the fusion runs over the whole drive, the fit scores the
    flagged rows. A drive whose second half has 4× the stated error: fitted on the first half only, the σ factors
    cover the first half (and stay near those of a drive without the bad half); fitted on all of it they grow."""
    s, t, q, cov, ot, oq, ok, pos, qg = drive(1000, seed=5, share=0.0)
    bad = np.arange(1000) >= 500
    t = t.copy()
    t[bad, :2] = pos[bad, :2] + 4.0 * (t[bad, :2] - pos[bad, :2])
    first = fit_fusion(BASE, s, t, q, cov, ot, oq, ok, pos, qg, scored=~bad)
    whole = fit_fusion(BASE, s, t, q, cov, ot, oq, ok, pos, qg)
    assert first.count == 500 and whole.count == 1000
    assert first.best.gap <= 10
    assert 0.75 <= first.best.position_scale * first.best.measurement_scale <= 1.5, first.best
    assert whole.best.position_scale * whole.best.measurement_scale > 1.5 * (
        first.best.position_scale * first.best.measurement_scale), (whole.best, first.best)
    with pytest.raises(DataError, match=f"{MIN_POSES - 1} poses are scored"):
        fit_fusion(BASE, s, t, q, cov, ot, oq, ok, pos, qg, scored=np.arange(1000) < MIN_POSES - 1)
    with pytest.raises(DataError, match="scored flags"):
        fit_fusion(BASE, s, t, q, cov, ot, oq, ok, pos, qg, scored=np.ones(10, bool))
