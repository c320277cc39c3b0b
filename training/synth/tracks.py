"""Smooth planar trajectories through the corridor graph, and per-camera stamps like phones (or a shared trigger).

Why routes on the corridor graph: the corridors are where a mapping platform drives, and a route is a walk over
their intersections. *Query* tracks reuse a mapping route **reversed** (the paper's observation: test data was driven
the other way, so every view is a new view of a known place) or, beyond the number of mapping tracks, a fresh walk.
Vehicles keep right of the corridor centre line, so a reversed route also passes at a different lateral offset.

A :class:`Track` is a continuous function of time: ``pose_at(stamps_ns)`` gives ``T_world_rig`` (z = 0, yaw only)
at any nanosecond stamp, so each camera image is rendered at its own stamp and the GT is exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_from_yaw

from .world import World

NS = 1_000_000_000
#: Base epoch of synthetic stamps (2024-01-01T00:00:00Z) — realistic magnitude, exact in µs and ns.
EPOCH_NS = 1_704_067_200 * NS
#: Tracks start this far apart so splits never share a stamp.
TRACK_SPACING_NS = 100_000 * NS


@dataclass
class Track:
    """A smooth path with a speed profile: arc-length tables plus an analytic ``s(t)``."""

    name: str
    split: str
    direction: str  # "forward" | "reverse" | "walk"
    route: list[tuple[int, int]]
    s: np.ndarray  # (M,) arc length of the dense path, metres
    xy: np.ndarray  # (M, 2)
    yaw: np.ndarray  # (M,) unwrapped heading along the path
    start_ns: int
    speed: float
    speed_var: float
    speed_period_s: float
    speed_phase: float
    s0: float  # arc length at start_ns (a margin so stamps slightly before the first frame are valid)
    wobble_deg: float
    wobble_period_s: float
    wobble_phase: float
    lane_offset: float
    meta: dict[str, Any] = field(default_factory=dict)

    def arc_at(self, stamps_ns: np.ndarray) -> np.ndarray:
        """Arc length at stamps: ``s(t) = s0 + v t − v·a·T/2π (cos(2πt/T + φ) − cos φ)`` (speed v(1 + a sin))."""
        tt = (np.asarray(stamps_ns, dtype=np.int64) - self.start_ns).astype(np.float64) / NS
        w = 2 * np.pi / self.speed_period_s
        return self.s0 + self.speed * (tt - self.speed_var / w * (np.cos(w * tt + self.speed_phase)
                                                                  - np.cos(self.speed_phase)))

    def pose_at(self, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``T_world_rig`` at integer-ns stamps: ``(t (N, 3), q (N, 4) wxyz)``; planar (z = 0, yaw only)."""
        s = self.arc_at(stamps_ns)
        if np.any(s < 0) or np.any(s > self.s[-1]):
            raise ConfigError(f"track {self.name}: stamps outside the generated path (arc {s.min():.1f}.."
                              f"{s.max():.1f} m of {self.s[-1]:.1f} m); generate with more route length")
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        tt = (np.asarray(stamps_ns, dtype=np.int64) - self.start_ns).astype(np.float64) / NS
        yaw = np.interp(s, self.s, self.yaw) + np.radians(self.wobble_deg) * np.sin(
            2 * np.pi * tt / self.wobble_period_s + self.wobble_phase)
        t = np.stack([x, y, np.zeros_like(x)], -1)
        return t, quat_from_yaw(yaw)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "direction": self.direction,
                "route": [list(n) for n in self.route], "start_ns": int(self.start_ns),
                "speed_mps": round(self.speed, 4), "lane_offset_m": round(self.lane_offset, 4),
                "path_length_m": round(float(self.s[-1]), 3), **self.meta}


Edge = tuple[tuple[int, int], tuple[int, int]]


def random_walk(world: World, rng: np.random.Generator, length_m: float,
                one_way: set[Edge] | None = None) -> list[tuple[int, int]]:
    """A walk over corridor intersections without U-turns, at least ``length_m`` long.

    ``one_way``: directed corridor edges already driven (by earlier mapping routes); the walk avoids driving any of
    them the other way, and its own edges the other way too, whenever another turn exists. Why: mapping must keep
    one heading per corridor stretch, or a "reversed" query is a heading that mapping already drove (measured on
    the demo world before this rule: mapping route 1 drove 93 % of route 0 backwards).
    """
    nodes = world.nodes()
    keys = sorted(nodes)
    cur = keys[int(rng.integers(len(keys)))]
    route = [cur]
    prev: tuple[int, int] | None = None
    total = 0.0
    driven: set[Edge] = set(one_way or ())
    while total < length_m:
        nb = [n for n in world.neighbours(cur) if n != prev] or world.neighbours(cur)
        nb = [n for n in nb if (n, cur) not in driven] or nb
        nxt = nb[int(rng.integers(len(nb)))]
        driven.add((cur, nxt))
        total += float(np.linalg.norm(nodes[nxt] - nodes[cur]))
        prev, cur = cur, nxt
        route.append(cur)
    return route


def _smooth_path(world: World, route: list[tuple[int, int]], lane_offset: float, step: float = 0.05,
                 sigma_m: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense path along the route: centre line, Gaussian-smoothed corners, shifted right by ``lane_offset``."""
    nodes = world.nodes()
    pts = np.array([nodes[n] for n in route])
    seg = np.diff(pts, axis=0)
    seglen = np.linalg.norm(seg, axis=1)
    s_nodes = np.concatenate([[0.0], np.cumsum(seglen)])
    s = np.arange(0.0, s_nodes[-1], step)
    xy = np.stack([np.interp(s, s_nodes, pts[:, 0]), np.interp(s, s_nodes, pts[:, 1])], -1)
    k = int(3 * sigma_m / step)
    ker = np.exp(-0.5 * (np.arange(-k, k + 1) * step / sigma_m) ** 2)
    ker /= ker.sum()
    pad = np.concatenate([np.repeat(xy[:1], k, 0), xy, np.repeat(xy[-1:], k, 0)])
    xy = np.stack([np.convolve(pad[:, c], ker, mode="valid") for c in range(2)], -1)
    d = np.gradient(xy, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    right = np.stack([d[:, 1], -d[:, 0]], -1)
    xy = xy + lane_offset * right
    ds = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    keep = np.concatenate([[True], ds > 1e-6])
    xy = xy[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    d = np.gradient(xy, s, axis=0)
    yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    return s, xy, yaw


LANE_RANGE = (0.3, 0.8)  # metres right of the corridor centre line: where a vehicle drives in its own heading
#: Lateral span of the mapping passes of a route (metres right of the centre line, in the route's heading), by
#: ``mapping_side``: ``both`` covers the width a robot drives in either direction (a vehicle driving the route the
#: other way keeps right of *its* heading, i.e. at −0.8…−0.3 m here), so a reversed query is a new heading at
#: mapped places — the paper's case; ``right`` keeps every pass right of the centre line, so a reversed query is a
#: new heading *and* an unmapped side of the corridor (the named hard case).
MAPPING_WIDTH = {"both": (-0.8, 0.8), "right": LANE_RANGE}
MAPPING_SIDES = tuple(MAPPING_WIDTH)


def make_track(world: World, name: str, split: str, direction: str, route: list[tuple[int, int]],
               rng: np.random.Generator, start_ns: int, speed: float = 1.0, lane: float | None = None,
               lane_range: tuple[float, float] | None = None) -> Track:
    """A :class:`Track` along ``route`` with randomised lane offset (unless ``lane`` is given; drawn in
    ``lane_range`` instead of ``LANE_RANGE`` when given — the same draw, rescaled, so the other parameters stay the
    same), speed profile and heading wobble."""
    drawn = float(rng.uniform(*LANE_RANGE))
    if lane_range is not None:
        lo, hi = LANE_RANGE
        drawn = lane_range[0] + (drawn - lo) / (hi - lo) * (lane_range[1] - lane_range[0])
    lane = drawn if lane is None else float(lane)
    s, xy, yaw = _smooth_path(world, route, lane)
    return Track(name=name, split=split, direction=direction, route=route, s=s, xy=xy, yaw=yaw,
                 start_ns=int(start_ns), speed=float(speed * rng.uniform(0.9, 1.1)),
                 speed_var=float(rng.uniform(0.05, 0.15)), speed_period_s=float(rng.uniform(8.0, 20.0)),
                 speed_phase=float(rng.uniform(0, 2 * np.pi)), s0=2.0, wobble_deg=float(rng.uniform(1.0, 4.0)),
                 wobble_period_s=float(rng.uniform(4.0, 9.0)), wobble_phase=float(rng.uniform(0, 2 * np.pi)),
                 lane_offset=lane)


def mapping_lane(pass_index: int, passes: int, rng: np.random.Generator, side: str = "both") -> float:
    """Lane of mapping pass ``pass_index`` of ``passes``: evenly spread over ``MAPPING_WIDTH[side]`` (± a little),
    so the passes together cover the corridor's width the way a mapping platform drives a floor several times."""
    if side not in MAPPING_WIDTH:
        raise ConfigError(f"mapping side '{side}' is not one of {MAPPING_SIDES}")
    lo, hi = MAPPING_WIDTH[side]
    width = (hi - lo) / passes
    return float(lo + (pass_index + 0.5) * width + rng.uniform(-0.2, 0.2) * width)


def plan_tracks(world: World, seed: int, frames: int, rate_hz: float, mapping: int, validation: int,
                query: int, speed: float = 1.0, query_direction: str = "reverse", mapping_lanes: int = 1,
                validation_route: str = "walk", mapping_side: str = "both") -> list[Track]:
    """Mapping, validation and query tracks for one world (deterministic from ``seed``).

    Mapping route k is driven ``mapping_lanes`` times (``mapping_kk`` for one pass, ``mapping_kk_lanep`` for
    several), each pass in its own lane across the corridor and, through its track index, under its own lighting.
    Query track k revisits mapping route k — driven in reverse (the paper's hard case: test data runs the other way,
    which track augmentation addresses) or forward (``query_direction="forward"``: another lane, speed and lighting
    on the same route) — and further query tracks are new random walks. ``query_direction="both"`` adds, after the
    forward query tracks, one reversed track per revisited route in the split ``query_reverse`` (same places, same
    world, the other heading), so one training run is measured on both. Validation tracks are random walks
    (``validation_route="walk"``) or revisit mapping routes from the last one backwards the way the query does
    (``"revisit"``; forward when ``query_direction`` is ``both``: the reversed heading is never seen before the
    query), so that checkpoint selection measures what the query measures: places that were mapped.

    A reversed revisit drives exactly the stretch of the route that mapping drove (:func:`_onto_mapped_stretch`):
    a route is generated longer than one track drives, so a reversed track started at the route's far end would
    spend most of its frames where no mapping pass has been.
    """
    # path needed: start margin + frames at the fastest speed profile (+10 % speed, +15 % variation), + corner cuts
    need = (2.0 + 1.3 * speed * (frames + 2) / rate_hz) * 1.1 + 6.0
    tracks: list[Track] = []
    mapping_routes = []
    index = 0
    one_way: set[Edge] = set()
    for k in range(mapping):
        rng = np.random.default_rng([seed, 0x7AC, 0, k])
        route = random_walk(world, rng, need, one_way)
        one_way |= set(zip(route[:-1], route[1:], strict=True))
        mapping_routes.append(route)
        for lane_i in range(mapping_lanes):
            prng = rng if lane_i == 0 else np.random.default_rng([seed, 0x7AC, 0, k, lane_i])
            lane = None if mapping_lanes == 1 else mapping_lane(lane_i, mapping_lanes, prng, mapping_side)
            name = f"mapping_{k:02d}" if mapping_lanes == 1 else f"mapping_{k:02d}_lane{lane_i}"
            tracks.append(make_track(world, name, "mapping", "forward", route, prng,
                                     EPOCH_NS + index * TRACK_SPACING_NS, speed, lane=lane))
            index += 1
    mapped = [t for t in tracks if t.split == "mapping"]

    def passes_of(k: int) -> list[Track]:
        return [t for t in mapped if t.name == f"mapping_{k:02d}" or t.name.startswith(f"mapping_{k:02d}_")]

    for k in range(validation):
        rng = np.random.default_rng([seed, 0x7AC, 1, k])
        reverse, rk = False, 0
        if validation_route == "revisit" and mapping_routes:
            rk = (len(mapping_routes) - 1 - k) % len(mapping_routes)
            route = list(mapping_routes[rk])
            reverse = query_direction == "reverse"
            if reverse:
                route = route[::-1]
        else:
            route = random_walk(world, rng, need)
        tr = make_track(world, f"validation_{k:02d}", "validation", "walk", route,
                        rng, EPOCH_NS + index * TRACK_SPACING_NS, speed,
                        lane_range=_reversed_lane_range(passes_of(rk)) if reverse else None)
        tracks.append(_onto_mapped_stretch(tr, passes_of(rk), frames, rate_hz) if reverse else tr)
        index += 1
    for k in range(query):
        rng = np.random.default_rng([seed, 0x7AC, 2, k])
        if k < len(mapping_routes) and query_direction in ("forward", "both"):
            route, direction = list(mapping_routes[k]), "forward"
        elif k < len(mapping_routes):
            route, direction = list(reversed(mapping_routes[k])), "reverse"
        else:
            route, direction = random_walk(world, rng, need), "walk"
        tr = make_track(world, f"query_{k:02d}", "query", direction, route, rng,
                        EPOCH_NS + index * TRACK_SPACING_NS, speed,
                        lane_range=_reversed_lane_range(passes_of(k)) if direction == "reverse" else None)
        tracks.append(_onto_mapped_stretch(tr, passes_of(k), frames, rate_hz) if direction == "reverse" else tr)
        index += 1
    if query_direction == "both":
        for k in range(min(query, len(mapping_routes))):
            rng = np.random.default_rng([seed, 0x7AC, 3, k])
            tr = make_track(world, f"query_reverse_{k:02d}", "query_reverse", "reverse",
                            list(reversed(mapping_routes[k])), rng, EPOCH_NS + index * TRACK_SPACING_NS, speed,
                            lane_range=_reversed_lane_range(passes_of(k)))
            tracks.append(_onto_mapped_stretch(tr, passes_of(k), frames, rate_hz))
            index += 1
    return tracks


def _reversed_lane_range(passes: list[Track]) -> tuple[float, float] | None:
    """Lanes (right of the *reversed* heading) that lie between a route's outermost mapping passes, within
    ``LANE_RANGE``; ``None`` when there are none (one-sided mapping: the named hard case drives the unmapped side).

    Why: "same places, new heading" (the paper's case). A lane drawn from the whole of ``LANE_RANGE`` put the
    demo's reversed query 0.29 m outside the outermost pass, so it also measured lateral extrapolation.
    """
    if len(passes) < 2:
        return None
    route_frame = [p.lane_offset for p in passes]  # right of the route's heading = left of the reversed one
    lo, hi = max(LANE_RANGE[0], -max(route_frame)), min(LANE_RANGE[1], -min(route_frame))
    return (lo, hi) if hi > lo else None


def _onto_mapped_stretch(track: Track, passes: list[Track], frames: int, rate_hz: float,
                         margin_m: float = 0.5) -> Track:
    """Make a reversed revisit drive the stretch its route's mapping passes drove, from the end all of them reached
    back to where they started (``margin_m`` inside), by moving its start arc ``s0`` and scaling its speed profile.

    Why: routes are generated longer than a track drives (margin for the fastest speed profile), and mapping passes
    drive the route's first ~50 m; a reversed track starting at the route's far end saw unmapped corridor for most
    of its frames (measured: 70 % of the frames > 0.5 m from any mapped pose, p90 13 m).
    """
    if not passes:
        return track
    period_ns = int(round(NS / rate_hz))
    last_ns = (frames - 1) * period_ns
    ends = [p.pose_at(np.array([p.start_ns + last_ns]))[0][0, :2] for p in passes]
    ends_arc = [float(p.arc_at(np.array([p.start_ns + last_ns]))[0]) for p in passes]
    first = passes[0].pose_at(np.array([passes[0].start_ns]))[0][0, :2]
    end = ends[int(np.argmin(ends_arc))]  # the shortest pass: every pass covers up to here

    def arc_near(p: np.ndarray) -> float:
        return float(track.s[int(np.argmin(np.linalg.norm(track.xy - p, axis=1)))])

    s_from, s_to = arc_near(end) + margin_m, arc_near(first) - margin_m
    if s_to - s_from < 1.0:
        return track
    track.s0 = s_from
    span = float(track.arc_at(np.array([track.start_ns + last_ns]))[0]) - s_from
    track.speed *= (s_to - s_from) / span
    track.meta["mapped_stretch_m"] = [round(s_from, 3), round(s_to, 3)]
    return track


@dataclass(frozen=True)
class StampPlan:
    """Frame and per-camera stamps of one track: who was captured when, and which images were dropped."""

    frame_ns: np.ndarray  # (F,) base (trigger) stamps
    camera_ns: np.ndarray  # (F, C) each camera's own stamp (integer µs, stored in ns)
    present: np.ndarray  # (F, C) bool, False = dropped frame


def camera_offsets_ns(seed: int, num_cameras: int, shared_trigger: bool, max_offset_ms: float = 15.0
                      ) -> np.ndarray:
    """Constant per-camera clock offsets (phones), in whole µs; zeros for a shared hardware trigger."""
    if shared_trigger:
        return np.zeros(num_cameras, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x0FF5])
    return rng.integers(-int(max_offset_ms * 1000), int(max_offset_ms * 1000) + 1, num_cameras) * 1000


def plan_stamps(track: Track, frames: int, rate_hz: float, offsets_ns: np.ndarray, shared_trigger: bool,
                jitter_ms: float, drop_rate: float, seed: int, track_index: int) -> StampPlan:
    """Per-frame trigger stamps at ``rate_hz``, per-camera offset + uniform jitter (µs grid), random drops."""
    rng = np.random.default_rng([seed, 0x57A, track_index])
    period = int(round(NS / rate_hz))
    frame_ns = track.start_ns + np.arange(frames, dtype=np.int64) * period
    c = len(offsets_ns)
    if shared_trigger:
        cam = np.repeat(frame_ns[:, None], c, 1)
    else:
        j = int(round(jitter_ms * 1000))
        cam = frame_ns[:, None] + offsets_ns[None, :] + rng.integers(-j, j + 1, (frames, c)) * 1000
    present = rng.random((frames, c)) >= drop_rate
    return StampPlan(frame_ns, cam.astype(np.int64), present)
