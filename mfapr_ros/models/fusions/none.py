"""Mix-stream (``fusion.position: none``): one network regresses T_world_cam_i from every image as its own sample;
the rig pose is a robust fusion of ``T_world_cam_i · T_rig_cam_i⁻¹`` over the present cameras (Cauchy-weighted
mean + Markley quaternion average, :func:`~mfapr_ros.models.layers.robust_fuse`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mfapr_ros.core import geometry_torch as gt

from ..base import FusionMode, get_fusion, register_fusion
from ..layers import mask_images, robust_fuse
from ..rotation import quat_to_raw, raw_to_rotation

if TYPE_CHECKING:
    from ..regressor import PoseRegressor


@register_fusion
class MixStream(FusionMode):
    """No option; ``shared_weights`` must be true and ``extrinsics`` are required."""

    position: ClassVar[str] = "none"
    order: ClassVar[int] = 0
    shared_reason: ClassVar[str | None] = "mix-stream: one network sees every image as its own sample"
    extrinsics_reason: ClassVar[str | None] = "mix-stream fuses per-camera poses through T_base_camera"
    mix_stream: ClassVar[bool] = True

    @classmethod
    def attach(cls, model: PoseRegressor, cfg: dict[str, Any]) -> None:
        """A one-camera tile network at ``model.net``; the extrinsics as buffers ``ext_t``/``ext_q`` on ``model``."""
        inner = dict(cfg, num_cameras=1, fusion={"position": "input", "mode": "tile", "shared_weights": True})
        model.net = get_fusion("input").build_net(inner)
        ext = cfg["extrinsics"]
        model.register_buffer("ext_t", torch.tensor(ext["t"], dtype=torch.float32))
        model.register_buffer("ext_q", torch.tensor(ext["q"], dtype=torch.float32))

    @classmethod
    def forward(cls, model: PoseRegressor, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T = images.shape[:2]
        x = mask_images(images, mask).reshape(B * T, 1, *images.shape[2:])
        raw = model.net(x, torch.ones(B * T, 1, dtype=torch.bool, device=images.device))
        pc_t_norm = raw["t_norm"].reshape(B, T, 3)
        pc_t = pc_t_norm.double() * model.t_scale.double() + model.t_mean
        pc_q, pc_r = raw_to_rotation(raw["q_raw"], model.rotation_repr)
        pc_q, pc_r = pc_q.reshape(B, T, 4), pc_r.reshape(B, T, 3, 3)
        ti, qi = gt.pose_inverse(model.ext_t, model.ext_q)  # T_cam_rig
        rt, rq = gt.pose_compose(pc_t, pc_q.double(), ti.double().expand(B, T, 3), qi.double().expand(B, T, 4))
        t, q, w = robust_fuse(rt, rq, mask, t_sigma=0.2 * float(model.config["pose_normalization"]["t_scale"]))
        q, w = q.float(), w.float()  # positions stay float64 (see t_mean); rotations and weights are float32
        t_norm = ((t - model.t_mean) / model.t_scale.double()).float()
        out = {"t": t, "q": q, "t_norm": t_norm, "q_raw": quat_to_raw(q, model.rotation_repr),
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
