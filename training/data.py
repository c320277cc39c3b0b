"""How every command reads one split of a dataset: `mfapr train`, `evaluate`, `calibrate` and `explain`.

One module below the commands (they import it, it imports none of them), so the four read data identically — the
same reader, the same camera order (the rig's), the same synchronizer settings — and no command imports another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.rig import Rig


def detect_format(data: str, split: str = "") -> str:
    """synth (rig.yaml + kapture/), rosbag (DATA or DATA/SPLIT has metadata.yaml, e.g. `mfapr split` bags), else
    kapture."""
    p = Path(data)
    if (p / "rig.yaml").is_file() and (p / "kapture").is_dir():
        return "synth"
    if (p / "metadata.yaml").is_file() or (split and (p / split / "metadata.yaml").is_file()):
        return "rosbag"
    return "kapture"


def load_split(data_format: str, root: str, split: str, *, rig: Rig | None = None,
               cameras: list[str] | str | None = None, gt_topic: str | None = None, gt_tf: str | None = None,
               max_gap_ms: float | None = None, sync: dict[str, Any] | None = None, stamp_unit: str = "auto",
               setting: str | None = None) -> Any:
    """One split as a ``BundleSet`` (``synth``/``kapture``: a kapture split folder; ``rosbag``: ``root/split``
    is a bag, or ``root`` itself when ``split`` is empty). ``max_gap_ms`` (``data.max_gap_ms``): time gap that
    starts a new track; ``None`` = the reader's default (1 s). ``sync`` (``data.sync``): the synchronizer
    settings in the node's vocabulary (``mfapr_ros.core.sync.SyncSettings``); empty = the node's defaults.
    ``stamp_unit`` (``data.stamp_unit``): kapture's timestamp unit. ``gt_topic``/``gt_tf`` (``data.gt``, split by
    :func:`~mfapr_training.config.split_gt`): a bag's ground truth. ``setting``: the config key ``split`` came
    from, for the error hints."""
    if not root:
        raise ConfigError("data.root is empty: give the dataset folder, e.g. --set data.root=/data/naverlabs")
    if not Path(root).exists():
        raise DataError(f"data.root '{root}' does not exist")
    gap = {} if max_gap_ms is None else {"track_gap_ns": int(round(max_gap_ms * 1e6))}
    if data_format in ("synth", "kapture"):
        from .datasets import read_kapture

        cams = cameras if cameras is not None else (rig.camera_names if rig is not None else None)
        return read_kapture(root, cams, split=split, rig=rig, sync=sync, stamp_unit=stamp_unit, setting=setting,
                            **gap)
    if data_format == "rosbag":
        from .datasets import GroundTruthSpec, read_rosbag

        if rig is None:
            raise ConfigError("data.format=rosbag needs data.rig (the rig YAML that names the camera topics)")
        bag = Path(root) / split if split else Path(root)
        if split and not bag.exists():
            bags = sorted(p.name for p in Path(root).iterdir() if (p / "metadata.yaml").is_file()) \
                if Path(root).is_dir() else []
            key = setting or "data.train_split"
            todo = ["--set data.val_split=null (train without validation)"] if key == "data.val_split" else []
            todo += [f"--set {key}={bags[0]}"] if bags else []
            todo += [f"--set {key}= (data.root is the bag)"] if (Path(root) / "metadata.yaml").is_file() else []
            todo += [f"cut one recording into bags with `mfapr split BAG --out {root}`"]
            raise DataError(f"no bag '{split}' in {root} ({key}); bags found there: {bags or 'none'}. To fix: "
                            + "; ".join(todo))
        gt = GroundTruthSpec(topic=gt_topic, tf=gt_tf) if (gt_topic or gt_tf) else None
        if isinstance(cameras, str):
            raise ConfigError(f"data.cameras '{cameras}' names a kapture camera subset; for rosbag give camera names")
        if cameras:
            rig = rig.subset(cameras)
        try:
            return read_rosbag(bag, rig, gt=gt, track=split or None, sync=sync, **gap)
        except DataError as e:
            if "ground" in str(e) or "--gt-" in str(e):  # the bag reader's hints name eval-bag's flags
                raise DataError(f"{e} (mfapr train: --set data.gt=TOPIC or --set data.gt=PARENT:CHILD, "
                                "e.g. data.gt=map:base_link)") from None
            raise
    raise ConfigError(f"data.format is '{data_format}'; expected synth, kapture or rosbag")


def even_subset(n: int, k: int | None) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (all when ``k`` is None or ≥ n): CPU-scale runs keep coverage."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})
