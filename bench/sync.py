"""Synchronizer regimes side by side: µs/msg, bundles, correct bundles, oracle, publish delay.

Cameras triggered together at 30 Hz; each stamp = frame time + jitter (Gaussian σ), arrival = true time + a random
transport latency (0–20 ms), random drops. For every regime and variant the bench prints:

* ``µs/msg`` — best of ``--repeat`` runs of ``add()`` over all messages;
* ``bundles`` — bundles published; ``correct`` — bundles all of whose members come from the same frame;
* ``oracle`` — frames that could be bundled: every camera that has the frame present (all of them in full mode,
  at least ``min`` in partial mode) and all its stamps within the slop;
* ``delay p50/max`` — arrival time of the message that released the bundle minus arrival of its last member (0 =
  published on arrival of the last member), in simulated ms.

Variants: ``pivot`` (default, publish on arrival from learned inter-message bounds), ``pivot optimal`` (the C++
policy: waits for a later message on every stream; the previous default), ``frames`` (period-aware frame
indices), and message_filters' Python ``ApproximateTimeSynchronizer``: the real one when ``message_filters`` is
importable (a full ROS install), else a faithful re-implementation of its algorithm (greedy product search over
the queues, published on arrival; marked ``re-impl.``). It is skipped at N = 16, where its product search is too slow.

    .venv/bin/python bench/sync.py [--seconds 20] [--repeat 3] [--only tight|loose|faults]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mfapr_ros.core.sync import ApproximateTimeSynchronizer

PERIOD_NS = 33_333_333
US_TARGET = 15.0


def quiet(msg: str) -> None:
    """The synchronizer's log lines (timeouts, jumps) would interleave with the table."""


@dataclass
class Regime:
    name: str
    n: int
    slop_ns: int
    sigma_ns: int
    seconds: float
    drop: float = 0.02
    silent: tuple[int, float, float] | None = None  # camera, from s, to s
    glitch: tuple[int, int, int] | None = None  # camera, frame, stamp offset ns
    jump: tuple[int, int] | None = None  # from frame, stamp offset ns (all cameras)
    partial: bool = False
    seed: int = 0


@dataclass
class Event:
    arrival: int
    stream: int
    stamp: int
    frame: int


def camera_events(r: Regime) -> tuple[list[Event], dict[int, dict[int, int]]]:
    """Events in arrival order and, per frame, ``{camera: stamp}`` of what was sent."""
    rnd = random.Random(r.seed * 1000 + r.n)
    ev: list[Event] = []
    frames: dict[int, dict[int, int]] = {}
    last_arrival = [0] * r.n
    for f in range(int(r.seconds * 1e9 / PERIOD_NS)):
        true = f * PERIOD_NS + 5 * 10**9  # not at 0: a backward jump must stay positive
        for c in range(r.n):
            jit = int(rnd.gauss(0, r.sigma_ns))
            lat = rnd.randint(0, 20_000_000)
            if rnd.random() < r.drop:
                continue
            if r.silent and c == r.silent[0] and r.silent[1] * 1e9 <= f * PERIOD_NS < r.silent[2] * 1e9:
                continue
            stamp = true + jit
            if r.jump and f >= r.jump[0]:
                stamp += r.jump[1]
            if r.glitch and (c, f) == r.glitch[:2]:
                last_arrival[c] = max(last_arrival[c] + 1, true + jit + lat)
                ev.append(Event(last_arrival[c], c, stamp + r.glitch[2], f))  # a wrong stamp: not in the frame
                continue
            arrival = last_arrival[c] = max(last_arrival[c] + 1, true + jit + lat)  # one topic is FIFO (DDS)
            frames.setdefault(f, {})[c] = stamp
            ev.append(Event(arrival, c, stamp, f))
    ev.sort(key=lambda e: e.arrival)
    return ev, frames


def oracle(frames: dict[int, dict[int, int]], n: int, slop: int, min_streams: int) -> int:
    return sum(1 for fr in frames.values() if len(fr) >= min_streams and max(fr.values()) - min(fr.values()) <= slop)


class GreedyProductSync:
    """message_filters' Python ``ApproximateTimeSynchronizer`` algorithm (ros2/message_filters ``__init__.py``):
    per-topic dict stamp → message; on each message, the product of the other queues' stamps within the slop is
    searched (closest first) and the first combination whose spread is below the slop is published; everything up
    to it is deleted. Returns the published sets (lists of messages) like our ``add``."""

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
            ts = sorted(((s, abs(s - stamp)) for s in q if abs(s - stamp) <= self.slop), key=lambda x: x[1])
            if not ts:
                return []
            stamps.append([s for s, _ in ts])
        for vv in itertools.product(*stamps):
            v = list(vv)
            v.insert(i, stamp)
            qt = list(zip(self.queues, v, strict=True))
            if max(v) - min(v) < self.slop and all(t in q for q, t in qt):
                msgs = [q[t] for q, t in qt]
                for q, t in qt:
                    for s in list(q):
                        if s <= t:
                            del q[s]
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

    class _Hdr:
        def __init__(self, ns: int) -> None:
            from builtins import type as mk
            self.stamp = mk("T", (), {"sec": ns // 10**9, "nanosec": ns % 10**9})()

    class _Msg:
        def __init__(self, ns: int, payload: Any) -> None:
            self.header, self.payload = _Hdr(ns), payload

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


def run_variant(name: str, make: Callable[[], Callable[[int, int, Any], Any]], ev: list[Event], repeat: int,
                ours: bool) -> Row:
    best = float("inf")
    for _ in range(repeat):
        add = make()
        t0 = time.perf_counter()
        for e in ev:
            add(e.stream, e.stamp, None)
        best = min(best, (time.perf_counter() - t0) / len(ev) * 1e6)
    row = Row(name, best)
    add = make()
    for e in ev:
        out = add(e.stream, e.stamp, e)
        for b in out:
            members = [m for m in (b.payloads if ours else b) if m is not None]
            row.bundles += 1
            row.correct += len({m.frame for m in members}) == 1
            row.delays_ms.append((e.arrival - max(m.arrival for m in members)) / 1e6)
    return row


def regimes(seconds: float) -> dict[str, list[Regime]]:
    tight = [Regime(f"tight N={n}", n, 20_000_000, 3_000_000, seconds) for n in (4, 10, 16)]
    loose = [Regime(f"loose N={n}", n, 50_000_000, 10_000_000, 10.0, drop=0.0) for n in (6, 10)]
    loose.append(Regime("loose N=10, 2 % drops", 10, 50_000_000, 10_000_000, 10.0))
    f = int(seconds / 2 * 30)
    faults = [Regime("camera 3 silent 5 s (partial, min 9)", 10, 20_000_000, 3_000_000, seconds,
                     silent=(3, seconds / 2 - 2.5, seconds / 2 + 2.5), partial=True),
              Regime("one-message glitch (cam 7, -2 s)", 10, 20_000_000, 3_000_000, seconds, drop=0.0,
                     glitch=(7, f, -2 * 10**9)),
              Regime("sustained jump -2 s (all cameras)", 10, 20_000_000, 3_000_000, seconds, drop=0.0,
                     jump=(f, -2 * 10**9))]
    return {"tight": tight, "loose": loose, "faults": faults}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of the tight and fault regimes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("tight", "loose", "faults"), default=None)
    args = ap.parse_args()
    have_mf = real_message_filters(2, 10, 10_000_000) is not None
    mf_name = "message_filters.py" if have_mf else "message_filters.py (re-impl.)"
    print(f"30 Hz, latency 0-20 ms, queue 10, best of {args.repeat}; message_filters "
          f"{'imported' if have_mf else 'not importable here: its algorithm re-implemented'}")
    print(f"{'regime':<38} {'variant':<30} {'µs/msg':>7} {'bundles':>8} {'correct':>8} {'oracle':>7} "
          f"{'delay p50':>10} {'max':>7}")
    for group, rs in regimes(args.seconds).items():
        if args.only and group != args.only:
            continue
        for r in rs:
            ev, frames = camera_events(r)
            ms = r.n - 1 if r.partial else r.n
            orc = oracle(frames, r.n, r.slop_ns, ms)
            mk = {"min_streams": ms, "stream_timeout_ns": 200_000_000}
            variants: list[tuple[str, Callable[[], Any], bool]] = [
                ("pivot (default)", lambda r=r, mk=mk: ApproximateTimeSynchronizer(
                    r.n, 10, r.slop_ns, logger=quiet, **mk).add, True),
                ("pivot optimal (C++, previous)", lambda r=r, mk=mk: ApproximateTimeSynchronizer(
                    r.n, 10, r.slop_ns, publish="optimal", logger=quiet, **mk).add, True),
                ("frames", lambda r=r, mk=mk: ApproximateTimeSynchronizer(
                    r.n, 10, r.slop_ns, policy="frames", logger=quiet, **mk).add, True),
            ]
            if r.n <= 10 and not r.partial:
                real = real_message_filters(r.n, 10, r.slop_ns)
                variants.append((mf_name, (lambda r=r: real_message_filters(r.n, 10, r.slop_ns)) if real else
                                 (lambda r=r: GreedyProductSync(r.n, 10, r.slop_ns).add), False))
            for name, make, ours in variants:
                row = run_variant(name, make, ev, args.repeat, ours)
                d = row.delays_ms
                p50 = statistics.median(d) if d else float("nan")
                mx = max(d) if d else float("nan")
                print(f"{r.name:<38} {row.name:<30} {row.us:7.1f} {row.bundles:>8} {row.correct:>8} {orc:>7} "
                      f"{p50:8.1f}ms {mx:5.1f}ms")
            print()


if __name__ == "__main__":
    main()
