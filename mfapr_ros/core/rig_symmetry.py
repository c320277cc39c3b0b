"""Slot permutations of a rig and the rigid motion they imply (ROS-free): the geometry shared by track
augmentation (training) and the shift-aware retrieval baseline (evaluation, the node).

Slot ``j`` receives camera ``π(j)``'s image. The pose of the *virtual rig* whose slot ``j`` sees what camera
``π(j)`` saw is ``T_world_rig' = T_world_rig · Δ_j`` with ``Δ_j = T_rig_cam_π(j) · T_rig_cam_j⁻¹``. For a rig
symmetry (cyclic shifts of a ring rig) every ``Δ_j`` is the same rigid motion and the virtual rig is a real pose
of the real rig; otherwise the average offset ``Δ̄`` is the least-squares compromise, with its residual reported.
See ``mfapr_training.datasets.track_augmentation`` for how training uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import ConfigError
from .geometry import mean_pose, pose_compose, pose_inverse, quat_normalize, rotation_error_deg
from .rig import Rig


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


def exact_cyclic_shifts(rig: Rig) -> list[PermutationOffset]:
    """The rig's cyclic slot shifts that are exact symmetries (identity first): all of them for a ring rig, only
    the identity for a rig without rotational symmetry."""
    return [off for off in (_offset(rig, p) for p in cyclic_shifts(rig.num_cameras)) if off.is_exact]
