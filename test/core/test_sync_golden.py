"""The synchronizer's golden trace: what it publishes, when, and what it counts, over deterministic scenarios that
visit every rule (both policies, full and partial bundles, offsets, heavy-tailed jitter, drops, a silent camera, a
glitch, jumps back and forward, duplicates, out-of-order stamps, overflow, a rate fallback, ``publish="optimal"``,
``age_penalty``, ``reset`` and ``flush``).

Why: refactors of the synchronizer (issue 24: each policy owns its state) must not change a single decision. The
fixture ``data/sync_golden.json`` was written by the code before the refactor (``python
test/core/test_sync_golden.py --write``; ``jump-with-held`` was added with the fix that returns the bundle a jump
back publishes, which every other scenario's trace left unchanged); each scenario's digest covers every bundle's
stamps, payloads and mask and the index of the ``add``/``flush``/``reset`` call that returned it, plus the counters.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mfapr_ros.core.sync import ApproximateTimeSynchronizer, SyncSettings

FIXTURE = Path(__file__).parent / "data" / "sync_golden.json"
P = 33_333_333
MS = 1_000_000

Event = tuple[str, int, int]  # ("add", stream, stamp) | ("flush", 0, 0) | ("reset", 0, 0)


def _jitter(rng: random.Random, kind: str, scale: float) -> float:
    if kind == "gauss":
        return rng.gauss(0.0, scale)
    if kind == "t3":  # Student-t, 3 degrees of freedom
        z = rng.gauss(0.0, 1.0)
        chi = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3))
        return scale * z / math.sqrt(chi / 3.0)
    if kind == "uniform":
        return rng.uniform(-scale, scale)
    return 0.0


def _rig(seed: int, n: int, frames: int, *, jitter: str = "gauss", sigma: float = 3 * MS,
         offsets: list[int] | None = None, drop: float = 0.0, latency: int = 2 * MS,
         periods: list[int] | None = None, silent: tuple[int, int, int] | None = None) -> list[Event]:
    """Messages of ``n`` cameras in arrival order (each topic FIFO): stamp = f·P_c + offset_c + jitter."""
    rng = random.Random(seed)
    offs = offsets or [0] * n
    per = periods or [P] * n
    msgs: list[tuple[float, int, int]] = []
    for c in range(n):
        last_arr = -math.inf
        for f in range(frames):
            if rng.random() < drop or (silent and c == silent[0] and silent[1] <= f < silent[2]):
                continue
            stamp = int(10**12 + f * per[c] + offs[c] + _jitter(rng, jitter, sigma))
            arr = max(stamp + rng.uniform(0, latency), last_arr + 1)
            last_arr = arr
            msgs.append((arr, c, stamp))
    msgs.sort()
    return [("add", c, s) for _, c, s in msgs]


def _scenarios() -> Iterator[tuple[str, dict[str, Any], list[Event]]]:
    for policy in ("frames", "pivot"):
        kw = {"policy": policy}
        yield f"{policy}/phone", {**kw, "max_interval_ns": 30 * MS}, _rig(1, 4, 120, offsets=[0, 7 * MS, 13 * MS,
                                                                                               21 * MS])
        yield f"{policy}/n10-drops", {**kw, "max_interval_ns": 20 * MS}, _rig(2, 10, 90, drop=0.03,
                                                                                offsets=[(k - 5) * MS for k in
                                                                                         range(10)])
        yield f"{policy}/t3-loose", {**kw, "max_interval_ns": 50 * MS, "queue_size": 30}, _rig(
            3, 6, 120, jitter="t3", sigma=8 * MS)
        yield f"{policy}/uniform-offs-halfP", {**kw, "max_interval_ns": 30 * MS}, _rig(
            4, 4, 100, jitter="uniform", sigma=3 * MS, offsets=[-16 * MS, -5 * MS, 5 * MS, 16 * MS])
        silent = _rig(5, 6, 150, silent=(3, 30, 90), drop=0.02)
        yield f"{policy}/partial-silent", {**kw, "max_interval_ns": 20 * MS, "min_streams": 4,
                                           "stream_timeout_ns": 300 * MS}, silent
        yield f"{policy}/partial-min1", {**kw, "max_interval_ns": 15 * MS, "min_streams": 1,
                                         "stream_timeout_ns": 200 * MS}, _rig(6, 3, 80, drop=0.2, sigma=6 * MS)
        ev = _rig(17, 3, 100)  # camera 2's frames 30..59 arrive late, in two backlogs, while it is timed out
        late = [e for e in ev if e[1] == 2 and 10**12 + 29 * P < e[2] < 10**12 + 60 * P]
        ev = [e for e in ev if e not in late]
        ev = ev[:130] + late[:3] + ev[130:170] + late[3:] + ev[170:]
        yield f"{policy}/late-backlog", {**kw, "min_streams": 2, "stream_timeout_ns": 100 * MS}, ev
        ev = _rig(7, 5, 100)
        ev[200] = ("add", ev[200][1], ev[200][2] - 2 * 10**9)  # a one-message glitch back
        ev[260] = ("add", ev[260][1], ev[260][2] + 5 * 10**9)  # a one-message glitch forward
        yield f"{policy}/glitches", kw, ev
        ev = _rig(8, 4, 120, drop=0.1)
        ev = ev[:240] + [(k, c, s - 3 * 10**9) for k, c, s in ev[240:]]  # the whole rig jumps back (bag loop)
        ev = ev[:400] + [(k, c, s + 4 * 10**9) for k, c, s in ev[400:]]  # and forward (a recording gap)
        yield f"{policy}/jumps", kw, ev
        ev = _rig(9, 4, 100)
        ev = ev[:156] + [(k, c, s + (2 * 10**9 if c == 2 else 0)) for k, c, s in ev[156:]]  # one camera re-timed
        yield f"{policy}/stream-clock", kw, ev
        ev = _rig(10, 3, 80, sigma=12 * MS, latency=0)
        ev = ev[:60] + [ev[59]] + ev[60:120] + [("add", ev[119][1], ev[119][2] - 5 * MS)] + ev[120:]
        yield f"{policy}/dup-ooo", {**kw, "max_interval_ns": 25 * MS}, ev
        ev = _rig(11, 4, 100)
        ev = [e for e in ev if not (e[1] == 1 and 300 < ev.index(e) < 360)]  # camera 1 stalls: overflow
        yield f"{policy}/overflow", {**kw, "queue_size": 5}, ev
        yield f"{policy}/rates-differ", {**kw, "max_interval_ns": 25 * MS}, _rig(
            12, 3, 90, periods=[P, P, 50_000_000])
        ev = _rig(13, 4, 60)
        ev = ev[:121] + [("reset", 0, 0)] + ev[121:] + [("flush", 0, 0)] + [("add", c, s + 10**10)
                                                                          for _, c, s in ev[:40]]
        yield f"{policy}/reset-flush", kw, ev
        ev = [("add", c, 10**10 + f * P + c * 1000) for f in range(20) for c in (0, 1)] + [("add", 0, 10**10 + 20 * P)]
        ev += [("add", 0, 5 * 10**9), ("add", 1, 5 * 10**9 + 1000)]  # a jump back while camera 0's frame is held
        yield f"{policy}/jump-with-held", {**kw, "min_streams": 1}, ev
        yield f"{policy}/long-loop", {**kw, "queue_size": 4}, _rig(14, 3, 40) + [
            ("add", c, s) for _, c, s in _rig(14, 3, 40)]  # a loop shorter than time_jump (out-of-order run)
    yield "pivot/optimal", {"policy": "pivot", "publish": "optimal", "max_interval_ns": 30 * MS}, _rig(
        15, 4, 80, offsets=[0, 7 * MS, 13 * MS, 21 * MS])
    yield "pivot/age-penalty", {"policy": "pivot", "age_penalty": 0.5, "max_interval_ns": 30 * MS}, _rig(
        16, 4, 80, sigma=6 * MS)


def _settings(kw: dict[str, Any]) -> tuple[SyncSettings, dict[str, Any]]:
    """A scenario's integer-nanosecond settings (as the fixture was written) → the SyncSettings the synchronizer
    takes; ``policy``, ``publish`` and ``age_penalty`` are not settings and stay keyword arguments."""
    kw = dict(kw)
    seconds = {"max_interval_ns": "slop", "stream_timeout_ns": "stream_timeout"}
    settings: dict[str, Any] = {seconds[k]: kw.pop(k) / 1e9 for k in list(kw) if k in seconds}
    if "min_streams" in kw:
        settings["min_cameras"] = kw.pop("min_streams")
    if "queue_size" in kw:
        settings["queue_size"] = kw.pop("queue_size")
    return SyncSettings(**settings), kw


def _trace(kw: dict[str, Any], events: list[Event]) -> dict[str, Any]:
    n = 1 + max(c for k, c, _ in events if k == "add")
    settings, rest = _settings(kw)
    s = ApproximateTimeSynchronizer(n, settings, logger=lambda m: None, **rest)
    h = hashlib.sha256()
    bundles = 0
    for idx, (kind, c, stamp) in enumerate(events):
        if kind == "reset":
            s.reset()
            continue
        out = s.add(c, stamp, (c, idx)) if kind == "add" else s.flush()
        for b in out:
            bundles += 1
            h.update(json.dumps([idx, b.stamp_ns, b.stamps_ns, [list(p) if p else None for p in b.payloads],
                                 [bool(m) for m in b.mask]]).encode())
    for b in s.flush():
        bundles += 1
        h.update(json.dumps(["end", b.stamp_ns, b.stamps_ns, [list(p) if p else None for p in b.payloads],
                             [bool(m) for m in b.mask]]).encode())
    return {"bundles": bundles, "digest": h.hexdigest()[:32], "stats": s.stats, "policy": s.policy,
            "periods_ns": s.periods_ns, "active": s.active}


def _all() -> dict[str, Any]:
    return {name: _trace(kw, ev) for name, kw, ev in _scenarios()}


GOLDEN = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_sync_golden_trace(name: str) -> None:
    kw, ev = next((kw, ev) for n, kw, ev in _scenarios() if n == name)
    assert _trace(kw, ev) == GOLDEN[name]


def test_golden_covers_every_scenario_and_rule() -> None:
    """The fixture has every scenario, and the scenarios exercise the rules they are named after."""
    assert set(GOLDEN) == {n for n, _, _ in _scenarios()}
    total: dict[str, int] = {}
    for g in GOLDEN.values():
        for k, v in g["stats"].items():
            total[k] = total.get(k, 0) + v
    for key in ("bundles_partial", "dropped_unmatched", "dropped_queue_overflow", "duplicates", "dropped_glitch",
                "dropped_time_jump", "time_jumps", "forward_jumps", "stream_clock_jumps", "stream_timeouts",
                "stream_rejoins", "dropped_reset", "dropped_out_of_order", "dropped_late"):
        assert total[key] > 0, key
    assert GOLDEN["frames/rates-differ"]["policy"] == "pivot"  # the fallback happened
    for name, g in GOLDEN.items():  # every bundle counted is returned (was not: the one a jump back published)
        assert g["bundles"] == g["stats"]["bundles_full"] + g["stats"]["bundles_partial"], name
    assert GOLDEN["frames/jump-with-held"]["bundles"] == GOLDEN["pivot/jump-with-held"]["bundles"] == 22


if __name__ == "__main__":
    if "--write" in sys.argv:
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(_all(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE}")
