"""The synchronizer under faults (issue 11): glitches, jumps, publish latency, sparse streams, loose stamps."""

from __future__ import annotations

import random

import pytest

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.sync import DROP_KEYS, ApproximateTimeSynchronizer, Bundle, SyncSettings

P = 33_333_333  # 30 Hz


def frame_events(n: int, frames: range, offset_ns: int = 0, order: list[int] | None = None) -> list[tuple[int, int]]:
    """Triggered frames, camera c stamped 1 ms·c after the frame time, fed camera by camera."""
    return [(c, f * P + c * 1_000_000 + offset_ns) for f in frames for c in (order or range(n))]


def feed(sync: ApproximateTimeSynchronizer, events: list[tuple[int, int]]) -> list[Bundle]:
    out: list[Bundle] = []
    for s, t in events:
        out += sync.add(s, t, (s, t))
    return out


def conservation(sync: ApproximateTimeSynchronizer) -> None:
    st = sync.stats
    assert st["received"] == st["bundled_messages"] + sum(st[k] for k in DROP_KEYS) + sync.pending


@pytest.mark.parametrize("offset", [-2 * 10**9, 2 * 10**9])
@pytest.mark.parametrize("policy", ["pivot", "frames"])
def test_one_glitched_stamp_is_dropped_and_never_a_jump(offset: int, policy: str) -> None:
    """Camera 2's frame 30 stamped 2 s off (back or forward): that message is a counted glitch, frame 30 is lost
    (it lacks camera 2), everything else bundles; the clock never moves."""
    ev = frame_events(4, range(10, 70))
    k = ev.index((2, 30 * P + 2_000_000))
    ev[k] = (2, ev[k][1] + offset)
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.01), policy=policy)
    out = feed(s, ev) + s.flush()
    st = s.stats
    assert st["dropped_glitch"] == 1 and st["time_jumps"] == 0 and st["forward_jumps"] == 0
    assert len(out) == 59 and all(b.is_full for b in out)
    assert 30 * P not in {b.stamps_ns[0] for b in out}
    assert all(b.spread_ns == 3_000_000 for b in out)
    conservation(s)


def test_sustained_jump_back_resets_within_one_period_and_keeps_the_new_data() -> None:
    """Every camera jumps back 2 s at frame 40 (clock reset); camera 3's frame 39 arrives after cameras 0 and 1
    already sent frame 40. Exactly frame 39 is lost (cameras 0-2 dropped at the reset, camera 3's straggler
    stale); frame 40 — whose first messages were the evidence — is kept."""
    ev = frame_events(4, range(0, 40)) + frame_events(4, range(40, 80), offset_ns=-2 * 10**9)
    straggler = (3, 39 * P + 3_000_000)
    ev.remove(straggler)
    ev.insert(ev.index((1, 40 * P + 1_000_000 - 2 * 10**9)) + 1, straggler)
    msgs: list[str] = []
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.01), policy="pivot", logger=msgs.append)
    out = feed(s, ev) + s.flush()
    st = s.stats
    assert st["time_jumps"] == 1 and st["dropped_time_jump"] == 3 and st["dropped_stale_after_jump"] == 1
    assert st["dropped_glitch"] == 0
    assert len(out) == 79 and all(b.is_full for b in out)
    assert sum(b.stamps_ns[0] == 40 * P - 2 * 10**9 for b in out) == 1  # the evidence frame bundled
    assert any("time jumped back" in m for m in msgs)
    conservation(s)


def test_one_camera_clock_jump_retimes_that_camera_only() -> None:
    """Camera 2 alone goes 2 s back and stays there: the other cameras contradict it, so no global reset."""
    ev = frame_events(4, range(60, 120))
    ev = [(c, t - 2 * 10**9 if (c == 2 and t >= 90 * P) else t) for c, t in ev]
    s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.01, min_cameras=3, stream_timeout=0.2),
                                    policy="pivot")
    out = feed(s, ev)
    st = s.stats
    assert st["time_jumps"] == 0 and st["stream_clock_jumps"] == 1
    assert sum(b.is_full for b in out) == 30 and len(out) >= 58  # camera 2 masked once it left the others' time
    conservation(s)


def test_bundles_leave_when_their_last_member_arrives() -> None:
    """publish='arrival': once each stream's period is known (3 gaps), the add() of a frame's last member returns
    that frame; the C++ policy ('optimal') returns it only with the next frame's messages."""
    ev = frame_events(4, range(0, 30))
    for mode, lag in (("arrival", 0), ("optimal", 1)):
        s = ApproximateTimeSynchronizer(4, SyncSettings(queue_size=10, slop=0.01), policy="pivot", publish=mode)
        released: dict[int, int] = {}
        for k, (c, t) in enumerate(ev):
            for b in s.add(c, t):
                released[round(b.stamps_ns[0] / P)] = k // 4
        assert all(released[f] == f + lag for f in range(5, 29)), (mode, released)


def test_sparse_streams_are_not_timed_out_between_frames() -> None:
    """The issue's case: 3 cameras at 1 Hz, min_streams=2: every bundle has all three (timeouts are relative to
    each stream's period: 3 s here, not the 0.5 s floor)."""
    s = ApproximateTimeSynchronizer(3, SyncSettings(queue_size=30, slop=0.02, min_cameras=2), policy="pivot")
    out = feed(s, [(c, f * 10**9 + c * 1000) for f in range(8) for c in range(3)]) + s.flush()
    assert [list(b.mask) for b in out] == [[True, True, True]] * 8
    assert s.stats["stream_timeouts"] == 0
    # a camera that really stops is still timed out, after 3 of its periods
    out = feed(s, [(c, f * 10**9 + c * 1000) for f in range(8, 16) for c in range(2)]) + s.flush()
    assert s.stats["stream_timeouts"] == 1 and [list(b.mask) for b in out][-2:] == [[True, True, False]] * 2


def loose_events(n: int, seconds: float, sigma: float, seed: int) -> tuple[list[tuple[int, int, int]], int]:
    """(camera, stamp, frame) in arrival order (each topic FIFO) and the oracle: frames with all stamps in 50 ms."""
    rnd = random.Random(seed)
    ev, last, good = [], [0] * n, 0
    for f in range(int(seconds * 30)):
        st = []
        for c in range(n):
            t = 10**9 + f * P + int(rnd.gauss(0, sigma))
            last[c] = max(last[c] + 1, 10**9 + f * P + rnd.randint(0, 20_000_000) + (t - 10**9 - f * P))
            ev.append((last[c], c, t, f))
            st.append(t)
        good += max(st) - min(st) <= 50_000_000
    ev.sort()
    return [(c, t, f) for _, c, t, f in ev], good


@pytest.mark.parametrize("n", [6, 10])
def test_frames_policy_bundles_loose_stamps_correctly(n: int) -> None:
    """Slop 50 ms, σ = 10 ms (a third of the period): the default policy bundles most frames the oracle allows,
    every member from its frame; the minimum-span search (pivot) mixes frames. Measured: 290/298 (N=6), 285/295
    (N=10), the issue's target is 95 %."""
    ev, oracle = loose_events(n, 10.0, 10_000_000, seed=n)
    results = {}
    for policy in ("frames", "pivot"):
        s = ApproximateTimeSynchronizer(n, SyncSettings(queue_size=10, slop=0.05), policy=policy)
        out: list[Bundle] = []
        for c, t, f in ev:
            out += s.add(c, t, f)
        out += s.flush()
        results[policy] = sum(len(set(b.payloads)) == 1 for b in out)
        conservation(s)
        assert s.pending == 0
    assert results["frames"] >= 0.95 * oracle
    assert results["pivot"] < 0.8 * oracle


def phone_events(seed: int = 0, slop_fit: int = 30_000_000) -> tuple[list[tuple[int, int, int, int]], int]:
    """The issue's phone-like rig: 4 cameras 0/7/13/21 ms behind the trigger, Gaussian σ 3 ms, arrival = stamp +
    U(0, 2 ms) (each topic FIFO), 180 frames; (arrival, camera, stamp, frame) sorted and the oracle."""
    rnd = random.Random(seed)
    offs = [0, 7_000_000, 13_000_000, 21_000_000]
    ev, last, good = [], [0] * 4, 0
    for f in range(180):
        st = []
        for c in range(4):
            t = 10**9 + f * P + offs[c] + int(rnd.gauss(0, 3_000_000))
            last[c] = max(last[c] + 1, t + rnd.randint(0, 2_000_000))
            ev.append((last[c], c, t, f))
            st.append(t)
        good += max(st) - min(st) <= slop_fit
    ev.sort()
    return ev, good


@pytest.mark.parametrize("slop_ms", [30, 40])
def test_phone_rig_with_camera_offsets_is_bundled_on_arrival(slop_ms: int) -> None:
    """Issue 21: the default settings give every frame that fits the slop, each from one frame, published when its
    last member arrives (the minimum-span search mixed a fifth of them)."""
    ev, oracle = phone_events(slop_fit=slop_ms * 1_000_000)
    s = SyncSettings.from_dict({"slop": slop_ms / 1000}).make(4)
    out, late = [], 0
    for _, c, t, f in ev:
        got = s.add(c, t, f)
        late += sum(1 for b in got if f not in b.payloads)  # released by a message of another frame
        out += got
    out += s.flush()
    assert sum(len(set(b.payloads)) == 1 for b in out) == len(out) == oracle
    assert late == 0
    conservation(s)


def test_frames_policy_falls_back_on_mixed_rates() -> None:
    msgs: list[str] = []
    s = ApproximateTimeSynchronizer(2, SyncSettings(queue_size=10, slop=0.01), policy="frames", logger=msgs.append)
    ev = sorted([(0, k * P) for k in range(40)] + [(1, k * 2 * P + 1000) for k in range(20)], key=lambda e: e[1])
    out = feed(s, ev) + s.flush()
    assert s.policy == "pivot" and any("same frame rate" in m for m in msgs)
    assert len(out) == 20


def test_frames_policy_counts_dropped_frames_when_it_measures_the_rates() -> None:
    """The property test's counterexample (test_sync_accounting): a 30 Hz camera that drops 5 of its first 17 frames,
    under jitter bounded by ±7.3 ms (slop 15.7 ms), has a mean gap of 44 ms and read as another rate; the fallback
    to 'pivot' then held a complete bundle 133 ms, until the dropping camera spoke again. Its gaps sit near whole
    periods: the policy stays 'frames' and bundles every complete frame. A 20 Hz camera beside a 30 Hz one still
    falls back."""
    rnd = random.Random(364)
    jb = 7_333_333
    ev = sorted((f * P + c * 1_000 + max(-jb, min(jb, int(rnd.gauss(0, 3_000_000)))), c)
                for f in range(60) for c in range(3) if not (c == 1 and f in {2, 5, 10, 12, 15}))
    msgs: list[str] = []
    s = ApproximateTimeSynchronizer(3, SyncSettings(slop=0.0157), policy="frames", logger=msgs.append)
    out = feed(s, [(c, t) for t, c in ev]) + s.flush()
    assert s.policy == "frames" and not any("same frame rate" in m for m in msgs)
    full = [b for b in out if b.is_full]
    assert len(full) == 55  # 60 frames, 5 of them without camera 1
    assert all(max(t for _, t in b.payloads) - min(t for _, t in b.payloads) < 2 * jb + 3_000 for b in full)
    conservation(s)
    mixed = sorted([(k * P, 0) for k in range(60)] + [(k * 50_000_000 + 1000, 1) for k in range(40)])
    s = ApproximateTimeSynchronizer(2, SyncSettings(slop=0.01), policy="frames", logger=msgs.append)
    feed(s, [(c, t) for t, c in mixed])
    assert s.policy == "pivot" and any("same frame rate" in m for m in msgs)


def test_settings_one_vocabulary() -> None:
    """One name per setting, in seconds; the synchronizer's ns come from them; validated in one place."""
    s = SyncSettings.from_dict({"slop": 0.05, "min_cameras": 3, "queue_size": 12})
    assert s.max_interval_ns == 50_000_000 and s.min_streams == 3 and s.make(4).policy == "frames"
    assert SyncSettings.from_dict(s.to_dict()) == s
    assert SyncSettings(time_jump=2, queue_size=12.0).time_jump == 2.0  # ints for seconds, integral floats for counts
    for old in ("max_interval_ms", "stream_timeout_ns", "min_streams", "slop_ms", "policy", "publish", "age_penalty"):
        with pytest.raises(ConfigError, match=f"unknown key.*{old}"):  # one spelling per setting
            SyncSettings.from_dict({old: 1})
    with pytest.raises(ConfigError, match="slopp"):
        SyncSettings.from_dict({"slopp": 1})
    for bad, what in (({"slop": 0}, "sync.slop"), ({"queue_size": 0.5}, "sync.queue_size"),
                      ({"min_cameras": -1}, "sync.min_cameras"), ({"time_jump": 0.01}, "sync.time_jump"),
                      ({"min_cameras": 2, "stream_timeout": 0.01}, "sync.stream_timeout"),
                      ({"stream_timeout_periods": -1}, "sync.stream_timeout_periods"), ({"slop": "x"}, "sync.slop")):
        with pytest.raises(ConfigError, match=what):
            SyncSettings(**bad)
    with pytest.raises(ConfigError, match="exceeds"):
        SyncSettings(min_cameras=5).make(4)
    sync = SyncSettings.from_dict({"min_cameras": 3}).make(4)
    assert sync.min_streams == 3 and sync.partial


def heavy_tail_events(n: int, seed: int) -> tuple[list[tuple[int, int, int]], int]:
    """Student-t (3 dof) jitter, scale 3 ms, offsets ±5 ms, 200 frames, arrival = stamp + U(0, 2 ms) (each topic
    FIFO): (camera, stamp, frame) in arrival order and the oracle (frames whose stamps fit 20 ms)."""
    rnd = random.Random(seed)
    offs = [rnd.randint(-5_000_000, 5_000_000) for _ in range(n)]
    ev, last, good = [], [0] * n, 0
    for f in range(200):
        st = []
        for c in range(n):
            z = sum(rnd.gauss(0, 1) ** 2 for _ in range(3)) / 3
            t = 10**9 + f * P + offs[c] + int(3_000_000 * rnd.gauss(0, 1) / z**0.5)
            last[c] = max(last[c] + 1, t + rnd.randint(0, 2_000_000))
            ev.append((last[c], c, t, f))
            st.append(t)
        good += max(st) - min(st) <= 20_000_000
    ev.sort()
    return [(c, t, f) for _, c, t, f in ev], good


@pytest.mark.parametrize("seed", [2, 3])
def test_heavy_tailed_jitter_does_not_slip_streams(seed: int) -> None:
    """Issue 21: a Student-t outlier (a message 20–40 ms off its frame) was read as a dropped frame and its stream
    slipped by one frame for several frames (95 correct of 120). Now: ≥ 95 % of the oracle, at most one bundle mixes
    frames (measured 142/144 and 131/132; the previous policy: 133 and 119)."""
    ev, oracle = heavy_tail_events(10, seed)
    s = SyncSettings().make(10)
    out: list[Bundle] = []
    for c, t, f in ev:
        out += s.add(c, t, f)
    out += s.flush()
    correct = sum(len(set(b.payloads)) == 1 for b in out)
    assert correct >= 0.95 * oracle and len(out) - correct <= 1, (correct, len(out), oracle)
    conservation(s)
