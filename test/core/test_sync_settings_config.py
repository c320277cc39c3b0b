"""One synchronizer settings object for node, eval-bag and training (issue 11, issue 24): `data.sync` in a training
YAML, the node's `sync.*` parameters and eval-bag's options are generated from / validated by the one SyncSettings,
with one name per setting in seconds."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from mfapr_training.config import load_config

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.sync import SyncSettings
from mfapr_ros.evaluation.bag_inputs import sync_settings_from_args
from mfapr_ros.evaluation.eval_bag import build_parser
from mfapr_ros.ros.params import PARAM_SPECS, validate_params

ROOT = Path(__file__).resolve().parents[2]


def cli(*opts: str) -> SyncSettings:
    return sync_settings_from_args(build_parser().parse_args(["--checkpoint", "m", "--bag", "b", *opts]))


def test_training_yaml_accepts_data_sync_with_the_node_names() -> None:
    cfg = load_config("demo", ["data.sync.slop=0.05", "data.sync.min_cameras=3"])
    s = SyncSettings.from_dict(cfg.data.sync)
    assert (s.max_interval_ns, s.min_streams) == (50_000_000, 3)
    with pytest.raises(ConfigError, match=r"data\.sync.*slopp"):
        load_config("demo", ["data.sync.slopp=0.05"])
    with pytest.raises(ConfigError, match="policy"):  # no longer a setting: frames always (pivot is its fallback)
        load_config("demo", ["data.sync.policy=frames"])


def test_node_eval_bag_and_training_defaults_are_one() -> None:
    node = validate_params({"checkpoint": "m.json"}).sync
    assert node == cli() == SyncSettings.from_dict({}) == SyncSettings()
    assert node.queue_size == 10  # training bundled with 30 before
    p = validate_params({"checkpoint": "m.json", "sync.min_cameras": 2, "sync.slop": 0.03, "sync.time_jump": 2})
    assert p.sync == cli("--min-cameras", "2", "--slop", "0.03", "--time-jump", "2")
    assert cli("--slop-ms", "30") == cli("--slop", "0.03")  # the deprecated alias, converted once
    for bad in ({"sync.policy": "frames"}, {"sync.publish": "arrival"}):
        with pytest.raises(ConfigError, match="unknown parameter"):
            validate_params({"checkpoint": "m.json", **bad})


def test_params_and_flags_are_generated_from_the_fields() -> None:
    """Every field is a node parameter `sync.<field>` and an eval-bag option `--<field>` with the same default and
    description; the node's checks of a sync value are SyncSettings' (one place)."""
    fields = {f.name: f for f in dataclasses.fields(SyncSettings)}
    specs = {s.name[len("sync."):]: s for s in PARAM_SPECS if s.name.startswith("sync.")}
    assert set(specs) == set(fields)
    for name, f in fields.items():
        assert specs[name].default == f.default and specs[name].description == f.metadata["doc"]
    help_ = build_parser().format_help()
    assert all(f"--{n.replace('_', '-')}" in help_ for n in fields)
    with pytest.raises(ConfigError, match=r"parameter 'sync\.time_jump' = 0\.01 is invalid.*> sync\.slop"):
        validate_params({"checkpoint": "m.json", "sync.time_jump": 0.01})
    with pytest.raises(ConfigError, match=r"eval-bag \(--queue-size\).*sync\.queue_size"):
        cli("--queue-size", "0")


def test_the_slop_default_is_written_once() -> None:
    """`grep` for the default slop (0.02 s / 20 ms / 20_000_000 ns) in the package finds SyncSettings only, and the
    shipped params file documents the same value."""
    hits = subprocess.run(["grep", "-rnE", r"\b0\.02\b|20_000_000|\b20 ?ms\b", "mfapr_ros", "training",
                           "--include=*.py"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    sync_hits = [h for h in hits if "slop" in h.lower() or "max_interval" in h]
    assert len(sync_hits) == 1 and sync_hits[0].startswith("mfapr_ros/core/sync_types.py"), sync_hits
    assert "slop: 0.02" in (ROOT / "config" / "localize.yaml").read_text()
