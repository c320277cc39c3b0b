"""Relocalization for nav2 on the node: ``/initialpose`` seeds, the ``~/relocalize`` service, the watched pose
subscription and the "lost" status of ``/diagnostics``.

The decisions (when to seed, when lost) are ROS-free in :mod:`mfapr_ros.core.relocalization`; this module converts
messages and owns the ROS entities, so the node needs only a few lines: construct a :class:`RelocalizationOutput`
with its publishers, call :meth:`RelocalizationOutput.observe` for every judged pose, add :meth:`status` to the
diagnostics and :meth:`close` it at cleanup.

QoS of the seeds: reliable, transient_local, depth 1. nav2 AMCL subscribes to ``initialpose`` with the system
default profile (reliable, volatile), which matches; RViz's "2D Pose Estimate" publishes there too. The stamp is the
bundle stamp of the pose (AMCL moves a stamped initial pose to "now" through odometry), the frame ``map_frame``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from mfapr_ros.core.relocalization import SEED_REASONS, Relocalizer, Seed

from .convert import msg_to_pose, rig_pose_to_pose_with_covariance, time_to_ns
from .params import NodeParams

#: the seeds' QoS (module docstring)
SEED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: the watched pose: reliable, volatile, depth 10 (amcl_pose is published transient_local, which this matches)
WATCH_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


class RelocalizationOutput:
    """The ROS side of :class:`~mfapr_ros.core.relocalization.Relocalizer` on one node.

    ``make_publisher(msg_type, topic, qos)`` creates the seed publisher (a lifecycle publisher on the lifecycle
    node); the service and the watched subscription exist only with ``relocalization.enabled`` (and
    ``watch_topic``). ``clock`` is the monotonic clock of the lost timing (injected by tests)."""

    def __init__(self, node: Any, params: NodeParams, make_publisher: Callable[[Any, str, QoSProfile], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._node = node
        self._frame = params.map_frame
        self._clock = clock
        self._make_publisher = make_publisher
        self.relocalizer = Relocalizer(params.relocalization)
        self.pub: Any = None
        self.srv: Any = None
        self.sub: Any = None
        self._wrong_frame = 0
        s = params.relocalization
        gate = params.uncertainty
        #: a status in /diagnostics only when something can happen: seeds, or a gate that can skip every pose
        self.reports = s.enabled or (gate.enabled and gate.action == "skip" and s.lost_timeout_s > 0)
        if s.enabled:
            self.pub = make_publisher(PoseWithCovarianceStamped, params.relocalization_topic, SEED_QOS)
            self.srv = node.create_service(Trigger, "~/relocalize", self._on_service)
            if s.watch_enabled:
                self.sub = node.create_subscription(PoseWithCovarianceStamped, params.relocalization_watch_topic,
                                                    self._on_watched, WATCH_QOS)
            what = [f"seeds on {params.relocalization_topic}"] + (["at start-up"] if s.on_startup else []) + [
                "on ~/relocalize"] + ([f"when {params.relocalization_watch_topic} disagrees by > "
                                       f"{s.watch_mahalanobis:g} sigma for {s.watch_bundles} poses"]
                                      if s.watch_enabled else [])
            node.get_logger().info("relocalization: " + ", ".join(what))

    # ------------------------------------------------------------------ the node's hook
    def observe(self, pose: Any, verdict: Any) -> None:
        """Every judged pose (worker thread), after the uncertainty gate: publishes a seed when one is due."""
        cov = verdict.covariance if verdict.keep else pose.covariance
        seed = self.relocalizer.observe(int(pose.stamp_ns), pose.t, pose.q, cov, kept=bool(verdict.keep),
                                        confident=bool(verdict.keep and not verdict.reasons), now_s=self._clock())
        if seed is not None:
            self._publish(seed)

    # ------------------------------------------------------------------ callbacks
    def _on_service(self, request: Any, response: Any) -> Any:
        seed, message = self.relocalizer.request(self._clock())
        if seed is not None:
            self._publish(seed)
        response.success, response.message = seed is not None, message
        return response

    def _on_watched(self, msg: Any) -> None:
        if msg.header.frame_id.lstrip("/") != self._frame:
            self._wrong_frame += 1  # counted (diagnostics), never compared across frames
            return
        t, q = msg_to_pose(msg.pose.pose)
        cov = np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)
        self.relocalizer.watch(time_to_ns(msg.header.stamp), t, q, cov)

    def _publish(self, seed: Seed) -> None:
        if self.pub is not None:
            self.pub.publish(rig_pose_to_pose_with_covariance(seed, self._frame))
            self._node.get_logger().info(f"relocalization: seed ({seed.reason}) published at {seed.stamp_ns} ns: "
                                         f"x {seed.t[0]:.2f} y {seed.t[1]:.2f} m")

    # ------------------------------------------------------------------ diagnostics / cleanup
    def summary(self) -> dict[str, Any]:
        """Plain values: lost state, seeds per reason, refusals, watched-pose comparisons."""
        r, now = self.relocalizer, self._clock()
        st = r.stats
        return {"lost": r.lost(now), "lost_for_s": r.lost_for(now), "lost_timeout_s": r.settings.lost_timeout_s,
                "enabled": r.settings.enabled, "seeds": dict(st.seeds), "refused": st.refused,
                "watched": st.watched, "watch_compared": st.compared, "watch_disagreed": st.disagreed,
                "watch_stale": st.watch_stale, "watch_wrong_frame": self._wrong_frame,
                "disagreeing_in_a_row": r.in_a_row(), "last_mahalanobis": st.last_distance}

    def status(self, node_name: str) -> DiagnosticStatus | None:
        """``<node>: relocalization``: ERROR while lost, else OK, with the counters as key/values; None when
        neither seeds nor the lost state are possible (relocalization off and a gate that never skips)."""
        if not self.reports:
            return None
        s = self.summary()
        st = DiagnosticStatus(name=f"{node_name}: relocalization", hardware_id=self._frame)
        if s["lost"]:
            st.level = DiagnosticStatus.ERROR
            st.message = (f"lost: every pose skipped as uncertain for {s['lost_for_s']:.1f} s "
                          f"(> uncertainty.lost_timeout {s['lost_timeout_s']:g} s)")
        else:
            st.level = DiagnosticStatus.OK
            st.message = "localized" if s["lost_for_s"] == 0 else f"poses skipped for {s['lost_for_s']:.1f} s"
        vals = {"lost": s["lost"], "lost_for_s": f"{s['lost_for_s']:.1f}", "enabled": s["enabled"],
                **{f"seeds.{k}": s["seeds"][k] for k in SEED_REASONS}, "refused": s["refused"],
                "watched": s["watched"], "watch_compared": s["watch_compared"],
                "watch_disagreed": s["watch_disagreed"], "watch_stale": s["watch_stale"],
                "watch_wrong_frame": s["watch_wrong_frame"], "disagreeing_in_a_row": s["disagreeing_in_a_row"],
                "last_mahalanobis": f"{s['last_mahalanobis']:.2f}"}
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        return st

    def close(self, drop_publisher: Callable[[Any], None]) -> None:
        """Release the publisher, service and subscription (lifecycle cleanup; safe to call twice)."""
        if self.pub is not None:
            drop_publisher(self.pub)
            self.pub = None
        if self.srv is not None:
            self._node.destroy_service(self.srv)
            self.srv = None
        if self.sub is not None:
            self._node.destroy_subscription(self.sub)
            self.sub = None
