"""Track augmentation: feed the cameras to the model's slots in a permuted order, with the matching target pose.

Slot ``j`` receives camera ``π(j)``'s image. The target becomes the pose of a *virtual rig* whose slot ``j`` sees
what camera ``π(j)`` saw. One slot pins it exactly::

    T_world_rig' = T_world_cam_π(j) · T_rig_cam_j⁻¹ = T_world_rig · Δ_j,   Δ_j = T_rig_cam_π(j) · T_rig_cam_j⁻¹

When ``π`` is a rig symmetry (cyclic shifts of a ring rig) every ``Δ_j`` is the same rigid motion (for a ring4
shift by one: a 90° yaw about the rig origin) and the augmentation is exact: the virtual rig is a real pose of
the real rig. For a non-symmetric permutation the ``Δ_j`` differ, and no rig pose makes every slot see exactly
its camera; we then use the **average offset** ``Δ̄`` (mean translation, Markley quaternion mean over all slots)
— the least-squares compromise — and report its residual (how far each slot's exact virtual camera is from the
one the averaged target implies). :class:`TrackAugmentation` can reject permutations whose residual exceeds a
bound, so only near-symmetries are used.

The offset depends only on the rig and ``π`` (``T_world_rig`` factors out on the left, and the Markley mean is
left-invariant), so it is computed once per permutation and applied to whole tuples: every frame of a tuple gets
the same ``π``, which keeps the relative poses between frames consistent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import mean_pose, pose_compose, pose_inverse, quat_normalize, rotation_error_deg
from mfapr_ros.core.rig import Rig

MODES = ("none", "cyclic", "symmetric", "any")


@dataclass(frozen=True)
class PermutationOffset:
    """``Δ̄`` for one permutation: ``T_world_rig' = T_world_rig · Δ̄``, with the residual of the approximation
    (0 for a rig symmetry): max over slots of the position (m) / angle (°) between the exact virtual camera
    ``T_world_cam_π(j)`` and the camera ``T_world_rig' · T_rig_cam_j`` the target implies."""

    perm: tuple[int, ...]
    t: np.ndarray
    q: np.ndarray
    residual_m: float
    residual_deg: float

    @property
    def is_exact(self) -> bool:
        return self.residual_m < 1e-6 and self.residual_deg < 1e-4


def check_permutation(perm: Sequence[int], n: int) -> tuple[int, ...]:
    p = tuple(int(i) for i in perm)
    if sorted(p) != list(range(n)):
        raise ConfigError(f"track augmentation: {list(perm)} is not a permutation of the {n} slots 0..{n - 1}")
    return p


def permutation_offset(rig: Rig, perm: Sequence[int]) -> PermutationOffset:
    """``Δ̄`` and its residual for ``perm`` (``perm[j]`` = the camera whose image goes to slot ``j``)."""
    p = check_permutation(perm, rig.num_cameras)
    return _offset(rig, p)


@lru_cache(maxsize=4096)
def _offset(rig: Rig, p: tuple[int, ...]) -> PermutationOffset:
    t_rc, q_rc = rig.extrinsics()
    ti, qi = pose_inverse(t_rc, q_rc)  # T_cam_j_rig
    dt, dq = pose_compose(t_rc[list(p)], q_rc[list(p)], ti, qi)  # Δ_j = T_rig_cam_π(j) · T_rig_cam_j⁻¹
    t_bar, q_bar = mean_pose(dt, dq)
    # residual: slot j's camera under the averaged target vs the exact virtual camera (rig at identity)
    ct, cq = pose_compose(np.broadcast_to(t_bar, t_rc.shape), np.broadcast_to(q_bar, q_rc.shape), t_rc, q_rc)
    res_m = float(np.max(np.linalg.norm(ct - t_rc[list(p)], axis=-1)))
    res_deg = float(np.max(rotation_error_deg(cq, q_rc[list(p)])))
    return PermutationOffset(p, t_bar, quat_normalize(q_bar), res_m, res_deg)


def permute_target(rig: Rig, perm: Sequence[int], t_world_rig: np.ndarray, q_world_rig: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Target of the virtual rig for ``perm``: ``T_world_rig · Δ̄`` (broadcasts over leading dims)."""
    off = permutation_offset(rig, perm)
    t = np.asarray(t_world_rig, dtype=np.float64)
    q = np.asarray(q_world_rig, dtype=np.float64)
    return pose_compose(t, q, np.broadcast_to(off.t, t.shape), np.broadcast_to(off.q, q.shape))


def cyclic_shifts(n: int) -> list[tuple[int, ...]]:
    """All cyclic shifts ``π(j) = (j + k) mod n`` (the symmetries of a ring rig), identity first."""
    return [tuple((j + k) % n for j in range(n)) for k in range(n)]


class TrackAugmentation:
    """Random slot↔camera permutations for training samples.

    Modes: ``none``; ``cyclic`` (cyclic shifts — exact for ring rigs); ``symmetric`` (cyclic shifts and, for up to
    6 cameras, all permutations whose residual is within ``max_residual_m``/``max_residual_deg`` — i.e. the rig's
    own symmetries); ``any`` (a uniformly random permutation; the target uses the averaged offset). ``p`` is the
    probability of permuting a sample at all. Permutations above the residual bounds are never used (``cyclic``
    and ``any`` included), so a non-ring rig does not train on badly wrong targets unless you raise the bounds.
    """

    def __init__(self, rig: Rig, mode: str = "cyclic", p: float = 0.5, max_residual_m: float = float("inf"),
                 max_residual_deg: float = float("inf")) -> None:
        if mode not in MODES:
            raise ConfigError(f"track_aug.mode is '{mode}'; expected one of {MODES}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"track_aug.p must be in [0, 1], got {p}")
        self.rig, self.mode, self.p = rig, mode, float(p)
        self.max_residual_m, self.max_residual_deg = float(max_residual_m), float(max_residual_deg)
        n = rig.num_cameras
        cands: list[tuple[int, ...]] = []
        if mode == "cyclic":
            cands = cyclic_shifts(n)
        elif mode == "symmetric":
            cands = list(itertools.permutations(range(n))) if n <= 6 else cyclic_shifts(n)
            bound_m = min(self.max_residual_m, 1e-3)
            bound_deg = min(self.max_residual_deg, 0.1)
            cands = [c for c in cands if self._ok(c, bound_m, bound_deg)]
        self.candidates = [c for c in cands if self._ok(c, self.max_residual_m, self.max_residual_deg)]

    def _ok(self, perm: tuple[int, ...], m: float, deg: float) -> bool:
        off = _offset(self.rig, perm)
        return off.residual_m <= m and off.residual_deg <= deg

    def sample(self, generator: torch.Generator) -> tuple[int, ...] | None:
        """A permutation for one sample, or ``None`` (identity) — deterministic given the generator state."""
        n = self.rig.num_cameras
        if self.mode == "none" or float(torch.rand((), generator=generator)) >= self.p:
            return None
        if self.mode == "any":
            for _ in range(10):
                perm = tuple(int(i) for i in torch.randperm(n, generator=generator))
                if self._ok(perm, self.max_residual_m, self.max_residual_deg):
                    return perm
            return None
        if not self.candidates:
            return None
        return self.candidates[int(torch.randint(len(self.candidates), (), generator=generator))]

    def apply(self, perm: Sequence[int] | None, images: torch.Tensor, mask: torch.Tensor, t: np.ndarray,
              q: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """Permute slots of ``images`` (S,T,…) and ``mask`` (S,T) and move the targets ``t`` (S,3), ``q`` (S,4).

        Masks permute with the images (slot ``j`` is present iff camera ``π(j)`` was). NaN targets (no GT) stay NaN.
        """
        if perm is None:
            return images, mask, t, q
        idx = list(check_permutation(perm, self.rig.num_cameras))
        t2, q2 = permute_target(self.rig, idx, t, q) if np.all(np.isfinite(t)) else (t, q)
        return images[:, idx], mask[:, idx], t2, q2
