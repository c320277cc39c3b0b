"""One synchronizer settings object for node, eval-bag and training (issue 11): `data.sync` in a training YAML,
the node's `sync.*` parameters and eval-bag's options all make the same SyncSettings."""

from __future__ import annotations

import pytest
from mfapr_training.config import load_config

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.sync import SyncSettings
from mfapr_ros.evaluation.eval_bag import build_parser, sync_settings_from_args
from mfapr_ros.ros.params import validate_params


def test_training_yaml_accepts_data_sync_with_the_node_names() -> None:
    cfg = load_config("demo", ["data.sync.slop=0.05", "data.sync.policy=frames", "data.sync.min_cameras=3"])
    s = SyncSettings.from_dict(cfg.data.sync)
    assert (s.max_interval_ns, s.policy, s.min_streams) == (50_000_000, "frames", 3)
    with pytest.raises(ConfigError, match=r"data\.sync.*slopp"):
        load_config("demo", ["data.sync.slopp=0.05"])
    with pytest.raises(ConfigError, match="policy"):
        load_config("demo", ["data.sync.policy=magic"])


def test_node_eval_bag_and_training_defaults_are_one() -> None:
    def cli(*opts: str) -> SyncSettings:
        return sync_settings_from_args(build_parser().parse_args(["--checkpoint", "m", "--bag", "b", *opts]))

    node = validate_params({"checkpoint": "m.json"}).sync
    assert node == cli() == SyncSettings.from_dict({}) == SyncSettings()
    assert node.queue_size == 10  # training bundled with 30 before
    p = validate_params({"checkpoint": "m.json", "sync.policy": "frames", "sync.publish": "optimal",
                         "sync.min_cameras": 2})
    assert p.sync == cli("--min-cameras", "2", "--sync-policy", "frames", "--sync-publish", "optimal")
    with pytest.raises(ConfigError, match="sync.policy"):
        validate_params({"checkpoint": "m.json", "sync.policy": "nearest"})
