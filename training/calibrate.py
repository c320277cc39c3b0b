"""`mfapr calibrate`: fit the covariance scale of a checkpoint on a validation split and store it in the checkpoint.

    mfapr calibrate --checkpoint runs/demo/best.json --data out/demo/synth [--split validation]

The model's raw covariances (what :class:`~mfapr_ros.inference.localizer.Localizer` would publish without calibration:
``log_var`` or the default covariance, via :func:`~mfapr_ros.inference.covariance.pose_covariances`) are scored against
the split's errors; one σ factor for the position block (fitted on horizontal x, y) and one for the rotation block
(fitted on yaw) are chosen by :func:`mfapr_ros.inference.calibration.fit_scales` and written atomically into the
checkpoint JSON (``covariance_calibration``; weights untouched). Fit on validation, never on the query you report:
the query figures are then an honest test of the calibration. ``mfapr train`` runs this on its validation split.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from mfapr_ros.inference.calibration import levels_text

log = logging.getLogger("mfapr_training")


def calibrate_dataset(ckpt_path: str | Path, dataset: Any, *, fitted_on: str, device: str = "cpu",
                      batch_size: int = 16, anchor_covariance: bool | None = None) -> dict[str, Any]:
    """Fit on ``dataset`` (a ``BundleDataset`` with S = 1, poses known) and store; returns the stored dict.

    ``anchor_covariance`` (anchor-head models without ``log_var``): ``True`` fits default + anchor-mixture
    covariances, ``False`` the constant default, ``None`` fits both and keeps the one with the lower calibrated
    position-2D NLL *on this split* (the held-out query stays untouched); the Localizer follows the stored source.
    """
    from mfapr_ros.core.checkpoint import update_checkpoint_meta
    from mfapr_ros.inference.calibration import META_KEY, apply_scales, calibration_report, fit_scales, max_coverage_gap
    from mfapr_ros.inference.covariance import DEFAULT_COVARIANCE
    from mfapr_ros.models import load_model

    from .evaluate import evaluate, published_covariances

    model, ckpt = load_model(ckpt_path, device=device)
    res = evaluate(model, dataset, batch_size, device)
    poses = (res["t_gt"], res["q_gt"], res["t_est"], res["q_est"])
    has_anchors = res.get("log_var") is None and "anchor_logits" in res
    options = [anchor_covariance] if anchor_covariance is not None or not has_anchors else [True, False]
    fits = []
    for anchors in options:
        raw = published_covariances(res, ckpt, calibrated=False, anchor_covariance=bool(anchors))
        sc = fit_scales(*poses, raw)
        fits.append((bool(anchors), raw, sc, calibration_report(*poses, raw),
                     calibration_report(*poses, apply_scales(raw, sc["position_scale"], sc["rotation_scale"]))))
    candidates = {("anchor_mixture" if a else "default_covariance"): after["position_2d"]["nll"]
                  for a, _, _, _, after in fits} if len(fits) > 1 else None
    anchor_covariance, raw, scales, before, after = min(fits, key=lambda f: f[4]["position_2d"]["nll"])
    doc = {**scales, "fitted_on": fitted_on, "n": len(res["t_est"]),
           "source": "log_var" if res.get("log_var") is not None
           else "anchor_mixture" if anchor_covariance and has_anchors else "default_covariance",
           "source_candidates_nll_position_2d": candidates,
           # the diagonal the scales were fitted on when the model predicts no variance (the Localizer warns if
           # it is run with another default_covariance)
           "default_covariance": None if res.get("log_var") is not None
           else [DEFAULT_COVARIANCE[0]] * 3 + [DEFAULT_COVARIANCE[1]] * 3,
           "method": "per-block σ factor minimising max |coverage - chi2 target| at 1/2/3 sigma "
                     "(position on x,y; rotation on yaw)",
           "fitted_at_unix": time.time(),
           "coverage_before": {k: v["coverage"] for k, v in before.items()},
           "coverage_after": {k: v["coverage"] for k, v in after.items()},
           "nll_before": {k: v["nll"] for k, v in before.items()},
           "nll_after": {k: v["nll"] for k, v in after.items()}}
    update_checkpoint_meta(ckpt.path, {META_KEY: doc})
    log.info("covariance calibration of %s on %s (%d bundles): position ×%.3g, rotation ×%.3g; worst 1/2/3σ gap "
             "position-2D %.1f → %.1f points, yaw %.1f → %.1f points", ckpt.path, fitted_on, doc["n"],
             scales["position_scale"], scales["rotation_scale"], max_coverage_gap(before["position_2d"]),
             max_coverage_gap(after["position_2d"]), max_coverage_gap(before["yaw"]), max_coverage_gap(after["yaw"]))
    return doc


def calibrate_checkpoint(ckpt_path: str | Path, data_dir: str | Path, split: str = "validation", *,
                         data_format: str = "auto", device: str = "auto", max_bundles: int | None = None,
                         batch_size: int = 16, gt_topic: str | None = None,
                         anchor_covariance: bool | None = None) -> dict[str, Any]:
    """Load ``split`` of ``data_dir`` bundled as the model was trained, fit, store (see the module docstring)."""
    import torch.utils.data as tud

    from mfapr_ros.core.checkpoint import load_checkpoint
    from mfapr_ros.core.errors import DataError
    from mfapr_ros.core.preprocess import PreprocessConfig

    from .data import detect_format, even_subset, load_split
    from .datasets import BundleDataset
    from .distributed import resolve_device

    ckpt = load_checkpoint(ckpt_path)
    rig, pre = ckpt.rig, PreprocessConfig.from_dict(ckpt.preprocess)
    fmt = detect_format(str(data_dir)) if data_format == "auto" else data_format
    sync = ((ckpt.meta.get("provenance") or {}).get("training_config") or {}).get("data", {}).get("sync") or {}
    data = load_split(fmt, str(data_dir), split, rig=rig, cameras=rig.camera_names, gt_topic=gt_topic, sync=sync)
    recs = [r for r in data.records if r.has_pose]
    if not recs:
        raise DataError(f"{data_dir} (split '{split}'): no bundle with a ground-truth pose to calibrate on")
    ds: Any = BundleDataset(recs, rig, pre, steps=1, track_aug=None, photometric=False)
    if max_bundles:
        ds = tud.Subset(ds, even_subset(len(ds), max_bundles))
    return calibrate_dataset(ckpt.path, ds, fitted_on=f"{data_dir}:{split}", device=resolve_device(device),
                             batch_size=batch_size, anchor_covariance=anchor_covariance)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr calibrate`."""
    p = argparse.ArgumentParser(prog="mfapr calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint NAME(.json); its JSON is updated in place")
    p.add_argument("--data", required=True, help="synth OUT folder, kapture root / split folder, or bag folder")
    p.add_argument("--split", default="validation", help="split to fit on (default validation; never the query)")
    p.add_argument("--format", choices=("auto", "synth", "kapture", "rosbag"), default="auto")
    p.add_argument("--gt-topic", help="rosbag: ground-truth pose topic")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-bundles", type=int, help="fit on this many evenly spaced bundles")
    p.add_argument("--covariance-source", choices=("auto", "anchor", "default"), default="auto",
                   help="anchor-head models: default + the anchor mixture's spread, the constant default, or auto "
                        "(both fitted, the lower calibrated NLL on this split kept); the Localizer follows it")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = calibrate_checkpoint(args.checkpoint, args.data, args.split, data_format=args.format, device=args.device,
                               max_bundles=args.max_bundles, batch_size=max(1, args.batch_size),
                               gt_topic=args.gt_topic,
                               anchor_covariance={"auto": None, "anchor": True, "default": False}[
                                   args.covariance_source])
    for when in ("before", "after"):
        cov = doc[f"coverage_{when}"]
        print(f"{when:>6}: " + "; ".join(f"{k} {levels_text(c, 1)} % (NLL {doc[f'nll_{when}'][k]:.3f})"
                                          for k, c in cov.items()))
    print(f"mfapr calibrate: position ×{doc['position_scale']:.4g}, rotation ×{doc['rotation_scale']:.4g} "
          f"({doc['source']}) stored in {args.checkpoint}")
    return 0
