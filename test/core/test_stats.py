"""The node's running statistics (core.stats): sliding-window rates and latency percentiles, without ROS."""

from __future__ import annotations

import pytest

from mfapr_ros.core.stats import LatencyStats, RateMeter


def test_rate_meter_and_latency() -> None:
    r = RateMeter(window_s=10.0)
    for i in range(11):
        r.tick(100.0 + i * 0.1)
    assert r.rate(101.0) == pytest.approx(10.0)
    assert r.rate(200.0) == 0.0 and r.count == 11
    lat = LatencyStats(n=100)
    for v in range(1, 101):
        lat.add(v / 1000)
    assert lat.percentile(50) == pytest.approx(0.0505)
    assert lat.percentile(99) == pytest.approx(0.09901)
