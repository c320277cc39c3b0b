"""``PoseRegressor``: the module every caller sees (training, Localizer, export).

It owns the pose normalisation (buffers, so outputs are metres) and input validation; the registered fusion mode
(``fusions/``) adds the networks at ``net`` and turns their raw head outputs into poses (the mix-stream mode also
fuses per-camera poses through the rig extrinsics), so this class has no per-mode branches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mfapr_ros.core.errors import DataError

from .base import get_fusion


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
        # the registry entry (a class, not a module: it owns no weights; the networks it attaches do)
        self.fusion = get_fusion(cfg["fusion"]["position"])
        self.mix_stream: bool = self.fusion.mix_stream
        pn = cfg["pose_normalization"]
        # float64: map frames with large coordinates (UTM northings ~5e6 m) have 0.5 m float32 spacing; positions are
        # de-normalised in float64 (t = t_norm·t_scale + t_mean), the network itself stays float32
        self.register_buffer("t_mean", torch.tensor(pn["t_mean"], dtype=torch.float64))
        self.register_buffer("t_scale", torch.tensor(float(pn["t_scale"]), dtype=torch.float32))
        self.fusion.attach(self, cfg)

    def set_anchors(self, t_world: Any, spacing_m: float, axis_scale: Any = None) -> None:
        """Anchor positions (K, 3) in world metres (stored in the normalised frame) for an anchor head, their
        typical spacing in metres and the per-axis offset scale in [0, 1] (training picks all three from the
        training trajectories, ``mfapr_training.anchors``)."""
        head = self.net.head
        if not head.num_anchors:
            raise ValueError("set_anchors: this model regresses positions directly (num_anchors = 0)")
        a = (torch.as_tensor(t_world, dtype=torch.float64) - self.t_mean.cpu()) / float(self.t_scale)
        head.set_anchors(a.float(), spacing_m / float(self.t_scale), axis_scale)

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
        return self.fusion.forward(self, images, mask)
