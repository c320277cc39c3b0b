"""A new backbone is one new file: a module dropped into the backbones package path registers itself, and every
fusion position that needs only a single-input encoder builds, runs and round-trips through a checkpoint — with no
edit to any other module (the registries in ``models/base.py`` are the only lists)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.models import backbones, build_model
from mfapr_ros.models import base as registry

NAME = "toy_one_file"
SOURCE = '''
"""A toy backbone: one strided conv + global average pooling (the whole file a new backbone needs)."""
from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, register_backbone


class ToyEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, stride=4)
        self.out_dims = [width]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x).mean((2, 3))]


@register_backbone
class Toy(Backbone):
    name: ClassVar[str] = "toy_one_file"
    defaults: ClassVar[dict[str, Any]] = {"width": 8, "fc_dim": 16, "num_fc": None, "dropout": 0.0}

    @classmethod
    def encoder(cls, cfg: dict[str, Any], in_channels: int = 3, hw: Any = None) -> nn.Module:
        return ToyEncoder(in_channels, cfg["width"])
'''


@pytest.fixture
def toy_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write the file into a folder on the package's ``__path__`` and run the package's own discovery."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_one_file.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.setattr(backbones, "__path__", [*backbones.__path__, str(folder)])
    assert NAME not in registry.backbone_names()
    registry.discover(backbones.__name__, [str(folder)])
    yield
    registry._BACKBONES.pop(NAME, None)
    sys.modules.pop(f"{backbones.__name__}.toy_one_file", None)


def test_unknown_backbone_before_the_file_exists() -> None:
    with pytest.raises(ConfigError, match="backbone"):
        build_model({"backbone": NAME, "num_cameras": 4, "image_size": 32})


@pytest.mark.parametrize("fusion", [{"position": "input", "mode": "tile"}, {"position": "input", "mode": "channel"},
                                    {"position": "late", "fc": "fc-1"}, {"position": "late", "fc": "fc-0"}])
def test_new_backbone_file_builds_and_trains_in_every_fusion(toy_backbone, fusion, tmp_path: Path) -> None:
    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.models import load_model, model_meta

    assert NAME in registry.backbone_names()
    torch.manual_seed(0)
    model = build_model({"backbone": NAME, "num_cameras": 4, "image_size": 32, "fusion": fusion})
    assert model.config["width"] == 8 and model.config["num_fc"] >= 1
    x = torch.randn(2, 4, 3, 32, 32)
    mask = torch.tensor([[True, True, False, True], [True] * 4])
    out = model(x, mask)
    assert out["t"].shape == (2, 3) and torch.allclose(out["q"].norm(dim=-1), torch.ones(2))
    (out["t_norm"].square().sum() + out["q_raw"].square().sum()).backward()
    conv = [p for n, p in model.named_parameters() if n.endswith("conv.weight")]
    assert conv and all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv)
    model.eval()
    ck = save_checkpoint(tmp_path / "toy", model,
                         model_meta(model, ring_rig(4), PreprocessConfig(resize=32, crop=32), {"test": True}))
    loaded, _ = load_model(ck, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, mask)["t"], model(x, mask)["t"])


def test_new_backbone_without_mid_or_token_encoders_refuses_those_fusions(toy_backbone) -> None:
    with pytest.raises(ConfigError, match="block|mid"):
        build_model({"backbone": NAME, "num_cameras": 4, "image_size": 32,
                     "fusion": {"position": "mid", "block": "block-2"}})
    with pytest.raises(ConfigError, match="tokens|mode"):
        build_model({"backbone": NAME, "num_cameras": 4, "image_size": 32,
                     "fusion": {"position": "input", "mode": "tokens"}})
