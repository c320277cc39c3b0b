"""N-stream approximate-time synchronizer (ROS-free), shared by the node, the bag evaluator and the dataset readers.

Why not ``message_filters``: its C++ ``ApproximateTime`` policy takes at most 9 inputs and cannot be called from
Python; its Python ``ApproximateTimeSynchronizer`` searches the product of all queues greedily (exponential in the
number of topics) and runs user callbacks under its lock. This module is a port of the C++ *pivot* algorithm to
any number of streams (16+): O(N · queue) work per step, no product search, outputs returned to the caller (no
callbacks, nothing user-defined runs under the lock).

Semantics kept from the C++ policy (``message_filters/sync_policies/approximate_time.h``):

* each message is used in at most one bundle; bundles do not cross (per stream, bundle k's message is older than
  bundle k+1's); all messages older than a published bundle's message on its stream are dropped;
* a bundle is the *minimum-span* set containing the pivot message (the first message that can close a set whose
  span is ≤ ``max_interval_ns``), published as soon as it is provably optimal — it never waits for more data than
  needed (the virtual-candidate search with the default inter-message lower bound 0);
* output depends only on the stamps, not on the interleaving of the streams' arrivals, as long as no queue
  overflows (``queue_size`` = max messages kept per stream, as in C++, candidate search included);
* on overflow the oldest message of the offending stream is dropped and that stream may not be pivot until the
  candidate search has moved past it (``has_dropped_messages``), exactly as in C++; ``age_penalty`` as in C++.

Deviations from ``message_filters`` (all deliberate, each counted in :attr:`ApproximateTimeSynchronizer.stats`):

* **Per-stream order is enforced.** C++ assumes each topic arrives in stamp order and silently corrupts its queue
  otherwise. Here a message older than the last accepted one on its stream is dropped (``dropped_out_of_order``),
  an exact repeat of the last stamp is dropped (``duplicates``). The output then equals the output on the
  in-order subsequence (tested).
* **Time jumps backwards** (bag loop, sim-time restart) by more than ``time_jump_ns`` relative to the same
  stream's previous stamp reset the synchronizer with a log line (``time_jumps``; pending messages →
  ``dropped_time_jump``); a stream that only lags the others is not a jump. Messages still in flight from the
  old epoch (stamps near the old latest) are dropped as ``dropped_stale_after_jump`` until
  the new epoch's time catches up, so a straggler does not trigger a second reset. C++ has no such handling.
* **Partial bundles** (``min_streams < num_streams``): a stream whose latest stamp is older than the latest stamp
  seen on any stream by more than ``stream_timeout_ns`` (message time, so bag replay is deterministic) becomes
  *inactive*: its queue is flushed (``dropped_stream_timeout``) and the pivot algorithm runs over the active
  streams only; bundles carry ``None`` and ``mask[i] = False`` for inactive streams. With fewer than
  ``min_streams`` active streams nothing is published (overflow then counts as ``dropped_too_few_streams``). A
  message on an inactive stream reactivates it (``stream_rejoins``) unless it is itself older than the timeout
  horizon (``dropped_late``). Every change of the active set cancels the candidate search and restarts it from the
  queues (the C++ overflow path does the same), so a pending candidate may be lost at a rejoin. Which stream is
  declared silent depends on what the other streams have delivered so far, hence partial-mode output depends on
  arrival order near a timeout (full-bundle mode does not).
* ``flush()`` publishes the pending candidate at end of data (bag evaluation); C++ never publishes it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .log_sink import warn

_LOG = logging.getLogger(__name__)

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
    "dropped_time_jump",
    "dropped_stale_after_jump",
    "dropped_reset",
    "dropped_bad_stream",
    "time_jumps",
    "stream_timeouts",
    "stream_rejoins",
)

#: Counters that are message drops (their sum + bundled + pending == received + bad-stream calls).
DROP_KEYS = tuple(k for k in STAT_KEYS if k.startswith("dropped_") or k == "duplicates")


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


class ApproximateTimeSynchronizer:
    """Approximate-time policy over ``num_streams`` streams; see the module docstring for the exact semantics.

    Args:
        num_streams: number of input streams (cameras), ≥ 1.
        queue_size: messages kept per stream (C++ ``queue_size``); older ones are dropped as overflow.
        max_interval_ns: largest allowed spread (latest − earliest stamp) of a bundle (C++ ``max_interval``, the
            Python ``slop``). Default 20 ms: less than a frame at 30 Hz so consecutive frames cannot pair.
        min_streams: smallest number of present streams for a partial bundle; ``None`` → ``num_streams`` (full
            bundles only, exactly the C++ policy).
        stream_timeout_ns: message-time silence after which a stream stops blocking (partial mode only); default
            500 ms. Must be ≥ ``max_interval_ns`` in partial mode (unused in full-bundle mode).
        logger: a ``logging.Logger`` or a callable taking one string (the node passes its ROS logger's ``warn``);
            default: this module's logger.
        age_penalty: C++ ``age_penalty`` (≥ 0): favours publishing earlier sets sooner.
        time_jump_ns: a stamp this much older than the latest stamp seen is a time jump (bag loop) → reset.
    """

    def __init__(self, num_streams: int, queue_size: int = 10, max_interval_ns: int = 20_000_000,
                 min_streams: int | None = None, stream_timeout_ns: int | None = None,
                 logger: Logger | None = None, age_penalty: float = 0.0,
                 time_jump_ns: int = 1_000_000_000) -> None:
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
        self.num_streams = num_streams
        self.queue_size = queue_size
        self.max_interval_ns = max_interval_ns
        self.min_streams = min_streams
        self.partial = min_streams < num_streams
        self.stream_timeout_ns = stream_timeout_ns
        self.time_jump_ns = time_jump_ns
        # Integer arithmetic when there is no penalty, so comparisons of ns stamps stay exact.
        self._age: float | int = 1 + age_penalty if age_penalty else 1
        self._logger = logger
        self._lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._stream_stats: list[dict[str, int]] = [
            {"received": 0, "bundled": 0, "dropped": 0} for _ in range(num_streams)]
        self._stale_floor: int | None = None
        self._clear()

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (cumulative across resets)."""
        with self._lock:
            return dict(self._stats)

    @property
    def stream_stats(self) -> list[dict[str, int]]:
        """Per stream: ``received``, ``bundled``, ``dropped`` (copies)."""
        with self._lock:
            return [dict(s) for s in self._stream_stats]

    @property
    def active(self) -> list[bool]:
        """Which streams currently block (all of them in full-bundle mode)."""
        with self._lock:
            return list(self._active)

    @property
    def pending(self) -> int:
        """Messages held (queued or inside the candidate search)."""
        with self._lock:
            return sum(len(q) for q in self._q) + sum(len(p) for p in self._past)

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
        """End of data: publish what the queued messages can still form (the pending candidate, then any sets
        that follow from what is left). Used by the bag evaluator at the end of a bag; live nodes never call it."""
        with self._lock:
            self._out = []
            self._finish_candidates()
            return self._out

    def reset(self) -> None:
        """Forget all queued messages (counted as ``dropped_reset``); counters are kept."""
        with self._lock:
            self._drop_all("dropped_reset")
            self._clear()
            self._stale_floor = None

    # ------------------------------------------------------------------ internals
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

    def _log(self, msg: str) -> None:
        warn(self._logger, _LOG, msg)

    def _drop(self, stream: int, cause: str, count: int = 1) -> None:
        self._stats[cause] += count
        self._stream_stats[stream]["dropped"] += count

    def _drop_all(self, cause: str) -> None:
        for i in range(self.num_streams):
            k = len(self._q[i]) + len(self._past[i])
            if k:
                self._drop(i, cause, k)

    def _add(self, i: int, stamp: int, payload: Any) -> None:
        self._stats["received"] += 1
        self._stream_stats[i]["received"] += 1
        now = self._now
        last = self._last[i]
        # A jump is a stream going back on *itself* (bag loop, sim-time restart). A stream that merely lags the
        # others (a starved callback, a slow link) is not one: comparing with the global latest stamp would reset
        # the synchronizer and then drop every other stream's messages as stale.
        if now is not None and last is not None and stamp < last - self.time_jump_ns:
            self._jump(i, stamp, now)
            now = None
        elif self._stale_floor is not None and now is not None:
            if now >= self._stale_floor:
                self._stale_floor = None  # the new epoch has caught up; stragglers are long gone
            elif stamp > now + self.time_jump_ns:
                self._drop(i, "dropped_stale_after_jump")  # in flight from before the jump back
                return
        last = self._last[i]
        if last is not None and stamp <= last:
            if stamp < last:
                self._ooo_run[i] += 1
                if self._ooo_run[i] > self.queue_size:
                    # A whole queue's worth in a row went back in time: a loop shorter than time_jump_ns.
                    self._jump(i, stamp, self._now if self._now is not None else last)
                    return self._add_accepted(i, stamp, payload)
            self._drop(i, "duplicates" if stamp == last else "dropped_out_of_order")
            return None
        self._ooo_run[i] = 0
        return self._add_accepted(i, stamp, payload)

    def _jump(self, i: int, stamp: int, latest: int) -> None:
        """Time went backwards (bag loop): log, count, forget everything queued."""
        self._log(f"sync: time jumped back by {(latest - stamp) / 1e9:.3f} s on stream {i} "
                  f"({latest} → {stamp} ns; bag loop or clock reset): resetting the synchronizer")
        self._stats["time_jumps"] += 1
        self._drop_all("dropped_time_jump")
        self._clear()
        self._stale_floor = latest - self.time_jump_ns

    def _add_accepted(self, i: int, stamp: int, payload: Any) -> None:
        st = self._stats
        now = self._now
        if now is None or stamp > now:
            self._now = now = stamp
        if self._t0 is None:
            self._t0 = stamp
        if self.partial:
            if not self._active[i]:
                if stamp < now - self.stream_timeout_ns:
                    self._last[i] = stamp
                    self._drop(i, "dropped_late")
                    return
                st["stream_rejoins"] += 1
                self._log(f"sync: stream {i} speaks again (stamp {stamp} ns); it rejoins the bundles")
                self._last[i] = stamp
                self._set_active(i, True)
            else:
                self._last[i] = stamp
            self._check_timeouts(now)
        else:
            self._last[i] = stamp
        q = self._q[i]
        q.append((stamp, payload))
        if self._active[i]:
            if len(q) == 1:
                self._n_nonempty += 1
                if self._n_nonempty == len(self._active_idx):
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

    def _check_timeouts(self, now: int) -> None:
        horizon = now - self.stream_timeout_ns
        t0 = self._t0 if self._t0 is not None else now
        for j in self._active_idx:
            last = self._last[j]
            if (last if last is not None else t0) < horizon:
                self._stats["stream_timeouts"] += 1
                self._log(f"sync: stream {j} silent for more than {self.stream_timeout_ns / 1e9:.3f} s of message "
                          f"time; publishing bundles without it")
                self._set_active(j, False)
                return self._check_timeouts(now)  # the active list changed; rescan (at most N times)
        return None

    def _finish_candidates(self) -> None:
        """Treat the queued messages as all there will be: a pending candidate is then optimal (every better one
        needs a message that will not come), so publish it and continue with what is left."""
        while self._pivot is not None:
            self._publish()
            self._process()

    def _set_active(self, j: int, on: bool) -> None:
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
        (its last message moved to past, but no earlier than the pivot; inter-message lower bound 0)."""
        qs, past, pt = self._q, self._past, self._pivot_time
        si = ei = -1
        st = et = 0
        for k in self._active_idx:
            q = qs[k]
            if q:
                t = q[0][0]
            else:
                t = past[k][-1][0]
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
        stamps = [c[0] if c is not None else None for c in cand]
        payloads = [c[1] if c is not None else None for c in cand]
        mask = np.array([c is not None for c in cand], dtype=bool)
        present = [s for s in stamps if s is not None]
        self._out.append(Bundle(max(present), stamps, payloads, mask))
        n = len(present)
        self._stats["bundles_full" if n == self.num_streams else "bundles_partial"] += 1
        self._stats["bundled_messages"] += n
        self._pivot = None
        self._candidate = []
        for k in self._active_idx:
            p, q = self._past[k], self._q[k]
            if p:
                q.extendleft(reversed(p))
                p.clear()
            q.popleft()  # the candidate's message: the oldest one left on this stream
            self._stream_stats[k]["bundled"] += 1
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
