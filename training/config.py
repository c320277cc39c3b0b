"""Experiment configs: YAML → validated dataclasses, ``extends:`` inheritance and ``--set key=value`` overrides.

Why dataclasses and strict keys: a typo in a 3-hour training config must fail in the first second with the key's
name and the valid choices, not silently train the default. The *resolved* config (after ``extends`` and the
overrides) is saved beside every checkpoint and report so a number can always be traced to its settings.

A config file is a mapping with the sections ``data``, ``preprocess``, ``model``, ``loss``, ``optim``,
``schedule`` and ``train`` (see docs/training.md for every key). ``extends: other.yaml`` (relative to the file)
deep-merges the file over ``other.yaml``; the paper's table rows are one-line variations of a base this way.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.preprocess import PreprocessConfig

from .losses import LossSettings

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """Where the bundles come from and how samples are built (tuples, augmentation)."""

    format: str = "synth"  # synth (an `mfapr synth --out` folder) | kapture | rosbag
    root: str = ""
    rig: str | None = None  # rig YAML path or shipped name; default: the dataset's own rig
    cameras: Any = None  # camera ids in slot order, or galaxy / basler (the NAVER LABS subsets); None = all
    train_split: str = "mapping"  # "" = data.root itself is the split (a kapture folder with sensors/, or one bag)
    val_split: str | None = "validation"  # null = no validation (training says which checks that turns off)
    # kapture timestamp unit: auto | ns | us | ms | s | frame@<N>hz (frame indices of an N Hz recording)
    stamp_unit: str = "auto"
    steps: int = 3  # frames per tuple (the relative loss needs ≥ 2); without the relative loss samples are single
    skip: int = 1  # frame stride inside a tuple
    spacing_s: float | None = None  # time between tuple frames (overrides skip, from the median frame period)
    track_aug: Any = "none"  # none | cyclic | symmetric | any (true = cyclic): slot↔camera permutations
    # [metres, degrees]: permutations whose target offset is off by more are refused / unused (one setting: the old
    # track_aug_max_residual_m / _deg pair are read with a deprecation line)
    track_aug_max_residual: list[float] = field(default_factory=lambda: [0.01, 1.0])
    # true (the default jitter), false, or a mapping of PhotometricConfig's settings (brightness, contrast,
    # saturation, hue, p, white_balance, shading, shading_grids); missing ones keep their defaults
    photometric: Any = True
    # the rig turned by a random yaw in ±this many degrees about its up axis, every image re-projected from the rig's
    # cameras, the target turned with it (datasets/yaw_augmentation.py); 0 = off. Needs pinhole intrinsics. auto:
    # 5 where every camera is an undistorted pinhole and the cameras see ≥ 97 % of the turned rig (a ring), else 0
    # (logged why); training records the resolved number
    yaw_aug_deg: Any = 0.0  # a number of degrees, or auto
    # the rig moved sideways (base_link y) by a random step in ±max_m metres, every image re-projected from the
    # rig's cameras as if the scene were walls depth_m away all round, the target moved with it
    # (datasets/shift_augmentation.py). For one mapping pass: it teaches what a sideways step looks like, which a
    # single lane never shows. false/0 = off; a number = max_m; auto = 0.3 where every camera is an undistorted
    # pinhole, the cameras see ≥ 95 % of the moved rig (a ring) and the mapping is one lane, else 0 (logged why);
    # or {max_m: metres | auto, depth_m: metres} (depth_m default 3, > 2 × max_m). Training records the resolved
    # mapping
    shift_aug: Any = False
    num_workers: int = 0
    max_train: int | None = None  # keep only this many training bundles (evenly spaced) — CPU-scale runs
    max_val: int | None = None
    max_gap_ms: float | None = None  # split tracks at time gaps (rosbag)
    # rosbag ground truth: a pose topic (/ground_truth/pose: starts with /) or the TF chain PARENT:CHILD over /tf +
    # /tf_static (map:base_link); None = auto (the bag's one pose topic). One key: the old gt_topic / gt_tf pair
    # were one setting ("set one of them, not both") under two names
    gt: str | None = None
    # the robot's camera topics / transport stored in the checkpoint's rig (kapture has none: placeholders otherwise)
    topics: dict[str, str] = field(default_factory=dict)  # camera name → topic
    transport: str | None = None  # raw | compressed for every camera; None = the rig's (kapture: compressed)
    # bundling (mfapr_ros.core.sync.SyncSettings, the node's sync.* names and defaults, seconds): slop, queue_size,
    # min_cameras, stream_timeout, stream_timeout_periods, time_jump
    sync: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam
    lr: float = 1e-4
    weight_decay: float = 1e-4


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # constant | step | cosine
    warmup_steps: int = 0
    step_size: int = 1000  # step schedule: multiply by gamma every step_size steps
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine floor as a share of lr


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached first)
    batch_size: int = 8  # tuples per step per process
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | off | bf16 | fp16
    grad_clip: float | None = 10.0
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (GPU bit-exactness at a speed cost)
    log_every: int = 10
    val_every: int = 0  # steps (then not at epoch ends); 0 = at each epoch end; the last step always
    ckpt_every: int = 0  # steps (then not at epoch ends); 0 = at each epoch end; the last step always
    keep_last: int = 3
    # median_t | median_r | median_sum (m + °/10) | recall (share outside 0.5 m / 5°, median_sum breaks ties)
    best_metric: str = "median_t"
    progress: bool = True
    tensorboard: bool = True


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = field(default="<dict>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML form (what is saved beside checkpoints); ``from_dict(to_dict())`` round-trips."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        d["preprocess"] = self.preprocess.to_dict()  # mean/std as lists: YAML has no tuples
        return d

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> ExperimentConfig:
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: a training config must be a mapping of sections")
        doc = _merged_residual(_folded_switches(_renamed_keys(copy.deepcopy(doc), source), source), source)
        doc.pop("extends", None)
        cfg = _build(cls, doc, source, "")
        cfg.source = source
        validate(cfg)
        return cfg


#: old key → current key: still read, with one deprecation line each time a config uses it
RENAMED = {"loss.rotation": "loss.rotation_distance", "data.gt_topic": "data.gt", "data.gt_tf": "data.gt"}
_RENAMED_WHY = {"loss.rotation": "same meaning: the rotation distance of the loss",
                "data.gt_topic": "a topic starts with /", "data.gt_tf": "PARENT:CHILD is the TF chain"}

#: old on/off switches folded into the number they gated (one setting, 0 = off): old key → (current key, the value
#: it takes when the switch is true and the number is not given: the number's old default). Still read, with one
#: deprecation line; a false switch sets the number to 0.
FOLDED: dict[str, tuple[str, Any]] = {"loss.relative": ("loss.relative_weight", 1.0),
                                      "loss.learn_weights": ("loss.weights_lr", None),
                                      "loss.gradient_blending.enabled": ("loss.gradient_blending.every_steps", 200)}


#: keys that no longer exist, and what to do instead (one line each; an unknown key otherwise)
REMOVED = {"data.track_aug_p": "a permuted sample is drawn with probability 0.5 (TrackAugmentation's p); no shipped "
                               "config set it, and the key budget of docs/architecture.md went to data.shift_aug"}


def _deprecated(source: str, old: str, new: str, why: str) -> None:
    logging.getLogger("mfapr_training").warning("%s: '%s' is deprecated, use '%s' (%s)", source, old, new, why)


def _renamed_keys(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """``doc`` with the :data:`RENAMED` keys moved to their current names (both given is an error)."""
    for old, new in RENAMED.items():
        (section, o), (_, n) = old.split("."), new.split(".")
        sec = doc.get(section)
        if isinstance(sec, dict) and o in sec:
            if n in sec:
                raise ConfigError(f"{source}: '{old}' and '{new}' are the same setting; keep '{new}'"
                                  + (" (set one ground-truth source)" if n == "gt" else ""))
            _deprecated(source, old, new, _RENAMED_WHY[old])
            doc[section] = {(n if k == o else k): v for k, v in sec.items()}
    return doc


def _folded_switches(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """``doc`` (a merged config, its own copy) with the :data:`FOLDED` switches turned into their numbers."""
    for old, (new, on_value) in FOLDED.items():
        *path, o = old.split(".")
        n = new.split(".")[-1]
        sec: Any = doc
        for p in path:
            sec = sec.get(p) if isinstance(sec, dict) else None
        if not isinstance(sec, dict) or o not in sec:
            continue
        on = sec.pop(o)
        if not isinstance(on, bool):
            raise ConfigError(f"{source}: '{old}' (deprecated, use '{new}') must be true or false, got {on!r}")
        _deprecated(source, old, new, f"0 = off{', None = optim.lr' if on_value is None else ''}")
        if not on:
            sec[n] = 0
        elif n not in sec:
            sec[n] = on_value
    return doc


#: the old pair of residual bounds → their position in ``data.track_aug_max_residual`` ([metres, degrees])
MERGED_RESIDUAL = {"track_aug_max_residual_m": 0, "track_aug_max_residual_deg": 1}


def _merged_residual(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """``doc`` with the old ``data.track_aug_max_residual_m`` / ``_deg`` written into ``track_aug_max_residual``."""
    sec = doc.get("data")
    if not isinstance(sec, dict) or not set(MERGED_RESIDUAL) & set(sec):
        return doc
    merged = sec.get("track_aug_max_residual", DataConfig().track_aug_max_residual)
    if not isinstance(merged, (list, tuple)) or len(merged) != 2:
        raise ConfigError(f"{source}: 'data.track_aug_max_residual' must be [metres, degrees], got {merged!r}")
    merged = list(merged)
    for old, i in MERGED_RESIDUAL.items():
        if old in sec:
            _deprecated(source, f"data.{old}", "data.track_aug_max_residual", "one setting: [metres, degrees]")
            merged[i] = sec.pop(old)
    sec["track_aug_max_residual"] = merged
    return doc


def split_gt(gt: str | None) -> tuple[str | None, str | None]:
    """``data.gt`` as ``(topic, tf_chain)``: a topic starts with ``/``, anything else is ``PARENT:CHILD``."""
    if not gt:
        return None, None
    return (gt, None) if gt.startswith("/") else (None, gt)


def _build(cls: type, doc: dict[str, Any], source: str, prefix: str) -> Any:
    """Dataclass ``cls`` from ``doc`` with unknown-key and type checks; nested dataclasses recurse."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = set(doc) - set(fields)
    gone = sorted(prefix + k for k in unknown if prefix + k in REMOVED)
    if gone:
        raise ConfigError(f"{source}: '{gone[0]}' was removed: {REMOVED[gone[0]]}")
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: unknown key(s) {sorted(prefix + k for k in unknown)} in {where}; valid keys: "
                          f"{sorted(fields)}")
    kw: dict[str, Any] = {}
    hints = _hints(cls)
    for name, value in doc.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
            kw[name] = _build(hint, value, source, key + ".")
        else:
            if value is False and hint is str and "off" in CHOICES.get(key, ()):
                value = "off"  # YAML 1.1 reads `off` as false: `amp: off`, `--set train.amp=off`
            kw[name] = _coerce(value, hint, key, source)
    try:
        return cls(**kw)
    except ConfigError as e:  # a section that validates itself (preprocess: mfapr_ros.core.preprocess)
        raise ConfigError(f"{source}: {e}") from None


def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a simple type hint (int/float/bool/str/list/dict, optionally ``| None``)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    bad = ConfigError(f"{source}: '{key}' must be {_type_name(hint)}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(float(value)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)] if args else list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad
        return copy.deepcopy(value)
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")


TRACK_AUG_MODES = ("none", "cyclic", "symmetric", "any")
CHOICES = {
    "data.format": ("synth", "kapture", "rosbag"),
    "loss.norm": ("l1", "l2"),
    "loss.rotation_distance": (None, "quat", "logq", "chordal", "geodesic"),
    "optim.name": ("adamw", "adam"),
    "schedule.name": ("constant", "step", "cosine"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "train.best_metric": ("median_t", "median_r", "median_sum", "recall"),
}


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks with messages naming the key and what to do."""
    src = cfg.source
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if v not in choices:
            raise ConfigError(f"{src}: '{key}' is {v!r}; expected one of {[c for c in choices if c is not None]}")

    def positive(key: str, v: float | int | None, allow_zero: bool = False, allow_none: bool = False) -> None:
        if v is None and allow_none:
            return
        if v is None or v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(f"{src}: '{key}' must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")

    ta = cfg.data.track_aug
    if ta is True:
        cfg.data.track_aug = "cyclic"
    elif ta is False or ta is None:
        cfg.data.track_aug = "none"
    elif ta not in TRACK_AUG_MODES:
        raise ConfigError(f"{src}: 'data.track_aug' is {ta!r}; expected one of {list(TRACK_AUG_MODES)} (or true/false)")
    cams = cfg.data.cameras
    if cams is not None and not (cams in ("galaxy", "basler") or (isinstance(cams, list) and cams
                                                                   and all(isinstance(c, str) for c in cams))):
        raise ConfigError(f"{src}: 'data.cameras' must be a list of camera ids, 'galaxy' or 'basler'; got {cams!r}")
    ph = cfg.data.photometric
    if isinstance(ph, dict):
        from .datasets.photometric import PhotometricConfig

        try:
            PhotometricConfig.from_dict(ph)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{src}: 'data.photometric': {e}") from None
    elif not isinstance(ph, bool):
        raise ConfigError(f"{src}: 'data.photometric' must be true, false or a mapping of jitter settings, "
                          f"got {ph!r}")
    ya = cfg.data.yaw_aug_deg
    if ya != "auto" and (isinstance(ya, bool) or not isinstance(ya, (int, float)) or not 0.0 <= ya <= 45.0):
        raise ConfigError(f"{src}: 'data.yaw_aug_deg' must be a number of degrees in [0, 45] (0 = off) or auto "
                          f"(5 where the rig's cameras see the turned rig), got {ya!r}")
    if ya != "auto":
        cfg.data.yaw_aug_deg = float(ya)
    cfg.data.shift_aug = shift_aug_setting(cfg.data.shift_aug, src)
    res = cfg.data.track_aug_max_residual
    if not (isinstance(res, (list, tuple)) and len(res) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in res)):
        raise ConfigError(f"{src}: 'data.track_aug_max_residual' must be [metres, degrees], both >= 0, got {res!r}")
    cfg.data.track_aug_max_residual = [float(v) for v in res]
    positive("data.steps", cfg.data.steps)
    positive("data.skip", cfg.data.skip)
    positive("data.num_workers", cfg.data.num_workers, allow_zero=True)
    positive("data.max_train", cfg.data.max_train, allow_none=True)
    positive("data.max_val", cfg.data.max_val, allow_none=True)
    positive("data.max_gap_ms", cfg.data.max_gap_ms, allow_none=True)
    if cfg.data.stamp_unit != "auto":
        from mfapr_ros.core.errors import DataError

        from .datasets.kapture_text import stamp_unit_factor

        try:
            stamp_unit_factor(cfg.data.stamp_unit)
        except DataError as e:
            raise ConfigError(f"{src}: {e}") from None
    _, gt_tf = split_gt(cfg.data.gt)
    if gt_tf is not None and (gt_tf.count(":") != 1 or not all(gt_tf.split(":"))):
        raise ConfigError(f"{src}: 'data.gt' is {gt_tf!r}; expected a pose topic (/ground_truth/pose) or the TF "
                          "chain PARENT:CHILD, e.g. map:base_link")
    if cfg.data.transport not in (None, "raw", "compressed"):
        raise ConfigError(f"{src}: 'data.transport' is {cfg.data.transport!r}; expected raw or compressed")
    if not all(isinstance(k, str) and isinstance(v, str) and v.startswith("/") for k, v in cfg.data.topics.items()):
        raise ConfigError(f"{src}: 'data.topics' must map camera names to absolute topics, e.g. "
                          f"{{cam001: /camera/fisheye1/image_raw}}; got {cfg.data.topics!r}")
    from mfapr_ros.core.sync import SyncSettings

    SyncSettings.from_dict(cfg.data.sync, where=f"{src}: data.sync")  # fails naming the key and the valid ones
    positive("optim.lr", cfg.optim.lr)
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("train.epochs", cfg.train.epochs)
    positive("train.max_steps", cfg.train.max_steps, allow_none=True)
    positive("train.batch_size", cfg.train.batch_size)
    positive("train.grad_clip", cfg.train.grad_clip, allow_none=True)
    positive("train.log_every", cfg.train.log_every)
    positive("train.val_every", cfg.train.val_every, allow_zero=True)
    positive("train.ckpt_every", cfg.train.ckpt_every, allow_zero=True)
    positive("train.keep_last", cfg.train.keep_last)
    positive("schedule.warmup_steps", cfg.schedule.warmup_steps, allow_zero=True)
    positive("data.spacing_s", cfg.data.spacing_s, allow_none=True)
    positive("loss.weights_lr", cfg.loss.weights_lr, allow_zero=True, allow_none=True)
    positive("loss.relative_weight", cfg.loss.relative_weight, allow_zero=True)
    positive("loss.relative_warmup_steps", cfg.loss.relative_warmup_steps, allow_zero=True)
    positive("loss.anchor_weight", cfg.loss.anchor_weight, allow_zero=True)
    positive("schedule.step_size", cfg.schedule.step_size)
    positive("loss.gradient_blending.every_steps", cfg.loss.gradient_blending.every_steps, allow_zero=True)
    if cfg.loss.relative and cfg.data.steps < 2:
        raise ConfigError(f"{src}: the relative loss (loss.relative_weight > 0) needs tuples: set data.steps >= 2 "
                          f"(it is {cfg.data.steps})")
    if not isinstance(cfg.model, dict) or not cfg.model:
        raise ConfigError(f"{src}: 'model' must be a mapping (e.g. {{preset: tiny}} or {{backbone: posenet, ...}})")
    validate_model_keys(cfg.model, src)


#: model keys filled from the data (train.model_config) or derived: refused in a training config (checkpoints hold them)
DATA_BOUND_MODEL_KEYS = {"num_cameras": "the rig's cameras", "image_size": "preprocess.crop",
                         "extrinsics": "the rig's extrinsics", "pose_normalization": "the training poses",
                         "lstm_grid": "model.fc_dim (poselstm: the most square h x w = fc_dim)",
                         "content_queries": "the code (true; only checkpoints from before content queries say false)"}


def validate_model_keys(model: dict[str, Any], src: str) -> None:
    """The ``model`` section against its backbone's default_conf (``backbones/<name>.py`` ``defaults`` + the common
    keys, :func:`mfapr_ros.models.config.config_keys`): an unknown key fails at load, naming the valid ones for
    that backbone; the data-bound keys are refused (training sets them). Values are checked when the model is
    built (``resolve_config``)."""
    from mfapr_ros.models import preset
    from mfapr_ros.models.config import config_keys

    m = dict(model)
    name = m.pop("preset", None)
    bound = sorted(set(m) & set(DATA_BOUND_MODEL_KEYS))
    if bound:
        raise ConfigError(f"{src}: 'model.{bound[0]}' is set by training from {DATA_BOUND_MODEL_KEYS[bound[0]]}; "
                          "remove it from the config")
    full = preset(name, **m) if name else m
    try:
        keys = config_keys(full.get("backbone"))
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    unknown = sorted(set(full) - keys)
    if unknown:
        raise ConfigError(f"{src}: unknown model key(s) {['model.' + k for k in unknown]} for backbone "
                          f"'{full['backbone']}'; valid: {sorted(keys - set(DATA_BOUND_MODEL_KEYS))} (+ preset)")


# --------------------------------------------------------------------------------------------- loading
def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key (so ``extends`` can change one field of a section)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the name of a shipped config (``demo`` → training/configs/demo.yaml)."""
    p = Path(name)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml", CONFIG_DIR / "paper" / p,
                 CONFIG_DIR / "paper" / f"{p}.yaml"):
        if cand.exists():
            return cand
    raise ConfigError(f"config '{name}' not found (not a file, not a shipped config in {CONFIG_DIR}); shipped: "
                      f"{sorted(x.stem for x in CONFIG_DIR.rglob('*.yaml'))[:40]}")


def load_yaml_doc(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file with its ``extends`` chain merged (cycles are an error)."""
    path = resolve_config_path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of sections")
    doc = _renamed_keys(doc, str(path))  # per file: an old name in a parent cannot clash with a child's new one
    parent = doc.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: 'extends' must be a file name, got {parent!r}")
        ppath = Path(parent) if Path(parent).is_absolute() else path.parent / parent
        doc = deep_merge(load_yaml_doc(ppath, (*_seen, path)), doc)
    return doc


#: ``data.shift_aug``'s wall distance when not given (m): measured against the renderer, docs/data.md
SHIFT_AUG_DEPTH_M = 3.0


def shift_aug_setting(value: Any, src: str = "config") -> dict[str, Any]:
    """``data.shift_aug`` in any accepted form → ``{"max_m": metres | "auto", "depth_m": metres}`` (validated once:
    max_m in [0, 1] or auto, depth_m > 2 × max_m — the moved rig stays well inside the walls)."""
    from .datasets.shift_augmentation import AUTO_M

    form = ("false, auto, a number of metres in [0, 1], or {max_m: metres | auto, depth_m: metres}")
    if value is False or value is None:
        value = {"max_m": 0.0}
    elif value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        value = {"max_m": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{src}: 'data.shift_aug' must be {form}, got {value!r}")
    unknown = sorted(set(value) - {"max_m", "depth_m"})
    if unknown:
        raise ConfigError(f"{src}: 'data.shift_aug' has unknown key(s) {unknown}; known: max_m, depth_m")
    m, d = value.get("max_m", 0.0), value.get("depth_m", SHIFT_AUG_DEPTH_M)
    if m != "auto" and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0):
        raise ConfigError(f"{src}: 'data.shift_aug.max_m' must be a number of metres in [0, 1] (0 = off) or auto, "
                          f"got {m!r}")
    most = AUTO_M if m == "auto" else m
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not d > 2 * most:
        raise ConfigError(f"{src}: 'data.shift_aug.depth_m' must be a number of metres > 2 × max_m ({2 * most:g}), "
                          f"got {d!r}")
    return {"max_m": m if m == "auto" else float(m), "depth_m": float(d)}


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` → ``(["optim", "lr"], 0.0003)``; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. --set optim.lr=3e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set '{item}': empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set '{item}': value is not valid YAML ({e})") from None
    # YAML 1.1 reads 3e-4 as a string; accept it as the number a user means.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") and not value.isalpha() else value
        except ValueError:
            pass
    if key in RENAMED:
        logging.getLogger("mfapr_training").warning("--set %s: '%s' is deprecated, use '%s'", item, key, RENAMED[key])
        key = RENAMED[key]
    return key.split("."), value


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` items in order to a raw config mapping (validation happens after, on the whole)."""
    out = copy.deepcopy(doc)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set '{item}': '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, merge ``extends``, apply ``--set`` overrides and validate."""
    doc = load_yaml_doc(path) if path is not None else {}
    doc = apply_overrides(doc, overrides or [])
    return ExperimentConfig.from_dict(doc, source=str(path) if path is not None else "<overrides>")


def dump_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (saved as ``config.yaml`` in the run folder)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
