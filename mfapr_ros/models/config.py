"""Model config: defaults per backbone and validation into one resolved, JSON-serialisable dict.

The resolved dict is what ``model.config`` holds and what checkpoints store, so a model rebuilds from JSON alone.
Every key is checked; an error names the key, the bad value and the valid choices (a typo must never silently fall
back to a default).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from mfapr_ros.core.errors import ConfigError

from .rotation import REPRESENTATIONS
from .trunks import ARCHS

BACKBONES = ("posenet", "posenet_resnet", "poselstm", "mapnet", "transposenet", "vit")
CNN_GLOBAL = ("posenet", "posenet_resnet", "poselstm", "mapnet")
POSITIONS = ("none", "input", "mid", "late")
INPUT_MODES = {b: ("tile", "channel") for b in CNN_GLOBAL} | {"transposenet": ("tile", "channel", "tokens"),
                                                               "vit": ("tile", "channel", "tokens")}
MID_BLOCKS = {b: ("block-2", "block-3", "block-4", "block-5") for b in CNN_GLOBAL} | {"transposenet": ("cnn",),
                                                                                       "vit": ()}
LATE_FCS = ("fc-0", "fc-1", "fc-2")
MAX_CAMERAS = 10

_COMMON: dict[str, Any] = {
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
_CNN: dict[str, Any] = {"arch": "resnet34", "width": 16, "fc_dim": 2048, "num_fc": None, "pool_grid": 1}
DEFAULTS: dict[str, dict[str, Any]] = {
    "posenet": {**_COMMON, **_CNN, "arch": "googlenet", "dropout": 0.5},
    "posenet_resnet": {**_COMMON, **_CNN, "arch": "resnet34", "dropout": 0.5},
    "poselstm": {**_COMMON, **_CNN, "arch": "googlenet", "dropout": 0.5, "lstm_hidden": 128, "lstm_grid": None},
    "mapnet": {**_COMMON, **_CNN, "arch": "resnet34", "dropout": 0.5},
    "transposenet": {**_COMMON, "arch": "efficientnet_b0", "width": 16, "d_model": 256, "num_heads": 8,
                     "num_layers": 2, "dim_feedforward": 512, "fc_dim": 1024, "num_fc": None, "dropout": 0.1},
    "vit": {**_COMMON, "patch": 16, "dim": 768, "depth": 12, "heads": 12, "mlp_dim": 3072, "fc_dim": 1024,
            "num_fc": None, "dropout": 0.0},
}
DEFAULT_ROTATION = {"mapnet": "logq"}
DEFAULT_INPUT_MODE = {"transposenet": "tokens", "vit": "tokens"}


def _err(key: str, msg: str) -> ConfigError:
    return ConfigError(f"model config: '{key}' {msg}")


def _int(cfg: dict[str, Any], key: str, lo: int, hi: int | None = None) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _err(key, f"must be an integer in {rng}, got {v!r}")
    return v


def _bool(cfg: dict[str, Any], key: str) -> bool:
    if not isinstance(cfg[key], bool):
        raise _err(key, f"must be true or false, got {cfg[key]!r}")
    return cfg[key]


def _floats(v: Any, n: int, key: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise _err(key, f"must be a list of {n} numbers, got {v!r}")
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise _err(key, f"must be a list of {n} numbers, got {v!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise _err(key, f"must be finite, got {v!r}")
    return out


def lstm_grid_for(fc_dim: int) -> list[int]:
    """PoseLSTM's grid for an fc of ``fc_dim``: 32×64 for 2048, else the most square h×w with h ≤ w."""
    h = int(math.isqrt(fc_dim))
    while fc_dim % h:
        h -= 1
    return [h, fc_dim // h]


def _resolve_fusion(backbone: str, fusion: Any, T: int) -> dict[str, Any]:
    if fusion is None:
        fusion = {}
    if not isinstance(fusion, dict):
        raise _err("fusion", f"must be a mapping like {{position: input, mode: tile}}, got {fusion!r}")
    unknown = set(fusion) - {"position", "mode", "block", "fc", "shared_weights"}
    if unknown:
        raise _err("fusion", f"has unknown keys {sorted(unknown)}; valid: position, mode, block, fc, shared_weights")
    pos = fusion.get("position", "input")
    if pos not in POSITIONS:
        raise _err("fusion.position", f"must be one of {list(POSITIONS)}, got {pos!r}")
    relevant = {"none": None, "input": "mode", "mid": "block", "late": "fc"}[pos]
    for k in ("mode", "block", "fc"):
        if k in fusion and k != relevant:
            raise _err(f"fusion.{k}", f"does not apply to fusion.position '{pos}'"
                       + (f" (that position takes fusion.{relevant})" if relevant else ""))
    out: dict[str, Any] = {"position": pos}
    if pos == "input":
        mode = fusion.get("mode", DEFAULT_INPUT_MODE.get(backbone, "tile"))
        if mode not in INPUT_MODES[backbone]:
            raise _err("fusion.mode", f"must be one of {list(INPUT_MODES[backbone])} for backbone '{backbone}', "
                       f"got {mode!r}")
        out["mode"] = mode
    elif pos == "mid":
        blocks = MID_BLOCKS[backbone]
        if not blocks:
            raise _err("fusion.position", f"'mid' is not available for backbone '{backbone}'; use none, input or "
                       "late")
        block = fusion.get("block", blocks[min(1, len(blocks) - 1)])
        if block not in blocks:
            raise _err("fusion.block", f"must be one of {list(blocks)} for backbone '{backbone}', got {block!r}")
        out["block"] = block
    elif pos == "late":
        fc = fusion.get("fc", "fc-1")
        if fc not in LATE_FCS:
            raise _err("fusion.fc", f"must be one of {list(LATE_FCS)}, got {fc!r}")
        out["fc"] = fc
    shared = fusion.get("shared_weights", pos in ("none", "input"))
    if not isinstance(shared, bool):
        raise _err("fusion.shared_weights", f"must be true or false, got {shared!r}")
    if pos == "none" and not shared:
        raise _err("fusion.shared_weights", "must be true for position 'none' (mix-stream: one network sees every "
                   "image as its own sample)")
    if pos == "input" and not shared:
        raise _err("fusion.shared_weights", "must be true for position 'input' (one network sees the fused input)")
    out["shared_weights"] = shared
    return out


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` and fill defaults; returns a new JSON-serialisable dict (idempotent)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    backbone = cfg.get("backbone")
    if backbone not in BACKBONES:
        raise _err("backbone", f"must be one of {list(BACKBONES)}, got {backbone!r}")
    base = copy.deepcopy(DEFAULTS[backbone])
    unknown = set(cfg) - set(base) - {"backbone", "fusion"}
    if unknown:
        raise ConfigError(f"model config: unknown keys {sorted(unknown)} for backbone '{backbone}'; valid keys: "
                          f"{sorted({'backbone', 'fusion', *base})}")
    out: dict[str, Any] = {"backbone": backbone, **base, **copy.deepcopy({k: v for k, v in cfg.items()
                                                                           if k not in ("backbone", "fusion")})}
    T = _int(out, "num_cameras", 1, MAX_CAMERAS)
    out["fusion"] = _resolve_fusion(backbone, cfg.get("fusion"), T)
    _int(out, "image_size", 16, 4096)
    _bool(out, "pretrained")
    _bool(out, "predict_variance")
    _int(out, "num_anchors", 0, 65536)
    if out["rotation"] is None:
        out["rotation"] = DEFAULT_ROTATION.get(backbone, "quat")
    if out["rotation"] not in REPRESENTATIONS:
        raise _err("rotation", f"must be one of {list(REPRESENTATIONS)}, got {out['rotation']!r}")
    d = out["dropout"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
        raise _err("dropout", f"must be a number in [0, 1), got {d!r}")
    out["dropout"] = float(d)
    pn = out["pose_normalization"]
    if not isinstance(pn, dict) or set(pn) - {"t_mean", "t_scale"}:
        raise _err("pose_normalization", f"must be {{t_mean: [x, y, z], t_scale: s}}, got {pn!r}")
    t_scale = pn.get("t_scale", 1.0)
    if isinstance(t_scale, bool) or not isinstance(t_scale, (int, float)) or not (0 < t_scale < math.inf):
        raise _err("pose_normalization.t_scale", f"must be a positive number, got {t_scale!r}")
    out["pose_normalization"] = {"t_mean": _floats(pn.get("t_mean", [0, 0, 0]), 3, "pose_normalization.t_mean"),
                                 "t_scale": float(t_scale)}
    if "arch" in out:
        if out["arch"] not in ARCHS:
            raise _err("arch", f"must be one of {sorted(ARCHS)}, got {out['arch']!r}")
        _int(out, "width", 1, 512)
    if "pool_grid" in out:
        _int(out, "pool_grid", 1, 16)
    if backbone == "vit":
        for k in ("patch", "dim", "depth", "heads", "mlp_dim"):
            _int(out, k, 1)
        if out["dim"] % out["heads"]:
            raise _err("dim", f"({out['dim']}) must be divisible by heads ({out['heads']})")
        if out["image_size"] % out["patch"]:
            raise _err("image_size", f"({out['image_size']}) must be a multiple of patch ({out['patch']})")
        if out["pretrained"]:
            raise _err("pretrained", "is not supported for the configurable ViT (no matching torchvision weights); "
                       "set pretrained: false or use a CNN backbone for ImageNet initialisation")
    if backbone == "transposenet":
        for k in ("d_model", "num_heads", "num_layers", "dim_feedforward"):
            _int(out, k, 1)
        if out["d_model"] % out["num_heads"]:
            raise _err("d_model", f"({out['d_model']}) must be divisible by num_heads ({out['num_heads']})")
        if out["d_model"] % 4:
            raise _err("d_model", f"({out['d_model']}) must be a multiple of 4 (2-D sine positional encoding)")
    _int(out, "fc_dim", 1)
    need_fc = int(out["fusion"].get("fc", "fc-0")[-1])
    if backbone == "poselstm":
        # fc-1 = the 2048 fc, fc-2 = the LSTM output: the stack is fixed at two stages.
        if out["num_fc"] not in (None, 2):
            raise _err("num_fc", f"is fixed at 2 for poselstm (fc, then the LSTMs), got {out['num_fc']!r}")
        out["num_fc"] = 2
        _int(out, "lstm_hidden", 1)
        if out["lstm_grid"] is None:
            out["lstm_grid"] = lstm_grid_for(out["fc_dim"])
        g = out["lstm_grid"]
        if (not isinstance(g, (list, tuple)) or len(g) != 2 or not all(isinstance(x, int) and x > 0 for x in g)
                or g[0] * g[1] != out["fc_dim"]):
            raise _err("lstm_grid", f"must be [h, w] with h*w == fc_dim ({out['fc_dim']}), got {g!r}")
        out["lstm_grid"] = list(g)
    else:
        if out["num_fc"] is None:
            out["num_fc"] = max(1, need_fc)
        _int(out, "num_fc", 0, 4)
        if need_fc > out["num_fc"]:
            raise _err("num_fc", f"({out['num_fc']}) is too small for fusion.fc '{out['fusion']['fc']}'; set "
                       f"num_fc >= {need_fc}")
    out["extrinsics"] = _resolve_extrinsics(out["extrinsics"], out["fusion"]["position"], T)
    return out


def _resolve_extrinsics(ext: Any, position: str, T: int) -> dict[str, Any] | None:
    if ext is None:
        if position == "none":
            raise _err("extrinsics", "is required for fusion.position 'none' (mix-stream fuses per-camera poses "
                       "through T_base_camera); pass extrinsics_from_rig(rig)")
        return None
    if not isinstance(ext, dict) or set(ext) != {"t", "q"}:
        raise _err("extrinsics", f"must be {{t: [[x,y,z]]*T, q: [[w,x,y,z]]*T}}, got {ext!r}")
    if not isinstance(ext["t"], (list, tuple)) or not isinstance(ext["q"], (list, tuple)) \
            or len(ext["t"]) != T or len(ext["q"]) != T:
        raise _err("extrinsics", f"needs one t and one q per camera (num_cameras={T})")
    t = [_floats(v, 3, f"extrinsics.t[{i}]") for i, v in enumerate(ext["t"])]
    q = [_floats(v, 4, f"extrinsics.q[{i}]") for i, v in enumerate(ext["q"])]
    for i, qq in enumerate(q):
        n = math.sqrt(sum(x * x for x in qq))
        if abs(n - 1.0) > 1e-3:
            raise _err(f"extrinsics.q[{i}]", f"must be a unit quaternion (w,x,y,z), norm is {n:.4f}")
        if abs(n - 1.0) > 1e-12:  # renormalise only when needed, so resolving twice is exact (idempotent)
            q[i] = [x / n for x in qq]
    return {"t": t, "q": q}


def extrinsics_from_rig(rig: Any) -> dict[str, list[list[float]]]:
    """``{t, q}`` (T_base_camera, w,x,y,z) of a :class:`~mfapr_ros.core.rig.Rig` for the config's ``extrinsics`` key."""
    t, q = rig.extrinsics()
    return {"t": [[float(x) for x in r] for r in t], "q": [[float(x) for x in r] for r in q]}
