"""The relocalization decisions without ROS: start-up seed, service refusals, watched-pose disagreement N in a row
(reset, staleness, cooldown), the lost state, and the planar Mahalanobis distance they rest on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.core.relocalization import RelocalizationSettings, Relocalizer, planar_mahalanobis

Q0 = np.array([1.0, 0, 0, 0])
COV = np.diag([0.04, 0.04, 0.04, 0.01, 0.01, 0.01])  # 0.2 m, 0.1 rad


def _ok(r: Relocalizer, stamp_s: float, now_s: float, t=(0.0, 0.0, 0.0), q=Q0):
    return r.observe(int(stamp_s * 1e9), np.array(t), q, COV, kept=True, confident=True, now_s=now_s)


def test_planar_mahalanobis_numbers() -> None:
    unit = np.eye(6)
    # 3 m along x with unit variance on both sides: 3 / sqrt(2) combined sigmas; z, roll, pitch are ignored
    d = planar_mahalanobis([0, 0, 0], Q0, unit, [3, 0, 99], Q0, unit)
    assert d == pytest.approx(3 / math.sqrt(2))
    # yaw wraps: 179° vs -179° is 2° apart, not 358°
    yaw_cov = np.diag([1, 1, 1, 1, 1, math.radians(1) ** 2])
    d = planar_mahalanobis([0, 0, 0], quat_from_yaw(math.radians(179)), yaw_cov,
                           [0, 0, 0], quat_from_yaw(math.radians(-179)), np.zeros((6, 6)))
    assert d == pytest.approx(2.0, rel=1e-6)
    # two zero covariances: finite, large
    assert 1e5 < planar_mahalanobis([0, 0, 0], Q0, np.zeros((6, 6)), [0.1, 0, 0], Q0, np.zeros((6, 6))) < np.inf


def test_startup_seed_is_the_first_confident_pose_once() -> None:
    r = Relocalizer(RelocalizationSettings(enabled=True))
    assert r.observe(1, np.zeros(3), Q0, COV * 100, kept=False, confident=False, now_s=0.0) is None  # skipped
    assert r.observe(2, np.zeros(3), Q0, COV * 9, kept=True, confident=False, now_s=0.1) is None  # inflated
    seed = _ok(r, 3.0, 0.2, t=(1, 2, 0))
    assert seed is not None and seed.reason == "startup" and seed.stamp_ns == 3_000_000_000
    np.testing.assert_array_equal(seed.covariance, COV)
    np.testing.assert_array_equal(seed.t, [1, 2, 0])
    assert _ok(r, 3.1, 0.3) is None and r.stats.seeds == {"startup": 1, "service": 0, "disagreement": 0}
    assert Relocalizer(RelocalizationSettings(enabled=True, on_startup=False)).observe(
        1, np.zeros(3), Q0, COV, kept=True, confident=True, now_s=0) is None
    off = Relocalizer(RelocalizationSettings(enabled=False))
    assert _ok(off, 1.0, 0.0) is None and off.request(0.1)[0] is not None  # the decision, not the publishing


def test_service_refuses_with_the_reason() -> None:
    r = Relocalizer(RelocalizationSettings(enabled=True, max_pose_age_s=1.0, lost_timeout_s=2.0))
    seed, msg = r.request(0.0)
    assert seed is None and "no confident pose yet" in msg
    _ok(r, 10.0, now_s=5.0, t=(4, 5, 0))
    seed, msg = r.request(5.5)
    assert seed is not None and seed.reason == "service" and seed.stamp_ns == 10_000_000_000 and "age 0.50" in msg
    seed, msg = r.request(6.5)
    assert seed is None and "1.5 s old" in msg
    for k in range(4):  # skipped from 7.0 s on
        r.observe(11 + k, np.zeros(3), Q0, COV, kept=False, confident=False, now_s=7.0 + k)
    seed, msg = r.request(9.5)
    assert seed is None and msg.startswith("lost:")
    assert r.stats.refused == 3 and r.stats.seeds["service"] == 1


def test_lost_only_after_every_pose_was_skipped_for_the_timeout() -> None:
    r = Relocalizer(RelocalizationSettings(lost_timeout_s=1.0))
    assert not r.lost(100.0)  # nothing skipped: not lost (silent cameras are another diagnosis)
    r.observe(1, np.zeros(3), Q0, COV, kept=False, confident=False, now_s=10.0)
    assert not r.lost(10.9) and r.lost(11.01) and r.lost_for(11.5) == pytest.approx(1.5)
    r.observe(2, np.zeros(3), Q0, COV, kept=False, confident=False, now_s=11.5)  # the run keeps its start
    assert r.lost(11.6)
    r.observe(3, np.zeros(3), Q0, COV * 9, kept=True, confident=False, now_s=11.7)  # an inflated pose ends it
    assert not r.lost(20.0) and r.lost_for(20.0) == 0.0
    never = Relocalizer(RelocalizationSettings(lost_timeout_s=0.0))
    never.observe(1, np.zeros(3), Q0, COV, kept=False, confident=False, now_s=0.0)
    assert not never.lost(1e6)


def test_disagreement_n_in_a_row_reset_stale_and_cooldown() -> None:
    s = RelocalizationSettings(enabled=True, on_startup=False, watch_enabled=True, watch_mahalanobis=3.4,
                               watch_bundles=3, watch_max_age_s=0.5, cooldown_s=2.0)
    r = Relocalizer(s)
    far = (5.0, 0.0, 0.0)  # 5 m / sqrt(0.04 + 0.04) = 17.7 sigma

    def watch(stamp_s: float, t=far) -> None:
        r.watch(int(stamp_s * 1e9), np.array(t), Q0, COV)

    assert _ok(r, 1.0, 0) is None  # nothing watched yet
    watch(1.1)
    assert _ok(r, 1.2, 0) is None and _ok(r, 1.3, 0) is None and r.in_a_row() == 2
    watch(1.35, t=(0.1, 0, 0))  # agrees (0.35 sigma): the run restarts
    assert _ok(r, 1.4, 0) is None and r.in_a_row() == 0
    assert r.stats.last_distance == pytest.approx(0.1 / math.sqrt(0.08))
    watch(1.45)
    assert _ok(r, 1.5, 0) is None and _ok(r, 1.6, 0) is None
    seed = _ok(r, 1.7, 0)
    assert seed is not None and seed.reason == "disagreement" and r.in_a_row() == 0
    # still disagreeing: 3 more in a row, but within the 2 s cooldown (bundle time) → nothing
    assert [_ok(r, 1.75 + 0.05 * k, 0) for k in range(3)] == [None] * 3
    # a watched pose too old to compare leaves the run as it is and is counted
    before = r.in_a_row()
    assert _ok(r, 3.0, 0) is None and r.in_a_row() == before and r.stats.watch_stale == 1
    watch(3.7)
    seed = _ok(r, 3.75, 0)  # cooldown over (2.05 s after the last seed), the run long enough
    assert seed is not None and seed.reason == "disagreement"
    assert r.stats.seeds["disagreement"] == 2 and r.stats.watched == 4


@pytest.mark.parametrize("kw", [{"max_pose_age_s": 0.0}, {"watch_mahalanobis": -1.0}, {"watch_bundles": 0},
                                {"cooldown_s": -1.0}, {"lost_timeout_s": float("nan")}, {"watch_max_age_s": 0}])
def test_settings_are_validated(kw) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        RelocalizationSettings(**kw)
