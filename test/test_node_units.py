"""Node building blocks without DDS traffic: REP-105 map→odom, TF output modes, drop counting, rates, path bound."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from mfapr_ros.core.geometry import pose_compose, quat_from_axis_angle, quat_from_yaw, rotation_error_deg
from mfapr_ros.ros import localize_node as nd
from mfapr_ros.ros.convert import msg_to_pose, time_to_ns
from mfapr_ros.ros.params import validate_params


def test_map_to_odom_composes_back_to_map_to_base() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        t_mb, t_ob = rng.normal(size=3) * 5, rng.normal(size=3) * 5
        q_mb = quat_from_axis_angle(rng.normal(size=3), rng.uniform(-3, 3))
        q_ob = quat_from_axis_angle(rng.normal(size=3), rng.uniform(-3, 3))
        t_mo, q_mo = nd.map_to_odom(t_mb, q_mb, t_ob, q_ob)
        t2, q2 = pose_compose(t_mo, q_mo, t_ob, q_ob)  # map→odom · odom→base must equal map→base
        np.testing.assert_allclose(t2, t_mb, atol=1e-9)
        assert abs(float(np.dot(q2, q_mb))) == pytest.approx(1.0, abs=1e-12)


def test_map_to_odom_example() -> None:
    # base at (1, 0, 0) in odom, at (11, 5, 0) yawed 90° in map → odom origin at (11, 4, 0) in map, yawed 90°
    t_mo, q_mo = nd.map_to_odom([11.0, 5.0, 0.0], quat_from_yaw(np.pi / 2), [1.0, 0, 0], [1.0, 0, 0, 0])
    np.testing.assert_allclose(t_mo, [11, 4, 0], atol=1e-12)
    assert rotation_error_deg(q_mo, quat_from_yaw(np.pi / 2)) < 1e-9


class _Broadcaster:
    def __init__(self) -> None:
        self.sent = []

    def sendTransform(self, tr) -> None:  # noqa: N802 - tf2_ros API
        self.sent.append(tr)


class _Logger:
    def __init__(self) -> None:
        self.lines = []

    def warning(self, m: str) -> None:
        self.lines.append(m)

    info = warning


class _FakeNode:
    def __init__(self) -> None:
        self.log = _Logger()

    def get_logger(self) -> _Logger:
        return self.log


def _params(**kw):
    return validate_params({"checkpoint": "x.json", **kw})


def test_tf_map_to_base() -> None:
    br = _Broadcaster()
    tf = nd.TfOutput(_FakeNode(), _params(tf_mode="map_to_base"), "base_link", broadcaster=br)
    assert tf.publish(3_000_000_000, np.array([1.0, 2, 3]), np.array([1.0, 0, 0, 0]))
    (tr,) = br.sent
    assert tr.header.frame_id == "map" and tr.child_frame_id == "base_link"
    assert time_to_ns(tr.header.stamp) == 3_000_000_000
    assert tr.transform.translation.y == 2.0


def test_tf_map_to_odom_future_dated_and_lookup_failure_counted() -> None:
    br = _Broadcaster()
    calls = []

    def lookup(target, source, stamp_ns):
        calls.append((target, source, stamp_ns))
        if stamp_ns == 0:
            raise RuntimeError("extrapolation into the past")
        return np.array([1.0, 0, 0]), np.array([1.0, 0, 0, 0])

    node = _FakeNode()
    p = _params(tf_mode="map_to_odom", transform_tolerance=0.25)
    tf = nd.TfOutput(node, p, "base_link", broadcaster=br, lookup=lookup)
    assert tf.publish(10_000_000_000, np.array([11.0, 5, 0]), quat_from_yaw(np.pi / 2))
    assert calls == [("odom", "base_link", 10_000_000_000)]
    (tr,) = br.sent
    assert (tr.header.frame_id, tr.child_frame_id) == ("map", "odom")
    assert time_to_ns(tr.header.stamp) == 10_250_000_000  # future-dated by transform_tolerance
    t, _ = msg_to_pose(tr.transform)
    np.testing.assert_allclose(t, [11, 4, 0], atol=1e-9)
    assert not tf.publish(0, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert tf.lookup_failures == 1 and len(br.sent) == 1
    assert any("odom->base_link" in m for m in node.log.lines)


def test_tf_off_without_tf2_ros_logs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nd, "tf2_ros", None)
    node = _FakeNode()
    tf = nd.TfOutput(node, _params(tf_mode="map_to_base"), "base_link")
    assert not tf.enabled
    assert not tf.publish(1, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert len(node.log.lines) == 1 and "TF is off" in node.log.lines[0]
    none = nd.TfOutput(node, _params(), "base_link")
    assert not none.enabled and len(node.log.lines) == 1  # tf_mode none: nothing to say


def test_rate_meter_and_latency() -> None:
    r = nd.RateMeter(window_s=10.0)
    for i in range(11):
        r.tick(100.0 + i * 0.1)
    assert r.rate(101.0) == pytest.approx(10.0)
    assert r.rate(200.0) == 0.0 and r.count == 11
    lat = nd.LatencyStats(n=100)
    for v in range(1, 101):
        lat.add(v / 1000)
    assert lat.percentile(50) == pytest.approx(0.0505)
    assert lat.percentile(99) == pytest.approx(0.09901)


def test_path_buffer_is_bounded() -> None:
    from geometry_msgs.msg import PoseStamped

    pb = nd.PathBuffer(3, "map")
    for i in range(5):
        ps = PoseStamped()
        ps.header.stamp.sec = i
        path = pb.append(ps)
    assert len(path.poses) == 3 and [p.header.stamp.sec for p in path.poses] == [2, 3, 4]
    assert path.header.frame_id == "map" and path.header.stamp.sec == 4
