"""The localization node's parameters: one table, validated into a ROS-free dataclass.

Why a table: the node declares every parameter from it (with a ROS ``ParameterDescriptor``), ``config/localize.yaml``
documents the same names, and the launch/config tests compare against it — so the three cannot drift. Validation
lives here, without rclpy, so a bad value is caught by unit tests and produces one :class:`ConfigError` that names
the parameter, the value, and what is allowed (the node then refuses to start and ``main`` exits non-zero).

Per-camera parameters are declared after the rig is known (camera names come from the checkpoint or ``rig``):
``topics.<camera>`` (topic override) and ``transport.<camera>`` (``raw`` | ``compressed``). ``camera_topics`` is a
list alternative in rig slot order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mfapr_ros.bag.bundles import CameraBinding, camera_bindings
from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.fusion import FIELD_DOCS as FUSION_DOCS
from mfapr_ros.core.fusion import FusionSettings
from mfapr_ros.core.relocalization import RelocalizationSettings
from mfapr_ros.core.rig import TRANSPORTS, Rig
from mfapr_ros.core.settings import SettingError, field_kind
from mfapr_ros.core.sync import SyncSettings
from mfapr_ros.inference.covariance import CovarianceSettings
from mfapr_ros.inference.uncertainty import UncertaintyGate

TF_MODES = ("none", "map_to_base", "map_to_odom")
PRECISIONS = ("fp32", "fp16", "bf16")
#: Prefixes of the per-camera parameters (declared once the rig's camera names are known).
TOPIC_PREFIX = "topics."
TRANSPORT_PREFIX = "transport."


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: name, default, type and the human description shown by ``ros2 param describe``."""

    name: str
    default: Any
    kind: str  # "str" | "float" | "int" | "bool" | "str_list"
    description: str
    constraints: str = ""


#: Parameter groups whose one schema is a settings dataclass (``core.settings``): the parameters are
#: ``<prefix>.<field>``, their specs are generated from the fields and their values validated by the dataclass alone.
SETTINGS_GROUPS: dict[str, type] = {"sync": SyncSettings, "covariance": CovarianceSettings,
                                    "uncertainty": UncertaintyGate}


def settings_specs(prefix: str) -> tuple[ParamSpec, ...]:
    """The :class:`ParamSpec` of every field of ``SETTINGS_GROUPS[prefix]`` (name, default, type, description and
    range all from the field)."""
    return tuple(ParamSpec(f"{prefix}.{f.name}", f.default, field_kind(f), f.metadata["doc"],
                           f.metadata["constraints"]) for f in dataclasses.fields(SETTINGS_GROUPS[prefix]))


#: Every static parameter of ``localize_node`` (order = order in config/localize.yaml).
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "str", "Checkpoint path (NAME, NAME.json or NAME.safetensors); required.",
              "non-empty; the file must exist"),
    ParamSpec("rig", "", "str", "Rig YAML path or shipped rig name; empty = the rig stored in the checkpoint. "
              "Cameras bind to model slots by name; a subset of the checkpoint's cameras is allowed.",
              "empty, a shipped rig name or a YAML path"),
    ParamSpec("camera_topics", [], "str_list", "Topics in rig slot order (alternative to topics.<camera>); "
              "empty = the rig's topics.", "empty or one topic per camera"),
    ParamSpec("default_transport", "", "str", "Transport for every camera without transport.<camera>; "
              "empty = the rig's per-camera transport.", "'', 'raw' or 'compressed'"),
    ParamSpec("enforce_image_size", True, "bool", "Drop images whose size differs from the rig's image size "
              "(a resolution change silently changes the field of view the model sees)."),
    *settings_specs("sync"),
    ParamSpec("device", "auto", "str", "Inference device: auto, cpu, cuda or cuda:N.", "auto|cpu|cuda|cuda:N"),
    ParamSpec("precision", "fp32", "str", "Inference precision.", "fp32|fp16|bf16"),
    ParamSpec("torchscript", True, "bool", "CPU fp32: run the model as a TorchScript graph verified against eager "
              "mode at start-up (faster, and it releases the GIL so decoding and publishing run meanwhile); false = "
              "eager PyTorch. A model that cannot be traced runs eagerly (logged)."),
    ParamSpec("inference_threads", 0, "int", "torch intra-op threads for CPU inference (process-wide); 0 = torch's "
              "default, one per core. Set it on a robot to leave cores to the other nodes.", ">= 0"),
    ParamSpec("strict_device", False, "bool", "Fail instead of falling back to CPU when CUDA is requested "
              "but unavailable."),
    ParamSpec("decode_on_device", False, "bool", "Decode JPEG on the inference device (nvjpeg) when it is CUDA."),
    ParamSpec("map_frame", "map", "str", "Frame of the published poses (the model's world).", "non-empty"),
    ParamSpec("odom_frame", "odom", "str", "Odometry frame for tf_mode map_to_odom.", "non-empty"),
    ParamSpec("base_frame", "", "str", "Rig frame; empty = the rig's base_frame (usually base_link).", ""),
    ParamSpec("tf_mode", "none", "str", "TF to broadcast: none, map_to_base, or map_to_odom (REP-105).",
              "none|map_to_base|map_to_odom"),
    ParamSpec("transform_tolerance", 0.1, "float", "Future-date the map->odom TF by this many seconds (as nav2 "
              "AMCL does) so consumers can look up poses up to it.", ">= 0"),
    ParamSpec("path_length", 1000, "int", "Poses kept in ~/path; 0 disables the path topic.", ">= 0"),
    *settings_specs("covariance"),
    *settings_specs("uncertainty"),
    *(ParamSpec(f"fusion.{f.name}", f.default, {"bool": "bool", "str": "str", "int": "int"}.get(str(f.type), "float"),
                FUSION_DOCS[f.name][0], FUSION_DOCS[f.name][1]) for f in dataclasses.fields(FusionSettings)),
    ParamSpec("uncertainty.lost_timeout", 5.0, "float", "Seconds during which the gate skipped every pose after "
              "which /diagnostics reports the node lost (ERROR; only action skip skips poses); 0 = never lost.",
              ">= 0"),
    ParamSpec("relocalization.enabled", False, "bool", "Publish the calibrated pose as the localizer stack's initial "
              "pose (PoseWithCovarianceStamped on relocalization.topic): at start-up, on the ~/relocalize service "
              "(std_srvs/Trigger) and, with relocalization.watch_topic, when that pose disagrees with ours."),
    ParamSpec("relocalization.topic", "/initialpose", "str", "Topic of the seeds (nav2 AMCL listens on "
              "/initialpose).", "a non-empty topic name"),
    ParamSpec("relocalization.on_startup", True, "bool", "Seed once with the first pose that passes the "
              "uncertainty gate (no reason: neither skipped nor inflated)."),
    ParamSpec("relocalization.max_pose_age", 1.0, "float", "~/relocalize refuses (success false, says why) when the "
              "last confident pose arrived longer ago than this, seconds.", "> 0"),
    ParamSpec("relocalization.watch_topic", "", "str", "PoseWithCovarianceStamped topic of the localizer to watch "
              "(e.g. /amcl_pose); '' = no watching.", "'' or a topic name"),
    ParamSpec("relocalization.watch_mahalanobis", 3.4, "float", "Reseed when the watched pose is farther than this "
              "from ours in combined sigmas over (x, y, yaw) (chi-square, 3 dof: 3.37 = 1 % by chance) ...",
              "> 0"),
    ParamSpec("relocalization.watch_bundles", 5, "int", "... for this many confident poses in a row.", ">= 1"),
    ParamSpec("relocalization.watch_max_age", 0.5, "float", "Only compare with a watched pose whose stamp is within "
              "this many seconds of ours.", "> 0"),
    ParamSpec("relocalization.cooldown", 5.0, "float", "Bundle-time seconds after a disagreement seed before "
              "another one (the stack needs a moment to take a seed in).", ">= 0"),
    ParamSpec("diagnostics_period", 1.0, "float", "Seconds between /diagnostics messages; 0 disables them.",
              ">= 0"),
    ParamSpec("drop_warning_period", 5.0, "float", "Throttle (s) of the per-camera warning on dropped images.",
              "> 0"),
    ParamSpec("executor_threads", 1, "int", "Threads of the executor running the camera callbacks (console "
              "scripts). 1 = single-threaded: callbacks only decode and synchronize, inference has its own thread. "
              ">1 = rclpy MultiThreadedExecutor (cameras decode in parallel) whose Python wait loop costs CPU and "
              "GIL time per wake-up; see docs/node.md before raising it.", ">= 1"),
    ParamSpec("bundle_queue_depth", 2, "int", "Synchronized bundles that may wait for the model (oldest first); "
              "when full, a new bundle supersedes the oldest waiting one (counted inference.stale). 1 = latest wins "
              "(lowest latency under overload); 2 absorbs the model's jitter near its capacity (docs/node.md).",
              ">= 1"),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in PARAM_SPECS}
#: the parameters of :data:`SETTINGS_GROUPS` (validated by their dataclass, not by :func:`validate_params`)
GROUP_PARAMS = frozenset(f"{p}.{f.name}" for p, cls in SETTINGS_GROUPS.items() for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class NodeParams:
    """Validated static parameters (seconds as floats here; the node converts to integer ns at the boundary)."""

    checkpoint: str
    rig: str = ""
    camera_topics: tuple[str, ...] = ()
    default_transport: str = ""
    enforce_image_size: bool = True
    sync: SyncSettings = field(default_factory=SyncSettings)
    device: str = "auto"
    precision: str = "fp32"
    torchscript: bool = True
    inference_threads: int = 0
    strict_device: bool = False
    decode_on_device: bool = False
    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = ""
    tf_mode: str = "none"
    transform_tolerance: float = 0.1
    path_length: int = 1000
    covariance: CovarianceSettings = field(default_factory=CovarianceSettings)
    uncertainty: UncertaintyGate = field(default_factory=UncertaintyGate)
    fusion_enabled: bool = False
    fusion_lag: float = 2.0
    fusion_robust_loss: str = "huber"
    fusion_robust_threshold: float = 3.0
    fusion_outlier_gate: float = 4.0
    fusion_max_consecutive_outliers: int = 10
    fusion_measurement_scale: float = 1.5
    fusion_correlated_fraction: float = 0.25
    fusion_position_scale: float = 1.0
    fusion_rotation_scale: float = 1.0
    fusion_odom_translation_per_m: float = 0.15
    fusion_odom_rotation_per_m: float = 0.1
    fusion_odom_rotation_per_rad: float = 0.05
    fusion_odom_min_translation: float = 0.002
    fusion_odom_min_rotation: float = 0.001
    uncertainty_lost_timeout: float = 5.0
    relocalization_enabled: bool = False
    relocalization_topic: str = "/initialpose"
    relocalization_on_startup: bool = True
    relocalization_max_pose_age: float = 1.0
    relocalization_watch_topic: str = ""
    relocalization_watch_mahalanobis: float = 3.4
    relocalization_watch_bundles: int = 5
    relocalization_watch_max_age: float = 0.5
    relocalization_cooldown: float = 5.0
    diagnostics_period: float = 1.0
    drop_warning_period: float = 5.0
    executor_threads: int = 1
    bundle_queue_depth: int = 2
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fusion(self) -> FusionSettings:
        """The pose fusion's settings from the ``fusion.*`` parameters (validated already; a property, so it
        cannot disagree with the flat fields)."""
        return FusionSettings(**{f.name[len("fusion_"):]: getattr(self, f.name) for f in dataclasses.fields(self)
                                 if f.name.startswith("fusion_")})

    @property
    def relocalization(self) -> RelocalizationSettings:
        """The seed and lost decisions' settings from the ``relocalization.*`` parameters and
        ``uncertainty.lost_timeout`` (validated already; a property like :attr:`fusion`)."""
        return RelocalizationSettings(
            enabled=self.relocalization_enabled, on_startup=self.relocalization_on_startup,
            max_pose_age_s=self.relocalization_max_pose_age, watch_enabled=bool(self.relocalization_watch_topic),
            watch_mahalanobis=self.relocalization_watch_mahalanobis, watch_bundles=self.relocalization_watch_bundles,
            watch_max_age_s=self.relocalization_watch_max_age, cooldown_s=self.relocalization_cooldown,
            lost_timeout_s=self.uncertainty_lost_timeout)

    def default_covariance(self) -> list[float]:
        """Diagonal of the fallback 6×6 covariance [x y z roll pitch yaw] (variances)."""
        return self.covariance.diagonal()


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"parameter '{name}' = {value!r} is invalid: expected {allowed}. Fix it in the params file "
                       f"(config/localize.yaml) or with `-p {name}:=...`.")


def _as_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise _bad(name, v, "a finite number")
    return float(v)


def _as_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise _bad(name, v, "an integer")
    return v


def _as_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(name, v, "true or false")
    return v


def _as_str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise _bad(name, v, "a string")
    return v


def _valid_device(d: str) -> bool:
    if d in ("auto", "cpu", "cuda"):
        return True
    return d.startswith("cuda:") and d[5:].isdigit()


def _valid_topic(t: str) -> bool:
    """A plausible ROS topic name (rclpy checks the details when the publisher or subscription is created)."""
    return bool(t) and " " not in t and not t.endswith("/")


def _valid_frame(f: str) -> bool:
    return bool(f) and not f.startswith("/") and " " not in f


def validate_params(values: Mapping[str, Any]) -> NodeParams:
    """Validate the static parameters (missing keys take their defaults); raises :class:`ConfigError` naming one.

    Unknown keys are rejected so a typo (``sync.slopp``) does not silently fall back to a default; per-camera keys
    (``topics.*`` / ``transport.*``) are checked later against the rig by :func:`bind_cameras`.
    """
    unknown = [k for k in values if k not in SPEC_BY_NAME and not k.startswith((TOPIC_PREFIX, TRANSPORT_PREFIX))
               and k != "use_sim_time"]
    if unknown:
        raise ConfigError(f"unknown parameter(s) {sorted(unknown)} for localize_node; known parameters: "
                          f"{[s.name for s in PARAM_SPECS]} plus topics.<camera> and transport.<camera>")
    v = {s.name: values.get(s.name, s.default) for s in PARAM_SPECS}
    conv = {"str": _as_str, "float": _as_float, "int": _as_int, "bool": _as_bool}
    out: dict[str, Any] = {}
    for s in PARAM_SPECS:
        if s.name in GROUP_PARAMS:
            out[s.name] = v[s.name]  # typed and range-checked by its settings dataclass alone (below)
        elif s.kind == "str_list":
            lst = v[s.name]
            if lst is None:
                lst = []
            if isinstance(lst, str) or not isinstance(lst, Sequence) or not all(isinstance(x, str) for x in lst):
                raise _bad(s.name, lst, "a list of strings")
            out[s.name] = tuple(lst)
        else:
            out[s.name] = conv[s.kind](s.name, v[s.name])

    if not out["checkpoint"]:
        raise ConfigError("parameter 'checkpoint' is required: pass `-p checkpoint:=/path/to/model.json` "
                          "(or set it in the params file / the launch argument checkpoint:=...)")
    if out["default_transport"] not in ("",) + TRANSPORTS:
        raise _bad("default_transport", out["default_transport"], f"'' or one of {TRANSPORTS}")
    if out["drop_warning_period"] <= 0:
        raise _bad("drop_warning_period", out["drop_warning_period"], "a number > 0")
    for name in ("transform_tolerance", "diagnostics_period"):
        if out[name] < 0:
            raise _bad(name, out[name], "a number >= 0")
    for name in ("uncertainty.lost_timeout", "relocalization.cooldown"):
        if out[name] < 0:
            raise _bad(name, out[name], "a number of seconds >= 0 (0 = off)")
    for name in ("relocalization.max_pose_age", "relocalization.watch_mahalanobis", "relocalization.watch_max_age"):
        if out[name] <= 0:
            raise _bad(name, out[name], "a number > 0")
    if out["relocalization.watch_bundles"] < 1:
        raise _bad("relocalization.watch_bundles", out["relocalization.watch_bundles"], "an integer >= 1")
    if out["relocalization.enabled"] and not _valid_topic(out["relocalization.topic"]):
        raise _bad("relocalization.topic", out["relocalization.topic"], "a topic name such as /initialpose")
    if out["relocalization.watch_topic"] and not _valid_topic(out["relocalization.watch_topic"]):
        raise _bad("relocalization.watch_topic", out["relocalization.watch_topic"], "'' or a topic name such as "
                   "/amcl_pose")
    if out["relocalization.watch_topic"] and not out["relocalization.enabled"]:
        raise ConfigError("parameter 'relocalization.watch_topic' is set but relocalization.enabled is false: "
                          "watching only triggers seeds; set `-p relocalization.enabled:=true` or clear the topic")
    for prefix, cls in SETTINGS_GROUPS.items():  # each group's own validation (one place: its __post_init__)
        names = [f"{prefix}.{f.name}" for f in dataclasses.fields(cls)]
        try:
            out[prefix] = cls(**{name[len(prefix) + 1:]: out.pop(name) for name in names})
        except SettingError as e:
            raise _bad(e.name, e.value, e.expected) from None
    if out["inference_threads"] < 0:
        raise _bad("inference_threads", out["inference_threads"], "an integer >= 0 (0 = torch's default)")
    if out["executor_threads"] < 1:
        raise _bad("executor_threads", out["executor_threads"], "an integer >= 1 (1 = single-threaded executor)")
    if out["bundle_queue_depth"] < 1:
        raise _bad("bundle_queue_depth", out["bundle_queue_depth"], "an integer >= 1 (1 = latest bundle wins)")
    if out["path_length"] < 0:
        raise _bad("path_length", out["path_length"], "an integer >= 0 (0 disables ~/path)")
    if not _valid_device(out["device"]):
        raise _bad("device", out["device"], "auto, cpu, cuda or cuda:N")
    if out["precision"] not in PRECISIONS:
        raise _bad("precision", out["precision"], f"one of {PRECISIONS}")
    if out["tf_mode"] not in TF_MODES:
        raise _bad("tf_mode", out["tf_mode"], f"one of {TF_MODES}")
    for name in ("map_frame", "odom_frame"):
        if not _valid_frame(out[name]):
            raise _bad(name, out[name], "a non-empty frame id without a leading '/' or spaces")
    if out["base_frame"] and not _valid_frame(out["base_frame"]):
        raise _bad("base_frame", out["base_frame"], "empty (the rig's base frame) or a frame id without '/' prefix")
    try:  # the fusion's own validation (one place), reported as a parameter error
        FusionSettings(**{k[len("fusion."):]: val for k, val in out.items() if k.startswith("fusion.")})
    except ConfigError as e:
        raise ConfigError(f"parameter {e}. Fix it in the params file (config/localize.yaml) or with -p.") from None
    if out["tf_mode"] != "none" and len({out["map_frame"], out["odom_frame"], out["base_frame"] or "\0"}) < 3:
        raise ConfigError(f"parameters map_frame/odom_frame/base_frame must differ for tf_mode '{out['tf_mode']}' "
                          f"(got {out['map_frame']!r}, {out['odom_frame']!r}, {out['base_frame']!r})")
    return NodeParams(**{k.replace(".", "_"): val for k, val in out.items()})


def bind_cameras(params: NodeParams, model_rig: Rig, rig: Rig | None, per_camera: Mapping[str, Any]) -> list[
        CameraBinding]:
    """Bind camera topics to model slots by name; returns the cameras to subscribe, in model slot order.

    ``model_rig`` is the checkpoint's rig (slot order of the network); ``rig`` (the ``rig`` parameter, optional)
    supplies topics/transports/sizes for the robot and may be a subset of the model's cameras — absent slots are
    always masked. ``per_camera`` holds the ``topics.<camera>`` / ``transport.<camera>`` values given.
    """
    source = rig if rig is not None else model_rig
    model_names = model_rig.camera_names
    extra = [n for n in source.camera_names if n not in model_names]
    if extra:
        raise ConfigError(f"parameter 'rig' ({source.source}) has camera(s) {extra} that the checkpoint's model "
                          f"does not know; model cameras (slot order): {model_names}")
    names = source.camera_names
    for key, val in per_camera.items():
        prefix = TOPIC_PREFIX if key.startswith(TOPIC_PREFIX) else TRANSPORT_PREFIX
        cam = key[len(prefix):]
        if cam not in names:
            raise ConfigError(f"parameter '{key}' names camera '{cam}', which is not in the rig; cameras: {names}")
        if prefix == TOPIC_PREFIX and (not isinstance(val, str) or not val):
            raise _bad(key, val, "a non-empty topic name")
        if prefix == TRANSPORT_PREFIX and val not in TRANSPORTS:
            raise _bad(key, val, f"one of {TRANSPORTS}")
    if params.camera_topics and len(params.camera_topics) != len(names):
        raise ConfigError(f"parameter 'camera_topics' has {len(params.camera_topics)} entries but the rig has "
                          f"{len(names)} cameras {names}; give one topic per camera in this order")
    topics = {k[len(TOPIC_PREFIX):]: v for k, v in per_camera.items() if k.startswith(TOPIC_PREFIX)}
    transports = {k[len(TRANSPORT_PREFIX):]: v for k, v in per_camera.items() if k.startswith(TRANSPORT_PREFIX)}
    for i, cam in enumerate(source.cameras):
        if not topics.get(cam.name, params.camera_topics[i] if params.camera_topics else cam.topic):
            raise _bad("camera_topics", list(params.camera_topics), "non-empty topic names")
    bindings = camera_bindings(source.cameras, model_names, topics, transports, params.camera_topics,
                               params.default_transport)
    n = len(bindings)
    if params.sync.min_cameras > n:
        raise ConfigError(f"parameter 'sync.min_cameras' = {params.sync.min_cameras} exceeds the {n} subscribed "
                          f"cameras {names}")
    return bindings
