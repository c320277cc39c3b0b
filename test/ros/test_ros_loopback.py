"""A real rclpy node from the PyPI wheels publishes and receives a PoseStamped over Fast DDS on loopback."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.ros


def test_localhost_only_env_is_set():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_LOCALHOST_ONLY"] == "1"
    assert 0 < int(os.environ["ROS_DOMAIN_ID"]) <= 101


def test_pose_pub_sub(rclpy_context):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("mfapr_loopback_test", context=rclpy_context)
    got: list[PoseStamped] = []
    node.create_subscription(PoseStamped, "loopback_pose", got.append, 10)
    pub = node.create_publisher(PoseStamped, "loopback_pose", 10)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    msg = PoseStamped()
    msg.header.frame_id = "map"
    msg.pose.position.x = 1.5
    msg.pose.orientation.w = 1.0
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        pub.publish(msg)
        ex.spin_once(timeout_sec=0.1)
    ex.shutdown()
    node.destroy_node()
    assert got, "no PoseStamped received on loopback within 20 s"
    assert got[0].header.frame_id == "map" and got[0].pose.position.x == 1.5
