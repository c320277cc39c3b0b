"""The model zoo: PoseNet, PoseLSTM, MapNet, TransPoseNet and ViT × fusion at input / mid / late / none.

Public API (see docs/architecture.md): :func:`build_model`, :func:`load_model`, :func:`model_meta`, :data:`PRESETS`
(+ :func:`preset`), :func:`resolve_config`, :func:`extrinsics_from_rig`.
"""

from .config import BACKBONES, extrinsics_from_rig, resolve_config
from .registry import PRESETS, build_model, load_model, model_meta, preset
from .regressor import PoseRegressor

__all__ = ["BACKBONES", "PRESETS", "PoseRegressor", "build_model", "extrinsics_from_rig", "load_model", "model_meta",
           "preset", "resolve_config"]
