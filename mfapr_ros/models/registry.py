"""The one model registry shared by training, evaluation, the node and export.

``build_model(cfg)`` validates a config dict (``ConfigError`` naming the key) and builds a :class:`PoseRegressor`;
``load_model(path)`` rebuilds a model from a checkpoint's JSON alone and loads its safetensors strictly;
``model_meta`` builds the checkpoint meta so every checkpoint carries model, rig, preprocessing and provenance.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from mfapr_ros.core.checkpoint import Checkpoint, load_checkpoint
from mfapr_ros.core.errors import CheckpointError, ConfigError

from .config import resolve_config
from .regressor import PoseRegressor

_TINY_BASE: dict[str, Any] = {
    "backbone": "transposenet", "num_cameras": 4, "image_size": 64, "arch": "tiny", "width": 8, "d_model": 32,
    "num_heads": 2, "num_layers": 1, "dim_feedforward": 64, "fc_dim": 64, "num_fc": 1, "dropout": 0.0,
}

#: Named configs. ``tiny*`` are for other modules' tests (build < 1 s, forward B=2 T=4 well under 0.2 s on CPU);
#: ``demo`` is the `make demo` model (trains on 2 CPU cores in minutes); the rest are the paper's rows at 224 px.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {**_TINY_BASE, "fusion": {"position": "input", "mode": "tokens"}},
    "tiny_tile": {**_TINY_BASE, "fusion": {"position": "input", "mode": "tile"}},
    # per-camera tiny CNN (shared weights), 2×2 spatial grid kept, embeddings concatenated in slot order (late
    # fusion at fc-0), anchor classification + offset for the position, 6-D rotation (docs/models.md, results.md)
    "demo": {"backbone": "mapnet", "num_cameras": 4, "image_size": 64, "arch": "tiny", "width": 16, "pool_grid": 2,
             "fc_dim": 256, "num_fc": 1, "dropout": 0.0, "rotation": "6d", "num_anchors": 256,
             "fusion": {"position": "late", "fc": "fc-0", "shared_weights": True, "symmetric": "auto"}},
    # the previous demo model: the input-fused transformer (token fusion), now with the 6-D rotation
    "demo_transformer": {"backbone": "transposenet", "num_cameras": 4, "image_size": 64, "arch": "tiny",
                         "width": 16, "d_model": 64, "num_heads": 4, "num_layers": 2, "dim_feedforward": 128,
                         "fc_dim": 128, "num_fc": 1, "dropout": 0.0, "rotation": "6d",
                         "fusion": {"position": "input", "mode": "tokens"}},
    "posenet": {"backbone": "posenet", "arch": "googlenet", "fusion": {"position": "input", "mode": "tile"}},
    "posenet_resnet": {"backbone": "posenet_resnet", "arch": "resnet34",
                       "fusion": {"position": "input", "mode": "tile"}},
    "poselstm": {"backbone": "poselstm", "arch": "googlenet", "fusion": {"position": "input", "mode": "tile"}},
    "mapnet": {"backbone": "mapnet", "arch": "resnet34", "fusion": {"position": "input", "mode": "tile"}},
    "mapnet_mid": {"backbone": "mapnet", "arch": "resnet34", "fusion": {"position": "mid", "block": "block-3"}},
    "mapnet_late": {"backbone": "mapnet", "arch": "resnet34", "fusion": {"position": "late", "fc": "fc-1"}},
    "transposenet": {"backbone": "transposenet", "arch": "efficientnet_b0", "d_model": 256,
                     "fusion": {"position": "input", "mode": "tokens"}},
    "vit": {"backbone": "vit", "fusion": {"position": "input", "mode": "tokens"}},
    "vit_small": {"backbone": "vit", "patch": 16, "d_model": 192, "num_layers": 6, "num_heads": 3,
                  "dim_feedforward": 768, "fc_dim": 256,
                  "fusion": {"position": "input", "mode": "tokens"}},
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of ``PRESETS[name]`` with top-level ``overrides`` (e.g. ``preset("tiny", num_cameras=6)``)."""
    if name not in PRESETS:
        raise ConfigError(f"model preset '{name}' does not exist; presets: {sorted(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[name])
    cfg.update(copy.deepcopy(overrides))
    return cfg


def build_model(cfg: dict[str, Any]) -> PoseRegressor:
    """Validate ``cfg`` (or a preset name) and build the network; ``model.config`` is the resolved dict."""
    if isinstance(cfg, str):
        cfg = preset(cfg)
    return PoseRegressor(resolve_config(cfg))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[PoseRegressor, Checkpoint]:
    """Rebuild the model from a checkpoint's JSON and load its weights strictly; returns ``(model.eval(), ckpt)``."""
    ckpt = load_checkpoint(path)
    cfg = ckpt.model_config
    if "transposenet" in str(cfg.get("backbone", "")) and "content_queries" not in cfg:
        # written before content queries existed (their resolved configs list every key): the plain queries
        cfg = {**cfg, "content_queries": False}
    try:
        model = build_model(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: its 'model' config is not valid for this mfapr_ros: {e}") from None
    try:
        result = model.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{ckpt.path}: weights do not match the model its JSON describes: "
                              f"{str(e).splitlines()[1:3]}; the checkpoint was written by a different model "
                              "version or its files were mixed up") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt.path}: weights do not match the model its JSON describes (missing {len(result.missing_keys)}: "
            f"{result.missing_keys[:5]}, unexpected {len(result.unexpected_keys)}: {result.unexpected_keys[:5]}); "
            "the checkpoint was written by a different model version or its files were mixed up")
    return model.to(device).eval(), ckpt


def model_meta(model: PoseRegressor, rig: Any, preprocess_cfg: Any, provenance: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Checkpoint meta: resolved model config, rig, preprocessing and pose normalisation (from the buffers, so a
    model whose normalisation was set during training records the values it really uses)."""
    if rig is not None and rig.num_cameras != model.num_cameras:
        raise ConfigError(f"model_meta: rig '{rig.name}' has {rig.num_cameras} cameras but the model takes "
                          f"num_cameras={model.num_cameras}")
    cfg = copy.deepcopy(model.config)
    pn = {"t_mean": [float(x) for x in model.t_mean.tolist()], "t_scale": float(model.t_scale.item())}
    cfg["pose_normalization"] = pn
    pre = preprocess_cfg.to_dict() if hasattr(preprocess_cfg, "to_dict") else dict(preprocess_cfg)
    if pre.get("crop") not in (None, model.image_size):
        raise ConfigError(f"model_meta: preprocess crop {pre.get('crop')} differs from the model's image_size "
                          f"{model.image_size}")
    return {"model": cfg, "rig": rig.to_dict() if hasattr(rig, "to_dict") else rig, "preprocess": pre,
            "pose_normalization": pn, "provenance": dict(provenance or {})}
