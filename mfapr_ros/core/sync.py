"""N-stream approximate-time synchronizer (ROS-free), shared by the node, the bag evaluator and the dataset readers.

Why not ``message_filters``: its C++ ``ApproximateTime`` policy takes at most 9 inputs and cannot be called from
Python; its Python ``ApproximateTimeSynchronizer`` searches the product of all queues greedily (exponential in the
number of topics) and runs user callbacks under its lock. This module has two assignment policies behind one
front end, both O(N) per message for any number of streams (16+), outputs returned to the caller (no callbacks,
nothing user-defined runs under the lock). One settings object, :class:`SyncSettings`, configures it for the node
(``sync.*`` parameters), ``eval-bag`` and training (``data.sync``), so the three bundle identically.

**Policy ``pivot``** (default) — a port of the C++ *pivot* algorithm (``message_filters/sync_policies/
approximate_time.h``):

* each message is used in at most one bundle; bundles do not cross (per stream, bundle k's message is older than
  bundle k+1's); all messages older than a published bundle's message on its stream are dropped;
* a bundle is the *minimum-span* set containing the pivot message (the first message that can close a set whose
  span is ≤ ``max_interval_ns``);
* ``publish="arrival"`` (default): each stream's *inter-message lower bound* (C++ ``setInterMessageLowerBound``) is
  learned from its observed stamps (half the smallest of its last 8 gaps), so a complete bundle is proved optimal
  — and leaves — when its last member arrives instead of one frame later. ``publish="optimal"`` keeps the bound 0:
  exactly the C++ default, which waits for a later message on every stream (output independent of the arrival
  interleaving, tested against an exhaustive reference). With a learned bound the output is the same whenever
  the bound holds (a stream never delivers two messages closer than half its smallest recent gap);
* on overflow the oldest message of the offending stream is dropped and that stream may not be pivot until the
  candidate search has moved past it (``has_dropped_messages``), exactly as in C++; ``age_penalty`` as in C++.

**Policy ``frames``** — period-aware assignment for loose stamps (jitter comparable to the frame period:
phones, software-stamped USB cameras). Every camera delivers one message per period, so instead of grouping by
spread alone, a frame clock ``t(f) = T + f·P`` is fitted to all streams (exponentially weighted least squares over
about one second of messages, so it follows clock drift) with a per-stream phase offset; each message gets the
frame index its stream's order predicts (the previous index + 1, or more only when the stamp says a frame was
dropped), and a bundle is the set of messages with the same index, published as soon as every active stream has
delivered that index (publish on arrival). A bundle whose spread exceeds ``max_interval_ns`` is dropped (full
mode) or trimmed to the members within the slop (partial mode). The clock is bootstrapped from the first 8
messages of a stream (held back once, at the start); streams with different frame rates (> 10 % apart) fall back
to ``pivot`` with a log line.

Front end (both policies), each deviation counted in :attr:`ApproximateTimeSynchronizer.stats`:

* **Per-stream order is enforced.** A message older than the last accepted one on its stream is dropped
  (``dropped_out_of_order``), an exact repeat of the last stamp is dropped (``duplicates``).
* **Glitch-proof time.** A stamp more than ``time_jump_ns`` before its stream's last stamp, or ahead of the latest
  stamp by more than ``max(time_jump_ns, 4 periods)``, is *suspect*: held, not used. It becomes real only with
  evidence — a second suspect consistent with it, from another stream or from the same stream's next message
  (one stream period). A lone outlier whose stream goes on in the old time is dropped (``dropped_glitch``) and
  never moves the clock. A confirmed jump *back* (bag loop, clock reset) publishes what can still be published,
  drops the old queues (``dropped_time_jump``, ``time_jumps``, logged) and keeps the suspects — the other
  streams' data already in the new time; messages still in flight from the old time are dropped
  (``dropped_stale_after_jump``) until the new time catches up. A confirmed jump *forward* (a recording gap) is
  just accepted (``forward_jumps``). A jump seen on one stream only, contradicted by the others, re-times that
  stream alone (``stream_clock_jumps``). A run of more than ``queue_size`` consecutive small backward steps on one
  stream is a loop shorter than ``time_jump_ns``, handled as a jump.
* **Partial bundles** (``min_streams < num_streams``): a stream whose latest stamp is older than the latest stamp
  seen by more than its timeout becomes *inactive* (``stream_timeouts``, logged): ``max(stream_timeout_ns,
  stream_timeout_periods × its observed period)`` (message time, so bag replay is deterministic; a stream without
  a period yet uses the largest known one), so a 1 Hz dataset is not timed out between frames. Inactive streams
  do not block; bundles carry ``None`` and ``mask[i] = False`` for them. A message on an inactive stream
  reactivates it (``stream_rejoins``) unless it is itself older than the timeout horizon (``dropped_late``).
* ``flush()`` publishes what the held messages can still form at end of data (bag evaluation); C++ never does.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .log_sink import warn

_LOG = logging.getLogger(__name__)

POLICIES = ("pivot", "frames")
PUBLISH_MODES = ("arrival", "optimal")

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

NS_PER_S = 1_000_000_000
_GAPS_KEPT = 8  # per-stream stamp gaps kept for the period / lower-bound estimates
_BOOT_MESSAGES = 20  # frames policy: messages of one stream before the frame clock is fitted
_DROP_THRESHOLD = 1.85  # frames policy: a gap this many periods long means a dropped frame
_OFFSET_GAIN = 0.02  # frames policy: per-message gain of a stream's phase offset


@dataclass(frozen=True)
class SyncSettings:
    """The synchronizer's settings — one object for the node, ``eval-bag`` and training.

    Units are integer nanoseconds (stamps are compared as integers). The user-facing form (seconds, ``min_cameras``
    0 = all: the node's ``sync.*`` parameter names, ``data.sync`` of a training YAML, eval-bag's options) is
    translated in ONE place, :meth:`from_dict`, which the node (``NodeParams.sync``), eval-bag and the training
    readers all call; :meth:`to_dict` writes that form back.

    ``min_streams`` ``None`` (or 0) means all streams (full bundles only). ``stream_timeout_ns`` is the floor of
    the period-relative stream timeout (partial mode only).
    """

    max_interval_ns: int = 20_000_000
    queue_size: int = 10
    min_streams: int | None = None
    stream_timeout_ns: int = 500_000_000
    stream_timeout_periods: float = 3.0
    time_jump_ns: int = NS_PER_S
    policy: str = "pivot"
    publish: str = "arrival"
    age_penalty: float = 0.0

    def __post_init__(self) -> None:
        def bad(key: str, v: Any, what: str) -> ConfigError:
            return ConfigError(f"sync.{key} = {v!r} is invalid: expected {what}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.max_interval_ns) or self.max_interval_ns <= 0:
            raise bad("slop", self.max_interval_ns, "a positive integer of nanoseconds (slop > 0 s)")
        if not is_int(self.queue_size) or self.queue_size < 1:
            raise bad("queue_size", self.queue_size, "an integer >= 1")
        if self.min_streams is not None and (not is_int(self.min_streams) or self.min_streams < 0):
            raise bad("min_cameras", self.min_streams, "an integer >= 0 (0 = all cameras)")
        if not is_int(self.stream_timeout_ns) or (self.min_streams and self.stream_timeout_ns < self.max_interval_ns):
            raise bad("stream_timeout", self.stream_timeout_ns,
                      f"an integer of ns >= the slop ({self.max_interval_ns})")
        if not isinstance(self.stream_timeout_periods, (int, float)) or not self.stream_timeout_periods >= 0:
            raise bad("stream_timeout_periods", self.stream_timeout_periods, "a number >= 0 (0 = floor only)")
        if not is_int(self.time_jump_ns) or self.time_jump_ns <= self.max_interval_ns:
            raise bad("time_jump", self.time_jump_ns, "an integer of ns > the slop")
        if self.policy not in POLICIES:
            raise bad("policy", self.policy, f"one of {POLICIES}")
        if self.publish not in PUBLISH_MODES:
            raise bad("publish", self.publish, f"one of {PUBLISH_MODES}")
        if not isinstance(self.age_penalty, (int, float)) or self.age_penalty < 0:
            raise bad("age_penalty", self.age_penalty, "a number >= 0")

    #: Keys of :meth:`from_dict` (node names in seconds, and the ns / ms forms).
    KEYS = ("slop", "slop_ms", "max_interval_ms", "max_interval_ns", "queue_size", "min_cameras", "min_streams",
            "stream_timeout", "stream_timeout_ns", "stream_timeout_periods", "time_jump", "time_jump_ns", "policy",
            "publish", "age_penalty")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "sync") -> SyncSettings:
        """From a config mapping (``data.sync`` of a training YAML, a reader's ``sync=`` argument).

        Seconds for ``slop``/``stream_timeout``/``time_jump`` (the node's parameter names), or the ``*_ns`` /
        ``*_ms`` forms; unknown keys are an error naming the valid ones.
        """
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {list(cls.KEYS)}")

        def num(key: str) -> float:
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ConfigError(f"{where}.{key} = {v!r} is invalid: expected a number")
            return float(v)

        kw: dict[str, Any] = {}
        for key, field_, scale in (("slop", "max_interval_ns", 1e9), ("slop_ms", "max_interval_ns", 1e6),
                                   ("max_interval_ms", "max_interval_ns", 1e6), ("stream_timeout", "stream_timeout_ns",
                                   1e9), ("time_jump", "time_jump_ns", 1e9)):
            if key in d:
                kw[field_] = int(round(num(key) * scale))
        for key in ("max_interval_ns", "stream_timeout_ns", "time_jump_ns", "queue_size"):
            if key in d:
                v = d[key]
                kw[key] = int(v) if isinstance(v, float) and v.is_integer() else v
        for src, dst in (("min_cameras", "min_streams"), ("min_streams", "min_streams")):
            if src in d:
                v = d[src]
                kw[dst] = None if v in (None, 0) else (int(v) if isinstance(v, float) and v.is_integer() else v)
        for key in ("stream_timeout_periods", "age_penalty"):
            if key in d:
                kw[key] = num(key)
        for key in ("policy", "publish"):
            if key in d:
                kw[key] = d[key]
        try:
            return cls(**kw)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def replace(self, **kw: Any) -> SyncSettings:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The node's vocabulary (seconds), as stored in reports and accepted by :meth:`from_dict`."""
        return {"slop": self.max_interval_ns / 1e9, "queue_size": self.queue_size,
                "min_cameras": self.min_streams or 0, "stream_timeout": self.stream_timeout_ns / 1e9,
                "stream_timeout_periods": self.stream_timeout_periods, "time_jump": self.time_jump_ns / 1e9,
                "policy": self.policy, "publish": self.publish}

    def make(self, num_streams: int, logger: Logger | None = None) -> ApproximateTimeSynchronizer:
        """The synchronizer for ``num_streams`` streams (``min_streams`` above it is an error naming both)."""
        ms = self.min_streams or num_streams
        if ms > num_streams:
            raise ConfigError(f"sync.min_cameras (eval-bag --min-cameras, training data.sync.min_cameras) = {ms} "
                              f"exceeds the {num_streams} camera(s) being bundled; use 0..{num_streams} (0 = all)")
        return ApproximateTimeSynchronizer(num_streams, self.queue_size, self.max_interval_ns, min_streams=ms,
                                           stream_timeout_ns=self.stream_timeout_ns, logger=logger,
                                           age_penalty=self.age_penalty, time_jump_ns=self.time_jump_ns,
                                           policy=self.policy, publish=self.publish,
                                           stream_timeout_periods=self.stream_timeout_periods)


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


Logger = logging.Logger | Callable[[str], Any]


def _circmean(values: list[float], period: float) -> float:
    """Circular mean of ``values`` modulo ``period``, in [0, period)."""
    c = sum(math.cos(2 * math.pi * v / period) for v in values)
    s = sum(math.sin(2 * math.pi * v / period) for v in values)
    return (math.atan2(s, c) / (2 * math.pi) * period) % period


def _wrap(x: float, period: float) -> float:
    """``x`` wrapped into (−period/2, period/2]."""
    return x - period * math.floor(x / period + 0.5)


class ApproximateTimeSynchronizer:
    """Approximate-time policy over ``num_streams`` streams; see the module docstring for the exact semantics.

    Args:
        num_streams: number of input streams (cameras), ≥ 1.
        queue_size: messages kept per stream (C++ ``queue_size``); older ones are dropped as overflow. In the
            ``frames`` policy: frames kept open.
        max_interval_ns: largest allowed spread (latest − earliest stamp) of a bundle (C++ ``max_interval``, the
            Python ``slop``). Default 20 ms: less than a frame at 30 Hz so consecutive frames cannot pair.
        min_streams: smallest number of present streams for a partial bundle; ``None`` → ``num_streams`` (full
            bundles only, exactly the C++ policy).
        stream_timeout_ns: floor of the message-time silence after which a stream stops blocking (partial mode);
            default 500 ms. Must be ≥ ``max_interval_ns`` in partial mode (unused in full-bundle mode).
        logger: a ``logging.Logger`` or a callable taking one string (the node passes its ROS logger's ``warn``);
            default: this module's logger.
        age_penalty: C++ ``age_penalty`` (≥ 0): favours publishing earlier sets sooner (``pivot``).
        time_jump_ns: a stamp this much before its stream's last one is a suspected time jump (see the module
            docstring: a glitch unless confirmed).
        policy: ``"pivot"`` (minimum-span sets) or ``"frames"`` (period-aware frame indices).
        publish: ``"arrival"`` (learned inter-message lower bounds) or ``"optimal"`` (C++ default, bound 0).
        stream_timeout_periods: the stream timeout is at least this many of the stream's observed periods.
    """

    def __init__(self, num_streams: int, queue_size: int = 10, max_interval_ns: int = 20_000_000,
                 min_streams: int | None = None, stream_timeout_ns: int | None = None,
                 logger: Logger | None = None, age_penalty: float = 0.0,
                 time_jump_ns: int = NS_PER_S, *, policy: str = "pivot", publish: str = "arrival",
                 stream_timeout_periods: float = 3.0) -> None:
        if not isinstance(num_streams, int) or num_streams < 1:
            raise ConfigError(f"sync: num_streams must be a positive integer, got {num_streams!r}")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"sync: queue_size must be a positive integer, got {queue_size!r}")
        if not isinstance(max_interval_ns, int) or max_interval_ns < 0:
            raise ConfigError(f"sync: max_interval_ns must be a non-negative integer (nanoseconds), "
                              f"got {max_interval_ns!r}")
        if min_streams is None:
            min_streams = num_streams
        if not isinstance(min_streams, int) or not 1 <= min_streams <= num_streams:
            raise ConfigError(f"sync: min_streams must be in 1..{num_streams} (num_streams), got {min_streams!r}")
        if stream_timeout_ns is None:
            stream_timeout_ns = 500_000_000
        partial = min_streams < num_streams
        if not isinstance(stream_timeout_ns, int) or (partial and stream_timeout_ns < max_interval_ns):
            raise ConfigError(f"sync: stream_timeout_ns ({stream_timeout_ns!r}) must be an integer ≥ max_interval_ns "
                              f"({max_interval_ns}); a stream cannot be declared silent within one bundle's spread")
        if age_penalty < 0:
            raise ConfigError(f"sync: age_penalty must be ≥ 0, got {age_penalty}")
        if not isinstance(time_jump_ns, int) or time_jump_ns <= max_interval_ns:
            raise ConfigError(f"sync: time_jump_ns ({time_jump_ns!r}) must be an integer > max_interval_ns")
        if policy not in POLICIES:
            raise ConfigError(f"sync: policy must be one of {POLICIES}, got {policy!r}")
        if publish not in PUBLISH_MODES:
            raise ConfigError(f"sync: publish must be one of {PUBLISH_MODES}, got {publish!r}")
        if not stream_timeout_periods >= 0:
            raise ConfigError(f"sync: stream_timeout_periods must be ≥ 0, got {stream_timeout_periods!r}")
        self.num_streams = num_streams
        self.queue_size = queue_size
        self.max_interval_ns = max_interval_ns
        self.min_streams = min_streams
        self.partial = min_streams < num_streams
        self.stream_timeout_ns = stream_timeout_ns
        self.stream_timeout_periods = float(stream_timeout_periods)
        self.time_jump_ns = time_jump_ns
        self.policy = policy
        self.configured_policy = policy
        self.publish = publish
        # Integer arithmetic when there is no penalty, so comparisons of ns stamps stay exact.
        self._age: float | int = 1 + age_penalty if age_penalty else 1
        self._logger = logger
        self._lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        n = num_streams
        # Stamp statistics survive resets and jumps (a camera's rate does not change when the clock does).
        self._gaps: list[deque[int]] = [deque(maxlen=_GAPS_KEPT) for _ in range(n)]
        self._period: list[int | None] = [None] * n  # median recent gap
        self._lb: list[int] = [0] * n  # inter-message lower bound (publish="arrival")
        self._timeout: list[int] = [stream_timeout_ns] * n
        self._fwd: list[int] = [0] * n  # forward-suspect limit, max(time_jump, 4 periods); 0 = no period yet
        self._nobs: list[int] = [0] * n
        self._old_epoch: int | None = None
        self._clear()

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (cumulative across resets)."""
        with self._lock:
            return dict(self._stats)

    def drop_counts(self) -> dict[str, int]:
        """The non-zero message-drop counters as ``{"sync_<cause>": n}``: the synchronizer's lines of a reader's or
        eval-bag's drop table (one prefix, so they never collide with the readers' own causes)."""
        with self._lock:
            return {f"sync_{k}": self._stats[k] for k in DROP_KEYS if self._stats[k]}

    @property
    def active(self) -> list[bool]:
        """Which streams currently block (all of them in full-bundle mode)."""
        with self._lock:
            return list(self._active)

    @property
    def periods_ns(self) -> list[int | None]:
        """Each stream's observed period (median of its recent stamp gaps), ``None`` before its second message."""
        with self._lock:
            return list(self._period)

    @property
    def pending(self) -> int:
        """Messages held (queued, inside the candidate search, open frames, suspects)."""
        with self._lock:
            return self._pending_count()

    def add(self, stream: int, stamp_ns: int, payload: Any = None) -> list[Bundle]:
        """Feed one message; returns the bundles it completed (usually 0 or 1, oldest first).

        A bad ``stream`` index is counted (``dropped_bad_stream``) and logged, not raised: this runs inside
        subscription callbacks, where an exception would kill the executor.
        """
        with self._lock:
            self._out: list[Bundle] = []
            if not (isinstance(stream, int) and 0 <= stream < self.num_streams):
                self._stats["dropped_bad_stream"] += 1
                self._log(f"sync: message for stream {stream!r} ignored; streams are 0..{self.num_streams - 1}")
                return []
            self._add(stream, int(stamp_ns), payload)
            return self._out

    def flush(self) -> list[Bundle]:
        """End of data: publish what the held messages can still form (the pending candidate or open frames, then
        whatever follows from what is left). Used at the end of a bag; live nodes never call it."""
        with self._lock:
            self._out = []
            if self._susp:  # no evidence either way will come: what the suspects say is all there is
                self._confirm_jump()
            self._end_of_data()
            return self._out

    def reset(self) -> None:
        """Forget all held messages (counted as ``dropped_reset``); counters and stream periods are kept."""
        with self._lock:
            self._drop_all("dropped_reset")
            self._clear()
            self._old_epoch = None

    # ------------------------------------------------------------------ state
    def _clear(self) -> None:
        n = self.num_streams
        self._q: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self._past: list[list[tuple[int, Any]]] = [[] for _ in range(n)]
        self._has_dropped = [False] * n
        self._active = [True] * n
        self._active_idx = list(range(n))
        self._n_nonempty = 0
        self._pivot: int | None = None
        self._pivot_time = 0
        self._cand_start = 0
        self._cand_end = 0
        self._candidate: list[tuple[int, Any] | None] = []
        self._last: list[int | None] = [None] * n
        self._ooo_run = [0] * n
        self._now: int | None = None
        self._t0: int | None = None
        self._out = []
        # suspects (glitch or jump?): (stream, stamp, payload) in arrival order
        self._susp: list[tuple[int, int, Any]] = []
        self._susp_ref = 0
        self._susp_since: int | None = None
        self._susp_contra: set[int] = set()
        self._fr_clear()

    def _pending_count(self) -> int:
        n = sum(len(q) for q in self._q) + sum(len(p) for p in self._past) + len(self._susp)
        n += len(self._fr_boot) + sum(sum(1 for m in b if m is not None) for b in self._fr_bins.values())
        n += sum(1 for t in self._fr_tent if t is not None)
        return n

    def _log(self, msg: str) -> None:
        warn(self._logger, _LOG, msg)

    def _drop(self, stream: int, cause: str, count: int = 1) -> None:
        self._stats[cause] += count

    def _drop_all(self, cause: str) -> None:
        for i in range(self.num_streams):
            k = len(self._q[i]) + len(self._past[i])
            if k:
                self._drop(i, cause, k)
        for i, _, _ in self._susp:
            self._drop(i, cause)
        for i, _, _ in self._fr_boot:
            self._drop(i, cause)
        for i, t in enumerate(self._fr_tent):
            if t is not None:
                self._drop(i, cause)
        for b in self._fr_bins.values():
            for i, m in enumerate(b):
                if m is not None:
                    self._drop(i, cause)

    # ------------------------------------------------------------------ front end: order, glitches, jumps
    def _forward_limit(self, i: int) -> int:
        f = self._fwd[i]
        if f:
            return f
        p = self._pmax()
        return max(self.time_jump_ns, 4 * p) if p else self.time_jump_ns

    def _pmax(self) -> int:
        return max((p for p in self._period if p is not None), default=0)

    def _add(self, i: int, stamp: int, payload: Any) -> None:
        self._stats["received"] += 1
        now = self._now
        old = self._old_epoch
        if old is not None:
            if now is None or now >= old - self.time_jump_ns:
                self._old_epoch = None  # the new time has caught up; stragglers of the old one are long gone
            elif abs(stamp - old) < abs(stamp - now):
                self._drop(i, "dropped_stale_after_jump")  # in flight from before the jump back
                return None
        last = self._last[i]
        if (last is not None and stamp < last - self.time_jump_ns) or (
                now is not None and stamp > max(now, last if last is not None else now) + self._forward_limit(i)):
            return self._suspect(i, stamp, payload)
        if self._susp:
            self._normal_seen(i)
        if last is not None and stamp <= last:
            if stamp < last and self.policy == "frames" and self._ooo_run[i] < self.queue_size:
                # One topic is delivered in publish order, so its next message is its next frame even when jitter
                # put its stamp before the previous one: the frames policy labels by order and keeps it.
                self._ooo_run[i] += 1
                return self._accept(i, stamp, payload)
            if stamp < last:
                self._ooo_run[i] += 1
                if self._ooo_run[i] > self.queue_size:
                    # A whole queue's worth in a row went back in time: a loop shorter than time_jump_ns.
                    self._ooo_run[i] = 0
                    self._drop_suspects("dropped_glitch")
                    self._susp = [(i, stamp, payload)]
                    return self._confirm_jump()
            self._drop(i, "duplicates" if stamp == last else "dropped_out_of_order")
            return None
        self._ooo_run[i] = 0
        return self._accept(i, stamp, payload)

    def _suspect(self, i: int, stamp: int, payload: Any) -> None:
        """Hold a far-off stamp until evidence says whether it is a glitch or the new time."""
        if self._susp and abs(stamp - self._susp_ref) > self._forward_limit(i):
            self._drop_suspects("dropped_glitch")  # inconsistent with the held ones: they were glitches
        own = [s for k, s, _ in self._susp if k == i]
        if own and stamp <= own[-1]:
            self._drop(i, "duplicates" if stamp == own[-1] else "dropped_out_of_order")
            return None
        if not self._susp:
            self._susp_since = self._now
            self._susp_contra = set()
            self._susp_ref = stamp
        self._susp.append((i, stamp, payload))
        self._susp_ref = max(self._susp_ref, stamp)
        streams = {k for k, _, _ in self._susp}
        if len(streams) >= 2:
            return self._confirm_jump()
        if own:  # the same stream's next message agrees: one period of evidence
            if self._susp_contra - {i}:
                return self._retime_stream(i)
            return self._confirm_jump()
        return None

    def _normal_seen(self, i: int) -> None:
        """A message in the current time: it refutes its own stream's suspects; others' expire after a while."""
        if any(k == i for k, _, _ in self._susp):
            keep = []
            for k, s, p in self._susp:
                if k == i:
                    self._drop(k, "dropped_glitch")
                else:
                    keep.append((k, s, p))
            self._susp = keep
        else:
            self._susp_contra.add(i)
        now, since = self._now, self._susp_since
        if self._susp and now is not None and since is not None and now - since > self.time_jump_ns:
            self._drop_suspects("dropped_glitch")

    def _drop_suspects(self, cause: str) -> None:
        for k, _, _ in self._susp:
            self._drop(k, cause)
        self._susp = []

    def _retime_stream(self, i: int) -> None:
        """Stream ``i``'s clock moved while the others go on: accept its new time for it alone."""
        self._stats["stream_clock_jumps"] += 1
        held = [(s, p) for k, s, p in self._susp if k == i]
        self._susp = [(k, s, p) for k, s, p in self._susp if k != i]
        self._log(f"sync: stream {i} jumped to {held[0][0]} ns while the other streams stay near {self._now} ns "
                  "(its clock moved); re-timing that stream only")
        self._last[i] = None
        self._ooo_run[i] = 0
        self._fr_forget_stream(i)
        for s, p in held:
            self._accept(i, s, p)

    def _confirm_jump(self) -> None:
        """The suspects are the new time: a jump back resets (keeping them), a jump forward is accepted."""
        held = sorted(self._susp, key=lambda m: m[1])
        self._susp = []
        now = self._now
        if now is not None and held[0][1] < now:
            self._log(f"sync: time jumped back by {(now - held[0][1]) / 1e9:.3f} s on stream {held[0][0]} "
                      f"({now} → {held[0][1]} ns; bag loop or clock reset): resetting the synchronizer")
            self._stats["time_jumps"] += 1
            self._end_of_data()  # what was complete before the jump still leaves
            self._drop_all("dropped_time_jump")
            self._clear()
            self._old_epoch = now
        elif now is not None:
            self._stats["forward_jumps"] += 1
        for k, s, p in held:
            last = self._last[k]
            if last is not None and s <= last:
                self._drop(k, "duplicates" if s == last else "dropped_out_of_order")
            else:
                self._accept(k, s, p)

    # ------------------------------------------------------------------ accepted messages
    def _observe(self, i: int, stamp: int) -> None:
        """Per-stream period (median gap) and inter-message lower bound (half the smallest gap) from the stamps."""
        last = self._last[i]
        if last is None or stamp <= last:
            return
        g = self._gaps[i]
        g.append(stamp - last)
        self._nobs[i] += 1
        if len(g) < _GAPS_KEPT or self._nobs[i] % 4 == 0:  # the estimates move slowly: refresh every 4th gap
            s = sorted(g)
            p = s[len(s) // 2]
            self._period[i] = p
            self._lb[i] = s[0] // 2 if (self.publish == "arrival" and len(g) >= 3) else 0
            self._timeout[i] = max(self.stream_timeout_ns, int(self.stream_timeout_periods * p))
            self._fwd[i] = max(self.time_jump_ns, 4 * p)

    def _accept(self, i: int, stamp: int, payload: Any) -> None:
        self._observe(i, stamp)
        now = self._now
        if now is None or stamp > now:
            self._now = now = stamp
        if self._t0 is None:
            self._t0 = stamp
        if self.partial:
            if not self._active[i]:
                if stamp < now - self._timeout[i]:
                    self._last[i] = stamp
                    self._drop(i, "dropped_late")
                    return
                self._stats["stream_rejoins"] += 1
                self._log(f"sync: stream {i} speaks again (stamp {stamp} ns); it rejoins the bundles")
                self._last[i] = stamp
                self._set_active(i, True)
            else:
                self._last[i] = stamp
            self._check_timeouts(now)
        else:
            self._last[i] = stamp
        if self.policy == "frames":
            return self._fr_add(i, stamp, payload)
        return self._pv_add(i, stamp, payload)

    def _check_timeouts(self, now: int) -> None:
        t0 = self._t0 if self._t0 is not None else now
        pmax = self._pmax()
        for j in self._active_idx:
            last = self._last[j]
            tmo = self._timeout[j]
            if self._period[j] is None and pmax:
                tmo = max(tmo, int(self.stream_timeout_periods * pmax))
            if (last if last is not None else t0) < now - tmo:
                self._stats["stream_timeouts"] += 1
                self._log(f"sync: stream {j} silent for more than {tmo / 1e9:.3f} s of message time; publishing "
                          "bundles without it")
                self._set_active(j, False)
                return self._check_timeouts(now)  # the active list changed; rescan (at most N times)
        return None

    def _end_of_data(self) -> None:
        """Treat the held messages as all there will be (``flush``, before a jump back)."""
        if self.policy == "frames":
            self._fr_end_of_data()
        else:
            self._finish_candidates()

    def _set_active(self, j: int, on: bool) -> None:
        if self.policy == "frames":
            self._active[j] = on
            self._active_idx = [k for k in range(self.num_streams) if self._active[k]]
            if not on:
                self._fr_commit_tentatives(j)
                self._fr_finalize()
            return
        self._pv_set_active(j, on)

    # ------------------------------------------------------------------ policy "frames"
    def _fr_clear(self) -> None:
        n = self.num_streams
        self._fr_boot: list[tuple[int, int, Any]] = []
        self._fr_boot_count = [0] * n
        self._fr_ready = False
        self._fr_bins: dict[int, list[tuple[int, Any] | None]] = {}
        self._fr_keys: list[int] = []  # sorted open frame indices
        self._fr_done: int | None = None  # highest finalized frame index
        self._fr_idx: list[int | None] = [None] * n
        self._fr_tent: list[tuple[int, Any] | None] = [None] * n  # a message held after a skip
        self._fr_off = [0.0] * n
        self._fr_fast = [0.0] * n  # fast average of each stream's residual (label check)
        self._fr_var = 0.0  # running mean square residual (stamp jitter²), set by the bootstrap
        self._fr_nobs = [0] * n
        self._fr_base = 0
        self._fr_p0 = 0.0
        self._fr_t0 = 0.0
        # exponentially weighted least squares of x = T + f·P (weights decay by lam per message)
        self._fr_lam = 1.0 - 1.0 / (30.0 * n)
        self._fr_w = 0.0
        self._fr_mf = 0.0
        self._fr_mx = 0.0
        self._fr_cff = 0.0
        self._fr_cfx = 0.0

    def _fr_forget_stream(self, i: int) -> None:
        if self.policy == "frames" and self._fr_ready:
            self._fr_commit_tentatives(i)
        self._fr_idx[i] = None
        self._fr_nobs[i] = 0

    def _fr_add(self, i: int, stamp: int, payload: Any) -> None:
        if not self._fr_ready:
            self._fr_boot.append((i, stamp, payload))
            self._fr_boot_count[i] += 1
            if self._fr_boot_count[i] >= _BOOT_MESSAGES:
                self._fr_bootstrap()
            return None
        self._fr_place(i, stamp, payload)
        return self._fr_finalize()

    def _fr_bootstrap(self) -> None:
        """Fit the frame clock (period, phase, per-stream offsets) to the held messages, then replay them."""
        boot = self._fr_boot
        self._fr_boot = []
        per: list[list[int]] = [[] for _ in range(self.num_streams)]
        for i, s, _ in boot:
            per[i].append(s)
        periods: list[float] = []
        fits: list[tuple[int, float, float, float]] = []  # stream, mean label, mean stamp (from its first), cxx
        p0 = 0.0
        if any(len(st) >= 3 for st in per):
            # Two starting labellings — arrival order (one topic arrives in publish order), and arrival order with a
            # gap of ~2 median gaps read as a drop — each refined three times: a pooled fit (common period, own
            # intercepts), then relabelling against each stream's fitted line. The one with the smaller residual
            # wins (gap reading is right for tight stamps, misleads when the jitter is a third of the period).
            # A newest frame only partly in holds the early-stamped messages: fit on labels every stream reached.
            gaps = sorted(b - a for st in per for a, b in zip(st, st[1:], strict=False))
            g0 = max(gaps[len(gaps) // 2], 1)
            by_gap = []
            for st in per:
                ks, lab = [0], 0
                for a, b in zip(st, st[1:], strict=False):
                    lab += 1 if b - a < _DROP_THRESHOLD * g0 else max(1, round((b - a) / g0))
                    ks.append(lab)
                by_gap.append(ks)
            best = None
            for start in ([list(range(len(st))) for st in per], by_gap):
                res = self._fr_fit(per, start)
                if res is not None and (best is None or res[3] < best[3]):
                    best = res
            if best is not None:
                p0, fits, periods, _ = best
        # A camera at another rate is off by ≥ 1.5× (20 vs 30 Hz); jitter moves a 10-message estimate much less.
        # ... and a camera at half the rate reads as one with every other frame dropped: count its coverage
        sparse = [i for i, st in enumerate(per) if len(st) >= 3 and p0 > 0
                  and len(st) < 0.7 * (round((st[-1] - st[0]) / p0) + 1)]
        if not periods or p0 <= 0 or min(periods) <= 0 or max(periods) > 1.45 * min(periods) or sparse:
            self._log(f"sync: policy 'frames' needs every camera at the same frame rate; observed periods "
                      f"{[round(p / 1e6, 2) for p in periods]} ms"
                      + (f", streams {sparse} deliver under 70 % of the frames" if sparse else "")
                      + ": falling back to policy 'pivot'")
            self.policy = "pivot"
            for i, s, p in boot:
                self._pv_add(i, s, p)
            return
        self._fr_base = base = min(s for _, s, _ in boot)
        # Each fitted stream: the time its first message's label has on its line. Their circular mean is the
        # frame phase; the remainders are the streams' phase offsets (σ/√n precise, unlike one stamp).
        origin = {i: float(per[i][0] - base) + my - mk * p0 for i, mk, my, _ in fits}
        phase = _circmean(list(origin.values()), p0) if origin else _circmean([s - base for _, s, _ in boot], p0)
        for i in range(len(per)):
            if i in origin:
                off = _wrap(origin[i] - phase, p0)
                self._fr_off[i] = off
                self._fr_nobs[i] = 50  # offset known: slow gain from the start
                # its first message is on frame g0: start its labels just before it
                self._fr_idx[i] = int(round((origin[i] - phase - off) / p0)) - 1
        self._fr_p0, self._fr_t0 = p0, phase
        self._fr_var = (p0 / 6.0) ** 2
        self._fr_ready = True
        for i, s, p in boot:
            self._fr_place(i, s, p)
            self._fr_finalize()

    @staticmethod
    def _fr_fit(per: list[list[int]], labels: list[list[int]]
                ) -> tuple[float, list[tuple[int, float, float, float]], list[float], float] | None:
        """Pooled line fit of the bootstrap stamps: (period, per-stream fits, per-stream periods, mean sq. residual)."""
        labels = [list(ks) for ks in labels]
        out = None
        for _ in range(3):
            k_cut = min(ks[-1] for ks, st in zip(labels, per, strict=True) if len(st) >= 3) - 1
            fits: list[tuple[int, float, float, float]] = []
            pts_all: list[tuple[int, list[tuple[int, float]]]] = []
            sxx = sxy = 0.0
            periods = []
            for i, (st, ks) in enumerate(zip(per, labels, strict=True)):
                pts = [(kk, float(ss - st[0])) for kk, ss in zip(ks, st, strict=True) if kk <= k_cut]
                if len(pts) < 3:
                    continue
                mk = sum(x for x, _ in pts) / len(pts)
                my = sum(y for _, y in pts) / len(pts)
                cxx = sum((x - mk) ** 2 for x, _ in pts)
                cxy = sum((x - mk) * (y - my) for x, y in pts)
                if cxx > 0:
                    periods.append(cxy / cxx)
                    fits.append((i, mk, my, cxx))
                    pts_all.append((i, pts))
                    sxx += cxx
                    sxy += cxy
            if sxx <= 0:
                return out
            p0 = sxy / sxx
            if p0 <= 0:
                return out
            fit_of = {i: (mk, my) for i, mk, my, _ in fits}
            n = sum(len(pts) for _, pts in pts_all)
            rss = sum((y - (fit_of[i][1] + (x - fit_of[i][0]) * p0)) ** 2 for i, pts in pts_all for x, y in pts) / n
            out = (p0, fits, periods, rss / (p0 * p0))
            for i, mk, my, _ in fits:
                st = per[i]
                ks, lab = [0], 0
                for ss in st[1:]:
                    k = (float(ss - st[0]) - (my + (lab - mk) * p0)) / p0
                    lab += 1 if k < _DROP_THRESHOLD else max(1, round(k))
                    ks.append(lab)
                labels[i] = ks
        return out

    def _fr_clock(self) -> tuple[float, float, float]:
        """(reference index, its time, period) of the fitted clock (the bootstrap fit until the LSQ has spread)."""
        if self._fr_w > 0 and self._fr_cff > 4.0 * self._fr_w:
            # the bootstrap period as a prior worth about 10 frames of all streams: the first seconds' fit alone
            # is a short baseline whose slope error, times the frames since, would mislabel
            k = 80.0 * self.num_streams
            return self._fr_mf, self._fr_mx, (self._fr_cfx + k * self._fr_p0) / (self._fr_cff + k)
        return 0.0, self._fr_t0, self._fr_p0

    def _fr_place(self, i: int, stamp: int, payload: Any) -> None:
        """Label a message with its frame index: the stream's previous index + 1, or more when the clock says
        frames were skipped (a drop). A skip is *tentative* until the stream's next message: if that one turns out
        to sit on the skipped-to frame, the skip was jitter and the held message goes one frame back."""
        mf, mx, p = self._fr_clock()
        x = float(stamp - self._fr_base) - self._fr_off[i]
        prev = self._fr_idx[i]
        tent = self._fr_tent[i]
        if prev is None:
            f = int(round(mf + (x - mx) / p))
            skip = False
        else:
            k = (x - (mx + (prev - mf) * p)) / p
            inc = 1 if k < 1.5 else max(1, int(round(k)))
            f, skip = prev + inc, inc >= 2
            if tent is not None:
                # Two messages decide the held one: both one frame back (no skip) or the skip and this one after
                # it. The skip must explain them better by more than a dropped frame's prior costs.
                xt = float(tent[0] - self._fr_base) - self._fr_off[i]

                def t(g: int) -> float:
                    return mx + (g - mf) * p

                k0 = (x - t(prev - 1)) / p
                f0 = prev - 1 + (1 if k0 < 1.5 else max(1, int(round(k0))))
                e0 = (xt - t(prev - 1)) ** 2 + (x - t(f0)) ** 2
                e1 = (xt - t(prev)) ** 2 + (x - t(f)) ** 2
                if e0 <= e1 + 2.0 * self._fr_var * math.log(50.0):
                    self._fr_tent[i] = None
                    self._fr_commit(i, prev - 1, *tent)  # the skip was one too many
                    tent = None
                    f, skip = f0, f0 >= prev + 1
        if tent is not None:
            self._fr_tent[i] = None
            self._fr_commit(i, prev, *tent)  # type: ignore[arg-type]
        self._fr_idx[i] = f
        if skip:
            self._fr_tent[i] = (stamp, payload)
        else:
            self._fr_commit(i, f, stamp, payload)

    def _fr_commit(self, i: int, f: int, stamp: int, payload: Any) -> None:
        """Put a labelled message into its frame and let it correct the clock and its stream's offset."""
        mf, mx, p = self._fr_clock()
        x = float(stamp - self._fr_base) - self._fr_off[i]
        r = x - (mx + (f - mf) * p)
        self._fr_var += 0.01 * (min(r * r, p * p) - self._fr_var)
        fast = self._fr_fast[i] = 0.8 * self._fr_fast[i] + 0.2 * r
        if abs(fast) > 0.4 * p:
            # This stream's recent messages sit a whole period off their labels (a skip decided wrongly that the
            # next message could not undo): relabel the stream by one frame.
            d = 1 if fast > 0 else -1
            f += d
            self._fr_idx[i] = (self._fr_idx[i] or 0) + d
            r -= d * p
            self._fr_fast[i] = 0.0
        n = self._fr_nobs[i]
        self._fr_off[i] += r * max(_OFFSET_GAIN, 1.0 / (n + 4))
        self._fr_nobs[i] = n + 1
        lam = self._fr_lam  # weighted Welford with forgetting: x = T + f·P over about a second of messages
        w = self._fr_w * lam + 1.0
        df = f - self._fr_mf
        self._fr_mf += df / w
        self._fr_mx += (x - self._fr_mx) / w
        self._fr_cff = self._fr_cff * lam + df * (f - self._fr_mf)
        self._fr_cfx = self._fr_cfx * lam + df * (x - self._fr_mx)
        self._fr_w = w
        if self._fr_done is not None and f <= self._fr_done:
            self._drop(i, "dropped_unmatched")  # its frame was already closed (published without it)
            return
        b = self._fr_bins.get(f)
        if b is None:
            b = self._fr_bins[f] = [None] * self.num_streams
            bisect.insort(self._fr_keys, f)
            if len(self._fr_keys) > self.queue_size:  # too many open frames: the oldest is closed as it is
                self._fr_close(self._fr_keys[0], overflow=True)
        if b[i] is not None:  # two messages of one stream in one frame: keep the newer
            self._drop(i, "dropped_unmatched")
        b[i] = (stamp, payload)

    def _fr_commit_tentatives(self, only: int | None = None) -> None:
        for i in range(self.num_streams) if only is None else (only,):
            t = self._fr_tent[i]
            if t is not None:
                self._fr_tent[i] = None
                self._fr_commit(i, self._fr_idx[i], *t)  # type: ignore[arg-type]

    def _fr_finalize(self) -> None:
        """Close every frame that no active stream can still add to (publish on arrival of the last member)."""
        keys = self._fr_keys
        if not keys:
            return
        lo = None
        for j in self._active_idx:
            f = self._fr_idx[j]
            if f is None:
                return  # a stream that has not spoken yet may still fill any frame
            if self._fr_tent[j] is not None:
                f -= 2  # its held message may still go to f or f - 1
            if lo is None or f < lo:
                lo = f
        if lo is None:
            lo = keys[-1]
        while keys and keys[0] <= lo:
            self._fr_close(keys[0])

    def _fr_close(self, f: int, overflow: bool = False) -> None:
        self._fr_keys.remove(f)
        b = self._fr_bins.pop(f)
        self._fr_done = f if self._fr_done is None else max(self._fr_done, f)
        present = [k for k in range(self.num_streams) if b[k] is not None]
        if len(present) == self.num_streams or (self.partial and len(present) >= self.min_streams):
            stamps = sorted(b[k][0] for k in present)  # type: ignore[index]
            if stamps[-1] - stamps[0] > self.max_interval_ns and self.partial:
                med = stamps[len(stamps) // 2]
                while len(present) > 1:
                    lo_s = min(b[k][0] for k in present)  # type: ignore[index]
                    hi_s = max(b[k][0] for k in present)  # type: ignore[index]
                    if hi_s - lo_s <= self.max_interval_ns:
                        break
                    far = max(present, key=lambda k: abs(b[k][0] - med))  # type: ignore[index]
                    present.remove(far)
                    self._drop(far, "dropped_unmatched")
                    b[far] = None
            pst = [b[k][0] for k in present]  # type: ignore[index]
            if len(present) >= self.min_streams and max(pst) - min(pst) <= self.max_interval_ns:
                self._emit([b[k] for k in range(self.num_streams)])
                return
        cause = "dropped_queue_overflow" if overflow else "dropped_unmatched"
        if not self.partial or len(self._active_idx) >= self.min_streams:
            pass
        else:
            cause = "dropped_too_few_streams"
        for k in present:
            self._drop(k, cause)

    def _fr_end_of_data(self) -> None:
        if not self._fr_ready and self._fr_boot:
            boot = self._fr_boot
            if max(self._fr_boot_count) >= 3:
                self._fr_bootstrap()
            else:  # too little to fit a clock: bundle what there is by spread
                self._fr_boot = []
                self.policy = "pivot"
                for i, s, p in boot:
                    self._pv_add(i, s, p)
                self._finish_candidates()
                return
        if self.policy == "pivot":
            self._finish_candidates()
            return
        self._fr_commit_tentatives()
        while self._fr_keys:
            self._fr_close(self._fr_keys[0])

    def _emit(self, members: list[tuple[int, Any] | None]) -> None:
        stamps = [c[0] if c is not None else None for c in members]
        payloads = [c[1] if c is not None else None for c in members]
        mask = np.array([c is not None for c in members], dtype=bool)
        present = [s for s in stamps if s is not None]
        self._out.append(Bundle(max(present), stamps, payloads, mask))
        n = len(present)
        self._stats["bundles_full" if n == self.num_streams else "bundles_partial"] += 1
        self._stats["bundled_messages"] += n

    # ------------------------------------------------------------------ policy "pivot"
    def _pv_add(self, i: int, stamp: int, payload: Any) -> None:
        q = self._q[i]
        q.append((stamp, payload))
        if self._active[i]:
            if len(q) == 1:
                self._n_nonempty += 1
                if self._n_nonempty == len(self._active_idx):
                    self._process()
            elif self._pivot is not None and self._n_nonempty < len(self._active_idx):
                # A stalled optimality proof may succeed with this message (C++ only retries when an empty queue
                # fills, which made its output depend on the arrival interleaving in rare cases).
                self._virtual_search(len(self._active_idx))
                if self._pivot is None:
                    self._process()
        past = self._past[i]
        if len(q) + len(past) > self.queue_size:
            had_pivot = self._pivot is not None
            self._recover_all()
            q.popleft()  # the oldest message of the offending stream (C++ drops the same one)
            if not q and self._active[i]:
                self._n_nonempty -= 1
            self._drop(i, "dropped_too_few_streams" if len(self._active_idx) < self.min_streams
                       else "dropped_queue_overflow")
            self._has_dropped[i] = True
            if had_pivot:
                self._pivot = None
                self._candidate = []
                self._process()

    def _finish_candidates(self) -> None:
        """Treat the queued messages as all there will be: a pending candidate is then optimal (every better one
        needs a message that will not come), so publish it and continue with what is left."""
        while self._pivot is not None:
            self._publish()
            self._process()

    def _pv_set_active(self, j: int, on: bool) -> None:
        """Change the active set: cancel any candidate search and restart it over the new set.

        A stream going silent ends its data, so a pending candidate containing its message is first published
        (as at end of data); otherwise that frame would be lost to the timeout.
        """
        if not on:
            self._finish_candidates()
        had_pivot = self._pivot is not None
        self._recover_all()
        self._pivot = None
        self._candidate = []
        self._active[j] = on
        if not on:
            k = len(self._q[j])
            if k:
                self._drop(j, "dropped_stream_timeout", k)
                self._q[j].clear()
        self._active_idx = [k for k in range(self.num_streams) if self._active[k]]
        self._n_nonempty = sum(1 for k in self._active_idx if self._q[k])
        if had_pivot or not on:
            self._process()

    def _recover_all(self) -> None:
        """Undo the candidate search: messages moved to ``past`` go back to the front of their queues."""
        for k in range(self.num_streams):
            p = self._past[k]
            if p:
                self._q[k].extendleft(reversed(p))
                p.clear()
        self._n_nonempty = sum(1 for k in self._active_idx if self._q[k])

    def _bounds(self) -> tuple[int, int, int, int]:
        """(start stream, start time, end stream, end time) over the active queues' fronts (C++ tie-breaks:
        start = first stream with the minimum, end = last stream with the maximum)."""
        qs = self._q
        it = iter(self._active_idx)
        si = ei = next(it)
        st = et = qs[si][0][0]
        for k in it:
            t = qs[k][0][0]
            if t < st:
                si, st = k, t
            if t >= et:
                ei, et = k, t
        return si, st, ei, et

    def _virtual_bounds(self) -> tuple[int, int, int, int]:
        """Like :meth:`_bounds`, with an empty queue's time = the earliest its next message could have
        (its last message moved to past plus the stream's inter-message lower bound — 0 with ``publish="optimal"``
        — but no earlier than the pivot)."""
        qs, past, pt, lb = self._q, self._past, self._pivot_time, self._lb
        si = ei = -1
        st = et = 0
        for k in self._active_idx:
            q = qs[k]
            if q:
                t = q[0][0]
            else:
                t = past[k][-1][0] + lb[k]  # the earliest its next message can have (C++ inter-message bound)
                if t < pt:
                    t = pt
            if si < 0 or t < st:
                si, st = k, t
            if ei < 0 or t >= et:
                ei, et = k, t
        return si, st, ei, et

    def _delete_front(self, k: int) -> None:
        q = self._q[k]
        q.popleft()
        self._drop(k, "dropped_unmatched")
        if not q:
            self._n_nonempty -= 1

    def _move_front_to_past(self, k: int) -> None:
        q = self._q[k]
        self._past[k].append(q.popleft())
        if not q:
            self._n_nonempty -= 1

    def _make_candidate(self) -> None:
        qs = self._q
        self._candidate = [qs[k][0] if self._active[k] else None for k in range(self.num_streams)]
        for k in range(self.num_streams):
            p = self._past[k]
            if p:
                self._drop(k, "dropped_unmatched", len(p))
                p.clear()

    def _publish(self) -> None:
        cand = self._candidate
        self._emit(cand)
        self._pivot = None
        self._candidate = []
        for k in self._active_idx:
            p, q = self._past[k], self._q[k]
            if p:
                q.extendleft(reversed(p))
                p.clear()
            q.popleft()  # the candidate's message: the oldest one left on this stream
        self._n_nonempty = sum(1 for k in self._active_idx if self._q[k])

    def _process(self) -> None:
        """The C++ ``process()``: advance the candidate search while every active stream has a message."""
        active = self._active_idx
        n = len(active)
        if n < self.min_streams:
            return
        age = self._age
        max_iv = self.max_interval_ns
        while self._n_nonempty == n:
            si, st, ei, et = self._bounds()
            hd = self._has_dropped
            for k in active:
                if k != ei:
                    hd[k] = False
            if self._pivot is None:
                if et - st > max_iv or hd[ei]:
                    # Too spread to be a set, or the would-be pivot lost messages: the earliest can never match.
                    self._delete_front(si)
                    continue
                self._make_candidate()
                self._cand_start, self._cand_end = st, et
                self._pivot, self._pivot_time = ei, et
                self._move_front_to_past(si)
            else:
                if (et - self._cand_end) * age >= st - self._cand_start:
                    self._move_front_to_past(si)  # not better
                else:
                    self._make_candidate()
                    self._cand_start, self._cand_end = st, et
                    self._move_front_to_past(si)
            if si == self._pivot:
                self._publish()  # all candidates containing the pivot were examined
            elif (et - self._cand_end) * age >= self._pivot_time - self._cand_start:
                self._publish()  # any later candidate contains [pivot_time, end_time]: already too wide
            elif self._n_nonempty < n:
                self._virtual_search(n)

    def _virtual_search(self, n: int) -> None:
        """Try to prove the candidate optimal with optimistic times for the empty queues (C++ virtual moves)."""
        moves: list[int] = []
        age = self._age
        while True:
            si, st, ei, et = self._virtual_bounds()
            if (et - self._cand_end) * age >= self._pivot_time - self._cand_start:
                self._publish()  # proved optimal (publish recovers the virtual moves too)
                return
            if (et - self._cand_end) * age < st - self._cand_start:
                # An optimistic future candidate would be better: undo the virtual moves and wait for data.
                for k in reversed(moves):
                    self._q[k].appendleft(self._past[k].pop())
                self._n_nonempty = sum(1 for k in self._active_idx if self._q[k])
                return
            self._move_front_to_past(si)
            moves.append(si)
