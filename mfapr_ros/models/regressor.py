"""``PoseRegressor``: the module every caller sees (training, Localizer, export).

It owns the pose normalisation (buffers, so outputs are metres) and the mix-stream (``fusion.position: none``)
fusion of per-camera poses through the rig extrinsics; the wrapped :class:`FusedNet` only produces raw head outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mfapr_ros.core import geometry_torch as gt
from mfapr_ros.core.errors import DataError

from .fusion import FusedNet
from .layers import mask_images, robust_fuse
from .rotation import quat_to_raw, raw_to_rotation


def _tracing() -> bool:
    """True under torch.export / torch.compile / jit tracing, where data-dependent checks must be skipped."""
    try:
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return True
    except AttributeError:  # older torch
        pass
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting())


class PoseRegressor(nn.Module):
    """``model(images (B,T,3,H,W), mask (B,T) bool) -> dict`` — see docs/architecture.md for the keys."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.config = cfg
        self.num_cameras: int = cfg["num_cameras"]
        self.image_size: int = cfg["image_size"]
        self.rotation_repr: str = cfg["rotation"]
        self.mix_stream = cfg["fusion"]["position"] == "none"
        pn = cfg["pose_normalization"]
        # float64: map frames with large coordinates (UTM northings ~5e6 m) have 0.5 m float32 spacing; positions are
        # de-normalised in float64 (t = t_norm·t_scale + t_mean), the network itself stays float32
        self.register_buffer("t_mean", torch.tensor(pn["t_mean"], dtype=torch.float64))
        self.register_buffer("t_scale", torch.tensor(float(pn["t_scale"]), dtype=torch.float32))
        if self.mix_stream:
            inner = dict(cfg, num_cameras=1, fusion={"position": "input", "mode": "tile", "shared_weights": True})
            self.net = FusedNet(inner)
            ext = cfg["extrinsics"]
            self.register_buffer("ext_t", torch.tensor(ext["t"], dtype=torch.float32))
            self.register_buffer("ext_q", torch.tensor(ext["q"], dtype=torch.float32))
        else:
            self.net = FusedNet(cfg)

    def set_pose_normalization(self, t_mean: Any, t_scale: float) -> None:
        """Update the normalisation buffers *and* ``config`` (training computes them from the training set)."""
        self.t_mean.copy_(torch.as_tensor(t_mean, dtype=torch.float64))
        self.t_scale.fill_(float(t_scale))
        self.config["pose_normalization"] = {"t_mean": [float(x) for x in t_mean], "t_scale": float(t_scale)}

    def set_anchors(self, t_world: Any, spacing_m: float) -> None:
        """Anchor positions (K, 3) in world metres (stored in the normalised frame) for an anchor head, and their
        typical spacing in metres (training picks them from the training trajectories, ``mfapr_training.anchors``)."""
        head = self.net.head
        if not head.num_anchors:
            raise ValueError("set_anchors: this model regresses positions directly (num_anchors = 0)")
        a = (torch.as_tensor(t_world, dtype=torch.float64) - self.t_mean.cpu()) / float(self.t_scale)
        head.set_anchors(a.float(), spacing_m / float(self.t_scale))

    def check_inputs(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Shape/mask validation with messages that say what the model expects; returns the (default) mask."""
        T, S = self.num_cameras, self.image_size
        if images.dim() != 5 or images.shape[1] != T or images.shape[2] != 3:
            raise DataError(f"model input: images must be (B, {T}, 3, {S}, {S}) (num_cameras={T}), got "
                            f"{tuple(images.shape)}")
        if images.shape[3] != S or images.shape[4] != S:
            raise DataError(f"model input: images are {images.shape[3]}×{images.shape[4]} px but the model was built "
                            f"for image_size={S}; preprocess with the checkpoint's PreprocessConfig")
        if mask is None:
            return torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        if mask.shape != images.shape[:2]:
            raise DataError(f"model input: mask must be (B, T)={tuple(images.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.to(torch.bool)
        if not _tracing() and not bool(mask.any(dim=1).all()):
            bad = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise DataError(f"model input: bundle(s) {bad} of the batch have no camera present (mask all False); "
                            "drop such bundles before inference")
        return mask

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_unchecked(images, self.check_inputs(images, mask))

    def forward_unchecked(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward without input validation (used by export, where data-dependent checks cannot be traced)."""
        if not self.mix_stream:
            raw = self.net(images, mask)
            out = dict(raw)
            out["t"] = raw["t_norm"].double() * self.t_scale.double() + self.t_mean
            # R is what the chordal/geodesic losses compare
            out["q"], out["R"] = raw_to_rotation(raw["q_raw"], self.rotation_repr)
            return out
        B, T = images.shape[:2]
        x = mask_images(images, mask).reshape(B * T, 1, *images.shape[2:])
        raw = self.net(x, torch.ones(B * T, 1, dtype=torch.bool, device=images.device))
        pc_t_norm = raw["t_norm"].reshape(B, T, 3)
        pc_t = pc_t_norm.double() * self.t_scale.double() + self.t_mean
        pc_q, pc_r = raw_to_rotation(raw["q_raw"], self.rotation_repr)
        pc_q, pc_r = pc_q.reshape(B, T, 4), pc_r.reshape(B, T, 3, 3)
        ti, qi = gt.pose_inverse(self.ext_t, self.ext_q)  # T_cam_rig
        rt, rq = gt.pose_compose(pc_t, pc_q.double(), ti.double().expand(B, T, 3), qi.double().expand(B, T, 4))
        t, q, w = robust_fuse(rt, rq, mask, t_sigma=0.2 * float(self.config["pose_normalization"]["t_scale"]))
        q, w = q.float(), w.float()  # positions stay float64 (see t_mean); rotations and weights are float32
        t_norm = ((t - self.t_mean) / self.t_scale.double()).float()
        out = {"t": t, "q": q, "t_norm": t_norm, "q_raw": quat_to_raw(q, self.rotation_repr),
               "R": gt.quat_to_matrix(q), "per_camera_R": pc_r,
               "per_camera_t": pc_t, "per_camera_q": pc_q, "per_camera_t_norm": pc_t_norm,
               "per_camera_q_raw": raw["q_raw"].reshape(B, T, -1), "fusion_weights": w}
        if "log_var" in raw:
            lv = raw["log_var"].reshape(B, T, 2)
            out["per_camera_log_var"] = lv
            # lv is a log *scale* (e^s = the expected error distance, see heteroscedastic_nll), so the fused scale of
            # a weighted mean of independent estimates is sqrt(Σ wᵢ² e^(2sᵢ)): s = ½·logsumexp(2sᵢ + 2·log wᵢ)
            out["log_var"] = 0.5 * torch.logsumexp(2 * lv + 2 * torch.log(w.clamp_min(1e-12))[..., None], dim=1)
        return out
