"""The uncertainty gate (ROS-free): σ thresholds, the inflation rule, skip, retrieval disagreement on/off and without a
usable prior, the verdict counts and the throttled skip warning. The node's use of it is in test_node_units.py."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.inference.localizer import RigPose
from mfapr_ros.inference.uncertainty import (
    UncertaintyGate,
    UncertaintyStats,
    Verdict,
    judge,
    position_sigma,
    with_covariance,
    yaw_sigma_deg,
)


def _pose(pos_std: float = 0.1, yaw_std_deg: float = 1.0, t=(1.0, 2.0, 0.0), yaw: float = 0.0,
          extras: dict | None = None) -> RigPose:
    r = math.radians(yaw_std_deg)
    cov = np.diag([pos_std ** 2] * 3 + [r ** 2] * 3)
    return RigPose(stamp_ns=5, t=np.array(t, float), q=quat_from_yaw(yaw), covariance=cov, latency_s=0.01,
                   mask=np.ones(4, bool), extras=extras or {})


def _prior(t=(1.0, 2.0, 0.0), yaw: float = 0.0, score: float = 0.9) -> dict:
    return {"retrieval_t": np.array(t, float), "retrieval_q": quat_from_yaw(yaw), "retrieval_score": score}


def test_off_by_default_returns_the_covariance_untouched() -> None:
    p = _pose(pos_std=50.0, yaw_std_deg=90.0, extras=_prior(t=(100.0, 0, 0)))
    v = judge(p, UncertaintyGate())
    assert not UncertaintyGate().enabled
    assert v.keep and v.reasons == () and np.array_equal(v.covariance, p.covariance)


def test_sigma_definitions() -> None:
    cov = np.diag([0.04, 0.09, 0.01, 0.0, 0.0, math.radians(2.0) ** 2])
    cov[0, 1] = cov[1, 0] = 0.0
    assert position_sigma(cov) == pytest.approx(0.3)  # largest eigenvalue of the 3x3, not the x variance
    rot = np.array([[0.05, 0.04], [0.04, 0.05]])  # correlated x/y: the long axis is 0.3 m, both variances 0.05
    cov2 = np.zeros((6, 6))
    cov2[:2, :2] = rot
    assert position_sigma(cov2) == pytest.approx(0.3)
    assert yaw_sigma_deg(cov) == pytest.approx(2.0)


@pytest.mark.parametrize("pos_std,yaw_std,reasons", [
    (0.4, 1.0, ()),  # at/below both thresholds
    (0.6, 1.0, ("position_sigma",)),
    (0.4, 6.0, ("yaw_sigma",)),
    (0.6, 6.0, ("position_sigma", "yaw_sigma")),
])
def test_sigma_thresholds_and_inflate_rule(pos_std: float, yaw_std: float, reasons: tuple) -> None:
    gate = UncertaintyGate(max_position_sigma=0.5, max_yaw_sigma_deg=5.0, inflate_factor=3.0)
    p = _pose(pos_std, yaw_std)
    p.covariance[0, 5] = p.covariance[5, 0] = 0.001  # a position–yaw correlation survives scaled
    v = judge(p, gate)
    assert v.keep and v.reasons == reasons
    s_pos = 9.0 if "position_sigma" in reasons else 1.0
    s_rot = 9.0 if "yaw_sigma" in reasons else 1.0
    np.testing.assert_allclose(np.diag(v.covariance), np.diag(p.covariance) * np.array([s_pos] * 3 + [s_rot] * 3))
    assert v.covariance[0, 5] == pytest.approx(0.001 * math.sqrt(s_pos * s_rot))
    np.testing.assert_allclose(v.covariance, v.covariance.T)
    assert np.linalg.eigvalsh(v.covariance).min() > 0
    assert np.diag(p.covariance)[0] == pytest.approx(pos_std ** 2)  # the pose itself is not changed
    if reasons:
        assert v.covariance is not p.covariance


def test_skip_keeps_the_covariance_and_names_the_reason() -> None:
    gate = UncertaintyGate(max_position_sigma=0.5, action="skip")
    p = _pose(pos_std=1.0)
    v = judge(p, gate)
    assert not v.keep and v.reasons == ("position_sigma",)
    np.testing.assert_array_equal(v.covariance, p.covariance)
    assert judge(_pose(pos_std=0.1), gate).keep


def test_retrieval_disagreement_inflates_until_the_prior_is_within_one_sigma() -> None:
    gate = UncertaintyGate(max_retrieval_disagreement=1.0, max_retrieval_disagreement_deg=10.0)
    # 3 m off in x with σ 0.1 m: the position block grows by (3/0.1)² = 900 → σ 3 m, the prior on the 1σ ellipsoid
    p = _pose(pos_std=0.1, yaw_std_deg=1.0, extras=_prior(t=(4.0, 2.0, 0.0)))
    v = judge(p, gate)
    assert v.keep and v.reasons == ("retrieval_disagreement",)
    np.testing.assert_allclose(np.diag(v.covariance)[:3], [9.0] * 3)
    np.testing.assert_allclose(np.diag(v.covariance)[3:], np.diag(p.covariance)[3:])  # rotation agreed: untouched
    d = np.array([3.0, 0, 0])
    assert d @ np.linalg.inv(v.covariance[:3, :3]) @ d == pytest.approx(1.0)
    # 30° of yaw disagreement with σ 1°: the rotation block grows to σ 30° (position agreed: untouched)
    p = _pose(pos_std=0.1, yaw_std_deg=1.0, extras=_prior(yaw=math.radians(30.0)))
    v = judge(p, gate)
    assert v.reasons == ("retrieval_disagreement",)
    assert yaw_sigma_deg(v.covariance) == pytest.approx(30.0, rel=1e-6)
    np.testing.assert_allclose(np.diag(v.covariance)[:3], np.diag(p.covariance)[:3])
    # small disagreement: nothing
    assert judge(_pose(extras=_prior(t=(1.5, 2.0, 0.0), yaw=0.05)), gate).reasons == ()


def test_retrieval_check_off_or_without_a_usable_prior() -> None:
    far = _prior(t=(50.0, 2.0, 0.0), yaw=1.0)
    assert judge(_pose(extras=far), UncertaintyGate(max_position_sigma=5.0)).reasons == ()  # retrieval check off
    gate = UncertaintyGate(max_retrieval_disagreement=1.0, max_retrieval_disagreement_deg=5.0)
    assert judge(_pose(extras=far), gate).reasons == ("retrieval_disagreement",)
    assert judge(_pose(extras={}), gate).reasons == ()  # no retrieval database beside the checkpoint
    assert judge(_pose(extras={**far, "retrieval_score": float("nan")}), gate).reasons == ()
    assert judge(_pose(extras={k: v for k, v in far.items() if k != "retrieval_score"}), gate).reasons == ()
    assert judge(_pose(extras={"retrieval_t": far["retrieval_t"]}), gate).reasons == ()  # no retrieval_q
    # only the angle check on: 50 m away but the same heading is fine
    only_deg = UncertaintyGate(max_retrieval_disagreement_deg=5.0)
    assert judge(_pose(extras=_prior(t=(50.0, 2.0, 0.0))), only_deg).reasons == ()


def test_degenerate_covariance_still_gives_a_finite_inflation() -> None:
    p = _pose(extras=_prior(t=(3.0, 2.0, 0.0)))
    p.covariance[:3, :3] = 0.0
    v = judge(p, UncertaintyGate(max_retrieval_disagreement=1.0))
    assert v.keep and np.all(np.isfinite(v.covariance))


@pytest.mark.parametrize("kw,match", [
    ({"max_position_sigma": -1.0}, "max_position_sigma"),
    ({"max_yaw_sigma_deg": float("inf")}, "max_yaw_sigma_deg"),
    ({"action": "drop"}, "action"),
    ({"inflate_factor": 0.5}, "inflate_factor"),
])
def test_gate_validation_names_the_field(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UncertaintyGate(**kw)


def test_with_covariance_copies() -> None:
    p = _pose(extras=_prior())
    cov = np.eye(6)
    q = with_covariance(p, cov)
    assert q.covariance is cov and p.covariance is not cov and q.stamp_ns == p.stamp_ns and q.extras is p.extras


def test_stats_count_by_reason_share_and_throttled_skip_warning() -> None:
    lines: list[str] = []
    now = [0.0]
    st = UncertaintyStats(lines.append, period_s=5.0, window=4, clock=lambda: now[0])
    cov = np.eye(6)
    st.record(Verdict(True, cov))
    st.record(Verdict(True, cov, ("position_sigma",)))
    for _ in range(3):
        st.record(Verdict(False, cov, ("position_sigma", "retrieval_disagreement")), stamp_ns=7)
    assert st.counts() == {"skipped": {"position_sigma": 3, "retrieval_disagreement": 3},
                           "inflated": {"position_sigma": 1}}
    assert st.poses == {"skipped": 3, "inflated": 1} and st.judged == 5
    assert st.share() == (1.0, 4)  # the window holds the last 4: all uncertain
    assert len(lines) == 1 and "skipped" in lines[0] and "position_sigma" in lines[0]
    now[0] = 6.0
    st.record(Verdict(False, cov, ("position_sigma", "retrieval_disagreement")))
    assert len(lines) == 2 and "+2 more" in lines[1]
    assert UncertaintyStats().share() == (0.0, 0)


@pytest.mark.parametrize("key,value", [
    ("uncertainty.max_position_sigma", -0.1),
    ("uncertainty.max_yaw_sigma_deg", "big"),
    ("uncertainty.max_retrieval_disagreement", -1),
    ("uncertainty.max_retrieval_disagreement_deg", -5.0),
    ("uncertainty.action", "drop"),
    ("uncertainty.inflate_factor", 0.5),
])
def test_node_parameters_are_validated_by_name(key: str, value: object) -> None:
    from mfapr_ros.ros.params import validate_params

    with pytest.raises(ConfigError, match=re.escape(f"parameter '{key}' = ")):
        validate_params({"checkpoint": "m.json", key: value})


def test_node_parameters_build_the_gate() -> None:
    from mfapr_ros.ros.params import validate_params

    assert not validate_params({"checkpoint": "m.json"}).uncertainty.enabled
    p = validate_params({"checkpoint": "m.json", "uncertainty.max_position_sigma": 1,
                         "uncertainty.max_retrieval_disagreement_deg": 15.0, "uncertainty.action": "skip"})
    gate = p.uncertainty
    assert gate == UncertaintyGate(max_position_sigma=1.0, max_retrieval_disagreement_deg=15.0, action="skip")
