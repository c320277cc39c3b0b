"""Settings dataclasses as the one schema of a group of settings: a field per setting, with its default, its
description and its range in words in the field's metadata.

Why: the node's parameter table (``ros.params.PARAM_SPECS``), eval-bag's options and the docs are generated from
these fields, so a setting has one name (the field name is the parameter's suffix: ``sync.slop``,
``uncertainty.max_position_sigma``), one default and one validation (the dataclass's ``__post_init__``). Used by
:class:`~mfapr_ros.core.sync.SyncSettings`, :class:`~mfapr_ros.inference.uncertainty.UncertaintyGate` and
:class:`~mfapr_ros.inference.covariance.CovarianceSettings`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ConfigError

#: field annotation (a string: every settings module uses ``from __future__ import annotations``) → parameter kind
KINDS = {"float": "float", "int": "int", "bool": "bool", "str": "str"}


class SettingError(ConfigError):
    """A setting with a value outside its range: ``"<name> = <value> is invalid: expected <expected>"``, with the
    parts kept so the node can say the same as a parameter error (``ros.params``)."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name} = {value!r} is invalid: expected {expected}")


def setting(default: Any, doc: str, constraints: str) -> Any:
    """A settings field: its default, the one description (node parameter, CLI flag, docs) and its range in words
    (the ROS parameter descriptor's ``additional_constraints``; ``__post_init__`` enforces it)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "constraints": constraints})


def field_kind(f: dataclasses.Field[Any]) -> str:
    """``"float" | "int" | "bool" | "str"``: the parameter type of a settings field."""
    kind = KINDS.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
    if kind is None:
        raise TypeError(f"settings field {f.name} has type {f.type!r}; expected one of {sorted(KINDS)}")
    return kind


def finite_number(where: str, value: Any, minimum: float, *, strict: bool = False, what: str = "") -> float:
    """``value`` as a float when it is a finite number (not a bool) ``>= minimum`` (``> minimum`` with ``strict``),
    else a :class:`SettingError` naming ``where``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        op = ">" if strict else ">="
        raise SettingError(where, value, what or f"a finite number {op} {minimum:g}")
    return float(value)
