"""Building blocks shared by every backbone: input fusion, per-camera wrappers, fc stacks, heads, mix-stream fusion.

The paper's fusion ``r = f(g(x1) ⊕ … ⊕ g(xT))`` is expressed with three pieces used by all backbones:
:class:`InputFusion` (g = identity; tile / channel), :class:`PerCamera` (g = a per-camera or shared network applied
to every slot) with :func:`fill_missing` (a learned "missing" token replaces absent cameras before ⊕), and
:class:`FcStack` + :class:`PoseHead` for f. Missing-camera pixels are zeroed *before* any network sees them, so
they cannot influence the output (not even through BatchNorm batch statistics).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mfapr_ros.core import geometry_torch as gt

from .rotation import RAW_DIMS, identity_raw


def sine_pos_2d(h: int, w: int, d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """DETR-style 2-D sine positional encoding, ``(h*w, d)``: d/2 channels for y, d/2 for x."""
    npf = d // 2
    dim_t = torch.arange(npf // 2, device=device, dtype=torch.float32)
    inv = 1.0 / (10000.0 ** (2 * dim_t / npf))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] * inv[None]
    px = xs[:, None] * inv[None]
    py = torch.cat([py.sin(), py.cos()], dim=-1)  # (h, npf)
    px = torch.cat([px.sin(), px.cos()], dim=-1)  # (w, npf)
    pos = torch.cat([py[:, None, :].expand(h, w, npf), px[None, :, :].expand(h, w, npf)], dim=-1)
    return pos.reshape(h * w, 2 * npf).to(dtype)


def tile_grid(T: int) -> tuple[int, int]:
    """(rows, cols) of the tile mosaic for T images: the most square grid with cols ≥ rows."""
    cols = math.ceil(math.sqrt(T))
    return math.ceil(T / cols), cols


def mask_images(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the pixels of missing cameras so nothing downstream can depend on them."""
    return images * mask[:, :, None, None, None].to(images.dtype)


class InputFusion(nn.Module):
    """Early fusion (g = identity): ``tile`` mosaics the T images into one canvas, ``channel`` stacks 3T channels.

    Missing cameras are replaced by a learned per-channel "missing" colour so the network can tell an absent camera
    from a dark image.
    """

    def __init__(self, mode: str, num_cameras: int) -> None:
        super().__init__()
        self.mode, self.T = mode, num_cameras
        self.rows, self.cols = tile_grid(num_cameras)
        # with one camera a "missing" input cannot occur (an empty bundle is rejected), so no token is learned
        self.missing = nn.Parameter(torch.zeros(3)) if num_cameras > 1 else None

    @property
    def in_channels(self) -> int:
        return 3 * self.T if self.mode == "channel" else 3

    def canvas_hw(self, h: int, w: int) -> tuple[int, int]:
        return (h * self.rows, w * self.cols) if self.mode == "tile" else (h, w)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = images.shape
        x = images
        if self.missing is not None:
            fill = self.missing.view(1, 1, 3, 1, 1).to(images.dtype).expand_as(images)
            x = torch.where(mask[:, :, None, None, None], images, fill)
        if self.mode == "channel":
            return x.reshape(B, T * C, H, W)
        pad = self.rows * self.cols - T
        if pad:
            x = torch.cat([x, x.new_zeros(B, pad, C, H, W)], dim=1)
        x = x.reshape(B, self.rows, self.cols, C, H, W).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(B, C, self.rows * H, self.cols * W)


def fill_missing(feats: torch.Tensor, mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Replace the features of absent cameras: ``feats`` (B,T,C,...) and ``token`` (C,) broadcast over the rest."""
    shape = (1, 1, token.shape[0]) + (1,) * (feats.dim() - 3)
    m = mask.view(mask.shape[0], mask.shape[1], *([1] * (feats.dim() - 2)))
    return torch.where(m, feats, token.view(shape).to(feats.dtype).expand_as(feats))


class PerCamera(nn.Module):
    """Applies a network to every camera slot: one shared copy (batched over B·T) or T independent copies."""

    def __init__(self, factory: object, num_cameras: int, shared: bool) -> None:
        super().__init__()
        self.T, self.shared = num_cameras, shared
        self.nets = nn.ModuleList([factory() for _ in range(1 if shared else num_cameras)])  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (B,T,...) → the net's list outputs, each stacked to (B,T,...)."""
        B, T = x.shape[:2]
        if self.shared:
            outs = self.nets[0](x.reshape(B * T, *x.shape[2:]))
            return [o.reshape(B, T, *o.shape[1:]) for o in outs]
        per = [self.nets[i](x[:, i]) for i in range(T)]
        return [torch.stack([p[k] for p in per], dim=1) for k in range(len(per[0]))]


class LstmBlock(nn.Module):
    """PoseLSTM's structured dimensionality reduction: a vector as an h×w grid read by four directional LSTMs
    (left→right and right→left along rows, top→bottom and bottom→top along columns); outputs the four final states.
    """

    def __init__(self, in_dim: int, grid: list[int], hidden: int) -> None:
        super().__init__()
        self.h, self.w = grid
        self.proj = nn.Identity() if in_dim == self.h * self.w else nn.Linear(in_dim, self.h * self.w)
        self.rows = nn.LSTM(self.w, hidden, batch_first=True, bidirectional=True)
        self.cols = nn.LSTM(self.h, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 4 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.proj(x).reshape(-1, self.h, self.w)
        _, (hr, _) = self.rows(g)  # sequence over the h rows (each row a w-vector)
        _, (hc, _) = self.cols(g.transpose(1, 2))
        return torch.cat([hr[0], hr[1], hc[0], hc[1]], dim=-1)


def fc_stage(in_dim: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


class FcStack(nn.Module):
    """The stages ``[start, stop)`` of an embedding's fc stack (late fusion cuts the stack at fc-k)."""

    def __init__(self, in_dim: int, fc_dim: int, num_fc: int, dropout: float, start: int = 0, stop: int | None = None,
                 lstm: tuple[list[int], int] | None = None) -> None:
        super().__init__()
        stop = num_fc if stop is None else stop
        layers: list[nn.Module] = []
        d = in_dim
        for i in range(start, stop):
            if lstm is not None and i == 1:  # PoseLSTM: stage 2 is the LSTM block
                blk = LstmBlock(d, lstm[0], lstm[1])
                layers.append(blk)
                d = blk.out_dim
            else:
                layers.append(fc_stage(d, fc_dim, dropout))
                d = fc_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def stack_dims(in_dim: int, fc_dim: int, num_fc: int, lstm: tuple[list[int], int] | None) -> list[int]:
    """Embedding width at fc-0 … fc-num_fc."""
    dims = [in_dim]
    for i in range(num_fc):
        dims.append(4 * lstm[1] if (lstm is not None and i == 1) else fc_dim)
    return dims


class PoseHead(nn.Module):
    """Final regressors: position (3), rotation (raw form of ``rotation``: 4 quat, 3 logq, 6 for 6d, 9 for
    9d_svd — see :mod:`.rotation`), optional log-variances (2).

    With one embedding both come from it (PoseNet/MapNet/ViT); with two (TransPoseNet) the first is the position
    branch and the second the orientation branch.

    ``num_anchors`` = K > 0 replaces direct position regression by *anchor classification + offset* (Saha et al.,
    BMVC 2018): K anchor positions spread over the training trajectories (buffer ``anchors``, set by
    :meth:`set_anchors` before training and stored with the weights), a K-way classifier and one offset per anchor.
    Why: regressing metres directly makes the network average between look-alike places and converges slowly
    (the demo's regressor missed even its own training images by metres); choosing "which part of the map" is a
    classification the network learns in a few hundred steps, and the offset only has to cover one anchor cell.
    The position is the probability-weighted mean of ``anchor + offset`` over the anchors near the most likely one
    (:attr:`RADIUS_SPACINGS`), so two look-alike places far apart are never averaged.
    """

    def __init__(self, in_dims: list[int], rotation: str, predict_variance: bool, num_anchors: int = 0) -> None:
        super().__init__()
        dp, dr = in_dims[0], in_dims[-1]
        self.rotation = rotation
        self.num_anchors = int(num_anchors)
        if self.num_anchors:
            self.fc_cls = nn.Linear(dp, self.num_anchors)
            self.fc_off = nn.Linear(dp, 3 * self.num_anchors)
            with torch.no_grad():
                self.fc_off.weight.mul_(0.1)
                self.fc_off.bias.zero_()
            self.register_buffer("anchors", torch.zeros(self.num_anchors, 3))
            self.register_buffer("anchor_spacing", torch.tensor(0.0))
            self.register_buffer("offset_axis_scale", torch.ones(3))
        else:
            self.fc_t = nn.Linear(dp, 3)
        self.fc_r = nn.Linear(dr, RAW_DIMS[rotation])
        with torch.no_grad():  # start near the identity rotation so early normalisation is well conditioned
            self.fc_r.weight.mul_(0.1)
            self.fc_r.bias.copy_(torch.tensor(identity_raw(rotation)))
        self.var_t = nn.Linear(dp, 1) if predict_variance else None
        self.var_r = nn.Linear(dr, 1) if predict_variance else None

    #: the position averages the anchors within this many anchor spacings of the most likely one
    RADIUS_SPACINGS = 1.5

    @torch.no_grad()
    def set_anchors(self, anchors: torch.Tensor, spacing: float, axis_scale: torch.Tensor | None = None) -> None:
        """Anchor positions (K, 3) in the normalised frame, their typical (median nearest-neighbour) spacing and
        the per-axis scale of the offsets (``offset_axis_scale``; ones when not given)."""
        if anchors.shape != (self.num_anchors, 3):
            raise ValueError(f"set_anchors: expected ({self.num_anchors}, 3), got {tuple(anchors.shape)}")
        self.anchors.copy_(anchors.to(self.anchors))
        self.anchor_spacing.fill_(float(spacing))
        scale = torch.ones(3) if axis_scale is None else torch.as_tensor(axis_scale, dtype=torch.float32)
        if scale.shape != (3,) or not bool(((scale >= 0) & (scale <= 1)).all()):
            raise ValueError(f"set_anchors: axis_scale must be 3 values in [0, 1], got {scale.tolist()}")
        self.offset_axis_scale.copy_(scale.to(self.offset_axis_scale))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before ``offset_axis_scale`` existed: their offsets were unscaled (ones)
        if self.num_anchors and prefix + "anchors" in state_dict and prefix + "offset_axis_scale" not in state_dict:
            state_dict[prefix + "offset_axis_scale"] = torch.ones(3)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _anchor_raw(self, ep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, K), offsets (B, K, 3))`` of the anchor classifier and offset regressor."""
        # per-axis offset scale: 0 on an axis the training trajectories never moved along (a ground robot's
        # height), so that coordinate is the anchors' own, exactly, instead of a regressed offset that never
        # quite settles at zero (it cost the demo 0.10-0.14 m of height error on a constant-height rig)
        off = self.fc_off(ep).reshape(ep.shape[0], self.num_anchors, 3) * self.offset_axis_scale
        return self.fc_cls(ep), off

    def _anchor_position(self, ep: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._anchor_mix(*self._anchor_raw(ep))

    def _anchor_mix(self, logits: torch.Tensor, off: torch.Tensor) -> dict[str, torch.Tensor]:
        cand = self.anchors[None] + off  # (B, K, 3)
        best = logits.argmax(dim=-1)
        radius = self.RADIUS_SPACINGS * self.anchor_spacing
        near = (self.anchors[None] - self.anchors[best][:, None]).norm(dim=-1) <= radius
        w = torch.softmax(logits.masked_fill(~near, float("-inf")), dim=-1)
        return {"t_norm": (w[..., None] * cand).sum(1), "anchor_logits": logits, "anchor_positions": cand,
                "anchor_centres": self.anchors, "anchor_spacing": self.anchor_spacing}

    def forward(self, emb: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        # The regressors run in fp32 even under autocast (precision bf16/fp16, AMP training): a bf16 position has
        # 8 significant bits, ~0.4 % of t_scale (0.15 m at t_scale 30 m), and a bf16 quaternion is not unit.
        with torch.autocast(device_type=emb[0].device.type, enabled=False):
            ep, er = emb[0].float(), emb[-1].float()
            out = self._anchor_position(ep) if self.num_anchors else {"t_norm": self.fc_t(ep)}
            out["q_raw"] = self.fc_r(er)
            if self.var_t is not None and self.var_r is not None:
                out["log_var"] = torch.cat([self.var_t(ep), self.var_r(er)], dim=-1)
        return out

    def forward_symmetric(self, emb: list[torch.Tensor], r_delta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rig-equivariant head (:mod:`.symmetry`): ``emb`` holds the T cyclic slot orders stacked along the
        batch (``(T·B, d)`` each, block k = shift k), ``r_delta`` (T, 3, 3) the rotation of each shift's virtual
        rig. Answers are mapped back to the real rig and averaged; the keys are those of :meth:`forward`."""
        from .symmetry import average_columns

        T = r_delta.shape[0]
        with torch.autocast(device_type=emb[0].device.type, enabled=False):
            ep, er = emb[0].float(), emb[-1].float()
            B = ep.shape[0] // T
            if self.num_anchors:
                logits, off = self._anchor_raw(ep)
                out = self._anchor_mix(logits.reshape(T, B, -1).mean(0), off.reshape(T, B, *off.shape[1:]).mean(0))
            else:
                out = {"t_norm": self.fc_t(ep).reshape(T, B, 3).mean(0)}
            r = gt.gram_schmidt_6d(average_columns(self.fc_r(er).reshape(T, B, 6), r_delta)).transpose(-1, -2)
            out["q_raw"] = torch.cat([r[..., :, 0], r[..., :, 1]], -1)  # already orthonormal: a no-op downstream
            if self.var_t is not None and self.var_r is not None:
                out["log_var"] = torch.cat([self.var_t(ep), self.var_r(er)], dim=-1).reshape(T, B, 2).mean(0)
        return out


def robust_fuse(t: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, iters: int = 3, t_sigma: float = 1.0,
                r_sigma_rad: float = 0.35) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust mean of T pose estimates per batch row: weighted mean position + Markley quaternion average, with
    Cauchy down-weighting of estimates far from the current mean (a camera that sees a textureless wall should not
    drag the rig). ``t`` (B,T,3), ``q`` (B,T,4), ``mask`` (B,T) → ``(t (B,3), q (B,4), weights (B,T))``.

    The quaternion average uses power iteration on ``Σ wᵢ qᵢqᵢᵀ`` (differentiable, exportable, no eigh).
    """
    m = mask.to(t.dtype)
    w = m
    t_mean = q_mean = t.new_zeros(0)
    for it in range(iters + 1):
        wn = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        t_mean = (wn[..., None] * t).sum(1)
        # sign-align to the highest-weight estimate, then power-iterate the scatter matrix
        ref = torch.gather(q, 1, wn.argmax(1)[:, None, None].expand(-1, 1, 4))
        s = torch.where((q * ref).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        qa = q * s
        v = gt.quat_normalize((wn[..., None] * qa).sum(1))
        M = torch.einsum("bt,bti,btj->bij", wn, qa, qa)
        for _ in range(4):
            v = torch.einsum("bij,bj->bi", M, v)
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        q_mean = gt.quat_normalize(v)
        if it == iters:
            break
        dt = (t - t_mean[:, None]).norm(dim=-1) / t_sigma
        dot = (q * q_mean[:, None]).sum(-1).abs().clamp(max=1.0)
        dr = 2 * torch.sqrt((1 - dot).clamp_min(0) * 2) / r_sigma_rad  # ≈ angle for small angles, smooth
        w = m / (1.0 + dt.detach() ** 2 + dr.detach() ** 2)
    return t_mean, q_mean, w / w.sum(1, keepdim=True).clamp_min(1e-12)
