"""N-stream approximate-time synchronizer (ROS-free), shared by the node, the bag evaluator and the dataset readers.

Why not ``message_filters``: its C++ ``ApproximateTime`` policy takes at most 9 inputs and cannot be called from
Python; its Python ``ApproximateTimeSynchronizer`` searches the product of all queues greedily (exponential in the
number of topics) and runs user callbacks under its lock. This module has two assignment policies behind one
front end, both O(N) per frame for any number of streams (16+), outputs returned to the caller (no callbacks,
nothing user-defined runs under the lock). One settings object, :class:`SyncSettings`, configures it for the node
(``sync.*`` parameters), ``eval-bag`` and training (``data.sync``), so the three bundle identically.

**Policy ``frames``** (default) — head alignment with learned per-camera offsets (details and the why in
:mod:`~.sync_frames`). Cameras deliver one message per frame, each topic in capture order, so every stream keeps a
FIFO queue and a frame is formed from the queue heads as soon as every active stream has one: published when its
last member arrives (no added delay). Each head is placed against a frame clock (an exponentially weighted
least-squares line through the formed frames) in offset-corrected time; a head beyond the decision boundary — where
a Student-t (3 dof) likelihood of "its camera dropped this frame" times the learned skip rate beats "this frame
with jitter" — waits for a later frame; a queued successor decides whether a head is a leftover of the previous
frame (one-message lookahead); a frame whose raw stamps span more than ``max_interval_ns`` is dropped (full mode)
or trimmed (partial mode). Why the default: ``bench/sync.py`` (per-camera offsets up to ±P/2, Gaussian, uniform and
Student-t jitter, drops, shared trigger, loose stamps) — ≥ 97 % of the oracle in every regime with p50 = p99 = 0 ms
delay, where the minimum-span search mixes frames (phone rig 81 of 175) and waits up to a frame. Streams at
different frame rates (> 1.3x apart) have no common frame: the policy falls back to ``pivot`` with a log line.

**Policy ``pivot``** — a port of the C++ *pivot* algorithm (``message_filters/sync_policies/approximate_time.h``),
kept as the fallback for cameras at different rates:

* each message is used in at most one bundle; bundles do not cross (per stream, bundle k's message is older than
  bundle k+1's); all messages older than a published bundle's message on its stream are dropped;
* a bundle is the *minimum-span* set containing the pivot message (the first message that can close a set whose
  span is ≤ ``max_interval_ns``);
* ``publish="arrival"`` (default): each stream's *inter-message lower bound* (C++ ``setInterMessageLowerBound``) is
  learned from its observed stamps (half the smallest of its last 8 gaps), so a complete bundle is proved optimal
  when its last member arrives instead of one frame later. ``publish="optimal"`` keeps the bound 0: exactly the C++
  default, which waits for a later message on every stream (tested against an exhaustive reference);
* on overflow the oldest message of the offending stream is dropped and that stream may not be pivot until the
  candidate search has moved past it (``has_dropped_messages``), exactly as in C++; ``age_penalty`` as in C++.

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

Layout: this module holds :class:`SyncSettings` (``make()``) and the :class:`ApproximateTimeSynchronizer` front end
(public API, per-stream state, periods, timeouts); the settings' fields, :class:`Bundle` and the counters live in
``sync_types`` (read by modules that never build a synchronizer); the synchronizer's parts live in ``sync_guard``
(:class:`~.sync_guard.TimeGuard`: per-stream order, glitches, jumps), ``sync_pivot`` (:class:`~.sync_pivot.PivotPolicy`)
and ``sync_frames`` (:class:`~.sync_frames.FramesPolicy`): each an object owning its state, which the front end
holds (``_guard``, ``_pv``, ``_fr``) and which reads the stream state they share from it. Import everything from
``mfapr_ros.core.sync``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ConfigError
from .log_sink import warn
from .sync_frames import _RATE_MESSAGES, FramesPolicy
from .sync_guard import TimeGuard
from .sync_pivot import PivotPolicy
from .sync_types import DROP_KEYS, NS_PER_S, STAT_KEYS, Bundle, SyncSettingsBase, accounting_line

__all__ = ["DROP_KEYS", "NS_PER_S", "POLICIES", "PUBLISH_MODES", "STAT_KEYS", "ApproximateTimeSynchronizer", "Bundle",
           "SyncSettings", "accounting_line"]

_LOG = logging.getLogger(__name__)

POLICIES = ("pivot", "frames")
PUBLISH_MODES = ("arrival", "optimal")

_GAPS_KEPT = 8  # per-stream stamp gaps kept for the period / lower-bound estimates

Logger = logging.Logger | Callable[[str], Any]


class SyncSettings(SyncSettingsBase):
    """:class:`~.sync_types.SyncSettingsBase` (the fields, their validation and conversions) plus :meth:`make`."""

    def make(self, num_streams: int, logger: Logger | None = None) -> ApproximateTimeSynchronizer:
        """The synchronizer for ``num_streams`` streams: ``ApproximateTimeSynchronizer(num_streams, self)``."""
        return ApproximateTimeSynchronizer(num_streams, self, logger=logger)


class ApproximateTimeSynchronizer:
    """Approximate-time policy over ``num_streams`` streams; see the module docstring for the exact semantics.

    Args:
        num_streams: number of input streams (cameras), ≥ 1.
        settings: the one :class:`SyncSettings` (slop, queue size, minimum cameras, stream timeout, time jump),
            range-checked in its ``__post_init__`` and nowhere else; default: ``SyncSettings()`` (the node's
            defaults). Only its relation to ``num_streams`` (``min_cameras`` ≤ streams) is checked here, the one
            place that knows both. The synchronizer counts in integer nanoseconds: it keeps the settings'
            conversions as ``max_interval_ns`` (the slop; C++ ``max_interval``), ``stream_timeout_ns``,
            ``time_jump_ns``, ``min_streams`` (``min_cameras``, 0 → ``num_streams``: full bundles only, exactly the
            C++ policy) and ``queue_size`` (per stream; in the ``frames`` policy: frames kept open).
        logger: a ``logging.Logger`` or a callable taking one string (the node passes its ROS logger's ``warn``);
            default: this module's logger.
        policy: ``"frames"`` (head alignment; what :meth:`SyncSettings.make` builds for the node, eval-bag and
            training) or ``"pivot"`` (minimum-span sets, the C++ policy the reference tests check). Not a setting:
            ``pivot`` is strictly dominated (``bench/sync.py``), kept as the fallback and for those tests.
        publish: ``"arrival"`` (learned inter-message lower bounds) or ``"optimal"`` (C++ default, bound 0).
        age_penalty: C++ ``age_penalty`` (≥ 0): favours publishing earlier sets sooner (``pivot``).

    Three parts, each an object that owns its state (their docstrings list it, and what they read of this one):
    ``_guard`` (:class:`~.sync_guard.TimeGuard`: every message enters through its ``add``), ``_fr``
    (:class:`~.sync_frames.FramesPolicy`) and ``_pv`` (:class:`~.sync_pivot.PivotPolicy`, the C++ port); ``policy``
    says which of the two assigns bundles. This object keeps the public API, the settings, the counters, the state
    the parts share — per-stream stamp statistics (``_gaps``, ``_period``, ``_lb``, ``_timeout``, ``_fwd``,
    ``_nobs``), the current epoch's ``_last``, ``_prev_last``, ``_now``, ``_t0`` and the stream activity
    (``_active``, ``_active_idx``) — and the output (``_emit``). All public calls take ``_lock``; the parts' methods
    run only under it.
    """

    def __init__(self, num_streams: int, settings: SyncSettings | None = None, *, logger: Logger | None = None,
                 policy: str = "frames", publish: str = "arrival", age_penalty: float = 0.0) -> None:
        settings = SyncSettings() if settings is None else settings
        if not isinstance(settings, SyncSettingsBase):
            raise ConfigError(f"sync: settings must be a SyncSettings, got {type(settings).__name__}")
        if isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1:
            raise ConfigError(f"sync: num_streams must be a positive integer, got {num_streams!r}")
        if settings.min_cameras > num_streams:
            raise ConfigError(f"sync.min_cameras (eval-bag --min-cameras, training data.sync.min_cameras) = "
                              f"{settings.min_cameras} exceeds the {num_streams} camera(s) being bundled; use "
                              f"0..{num_streams} (0 = all)")
        if policy not in POLICIES:
            raise ConfigError(f"sync: policy must be one of {POLICIES}, got {policy!r}")
        if publish not in PUBLISH_MODES:
            raise ConfigError(f"sync: publish must be one of {PUBLISH_MODES}, got {publish!r}")
        if not age_penalty >= 0:
            raise ConfigError(f"sync: age_penalty must be ≥ 0, got {age_penalty!r}")
        self.settings = settings
        self.num_streams = num_streams
        self.queue_size = settings.queue_size
        self.max_interval_ns = settings.max_interval_ns
        self.min_streams = settings.min_cameras or num_streams
        self.partial = self.min_streams < num_streams
        self.stream_timeout_ns = stream_timeout_ns = settings.stream_timeout_ns
        self.stream_timeout_periods = settings.stream_timeout_periods
        self.time_jump_ns = settings.time_jump_ns
        self.policy = policy
        self.configured_policy = policy
        self.publish = publish
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
        self._full_mask = np.ones(n, dtype=bool)
        self._full_mask.flags.writeable = False  # shared by every full bundle
        # the bundles the current add()/flush() returns; not part of an epoch: a jump back (which clears the
        # epoch) first publishes what the old time could still form, and those bundles must reach the caller
        self._out: list[Bundle] = []
        self._guard = TimeGuard(self)
        self._fr = FramesPolicy(self)
        self._pv = PivotPolicy(self, age_penalty)
        self._clear()

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (cumulative across resets) plus ``pending`` (messages held now), so that
        ``received == bundled_messages + sum(DROP_KEYS) + pending`` can be checked from this one dict (eval-bag's
        report and the node's /diagnostics show it as is)."""
        with self._lock:
            out = dict(self._stats)
            out["pending"] = self._pending_count()
            return out

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
            self._out = []
            if not (isinstance(stream, int) and 0 <= stream < self.num_streams):
                self._stats["dropped_bad_stream"] += 1
                self._log(f"sync: message for stream {stream!r} ignored; streams are 0..{self.num_streams - 1}")
                return []
            stamp = stamp_ns if type(stamp_ns) is int else int(stamp_ns)
            guard = self._guard
            if self._fast_path and self.policy == "frames" and not guard.susp and guard.old_epoch is None:
                # The common case of _guard.add → _accept → _observe → _fr.add, inlined (see _fast_path)
                i = stream
                last = self._last[i]
                fwd = self._fwd[i]
                if last is not None and fwd and last < stamp <= self._now + fwd and (  # type: ignore[operator]
                        not self.partial or self._active[i]):
                    self._stats["received"] += 1
                    guard.ooo_run[i] = 0
                    self._prev_last[i] = last
                    g = self._gaps[i]
                    g.append(stamp - last)
                    n = self._nobs[i] = self._nobs[i] + 1
                    if not n % 8 or len(g) < _GAPS_KEPT:
                        self._refresh_period(i)
                    if stamp > self._now:  # type: ignore[operator]
                        self._now = stamp
                    self._last[i] = stamp
                    if self.partial:
                        self._check_timeouts(self._now)  # type: ignore[arg-type]
                        if not self._active[i]:  # its own stamp timed its stream out: see _accept
                            self._drop(i, "dropped_late")
                            return self._out
                    fr = self._fr
                    q = fr.q[i]
                    q.append((stamp, payload))
                    if len(q) == 1:
                        fr.ne += 1
                    if fr.cnt[i] < _RATE_MESSAGES and fr.rates_differ(i, stamp):
                        fr.fall_back()
                        return self._out
                    if fr.ne >= len(self._active_idx):
                        fr.step()
                    if len(q) > self.queue_size:
                        fr.overflow(i)
                    return self._out
            guard.add(stream, stamp, payload)
            return self._out

    #: Whether :meth:`add` inlines the common case of the ``frames`` policy (full bundles or an active stream, no
    #: suspects, no jump in flight, the stamp after its stream's last one and not far ahead). Why: Python calls
    #: dominate a per-message cost of a few µs (the issue asks for no more than message_filters' Python policy);
    #: the inlined path makes the same state changes as ``_guard.add`` → ``_accept`` → ``_observe`` → ``_fr.add``
    #: without four calls. Off only in the test that checks both give the same bundles and counters.
    _fast_path = True

    def flush(self) -> list[Bundle]:
        """End of data: publish what the held messages can still form (the pending candidate or open frames, then
        whatever follows from what is left). Used at the end of a bag; live nodes never call it."""
        with self._lock:
            self._out = []
            if self._guard.susp:  # no evidence either way will come: what the suspects say is all there is
                self._guard.confirm_jump()
            self._end_of_data()
            return self._out

    def reset(self) -> None:
        """Forget all held messages (counted as ``dropped_reset``); counters and stream periods are kept."""
        with self._lock:
            self._drop_all("dropped_reset")
            self._clear()
            self._guard.old_epoch = None

    # ------------------------------------------------------------------ state
    def _clear(self) -> None:
        """Start a new epoch (construction, reset, jump back): every stream active, no stamp seen, every part's
        held messages forgotten (what the parts learned about the cameras stays)."""
        n = self.num_streams
        self._active = [True] * n
        self._active_idx = list(range(n))
        self._last: list[int | None] = [None] * n
        self._prev_last: list[int | None] = [None] * n  # each stream's stamp before its last one
        self._now: int | None = None
        self._t0: int | None = None
        self._guard.clear()
        self._pv.clear()
        self._fr.clear()

    def _pending_count(self) -> int:
        return self._pv.pending() + self._guard.pending() + self._fr.pending()

    def _log(self, msg: str) -> None:
        warn(self._logger, _LOG, msg)

    def _drop(self, stream: int, cause: str, count: int = 1) -> None:
        self._stats[cause] += count

    def _drop_all(self, cause: str) -> None:
        self._pv.drop_all(cause)
        self._guard.drop_suspects(cause)
        self._fr.drop_all(cause)

    # ------------------------------------------------------------------ accepted messages
    def _observe(self, i: int, stamp: int) -> None:
        """Per-stream period (median gap) and inter-message lower bound (half the smallest gap) from the stamps."""
        last = self._last[i]
        if last is None or stamp <= last:
            return
        g = self._gaps[i]
        g.append(stamp - last)
        self._nobs[i] += 1
        if len(g) < _GAPS_KEPT or self._nobs[i] % 8 == 0:  # the estimates move slowly: refresh every 8th gap
            self._refresh_period(i)

    def _refresh_period(self, i: int) -> None:
        g = self._gaps[i]
        s = sorted(g)
        p = s[len(s) // 2]
        self._period[i] = p
        self._lb[i] = s[0] // 2 if (self.publish == "arrival" and len(g) >= 3) else 0
        self._timeout[i] = max(self.stream_timeout_ns, int(self.stream_timeout_periods * p))
        self._fwd[i] = max(self.time_jump_ns, 4 * p)

    def _accept(self, i: int, stamp: int, payload: Any) -> None:
        self._prev_last[i] = self._last[i]
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
            if not self._active[i]:
                # This message is itself older than its stream's timeout horizon (a camera's first message far
                # behind the others, a stream lagging by more than its timeout): the check above timed its stream
                # out, so it is late like a message on an inactive stream (was: queued on the inactive stream,
                # where the frames policy indexed the empty queue of an active one).
                self._drop(i, "dropped_late")
                return None
        else:
            self._last[i] = stamp
        if self.policy == "frames":
            return self._fr.add(i, stamp, payload)
        return self._pv.add(i, stamp, payload)

    def _pmax(self) -> int:
        """The largest known stream period (0 before any)."""
        return max((p for p in self._period if p is not None), default=0)

    def _check_timeouts(self, now: int) -> None:
        t0 = self._t0 if self._t0 is not None else now
        pmax = self._pmax()
        for j in self._active_idx:
            last = self._last[j]
            tmo = self._timeout[j]
            if self._period[j] is None and pmax:
                tmo = max(tmo, int(self.stream_timeout_periods * pmax))
            since = last if last is not None else t0
            if since < now - tmo and self._spoke_since(j, since):
                self._stats["stream_timeouts"] += 1
                self._log(f"sync: stream {j} silent for more than {tmo / 1e9:.3f} s of message time; publishing "
                          "bundles without it")
                self._set_active(j, False)
                return self._check_timeouts(now)  # the active list changed; rescan (at most N times)
        return None

    def _spoke_since(self, j: int, since: int) -> bool:
        """Whether another stream delivered a message more than a slop after ``since`` *before* its latest one.

        Why: after a silence of the whole rig (a pause, a gap in a bag), the first message back moves the
        message time past every stream's timeout, but the other cameras' messages of the same trigger are still
        in flight; only a stream that kept talking during ``j``'s silence (two messages since) proves ``j`` silent.
        """
        lim = since + self.max_interval_ns
        return any(k != j and p is not None and p > lim for k, p in enumerate(self._prev_last))

    def _end_of_data(self, leftover: str = "dropped_unmatched") -> None:
        """Treat the held messages as all there will be (``flush``, before a jump back)."""
        if self.policy == "frames":
            self._fr.end_of_data(leftover)
        else:
            self._pv.end_of_data(leftover)

    def _set_active(self, j: int, on: bool) -> None:
        if self.policy == "frames":
            return self._fr.set_active(j, on)
        return self._pv.set_active(j, on)

    # ------------------------------------------------------------------ output
    def _emit_full(self, stamps: list[int], payloads: list[Any]) -> None:
        """A bundle with every stream present (the common case; one shared read-only all-true mask)."""
        self._out.append(Bundle(max(stamps), stamps, payloads, self._full_mask))
        self._stats["bundles_full"] += 1
        self._stats["bundled_messages"] += self.num_streams

    def _emit(self, members: list[tuple[int, Any] | None]) -> None:
        stamps = [c[0] if c is not None else None for c in members]
        payloads = [c[1] if c is not None else None for c in members]
        mask = np.array([c is not None for c in members], dtype=bool)
        present = [s for s in stamps if s is not None]
        self._out.append(Bundle(max(present), stamps, payloads, mask))
        n = len(present)
        self._stats["bundles_full" if n == self.num_streams else "bundles_partial"] += 1
        self._stats["bundled_messages"] += n
