"""Issue 21: every message accounted for (received = bundled + each drop cause + pending, pending 0 after flush),
a whole-rig silence does not time cameras out, and property tests of the default policy over random offsets,
jitter, drops and silences."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfapr_ros.core.sync import DROP_KEYS, ApproximateTimeSynchronizer, Bundle, SyncSettings, accounting_line

P = 33_333_333
FAST = settings(max_examples=int(os.environ.get("SYNC_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def identity(sync: ApproximateTimeSynchronizer) -> None:
    st_ = sync.stats
    assert st_["received"] == st_["bundled_messages"] + sum(st_[k] for k in DROP_KEYS) + sync.pending


@pytest.mark.parametrize("policy", ["frames", "pivot"])
def test_shared_trigger_after_a_long_silence_is_one_full_bundle(policy: str) -> None:
    """Six cameras sharing one trigger stamp, min_cameras=1: after a silence longer than the stream timeout, the
    first message back must not time the other five out (their messages of the same trigger are in flight)."""
    s = ApproximateTimeSynchronizer(6, SyncSettings(min_cameras=1), policy=policy)  # defaults, either policy
    out: list[Bundle] = []
    for f in range(10):
        for c in range(6):
            out += s.add(c, f * P, c)
    t = 9 * P + 2 * 10**9  # 2 s of silence (> stream_timeout 0.5 s)
    for c in range(6):
        out += s.add(c, t, c)
    out += s.flush()
    assert [b.num_present for b in out] == [6] * 11
    assert s.stats["stream_timeouts"] == 0 and s.stats["dropped_unmatched"] == 0
    identity(s)


@pytest.mark.parametrize("policy", ["frames", "pivot"])
def test_flush_bundles_a_rig_with_a_silent_camera(policy: str) -> None:
    """One camera never delivers, min_cameras=1, a bag shorter than the stream timeout: flush bundles what the
    others sent (was: 0 bundles and 6 messages pending)."""
    s = ApproximateTimeSynchronizer(3, SyncSettings(queue_size=10, slop=0.01, min_cameras=1), policy=policy)
    out: list[Bundle] = []
    for f in range(3):
        for c in (0, 1):
            out += s.add(c, f * P + c * 1000, c)
    out += s.flush()
    assert len(out) == 3 and all(list(b.mask) == [True, True, False] for b in out)
    assert s.pending == 0
    identity(s)


@pytest.mark.parametrize("policy", ["frames", "pivot"])
def test_flush_leaves_nothing_pending_on_a_faulty_stream(policy: str) -> None:
    """Silent camera, duplicate stamp, a glitch and a jump back in one stream set: after flush every message is
    bundled or counted under one cause."""
    rnd = random.Random(3)
    ev = []
    for f in range(120):
        for c in range(4):
            if c == 2 and 30 <= f < 60:
                continue  # silent
            t = f * P + c * 2_000_000 + rnd.randint(-2_000_000, 2_000_000) + (0 if f < 90 else -3 * 10**9)
            ev.append((c, t))
            if f == 20 and c == 1:
                ev.append((c, t))  # duplicate stamp
            if f == 40 and c == 3:
                ev[-1] = (c, t + 5 * 10**9)  # glitch
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.01, min_cameras=3, stream_timeout=0.2),
                                    policy=policy, logger=lambda m: None)
    out: list[Bundle] = []
    for c, t in ev:
        out += s.add(c, t, (c, t))
    out += s.flush()
    st_ = s.stats
    assert s.pending == 0 and st_["received"] == len(ev)
    assert st_["duplicates"] == 1 and st_["dropped_glitch"] == 1 and st_["time_jumps"] == 1
    identity(s)
    assert len(out) >= 110


def rig_events(data: st.DataObject, n: int) -> tuple[list[tuple[int, int, int, int]], int, int, int]:
    """Random rig: per-camera offsets, Gaussian / uniform / Student-t jitter, drops, a silence; each topic FIFO.
    Returns (arrival, camera, stamp, frame) sorted, the slop, the jitter bound and the latency bound."""
    seed = data.draw(st.integers(0, 2**20))
    rnd = random.Random(seed)
    spread = data.draw(st.integers(0, 8)) * 1_000_000
    sigma = data.draw(st.integers(0, 3)) * 1_000_000
    kind = data.draw(st.sampled_from(["gauss", "uniform", "t3"]))
    drop = data.draw(st.sampled_from([0.0, 0.02, 0.1]))
    lat = data.draw(st.integers(0, 20)) * 1_000_000
    silence = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, n - 1), st.integers(5, 40),
                                                         st.integers(1, 40))))
    offs = [rnd.randint(0, spread) for _ in range(n)]
    # separable: two frames' members are further apart (P - spread - 2 jb) than the slop (spread + 2 jb + 1 ms)
    jb = min(4 * sigma, (P // 2 - 1_000_000 - spread) // 2 - 500_000)
    ev, last = [], [0] * n
    for f in range(90):
        for c in range(n):
            if kind == "gauss":
                j = int(rnd.gauss(0, sigma))
            elif kind == "uniform":
                j = rnd.randint(-sigma, sigma)
            else:
                z = sum(rnd.gauss(0, 1) ** 2 for _ in range(3)) / 3
                j = int(sigma * rnd.gauss(0, 1) / max(z, 1e-3) ** 0.5)
            j = max(-jb, min(jb, j))  # bounded, so frames stay separable within the slop
            if rnd.random() < drop or (silence and c == silence[0] and silence[1] <= f < silence[1] + silence[2]):
                continue
            t = 10**9 + f * P + offs[c] + j
            last[c] = max(last[c] + 1, t + rnd.randint(0, lat))
            ev.append((last[c], c, t, f))
    ev.sort()
    return ev, spread + 2 * jb + 1_000_000, sigma, lat


@FAST
@given(data=st.data(), n=st.integers(2, 6), partial=st.booleans())
def test_default_policy_never_mixes_separable_frames(data: st.DataObject, n: int, partial: bool) -> None:
    """Frames separable within the slop (offsets + jitter well inside it, slop < P/2): no bundle mixes frames,
    the accounting identity holds at every step, nothing is pending after flush, and a complete frame is
    published no later than one period of arrivals after its last member (the bound)."""
    ev, slop, _, lat = rig_events(data, n)
    slop = min(slop, P // 2 - 1)
    ms = data.draw(st.integers(1, n)) if partial else None
    s = SyncSettings(slop=slop / 1e9, min_cameras=ms or 0, stream_timeout=max(slop, 200_000_000) / 1e9).make(n)
    s._logger = lambda m: None  # quiet logs in a property test
    arr = {(c, t): a for a, c, t, _ in ev}
    out: list[Bundle] = []
    for k, (a, c, t, f) in enumerate(ev):
        got = s.add(c, t, (f, a))
        for b in got:
            last = max(p[1] for p in b.payloads if p is not None)
            if b.is_full:
                assert a - last <= P + lat + 4 * slop, "a complete bundle waited past the bound"
        out += got
        if k % 17 == 0:
            identity(s)
    out += s.flush()
    for b in out:
        assert len({p[0] for p in b.payloads if p is not None}) == 1, b.stamps_ns
        assert b.spread_ns <= slop
    assert s.pending == 0
    identity(s)
    assert arr  # the generator produced messages


@FAST
@given(data=st.data(), n=st.integers(2, 6), partial=st.booleans())
def test_fast_path_changes_nothing(data: st.DataObject, n: int, partial: bool) -> None:
    """``add``'s inlined common case makes the same decisions as the general path: same bundles, same counters,
    on random rigs with drops, silences, a glitch and a jump back."""
    ev, slop, _, _ = rig_events(data, n)
    if ev and data.draw(st.booleans()):
        k = data.draw(st.integers(0, len(ev) - 1))
        a, c, t, f = ev[k]
        ev[k] = (a, c, t - 3 * 10**9, f)  # a glitch
    if ev and data.draw(st.booleans()):
        k = data.draw(st.integers(0, len(ev) - 1))
        ev = ev[:k] + [(a, c, t - 2 * 10**9, f) for a, c, t, f in ev[k:]]  # a jump back
    ms = data.draw(st.integers(1, n)) if partial else None
    outs = []
    for fast in (True, False):
        s = SyncSettings(slop=slop / 1e9, min_cameras=ms or 0, stream_timeout=max(slop, 200_000_000) / 1e9).make(n)
        s._logger = lambda m: None
        s._fast_path = fast
        out = [(b.stamps_ns, list(b.mask)) for a, c, t, f in ev for b in s.add(c, t, f)]
        out += [(b.stamps_ns, list(b.mask)) for b in s.flush()]
        outs.append((out, s.stats))
    assert outs[0] == outs[1]


def test_accounting_line_states_the_identity() -> None:
    """eval-bag's console line and report meta: every number of the identity, OK when it holds."""
    s = SyncSettings().make(2)
    s._logger = lambda m: None
    for f in range(5):
        s.add(0, f * P)
        if f != 2:
            s.add(1, f * P + 1000)
    s.add(0, 4 * P)  # duplicate
    s.add(7, 0)  # bad stream index
    line = accounting_line(s.stats)
    assert line.startswith("sync: received 10 = bundled 8 + ") and line.endswith(" OK; 1 call(s) with a bad stream "
                                                                              "index"), line
    assert "duplicates 1" in line and "pending" in line
    s.flush()
    assert "+ pending 0 OK;" in accounting_line(s.stats)
    broken = dict(s.stats, received=s.stats["received"] + 1)
    assert "MISMATCH" in accounting_line(broken)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("policy", ["frames", "pivot"])
def test_first_message_behind_the_timeout_horizon_is_late_not_a_crash(policy: str, fast: bool) -> None:
    """Partial mode: camera 0's first message is 2 s behind camera 1's two: its own stamp times its stream out, so
    it is counted ``dropped_late`` (was: queued on the now-inactive stream; ``frames`` then raised IndexError on
    the empty queue of camera 1, found by ``test_fast_path_changes_nothing``). Camera 1 goes on alone."""
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=0.002, min_cameras=1, stream_timeout=0.2), policy=policy,
                                    logger=lambda m: None)
    s._fast_path = fast
    out = s.add(1, 1_000_403_958) + s.add(1, 1_033_737_291) + s.add(0, -965_781_227)
    out += s.add(1, 1_067_070_624) + s.flush()
    st_ = s.stats
    assert st_["dropped_late"] == 1 and st_["stream_timeouts"] == 1 and s.active == [False, True]
    assert [b.stamps_ns for b in out] == [[None, 1_000_403_958], [None, 1_033_737_291], [None, 1_067_070_624]]
    identity(s)
