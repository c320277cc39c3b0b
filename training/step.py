"""One training step as one module: model + criterion (+ gradient-blending auxiliary heads), so DDP synchronises
all of them (the learned loss weights too). Also what evaluation runs (:meth:`TrainStep.predict`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mfapr_ros.core.errors import ConfigError

from .config import ExperimentConfig
from .gradient_blending import GradientBlender
from .losses import LossSettings, PoseLoss, camera_ground_truth


class AuxHeads(nn.Module):
    """Per-camera auxiliary pose heads for gradient blending on late-fusion models.

    A forward hook on the model's per-camera encoder (``model.net.per_camera``) captures each camera's features
    before fusion; head ``k`` regresses the rig pose (normalised ``t`` and raw ``q``) from camera ``k`` alone.
    The heads are training-only: they are not part of the saved model (the node never runs them).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        net = getattr(model, "net", None)
        per_camera = getattr(net, "per_camera", None)
        missing = getattr(net, "missing", None)
        if per_camera is None or missing is None:
            raise ConfigError("loss.gradient_blending (every_steps > 0) needs a late-fusion model "
                              "(model.fusion.position: late) whose per-camera branches can carry auxiliary heads")
        dim = sum(int(p.numel()) for p in missing)
        self.num_streams = int(model.num_cameras)
        self.heads = nn.ModuleList(nn.Linear(dim, 7) for _ in range(self.num_streams))
        self._features: list[torch.Tensor] | None = None
        per_camera.register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, _inp: Any, out: Any) -> None:
        self._features = list(out) if isinstance(out, (list, tuple)) else [out]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t_norm (B,K,3), q (B,K,4))`` from the features captured in the last model forward."""
        if self._features is None:
            raise RuntimeError("AuxHeads called before a model forward")
        f = torch.cat([x.float() for x in self._features], dim=-1)  # (B, T, D)
        raw = torch.stack([h(f[:, k]) for k, h in enumerate(self.heads)], dim=1)
        q = raw[..., 3:]
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return raw[..., :3], q


class TrainStep(nn.Module):
    """Model + criterion (+ gradient-blending aux heads) as one module, so DDP synchronises all of them."""

    def __init__(self, model: nn.Module, criterion: PoseLoss, blender: GradientBlender | None = None,
                 amp: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.aux = AuxHeads(model) if blender is not None else None
        self.blender = blender
        self.amp = amp

    @staticmethod
    def flatten(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``(B,S,…)`` tuple batches → ``(B·S,…)`` bundles; also accepts single bundles ``(B,T,3,H,W)``."""
        images, mask, t, q = batch["images"], batch["mask"], batch["t"], batch["q"]
        if images.dim() == 5:
            images, mask, t, q = images[:, None], mask[:, None], t[:, None], q[:, None]
        b, s = images.shape[:2]
        return (images.reshape(b * s, *images.shape[2:]), mask.reshape(b * s, -1).bool(),
                t.reshape(b * s, 3).double(), q.reshape(b * s, 4).float(), torch.tensor(s))

    def normalize_t(self, t: torch.Tensor) -> torch.Tensor:
        """World positions (float64, possibly large) → the model's normalised frame, float32 for the loss."""
        return ((t.double() - self.model.t_mean) / self.model.t_scale.double()).float()  # t_mean is float64

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        device_type = images.device.type
        with torch.autocast(device_type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            return self.model(images, mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        images, mask, t, q, s = self.flatten(batch)
        steps = int(s)
        out = self.predict(images, mask)
        t_gt_norm = self.normalize_t(t)
        cam_t = cam_q = None
        if "per_camera_t_norm" in out:
            ct, cam_q = camera_ground_truth(t, q.double(), self.model.ext_t.double(), self.model.ext_q.double())
            cam_t, cam_q = self.normalize_t(ct), cam_q.float()
        if self.blender is None:
            return self.criterion(out, t_gt_norm, q, steps, cam_t, cam_q, mask)
        # Gradient blending: Σ w_k L_stream_k + w_fused L_fused (+ the relative term, unweighted).
        stream, fused = self._stream_losses(out, t_gt_norm, q)
        total = self.blender.combine(stream, fused)
        parts = {"loss_abs": float(fused.detach()), **{f"loss_stream{k}": float(v) for k, v in
                                                        enumerate(stream.detach())}}
        if self.criterion.relative is not None and steps > 1:
            rel = self.criterion.relative_loss(out["t_norm"].float(), out["q"].float(), t_gt_norm, q, steps)
            total = total + self.criterion.settings.relative_weight * rel
            parts["loss_rel"] = float(rel.detach())
        parts["sx"], parts["sq"] = float(self.criterion.absolute.sx.detach()), float(
            self.criterion.absolute.sq.detach())
        for k, w in enumerate(self.blender.weights):
            parts[f"gb_w{k}"] = float(w)
        parts["loss"] = float(total.detach())
        return total, parts

    def _stream_losses(self, out: dict[str, torch.Tensor], t_gt_norm: torch.Tensor, q: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.aux is not None
        crit = self.criterion
        d_t, d_q = crit.distances(out["t_norm"].float(), out["q"].float(), t_gt_norm, q)
        fused = crit.absolute(d_t.mean(), d_q.mean())
        at, aq = self.aux()
        k = at.shape[1]
        sd_t, sd_q = crit.distances(at, aq, t_gt_norm[:, None].expand(-1, k, 3), q[:, None].expand(-1, k, 4))
        stream = torch.stack([crit.absolute(sd_t[:, i].mean(), sd_q[:, i].mean()) for i in range(k)])
        return stream, fused

    @torch.no_grad()
    def measure_streams(self, batch: dict[str, torch.Tensor]) -> list[float]:
        """Per-stream + fused losses on one batch (for the blending weights), no gradient."""
        images, mask, t, q, _ = self.flatten(batch)
        out = self.predict(images, mask)
        stream, fused = self._stream_losses(out, self.normalize_t(t), q)
        return [float(x) for x in stream] + [float(fused)]


def loss_settings(cfg: ExperimentConfig, model: nn.Module) -> LossSettings:
    """``cfg.loss`` with the model-dependent defaults filled (rotation representation, mix-stream weights). A model
    that predicts its variance (``model.predict_variance``) is trained with the heteroscedastic NLL: one setting."""
    lc = cfg.loss
    return lc.for_model(getattr(model, "rotation_repr", "quat"), bool(getattr(model, "mix_stream", False)))
