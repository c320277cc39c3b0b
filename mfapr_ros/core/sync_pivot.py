"""Policy ``pivot`` of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: the port of the C++
``message_filters`` ApproximateTime *pivot* algorithm (``sync_policies/approximate_time.h``), see the
:mod:`mfapr_ros.core.sync` docstring for its semantics.

Split out of ``sync.py`` so each part of the synchronizer stays readable on its own; the algorithm is unchanged.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class PivotPolicy:
    """Mixin of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: the candidate search over the per-stream
    queues (C++ ``add``/``process``/virtual moves, ``has_dropped_messages``, ``age_penalty``).

    Why a mixin and not a separate object: the method names and the state (``_q``, ``_past``, ``_pivot``,
    ``_candidate``...) mirror the C++ members one to one, and every step reads the host's active set and learned
    inter-message bounds (``_active_idx``, ``_lb``) and reports through its ``_drop``/``_emit``; one ``self`` keeps
    the per-message path free of an extra indirection. The ``frames`` policy also falls back to this one at run time
    (``_pv_add``, ``_finish_candidates``). The state is created by the host's ``_clear``.
    """

    _q: list[deque[tuple[int, Any]]]
    _past: list[list[tuple[int, Any]]]
    _has_dropped: list[bool]
    _active: list[bool]
    _active_idx: list[int]
    _n_nonempty: int
    _pivot: int | None
    _pivot_time: int
    _cand_start: int
    _cand_end: int
    _candidate: list[tuple[int, Any] | None]
    _lb: list[int]
    _age: float | int
    num_streams: int
    queue_size: int
    max_interval_ns: int
    min_streams: int

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

    def _pv_end_of_data(self, leftover: str = "dropped_unmatched") -> None:
        """No more messages: publish the pending candidate; in partial mode treat streams with nothing held as
        absent and bundle what the others hold (repeatedly); count whatever is left as ``leftover``, so
        nothing stays pending. The active set is restored afterwards (a later message resumes normally)."""
        self._finish_candidates()
        saved = list(self._active)
        while self.partial:
            empty = [k for k in self._active_idx if not self._q[k] and not self._past[k]]
            if not empty or len(self._active_idx) - len(empty) < self.min_streams:
                break
            for k in empty:
                self._pv_set_active(k, False)
            self._finish_candidates()
        self._recover_all()
        self._pivot = None
        self._candidate = []
        for k in range(self.num_streams):
            if self._q[k]:
                self._drop(k, leftover, len(self._q[k]))
                self._q[k].clear()
        self._active = saved
        self._active_idx = [k for k in range(self.num_streams) if saved[k]]
        self._n_nonempty = 0

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
