"""`mfapr play --wait-subscribers` waits for the topics someone subscribes to, not for every topic of the bag
(issue 11: it sat out its whole timeout on a bag with image topics nobody subscribed to); and `evaluator_node`
exits non-zero when it scored nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from mfapr_ros.ros.player import _wait_for_subscribers

IMAGE = "sensor_msgs/msg/CompressedImage"


class FakePub:
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def get_subscription_count(self) -> int:
        return self.counts[0]


def info(topics: list[str]) -> SimpleNamespace:
    return SimpleNamespace(topics={t: SimpleNamespace(msgtype=IMAGE) for t in topics})


def test_unsubscribed_topics_do_not_hold_playback() -> None:
    pubs = {"/a/compressed": FakePub([1]), "/b/compressed": FakePub([1]), "/a/image_raw": FakePub([0])}
    t0 = time.monotonic()
    _wait_for_subscribers(pubs, info(list(pubs)), 1, timeout_s=20.0, settle_s=0.3)
    assert time.monotonic() - t0 < 2.0


def test_all_topics_subscribed_returns_at_once_and_nobody_waits_out_the_timeout() -> None:
    pubs = {"/a": FakePub([1]), "/b": FakePub([2])}
    t0 = time.monotonic()
    _wait_for_subscribers(pubs, info(list(pubs)), 1, timeout_s=20.0)
    assert time.monotonic() - t0 < 0.2
    pubs = {"/a": FakePub([0])}
    t0 = time.monotonic()
    _wait_for_subscribers(pubs, info(list(pubs)), 1, timeout_s=0.5)  # nobody at all: the timeout, then a warning
    assert 0.4 < time.monotonic() - t0 < 2.0


@pytest.mark.ros
def test_evaluator_without_poses_exits_1(tmp_path, ros_env) -> None:
    pytest.importorskip("rclpy")
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.ros.evaluator_node", "--out", str(tmp_path / "rep"),
                             "--duration", "60"], env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(4.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "no pose was scored" in err
