"""Pose fusion (network poses + odometry, GTSAM fixed-lag smoother): accuracy, outliers, pass-through, calibration.

The tracks are synthetic with known noise: network poses = GT + Gaussian noise of the stated covariance, odometry =
:func:`mfapr_ros.core.odometry.simulate_odometry` (scale error, yaw drift, heavy-tailed noise) or exact.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.fusion import (
    MISSING_GTSAM,
    STATUSES,
    FusionSettings,
    FusionUnavailableError,
    PoseFusion,
    body_to_ros_covariance,
    ros_to_body_covariance,
)
from mfapr_ros.core.geometry import quat_from_axis_angle, quat_from_yaw, quat_mul, quat_to_yaw
from mfapr_ros.core.odometry import OdometryDrift, simulate_odometry
from mfapr_ros.inference.calibration import calibration_report

HZ = 10.0
#: the synthetic network noise here is white (independent per bundle), so no correlation inflation; the odometry
#: model of the synthetic bags' drift (the defaults are tuned on the demo query, whose errors are correlated)
WHITE = FusionSettings(enabled=True, measurement_scale=1.0, correlated_fraction=0.0, odom_rotation_per_m=0.03)
SIGMA_P, SIGMA_R = 0.3, 0.05  # the network's stated position (m) and rotation (rad) σ
COV = np.diag([SIGMA_P ** 2, SIGMA_P ** 2, (0.3 * SIGMA_P) ** 2, SIGMA_R ** 2, SIGMA_R ** 2, SIGMA_R ** 2])
WARMUP = int(2 * HZ)  # the first 2 s


def track(n: int, seed: int, curve: float = 0.0, drift: OdometryDrift | None = OdometryDrift()):
    """GT (constant speed 1 m/s, yaw curving by ``curve``), noisy network poses and the odometry."""
    rng = np.random.default_rng(seed)
    yaw = curve * np.sin(np.arange(n) / HZ / 5.0)
    pos = np.zeros((n, 3))
    for k in range(1, n):
        pos[k] = pos[k - 1] + np.array([np.cos(yaw[k - 1]), np.sin(yaw[k - 1]), 0.0]) / HZ
    q = quat_from_yaw(yaw)
    t_meas = pos + rng.normal(0.0, 1.0, (n, 3)) * np.sqrt(np.diag(COV)[:3])
    q_meas = quat_mul(q, quat_from_axis_angle(np.array([0.0, 0.0, 1.0]), rng.normal(0.0, SIGMA_R, n)))
    if drift is None:
        odom = (pos - pos[0], q)  # exact (starts at the identity only in translation; fine for increments)
    else:
        odom = simulate_odometry(pos, q, drift, rng)
    return pos, q, t_meas, q_meas, odom


def stamp(k: int) -> int:
    return 1_700_000_000_000_000_000 + int(k * 1e9 / HZ)


def fuse(f: PoseFusion, t_meas, q_meas, odom, skip_odom: set[int] = frozenset()):
    return [f.update(stamp(k), t_meas[k], q_meas[k], COV, None if k in skip_odom else (odom[0][k], odom[1][k]))
            for k in range(len(t_meas))]


def arrays(out):
    return (np.array([o.t for o in out]), np.array([o.q for o in out]), np.array([o.covariance for o in out]))


def test_settings_validated_once_with_the_parameter_name():
    assert FusionSettings().enabled is False
    with pytest.raises(ConfigError, match="fusion.lag"):
        FusionSettings(lag=0.0)
    with pytest.raises(ConfigError, match="fusion.robust_loss"):
        FusionSettings(robust_loss="tukey")
    with pytest.raises(ConfigError, match="fusion.odom_min_rotation"):
        FusionSettings(odom_min_rotation=0.0)
    with pytest.raises(ConfigError, match="fusion.max_consecutive_outliers"):
        FusionSettings(max_consecutive_outliers=0)
    with pytest.raises(ConfigError, match="fusion.outlier_gate"):
        FusionSettings(outlier_gate=float("nan"))
    with pytest.raises(ConfigError, match="unknown fusion setting"):
        FusionSettings.from_dict({"lagg": 1.0})
    assert FusionSettings.from_dict({"lag": 3}).lag == 3


def test_missing_gtsam_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gtsam", None)  # import gtsam → ImportError
    with pytest.raises(FusionUnavailableError) as e:
        PoseFusion(FusionSettings(enabled=True))
    assert str(e.value) == MISSING_GTSAM and "\n" not in MISSING_GTSAM and "pip install gtsam==" in MISSING_GTSAM


def test_covariance_frames_round_trip():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + np.eye(6)
    q = quat_from_axis_angle(np.array([0.2, -0.4, 1.0]) / np.linalg.norm([0.2, -0.4, 1.0]), 1.1)
    body = ros_to_body_covariance(cov, q)
    np.testing.assert_allclose(body_to_ros_covariance(body, q), cov, atol=1e-12)
    # a yawed pose: world x variance becomes body-frame variance along the rotated axis; [rot, trans] order
    b = ros_to_body_covariance(np.diag([4.0, 1.0, 0.25, 0.01, 0.02, 0.03]), quat_from_yaw(np.pi / 2))
    np.testing.assert_allclose(np.diag(b), [0.02, 0.01, 0.03, 1.0, 4.0, 0.25], atol=1e-12)


pytest.importorskip("gtsam")


def test_constant_velocity_track_converges_to_the_stated_accuracy():
    """Exact-model odometry: fused median ≤ 0.06 m and max ≤ 0.2 m after 2 s, where the raw poses are at
    ~0.35 m median (σ 0.3 m per axis); yaw at a third of the raw error."""
    drift = OdometryDrift(scale_error=0.0, yaw_drift_per_m=0.0, translation_noise=0.005, yaw_noise=0.001,
                          tail_dof=float("inf"))
    pos, q, tm, qm, odom = track(400, seed=1, drift=drift)
    f = PoseFusion(FusionSettings(enabled=True, odom_translation_per_m=0.016, odom_rotation_per_m=0.0032,
                                  odom_rotation_per_rad=0.0, odom_min_translation=1e-4, odom_min_rotation=1e-4))
    ft, fq, _ = arrays(fuse(f, tm, qm, odom))
    raw = np.linalg.norm(tm[WARMUP:, :2] - pos[WARMUP:, :2], axis=1)
    err = np.linalg.norm(ft[WARMUP:, :2] - pos[WARMUP:, :2], axis=1)
    yaw_raw = np.abs(quat_to_yaw(qm[WARMUP:]) - quat_to_yaw(q[WARMUP:]))
    yaw_err = np.abs(quat_to_yaw(fq[WARMUP:]) - quat_to_yaw(q[WARMUP:]))
    assert np.median(raw) > 0.3
    assert np.median(err) <= 0.06 and err.max() <= 0.2, (np.median(err), err.max())
    assert np.median(yaw_err) <= np.median(yaw_raw) / 3
    assert f.stats["fused"] + f.stats["initialized"] + f.stats["outlier_rejected"] == 400


def test_drifting_odometry_default_settings_still_beat_the_raw_poses():
    pos, _, tm, qm, odom = track(600, seed=2, curve=0.2)
    f = PoseFusion(WHITE)
    ft, _, _ = arrays(fuse(f, tm, qm, odom))
    err = np.linalg.norm(ft[WARMUP:, :2] - pos[WARMUP:, :2], axis=1)
    assert np.median(err) <= 0.1 and err.max() <= 0.3, (np.median(err), err.max())


def test_outlier_10_m_off_is_rejected_and_counted():
    pos, _, tm, qm, odom = track(200, seed=4)
    tm = tm.copy()
    tm[100] += np.array([10.0, 0.0, 0.0])
    f = PoseFusion(FusionSettings(enabled=True))
    out = fuse(f, tm, qm, odom)
    assert out[100].status == "outlier_rejected" and f.stats["outlier_rejected"] >= 1
    assert np.linalg.norm(out[100].t[:2] - pos[100, :2]) < 0.3  # the odometry prediction was published
    assert np.linalg.norm(out[101].t[:2] - pos[101, :2]) < 0.3
    assert f.stats["received"] == sum(f.stats[s] for s in STATUSES) == 200


def test_missing_odometry_passes_raw_poses_through_counted_then_fusion_resumes():
    pos, _, tm, qm, odom = track(200, seed=5)
    f = PoseFusion(FusionSettings(enabled=True))
    out = fuse(f, tm, qm, odom, skip_odom=set(range(0, 5)) | set(range(80, 90)))
    assert [o.status for o in out[:5]] == ["no_odometry"] * 5 and out[5].status == "initialized"
    for k in range(80, 90):
        assert out[k].status == "no_odometry"
        np.testing.assert_array_equal(out[k].t, tm[k])  # the raw pose, as it came
        np.testing.assert_array_equal(out[k].covariance, COV)
    assert out[90].status == "fused"  # odometry bridges the gap: no re-initialisation
    assert f.stats["no_odometry"] == 15 and f.stats["initialized"] == 1 and f.stats["resets"] == 0
    assert np.linalg.norm(out[100].t[:2] - pos[100, :2]) < 0.3


def test_invalid_and_out_of_order_poses_pass_through_counted():
    _, _, tm, qm, odom = track(20, seed=6)
    f = PoseFusion(FusionSettings(enabled=True))
    fuse(f, tm[:10], qm[:10], odom)
    bad = f.update(stamp(3), tm[3], qm[3], COV, (odom[0][3], odom[1][3]))  # older than the last one
    assert bad.status == "invalid"
    nan_cov = f.update(stamp(11), tm[11], qm[11], np.full((6, 6), np.nan), (odom[0][11], odom[1][11]))
    assert nan_cov.status == "invalid" and f.stats["invalid"] == 2
    assert f.update(stamp(12), tm[12], qm[12], COV, (odom[0][12], odom[1][12])).status == "fused"


def test_kidnapped_robot_reinitialises_after_consecutive_outliers():
    pos, _, tm, qm, odom = track(200, seed=7)
    tm = tm.copy()
    tm[100:] += np.array([0.0, 8.0, 0.0])  # the map says the robot is elsewhere from now on (odometry does not)
    s = FusionSettings(enabled=True, max_consecutive_outliers=5)
    f = PoseFusion(s)
    out = fuse(f, tm, qm, odom)
    assert [o.status for o in out[100:104]] == ["outlier_rejected"] * 4 and out[104].status == "initialized"
    assert f.stats["resets"] == 1
    assert np.linalg.norm(out[150].t[:2] - (pos[150, :2] + [0.0, 8.0])) < 0.3


def test_fused_covariance_is_calibrated_on_a_drifting_track():
    """Coverage of the fused pose at 1σ/2σ/3σ within ±10 points of the Gaussian targets (position-2D, yaw), pooled
    over three tracks with the synthetic bags' odometry drift (white network noise: ``measurement_scale`` 1)."""
    rows = []
    for seed in (10, 11, 12):
        pos, q, tm, qm, odom = track(600, seed=seed, curve=0.2)
        ft, fq, fc = arrays(fuse(PoseFusion(WHITE), tm, qm, odom))
        rows.append((pos[WARMUP:], q[WARMUP:], ft[WARMUP:], fq[WARMUP:], fc[WARMUP:]))
    cal = calibration_report(*(np.concatenate([r[i] for r in rows]) for i in range(5)))
    for block in ("position_2d", "yaw"):
        gaps = {k: cal[block]["coverage"][k] - cal[block]["target"][k] for k in cal[block]["target"]}
        assert all(abs(g) <= 10 for g in gaps.values()), (block, cal[block]["coverage"])


def test_correlated_network_errors_keep_the_fused_covariance_honest():
    """Network errors with a slowly varying bias (60 % of their variance, correlation time 20 s ≫ the 2 s lag): the
    smoother alone (``correlated_fraction`` 0) averages the bias away on paper and claims far too little — most
    errors outside 1σ; with ``correlated_fraction`` 0.6 the coverage is within ±10 points of the Gaussian targets."""
    rho, tau = 0.6, 20.0 * HZ
    a = np.exp(-1.0 / tau)
    rows: dict[float, list] = {0.0: [], rho: []}
    for seed in range(20, 26):
        rng = np.random.default_rng(seed)
        pos, q, _, _, odom = track(400, seed=seed, curve=0.2)
        n = len(pos)
        bias = np.zeros((n, 3))  # x, y, yaw: AR(1) with stationary variance rho·σ²
        sig = np.array([SIGMA_P, SIGMA_P, SIGMA_R])
        bias[0] = rng.normal(0, 1, 3) * sig * np.sqrt(rho)
        for k in range(1, n):
            bias[k] = a * bias[k - 1] + rng.normal(0, 1, 3) * sig * np.sqrt(rho * (1 - a * a))
        white = rng.normal(0, 1, (n, 3)) * sig * np.sqrt(1 - rho)
        tm = pos.copy()
        tm[:, :2] += bias[:, :2] + white[:, :2]
        tm[:, 2] += rng.normal(0, 0.3 * SIGMA_P, n)
        qm = quat_mul(q, quat_from_axis_angle(np.array([0.0, 0.0, 1.0]), bias[:, 2] + white[:, 2]))
        for share in rows:
            s = FusionSettings(enabled=True, measurement_scale=1.0, correlated_fraction=share,
                               odom_rotation_per_m=0.03)
            ft, fq, fc = arrays(fuse(PoseFusion(s), tm, qm, odom))
            rows[share].append((pos[WARMUP:], q[WARMUP:], ft[WARMUP:], fq[WARMUP:], fc[WARMUP:]))
    cal = {share: calibration_report(*(np.concatenate([r[i] for r in rs]) for i in range(5)))
           for share, rs in rows.items()}
    assert cal[0.0]["position_2d"]["coverage"]["1sigma"] < cal[0.0]["position_2d"]["target"]["1sigma"] - 20
    for block in ("position_2d", "yaw"):
        gaps = {k: cal[rho][block]["coverage"][k] - cal[rho][block]["target"][k] for k in cal[rho][block]["target"]}
        assert all(abs(g) <= 10 for g in gaps.values()), (block, cal[rho][block]["coverage"])
    with pytest.raises(ConfigError, match="fusion.correlated_fraction"):
        FusionSettings(correlated_fraction=1.0)


def test_fusion_settings_round_trip_through_a_node_parameters_file(tmp_path):
    """What fit-fusion writes is a ROS 2 parameters file that load_fusion_params (eval-bag --params) reads back to
    the same settings; sections apply as --params-file does (``/**``, then the node's own, any namespace), both
    spellings read, other nodes and other parameters ignored; bad files are one ConfigError naming file and key."""
    from mfapr_ros.core.fusion import fusion_params_yaml, fusion_values_from_params, load_fusion_params

    s = FusionSettings(enabled=True, measurement_scale=2.0, position_scale=1.3, rotation_scale=0.8,
                       odom_translation_per_m=0.05)
    path = tmp_path / "fusion.yaml"
    path.write_text(fusion_params_yaml(s, "fitted on a drive\nkept: ..."))
    assert path.read_text().startswith("# fitted on a drive\n# kept: ...\n/**:")
    assert load_fusion_params(str(path)) == s
    doc = {"/**": {"ros__parameters": {"checkpoint": "m.json", "fusion": {"lag": 3.0, "measurement_scale": 1.2}}},
           "/robot/mfapr_localizer": {"ros__parameters": {"fusion.lag": 4.0}},
           "other_node": {"ros__parameters": {"fusion": {"lag": 9.0}}}}
    assert fusion_values_from_params(doc) == {"lag": 4.0, "measurement_scale": 1.2}
    base = FusionSettings(odom_rotation_per_m=0.03)
    path.write_text("/**:\n  ros__parameters:\n    fusion.position_scale: 2.0\n")
    assert load_fusion_params(str(path), base) == FusionSettings(odom_rotation_per_m=0.03, position_scale=2.0)
    for text, match in (("/**:\n  ros__parameters:\n    fusion:\n      lagg: 1.0\n", r"fusion.yaml.*unknown.*lagg"),
                        ("/**:\n  ros__parameters:\n    fusion:\n      rotation_scale: 0\n",
                         r"fusion.yaml.*fusion.rotation_scale = 0"),
                        ("/**:\n  fusion: {}\n", "has no 'ros__parameters'"),
                        ("/**: [unclosed\n", "not valid YAML"), ("- a list\n", "expected a ROS 2 parameters file")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_fusion_params(str(path))
    with pytest.raises(ConfigError, match="cannot read parameters file"):
        load_fusion_params(str(tmp_path / "missing.yaml"))


def test_sigma_factors_scale_only_the_published_fused_covariance():
    """position_scale / rotation_scale multiply the published covariance's blocks (σ², cross terms σ_p·σ_r) and
    change neither the fused estimate nor a raw pose passed through for want of odometry."""
    pos, q, tm, qm, odom = track(60, seed=7)
    plain = fuse(PoseFusion(WHITE), tm, qm, odom, skip_odom={30})
    scaled = fuse(PoseFusion(FusionSettings(**{**WHITE.to_dict(), "position_scale": 2.0, "rotation_scale": 0.5})),
                  tm, qm, odom, skip_odom={30})
    d = np.array([2.0, 2.0, 2.0, 0.5, 0.5, 0.5])
    for a, b in zip(plain, scaled, strict=True):
        assert a.status == b.status
        np.testing.assert_array_equal(a.t, b.t)
        want = a.covariance if a.status == "no_odometry" else a.covariance * np.outer(d, d)
        np.testing.assert_allclose(b.covariance, want, rtol=1e-12, atol=1e-15)
    assert plain[30].status == "no_odometry"
    with pytest.raises(ConfigError, match="fusion.position_scale"):
        FusionSettings(position_scale=0.0)
