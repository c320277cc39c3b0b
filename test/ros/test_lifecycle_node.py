"""The managed (lifecycle) localizer over real DDS: transitions driven through the standard lifecycle services
(``~/change_state``, ``~/get_state``) by a client node, as ``ros2 lifecycle set`` or nav2_lifecycle_manager would.

Asserts: no camera subscription and no pose before ``activate``; poses while active; nothing after ``deactivate``
(subscriptions gone, queued frames counted); poses again after re-activation; cleanup joins the worker (no thread
left) and a second configure works; a bad checkpoint makes configure fail (state stays unconfigured, reason kept);
the console script with ``autostart:=true`` localizes and stops cleanly, and refuses a bad checkpoint with status 2.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("mfapr_ros.inference.localizer")

from helpers import IMG, PERIOD_NS, make_checkpoint, spin, wait  # noqa: E402
from test_node import poses_from_console_node  # noqa: E402

NAME = "lc_loc"


def _reliable_overrides(ckpt: Path, num_cameras: int) -> list:
    from rclpy.parameter import Parameter

    ov = [Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
          Parameter("diagnostics_period", value=0.0)]
    for i in range(num_cameras):  # exact counts below must not depend on best-effort losses on a busy CI box
        ov += [Parameter(f"qos_overrides./cam{i}/image_raw.subscription.reliability", value="reliable"),
               Parameter(f"qos_overrides./cam{i}/image_raw.subscription.depth", value=50)]
    return ov


def _raw_bundle(stamp_ns: int, cameras: int):
    """A synchronizer bundle as the node's camera callbacks make it: serialized (undecoded) rgb8 images."""
    from rclpy.serialization import serialize_message

    from mfapr_ros.core.sync import Bundle
    from mfapr_ros.ros import convert as rc

    data = serialize_message(rc.numpy_to_image_msg(np.zeros((IMG, IMG, 3), np.uint8), "rgb8", stamp_ns))
    return Bundle(stamp_ns, [stamp_ns] * cameras, [data] * cameras, np.ones(cameras, bool))


def test_lifecycle_transitions_over_services(rclpy_context, tmp_path: Path) -> None:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.lifecycle_node import LocalizeLifecycleNode

    n = 4
    ckpt = make_checkpoint(tmp_path, n)
    threads_before = set(threading.enumerate())
    node = LocalizeLifecycleNode(NAME, context=rclpy_context, parameter_overrides=_reliable_overrides(ckpt, n))
    tester = rclpy.create_node("lc_tester", context=rclpy_context)
    poses: list[PoseStamped] = []
    tester.create_subscription(PoseStamped, f"/{NAME}/pose", poses.append, 100)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [tester.create_publisher(Image, f"/cam{i}/image_raw", reliable) for i in range(n)]
    change = tester.create_client(ChangeState, f"/{NAME}/change_state")
    get = tester.create_client(GetState, f"/{NAME}/get_state")
    executor = MultiThreadedExecutor(num_threads=3, context=rclpy_context)
    executor.add_node(node)
    executor.add_node(tester)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, stop), daemon=True)
    spinner.start()

    def call(client, request, timeout: float = 60.0):
        assert client.wait_for_service(timeout_sec=20), f"{client.srv_name} not available"
        fut = client.call_async(request)
        wait(fut.done, timeout, f"{client.srv_name} to answer")
        return fut.result()

    def transition(tid: int) -> bool:
        return call(change, ChangeState.Request(transition=Transition(id=tid))).success

    def state() -> int:
        return call(get, GetState.Request()).current_state.id

    frame = [0]

    def send(frames: int) -> list[int]:
        stamps = []
        for _ in range(frames):
            k = frame[0]
            frame[0] += 1
            stamp = 1_000_000_000_000 + k * PERIOD_NS
            for p in pubs:
                p.publish(rc.numpy_to_image_msg(np.full((IMG, IMG, 3), (k * 7) % 256, np.uint8), "rgb8", stamp))
            stamps.append(stamp)
            time.sleep(0.05)
        return stamps

    try:
        # unconfigured: parameters visible, nothing subscribed, nothing loaded
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.get_parameter("checkpoint").value == str(ckpt)
        assert all(p.get_subscription_count() == 0 for p in pubs)

        assert transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        time.sleep(0.3)
        assert all(p.get_subscription_count() == 0 for p in pubs), "inactive must not subscribe to cameras"
        assert [t.name for t in threading.enumerate() if t.name.endswith("-inference")] == [f"{NAME}-inference"]

        assert transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        wait(lambda: all(p.get_subscription_count() == 1 for p in pubs), 20, "camera subscriptions")
        wait(lambda: tester.count_publishers(f"/{NAME}/pose") == 1, 20, "the pose publisher")
        first = send(8)
        wait(lambda: len(poses) >= 1 and node._async.wait_idle(0.01)
              and len(poses) == node.poses_published, 30, "poses while active")
        got_first = {rc.time_to_ns(p.header.stamp) for p in poses}
        assert got_first <= set(first) and len(got_first) >= 2

        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        wait(lambda: all(p.get_subscription_count() == 0 for p in pubs), 20, "camera subscriptions to go away")
        n_before = len(poses)
        send(5)
        time.sleep(0.5)
        assert len(poses) == n_before, "an inactive lifecycle node published a pose"
        assert node.diagnostics_summary()["bundles"] <= len(first)

        assert transition(Transition.TRANSITION_ACTIVATE)
        wait(lambda: all(p.get_subscription_count() == 1 for p in pubs), 20, "camera subscriptions again")
        second = send(8)
        wait(lambda: len(poses) > n_before and node._async.wait_idle(0.01)
              and len(poses) == node.poses_published, 30, "poses after re-activation")
        assert {rc.time_to_ns(p.header.stamp) for p in poses[n_before:]} <= set(second)

        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not [t for t in threading.enumerate() if t.name.endswith("-inference") and t.is_alive()]
        assert node.pub_pose is None and node._subs == []

        assert transition(Transition.TRANSITION_CONFIGURE), "a second configure after cleanup must work"
        assert transition(Transition.TRANSITION_ACTIVATE)
        wait(lambda: all(p.get_subscription_count() == 1 for p in pubs), 20, "subscriptions after reconfigure")
        poses_before = len(poses)
        send(6)
        # every published pose delivered (DDS is asynchronous: wait for the last one, not the first)
        wait(lambda: len(poses) > poses_before and node._async.wait_idle(0.01)
             and len(poses) - poses_before == node.poses_published, 30, "poses after reconfigure")
        assert node.poses_published == len(poses) - poses_before  # statistics restart with a new configure

        assert transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert state() == State.PRIMARY_STATE_FINALIZED
    finally:
        stop.set()
        spinner.join(5)
        executor.shutdown()
        tester.destroy_node()
        node.destroy_node()
    time.sleep(0.1)
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not leaked, leaked


def test_configure_fails_cleanly_on_a_bad_checkpoint(rclpy_context, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import State
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.lifecycle_node import LocalizeLifecycleNode

    node = LocalizeLifecycleNode("lc_bad", context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(tmp_path / "missing.json")), Parameter("device", value="cpu")])
    try:
        node.trigger_configure()
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert not node._configured and node.last_error and "missing.json" in node.last_error
        assert node.pub_pose is None and node._async is None
        # an unknown parameter is refused at configure time, by name
        bad = LocalizeLifecycleNode("lc_bad2", context=rclpy_context, parameter_overrides=[
            Parameter("checkpoint", value=str(tmp_path / "x.json")), Parameter("sync.slopp", value=0.1)])
        try:
            bad.trigger_configure()
            assert bad.last_error and "sync.slopp" in bad.last_error
        finally:
            bad.destroy_node()
    finally:
        node.destroy_node()


def test_plain_node_rejects_autostart(rclpy_context, tmp_path: Path) -> None:
    """``autostart`` belongs to the lifecycle node only; the plain node refuses it like any unknown parameter."""
    from rclpy.parameter import Parameter

    from mfapr_ros.core.errors import ConfigError
    from mfapr_ros.ros.localize_node import LocalizeNode

    with pytest.raises(ConfigError, match="autostart"):
        LocalizeNode("plain_auto", context=rclpy_context, parameter_overrides=[
            Parameter("checkpoint", value=str(make_checkpoint(tmp_path, 4))), Parameter("autostart", value=True)])


def _exe() -> list[str]:
    import shutil

    exe = shutil.which("localize_lifecycle_node", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mfapr_ros.ros.lifecycle_node"]


def test_console_script_autostart(rclpy_context, ros_env: dict[str, str], tmp_path: Path) -> None:
    from mfapr_ros.ros import convert as rc

    bad = subprocess.run(_exe() + ["--ros-args", "-p", f"checkpoint:={tmp_path / 'nope.json'}",
                                   "-p", "autostart:=true"], env=ros_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "autostart: configure failed" in bad.stderr and "nope.json" in bad.stderr

    ckpt = make_checkpoint(tmp_path, 4)
    env = dict(ros_env, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_exe() + ["--ros-args", "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu",
                                      "-p", "autostart:=true", "-r", "__node:=lc_auto"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        got = poses_from_console_node(rclpy_context, proc, "lc_auto", 7_000_000_000)
        assert got, "no pose from the autostarted lifecycle node"
        assert (rc.time_to_ns(got[0].header.stamp) - 7_000_000_000) % PERIOD_NS == 0
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out and "stopped: images received" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_parameters_change_only_while_unconfigured(rclpy_context, tmp_path: Path) -> None:
    """Swap a model without restarting: set ``checkpoint`` while unconfigured, configure loads the new one; while
    configured the change is refused with the reason. The plain node's parameters stay read-only."""
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.lifecycle_node import LocalizeLifecycleNode
    from mfapr_ros.ros.localize_node import LocalizeNode

    four, six = make_checkpoint(tmp_path, 4), make_checkpoint(tmp_path, 6)
    node = LocalizeLifecycleNode("lc_swap", context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(four)), Parameter("device", value="cpu")])
    try:
        node.trigger_configure()
        assert node._configured and node.num_slots == 4
        refused = node.set_parameters([Parameter("checkpoint", value=str(six))])[0]
        assert not refused.successful and "only while unconfigured" in refused.reason
        assert not node.set_parameters([Parameter("topics.cam0", value="/x")])[0].successful
        assert node.get_parameter("checkpoint").value == str(four)
        node.trigger_cleanup()
        assert node.set_parameters([Parameter("checkpoint", value=str(six))])[0].successful
        node.trigger_configure()
        assert node._configured and node.num_slots == 6 and len(node.bindings) == 6
        assert [b.topic for b in node.bindings] == [f"/cam{i}/image_raw" for i in range(6)]
        # use_sim_time and other rclpy parameters are not ours to freeze
        assert node.set_parameters([Parameter("use_sim_time", value=False)])[0].successful
    finally:
        node.destroy_node()
    plain = LocalizeNode("plain_ro", context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(four)), Parameter("device", value="cpu")])
    try:
        assert not plain.set_parameters([Parameter("checkpoint", value=str(six))])[0].successful
    finally:
        plain.destroy_node()


class _FakeLocalizer:
    """A stand-in model (node tests of what surrounds inference): fixed pose, configurable covariance/delay."""

    def __init__(self, n: int = 2, cov=None, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        from mfapr_ros.core.rig import ring_rig

        self.rig = ring_rig(n, image_size=IMG, hfov_deg=90.0)
        self.device = "cpu"
        self.cov = np.eye(6) * 0.1 if cov is None else cov
        self.delay = delay
        self.gate = gate  # inference waits until the test opens it (ordering by state, not by wall time)

    def infer(self, images, stamp_ns, mask=None):
        from mfapr_ros.inference.localizer import RigPose

        if self.delay:
            time.sleep(self.delay)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        m = np.array([im is not None for im in images])
        return RigPose(int(stamp_ns), np.array([1.0, 2.0, 3.0]), np.array([1.0, 0, 0, 0]), self.cov, 0.0, m)


def test_nan_covariance_publishes_nothing(rclpy_context) -> None:
    """All outputs carry a pose or none does: a non-finite covariance is a counted drop, ~/pose is not sent alone."""
    from rclpy.parameter import Parameter

    from mfapr_ros.inference.localizer import RigPose
    from mfapr_ros.ros.localize_node import LocalizeNode

    fake = _FakeLocalizer(cov=np.full((6, 6), np.nan))
    node = LocalizeNode("nan_cov", context=rclpy_context, localizer_factory=lambda p: fake,
                        parameter_overrides=[Parameter("checkpoint", value="fake.json"),
                                             Parameter("diagnostics_period", value=0.0)])
    sent = []
    try:
        for name in ("pub_pose", "pub_pose_cov", "pub_path"):
            pub = getattr(node, name)
            pub.publish = lambda msg, name=name: sent.append(name)
        listeners = {"path": 1}  # ~/path (volatile) is sent only while somebody subscribes
        node.pub_path.get_subscription_count = lambda: listeners["path"]
        node._on_pose(RigPose(5, np.zeros(3), np.array([1.0, 0, 0, 0]), fake.cov, 0.0, np.ones(2, bool)))
        assert sent == [] and node.poses_published == 0
        assert node.diagnostics_summary()["drops"]["inference.non_finite_pose"] == 1
        node._on_pose(RigPose(6, np.zeros(3), np.array([1.0, 0, 0, 0]), np.eye(6), 0.0, np.ones(2, bool)))
        assert sent == ["pub_pose", "pub_pose_cov", "pub_path"] and node.poses_published == 1
        listeners["path"] = 0
        node._path_published = -float("inf")
        node._on_pose(RigPose(7, np.zeros(3), np.array([1.0, 0, 0, 0]), np.eye(6), 0.0, np.ones(2, bool)))
        assert sent[3:] == ["pub_pose", "pub_pose_cov"] and node.poses_published == 2
        assert len(node.path._poses) == 2  # the history is kept for a later subscriber
    finally:
        node.destroy_node()


def test_cleanup_releases_the_model_and_unexpected_failures_keep_their_reason(rclpy_context) -> None:
    import gc
    import weakref

    from lifecycle_msgs.msg import State
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.lifecycle_node import LocalizeLifecycleNode

    made: list = []

    def factory(p):
        if len(made) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        made.append(weakref.ref(loc := _FakeLocalizer()))
        return loc

    node = LocalizeLifecycleNode("lc_release", context=rclpy_context, localizer_factory=factory,
                                 parameter_overrides=[Parameter("checkpoint", value="fake.json"),
                                                      Parameter("diagnostics_period", value=0.0)])
    try:
        node.trigger_configure()
        assert node._configured and made[0]() is not None
        node.trigger_cleanup()
        gc.collect()
        assert node.localizer is None and made[0]() is None, "unconfigured must hold no model"
        node.trigger_configure()  # the factory now raises a non-mfapr error: FAILURE with the reason, not ERROR
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node.last_error == "RuntimeError: CUDA out of memory (simulated)"
    finally:
        node.destroy_node()


def test_deactivate_discards_the_queued_bundle(rclpy_context) -> None:
    """Only the bundle being inferred is published at deactivate; the one waiting behind it is dropped, counted.

    The running inference is held until deactivate has discarded the waiting bundle (a gate opened on that state):
    with a fixed 0.4 s inference a loaded machine could finish it first and start the second one (2 poses)."""
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.lifecycle_node import LocalizeLifecycleNode

    gate = threading.Event()
    node = LocalizeLifecycleNode("lc_discard", context=rclpy_context,
                                 localizer_factory=lambda p: _FakeLocalizer(gate=gate),
                                 parameter_overrides=[Parameter("checkpoint", value="fake.json"),
                                                      Parameter("diagnostics_period", value=0.0)])

    def open_when_discarded() -> None:
        deadline = time.monotonic() + 20
        while node._async.stats["discarded"] < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        gate.set()

    try:
        node.trigger_configure()
        node.trigger_activate()
        node._async.submit(_raw_bundle(1, 2))  # starts running, held at the gate
        deadline = time.monotonic() + 10
        while not node._async._busy and time.monotonic() < deadline:
            time.sleep(0.005)
        node._async.submit(_raw_bundle(2, 2))  # decoded, waits behind it
        opener = threading.Thread(target=open_when_discarded, daemon=True)
        opener.start()
        node.trigger_deactivate()
        opener.join(timeout=30)
        assert node.poses_published == 1
        assert node.diagnostics_summary()["drops"]["inference.inactive"] == 1
        assert node._async.stats["discarded"] == 1
    finally:
        node.destroy_node()


def test_console_scripts_refuse_a_malformed_qos_override(ros_env: dict[str, str], tmp_path: Path) -> None:
    """rclpy raises a plain RuntimeError for a bad qos_overrides value: still one line and status 2."""
    ckpt = make_checkpoint(tmp_path, 4)
    bad = "qos_overrides./cam0/image_raw.subscription.reliability:=sometimes"
    r = subprocess.run([sys.executable, "-m", "mfapr_ros.ros.localize_node", "--ros-args", "-p", f"checkpoint:={ckpt}",
                        "-p", "device:=cpu", "-p", bad], env=ros_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "refusing to start" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run(_exe() + ["--ros-args", "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu",
                                 "-p", "autostart:=true", "-p", bad],
                       env=ros_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "activate failed" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
