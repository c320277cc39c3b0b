"""Policy ``frames`` (the default) of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: *head alignment*
with learned per-camera offsets (see the :mod:`mfapr_ros.core.sync` docstring for the contract).

Why not the minimum-span search (``pivot``, message_filters' C++ policy) as the default: with per-camera offsets
(cameras 0 / 7 / 13 / 21 ms behind the trigger) or jitter a third of the frame period, the set of minimum span
often mixes frames (camera 0's *next* frame is closer to camera 3 than camera 0's own), and proving a set optimal
needs a later message on every stream (one frame of delay). Cameras deliver one message per frame, each topic in
capture order, so the frame a message belongs to follows from the order, not from the span:

* every stream keeps a FIFO queue (arrival order = capture order); a frame is formed from the queue *heads* as
  soon as every active stream has one — i.e. when the frame's last member arrives (no added delay);
* each head is placed against the frame's expected time ``E`` in *offset-corrected* time ``x = stamp − offset``
  (``offset``: the stream's learned constant lag, from its residuals in complete frames, outliers clipped): a
  head more than ``b`` after ``E`` belongs to a later frame (its stream dropped this one) and waits; one more than
  ``b`` before is a leftover of an earlier frame and is dropped;
* ``b`` is where a **Student-t (3 dof)** likelihood of "next frame" times the learned skip rate π beats "this
  frame" times 1 − π (π starts at 2 % and is counted from the formed frames). Why heavy-tailed: real stamp jitter
  has outliers (a late transfer, a scheduler hiccup); a Gaussian boundary (the previous version) read a message
  25 ms late as a dropped frame and its stream slipped. Why a learned π: a rig that never drops frames should
  almost never be read as dropping one;
* when the stream's next message is already queued, the pair decides (one-message lookahead, no added delay):
  "head is a leftover of the previous frame, successor is this frame's" against "head is this frame's, successor
  the next one's", with the same heavy-tailed costs; this stops the one-frame slip an outlier otherwise causes;
* the frame is published if its members span at most ``max_interval_ns`` in raw stamps (the contract) and there
  are enough of them (all active streams, or ``min_streams`` in partial mode; in partial mode the farthest
  members are trimmed until the span fits); otherwise its members are dropped (``dropped_unmatched``).

``E`` comes from the frame clock: an exponentially weighted least-squares line ``t = c + P·f`` through the formed
frames' mean corrected times (about 10 s of frames; its slope is the period, exact to microseconds where the
frame-to-frame advance is off by σ/√N), seeded by the streams' mean periods over their first messages. Before
any period is known the heads within the slop of their median form a frame (each topic is FIFO).
Streams at different frame rates (mean periods over their first 12 messages more than 1.3x apart) have no common
frame: the policy then falls back to ``pivot`` (logged) and replays what it holds. Work per message: O(N) (a
median of N heads per frame).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

_MAX_RATE_RATIO = 1.3  # mean periods further apart than this: not one frame rate (20 vs 30 Hz is 1.5)
_OFFSET_PRIOR = 4  # frames' worth of confidence in a zero offset (one loose frame is no offset estimate)
_LINE_FRAMES = 6  # frames on the clock's line before its slope is the period
_LINE_WINDOW = 300.0  # frames: the clock line's exponential forgetting (10 s at 30 Hz)
_LAM = 1.0 - 1.0 / _LINE_WINDOW
_RATE_MESSAGES = 12  # messages of a stream over which its mean period is measured


class FramesPolicy:
    """Policy ``frames`` of an :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer` (its host ``h``): per-stream
    FIFO queues aligned at their heads, learned per-stream offsets and jitter, frames published as soon as their last
    member arrives.

    State it owns (every attribute of this object): the queues and the frame being formed, reset by :meth:`clear`
    (the host's reset and jump back), and what it learned about the cameras, kept across resets (a camera's lag does
    not change when the clock jumps). What it reads of the host: the stream activity (``_active``, ``_active_idx``,
    which :meth:`set_active` also writes), each stream's period (``_period``) and last stamp (``_last``) and the
    settings (``num_streams``, ``queue_size``, ``max_interval_ns``, ``min_streams``, ``partial``); it reports through
    the host's ``_drop``/``_emit``/``_emit_full``/``_log``, and :meth:`fall_back` switches the host to its ``pivot``
    policy (``h.policy``, ``h._pv``) when the cameras' rates differ. Methods run under the host's lock only.
    """

    def __init__(self, host: Any) -> None:
        self.h = host  # the ApproximateTimeSynchronizer (not imported: sync.py imports this module)
        n = host.num_streams
        # learned about the cameras (kept across clear()):
        self.off = [0.0] * n  # per-stream offsets (ns)
        self.nobs = [0] * n  # complete frames each offset was learned from
        self.mad = 0.0  # running mean |residual| of frame members (ns); 0 = unknown
        self.p = 0.0  # frame period learned from successive frames (ns); 0 = not yet
        self.cnt = [0] * n  # messages seen per stream (up to _RATE_MESSAGES) ...
        self.first = [0] * n  # ... the first one's stamp ...
        self.rate: list[float | None] = [None] * n  # ... and the mean period over them
        self.gaps0: list[list[int]] = [[] for _ in range(n)]  # ... the stamp gaps between them
        self.last0 = [0] * n
        self.slots = 0  # (stream, frame) slots seen in formed frames
        self.skips = 0  # ... of which the stream had no member (a dropped frame, or a misread one)
        self.bnd = (0.0, 0.0, 0.0)  # cached (period, scale, prior) -> boundary
        self.b = 0.0
        self.hi = 0.0  # cached skip boundary (0 = recompute), jitter 3s² and half the skip prior's log
        self.aa = 1.0
        self.hp = 0.0
        self.nform = 0  # frames formed (the cached constants are refreshed every 8th)
        self.clear()

    def clear(self) -> None:
        """Forget the queues and the frame clock (a reset or a jump back); what was learned stays."""
        n = self.h.num_streams
        self.q: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self.ne = 0  # streams with a non-empty queue (inactive streams' queues are always empty)
        self.lagging = False  # a stream's fast residual average is below −P/2 (checked by step)
        self.all_members = [True] * n  # member after a frame with every stream (shared, never mutated)
        self.ref: float | None = None  # corrected time of the last formed frame
        self.e = 0.0  # expected time of the frame being formed (set by step)
        self.k = 0  # frames the current frame is expected after the last one (set by step)
        self.f = 0  # index of the last formed frame (frames counted since the clock started)
        # exponentially weighted least-squares line t = c + P·f over formed frames: weight, Σf, Σt, Σff, Σft
        self.ls = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.nls = 0
        self.t0 = 0.0
        self.member = [False] * n  # the stream's last message was in the last formed frame
        self.fast = [0.0] * n  # fast average of the stream's residuals (a one-frame lag shows as −P)

    # ------------------------------------------------------------------ called by the host
    def pending(self) -> int:
        return sum(len(q) for q in self.q)

    def drop_all(self, cause: str) -> None:
        for i, q in enumerate(self.q):
            if q:
                self.h._drop(i, cause, len(q))
                q.clear()
        self.ne = 0

    def forget_stream(self, i: int) -> None:
        """Stream ``i`` was re-timed (its clock moved): its offset is learned again."""
        self.nobs[i] = 0
        self.off[i] = 0.0

    def set_active(self, j: int, on: bool) -> None:
        h = self.h
        h._active[j] = on
        h._active_idx = [k for k in range(h.num_streams) if h._active[k]]
        if not on:
            q = self.q[j]
            if q:  # a silent stream's held messages are older than the timeout: no frame can still use them
                h._drop(j, "dropped_stream_timeout", len(q))
                q.clear()
                self.ne -= 1
        self.step()

    def add(self, i: int, stamp: int, payload: Any) -> None:
        q = self.q[i]
        q.append((stamp, payload))
        if len(q) == 1:
            self.ne += 1
        if self.cnt[i] < _RATE_MESSAGES and self.rates_differ(i, stamp):
            return self.fall_back()
        if self.ne >= len(self.h._active_idx):
            self.step()
        if len(q) > self.h.queue_size:
            self.overflow(i)

    def overflow(self, i: int) -> None:
        h = self.h
        q = self.q[i]
        if len(q) > h.queue_size:
            if h.partial and len(h._active_idx) >= h.min_streams:
                # partial mode: a stream that has not delivered this frame is treated as absent (it is late by a
                # whole queue); the oldest frame is formed without it instead of dropping messages
                self.step(force=True)
            while len(q) > h.queue_size:
                q.popleft()
                h._drop(i, "dropped_too_few_streams" if len(h._active_idx) < h.min_streams
                        else "dropped_queue_overflow")
        return None

    def end_of_data(self, leftover: str = "dropped_unmatched") -> None:
        """No more messages will come: form every frame that the held messages still can (streams with nothing
        left count as absent), then drop what cannot be bundled."""
        while self.pending():
            before = self.pending()
            self.step(force=True)
            if self.pending() == before:
                break
        for i, q in enumerate(self.q):
            if q:
                self.h._drop(i, leftover, len(q))
                q.clear()
        self.ne = 0

    # ------------------------------------------------------------------ frame clock
    def rates_differ(self, i: int, stamp: int) -> bool:
        """Each stream's mean period over its first :data:`_RATE_MESSAGES` messages (a median of a few gaps is
        too noisy under loose jitter), dropped frames counted (:meth:`_drop_corrected`); rates further apart than
        :data:`_MAX_RATE_RATIO` have no common frame."""
        n = self.cnt[i] = self.cnt[i] + 1
        if n == 1:
            self.first[i] = stamp
        else:
            self.gaps0[i].append(stamp - self.last0[i])
        self.last0[i] = stamp
        if n != _RATE_MESSAGES:
            return False
        self.rate[i] = (stamp - self.first[i]) / (n - 1)
        done = [k for k, r in enumerate(self.rate) if r and r > 0]
        raw = [float(self.rate[k]) for k in done]  # type: ignore[arg-type]
        if len(raw) < 2 or max(raw) <= _MAX_RATE_RATIO * min(raw):
            return False
        # the means differ: different rates, or a camera that dropped frames — only the first falls back
        ps = [self._drop_corrected(k, done) for k in done]
        return max(ps) > _MAX_RATE_RATIO * min(ps)

    def _drop_corrected(self, k: int, done: list[int]) -> float:
        """Stream ``k``'s mean period with its dropped frames counted: against the shortest median gap of the
        measured streams, a gap near 2, 3, … of those periods is that many frames — only where at least half of its
        gaps are single periods and its gaps sit near whole numbers of them (median distance ≤ 0.2 period). A
        camera dropping 5 of 17 frames under jitter otherwise reads as another rate (mean gap 44 ms at 30 Hz) and
        sends the synchronizer to 'pivot'; a 20 Hz camera beside 30 Hz ones (gaps of 1.5 periods) and a 30 Hz one
        beside 60 Hz ones (no single gaps) keep their own rate."""
        raw = float(self.rate[k])  # type: ignore[arg-type]
        ref = min(sorted(self.gaps0[j])[len(self.gaps0[j]) // 2] for j in done)
        if ref <= 0:
            return raw
        units = [g / ref for g in self.gaps0[k]]
        near = [max(1, round(u)) for u in units]
        if sum(1 for m in near if m == 1) * 2 < len(near):
            return raw
        if sorted(abs(u - m) for u, m in zip(units, near, strict=True))[len(units) // 2] > 0.2:
            return raw
        return sum(self.gaps0[k]) / sum(near)

    def fall_back(self) -> None:
        ps = [round(p / 1e6, 2) if p else None for p in self.h._period]
        self.h._log(f"sync: policy 'frames' needs every camera at the same frame rate; observed periods {ps} ms: "
                    "falling back to policy 'pivot'")
        self.h.policy = "pivot"
        held = sorted(((s, i, p) for i, q in enumerate(self.q) for s, p in q), key=lambda m: m[0])
        for q in self.q:
            q.clear()
        self.ne = 0
        for s, i, p in held:
            self.h._pv.add(i, s, p)

    def period(self) -> float | None:
        """The frame period: learned from successive frames' times once frames form (the mean of a frame's
        members is √N less noisy than one stream's gaps), seeded by the median of the streams' mean periods (each
        over at least 8 of its messages; a median of gaps is biased by loose jitter)."""
        h = self.h
        if self.p:
            return self.p
        cnt, first, last, rate = self.cnt, self.first, h._last, self.rate
        ps = []
        for k in h._active_idx:
            if cnt[k] < 8 or last[k] is None or last[k] <= first[k]:  # type: ignore[operator]
                continue
            m = rate[k] or (last[k] - first[k]) / (cnt[k] - 1)  # type: ignore[operator]
            med = h._period[k]
            if med and not 0.7 * med < m < 1.3 * med:
                m = float(med)  # a time jump or a long gap inside the span: the median gap is the period
            ps.append(m)
        ps.sort()
        return float(ps[len(ps) // 2]) if ps else None

    def prior_log(self) -> float:
        """ln((1 − π)/π) for π the learned rate of skipped (stream, frame) slots, starting at 2 %."""
        pi = (self.skips + 2.0) / (self.slots + 100.0)
        return math.log((1.0 - pi) / max(pi, 1e-3))

    def jitter_a(self) -> float:
        """3 s² for s the Student-t (3 dof) scale of the jitter: mean |residual| / 1.10 (E|T₃| = 2√3/π)."""
        s = self.mad / 1.10
        return 3.0 * s * s + 1e10  # + (0.1 ms)² · 3: stamps are never exact to the ns

    def boundary(self, p: float, a: float) -> float:
        """The residual beyond which a head belongs to the next frame (its stream skipped this one): where a
        Student-t (3 dof) likelihood of "next frame" times the skip prior π beats "this frame" times 1 − π.

        Why Student-t and not Gaussian: real stamp jitter has heavy tails (a late USB transfer, a scheduler hiccup);
        a Gaussian reads a 7-scale outlier as a dropped frame and the stream slips. Why a learned π: a rig that
        never drops frames should almost never be read as dropping one.
        """
        prior = self.prior_log()
        key = (p, a, prior)
        if key != self.bnd:
            # density ∝ (a + x²)^−2: skip iff (a + r²) / (a + (P − r)²) > R = sqrt((1 − π)/π)
            big_r = math.exp(0.5 * prior)
            c2, c1, c0 = 1.0 - big_r, 2.0 * big_r * p, a * (1.0 - big_r) - big_r * p * p
            disc = c1 * c1 - 4.0 * c2 * c0
            b = 0.97 * p
            if disc >= 0 and c2 < 0:
                b = min(b, (-c1 + math.sqrt(disc)) / (2.0 * c2))
                b = max(b, 0.5 * p)
            self.bnd, self.b = key, b
        return self.b

    # ------------------------------------------------------------------ frames
    def refresh(self, p: float) -> None:
        """Recompute the cached decision constants (every 8 formed frames: the jitter scale and the skip rate move
        slowly, and the per-frame path stays free of logs and square roots)."""
        a = self.jitter_a()
        self.aa = a
        self.hi = self.boundary(p, a)
        self.hp = 0.5 * self.prior_log()

    def step(self, force: bool = False) -> None:
        """Form frames from the queue heads while every active stream has one (``force``: one frame from the
        streams that have one; used on overflow in partial mode and at end of data).

        Called on every message: without ``force`` it returns at once until the frame's last member is in (a
        count of non-empty queues, so waiting costs O(1) per message, not O(N))."""
        h = self.h
        qs, off = self.q, self.off
        while True:
            active = h._active_idx
            if force:
                heads = [k for k in active if qs[k]]
                if not heads:
                    return
            elif self.ne < len(active) or len(active) < h.min_streams:
                return
            else:
                heads = active
            x = [qs[k][0][0] - off[k] for k in heads]
            p = self.p or self.period()
            xs = sorted(x)
            med = xs[(len(xs) - 1) // 2]
            if p is None:  # no frame clock yet: the heads within the slop of their median (each topic is FIFO)
                e = med
                hi = float(h.max_interval_ns)
                a = 1.0
                half_prior = 0.0
                lag = -math.inf
                self.k = 0
            else:
                ref = self.ref
                kf = self.k = 0 if ref is None else max(1, round((med - ref) / p))
                e = med if ref is None else ref + kf * p
                if not self.hi:
                    self.refresh(p)
                hi, a, half_prior = self.hi, self.aa, self.hp
                lag = -0.5 * p
            self.e = e
            if (xs[0] >= e - hi and xs[-1] <= e + hi and not self.lagging
                    and (p is None or max(map(len, qs)) == 1)):
                # the common case: every head within the boundary, no stream lagging, no successor to weigh
                self.form(heads, x)
                if force:
                    return
                continue
            members: list[int] = []
            mx: list[float] = []
            late = None
            was_member, fast = self.member, self.fast
            for j, k in enumerate(heads):
                r = x[j] - e
                if fast[k] < lag:
                    late = k  # its recent heads sat a whole frame early: it lags one frame behind, resync
                    break
                if r > hi:
                    continue  # its stream skipped this frame: the head waits for a later one
                if r < -hi:
                    late = k  # earlier than this frame by more than the boundary: a leftover of an earlier one
                    break
                q = qs[k]
                if p is not None and len(q) > 1:
                    # leftover of the previous frame (head r + P, successor r2) vs this frame's (head r, successor
                    # r2 − P), heavy-tailed costs; the skip prior weighs against whichever hypothesis needs one:
                    # a member after no member needs a skip, a leftover after a member needs a misread frame.
                    # Compared as products (one log of a ratio, not four logs).
                    r2 = q[1][0] - off[k] - e
                    lhs = (a + (r + p) ** 2) * (a + r2 * r2)
                    rhs = (a + r * r) * (a + (r2 - p) ** 2)
                    if math.log(lhs / rhs) < (half_prior if not was_member[k] else -half_prior):
                        late = k  # its successor fits this frame much better: the head is a leftover
                        break
                members.append(k)
                mx.append(x[j])
            if late is None:
                self.lagging = False  # every head was checked against the lag bound
            else:
                fast[late] = 0.0
                if was_member[late]:
                    self.member = was_member = list(was_member)  # it may be the shared all-true list
                    was_member[late] = False
                q = qs[late]
                q.popleft()
                if not q:
                    self.ne -= 1
                h._drop(late, "dropped_unmatched")
                continue
            if not members:  # every head is later than the expected frame: the frame was dropped everywhere
                self.ref = e
                self.f += self.k
                if p is None:
                    return
                continue
            self.form(members, mx)
            if force:
                return

    def form(self, members: list[int], mx: list[float]) -> None:
        """Publish (or drop) the frame made of these streams' heads (``mx``: their corrected stamps) and learn the
        clock, offsets and jitter from it."""
        h = self.h
        qs, off = self.q, self.off
        msgs = []
        for k in members:
            q = qs[k]
            msgs.append(q.popleft())
            if not q:
                self.ne -= 1
        nm = len(members)
        n_act = len(h._active_idx)
        t = sum(mx) / nm
        ref, kf = self.ref, self.k
        if ref is not None and kf and nm * 2 > n_act:
            # The clock's line through (frame index, mean corrected time), older frames weighing less (the rate
            # drifts). Why a line and not frame-to-frame advances: under loose jitter one frame's mean is off by
            # σ/√N, so a period from successive frames wanders by milliseconds; the slope of a line over a few
            # hundred frames is exact to microseconds. Sums relative to the first frame's time stay small.
            ls = self.ls
            if self.nls == 0:
                self.t0 = t
            tt = t - self.t0
            f = self.f + kf
            ls[0] = ls[0] * _LAM + 1.0
            ls[1] = ls[1] * _LAM + f
            ls[2] = ls[2] * _LAM + tt
            ls[3] = ls[3] * _LAM + f * f
            ls[4] = ls[4] * _LAM + f * tt
            self.nls += 1
        self.f += kf
        if self.nls >= _LINE_FRAMES:
            ls = self.ls
            w, sf, st = ls[0], ls[1], ls[2]
            var = ls[3] - sf * sf / w
            if var > 0:
                p = self.p or self.period() or 0.0
                slope = (ls[4] - sf * st / w) / var
                if p and 0.75 * p < slope < 1.25 * p:
                    self.p = slope
                    # the clock: the fitted line at this frame (far less noisy than one frame's mean)
                    self.ref = self.t0 + st / w + slope * (self.f - sf / w)
                    ref = None
        if ref is not None or self.nls < _LINE_FRAMES:
            self.ref = t if ref is None or not kf else self.e + 0.3 * (t - self.e)
        if nm == h.num_streams:
            self.member = self.all_members
        else:
            was = self.member = [False] * h.num_streams
            for k in members:
                was[k] = True
        if nm * 2 > n_act:
            self.slots += n_act
            self.skips += n_act - nm
            self.nform += 1
            if not self.nform % 8:
                self.hi = 0.0  # refresh the decision constants at the next frame
        fast = self.fast
        if nm == n_act > 1:  # learn offsets and jitter from complete frames only
            mad = self.mad
            s = 3.0 * mad if mad else math.inf
            sq = math.sqrt(nm / (nm - 1))  # |residual| against the members' own mean is √((N−1)/N) too small
            nobs = self.nobs
            lag = -0.5 * (self.p or 0.0)
            for j, k in enumerate(members):
                r = mx[j] - t
                fk = fast[k] = fast[k] + 0.5 * (r - fast[k])
                if fk < lag:
                    self.lagging = True
                n = nobs[k]
                off[k] += (s if r > s else -s if r < -s else r) * (0.05 if n >= 15 else 1.0 / (n + 1 + _OFFSET_PRIOR))
                nobs[k] = n + 1
                ar = (r if r >= 0 else -r) * sq
                mad = ar if not mad else mad + 0.02 * ((ar if ar < 4.0 * mad else 4.0 * mad) - mad)
            self.mad = mad
        else:
            for j, k in enumerate(members):
                fast[k] += 0.5 * (mx[j] - t - fast[k])
            self.lagging = True  # an incomplete frame: let the next step check every stream
        slop = h.max_interval_ns
        if nm == h.num_streams:  # the common case: a full frame, members in stream order
            stamps = [m[0] for m in msgs]
            if max(stamps) - min(stamps) <= slop:
                h._emit_full(stamps, [m[1] for m in msgs])
                return
            for k in members:
                h._drop(k, "dropped_unmatched")
            return
        by = dict(zip(members, msgs, strict=True))
        present = list(members)
        stamps_of = {k: by[k][0] for k in members}
        enough = h.partial and nm >= h.min_streams
        if enough:
            while len(present) > h.min_streams and (max(stamps_of[k] for k in present)
                                                        - min(stamps_of[k] for k in present) > slop):
                med = sorted(stamps_of[k] for k in present)[len(present) // 2]
                far = max(present, key=lambda k: abs(stamps_of[k] - med))
                present.remove(far)
                h._drop(far, "dropped_unmatched")
        if enough and max(stamps_of[k] for k in present) - min(stamps_of[k] for k in present) <= slop:
            h._emit([by[k] if k in present else None for k in range(h.num_streams)])
            return
        cause = "dropped_too_few_streams" if h.partial and n_act < h.min_streams else "dropped_unmatched"
        for k in present:
            h._drop(k, cause)
