"""``FusedNet``: any backbone × any fusion position as ``f(g(x1) ⊕ … ⊕ g(xT))`` → raw head outputs.

Backbone families provide a single-input encoder (``[embeddings]`` per branch) and, where the position needs
backbone knowledge, a tokens or mid encoder; this module wires input/mid/late fusion around them the same way for
every family, so a new backbone gets every fusion position for free.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .cnn import CnnEncoder, CnnMidEncoder
from .layers import FcStack, InputFusion, PerCamera, PoseHead, fill_missing, mask_images, stack_dims
from .transposenet import TransPoseEncoder, TransPoseMid, TransPoseTokens
from .vit import VitEncoder, VitTokens


def single_encoder(cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> nn.Module:
    """The family's encoder for one input tensor (N, C, H, W)."""
    b = cfg["backbone"]
    if b == "transposenet":
        return TransPoseEncoder(cfg, in_channels)
    if b == "vit":
        return VitEncoder(cfg, in_channels, hw)
    return CnnEncoder(cfg, in_channels)


def _lstm(cfg: dict[str, Any]) -> tuple[list[int], int] | None:
    return (cfg["lstm_grid"], cfg["lstm_hidden"]) if cfg["backbone"] == "poselstm" else None


class _EncoderThenFc(nn.Module):
    """Late fusion's per-camera network: encoder + the first k fc stages of every branch."""

    def __init__(self, cfg: dict[str, Any], k: int) -> None:
        super().__init__()
        self.encoder = single_encoder(cfg)
        self.stacks = nn.ModuleList(FcStack(d, cfg["fc_dim"], cfg["num_fc"], cfg["dropout"], 0, k, _lstm(cfg))
                                    for d in self.encoder.out_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [s(e) for s, e in zip(self.stacks, self.encoder(x), strict=True)]


class FusedNet(nn.Module):
    """``(images (B,T,3,H,W), mask (B,T)) → {t_norm (B,3), q_raw (B,4|3), [log_var (B,2)]}``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        fusion, T, S = cfg["fusion"], cfg["num_cameras"], cfg["image_size"]
        self.position = fusion["position"]
        self.input: InputFusion | None = None
        self.encoder: nn.Module | None = None
        self.per_camera: PerCamera | None = None
        lstm = _lstm(cfg)
        start = 0
        if self.position == "input" and fusion["mode"] in ("tile", "channel"):
            self.input = InputFusion(fusion["mode"], T)
            self.encoder = single_encoder(cfg, self.input.in_channels, self.input.canvas_hw(S, S))
            dims = list(self.encoder.out_dims)
        elif self.position == "input":  # tokens
            self.encoder = TransPoseTokens(cfg) if cfg["backbone"] == "transposenet" else VitTokens(cfg)
            dims = list(self.encoder.out_dims)
        elif self.position == "mid":
            self.encoder = TransPoseMid(cfg) if cfg["backbone"] == "transposenet" else CnnMidEncoder(cfg)
            dims = list(self.encoder.out_dims)
        elif self.position == "late":
            start = int(fusion["fc"].split("-")[1])
            self.per_camera = PerCamera(lambda: _EncoderThenFc(cfg, start), T, fusion["shared_weights"])
            enc_dims = self.per_camera.nets[0].encoder.out_dims
            per_dims = [stack_dims(d, cfg["fc_dim"], cfg["num_fc"], lstm)[start] for d in enc_dims]
            self.missing = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in per_dims)
            dims = [T * d for d in per_dims]
        else:
            raise ValueError(f"FusedNet does not handle fusion position {self.position!r}")  # resolve_config guards
        self.stacks = nn.ModuleList(FcStack(d, cfg["fc_dim"], cfg["num_fc"], cfg["dropout"], start, None, lstm)
                                    for d in dims)
        self.head = PoseHead([s.out_dim for s in self.stacks], cfg["rotation"], cfg["predict_variance"],
                             cfg["num_anchors"])

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        images = mask_images(images, mask)
        if self.input is not None:
            assert self.encoder is not None
            emb = self.encoder(self.input(images, mask))
        elif self.per_camera is not None:
            per = self.per_camera(images)  # list of (B, T, d)
            emb = [fill_missing(e, mask, m).flatten(1) for e, m in zip(per, self.missing, strict=True)]
        else:
            assert self.encoder is not None
            emb = self.encoder(images, mask)
        return self.head([s(e) for s, e in zip(self.stacks, emb, strict=True)])
