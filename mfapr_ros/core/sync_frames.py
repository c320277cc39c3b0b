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

    # ------------------------------------------------------------------ host hooks
    def _fr_pending(self) -> int:
        return sum(len(q) for q in self._fr_q)

    def _fr_drop_all(self, cause: str) -> None:
        for i, q in enumerate(self._fr_q):
            if q:
                self._drop(i, cause, len(q))  # type: ignore[attr-defined]
                q.clear()

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
        self._fr_step()

    def _fr_add(self, i: int, stamp: int, payload: Any) -> None:
        q = self._fr_q[i]
        q.append((stamp, payload))
        if self._fr_rates_differ(i, stamp):
            return self._fr_fall_back()
        self._fr_step()
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
        for s, i, p in held:
            self._pv_add(i, s, p)  # type: ignore[attr-defined]

    def _fr_period(self) -> float | None:
        """The frame period: learned from successive frames' times once frames form (the mean of a frame's
        members is √N less noisy than one stream's gaps), seeded by the median of the streams' mean periods (each
        over at least 8 of its messages; a median of gaps is biased by loose jitter)."""
        if self._fr_p:
            return self._fr_p
        cnt, first, last = self._fr_cnt, self._fr_first, self._last  # type: ignore[attr-defined]
        ps = sorted((last[k] - first[k]) / (cnt[k] - 1) for k in self._active_idx
                    if cnt[k] >= 8 and last[k] is not None and last[k] > first[k])
        return float(ps[len(ps) // 2]) if ps else None

    def _fr_fit(self, f: int, t: float) -> None:
        """Add frame ``f`` at corrected time ``t`` to the clock's line (older frames weigh less: the rate drifts).

        Why a line and not frame-to-frame advances: under loose jitter one frame's mean is off by σ/√N, so a
        period from successive frames wanders by milliseconds; the slope of a line over a few hundred frames is
        exact to microseconds."""
        ls = self._fr_ls
        if self._fr_nls == 0:
            self._fr_t0 = t  # origin, so the sums stay small
        t -= self._fr_t0
        lam = 1.0 - 1.0 / _LINE_WINDOW
        ls[0] = ls[0] * lam + 1.0
        ls[1] = ls[1] * lam + f
        ls[2] = ls[2] * lam + t
        ls[3] = ls[3] * lam + f * f
        ls[4] = ls[4] * lam + f * t
        self._fr_nls += 1

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
    def _fr_step(self, force: bool = False) -> None:
        """Form frames from the queue heads while every active stream has one (``force``: one frame from the
        streams that have one; used on overflow in partial mode and at end of data)."""
        qs, off = self._fr_q, self._fr_off
        while True:
            active = self._active_idx
            heads = [k for k in active if qs[k]]
            if not heads or (len(heads) < len(active) and not force) or len(active) < self.min_streams and not force:
                return
            x = {k: qs[k][0][0] - off[k] for k in heads}
            p = self._fr_period()
            xs = sorted(x.values())
            med = xs[(len(xs) - 1) // 2]
            if p is None:  # no frame clock yet: the heads within the slop of their median (each topic is FIFO)
                e = med
                hi = lo = float(self.max_interval_ns)
                a, half_prior = 1.0, 0.0
                self._fr_k = 0
            else:
                ref = self._fr_ref
                self._fr_k = 0 if ref is None else max(1, round((med - ref) / p))
                e = med if ref is None else ref + self._fr_k * p
                a = self._fr_a()
                hi = lo = self._fr_boundary(p, a)
                half_prior = 0.5 * self._fr_prior_log()
            self._fr_e = e
            members: list[int] = []
            late = None
            was_member, fast = self._fr_member, self._fr_fast
            for k in heads:
                r = x[k] - e
                if p is not None and fast[k] < -0.5 * p:
                    late = k  # its recent heads sat a whole frame early: it lags one frame behind, resync
                    break
                if r > hi:
                    continue  # its stream skipped this frame: the head waits for a later one
                if r < -lo:
                    late = k  # earlier than this frame by more than the boundary: a leftover of an earlier one
                    break
                if p is not None and len(qs[k]) > 1:
                    # leftover of the previous frame (head r + P, successor r2) vs this frame's (head r, successor
                    # r2 − P), heavy-tailed costs; the skip prior weighs against whichever hypothesis needs one:
                    # a member after no member needs a skip, a leftover after a member needs a misread frame
                    r2 = qs[k][1][0] - off[k] - e
                    lg = math.log
                    if lg(a + (r + p) ** 2) + lg(a + r2 * r2) + (0.0 if not was_member[k] else half_prior) \
                            < lg(a + r * r) + lg(a + (r2 - p) ** 2) + (half_prior if not was_member[k] else 0.0):
                        late = k  # its successor fits this frame much better: the head is a leftover
                        break
                members.append(k)
            if late is not None:
                self._fr_fast[late] = 0.0
                self._fr_member[late] = False
                qs[late].popleft()
                self._drop(late, "dropped_unmatched")  # type: ignore[attr-defined]
                continue
            if not members:  # every head is later than the expected frame: the frame was dropped everywhere
                self._fr_ref = e
                self._fr_f += self._fr_k
                if p is None:
                    return
                continue
            self._fr_form(members, len(heads) == len(active) or force)
            if force:
                return

    def _fr_form(self, members: list[int], complete: bool) -> None:
        """Publish (or drop) the frame made of these streams' heads and learn offsets and jitter from it."""
        qs, off = self._fr_q, self._fr_off
        msgs = {k: qs[k].popleft() for k in members}
        xs = {k: msgs[k][0] - off[k] for k in members}
        t = sum(xs.values()) / len(xs)
        ref, k = self._fr_ref, self._fr_k
        if ref is not None and k and len(members) * 2 > len(self._active_idx):
            self._fr_fit(self._fr_f + k, t)
        self._fr_f += k
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
            self._fr_ref = t if ref is None or not k else self._fr_e + 0.3 * (t - self._fr_e)
        for k in range(self.num_streams):
            self._fr_member[k] = k in msgs
        if len(members) * 2 > len(self._active_idx):
            self._fr_slots += len(self._active_idx)
            self._fr_skips += len(self._active_idx) - len(members)
        for k in members:
            self._fr_fast[k] += 0.5 * (xs[k] - t - self._fr_fast[k])
        if len(members) == len(self._active_idx) > 1:  # learn from complete frames only
            for k in members:
                r = xs[k] - t
                n = self._fr_nobs[k]
                s = 3.0 * self._fr_mad if self._fr_mad else math.inf
                off[k] += max(-s, min(s, r)) * max(0.05, 1.0 / (n + 1 + _OFFSET_PRIOR))
                self._fr_nobs[k] = n + 1
                a = abs(r) * math.sqrt(len(members) / (len(members) - 1))  # |residual| vs the members' own mean
                self._fr_mad = a if not self._fr_mad else self._fr_mad + 0.02 * (min(a, 4 * self._fr_mad)
                                                                                 - self._fr_mad)
        present = list(members)
        stamps = {k: msgs[k][0] for k in members}
        enough = len(present) == self.num_streams or (self.partial and len(present) >= self.min_streams)
        if enough and self.partial:
            while len(present) > self.min_streams and (max(stamps[k] for k in present)
                                                        - min(stamps[k] for k in present) > self.max_interval_ns):
                med = sorted(stamps[k] for k in present)[len(present) // 2]
                far = max(present, key=lambda k: abs(stamps[k] - med))
                present.remove(far)
                self._drop(far, "dropped_unmatched")  # type: ignore[attr-defined]
        if enough and max(stamps[k] for k in present) - min(stamps[k] for k in present) <= self.max_interval_ns:
            self._emit([msgs[k] if k in present else None for k in range(self.num_streams)])  # type: ignore[attr-defined]
            return
        cause = "dropped_too_few_streams" if self.partial and len(self._active_idx) < self.min_streams \
            else "dropped_unmatched"
        for k in present:
            self._drop(k, cause)  # type: ignore[attr-defined]
