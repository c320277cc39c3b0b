"""Live check of the built tf2_msgs: publish a TFMessage on /tf over DDS and receive it,
then round-trip it through rclpy.serialization (what a rosbag player uses).

Run with the venv's python, discovery kept on this machine, e.g.
  ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOCALHOST_ONLY=1 ROS_DOMAIN_ID=77 \
      .venv/bin/python scripts/ros_interfaces/check_tf2_msgs.py
Exits 0 and prints 'tf2_msgs check: OK' on success.
"""

import sys
import time

import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import deserialize_message, serialize_message
from tf2_msgs.msg import TFMessage


def make_msg() -> TFMessage:
    msg = TFMessage()
    for i in range(2):
        t = TransformStamped()
        t.header.stamp.sec = 1700000000 + i
        t.header.stamp.nanosec = 123456789
        t.header.frame_id = "map"
        t.child_frame_id = f"base_link_{i}"
        t.transform.translation.x = 1.5 + i
        t.transform.translation.y = -2.25
        t.transform.translation.z = 0.125
        t.transform.rotation.z = 0.7071067811865476
        t.transform.rotation.w = 0.7071067811865476
        msg.transforms.append(t)
    return msg


def check(got: TFMessage) -> None:
    assert len(got.transforms) == 2, got
    for i, t in enumerate(got.transforms):
        assert t.header.frame_id == "map" and t.child_frame_id == f"base_link_{i}", t
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == (1700000000 + i, 123456789), t
        tr, q = t.transform.translation, t.transform.rotation
        assert (tr.x, tr.y, tr.z) == (1.5 + i, -2.25, 0.125), tr
        assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.7071067811865476, 0.7071067811865476), q


def main() -> int:
    sent = make_msg()
    # 1. serialization round trip (CDR bytes via the fastrtps C typesupport)
    data = serialize_message(sent)
    back = deserialize_message(data, TFMessage)
    check(back)
    assert back == sent
    print(f"serialize/deserialize: {len(data)} bytes, equal")

    # 2. live pub/sub on /tf
    rclpy.init()
    try:
        node = rclpy.create_node("tf2_msgs_check")
        received = []
        node.create_subscription(TFMessage, "/tf", received.append, 100)
        pub = node.create_publisher(TFMessage, "/tf", 100)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            rclpy.spin_once(node, timeout_sec=0.2)
        if not received:
            print("tf2_msgs check: FAILED, nothing received on /tf in 20 s")
            return 1
        check(received[0])
        types = dict(node.get_topic_names_and_types()).get("/tf")
        print(f"pub/sub on /tf: received {len(received)} message(s), type {types}")
        node.destroy_node()
    finally:
        rclpy.shutdown()
    print("tf2_msgs check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
