"""Count the keys a training config accepts (issue 24: "training config keys reduced by >= 20 %").

Method (docs/architecture.md, "Settings: one schema each"): every typed leaf field of the training config's
dataclasses (``training/config.py``: ``name``, ``data.*``, ``preprocess.*``, ``loss.*`` with
``loss.gradient_blending.*``, ``optim.*``, ``schedule.*``, ``train.*``; the two untyped containers ``model`` and
``data.sync`` are not keys themselves) plus the ``model`` section's keys: the union over the registered backbones
of the common defaults and the backbone's own (``mfapr_ros/models/config.py`` ``COMMON_DEFAULTS`` +
``backbones/<name>.py`` ``defaults``), without the keys a training config refuses (``DATA_BOUND_MODEL_KEYS``:
filled from the data or derived) and without ``backbone`` / ``fusion`` / ``preset`` (the choice of plug-in, in
every version). Old spellings still read with a deprecation line (``RENAMED``, ``FOLDED``, a backbone's
``aliases``) are not counted, nor are ``data.sync``'s fields (``SyncSettings``: 6, listed apart).

    python bench/config_keys.py            # this tree
    python bench/config_keys.py --list     # and the keys
    python bench/config_keys.py --root DIR # another tree (e.g. ``git archive 238a61e^ | tar -x -C DIR``)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path


def _leaves(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.name == "source" or (prefix + f.name) in ("model", "data.sync"):
            continue
        out += _leaves(hint, prefix + f.name + ".") if dataclasses.is_dataclass(hint) else [prefix + f.name]
    return out


def training_keys() -> set[str]:
    """The keys a training config accepts (see the module docstring for what counts)."""
    from mfapr_training import config as training_config

    from mfapr_ros.models import config as model_config
    from mfapr_ros.models.base import backbone_names, get_backbone

    keys = set(_leaves(training_config.ExperimentConfig))
    refused = set(getattr(training_config, "DATA_BOUND_MODEL_KEYS", {}))
    for name in backbone_names():
        b = get_backbone(name)
        keys |= {f"model.{k}" for k in {*model_config.COMMON_DEFAULTS, *b.defaults} - refused}
    return keys


def sync_keys() -> list[str]:
    from mfapr_ros.core.sync import SyncSettings

    return [f"data.sync.{f.name}" for f in dataclasses.fields(SyncSettings)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="count another source tree (put first on sys.path)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.root is not None:
        sys.path[:0] = [str(args.root.resolve())]
        import types

        pkg = types.ModuleType("mfapr_training")  # the tree's training/ as mfapr_training (as installed)
        pkg.__path__ = [str(args.root.resolve() / "training")]
        sys.modules["mfapr_training"] = pkg
    keys = training_keys()
    by_section: dict[str, int] = {}
    for k in keys:
        by_section[k.split(".")[0]] = by_section.get(k.split(".")[0], 0) + 1
    print(f"training config keys: {len(keys)} ({', '.join(f'{s} {n}' for s, n in sorted(by_section.items()))}); "
          f"data.sync: {len(sync_keys())} more")
    if args.list:
        print("\n".join(sorted(keys)))


if __name__ == "__main__":
    main()
