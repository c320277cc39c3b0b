"""The `mfapr` command: one entry point, subcommands implemented in their own modules.

Each subcommand module exposes ``main(argv: list[str] | None) -> int`` with its own argparse parser; this file only
dispatches, so `mfapr --help` and `mfapr --version` stay instant (no torch import) and subcommands never edit a
shared parser. Expected failures (`MfaprError`) print one clear line and exit 2 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys

from . import __version__
from .core.errors import MfaprError

#: name → (module, one-line help). Modules are imported only when their subcommand runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("mfapr_training.synth.cli", "generate a synthetic multi-camera world (kapture + rosbag2)"),
    "split": ("mfapr_training.split", "cut one recording (kapture or rosbag2) into mapping/validation/query by time"),
    "train": ("mfapr_training.train", "train a pose regressor from a YAML config"),
    "evaluate": ("mfapr_training.evaluate", "evaluate a checkpoint on a dataset; JSON + Markdown + PNG report"),
    "calibrate": ("mfapr_training.calibrate", "fit the covariance scale on a validation split, store it"),
    "eval-bag": ("mfapr_ros.evaluation.eval_bag",
                 "evaluate a checkpoint on a rosbag2 (sqlite3/MCAP) against ground truth"),
    "fit-fusion": ("mfapr_ros.evaluation.fusion_fit",
                   "fit the fused covariance (fusion.*) on a held-out drive with odometry; writes a params file"),
    "play": ("mfapr_ros.ros.player", "publish a rosbag2 over DDS at recorded rate with /clock (no ros2 bag needed)"),
    "demo": ("mfapr_training.demo", "the end-to-end demo: synth → train → replay over DDS → report"),
    "export": ("mfapr_ros.models.export", "export a checkpoint for deployment (torch.export / ONNX)"),
    "explain": ("mfapr_training.explain", "per-camera attention/saliency and camera contributions (PNG + JSON)"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        f"usage: mfapr [--version] [--help] <command> [<args>]   (mfapr_ros {__version__})",
        "",
        "Multi-camera absolute pose regression for ROS 2. Commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `mfapr <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 1
    if args[0] in ("-V", "--version"):
        print(f"mfapr_ros {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"mfapr: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(f"mfapr {name}: cannot import {module_name} ({e}). Install the package with `make install` "
              "(or `pip install -e .`).", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except MfaprError as e:
        print(f"mfapr {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfapr {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
