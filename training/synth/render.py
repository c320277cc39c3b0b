"""Vectorised ray-caster for the procedural floor: walls, floor and ceiling seen by pinhole cameras.

Why a 2.5-D caster: the walls are vertical planes, so a ray's wall hit depends only on its horizontal direction.
For an *upright* camera (optical y axis pointing straight down, as on every shipped rig) all pixels of an image
column share that direction, so the wall test runs once per column (``B × W × N_walls``, a matmul) and every pixel
then only needs its height along the column. Cameras that are tilted or rolled fall back to the same test per pixel
(exact, slower). Floor and ceiling are the planes z = 0 and z = wall_height.

Camera model (the contract the GT must satisfy): pixel ``(u, v)`` (column, row; pixel centres at +0.5) sees the
ray ``R_world_cam · [(u − cx)/fx, (v − cy)/fy, 1]`` from the camera centre, in the optical frame (z forward,
x right, y down). ``project`` is its exact inverse and is what the reprojection test uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_to_matrix

from .world import Lighting, World

SURFACE_FLOOR, SURFACE_CEILING = -1, -2
_NO_HIT = 1e6


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics and image size used for rendering (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def validate(self) -> None:
        if self.width < 1 or self.height < 1 or self.fx <= 0 or self.fy <= 0:
            raise ConfigError(f"camera model needs positive size and focal lengths, got {self}")


@dataclass
class Geometry:
    """Per-pixel ground truth of a render: what surface each pixel sees and where (world metres)."""

    surface: np.ndarray  # (B, H, W) int: wall index >= 0, SURFACE_FLOOR or SURFACE_CEILING
    xyz: np.ndarray  # (B, H, W, 3) float32 hit point in the world


def project(model: CameraModel, t_world_cam: np.ndarray, q_world_cam: np.ndarray, points: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera: ``(uv (..., 2) pixel coords, depth (...,))``; depth <= 0 is behind."""
    r = quat_to_matrix(np.asarray(q_world_cam, dtype=np.float64))
    pc = (np.asarray(points, dtype=np.float64) - np.asarray(t_world_cam)) @ r  # R^T (p - t) for row vectors
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = model.fx * pc[..., 0] / z + model.cx
        v = model.fy * pc[..., 1] / z + model.cy
    return np.stack([u, v], -1), z


def _cast_walls(world: World, o: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest wall along horizontal rays ``o + λ h`` (o (B, 2), h (B, R, 2), h need not be unit).

    Returns ``λ (B, R)`` (``_NO_HIT`` where nothing is hit), wall index ``(B, R)`` and the fraction ``μ`` along
    the wall ``(B, R)``. Solves ``o + λ h = a + μ (b − a)`` with 2-D cross products for all walls at once.
    """
    a = world.a.astype(np.float32)
    e = (world.b - world.a).astype(np.float32)
    h = h.astype(np.float32)
    o = o.astype(np.float32)
    # cross(h, e) = h_x e_y − h_y e_x  as a matmul
    den = h @ np.stack([e[:, 1], -e[:, 0]])  # (B, R, N)
    axe = a[:, 0] * e[:, 1] - a[:, 1] * e[:, 0]  # (N,)
    oxe = o @ np.stack([e[:, 1], -e[:, 0]])  # (B, N)
    num_l = (axe[None, :] - oxe)[:, None, :]  # cross(a − o, e)
    # cross(a − o, h) = a × h − o × h
    axh = h @ np.stack([-a[:, 1], a[:, 0]])  # (B, R, N): a_x h_y − a_y h_x
    oxh = o[:, None, 0] * h[..., 1] - o[:, None, 1] * h[..., 0]  # (B, R)
    num_m = axh - oxh[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / den
        lam = num_l * inv
        mu = num_m * inv
    ok = (lam > 1e-4) & (mu >= 0.0) & (mu <= 1.0) & np.isfinite(lam)
    lam = np.where(ok, lam, np.float32(_NO_HIT))
    idx = np.argmin(lam, axis=-1)
    best = np.take_along_axis(lam, idx[..., None], -1)[..., 0]
    mu_best = np.take_along_axis(mu, idx[..., None], -1)[..., 0]
    return best, idx, np.where(best < _NO_HIT, mu_best, 0.0).astype(np.float32)


def is_upright(q_world_cam: np.ndarray, tol: float = 1e-6) -> bool:
    """True when every camera's optical y axis points straight down (column-wise casting is exact)."""
    r = quat_to_matrix(np.asarray(q_world_cam, dtype=np.float64))
    return bool(np.all(np.abs(r[..., :, 1] - np.array([0.0, 0.0, -1.0])) < tol))


def render(world: World, lighting: Lighting, model: CameraModel, t_world_cam: np.ndarray, q_world_cam: np.ndarray,
           exposure: np.ndarray | None = None, return_geometry: bool = False, force_general: bool = False
           ) -> np.ndarray | tuple[np.ndarray, Geometry]:
    """Render ``B`` images (uint8 RGB, (B, H, W, 3)) of the world from camera poses ``T_world_cam``.

    ``exposure`` (B,) multiplies the brightness per image (phone auto-exposure). With ``return_geometry`` also the
    per-pixel surface id and world hit point (used by the GT consistency tests). Upright cameras take the
    column-separable fast path unless ``force_general`` (the per-pixel reference, used by tests and the benchmark).
    """
    model.validate()
    t = np.atleast_2d(np.asarray(t_world_cam, dtype=np.float64))
    q = np.atleast_2d(np.asarray(q_world_cam, dtype=np.float64))
    if t.shape[0] != q.shape[0]:
        raise ConfigError(f"render: {t.shape[0]} positions but {q.shape[0]} orientations")
    gain = np.full(t.shape[0], lighting.gain, dtype=np.float32)
    if exposure is not None:
        gain = gain * np.asarray(exposure, dtype=np.float32)
    if not return_geometry and not force_general and is_upright(q):
        return _render_upright(world, lighting, model, t, q, gain)
    return _render_general(world, lighting, model, t, q, gain, return_geometry)


def _plane_rgb(world: World, px: np.ndarray, py: np.ndarray, floor: bool | np.ndarray) -> np.ndarray:
    """Floor (1 m tiles with grout, low-frequency colour zones) or ceiling (0.6 m panels) colour, float RGB."""
    fx_ = px - np.float32(world.bounds[0])
    fy_ = py - np.float32(world.bounds[1])
    if floor is False:
        cgrid = ((fx_ * np.float32(1 / 0.6)) % 1.0 < 0.05) | ((fy_ * np.float32(1 / 0.6)) % 1.0 < 0.05)
        return np.where(cgrid, np.float32(0.5), np.float32(0.72))[..., None] * np.ones(3, np.float32)
    ix, iy = fx_.astype(np.int32), fy_.astype(np.int32)
    gy, gx = world.floor_tint.shape[:2]
    tint = world.floor_tint[np.clip(iy, 0, gy - 1), np.clip(ix, 0, gx - 1)]
    tile = ((ix + iy) & 1).astype(np.float32)
    grout = (np.abs(fx_ - np.round(fx_)) < 0.03) | (np.abs(fy_ - np.round(fy_)) < 0.03)
    v = (np.float32(0.85) + np.float32(0.12) * tile) * np.where(grout, np.float32(0.55), np.float32(1.0))
    if floor is True:
        return tint * v[..., None]
    ceil = _plane_rgb(world, px, py, False)
    return np.where(np.asarray(floor)[..., None], tint * v[..., None], ceil)


def _wall_shade(world: World, wall: np.ndarray, hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
    """Lambert-like factor: walls seen at grazing angles are darker (a depth cue)."""
    e = (world.b - world.a).astype(np.float32)[wall]
    el = np.sqrt((e * e).sum(-1))
    hn = np.sqrt(hx * hx + hy * hy) + np.float32(1e-9)
    cos = np.abs(e[..., 1] * hx - e[..., 0] * hy) / (el * hn)
    return np.float32(0.6) + np.float32(0.4) * cos


def _tex_col(world: World, wall: np.ndarray, mu: np.ndarray) -> np.ndarray:
    length = world.wall_length.astype(np.float32)[wall]
    ppm = world.config.px_per_m
    return (np.clip((mu * length * ppm).astype(np.int64), 0, world.tex_len[wall] - 1) + world.tex_offset[wall])


def _to_uint8(rgb: np.ndarray, scale: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    out = rgb * (scale[..., None] * np.asarray(tint, dtype=np.float32) * np.float32(255.0))
    out += np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _render_upright(world: World, lighting: Lighting, model: CameraModel, t: np.ndarray, q: np.ndarray,
                    gain: np.ndarray) -> np.ndarray:
    """Column-separable fast path: wall test, texture column and wall lighting once per image column; floor and
    ceiling only on the rows below / above the horizon."""
    hh, ww = model.height, model.width
    rot = quat_to_matrix(q).astype(np.float32)
    xn = ((np.arange(ww) + 0.5 - model.cx) / model.fx).astype(np.float32)
    yn = ((np.arange(hh) + 0.5 - model.cy) / model.fy).astype(np.float32)
    o = t.astype(np.float32)
    H = np.float32(world.config.wall_height)
    hcol = rot[:, None, :2, 0] * xn[None, :, None] + rot[:, None, :2, 2]  # (B, W, 2)
    hx, hy = hcol[..., 0], hcol[..., 1]
    lam, wall, mu = _cast_walls(world, o[:, :2], hcol)
    # per column: texture column, wall lighting and shading
    col = _tex_col(world, wall, mu)
    wx, wy = o[:, 0, None] + lam * hx, o[:, 1, None] + lam * hy
    colfac = lighting.at(wx, wy) * _wall_shade(world, wall, hx, hy) * gain[:, None]  # (B, W)
    # per pixel on walls: height along the column → texture row
    oz = o[:, 2, None, None]
    z = oz - lam[:, None, :] * yn[None, :, None]  # (B, H, W)
    on_wall = (z >= 0) & (z <= H) & (lam[:, None, :] < _NO_HIT)
    row = np.clip(((H - z) * world.config.px_per_m).astype(np.int64), 0, world.atlas.shape[0] - 1)
    flat = row * world.atlas.shape[1] + col[:, None, :]
    np.putmask(flat, ~on_wall, 0)
    rgb = world.atlas.reshape(-1, 3)[flat].astype(np.float32) * np.float32(1.0 / 255.0)
    scale = colfac[:, None, :] * (np.float32(0.85) + np.float32(0.15 / H) * z)
    # floor rows (ray points down) and ceiling rows (up): plane hit = o + λ(row) · h(col)
    down = yn > 0
    for rows, is_floor in ((np.nonzero(down)[0], True), (np.nonzero(~down)[0], False)):
        if len(rows) == 0:
            continue
        y = yn[rows]
        lam_p = (oz[:, :, 0] / y[None, :]) if is_floor else ((oz[:, :, 0] - H) / y[None, :])  # (B, R)
        px = o[:, 0, None, None] + lam_p[:, :, None] * hx[:, None, :]
        py = o[:, 1, None, None] + lam_p[:, :, None] * hy[:, None, :]
        prgb = _plane_rgb(world, px, py, is_floor)
        pscale = lighting.at(px, py) * gain[:, None, None]
        sub_wall = on_wall[:, rows]
        rgb[:, rows] = np.where(sub_wall[..., None], rgb[:, rows], prgb)
        scale[:, rows] = np.where(sub_wall, scale[:, rows], pscale)
    return _to_uint8(rgb, scale, lighting.tint)


def _render_general(world: World, lighting: Lighting, model: CameraModel, t: np.ndarray, q: np.ndarray,
                    gain: np.ndarray, return_geometry: bool) -> np.ndarray | tuple[np.ndarray, Geometry]:
    """Per-pixel reference path: any camera orientation; also produces the per-pixel geometry."""
    bsz, hh, ww = t.shape[0], model.height, model.width
    rot = quat_to_matrix(q).astype(np.float32)
    xn = ((np.arange(ww) + 0.5 - model.cx) / model.fx).astype(np.float32)
    yn = ((np.arange(hh) + 0.5 - model.cy) / model.fy).astype(np.float32)
    o = t.astype(np.float32)
    cam_dirs = np.stack(np.broadcast_arrays(xn[None, :], yn[:, None], np.ones((1, 1), np.float32)), -1)
    d = np.einsum("bij,hwj->bhwi", rot, cam_dirs).astype(np.float32)  # (B, H, W, 3)
    lam, wall, mu = (x.reshape(bsz, hh, ww) for x in _cast_walls(world, o[:, :2], d[..., :2].reshape(bsz, -1, 2)))
    dz, hx, hy = d[..., 2], d[..., 0], d[..., 1]
    H = np.float32(world.config.wall_height)
    oz = o[:, 2, None, None]
    z_wall = oz + lam * dz
    on_wall = (z_wall >= 0) & (z_wall <= H) & (lam < _NO_HIT)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_floor = np.where(dz < 0, -oz / dz, np.inf)
        lam_ceil = np.where(dz > 0, (H - oz) / dz, np.inf)
    floor = ~on_wall & (dz < 0)
    lam_hit = np.where(on_wall, lam, np.where(floor, lam_floor, lam_ceil)).astype(np.float32)
    lam_hit = np.where(np.isfinite(lam_hit), lam_hit, np.float32(_NO_HIT))
    px = o[:, 0, None, None] + lam_hit * hx
    py = o[:, 1, None, None] + lam_hit * hy
    pz = np.where(on_wall, z_wall, np.where(floor, np.float32(0.0), H))

    col = _tex_col(world, wall, mu)
    row = np.clip(((H - z_wall) * world.config.px_per_m).astype(np.int64), 0, world.atlas.shape[0] - 1)
    flat = np.where(on_wall, row * world.atlas.shape[1] + col, 0)
    wall_rgb = world.atlas.reshape(-1, 3)[flat].astype(np.float32) * np.float32(1.0 / 255.0)
    rgb = np.where(on_wall[..., None], wall_rgb, _plane_rgb(world, px, py, floor))
    light = lighting.at(px, py)
    wall_scale = light * _wall_shade(world, wall, hx, hy) * (np.float32(0.85) + np.float32(0.15 / H) * z_wall)
    scale = np.where(on_wall, wall_scale, light) * gain[:, None, None]
    img = _to_uint8(rgb, scale, lighting.tint)
    if not return_geometry:
        return img
    surface = np.where(on_wall, wall, np.where(floor, SURFACE_FLOOR, SURFACE_CEILING)).astype(np.int64)
    return img, Geometry(surface, np.stack([px, py, pz], -1).astype(np.float32))
