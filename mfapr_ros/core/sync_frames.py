"""Policy ``frames`` of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: period-aware frame indices
for loose stamps (see the :mod:`mfapr_ros.core.sync` docstring for its semantics).

Split out of ``sync.py`` so each part of the synchronizer stays readable on its own; the algorithm is unchanged.
The bootstrap line fit is a plain function (:func:`_fit_lines`): it uses no synchronizer state.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

_BOOT_MESSAGES = 20  # frames policy: messages of one stream before the frame clock is fitted
_DROP_THRESHOLD = 1.85  # frames policy: a gap this many periods long means a dropped frame
_OFFSET_GAIN = 0.02  # frames policy: per-message gain of a stream's phase offset


def _circmean(values: list[float], period: float) -> float:
    """Circular mean of ``values`` modulo ``period``, in [0, period)."""
    c = sum(math.cos(2 * math.pi * v / period) for v in values)
    s = sum(math.sin(2 * math.pi * v / period) for v in values)
    return (math.atan2(s, c) / (2 * math.pi) * period) % period


def _wrap(x: float, period: float) -> float:
    """``x`` wrapped into (−period/2, period/2]."""
    return x - period * math.floor(x / period + 0.5)


def _fit_lines(per: list[list[int]], labels: list[list[int]]
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


class FramesPolicy:
    """Mixin of :class:`~mfapr_ros.core.sync.ApproximateTimeSynchronizer`: the frame clock (bootstrap, weighted
    least squares), the labelling of each message with a frame index, and the open frames (``_fr_bins``).

    Why a mixin and not a separate object: it shares the host's active set, partial-bundle settings and counters on
    every message, and falls back to the ``pivot`` policy on the same state (``self.policy = "pivot"`` and
    ``_pv_add``) when the cameras' rates differ; one ``self`` keeps that switch and the per-message path free of an
    extra indirection. All of its own state is prefixed ``_fr_`` and created by :meth:`_fr_clear`.
    """

    _active: list[bool]
    _active_idx: list[int]
    num_streams: int
    queue_size: int
    max_interval_ns: int
    min_streams: int
    partial: bool
    policy: str

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
                res = _fit_lines(per, start)
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
