"""`mfapr play` publishes a bag over loopback DDS: byte-identical messages, recorded rate, /clock, clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mfapr_ros.bag.reader import BagReader
from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
from mfapr_ros.core.errors import ConfigError, DataError

pytestmark = pytest.mark.ros

TOPICS = ["/cam0/image_raw", "/cam1/image_raw"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / "bag"
    truth = write_synth_bag(path, SynthBagSpec(TOPICS, frames=15, hz=10.0, size=16, storage="mcap",
                                               compressed=[False, True]))
    return path, truth


def _spin_until(ex, cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)


def test_play_publishes_bag_over_dds(bag, ros_env, rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image

    from mfapr_ros.ros.convert import time_to_ns

    path, truth = bag
    node = __import__("rclpy").create_node("play_test_sink", context=rclpy_context)
    got: dict[str, list] = {"raw": [], "comp": [], "clock": []}
    # best effort like the player's sensor-data writers, but a deep reader history: a busy CI box must not turn the
    # exact counts below into a race between the executor and a 5-deep queue
    sensor_deep = QoSProfile(depth=50, reliability=qos_profile_sensor_data.reliability)
    node.create_subscription(Image, TOPICS[0], lambda m: got["raw"].append((time.monotonic(), m)), sensor_deep)
    node.create_subscription(CompressedImage, TOPICS[1] + "/compressed", lambda m: got["comp"].append(m),
                             sensor_deep)
    node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(time_to_ns(m.clock)), 100)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.cli", "play", str(path), "--clock",
                             "--wait-subscribers", "1", "--wait-timeout", "20", "--delay", "0.5"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _spin_until(ex, lambda: proc.poll() is not None and len(got["raw"]) >= 15 and len(got["comp"]) >= 15, 40)
        _spin_until(ex, lambda: False, 0.3)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, err
    assert "done: " in err and "/clock" in err
    # every image arrives (loopback, 16 px), in order, with the recorded stamps and bytes
    assert len(got["raw"]) == 15 and len(got["comp"]) == 15
    stamps = [time_to_ns(m.header.stamp) for _, m in got["raw"]]
    assert stamps == truth["stamps_ns"][0]
    np.testing.assert_array_equal(np.frombuffer(bytes(got["raw"][3][1].data), np.uint8).reshape(16, 16, 3),
                                  truth["images"][0][3])
    assert [time_to_ns(m.header.stamp) for m in got["comp"]] == truth["stamps_ns"][1]
    # recorded rate: 15 frames at 10 Hz span 1.4 s of bag → about 1.4 s of wall time between first and last
    span = got["raw"][-1][0] - got["raw"][0][0]
    assert 0.9 < span < 6.0, span  # arrival times on a shared CPU: generous bounds, paced (not burst) is the point
    # /clock follows bag time: monotonic, within the bag, denser than the messages
    clk = np.array(got["clock"])
    assert len(clk) > 30 and np.all(np.diff(clk) >= 0)
    with BagReader(path) as b:
        info = b.info()
    assert info.start_ns <= clk[0] and clk[-1] <= info.end_ns


def test_play_rejects_bad_input(tmp_path, bag, rclpy_context):
    from mfapr_ros.ros.player import play

    path, _ = bag
    with pytest.raises(DataError, match="no metadata.yaml"):
        play(tmp_path, context=rclpy_context)
    with pytest.raises(DataError, match="has no topic /nope"):
        play(path, topics=["/nope"], context=rclpy_context)
    with pytest.raises(ConfigError, match="rate"):
        play(path, rate=0.0, context=rclpy_context)


def test_play_in_process_rate_and_window(bag, rclpy_context):
    """Rate 4× plays 1.4 s of bag in ~0.35 s; --start/--end select a window; topics without a class are skipped."""
    from mfapr_ros.ros.player import play

    path, _ = bag
    t0 = time.monotonic()
    stats = play(path, rate=4.0, linger_s=0.0, context=rclpy_context)
    wall = time.monotonic() - t0
    assert stats.published[TOPICS[0]] == 15 and stats.published["/ground_truth/pose"] > 50
    assert stats.published["/chatter"] == 1
    assert 0.3 < stats.wall_seconds < 1.5 and wall < 5
    win = play(path, rate=10.0, start_s=0.5, end_s=1.0, topics=[TOPICS[0]], linger_s=0.0, context=rclpy_context)
    assert win.published == {TOPICS[0]: 5}


def test_sigint_stops_cleanly(bag, ros_env):
    path, _ = bag
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.cli", "play", str(path), "--loop", "--rate", "0.5"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "interrupted" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_while_waiting_for_subscribers_is_clean(bag, ros_env, sig):
    """A stop before playback starts (nobody subscribed yet) also exits 0 with the summary, not a traceback."""
    path, _ = bag
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.cli", "play", str(path), "--wait-subscribers", "1",
                             "--wait-timeout", "60"], env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(3.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "interrupted: 0 messages" in err and "Traceback" not in err


def test_play_tf_topics_with_tf2_msgs(tmp_path, rclpy_context):
    """With tf2_msgs importable (the pip route's `make install` builds it) /tf and /tf_static are published, not
    skipped; /tf_static is latched (transient_local) as deep as the bag's static messages. Over DDS, with the
    numbers checked: test_tf_loopback.py."""
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not importable: the player skips TF (and says so)")
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from mfapr_ros.ros.player import is_tf_static, play, tf_static_qos

    path = tmp_path / "tfbag"
    truth = write_synth_bag(path, SynthBagSpec(TOPICS[:1], frames=3, hz=10.0, size=8, gt="tf", gt_hz=20.0))
    stats = play(path, rate=10.0, linger_s=0.0, context=rclpy_context)
    assert "/tf" not in stats.skipped_topics and "/tf_static" not in stats.skipped_topics
    assert stats.published["/tf"] == len(truth["gt"][0]) and stats.published["/tf_static"] == 1
    assert is_tf_static("/tf_static", "tf2_msgs/msg/TFMessage") and is_tf_static("/r1/tf_static",
                                                                                   "tf2_msgs/msg/TFMessage")
    assert not is_tf_static("/tf", "tf2_msgs/msg/TFMessage") and not is_tf_static("/tf_static", "std_msgs/msg/String")
    q = tf_static_qos(3)
    assert (q.depth, q.durability, q.reliability) == (3, DurabilityPolicy.TRANSIENT_LOCAL, ReliabilityPolicy.RELIABLE)
    assert tf_static_qos(0).depth == 1 and tf_static_qos(10**6).depth == 1000
