"""``mfapr fit-fusion``: fit the fused covariance on a held-out drive with odometry and ground truth.

With the node's default ``fusion.*`` settings the demo model's fused covariance over-covers the forward query
(position-2D 61–75 % inside 1σ against 39 %, yaw 81–95 % against 68 %): the defaults were set on an earlier, less
precise model, and the right values depend on the model and on the robot's odometry. This command sets them the
way the network's own covariance is calibrated (``mfapr calibrate``): on data that is not the test, here a recorded
drive with odometry (``odom → base`` on /tf) and ground truth.

How: the network runs once over the bag (eval-bag's code); then the node's fusion (:func:`fuse_track`) runs for
each ``fusion.measurement_scale`` of :data:`MEASUREMENT_SCALES` (how much one network pose is worth in the
smoother: it moves the fused estimate), and on each run the published covariance gets its σ factors
``fusion.position_scale`` (fitted on position-2D) and ``fusion.rotation_scale`` (on yaw) by the raw calibration's
rule (:func:`~mfapr_ros.inference.calibration.fit_scale`: the factor minimising the worst 1σ/2σ/3σ coverage gap).
The run kept has the smallest worst gap over both blocks (whole points), then the lowest summed NLL, then the
smaller scale — deterministic. What is not fitted, and why:

* ``fusion.correlated_fraction`` stays as given: with it free as well, the fit traded it against the σ factors
  (shares of 0.75–0.9 with factors of 0.16–0.34 fitted a drive as well as 0 with factors near 2), so one drive
  cannot tell them apart, and on synthetic drives of a known error process the free pair covered other drives
  worse on one fit drive of two (docs/results.md, "The fused covariance fitted on a held-out drive");
* the odometry σ (``fusion.odom_*``) describe the robot: fitted on one drive they followed its turns (on the demo
  world a rotation σ fitted on the validation drive gave the query 1.0° fused yaw error against 0.65°).

One drive's errors are correlated along it, so a fit is only as general as the drive is long and varied: fit on a
drive like the ones the robot will do, never on the bag you report on. The result is a ROS 2 parameters file with
every ``fusion.*`` setting (``enabled: true``), for the node (``--params-file``) and for ``mfapr eval-bag
--params``; the console shows the kept setting against the starting one, on the same drive.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.fusion import FusionSettings, fuse_track, fusion_params_yaml, load_fusion_params
from mfapr_ros.core.io import atomic_write_text
from mfapr_ros.evaluation.metrics import map_distance, nearest_distance
from mfapr_ros.inference.calibration import (
    apply_scales,
    calibration_blocks,
    coverage,
    fit_scale,
    levels_text,
    max_coverage_gap,
)

LOG = logging.getLogger("mfapr.fit_fusion")

#: ``fusion.measurement_scale`` candidates (σ factor on the network covariance)
MEASUREMENT_SCALES: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 3.0)
#: the blocks scored (the calibrated ones: what a ground robot's EKF and the issue's targets use)
FIT_BLOCKS: tuple[str, ...] = ("position_2d", "yaw")
#: fewer fused poses than this cannot say anything about 3σ coverage
MIN_POSES = 50


@dataclass(frozen=True)
class Candidate:
    """One scored setting (with its fitted σ factors): fused median errors, coverage per block (%, 1σ/2σ/3σ),
    worst gap (points), NLL sum."""

    measurement_scale: float
    position_scale: float
    rotation_scale: float
    median_m: float
    median_deg: float
    coverage: dict[str, dict[str, float]]
    gap: float
    nll: float


@dataclass(frozen=True)
class FusionFit:
    """:func:`fit_fusion`'s result: the kept settings, its candidate, the starting settings' candidate (scored
    on the same drive) and every candidate, best first."""

    settings: FusionSettings
    best: Candidate
    base: Candidate
    candidates: list[Candidate]
    count: int


def _score(t_gt: np.ndarray, q_gt: np.ndarray, t: np.ndarray, q: np.ndarray, cov: np.ndarray, scale: float,
           median_m: float, median_deg: float,
           sigma_factors: tuple[float, float] | None = None) -> Candidate:
    """Score one published covariance; ``sigma_factors`` None = fit them here (position on position-2D, rotation
    on yaw: :func:`~mfapr_ros.inference.calibration.fit_scale`, the raw calibration's rule), else apply those."""
    if sigma_factors is None:
        blocks = calibration_blocks(t_gt, q_gt, t, q, cov)
        sigma_factors = (fit_scale(*blocks["position_2d"]), fit_scale(*blocks["yaw"]))
    sp, sr = sigma_factors
    blocks = calibration_blocks(t_gt, q_gt, t, q, apply_scales(cov, sp, sr))
    cov_doc = {name: coverage(*blocks[name]) for name in FIT_BLOCKS}
    return Candidate(scale, sp, sr, median_m, median_deg,
                     {name: dict(c["coverage"]) for name, c in cov_doc.items()},
                     max(max_coverage_gap(c) for c in cov_doc.values()),
                     float(sum(c["nll"] for c in cov_doc.values())))


def drive_distance_text(t_gt: Any, mapped_t: Any) -> str | None:
    """``"median X m from the nearest mapped position (…)"`` for the drive the fit ran on, or None without the
    mapped positions. Why: the fitted σ factors cover a drive about as far from the map as this one; a query much
    closer to the mapped lanes is localized better than the fit saw, and its fused covariance over-covers (measured
    on the demo world: validation drive 0.12 m from the map, forward query 0.04 m; docs/node.md)."""
    if mapped_t is None or len(t_gt) == 0:
        return None
    t = map_distance(t_gt, mapped_t)["translation_m"]
    return (f"median {t['median']:.3f} m (p90 {t['p90']:.3f} m) from the nearest mapped position; the σ factors fit "
            "drives about this far from the map (compare eval-bag's 'distance from the map' on your queries)")


def fit_fusion(base: FusionSettings, stamps_ns: Any, t: Any, q: Any, cov: Any, odom_t: Any, odom_q: Any,
               odom_ok: Any, t_gt: Any, q_gt: Any, scales: tuple[float, ...] = MEASUREMENT_SCALES,
               scored: Any = None) -> FusionFit:
    """Fit ``measurement_scale`` and the σ factors (module docstring) on one recorded drive: rows in stamp order,
    the network's poses ``t`` (N,3), ``q`` (N,4 wxyz) and covariances (N,6,6 ROS order), the odometry
    ``T_odom_base`` at each stamp (``odom_ok`` False = none) and the ground truth ``T_map_base``. ``scored``: (N,)
    bool, the rows the fit scores (default all); the fusion still runs over the whole drive, in order."""
    from mfapr_ros.evaluation.metrics import pose_errors

    stamps = np.asarray(stamps_ns, dtype=np.int64)
    t_gt, q_gt = np.asarray(t_gt, dtype=np.float64), np.asarray(q_gt, dtype=np.float64)
    n_odom = int(np.count_nonzero(odom_ok))
    if n_odom < MIN_POSES:
        raise DataError(f"fit-fusion: {n_odom} poses have odometry; at least {MIN_POSES} are needed (a drive with "
                        "odom -> base on /tf and ground truth)")
    if not scales:
        raise DataError("fit-fusion: no measurement_scale candidates to score")
    keep = np.ones(len(stamps), bool) if scored is None else np.asarray(scored, dtype=bool).reshape(-1)
    if len(keep) != len(stamps):
        raise DataError(f"fit-fusion: {len(keep)} scored flags for {len(stamps)} poses")
    if int(keep.sum()) < MIN_POSES:
        raise DataError(f"fit-fusion: {int(keep.sum())} poses are scored; at least {MIN_POSES} are needed (a longer "
                        "drive, or a larger --max-map-distance)")
    t_gt, q_gt = t_gt[keep], q_gt[keep]
    candidates: list[Candidate] = []
    base_candidate: Candidate | None = None
    for scale in sorted(set(scales) | {base.measurement_scale}):
        run = fuse_track(dataclasses.replace(base, enabled=True, measurement_scale=scale, position_scale=1.0,
                                             rotation_scale=1.0), stamps, t, q, cov, odom_t, odom_q, odom_ok)
        rt, rq, rc = run.t[keep], run.q[keep], run.covariance[keep]
        te, re = pose_errors(t_gt, q_gt, rt, rq)
        med_m, med_deg = float(np.median(te)), float(np.median(re))
        if scale in scales:
            candidates.append(_score(t_gt, q_gt, rt, rq, rc, scale, med_m, med_deg))
        if scale == base.measurement_scale:
            base_candidate = _score(t_gt, q_gt, rt, rq, rc, scale, med_m, med_deg,
                                    (base.position_scale, base.rotation_scale))
    assert base_candidate is not None
    candidates.sort(key=lambda c: (round(c.gap), round(c.nll, 9), c.measurement_scale))
    best = candidates[0]
    settings = dataclasses.replace(base, enabled=True, measurement_scale=best.measurement_scale,
                                   position_scale=best.position_scale, rotation_scale=best.rotation_scale)
    return FusionFit(settings, best, base_candidate, candidates, int(keep.sum()))


def describe(c: Candidate) -> str:
    """One line: the setting, fused median, coverage per block, worst gap, NLL."""
    cov = ", ".join(f"{name} {levels_text(v)} %" for name, v in c.coverage.items())
    return (f"measurement_scale {c.measurement_scale:g}, position_scale {c.position_scale:.3g}, "
            f"rotation_scale {c.rotation_scale:.3g}: fused "
            f"{c.median_m:.3f} m / {c.median_deg:.2f}°; {cov} inside 1σ/2σ/3σ; worst gap {c.gap:.0f} points; "
            f"NLL {c.nll:.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfapr fit-fusion", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint (NAME, NAME.json or NAME.safetensors)")
    p.add_argument("--bag", required=True, help="a held-out drive: rosbag2 with cameras, odometry (odom -> base on "
                   "/tf) and ground truth; not the bag you will report on")
    p.add_argument("--out", required=True, help="parameters file to write (YAML, for --params-file / --params)")
    p.add_argument("--params", default=None, help="node parameters file whose fusion.* settings to start from "
                   "(the odometry σ are kept); default: the node's defaults")
    p.add_argument("--odom-frame", default="odom", help="odometry frame (default odom)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="GT topic (as eval-bag)")
    g.add_argument("--gt-tf", default=None, metavar="PARENT:CHILD", help="GT from TF (as eval-bag)")
    p.add_argument("--max-map-distance", type=float, default=None, metavar="METRES",
                   help="score only the poses whose ground truth is within METRES of a mapped (training) position "
                        "(the checkpoint's retrieval database): fit on the drive's mapped places, where the robot "
                        "is meant to localize; the fusion still runs over the whole drive (default: every pose)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mfapr fit-fusion``; errors surface as MfaprError (one line, exit 2)."""
    from mfapr_ros.bag.reader import BagReader
    from mfapr_ros.core.fusion import load_gtsam
    from mfapr_ros.evaluation.eval_bag import evaluate_bag, read_odometry
    from mfapr_ros.inference.localizer import Localizer

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    load_gtsam()  # one line (what to install) before the network runs
    base = load_fusion_params(args.params) if args.params else FusionSettings()
    localizer = Localizer(args.checkpoint, device=args.device)
    res = evaluate_bag(args.checkpoint, args.bag, gt_topic=args.gt_topic, gt_tf=args.gt_tf, device=args.device,
                       progress=not args.no_progress, localizer=localizer)
    if res.covariances is None:
        raise DataError(f"fit-fusion: {args.checkpoint} outputs no covariance to fuse")
    with BagReader(args.bag) as bag:
        base_frame = localizer.rig.base_frame
        odom = read_odometry(bag, args.odom_frame, base_frame)
    if odom is None:
        raise DataError(f"fit-fusion: {args.bag} has no {args.odom_frame} -> {base_frame} transform on /tf; the fit "
                        "needs the drive's odometry")
    ot, oq, ook = odom.at(res.stamps_ns, max_gap_ns=int(0.5e9))
    mapped = localizer.retrieval.t if localizer.retrieval is not None else None
    scored = None
    if args.max_map_distance is not None:
        if not args.max_map_distance > 0:
            raise ConfigError(f"fit-fusion: --max-map-distance must be > 0 m, got {args.max_map_distance}")
        if mapped is None:
            raise DataError(f"fit-fusion: --max-map-distance needs the mapped positions; {args.checkpoint} has no "
                            "retrieval database beside it (retrain, or leave the option out)")
        scored = nearest_distance(res.t_gt, mapped) <= args.max_map_distance
        print(f"fit-fusion: scoring {int(scored.sum())} of {len(scored)} poses (within "
              f"{args.max_map_distance:g} m of a mapped position)")
    fit = fit_fusion(base, res.stamps_ns, res.t_est, res.q_est, res.covariances, ot, oq, ook, res.t_gt, res.q_gt,
                     scored=scored)
    away = drive_distance_text(res.t_gt if scored is None else res.t_gt[scored], mapped)
    header = (f"fusion.* fitted by mfapr fit-fusion on {args.bag} ({fit.count} poses, checkpoint "
              f"{args.checkpoint})\nkept:     {describe(fit.best)}\nstarting: {describe(fit.base)}\n"
              + (f"drive: {away}\n" if away else "")
              + "use: localize_node --ros-args --params-file THIS_FILE; mfapr eval-bag --params THIS_FILE")
    atomic_write_text(args.out, fusion_params_yaml(fit.settings, header))
    print(f"fit-fusion on {args.bag}: {fit.count} poses")
    print(f"  starting settings : {describe(fit.base)}")
    print(f"  kept              : {describe(fit.best)}")
    for c in fit.candidates[1:4]:
        print(f"  next              : {describe(c)}")
    if away:
        print(f"  this drive        : {away}")
    print(f"wrote {Path(args.out)}")
    return 0
