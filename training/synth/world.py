"""A procedural indoor floor: a 2-D floor plan extruded to vertical walls, with baked wall textures and lighting.

Why a floor plan of corridors around blocks: a shopping-mall floor (the NAVER LABS department stores) is a grid of
corridors between shop blocks, with an open hall somewhere. That gives long repetitive corridors, distinct shop
fronts, and loops that tracks can drive in either direction, which is what absolute pose regression has to cope
with. Everything is deterministic from ``WorldConfig.seed``.

Layout (metres, world frame ``map``: x east, y north, z up; the floor is z = 0, the ceiling z = ``wall_height``)::

    corridor centre lines at xs[0..nx] and ys[0..ny]; blocks between consecutive lines;
    one block (or more) is an open hall with pillars instead of shop walls;
    the outer wall runs half a corridor width outside the outermost centre lines.

Walls are line segments ``a → b`` (vertical planes from z = 0 to ``wall_height``). Each segment owns a strip of the
texture atlas: texel column ``tex_offset + floor(s · px_per_m)`` at distance ``s`` from ``a`` along the wall, row
``floor((wall_height − z) · px_per_m)`` (row 0 at the top). Both faces of a wall show the same texture.

Hard cases on purpose (the paper's failure modes): textureless walls (flat colour), and a *repeated* tile — the same
poster/pattern tile copied on many walls so two places look alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError

#: Wall kinds (``World.kind``); names are used in world.json and docs.
KIND_SHOP, KIND_POSTERS, KIND_TEXTURELESS, KIND_REPEATED = 0, 1, 2, 3
KIND_NAMES = {KIND_SHOP: "shop", KIND_POSTERS: "posters", KIND_TEXTURELESS: "textureless", KIND_REPEATED: "repeated"}


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the procedural floor; every field ends up in world.json."""

    seed: int = 0
    blocks_x: int = 2
    blocks_y: int = 2
    block_size_x: tuple[float, float] = (12.0, 18.0)  # random range per block column, metres
    block_size_y: tuple[float, float] = (7.0, 11.0)
    corridor_width: float = 4.0
    wall_height: float = 3.0
    shop_width: tuple[float, float] = (3.0, 6.0)  # facade segment lengths
    open_halls: int = 1  # blocks replaced by an open hall with pillars
    px_per_m: int = 32  # texture resolution
    kind_weights: tuple[float, float, float, float] = (0.45, 0.2, 0.15, 0.2)  # shop, posters, textureless, repeated

    def validate(self) -> None:
        """Reject parameters that cannot produce a drivable floor."""
        if self.blocks_x < 1 or self.blocks_y < 1:
            raise ConfigError(f"world: blocks_x/blocks_y must be >= 1, got {self.blocks_x}x{self.blocks_y}")
        if self.corridor_width < 2.0:
            raise ConfigError(f"world: corridor_width must be >= 2 m (tracks keep 1 m from walls), "
                              f"got {self.corridor_width}")
        if not 0 <= self.open_halls <= self.blocks_x * self.blocks_y:
            raise ConfigError(f"world: open_halls must be in 0..{self.blocks_x * self.blocks_y}")
        if self.wall_height <= 0 or self.px_per_m < 4:
            raise ConfigError("world: wall_height must be > 0 and px_per_m >= 4")
        for name in ("block_size_x", "block_size_y", "shop_width"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"world: {name} must be a range 0 < lo <= hi, got {(lo, hi)}")


@dataclass
class World:
    """The built floor: wall segments, their texture strips, corridor graph and the seed-derived palette."""

    config: WorldConfig
    a: np.ndarray  # (N, 2) wall start points
    b: np.ndarray  # (N, 2) wall end points
    kind: np.ndarray  # (N,) KIND_*
    tex_offset: np.ndarray  # (N,) first atlas column of each wall
    tex_len: np.ndarray  # (N,) atlas columns of each wall
    atlas: np.ndarray  # (H_px, total_cols, 3) uint8
    xs: np.ndarray  # corridor centre lines (x)
    ys: np.ndarray  # corridor centre lines (y)
    open_blocks: list[tuple[int, int]]
    floor_tint: np.ndarray  # (gy, gx, 3) float32 low-frequency floor colour zones on a 1 m grid
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax of the outer wall
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_walls(self) -> int:
        return len(self.a)

    @property
    def wall_length(self) -> np.ndarray:
        return np.linalg.norm(self.b - self.a, axis=1)

    def nodes(self) -> dict[tuple[int, int], np.ndarray]:
        """Corridor-graph nodes (intersections of centre lines) → their (x, y)."""
        return {(i, j): np.array([self.xs[i], self.ys[j]]) for i in range(len(self.xs)) for j in range(len(self.ys))}

    def neighbours(self, node: tuple[int, int]) -> list[tuple[int, int]]:
        """Grid neighbours of a corridor intersection (every centre-line segment is a corridor)."""
        i, j = node
        out = [(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        return [(p, q) for p, q in out if 0 <= p < len(self.xs) and 0 <= q < len(self.ys)]

    def texel(self, wall: int, s: float, z: float) -> np.ndarray:
        """Atlas colour of wall ``wall`` at distance ``s`` (m) from its start and height ``z`` (m)."""
        ppm = self.config.px_per_m
        col = int(self.tex_offset[wall] + min(max(int(math.floor(s * ppm)), 0), int(self.tex_len[wall]) - 1))
        row = min(max(int(math.floor((self.config.wall_height - z) * ppm)), 0), self.atlas.shape[0] - 1)
        return self.atlas[row, col]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for world.json."""
        kinds = {KIND_NAMES[k]: int(np.sum(self.kind == k)) for k in KIND_NAMES}
        return {
            "config": asdict(self.config),
            "num_walls": self.num_walls,
            "wall_kinds": kinds,
            "corridor_lines_x": [round(float(v), 4) for v in self.xs],
            "corridor_lines_y": [round(float(v), 4) for v in self.ys],
            "open_hall_blocks": [list(b) for b in self.open_blocks],
            "bounds": [round(float(v), 4) for v in self.bounds],
        }


# ------------------------------------------------------------------------------------------------ textures
def _palette(rng: np.random.Generator, n: int, sat: tuple[float, float] = (0.5, 1.0),
             val: tuple[float, float] = (0.45, 1.0)) -> np.ndarray:
    """``n`` random HSV colours as float RGB in [0, 1]; hues spread so neighbours differ."""
    h = (rng.random() + np.arange(n) / max(n, 1) + rng.normal(0, 0.03, n)) % 1.0
    s = rng.uniform(*sat, n)
    v = rng.uniform(*val, n)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
                      np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1)], 0)
    return table[i, np.arange(n)]


def _pattern(rng: np.random.Generator, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """A random procedural pattern over wall coordinates (metres) → float RGB (H, L, 3)."""
    c0, c1 = _palette(rng, 2, sat=(0.2, 0.8), val=(0.35, 0.95))
    kind = int(rng.integers(0, 6))
    if kind == 0:  # vertical stripes
        m = np.sin(2 * np.pi * X / rng.uniform(0.2, 0.8)) > 0
    elif kind == 1:  # horizontal stripes
        m = np.sin(2 * np.pi * Z / rng.uniform(0.15, 0.6)) > 0
    elif kind == 2:  # checker
        p = rng.uniform(0.25, 0.7)
        m = ((np.floor(X / p) + np.floor(Z / p)) % 2) == 0
    elif kind == 3:  # bricks with mortar
        bh, bw = rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.8)
        row = np.floor(Z / bh)
        xo = X + (row % 2) * bw / 2
        m = ((Z % bh) > 0.025) & ((xo % bw) > 0.025)
    elif kind == 4:  # dots on a grid
        p = rng.uniform(0.3, 0.7)
        r = rng.uniform(0.08, 0.3) * p
        m = ((X % p) - p / 2) ** 2 + ((Z % p) - p / 2) ** 2 < r * r
    else:  # smooth value noise, thresholded into blobs
        g = rng.random((int(Z.max() / 0.4) + 3, int(X.max() / 0.4) + 3))
        m = _bilinear(g, Z / 0.4, X / 0.4) > 0.5
    return np.where(m[..., None], c0, c1)


def _bilinear(g: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    r0 = np.clip(np.floor(r).astype(int), 0, g.shape[0] - 2)
    c0 = np.clip(np.floor(c).astype(int), 0, g.shape[1] - 2)
    fr, fc = np.clip(r - r0, 0, 1), np.clip(c - c0, 0, 1)
    return ((g[r0, c0] * (1 - fc) + g[r0, c0 + 1] * fc) * (1 - fr)
            + (g[r0 + 1, c0] * (1 - fc) + g[r0 + 1, c0 + 1] * fc) * fr)


def _poster(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Z: np.ndarray, x0: float, z0: float,
            w: float, h: float) -> None:
    """Paint a poster (saturated background + a contrasting shape) into ``img`` in place."""
    bg, fg = _palette(rng, 2, sat=(0.75, 1.0), val=(0.7, 1.0))
    inside = (X >= x0) & (X < x0 + w) & (Z >= z0) & (Z < z0 + h)
    img[inside] = bg
    u = (X - x0) / w - 0.5  # poster-local coordinates in [-0.5, 0.5]
    v = (Z - z0) / h - 0.5
    shape = int(rng.integers(0, 5))
    if shape == 0:  # disc
        m = u * u + v * v < 0.09
    elif shape == 1:  # triangle
        m = (v > -0.3) & (np.abs(u) < (0.3 - v) * 0.6)
    elif shape == 2:  # diamond
        m = np.abs(u) + np.abs(v) < 0.32
    elif shape == 3:  # cross
        m = ((np.abs(u) < 0.08) | (np.abs(v) < 0.08)) & (np.abs(u) < 0.35) & (np.abs(v) < 0.35)
    else:  # bars
        m = (np.sin(2 * np.pi * u * rng.integers(2, 5)) > 0) & (np.abs(v) < 0.3)
    img[inside & m] = fg


def _sign(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Z: np.ndarray, length: float,
          z0: float, z1: float) -> None:
    """A shop sign: a coloured band with block 'glyphs' (distinct per shop, readable as a place cue)."""
    bg, fg = _palette(rng, 2, sat=(0.6, 1.0), val=(0.2, 1.0))
    band = (Z >= z0) & (Z < z1)
    img[band] = bg
    gw = rng.uniform(0.12, 0.25)
    n = int(rng.integers(3, 9))
    start = rng.uniform(0.2, max(0.25, length - n * gw * 1.3 - 0.2))
    bits = rng.random((n, 3)) > 0.4
    for k in range(n):
        gx = start + k * gw * 1.3
        for r in range(3):
            if bits[k, r]:
                zr0 = z0 + (z1 - z0) * (0.15 + 0.25 * r)
                img[band & (X >= gx) & (X < gx + gw) & (Z >= zr0) & (Z < zr0 + (z1 - z0) * 0.2)] = fg


def _wall_texture(rng: np.random.Generator, kind: int, length: float, cfg: WorldConfig,
                  repeated_tile: np.ndarray) -> np.ndarray:
    """Bake one wall's texture strip (H_px, L_px, 3) uint8."""
    ppm = cfg.px_per_m
    hp, lp = int(round(cfg.wall_height * ppm)), max(1, int(math.ceil(length * ppm)))
    X = (np.arange(lp) + 0.5)[None, :] / ppm * np.ones((hp, 1))
    Z = cfg.wall_height - (np.arange(hp) + 0.5)[:, None] / ppm * np.ones((1, lp))
    if kind == KIND_TEXTURELESS:
        c = _palette(rng, 1, sat=(0.0, 0.15), val=(0.6, 0.9))[0]
        img = np.broadcast_to(c, (hp, lp, 3)).copy()
    elif kind == KIND_REPEATED:
        reps = int(math.ceil(lp / repeated_tile.shape[1]))
        return np.tile(repeated_tile, (1, reps, 1))[:, :lp].copy()
    elif kind == KIND_POSTERS:
        c = _palette(rng, 1, sat=(0.0, 0.3), val=(0.5, 0.85))[0]
        img = np.broadcast_to(c, (hp, lp, 3)).copy()
        x = rng.uniform(0.2, 0.8)
        while x < length - 0.8:
            w, h = rng.uniform(0.5, 1.2), rng.uniform(0.7, 1.3)
            if x + w > length - 0.1:
                break
            _poster(rng, img, X, Z, x, rng.uniform(0.9, 1.5), w, h)
            x += w + rng.uniform(0.3, 1.5)
    else:  # shop front: patterned facade, a window-ish panel, a sign band, one or two posters
        img = _pattern(rng, X, Z)
        _sign(rng, img, X, Z, length, cfg.wall_height - 0.75, cfg.wall_height - 0.3)
        for _ in range(int(rng.integers(1, 3))):
            w = rng.uniform(0.5, min(1.2, length / 2))
            _poster(rng, img, X, Z, rng.uniform(0.1, max(0.15, length - w - 0.1)), rng.uniform(0.9, 1.4), w,
                    rng.uniform(0.6, 1.0))
        # a darker skirting band at the floor helps the eye (and the network) read the wall base
        img[Z < 0.12] *= 0.45
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ floor plan
def _split(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray, width: tuple[float, float]
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a straight wall into facade segments of random length in ``width``."""
    length = float(np.linalg.norm(p1 - p0))
    cuts = [0.0]
    while length - cuts[-1] > width[1]:
        cuts.append(cuts[-1] + rng.uniform(*width))
    cuts.append(length)
    d = (p1 - p0) / length
    return [(p0 + d * s0, p0 + d * s1) for s0, s1 in zip(cuts[:-1], cuts[1:], strict=True)]


def _box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four sides of an axis-aligned rectangle, counter-clockwise."""
    p = [np.array(v, dtype=np.float64) for v in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    return [(p[k], p[(k + 1) % 4]) for k in range(4)]


def build_world(cfg: WorldConfig | None = None) -> World:
    """Build the floor for ``cfg`` (deterministic from ``cfg.seed``)."""
    cfg = cfg or WorldConfig()
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    cw = cfg.corridor_width
    bx = rng.uniform(*cfg.block_size_x, cfg.blocks_x)
    by = rng.uniform(*cfg.block_size_y, cfg.blocks_y)
    xs = np.concatenate([[0.0], np.cumsum(bx + cw)])
    ys = np.concatenate([[0.0], np.cumsum(by + cw)])
    blocks = [(i, j) for i in range(cfg.blocks_x) for j in range(cfg.blocks_y)]
    open_idx = rng.choice(len(blocks), size=cfg.open_halls, replace=False) if cfg.open_halls else []
    open_blocks = sorted(blocks[int(k)] for k in open_idx)

    segments: list[tuple[np.ndarray, np.ndarray]] = []
    xmin, ymin, xmax, ymax = -cw / 2, -cw / 2, xs[-1] + cw / 2, ys[-1] + cw / 2
    for p0, p1 in _box(xmin, ymin, xmax, ymax):
        segments += _split(rng, p0, p1, cfg.shop_width)
    for i, j in blocks:
        x0, x1 = xs[i] + cw / 2, xs[i + 1] - cw / 2
        y0, y1 = ys[j] + cw / 2, ys[j + 1] - cw / 2
        if (i, j) in open_blocks:
            # open hall: free floor with square pillars kept 1.5 m away from the corridor edges
            for _ in range(int(rng.integers(3, 6))):
                cx, cy = rng.uniform(x0 + 2.0, x1 - 2.0), rng.uniform(y0 + 2.0, y1 - 2.0)
                r = rng.uniform(0.25, 0.45)
                segments += _box(cx - r, cy - r, cx + r, cy + r)
        else:
            for p0, p1 in _box(x0, y0, x1, y1):
                segments += _split(rng, p0, p1, cfg.shop_width)

    n = len(segments)
    a = np.array([s[0] for s in segments])
    b = np.array([s[1] for s in segments])
    lengths = np.linalg.norm(b - a, axis=1)
    w = np.asarray(cfg.kind_weights, dtype=np.float64)
    kind = rng.choice(4, size=n, p=w / w.sum())
    kind[lengths < 1.2] = KIND_TEXTURELESS  # pillars: plain
    hp = int(round(cfg.wall_height * cfg.px_per_m))
    tile_rng = np.random.default_rng([cfg.seed, 0x711E])
    tile_len = 2.0
    repeated_tile = _wall_texture(tile_rng, KIND_POSTERS, tile_len, cfg, np.zeros((hp, 1, 3), np.uint8))
    strips = []
    for k in range(n):
        wall_rng = np.random.default_rng([cfg.seed, 0x3A11, k])
        strips.append(_wall_texture(wall_rng, int(kind[k]), float(lengths[k]), cfg, repeated_tile))
    tex_len = np.array([s.shape[1] for s in strips], dtype=np.int64)
    tex_offset = np.concatenate([[0], np.cumsum(tex_len)[:-1]]).astype(np.int64)
    atlas = np.concatenate(strips, axis=1)

    gx, gy = int(math.ceil(xmax - xmin)) + 2, int(math.ceil(ymax - ymin)) + 2
    coarse = _palette(rng, (gy // 8 + 2) * (gx // 8 + 2), sat=(0.05, 0.3), val=(0.55, 0.85))
    coarse = coarse.reshape(gy // 8 + 2, gx // 8 + 2, 3)
    rr, cc = np.meshgrid(np.arange(gy) / 8.0, np.arange(gx) / 8.0, indexing="ij")
    floor_tint = np.stack([_bilinear(coarse[..., ch], rr, cc) for ch in range(3)], -1).astype(np.float32)
    return World(cfg, a, b, kind.astype(np.int64), tex_offset, tex_len, atlas, xs, ys, open_blocks, floor_tint,
                 (xmin, ymin, xmax, ymax))


# ------------------------------------------------------------------------------------------------ lighting
@dataclass(frozen=True)
class Lighting:
    """Per-run lighting: global gain, colour tint and a baked light map over the floor (0.25 m cells).

    Why per run: the same place under different lights is the change between mapping and query sessions that a
    regressor must tolerate; each track gets its own ``Lighting`` from its own seed.
    """

    gain: float
    tint: tuple[float, float, float]
    light_map: np.ndarray  # (gy, gx) float32 in ~[0.35, 1.4]
    origin: tuple[float, float]
    cell: float
    lights_on: int
    lights_total: int

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Light level at world points (nearest cell), float32."""
        c = np.clip(((x - self.origin[0]) / self.cell).astype(np.int64), 0, self.light_map.shape[1] - 1)
        r = np.clip(((y - self.origin[1]) / self.cell).astype(np.int64), 0, self.light_map.shape[0] - 1)
        return self.light_map[r, c]

    def summary(self) -> dict[str, Any]:
        return {"gain": round(self.gain, 4), "tint": [round(v, 4) for v in self.tint],
                "lights_on": self.lights_on, "lights_total": self.lights_total}


def make_lighting(world: World, seed: int | tuple[int, ...], variation: bool = True) -> Lighting:
    """Ceiling lights every ~4 m along the corridors; a random subset off and random intensities per run."""
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = world.bounds
    lights = []
    for x in world.xs:
        for y in np.arange(ymin + 2.0, ymax - 1.0, 4.0):
            lights.append((x, y))
    for y in world.ys:
        for x in np.arange(xmin + 2.0, xmax - 1.0, 4.0):
            lights.append((x, y))
    for i, j in world.open_blocks:
        cx, cy = (world.xs[i] + world.xs[i + 1]) / 2, (world.ys[j] + world.ys[j + 1]) / 2
        lights += [(cx + dx, cy + dy) for dx in (-3.0, 3.0) for dy in (-2.0, 2.0)]
    lp = np.array(lights)
    if variation:
        on = rng.random(len(lp)) > 0.15
        inten = rng.uniform(0.6, 1.1, len(lp)) * on
        gain = float(rng.uniform(0.8, 1.15))
        tint = tuple(float(v) for v in 1.0 + rng.uniform(-0.06, 0.06, 3))
    else:
        on = np.ones(len(lp), bool)
        inten, gain, tint = np.full(len(lp), 0.85), 1.0, (1.0, 1.0, 1.0)
    cell = 0.25
    gx, gy = int((xmax - xmin) / cell) + 2, int((ymax - ymin) / cell) + 2
    X = xmin + (np.arange(gx) + 0.5) * cell
    Y = ymin + (np.arange(gy) + 0.5) * cell
    acc = np.zeros((gy, gx))
    sig2 = 2 * 2.2**2
    for (lx, ly), it in zip(lp, inten, strict=True):
        if it > 0:
            acc += it * np.exp(-((Y[:, None] - ly) ** 2) / sig2) * np.exp(-((X[None, :] - lx) ** 2) / sig2)
    light_map = (0.4 + 0.6 * np.tanh(acc)).astype(np.float32)
    return Lighting(gain, tint, light_map, (xmin, ymin), cell, int(on.sum()), len(lp))  # type: ignore[arg-type]
