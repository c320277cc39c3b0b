"""`mfapr evaluate`: a checkpoint on a dataset split → metrics + the shared report (JSON, Markdown, PNG).

    mfapr evaluate --checkpoint runs/demo/best.json --data out/demo/synth [--split query] --out runs/demo/eval

The report is written by :mod:`mfapr_ros.evaluation` (the same module as `mfapr eval-bag` and the evaluator node),
with the mean training pose (stored in the checkpoint's provenance by `mfapr train`) as the baseline, so every
number has context. Latency is the model forward time per bundle on the chosen device (batch size 1 by default,
i.e. what the node pays per bundle; images are already decoded and preprocessed).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import DataError

log = logging.getLogger("mfapr_training")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mfapr evaluate", description="Evaluate a checkpoint on a kapture split, a "
                                "synthetic world or a rosbag2 with ground truth; writes the JSON/Markdown/PNG report.")
    p.add_argument("--checkpoint", required=True, help="checkpoint NAME(.json) written by `mfapr train`")
    p.add_argument("--data", required=True, help="synth OUT folder, kapture dataset root / split folder, or bag folder")
    p.add_argument("--format", choices=("auto", "synth", "kapture", "rosbag"), default="auto",
                   help="data format (auto: synth if DATA/rig.yaml exists, rosbag if DATA or DATA/SPLIT has "
                   "metadata.yaml, else kapture)")
    p.add_argument("--split", default="query", help="split to evaluate (default query; '' = DATA is the split)")
    p.add_argument("--gt-topic", help="rosbag: ground-truth pose topic (default: the checkpoint's data.gt)")
    p.add_argument("--gt-tf", metavar="PARENT:CHILD", help="rosbag: ground truth from TF, e.g. map:base_link "
                   "(default: the checkpoint's data.gt)")
    p.add_argument("--stamp-unit", help="kapture timestamp unit: auto | ns | us | ms | s | frame@<N>hz "
                   "(default: the checkpoint's data.stamp_unit)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--batch-size", type=int, default=1, help="bundles per forward (1 = per-bundle latency)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-bundles", type=int, help="evaluate only this many evenly spaced bundles")
    p.add_argument("--no-plots", action="store_true", help="JSON + Markdown only")
    return p.parse_args(argv)


def evaluate(model: Any, dataset: Any, batch_size: int, device: str, retrieval: Any = None) -> dict[str, Any]:
    """Run ``model`` over ``dataset`` (items with S = 1) in order; returns arrays of estimates, GT and latency
    (and, with a :class:`~mfapr_ros.inference.baselines.RetrievalDatabase`, the retrieval baseline's poses)."""
    import torch

    from mfapr_ros.inference.covariance import model_anchors

    from .batches import iterate_once
    from .step import TrainStep

    out: dict[str, list[Any]] = {k: [] for k in ("t_est", "q_est", "t_gt", "q_gt", "stamps", "tracks", "masks",
                                                 "latency", "ret_t", "ret_q", "log_var",
                                                 "anchor_logits", "anchor_positions", "t_norm")}
    model.eval()
    with torch.inference_mode():
        for batch in iterate_once(dataset, batch_size):
            images, mask, t, q, _ = TrainStep.flatten(batch)
            images, mask_d = images.to(device), mask.to(device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred = model(images, mask_d)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / len(images)
            out["t_est"].append(pred["t"].double().cpu().numpy())
            out["q_est"].append(pred["q"].float().cpu().numpy())
            out["t_gt"].append(t.numpy())
            out["q_gt"].append(q.numpy())
            out["masks"].append(mask.numpy())
            if pred.get("log_var") is not None:  # → covariances exactly as the Localizer makes them
                out["log_var"].append(pred["log_var"].float().cpu().numpy())
            anchors = model_anchors(pred)
            if anchors is not None:
                for key, a in zip(("anchor_logits", "anchor_positions", "t_norm"), anchors, strict=True):
                    out[key].append(a)
            if retrieval is not None:
                from mfapr_ros.inference.baselines import thumbnails

                rt, rq, _ = retrieval.query(thumbnails(images.cpu(), mask))
                out["ret_t"].append(rt)
                out["ret_q"].append(rq)
            out["stamps"].append(np.asarray(batch["stamp_ns"]).reshape(-1))
            tr = batch["track"]
            out["tracks"] += list(tr) if isinstance(tr, (list, tuple)) else [str(tr)] * len(images)
            out["latency"] += [dt] * len(images)
    cat = {k: np.concatenate(v) for k, v in out.items() if k not in ("tracks", "latency") and v}
    return {**cat, "tracks": out["tracks"], "latency": np.asarray(out["latency"])}


def published_covariances(res: dict[str, Any], ckpt: Any, calibrated: bool = True,
                          anchor_covariance: bool | None = None) -> np.ndarray:
    """``(N, 6, 6)`` covariances of :func:`evaluate`'s rows as the node would publish them: the Localizer's one
    function (:func:`mfapr_ros.inference.covariance.pose_covariances`: ``log_var``, or its default covariance plus the
    anchor mixture's spread) and, when ``calibrated``, the checkpoint's stored calibration scales."""
    from mfapr_ros.inference.calibration import stored_scales, uses_anchor_covariance
    from mfapr_ros.inference.covariance import DEFAULT_COVARIANCE, covariance_matrix, pose_covariances

    t_scale = float(ckpt.meta["model"]["pose_normalization"]["t_scale"])
    if anchor_covariance is None:  # as the Localizer: follow the stored calibration's source
        anchor_covariance = uses_anchor_covariance(ckpt.meta)
    return pose_covariances(res.get("log_var"), len(res["t_est"]), t_scale, covariance_matrix(DEFAULT_COVARIANCE),
                            stored_scales(ckpt.meta) if calibrated else None,
                            (res["anchor_logits"], res["anchor_positions"], res["t_norm"])
                            if anchor_covariance and "anchor_logits" in res else None)


def calibration_section(res: dict[str, Any], ckpt: Any) -> dict[str, Any] | None:
    """The report's ``calibration`` section for :func:`evaluate`'s rows: coverage/NLL of the covariances the node
    would publish (:func:`published_covariances`), or ``None`` when there are no rows."""
    from mfapr_ros.inference.calibration import report_section

    if len(res["t_est"]) == 0:
        return None
    return report_section(res["t_gt"], res["q_gt"], res["t_est"], res["q_est"], published_covariances(res, ckpt),
                          ckpt.meta)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch.utils.data as tud

    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.evaluation import print_summary, write_report
    from mfapr_ros.inference.baselines import MEAN_POSE_KEY, checkpoint_mean_pose
    from mfapr_ros.models import load_model

    from .data import detect_format, even_subset, load_split
    from .datasets import BundleDataset
    from .distributed import resolve_device

    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, device=device)
    rig = ckpt.rig
    pre = PreprocessConfig.from_dict(ckpt.preprocess)
    fmt = detect_format(args.data, args.split) if args.format == "auto" else args.format
    # bundle the way the model was trained: the checkpoint's data.sync (empty = the node's defaults)
    trained = ((ckpt.meta.get("provenance") or {}).get("training_config") or {}).get("data", {})
    sync = trained.get("sync") or {}
    # read the data the way the model was trained: its stamp unit and GT source unless given here
    # (data.gt; checkpoints before it stored data.gt_topic / data.gt_tf)
    from .config import split_gt

    cfg_topic, cfg_tf = split_gt(trained.get("gt")) if "gt" in trained else (trained.get("gt_topic"),
                                                                             trained.get("gt_tf"))
    gt_topic = args.gt_topic or (None if args.gt_tf else cfg_topic)
    gt_tf = args.gt_tf or (None if args.gt_topic else cfg_tf)
    data = load_split(fmt, args.data, args.split, rig=rig, cameras=rig.camera_names, gt_topic=gt_topic,
                      gt_tf=gt_tf, sync=sync, stamp_unit=args.stamp_unit or trained.get("stamp_unit") or "auto")
    with_pose = [r for r in data.records if r.has_pose]
    skipped = len(data.records) - len(with_pose)
    if skipped:
        log.warning("%d of %d bundles have no ground-truth pose and are not evaluated", skipped, len(data.records))
    if not with_pose:
        raise DataError(f"{args.data} (split '{args.split}'): no bundle has a ground-truth pose; evaluate a split "
                        "with trajectories (e.g. --split validation)")
    ds = BundleDataset(with_pose, rig, pre, steps=1, track_aug=None, photometric=False)
    if args.max_bundles:
        ds = tud.Subset(ds, even_subset(len(ds), args.max_bundles))
    from mfapr_ros.inference.baselines import load_for_checkpoint

    database = load_for_checkpoint(ckpt.path)
    if database is None:
        log.warning("no retrieval database beside %s: the report has no image-retrieval baseline", ckpt.path)
    res = evaluate(model, ds, max(1, args.batch_size), device, database)
    prov = ckpt.meta.get("provenance", {})
    baseline = checkpoint_mean_pose(ckpt.meta)
    if baseline is None:
        log.warning("checkpoint has no %s in its provenance: the report has no baseline", MEAN_POSE_KEY)
    meta = {"checkpoint": str(ckpt.path), "data": str(args.data), "format": fmt, "split": args.split,
            "device": device, "batch_size": args.batch_size, "cameras": rig.camera_names,
            "drops": {**dict(data.drops), **({"no_ground_truth": skipped} if skipped else {})},
            "model": ckpt.meta.get("model", {}).get("backbone"), "fusion": ckpt.meta.get("model", {}).get("fusion"),
            "training_config": prov.get("training_config", {}).get("name"), "step": prov.get("step")}
    paths = write_report(args.out, stamps_ns=res["stamps"], t_gt=res["t_gt"], q_gt=res["q_gt"], t_est=res["t_est"],
                         q_est=res["q_est"], baseline=baseline, masks=res["masks"], tracks=res["tracks"],
                         latency_s=res["latency"], meta=meta, camera_names=rig.camera_names,
                         plots_enabled=not args.no_plots,
                         retrieval=(res["ret_t"], res["ret_q"]) if "ret_t" in res else None,
                         calibration=calibration_section(res, ckpt),
                         mapped_t=database.t if database is not None else None)
    from mfapr_ros.evaluation import load_report

    print_summary(load_report(paths["json"]))
    print(f"mfapr evaluate: report in {Path(args.out)} ({', '.join(sorted(p.name for p in paths.values()))})")
    return 0
