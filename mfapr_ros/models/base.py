"""The backbone and fusion-mode registries: what makes a new backbone or fusion mode *one new file*.

A backbone file subclasses :class:`Backbone` (its config defaults, input modes, mid blocks, extra validation and
encoder factories) and decorates it with :func:`register_backbone`; a fusion file subclasses :class:`FusionMode`
(the ``fusion.<option>`` it takes, its validation and how it builds and runs the network) and decorates it with
:func:`register_fusion`. ``mfapr_ros.models.backbones`` and ``mfapr_ros.models.fusions`` import every module in
their folder (:func:`discover`), so nothing else lists them: ``resolve_config``, ``BACKBONES`` and the fusion
dispatch read these registries. Entries are classes used through classmethods (a spec, not a network: a backbone
supplies several encoders, one per fusion position).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from .checks import config_error, require_int
from .rotation import raw_to_rotation

_BACKBONES: dict[str, type[Backbone]] = {}
_FUSIONS: dict[str, type[FusionMode]] = {}
B = TypeVar("B", bound="type[Backbone]")
F = TypeVar("F", bound="type[FusionMode]")


class Backbone:
    """One backbone: config defaults and the encoders every fusion position asks for.

    Encoders return a list of embeddings, one per head branch (a single branch for the CNNs and ViT, position and
    orientation for TransPoseNet), and expose ``out_dims``. A backbone that lacks an encoder simply does not offer
    the fusion option that needs it (empty ``mid_blocks``, no ``tokens`` in ``input_modes``).
    """

    name: ClassVar[str]
    #: place in listings and error messages (the paper's table order); new backbones go last by default
    order: ClassVar[int] = 100
    #: backbone-specific keys and defaults, merged over config's common keys (a key here overrides a common one)
    defaults: ClassVar[dict[str, Any]] = {}
    #: old key → current key, accepted when reading a config (stored checkpoints); the resolved config uses the new
    aliases: ClassVar[dict[str, str]] = {}
    default_rotation: ClassVar[str] = "quat"
    input_modes: ClassVar[tuple[str, ...]] = ("tile", "channel")
    default_input_mode: ClassVar[str] = "tile"
    mid_blocks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        """Validate this backbone's own keys in the resolved ``cfg`` (raise ``ConfigError`` naming the key)."""

    @classmethod
    def resolve_fc(cls, cfg: dict[str, Any], need_fc: int) -> None:
        """Fill and check ``num_fc``: auto = max(1, k of fusion fc-k), 0..4, at least k."""
        if cfg["num_fc"] is None:
            cfg["num_fc"] = max(1, need_fc)
        require_int(cfg, "num_fc", 0, 4)
        if need_fc > cfg["num_fc"]:
            raise config_error("num_fc", f"({cfg['num_fc']}) is too small for fusion.fc '{cfg['fusion']['fc']}'; "
                               f"set num_fc >= {need_fc}")

    @classmethod
    def lstm(cls, cfg: dict[str, Any]) -> tuple[list[int], int] | None:
        """``(grid, hidden)`` when the fc stack ends in PoseLSTM's LSTMs, else None."""
        return None

    @classmethod
    def encoder(cls, cfg: dict[str, Any], in_channels: int = 3, hw: tuple[int, int] | None = None) -> nn.Module:
        """Encoder of one input tensor (N, C, H, W) of spatial size ``hw`` → ``[embeddings]``."""
        raise NotImplementedError(f"backbone '{cls.name}' has no single-input encoder")

    @classmethod
    def tokens_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        """Input fusion ``tokens``: ``(images (B,T,...), mask) → [embeddings]`` (only if ``tokens`` is offered)."""
        raise NotImplementedError(f"backbone '{cls.name}' has no tokens encoder")

    @classmethod
    def mid_encoder(cls, cfg: dict[str, Any]) -> nn.Module:
        """Mid fusion at ``cfg['fusion']['block']``: ``(images, mask) → [embeddings]`` (only if it has mid blocks)."""
        raise NotImplementedError(f"backbone '{cls.name}' has no mid-fusion encoder")


class FusionMode:
    """One ``fusion.position``: its option key, validation, and how the :class:`PoseRegressor` is built and run."""

    position: ClassVar[str]
    #: place in listings and error messages; new modes go last by default
    order: ClassVar[int] = 100
    #: the ``fusion.<option>`` key this position takes (None: no option)
    option: ClassVar[str | None] = None
    #: why ``shared_weights`` must be true here (None: per-camera trunks allowed, the default)
    shared_reason: ClassVar[str | None] = None
    #: why ``extrinsics`` are required here (None: optional)
    extrinsics_reason: ClassVar[str | None] = None
    #: the model fuses per-camera poses (adds the ``per_camera_*`` outputs, which the losses read)
    mix_stream: ClassVar[bool] = False

    @classmethod
    def resolve_option(cls, backbone: type[Backbone], fusion: dict[str, Any]) -> dict[str, Any]:
        """The validated ``{option: value}`` for ``backbone`` (default filled in); empty without an option."""
        return {}

    @classmethod
    def fc_start(cls, fusion: dict[str, Any]) -> int:
        """Index of the fc stage the cameras are fused after (late fusion's fc-k); 0 elsewhere."""
        return 0

    @classmethod
    def build_net(cls, cfg: dict[str, Any]) -> nn.Module:
        """The network ``(images (B,T,3,H,W), mask (B,T)) → {t_norm, q_raw[, log_var]}``."""
        raise NotImplementedError(f"fusion position '{cls.position}' builds no network of its own")

    @classmethod
    def attach(cls, model: nn.Module, cfg: dict[str, Any]) -> None:
        """Add the networks (and buffers) to ``model``; names here are state-dict keys, so they must not change."""
        model.net = cls.build_net(cfg)

    @classmethod
    def forward(cls, model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs → metres and unit quaternions (inputs already validated)."""
        raw = model.net(images, mask)
        out = dict(raw)
        out["t"] = raw["t_norm"].double() * model.t_scale.double() + model.t_mean
        # R is what the chordal/geodesic losses compare
        out["q"], out["R"] = raw_to_rotation(raw["q_raw"], model.rotation_repr)
        return out


def register_backbone(cls: B) -> B:
    """Class decorator: make ``cls`` available as ``backbone: cls.name``."""
    if cls.name in _BACKBONES:
        raise ValueError(f"backbone '{cls.name}' is registered twice ({_BACKBONES[cls.name]} and {cls})")
    _BACKBONES[cls.name] = cls
    return cls


def register_fusion(cls: F) -> F:
    """Class decorator: make ``cls`` available as ``fusion.position: cls.position``."""
    if cls.position in _FUSIONS:
        raise ValueError(f"fusion position '{cls.position}' is registered twice ({_FUSIONS[cls.position]} and {cls})")
    _FUSIONS[cls.position] = cls
    return cls


def backbone_names() -> tuple[str, ...]:
    """Registered backbones in listing order."""
    return tuple(sorted(_BACKBONES, key=lambda n: (_BACKBONES[n].order, n)))


def fusion_positions() -> tuple[str, ...]:
    """Registered fusion positions in listing order."""
    return tuple(sorted(_FUSIONS, key=lambda n: (_FUSIONS[n].order, n)))


def get_backbone(name: str) -> type[Backbone]:
    """The registered backbone ``name`` (callers validate the name first; see ``resolve_config``)."""
    return _BACKBONES[name]


def get_fusion(position: str) -> type[FusionMode]:
    """The registered fusion mode of ``position``."""
    return _FUSIONS[position]


def discover(package: str, path: list[str]) -> None:
    """Import every public module of ``package`` so their ``register_*`` decorators run (zero edits elsewhere)."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
