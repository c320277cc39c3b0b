"""The synchronizer's vocabulary, without the synchronizer: its settings, its output and its counters.

Why a module of its own: what configures the synchronizer (:class:`SyncSettingsBase`, the one schema of the node's
``sync.*`` parameters, eval-bag's options and training's ``data.sync``), what it returns (:class:`Bundle`) and what
it counts (:data:`STAT_KEYS`, :func:`accounting_line`) are read by many modules that never build one. Import them
from :mod:`mfapr_ros.core.sync`, where :class:`~mfapr_ros.core.sync.SyncSettings` adds ``make()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from .errors import ConfigError
from .settings import SettingError, setting

NS_PER_S = 1_000_000_000

#: Counter names in :attr:`ApproximateTimeSynchronizer.stats` (always present, starting at 0).
STAT_KEYS = (
    "received",
    "bundles_full",
    "bundles_partial",
    "bundled_messages",
    "dropped_unmatched",
    "dropped_queue_overflow",
    "dropped_too_few_streams",
    "dropped_out_of_order",
    "duplicates",
    "dropped_stream_timeout",
    "dropped_late",
    "dropped_glitch",
    "dropped_time_jump",
    "dropped_stale_after_jump",
    "dropped_reset",
    "dropped_bad_stream",
    "time_jumps",
    "forward_jumps",
    "stream_clock_jumps",
    "stream_timeouts",
    "stream_rejoins",
)

#: Counters that are message drops (their sum + bundled + pending == received + bad-stream calls).
DROP_KEYS = tuple(k for k in STAT_KEYS if k.startswith("dropped_") or k == "duplicates")


@dataclass(frozen=True)
class SyncSettingsBase:
    """The synchronizer's settings — the one schema for the node, ``eval-bag`` and training (used as
    :class:`mfapr_ros.core.sync.SyncSettings`, which adds ``make()``: the synchronizer they configure).

    One name per setting, SI units (seconds), validated once here in ``__post_init__``. The node's ``sync.<field>``
    parameters (``ros.params.PARAM_SPECS``) and eval-bag's ``--<field>`` options are generated from these fields;
    training's ``data.sync`` takes the same names (:meth:`from_dict`). The synchronizer itself counts in integer
    nanoseconds: :attr:`max_interval_ns`, :attr:`stream_timeout_ns`, :attr:`time_jump_ns`, :attr:`min_streams`.
    Assignment is always the default ``frames`` policy (with ``pivot`` as its internal fallback for cameras at
    different rates) published on arrival: ``bench/sync.py`` shows ``pivot`` strictly dominated (docs/node.md).
    """

    slop: float = setting(0.02, "Max spread of stamps inside one bundle, seconds (approximate-time slop).", "> 0")
    queue_size: int = setting(10, "Messages queued per camera by the synchronizer.", ">= 1")
    min_cameras: int = setting(0, "Fewest cameras in a (partial) bundle; 0 = all cameras.", "0..number of cameras")
    stream_timeout: float = setting(0.5, "A camera silent this long (s) stops blocking bundles (the floor of a "
                                     "timeout of at least sync.stream_timeout_periods observed periods).",
                                     "> 0 (>= sync.slop when min_cameras > 0)")
    stream_timeout_periods: float = setting(3.0, "The stream timeout is at least this many of the camera's "
                                             "observed frame periods; 0 = sync.stream_timeout only.", ">= 0")
    time_jump: float = setting(1.0, "A stamp this far (s) before its camera's last one is a suspected time jump: a "
                                "glitch unless confirmed by another camera or the camera's next message.",
                                "> sync.slop")

    def __post_init__(self) -> None:
        def bad(key: str, v: Any, what: str) -> SettingError:
            return SettingError(f"sync.{key}", v, what)

        for f in dataclasses.fields(self):  # types: ints accepted for seconds, integral floats for counts
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f.name, v, f"a number ({f.metadata['constraints']})")
            if f.type == "int":
                if isinstance(v, float) and not v.is_integer():
                    raise bad(f.name, v, f"an integer ({f.metadata['constraints']})")
                object.__setattr__(self, f.name, int(v))
            else:
                object.__setattr__(self, f.name, float(v))
        if self.slop <= 0 or self.max_interval_ns <= 0:
            raise bad("slop", self.slop, "a number of seconds > 0")
        if self.queue_size < 1:
            raise bad("queue_size", self.queue_size, "an integer >= 1")
        if self.min_cameras < 0:
            raise bad("min_cameras", self.min_cameras, "an integer >= 0 (0 = all cameras)")
        if self.stream_timeout <= 0 or (self.min_cameras and self.stream_timeout < self.slop):
            raise bad("stream_timeout", self.stream_timeout, f"a number of seconds > 0 and >= sync.slop ({self.slop}) "
                      "with partial bundles")
        if self.stream_timeout_periods < 0:
            raise bad("stream_timeout_periods", self.stream_timeout_periods, "a number >= 0 (0 = floor only)")
        if self.time_jump <= self.slop:
            raise bad("time_jump", self.time_jump, f"a number of seconds > sync.slop ({self.slop})")

    @property
    def max_interval_ns(self) -> int:
        return int(round(self.slop * NS_PER_S))

    @property
    def stream_timeout_ns(self) -> int:
        return int(round(self.stream_timeout * NS_PER_S))

    @property
    def time_jump_ns(self) -> int:
        return int(round(self.time_jump * NS_PER_S))

    @property
    def min_streams(self) -> int | None:
        """``min_cameras`` for the synchronizer: ``None`` = all streams (full bundles only)."""
        return self.min_cameras or None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "sync") -> Self:
        """From a config mapping (``data.sync`` of a training YAML, a reader's ``sync=`` argument, the node's
        ``sync.*`` parameters): the field names, in seconds; unknown keys are an error naming the valid ones."""
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def replace(self, **kw: Any) -> Self:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The field names and values (seconds), as stored in reports and accepted by :meth:`from_dict`."""
        return dataclasses.asdict(self)


def accounting_line(stats: Mapping[str, int]) -> str:
    """The accounting identity of a synchronizer's :attr:`~ApproximateTimeSynchronizer.stats` as one line:
    ``received = bundled + each drop cause + pending`` with the numbers, ``OK`` or ``MISMATCH`` at the end (calls
    with a bad stream index are never received: they are named after the identity, not in it)."""
    drops = {k: stats.get(k, 0) for k in DROP_KEYS if stats.get(k, 0)}
    bad = drops.pop("dropped_bad_stream", 0)
    left = stats.get("received", 0)
    right = stats.get("bundled_messages", 0) + sum(drops.values()) + stats.get("pending", 0)
    causes = "".join(f" + {k.removeprefix('dropped_')} {v}" for k, v in sorted(drops.items()))
    return (f"sync: received {left} = bundled {stats.get('bundled_messages', 0)}{causes} + pending "
            f"{stats.get('pending', 0)}" + (" OK" if left == right else f" MISMATCH ({left} vs {right})")
            + (f"; {bad} call(s) with a bad stream index" if bad else ""))


@dataclass(frozen=True)
class Bundle:
    """One synchronized set: slot ``i`` is stream ``i``'s message, or ``None`` where the stream is absent.

    ``stamp_ns`` is the latest stamp among the present streams (the bundle is complete at that time, which is
    what a pose for it should be stamped with).
    """

    stamp_ns: int
    stamps_ns: list[int | None]
    payloads: list[Any | None]
    mask: np.ndarray

    @property
    def num_present(self) -> int:
        return int(self.mask.sum())

    @property
    def is_full(self) -> bool:
        return bool(self.mask.all())

    @property
    def spread_ns(self) -> int:
        """Latest minus earliest present stamp."""
        present = [s for s in self.stamps_ns if s is not None]
        return max(present) - min(present)
