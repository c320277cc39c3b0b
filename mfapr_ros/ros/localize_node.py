"""``localize_node``: the live ROS 2 shell around the package's synchronizer, decoder and localizer.

The node is deliberately thin: camera callbacks convert messages (``ros_convert``), decode (``images``), feed the one
``sync.ApproximateTimeSynchronizer`` and hand bundles to ``localizer.AsyncLocalizer`` — whose worker thread runs the
network, so no ROS callback ever waits for inference (latest bundle wins; stale ones are counted). Results come back
on the worker thread and are published from there (rclpy publishers are thread-safe): ``~/pose``,
``~/pose_with_covariance`` (reliable + transient_local, depth 1: a late subscriber such as robot_localization gets
the last pose), ``~/path`` (bounded) and TF, all stamped with the bundle stamp. ``/diagnostics`` reports camera
rates, bundle rate, drops by cause, latency percentiles and the device.

Bad parameters raise :class:`ConfigError` while the node is constructed; ``main`` prints it and exits 2.

Run: ``localize_node --ros-args --params-file config/localize.yaml -p checkpoint:=/path/model.json``.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from mfapr_ros.core.errors import ConfigError, DataError, MfaprError
from mfapr_ros.core.geometry import pose_compose, pose_inverse
from mfapr_ros.core.images import DropCounter
from mfapr_ros.core.images import warm_up as warm_up_decoders
from mfapr_ros.core.sync import DROP_KEYS, ApproximateTimeSynchronizer

from .convert import (
    decode_image_msg,
    msg_to_pose,
    rig_pose_to_pose_stamped,
    rig_pose_to_pose_with_covariance,
    time_to_ns,
    transform_stamped,
)
from .params import (
    PARAM_SPECS,
    TOPIC_PREFIX,
    TRANSPORT_PREFIX,
    CameraBinding,
    NodeParams,
    bind_cameras,
    validate_params,
)

try:  # the PyPI ROS 2 wheels do not ship tf2_ros; TF is then off (logged once) and everything else works
    import tf2_ros  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None

try:  # diagnostic_updater is optional; without it /diagnostics is published directly
    import diagnostic_updater  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installation
    diagnostic_updater = None

NODE_NAME = "mfapr_localizer"
NS_PER_S = 1_000_000_000
#: Parameters every rclpy node may receive that are not ours (never reported as unknown).
_FOREIGN_PARAMS = ("use_sim_time", "start_type_description_service")
_FOREIGN_PREFIXES = ("qos_overrides.",)

#: ``~/pose_with_covariance``: reliable + transient_local depth 1, what robot_localization / nav2 expect.
POSE_COV_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
POSE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


#: drop-counter source of results the model side drops (inference errors, non-finite poses, finished after deactivate);
#: reported as ``inference.<cause>``, camera drops as ``decode.<cause>`` (summed over cameras)
MODEL_SOURCE = "model"


def image_qos() -> QoSProfile:
    """A fresh copy of the sensor-data profile for one image subscription.

    A copy, because rclpy applies ``qos_overrides.<topic>.subscription.*`` by editing the profile object it is given:
    handing it the module-global ``qos_profile_sensor_data`` would leak one camera's override into every later
    subscription of the process.
    """
    q = qos_profile_sensor_data
    return QoSProfile(history=q.history, depth=q.depth, reliability=q.reliability, durability=q.durability)


# ---------------------------------------------------------------------------- statistics (ROS-free helpers)
class RateMeter:
    """Events per second over a sliding window of wall-clock time (monotonic; sim time does not matter here)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._t: collections.deque[float] = collections.deque()
        self.count = 0
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._t.append(now)
            self.count += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self, now: float | None = None) -> float:
        """Hz over the window: (n-1) / (last - first) — exact for a steady stream, 0 with fewer than 2 events."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._t) < 2 or self._t[-1] <= self._t[0]:
                return 0.0
            return (len(self._t) - 1) / (self._t[-1] - self._t[0])

    def last(self) -> float | None:
        with self._lock:
            return self._t[-1] if self._t else None


class LatencyStats:
    """The last ``n`` latencies (seconds) with percentiles, for /diagnostics and the benchmark."""

    def __init__(self, n: int = 1000) -> None:
        self._v: collections.deque[float] = collections.deque(maxlen=n)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._v.append(float(seconds))

    def percentile(self, p: float) -> float:
        with self._lock:
            return float(np.percentile(np.array(self._v), p)) if self._v else float("nan")

    def __len__(self) -> int:
        return len(self._v)


def map_to_odom(t_map_base: np.ndarray, q_map_base: np.ndarray, t_odom_base: np.ndarray, q_odom_base: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """REP-105 correction: ``T_map_odom = T_map_base · T_odom_base⁻¹`` (both at the bundle stamp)."""
    ti, qi = pose_inverse(np.asarray(t_odom_base, float), np.asarray(q_odom_base, float))
    return pose_compose(np.asarray(t_map_base, float), np.asarray(q_map_base, float), ti, qi)


@dataclass
class PathBuffer:
    """The bounded ``~/path``: the last ``length`` PoseStamped; thread-safe (filled from the inference thread)."""

    length: int
    frame_id: str
    _poses: collections.deque = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, pose: PoseStamped) -> Path:
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
    """TF broadcasting for ``tf_mode`` (``none`` | ``map_to_base`` | ``map_to_odom``), via tf2_ros when installed.

    ``broadcaster`` (``sendTransform``) and ``lookup`` (``(target, source, stamp_ns) -> (t, q)`` of
    ``T_target_source``) are injectable so the REP-105 logic is testable without tf2_ros.
    """

    def __init__(self, node: Node, p: NodeParams, base_frame: str, broadcaster: Any = None,
                 lookup: Callable[[str, str, int], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.mode, self.p, self.base_frame = p.tf_mode, p, base_frame
        self._node = node
        self.broadcaster, self.lookup = broadcaster, lookup
        self.lookup_failures = 0
        self.sent = 0
        self._last_warn = -1e9
        self.enabled = self.mode != "none"
        if self.enabled and broadcaster is None:
            if tf2_ros is None:
                node.get_logger().warning(
                    f"tf_mode '{self.mode}' requested but tf2_ros is not installed (the PyPI ROS 2 wheels lack it): "
                    "TF is off; ~/pose, ~/pose_with_covariance, ~/path and /diagnostics work as usual.")
                self.enabled = False
                return
            self.broadcaster = tf2_ros.TransformBroadcaster(node)
            if self.mode == "map_to_odom":
                self._buffer = tf2_ros.Buffer()
                self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
                self.lookup = self._tf2_lookup

    def close(self) -> None:
        """Release what tf2_ros created on the node (a lifecycle cleanup may be followed by a new configure)."""
        self.enabled = False
        listener = getattr(self, "_listener", None)
        if listener is not None:  # pragma: no cover - tf2_ros is not in the PyPI wheels
            listener.unregister()
            self._listener = None
        pub = getattr(self.broadcaster, "pub_tf", None)
        if pub is not None:  # pragma: no cover - tf2_ros is not in the PyPI wheels
            self._node.destroy_publisher(pub)
        self.broadcaster = None

    def _tf2_lookup(self, target: str, source: str, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        stamp = rclpy.time.Time(nanoseconds=stamp_ns)
        tr = self._buffer.lookup_transform(target, source, stamp)
        return msg_to_pose(tr.transform)

    def publish(self, stamp_ns: int, t: np.ndarray, q: np.ndarray) -> bool:
        """Broadcast for one pose ``T_map_base``; returns False when map→odom could not be computed (counted)."""
        if not self.enabled:
            return False
        if self.mode == "map_to_base":
            self.broadcaster.sendTransform(transform_stamped(t, q, stamp_ns, self.p.map_frame, self.base_frame))
            self.sent += 1
            return True
        try:
            t_ob, q_ob = self.lookup(self.p.odom_frame, self.base_frame, stamp_ns)
        except Exception as e:  # noqa: BLE001 - any tf2 lookup error (extrapolation, no frame) is a counted skip
            self.lookup_failures += 1
            now = time.monotonic()
            if now - self._last_warn > self.p.drop_warning_period:
                self._last_warn = now
                self._node.get_logger().warning(
                    f"tf_mode map_to_odom: no {self.p.odom_frame}->{self.base_frame} transform at the bundle stamp "
                    f"({type(e).__name__}: {e}); map->odom not published [{self.lookup_failures} so far]. Is "
                    "odometry publishing TF?")
            return False
        t_mo, q_mo = map_to_odom(t, q, t_ob, q_ob)
        future = stamp_ns + int(round(self.p.transform_tolerance * NS_PER_S))
        self.broadcaster.sendTransform(transform_stamped(t_mo, q_mo, future, self.p.map_frame, self.p.odom_frame))
        self.sent += 1
        return True


# ---------------------------------------------------------------------------- the node
def _descriptor(spec: Any, read_only: bool = True) -> ParameterDescriptor:
    types = {"str": ParameterType.PARAMETER_STRING, "float": ParameterType.PARAMETER_DOUBLE,
             "int": ParameterType.PARAMETER_INTEGER, "bool": ParameterType.PARAMETER_BOOL,
             "str_list": ParameterType.PARAMETER_STRING_ARRAY}
    # Doubles accept integers (`-p sync.slop:=1`): typing is dynamic, validate_params checks the value.
    return ParameterDescriptor(name=spec.name, type=types[spec.kind], description=spec.description,
                               additional_constraints=spec.constraints, read_only=read_only,
                               dynamic_typing=spec.kind == "float")


class LocalizeCore:
    """The localization on a ROS node, as the four lifecycle steps shared by :class:`LocalizeNode` (which runs
    configure + activate in its constructor) and :class:`mfapr_ros.ros.lifecycle_node.LocalizeLifecycleNode`:

    * configure: validate parameters, load the model, bind cameras, create publishers and the inference worker;
    * activate: subscribe to the cameras, start /diagnostics;
    * deactivate: unsubscribe, let the running inference finish, forget half-built bundles (counted);
    * cleanup: stop the worker, release the publishers (configure may run again, e.g. after the checkpoint file
      was replaced on disk).

    A mixin, not a base node, so the same code runs on ``rclpy.node.Node`` and ``rclpy.lifecycle.LifecycleNode``.
    """

    #: parameters the subclass declares itself (kept out of the unknown-parameter check)
    _OWN_PARAMS: tuple[str, ...] = ()
    #: the plain node's parameters are read-only (a change needs a restart); the lifecycle node accepts changes
    #: while unconfigured and rejects them otherwise (see lifecycle_node)
    _PARAMS_READ_ONLY = True

    def _init_core(self) -> None:
        self._async: Any = None
        self._closed = False
        self._active = False
        self._configured = False
        self._subs: list[Any] = []
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._updater: Any = None
        self.pub_pose: Any = None
        self.pub_pose_cov: Any = None
        self.pub_path: Any = None
        self.pub_retrieval: Any = None
        self.tf: TfOutput | None = None
        self.localizer: Any = None
        self.on_pose: list[Callable[[Any], None]] = []  # hooks (tests, benchmark): called after publishing

    # ------------------------------------------------------------------ parameters
    def _overrides(self) -> dict[str, Any]:
        ov = getattr(self, "_parameter_overrides", {}) or {}
        return {k: v.value for k, v in ov.items()}

    def _declare_static(self) -> None:
        """Declare every parameter of :data:`PARAM_SPECS` (idempotent); a value of the wrong type is a ConfigError."""
        for spec in PARAM_SPECS:
            if self.has_parameter(spec.name):
                continue
            try:
                if spec.kind == "str_list":
                    self.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                           _descriptor(spec, self._PARAMS_READ_ONLY))
                else:
                    self.declare_parameter(spec.name, spec.default, _descriptor(spec, self._PARAMS_READ_ONLY))
            except (ParameterException, TypeError, ValueError) as e:
                raise ConfigError(f"parameter '{spec.name}' is invalid: {e}. Expected a {spec.kind} "
                                  f"({spec.constraints or spec.description})") from None

    def _static_values(self) -> dict[str, Any]:
        values = {spec.name: self.get_parameter_or(spec.name).value for spec in PARAM_SPECS}  # unset list: None
        known = {s.name for s in PARAM_SPECS} | set(self._OWN_PARAMS)
        for k, v in self._overrides().items():  # typos and stray keys: validate_params rejects them by name
            if k not in known and k not in _FOREIGN_PARAMS and not k.startswith(_FOREIGN_PREFIXES):
                values[k] = v
        return values

    def _declare_per_camera(self, names: Sequence[str]) -> dict[str, Any]:
        """Declare ``topics.<cam>`` / ``transport.<cam>``; returns the ones set (plus unknown ones, to reject)."""
        given: dict[str, Any] = {}
        for cam in names:
            for prefix, what in ((TOPIC_PREFIX, "topic"), (TRANSPORT_PREFIX, "transport (raw|compressed)")):
                name = prefix + cam
                if self.has_parameter(name):  # a second configure of a lifecycle node
                    value = self.get_parameter(name).value
                else:
                    desc = ParameterDescriptor(name=name, type=ParameterType.PARAMETER_STRING,
                                               read_only=self._PARAMS_READ_ONLY,
                                               description=f"{what} of camera '{cam}'; '' = from rig/camera_topics")
                    try:
                        value = self.declare_parameter(name, "", desc).value
                    except (ParameterException, TypeError, ValueError) as e:
                        raise ConfigError(f"parameter '{name}' is invalid: {e}; expected a string") from None
                if value:
                    given[name] = value
        for k, v in self._overrides().items():
            if k.startswith((TOPIC_PREFIX, TRANSPORT_PREFIX)) and k[k.index(".") + 1:] not in names:
                given[k] = v
        return given

    # ------------------------------------------------------------------ publishers (the lifecycle node overrides)
    def _make_publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        return self.create_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_publisher(pub)

    # ------------------------------------------------------------------ configure / activate / deactivate / cleanup
    def _configure(self, localizer_factory: Callable[[NodeParams], Any] | None) -> None:
        """Validate, load, bind, create publishers and the worker. On failure nothing stays allocated."""
        from mfapr_ros.core.rig import load_rig

        try:
            self._declare_static()
            self.params = p = validate_params(self._static_values())  # before any heavy import: fail fast
            from mfapr_ros.core.localizer import AsyncLocalizer
            if p.inference_threads > 0:  # before loading: the warm-up already runs with the final thread count
                import torch

                torch.set_num_threads(p.inference_threads)
            self.localizer = (localizer_factory or _default_localizer)(p)
            model_rig = self.localizer.rig
            rig = load_rig(p.rig) if p.rig else None
            per_cam = self._declare_per_camera((rig or model_rig).camera_names)
            self.bindings: list[CameraBinding] = bind_cameras(p, model_rig, rig, per_cam)
            self.num_slots = model_rig.num_cameras
            self.base_frame = p.base_frame or (rig or model_rig).base_frame
            self.device = str(getattr(self.localizer, "device", p.device))
            n = len(self.bindings)
            # the one settings object (also eval-bag's and training's); thread-safe (its own lock)
            self.sync: ApproximateTimeSynchronizer = p.sync_settings().make(n, logger=self.get_logger().warning)
            self._decode_device = self.device if (p.decode_on_device and self.device.startswith("cuda")) else None

            # statistics
            self.cam_rates = [RateMeter() for _ in self.bindings]
            self.bundle_rate, self.pose_rate = RateMeter(), RateMeter()
            self.latency = LatencyStats()
            self.decode_time, self.sync_time, self.publish_time = LatencyStats(), LatencyStats(), LatencyStats()
            self.drops = DropCounter(self.get_logger().warning, p.drop_warning_period)
            self.poses_published = 0
            self.partial_bundles = 0

            # publishers
            self.pub_pose = self._make_publisher(PoseStamped, "~/pose", POSE_QOS)
            self.pub_pose_cov = self._make_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance",
                                                     POSE_COV_QOS)
            self.path = PathBuffer(p.path_length, p.map_frame) if p.path_length > 0 else None
            self.pub_path = self._make_publisher(Path, "~/path", POSE_QOS) if self.path else None
            # the image-retrieval prior (nearest training bundle, evaluation/retrieval.py) when the checkpoint has
            # its database: what evaluator_node scores beside the model, and a sanity check for a user in RViz
            self.pub_retrieval = (self._make_publisher(PoseStamped, "~/retrieval_pose", POSE_QOS)
                                  if getattr(self.localizer, "retrieval", None) is not None else None)
            self.tf = TfOutput(self, p, self.base_frame)

            # inference worker (started before the subscriptions so no bundle arrives without a consumer)
            self._closed = False
            self._async = AsyncLocalizer(self.localizer, self._on_pose, on_error=self._on_inference_error,
                                         name=f"{self.get_name()}-inference")
            warm_up_decoders()  # decoders imported before the first frame, not inside four callbacks at once
        except BaseException:
            self._cleanup()
            raise
        self._configured = True
        cams = ", ".join(f"{b.name}<-{b.topic} ({b.transport})" for b in self.bindings)
        self.get_logger().info(
            f"localizing with {n}/{self.num_slots} cameras [{cams}] on {self.device} ({p.precision}); "
            f"poses in '{p.map_frame}' for '{self.base_frame}', tf_mode={p.tf_mode}")

    def _activate(self) -> None:
        """Subscribe to the cameras and start /diagnostics."""
        p = self.params
        # subscriptions: sensor-data QoS (best effort, depth 5) unless the standard ROS 2 mechanism overrides it,
        # e.g. ``qos_overrides./cam0/image_raw.subscription.reliability: reliable`` and ``...depth: 20``.
        # One mutually exclusive group per camera, so different cameras decode in parallel while
        # each camera's messages reach the synchronizer in arrival order (a reentrant group would let two frames
        # of one camera overtake each other under load, which the synchronizer must treat as time going back).
        self._active = True
        for i, b in enumerate(self.bindings):
            mtype = CompressedImage if b.transport == "compressed" else Image
            cb = (lambda msg, i=i: self._on_image(i, msg))
            self._subs.append(self.create_subscription(
                mtype, b.topic, cb, image_qos(), callback_group=MutuallyExclusiveCallbackGroup(),
                qos_overriding_options=QoSOverridingOptions.with_default_policies()))
        if p.diagnostics_period > 0:
            if diagnostic_updater is not None:  # pragma: no cover - not in the PyPI wheels
                if self._updater is None:
                    self._updater = diagnostic_updater.Updater(self, period=p.diagnostics_period)
                    self._updater.setHardwareID(self.device)
                    self._updater.add("localization", self._fill_updater)
            else:
                self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
                self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics,
                                                     callback_group=MutuallyExclusiveCallbackGroup())

    def _deactivate(self, idle_timeout_s: float = 10.0) -> None:
        """Unsubscribe; the bundle being inferred is still published; queued messages are dropped (counted as
        ``sync.dropped_reset``) so a later activation does not pair old frames with new ones."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._configured:
            self.sync.reset()
            if self._async is not None and self._async.discard_pending():
                self.drops.drop(MODEL_SOURCE, "inactive", "a bundle waiting for inference was discarded at deactivate")
            if self._async is not None and not self._async.wait_idle(idle_timeout_s):
                self.get_logger().warning(f"deactivating although inference is still running after "
                                          f"{idle_timeout_s:.0f} s; its result will be dropped (counted)")
        self._active = False

    def _cleanup(self) -> None:
        """Stop the worker and release the publishers; safe on a partly configured node and to call twice."""
        if self._active:
            self._deactivate()
        self._shutdown_worker()
        for name in ("pub_pose", "pub_pose_cov", "pub_path", "pub_retrieval"):
            pub = getattr(self, name)
            if pub is not None:
                self._drop_publisher(pub)
                setattr(self, name, None)
        if self.tf is not None:
            self.tf.close()
            self.tf = None
        if self.localizer is not None:  # unconfigured = nothing loaded (GPU memory freed before a new checkpoint)
            on_cuda = str(getattr(self.localizer, "device", "")).startswith("cuda")
            self.localizer = None
            if on_cuda:  # pragma: no cover - no GPU here
                import torch

                torch.cuda.empty_cache()
        self._configured = False

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, idx: int, msg: Image | CompressedImage) -> None:
        """Camera callback: decode, check, synchronize, submit. Never raises (bad input = counted drop)."""
        b = self.bindings[idx]
        self.cam_rates[idx].tick()
        try:
            t0 = time.perf_counter()
            stamp_ns = time_to_ns(msg.header.stamp)
            image = decode_image_msg(msg, self._decode_device)
            if self.params.enforce_image_size:
                why = b.size_mismatch(int(image.shape[1]), int(image.shape[0]))
                if why is not None:
                    self.drops.drop(b.name, "wrong_size", why)
                    return
            t1 = time.perf_counter()
            bundles = self.sync.add(idx, stamp_ns, image)
            t2 = time.perf_counter()
            self.decode_time.add(t1 - t0)
            self.sync_time.add(t2 - t1)
            for bundle in bundles:
                self._submit(bundle)
        except DataError as e:  # images.ImageDecodeError carries the cause (unsupported_encoding/wrong_size/corrupt)
            self.drops.drop(b.name, getattr(e, "cause", "bad_data"), f"{e} (topic {b.topic})")
        except Exception as e:  # noqa: BLE001 - a callback must never raise; unexpected failures are counted drops
            self.drops.drop(b.name, "error", f"{type(e).__name__}: {e} (topic {b.topic})")

    def _submit(self, bundle: Any) -> None:
        images: list[Any] = [None] * self.num_slots
        for i, payload in enumerate(bundle.payloads):
            if payload is not None:
                images[self.bindings[i].slot] = payload
        self.bundle_rate.tick()
        if not bool(np.all(bundle.mask)) or len(self.bindings) < self.num_slots:
            self.partial_bundles += 1
        self._async.submit(images, int(bundle.stamp_ns))

    def _on_inference_error(self, exc: BaseException) -> None:
        """Inference failed for one bundle (worker thread): counted (diagnostics) and warned, throttled."""
        self.drops.drop(MODEL_SOURCE, "inference_error", f"{type(exc).__name__}: {exc}")

    def _on_pose(self, pose: Any) -> None:
        """Inference result (worker thread): publish everything with the bundle stamp."""
        if self._closed:
            return
        if not self._active:  # finished after a lifecycle deactivate: not published, but counted
            self.drops.drop(MODEL_SOURCE, "inactive", f"pose at {pose.stamp_ns} ns finished after deactivation")
            return
        t0 = time.perf_counter()
        if not (np.all(np.isfinite(pose.t)) and np.all(np.isfinite(pose.q))
                and np.all(np.isfinite(pose.covariance))):
            self.drops.drop(MODEL_SOURCE, "non_finite_pose",
                            f"the model returned a non-finite pose or covariance at {pose.stamp_ns} ns")
            return
        # every message is built before anything is published: all outputs carry a pose, or none does
        ps = rig_pose_to_pose_stamped(pose, self.params.map_frame)
        pwc = rig_pose_to_pose_with_covariance(pose, self.params.map_frame)
        ret = None
        if self.pub_retrieval is not None and "retrieval_t" in pose.extras:
            ret = rig_pose_to_pose_stamped(SimpleNamespace(stamp_ns=pose.stamp_ns, t=pose.extras["retrieval_t"],
                                                           q=pose.extras["retrieval_q"]), self.params.map_frame)
        self.pub_pose.publish(ps)
        self.pub_pose_cov.publish(pwc)
        if ret is not None and self.pub_retrieval is not None:
            self.pub_retrieval.publish(ret)
        if self.path is not None and self.pub_path is not None:
            self.pub_path.publish(self.path.append(ps))
        self.tf.publish(int(pose.stamp_ns), pose.t, pose.q)
        self.poses_published += 1
        self.pose_rate.tick()
        self.latency.add(float(pose.latency_s))
        self.publish_time.add(time.perf_counter() - t0)
        for hook in list(self.on_pose):
            hook(pose)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_summary(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as plain values (also used by tests and the benchmark)."""
        now = time.monotonic()
        sync_stats = self.sync.stats
        inf = self._async.stats if self._async is not None else {}
        drop_counts = self.drops.counts
        drops_by_kind: dict[str, int] = {}
        for (source, cause), v in sorted(drop_counts.items()):
            key = f"{'inference' if source == MODEL_SOURCE else 'decode'}.{cause}"
            drops_by_kind[key] = drops_by_kind.get(key, 0) + v
        cams = []
        for b, r in zip(self.bindings, self.cam_rates, strict=True):
            last = r.last()
            cams.append({"name": b.name, "topic": b.topic, "rate_hz": r.rate(now), "received": r.count,
                         "silent_s": (now - last) if last is not None else float("inf"),
                         "drops": {cause: v for (c, cause), v in drop_counts.items() if c == b.name}})
        return {
            "device": self.device, "precision": self.params.precision, "cameras": cams,
            "bundle_rate_hz": self.bundle_rate.rate(now), "pose_rate_hz": self.pose_rate.rate(now),
            "bundles": self.bundle_rate.count, "partial_bundles": self.partial_bundles,
            "poses": self.poses_published,
            "latency_p50_ms": 1e3 * self.latency.percentile(50), "latency_p99_ms": 1e3 * self.latency.percentile(99),
            "drops": {**drops_by_kind,
                      **{f"sync.{k}": int(sync_stats[k]) for k in DROP_KEYS},
                      "inference.stale": int(inf.get("stale_dropped", 0)),
                      "inference.errors": int(inf.get("errors", 0) + inf.get("callback_errors", 0))},
            "sync": sync_stats,
            "tf_mode": self.params.tf_mode if self.tf.enabled else "off",
            "tf_lookup_failures": self.tf.lookup_failures,
        }

    def _statuses(self) -> list[DiagnosticStatus]:
        s = self.diagnostics_summary()
        timeout = self.params.sync_stream_timeout
        out = []
        silent = [c["name"] for c in s["cameras"] if c["silent_s"] > timeout]
        main = DiagnosticStatus(name=f"{self.get_name()}: localization", hardware_id=s["device"])
        if s["poses"] == 0 or s["pose_rate_hz"] == 0.0 and len(silent) == len(s["cameras"]):
            main.level, main.message = DiagnosticStatus.WARN, "no poses yet" if s["poses"] == 0 else "no images"
        elif silent:
            main.level, main.message = DiagnosticStatus.WARN, f"silent cameras: {silent}"
        else:
            main.level, main.message = DiagnosticStatus.OK, f"{s['pose_rate_hz']:.1f} poses/s"
        kv = {"device": s["device"], "precision": s["precision"], "bundle_rate_hz": f"{s['bundle_rate_hz']:.2f}",
              "pose_rate_hz": f"{s['pose_rate_hz']:.2f}", "bundles": s["bundles"],
              "partial_bundles": s["partial_bundles"], "poses": s["poses"],
              "latency_p50_ms": f"{s['latency_p50_ms']:.1f}", "latency_p99_ms": f"{s['latency_p99_ms']:.1f}",
              "tf_mode": s["tf_mode"], "tf_lookup_failures": s["tf_lookup_failures"],
              **{f"drops.{k}": v for k, v in s["drops"].items()}}
        main.values = [KeyValue(key=k, value=str(v)) for k, v in kv.items()]
        out.append(main)
        for c in s["cameras"]:
            st = DiagnosticStatus(name=f"{self.get_name()}: camera {c['name']}", hardware_id=c["topic"])
            bad = c["silent_s"] > timeout
            st.level = DiagnosticStatus.WARN if bad or c["drops"] else DiagnosticStatus.OK
            st.message = (f"silent for {c['silent_s']:.1f} s" if bad else f"{c['rate_hz']:.1f} Hz")
            vals = {"topic": c["topic"], "rate_hz": f"{c['rate_hz']:.2f}", "received": c["received"],
                    **{f"drops.{k}": v for k, v in c["drops"].items()}}
            st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
            out.append(st)
        return out

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self._closed or not self.context.ok():
            return
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = self._statuses()
        try:
            self._diag_pub.publish(msg)
        except Exception:  # SIGINT shut the context down between the check and the publish
            if self.context.ok():
                raise

    def _fill_updater(self, stat: Any) -> Any:  # pragma: no cover - diagnostic_updater is not in the PyPI wheels
        main = self._statuses()[0]
        stat.summary(main.level, main.message)
        for kv in main.values:
            stat.add(kv.key, kv.value)
        return stat

    # ------------------------------------------------------------------ shutdown
    def _shutdown_worker(self) -> None:
        self._closed = True
        if self._async is not None:
            self._async.close()
            self._async = None


class LocalizeNode(LocalizeCore, Node):
    """The localization node (unmanaged): configured and active once constructed; ``destroy_node`` stops the worker.

    Construct inside an initialised rclpy context. ``localizer_factory(params) -> Localizer`` may be injected (tests,
    benchmarks); by default the checkpoint is loaded with :class:`mfapr_ros.core.localizer.Localizer`.
    """

    def __init__(self, node_name: str = NODE_NAME, *, localizer_factory: Callable[[NodeParams], Any] | None = None,
                 **node_kwargs: Any) -> None:
        Node.__init__(self, node_name, **node_kwargs)
        self._init_core()
        try:
            self._configure(localizer_factory)
            self._activate()
        except BaseException:
            self._cleanup()
            Node.destroy_node(self)
            raise

    def destroy_node(self) -> None:
        """Stop the inference thread (joined) before the ROS entities go away; safe to call twice."""
        self._shutdown_worker()
        super().destroy_node()


def make_executor(threads: int, context: Any = None) -> Any:
    """The executor the console scripts spin the node on (parameter ``executor_threads``).

    Single-threaded by default: the camera callbacks only decode and synchronize (inference has its own worker
    thread), and rclpy's Python MultiThreadedExecutor rebuilds its wait set and scans its futures at every wake-up
    while holding the GIL. With ``use_sim_time`` (a /clock subscription at 50 Hz) and 4 compressed cameras at 10 Hz
    that loop took a whole core and starved inference (demo replay: 29 of 500 poses, inference p50 1.4 s, against
    499 of 500 and 17 ms single-threaded, docs/node.md).
    """
    if threads <= 1:
        return SingleThreadedExecutor(context=context)
    return MultiThreadedExecutor(num_threads=threads, context=context)


def _default_localizer(p: NodeParams) -> Any:
    from mfapr_ros.core.localizer import Localizer

    return Localizer(p.checkpoint, device=p.device, precision=p.precision, strict=p.strict_device,
                     default_covariance=np.diag(p.default_covariance()))


#: The stop request of a console script (set by :func:`init_ros`'s SIGINT/SIGTERM handler).
STOP: dict[str, str | None] = {"signal": None}


def init_ros(args: list[str] | None = None) -> None:
    """``rclpy.init`` with this process's own SIGINT/SIGTERM handling: a flag that :func:`spin_until_shutdown` checks.

    Why not rclpy's handlers: they wake the executors that exist when the signal arrives. A Ctrl-C while the node
    is still loading its checkpoint (no executor yet) was lost, and the node then spun forever after start-up —
    the 1-in-9 shutdown hang, reproduced by 50 start/SIGINT cycles under load. A second signal raises
    KeyboardInterrupt, so a stuck start-up can still be broken.
    """
    import signal

    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    STOP["signal"] = None

    def on_signal(signum: int, frame: Any) -> None:
        if STOP["signal"] is not None:
            raise KeyboardInterrupt
        STOP["signal"] = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``localize_node``: returns 0 on a clean shutdown, 2 when it refuses to start."""
    init_ros(args)
    try:
        node = LocalizeNode()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - any construction failure (bad parameter,
        if STOP["signal"] is not None:  # checkpoint, qos override, CUDA OOM): status 2 — unless it is a stop request
            print(f"localize_node: {STOP['signal']} during start-up: stopped", file=sys.stderr)
            rclpy.try_shutdown()
            return 0
        print(f"localize_node: refusing to start: {describe_failure(e)}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    return spin_until_shutdown(node, node.params.executor_threads)


def describe_failure(e: BaseException) -> str:
    """One line for a start/transition failure: our errors carry their own message; anything else (CUDA out of
    memory, rclpy's RuntimeError for a bad qos override) is prefixed with its type, which the bare text lacks."""
    return str(e) if isinstance(e, MfaprError) else f"{type(e).__name__}: {e}"


def spin_until_shutdown(node: LocalizeCore, threads: int) -> int:
    """Spin the node of a console script until Ctrl-C / SIGTERM / rclpy shutdown, then print the final summary
    line (if the node is configured at that moment), destroy the node and shut rclpy down; returns status 0."""
    executor = make_executor(threads)
    executor.add_node(node)
    try:
        # spin_once with a timeout, not spin(): the stop flag of init_ros is seen within 0.1 s even when it was set
        # before spinning began (a signal during start-up); rclpy's own handlers (a caller that used rclpy.init)
        # still end the loop through the exceptions below or the context.
        while STOP["signal"] is None and node.context.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A callback racing the SIGINT shutdown (a timer publishing on the context rclpy's signal handler just shut
        # down: "publisher's context is invalid") ends a normal stop; found by 50 start/SIGINT cycles under load,
        # where it exited 1 with a traceback. With the context still up it is a real failure.
        if node.context.ok():
            raise
    finally:
        executor.shutdown()
        if node._configured:
            _log_final_summary(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _log_final_summary(node: LocalizeCore) -> None:
    """One line at shutdown with what came in and what went out, so a replay that produced nothing says why."""
    try:
        s = node.diagnostics_summary()
        received = {c["name"]: c["received"] for c in s["cameras"]}
        drops = {k: v for k, v in s["drops"].items() if v}
        print(f"localize_node: stopped: images received {received}, bundles {s['bundles']} "
              f"({s['partial_bundles']} partial), poses published {s['poses']}, inference p50 "
              f"{s['latency_p50_ms']:.0f} ms, drops {drops or 'none'}",
              file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 - a summary must never turn a clean shutdown into a crash
        print(f"localize_node: stopped (no summary: {e})", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
