"""The node's stateful outputs beyond one message per pose: TF (``tf_mode``) and the bounded ``~/path``.

Why a module of their own: both keep state across poses (the REP-105 lookup, its counted failures and throttled
warning; the path's ring of poses) and both are exercised without DDS traffic by test/ros/test_node_units.py, so they
live apart from the node's lifecycle code. The maths (``map_to_odom``) is in :mod:`mfapr_ros.core.geometry`.

TF back ends, in order of preference (one log line says which one is used):

1. ``tf2_ros`` (a ROS 2 install): ``TransformBroadcaster`` + ``Buffer``/``TransformListener``.
2. ``tf2_msgs`` only (the pip route: the PyPI wheels lack tf2_ros, ``make install`` builds tf2_msgs from source):
   :class:`TfBroadcaster` publishes ``TFMessage`` with plain rclpy publishers on ``/tf`` and ``/tf_static`` with
   tf2_ros' QoS, and :class:`TfListener` fills a small :class:`TfBuffer` (time-indexed per edge, slerp
   interpolation, chains of edges) from ``/tf`` and ``/tf_static`` for the ``map_to_odom`` lookup.
3. neither: TF is off (logged once); poses, path and diagnostics work as usual.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mfapr_ros.core.geometry import map_to_odom, pose_compose, pose_inverse, quat_normalize, quat_slerp

from .convert import msg_to_pose, time_to_ns, transform_stamped
from .params import NodeParams

try:  # the PyPI ROS 2 wheels do not ship tf2_ros; the tf2_msgs fallback (or no TF) is used then
    import tf2_ros  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None
try:  # built from source by `make install` (scripts/ros_interfaces) where possible; absent elsewhere
    from tf2_msgs.msg import TFMessage  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

NS_PER_S = 1_000_000_000

#: tf2_ros' TransformBroadcaster / TransformListener QoS (DynamicBroadcasterQoS, DynamicListenerQoS)
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
#: StaticTransformBroadcaster: latched (late joiners get every static transform: it republishes the whole set)
TF_STATIC_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: StaticListenerQoS: transient_local so the latched samples of every static broadcaster are received
TF_STATIC_LISTENER_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_backend() -> str:
    """``tf2_ros``, ``tf2_msgs`` (the rclpy fallback) or ``none``: what a TfOutput would use here."""
    if tf2_ros is not None:
        return "tf2_ros"
    return "tf2_msgs" if TFMessage is not None else "none"


class TfLookupError(LookupError):
    """No transform at the requested stamp (outside the buffered span) or no chain between the frames."""


#: map_to_odom: how long a pose may wait for odometry to reach its stamp (s). Why wait at all: map→odom needs
#: odom→base_link *at the bundle stamp*, and odometry arrives up to one of its periods after the camera frames of
#: that instant; a node faster than that gap found none (issue 25: once inference took ~5 ms instead of ~9, every
#: lookup of a 100 Hz odometry replay failed by 1-3 ms). The pose is never held: only its map→odom waits.
ODOM_WAIT_S = 0.1
#: at most this many poses wait (the oldest gives up, counted): bounded at any pose rate
MAX_WAITING = 16


def _odometry_behind(e: BaseException) -> bool:
    """Whether a lookup failed only because odometry has not reached the stamp yet (tf2: "extrapolation into the
    future"; the same words in :class:`TfBuffer`'s error)."""
    return "future" in str(e).lower()


@dataclass
class _Edge:
    """One parent→child edge: a static value and/or a time-ordered window of samples (``T_parent_child``)."""

    static: tuple[np.ndarray, np.ndarray] | None = None
    stamps: list[int] = field(default_factory=list)
    values: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


class TfBuffer:
    """A minimal tf2 ``Buffer`` without tf2: what the ``map_to_odom`` lookup needs, ROS-message free.

    Why not a full tf2: only ``lookup(target, source, stamp)`` on a short window is needed and tf2_ros is not in the
    PyPI wheels. Semantics follow tf2 where it matters: frames without a leading ``/``; each child has one parent
    (the latest one wins); dynamic samples are kept ``cache_s`` behind the newest one of their edge (tf2's 10 s);
    a lookup between two samples interpolates (linear translation, slerp rotation), an exact sample is returned as
    is and a stamp outside the window raises :class:`TfLookupError` (no extrapolation). Static edges hold at every
    stamp; an edge that also receives dynamic samples uses those. Thread-safe (filled by subscription callbacks,
    read by the inference thread).
    """

    def __init__(self, cache_s: float = 10.0) -> None:
        self.cache_ns = int(round(cache_s * NS_PER_S))
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._parent: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, parent: str, child: str, stamp_ns: int, t: np.ndarray, q: np.ndarray, static: bool = False) -> None:
        """Insert ``T_parent_child`` at ``stamp_ns`` (out-of-order samples are placed by stamp; same stamp
        replaces)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        value = (np.asarray(t, np.float64).reshape(3).copy(), quat_normalize(np.asarray(q, np.float64).reshape(4)))
        with self._lock:
            edge = self._edges.setdefault((parent, child), _Edge())
            self._parent[child] = parent
            if static:
                edge.static = value
                return
            i = bisect.bisect_left(edge.stamps, stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                edge.values[i] = value
            else:
                edge.stamps.insert(i, stamp_ns)
                edge.values.insert(i, value)
            cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if cut:
                del edge.stamps[:cut], edge.values[:cut]

    def span(self, parent: str, child: str) -> tuple[int, int] | None:
        """``(oldest, newest)`` stamp of an edge's dynamic samples; None when it has none."""
        with self._lock:
            edge = self._edges.get((parent.lstrip("/"), child.lstrip("/")))
            return (edge.stamps[0], edge.stamps[-1]) if edge is not None and edge.stamps else None

    def lookup(self, target: str, source: str, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """``T_target_source`` (``(t, q wxyz)``) at ``stamp_ns``, as ``tf2_ros.Buffer.lookup_transform(target,
        source, stamp)``: the direct edge when there is one, else the chain through the common ancestor."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                return np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
            if (target, source) in self._edges:
                return self._at(target, source, stamp_ns)
            up_s, up_t = self._to_root(source), self._to_root(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                raise TfLookupError(f"'{target}' and '{source}' are not connected in the TF tree (known edges: "
                                    f"{sorted(f'{p}->{c}' for p, c in self._edges)})")
            t_cs, q_cs = self._chain(up_s, common, stamp_ns)
            t_ct, q_ct = self._chain(up_t, common, stamp_ns)
            ti, qi = pose_inverse(t_ct, q_ct)
            return pose_compose(ti, qi, t_cs, q_cs)

    def _to_root(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self._parent and len(path) <= len(self._parent):  # the bound guards against a cycle
            path.append(self._parent[path[-1]])
        return path

    def _chain(self, up: list[str], ancestor: str, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """``T_ancestor_frame`` where ``up`` = [frame, parent(frame), …, ancestor, …]."""
        t, q = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        for child, parent in zip(up, up[1:], strict=False):
            if child == ancestor:
                break
            t_pc, q_pc = self._at(parent, child, stamp_ns)
            t, q = pose_compose(t_pc, q_pc, t, q)
        return t, q

    def _at(self, parent: str, child: str, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        edge = self._edges[(parent, child)]
        if not edge.stamps:
            if edge.static is None:  # pragma: no cover - an edge is only created with a value
                raise TfLookupError(f"no {parent}->{child} transform")
            return edge.static[0].copy(), edge.static[1].copy()
        lo_ns, hi_ns = edge.stamps[0], edge.stamps[-1]
        if not lo_ns <= stamp_ns <= hi_ns:
            where = "past" if stamp_ns < lo_ns else "future"
            raise TfLookupError(
                f"extrapolation into the {where}: {parent}->{child} requested at {stamp_ns} ns, buffer holds "
                f"[{lo_ns}, {hi_ns}] ns ({(stamp_ns - (lo_ns if where == 'past' else hi_ns)) / 1e6:+.1f} ms "
                "outside)")
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if edge.stamps[i] == stamp_ns:
            t, q = edge.values[i]
            return t.copy(), q.copy()
        s0, s1 = edge.stamps[i - 1], edge.stamps[i]
        (t0, q0), (t1, q1) = edge.values[i - 1], edge.values[i]
        alpha = (stamp_ns - s0) / (s1 - s0)
        return t0 + alpha * (t1 - t0), quat_slerp(q0, q1, alpha)


class TfBroadcaster:
    """``TransformBroadcaster`` + ``StaticTransformBroadcaster`` with plain rclpy publishers of ``TFMessage``.

    Why: the pip route has tf2_msgs but no tf2_ros. ``sendTransform`` publishes on ``/tf`` (reliable, keep last 100:
    tf2_ros' dynamic QoS); ``sendStaticTransform`` keeps every static transform by child frame and republishes the
    whole set on ``/tf_static`` (transient_local, depth 1: a late joiner gets all of them, as tf2_ros does). The
    /tf_static publisher is created on first use, so a node that never sends static transforms offers none.
    """

    def __init__(self, node: Node) -> None:
        if TFMessage is None:  # pragma: no cover - callers check tf_backend() first
            raise RuntimeError("tf2_msgs is not installed")
        self._node = node
        self._lock = threading.Lock()
        self.pub_tf: Any = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.pub_tf_static: Any = None
        self._static: dict[str, TransformStamped] = {}

    def sendTransform(self, transform: TransformStamped | Iterable[TransformStamped]) -> None:  # noqa: N802
        """Publish one or several transforms on /tf (the tf2_ros method name, so both back ends are one API)."""
        msg = TFMessage()
        msg.transforms = [transform] if isinstance(transform, TransformStamped) else list(transform)
        self.pub_tf.publish(msg)

    def sendStaticTransform(self, transform: TransformStamped | Iterable[TransformStamped]) -> None:  # noqa: N802
        """Add (or replace, by child frame) static transforms and republish them all on /tf_static."""
        with self._lock:
            for tr in [transform] if isinstance(transform, TransformStamped) else list(transform):
                self._static[tr.child_frame_id] = tr
            if self.pub_tf_static is None:
                self.pub_tf_static = self._node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
            msg = TFMessage()
            msg.transforms = list(self._static.values())
            self.pub_tf_static.publish(msg)

    def destroy(self) -> None:
        """Release both publishers (a lifecycle cleanup may be followed by a new configure)."""
        for name in ("pub_tf", "pub_tf_static"):
            pub = getattr(self, name)
            if pub is not None:
                self._node.destroy_publisher(pub)
                setattr(self, name, None)


class TfListener:
    """``TransformListener`` with rclpy subscriptions: fills a :class:`TfBuffer` from /tf and /tf_static.

    Its own callback group, so a multi-threaded executor never queues TF behind the node's timers; the buffer is
    locked, so the inference thread may look up while callbacks insert.
    """

    def __init__(self, node: Node, buffer: TfBuffer, on_update: Callable[[], Any] | None = None) -> None:
        if TFMessage is None:  # pragma: no cover - callers check tf_backend() first
            raise RuntimeError("tf2_msgs is not installed")
        self._node, self.buffer, self._on_update = node, buffer, on_update
        self.received = 0
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS,
                                     callback_group=group),
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                     TF_STATIC_LISTENER_QOS, callback_group=group)]

    def _on_tf(self, msg: Any, static: bool) -> None:
        for tr in msg.transforms:
            t, q = msg_to_pose(tr.transform)
            if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.linalg.norm(q) > 0):
                continue  # tf2 rejects these too; a callback must never raise
            self.buffer.add(str(tr.header.frame_id), str(tr.child_frame_id), time_to_ns(tr.header.stamp), t, q,
                            static=static)
            self.received += 1
        if self._on_update is not None:
            self._on_update()  # TfOutput: a pose waiting for this odometry can go now

    def destroy(self) -> None:
        """Remove the subscriptions."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []


@dataclass
class PathBuffer:
    """The bounded ``~/path``: the last ``length`` PoseStamped; thread-safe (filled from the inference thread)."""

    length: int
    frame_id: str
    _poses: collections.deque = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, pose: PoseStamped) -> Path:
        """Add one pose and return the Path message to publish (a copy of the list: the deque keeps changing)."""
        with self._lock:
            self._poses.append(pose)
            while len(self._poses) > self.length:
                self._poses.popleft()
            msg = Path()
            msg.header.stamp = pose.header.stamp
            msg.header.frame_id = self.frame_id
            msg.poses = list(self._poses)
            return msg


class TfOutput:
    """TF broadcasting for ``tf_mode`` (``none`` | ``map_to_base`` | ``map_to_odom``) on the best back end here.

    tf2_ros when installed, else the tf2_msgs fallback (:class:`TfBroadcaster`, :class:`TfListener`), else off; one
    log line names the choice. ``broadcaster`` (``sendTransform``) and ``lookup`` (``(target, source, stamp_ns) ->
    (t, q)`` of ``T_target_source``) are injectable so the REP-105 logic is testable without DDS.
    """

    def __init__(self, node: Node, p: NodeParams, base_frame: str, broadcaster: Any = None,
                 lookup: Callable[[str, str, int], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.mode, self.p, self.base_frame = p.tf_mode, p, base_frame
        self._node = node
        self.broadcaster, self.lookup = broadcaster, lookup
        self.lookup_failures = 0
        self.sent = 0
        self._last_warn = -1e9
        #: map_to_odom poses whose stamp odometry has not reached yet: (stamp, t, q, deadline), in stamp order
        self._waiting: collections.deque[tuple[int, np.ndarray, np.ndarray, float]] = collections.deque()
        self._wait_lock = threading.Lock()
        self._tf_arrived = threading.Condition()  # notified by the tf2_msgs listener (lookup_waiting sleeps on it)
        self._odometry_stalled = False  # a lookup_waiting ran out: no more waiting until a lookup succeeds again
        self.enabled = self.mode != "none"
        self.backend = "injected" if broadcaster is not None else "none"
        self.buffer: TfBuffer | None = None
        self._listener: Any = None
        # the odom -> base lookup serves map_to_odom and the pose fusion (fusion.enabled), whatever tf_mode is
        listens = self.mode == "map_to_odom" or bool(getattr(p, "fusion_enabled", False))
        if not (self.enabled or listens) or broadcaster is not None:
            return
        self.backend = tf_backend()
        if self.backend == "tf2_ros":  # pragma: no cover - tf2_ros is not in the PyPI wheels
            self.broadcaster = tf2_ros.TransformBroadcaster(node) if self.enabled else None
            if listens:
                self._buffer = tf2_ros.Buffer()
                self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
                self.lookup = self._tf2_lookup
            node.get_logger().info(f"tf_mode '{self.mode}': TF via tf2_ros")
        elif self.backend == "tf2_msgs":
            self.broadcaster = TfBroadcaster(node) if self.enabled else None
            if listens:
                self.buffer = TfBuffer()
                self._listener = TfListener(node, self.buffer, on_update=self.retry)
                self.lookup = self.buffer.lookup
            node.get_logger().info(
                f"tf_mode '{self.mode}': tf2_ros is not installed; TF via rclpy tf2_msgs/TFMessage publishers on /tf"
                + (f" and a /tf + /tf_static listener ({self.p.odom_frame}->{self.base_frame} lookup)" if listens
                   else ""))
        else:
            node.get_logger().warning(
                f"tf_mode '{self.mode}' requested but neither tf2_ros nor tf2_msgs is installed (the PyPI ROS 2 "
                "wheels lack both; `make install` builds tf2_msgs where it can): TF is off; ~/pose, "
                "~/pose_with_covariance, ~/path and /diagnostics work as usual.")
            self.enabled = False

    def close(self) -> None:
        """Release what the back end created on the node (a lifecycle cleanup may be followed by a new configure);
        poses still waiting for odometry are counted as lookup failures."""
        self.enabled = False
        with self._wait_lock:
            self.lookup_failures += len(self._waiting)
            self._waiting.clear()
        listener, self._listener = self._listener, None
        if isinstance(listener, TfListener):
            listener.destroy()
        elif listener is not None:  # pragma: no cover - tf2_ros is not in the PyPI wheels
            listener.unregister()
        if isinstance(self.broadcaster, TfBroadcaster):
            self.broadcaster.destroy()
        elif self.backend == "tf2_ros":  # pragma: no cover - tf2_ros is not in the PyPI wheels
            pub = getattr(self.broadcaster, "pub_tf", None)
            if pub is not None:
                self._node.destroy_publisher(pub)
        self.broadcaster = None

    def _tf2_lookup(self, target: str, source: str, stamp_ns: int  # pragma: no cover - tf2_ros only
                    ) -> tuple[np.ndarray, np.ndarray]:
        stamp = rclpy.time.Time(nanoseconds=stamp_ns)
        tr = self._buffer.lookup_transform(target, source, stamp)
        return msg_to_pose(tr.transform)

    def publish(self, stamp_ns: int, t: np.ndarray, q: np.ndarray) -> bool:
        """Broadcast for one pose ``T_map_base``; True when sent now. ``map_to_odom``: a pose whose stamp odometry
        has not reached yet waits for it (:data:`ODOM_WAIT_S`, retried when TF arrives and with the next pose;
        then sent, or counted as a lookup failure); any other lookup error is counted at once."""
        if not self.enabled:
            return False
        if self.mode == "map_to_base":
            self.broadcaster.sendTransform(transform_stamped(t, q, stamp_ns, self.p.map_frame, self.base_frame))
            self.sent += 1
            return True
        with self._wait_lock:
            self._retry(time.monotonic())
            if self._waiting:  # behind an older pose still waiting: map→odom goes out in stamp order
                self._wait(stamp_ns, t, q)
                return False
            try:
                t_ob, q_ob = self.lookup(self.p.odom_frame, self.base_frame, stamp_ns)
            except Exception as e:  # noqa: BLE001 - any tf2 lookup error (extrapolation, no frame) is counted
                if _odometry_behind(e):
                    self._wait(stamp_ns, t, q)
                else:
                    self._lookup_failed(e)
                return False
            self._send(stamp_ns, t, q, t_ob, q_ob)
            return True

    @property
    def waiting(self) -> int:
        """map_to_odom poses waiting for odometry to reach their stamp (neither sent nor counted as failed yet)."""
        return len(self._waiting)

    def retry(self) -> None:
        """Send the waiting poses odometry now covers, count those past their wait, wake :meth:`lookup_waiting`
        (the TF listener calls this after each message)."""
        if self._waiting:
            with self._wait_lock:
                self._retry(time.monotonic())
        with self._tf_arrived:
            self._tf_arrived.notify_all()

    def lookup_waiting(self, target: str, source: str, stamp_ns: int,
                       timeout_s: float = ODOM_WAIT_S) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`lookup`, but a stamp the transform has not reached yet ("future") is waited for up to
        ``timeout_s`` (woken by each TF message on the tf2_msgs route, polled every 2 ms with tf2_ros); any other
        error, or the wait running out, raises the lookup's error. Why: the pose fusion needs odometry at the bundle
        stamp on the publish thread, and odometry often arrives a few ms after the frames (issue 25/20: a live
        replay passed 154 of 500 poses through unfused, each 0.5–2 ms short). Once a wait has run out (odometry
        stopped), later calls do not wait until a lookup succeeds again: a dead odometry source must not hold every
        pose ``timeout_s``."""
        deadline = time.monotonic() + (0.0 if self._odometry_stalled else timeout_s)
        while True:
            try:
                found = self.lookup(target, source, stamp_ns)
                self._odometry_stalled = False
                return found
            except Exception as e:
                left = deadline - time.monotonic()
                if left <= 0 or not _odometry_behind(e):
                    if left <= 0 and _odometry_behind(e):
                        self._odometry_stalled = True
                    raise
            with self._tf_arrived:
                self._tf_arrived.wait(min(left, 0.002))

    def _retry(self, now: float) -> None:
        while self._waiting:
            stamp_ns, t, q, deadline = self._waiting[0]
            try:
                t_ob, q_ob = self.lookup(self.p.odom_frame, self.base_frame, stamp_ns)
            except Exception as e:  # noqa: BLE001 - as in publish
                if now < deadline and _odometry_behind(e):
                    return  # still waiting; the newer ones wait behind it
                self._waiting.popleft()
                self._lookup_failed(e)
                continue
            self._waiting.popleft()
            self._send(stamp_ns, t, q, t_ob, q_ob)

    def _wait(self, stamp_ns: int, t: np.ndarray, q: np.ndarray) -> None:
        if len(self._waiting) >= MAX_WAITING:  # bounded: the oldest gives up (counted)
            old = self._waiting.popleft()
            self._lookup_failed(TfLookupError(f"odometry did not reach {old[0]} ns before {MAX_WAITING} newer "
                                              "poses waited behind it"))
        self._waiting.append((stamp_ns, np.array(t, np.float64), np.array(q, np.float64),
                              time.monotonic() + ODOM_WAIT_S))

    def _send(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, t_ob: np.ndarray, q_ob: np.ndarray) -> None:
        t_mo, q_mo = map_to_odom(t, q, t_ob, q_ob)
        future = stamp_ns + int(round(self.p.transform_tolerance * NS_PER_S))
        self.broadcaster.sendTransform(transform_stamped(t_mo, q_mo, future, self.p.map_frame, self.p.odom_frame))
        self.sent += 1

    def _lookup_failed(self, e: Exception) -> None:
        """Count a missing odom→base transform and warn, throttled by ``drop_warning_period``."""
        self.lookup_failures += 1
        now = time.monotonic()
        if now - self._last_warn > self.p.drop_warning_period:
            self._last_warn = now
            self._node.get_logger().warning(
                f"tf_mode map_to_odom: no {self.p.odom_frame}->{self.base_frame} transform at the bundle stamp "
                f"({type(e).__name__}: {e}); map->odom not published [{self.lookup_failures} so far]. Is "
                "odometry publishing TF?")
