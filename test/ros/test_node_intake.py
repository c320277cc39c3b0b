"""The camera intake (ros/intake.py) over real DDS: messages reach ``on_message`` serialized, in order per topic,
with no executor spinning; an executor spinning the same node never executes an intake subscription; a failing
``on_message`` is counted and the intake goes on; ``stop`` joins the thread."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")

from helpers import spin, wait  # noqa: E402


def _stamp(data: bytes) -> int:
    from mfapr_ros.ros.cdr import cdr_header_stamp_ns

    return cdr_header_stamp_ns(data)


def test_intake_takes_messages_without_an_executor(rclpy_context) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from mfapr_ros.ros.intake import CameraIntake, IntakeCallbackGroup, intake_subscription

    node = rclpy.create_node("intake_test", context=rclpy_context)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    topics = ["/intake_test/a", "/intake_test/b"]
    subs = [intake_subscription(node, CompressedImage, t, qos) for t in topics]
    assert all(isinstance(s.callback_group, IntakeCallbackGroup) for s in subs)
    assert not subs[0].callback_group.can_execute(subs[0])
    pubs = [node.create_publisher(CompressedImage, t, qos) for t in topics]
    got: dict[int, list[int]] = {0: [], 1: []}
    threads: set[str] = set()

    def on_message(i: int, data: bytes) -> None:
        assert isinstance(data, bytes)  # serialized: nothing deserialized on the intake thread
        threads.add(threading.current_thread().name)
        got[i].append(_stamp(data))
        if _stamp(data) == 7:
            raise ValueError("on_message failing must not stop the intake")

    intake = CameraIntake(rclpy_context, subs, on_message, "intake_test")
    intake.start()
    try:
        wait(lambda: all(p.get_subscription_count() >= 1 for p in pubs), 10, "the subscriptions to match")
        for k in range(1, 21):
            for p in pubs:
                m = CompressedImage(format="jpeg")
                m.header.stamp.sec, m.header.stamp.nanosec = 0, k
                p.publish(m)
            time.sleep(0.002)
        wait(lambda: len(got[0]) == 20 and len(got[1]) == 20, 10, "20 messages per topic taken by the intake")
        assert got[0] == got[1] == list(range(1, 21))  # all, in order per topic
        assert intake.taken == 40 and intake.errors == 2
        assert threads == {"intake_test-intake"}

        # an executor spinning the same node never runs an intake subscription's callback (it would raise)
        ex = SingleThreadedExecutor(context=rclpy_context)
        ex.add_node(node)
        stop = threading.Event()
        th = threading.Thread(target=spin, args=(ex, stop), daemon=True)
        th.start()
        try:
            for k in range(21, 31):
                m = CompressedImage(format="jpeg")
                m.header.stamp.sec, m.header.stamp.nanosec = 0, k
                pubs[0].publish(m)
            wait(lambda: len(got[0]) == 30, 10, "the intake to take the messages while an executor spins")
        finally:
            stop.set()
            th.join(5)
            ex.shutdown()
        assert got[0][20:] == list(range(21, 31)) and intake.errors == 2
    finally:
        intake.stop()
        assert not intake.alive
        node.destroy_node()


def test_intake_interleaves_a_backlog_across_cameras(rclpy_context) -> None:
    """A backlog (the intake thread was held up) reaches on_message round robin across subscriptions, as it was
    published: one camera drained ahead of the others would overflow the synchronizer's per-camera queue."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from mfapr_ros.ros.intake import MAX_TAKE_PER_ROUND, CameraIntake, intake_subscription

    node = rclpy.create_node("intake_backlog", context=rclpy_context)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    topics = [f"/intake_backlog/c{i}" for i in range(3)]
    subs = [intake_subscription(node, CompressedImage, t, qos) for t in topics]
    pubs = [node.create_publisher(CompressedImage, t, qos) for t in topics]
    order: list[int] = []
    per_topic = 2 * MAX_TAKE_PER_ROUND + 3  # more than one wait's worth: the rotation also spans waits
    intake = CameraIntake(rclpy_context, subs, lambda i, data: order.append(i), "intake_backlog")
    try:
        wait(lambda: all(p.get_subscription_count() >= 1 for p in pubs), 10, "the subscriptions to match")
        for k in range(1, per_topic + 1):
            for p in pubs:
                m = CompressedImage(format="jpeg")
                m.header.stamp.sec, m.header.stamp.nanosec = 0, k
                p.publish(m)
        time.sleep(0.5)  # the backlog is in the subscriptions before the intake starts
        intake.start()
        wait(lambda: len(order) == 3 * per_topic, 10, "the backlog to be taken")
        counts = [0, 0, 0]
        for i in order:
            counts[i] += 1
            assert max(counts) - min(counts) <= 1, f"camera {i} drained ahead of the others: {order}"
    finally:
        intake.stop()
        node.destroy_node()
