"""Issue 24: the settings dataclasses are the only schemas of their node parameters (``sync.*``, ``covariance.*``,
``uncertainty.*`` but ``lost_timeout``): the parameter specs are generated from the fields, the values are validated
by the dataclass alone, and a parameter's error says what the dataclass says. ROS-free (params.py imports no rclpy)."""

from __future__ import annotations

import dataclasses

import pytest

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.settings import SettingError, field_kind
from mfapr_ros.inference.covariance import DEFAULT_COVARIANCE, CovarianceSettings
from mfapr_ros.inference.uncertainty import UncertaintyGate
from mfapr_ros.ros.params import PARAM_SPECS, SETTINGS_GROUPS, SPEC_BY_NAME, validate_params

GOOD = {"checkpoint": "m.json"}


@pytest.mark.parametrize("prefix", sorted(SETTINGS_GROUPS))
def test_specs_are_the_fields(prefix: str) -> None:
    """Every field is the parameter ``<prefix>.<field>`` with the field's default, type, description and range;
    no other parameter of that group exists (``uncertainty.lost_timeout`` is the relocalization's)."""
    cls = SETTINGS_GROUPS[prefix]
    fields = dataclasses.fields(cls)
    for f in fields:
        spec = SPEC_BY_NAME[f"{prefix}.{f.name}"]
        assert (spec.default, spec.kind, spec.description, spec.constraints) == (
            f.default, field_kind(f), f.metadata["doc"], f.metadata["constraints"])
        assert spec.description and spec.constraints
    names = {f"{prefix}.{f.name}" for f in fields}
    extra = {s.name for s in PARAM_SPECS if s.name.startswith(prefix + ".")} - names
    assert extra == ({"uncertainty.lost_timeout"} if prefix == "uncertainty" else set())


def test_node_params_hold_the_dataclasses_with_their_defaults() -> None:
    p = validate_params(GOOD)
    assert p.covariance == CovarianceSettings() and p.uncertainty == UncertaintyGate()
    assert p.default_covariance() == pytest.approx([DEFAULT_COVARIANCE[0]] * 3 + [DEFAULT_COVARIANCE[1]] * 3)
    q = validate_params({**GOOD, "covariance.position_std": 2, "uncertainty.max_yaw_sigma_deg": 10,
                         "uncertainty.action": "skip"})
    assert q.covariance == CovarianceSettings(position_std=2.0)
    assert isinstance(q.covariance.position_std, float) and q.covariance.variances() == pytest.approx((4.0, 0.01))
    assert q.uncertainty == UncertaintyGate(max_yaw_sigma_deg=10.0, action="skip") and q.uncertainty.enabled


@pytest.mark.parametrize("cls,kw,name,expected", [
    (CovarianceSettings, {"position_std": 0.0}, "covariance.position_std", "a finite number > 0"),
    (CovarianceSettings, {"orientation_std": float("nan")}, "covariance.orientation_std", "a finite number > 0"),
    (UncertaintyGate, {"max_position_sigma": -1.0}, "uncertainty.max_position_sigma", ">= 0 (0 = off)"),
    (UncertaintyGate, {"inflate_factor": 0.5}, "uncertainty.inflate_factor", "a finite number >= 1"),
    (UncertaintyGate, {"action": "drop"}, "uncertainty.action", "one of ('inflate', 'skip')"),
])
def test_one_validation_two_callers(cls: type, kw: dict, name: str, expected: str) -> None:
    """The dataclass's check is the node's: same name, same expectation (the node only adds where to fix it)."""
    with pytest.raises(SettingError) as direct:
        cls(**kw)
    assert direct.value.name == name and expected in direct.value.expected
    (key, value), = kw.items()
    with pytest.raises(ConfigError) as node:
        validate_params({**GOOD, f"{name}": value})
    msg = str(node.value)
    assert msg.startswith(f"parameter '{name}' = ") and direct.value.expected in msg and "config/localize.yaml" in msg


def test_a_bool_is_not_a_number() -> None:
    with pytest.raises(SettingError, match="covariance.position_std = True"):
        CovarianceSettings(position_std=True)
    with pytest.raises(ConfigError, match="'uncertainty.inflate_factor'"):
        validate_params({**GOOD, "uncertainty.inflate_factor": True})
