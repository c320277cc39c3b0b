"""Relocalization for nav2 over loopback DDS: ``/initialpose`` seeds at start-up, on ``~/relocalize`` and on a
disagreeing watched pose (exactly one per trigger, with the covariance the node publishes on
``~/pose_with_covariance``), the service's refusals, and the "lost" ERROR in /diagnostics.

The node runs with a stand-in model (poses handed to ``_on_pose``, the inference worker's output path), so the
uncertainty gate's verdicts are chosen by the test; everything after that — the gate, the seeds, the service, the
watched subscription and /diagnostics — is the real node over real DDS.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("std_srvs")

from helpers import IMG, spin, wait, wait_stable  # noqa: E402

CONFIDENT = np.diag([0.04, 0.05, 0.06, 0.001, 0.002, 0.003])  # position sigma 0.24 m < 1 m
CONFIDENT[0, 1] = CONFIDENT[1, 0] = 0.01
UNSURE = np.eye(6) * 4.0  # position sigma 2 m > 1 m: skipped


class _Model:
    """What the node needs of a Localizer before inference: a rig and a device."""

    def __init__(self) -> None:
        from mfapr_ros.core.rig import ring_rig

        self.rig = ring_rig(2, image_size=IMG, hfov_deg=90.0)
        self.device = "cpu"

    def infer(self, images, stamp_ns, mask=None):  # the test feeds poses to _on_pose directly; no camera traffic
        raise AssertionError("no bundle is inferred in this test")


def test_initialpose_seeds_service_watch_and_lost(rclpy_context) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_srvs.srv import Trigger

    from mfapr_ros.inference.localizer import RigPose
    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.localize_node import LocalizeNode
    from mfapr_ros.ros.runtime import make_executor

    node = LocalizeNode("reloc", context=rclpy_context, localizer_factory=lambda p: _Model(), parameter_overrides=[
        Parameter("checkpoint", value="fake.json"), Parameter("diagnostics_period", value=0.1),
        Parameter("uncertainty.max_position_sigma", value=1.0), Parameter("uncertainty.action", value="skip"),
        Parameter("uncertainty.lost_timeout", value=0.5), Parameter("relocalization.enabled", value=True),
        Parameter("relocalization.max_pose_age", value=60.0),
        Parameter("relocalization.watch_topic", value="/amcl_pose"),
        Parameter("relocalization.watch_bundles", value=3), Parameter("relocalization.cooldown", value=0.0)])
    tester = rclpy.create_node("reloc_tester", context=rclpy_context)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    seeds: list[PoseWithCovarianceStamped] = []
    published: list[PoseWithCovarianceStamped] = []
    diags: list[DiagnosticArray] = []
    tester.create_subscription(PoseWithCovarianceStamped, "/initialpose", seeds.append, reliable)
    tester.create_subscription(PoseWithCovarianceStamped, "/reloc/pose_with_covariance", published.append,
                               QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                          durability=node.pub_pose_cov.qos_profile.durability))
    tester.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    amcl = tester.create_publisher(PoseWithCovarianceStamped, "/amcl_pose", reliable)
    client = tester.create_client(Trigger, "/reloc/relocalize")
    executor = make_executor(2, rclpy_context)
    executor.add_node(node)
    executor.add_node(tester)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, stop), daemon=True)
    spinner.start()
    t0 = 1_000_000_000_000

    def pose(k: int, cov: np.ndarray, x: float = 1.0) -> None:
        node._on_pose(RigPose(t0 + k * 100_000_000, np.array([x, 2.0, 0.0]), np.array([1.0, 0, 0, 0]), cov, 0.01,
                              np.ones(2, bool)))

    def call() -> Trigger.Response:
        fut = client.call_async(Trigger.Request())
        wait(fut.done, 20, "the ~/relocalize response")
        return fut.result()

    def seeds_settle(n: int) -> None:
        wait_stable(lambda: (len(seeds) == n, len(seeds)), 0.5, 20, f"{n} seeds on /initialpose")

    def status() -> DiagnosticStatus:
        diags.clear()
        wait(lambda: any(s.name == "reloc: relocalization" for d in diags for s in d.status), 10, "/diagnostics")
        return next(s for d in reversed(diags) for s in d.status if s.name == "reloc: relocalization")

    try:
        wait(lambda: node.relocalization.pub.get_subscription_count() >= 1 and client.service_is_ready()
             and amcl.get_subscription_count() >= 1 and node.pub_pose_cov.get_subscription_count() >= 1, 20,
             "the seed subscription, the service and the watched topic to match")
        r = call()
        assert not r.success and "no confident pose yet" in r.message

        pose(0, UNSURE)  # skipped by the gate: no seed
        pose(1, CONFIDENT)  # the first confident pose: the start-up seed
        pose(2, CONFIDENT)
        seeds_settle(1)
        wait(lambda: len(published) == 2, 10, "the two published poses")
        (start,) = seeds
        assert start.header.frame_id == "map" and rc.time_to_ns(start.header.stamp) == t0 + 100_000_000
        twin = next(m for m in published if m.header.stamp == start.header.stamp)
        assert list(start.pose.covariance) == list(twin.pose.covariance)
        np.testing.assert_allclose(np.reshape(start.pose.covariance, (6, 6)), CONFIDENT)
        assert (start.pose.pose.position.x, start.pose.pose.position.y) == (1.0, 2.0)

        r = call()  # the service: exactly one seed, the latest confident pose
        assert r.success, r.message
        seeds_settle(2)
        assert rc.time_to_ns(seeds[1].header.stamp) == t0 + 200_000_000
        assert list(seeds[1].pose.covariance) == list(published[-1].pose.covariance)

        # the watched localizer (AMCL) is 6 m off for 3 confident poses in a row: one seed; agreeing: none
        far = rc.rig_pose_to_pose_with_covariance(
            RigPose(t0 + 300_000_000, np.array([7.0, 2.0, 0]), np.array([1.0, 0, 0, 0]), CONFIDENT, 0, None), "map")
        amcl.publish(far)
        wait(lambda: node.relocalization.relocalizer.stats.watched == 1, 10, "the watched pose")
        for k in (3, 4, 5):
            pose(k, CONFIDENT)
        seeds_settle(3)
        assert rc.time_to_ns(seeds[2].header.stamp) == t0 + 500_000_000
        assert list(seeds[2].pose.covariance) == list(published[-1].pose.covariance)
        near = rc.rig_pose_to_pose_with_covariance(
            RigPose(t0 + 600_000_000, np.array([1.1, 2.0, 0]), np.array([1.0, 0, 0, 0]), CONFIDENT, 0, None), "map")
        amcl.publish(near)
        wait(lambda: node.relocalization.relocalizer.stats.watched == 2, 10, "the second watched pose")
        for k in (6, 7, 8, 9):
            pose(k, CONFIDENT)
        time.sleep(0.5)
        assert len(seeds) == 3
        s = node.relocalization.summary()
        assert s["seeds"] == {"startup": 1, "service": 1, "disagreement": 1} and s["watch_disagreed"] == 3

        # lost: every pose skipped for longer than uncertainty.lost_timeout (0.5 s) → ERROR; the service refuses
        assert status().level == DiagnosticStatus.OK
        pose(10, UNSURE)
        time.sleep(0.6)
        pose(11, UNSURE)
        st = status()
        assert st.level == DiagnosticStatus.ERROR and st.message.startswith("lost:"), st.message
        r = call()
        assert not r.success and r.message.startswith("lost:")
        pose(12, CONFIDENT)  # a kept pose ends it (and seeds nothing: not a trigger)
        assert status().level == DiagnosticStatus.OK
        time.sleep(0.3)
        assert len(seeds) == 3 and node.relocalization.summary()["refused"] == 2
    finally:
        stop.set()
        spinner.join(5)
        node.destroy_node()
        tester.destroy_node()


def test_status_only_when_seeds_or_lost_are_possible(rclpy_context) -> None:
    """With the defaults (relocalization off, gate off) /diagnostics keeps its statuses; a skipping gate adds the
    relocalization status (the lost state) even without seeding."""
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.localize_node import LocalizeNode

    for name, extra, present in (("plain", [], False),
                                 ("gated", [Parameter("uncertainty.max_position_sigma", value=1.0),
                                            Parameter("uncertainty.action", value="skip")], True)):
        node = LocalizeNode(name, context=rclpy_context, localizer_factory=lambda p: _Model(), parameter_overrides=[
            Parameter("checkpoint", value="fake.json"), Parameter("diagnostics_period", value=0.0), *extra])
        try:
            names = [s.name for s in node.diagnostics.statuses()]
            assert (f"{name}: relocalization" in names) == present, names
            assert node.relocalization.pub is None and node.relocalization.srv is None  # nothing published
        finally:
            node.destroy_node()
