"""`mfapr train`: build data, model and engine from a YAML config and train.

    mfapr train --config training/configs/demo.yaml [--set optim.lr=3e-4 ...] [--out DIR] [--resume]
    torchrun --nproc_per_node 4 -m mfapr_training.train --config ... --out DIR      # several GPUs / nodes

Everything that touches the dataset formats lives in :func:`load_split` (shared with `mfapr evaluate`), so the
two commands read data identically: the same reader, the same camera order (the rig's), the same preprocessing.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.errors import ConfigError, DataError
from mfapr_ros.geometry import mean_pose
from mfapr_ros.preprocess import PreprocessConfig
from mfapr_ros.rig import Rig, load_rig

from .config import ExperimentConfig, load_config

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


def load_split(data_format: str, root: str, split: str, *, rig: Rig | None = None,
               cameras: list[str] | str | None = None, gt_topic: str | None = None,
               max_gap_ms: float | None = None) -> Any:
    """One split as a ``BundleSet`` (``synth``/``kapture``: a kapture split folder; ``rosbag``: ``root/split``
    is a bag, or ``root`` itself when ``split`` is empty). ``max_gap_ms`` (``data.max_gap_ms``): time gap that
    starts a new track; ``None`` = the reader's default (1 s)."""
    if not root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. --set data.root=/data/naverlabs")
    if not Path(root).exists():
        raise DataError(f"data.root '{root}' does not exist")
    gap = {} if max_gap_ms is None else {"track_gap_ns": int(round(max_gap_ms * 1e6))}
    if data_format in ("synth", "kapture"):
        from .datasets import read_kapture

        cams = cameras if cameras is not None else (rig.camera_names if rig is not None else None)
        return read_kapture(root, cams, split=split, rig=rig, **gap)
    if data_format == "rosbag":
        from .datasets import GroundTruthSpec, read_rosbag

        if rig is None:
            raise ConfigError("data.format=rosbag needs data.rig (the rig YAML that names the camera topics)")
        bag = Path(root) / split if split else Path(root)
        gt = GroundTruthSpec(topic=gt_topic) if gt_topic else None
        if isinstance(cameras, str):
            raise ConfigError(f"data.cameras '{cameras}' names a kapture camera subset; for rosbag give camera names")
        if cameras:
            rig = rig.subset(cameras)
        return read_rosbag(bag, rig, gt=gt, track=split or None, **gap)
    raise ConfigError(f"data.format is '{data_format}'; expected synth, kapture or rosbag")


def even_subset(n: int, k: int | None) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (all when ``k`` is None or ≥ n): CPU-scale runs keep coverage."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def build_datasets(cfg: ExperimentConfig) -> tuple[Any, Any, Any, Any]:
    """``(rig, train_set, val_set, train_bundles)``; track augmentation and photometric jitter on training only."""
    import torch.utils.data as tud

    from .datasets import BundleDataset

    d = cfg.data
    rig = resolve_rig(d.format, d.root, d.rig)
    train = load_split(d.format, d.root, d.train_split, rig=rig, cameras=d.cameras, gt_topic=d.gt_topic,
                       max_gap_ms=d.max_gap_ms)
    log.info("%s", train.summary())
    rig = train.rig
    pre = PreprocessConfig(resize=cfg.preprocess.resize, crop=cfg.preprocess.crop)
    aug = d.track_aug if d.track_aug not in (False, None, "none") else None
    train_ds = BundleDataset(train, rig, pre, steps=d.steps, skip=d.skip, track_aug=aug, photometric=d.photometric)
    train_ds = tud.Subset(train_ds, even_subset(len(train_ds), d.max_train)) if d.max_train else train_ds
    val_ds = None
    if d.val_split:
        val = load_split(d.format, d.root, d.val_split, rig=rig, cameras=rig.camera_names, gt_topic=d.gt_topic,
                         max_gap_ms=d.max_gap_ms)
        val_ds = BundleDataset(val, rig, pre, steps=1, track_aug=None, photometric=False)
        val_ds = tud.Subset(val_ds, even_subset(len(val_ds), d.max_val)) if d.max_val else val_ds
    return rig, train_ds, val_ds, train


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
    return out


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
    from .loop import Trainer

    info = init_distributed(cfg.train.device)
    try:
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        rig, train_ds, val_ds, train_set = build_datasets(cfg)
        pose_norm = pose_normalization(train_set)
        model = build_model(model_config(cfg, rig, pose_norm))
        t_train, q_train = train_set.poses()
        mt, mq = mean_pose(t_train, q_train)
        pre = PreprocessConfig(resize=cfg.preprocess.resize, crop=cfg.preprocess.crop)
        provenance = {"dataset": {"format": cfg.data.format, "root": cfg.data.root, "train_split": cfg.data.train_split,
                                  "val_split": cfg.data.val_split, "train_samples": len(train_ds),
                                  "val_samples": len(val_ds) if val_ds is not None else 0,
                                  "drops": dict(train_set.drops)},
                      "train_mean_pose": {"t": [float(x) for x in mt], "q_wxyz": [float(x) for x in mq]},
                      "git": git_commit(), "command": " ".join(["mfapr", "train", *(argv or sys.argv[1:])]),
                      "world_size": info.world_size}
        trainer = Trainer(cfg, model, train_ds, val_ds, out, lambda m, prov: model_meta(m, rig, pre, prov), info,
                          provenance)
        if info.is_main:
            log.info("training %s: %d samples/epoch, %d steps, device %s, world size %d → %s", cfg.name,
                     len(train_ds), trainer.total_steps, info.device, info.world_size, out)
        summary = trainer.fit(resume=args.resume)
        if info.is_main:
            best = summary.get("best")
            print(f"mfapr train: {cfg.name}: {summary['global_step']} steps; best {cfg.train.best_metric} "
                  f"{best if best is None else round(best, 4)}; model {out / 'best.json'} (last: {out / 'last.json'})")
    finally:
        shutdown()
    return 0


if __name__ == "__main__":  # torchrun -m mfapr_training.train ...
    from mfapr_ros.errors import MfaprError

    try:
        sys.exit(main())
    except MfaprError as e:
        print(f"mfapr train: error: {e}", file=sys.stderr)
        sys.exit(2)
