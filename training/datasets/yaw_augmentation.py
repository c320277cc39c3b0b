"""Yaw augmentation (``data.yaw_aug_deg``): the rig turned by a small angle, re-projected from its own cameras.

Why: trained on a few mapping passes, the network learns each place's heading *from the look of that place* — on
the demo's mapping split its yaw error is 0.37° median, on the forward query (same route, another lane and
lighting) 1.4°, and the query's heading wobble (±1–4° about the route) is only a third tracked (the signed yaw error
is −0.65 × the wobble). Track augmentation teaches the ring's 90° symmetry; this teaches the small turns between:
a sample's rig is turned by ``δ ~ U(−d, d)`` about its up axis (base_link z, REP 103) and every slot's image is what
the turned camera sees, rendered from the rig's real images.

Geometry: a pure rotation about the rig origin moves the camera centres by ``radius·δ`` only (9 mm for a 0.1 m ring
at 5°), so each output pixel's ray ``Rz(δ) · R_rig_cam_j · K_j⁻¹ p`` is looked up in whichever camera sees it nearest
to its optical axis (the turned-in strip comes from the neighbour, as a panorama would); rays no image holds (top
and bottom corners, gaps between phones) repeat the nearest edge pixel — black corners would tell the network the
turn (0.8 % of the pixels at 2°, 1.5 % at 4° on a 90° ring). The seam strip (``δ`` wide) carries the neighbour's
parallax — a few pixels for walls 1–2 m away on the demo rig, what a real rig's seams have too. The target turns
with it: ``T_world_rig' = T_world_rig · Rz(δ)``, the same ``δ`` for every frame of a tuple.

Speed: ``δ`` is drawn on a 0.1° grid and the bilinear lookup of each grid step (4 source pixels and weights per
output pixel) is built once and kept in a byte-bounded LRU, so a sample costs one sparse product (≈ 0.2–0.4 ms for
4 × 64²).
Needs pinhole intrinsics and the image size of every camera (the rig YAML or the kapture sensors give them).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch

from mfapr_ros.core import geometry as g
from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import Rig

#: the yaw grid (°): the lookup tables are exact for these angles, and the targets use the same angle
STEP_DEG = 0.1
#: the largest yaw augmentation accepted (°): beyond it most of every image would come from a neighbour's seam
MAX_DEG = 45.0
#: bytes of lookup tables kept per dataset (LRU); ±5° at 4 × 64² needs 101 tables of 0.5 MB
CACHE_BYTES = 256 * 2**20


def preprocessed_intrinsics(rig: Rig, cfg: PreprocessConfig, setting: str = "data.yaw_aug_deg") -> np.ndarray:
    """``(T, 4)`` pinhole ``fx, fy, cx, cy`` of every camera in the preprocessed ``crop × crop`` image (pixel ``i``
    spans ``[i, i+1)``, the renderer's and OpenCV's continuous convention), from the rig's intrinsics and image size
    through :func:`mfapr_ros.core.preprocess.resize_crop`'s resize and centre crop."""
    out = []
    for c in rig.cameras:
        k = c.intrinsics
        if k is None or c.width is None or c.height is None:
            raise ConfigError(f"{setting}: camera '{c.name}' of rig '{rig.name}' has no intrinsics or image "
                              "size; the augmentation re-projects between cameras and needs both (rig YAML: image: "
                              f"{{width, height}}, intrinsics: {{fx, fy, cx, cy}}), or set {setting}: 0")
        if k.distorted:
            raise ConfigError(f"{setting}: camera '{c.name}' has lens distortion ({k.model}); the "
                              f"re-projection is pinhole-only: undistort the images or set {setting}: 0")
        s = cfg.resize / min(c.height, c.width)
        nh, nw = max(cfg.crop, round(c.height * s)), max(cfg.crop, round(c.width * s))
        sx, sy = nw / c.width, nh / c.height
        top, left = (nh - cfg.crop) // 2, (nw - cfg.crop) // 2
        out.append([k.fx * sx, k.fy * sy, k.cx * sx - left, k.cy * sy - top])
    return np.asarray(out, dtype=np.float64)


class ReprojectAugmentation:
    """The rig moved by a small random step, every slot's image re-rendered from the rig's real images through one
    bilinear lookup per step (cached as a sparse matrix): the shared machinery of :class:`YawAugmentation` (a turn)
    and :class:`~.shift_augmentation.ShiftAugmentation` (a sideways move). A subclass says where each output ray
    of the moved rig looks in the real rig's frame (:meth:`_source_rays`) and how the target moves (:meth:`apply`).
    """

    #: the grid of the random step (the lookup tables are exact for these values, and the targets use the same one)
    step: float = STEP_DEG
    #: the setting's name, for error messages
    setting: str = "data.yaw_aug_deg"

    def __init__(self, rig: Rig, cfg: PreprocessConfig, max_value: float) -> None:
        self.max_value = float(max_value)
        self.steps = max(1, round(self.max_value / self.step))
        self.size = cfg.crop
        self.k = preprocessed_intrinsics(rig, cfg, self.setting)
        _, q = rig.extrinsics()
        self.r_rig_cam = g.quat_to_matrix(q)  # (T, 3, 3)
        self._tables: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def sample(self, gen: torch.Generator) -> float:
        """A step on the grid, uniform over ``[−max, max]``."""
        i = int(torch.randint(-self.steps, self.steps + 1, (1,), generator=gen))
        return i * self.step

    def table(self, value: float) -> torch.Tensor:
        """The bilinear lookup of the rig moved by ``value`` as a sparse CSR matrix ``(T·H·W out, T·H·W src)``
        with 4 weights per row (cached per grid step): one sparse product re-projects every channel at once, 4×
        faster than a gather."""
        key = round(value / self.step)
        with self._lock:
            hit = self._tables.get(key)
            if hit is not None:
                self._tables.move_to_end(key)
                return hit
        built = self._build(key * self.step)
        with self._lock:
            self._tables[key] = built
            per = 12 * built.values().numel() + 8 * built.crow_indices().numel()
            while len(self._tables) > 1 and len(self._tables) * per > CACHE_BYTES:
                self._tables.popitem(last=False)
        return built

    def lookup(self, value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(index (T, H·W, 4) int64 into the flattened (T, H, W) source, weight (T, H·W, 4) float32, covered
        (T, H·W) bool)``: the bilinear lookup of every output pixel; ``covered`` is False where no image holds the
        ray (filled from the nearest edge; weight 0, black, only where no camera faces it at all)."""
        return self._lookup(round(value / self.step) * self.step)

    def covered(self, value: float) -> float:
        """The share of the moved rig's pixels some real camera sees, the smaller of ``±value`` (the ``auto``
        rules: below ~95 % the re-projection would repeat edges, a cue to the move no query has)."""
        return min(float(self.lookup(d)[2].float().mean()) for d in (value, -value))

    def _build(self, value: float) -> torch.Tensor:
        idx, w, _ = self._lookup(value)
        n = idx.shape[0] * idx.shape[1]
        with warnings.catch_warnings():  # torch's "sparse CSR is beta" notice: the product is checked by the tests
            warnings.simplefilter("ignore", UserWarning)
            # 4 entries per row, rows in order: the CSR arrays are the lookup itself (a repeated column — a clamped
            # border pixel — is summed by the product, as the bilinear weights mean)
            return torch.sparse_csr_tensor(torch.arange(0, 4 * n + 1, 4), idx.reshape(-1), w.reshape(-1), (n, n))

    def _source_rays(self, value: float, rays: np.ndarray) -> np.ndarray:
        """``rays`` (T, P, 3): each output pixel's ray in the moved rig's frame → the direction (from the real rig's
        origin, in its frame) in which the real cameras see that scene point."""
        raise NotImplementedError

    def _lookup(self, value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T, S = len(self.k), self.size
        fx, fy, cx, cy = (self.k[:, i] for i in range(4))
        c = np.arange(S) + 0.5
        u, v = np.meshgrid(c, c)  # (S, S): pixel centres, row-major like the image
        rays = np.stack([(u[None] - cx[:, None, None]) / fx[:, None, None],
                         (v[None] - cy[:, None, None]) / fy[:, None, None],
                         np.ones((T, S, S))], -1).reshape(T, S * S, 3)  # camera frame of each output slot
        world = self._source_rays(value, np.einsum("tjk,tpk->tpj", self.r_rig_cam, rays))  # in the real rig's frame
        world /= np.linalg.norm(world, axis=-1, keepdims=True)
        src = np.einsum("skj,tpk->tpsj", self.r_rig_cam, world)  # (T out, P, T src, 3): R_rig_cam_sᵀ · ray
        z = src[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            su = fx[None, None] * src[..., 0] / z + cx[None, None]
            sv = fy[None, None] * src[..., 1] / z + cy[None, None]
        front = z > 1e-6
        inside = front & (su >= 0) & (su <= S) & (sv >= 0) & (sv <= S)
        # the camera that sees the ray nearest its optical axis; a ray no image holds (a corner turned in from
        # above or below the ring) takes the nearest edge pixel of the camera it faces most: black corners would
        # tell the network the move's size and sign, a cue the query's images never carry
        score = np.where(inside, z + 2.0, np.where(front, z, -np.inf))
        best = score.argmax(-1)  # (T, P)
        seen = np.take_along_axis(front, best[..., None], -1)[..., 0]
        covered = np.take_along_axis(inside, best[..., None], -1)[..., 0]
        bu = np.take_along_axis(su, best[..., None], -1)[..., 0] - 0.5  # pixel-index coordinates
        bv = np.take_along_axis(sv, best[..., None], -1)[..., 0] - 0.5
        bu = np.where(seen, np.clip(np.nan_to_num(bu), 0.0, S - 1.0), 0.0)
        bv = np.where(seen, np.clip(np.nan_to_num(bv), 0.0, S - 1.0), 0.0)
        x0, y0 = np.floor(bu), np.floor(bv)
        fxr, fyr = bu - x0, bv - y0
        idx, w = [], []
        for dy, dx, wt in ((0, 0, (1 - fxr) * (1 - fyr)), (0, 1, fxr * (1 - fyr)), (1, 0, (1 - fxr) * fyr),
                           (1, 1, fxr * fyr)):
            xi = np.clip(x0 + dx, 0, S - 1).astype(np.int64)  # border pixels repeat (the half-pixel rim)
            yi = np.clip(y0 + dy, 0, S - 1).astype(np.int64)
            idx.append(best * S * S + yi * S + xi)
            w.append(np.where(seen, wt, 0.0))
        return (torch.from_numpy(np.stack(idx, -1)), torch.from_numpy(np.stack(w, -1).astype(np.float32)),
                torch.from_numpy(covered))

    def warp(self, value: float, x: torch.Tensor) -> torch.Tensor:
        """Images ``(S, T, 3, H, W)`` (before normalisation; absent cameras are zeros) → the moved rig's images."""
        m = self.table(value)
        s, t, ch, h, wd = x.shape
        flat = x.permute(1, 3, 4, 0, 2).reshape(t * h * wd, s * ch)  # (T·H·W, S·3): one column per channel
        return (m @ flat).reshape(t, h, wd, s, ch).permute(3, 0, 4, 1, 2).contiguous()


class YawAugmentation(ReprojectAugmentation):
    """Turn a sample's rig by a random yaw in ``[−max_deg, max_deg]`` (see the module docstring)."""

    def __init__(self, rig: Rig, cfg: PreprocessConfig, max_deg: float) -> None:
        if not 0.0 < float(max_deg) <= MAX_DEG:
            raise ConfigError(f"data.yaw_aug_deg must be in (0, {MAX_DEG}] degrees (0 turns it off), got {max_deg!r}")
        super().__init__(rig, cfg, max_deg)
        self.max_deg = self.max_value

    def _source_rays(self, value: float, rays: np.ndarray) -> np.ndarray:
        a = math.radians(value)
        rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        return np.einsum("ij,tpj->tpi", rz, rays)

    def apply(self, yaw_deg: float, x: torch.Tensor, q: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Images ``(S, T, 3, H, W)`` (before normalisation; absent cameras are zeros) and orientations ``q``
        ``(S, 4)`` (w, x, y, z) → the turned rig's images and ``q · Rz(yaw)``."""
        if yaw_deg == 0:
            return x, q
        out = self.warp(yaw_deg, x)
        dq = g.quat_from_axis_angle([0.0, 0.0, 1.0], math.radians(yaw_deg))
        return out, g.quat_mul(q, dq[None]) if len(q) else q


#: ``data.yaw_aug_deg: auto`` turns the rig by up to this many degrees where the rig allows it (:func:`auto_yaw_aug`)
AUTO_DEG = 5.0
#: ... i.e. where at least this share of the turned rig's pixels is seen by one of its cameras at ±AUTO_DEG
AUTO_MIN_COVERED = 0.97


def auto_yaw_aug(rig: Rig, cfg: PreprocessConfig) -> tuple[float, str]:
    """``data.yaw_aug_deg: auto`` → ``(degrees, why)``: :data:`AUTO_DEG` when every camera is an undistorted pinhole
    with its image size and the cameras together see ≥ :data:`AUTO_MIN_COVERED` of the rig turned by ±AUTO_DEG (a
    ring of cameras around the up axis); else 0 with the reason.

    Why not always on: the turned-in strip of a camera must come from a neighbour. A single camera, or cameras with
    gaps between them, would fill it by repeating the edge — 8 % of a 60° camera's pixels at 5° — and that smear
    tells the network the turn, a cue no query carries."""
    try:
        aug = YawAugmentation(rig, cfg, AUTO_DEG)
    except ConfigError as e:
        return 0.0, f"off: {str(e).split('; ')[0].replace('data.yaw_aug_deg: ', '')}"
    covered = aug.covered(AUTO_DEG)
    if covered < AUTO_MIN_COVERED:
        return 0.0, (f"off: turned by {AUTO_DEG:g}° the rig's cameras see {100 * covered:.1f} % of the pixels "
                     f"(needs {100 * AUTO_MIN_COVERED:.0f} %: a ring of cameras around the up axis)")
    return AUTO_DEG, f"±{AUTO_DEG:g}° (the cameras see {100 * covered:.1f} % of the turned rig)"
