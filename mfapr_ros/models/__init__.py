"""The model zoo: PoseNet, PoseLSTM, MapNet, TransPoseNet and ViT × fusion at input / mid / late / none.

Public API (see docs/architecture.md): :func:`build_model`, :func:`load_model`, :func:`model_meta`, :data:`PRESETS`
(+ :func:`preset`), :func:`resolve_config`, :func:`extrinsics_from_rig`. Importing this package imports every
module of ``backbones/`` and ``fusions/``, which registers them (``base``): a new backbone or fusion mode is one
new file there.
"""

from . import backbones, fusions  # noqa: F401 - imported for registration
from .base import backbone_names
from .config import extrinsics_from_rig, resolve_config
from .registry import PRESETS, build_model, load_model, model_meta, preset
from .regressor import PoseRegressor

#: registered backbone names in listing order (filled by the imports above)
BACKBONES: tuple[str, ...] = backbone_names()

__all__ = ["BACKBONES", "PRESETS", "PoseRegressor", "build_model", "extrinsics_from_rig", "load_model", "model_meta",
           "preset", "resolve_config"]
