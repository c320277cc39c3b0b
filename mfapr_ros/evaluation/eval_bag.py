"""`mfapr eval-bag`: accuracy of a checkpoint on a recorded rosbag2, offline and faster than real time.

The bundles are the live node's: :mod:`mfapr_ros.bag.bundles`, the one bag → bundles pipeline (shared with
training's rosbag reader), binds camera topics to model slots with the node's rule (same topic / transport rules,
same defaults as ``config/localize.yaml``), bundles with the one
:class:`mfapr_ros.core.sync.ApproximateTimeSynchronizer` (:class:`~mfapr_ros.core.sync.SyncSettings`, node
defaults) and decodes after it with the node's bad-frame rule (:mod:`~mfapr_ros.core.bundle_decode`). This
module is the CLI and the evaluation over it (what it reads from its options: :mod:`.bag_inputs`):
bundles are localised by :class:`~mfapr_ros.inference.localizer.Localizer`, batched (``--batch``) through
``infer_batch``, which is what makes a CPU run faster than real time. Ground truth (PoseStamped /
PoseWithCovarianceStamped / Odometry topic, or TF between two frames) is interpolated at each bundle stamp; the
shared report (:mod:`mfapr_ros.evaluation`) is written to ``--out``.

Every image or bundle that does not make it into the metrics is counted by cause in ``meta.drops`` of the report
(synchronizer drops, decode errors, bundles without GT coverage) and summarised on the console.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.bag.bundles import (
    DecodedBundle,
    decode_bundles,
    iter_bundles,
)
from mfapr_ros.bag.reader import BagInfo, BagReader, Trajectory, read_gt
from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.sync import SyncSettings, accounting_line
from mfapr_ros.inference.baselines import checkpoint_mean_pose

from .bag_inputs import (
    add_sync_options,
    parse_topic_map,
    parse_transport_map,
    resolve_bindings,
    sync_settings_from_args,
)

LOG = logging.getLogger("mfapr.eval_bag")


@dataclass
class EvalResult:
    """Per-bundle estimates paired with GT, plus everything the report's meta needs."""

    stamps_ns: np.ndarray
    t_est: np.ndarray
    q_est: np.ndarray
    t_gt: np.ndarray
    q_gt: np.ndarray
    masks: np.ndarray
    camera_stamps_ns: np.ndarray  # (N, T) header stamp of each slot's image, -1 where absent
    latency_s: np.ndarray
    drops: dict[str, int]
    bundles: int
    bag_seconds: float
    wall_seconds: float
    infer_seconds: float
    camera_names: list[str]
    topics: list[str]
    gt: Trajectory
    meta: dict[str, Any] = field(default_factory=dict)
    retrieval_t: np.ndarray | None = None  # the image-retrieval baseline per row (None without a database)
    retrieval_q: np.ndarray | None = None
    retrieval_shift_t: np.ndarray | None = None  # shift-aware retrieval (ring rigs: the query's cyclic slot shifts)
    retrieval_shift_q: np.ndarray | None = None
    covariances: np.ndarray | None = None  # (N, 6, 6) the published covariance per row (calibration section)
    fused: Any = None  # core.fusion.FusedTrack of the scored rows (None when fusion did not run)
    fusion_stats: dict[str, int] | None = None  # the estimator's counters over every bundle

    @property
    def bundles_per_s(self) -> float:
        return self.bundles / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def speedup(self) -> float:
        """Bag time covered / wall time spent: > 1 means faster than real time."""
        return self.bag_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


class _Estimates:
    """Per-bundle estimates, gathered batch by batch (``run``), in bundle order; inference time is summed."""

    def __init__(self, localizer: Any, bar: Any) -> None:
        self.localizer, self.bar = localizer, bar
        self.stamps: list[int] = []
        self.t: list[np.ndarray] = []
        self.q: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.cam_stamps: list[list[int]] = []
        self.latency: list[float] = []
        self.ret_t: list[np.ndarray] = []
        self.ret_q: list[np.ndarray] = []
        self.shift_t: list[np.ndarray] = []
        self.shift_q: list[np.ndarray] = []
        self.cov: list[np.ndarray] = []
        self.infer_s = 0.0
        self.wall0 = time.perf_counter()

    def run(self, chunk: list[DecodedBundle]) -> None:
        t0 = time.perf_counter()
        poses = self.localizer.infer_batch([(b.images, b.stamp_ns) for b in chunk])
        self.infer_s += time.perf_counter() - t0
        for b, p in zip(chunk, poses, strict=True):
            self.stamps.append(b.stamp_ns)
            self.t.append(np.asarray(p.t, dtype=np.float64))
            self.q.append(np.asarray(p.q, dtype=np.float64))
            self.masks.append(b.mask)
            self.cam_stamps.append([-1 if x is None else int(x) for x in b.stamps_ns])
            self.latency.append(float(getattr(p, "latency_s", float("nan"))))
            if getattr(p, "covariance", None) is not None:
                self.cov.append(np.asarray(p.covariance, dtype=np.float64).reshape(6, 6))
            ex = getattr(p, "extras", None) or {}
            if "retrieval_t" in ex:
                self.ret_t.append(np.asarray(ex["retrieval_t"], dtype=np.float64))
                self.ret_q.append(np.asarray(ex["retrieval_q"], dtype=np.float64))
            if "retrieval_shift_t" in ex:
                self.shift_t.append(np.asarray(ex["retrieval_shift_t"], dtype=np.float64))
                self.shift_q.append(np.asarray(ex["retrieval_shift_q"], dtype=np.float64))
        if self.bar is not None:
            el = time.perf_counter() - self.wall0
            self.bar.set_postfix_str(f"{len(self.stamps)} bundles, {len(self.stamps) / max(el, 1e-9):.1f} bundles/s")

    def consume(self, bundles: Any, batch: int) -> float:
        """Run every bundle, ``batch`` per forward pass; returns the wall time spent."""
        pending: list[DecodedBundle] = []
        for b in bundles:
            pending.append(b)
            if len(pending) >= batch:
                self.run(pending)
                pending = []
        if pending:
            self.run(pending)
        return time.perf_counter() - self.wall0


def _time_window(info: BagInfo, start_s: float, end_s: float | None,
                 max_duration_s: float | None) -> tuple[int, int]:
    """``[start_ns, end_ns)`` in bag log time; an empty window is a ConfigError naming the three options."""
    start_ns = info.start_ns + int(round(start_s * 1e9))
    end_ns = info.end_ns + 1
    if end_s is not None:
        end_ns = min(end_ns, info.start_ns + int(round(end_s * 1e9)))
    if max_duration_s is not None:
        end_ns = min(end_ns, start_ns + int(round(max_duration_s * 1e9)))
    if end_ns <= start_ns:
        raise ConfigError(f"empty time window: start {start_s} s, end {end_s} s, max duration {max_duration_s} s "
                          f"(bag is {info.duration_s:.1f} s long)")
    return start_ns, end_ns


def _gt_coverage(gt: Trajectory, s: np.ndarray, max_gap_s: float, drops: DropCounter, bag_path: Any) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """GT (t, q) at the bundle stamps and the mask of stamps it covers; bundles outside are counted
    (``no_gt_at_stamp``), none covered is a DataError that says what to check."""
    tg, qg, ok = gt.at(s, max_gap_ns=int(round(max_gap_s * 1e9)))
    if (~ok).any():
        drops.merge({"no_gt_at_stamp": int((~ok).sum())})
        LOG.warning("%d of %d bundles have no ground truth at their stamp (outside the GT span or in a gap > %.2f s)",
                    int((~ok).sum()), len(s), max_gap_s)
    if not ok.any():
        raise DataError(f"ground truth {gt.source} does not cover any bundle stamp of {bag_path} (GT spans "
                        f"{gt.stamps_ns[0]}..{gt.stamps_ns[-1]} ns, bundles {s[0]}..{s[-1]} ns); check the GT "
                        "topic and that both use the same clock")
    return tg, qg, ok


def evaluate_bag(checkpoint: str | Path, bag_path: str | Path, *, topics: dict[str, str] | None = None,
                 transports: Mapping[str, str] | str | None = None,
                 gt_topic: str | None = None, gt_tf: str | None = None, start_s: float = 0.0,
                 end_s: float | None = None, max_duration_s: float | None = None, batch: int = 16,
                 device: str = "auto", sync: SyncSettings | None = None, max_gap_s: float = 0.5,
                 progress: bool = True, localizer: Any = None, enforce_image_size: bool = True,
                 fusion: Any = None, odom_frame: str = "odom") -> EvalResult:
    """Run the checkpoint on the bag and pair estimates with interpolated GT (see the module docstring).

    ``fusion`` (:class:`~mfapr_ros.core.fusion.FusionSettings`): also fuse the poses with the bag's odometry
    (``odom_frame`` → the rig's base frame on /tf), as ``localize_node`` does with ``fusion.enabled`` (rows without
    odometry pass through, counted); ``None`` = raw poses only."""
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if localizer is None:
        from mfapr_ros.inference.localizer import Localizer

        localizer = Localizer(str(checkpoint), device=device)
    rig = localizer.rig
    sync = sync or SyncSettings()  # = the node's defaults (one table, tested)
    with BagReader(bag_path) as bag:
        info = bag.info()
        bindings = resolve_bindings(rig, {t: i.msgtype for t, i in info.topics.items()}, topics, transports,
                                    source=f"bag {bag_path}")
        cam_topics = [b.topic for b in bindings]
        start_ns, end_ns = _time_window(info, start_s, end_s, max_duration_s)
        gt = read_gt(bag, gt_topic, gt_tf)
        drops = DropCounter.for_reader()
        drops.merge(gt.drops, prefix="gt_")
        synchronizer = sync.make(len(cam_topics), logger=LOG.debug)
        bar = _progress(sum(info.topics[t].count for t in cam_topics), progress)
        est = _Estimates(localizer, bar)
        bundles = iter_bundles(bag, bindings, synchronizer, start_ns, end_ns, drops,
                               on_message=(lambda: bar.update(1)) if bar is not None else None)
        # the node's bad-frame rule (core.bundle_decode): decode after the synchronizer, size check, masked or dropped
        decoded = decode_bundles(bundles, drops, bindings=bindings, min_present=synchronizer.min_streams,
                                 enforce_image_size=enforce_image_size)
        wall = est.consume(decoded, batch)
        if bar is not None:
            bar.close()
        odom = read_odometry(bag, odom_frame, rig.base_frame) if fusion is not None and est.stamps else None
    if not est.stamps:
        raise DataError(f"no bundle could be formed from {cam_topics} in {bag_path} (sync stats "
                        f"{synchronizer.stats}); check --topics, --slop and --min-cameras (a camera missing for "
                        "the whole bag needs --min-cameras below the number of cameras)")
    s = np.asarray(est.stamps, dtype=np.int64)
    tg, qg, ok = _gt_coverage(gt, s, max_gap_s, drops, bag_path)
    n = len(s)
    fused = _fuse(fusion, odom, s, est, max_gap_s) if fusion is not None else None
    return EvalResult(
        stamps_ns=s[ok], t_est=np.asarray(est.t)[ok], q_est=np.asarray(est.q)[ok], t_gt=tg[ok], q_gt=qg[ok],
        masks=np.asarray(est.masks)[ok], camera_stamps_ns=np.asarray(est.cam_stamps, dtype=np.int64)[ok],
        latency_s=np.asarray(est.latency)[ok], drops=dict(drops), bundles=n,
        bag_seconds=(min(end_ns, info.end_ns) - start_ns) / 1e9, wall_seconds=wall, infer_seconds=est.infer_s,
        camera_names=list(rig.camera_names), topics=cam_topics, gt=gt,
        meta={"transports": {b.name: b.transport for b in bindings},
              "sync": sync.to_dict(), "sync_stats": synchronizer.stats,
              "sync_accounting": accounting_line(synchronizer.stats), "enforce_image_size": enforce_image_size,
              "window_ns": [start_ns, end_ns], "bag_storage": info.storage},
        retrieval_t=np.asarray(est.ret_t)[ok] if len(est.ret_t) == n else None,
        retrieval_q=np.asarray(est.ret_q)[ok] if len(est.ret_q) == n else None,
        retrieval_shift_t=np.asarray(est.shift_t)[ok] if len(est.shift_t) == n else None,
        retrieval_shift_q=np.asarray(est.shift_q)[ok] if len(est.shift_q) == n else None,
        covariances=np.asarray(est.cov)[ok] if len(est.cov) == n else None,
        fused=_rows(fused, ok) if fused is not None else None,
        fusion_stats=fused.stats if fused is not None else None)


def read_odometry(bag: BagReader, odom_frame: str, base_frame: str) -> Trajectory | None:
    """``T_odom_base`` over the bag from /tf, or None (logged) when the bag has no such transform."""
    try:
        return bag.read_tf_trajectory(odom_frame, base_frame)
    except DataError as e:
        LOG.warning("fusion: no odometry in the bag (%s); every pose passes through unfused (counted no_odometry)",
                    e)
        return None


def _fuse(settings: Any, odom: Trajectory | None, s: np.ndarray, est: _Estimates, max_gap_s: float) -> Any:
    """Every bundle's pose through the node's fusion, in stamp order (odometry interpolated at each stamp)."""
    from mfapr_ros.core.fusion import fuse_track

    if odom is not None:
        ot, oq, ook = odom.at(s, max_gap_ns=int(round(max_gap_s * 1e9)))
    else:
        ot, oq, ook = np.zeros((len(s), 3)), np.tile([1.0, 0.0, 0.0, 0.0], (len(s), 1)), np.zeros(len(s), bool)
    cov = np.asarray(est.cov) if len(est.cov) == len(s) else np.tile(np.eye(6), (len(s), 1, 1))
    return fuse_track(settings, s, np.asarray(est.t), np.asarray(est.q), cov, ot, oq, ook)


def _rows(fused: Any, ok: np.ndarray) -> Any:
    """The fused track restricted to the rows that have GT (the scored ones)."""
    from mfapr_ros.core.fusion import FusedTrack

    return FusedTrack(fused.t[ok], fused.q[ok], fused.covariance[ok], [x for x, k in zip(fused.status, ok,
                                                                                         strict=True) if k],
                      fused.stats)


def _progress(total: int, enabled: bool) -> Any:
    """A bar on a terminal, one plain line per interval otherwise (core.progress: the one policy of every command)."""
    from mfapr_ros.core.progress import progress

    return progress(total, "eval-bag", "msg", enabled=enabled)


def choose_baseline(mode: str, checkpoint: str, ck_meta: dict[str, Any], res: EvalResult) -> tuple[Any, str]:
    """The mean-pose baseline and where it came from: the training mean recorded in the checkpoint, else (``auto``,
    ``gt``) the mean of this bag's GT, labelled as the optimistic baseline it is."""
    baseline, source = None, "none"
    if mode in ("auto", "checkpoint"):
        baseline = checkpoint_mean_pose(ck_meta)
        source = "checkpoint provenance (training mean pose)" if baseline is not None else "none"
        if baseline is None and mode == "checkpoint":
            raise DataError(f"checkpoint {checkpoint} records no training mean pose (provenance.train_mean_pose); "
                            "use --baseline gt or none")
    if baseline is None and mode in ("auto", "gt"):
        baseline, source = (res.t_gt, res.q_gt), "mean of this bag's ground truth (optimistic baseline)"
    return baseline, source


def calibration_section(res: EvalResult, checkpoint_meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's ``calibration`` section: 1σ/2σ/3σ coverage and NLL of the covariances the node would publish
    for these bundles (the Localizer's, stored calibration applied), or ``None`` without covariances."""
    if res.covariances is None or len(res.covariances) == 0:
        return None
    from mfapr_ros.inference.calibration import report_section

    return report_section(res.t_gt, res.q_gt, res.t_est, res.q_est, res.covariances, checkpoint_meta)


def fusion_from_args(args: argparse.Namespace) -> tuple[Any, str]:
    """``--fusion`` → ``(FusionSettings or None, a note for the report's meta)``: the node's default settings
    (``fusion.*`` parameters), or those of ``--params FILE`` (the node's parameters file), with fusion on;
    ``auto`` without GTSAM is off with the one-line reason, ``on`` without GTSAM is that line as an error."""
    if args.fusion == "off":
        return None, "off (--fusion off)"
    from mfapr_ros.core.fusion import FusionSettings, FusionUnavailableError, load_gtsam

    try:
        load_gtsam()
    except FusionUnavailableError as e:
        if args.fusion == "on":
            raise
        print(f"eval-bag: fused row skipped: {e}", file=sys.stderr)
        return None, f"off: {e}"
    if args.params:
        from mfapr_ros.core.fusion import load_fusion_params

        settings = dataclasses.replace(load_fusion_params(args.params), enabled=True)
        return settings, (f"on (odometry {args.odom_frame} -> base frame from the bag's /tf; fusion.* from "
                          f"{args.params})")
    return FusionSettings(enabled=True), f"on (odometry {args.odom_frame} -> base frame from the bag's /tf)"


def fused_report(res: EvalResult, fusion: Any) -> dict[str, Any] | None:
    """The report's ``fused`` section (:func:`mfapr_ros.evaluation.report.fused_section`), or None."""
    if res.fused is None:
        return None
    from .report import fused_section

    return fused_section(res.stamps_ns, res.t_gt, res.q_gt, res.fused.t, res.fused.q, res.fused.covariance,
                         stats=res.fusion_stats, settings=fusion.to_dict() if fusion is not None else None,
                         source="eval-bag: core.fusion.PoseFusion over the bag's odometry (odom -> base /tf)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfapr eval-bag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint (NAME, NAME.json or NAME.safetensors)")
    p.add_argument("--bag", required=True, help="rosbag2 directory (sqlite3 or MCAP)")
    p.add_argument("--topics", default=None, metavar="CAM=TOPIC[@TRANSPORT],...",
                   help="camera→topic overrides, read exactly as written (the rig's transport is not appended; the "
                        "transport is the recorded type): cam0=/a/image_raw,cam1=/b/image_raw/compressed; with "
                        "@raw|@compressed the topic is a base topic named by image_transport, like --transport")
    p.add_argument("--transport", default=None, metavar="raw|compressed|CAM=TRANSPORT,...",
                   help="read these cameras' images in this transport instead of the rig's: the base topic (rig or "
                        "--topics) for raw, <base>/compressed for compressed; must be recorded (no fallback). "
                        "'raw' alone = every camera")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="GT topic (PoseStamped, PoseWithCovarianceStamped, Odometry); "
                   "default: the first of /ground_truth/pose, /ground_truth, /gt/pose found")
    g.add_argument("--gt-tf", default=None, metavar="PARENT:CHILD", help="GT from TF, e.g. map:base_link")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the bag to start at")
    p.add_argument("--end", type=float, default=None, help="seconds into the bag to stop at")
    p.add_argument("--max-duration", type=float, default=None, help="evaluate at most this many seconds of bag")
    p.add_argument("--batch", type=int, default=16, help="bundles per forward pass (default 16)")
    p.add_argument("--out", default="out/eval_bag", help="report folder (default out/eval_bag)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_sync_options(p)
    p.add_argument("--enforce-image-size", action=argparse.BooleanOptionalAction, default=True,
                   help="drop (and count) images whose size differs from the rig's, as localize_node does "
                        "(default: on, like its enforce_image_size)")
    p.add_argument("--max-gap", type=float, default=0.5, help="max GT sample gap (s) to interpolate across")
    p.add_argument("--baseline", choices=("auto", "checkpoint", "gt", "none"), default="auto",
                   help="mean-pose baseline: the training mean stored in the checkpoint (auto falls back to the "
                        "mean of this bag's GT, labelled as such)")
    p.add_argument("--fusion", choices=("auto", "on", "off"), default="auto",
                   help="also report the poses fused with the bag's odometry (odom->base TF), as localize_node's "
                        "fusion.enabled does: auto = when GTSAM is installed and the bag has that TF")
    p.add_argument("--odom-frame", default="odom", help="odometry frame of the fusion (default odom)")
    p.add_argument("--params", default=None, metavar="FILE",
                   help="the node's parameters file (YAML, as given to --params-file): its fusion.* settings are "
                        "used for the fused row (e.g. the file mfapr fit-fusion wrote); default: the node's defaults")
    p.add_argument("--no-plots", action="store_true", help="write JSON + Markdown only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


#: how much closer to (or farther from) the map a bag may lie than the drive its fusion settings were fitted on
#: before eval-bag says the fused covariance will likely over- (under-) cover it
FIT_DRIVE_RATIO = 1.5


def fit_drive_comparison(params: str, doc: dict) -> str | None:
    """One line comparing this bag's distance from the map with that of the drive ``mfapr fit-fusion`` fitted the
    ``--params`` file on (its header records it), or None when either is unknown.

    Why: the fitted σ factors describe the network's errors on that drive; the network is more precise close to the
    mapped lanes (demo world: validation drive 0.115 m from the map, queries 0.038 m, and its fused covariance
    over-covered the queries at 1σ by up to 30 points), so a user should see the mismatch where the figures are."""
    import re

    here = ((doc.get("map_distance") or {}).get("translation_m") or {}).get("median")
    try:
        text = Path(params).read_text()
    except OSError:
        return None
    m = re.search(r"^# drive: median ([0-9.]+) m", text, re.M)
    if here is None or m is None:
        return None
    there = float(m.group(1))
    line = (f"fusion settings fitted on a drive {there:.3f} m from the map (median); this bag is {here:.3f} m from "
            "it")
    if there > 0 and here > 0 and max(there / here, here / there) > FIT_DRIVE_RATIO:
        closer = here < there
        line += (f" — {max(there / here, here / there):.1f}× {'closer' if closer else 'farther'}: the network is "
                 f"likely {'more' if closer else 'less'} precise here than on the fit drive, so the fused covariance "
                 f"will likely {'over' if closer else 'under'}-cover (fit on a drive like this one)")
    return line


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr eval-bag`; errors surface as MfaprError (the dispatcher prints one line, exit 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from mfapr_ros.inference.localizer import Localizer

    from . import load_report, print_summary, write_report

    sync = sync_settings_from_args(args)
    fusion, fusion_note = fusion_from_args(args)
    topics, transports = parse_topic_map(args.topics), parse_transport_map(args.transport)  # typos fail at once
    localizer = Localizer(args.checkpoint, device=args.device)
    res = evaluate_bag(args.checkpoint, args.bag, topics=topics, transports=transports, gt_topic=args.gt_topic,
                       gt_tf=args.gt_tf, start_s=args.start, end_s=args.end, max_duration_s=args.max_duration,
                       batch=args.batch, device=args.device, sync=sync, max_gap_s=args.max_gap,
                       progress=not args.no_progress, localizer=localizer,
                       enforce_image_size=args.enforce_image_size, fusion=fusion, odom_frame=args.odom_frame)
    if args.fusion == "auto" and res.fusion_stats and res.fusion_stats["no_odometry"] == res.fusion_stats["received"]:
        res.fused, fusion_note = None, f"off (--fusion auto: no {args.odom_frame} -> base TF in the bag)"
    ck_meta = getattr(getattr(localizer, "checkpoint", None), "meta", None) or {}
    baseline, base_src = choose_baseline(args.baseline, args.checkpoint, ck_meta, res)
    meta = {
        "source": "mfapr eval-bag", "checkpoint": str(args.checkpoint), "bag": str(args.bag),
        "cameras": res.camera_names, "topics": dict(zip(res.camera_names, res.topics, strict=True)),
        "gt": res.gt.source, "baseline_source": base_src, "batch": args.batch, "device": args.device,
        "drops": res.drops, "bundles": res.bundles, "bag_seconds": res.bag_seconds,
        "wall_seconds": res.wall_seconds, "inference_seconds": res.infer_seconds,
        "bundles_per_s": res.bundles_per_s, "speedup_vs_realtime": res.speedup, "fusion": fusion_note, **res.meta,
    }
    paths = write_report(args.out, stamps_ns=res.stamps_ns, t_gt=res.t_gt, q_gt=res.q_gt, t_est=res.t_est,
                         q_est=res.q_est, baseline=baseline, masks=res.masks, latency_s=res.latency_s, meta=meta,
                         camera_names=res.camera_names, plots_enabled=not args.no_plots,
                         retrieval=(res.retrieval_t, res.retrieval_q) if res.retrieval_t is not None else None,
                         retrieval_shift=((res.retrieval_shift_t, res.retrieval_shift_q)
                                          if res.retrieval_shift_t is not None else None),
                         calibration=calibration_section(res, ck_meta), fused=fused_report(res, fusion),
                         mapped_t=localizer.retrieval.t if localizer.retrieval is not None else None)
    doc = load_report(paths["json"])
    print_summary(doc)
    if args.params and res.fused is not None:
        line = fit_drive_comparison(args.params, doc)
        if line:
            print(line)
    print(f"{res.bundles} bundles in {res.wall_seconds:.2f} s ({res.bundles_per_s:.1f} bundles/s); "
          f"{res.bag_seconds:.1f} s of bag → {res.speedup:.1f}× real time")
    if res.drops:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(res.drops.items())))
    if res.meta.get("sync_accounting"):
        print(res.meta["sync_accounting"])
    print(f"report: {paths['markdown']}")
    return 0
