"""One exception hierarchy for the whole package.

Callers (node, CLI, training) catch `MfaprError` to turn any expected failure into a clear message instead of a
traceback; the subclasses say which kind of input was wrong. Messages name what was wrong, where (file, key,
topic, camera) and what to do about it.
"""

from __future__ import annotations


class MfaprError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MfaprError):
    """A configuration file, parameter or config dict is invalid."""


class DataError(MfaprError):
    """Input data (images, poses, bags, kapture folders) is missing or malformed."""


class CheckpointError(MfaprError):
    """A checkpoint is missing, corrupt, or does not match what the caller expects."""
