"""Model config: common defaults + the registered backbone's and fusion mode's rules → one resolved dict.

The resolved dict is what ``model.config`` holds and what checkpoints store, so a model rebuilds from JSON alone.
Every key is checked; an error names the key, the bad value and the valid choices (a typo must never silently fall
back to a default).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from mfapr_ros.core.errors import ConfigError

from .base import Backbone, FusionMode, backbone_names, fusion_positions, get_backbone, get_fusion
from .checks import config_error, require_bool, require_int
from .rotation import REPRESENTATIONS
from .trunks import ARCHS

MAX_CAMERAS = 10

#: keys every backbone takes; a backbone's own ``defaults`` (``backbones/``) are merged over these
COMMON_DEFAULTS: dict[str, Any] = {
    "num_cameras": 4,
    "image_size": 224,
    "pretrained": False,
    "predict_variance": False,
    "num_anchors": 0,  # 0: direct position regression; K > 0: anchor classification + offset (layers.PoseHead)
    "rotation": None,  # quat | logq | 6d | 9d_svd (models/rotation.py); default per backbone
    "dropout": 0.0,
    "pose_normalization": {"t_mean": [0.0, 0.0, 0.0], "t_scale": 1.0},
    "extrinsics": None,
}


def _floats(v: Any, n: int, key: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise config_error(key, f"must be a list of {n} numbers, got {v!r}")
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise config_error(key, f"must be a list of {n} numbers, got {v!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise config_error(key, f"must be finite, got {v!r}")
    return out


def _resolve_fusion(backbone: type[Backbone], fusion: Any) -> dict[str, Any]:
    if fusion is None:
        fusion = {}
    if not isinstance(fusion, dict):
        raise config_error("fusion", f"must be a mapping like {{position: input, mode: tile}}, got {fusion!r}")
    modes = [get_fusion(p) for p in fusion_positions()]
    options = [m.option for m in modes if m.option]
    valid = ["position", *options, "shared_weights", "symmetric"]
    unknown = set(fusion) - set(valid)
    if unknown:
        raise config_error("fusion", f"has unknown keys {sorted(unknown)}; valid: {', '.join(valid)}")
    pos = fusion.get("position", "input")
    if pos not in fusion_positions():
        raise config_error("fusion.position", f"must be one of {list(fusion_positions())}, got {pos!r}")
    mode = get_fusion(pos)
    for k in options:
        if k in fusion and k != mode.option:
            raise config_error(f"fusion.{k}", f"does not apply to fusion.position '{pos}'"
                               + (f" (that position takes fusion.{mode.option})" if mode.option else ""))
    out: dict[str, Any] = {"position": pos, **mode.resolve_option(backbone, fusion)}
    shared = fusion.get("shared_weights", mode.shared_reason is not None)
    if not isinstance(shared, bool):
        raise config_error("fusion.shared_weights", f"must be true or false, got {shared!r}")
    if mode.shared_reason is not None and not shared:
        raise config_error("fusion.shared_weights", f"must be true for position '{pos}' ({mode.shared_reason})")
    out["shared_weights"] = shared
    sym = fusion.get("symmetric", False)
    if not isinstance(sym, bool) and sym != "auto":
        raise config_error("fusion.symmetric", f"must be true, false or auto, got {sym!r}")
    if sym == "auto":  # decided in resolve_config once the rotation and extrinsics are known
        out["symmetric"] = "auto"
    elif sym:  # the rig-equivariant head (models/symmetry.py); stored only when on, so older configs read unchanged
        if pos != "late" or not shared:
            raise config_error("fusion.symmetric", "needs fusion.position 'late' with shared_weights: true (the "
                               f"per-camera embeddings must not depend on the slot), got position '{pos}', "
                               f"shared_weights {shared}")
        out["symmetric"] = True
    return out


def _check_common(out: dict[str, Any]) -> None:
    """The keys every backbone shares (and the CNN trunk keys, wherever a backbone has them)."""
    require_int(out, "image_size", 16, 4096)
    require_bool(out, "pretrained")
    require_bool(out, "predict_variance")
    require_int(out, "num_anchors", 0, 65536)
    if out["rotation"] not in REPRESENTATIONS:
        raise config_error("rotation", f"must be one of {list(REPRESENTATIONS)}, got {out['rotation']!r}")
    d = out["dropout"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
        raise config_error("dropout", f"must be a number in [0, 1), got {d!r}")
    out["dropout"] = float(d)
    pn = out["pose_normalization"]
    if not isinstance(pn, dict) or set(pn) - {"t_mean", "t_scale"}:
        raise config_error("pose_normalization", f"must be {{t_mean: [x, y, z], t_scale: s}}, got {pn!r}")
    t_scale = pn.get("t_scale", 1.0)
    if isinstance(t_scale, bool) or not isinstance(t_scale, (int, float)) or not (0 < t_scale < math.inf):
        raise config_error("pose_normalization.t_scale", f"must be a positive number, got {t_scale!r}")
    out["pose_normalization"] = {"t_mean": _floats(pn.get("t_mean", [0, 0, 0]), 3, "pose_normalization.t_mean"),
                                 "t_scale": float(t_scale)}
    if "arch" in out:
        if out["arch"] not in ARCHS:
            raise config_error("arch", f"must be one of {sorted(ARCHS)}, got {out['arch']!r}")
        require_int(out, "width", 1, 512)
    if "pool_grid" in out:
        require_int(out, "pool_grid", 1, 16)


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` and fill defaults; returns a new JSON-serialisable dict (idempotent).

    Backbone- and fusion-specific rules live with their registry entries (``backbones/``, ``fusions/``); this
    function only runs them in a fixed order, so the first error reported for a config never depends on which
    files are installed.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("backbone")
    if name not in backbone_names():
        raise config_error("backbone", f"must be one of {list(backbone_names())}, got {name!r}")
    backbone = get_backbone(name)
    cfg = _renamed(cfg, backbone.aliases)
    base = copy.deepcopy({**COMMON_DEFAULTS, **backbone.defaults})
    unknown = set(cfg) - set(base) - {"backbone", "fusion"}
    if unknown:
        raise ConfigError(f"model config: unknown keys {sorted(unknown)} for backbone '{name}'; valid keys: "
                          f"{sorted({'backbone', 'fusion', *base})}")
    out: dict[str, Any] = {"backbone": name, **base, **copy.deepcopy({k: v for k, v in cfg.items()
                                                                       if k not in ("backbone", "fusion")})}
    T = require_int(out, "num_cameras", 1, MAX_CAMERAS)
    out["fusion"] = _resolve_fusion(backbone, cfg.get("fusion"))
    if out["rotation"] is None:
        out["rotation"] = backbone.default_rotation
    _check_common(out)
    backbone.check(out)
    require_int(out, "fc_dim", 1)
    mode = get_fusion(out["fusion"]["position"])
    backbone.resolve_fc(out, mode.fc_start(out["fusion"]))
    out["extrinsics"] = _resolve_extrinsics(out["extrinsics"], mode, T)
    if out["fusion"].get("symmetric") == "auto":  # on where it can be exact (a ring rig), else off (not stored)
        from .symmetry import unavailable

        if unavailable(out) is None:
            out["fusion"]["symmetric"] = True
        else:
            del out["fusion"]["symmetric"]
    if out["fusion"].get("symmetric") and out["rotation"] != "6d":
        raise config_error("fusion.symmetric", f"averages the 6-D rotation form: use rotation 6d, got "
                           f"{out['rotation']!r}")
    return out


def config_keys(backbone: str) -> set[str]:
    """Every key a model config for ``backbone`` takes (its default_conf: the common keys + the backbone's own,
    plus the old names it still reads); unknown backbone → ``ConfigError`` listing the registered ones."""
    if backbone not in backbone_names():
        raise config_error("backbone", f"must be one of {list(backbone_names())}, got {backbone!r}")
    b = get_backbone(backbone)
    return {"backbone", "fusion", *COMMON_DEFAULTS, *b.defaults, *b.aliases}


def _renamed(cfg: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """``cfg`` with a backbone's old key names (``aliases``) replaced by the current ones; both given is an error."""
    old = [k for k in cfg if k in aliases]
    if not old:
        return cfg
    both = [k for k in old if aliases[k] in cfg]
    if both:
        raise config_error(both[0], f"and '{aliases[both[0]]}' are the same setting (old and current name); keep "
                           f"'{aliases[both[0]]}'")
    return {aliases.get(k, k): v for k, v in cfg.items()}


def _resolve_extrinsics(ext: Any, mode: type[FusionMode], T: int) -> dict[str, Any] | None:
    if ext is None:
        if mode.extrinsics_reason is not None:
            raise config_error("extrinsics", f"is required for fusion.position '{mode.position}' "
                               f"({mode.extrinsics_reason}); pass extrinsics_from_rig(rig)")
        return None
    if not isinstance(ext, dict) or set(ext) != {"t", "q"}:
        raise config_error("extrinsics", f"must be {{t: [[x,y,z]]*T, q: [[w,x,y,z]]*T}}, got {ext!r}")
    if not isinstance(ext["t"], (list, tuple)) or not isinstance(ext["q"], (list, tuple)) \
            or len(ext["t"]) != T or len(ext["q"]) != T:
        raise config_error("extrinsics", f"needs one t and one q per camera (num_cameras={T})")
    t = [_floats(v, 3, f"extrinsics.t[{i}]") for i, v in enumerate(ext["t"])]
    q = [_floats(v, 4, f"extrinsics.q[{i}]") for i, v in enumerate(ext["q"])]
    for i, qq in enumerate(q):
        n = math.sqrt(sum(x * x for x in qq))
        if abs(n - 1.0) > 1e-3:
            raise config_error(f"extrinsics.q[{i}]", f"must be a unit quaternion (w,x,y,z), norm is {n:.4f}")
        if abs(n - 1.0) > 1e-12:  # renormalise only when needed, so resolving twice is exact (idempotent)
            q[i] = [x / n for x in qq]
    return {"t": t, "q": q}


def extrinsics_from_rig(rig: Any) -> dict[str, list[list[float]]]:
    """``{t, q}`` (T_base_camera, w,x,y,z) of a :class:`~mfapr_ros.core.rig.Rig` for the config's ``extrinsics`` key."""
    t, q = rig.extrinsics()
    return {"t": [[float(x) for x in r] for r in t], "q": [[float(x) for x in r] for r in q]}
