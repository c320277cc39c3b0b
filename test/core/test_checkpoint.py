"""Checkpoint round-trip, atomicity and corruption errors (with a small torch module)."""

from __future__ import annotations

import json

import pytest
import torch

from mfapr_ros.core.checkpoint import checkpoint_paths, load_checkpoint, read_checkpoint_meta, save_checkpoint
from mfapr_ros.core.errors import CheckpointError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import ring_rig


def _meta():
    return {"model": {"backbone": "tiny"}, "rig": ring_rig(4).to_dict(),
            "preprocess": PreprocessConfig(64, 64).to_dict(), "provenance": {"step": 3}}


def test_roundtrip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    path = save_checkpoint(tmp_path / "m", net, _meta())
    assert path.name == "m.json" and (tmp_path / "m.safetensors").exists()
    ck = load_checkpoint(tmp_path / "m.safetensors")
    net2 = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    net2.load_state_dict(ck.state_dict)
    x = torch.randn(4, 5)
    assert torch.equal(net(x), net2(x))
    assert ck.rig.camera_names == ["cam0", "cam1", "cam2", "cam3"]
    assert ck.meta["provenance"]["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_corruption_is_named(tmp_path):
    save_checkpoint(tmp_path / "m", {"w": torch.ones(3)}, _meta())
    js, st = checkpoint_paths(tmp_path / "m")
    st.write_bytes(st.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(js)
    js.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint_meta(js)
    js.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not an mfapr_ros checkpoint"):
        read_checkpoint_meta(js)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")


def test_bad_meta_and_non_tensor_state(tmp_path):
    with pytest.raises(CheckpointError, match="lacks"):
        save_checkpoint(tmp_path / "m", {"w": torch.ones(1)}, {"model": {}})
    with pytest.raises(CheckpointError, match="not a tensor"):
        save_checkpoint(tmp_path / "m", {"w": 3}, _meta())


def test_never_unpickles(tmp_path):
    """A pickle renamed to .safetensors is rejected by the hash check before any parsing."""
    save_checkpoint(tmp_path / "m", {"w": torch.ones(1)}, _meta())
    torch.save({"w": torch.ones(1)}, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "m")


def test_missing_sha256_says_so_and_the_one_liner_adds_it(tmp_path, capsys):
    """A JSON without tensors.sha256 is refused for that reason (not 'weights replaced'), through the CLI with one
    line and exit 2; the documented one-liner records the hash and the checkpoint then loads."""
    from helpers import make_checkpoint

    from mfapr_ros import cli
    from mfapr_ros.core import checkpoint as ckmod

    js = make_checkpoint(tmp_path, 4)
    doc = json.loads(js.read_text())
    good = doc["tensors"].pop("sha256")
    js.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="tensors.sha256 is missing") as e:
        load_checkpoint(js)
    assert "truncated or replaced" not in str(e.value) and ckmod.ADD_SHA256_COMMAND in str(e.value)

    rc = cli.main(["eval-bag", "--checkpoint", str(js), "--bag", str(tmp_path / "no_bag"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "tensors.sha256 is missing" in err and f"{ckmod.ADD_SHA256_COMMAND} {js}" in err

    assert ckmod.main(["add-sha256", str(js)]) == 0
    assert json.loads(js.read_text())["tensors"]["sha256"] == good
    assert load_checkpoint(js).state_dict
    # a hash already recorded is never replaced (that would hide replaced weights): exit 2, one line
    assert ckmod.main(["add-sha256", str(js)]) == 2
    assert "already recorded" in capsys.readouterr().err
