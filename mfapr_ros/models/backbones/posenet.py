"""PoseNet (Kendall et al., ICCV 2015): GoogLeNet trunk, fc 2048 → position / quaternion; and the ResNet-34
variant of the paper's tables (``posenet_resnet``)."""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import register_backbone
from ..cnn import CnnBackbone


@register_backbone
class PoseNet(CnnBackbone):
    """``backbone: posenet``."""

    name: ClassVar[str] = "posenet"
    order: ClassVar[int] = 0
    defaults: ClassVar[dict[str, Any]] = {**CnnBackbone.defaults, "arch": "googlenet"}


@register_backbone
class PoseNetResNet(CnnBackbone):
    """``backbone: posenet_resnet``: PoseNet's head on a ResNet-34 trunk."""

    name: ClassVar[str] = "posenet_resnet"
    order: ClassVar[int] = 1
    defaults: ClassVar[dict[str, Any]] = {**CnnBackbone.defaults, "arch": "resnet34"}
