"""PoseNet (GoogLeNet / ResNet trunk), PoseLSTM and MapNet encoders: a CNN trunk + global average pooling
(or, with ``pool_grid`` > 1, a coarse spatial grid of pooled features), and :class:`CnnBackbone`, the registry
spec the four backbone files (``backbones/``) subclass.

The regressors differ only after the pooled embedding (fc 2048 → position/quaternion for PoseNet; fc 2048 →
32×64 grid → four LSTMs for PoseLSTM; fc 2048 + ReLU + dropout → position/log-quaternion for MapNet), which
:class:`~mfapr_ros.models.layers.FcStack` and :class:`~mfapr_ros.models.layers.PoseHead` build from the config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import Backbone
from .layers import PerCamera, fill_missing
from .trunks import build_trunk, stage_channels


class Stages(nn.Module):
    """A slice of trunk stages; returns ``[feature map]`` (the list form :class:`PerCamera` expects)."""

    def __init__(self, stages: nn.ModuleList) -> None:
        super().__init__()
        self.stages = stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for s in self.stages:
            x = s(x)
        return [x]


def pool(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``grid`` = 1: global average pooling (the paper's PoseNet/MapNet); ``grid`` = g > 1: average pooling to g×g
    cells, flattened — the embedding keeps *where* in the image a feature is, which position regression needs
    (a global average cannot tell a poster on the left wall from the same poster on the right)."""
    if grid == 1:
        return x.mean(dim=(2, 3))
    return nn.functional.adaptive_avg_pool2d(x, grid).flatten(1)


class CnnEncoder(nn.Module):
    """One image (or a tile canvas / a 3T-channel stack) → ``[pooled embedding]`` (fc-0)."""

    def __init__(self, cfg: dict[str, Any], in_channels: int = 3) -> None:
        super().__init__()
        self.trunk = Stages(build_trunk(cfg["arch"], in_channels, cfg["width"], cfg["pretrained"]))
        self.grid = int(cfg.get("pool_grid", 1))
        self.out_dims = [stage_channels(cfg["arch"], cfg["width"])[-1] * self.grid ** 2]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [pool(self.trunk(x)[0], self.grid)]


class CnnMidEncoder(nn.Module):
    """Mid fusion at ``block-k``: per-camera (or shared) stages 1..k, channel concat, a 1×1 conv back to the
    trunk's width, then the shared stages k+1..5 (so a pretrained trunk's later stages still fit)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        k = int(cfg["fusion"]["block"].split("-")[1])
        T = cfg["num_cameras"]
        arch, width, pre = cfg["arch"], cfg["width"], cfg["pretrained"]
        self.per_camera = PerCamera(lambda: Stages(build_trunk(arch, 3, width, pre, num_stages=k)), T,
                                    cfg["fusion"]["shared_weights"])
        ch = stage_channels(arch, width)
        c = ch[k - 1]
        self.missing = nn.Parameter(torch.zeros(c))
        self.fuse = nn.Sequential(nn.Conv2d(T * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.rest = Stages(nn.ModuleList(list(build_trunk(arch, 3, width, pre))[k:]))
        self.grid = int(cfg.get("pool_grid", 1))
        self.out_dims = [ch[-1] * self.grid ** 2]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        f = fill_missing(self.per_camera(images)[0], mask, self.missing)
        x = self.fuse(f.flatten(1, 2))
        return [pool(self.rest(x)[0], self.grid)]


class CnnBackbone(Backbone):
    """Shared spec of the CNN backbones (PoseNet, PoseNet-ResNet, PoseLSTM, MapNet): same trunk cut points and
    encoders; the subclasses differ in defaults (arch, rotation) and, for PoseLSTM, the fc stack."""

    defaults: ClassVar[dict[str, Any]] = {"arch": "resnet34", "width": 16, "fc_dim": 2048, "num_fc": None,
                                          "pool_grid": 1, "dropout": 0.5}
    mid_blocks: ClassVar[tuple[str, ...]] = ("block-2", "block-3", "block-4", "block-5")

    @classmethod
    def encoder(cls, cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> nn.Module:
        return CnnEncoder(cfg, in_channels)

    @classmethod
    def mid_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        return CnnMidEncoder(cfg)
