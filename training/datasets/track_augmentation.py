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

import numpy as np
import torch

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.rig import Rig
from mfapr_ros.core.rig_symmetry import (  # noqa: F401  (re-exported: the training API names them here)
    PermutationOffset,
    _offset,
    check_permutation,
    cyclic_shifts,
    permutation_offset,
    permute_target,
)

MODES = ("none", "cyclic", "symmetric", "any")
#: Largest residual (position m / angle °) of a permutation's target offset that training accepts by default: a
#: ring rig's shifts are exact (residual 0); a stereo pair swapped left↔right is 6 cm off and is refused.
DEFAULT_RESIDUAL_M = 0.01
DEFAULT_RESIDUAL_DEG = 1.0


class TrackAugmentation:
    """Random slot↔camera permutations for training samples.

    Modes: ``none``; ``cyclic`` (cyclic shifts — exact for ring rigs); ``symmetric`` (cyclic shifts and, for up to
    6 cameras, all permutations whose residual is within ``max_residual_m``/``max_residual_deg`` — i.e. the rig's
    own symmetries); ``any`` (a uniformly random permutation; the target uses the averaged offset). ``p`` is the
    probability of permuting a sample at all. Permutations above the residual bounds are never used (``cyclic``
    and ``any`` included), so a non-ring rig does not train on badly wrong targets unless you raise the bounds.
    """

    def __init__(self, rig: Rig, mode: str = "cyclic", p: float = 0.5, max_residual_m: float = DEFAULT_RESIDUAL_M,
                 max_residual_deg: float = DEFAULT_RESIDUAL_DEG) -> None:
        if mode not in MODES:
            raise ConfigError(f"track_aug.mode is '{mode}'; expected one of {MODES}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"track augmentation: p must be in [0, 1], got {p}")
        if not (max_residual_m >= 0.0 and max_residual_deg >= 0.0):
            raise ConfigError(f"data.track_aug_max_residual [m, °] must be >= 0, got {max_residual_m}, "
                              f"{max_residual_deg}")
        self.rig, self.mode, self.p = rig, mode, float(p)
        self.max_residual_m, self.max_residual_deg = float(max_residual_m), float(max_residual_deg)
        n = rig.num_cameras
        cands: list[tuple[int, ...]] = []
        if mode == "cyclic":
            cands = cyclic_shifts(n)
            bad = [_offset(rig, c) for c in cands if not self._ok(c, self.max_residual_m, self.max_residual_deg)]
            if bad:
                worst = max(bad, key=lambda o: o.residual_m)
                raise ConfigError(
                    f"track augmentation 'cyclic' on rig '{rig.name}': {len(bad)} of {len(cands)} cyclic shifts are "
                    f"not symmetries of the rig (worst {list(worst.perm)}: residual {worst.residual_m:.3f} m / "
                    f"{worst.residual_deg:.1f}°, bound {self.max_residual_m} m / {self.max_residual_deg}°): their "
                    "targets would be wrong. Use a ring rig, --set data.track_aug=symmetric (only the rig's own "
                    "symmetries), raise --set data.track_aug_max_residual=[M,DEG], or data.track_aug=none")
        elif mode == "symmetric":
            cands = list(itertools.permutations(range(n))) if n <= 6 else cyclic_shifts(n)
            cands = [c for c in cands if self._ok(c, self.max_residual_m, self.max_residual_deg)]
            if len(cands) < 2:
                raise ConfigError(
                    f"track augmentation 'symmetric' on rig '{rig.name}': no slot permutation other than the "
                    f"identity is within the residual bound {self.max_residual_m} m / {self.max_residual_deg}°, so "
                    "it would never augment; use data.track_aug=none, or raise data.track_aug_max_residual")
        self.candidates = [c for c in cands if self._ok(c, self.max_residual_m, self.max_residual_deg)]

    def describe(self) -> str:
        """One log line: the mode, probability and each permutation used with its residual (what training uses)."""
        if self.mode == "any":
            return (f"track augmentation 'any': p={self.p}, random permutations within {self.max_residual_m} m / "
                    f"{self.max_residual_deg}° residual")
        offs = [_offset(self.rig, c) for c in self.candidates]
        perms = ", ".join(f"{list(o.perm)} ({o.residual_m:.3f} m, {o.residual_deg:.1f}°)" for o in offs)
        return f"track augmentation '{self.mode}': p={self.p}, {len(self.candidates)} permutations: {perms}"

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
