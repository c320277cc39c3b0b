"""Front end of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: per-stream order and the glitch /
time-jump guard (the "Glitch-proof time" rules of the :mod:`mfapr_ros.core.sync` docstring).

A part of its own (an object with its own state, not a mixin of the host) so a reader sees which fields the rules
touch and which they share with the host; the rules are unchanged.
"""

from __future__ import annotations

from typing import Any


class TimeGuard:
    """The front end of an :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer` (its host ``h``): every message
    enters through :meth:`add`, which decides between accept (the host's ``_accept``), drop (out of order, duplicate,
    stale after a jump) and *suspect* (held until a second message confirms a jump or refutes a glitch).

    State it owns (every attribute of this object): the held suspects ``susp`` (arrival order) with ``susp_ref``,
    ``susp_since`` and ``susp_contra``, the per-stream run of backward steps ``ooo_run`` (reset by :meth:`clear`) and
    ``old_epoch``, the time before a jump back (kept across :meth:`clear`: stragglers of the old time are dropped
    until the new time catches up). What it reads of the host: each stream's last stamp (``_last``, which a re-timed
    stream clears), the message time ``_now``, the forward limits ``_fwd`` and ``time_jump_ns``, ``queue_size`` and
    ``policy``; on a confirmed jump back it makes the host end its data, drop and clear (``_end_of_data``,
    ``_drop_all``, ``_clear``). Methods run under the host's lock only.
    """

    def __init__(self, host: Any) -> None:
        self.h = host  # the ApproximateTimeSynchronizer (not imported: sync.py imports this module)
        self.old_epoch: int | None = None
        self.clear()

    def clear(self) -> None:
        """Forget the suspects and the backward runs (a reset or a jump back); ``old_epoch`` is the caller's."""
        self.susp: list[tuple[int, int, Any]] = []
        self.susp_ref = 0
        self.susp_since: int | None = None
        self.susp_contra: set[int] = set()
        self.ooo_run = [0] * self.h.num_streams

    def pending(self) -> int:
        return len(self.susp)

    def _forward_limit(self, i: int) -> int:
        f = self.h._fwd[i]
        if f:
            return f
        p = self.h._pmax()
        return max(self.h.time_jump_ns, 4 * p) if p else self.h.time_jump_ns

    def add(self, i: int, stamp: int, payload: Any) -> None:
        self.h._stats["received"] += 1
        now = self.h._now
        old = self.old_epoch
        if old is not None:
            if now is None or now >= old - self.h.time_jump_ns:
                self.old_epoch = None  # the new time has caught up; stragglers of the old one are long gone
            elif abs(stamp - old) < abs(stamp - now):
                self.h._drop(i, "dropped_stale_after_jump")  # in flight from before the jump back
                return None
        last = self.h._last[i]
        if (last is not None and stamp < last - self.h.time_jump_ns) or (
                now is not None and stamp > max(now, last if last is not None else now) + self._forward_limit(i)):
            return self._suspect(i, stamp, payload)
        if self.susp:
            self._normal_seen(i)
        if last is not None and stamp <= last:
            if stamp < last and self.h.policy == "frames" and self.ooo_run[i] < self.h.queue_size:
                # One topic is delivered in publish order, so its next message is its next frame even when jitter
                # put its stamp before the previous one: the frames policy labels by order and keeps it.
                self.ooo_run[i] += 1
                return self.h._accept(i, stamp, payload)
            if stamp < last:
                self.ooo_run[i] += 1
                if self.ooo_run[i] > self.h.queue_size:
                    # A whole queue's worth in a row went back in time: a loop shorter than time_jump_ns.
                    self.ooo_run[i] = 0
                    self.drop_suspects("dropped_glitch")
                    self.susp = [(i, stamp, payload)]
                    return self.confirm_jump()
            self.h._drop(i, "duplicates" if stamp == last else "dropped_out_of_order")
            return None
        self.ooo_run[i] = 0
        return self.h._accept(i, stamp, payload)

    def _suspect(self, i: int, stamp: int, payload: Any) -> None:
        """Hold a far-off stamp until evidence says whether it is a glitch or the new time."""
        if self.susp and abs(stamp - self.susp_ref) > self._forward_limit(i):
            self.drop_suspects("dropped_glitch")  # inconsistent with the held ones: they were glitches
        own = [s for k, s, _ in self.susp if k == i]
        if own and stamp <= own[-1]:
            self.h._drop(i, "duplicates" if stamp == own[-1] else "dropped_out_of_order")
            return None
        if not self.susp:
            self.susp_since = self.h._now
            self.susp_contra = set()
            self.susp_ref = stamp
        self.susp.append((i, stamp, payload))
        self.susp_ref = max(self.susp_ref, stamp)
        streams = {k for k, _, _ in self.susp}
        if len(streams) >= 2:
            return self.confirm_jump()
        if own:  # the same stream's next message agrees: one period of evidence
            if self.susp_contra - {i}:
                return self._retime_stream(i)
            return self.confirm_jump()
        return None

    def _normal_seen(self, i: int) -> None:
        """A message in the current time: it refutes its own stream's suspects; others' expire after a while."""
        if any(k == i for k, _, _ in self.susp):
            keep = []
            for k, s, p in self.susp:
                if k == i:
                    self.h._drop(k, "dropped_glitch")
                else:
                    keep.append((k, s, p))
            self.susp = keep
        else:
            self.susp_contra.add(i)
        now, since = self.h._now, self.susp_since
        if self.susp and now is not None and since is not None and now - since > self.h.time_jump_ns:
            self.drop_suspects("dropped_glitch")

    def drop_suspects(self, cause: str) -> None:
        for k, _, _ in self.susp:
            self.h._drop(k, cause)
        self.susp = []

    def _retime_stream(self, i: int) -> None:
        """Stream ``i``'s clock moved while the others go on: accept its new time for it alone."""
        self.h._stats["stream_clock_jumps"] += 1
        held = [(s, p) for k, s, p in self.susp if k == i]
        self.susp = [(k, s, p) for k, s, p in self.susp if k != i]
        self.h._log(f"sync: stream {i} jumped to {held[0][0]} ns while the other streams stay near {self.h._now} ns "
                    "(its clock moved); re-timing that stream only")
        self.h._last[i] = None
        self.ooo_run[i] = 0
        self.h._fr.forget_stream(i)
        for s, p in held:
            self.h._accept(i, s, p)

    def confirm_jump(self) -> None:
        """The suspects are the new time: a jump back resets (keeping them), a jump forward is accepted."""
        held = sorted(self.susp, key=lambda m: m[1])
        self.susp = []
        now = self.h._now
        if now is not None and held[0][1] < now:
            self.h._log(f"sync: time jumped back by {(now - held[0][1]) / 1e9:.3f} s on stream {held[0][0]} "
                        f"({now} → {held[0][1]} ns; bag loop or clock reset): resetting the synchronizer")
            self.h._stats["time_jumps"] += 1
            self.h._end_of_data("dropped_time_jump")  # what was complete before the jump still leaves
            self.h._drop_all("dropped_time_jump")
            self.h._clear()
            self.old_epoch = now
        elif now is not None:
            self.h._stats["forward_jumps"] += 1
        for k, s, p in held:
            last = self.h._last[k]
            if last is not None and s <= last:
                self.h._drop(k, "duplicates" if s == last else "dropped_out_of_order")
            else:
                self.h._accept(k, s, p)
