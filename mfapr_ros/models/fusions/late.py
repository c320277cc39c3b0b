"""Late fusion: every camera runs the encoder and the first k fc stages (``fc-k``); the per-camera embeddings are
concatenated in slot order (a learned token for a missing camera) and the remaining fc stages and the head are
shared."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, FusionMode, get_backbone, register_fusion
from ..config import config_error
from ..fused import FusedNet
from ..layers import FcStack, PerCamera, fill_missing, mask_images, stack_dims
from ..symmetry import shift_rotations, shifted_batch

LATE_FCS = ("fc-0", "fc-1", "fc-2")


class EncoderThenFc(nn.Module):
    """Late fusion's per-camera network: encoder + the first k fc stages of every branch."""

    def __init__(self, cfg: dict[str, Any], k: int) -> None:
        super().__init__()
        backbone = get_backbone(cfg["backbone"])
        self.encoder = backbone.encoder(cfg)
        self.stacks = nn.ModuleList(FcStack(d, cfg["fc_dim"], cfg["num_fc"], cfg["dropout"], 0, k, backbone.lstm(cfg))
                                    for d in self.encoder.out_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [s(e) for s, e in zip(self.stacks, self.encoder(x), strict=True)]


class LateFusedNet(FusedNet):
    """:class:`PerCamera` over :class:`EncoderThenFc`, missing cameras → learned token, flattened in slot order."""

    def build_encoder(self, cfg: dict[str, Any]) -> tuple[list[int], int]:
        T, start = cfg["num_cameras"], Late.fc_start(cfg["fusion"])
        self.per_camera = PerCamera(lambda: EncoderThenFc(cfg, start), T, cfg["fusion"]["shared_weights"])
        enc_dims = self.per_camera.nets[0].encoder.out_dims
        lstm = get_backbone(cfg["backbone"]).lstm(cfg)
        per_dims = [stack_dims(d, cfg["fc_dim"], cfg["num_fc"], lstm)[start] for d in enc_dims]
        self.missing = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in per_dims)
        if cfg["fusion"].get("symmetric"):  # the rig-equivariant head (models/symmetry.py); derived, not stored
            self.register_buffer("shift_rotations", shift_rotations(cfg), persistent=False)
        else:
            self.shift_rotations = None
        return [T * d for d in per_dims], start

    def per_camera_embeddings(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Masked images → per-camera embeddings (B, T, d) per branch, a missing camera as its learned token."""
        return [fill_missing(e, mask, m) for e, m in zip(self.per_camera(images), self.missing, strict=True)]

    def embed(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [e.flatten(1) for e in self.per_camera_embeddings(images, mask)]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.shift_rotations is None:
            return super().forward(images, mask)
        per = self.per_camera_embeddings(mask_images(images, mask), mask)
        emb = [s(shifted_batch(e)) for s, e in zip(self.stacks, per, strict=True)]
        return self.head.forward_symmetric(emb, self.shift_rotations)


@register_fusion
class Late(FusionMode):
    """``fusion: {position: late, fc: fc-0 | fc-1 | fc-2}`` (default fc-1); ``symmetric: true`` averages the head
    over the rig's cyclic slot shifts (an exactly equivariant model for ring rigs, :mod:`..symmetry`)."""

    position: ClassVar[str] = "late"
    order: ClassVar[int] = 3
    option: ClassVar[str | None] = "fc"

    @classmethod
    def resolve_option(cls, backbone: type[Backbone], fusion: dict[str, Any]) -> dict[str, Any]:
        fc = fusion.get("fc", "fc-1")
        if fc not in LATE_FCS:
            raise config_error("fusion.fc", f"must be one of {list(LATE_FCS)}, got {fc!r}")
        return {"fc": fc}

    @classmethod
    def fc_start(cls, fusion: dict[str, Any]) -> int:
        return int(fusion["fc"].split("-")[1])

    @classmethod
    def build_net(cls, cfg: dict[str, Any]) -> nn.Module:
        return LateFusedNet(cfg)
