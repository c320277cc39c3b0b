"""MapNet (Brahmbhatt et al., CVPR 2018): ResNet-34 trunk, fc 2048 + ReLU + dropout → position / log-quaternion."""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import register_backbone
from ..cnn import CnnBackbone


@register_backbone
class MapNet(CnnBackbone):
    """``backbone: mapnet`` (rotation defaults to ``logq``, as in the paper)."""

    name: ClassVar[str] = "mapnet"
    order: ClassVar[int] = 3
    defaults: ClassVar[dict[str, Any]] = {**CnnBackbone.defaults, "arch": "resnet34"}
    default_rotation: ClassVar[str] = "logq"
