"""Front end of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: per-stream order and the glitch /
time-jump guard (the "Glitch-proof time" rules of the :mod:`mfapr_ros.core.sync` docstring).

Split out of ``sync.py`` so each part of the synchronizer stays readable on its own; the rules are unchanged.
"""

from __future__ import annotations

from typing import Any


class TimeGuard:
    """Mixin of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: every message enters through :meth:`_add`.

    It decides, per message, between accept (``_accept`` of the host), drop (out of order, duplicate, stale after a
    jump) and *suspect* (held until a second message confirms a jump or refutes a glitch).

    Why a mixin and not a separate object: the guard reads and resets the host's whole per-stream state (``_last``,
    ``_now``, the periods, and on a jump back the queues of both policies through ``_end_of_data``/``_drop_all``/
    ``_clear``) on every message; sharing one ``self`` keeps that hot path free of an extra attribute hop and keeps
    each rule in one place. State it owns: ``_susp`` (held suspects, arrival order), ``_susp_ref``, ``_susp_since``,
    ``_susp_contra``, ``_old_epoch``, ``_ooo_run``; everything else belongs to the host.
    """

    _susp: list[tuple[int, int, Any]]
    _susp_ref: int
    _susp_since: int | None
    _susp_contra: set[int]
    _old_epoch: int | None
    _ooo_run: list[int]
    _last: list[int | None]
    _now: int | None
    _fwd: list[int]
    _period: list[int | None]
    _stats: dict[str, int]
    time_jump_ns: int
    queue_size: int
    policy: str

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
            self._end_of_data("dropped_time_jump")  # what was complete before the jump still leaves
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
