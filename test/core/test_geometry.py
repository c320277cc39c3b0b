"""Geometry core: identities as hypothesis properties, plus hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mfapr_ros.core import geometry as g
from mfapr_ros.core import geometry_torch as gt
from mfapr_ros.core.errors import DataError

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(finite, finite, finite).map(np.array)
quat = st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4).filter(
    lambda v: np.linalg.norm(v) > 0.1).map(lambda v: g.quat_normalize(np.array(v)))


@given(vec3, quat)
def test_compose_with_inverse_is_identity(t, q):
    ti, qi = g.pose_inverse(t, q)
    t2, q2 = g.pose_compose(t, q, ti, qi)
    assert np.allclose(t2, 0, atol=1e-9)
    assert g.rotation_error_deg(q2, [1, 0, 0, 0]) < 1e-5


@given(quat)
def test_log_exp_roundtrip(q):
    assert g.rotation_error_deg(g.quat_exp(g.quat_log(q)), q) < 1e-5
    v = g.quat_log(q)
    if np.linalg.norm(v) < np.pi / 2 - 1e-6:  # log is single-valued except at 180° rotations (w = 0)
        assert np.allclose(g.quat_log(g.quat_exp(v)), v, atol=1e-8)


@given(quat, quat)
def test_rotation_error_symmetric_and_sign_invariant(a, b):
    e = g.rotation_error_deg(a, b)
    assert e == pytest.approx(g.rotation_error_deg(b, a), abs=1e-6)
    assert e == pytest.approx(g.rotation_error_deg(-a, b), abs=1e-6)
    assert 0.0 <= e <= 180.0 + 1e-9


@given(quat, vec3)
def test_rotate_matches_matrix(q, v):
    assert np.allclose(g.quat_rotate(q, v), g.quat_to_matrix(q) @ v, atol=1e-9)
    assert g.rotation_error_deg(g.matrix_to_quat(g.quat_to_matrix(q)), q) < 1e-5


@given(quat, quat)
@settings(max_examples=50)
def test_torch_twins_match_numpy(a, b):
    ta, tb = torch.tensor(a), torch.tensor(b)
    assert np.allclose(gt.quat_mul(ta, tb).numpy(), g.quat_mul(a, b), atol=1e-9)
    assert np.allclose(gt.quat_log(ta).numpy(), g.quat_log(a), atol=1e-6)
    assert float(gt.rotation_error_deg(ta, tb)) == pytest.approx(float(g.rotation_error_deg(a, b)), abs=1e-4)


def test_ros_order_conversion_is_the_one_place():
    q = np.array([0.1, 0.2, 0.3, 0.9])
    assert list(g.quat_wxyz_to_xyzw(q)) == [0.2, 0.3, 0.9, 0.1]
    assert np.allclose(g.quat_xyzw_to_wxyz(g.quat_wxyz_to_xyzw(q)), q)


def test_known_values():
    q90 = g.quat_from_yaw(math.pi / 2)
    assert np.allclose(g.quat_rotate(q90, [1, 0, 0]), [0, 1, 0], atol=1e-12)
    assert g.rotation_error_deg(q90, [1, 0, 0, 0]) == pytest.approx(90.0)
    assert g.translation_error([0, 0, 0], [3, 4, 0]) == pytest.approx(5.0)
    assert g.quat_to_yaw(q90) == pytest.approx(math.pi / 2)


def test_interpolation_linear_and_slerp_and_coverage():
    stamps = np.array([0, 1_000_000_000, 3_000_000_000], dtype=np.int64)
    t = np.array([[0, 0, 0], [2, 0, 0], [2, 4, 0]], dtype=float)
    q = np.stack([g.quat_from_yaw(0), g.quat_from_yaw(math.pi / 2), g.quat_from_yaw(math.pi / 2)])
    ti, qi, ok = g.interpolate_poses(stamps, t, q, [500_000_000, 2_000_000_000, -1, 4_000_000_000])
    assert ok.tolist() == [True, True, False, False]
    assert np.allclose(ti[0], [1, 0, 0]) and np.allclose(ti[1], [2, 2, 0])
    assert g.quat_to_yaw(qi[0]) == pytest.approx(math.pi / 4)
    _, _, ok = g.interpolate_poses(stamps, t, q, [2_000_000_000], max_gap_ns=1_500_000_000)
    assert ok.tolist() == [False]
    with pytest.raises(DataError, match="strictly increasing"):
        g.interpolate_poses([0, 0], t[:2], q[:2], [0])


def test_recall_bins_and_mean_pose():
    te = np.array([0.1, 0.3, 1.0, 6.0])
    re = np.array([1.0, 4.0, 9.0, 1.0])
    assert g.recall_at_bins(te, re) == [0.25, 0.5, 0.75]
    assert g.recall_at_bins(np.array([]), np.array([])) == [0.0, 0.0, 0.0]
    tm, qm = g.mean_pose(np.array([[0, 0, 0], [2, 2, 2]]), np.stack([g.quat_from_yaw(0.2), -g.quat_from_yaw(0.4)]))
    assert np.allclose(tm, [1, 1, 1])
    assert g.quat_to_yaw(qm) == pytest.approx(0.3, abs=1e-6)


def test_zero_quaternion_is_an_error():
    with pytest.raises(DataError, match="zero quaternion"):
        g.quat_normalize([0, 0, 0, 0])


def test_map_to_odom_composes_back_to_map_to_base() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        t_mb, t_ob = rng.normal(size=3) * 5, rng.normal(size=3) * 5
        q_mb = g.quat_from_axis_angle(rng.normal(size=3), rng.uniform(-3, 3))
        q_ob = g.quat_from_axis_angle(rng.normal(size=3), rng.uniform(-3, 3))
        t_mo, q_mo = g.map_to_odom(t_mb, q_mb, t_ob, q_ob)
        t2, q2 = g.pose_compose(t_mo, q_mo, t_ob, q_ob)  # map→odom · odom→base must equal map→base
        np.testing.assert_allclose(t2, t_mb, atol=1e-9)
        assert abs(float(np.dot(q2, q_mb))) == pytest.approx(1.0, abs=1e-12)


def test_map_to_odom_example() -> None:
    # base at (1, 0, 0) in odom, at (11, 5, 0) yawed 90° in map → odom origin at (11, 4, 0) in map, yawed 90°
    t_mo, q_mo = g.map_to_odom([11.0, 5.0, 0.0], g.quat_from_yaw(np.pi / 2), [1.0, 0, 0], [1.0, 0, 0, 0])
    np.testing.assert_allclose(t_mo, [11, 4, 0], atol=1e-12)
    assert g.rotation_error_deg(q_mo, g.quat_from_yaw(np.pi / 2)) < 1e-9
