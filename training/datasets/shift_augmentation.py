"""Shift augmentation (``data.shift_aug``): the rig moved sideways, re-projected from its own cameras.

Why: a single mapping pass supervises one lane. On the one-pass world the query drives 0.20 m beside it and the
network answers the mapped lane (signed left error −0.18 to −0.23 m over 3 seeds, docs/results.md "The one-pass
world"): nothing it was trained on varies sideways, so nothing tells it how a sideways step looks. Here a sample's
rig is moved by ``δ ~ U(−d, d)`` along its left axis (base_link y, REP 103) and every slot's image is what the
moved camera would see, rendered from the rig's real images; the target moves with it
(``t' = t + R_world_rig · (0, δ, 0)``, the same ``δ`` for every frame of a tuple).

Geometry without depth: a move, unlike a turn, needs the distance of what each pixel sees. The scene is taken to
be a vertical cylinder of radius ``D`` (``data.shift_aug.depth_m``) about the rig's real position — walls that far
all round: an output ray from the moved centre is cut with the cylinder and the point looked up in whichever real
camera sees it nearest to its optical axis (as :class:`~.yaw_augmentation.YawAugmentation` does). A side camera
then zooms in or out (walls nearer or farther), a front camera pans. Where the real scene is farther than ``D``
(down a corridor) the rendered pan is too large, where nearer too small: the image change is right in kind and
roughly right in size, which is what teaches the network that a sideways step exists and which way; it is not
a view synthesis. ``D`` ≈ the distance to the nearest walls (half a corridor's width).
Needs pinhole intrinsics and the image size of every camera, like yaw augmentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mfapr_ros.core import geometry as g
from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import Rig

from .yaw_augmentation import ReprojectAugmentation

#: the shift grid (m): the lookup tables are exact for these values, and the targets use the same shift
STEP_M = 0.01
#: the largest shift accepted (m)
MAX_M = 1.0


class ShiftAugmentation(ReprojectAugmentation):
    """Move a sample's rig sideways by a random ``δ`` in ``[−max_m, max_m]`` (see the module docstring)."""

    step = STEP_M
    setting = "data.shift_aug"

    def __init__(self, rig: Rig, cfg: PreprocessConfig, max_m: float, depth_m: float) -> None:
        if not 0.0 < float(max_m) <= MAX_M:
            raise ConfigError(f"data.shift_aug.max_m must be in (0, {MAX_M}] metres (0 turns it off), got {max_m!r}")
        if not float(depth_m) > 2 * float(max_m):
            raise ConfigError(f"data.shift_aug.depth_m must be > 2 × max_m ({2 * float(max_m):g} m): the "
                              f"moved rig must stay well inside the walls, got {depth_m!r}")
        super().__init__(rig, cfg, max_m)
        self.max_m = self.max_value
        self.depth_m = float(depth_m)

    def _source_rays(self, value: float, rays: np.ndarray) -> np.ndarray:
        """Cut each ray from the moved centre ``c = (0, δ, 0)`` with the cylinder ``x² + y² = D²``; the scene point
        seen from the real centre is the source direction."""
        c = np.array([0.0, value, 0.0])
        a = rays[..., 0] ** 2 + rays[..., 1] ** 2
        b = 2.0 * (c[0] * rays[..., 0] + c[1] * rays[..., 1])
        cc = c[0] ** 2 + c[1] ** 2 - self.depth_m ** 2  # < 0: the centre is inside, one positive root
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (-b + np.sqrt(np.maximum(b * b - 4 * a * cc, 0.0))) / (2 * a)
        lam = np.where(a > 1e-12, lam, self.depth_m)  # a vertical ray: any distance (no camera looks straight up)
        return c + lam[..., None] * rays

    def apply(self, shift_m: float, x: torch.Tensor, t: np.ndarray, q: np.ndarray
              ) -> tuple[torch.Tensor, np.ndarray]:
        """Images ``(S, T, 3, H, W)`` (before normalisation; absent cameras are zeros), positions ``t`` ``(S, 3)``
        and orientations ``q`` ``(S, 4)`` (w, x, y, z) of ``T_world_rig`` → the moved rig's images and
        ``t + R(q) · (0, δ, 0)``."""
        if shift_m == 0:
            return x, t
        out = self.warp(shift_m, x)
        if not len(t):
            return out, t
        left = np.einsum("sij,j->si", g.quat_to_matrix(np.asarray(q, dtype=np.float64)), [0.0, 1.0, 0.0])
        return out, np.asarray(t, dtype=np.float64) + shift_m * left


#: ``data.shift_aug: auto`` moves the rig by up to this many metres where the rig allows it (:func:`auto_shift_aug`)
AUTO_M = 0.3
#: ... i.e. where at least this share of the moved rig's pixels is seen by one of its cameras at ±AUTO_M (rings:
#: 97.0–97.6 % for 4 × 90°, 6 × 60°, 10 × 40°; one camera or two facing apart: 90.6–92.2 %)
AUTO_MIN_COVERED = 0.95
#: neighbourhood of a mapped pose in which :func:`lateral_spread` looks for other passes: along its heading (m),
#: sideways (m), heading difference (°)
SPREAD_ALONG_M, SPREAD_SIDE_M, SPREAD_HEADING_DEG = 0.5, 1.5, 45.0
#: poses :func:`lateral_spread` measures at most (evenly spaced): the statistic is a median
SPREAD_SAMPLES = 1000


def lateral_spread(t: np.ndarray, q: np.ndarray) -> float:
    """Median over the mapped poses of how far sideways the mapping drove there: for each pose, the range of the
    lateral offsets (along its left axis) of the mapped positions within ±:data:`SPREAD_ALONG_M` along its heading,
    ±:data:`SPREAD_SIDE_M` sideways and :data:`SPREAD_HEADING_DEG` of its heading (same direction of travel). One
    pass per route: ~0 m; the demo world's three lanes per route: ~1 m. Why: shift augmentation stands in for the
    sideways views a single pass lacks; where the mapping has them, real images teach the step better than the
    re-projection (measured over 3 seeds: demo world forward query 0.077 → 0.085 m with it, one-pass world
    0.23 → 0.11 m)."""
    t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    ok = np.all(np.isfinite(t), 1) & np.all(np.isfinite(q), 1)
    t, q = t[ok], q[ok]
    if len(t) == 0:
        return 0.0
    yaw = g.quat_to_yaw(q)
    fwd = np.stack([np.cos(yaw), np.sin(yaw)], -1)
    left = np.stack([-np.sin(yaw), np.cos(yaw)], -1)
    idx = np.unique(np.linspace(0, len(t) - 1, min(len(t), SPREAD_SAMPLES)).round().astype(int))
    cos_max = math.cos(math.radians(SPREAD_HEADING_DEG))
    spreads = np.empty(len(idx))
    for k, i in enumerate(idx):
        d = t[:, :2] - t[i, :2]
        along, side = d @ fwd[i], d @ left[i]
        near = (np.abs(along) <= SPREAD_ALONG_M) & (np.abs(side) <= SPREAD_SIDE_M) & (fwd @ fwd[i] >= cos_max)
        spreads[k] = float(np.ptp(side[near])) if near.any() else 0.0
    return float(np.median(spreads))


def auto_shift_aug(rig: Rig, cfg: PreprocessConfig, depth_m: float, t: np.ndarray | None = None,
                   q: np.ndarray | None = None) -> tuple[float, str]:
    """``data.shift_aug: auto`` → ``(metres, why)``: :data:`AUTO_M` when every camera is an undistorted pinhole with
    its image size, the cameras together see ≥ :data:`AUTO_MIN_COVERED` of the rig moved by ±AUTO_M (a ring of
    cameras around the up axis) and the mapping poses ``t``, ``q`` (when given) drove less than AUTO_M sideways at
    a typical place (:func:`lateral_spread`: one lane); else 0 with the reason. Why not always on: the strip a
    moved camera newly sees must come from a neighbour (a lone camera would repeat its edge, a cue no query has),
    and where the mapping already has sideways views the approximate re-projection costs precision."""
    try:
        aug = ShiftAugmentation(rig, cfg, AUTO_M, depth_m)
    except ConfigError as e:
        return 0.0, f"off: {str(e).split('; ')[0].replace('data.shift_aug: ', '')}"
    covered = aug.covered(AUTO_M)
    if covered < AUTO_MIN_COVERED:
        return 0.0, (f"off: moved by {AUTO_M:g} m the rig's cameras see {100 * covered:.1f} % of the pixels "
                     f"(needs {100 * AUTO_MIN_COVERED:.0f} %: a ring of cameras around the up axis)")
    lanes = ""
    if t is not None and q is not None:
        spread = lateral_spread(t, q)
        if spread >= AUTO_M:
            return 0.0, (f"off: the mapping drove {spread:.2f} m sideways at a typical place (median; several "
                         f"lanes): its own images show the sideways step")
        lanes = f"; the mapping drove {spread:.2f} m sideways at a typical place"
    return AUTO_M, (f"±{AUTO_M:g} m (the cameras see {100 * covered:.1f} % of the moved rig; walls assumed "
                    f"{depth_m:g} m away{lanes})")
