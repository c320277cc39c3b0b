"""Input (early) fusion: one shared network sees all cameras at once — a tile mosaic, a 3T-channel stack, or the
backbone's own token sequence over every camera (``tokens``, TransPoseNet / ViT)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, FusionMode, get_backbone, register_fusion
from ..config import config_error
from ..fused import FusedNet
from ..layers import InputFusion


class InputFusedNet(FusedNet):
    """``tile`` / ``channel``: :class:`InputFusion` then the backbone's single-input encoder; ``tokens``: the
    backbone's tokens encoder (attention spans every present camera, missing ones key-padded)."""

    def build_encoder(self, cfg: dict[str, Any]) -> tuple[list[int], int]:
        backbone, mode, S = get_backbone(cfg["backbone"]), cfg["fusion"]["mode"], cfg["image_size"]
        self.input: InputFusion | None = None
        if mode in ("tile", "channel"):
            self.input = InputFusion(mode, cfg["num_cameras"])
            self.encoder = backbone.encoder(cfg, self.input.in_channels, self.input.canvas_hw(S, S))
        else:
            self.encoder = backbone.tokens_encoder(cfg)
        return list(self.encoder.out_dims), 0

    def embed(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        if self.input is not None:
            return self.encoder(self.input(images, mask))
        return self.encoder(images, mask)


@register_fusion
class Input(FusionMode):
    """``fusion: {position: input, mode: tile | channel | tokens}`` (the backbone lists its modes)."""

    position: ClassVar[str] = "input"
    order: ClassVar[int] = 1
    option: ClassVar[str | None] = "mode"
    shared_reason: ClassVar[str | None] = "one network sees the fused input"

    @classmethod
    def resolve_option(cls, backbone: type[Backbone], fusion: dict[str, Any]) -> dict[str, Any]:
        mode = fusion.get("mode", backbone.default_input_mode)
        if mode not in backbone.input_modes:
            raise config_error("fusion.mode", f"must be one of {list(backbone.input_modes)} for backbone "
                               f"'{backbone.name}', got {mode!r}")
        return {"mode": mode}

    @classmethod
    def build_net(cls, cfg: dict[str, Any]) -> nn.Module:
        return InputFusedNet(cfg)
