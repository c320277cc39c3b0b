"""A configurable Vision Transformer (ViT-B/16 sizes by default; small sizes for tests and CPU).

Written on ``nn.TransformerEncoder`` rather than wrapping torchvision's ``VisionTransformer`` because the fusion
modes need the patch embedding and the token sequence separately: ``tile`` (a larger canvas → more patches),
``channel`` (3T-channel patch embedding) and ``tokens`` (per-camera patches with a learned slot embedding and key
padding for missing cameras, one class token for the rig).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, register_backbone
from ..config import config_error, require_int


def _blocks(cfg: dict[str, Any]) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg["d_model"], cfg["num_heads"], cfg["dim_feedforward"], cfg["dropout"],
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, cfg["num_layers"], norm=nn.LayerNorm(cfg["d_model"]),
                                 enable_nested_tensor=False)


class VitEncoder(nn.Module):
    """One image / tile canvas / channel stack of size ``hw`` → ``[class-token embedding]``."""

    def __init__(self, cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> None:
        super().__init__()
        p, d = cfg["patch"], cfg["d_model"]
        h, w = hw or (cfg["image_size"], cfg["image_size"])
        self.patch = nn.Conv2d(in_channels, d, p, p)
        self.pos = nn.Parameter(torch.randn(1, (h // p) * (w // p), d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = _blocks(cfg)
        self.out_dims = [d]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        return [self.blocks(t)[:, 0]]


class VitTokens(nn.Module):
    """Input fusion ``tokens``: patches of every camera (+ per-image position + per-slot embedding) in one sequence;
    missing cameras' patches are key-padded so they are never attended."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        p, d, S, T = cfg["patch"], cfg["d_model"], cfg["image_size"], cfg["num_cameras"]
        self.L = (S // p) ** 2
        self.patch = nn.Conv2d(3, d, p, p)
        self.pos = nn.Parameter(torch.randn(1, self.L, d) * 0.02)
        self.slot = nn.Parameter(torch.randn(T, d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = _blocks(cfg)
        self.out_dims = [d]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        B, T = images.shape[:2]
        t = self.patch(images.flatten(0, 1)).flatten(2).transpose(1, 2) + self.pos  # (B·T, L, d)
        t = t.reshape(B, T, self.L, -1) + self.slot[None, :, None, :]
        t = torch.cat([self.cls.expand(B, -1, -1), t.reshape(B, T * self.L, -1)], dim=1)
        pad = torch.cat([mask.new_zeros(B, 1), ~mask.repeat_interleave(self.L, dim=1)], dim=1)
        return [self.blocks(t, src_key_padding_mask=pad)[:, 0]]


@register_backbone
class Vit(Backbone):
    """``backbone: vit``: input ``tile`` / ``channel`` / ``tokens`` (default) and late; no mid fusion (a ViT has
    no early stages to run per camera that differ from its token sequence)."""

    name: ClassVar[str] = "vit"
    order: ClassVar[int] = 5
    #: the transformer sizes in torch.nn.Transformer's (and TransPoseNet's) vocabulary: ViT-B/16
    defaults: ClassVar[dict[str, Any]] = {"patch": 16, "d_model": 768, "num_layers": 12, "num_heads": 12,
                                          "dim_feedforward": 3072, "fc_dim": 1024, "num_fc": None, "dropout": 0.0}
    #: the ViT paper's names, as stored by checkpoints before the one vocabulary (read, never written)
    aliases: ClassVar[dict[str, str]] = {"dim": "d_model", "depth": "num_layers", "heads": "num_heads",
                                         "mlp_dim": "dim_feedforward"}
    input_modes: ClassVar[tuple[str, ...]] = ("tile", "channel", "tokens")
    default_input_mode: ClassVar[str] = "tokens"

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        for k in ("patch", "d_model", "num_layers", "num_heads", "dim_feedforward"):
            require_int(cfg, k, 1)
        if cfg["d_model"] % cfg["num_heads"]:
            raise config_error("d_model", f"({cfg['d_model']}) must be divisible by num_heads ({cfg['num_heads']})")
        if cfg["image_size"] % cfg["patch"]:
            raise config_error("image_size", f"({cfg['image_size']}) must be a multiple of patch ({cfg['patch']})")
        if cfg["pretrained"]:
            raise config_error("pretrained", "is not supported for the configurable ViT (no matching torchvision "
                               "weights); set pretrained: false or use a CNN backbone for ImageNet initialisation")

    @classmethod
    def encoder(cls, cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> nn.Module:
        return VitEncoder(cfg, in_channels, hw)

    @classmethod
    def tokens_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        return VitTokens(cfg)
