"""`mfapr play`: publish a rosbag2's messages over DDS at the recorded rate, with /clock, using rclpy.

Why it exists: the PyPI ROS 2 wheels have no ``ros2 bag``, yet the live path (DDS, QoS, ``localize_node``,
``evaluator_node``) must be exercised for real by the tests and the demo. The bag's CDR payloads are published as
they are (``Publisher.publish(bytes)`` → ``rcl_publish_serialized_message``), so no message is converted and what
subscribers receive is byte-identical to what was recorded.

- Timing: message ``i`` is published at ``t0 + (log_time_i − start) / rate`` on the wall clock.
- ``--clock``: publishes ``rosgraph_msgs/Clock`` with the bag time — before each message and at ``--clock-hz``
  while waiting — so nodes with ``use_sim_time:=true`` follow the bag.
- QoS: images use the sensor-data profile (best effort, like camera drivers) unless ``--image-qos reliable``;
  everything else, /clock included, is reliable (compatible with both kinds of subscribers).
- TF: ``/tf`` and ``/tf_static`` (``tf2_msgs/msg/TFMessage``) are published when tf2_msgs is importable (the pip
  route builds it at ``make install``; otherwise they are skipped and named). ``/tf_static`` is latched like a
  StaticTransformBroadcaster (reliable, transient_local) with a history as deep as the bag's /tf_static messages,
  so a node that starts late still receives every static transform recorded (several static broadcasters
  each leave their own message in a bag), and tf2 listeners (transient_local readers) match at all.
- ``--wait-subscribers N``: wait (up to ``--wait-timeout``) until the image topics someone subscribes to have N
  subscribers (topics nobody subscribes to are named, not waited for), so the start of a short bag is not lost
  to DDS discovery.
- SIGINT/SIGTERM stop playback cleanly (exit 0 with a summary); the node and context are always destroyed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfapr_ros.bag.reader import IMAGE_TYPES, BagReader
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.progress import progress as make_progress

LOG = logging.getLogger("mfapr.play")
CLOCK_TOPIC = "/clock"
TF_TYPE = "tf2_msgs/msg/TFMessage"
#: the deepest /tf_static history offered (a bag with thousands of static messages is a recording mistake)
MAX_STATIC_DEPTH = 1000


@dataclass
class PlayStats:
    """What was published: per-topic counts, skipped topics (no Python message class) and timing."""

    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    clock_messages: int = 0
    loops: int = 0
    bag_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False

    @property
    def total(self) -> int:
        return sum(self.published.values())


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name`` (the interface package must be importable)."""
    try:
        pkg, kind, name = msgtype.split("/")
    except ValueError as e:
        raise DataError(f"message type '{msgtype}' is not of the form pkg/msg/Name") from e
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"no Python message class for {msgtype} ({e}); install the ROS interface package "
                        f"'{pkg}' to publish this topic") from e


def is_tf_static(topic: str, msgtype: str) -> bool:
    """A static TF topic (``/tf_static``, also under a namespace: ``/robot1/tf_static``)."""
    return msgtype == TF_TYPE and topic.rstrip("/").rsplit("/", 1)[-1] == "tf_static"


def tf_static_qos(messages: int) -> Any:
    """Latched /tf_static QoS: reliable, transient_local, keeping the bag's ``messages`` (at least 1, at most
    :data:`MAX_STATIC_DEPTH`) so late joiners get every recorded static transform, not only the last message."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=max(1, min(int(messages), MAX_STATIC_DEPTH)), history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class _StopPlaybackError(Exception):
    """Raised from the SIGTERM handler to leave the playback loop like SIGINT does."""


def play(bag_path: str | Path, *, rate: float = 1.0, clock: bool = False, clock_hz: float = 50.0,
         loop: bool = False, topics: Iterable[str] | None = None, start_s: float = 0.0, end_s: float | None = None,
         image_qos: str = "sensor", wait_subscribers: int = 0, wait_timeout_s: float = 10.0, delay_s: float = 0.0,
         linger_s: float = 0.5, node_name: str = "mfapr_player", context: Any = None,
         max_loops: int | None = None, progress: bool = False) -> PlayStats:
    """Publish ``bag_path`` over DDS; returns :class:`PlayStats`. Requires an initialised rclpy ``context``
    (the default context when None). ``start_s``/``end_s`` are seconds from the bag's start. ``progress``: a bar
    on a terminal, one plain line per interval otherwise (:mod:`mfapr_ros.core.progress`)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if not rate > 0:
        raise ConfigError(f"--rate must be > 0, got {rate}")
    if image_qos not in ("sensor", "reliable"):
        raise ConfigError(f"--image-qos must be 'sensor' or 'reliable', got {image_qos!r}")
    stats = PlayStats()
    with BagReader(bag_path) as bag:
        info = bag.info()
        wanted = list(info.topics) if topics is None else list(topics)
        bag.require_topics(wanted)
        start_ns = info.start_ns + int(round(start_s * 1e9))
        end_ns = None if end_s is None else info.start_ns + int(round(end_s * 1e9))
        node = rclpy.create_node(node_name, context=context)
        try:
            pubs: dict[str, Any] = {}
            reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            for topic in wanted:
                msgtype = info.topics[topic].msgtype
                try:
                    cls = message_class(msgtype)
                except DataError as e:
                    stats.skipped_topics[topic] = str(e)
                    LOG.warning("not publishing %s: %s", topic, e)
                    continue
                if msgtype in IMAGE_TYPES and image_qos == "sensor":
                    qos = qos_profile_sensor_data
                elif is_tf_static(topic, msgtype):
                    qos = tf_static_qos(info.topics[topic].count)
                else:
                    qos = reliable
                pubs[topic] = node.create_publisher(cls, topic, qos)
                stats.published[topic] = 0
            if not pubs:
                raise DataError(f"none of the selected topics of {bag_path} can be published: {stats.skipped_topics}")
            clock_pub = None
            if clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10,
                                                  reliability=ReliabilityPolicy.RELIABLE))
            wall0 = time.monotonic()
            bar: Any = None
            try:  # a stop (Ctrl-C, SIGTERM) while waiting, delaying, playing or lingering ends cleanly
                _wait_for_subscribers(pubs, info, wait_subscribers, wait_timeout_s)
                if delay_s > 0:
                    time.sleep(delay_s)
                wall0 = time.monotonic()
                whole = start_s == 0 and end_s is None and not loop  # the message total is known
                bar = make_progress(sum(info.topics[t].count for t in pubs) if whole else None, "play", "msg",
                                    enabled=progress)
                while True:
                    _play_once(bag, pubs, clock_pub, start_ns, end_ns, rate, clock_hz, stats, bar)
                    stats.loops += 1
                    if not loop or (max_loops is not None and stats.loops >= max_loops):
                        break
                stats.wall_seconds = time.monotonic() - wall0
                if linger_s > 0:
                    time.sleep(linger_s)  # let reliable writers hand their last samples to the readers
            except (KeyboardInterrupt, _StopPlaybackError):
                stats.interrupted = True
                stats.wall_seconds = stats.wall_seconds or time.monotonic() - wall0
            finally:
                if bar is not None:
                    bar.close()
        finally:
            node.destroy_node()
    return stats


def _wait_for_subscribers(pubs: dict[str, Any], info: Any, n: int, timeout_s: float, settle_s: float = 1.0) -> None:
    """Wait until the image topics that are subscribed at all have ``n`` subscribers.

    A bag usually records more image topics than a localizer subscribes to (raw and compressed, extra cameras), so
    waiting for *every* topic sat out the whole timeout. Ready: every image topic has ``n`` subscribers; or at least
    one has, every topic that has any has ``n``, and the set of subscribed topics has not changed for ``settle_s``
    (DDS discovery of one node's subscriptions arrives within milliseconds of each other). The topics nobody
    subscribes to are named once.
    """
    if n <= 0:
        return
    targets = [t for t in pubs if info.topics[t].msgtype in IMAGE_TYPES] or list(pubs)
    deadline = time.monotonic() + timeout_s
    seen: frozenset[str] = frozenset()
    since = time.monotonic()
    while time.monotonic() < deadline:
        counts = {t: pubs[t].get_subscription_count() for t in targets}
        if all(c >= n for c in counts.values()):
            return
        subscribed = frozenset(t for t, c in counts.items() if c > 0)
        if subscribed != seen:
            seen, since = subscribed, time.monotonic()
        elif (subscribed and all(counts[t] >= n for t in subscribed)
              and time.monotonic() - since >= settle_s):
            LOG.info("playing: %d subscribed image topic(s) ready; nobody subscribes to %s", len(subscribed),
                     sorted(set(targets) - subscribed))
            return
        time.sleep(0.05)
    counts = {t: pubs[t].get_subscription_count() for t in targets}
    LOG.warning("playing although not every topic has %d subscriber(s) after %.1f s: %s", n, timeout_s, counts)


def _play_once(bag: BagReader, pubs: dict[str, Any], clock_pub: Any, start_ns: int, end_ns: int | None,
               rate: float, clock_hz: float, stats: PlayStats, bar: Any = None) -> None:
    from rosgraph_msgs.msg import Clock

    from .convert import ns_to_time

    def publish_clock(bag_ns: int) -> None:
        if clock_pub is not None:
            msg = Clock()
            msg.clock = ns_to_time(bag_ns)
            clock_pub.publish(msg)
            stats.clock_messages += 1

    wall0 = time.monotonic()
    period = 1.0 / clock_hz if clock_hz > 0 else float("inf")
    last_ns = start_ns
    for m in bag.messages(list(pubs), start_ns, end_ns):
        due = wall0 + (m.log_time_ns - start_ns) / 1e9 / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            step = min(due - now, period)
            time.sleep(step)
            if clock_pub is not None and time.monotonic() < due:
                publish_clock(start_ns + int((time.monotonic() - wall0) * rate * 1e9))
        publish_clock(m.log_time_ns)
        pubs[m.topic].publish(m.raw)
        stats.published[m.topic] += 1
        last_ns = m.log_time_ns
        if bar is not None:
            bar.update(1)
    stats.bag_seconds += (last_ns - start_ns) / 1e9


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfapr play", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or MCAP)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time (for use_sim_time)")
    p.add_argument("--clock-hz", type=float, default=50.0, help="/clock rate between messages (default 50)")
    p.add_argument("--loop", action="store_true", help="play the bag again and again until interrupted")
    p.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="only these topics (default: all)")
    p.add_argument("--start", type=float, default=0.0, help="start this many seconds into the bag")
    p.add_argument("--end", type=float, default=None, help="stop this many seconds into the bag")
    p.add_argument("--image-qos", choices=("sensor", "reliable"), default="sensor",
                   help="QoS of image topics (default: sensor data, best effort)")
    p.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="wait until every image topic has N subscribers before playing (default 0: don't wait)")
    p.add_argument("--wait-timeout", type=float, default=10.0, help="max seconds to wait for subscribers")
    p.add_argument("--delay", type=float, default=0.0, help="sleep this many seconds before playing")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: keep the environment's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr play`."""
    # both signals installed first thing, before the slow rclpy import: a process started with SIGINT ignored (a
    # background job of a non-interactive shell) inherits SIG_IGN, Python then never raises KeyboardInterrupt, and
    # a SIGINT from a supervisor was lost — play ran on until killed
    def on_term(signum: int, frame: Any) -> None:
        raise _StopPlaybackError()

    old = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, on_term)
    args = build_parser().parse_args(argv)
    from .env import apply_localhost_env

    apply_localhost_env(args.domain_id)  # DDS never leaves this machine
    try:
        import rclpy

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    except _StopPlaybackError:  # a stop request during start-up: nothing was published
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        print("mfapr play: interrupted during start-up: 0 messages", file=sys.stderr)
        return 0

    try:
        stats = play(args.bag, rate=args.rate, clock=args.clock, clock_hz=args.clock_hz, loop=args.loop,
                     topics=args.topics, start_s=args.start, end_s=args.end, image_qos=args.image_qos,
                     wait_subscribers=args.wait_subscribers, wait_timeout_s=args.wait_timeout, delay_s=args.delay,
                     context=ctx, progress=not args.quiet)
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    if not args.quiet:
        state = "interrupted" if stats.interrupted else "done"
        print(f"mfapr play: {state}: {stats.total} messages on {len(stats.published)} topics, "
              f"{stats.bag_seconds:.1f} s of bag in {stats.wall_seconds:.1f} s, {stats.clock_messages} /clock "
              f"messages" + (f", skipped {sorted(stats.skipped_topics)}" if stats.skipped_topics else ""),
              file=sys.stderr)
    return 0
