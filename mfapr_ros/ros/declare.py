"""Declaring the node's parameters on an rclpy node (plain or lifecycle): the static table of
:data:`mfapr_ros.ros.params.PARAM_SPECS` and the per-camera ``topics.<cam>`` / ``transport.<cam>`` ones.

Split from localize_node.py so the node module holds the lifecycle steps only; validation stays in params.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException
from rclpy.parameter import Parameter

from mfapr_ros.core.errors import ConfigError

from .params import PARAM_SPECS, TOPIC_PREFIX, TRANSPORT_PREFIX

#: Parameters every rclpy node may receive that are not ours (never reported as unknown).
_FOREIGN_PARAMS = ("use_sim_time", "start_type_description_service")
_FOREIGN_PREFIXES = ("qos_overrides.",)


def _descriptor(spec: Any, read_only: bool = True) -> ParameterDescriptor:
    types = {"str": ParameterType.PARAMETER_STRING, "float": ParameterType.PARAMETER_DOUBLE,
             "int": ParameterType.PARAMETER_INTEGER, "bool": ParameterType.PARAMETER_BOOL,
             "str_list": ParameterType.PARAMETER_STRING_ARRAY}
    # Doubles accept integers (`-p sync.slop:=1`): typing is dynamic, validate_params checks the value.
    return ParameterDescriptor(name=spec.name, type=types[spec.kind], description=spec.description,
                               additional_constraints=spec.constraints, read_only=read_only,
                               dynamic_typing=spec.kind == "float")


def _overrides(node: Any) -> dict[str, Any]:
    """The ``--ros-args -p`` / constructor overrides as plain values (typos included, to be rejected)."""
    ov = getattr(node, "_parameter_overrides", {}) or {}
    return {k: v.value for k, v in ov.items()}


def declare_static(node: Any, read_only: bool) -> None:
    """Declare every parameter of :data:`PARAM_SPECS` (idempotent); a value of the wrong type is a ConfigError."""
    for spec in PARAM_SPECS:
        if node.has_parameter(spec.name):
            continue
        try:
            if spec.kind == "str_list":
                node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                       _descriptor(spec, read_only))
            else:
                node.declare_parameter(spec.name, spec.default, _descriptor(spec, read_only))
        except (ParameterException, TypeError, ValueError) as e:
            raise ConfigError(f"parameter '{spec.name}' is invalid: {e}. Expected a {spec.kind} "
                              f"({spec.constraints or spec.description})") from None


def static_values(node: Any, own_params: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every :data:`PARAM_SPECS` value, plus unknown overrides (so validate_params rejects them by name)."""
    values = {spec.name: node.get_parameter_or(spec.name).value for spec in PARAM_SPECS}  # unset list: None
    known = {s.name for s in PARAM_SPECS} | set(own_params)
    for k, v in _overrides(node).items():  # typos and stray keys: validate_params rejects them by name
        if k not in known and k not in _FOREIGN_PARAMS and not k.startswith(_FOREIGN_PREFIXES):
            values[k] = v
    return values


def declare_per_camera(node: Any, names: Sequence[str], read_only: bool) -> dict[str, Any]:
    """Declare ``topics.<cam>`` / ``transport.<cam>``; returns the ones set (plus unknown ones, to reject)."""
    given: dict[str, Any] = {}
    for cam in names:
        for prefix, what in ((TOPIC_PREFIX, "topic"), (TRANSPORT_PREFIX, "transport (raw|compressed)")):
            name = prefix + cam
            if node.has_parameter(name):  # a second configure of a lifecycle node
                value = node.get_parameter(name).value
            else:
                desc = ParameterDescriptor(name=name, type=ParameterType.PARAMETER_STRING,
                                           read_only=read_only,
                                           description=f"{what} of camera '{cam}'; '' = from rig/camera_topics")
                try:
                    value = node.declare_parameter(name, "", desc).value
                except (ParameterException, TypeError, ValueError) as e:
                    raise ConfigError(f"parameter '{name}' is invalid: {e}; expected a string") from None
            if value:
                given[name] = value
    for k, v in _overrides(node).items():
        if k.startswith((TOPIC_PREFIX, TRANSPORT_PREFIX)) and k[k.index(".") + 1:] not in names:
            given[k] = v
    return given
