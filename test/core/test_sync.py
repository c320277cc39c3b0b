"""Tests of the N-stream approximate-time synchronizer against an exhaustive reference and its invariants."""

from __future__ import annotations

import itertools
import logging
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.sync import DROP_KEYS, ApproximateTimeSynchronizer, Bundle, SyncSettings

# SYNC_EXAMPLES=600 for a deeper search than the default quick run.
FAST = settings(max_examples=int(os.environ.get("SYNC_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- reference
def reference_sets(streams: list[list[int]], max_iv: int) -> list[tuple[int, ...]]:
    """The C++ policy stated declaratively, with the optimisation done by exhaustive search.

    Repeat on the messages left after the previous set: drop the earliest head while the heads span more than
    ``max_iv`` (it can never be in a set); the pivot is then the latest head (last stream on ties). Output the
    minimum-span set that contains the pivot, found by trying *every* combination of one message per stream
    (ties: earliest start; the set is canonical: first message ≥ start on each stream). Everything up to the set
    is consumed. No queue limit (tests use a queue larger than the data).
    """
    rem = [list(s) for s in streams]
    out: list[tuple[int, ...]] = []
    n = len(rem)
    while all(rem):
        heads = [r[0] for r in rem]
        lo, hi = min(heads), max(heads)
        if hi - lo > max_iv:
            rem[heads.index(lo)].pop(0)
            continue
        piv = n - 1 - heads[::-1].index(hi)
        p_t = rem[piv][0]
        choices = [[p_t] if k == piv else [t for t in rem[k] if abs(t - p_t) <= max_iv] for k in range(n)]
        best: tuple[int, int] | None = None
        for combo in itertools.product(*choices):
            key = (max(combo) - min(combo), min(combo))
            if best is None or key < best:
                best = key
        assert best is not None
        span, start = best
        chosen = tuple(next(t for t in rem[k] if t >= start) for k in range(n))
        assert chosen[piv] == p_t and max(chosen) - start == span
        out.append(chosen)
        rem = [[t for t in rem[k] if t > chosen[k]] for k in range(n)]
    return out


def feed(sync: ApproximateTimeSynchronizer, events: list[tuple[int, int]]) -> list[Bundle]:
    out: list[Bundle] = []
    for s, t in events:
        out += sync.add(s, t, (s, t))
    return out


def interleave(streams: list[list[int]], order: list[int]) -> list[tuple[int, int]]:
    """Arrival order: ``order`` is a permutation of stream labels (one per message); per-stream order kept."""
    pos = [0] * len(streams)
    ev = []
    for s in order:
        ev.append((s, streams[s][pos[s]]))
        pos[s] += 1
    return ev


def check_invariants(bundles: list[Bundle], n: int, max_iv: int, min_streams: int) -> None:
    last: list[int | None] = [None] * n
    for b in bundles:
        present = [s for s in b.stamps_ns if s is not None]
        assert len(present) == b.num_present >= min_streams
        assert b.mask.dtype == bool and b.mask.shape == (n,)
        assert list(b.mask) == [s is not None for s in b.stamps_ns]
        assert b.stamp_ns == max(present)
        assert b.spread_ns <= max_iv
        for k, (s, p) in enumerate(zip(b.stamps_ns, b.payloads, strict=True)):
            if s is None:
                assert p is None
                continue
            assert p == (k, s)  # the payload travels with its own stamp and stream
            assert last[k] is None or s > last[k]  # used once, sets do not cross
            last[k] = s


def conservation(sync: ApproximateTimeSynchronizer) -> None:
    st_ = sync.stats
    drops = sum(st_[k] for k in DROP_KEYS if k != "dropped_bad_stream")
    assert st_["received"] == st_["bundled_messages"] + drops + sync.pending


stamp_lists = st.lists(st.integers(0, 120), min_size=0, max_size=7).map(lambda v: sorted(set(v)))


# ---------------------------------------------------------------------------- full-bundle mode
@FAST
@given(data=st.data(), n=st.integers(1, 4), max_iv=st.integers(1, 25))  # SyncSettings: slop > 0
def test_matches_exhaustive_reference_any_arrival_order(data: st.DataObject, n: int, max_iv: int) -> None:
    streams = [data.draw(stamp_lists) for _ in range(n)]
    sentinel = 10_000  # far-future message on every stream: lets every real candidate be proved optimal
    streams = [s + [sentinel] for s in streams]
    order = data.draw(st.permutations([k for k in range(n) for _ in streams[k]]))
    sync = ApproximateTimeSynchronizer(n, SyncSettings(queue_size=20, slop=max_iv / 1e9, time_jump=0.0001),
                                       policy="pivot", publish="optimal")
    got = [tuple(b.stamps_ns) for b in feed(sync, interleave(streams, order))]
    got = [g for g in got if sentinel not in g]
    assert got == [r for r in reference_sets(streams, max_iv) if sentinel not in r]
    conservation(sync)


@FAST
@given(data=st.data(), n=st.integers(2, 7), max_iv=st.integers(1, 25))
def test_output_independent_of_interleaving(data: st.DataObject, n: int, max_iv: int) -> None:
    streams = [data.draw(stamp_lists) for _ in range(n)]
    labels = [k for k in range(n) for _ in streams[k]]
    results = []
    for _ in range(3):
        order = data.draw(st.permutations(labels))
        sync = ApproximateTimeSynchronizer(n, SyncSettings(queue_size=20, slop=max_iv / 1e9, time_jump=0.0001),
                                           policy="pivot", publish="optimal")
        bundles = feed(sync, interleave(streams, order))
        check_invariants(bundles, n, max_iv, n)
        results.append([tuple(b.stamps_ns) for b in bundles] + [tuple(sorted(sync.stats.items()))])
    assert results[0] == results[1] == results[2]


@FAST
@given(data=st.data(), n=st.integers(2, 4), max_iv=st.integers(1, 25))
def test_duplicates_and_reorders_are_dropped_and_counted(data: st.DataObject, n: int, max_iv: int) -> None:
    streams = [data.draw(stamp_lists) for _ in range(n)]
    order = data.draw(st.permutations([k for k in range(n) for _ in streams[k]]))
    events = interleave(streams, order)
    # Corrupt: repeat some messages right away (duplicates) and re-send some old ones later (out of order).
    rnd = random.Random(data.draw(st.integers(0, 2**16)))
    dirty: list[tuple[int, int]] = []
    for ev in events:
        dirty.append(ev)
        if rnd.random() < 0.2:
            dirty.append(ev)
        if rnd.random() < 0.2 and dirty:
            old = rnd.choice(dirty)
            dirty.append(old)
    last: dict[int, int] = {}
    clean, dup, ooo = [], 0, 0
    for s, t in dirty:
        if s in last and t <= last[s]:
            dup += t == last[s]
            ooo += t < last[s]
            continue
        last[s] = t
        clean.append((s, t))
    a = ApproximateTimeSynchronizer(n, SyncSettings(queue_size=20, slop=max_iv / 1e9, time_jump=0.0001), policy="pivot")
    b = ApproximateTimeSynchronizer(n, SyncSettings(queue_size=20, slop=max_iv / 1e9, time_jump=0.0001), policy="pivot")
    got_dirty = [tuple(x.stamps_ns) for x in feed(a, dirty)]
    got_clean = [tuple(x.stamps_ns) for x in feed(b, clean)]
    assert got_dirty == got_clean
    assert a.stats["duplicates"] == dup and a.stats["dropped_out_of_order"] == ooo
    conservation(a)


def test_hand_checked_small_cases() -> None:
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=5e-09), policy="pivot")
    out = feed(s, [(0, 0), (1, 3), (0, 10), (1, 12), (0, 20), (1, 30)])
    assert [b.stamps_ns for b in out] == [[0, 3], [10, 12]]
    # The pivot (B@10) pairs with the closest A (A@9), not the first one inside the slop (A@6).
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=5e-09), policy="pivot")
    out = feed(s, [(0, 6), (0, 9), (1, 10), (0, 30), (1, 40)])
    assert [b.stamps_ns for b in out] == [[9, 10]]
    assert s.stats["dropped_unmatched"] == 2  # A@6 (a better partner existed) and A@30 (B@40 is too far)
    assert out[0].stamp_ns == 10 and out[0].is_full and out[0].payloads == [(0, 9), (1, 10)]


def test_flush_publishes_pending_candidate() -> None:
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=5e-09), policy="pivot")
    assert feed(s, [(0, 0), (1, 2)]) == []  # A@3 could still arrive and be better: pending
    out = s.flush()
    assert [b.stamps_ns for b in out] == [[0, 2]]
    assert s.pending == 0
    conservation(s)


def test_queue_overflow_bounds_memory_and_is_counted() -> None:
    s = ApproximateTimeSynchronizer(3, SyncSettings(queue_size=5, slop=0.01), policy="pivot")
    for k in range(100):  # stream 2 never speaks: full-bundle mode waits, queues stay bounded
        assert s.add(0, k * 33_000_000) == [] and s.add(1, k * 33_000_000 + 1000) == []
        assert s.pending <= 2 * 5
    assert s.stats["dropped_queue_overflow"] == 2 * (100 - 5)
    conservation(s)


def test_config_errors_name_the_parameter() -> None:
    """The settings are range-checked by SyncSettings alone (its error names the node parameter); the synchronizer
    checks only what is not a setting: the stream count, ``min_cameras`` against it, the policy names."""
    with pytest.raises(ConfigError, match="num_streams"):
        ApproximateTimeSynchronizer(0)
    with pytest.raises(ConfigError, match="min_cameras.*exceeds the 4 camera"):
        ApproximateTimeSynchronizer(4, SyncSettings(min_cameras=5))
    with pytest.raises(ConfigError, match="sync.slop"):
        ApproximateTimeSynchronizer(4, SyncSettings(slop=0.0))
    with pytest.raises(ConfigError, match="sync.stream_timeout"):
        ApproximateTimeSynchronizer(4, SyncSettings(min_cameras=2, slop=1e-08, stream_timeout=5e-09))
    with pytest.raises(ConfigError, match="sync.queue_size"):
        ApproximateTimeSynchronizer(4, SyncSettings(queue_size=0))
    with pytest.raises(ConfigError, match="settings must be a SyncSettings"):
        ApproximateTimeSynchronizer(4, {"slop": 0.01})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy"):
        ApproximateTimeSynchronizer(4, policy="greedy")
    with pytest.raises(ConfigError, match="age_penalty"):
        ApproximateTimeSynchronizer(4, policy="pivot", age_penalty=-1.0)


def test_bad_stream_index_is_counted_not_raised() -> None:
    msgs: list[str] = []
    s = ApproximateTimeSynchronizer(2, policy="pivot", logger=msgs.append)
    assert s.add(5, 0) == [] and s.add(-1, 0) == []
    assert s.stats["dropped_bad_stream"] == 2 and "stream 5" in msgs[0]


def camera_events(n: int, seconds: float, hz: float = 30.0, jitter_ns: int = 3_000_000, drop: float = 0.0,
                  dead: dict[int, tuple[float, float]] | None = None, seed: int = 0,
                  latency_ns: int = 20_000_000) -> list[tuple[int, int]]:
    """Frames of ``n`` cameras triggered together at ``hz`` (stamp jitter, random drops, dead intervals),
    in arrival order (stamp + random transport latency)."""
    rnd = random.Random(seed)
    period = int(1e9 / hz)
    ev = []
    for f in range(int(seconds * hz)):
        for c in range(n):
            t = f * period + rnd.randint(-jitter_ns, jitter_ns)
            if rnd.random() < drop:
                continue
            if dead and c in dead and dead[c][0] * 1e9 <= t < dead[c][1] * 1e9:
                continue
            ev.append((t + rnd.randint(0, latency_ns), c, t))
    ev.sort()
    return [(c, t) for _, c, t in ev]


def test_sixteen_cameras_realistic() -> None:
    ev = camera_events(16, 2.0, drop=0.01, seed=3)
    s = ApproximateTimeSynchronizer(16, SyncSettings(queue_size=10, slop=0.01), policy="pivot")
    out = feed(s, ev)
    check_invariants(out, 16, 10_000_000, 16)
    frames = 60
    # a frame is lost when one of its 16 images is dropped (1 %): expect ≈ 0.99^16 ≈ 85 %; at least 70 % bundled
    assert 0.7 * frames <= len(out) <= frames
    conservation(s)


# ---------------------------------------------------------------------------- partial bundles
def test_partial_bundles_when_a_camera_dies_and_rejoins() -> None:
    msgs: list[str] = []
    ev = camera_events(4, 3.0, dead={2: (1.0, 2.0)}, seed=1)
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=30, slop=0.01, min_cameras=3, stream_timeout=0.2),
                                    policy="pivot", logger=msgs.append)
    out = feed(s, ev)
    check_invariants(out, 4, 10_000_000, 3)
    full = [b for b in out if b.is_full]
    part = [b for b in out if not b.is_full]
    assert all(list(b.mask) == [True, True, False, True] for b in part)
    # Full before the death and after the rejoin; partial in between (from the death, thanks to the queue).
    assert all(b.stamp_ns < 1.02e9 or b.stamp_ns > 1.98e9 for b in full)
    assert all(1.0e9 - 4e6 < b.stamp_ns < 2.0e9 + 4e6 for b in part)  # only frames that lack camera 2
    assert len(part) >= 25  # ≈ 30 frames in the 1 s gap
    assert len(out) >= 88  # of 90 frames
    st_ = s.stats
    assert st_["stream_timeouts"] == 1 and st_["stream_rejoins"] == 1
    assert st_["bundles_partial"] == len(part) and st_["bundles_full"] == len(full)
    assert any("stream 2 silent" in m for m in msgs) and any("stream 2 speaks again" in m for m in msgs)
    conservation(s)


def test_camera_dead_from_start_times_out() -> None:
    ev = [(c, t) for c, t in camera_events(4, 1.0, seed=2) if c != 0]
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=30, slop=0.01, min_cameras=3, stream_timeout=0.1),
                                    policy="pivot")
    out = feed(s, ev)
    assert len(out) >= 27 and all(list(b.mask) == [False, True, True, True] for b in out)


def test_too_few_streams_publishes_nothing() -> None:
    ev = [(c, t) for c, t in camera_events(4, 1.0, seed=2) if c < 2]
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=5, slop=0.01, min_cameras=3, stream_timeout=0.1),
                                    policy="pivot")
    assert feed(s, ev) == []
    assert s.stats["dropped_too_few_streams"] > 40
    conservation(s)


@FAST
@given(data=st.data(), n=st.integers(2, 5), max_iv=st.integers(1, 25), timeout=st.integers(25, 80),
       queue=st.integers(1, 6))
def test_partial_mode_invariants(data: st.DataObject, n: int, max_iv: int, timeout: int, queue: int) -> None:
    streams = [data.draw(st.lists(st.integers(0, 400), max_size=12).map(lambda v: sorted(set(v))))
               for _ in range(n)]
    order = data.draw(st.permutations([k for k in range(n) for _ in streams[k]]))
    min_streams = data.draw(st.integers(1, n))
    cfg = SyncSettings(queue_size=queue, slop=max_iv / 1e9, min_cameras=min_streams, stream_timeout=timeout / 1e9,
                       time_jump=1e-4)
    s = ApproximateTimeSynchronizer(n, cfg, policy="pivot")
    out = feed(s, interleave(streams, order))
    check_invariants(out, n, max_iv, min_streams)
    assert s.pending <= n * queue
    conservation(s)


# ---------------------------------------------------------------------------- time jumps
def test_bag_loop_resets_with_log_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    ev = camera_events(3, 2.0, seed=4)
    s = ApproximateTimeSynchronizer(3, SyncSettings(slop=0.01), policy="pivot")
    with caplog.at_level(logging.WARNING, logger="mfapr_ros.core.sync"):
        first = feed(s, ev)
        # One straggler from the first pass arrives after the loop started: dropped, no second reset.
        second = feed(s, ev[:30] + [(1, ev[-1][1] + 33_000_000)] + ev[30:])
    assert s.stats["time_jumps"] == 1
    assert s.stats["dropped_stale_after_jump"] == 1
    assert "time jumped back" in caplog.text
    assert [b.stamps_ns for b in second] == [b.stamps_ns for b in first]  # identical replay after the reset
    conservation(s)


def test_reset_forgets_queued_messages() -> None:
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=5e-09), policy="pivot")
    s.add(0, 100)
    s.reset()
    assert s.pending == 0 and s.stats["dropped_reset"] == 1
    assert s.add(0, 50) == [] and [b.stamps_ns for b in s.add(1, 52) + s.flush()] == [[50, 52]]


def test_bundle_mask_is_numpy_bool() -> None:
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=5e-09), policy="pivot")
    out = feed(s, [(0, 0), (1, 1), (0, 50), (1, 50)])
    assert isinstance(out[0].mask, np.ndarray) and out[0].mask.dtype == np.bool_


def test_short_bag_loop_detected_by_consecutive_backward_stamps() -> None:
    msgs: list[str] = []
    ev = camera_events(2, 0.5, seed=5)  # a 0.5 s bag: each loop goes back less than time_jump_ns (1 s)
    s = ApproximateTimeSynchronizer(2, SyncSettings(queue_size=4, slop=0.01), policy="pivot", logger=msgs.append)
    n1 = len(feed(s, ev))
    n2 = len(feed(s, ev))
    assert s.stats["time_jumps"] == 1 and "time jumped back" in msgs[0]
    assert n1 >= 14 and n2 >= n1 - 5  # about queue_size + 1 frames of the second loop are lost to the detection
    conservation(s)


def test_lagging_stream_is_not_a_time_jump():
    """A camera whose frames arrive 1.5 s late (starved callback, slow link) but in order must not reset the
    synchronizer (that would drop every other camera as stale); once it catches up, full bundles resume."""
    sync = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.02), policy="pivot")
    period, lag = 100_000_000, 15
    out: list[Bundle] = []
    for k in range(60):
        for s in (0, 1, 3):
            out += sync.add(s, k * period + s * 1_000_000, k)
        if k >= lag:  # stream 2 delivers frame k - lag now
            out += sync.add(2, (k - lag) * period + 2_000_000, k - lag)
    for k in range(60 - lag, 60):  # stream 2 catches up
        out += sync.add(2, k * period + 2_000_000, k)
    for k in range(60, 70):
        for s in range(4):
            out += sync.add(s, k * period + s * 1_000_000, k)
    assert sync.stats["time_jumps"] == 0
    assert sync.stats["dropped_stale_after_jump"] == 0
    assert sum(b.is_full for b in out) >= 15, "bundles did not resume after the lagging camera caught up"
    assert all(b.spread_ns <= 20_000_000 for b in out)
