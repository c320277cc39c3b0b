"""Mid fusion: per-camera (or shared) early stages, feature maps concatenated at the backbone's named cut point
(``block-k`` for the CNNs, ``cnn`` for TransPoseNet), a shared rest."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, FusionMode, get_backbone, register_fusion
from ..config import config_error
from ..fused import FusedNet


class MidFusedNet(FusedNet):
    """The backbone's mid encoder (it owns the cut point) followed by the shared fc stacks and head."""

    def build_encoder(self, cfg: dict[str, Any]) -> tuple[list[int], int]:
        self.encoder = get_backbone(cfg["backbone"]).mid_encoder(cfg)
        return list(self.encoder.out_dims), 0

    def embed(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(images, mask)


@register_fusion
class Mid(FusionMode):
    """``fusion: {position: mid, block: <one of the backbone's mid_blocks>}`` (default: the second one)."""

    position: ClassVar[str] = "mid"
    order: ClassVar[int] = 2
    option: ClassVar[str | None] = "block"

    @classmethod
    def resolve_option(cls, backbone: type[Backbone], fusion: dict[str, Any]) -> dict[str, Any]:
        blocks = backbone.mid_blocks
        if not blocks:
            raise config_error("fusion.position", f"'mid' is not available for backbone '{backbone.name}'; use none, "
                               "input or late")
        block = fusion.get("block", blocks[min(1, len(blocks) - 1)])
        if block not in blocks:
            raise config_error("fusion.block", f"must be one of {list(blocks)} for backbone '{backbone.name}', got "
                               f"{block!r}")
        return {"block": block}

    @classmethod
    def build_net(cls, cfg: dict[str, Any]) -> nn.Module:
        return MidFusedNet(cfg)
