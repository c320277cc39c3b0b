"""Synchronizer regimes side by side: µs/msg, bundles, correct bundles, oracle, publish delay p50 / p99.

N cameras at 30 Hz; camera c's stamp for frame f = f·P + offset_c + jitter (uniform, Gaussian or Student-t with 3
degrees of freedom); arrival = stamp + U(0, latency), each topic FIFO in capture order (a later frame never
overtakes an earlier one on one topic); random drops; optional shared trigger (every camera the same stamp), a
silent camera, a one-message glitch, a 2 s jump back. For every regime and variant:

* ``µs/msg`` — best of ``--repeat`` runs of ``add()`` over all messages;
* ``bundles`` — bundles published; ``correct`` — bundles whose members all come from the same frame;
* ``oracle`` — frames that could be bundled: every camera present (at least ``min`` in partial mode) and the
  frame's stamps within the slop;
* ``delay p50 / p99`` — arrival of the message that released a bundle minus arrival of its last member (0 =
  published when its last member arrived), in simulated ms.

Variants: ``frames`` (default: head alignment with learned offsets), ``pivot`` (message_filters' C++ minimum-span
search with learned inter-message bounds), and message_filters' Python ``ApproximateTimeSynchronizer`` — the real
module when importable (a ROS install), else its algorithm re-implemented as-is (ros2/message_filters
``__init__.py``: per-topic dict stamp→message, on each message the product of the other queues' stamps within the
slop, nearest first, first combination with spread < slop published and only its messages deleted).

    python bench/sync.py [--quick] [--repeat 3] [--only NAME-SUBSTRING]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mfapr_ros.core.sync import ApproximateTimeSynchronizer, SyncSettings

P = 33_333_333
MS = 1_000_000


def quiet(msg: str) -> None:
    """The synchronizer's log lines (timeouts, jumps, fallbacks) would interleave with the table."""


@dataclass
class Regime:
    name: str
    n: int
    slop_ns: int
    frames: int
    jitter: str = "gauss"  # gauss | uniform | t3 | none
    sigma_ns: int = 3 * MS  # σ (gauss), half-width (uniform), scale (t3)
    offsets_ns: list[int] | None = None
    offset_spread_ns: int = 0  # offsets U(-spread, +spread) when offsets_ns is None
    latency_ns: int = 2 * MS
    drop: float = 0.0
    queue: int = 10
    partial: bool = False
    silent: tuple[int, int, int] | None = None  # camera, from frame, to frame
    glitch: tuple[int, int, int] | None = None  # camera, frame, stamp offset ns
    jump: tuple[int, int] | None = None  # from frame, stamp offset ns (all cameras)
    seed: int = 0


@dataclass
class Event:
    arrival: int
    stream: int
    stamp: int
    frame: int


def jitter(rnd: random.Random, r: Regime) -> int:
    if r.jitter == "gauss":
        return int(rnd.gauss(0, r.sigma_ns))
    if r.jitter == "uniform":
        return rnd.randint(-r.sigma_ns, r.sigma_ns)
    if r.jitter == "t3":  # Student-t, 3 dof: z / sqrt(chi2_3 / 3)
        chi2 = sum(rnd.gauss(0, 1) ** 2 for _ in range(3))
        return int(r.sigma_ns * rnd.gauss(0, 1) / math.sqrt(chi2 / 3))
    return 0


def camera_events(r: Regime) -> tuple[list[Event], dict[int, dict[int, int]]]:
    """Events in arrival order and, per frame, ``{camera: stamp}`` of what was sent."""
    rnd = random.Random(r.seed * 1000 + r.n)
    offs = r.offsets_ns or [rnd.randint(-r.offset_spread_ns, r.offset_spread_ns) for _ in range(r.n)]
    ev: list[Event] = []
    frames: dict[int, dict[int, int]] = {}
    last_arrival = [0] * r.n
    for f in range(r.frames):
        true = f * P + 5 * 10**9  # not at 0: a backward jump must stay positive
        shared = jitter(rnd, r)
        for c in range(r.n):
            nominal = true + (shared if r.jitter == "none" else offs[c] + jitter(rnd, r))
            lat = rnd.randint(0, r.latency_ns)
            if rnd.random() < r.drop:
                continue
            if r.silent and c == r.silent[0] and r.silent[1] <= f < r.silent[2]:
                continue
            stamp = nominal + (r.jump[1] if r.jump and f >= r.jump[0] else 0)
            arrival = last_arrival[c] = max(last_arrival[c] + 1, nominal + lat)
            if r.glitch and (c, f) == r.glitch[:2]:
                ev.append(Event(arrival, c, stamp + r.glitch[2], f))  # a wrong stamp: not in the frame
                continue
            frames.setdefault(f, {})[c] = stamp
            ev.append(Event(arrival, c, stamp, f))
    ev.sort(key=lambda e: e.arrival)
    return ev, frames


def oracle(frames: dict[int, dict[int, int]], slop: int, min_streams: int) -> int:
    return sum(1 for fr in frames.values() if len(fr) >= min_streams and max(fr.values()) - min(fr.values()) <= slop)


class MessageFiltersPy:
    """message_filters' Python ``ApproximateTimeSynchronizer.add`` (ros2/message_filters), its algorithm as-is."""

    def __init__(self, n: int, queue_size: int, slop_ns: int) -> None:
        self.queues: list[dict[int, Any]] = [{} for _ in range(n)]
        self.queue_size, self.slop = queue_size, slop_ns

    def add(self, i: int, stamp: int, msg: Any) -> list[list[Any]]:
        my_queue = self.queues[i]
        my_queue[stamp] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]
        search = self.queues[:i] + self.queues[i + 1:]
        stamps = []
        for q in search:
            ts = [(s, abs(s - stamp)) for s in q if abs(s - stamp) <= self.slop]
            if not ts:
                return []
            stamps.append([s for s, _ in sorted(ts, key=lambda x: x[1])])
        for vv in itertools.product(*stamps):
            v = list(vv)
            v.insert(i, stamp)
            qt = list(zip(self.queues, v, strict=True))
            if max(v) - min(v) < self.slop and all(t in q for q, t in qt):
                msgs = [q[t] for q, t in qt]
                for q, t in qt:
                    del q[t]
                return [msgs]
        return []


def real_message_filters(n: int, queue_size: int, slop_ns: int) -> Callable[[int, int, Any], list[list[Any]]] | None:
    """An adapter around the real ``message_filters.ApproximateTimeSynchronizer`` when importable, else None."""
    try:
        import message_filters  # type: ignore[import-not-found]
    except ImportError:
        return None

    class _Src(message_filters.SimpleFilter):  # type: ignore[misc,name-defined]
        pass

    class _Msg:
        def __init__(self, ns: int, payload: Any) -> None:
            from builtin_interfaces.msg import Time  # type: ignore[import-not-found]
            self.header = type("H", (), {"stamp": Time(sec=ns // 10**9, nanosec=ns % 10**9)})()
            self.payload = payload

    srcs = [_Src() for _ in range(n)]
    out: list[list[Any]] = []
    sync = message_filters.ApproximateTimeSynchronizer(srcs, queue_size, slop_ns / 1e9)
    sync.registerCallback(lambda *m: out.append([x.payload for x in m]))

    def add(i: int, stamp: int, payload: Any) -> list[list[Any]]:
        out.clear()
        srcs[i].signalMessage(_Msg(stamp, payload))
        return list(out)

    return add


@dataclass
class Row:
    name: str
    us: float
    bundles: int = 0
    correct: int = 0
    delays_ms: list[float] = field(default_factory=list)
    accounted: bool = True


def run_variant(name: str, make: Callable[[], Any], ev: list[Event], repeat: int, ours: bool) -> Row:
    best = math.inf
    for _ in range(repeat):
        add = make()
        add = add.add if ours else add
        t0 = time.perf_counter()
        for e in ev:
            add(e.stream, e.stamp, None)
        best = min(best, (time.perf_counter() - t0) / len(ev) * 1e6)
    row = Row(name, best)
    obj = make()
    add = obj.add if ours else obj
    for e in ev:
        for b in add(e.stream, e.stamp, e):
            members = [m for m in (b.payloads if ours else b) if m is not None]
            row.bundles += 1
            row.correct += len({m.frame for m in members}) == 1
            row.delays_ms.append((e.arrival - max(m.arrival for m in members)) / 1e6)
    if ours:
        for b in obj.flush():
            members = [m for m in b.payloads if m is not None]
            row.bundles += 1
            row.correct += len({m.frame for m in members}) == 1
        st = obj.stats
        row.accounted = st["received"] == st["bundled_messages"] + sum(v for k, v in obj.drop_counts().items()) \
            + obj.pending and obj.pending == 0
    return row


def regimes(quick: bool) -> list[Regime]:
    f = 180 if quick else 600
    phone = [0, 7 * MS, 13 * MS, 21 * MS]
    rs = [
        Regime("phone rig N=4 offs 0/7/13/21 ms, gauss 3, slop 30", 4, 30 * MS, 180, offsets_ns=phone),
        Regime("phone rig, slop 40", 4, 40 * MS, 180, offsets_ns=phone),
        Regime("N=4 offs ±5 ms, gauss 3, slop 20", 4, 20 * MS, f, offset_spread_ns=5 * MS),
        Regime("N=10 offs U(0,10) ms, gauss 3, slop 20", 10, 20 * MS, f, offset_spread_ns=5 * MS),
        Regime("N=10 offs ±5, gauss 3, 2 % drops", 10, 20 * MS, f, offset_spread_ns=5 * MS, drop=0.02),
        Regime("N=10 uniform ±5 ms, slop 20", 10, 20 * MS, f, jitter="uniform", sigma_ns=5 * MS),
        Regime("N=10 student-t3 scale 3 ms, offs ±5", 10, 20 * MS, f, jitter="t3", offset_spread_ns=5 * MS),
        Regime("N=4 offs ±P/2 (±16 ms), gauss 2, slop 30", 4, 30 * MS, f, offset_spread_ns=16 * MS,
               sigma_ns=2 * MS),
        Regime("N=6 shared trigger (same stamp), slop 20", 6, 20 * MS, f, jitter="none", sigma_ns=2 * MS),
        Regime("N=16 gauss 3, offs ±3, slop 20", 16, 20 * MS, f // 2, offset_spread_ns=3 * MS),
        Regime("loose N=6 gauss 10, slop 50", 6, 50 * MS, 300, sigma_ns=10 * MS, latency_ns=20 * MS),
        Regime("loose N=10 gauss 10, slop 50, queue 30", 10, 50 * MS, 300, sigma_ns=10 * MS, queue=30,
               offset_spread_ns=5 * MS),
        Regime("camera 3 silent 2 s (partial, min 9)", 10, 20 * MS, f, partial=True,
               silent=(3, f // 2 - 30, f // 2 + 30), latency_ns=20 * MS),
        Regime("one-message glitch (cam 7, -2 s)", 10, 20 * MS, f, glitch=(7, f // 2, -2 * 10**9)),
        Regime("sustained jump -2 s (all cameras)", 10, 20 * MS, f, jump=(f // 2, -2 * 10**9)),
    ]
    return rs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="180 frames per regime, 1 timing run (< 30 s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=None, help="run the regimes whose name contains this")
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    have_mf = real_message_filters(2, 10, 10 * MS) is not None
    mf_name = "message_filters.py" if have_mf else "message_filters.py (re-impl.)"
    print(f"30 Hz, best of {repeat}; message_filters {'imported' if have_mf else 'not importable: re-implemented'}")
    print(f"{'regime':<52} {'variant':<28} {'µs/msg':>7} {'bundles':>7} {'correct':>7} {'oracle':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'acct':>5}")
    for r in regimes(args.quick):
        if args.only and args.only not in r.name:
            continue
        ev, frames = camera_events(r)
        ms = r.n - 1 if r.partial else r.n
        orc = oracle(frames, r.slop_ns, ms)
        cfg = SyncSettings(queue_size=r.queue, slop=r.slop_ns / 1e9, min_cameras=ms, stream_timeout=0.2)
        variants: list[tuple[str, Callable[[], Any], bool]] = [
            ("frames (default)", lambda n=r.n, cfg=cfg: ApproximateTimeSynchronizer(n, cfg, logger=quiet), True),
            ("pivot", lambda n=r.n, cfg=cfg: ApproximateTimeSynchronizer(n, cfg, policy="pivot", logger=quiet), True),
        ]
        if r.n <= 10 and not r.partial:
            real = real_message_filters(r.n, r.queue, r.slop_ns)
            variants.append((mf_name, (lambda r=r: real_message_filters(r.n, r.queue, r.slop_ns)) if real else
                             (lambda r=r: MessageFiltersPy(r.n, r.queue, r.slop_ns).add), False))
        for name, make, ours in variants:
            row = run_variant(name, make, ev, repeat, ours)
            d = sorted(row.delays_ms)
            p50 = statistics.median(d) if d else math.nan
            p99 = d[min(len(d) - 1, int(math.ceil(0.99 * len(d))) - 1)] if d else math.nan
            acct = ("ok" if row.accounted else "NO") if ours else "-"
            print(f"{r.name:<52} {row.name:<28} {row.us:7.1f} {row.bundles:>7} {row.correct:>7} {orc:>6} "
                  f"{p50:7.1f} {p99:7.1f} {acct:>5}", flush=True)
        print()


if __name__ == "__main__":
    main()
