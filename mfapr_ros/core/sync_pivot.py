"""Policy ``pivot`` of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: the port of the C++
``message_filters`` ApproximateTime *pivot* algorithm (``sync_policies/approximate_time.h``), see the
:mod:`mfapr_ros.core.sync` docstring for its semantics.

A part of its own (an object with its own state, not a mixin of the host) so a reader sees which fields the C++
port touches and which it shares with the host; the algorithm is unchanged.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class PivotPolicy:
    """Policy ``pivot`` of an :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer` (its host ``h``): the
    candidate search over per-stream queues (C++ ``add``/``process``/virtual moves, ``has_dropped_messages``,
    ``age_penalty``).

    State it owns (every attribute of this object; the names mirror the C++ members): the queues ``q``, the
    messages the search moved to ``past``, ``has_dropped``, the candidate and its pivot, reset by :meth:`clear`.
    What it reads of the host: the stream activity (``_active``, ``_active_idx``, which :meth:`set_active` and
    :meth:`end_of_data` also write), the learned inter-message lower bounds (``_lb``) and the settings
    (``num_streams``, ``queue_size``, ``max_interval_ns``, ``min_streams``, ``partial``); it reports through the
    host's ``_drop``/``_emit``. The ``frames`` policy falls back to this one at run time (:meth:`add`). Methods run
    under the host's lock only.
    """

    def __init__(self, host: Any, age_penalty: float = 0.0) -> None:
        self.h = host  # the ApproximateTimeSynchronizer (not imported: sync.py imports this module)
        # Integer arithmetic when there is no penalty, so comparisons of ns stamps stay exact.
        self.age: float | int = 1 + age_penalty if age_penalty else 1
        self.clear()

    def clear(self) -> None:
        """Forget every held message and the candidate (a reset or a jump back)."""
        n = self.h.num_streams
        self.q: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self.past: list[list[tuple[int, Any]]] = [[] for _ in range(n)]
        self.has_dropped = [False] * n
        self.n_nonempty = 0  # active streams with a non-empty queue
        self.pivot: int | None = None
        self.pivot_time = 0
        self.cand_start = 0
        self.cand_end = 0
        self.candidate: list[tuple[int, Any] | None] = []

    def pending(self) -> int:
        return sum(len(q) for q in self.q) + sum(len(p) for p in self.past)

    def drop_all(self, cause: str) -> None:
        h = self.h
        for i in range(h.num_streams):
            k = len(self.q[i]) + len(self.past[i])
            if k:
                h._drop(i, cause, k)

    def add(self, i: int, stamp: int, payload: Any) -> None:
        h = self.h
        q = self.q[i]
        q.append((stamp, payload))
        if h._active[i]:
            if len(q) == 1:
                self.n_nonempty += 1
                if self.n_nonempty == len(h._active_idx):
                    self._process()
            elif self.pivot is not None and self.n_nonempty < len(h._active_idx):
                # A stalled optimality proof may succeed with this message (C++ only retries when an empty queue
                # fills, which made its output depend on the arrival interleaving in rare cases).
                self._virtual_search(len(h._active_idx))
                if self.pivot is None:
                    self._process()
        past = self.past[i]
        if len(q) + len(past) > h.queue_size:
            had_pivot = self.pivot is not None
            self._recover_all()
            q.popleft()  # the oldest message of the offending stream (C++ drops the same one)
            if not q and h._active[i]:
                self.n_nonempty -= 1
            h._drop(i, "dropped_too_few_streams" if len(h._active_idx) < h.min_streams
                    else "dropped_queue_overflow")
            self.has_dropped[i] = True
            if had_pivot:
                self.pivot = None
                self.candidate = []
                self._process()

    def finish_candidates(self) -> None:
        """Treat the queued messages as all there will be: a pending candidate is then optimal (every better one
        needs a message that will not come), so publish it and continue with what is left."""
        while self.pivot is not None:
            self._publish()
            self._process()

    def end_of_data(self, leftover: str = "dropped_unmatched") -> None:
        """No more messages: publish the pending candidate; in partial mode treat streams with nothing held as
        absent and bundle what the others hold (repeatedly); count whatever is left as ``leftover``, so
        nothing stays pending. The active set is restored afterwards (a later message resumes normally)."""
        h = self.h
        self.finish_candidates()
        saved = list(h._active)
        while h.partial:
            empty = [k for k in h._active_idx if not self.q[k] and not self.past[k]]
            if not empty or len(h._active_idx) - len(empty) < h.min_streams:
                break
            for k in empty:
                self.set_active(k, False)
            self.finish_candidates()
        self._recover_all()
        self.pivot = None
        self.candidate = []
        for k in range(h.num_streams):
            if self.q[k]:
                h._drop(k, leftover, len(self.q[k]))
                self.q[k].clear()
        h._active = saved
        h._active_idx = [k for k in range(h.num_streams) if saved[k]]
        self.n_nonempty = 0

    def set_active(self, j: int, on: bool) -> None:
        """Change the active set: cancel any candidate search and restart it over the new set.

        A stream going silent ends its data, so a pending candidate containing its message is first published
        (as at end of data); otherwise that frame would be lost to the timeout.
        """
        h = self.h
        if not on:
            self.finish_candidates()
        had_pivot = self.pivot is not None
        self._recover_all()
        self.pivot = None
        self.candidate = []
        h._active[j] = on
        if not on:
            k = len(self.q[j])
            if k:
                h._drop(j, "dropped_stream_timeout", k)
                self.q[j].clear()
        h._active_idx = [k for k in range(h.num_streams) if h._active[k]]
        self.n_nonempty = sum(1 for k in h._active_idx if self.q[k])
        if had_pivot or not on:
            self._process()

    def _recover_all(self) -> None:
        """Undo the candidate search: messages moved to ``past`` go back to the front of their queues."""
        h = self.h
        for k in range(h.num_streams):
            p = self.past[k]
            if p:
                self.q[k].extendleft(reversed(p))
                p.clear()
        self.n_nonempty = sum(1 for k in h._active_idx if self.q[k])

    def _bounds(self) -> tuple[int, int, int, int]:
        """(start stream, start time, end stream, end time) over the active queues' fronts (C++ tie-breaks:
        start = first stream with the minimum, end = last stream with the maximum)."""
        qs = self.q
        it = iter(self.h._active_idx)
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
        h = self.h
        qs, past, pt, lb = self.q, self.past, self.pivot_time, h._lb
        si = ei = -1
        st = et = 0
        for k in h._active_idx:
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
        q = self.q[k]
        q.popleft()
        self.h._drop(k, "dropped_unmatched")
        if not q:
            self.n_nonempty -= 1

    def _move_front_to_past(self, k: int) -> None:
        q = self.q[k]
        self.past[k].append(q.popleft())
        if not q:
            self.n_nonempty -= 1

    def _make_candidate(self) -> None:
        h = self.h
        qs = self.q
        self.candidate = [qs[k][0] if h._active[k] else None for k in range(h.num_streams)]
        for k in range(h.num_streams):
            p = self.past[k]
            if p:
                h._drop(k, "dropped_unmatched", len(p))
                p.clear()

    def _publish(self) -> None:
        h = self.h
        cand = self.candidate
        h._emit(cand)
        self.pivot = None
        self.candidate = []
        for k in h._active_idx:
            p, q = self.past[k], self.q[k]
            if p:
                q.extendleft(reversed(p))
                p.clear()
            q.popleft()  # the candidate's message: the oldest one left on this stream
        self.n_nonempty = sum(1 for k in h._active_idx if self.q[k])

    def _process(self) -> None:
        """The C++ ``process()``: advance the candidate search while every active stream has a message."""
        h = self.h
        active = h._active_idx
        n = len(active)
        if n < h.min_streams:
            return
        age = self.age
        max_iv = h.max_interval_ns
        while self.n_nonempty == n:
            si, st, ei, et = self._bounds()
            hd = self.has_dropped
            for k in active:
                if k != ei:
                    hd[k] = False
            if self.pivot is None:
                if et - st > max_iv or hd[ei]:
                    # Too spread to be a set, or the would-be pivot lost messages: the earliest can never match.
                    self._delete_front(si)
                    continue
                self._make_candidate()
                self.cand_start, self.cand_end = st, et
                self.pivot, self.pivot_time = ei, et
                self._move_front_to_past(si)
            else:
                if (et - self.cand_end) * age >= st - self.cand_start:
                    self._move_front_to_past(si)  # not better
                else:
                    self._make_candidate()
                    self.cand_start, self.cand_end = st, et
                    self._move_front_to_past(si)
            if si == self.pivot:
                self._publish()  # all candidates containing the pivot were examined
            elif (et - self.cand_end) * age >= self.pivot_time - self.cand_start:
                self._publish()  # any later candidate contains [pivot_time, end_time]: already too wide
            elif self.n_nonempty < n:
                self._virtual_search(n)

    def _virtual_search(self, n: int) -> None:
        """Try to prove the candidate optimal with optimistic times for the empty queues (C++ virtual moves)."""
        moves: list[int] = []
        age = self.age
        while True:
            si, st, ei, et = self._virtual_bounds()
            if (et - self.cand_end) * age >= self.pivot_time - self.cand_start:
                self._publish()  # proved optimal (publish recovers the virtual moves too)
                return
            if (et - self.cand_end) * age < st - self.cand_start:
                # An optimistic future candidate would be better: undo the virtual moves and wait for data.
                for k in reversed(moves):
                    self.q[k].appendleft(self.past[k].pop())
                self.n_nonempty = sum(1 for k in self.h._active_idx if self.q[k])
                return
            self._move_front_to_past(si)
            moves.append(si)
