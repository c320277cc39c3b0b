"""`mfapr evaluate`: exact metrics on a hand-made case, and synth → `mfapr train` → `mfapr evaluate` end to end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mfapr_training.evaluate import evaluate
from torch import nn

from mfapr_ros.core.errors import ConfigError, DataError


class EchoModel(nn.Module):
    """Returns the position written into pixel (0, 0) of camera 0 and the identity rotation."""

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        return {"t": images[:, 0, :, 0, 0], "q": torch.tensor([[1.0, 0, 0, 0]]).expand(b, 4)}


class HandMade(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.t_gt = [[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]
        self.t_est = [[0.1, 0, 0], [1.0, 0.4, 0], [2.0, 0, 3.0], [3.0, 0, 0]]  # errors 0.1, 0.4, 3.0, 0.0 m
        self.yaw_deg = [0.0, 1.0, 4.0, 30.0]  # GT yaw; the estimate is identity → rotation errors = these

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        images = torch.zeros(1, 2, 3, 4, 4)
        images[0, 0, :, 0, 0] = torch.tensor(self.t_est[i])
        h = math.radians(self.yaw_deg[i]) / 2
        return {"images": images, "mask": torch.ones(1, 2, dtype=torch.bool), "t": torch.tensor([self.t_gt[i]]),
                "q": torch.tensor([[math.cos(h), 0, 0, math.sin(h)]]), "stamp_ns": torch.tensor([i * 100]),
                "track": "a" if i < 2 else "b"}


def test_hand_made_metrics_are_exact() -> None:
    from mfapr_ros.evaluation import compute_metrics

    res = evaluate(EchoModel(), HandMade(), batch_size=3, device="cpu")
    assert res["stamps"].tolist() == [0, 100, 200, 300] and res["tracks"] == ["a", "a", "b", "b"]
    assert len(res["latency"]) == 4 and np.all(res["latency"] >= 0)
    m = compute_metrics(res["t_gt"], res["q_gt"], res["t_est"], res["q_est"], tracks=res["tracks"])
    assert m["translation_m"]["median"] == pytest.approx((0.1 + 0.4) / 2, abs=1e-6)
    assert m["translation_m"]["mean"] == pytest.approx(3.5 / 4, abs=1e-6)
    assert m["rotation_deg"]["median"] == pytest.approx(2.5, abs=1e-3)
    # (0.25 m, 2°): only pose 0; (0.5 m, 5°): poses 0, 1; (5 m, 10°): poses 0, 1, 2 (pose 3 is 30° off)
    assert list(m["recall"].values()) == pytest.approx([0.25, 0.5, 0.75])
    assert m["per_track"]["a"]["translation_m"]["mean"] == pytest.approx(0.25, abs=1e-6)
    assert m["per_track"]["b"]["rotation_deg"]["max"] == pytest.approx(30.0, abs=1e-3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mfapr_ros.cli import main as mfapr

    out = tmp_path_factory.mktemp("synth") / "world"
    assert mfapr(["synth", "--out", str(out), "--frames", "40", "--size", "32", "--bags", "none",
                  "--workers", "1"]) == 0
    return out


def test_train_then_evaluate_end_to_end(synth: Path, tmp_path: Path) -> None:
    from mfapr_ros.cli import main as mfapr
    from mfapr_ros.models import load_model

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    run = tmp_path / "run"
    sets = ["--set", f"data.root={synth}", "--set", "model={preset: tiny}", "--set", "preprocess.resize=32",
            "--set", "preprocess.crop=32", "--set", "train.max_steps=4", "--set", "train.batch_size=2",
            "--set", "data.max_train=8", "--set", "data.max_val=6", "--set", "train.tensorboard=false"]
    assert mfapr(["train", "--config", "demo", "--out", str(run), "-q", *sets]) == 0
    model, ckpt = load_model(run / "best")
    assert ckpt.meta["rig"]["name"] and ckpt.meta["preprocess"]["crop"] == 32
    assert "train_mean_pose" in ckpt.meta["provenance"]
    with pytest.raises(ConfigError, match="--resume"):
        from mfapr_training.train import main as train_main

        train_main(["--config", "demo", "--out", str(run), "-q", *sets])
    rep = tmp_path / "report"
    assert mfapr(["evaluate", "--checkpoint", str(run / "last.json"), "--data", str(synth), "--out", str(rep),
                  "--max-bundles", "10"]) == 0
    doc = json.loads((rep / "report.json").read_text())
    assert doc["metrics"]["count"] == 10 and doc["baseline"] is not None
    assert set(doc["metrics"]["recall"]) == {"0.25m_2deg", "0.5m_5deg", "5m_10deg"}
    assert "per_track" in doc["metrics"] and "latency_s" in doc["metrics"]
    for png in ("error_cdf.png", "trajectory.png"):
        assert (rep / png).stat().st_size > 1000
    assert (rep / "report.md").read_text().strip()
    with pytest.raises(DataError, match="does not exist"):
        from mfapr_training.evaluate import main as eval_main

        eval_main(["--checkpoint", str(run / "last"), "--data", str(tmp_path / "nope"), "--format", "kapture",
                   "--out", str(rep)])
