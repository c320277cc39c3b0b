"""`mfapr train`: build data, model and engine from a YAML config and train.

    mfapr train --config training/configs/demo.yaml [--set optim.lr=3e-4 ...] [--out DIR] [--resume]
    torchrun --nproc_per_node 4 -m mfapr_training.train --config ... --out DIR      # several GPUs / nodes

Everything that touches the dataset formats lives in :func:`mfapr_training.data.load_split` (shared with `mfapr
evaluate`, `calibrate` and `explain`), so the commands read data identically: the same reader, the same camera
order (the rig's), the same preprocessing.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.geometry import mean_pose
from mfapr_ros.core.rig import Rig, load_rig
from mfapr_ros.inference.baselines import mean_pose_record

from .config import ExperimentConfig, load_config, shift_aug_setting, split_gt
from .data import even_subset, load_split
from .datasets.photometric import PhotometricConfig

log = logging.getLogger("mfapr_training")


# --------------------------------------------------------------------------------------------- data
def resolve_rig(data_format: str, root: str, rig: str | None) -> Rig | None:
    """The rig to read with: ``data.rig`` if given, the synthetic world's ``rig.yaml``, else the dataset's own."""
    if rig:
        return load_rig(rig)
    if data_format == "synth":
        path = Path(root) / "rig.yaml"
        if not path.is_file():
            raise DataError(f"data.root '{root}' has no rig.yaml: is it an `mfapr synth --out` folder? "
                            "(for a kapture dataset set data.format=kapture)")
        return load_rig(path)
    return None


def bind_topics(rig: Rig, topics: dict[str, str], transport: str | None, placeholders: bool) -> Rig:
    """The rig with ``data.topics`` / ``data.transport`` applied (what the checkpoint stores and the node binds).

    kapture has no ROS topics: without them the checkpoint carries placeholders (``/kapture/<id>/image_raw``,
    compressed) and that is said loudly once, with the two ways to set the real ones."""
    from dataclasses import replace

    unknown = sorted(set(topics) - set(rig.camera_names))
    if unknown:
        raise ConfigError(f"data.topics names camera(s) {unknown} that the rig does not have; cameras: "
                          f"{rig.camera_names}")
    cams = tuple(replace(c, topic=topics.get(c.name, c.topic), transport=transport or c.transport)
                 for c in rig.cameras)
    out = Rig(rig.name, cams, rig.base_frame, rig.source)
    still = [c for c in out.cameras if placeholders and c.name not in topics]
    if still:
        log.warning("camera topics are PLACEHOLDERS (the dataset has no ROS topics): %s. The checkpoint's rig will "
                    "bind to them; set the robot's topics now with --set data.topics='{%s}' --set "
                    "data.transport=raw|compressed, or at deployment (node parameters topics.<camera> / "
                    "transport.<camera>, `mfapr eval-bag --topics`; docs/own_data.md)",
                    ", ".join(f"{c.name} → {c.subscribe_topic} [{c.transport}]" for c in still),
                    ", ".join(f"{c.name}: /my/{c.name}/image_raw" for c in still))
    return out


def log_camera_models(rig: Rig) -> None:
    """Say once which cameras have a lens model with distortion: the models take images as they are (no
    undistortion), so they learn through the distortion and the node must get the same, unrectified images."""
    distorted = [c for c in rig.cameras if c.intrinsics is not None and c.intrinsics.distorted]
    if distorted:
        log.info("camera model: %s; the network ignores distortion (images are used as recorded, not "
                 "undistorted): deploy on the same unrectified image topics. The checkpoint's rig keeps the model "
                 "and its parameters", "; ".join(f"{c.name} {c.intrinsics.model} {list(c.intrinsics.distortion)}"
                                                 for c in distorted))


def warn_no_validation(val_split: str | None) -> None:
    """One loud warning listing what training without a validation split does not do."""
    log.warning("NO VALIDATION SPLIT (data.val_split=%s): these checks are OFF for this run: the training health "
                "check (summary 'health': null), best-checkpoint selection (no best.json: use last.json), "
                "validation metrics in the log, the covariance calibration (`mfapr calibrate` later on a split "
                "with poses). Make a validation split with `mfapr split` to turn them on", val_split)


def build_datasets(cfg: ExperimentConfig) -> tuple[Any, Any, Any, Any]:
    """``(rig, train_set, val_set, train_bundles)``; track augmentation and photometric jitter on training only."""
    import torch.utils.data as tud

    from .datasets import BundleDataset, TrackAugmentation

    d = cfg.data
    rig = resolve_rig(d.format, d.root, d.rig)
    gt_topic, gt_tf = split_gt(d.gt)
    train = load_split(d.format, d.root, d.train_split, rig=rig, cameras=d.cameras, gt_topic=gt_topic,
                       gt_tf=gt_tf, max_gap_ms=d.max_gap_ms, sync=d.sync, stamp_unit=d.stamp_unit,
                       setting="data.train_split")
    log.info("%s", train.summary())
    rig = bind_topics(train.rig, d.topics, d.transport, bool(train.info.get("placeholder_topics")))
    train.rig = rig
    log_camera_models(rig)
    pre = cfg.preprocess
    aug = None
    if d.track_aug not in (False, None, "none"):
        aug = TrackAugmentation(rig, d.track_aug, 0.5, *d.track_aug_max_residual)
        log.info("%s", aug.describe())
    # Tuples only feed the relative loss; without it every sample is one bundle, so a batch holds batch_size
    # distinct places instead of batch_size/steps places seen 0.2 s apart.
    steps = d.steps if cfg.loss.relative else 1
    skip = tuple_skip(train, d.spacing_s) if (steps > 1 and d.spacing_s) else d.skip
    if steps > 1:
        log.info("relative loss: %d-frame tuples, %d frames apart", steps, skip)
    photometric = PhotometricConfig.from_dict(d.photometric) if isinstance(d.photometric, dict) else d.photometric
    yaw_aug = None
    if d.yaw_aug_deg == "auto":
        from .datasets.yaw_augmentation import auto_yaw_aug

        d.yaw_aug_deg, why = auto_yaw_aug(rig, pre)  # the checkpoint's config records the number training used
        log.info("yaw augmentation (data.yaw_aug_deg: auto): %s", why)
    if d.yaw_aug_deg:
        from .datasets.yaw_augmentation import YawAugmentation

        yaw_aug = YawAugmentation(rig, pre, d.yaw_aug_deg)
        log.info("yaw augmentation: the rig turned by up to ±%.1f° about its up axis, images re-projected "
                 "between its cameras", d.yaw_aug_deg)
    shift_aug = None
    sa = d.shift_aug = shift_aug_setting(d.shift_aug)  # a config built in code may not have gone through load_config
    if sa["max_m"] == "auto":
        from .datasets.shift_augmentation import auto_shift_aug

        # recorded in the checkpoint's config; needs the mapping poses: one lane or several
        sa["max_m"], why = auto_shift_aug(rig, pre, sa["depth_m"], *train.poses())
        log.info("shift augmentation (data.shift_aug: auto): %s", why)
    if sa["max_m"]:
        from .datasets.shift_augmentation import ShiftAugmentation

        shift_aug = ShiftAugmentation(rig, pre, sa["max_m"], sa["depth_m"])
        log.info("shift augmentation: the rig moved sideways by up to ±%.2f m, images re-projected between its "
                 "cameras (walls assumed %.1f m away)", sa["max_m"], sa["depth_m"])
    train_ds = BundleDataset(train, rig, pre, steps=steps, skip=skip, track_aug=aug, photometric=photometric,
                             yaw_aug=yaw_aug, shift_aug=shift_aug)
    t0 = time.perf_counter()
    stats = train_ds.predecode()  # decode + resize once, in threads, before the first step (not inside it)
    log.info("training images decoded: %d in %.1f s (%.0f MB cached)", int(stats["images"]),
             time.perf_counter() - t0, stats["cache_mb"])
    train_ds = tud.Subset(train_ds, even_subset(len(train_ds), d.max_train)) if d.max_train else train_ds
    val_ds = None
    if d.val_split:
        val = load_split(d.format, d.root, d.val_split, rig=rig, cameras=rig.camera_names, gt_topic=gt_topic,
                         gt_tf=gt_tf, max_gap_ms=d.max_gap_ms, sync=d.sync, stamp_unit=d.stamp_unit,
                         setting="data.val_split")
        val_ds = BundleDataset(val, rig, pre, steps=1, track_aug=None, photometric=False)
        val_ds = tud.Subset(val_ds, even_subset(len(val_ds), d.max_val)) if d.max_val else val_ds
    return rig, train_ds, val_ds, train


def tuple_skip(bundles: Any, spacing_s: float) -> int:
    """Frames between tuple members for ``data.spacing_s`` seconds, from the split's median frame period.

    Why seconds, not frames: MapNet's relative loss needs frames far enough apart that their relative pose is not
    ~identity (at 10 Hz, 0.2 s is 1° of yaw, which a constant prediction satisfies for free); the frame rate
    differs between datasets, the spacing that works does not.
    """
    by_track: dict[str, list[int]] = {}
    for r in bundles.records:
        by_track.setdefault(r.track, []).append(r.stamp_ns)
    periods = [np.diff(sorted(v)) for v in by_track.values() if len(v) > 1]
    if not periods:
        raise DataError("data.spacing_s: the training split has no track with two bundles")
    period_s = float(np.median(np.concatenate(periods))) / 1e9
    return max(1, int(round(spacing_s / max(period_s, 1e-9))))


def model_config(cfg: ExperimentConfig, rig: Rig, pose_norm: dict[str, Any]) -> dict[str, Any]:
    """The model section with a ``preset`` expanded and the data-bound keys filled (cameras, size, extrinsics,
    pose normalisation); a conflicting explicit value is an error, not silently replaced."""
    from mfapr_ros.models import extrinsics_from_rig, preset

    m = dict(cfg.model)
    name = m.pop("preset", None)
    out = preset(name, **m) if name else m
    bound = {"num_cameras": rig.num_cameras, "image_size": cfg.preprocess.crop}
    for k, v in bound.items():
        if k in m and m[k] != v:
            raise ConfigError(f"{cfg.source}: model.{k} is {m[k]} but the data gives {v} (rig '{rig.name}' / "
                              f"preprocess.crop); remove model.{k}")
        out[k] = v
    out["extrinsics"] = extrinsics_from_rig(rig)
    out["pose_normalization"] = pose_norm
    if isinstance(out.get("fusion"), dict) and out["fusion"].get("symmetric") == "auto":
        from mfapr_ros.models import resolve_config
        from mfapr_ros.models.symmetry import unavailable

        why = unavailable(resolve_config({**out, "fusion": {**out["fusion"], "symmetric": False}}))
        log.info("%s", "model.fusion.symmetric auto → on: the rig's cyclic slot shifts are exact symmetries, the "
                 "head averages over them (track augmentation built in)" if why is None else
                 f"model.fusion.symmetric auto → off: {why}")
    return out


def write_retrieval_databases(out: Path, train_ds: Any) -> None:
    """The image-retrieval baseline's database (thumbnails + poses of the training bundles, without augmentation)
    beside ``best`` and ``last``, so every evaluation of this model can show whether it beats retrieval."""
    import torch

    from mfapr_ros.inference.baselines import RetrievalDatabase, database_path

    inner = train_ds.dataset if hasattr(train_ds, "dataset") else train_ds  # a max_train Subset
    plain = type(inner)(inner.records, inner.rig, inner.cfg, steps=1, track_aug=None, photometric=False)
    plain.cache = inner.cache  # decoded images are reused, not decoded again

    def batches() -> Any:
        for i in range(0, len(plain), 64):
            items = [plain[k] for k in range(i, min(i + 64, len(plain)))]
            keep = [it for it in items if bool(torch.isfinite(it["t"]).all())]
            if keep:
                yield (np.concatenate([it["images"].numpy() for it in keep]),
                       np.concatenate([it["mask"].numpy() for it in keep]),
                       np.concatenate([it["t"].numpy() for it in keep]),
                       np.concatenate([it["q"].numpy() for it in keep]))

    db = RetrievalDatabase.build(batches())
    written = []
    for name in ("best", "last"):
        if (out / f"{name}.json").exists():
            db.save(database_path(out / f"{name}.json"))
            written.append(str(database_path(out / f"{name}.json")))
    log.info("retrieval baseline database: %d training bundles → %s", len(db.t), ", ".join(written) or "nothing "
             "(no checkpoint written)")


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mfapr train", description="Train a multi-camera pose regressor from a YAML "
                                "config (see docs/training.md). Runs under torchrun for several GPUs/nodes.")
    p.add_argument("--config", required=True, help="YAML file or shipped name (demo, synthetic_input, paper/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 --set data.root=/data (repeatable)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.json")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if args.quiet:
        cfg.train.progress = False
    out = Path(args.out or Path("runs") / cfg.name)
    if not args.resume and (out / "checkpoints" / "latest.json").exists():
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    import torch

    from mfapr_ros.models import build_model, model_meta

    from .datasets import pose_normalization
    from .distributed import init_distributed, shutdown
    from .engine import Trainer

    info = init_distributed(cfg.train.device)
    try:
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        rig, train_ds, val_ds, train_set = build_datasets(cfg)
        if val_ds is None and info.is_main:
            warn_no_validation(cfg.data.val_split)
        pose_norm = pose_normalization(train_set)
        model = build_model(model_config(cfg, rig, pose_norm))
        t_train, q_train = train_set.poses()
        if model.config["num_anchors"]:
            from .anchors import farthest_point_anchors, offset_axis_scale

            anchors, spacing = farthest_point_anchors(t_train, model.config["num_anchors"])
            axis_scale = offset_axis_scale(t_train, spacing)
            model.set_anchors(anchors, spacing, axis_scale)
            log.info("anchor head: %d anchors over the training trajectories, spacing %.2f m, offset scale x/y/z "
                     "%.2f/%.2f/%.2f", len(anchors), spacing, *axis_scale)
        mt, mq = mean_pose(t_train, q_train)
        pre = cfg.preprocess
        provenance = {"dataset": {"format": cfg.data.format, "root": cfg.data.root, "train_split": cfg.data.train_split,
                                  "val_split": cfg.data.val_split, "train_samples": len(train_ds),
                                  "val_samples": len(val_ds) if val_ds is not None else 0,
                                  "drops": dict(train_set.drops)},
                      **mean_pose_record(mt, mq),
                      "git": git_commit(), "command": " ".join(["mfapr", "train", *(argv or sys.argv[1:])]),
                      "world_size": info.world_size}
        trainer = Trainer(cfg, model, train_ds, val_ds, out, lambda m, prov: model_meta(m, rig, pre, prov), info,
                          provenance)
        if info.is_main:
            log.info("training %s: %d samples/epoch, %d steps, device %s, world size %d → %s", cfg.name,
                     len(train_ds), trainer.total_steps, info.device, info.world_size, out)
        summary = trainer.fit(resume=args.resume)
        if info.is_main:
            write_retrieval_databases(out, train_ds)
            if val_ds is not None and (out / "best.json").exists():  # covariance calibration on validation
                from .calibrate import calibrate_dataset

                calibrate_dataset(out / "best.json", val_ds, fitted_on=f"{cfg.data.root}:{cfg.data.val_split}",
                                  device=str(info.device))
            best = summary.get("best")
            # without validation (data.val_split: null) no best checkpoint is chosen: name only what was written
            model = out / "best.json" if (out / "best.json").exists() else out / "last.json"
            print(f"mfapr train: {cfg.name}: {summary['global_step']} steps; best {cfg.train.best_metric} "
                  f"{best if best is None else round(best, 4)}; model {model}"
                  + (f" (last: {out / 'last.json'})" if model.name == "best.json" else " (no validation split: "
                     "no best checkpoint)"))
    finally:
        shutdown()
    return 0


if __name__ == "__main__":  # torchrun -m mfapr_training.train ...
    from mfapr_ros.core.errors import MfaprError

    try:
        sys.exit(main())
    except MfaprError as e:
        print(f"mfapr train: error: {e}", file=sys.stderr)
        sys.exit(2)
