"""The node's stateful outputs without DDS traffic: TF output modes (REP-105 map→odom, lookup failures counted, the
tf2_msgs fallback's buffer and publishers, off without tf2_ros and tf2_msgs) and the path bound. The ROS-free maths
is tested in test_geometry.py (map→odom) and test_stats.py; TF over real DDS in test_tf_loopback.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.ros import tf_output
from mfapr_ros.ros.convert import msg_to_pose, time_to_ns
from mfapr_ros.ros.params import validate_params


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
    tf = tf_output.TfOutput(_FakeNode(), _params(tf_mode="map_to_base"), "base_link", broadcaster=br)
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
    tf = tf_output.TfOutput(node, p, "base_link", broadcaster=br, lookup=lookup)
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


def test_tf_map_to_odom_waits_for_odometry_to_reach_the_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pose 2 ms past the newest odometry sample waits for the next one (retried when TF arrives and with the next
    pose), map→odom goes out in stamp order, a wait past ODOM_WAIT_S and a missing frame are counted failures, and
    close() counts what still waits (issue 25: a faster node looked up before odometry arrived and sent nothing)."""
    now = [100.0]
    monkeypatch.setattr(tf_output.time, "monotonic", lambda: now[0])
    br, buf = _Broadcaster(), tf_output.TfBuffer()
    tf = tf_output.TfOutput(_FakeNode(), _params(tf_mode="map_to_odom"), "base_link", broadcaster=br,
                            lookup=buf.lookup)

    def odom(ms: int, x: float) -> None:
        buf.add("odom", "base_link", ms * 1_000_000, np.array([x, 0.0, 0]), np.array([1.0, 0, 0, 0]))

    odom(0, 0.0)
    odom(10, 1.0)
    pose = (np.array([5.0, 0, 0]), np.array([1.0, 0, 0, 0]))
    assert not tf.publish(12_000_000, *pose) and tf.waiting == 1 and tf.lookup_failures == 0
    assert not tf.publish(15_000_000, *pose) and tf.waiting == 2  # behind the older one, in stamp order
    odom(20, 2.0)
    tf.retry()  # what the TF listener does after each message
    assert tf.waiting == 0 and tf.sent == 2 and tf.lookup_failures == 0
    assert [time_to_ns(tr.header.stamp) for tr in br.sent] == [112_000_000, 115_000_000]  # + transform_tolerance
    np.testing.assert_allclose(msg_to_pose(br.sent[0].transform)[0], [5.0 - 1.2, 0, 0], atol=1e-9)  # odom at 12 ms
    assert tf.publish(18_000_000, *pose) and tf.sent == 3  # covered now: sent at once
    assert not tf.publish(25_000_000, *pose) and tf.waiting == 1
    now[0] += tf_output.ODOM_WAIT_S + 0.01
    tf.retry()  # odometry stopped: given up, counted
    assert tf.waiting == 0 and tf.lookup_failures == 1 and tf.sent == 3
    assert not tf.publish(-5_000_000, *pose) and tf.lookup_failures == 2 and tf.waiting == 0  # the past: at once
    for k in range(tf_output.MAX_WAITING + 3):  # bounded: the oldest gives up
        tf.publish(30_000_000 + k, *pose)
    assert tf.waiting == tf_output.MAX_WAITING and tf.lookup_failures == 5
    tf.close()
    assert tf.waiting == 0 and tf.lookup_failures == 5 + tf_output.MAX_WAITING


def test_lookup_waiting_waits_for_late_odometry_and_not_for_a_dead_source() -> None:
    """The fusion's lookup (publish thread): odometry 2 ms short of the stamp arrives 30 ms later on another thread
    and is found; a missing frame raises at once; odometry that stopped costs one wait, then none until it is back."""
    import threading

    br, buf = _Broadcaster(), tf_output.TfBuffer()
    tf = tf_output.TfOutput(_FakeNode(), _params(tf_mode="none"), "base_link", broadcaster=br, lookup=buf.lookup)

    def odom(ms: int, x: float) -> None:
        buf.add("odom", "base_link", ms * 1_000_000, np.array([x, 0.0, 0]), np.array([1.0, 0, 0, 0]))
        tf.retry()  # what the TF listener does after each message

    odom(0, 0.0)
    odom(10, 1.0)
    late = threading.Timer(0.03, odom, (20, 2.0))
    late.start()
    t0 = time.monotonic()
    t, _ = tf.lookup_waiting("odom", "base_link", 12_000_000)
    waited = time.monotonic() - t0
    late.join()
    assert t[0] == pytest.approx(1.2) and 0.02 < waited < 0.09
    with pytest.raises(Exception, match="not connected"):
        tf.lookup_waiting("odom", "nowhere", 12_000_000)  # not a matter of waiting
    t0 = time.monotonic()
    with pytest.raises(Exception, match="future"):
        tf.lookup_waiting("odom", "base_link", 50_000_000, timeout_s=0.05)  # odometry stopped: one wait
    assert time.monotonic() - t0 >= 0.05
    t0 = time.monotonic()
    with pytest.raises(Exception, match="future"):
        tf.lookup_waiting("odom", "base_link", 60_000_000, timeout_s=0.05)
    assert time.monotonic() - t0 < 0.02  # no wait while stalled
    odom(70, 7.0)
    assert tf.lookup_waiting("odom", "base_link", 65_000_000)[0][0] == pytest.approx(6.5)  # back: waits again next
    assert not tf._odometry_stalled


def test_tf_off_without_tf2_ros_and_tf2_msgs_logs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf_output, "tf2_ros", None)
    monkeypatch.setattr(tf_output, "TFMessage", None)
    assert tf_output.tf_backend() == "none"
    node = _FakeNode()
    tf = tf_output.TfOutput(node, _params(tf_mode="map_to_base"), "base_link")
    assert not tf.enabled
    assert not tf.publish(1, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert len(node.log.lines) == 1 and "TF is off" in node.log.lines[0]
    none = tf_output.TfOutput(node, _params(), "base_link")
    assert not none.enabled and len(node.log.lines) == 1  # tf_mode none: nothing to say


def test_tf_buffer_interpolates_and_refuses_outside_its_window() -> None:
    buf = tf_output.TfBuffer(cache_s=1.0)
    yaw0, yaw1 = 0.2, 0.6
    buf.add("odom", "base_link", 1_000, np.array([0.0, 0, 0]), quat_from_yaw(yaw0))
    buf.add("/odom", "base_link", 3_000, np.array([2.0, 4, 0]), quat_from_yaw(yaw1))  # leading '/' as tf2
    t, q = buf.lookup("odom", "base_link", 1_500)  # a quarter of the way
    np.testing.assert_allclose(t, [0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(q, quat_from_yaw(0.3), atol=1e-12)  # slerp of a yaw-only rotation: linear in yaw
    t, _ = buf.lookup("odom", "base_link", 3_000)  # an exact sample (the end of the window) is valid
    np.testing.assert_allclose(t, [2.0, 4.0, 0.0])
    with pytest.raises(tf_output.TfLookupError, match="future"):
        buf.lookup("odom", "base_link", 3_001)
    with pytest.raises(tf_output.TfLookupError, match="past"):
        buf.lookup("odom", "base_link", 999)
    # inverse direction (base_link→odom) and a chain through a static parent: map→odom static, odom→base_link dynamic
    ti, qi = buf.lookup("base_link", "odom", 1_000)
    np.testing.assert_allclose(ti, [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(qi, quat_from_yaw(-yaw0), atol=1e-12)
    buf.add("map", "odom", 0, np.array([1.0, 0, 0]), np.array([1.0, 0, 0, 0]), static=True)
    t, q = buf.lookup("map", "base_link", 3_000)
    np.testing.assert_allclose(t, [3.0, 4.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(q, quat_from_yaw(yaw1), atol=1e-12)
    with pytest.raises(tf_output.TfLookupError, match="not connected"):
        buf.lookup("map", "camera", 2_000)
    # the window: samples more than cache_s behind the newest one are dropped; out-of-order inserts are sorted
    buf.add("odom", "base_link", 2_000_000_000, np.zeros(3), np.array([1.0, 0, 0, 0]))
    buf.add("odom", "base_link", 1_500_000_000, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert buf.span("odom", "base_link") == (1_500_000_000, 2_000_000_000)


def test_tf_fallback_publishers_qos_and_lookup(rclpy_context) -> None:
    """Without tf2_ros (always, on the pip route) and with tf2_msgs: rclpy publishers with tf2_ros' QoS, a
    listener buffer behind the map_to_odom lookup, one log line, everything released by close()."""
    if tf_output.TFMessage is None:
        pytest.skip("tf2_msgs is not importable (make install could not build it here)")
    import rclpy
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    assert tf_output.tf_backend() == ("tf2_ros" if tf_output.tf2_ros is not None else "tf2_msgs")
    if tf_output.tf2_ros is not None:
        pytest.skip("tf2_ros is installed: the fallback is not used")
    node = rclpy.create_node("tf_units", context=rclpy_context)
    try:
        lines: list[str] = []
        node.get_logger().info = lines.append  # type: ignore[method-assign]
        tf = tf_output.TfOutput(node, _params(tf_mode="map_to_odom"), "base_link")
        assert tf.enabled and tf.backend == "tf2_msgs" and len(lines) == 1 and "tf2_msgs" in lines[0]
        br = tf.broadcaster
        assert br.pub_tf.topic_name == "/tf"
        qos = br.pub_tf.qos_profile
        assert (qos.reliability, qos.durability, qos.depth) == (ReliabilityPolicy.RELIABLE,
                                                                DurabilityPolicy.VOLATILE, 100)
        br.sendStaticTransform(tf_output.transform_stamped([1, 0, 0], [1, 0, 0, 0], 0, "map", "odom"))
        br.sendStaticTransform(tf_output.transform_stamped([0, 1, 0], [1, 0, 0, 0], 0, "base_link", "cam0"))
        br.sendStaticTransform(tf_output.transform_stamped([2, 0, 0], [1, 0, 0, 0], 0, "map", "odom"))  # replaces
        assert sorted(tr.child_frame_id for tr in br._static.values()) == ["cam0", "odom"]
        sq = br.pub_tf_static.qos_profile
        assert (sq.reliability, sq.durability, sq.depth) == (ReliabilityPolicy.RELIABLE,
                                                             DurabilityPolicy.TRANSIENT_LOCAL, 1)
        tf.buffer.add("odom", "base_link", 5, np.array([1.0, 0, 0]), np.array([1.0, 0, 0, 0]))
        assert tf.lookup("odom", "base_link", 5)[0][0] == 1.0
        assert tf.publish(5, np.array([3.0, 0, 0]), np.array([1.0, 0, 0, 0])) and tf.sent == 1
        assert not tf.publish(6, np.zeros(3), np.array([1.0, 0, 0, 0])) and tf.waiting == 1  # odometry behind
        tf.buffer.add("odom", "base_link", 7, np.array([2.0, 0, 0]), np.array([1.0, 0, 0, 0]))
        tf.retry()
        assert tf.sent == 2 and tf.waiting == 0 and tf.lookup_failures == 0
        assert not tf.publish(4, np.zeros(3), np.array([1.0, 0, 0, 0])) and tf.lookup_failures == 1  # the past
        assert len(node.get_publisher_names_and_types_by_node("tf_units", "/")) >= 2
        tf.close()
        assert not tf.enabled and br.pub_tf is None and br.pub_tf_static is None
        assert not [s for s in node.subscriptions if s.topic_name in ("/tf", "/tf_static")]
    finally:
        node.destroy_node()


def test_path_buffer_is_bounded() -> None:
    from geometry_msgs.msg import PoseStamped

    pb = tf_output.PathBuffer(3, "map")
    for i in range(5):
        ps = PoseStamped()
        ps.header.stamp.sec = i
        path = pb.append(ps)
    assert len(path.poses) == 3 and [p.header.stamp.sec for p in path.poses] == [2, 3, 4]
    assert path.header.frame_id == "map" and path.header.stamp.sec == 4


# ---------------------------------------------------------------- the uncertainty gate in _on_pose (no DDS)
class _Pub:
    def __init__(self) -> None:
        self.sent = []

    def publish(self, msg) -> None:
        self.sent.append(msg)


class _Tf:
    enabled, lookup_failures = False, 0

    def __init__(self) -> None:
        self.sent = []

    def publish(self, stamp_ns, t, q) -> bool:
        self.sent.append(stamp_ns)
        return True


def _core(**params):
    """A LocalizeCore with fake publishers, TF and synchronizer: ``_on_pose`` and the diagnostics run as in the node
    (the real methods), without a ROS node or DDS."""
    from types import SimpleNamespace

    from mfapr_ros.core.sync import DROP_KEYS
    from mfapr_ros.ros.localize_node import LocalizeCore

    log = _Logger()

    class Core(LocalizeCore):
        def get_logger(self) -> _Logger:
            return log

        def get_name(self) -> str:
            return "unsure"

    core = Core()
    core._init_core()
    core.params = p = _params(**params)
    core.bindings, core.device, core.path = [], "cpu", None
    core.sync = SimpleNamespace(stats={k: 0 for k in DROP_KEYS})
    core._reset_stats(p)
    core.pub_pose, core.pub_pose_cov, core.pub_path, core.tf = _Pub(), _Pub(), None, _Tf()
    core._active = True
    return core, log


def _rig_pose(stamp_ns: int, pos_std: float):
    from mfapr_ros.inference.localizer import RigPose

    cov = np.diag([pos_std ** 2] * 3 + [0.01] * 3)
    return RigPose(stamp_ns, np.array([1.0, 2, 0]), np.array([1.0, 0, 0, 0]), cov, 0.01, np.ones(4, bool))


def test_on_pose_skips_uncertain_poses_counted_and_warned() -> None:
    from mfapr_ros.ros.diagnostics import diagnostic_statuses, final_summary_line

    core, log = _core(**{"uncertainty.max_position_sigma": 0.5, "uncertainty.action": "skip"})
    core._on_pose(_rig_pose(1, 0.1))  # confident: published
    for k in range(12):
        core._on_pose(_rig_pose(2 + k, 2.0))  # σ 2 m > 0.5 m: skipped
    assert len(core.pub_pose.sent) == len(core.pub_pose_cov.sent) == len(core.tf.sent) == 1
    assert core.poses_published == 1
    s = core.diagnostics_summary()
    assert s["uncertain_skipped"] == {"position_sigma": 12} and s["uncertain_inflated"] == {}
    assert s["uncertain_skipped_poses"] == 12 and s["uncertain_share"] == pytest.approx(12 / 13)
    assert sum("skipped" in m and "position_sigma" in m for m in log.lines) == 1  # throttled: one line so far
    # a live camera (the fake core has none, which would read as "no images")
    s["cameras"] = [{"name": "cam0", "topic": "/c", "rate_hz": 10.0, "received": 13, "silent_s": 0.0, "drops": {}}]
    main = diagnostic_statuses(s, "unsure", 0.5)[0]
    from diagnostic_msgs.msg import DiagnosticStatus

    kv = {x.key: x.value for x in main.values}
    assert kv["uncertain_skipped.position_sigma"] == "12" and kv["uncertain_skipped"] == "12"
    assert main.level == DiagnosticStatus.WARN and "unsure" in main.message
    assert "12 skipped" in final_summary_line(s)


def test_on_pose_inflates_uncertain_poses_and_default_is_off() -> None:
    from mfapr_ros.ros.convert import covariance_to_msg
    core, _ = _core(**{"uncertainty.max_position_sigma": 0.5, "uncertainty.inflate_factor": 2.0})
    seen = []
    core.on_pose.append(seen.append)
    core._on_pose(_rig_pose(1, 1.0))
    (msg,) = core.pub_pose_cov.sent
    cov = np.array(msg.pose.covariance).reshape(6, 6)
    assert cov[0, 0] == pytest.approx(4.0) and cov[5, 5] == pytest.approx(0.01)  # position σ × 2, rotation kept
    assert seen[0].covariance[0, 0] == pytest.approx(4.0)  # hooks see what was published
    s = core.diagnostics_summary()
    assert s["uncertain_inflated"] == {"position_sigma": 1} and s["uncertain_skipped_poses"] == 0
    # defaults: the gate is off, the model's covariance goes out unchanged
    core, _ = _core()
    core._on_pose(_rig_pose(1, 100.0))
    assert list(core.pub_pose_cov.sent[0].pose.covariance) == list(covariance_to_msg(_rig_pose(1, 100.0).covariance))
    assert core.diagnostics_summary()["uncertain_window"] == 1


def test_node_default_covariance_is_the_one_eval_and_calibration_score() -> None:
    """The node's fallback covariance (``covariance.*`` defaults) equals the Localizer's ``DEFAULT_COVARIANCE``,
    which eval-bag, ``mfapr evaluate`` and ``mfapr calibrate`` score and fit on: otherwise the stored σ factors would
    be applied to a different covariance than the one they were fitted on (they were: 0.01 vs 0.03 rad²)."""
    from mfapr_ros.inference.covariance import DEFAULT_COVARIANCE

    p = validate_params({"checkpoint": "model.json"})
    assert p.default_covariance() == pytest.approx([DEFAULT_COVARIANCE[0]] * 3 + [DEFAULT_COVARIANCE[1]] * 3)


def test_diagnostics_read_a_view_built_without_a_node() -> None:
    """Issue 24: /diagnostics reads one DiagnosticsView (what the node fills), so a view of plain meters and
    counters gives the same summary and statuses without any LocalizeCore."""
    from mfapr_ros.bag.bundles import CameraBinding
    from mfapr_ros.core.drops import DropCounter
    from mfapr_ros.core.stats import LatencyStats, RateMeter
    from mfapr_ros.core.sync import DROP_KEYS
    from mfapr_ros.ros.diagnostics import STAGES, DiagnosticsView, diagnostics_summary, view_statuses

    rates = [RateMeter(), RateMeter()]
    for _ in range(3):
        rates[0].tick()
    drops = DropCounter(lambda m: None, 5.0)
    drops.drop("cam1", "corrupt", "x")
    view = DiagnosticsView(
        node_name="n", device="cpu", precision="fp32",
        cameras=[CameraBinding(0, "cam0", "/c0", "raw", 4, 4), CameraBinding(1, "cam1", "/c1", "raw", 4, 4)],
        cam_rates=rates, bundle_rate=RateMeter(), pose_rate=RateMeter(), poses=0, partial_bundles=2,
        latency=LatencyStats(), stage_time={k: LatencyStats() for k in STAGES}, drops=drops,
        sync_stats={k: 0 for k in DROP_KEYS} | {"dropped_unmatched": 4}, inference_stats={"stale_dropped": 1},
        tf_mode="off", tf_lookup_failures=0, uncertain=None, stream_timeout_s=0.5, relocalization=None)
    s = diagnostics_summary(view)
    assert [c["received"] for c in s["cameras"]] == [3, 0] and s["cameras"][1]["drops"] == {"corrupt": 1}
    assert s["drops"]["sync.dropped_unmatched"] == 4 and s["drops"]["inference.stale"] == 1
    assert s["partial_bundles"] == 2 and s["uncertain_window"] == 0 and s["tf_mode"] == "off"
    statuses = view_statuses(view)
    assert [st.name for st in statuses] == ["n: localization", "n: camera cam0", "n: camera cam1"]
    assert statuses[0].message == "no poses yet"
