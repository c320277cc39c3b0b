"""TransPoseNet / MS-Transformer style encoder (single scene).

CNN feature maps at two scales (``block-3``, stride ≈ 8, for orientation; ``block-4``, stride ≈ 16, for position)
are projected to ``d_model`` tokens with a 2-D sine positional encoding; a position transformer and an orientation
transformer (encoder + decoder with one learned query each) produce one embedding per branch, regressed by separate
MLP heads. ``content_queries`` (default) adds to each query the mean image token it reads (see
:class:`TransformerBranch`). Multi-camera variants: ``tokens`` (shared CNN, token sequences of all cameras
concatenated with a learned per-slot embedding, missing cameras removed by key padding) and mid ``cnn`` (per-camera
CNNs, feature maps channel-concatenated before the transformers).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone, register_backbone
from ..config import config_error, require_int
from ..layers import PerCamera, fill_missing, sine_pos_2d
from ..trunks import build_trunk, stage_channels


class TransformerBranch(nn.Module):
    """Encoder over the tokens, decoder with learned queries → one embedding.

    ``slot_queries`` = T > 0 (token fusion's orientation branch): one learned query per camera slot, query ``j``
    reading only slot ``j``'s encoder memory (the encoder itself still attends across all cameras: input fusion),
    and the T outputs concatenated in slot order (``T·d``; a missing camera's output is a learned vector). Why: with
    one query the heading must be recovered from slot codes mixed into an attention average, and a ring rig seen
    at heading ψ + 90° shows the same contents one slot over — measured on the demo world, the single-query branch
    collapsed (health warning at step 93) and ended at 92° median rotation on the query. Reading the slots in order
    makes "which camera sees what" structural, as the per-camera CNN's concatenation does.

    ``content_queries``: each query is its learned vector plus the mean content token (no positional or slot code)
    of what it reads. Why: with constant queries the decoder's output at init is dominated by input-independent
    parts (query self-attention, the positional + slot codes averaged by near-uniform cross-attention, then
    LayerNorm); on the demo world the head input varied ~3x less across bundles, and the orientation predictions
    stayed within 0.2-0.9° of each other through the first two validations (health warning at steps 93 and 186).
    Slot queries then attend only to themselves, so slot j's output still depends on the encoder memory at slot j.
    """

    def __init__(self, d: int, heads: int, layers: int, ff: int, dropout: float, slot_queries: int = 0,
                 content_queries: bool = True) -> None:
        super().__init__()
        self.content = bool(content_queries)
        enc = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        dec = nn.TransformerDecoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, layers, norm=nn.LayerNorm(d))
        self.slots = int(slot_queries)
        self.query = nn.Parameter(torch.randn(1, max(1, self.slots), d) * 0.02)
        self.missing = nn.Parameter(torch.zeros(d)) if self.slots else None
        self.out_dim = d * max(1, self.slots)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        mem = self.encoder(tokens + pos, src_key_padding_mask=pad)
        q = self.query.expand(tokens.shape[0], -1, -1)
        if self.content:
            q = q + self.pooled(tokens, pad)
        if not self.slots:
            return self.decoder(q, mem, memory_key_padding_mask=pad)[:, 0]
        per_slot = tokens.shape[1] // self.slots
        own = torch.arange(self.slots, device=tokens.device).repeat_interleave(per_slot)
        blocked = own[None, :] != torch.arange(self.slots, device=tokens.device)[:, None]  # (T, T·L): True = no
        # content queries differ per input: query j attends to itself only, so slot j's output stays a function
        # of the encoder memory at slot j (the encoder is where cameras mix), as with constant queries
        alone = ~torch.eye(self.slots, dtype=torch.bool, device=tokens.device)
        # tgt_is_causal=False: torch would otherwise compare the mask with a causal one (.item(): breaks export)
        out = self.decoder(q, mem, tgt_mask=alone, memory_mask=blocked, tgt_is_causal=False)
        if mask is not None:  # a missing slot's query reads padded memory: its output is the learned vector
            out = torch.where(mask[..., None], out, self.missing.to(out.dtype))
        return out.flatten(1)

    def pooled(self, tokens: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """Mean image token (content only: no positional or slot code) that each query reads: ``(B, Q, d)``.

        Per slot for slot queries (a missing slot's zero image gives a constant, and its output is replaced
        anyway), over the present tokens for the single query."""
        if self.slots:
            return tokens.reshape(tokens.shape[0], self.slots, -1, tokens.shape[-1]).mean(2)
        if pad is None:
            return tokens.mean(1, keepdim=True)
        keep = (~pad).to(tokens.dtype)[..., None]
        return (tokens * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1.0)


class TwoScaleCnn(nn.Module):
    """CNN stages 1..4 → ``[block-3 map, block-4 map]``."""

    def __init__(self, arch: str, in_channels: int, width: int, pretrained: bool) -> None:
        super().__init__()
        self.stages = build_trunk(arch, in_channels, width, pretrained, num_stages=4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, s in enumerate(self.stages):
            x = s(x)
            if i >= 2:
                outs.append(x)
        return outs


class _Branches(nn.Module):
    """Projections + the two transformers, shared by all TransPoseNet variants."""

    def __init__(self, cfg: dict[str, Any], c3_in: int, c4_in: int, slot_queries: int = 0) -> None:
        super().__init__()
        d = cfg["d_model"]
        args = (d, cfg["num_heads"], cfg["num_layers"], cfg["dim_feedforward"], cfg["dropout"])
        self.proj_ori = nn.Conv2d(c3_in, d, 1)
        self.proj_pos = nn.Conv2d(c4_in, d, 1)
        content = cfg["content_queries"]
        self.pos_branch = TransformerBranch(*args, content_queries=content)
        self.ori_branch = TransformerBranch(*args, slot_queries=slot_queries, content_queries=content)
        self.out_dims = [self.pos_branch.out_dim, self.ori_branch.out_dim]

    @staticmethod
    def _tokens(f: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(N·G, d, h, w) → tokens (N, G·h·w, d), positional encoding (G·h·w, d), tokens per group."""
        NG, d, h, w = f.shape
        tok = f.flatten(2).transpose(1, 2).reshape(NG // groups, groups * h * w, d)
        pos = sine_pos_2d(h, w, d, f.device, f.dtype).repeat(groups, 1)
        return tok, pos, h * w

    def encode(self, f3: torch.Tensor, f4: torch.Tensor, groups: int = 1, slot: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        out = []
        for f, proj, branch in ((f4, self.proj_pos, self.pos_branch), (f3, self.proj_ori, self.ori_branch)):
            tok, pos, L = self._tokens(proj(f), groups)
            pad = None
            if slot is not None:
                pos = pos + slot.repeat_interleave(L, dim=0)
            if mask is not None:
                pad = ~mask.repeat_interleave(L, dim=1)
            out.append(branch(tok, pos, pad, mask))
        return out


class TransPoseEncoder(nn.Module):
    """One image, tile canvas or 3T-channel stack → ``[position embedding, orientation embedding]``."""

    def __init__(self, cfg: dict[str, Any], in_channels: int = 3) -> None:
        super().__init__()
        self.cnn = TwoScaleCnn(cfg["arch"], in_channels, cfg["width"], cfg["pretrained"])
        ch = stage_channels(cfg["arch"], cfg["width"])
        self.branches = _Branches(cfg, ch[2], ch[3])
        self.out_dims = self.branches.out_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f3, f4 = self.cnn(x)
        return self.branches.encode(f3, f4)


class TransPoseTokens(nn.Module):
    """Input fusion ``tokens``: one shared CNN per image; attention spans the tokens of all present cameras."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.T = cfg["num_cameras"]
        self.cnn = TwoScaleCnn(cfg["arch"], 3, cfg["width"], cfg["pretrained"])
        ch = stage_channels(cfg["arch"], cfg["width"])
        self.branches = _Branches(cfg, ch[2], ch[3], slot_queries=self.T if cfg["ori_readout"] == "slots" else 0)
        # unit-scale slot codes (comparable to the sine positional encoding): the model must know from the first
        # step which camera a token came from, or it starts permutation-invariant and, with cyclic track
        # augmentation, the orientation target looks ambiguous and the head collapses to the mean rotation
        self.slot = nn.Parameter(torch.randn(self.T, cfg["d_model"]))
        self.out_dims = self.branches.out_dims

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        B, T = images.shape[:2]
        f3, f4 = self.cnn(images.flatten(0, 1))
        return self.branches.encode(f3, f4, groups=T, slot=self.slot, mask=mask)


class TransPoseMid(nn.Module):
    """Mid fusion ``cnn``: per-camera (or shared) CNNs; both feature maps channel-concatenated (missing cameras →
    learned token) and projected to ``d_model`` before the transformers."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        T = cfg["num_cameras"]
        arch, width, pre = cfg["arch"], cfg["width"], cfg["pretrained"]
        self.per_camera = PerCamera(lambda: TwoScaleCnn(arch, 3, width, pre), T, cfg["fusion"]["shared_weights"])
        ch = stage_channels(arch, width)
        self.missing3 = nn.Parameter(torch.zeros(ch[2]))
        self.missing4 = nn.Parameter(torch.zeros(ch[3]))
        self.branches = _Branches(cfg, T * ch[2], T * ch[3])
        self.out_dims = self.branches.out_dims

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        f3, f4 = self.per_camera(images)
        f3 = fill_missing(f3, mask, self.missing3).flatten(1, 2)
        f4 = fill_missing(f4, mask, self.missing4).flatten(1, 2)
        return self.branches.encode(f3, f4)


@register_backbone
class TransPoseNet(Backbone):
    """``backbone: transposenet``: input ``tile`` / ``channel`` / ``tokens`` (default), mid ``cnn``, late."""

    name: ClassVar[str] = "transposenet"
    order: ClassVar[int] = 4
    defaults: ClassVar[dict[str, Any]] = {"arch": "efficientnet_b0", "width": 16, "d_model": 256, "num_heads": 8,
                                          "num_layers": 2, "dim_feedforward": 512, "fc_dim": 1024, "num_fc": None,
                                          "dropout": 0.1, "ori_readout": "slots", "content_queries": True}
    input_modes: ClassVar[tuple[str, ...]] = ("tile", "channel", "tokens")
    default_input_mode: ClassVar[str] = "tokens"
    mid_blocks: ClassVar[tuple[str, ...]] = ("cnn",)

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        for k in ("d_model", "num_heads", "num_layers", "dim_feedforward"):
            require_int(cfg, k, 1)
        if cfg["d_model"] % cfg["num_heads"]:
            raise config_error("d_model", f"({cfg['d_model']}) must be divisible by num_heads ({cfg['num_heads']})")
        if cfg["ori_readout"] not in ("slots", "query"):
            raise config_error("ori_readout", f"must be 'slots' (one orientation query per camera slot, token "
                               f"fusion) or 'query' (one learned query), got {cfg['ori_readout']!r}")
        if not isinstance(cfg["content_queries"], bool):
            raise config_error("content_queries", f"must be true or false, got {cfg['content_queries']!r}")
        if cfg["d_model"] % 4:
            raise config_error("d_model", f"({cfg['d_model']}) must be a multiple of 4 (2-D sine positional "
                               "encoding)")

    @classmethod
    def encoder(cls, cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> nn.Module:
        return TransPoseEncoder(cfg, in_channels)

    @classmethod
    def tokens_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        return TransPoseTokens(cfg)

    @classmethod
    def mid_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        return TransPoseMid(cfg)
