"""``localize_node``: the live ROS 2 shell around the package's synchronizer, decoder and localizer.

The node is thin and does only work that can still be used (issue 25). The intake thread (``intake.py``, not the
executor) takes the cameras' *serialized* messages; :meth:`LocalizeCore._on_image` reads each header stamp from the CDR
bytes and feeds the one ``sync.ApproximateTimeSynchronizer`` with the undecoded bytes; each bundle goes to
``core.bundle_pipeline`` — a bounded wait queue (``bundle_queue_depth``; when it is full the oldest waiting bundle
is superseded, counted ``inference.stale`` and never decoded), the next bundle is decoded straight from its CDR
fields one bundle ahead of the model (``core.bundle_decode``: the one bad-frame rule, shared with eval-bag), then
inferred. The intake never waits for decoding or inference. Results are
published from the publish thread (rclpy publishers are thread-safe) in ONE place, :meth:`LocalizeCore._on_pose`:
``~/pose``, ``~/pose_with_covariance`` (reliable + transient_local, depth 1: a late subscriber such as
robot_localization gets the last pose), ``~/path`` (bounded) and TF, all stamped with the bundle stamp, then the
``on_pose`` hooks. This module holds the lifecycle steps (:class:`LocalizeCore`), the plain node and ``main``; TF and
the path are in ``tf_output``, ``/diagnostics`` (camera rates, bundle rate, drops by cause, time per stage, device) in
``diagnostics``, the console-script process (signals, executor, shutdown) in ``runtime``, the statistics in
``core.stats``.

Bad parameters raise :class:`ConfigError` while the node is constructed; ``main`` prints it and exits 2.

Run: ``localize_node --ros-args --params-file config/localize.yaml -p checkpoint:=/path/model.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from mfapr_ros.bag.bundles import CameraBinding
from mfapr_ros.core.bundle_decode import BAD_FRAME_BUNDLE, ParallelDecodePolicy, decode_bundle
from mfapr_ros.core.bundle_pipeline import BundlePipeline, StageTimes
from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.images import decode_compressed, decode_raw
from mfapr_ros.core.images import warm_up as warm_up_decoders
from mfapr_ros.core.stats import LatencyStats, RateMeter
from mfapr_ros.core.sync import ApproximateTimeSynchronizer
from mfapr_ros.inference.pose_source import PoseSource
from mfapr_ros.inference.uncertainty import UncertaintyStats, judge, with_covariance

from .cdr import cdr_compressed_fields, cdr_header_stamp_ns, cdr_image_fields
from .convert import rig_pose_to_pose_stamped, rig_pose_to_pose_with_covariance
from .declare import declare_per_camera, declare_static, static_values
from .diagnostics import BUNDLE_SOURCE, MODEL_SOURCE, STAGES, DiagnosticsOutput, DiagnosticsView, diagnostics_summary
from .fusion_output import FusionOutput
from .intake import CameraIntake, intake_subscription
from .params import NodeParams, bind_cameras, validate_params
from .qos import PARALLEL_DECODE_MIN_S, PATH_PERIOD_S, POSE_COV_QOS, POSE_QOS, image_qos
from .relocalize import RelocalizationOutput
from .runtime import STOP, describe_failure, init_ros, spin_until_shutdown
from .tf_output import PathBuffer, TfOutput

NODE_NAME = "mfapr_localizer"

# ---------------------------------------------------------------------------- the node
class LocalizeCore:
    """The localization on a ROS node, as the four lifecycle steps shared by :class:`LocalizeNode` (which runs
    configure + activate in its constructor) and :class:`mfapr_ros.ros.lifecycle_node.LocalizeLifecycleNode`:

    * configure: validate parameters, load the model, bind cameras, create publishers and the inference worker;
    * activate: subscribe to the cameras, start /diagnostics;
    * deactivate: unsubscribe, let the running inference finish, forget half-built bundles (counted);
    * cleanup: stop the worker, release the publishers (configure may run again, e.g. after the checkpoint file
      was replaced on disk).

    A mixin, not a base node, so the same code runs on ``rclpy.node.Node`` and ``rclpy.lifecycle.LifecycleNode``.
    The steps create and release the same state; outputs, diagnostics (a :class:`DiagnosticsView`) are delegated.
    """

    #: parameters the subclass declares itself (kept out of the unknown-parameter check)
    _OWN_PARAMS: tuple[str, ...] = ()
    #: the plain node's parameters are read-only (a change needs a restart); the lifecycle node accepts changes
    #: while unconfigured and rejects them otherwise (see lifecycle_node)
    _PARAMS_READ_ONLY = True

    def _init_core(self) -> None:
        self._async: BundlePipeline | None = None
        self._closed = False
        self._active = False
        self._configured = False
        self._subs: list[Any] = []
        self._intake: CameraIntake | None = None
        self.diagnostics = DiagnosticsOutput(self, self.diagnostics_view, lambda: self._closed)  # type: ignore
        self.pub_pose: Publisher | None = None  # (a LifecyclePublisher on the lifecycle node)
        self.pub_pose_cov: Publisher | None = None
        self.pub_path: Publisher | None = None
        self.pub_retrieval: Publisher | None = None
        self.pub_retrieval_shift: Publisher | None = None
        self.tf: TfOutput | None = None
        self.fusion: FusionOutput | None = None
        self.relocalization: RelocalizationOutput | None = None
        self.localizer: PoseSource | None = None  # a Localizer, or a fake from localizer_factory
        self._preprocess: Callable[..., Any] | None = None  # the localizer's first part (decode thread), if split
        self._finish: Callable[[Any], Any] | None = None  # its last part (publish thread), if split
        self.on_pose: list[Callable[[Any], None]] = []  # hooks (tests, benchmark): called after publishing

    # ------------------------------------------------------------------ parameters (ros/declare.py)
    def _declare_static(self) -> None:
        declare_static(self, self._PARAMS_READ_ONLY)

    def _static_values(self) -> dict[str, Any]:
        return static_values(self, self._OWN_PARAMS)

    def _declare_per_camera(self, names: Sequence[str]) -> dict[str, Any]:
        return declare_per_camera(self, names, self._PARAMS_READ_ONLY)

    # ------------------------------------------------------------------ publishers (the lifecycle node overrides)
    def _make_publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        return self.create_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_publisher(pub)

    # ------------------------------------------------------------------ configure / activate / deactivate / cleanup
    def _configure(self, localizer_factory: Callable[[NodeParams], PoseSource] | None) -> None:
        """Validate, load, bind, create publishers and the worker. On failure nothing stays allocated."""
        from mfapr_ros.core.rig import load_rig

        try:
            self._declare_static()
            self.params = p = validate_params(self._static_values())  # before any heavy import: fail fast
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
            self.sync: ApproximateTimeSynchronizer = p.sync.make(n, logger=self.get_logger().warning)
            self._decode_device = self.device if (p.decode_on_device and self.device.startswith("cuda")) else None
            self._msg_types = [CompressedImage if b.transport == "compressed" else Image for b in self.bindings]
            # executor_threads > 1: a chosen bundle's frames may be decoded concurrently (the decoders release the
            # GIL), when measured to be faster than in turn (large images); the pool threads start on first use
            self._decode_pool = (ThreadPoolExecutor(min(p.executor_threads, n), f"{self.get_name()}-decode")
                                 if p.executor_threads > 1 and n > 1 else None)
            self.decode_policy = ParallelDecodePolicy(self._decode_pool is not None, PARALLEL_DECODE_MIN_S)

            self._reset_stats(p)
            self._make_outputs(p)

            # inference worker (started before the subscriptions so no bundle arrives without a consumer)
            self._closed = False
            # a Localizer is split: the decode thread also preprocesses (overlapping the previous forward pass), the
            # inference thread runs only the model, the publish thread makes the pose of its outputs (numpy, the
            # retrieval lookup: off the bottleneck thread); a stand-in with just infer() is not
            loc = self.localizer
            split = all(callable(getattr(loc, f, None)) for f in ("preprocess", "run_model", "finish"))
            self._preprocess = loc.preprocess if split else None
            self._finish = (lambda r: loc.finish(r[0], r[1])) if split else None
            infer = (lambda xm, stamp: (loc.run_model(xm[0], xm[1]), stamp)) if split else loc.infer
            self._async = BundlePipeline(self._prepare, infer, self._on_result,
                                         on_error=self._on_inference_error, name=self.get_name(),
                                         depth=p.bundle_queue_depth)
            warm_up_decoders()  # decoders imported before the first frame, not inside four callbacks at once
        except BaseException:
            self._cleanup()
            raise
        self._configured = True
        cams = ", ".join(f"{b.name}<-{b.topic} ({b.transport})" for b in self.bindings)
        self.get_logger().info(
            f"localizing with {n}/{self.num_slots} cameras [{cams}] on {self.device} ({p.precision}, "
            f"{getattr(self.localizer, 'inference_path', 'eager')}); "
            f"poses in '{p.map_frame}' for '{self.base_frame}', tf_mode={p.tf_mode}")

    def _reset_stats(self, p: NodeParams) -> None:
        """Fresh counters for this configuration (what /diagnostics and the shutdown line report)."""
        self.cam_rates = [RateMeter() for _ in self.bindings]
        self.bundle_rate, self.pose_rate = RateMeter(), RateMeter()
        self.latency = LatencyStats()  # submit → result inside the node (wait + decode + inference)
        #: time per stage (seconds): decode/wait/inference per bundle, sync per message, publish per pose
        self.stage_time = {k: LatencyStats() for k in STAGES}
        self.drops = DropCounter(self.get_logger().warning, p.drop_warning_period)
        self.poses_published = 0
        self._path_published = -float("inf")  # monotonic time ~/path was last published (PATH_PERIOD_S)
        self.partial_bundles = 0
        # the uncertainty gate (off with the default parameters) and its verdict counts (diagnostics)
        self.uncertainty_gate = p.uncertainty
        self.uncertain = UncertaintyStats(self.get_logger().warning, p.drop_warning_period)

    def _make_outputs(self, p: NodeParams) -> None:
        """The pose publishers, the bounded path and TF (lifecycle publishers on the lifecycle node)."""
        self.pub_pose = self._make_publisher(PoseStamped, "~/pose", POSE_QOS)
        self.pub_pose_cov = self._make_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", POSE_COV_QOS)
        self.path = PathBuffer(p.path_length, p.map_frame) if p.path_length > 0 else None
        self.pub_path = self._make_publisher(Path, "~/path", POSE_QOS) if self.path is not None else None
        # the image-retrieval prior (nearest training bundle, inference/baselines.py) when the checkpoint has
        # its database: what evaluator_node scores beside the model, and a sanity check for a user in RViz
        self.pub_retrieval = (self._make_publisher(PoseStamped, "~/retrieval_pose", POSE_QOS)
                              if getattr(self.localizer, "retrieval", None) is not None else None)
        # ring rigs: the shift-aware lookup too (the query's cyclic slot shifts; the reversed drive's baseline)
        self.pub_retrieval_shift = (self._make_publisher(PoseStamped, "~/retrieval_shift_pose", POSE_QOS)
                                    if len(getattr(self.localizer, "retrieval_shifts", ()) or ()) > 1 else None)
        self.tf = TfOutput(self, p, self.base_frame)
        self.fusion = FusionOutput(self, p, self.base_frame, self.tf, self._make_publisher)
        self.relocalization = RelocalizationOutput(self, p, self._make_publisher)

    def _activate(self) -> None:
        """Subscribe to the cameras and start /diagnostics."""
        p = self.params
        # subscriptions: sensor-data QoS (best effort, depth 5) unless the standard ROS 2 mechanism overrides it,
        # e.g. ``qos_overrides./cam0/image_raw.subscription.reliability: reliable`` and ``...depth: 20``.
        # Raw subscriptions served by the node's own intake thread (ros/intake.py), not by the executor: the
        # serialized bytes reach _on_image in arrival order per camera at a few µs per message, whatever
        # executor_threads is; only a bundle chosen for inference is ever deserialized.
        self._active = True
        for i, b in enumerate(self.bindings):
            self._subs.append(intake_subscription(
                self, self._msg_types[i], b.topic, image_qos(),
                qos_overriding_options=QoSOverridingOptions.with_default_policies()))
        self._intake = CameraIntake(self.context, self._subs, self._on_image, self.get_name())
        self._intake.start()
        self.diagnostics.start(p.diagnostics_period)

    def _deactivate(self, idle_timeout_s: float = 10.0) -> None:
        """Unsubscribe; the bundle being inferred is still published; queued messages are dropped (counted as
        ``sync.dropped_reset``) so a later activation does not pair old frames with new ones."""
        self._stop_intake()  # before its subscriptions go away
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self.diagnostics.stop()
        if self._configured:
            self.sync.reset()
            discarded = self._async.discard_pending() if self._async is not None else 0
            if discarded:
                self.drops.drop(MODEL_SOURCE, "inactive", f"{discarded} bundle(s) waiting for inference discarded at "
                                "deactivate", n=discarded)
            if self._async is not None and not self._async.wait_idle(idle_timeout_s):
                self.get_logger().warning(f"deactivating although inference is still running after "
                                          f"{idle_timeout_s:.0f} s; its result will be dropped (counted)")
        self._active = False

    def _cleanup(self) -> None:
        """Stop the worker and release the publishers; safe on a partly configured node and to call twice."""
        if self._active:
            self._deactivate()
        self._shutdown_worker()
        pool, self._decode_pool = getattr(self, "_decode_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        for name in ("pub_pose", "pub_pose_cov", "pub_path", "pub_retrieval", "pub_retrieval_shift"):
            pub = getattr(self, name)
            if pub is not None:
                self._drop_publisher(pub)
                setattr(self, name, None)
        if self.fusion is not None:
            self.fusion.close(self._drop_publisher)
            self.fusion = None
        if self.tf is not None:
            self.tf.close()
            self.tf = None
        if self.relocalization is not None:
            self.relocalization.close(self._drop_publisher)
            self.relocalization = None
        self._preprocess = self._finish = None
        if self.localizer is not None:  # unconfigured = nothing loaded (GPU memory freed before a new checkpoint)
            on_cuda = str(getattr(self.localizer, "device", "")).startswith("cuda")
            self.localizer = None
            if on_cuda:  # pragma: no cover - no GPU here
                import torch

                torch.cuda.empty_cache()
        self._configured = False

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, idx: int, data: bytes) -> None:
        """One camera message (intake thread): read the stamp, synchronize the undecoded message, submit bundles.
        Never raises (bad input = counted drop); decoding and the size check happen once a bundle is chosen
        (:meth:`_prepare`)."""
        b = self.bindings[idx]
        self.cam_rates[idx].tick()
        try:
            t0 = time.perf_counter()
            bundles = self.sync.add(idx, cdr_header_stamp_ns(data), data)
            self.stage_time["sync"].add(time.perf_counter() - t0)
            for bundle in bundles:
                self._submit(bundle)
        except DataError as e:
            self.drops.drop(b.name, getattr(e, "cause", "corrupt"), f"{e} (topic {b.topic})")
        except Exception as e:  # noqa: BLE001 - a callback must never raise; unexpected failures are counted drops
            self.drops.drop(b.name, "error", f"{type(e).__name__}: {e} (topic {b.topic})")

    def _submit(self, bundle: Any) -> None:
        """A synchronized bundle (undecoded) to the pipeline's bounded wait queue (``bundle_queue_depth``; when
        it is full the oldest waiting bundle is superseded)."""
        self.bundle_rate.tick()
        self._async.submit(bundle)

    def _decode_frame(self, idx: int, data: bytes) -> Any:
        """Decode one frame of a chosen bundle straight from its serialized bytes (no message object built)."""
        if self._msg_types[idx] is CompressedImage:
            fmt, payload = cdr_compressed_fields(data)
            return decode_compressed(fmt, payload, self._decode_device)
        return decode_raw(**cdr_image_fields(data))

    def _size_mismatch(self, idx: int, width: int, height: int) -> str | None:
        return self.bindings[idx].size_mismatch(width, height)

    def _prepare(self, bundle: Any) -> tuple[list[Any], int] | None:
        """The bundle chosen for inference (prepare thread): decode it and apply the one bad-frame rule
        (:func:`mfapr_ros.core.bundle_decode.decode_bundle`, also eval-bag's): each bad frame is counted by camera
        and cause; the bundle is inferred with those cameras masked when ``sync.min_cameras`` allows, else
        dropped (``bundle.bad_frame_bundle``). Returns (images in model slot order — preprocessed to the model's
        ``(x, mask)`` when the localizer is split — , stamp) or None."""
        parallel = self.decode_policy.use_pool()
        t0 = time.perf_counter()
        v = decode_bundle(bundle.payloads, self._decode_frame, self.sync.min_streams,
                          self._size_mismatch if self.params.enforce_image_size else None,
                          self._decode_pool if parallel else None)
        self.decode_policy.record(parallel, time.perf_counter() - t0, sum(p is not None for p in bundle.payloads))
        for d in v.frame_drops:
            b = self.bindings[d.stream]
            self.drops.drop(b.name, d.cause, f"{d.detail} (topic {b.topic}, bundle {bundle.stamp_ns} ns)")
        if not v.keep:
            bad = ", ".join(self.bindings[d.stream].name for d in v.frame_drops)
            self.drops.drop(BUNDLE_SOURCE, BAD_FRAME_BUNDLE, f"bundle at {bundle.stamp_ns} ns: {v.num_present} good "
                            f"frame(s) left after bad frame(s) of {bad}, sync.min_cameras needs "
                            f"{self.sync.min_streams}")
            return None
        images: list[Any] = [None] * self.num_slots
        for i, image in enumerate(v.images):
            if image is not None:
                images[self.bindings[i].slot] = image
        if v.num_present < self.num_slots:
            self.partial_bundles += 1
        if self._preprocess is not None:
            return self._preprocess(images), int(bundle.stamp_ns)
        return images, int(bundle.stamp_ns)

    def _on_inference_error(self, exc: BaseException) -> None:
        """Inference failed for one bundle (worker thread): counted (diagnostics) and warned, throttled."""
        self.drops.drop(MODEL_SOURCE, "inference_error", f"{type(exc).__name__}: {exc}")

    def _on_result(self, result: Any, times: StageTimes) -> None:
        """Inference result (publish thread): the pose from the model's outputs (split Localizer), where the time
        went (``inference`` = model + pose), then publish (:meth:`_on_pose`)."""
        t0 = time.perf_counter()
        pose = self._finish(result) if self._finish is not None else result
        finish_s = time.perf_counter() - t0
        for stage, seconds in (("wait", times.wait_s), ("decode", times.decode_s),
                               ("inference", times.inference_s + finish_s)):
            self.stage_time[stage].add(seconds)
        total = times.total_s + finish_s
        self.latency.add(total)
        self._on_pose(dataclasses.replace(pose, latency_s=total) if dataclasses.is_dataclass(pose) else pose)

    def _on_pose(self, pose: Any) -> None:
        """THE place a pose is published (publish thread): every output with the bundle stamp, then the
        ``on_pose`` hooks (tests, the benchmark, later consumers of a published pose)."""
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
        # the model unsure (uncertainty.* parameters): skip = nothing published for this pose, inflate = published
        # with a larger covariance; both counted by reason (a skip is also logged, throttled)
        verdict = judge(pose, self.uncertainty_gate)
        self.uncertain.record(verdict, int(pose.stamp_ns))
        if self.relocalization is not None:  # /initialpose seeds and the lost state (ros/relocalize.py)
            self.relocalization.observe(pose, verdict)
        if not verdict.keep:
            return
        if verdict.reasons:
            pose = with_covariance(pose, verdict.covariance)
        # every message is built before anything is published: all outputs carry a pose, or none does
        ps = rig_pose_to_pose_stamped(pose, self.params.map_frame)
        pwc = rig_pose_to_pose_with_covariance(pose, self.params.map_frame)
        self.pub_pose.publish(ps)
        self.pub_pose_cov.publish(pwc)
        # ~/retrieval_pose, ~/retrieval_shift_pose and ~/path are volatile: nothing is built while nobody listens
        for pub, key in ((self.pub_retrieval, "retrieval"), (self.pub_retrieval_shift, "retrieval_shift")):
            if pub is not None and f"{key}_t" in pose.extras and pub.get_subscription_count() > 0:
                prior = SimpleNamespace(stamp_ns=pose.stamp_ns, t=pose.extras[f"{key}_t"], q=pose.extras[f"{key}_q"])
                pub.publish(rig_pose_to_pose_stamped(prior, self.params.map_frame))
        if self.path is not None and self.pub_path is not None:
            msg = self.path.append(ps)
            now = time.monotonic()
            if now - self._path_published >= PATH_PERIOD_S and self.pub_path.get_subscription_count() > 0:
                self._path_published = now
                self.pub_path.publish(msg)
        t_tf, q_tf = self.fusion.update(pose) if self.fusion is not None else (pose.t, pose.q)  # ~/fused_pose
        self.tf.publish(int(pose.stamp_ns), t_tf, q_tf)
        self.poses_published += 1
        self.pose_rate.tick()
        self.stage_time["publish"].add(time.perf_counter() - t0)
        for hook in list(self.on_pose):
            hook(pose)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_view(self) -> DiagnosticsView:
        """What /diagnostics reports of this node now (``diagnostics.py`` reads nothing else of it)."""
        p, tf = self.params, self.tf
        return DiagnosticsView(
            node_name=self.get_name(), device=self.device, precision=p.precision, cameras=self.bindings,
            cam_rates=self.cam_rates, bundle_rate=self.bundle_rate, pose_rate=self.pose_rate,
            poses=self.poses_published, partial_bundles=self.partial_bundles, latency=self.latency,
            stage_time=self.stage_time, drops=self.drops, sync_stats=self.sync.stats,
            inference_stats=self._async.stats if self._async is not None else {},  # stale_dropped: superseded
            tf_mode=p.tf_mode if tf is not None and tf.enabled else "off",
            tf_lookup_failures=tf.lookup_failures if tf is not None else 0, uncertain=self.uncertain,
            stream_timeout_s=p.sync.stream_timeout, relocalization=self.relocalization)

    def diagnostics_summary(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as plain values (tests, the benchmark; see ``diagnostics.py``)."""
        return diagnostics_summary(self.diagnostics_view())

    @property
    def closed(self) -> bool:
        """True once the worker is stopped: nothing is published any more."""
        return self._closed

    # ------------------------------------------------------------------ shutdown
    def _stop_intake(self) -> None:
        """Stop the camera intake thread (before its subscriptions are destroyed; safe to call twice)."""
        if self._intake is not None:
            self._intake.stop()
            self._intake = None

    def _shutdown_worker(self) -> None:
        """Stop the intake and the pipeline threads (joined): nothing is taken or published afterwards."""
        self._closed = True
        self._stop_intake()
        if self._async is not None:
            self._async.close()
            self._async = None


class LocalizeNode(LocalizeCore, Node):
    """The localization node (unmanaged): configured and active once constructed; ``destroy_node`` stops the worker.

    Construct inside an initialised rclpy context. ``localizer_factory(params) -> Localizer`` may be injected (tests,
    benchmarks); by default the checkpoint is loaded with :class:`mfapr_ros.inference.localizer.Localizer`.
    """

    def __init__(self, node_name: str = NODE_NAME, *,
                 localizer_factory: Callable[[NodeParams], PoseSource] | None = None, **node_kwargs: Any) -> None:
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


def _default_localizer(p: NodeParams) -> PoseSource:
    from mfapr_ros.inference.localizer import Localizer

    return Localizer(p.checkpoint, device=p.device, precision=p.precision, strict=p.strict_device,
                     default_covariance=np.diag(p.default_covariance()), torchscript=p.torchscript)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
