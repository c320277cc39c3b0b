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
    """Mixin of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: per-stream FIFO queues aligned at their
    heads, learned per-stream offsets and jitter, frames published as soon as their last member arrives.

    Why a mixin and not a separate object: it shares the host's active set, periods, partial-bundle settings and
    counters on every message, and falls back to the ``pivot`` policy on the same state (``self.policy =
    "pivot"`` and ``_pv_add``) when the cameras' rates differ; one ``self`` keeps that switch and the
    per-message path free of an extra indirection. All of its own state is prefixed ``_fr_`` (``_fr_clear``);
    offsets and the jitter scale survive resets (a camera's lag does not change when the clock jumps).
    """

    _active: list[bool]
    _active_idx: list[int]
    _period: list[int | None]
    num_streams: int
    queue_size: int
    max_interval_ns: int
    min_streams: int
    partial: bool
    policy: str

    def _fr_clear(self) -> None:
        n = self.num_streams
        self._fr_q: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self._fr_ne = 0  # streams with a non-empty queue (inactive streams' queues are always empty)
        self._fr_lagging = False  # a stream's fast residual average is below −P/2 (checked by _fr_step)
        self._fr_all = [True] * n  # _fr_member after a frame with every stream (shared, never mutated)
        self._fr_ref: float | None = None  # corrected time of the last formed frame
        self._fr_e = 0.0  # expected time of the frame being formed (set by _fr_step)
        self._fr_k = 0  # frames the current frame is expected after the last one (set by _fr_step)
        self._fr_f = 0  # index of the last formed frame (frames counted since the clock started)
        # exponentially weighted least-squares line t = c + P·f over formed frames: weight, Σf, Σt, Σff, Σft
        self._fr_ls = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._fr_nls = 0
        self._fr_t0 = 0.0
        self._fr_member = [False] * n  # the stream's last message was in the last formed frame
        self._fr_fast = [0.0] * n  # fast average of the stream's residuals (a one-frame lag shows as −P)
        if not hasattr(self, "_fr_off"):
            self._fr_off = [0.0] * n  # learned per-stream offsets (ns)
            self._fr_nobs = [0] * n
            self._fr_mad = 0.0  # running mean |residual| of frame members (ns); 0 = unknown
            self._fr_p = 0.0  # frame period learned from successive frames (ns); 0 = not yet
            self._fr_np = 0
            self._fr_cnt = [0] * n
            self._fr_first = [0] * n
            self._fr_rate: list[float | None] = [None] * n
            self._fr_slots = 0  # (stream, frame) slots seen in formed frames
            self._fr_skips = 0  # ... of which the stream had no member (a dropped frame, or a misread one)
            self._fr_bnd = (0.0, 0.0, 0.0)  # cached (period, scale, prior) -> boundary
            self._fr_b = 0.0
            self._fr_hi = 0.0  # cached skip boundary (0 = recompute), jitter 3s² and half the skip prior's log
            self._fr_aa = 1.0
            self._fr_hp = 0.0
            self._fr_nform = 0

    # ------------------------------------------------------------------ host hooks
    def _fr_pending(self) -> int:
        return sum(len(q) for q in self._fr_q)

    def _fr_drop_all(self, cause: str) -> None:
        for i, q in enumerate(self._fr_q):
            if q:
                self._drop(i, cause, len(q))  # type: ignore[attr-defined]
                q.clear()
        self._fr_ne = 0

    def _fr_forget_stream(self, i: int) -> None:
        """Stream ``i`` was re-timed (its clock moved): its offset is learned again."""
        self._fr_nobs[i] = 0
        self._fr_off[i] = 0.0

    def _fr_set_active(self, j: int, on: bool) -> None:
        self._active[j] = on
        self._active_idx = [k for k in range(self.num_streams) if self._active[k]]
        if not on:
            q = self._fr_q[j]
            if q:  # a silent stream's held messages are older than the timeout: no frame can still use them
                self._drop(j, "dropped_stream_timeout", len(q))  # type: ignore[attr-defined]
                q.clear()
                self._fr_ne -= 1
        self._fr_step()

    def _fr_add(self, i: int, stamp: int, payload: Any) -> None:
        q = self._fr_q[i]
        q.append((stamp, payload))
        if len(q) == 1:
            self._fr_ne += 1
        if self._fr_cnt[i] < _RATE_MESSAGES and self._fr_rates_differ(i, stamp):
            return self._fr_fall_back()
        if self._fr_ne >= len(self._active_idx):
            self._fr_step()
        if len(q) > self.queue_size:
            self._fr_overflow(i)

    def _fr_overflow(self, i: int) -> None:
        q = self._fr_q[i]
        if len(q) > self.queue_size:
            if self.partial and len(self._active_idx) >= self.min_streams:
                # partial mode: a stream that has not delivered this frame is treated as absent (it is late by a
                # whole queue); the oldest frame is formed without it instead of dropping messages
                self._fr_step(force=True)
            while len(q) > self.queue_size:
                q.popleft()
                self._drop(i, "dropped_too_few_streams" if len(self._active_idx) < self.min_streams  # type: ignore[attr-defined]
                           else "dropped_queue_overflow")
        return None

    def _fr_end_of_data(self, leftover: str = "dropped_unmatched") -> None:
        """No more messages will come: form every frame that the held messages still can (streams with nothing
        left count as absent), then drop what cannot be bundled."""
        while self._fr_pending():
            before = self._fr_pending()
            self._fr_step(force=True)
            if self._fr_pending() == before:
                break
        for i, q in enumerate(self._fr_q):
            if q:
                self._drop(i, leftover, len(q))  # type: ignore[attr-defined]
                q.clear()
        self._fr_ne = 0

    # ------------------------------------------------------------------ frame clock
    def _fr_rates_differ(self, i: int, stamp: int) -> bool:
        """Each stream's mean period over its first :data:`_RATE_MESSAGES` messages (a median of a few gaps is
        too noisy under loose jitter); rates further apart than :data:`_MAX_RATE_RATIO` have no common frame."""
        n = self._fr_cnt[i] = self._fr_cnt[i] + 1
        if n == 1:
            self._fr_first[i] = stamp
        if n != _RATE_MESSAGES:
            return False
        self._fr_rate[i] = (stamp - self._fr_first[i]) / (n - 1)
        ps = [p for p in self._fr_rate if p and p > 0]
        return len(ps) >= 2 and max(ps) > _MAX_RATE_RATIO * min(ps)

    def _fr_fall_back(self) -> None:
        ps = [round(p / 1e6, 2) if p else None for p in self._period]
        self._log(f"sync: policy 'frames' needs every camera at the same frame rate; observed periods {ps} ms: "  # type: ignore[attr-defined]
                  "falling back to policy 'pivot'")
        self.policy = "pivot"
        held = sorted(((s, i, p) for i, q in enumerate(self._fr_q) for s, p in q), key=lambda m: m[0])
        for q in self._fr_q:
            q.clear()
        self._fr_ne = 0
        for s, i, p in held:
            self._pv_add(i, s, p)  # type: ignore[attr-defined]

    def _fr_period(self) -> float | None:
        """The frame period: learned from successive frames' times once frames form (the mean of a frame's
        members is √N less noisy than one stream's gaps), seeded by the median of the streams' mean periods (each
        over at least 8 of its messages; a median of gaps is biased by loose jitter)."""
        if self._fr_p:
            return self._fr_p
        cnt, first, last, rate = self._fr_cnt, self._fr_first, self._last, self._fr_rate  # type: ignore[attr-defined]
        ps = []
        for k in self._active_idx:
            if cnt[k] < 8 or last[k] is None or last[k] <= first[k]:  # type: ignore[operator]
                continue
            m = rate[k] or (last[k] - first[k]) / (cnt[k] - 1)  # type: ignore[operator]
            med = self._period[k]
            if med and not 0.7 * med < m < 1.3 * med:
                m = float(med)  # a time jump or a long gap inside the span: the median gap is the period
            ps.append(m)
        ps.sort()
        return float(ps[len(ps) // 2]) if ps else None

    def _fr_prior_log(self) -> float:
        """ln((1 − π)/π) for π the learned rate of skipped (stream, frame) slots, starting at 2 %."""
        pi = (self._fr_skips + 2.0) / (self._fr_slots + 100.0)
        return math.log((1.0 - pi) / max(pi, 1e-3))

    def _fr_a(self) -> float:
        """3 s² for s the Student-t (3 dof) scale of the jitter: mean |residual| / 1.10 (E|T₃| = 2√3/π)."""
        s = self._fr_mad / 1.10
        return 3.0 * s * s + 1e10  # + (0.1 ms)² · 3: stamps are never exact to the ns

    def _fr_boundary(self, p: float, a: float) -> float:
        """The residual beyond which a head belongs to the next frame (its stream skipped this one): where a
        Student-t (3 dof) likelihood of "next frame" times the skip prior π beats "this frame" times 1 − π.

        Why Student-t and not Gaussian: real stamp jitter has heavy tails (a late USB transfer, a scheduler hiccup);
        a Gaussian reads a 7-scale outlier as a dropped frame and the stream slips. Why a learned π: a rig that
        never drops frames should almost never be read as dropping one.
        """
        prior = self._fr_prior_log()
        key = (p, a, prior)
        if key != self._fr_bnd:
            # density ∝ (a + x²)^−2: skip iff (a + r²) / (a + (P − r)²) > R = sqrt((1 − π)/π)
            big_r = math.exp(0.5 * prior)
            c2, c1, c0 = 1.0 - big_r, 2.0 * big_r * p, a * (1.0 - big_r) - big_r * p * p
            disc = c1 * c1 - 4.0 * c2 * c0
            b = 0.97 * p
            if disc >= 0 and c2 < 0:
                b = min(b, (-c1 + math.sqrt(disc)) / (2.0 * c2))
                b = max(b, 0.5 * p)
            self._fr_bnd, self._fr_b = key, b
        return self._fr_b

    # ------------------------------------------------------------------ frames
    def _fr_refresh(self, p: float) -> None:
        """Recompute the cached decision constants (every 8 formed frames: the jitter scale and the skip rate move
        slowly, and the per-frame path stays free of logs and square roots)."""
        a = self._fr_a()
        self._fr_aa = a
        self._fr_hi = self._fr_boundary(p, a)
        self._fr_hp = 0.5 * self._fr_prior_log()

    def _fr_step(self, force: bool = False) -> None:
        """Form frames from the queue heads while every active stream has one (``force``: one frame from the
        streams that have one; used on overflow in partial mode and at end of data).

        Called on every message: without ``force`` it returns at once until the frame's last member is in (a
        count of non-empty queues, so waiting costs O(1) per message, not O(N))."""
        qs, off = self._fr_q, self._fr_off
        while True:
            active = self._active_idx
            if force:
                heads = [k for k in active if qs[k]]
                if not heads:
                    return
            elif self._fr_ne < len(active) or len(active) < self.min_streams:
                return
            else:
                heads = active
            x = [qs[k][0][0] - off[k] for k in heads]
            p = self._fr_p or self._fr_period()
            xs = sorted(x)
            med = xs[(len(xs) - 1) // 2]
            if p is None:  # no frame clock yet: the heads within the slop of their median (each topic is FIFO)
                e = med
                hi = float(self.max_interval_ns)
                a = 1.0
                half_prior = 0.0
                lag = -math.inf
                self._fr_k = 0
            else:
                ref = self._fr_ref
                kf = self._fr_k = 0 if ref is None else max(1, round((med - ref) / p))
                e = med if ref is None else ref + kf * p
                if not self._fr_hi:
                    self._fr_refresh(p)
                hi, a, half_prior = self._fr_hi, self._fr_aa, self._fr_hp
                lag = -0.5 * p
            self._fr_e = e
            if (xs[0] >= e - hi and xs[-1] <= e + hi and not self._fr_lagging
                    and (p is None or max(map(len, qs)) == 1)):
                # the common case: every head within the boundary, no stream lagging, no successor to weigh
                self._fr_form(heads, x)
                if force:
                    return
                continue
            members: list[int] = []
            mx: list[float] = []
            late = None
            was_member, fast = self._fr_member, self._fr_fast
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
                self._fr_lagging = False  # every head was checked against the lag bound
            else:
                fast[late] = 0.0
                if was_member[late]:
                    self._fr_member = was_member = list(was_member)  # it may be the shared all-true list
                    was_member[late] = False
                q = qs[late]
                q.popleft()
                if not q:
                    self._fr_ne -= 1
                self._drop(late, "dropped_unmatched")  # type: ignore[attr-defined]
                continue
            if not members:  # every head is later than the expected frame: the frame was dropped everywhere
                self._fr_ref = e
                self._fr_f += self._fr_k
                if p is None:
                    return
                continue
            self._fr_form(members, mx)
            if force:
                return

    def _fr_form(self, members: list[int], mx: list[float]) -> None:
        """Publish (or drop) the frame made of these streams' heads (``mx``: their corrected stamps) and learn the
        clock, offsets and jitter from it."""
        qs, off = self._fr_q, self._fr_off
        msgs = []
        for k in members:
            q = qs[k]
            msgs.append(q.popleft())
            if not q:
                self._fr_ne -= 1
        nm = len(members)
        n_act = len(self._active_idx)
        t = sum(mx) / nm
        ref, kf = self._fr_ref, self._fr_k
        if ref is not None and kf and nm * 2 > n_act:
            # The clock's line through (frame index, mean corrected time), older frames weighing less (the rate
            # drifts). Why a line and not frame-to-frame advances: under loose jitter one frame's mean is off by
            # σ/√N, so a period from successive frames wanders by milliseconds; the slope of a line over a few
            # hundred frames is exact to microseconds. Sums relative to the first frame's time stay small.
            ls = self._fr_ls
            if self._fr_nls == 0:
                self._fr_t0 = t
            tt = t - self._fr_t0
            f = self._fr_f + kf
            ls[0] = ls[0] * _LAM + 1.0
            ls[1] = ls[1] * _LAM + f
            ls[2] = ls[2] * _LAM + tt
            ls[3] = ls[3] * _LAM + f * f
            ls[4] = ls[4] * _LAM + f * tt
            self._fr_nls += 1
        self._fr_f += kf
        if self._fr_nls >= _LINE_FRAMES:
            ls = self._fr_ls
            w, sf, st = ls[0], ls[1], ls[2]
            var = ls[3] - sf * sf / w
            if var > 0:
                p = self._fr_p or self._fr_period() or 0.0
                slope = (ls[4] - sf * st / w) / var
                if p and 0.75 * p < slope < 1.25 * p:
                    self._fr_p = slope
                    # the clock: the fitted line at this frame (far less noisy than one frame's mean)
                    self._fr_ref = self._fr_t0 + st / w + slope * (self._fr_f - sf / w)
                    ref = None
        if ref is not None or self._fr_nls < _LINE_FRAMES:
            self._fr_ref = t if ref is None or not kf else self._fr_e + 0.3 * (t - self._fr_e)
        if nm == self.num_streams:
            self._fr_member = self._fr_all
        else:
            was = self._fr_member = [False] * self.num_streams
            for k in members:
                was[k] = True
        if nm * 2 > n_act:
            self._fr_slots += n_act
            self._fr_skips += n_act - nm
            self._fr_nform += 1
            if not self._fr_nform % 8:
                self._fr_hi = 0.0  # refresh the decision constants at the next frame
        fast = self._fr_fast
        if nm == n_act > 1:  # learn offsets and jitter from complete frames only
            mad = self._fr_mad
            s = 3.0 * mad if mad else math.inf
            sq = math.sqrt(nm / (nm - 1))  # |residual| against the members' own mean is √((N−1)/N) too small
            nobs = self._fr_nobs
            lag = -0.5 * (self._fr_p or 0.0)
            for j, k in enumerate(members):
                r = mx[j] - t
                fk = fast[k] = fast[k] + 0.5 * (r - fast[k])
                if fk < lag:
                    self._fr_lagging = True
                n = nobs[k]
                off[k] += (s if r > s else -s if r < -s else r) * (0.05 if n >= 15 else 1.0 / (n + 1 + _OFFSET_PRIOR))
                nobs[k] = n + 1
                ar = (r if r >= 0 else -r) * sq
                mad = ar if not mad else mad + 0.02 * ((ar if ar < 4.0 * mad else 4.0 * mad) - mad)
            self._fr_mad = mad
        else:
            for j, k in enumerate(members):
                fast[k] += 0.5 * (mx[j] - t - fast[k])
            self._fr_lagging = True  # an incomplete frame: let the next step check every stream
        slop = self.max_interval_ns
        if nm == self.num_streams:  # the common case: a full frame, members in stream order
            stamps = [m[0] for m in msgs]
            if max(stamps) - min(stamps) <= slop:
                self._emit_full(stamps, [m[1] for m in msgs])  # type: ignore[attr-defined]
                return
            for k in members:
                self._drop(k, "dropped_unmatched")  # type: ignore[attr-defined]
            return
        by = dict(zip(members, msgs, strict=True))
        present = list(members)
        stamps_of = {k: by[k][0] for k in members}
        enough = self.partial and nm >= self.min_streams
        if enough:
            while len(present) > self.min_streams and (max(stamps_of[k] for k in present)
                                                        - min(stamps_of[k] for k in present) > slop):
                med = sorted(stamps_of[k] for k in present)[len(present) // 2]
                far = max(present, key=lambda k: abs(stamps_of[k] - med))
                present.remove(far)
                self._drop(far, "dropped_unmatched")  # type: ignore[attr-defined]
        if enough and max(stamps_of[k] for k in present) - min(stamps_of[k] for k in present) <= slop:
            self._emit([by[k] if k in present else None for k in range(self.num_streams)])  # type: ignore[attr-defined]
            return
        cause = "dropped_too_few_streams" if self.partial and n_act < self.min_streams else "dropped_unmatched"
        for k in present:
            self._drop(k, cause)  # type: ignore[attr-defined]
