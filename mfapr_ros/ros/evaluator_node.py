"""`evaluator_node`: live accuracy of the localizer against ground truth, over DDS.

Subscribes to the localizer's pose (``pose_topic``, PoseStamped / PoseWithCovarianceStamped / Odometry) and to
ground truth (``gt_topic`` of the same kinds, or TF ``gt_tf: "map:base_link"`` over /tf + /tf_static), pairs them by
stamp (GT interpolated; :class:`mfapr_ros.evaluation.online.OnlineEvaluator`), publishes the running count / mean /
median errors on ``/diagnostics`` and writes the shared report (:func:`mfapr_ros.evaluation.write_report`) into
``out_dir`` when it stops: on SIGINT/SIGTERM, after ``duration`` seconds (wall clock), or once ``expected_count``
poses are scored. It exits 0 after writing the report, 1 when the report is empty (no pose scored).

Topic types: ``*_type: auto`` waits (``discovery_timeout``) until the topic appears in the ROS graph and uses its
type, so the same node works for PoseStamped GT and Odometry GT without configuration.

Parameters (all declared; ``ros2 param describe`` shows them): see :data:`PARAM_SPECS`. Command-line shortcuts before
``--ros-args``: ``--out DIR``, ``--duration S``, ``--expected-count N``, ``--gt-topic T``, ``--gt-tf P:C``,
``--pose-topic T``, ``--checkpoint CK`` (its recorded training mean pose is the report's baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mfapr_ros.bag.reader import Trajectory, tf_trajectory
from mfapr_ros.core.errors import ConfigError, MfaprError
from mfapr_ros.evaluation.online import OnlineEvaluator
from mfapr_ros.evaluation.report import format_summary
from mfapr_ros.inference.baselines import checkpoint_mean_pose

from .convert import msg_to_pose, time_to_ns
from .params import ParamSpec

NODE_NAME = "evaluator_node"
POSE_TYPES: dict[str, Any] = {
    "geometry_msgs/msg/PoseStamped": PoseStamped,
    "geometry_msgs/msg/PoseWithCovarianceStamped": PoseWithCovarianceStamped,
    "nav_msgs/msg/Odometry": Odometry,
}
SHORT_TYPES = {"pose": "geometry_msgs/msg/PoseStamped", "pose_cov": "geometry_msgs/msg/PoseWithCovarianceStamped",
               "odom": "nav_msgs/msg/Odometry"}

#: Every parameter of the node (the ParamSpec table style of :mod:`.params`: one place for name, default, type,
#: description and the allowed values, which ``ros2 param describe`` shows).
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("pose_topic", "/mfapr_localizer/pose", "str",
              "Estimated rig pose (localize_node's ~/pose; node name mfapr_localizer)."),
    ParamSpec("pose_type", "auto", "str", "auto | pose | pose_cov | odom (auto: from the ROS graph).",
              "auto|pose|pose_cov|odom"),
    ParamSpec("gt_topic", "/ground_truth/pose", "str", "Ground-truth topic (ignored when gt_tf is set)."),
    ParamSpec("gt_type", "auto", "str", "auto | pose | pose_cov | odom.", "auto|pose|pose_cov|odom"),
    ParamSpec("gt_tf", "", "str", "Ground truth from TF instead, as PARENT:CHILD (e.g. map:base_link); needs "
              "tf2_msgs.", "'' or PARENT:CHILD"),
    ParamSpec("retrieval_topic", "/mfapr_localizer/retrieval_pose", "str", "PoseStamped of the image-retrieval "
              "baseline (the node's ~/retrieval_pose, published when the checkpoint has a retrieval database); "
              "scored beside the model in the report; '' = off."),
    ParamSpec("retrieval_shift_topic", "/mfapr_localizer/retrieval_shift_pose", "str", "PoseStamped of the "
              "shift-aware retrieval baseline (the node's ~/retrieval_shift_pose, ring rigs); scored beside plain "
              "retrieval; '' = off."),
    ParamSpec("fused_topic", "/mfapr_localizer/fused_pose", "str", "PoseWithCovarianceStamped of the pose fused "
              "with odometry (the node's ~/fused_pose, with fusion.enabled); scored as the report's fused row; "
              "'' = off."),
    ParamSpec("out_dir", "out/evaluator", "str", "Report folder (report.json, report.md, PNGs)."),
    ParamSpec("duration", 0.0, "float", "Stop after this many seconds (wall clock); 0 = until interrupted.", ">= 0"),
    ParamSpec("expected_count", 0, "int", "Stop once this many poses are scored; 0 = no limit.", ">= 0"),
    ParamSpec("max_gap", 0.5, "float", "Largest GT sample gap (s) to interpolate across.", ">= 0"),
    ParamSpec("diagnostics_period", 1.0, "float", "Seconds between /diagnostics messages; 0 disables them.", ">= 0"),
    ParamSpec("discovery_timeout", 30.0, "float", "Seconds to wait for an 'auto'-typed topic to appear in the graph.",
              ">= 0"),
    ParamSpec("checkpoint", "", "str", "Optional checkpoint JSON: its recorded training mean pose is the report's "
              "baseline."),
    ParamSpec("baseline", "auto", "str", "auto (checkpoint, else mean of GT) | checkpoint | gt | none.",
              "auto|checkpoint|gt|none"),
    ParamSpec("plots", True, "bool", "Write the PNG figures."),
)
BASELINES = ("auto", "checkpoint", "gt", "none")


@dataclass(frozen=True)
class EvaluatorParams:
    """The validated parameters (ROS-free, frozen: read once at start, like :class:`.params.NodeParams`)."""

    pose_topic: str
    pose_type: str
    gt_topic: str
    gt_type: str
    gt_tf: str
    retrieval_topic: str
    retrieval_shift_topic: str
    fused_topic: str
    out_dir: str
    duration: float
    expected_count: int
    max_gap: float
    diagnostics_period: float
    discovery_timeout: float
    checkpoint: str
    baseline: str
    plots: bool

    def to_dict(self) -> dict[str, Any]:
        """Name → value (saved in the report's meta, so a number can be traced to the settings)."""
        return dataclasses.asdict(self)


def validate_evaluator_params(values: Mapping[str, Any]) -> EvaluatorParams:
    """Check the values (missing names take the table's default); one ConfigError naming the parameter."""
    p = {s.name: values.get(s.name, s.default) for s in PARAM_SPECS}
    for name in ("pose_type", "gt_type"):
        if p[name] not in ("auto", *SHORT_TYPES):
            raise ConfigError(f"parameter '{name}' = {p[name]!r}: expected auto, pose, pose_cov or odom")
    if p["baseline"] not in BASELINES:
        raise ConfigError(f"parameter 'baseline' = {p['baseline']!r}: expected auto, checkpoint, gt or none")
    for name in ("duration", "max_gap", "diagnostics_period", "discovery_timeout"):
        if float(p[name]) < 0:
            raise ConfigError(f"parameter '{name}' = {p[name]} must be >= 0")
        p[name] = float(p[name])
    if int(p["expected_count"]) < 0:
        raise ConfigError(f"parameter 'expected_count' = {p['expected_count']} must be >= 0")
    spec = str(p["gt_tf"])
    if spec and (spec.count(":") != 1 or not all(spec.split(":"))):
        raise ConfigError(f"parameter 'gt_tf' = {spec!r}: expected PARENT:CHILD, e.g. map:base_link")
    p["expected_count"], p["plots"] = int(p["expected_count"]), bool(p["plots"])
    return EvaluatorParams(**p)


def _msg_pose(msg: Any) -> tuple[int, np.ndarray, np.ndarray]:
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    t, q = msg_to_pose(pose)
    return time_to_ns(msg.header.stamp), t, q


def _msg_covariance(msg: Any) -> np.ndarray | None:
    """The 36 row-major covariance values of a PoseWithCovarianceStamped / Odometry, ``None`` for a PoseStamped
    (then the report has no calibration section: there is no published covariance to score)."""
    cov = getattr(msg.pose, "covariance", None)
    return None if cov is None else np.asarray(cov, dtype=np.float64)


class EvaluatorNode(Node):
    """See the module docstring. ``finished`` becomes True when a stop condition is met (the caller writes)."""

    def __init__(self, node_name: str = NODE_NAME, overrides: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from rcl_interfaces.msg import ParameterDescriptor

        for spec in PARAM_SPECS:
            self.declare_parameter(spec.name, (overrides or {}).get(spec.name, spec.default),
                                   ParameterDescriptor(description=spec.description,
                                                       additional_constraints=spec.constraints))
        p = self.p = validate_evaluator_params({s.name: self.get_parameter(s.name).value for s in PARAM_SPECS})
        # the checkpoint is read now: a bad path must refuse the start, not lose the report at the end
        self._ckpt_meta = self._read_checkpoint(p.baseline, p.checkpoint)
        self._ckpt_baseline = self._checkpoint_baseline(p.baseline, p.checkpoint, self._ckpt_meta)
        self.finished = False
        self.finish_reason = ""
        self._t0 = time.monotonic()
        self._tf_edges: dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        self._tf_static: set[tuple[str, str]] = set()
        self._tf_cache: Trajectory | None = None
        self._tf_dirty = False
        provider: Callable[[], Trajectory | None] | None = None
        if p.gt_tf:
            self._tf_parent, self._tf_child = p.gt_tf.split(":")
            provider = self._tf_gt
        self.ev = OnlineEvaluator(max_gap_ns=int(round(float(p.max_gap) * 1e9)), gt_provider=provider)
        self._pending_subs: list[tuple[str, str, Callable[[Any], None]]] = [
            (p.pose_topic, p.pose_type, self._on_pose)]
        if p.gt_tf:
            self._subscribe_tf()
        else:
            self._pending_subs.append((p.gt_topic, p.gt_type, self._on_gt))
        self.subscribed: dict[str, str] = {}
        if p.retrieval_topic:  # a known type: subscribed at once, harmless when nobody publishes it
            self.create_subscription(POSE_TYPES[SHORT_TYPES["pose"]], str(p.retrieval_topic), self._on_retrieval,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        if p.retrieval_shift_topic:
            self.create_subscription(POSE_TYPES[SHORT_TYPES["pose"]], str(p.retrieval_shift_topic),
                                     self._on_retrieval_shift,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        if p.fused_topic:  # a known type: subscribed at once, harmless when fusion is off in the node
            self.create_subscription(PoseWithCovarianceStamped, str(p.fused_topic), self._on_fused,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._try_subscribe()
        if self._pending_subs:
            self._sub_timer = self.create_timer(0.2, self._try_subscribe)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if float(p.diagnostics_period) > 0:
            self.create_timer(float(p.diagnostics_period), self._publish_diagnostics)
        self.create_timer(0.2, self._tick)
        self.get_logger().info(f"evaluating {p.pose_topic} against "
                               f"{'TF ' + p.gt_tf if p.gt_tf else p.gt_topic}; report → {p.out_dir}")

    # ------------------------------------------------------------------ subscriptions
    def _try_subscribe(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        still = []
        for topic, kind, cb in self._pending_subs:
            if kind != "auto":
                msgtype = SHORT_TYPES[kind]
            else:
                types = [t for t in graph.get(topic, []) if t in POSE_TYPES]
                if not types:
                    if time.monotonic() - self._t0 > float(self.p.discovery_timeout):
                        self.get_logger().error(f"topic {topic} did not appear within "
                                                f"{self.p.discovery_timeout} s; set its *_type parameter")
                        self._finish("discovery timeout")
                        return
                    still.append((topic, kind, cb))
                    continue
                msgtype = types[0]
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            self.create_subscription(POSE_TYPES[msgtype], topic, cb, qos)
            self.subscribed[topic] = msgtype
            self.get_logger().info(f"subscribed to {topic} [{msgtype}]")
        self._pending_subs = still
        if not still and hasattr(self, "_sub_timer"):
            self._sub_timer.cancel()

    def _subscribe_tf(self) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as e:
            raise ConfigError("parameter 'gt_tf' needs the tf2_msgs Python package, which is not installed; use "
                              "gt_topic (PoseStamped / Odometry) instead or install ros-<distro>-tf2-msgs") from e
        from rclpy.qos import DurabilityPolicy

        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.subscribed["/tf"] = "tf2_msgs/msg/TFMessage"

    # ------------------------------------------------------------------ callbacks
    def _on_pose(self, msg: Any) -> None:
        s, t, q = _msg_pose(msg)
        self.ev.add_estimate(s, t, q, covariance=_msg_covariance(msg))

    def _on_retrieval(self, msg: Any) -> None:
        s, t, q = _msg_pose(msg)
        self.ev.add_retrieval(s, t, q)

    def _on_retrieval_shift(self, msg: Any) -> None:
        s, t, q = _msg_pose(msg)
        self.ev.add_retrieval_shift(s, t, q)

    def _on_fused(self, msg: Any) -> None:
        s, t, q = _msg_pose(msg)
        self.ev.add_fused(s, t, q, _msg_covariance(msg))

    def _on_gt(self, msg: Any) -> None:
        s, t, q = _msg_pose(msg)
        self.ev.add_gt(s, t, q)

    def _on_tf(self, msg: Any, static: bool) -> None:
        for tr in msg.transforms:
            key = (str(tr.header.frame_id).lstrip("/"), str(tr.child_frame_id).lstrip("/"))
            t, q = msg_to_pose(tr.transform)
            self._tf_edges[key].append((time_to_ns(tr.header.stamp), t, q))
            if static:
                self._tf_static.add(key)
        self.ev.received["gt"] += 1
        self._tf_dirty = True

    def _tf_gt(self) -> Trajectory | None:
        if self._tf_dirty or self._tf_cache is None:
            self._tf_cache = tf_trajectory(self._tf_edges, self._tf_static, self._tf_parent, self._tf_child)
            self._tf_dirty = False
        return self._tf_cache

    def _tick(self) -> None:
        try:
            self.ev.match()
        except Exception as e:  # noqa: BLE001 - a timer callback must not kill the node (and its report)
            self.ev.drops.add("match_error")
            n = self.ev.drops["match_error"]
            if n == 1 or n % 100 == 0:
                self.get_logger().warning(f"matching poses to ground truth failed ({type(e).__name__}: {e}); "
                                          f"{n} time(s) so far, retrying")
            return
        n = int(self.p.expected_count)
        if n and self.ev.count >= n:
            self._finish(f"expected_count {n} reached")
        d = float(self.p.duration)
        if d and time.monotonic() - self._t0 >= d:
            self._finish(f"duration {d:g} s elapsed")

    def _finish(self, reason: str) -> None:
        if not self.finished:
            self.finished, self.finish_reason = True, reason
            self.get_logger().info(f"stopping: {reason}")

    def diagnostics_summary(self) -> dict[str, Any]:
        return self.ev.summary()

    def _publish_diagnostics(self) -> None:
        s = self.ev.summary()
        t, r = s["translation_m"], s["rotation_deg"]
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: pose accuracy"
        status.hardware_id = "mfapr"
        status.level = DiagnosticStatus.OK if s["count"] else DiagnosticStatus.WARN
        status.message = (f"{s['count']} poses scored, median {t['median']:.3f} m / {r['median']:.2f} deg"
                          if s["count"] else "no pose scored yet")
        kv = {"count": s["count"], "pending": s["pending"],
              "translation_mean_m": t["mean"], "translation_median_m": t["median"],
              "rotation_mean_deg": r["mean"], "rotation_median_deg": r["median"],
              **{f"recall_{k}": v for k, v in s["recall"].items()},
              **{f"drop_{k}": v for k, v in s["drops"].items()},
              "received_estimates": s["received"]["estimates"], "received_gt": s["received"]["gt"]}
        status.values = [KeyValue(key=k, value="" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)))
                         for k, v in kv.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)

    # ------------------------------------------------------------------ report
    def _read_checkpoint(self, mode: str, ck: str) -> dict[str, Any] | None:
        """The checkpoint's JSON, read once at start: the baseline (training mean pose) and the stored covariance
        calibration both come from it. Unreadable refuses the start when the baseline needs it (``auto`` or
        ``checkpoint``), else it is logged and the report goes without the stored scales."""
        if not ck:
            if mode == "checkpoint":
                raise ConfigError("baseline 'checkpoint' needs the parameter 'checkpoint' (the model's NAME.json)")
            return None
        from mfapr_ros.core.checkpoint import checkpoint_paths

        try:
            return json.loads(checkpoint_paths(ck)[0].read_text())
        except (OSError, json.JSONDecodeError, MfaprError) as e:
            if mode in ("auto", "checkpoint"):
                raise ConfigError(f"parameter 'checkpoint' = {ck!r}: cannot read its JSON ({e})") from e
            self.get_logger().warning(f"checkpoint {ck!r}: cannot read its JSON ({e}); the report's calibration "
                                      "section has no stored scales")
            return None

    @staticmethod
    def _checkpoint_baseline(mode: str, ck: str, meta: dict[str, Any] | None) -> tuple[Any, Any] | None:
        """The training mean pose recorded in the checkpoint's JSON (or None); ConfigError when ``checkpoint`` mode
        has none."""
        if mode not in ("auto", "checkpoint") or meta is None:
            return None
        b = checkpoint_mean_pose(meta)
        if b is None and mode == "checkpoint":
            raise ConfigError(f"baseline 'checkpoint' needs a checkpoint that records provenance.mean_pose ({ck!r})")
        return b

    def baseline(self) -> tuple[tuple[Any, Any] | None, str]:
        if self._ckpt_baseline is not None:
            return self._ckpt_baseline, "checkpoint provenance (training mean pose)"
        if self.p.baseline in ("auto", "gt") and self.ev.t_gt:
            return (np.asarray(self.ev.t_gt), np.asarray(self.ev.q_gt)), "mean of the ground truth (optimistic)"
        return None, "none"

    def write_report(self) -> dict[str, Path]:
        self.ev.match(final=True)
        baseline, src = self.baseline()
        meta = {"source": "evaluator_node", "pose_topic": self.p.pose_topic,
                "gt": f"tf {self.p.gt_tf}" if self.p.gt_tf else self.p.gt_topic,
                "subscribed": self.subscribed, "baseline_source": src, "checkpoint": self.p.checkpoint or None,
                "finish_reason": self.finish_reason or "shutdown", "parameters": self.p.to_dict()}
        return self.ev.write(self.p.out_dir, meta=meta, baseline=baseline, plots_enabled=bool(self.p.plots),
                             checkpoint_meta=self._ckpt_meta, mapped_t=self._mapped_positions())

    def _mapped_positions(self) -> Any:
        """The mapped (training) positions from the checkpoint's retrieval database, for the report's distance from
        the map; None (logged) without a checkpoint or database — the report then goes without that line."""
        if not self.p.checkpoint:
            return None
        from mfapr_ros.core.checkpoint import checkpoint_paths
        from mfapr_ros.inference.baselines import load_for_checkpoint

        try:
            db = load_for_checkpoint(checkpoint_paths(self.p.checkpoint)[0])
        except MfaprError as e:
            self.get_logger().warning(f"checkpoint {self.p.checkpoint!r}: retrieval database unreadable ({e}); the "
                                      "report has no distance from the map")
            return None
        return None if db is None else db.t


def _split_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="evaluator_node", add_help=True,
                                description="Live pose accuracy vs ground truth; ROS parameters via --ros-args.")
    p.add_argument("--out", dest="out_dir")
    p.add_argument("--duration", type=float)
    p.add_argument("--expected-count", dest="expected_count", type=int)
    p.add_argument("--pose-topic", dest="pose_topic")
    p.add_argument("--gt-topic", dest="gt_topic")
    p.add_argument("--gt-tf", dest="gt_tf")
    p.add_argument("--checkpoint")
    p.add_argument("--baseline", choices=BASELINES)
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        ours, ros = argv[:i], argv[i:]
    else:
        ours, ros = argv, []
    ns = p.parse_args(ours)
    return ns, ros


def main(args: list[str] | None = None) -> int:
    """Entry point: 0 after the report is written, 1 when it scored no pose, 2 when the node refuses to start."""
    from .env import apply_localhost_env

    argv = list(sys.argv[1:] if args is None else args)
    ns, ros_args = _split_args(argv)
    overrides = {k: v for k, v in vars(ns).items() if v is not None}
    apply_localhost_env()
    ctx = rclpy.context.Context()
    rclpy.init(args=["evaluator_node", *ros_args], context=ctx,
               signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        try:
            # parameter overrides from the command line win over defaults but not over --ros-args -p
            node = EvaluatorNode(overrides=overrides, context=ctx)
        except MfaprError as e:
            print(f"evaluator_node: refusing to start: {e}", file=sys.stderr)
            return 2
        from rclpy.executors import SingleThreadedExecutor

        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        while stop["signal"] is None and not node.finished and ctx.ok():
            ex.spin_once(timeout_sec=0.1)
        if stop["signal"]:
            node._finish(f"{stop['signal']} received")
        # drain what is already delivered, so poses sent just before the stop are scored too
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end and ctx.ok():
            ex.spin_once(timeout_sec=0.05)
        ex.shutdown()
        paths = node.write_report()
        from mfapr_ros.evaluation import load_report

        print(format_summary(load_report(paths["json"])))
        print(f"evaluator_node: report written to {paths['markdown'].parent} ({node.finish_reason})")
        if node.ev.count == 0:
            # an empty report is a failed evaluation, not a success a script would take at face value
            print(f"evaluator_node: no pose was scored ({node.finish_reason}): check that the pose topic has a "
                  "publisher, that ground truth arrives, and that both use the same clock (use_sim_time)",
                  file=sys.stderr)
            return 1
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if node is not None:
            node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
