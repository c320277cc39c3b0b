"""``~/fused_pose``: the node's network poses fused with odometry (``fusion.*`` parameters), a thin ROS shell.

Why a module of its own: the estimator (:class:`mfapr_ros.core.fusion.PoseFusion`, GTSAM) is ROS-free and shared
with ``mfapr eval-bag``; what is left here is ROS glue — the ``odom → base`` lookup at the bundle stamp (the one
:class:`~mfapr_ros.ros.tf_output.TfOutput` already owns for ``tf_mode map_to_odom``; it also listens when fusion is
on), the publisher, and a throttled warning while odometry is missing. The raw ``~/pose`` / ``~/pose_with_covariance``
stay exactly as they are; :meth:`FusionOutput.update` returns the pose the node's TF should carry (the fused one when
fusion is on, so ``map → odom`` follows the fused estimate, as AMCL's does).

Hooked into the node with three lines (``_make_outputs``, ``_on_pose``, ``_cleanup``); see docs/node.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mfapr_ros.core.fusion import FusionUnavailableError, PoseFusion

from .convert import rig_pose_to_pose_with_covariance
from .params import NodeParams

#: as ``~/pose_with_covariance``: reliable + transient_local depth 1 (a late robot_localization / nav2 gets the last)
FUSED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
FUSED_TOPIC = "~/fused_pose"


class FusionOutput:
    """Fusion for one node configuration: off (``fusion.enabled`` false, or GTSAM missing: one warning line) or on.

    ``lookup(target, source, stamp_ns) -> (t, q)`` is the TF lookup (``TfOutput.lookup``; injectable in tests);
    ``make_publisher(type, topic, qos)`` the node's (lifecycle publishers on the lifecycle node).
    """

    def __init__(self, node: Any, p: NodeParams, base_frame: str, tf: Any,
                 make_publisher: Callable[[Any, str, QoSProfile], Any]) -> None:
        self._node, self.p, self.base_frame = node, p, base_frame
        self.enabled = bool(p.fusion_enabled)
        self.fusion: PoseFusion | None = None
        self.pub: Any = None
        self.lookup_failures = 0
        self._last_warn = -1e9
        if not self.enabled:
            return
        try:
            self.fusion = PoseFusion(p.fusion)
        except FusionUnavailableError as e:
            node.get_logger().warning(f"fusion.enabled: {e}; ~/fused_pose is off")
            self.enabled = False
            return
        # waits briefly for odometry that has not reached the bundle stamp yet (TfOutput.lookup_waiting)
        self.lookup = getattr(tf, "lookup", None)
        if self.lookup is not None and callable(getattr(tf, "lookup_waiting", None)):
            self.lookup = tf.lookup_waiting
        if self.lookup is None:
            node.get_logger().warning("fusion.enabled: no TF listener here (tf2_ros / tf2_msgs missing): no odometry, "
                                      "~/fused_pose carries the raw poses (counted no_odometry)")
        self.pub = make_publisher(PoseWithCovarianceStamped, FUSED_TOPIC, FUSED_QOS)
        node.get_logger().info(f"fusion on: {p.odom_frame}->{base_frame} odometry + network poses -> "
                               f"{FUSED_TOPIC} (GTSAM fixed-lag smoother, lag {p.fusion_lag:g} s)")

    def update(self, pose: Any) -> tuple[np.ndarray, np.ndarray]:
        """Fuse one published pose (worker thread), publish ``~/fused_pose``; returns ``(t, q)`` for the TF."""
        if not self.enabled or self.fusion is None:
            return pose.t, pose.q
        stamp = int(pose.stamp_ns)
        odom = None
        if self.lookup is not None:
            try:
                odom = self.lookup(self.p.odom_frame, self.base_frame, stamp)
            except Exception as e:  # noqa: BLE001 - any tf lookup error: this pose passes through, counted
                self._lookup_failed(e)
        fused = self.fusion.update(stamp, pose.t, pose.q, pose.covariance, odom)
        if fused.status == "solver_error":
            self._node.get_logger().warning(f"fusion: GTSAM failed ({self.fusion.last_error}); restarting the track")
        self.pub.publish(rig_pose_to_pose_with_covariance(fused, self.p.map_frame))
        return fused.t, fused.q

    def _lookup_failed(self, e: Exception) -> None:
        self.lookup_failures += 1
        now = time.monotonic()
        if now - self._last_warn > self.p.drop_warning_period:
            self._last_warn = now
            self._node.get_logger().warning(
                f"fusion: no {self.p.odom_frame}->{self.base_frame} transform at the bundle stamp ({type(e).__name__}: "
                f"{e}); the raw pose passes through ~/fused_pose [{self.lookup_failures} so far]")

    def summary(self) -> dict[str, int]:
        """The estimator's counters (``received`` = the sum of the statuses), for /diagnostics and tests."""
        return dict(self.fusion.stats) if self.fusion is not None else {}

    def close(self, drop_publisher: Callable[[Any], None]) -> None:
        """Release the publisher (a lifecycle cleanup may be followed by a new configure)."""
        if self.pub is not None:
            drop_publisher(self.pub)
            self.pub = None
        self.enabled = False
