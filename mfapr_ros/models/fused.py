"""``FusedNet``: the shared shape of every fused network, ``f(g(x1) ⊕ … ⊕ g(xT))`` → raw head outputs.

A fusion mode (``fusions/``) subclasses it and supplies only the part that differs — which encoder the backbone
provides for that position (:meth:`FusedNet.build_encoder`) and how the cameras' images become embeddings
(:meth:`FusedNet.embed`); the fc stacks and the pose head after the fusion point are built here the same way for
every mode, so a new backbone gets every fusion position for free and a new mode gets every backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import get_backbone
from .layers import FcStack, PoseHead, mask_images


class FusedNet(nn.Module):
    """``(images (B,T,3,H,W), mask (B,T)) → {t_norm (B,3), q_raw (B,4|3), [log_var (B,2)]}``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        lstm = get_backbone(cfg["backbone"]).lstm(cfg)
        dims, start = self.build_encoder(cfg)
        self.stacks = nn.ModuleList(FcStack(d, cfg["fc_dim"], cfg["num_fc"], cfg["dropout"], start, None, lstm)
                                    for d in dims)
        self.head = PoseHead([s.out_dim for s in self.stacks], cfg["rotation"], cfg["predict_variance"],
                             cfg["num_anchors"])

    def build_encoder(self, cfg: dict[str, Any]) -> tuple[list[int], int]:
        """Register the modules before the fc stacks; returns (embedding dims per branch, first fc stage)."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Masked images → one fused embedding (B, d) per branch."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.embed(mask_images(images, mask), mask)
        return self.head([s(e) for s, e in zip(self.stacks, emb, strict=True)])
