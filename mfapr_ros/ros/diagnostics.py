"""``/diagnostics`` of the localization node: the plain-value summary, the DiagnosticStatus list built from it, the
publishing (diagnostic_updater when installed, else a timer) and the one-line summary printed at shutdown.

Why apart from the node: the node's job is the lifecycle (configure, activate, deactivate, cleanup) and the data
path; what it reports is a view of its counters. Everything here reads one :class:`DiagnosticsView`, which the node
fills (``LocalizeCore.diagnostics_view``: its :mod:`mfapr_ros.core.stats` rate meters and latencies, the drop counter,
the synchronizer's and the inference worker's counters), and never changes them: the node's attributes can change
without this module noticing, and a test can build a view without a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from mfapr_ros.bag.bundles import CameraBinding
from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.stats import LatencyStats, RateMeter
from mfapr_ros.core.sync import DROP_KEYS
from mfapr_ros.inference.uncertainty import UncertaintyStats

from .relocalize import RelocalizationOutput

try:  # diagnostic_updater is optional; without it /diagnostics is published directly
    import diagnostic_updater  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installation
    diagnostic_updater = None

#: drop-counter source of results the model side drops (inference errors, non-finite poses, finished after deactivate);
#: reported as ``inference.<cause>``, camera drops as ``decode.<cause>`` (summed over cameras)
MODEL_SOURCE = "model"
#: drop-counter source of whole bundles dropped by the bad-frame rule (``core.bundle_decode``): ``bundle.<cause>``
BUNDLE_SOURCE = "bundle"
#: where the time goes, in pipeline order: sync (per message, on the intake thread), wait (the bounded bundle
#: queue and decoded-but-model-busy), decode (deserialize + decode + size check + preprocess of a chosen
#: bundle), inference (the model), publish (on its own thread)
STAGES = ("sync", "wait", "decode", "inference", "publish")
#: the main status turns WARN when at least this share of the last judged poses (at least UNCERTAIN_MIN_POSES of
#: them) was uncertain (skipped or inflated): the model is out of its depth, not just unlucky once
UNCERTAIN_WARN_SHARE = 0.5
UNCERTAIN_MIN_POSES = 10


@dataclass(frozen=True)
class DiagnosticsView:
    """What /diagnostics reads of a localization node, filled by the node when it reports
    (``LocalizeCore.diagnostics_view``). The meters and counters are the node's live, thread-safe objects (read
    here, never changed); the plain values are copies taken when the view was made."""

    node_name: str
    device: str  # the inference device actually used (cpu when cuda fell back)
    precision: str
    cameras: Sequence[CameraBinding]  # subscribed cameras, model slot order
    cam_rates: Sequence[RateMeter]  # one per camera: messages received
    bundle_rate: RateMeter  # bundles out of the synchronizer
    pose_rate: RateMeter  # poses published
    poses: int
    partial_bundles: int
    latency: LatencyStats  # submit → result inside the node (wait + decode + inference)
    stage_time: Mapping[str, LatencyStats]  # seconds per stage of :data:`STAGES`
    drops: DropCounter  # by (camera or MODEL_SOURCE / BUNDLE_SOURCE, cause)
    sync_stats: Mapping[str, int]  # ApproximateTimeSynchronizer.stats
    inference_stats: Mapping[str, int]  # the bundle pipeline's counters (empty once it is stopped)
    tf_mode: str  # the tf_mode parameter, or "off" without a TF output
    tf_lookup_failures: int
    uncertain: UncertaintyStats | None  # the uncertainty gate's verdict counts
    stream_timeout_s: float  # sync.stream_timeout: a camera silent longer is reported silent
    relocalization: RelocalizationOutput | None  # its status (lost, seeds) follows the node's


def diagnostics_summary(view: DiagnosticsView) -> dict[str, Any]:
    """Everything /diagnostics reports, as plain values (also used by tests, the benchmark and the shutdown line)."""
    now = time.monotonic()
    sync_stats = view.sync_stats
    inf = view.inference_stats
    drop_counts = view.drops.counts
    drops_by_kind: dict[str, int] = {}
    for (source, cause), v in sorted(drop_counts.items()):
        kind = {MODEL_SOURCE: "inference", BUNDLE_SOURCE: "bundle"}.get(source, "decode")
        key = f"{kind}.{cause}"
        drops_by_kind[key] = drops_by_kind.get(key, 0) + v
    cams = []
    for b, r in zip(view.cameras, view.cam_rates, strict=True):
        last = r.last()
        cams.append({"name": b.name, "topic": b.topic, "rate_hz": r.rate(now), "received": r.count,
                     "silent_s": (now - last) if last is not None else float("inf"),
                     "drops": {cause: v for (c, cause), v in drop_counts.items() if c == b.name}})
    return {
        "device": view.device, "precision": view.precision, "cameras": cams,
        "bundle_rate_hz": view.bundle_rate.rate(now), "pose_rate_hz": view.pose_rate.rate(now),
        "bundles": view.bundle_rate.count, "partial_bundles": view.partial_bundles,
        "poses": view.poses,
        "latency_p50_ms": 1e3 * view.latency.percentile(50), "latency_p99_ms": 1e3 * view.latency.percentile(99),
        "stage_ms": _stage_summary(view.stage_time),
        "drops": {**drops_by_kind,
                  **{f"sync.{k}": int(sync_stats[k]) for k in DROP_KEYS},
                  "inference.stale": int(inf.get("stale_dropped", 0)),  # superseded by a newer bundle
                  "inference.errors": int(inf.get("errors", 0) + inf.get("callback_errors", 0))},
        "sync": dict(sync_stats),
        "tf_mode": view.tf_mode,
        "tf_lookup_failures": view.tf_lookup_failures,
        **_uncertainty_summary(view.uncertain),
    }


def _stage_summary(times: Mapping[str, LatencyStats]) -> dict[str, dict[str, float]]:
    """``{stage: {"p50": ms, "p99": ms}}`` for :data:`STAGES` (NaN before the first sample)."""
    return {k: {"p50": 1e3 * times[k].percentile(50), "p99": 1e3 * times[k].percentile(99)}
            for k in STAGES if k in times}


def _uncertainty_summary(u: UncertaintyStats | None) -> dict[str, Any]:
    """The uncertainty gate's counts: by reason per action, poses per action, the share over the recent window."""
    if u is None:
        return {"uncertain_skipped": {}, "uncertain_inflated": {}, "uncertain_skipped_poses": 0,
                "uncertain_inflated_poses": 0, "uncertain_share": 0.0, "uncertain_window": 0}
    counts = u.counts()
    share, window = u.share()
    return {"uncertain_skipped": counts["skipped"], "uncertain_inflated": counts["inflated"],
            "uncertain_skipped_poses": u.poses["skipped"], "uncertain_inflated_poses": u.poses["inflated"],
            "uncertain_share": share, "uncertain_window": window}


def _main_status(s: dict[str, Any], node_name: str, timeout: float) -> DiagnosticStatus:
    """The node-level status: WARN before the first pose, with every camera silent, with some silent, or when a
    high share of the recent poses was uncertain (skipped or inflated)."""
    silent = [c["name"] for c in s["cameras"] if c["silent_s"] > timeout]
    main = DiagnosticStatus(name=f"{node_name}: localization", hardware_id=s["device"])
    share, window = s.get("uncertain_share", 0.0), s.get("uncertain_window", 0)
    skipped = s.get("uncertain_skipped_poses", 0)
    if s["poses"] == 0 and skipped:
        main.level, main.message = DiagnosticStatus.WARN, f"no poses published: {skipped} skipped as uncertain"
    elif s["poses"] == 0 or s["pose_rate_hz"] == 0.0 and len(silent) == len(s["cameras"]):
        main.level, main.message = DiagnosticStatus.WARN, "no poses yet" if s["poses"] == 0 else "no images"
    elif silent:
        main.level, main.message = DiagnosticStatus.WARN, f"silent cameras: {silent}"
    elif window >= UNCERTAIN_MIN_POSES and share >= UNCERTAIN_WARN_SHARE:
        main.level, main.message = (DiagnosticStatus.WARN, f"model unsure: {100 * share:.0f} % of the last "
                                    f"{window} poses uncertain (see uncertain_*)")
    else:
        main.level, main.message = DiagnosticStatus.OK, f"{s['pose_rate_hz']:.1f} poses/s"
    kv = {"device": s["device"], "precision": s["precision"], "bundle_rate_hz": f"{s['bundle_rate_hz']:.2f}",
          "pose_rate_hz": f"{s['pose_rate_hz']:.2f}", "bundles": s["bundles"],
          "partial_bundles": s["partial_bundles"], "poses": s["poses"],
          "latency_p50_ms": f"{s['latency_p50_ms']:.1f}", "latency_p99_ms": f"{s['latency_p99_ms']:.1f}",
          "tf_mode": s["tf_mode"], "tf_lookup_failures": s["tf_lookup_failures"],
          **{f"time_ms.{k}.{p}": f"{v[p]:.2f}" for k, v in s.get("stage_ms", {}).items() for p in ("p50", "p99")},
          **{f"drops.{k}": v for k, v in s["drops"].items()},
          **_uncertainty_values(s)}
    main.values = [KeyValue(key=k, value=str(v)) for k, v in kv.items()]
    return main


def _uncertainty_values(s: dict[str, Any]) -> dict[str, Any]:
    """The ``uncertain_*`` key/values of the main status (only the reasons that occurred, plus the totals)."""
    if "uncertain_share" not in s:
        return {}
    return {"uncertain_skipped": s["uncertain_skipped_poses"], "uncertain_inflated": s["uncertain_inflated_poses"],
            **{f"uncertain_skipped.{k}": v for k, v in sorted(s["uncertain_skipped"].items())},
            **{f"uncertain_inflated.{k}": v for k, v in sorted(s["uncertain_inflated"].items())},
            "uncertain_share": f"{s['uncertain_share']:.2f}"}


def diagnostic_statuses(s: dict[str, Any], node_name: str, timeout: float) -> list[DiagnosticStatus]:
    """The node's status, then one per camera (WARN when silent for over ``timeout`` s or with drops)."""
    out = [_main_status(s, node_name, timeout)]
    for c in s["cameras"]:
        st = DiagnosticStatus(name=f"{node_name}: camera {c['name']}", hardware_id=c["topic"])
        bad = c["silent_s"] > timeout
        st.level = DiagnosticStatus.WARN if bad or c["drops"] else DiagnosticStatus.OK
        st.message = (f"silent for {c['silent_s']:.1f} s" if bad else f"{c['rate_hz']:.1f} Hz")
        vals = {"topic": c["topic"], "rate_hz": f"{c['rate_hz']:.2f}", "received": c["received"],
                **{f"drops.{k}": v for k, v in c["drops"].items()}}
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        out.append(st)
    return out


def final_summary_line(s: dict[str, Any]) -> str:
    """What came in and what went out, for the line printed at shutdown: a replay that produced nothing says why."""
    received = {c["name"]: c["received"] for c in s["cameras"]}
    drops = {k: v for k, v in s["drops"].items() if v}
    skipped, inflated = s.get("uncertain_skipped_poses", 0), s.get("uncertain_inflated_poses", 0)
    unsure = f", uncertain: {skipped} skipped, {inflated} inflated" if skipped or inflated else ""
    return (f"images received {received}, bundles {s['bundles']} ({s['partial_bundles']} partial), poses published "
            f"{s['poses']}{unsure}, inference p50 {s['latency_p50_ms']:.0f} ms, drops {drops or 'none'}")


def view_statuses(view: DiagnosticsView) -> list[DiagnosticStatus]:
    """Every status of a node's view: the node, its cameras, then the relocalization's (when it has one)."""
    out = diagnostic_statuses(diagnostics_summary(view), view.node_name, view.stream_timeout_s)
    st = view.relocalization.status(view.node_name) if view.relocalization is not None else None
    return out + ([st] if st is not None else [])


class DiagnosticsOutput:
    """Publishes a node's diagnostics while it is active: through diagnostic_updater when installed (created on the
    first activation and kept, as the updater has no way to be removed), else a ``/diagnostics`` publisher and timer
    created by :meth:`start` and destroyed by :meth:`stop`.

    ``node`` creates the publisher and timer (a plain or lifecycle node), ``view`` makes the :class:`DiagnosticsView`
    to report, ``closed`` says when the node stopped publishing."""

    def __init__(self, node: Node, view: Callable[[], DiagnosticsView], closed: Callable[[], bool]) -> None:
        self._node = node
        self._view = view
        self._closed = closed
        self._pub: Any = None
        self._timer: Any = None
        self._updater: Any = None

    def statuses(self) -> list[DiagnosticStatus]:
        """The statuses of the node as it is now."""
        return view_statuses(self._view())

    def start(self, period_s: float) -> None:
        """Begin publishing every ``period_s`` seconds (called on activate; 0 = off)."""
        c = self._node
        if period_s <= 0:
            return
        if diagnostic_updater is not None:  # pragma: no cover - not in the PyPI wheels
            if self._updater is None:
                self._updater = diagnostic_updater.Updater(c, period=period_s)
                self._updater.setHardwareID(self._view().device)
                self._updater.add("localization", self._fill_updater)
        else:
            self._pub = c.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._timer = c.create_timer(period_s, self.publish, callback_group=MutuallyExclusiveCallbackGroup())

    def stop(self) -> None:
        """Stop the timer and release the publisher (called on deactivate; safe to call twice)."""
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None

    def publish(self) -> None:
        """The timer callback: one DiagnosticArray, skipped once the node is closing."""
        c = self._node
        if self._pub is None or self._closed() or not c.context.ok():
            return
        msg = DiagnosticArray()
        msg.header.stamp = c.get_clock().now().to_msg()
        msg.status = self.statuses()
        try:
            self._pub.publish(msg)
        except Exception:  # SIGINT shut the context down between the check and the publish
            if c.context.ok():
                raise

    def _fill_updater(self, stat: Any) -> Any:  # pragma: no cover - diagnostic_updater is not in the PyPI wheels
        main = self.statuses()[0]
        stat.summary(main.level, main.message)
        for kv in main.values:
            stat.add(kv.key, kv.value)
        return stat
