"""The model config's value checks, below both ``base`` (backbones validate their own keys) and ``config``.

Every error names the key, the bad value and the valid range: a typo never falls back to a default silently.
"""

from __future__ import annotations

from typing import Any

from mfapr_ros.core.errors import ConfigError


def config_error(key: str, msg: str) -> ConfigError:
    return ConfigError(f"model config: '{key}' {msg}")


def require_int(cfg: dict[str, Any], key: str, lo: int, hi: int | None = None) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise config_error(key, f"must be an integer in {rng}, got {v!r}")
    return v


def require_bool(cfg: dict[str, Any], key: str) -> bool:
    if not isinstance(cfg[key], bool):
        raise config_error(key, f"must be true or false, got {cfg[key]!r}")
    return cfg[key]
