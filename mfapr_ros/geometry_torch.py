"""Batched, differentiable torch twins of :mod:`mfapr_ros.geometry` for losses and model heads.

Same conventions: quaternions ``(w, x, y, z)``, poses ``T_a_b``, leading dimensions broadcast. Only the operations
that losses, augmentation and heads need live here; anything for the node side uses the numpy module.
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-8


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion with non-negative ``w`` (differentiable; the sign flip has gradient ±1)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    """Conjugate (inverse of a unit quaternion)."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v`` by unit quaternions ``q``."""
    w = q[..., :1]
    u = q[..., 1:]
    uv = torch.cross(u.expand_as(v) if u.shape != v.shape else u, v, dim=-1)
    return v + 2.0 * (w * uv + torch.cross(u.expand_as(uv) if u.shape != uv.shape else u, uv, dim=-1))


def pose_compose(t_ab: torch.Tensor, q_ab: torch.Tensor, t_bc: torch.Tensor, q_bc: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_ac = T_ab · T_bc``."""
    return t_ab + quat_rotate(q_ab, t_bc), quat_normalize(quat_mul(q_ab, q_bc))


def pose_inverse(t: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_ab⁻¹``."""
    qi = quat_conj(q)
    return -quat_rotate(qi, t), qi


def pose_between(t_a: torch.Tensor, q_a: torch.Tensor, t_b: torch.Tensor, q_b: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative pose ``T_a⁻¹ · T_b``."""
    ti, qi = pose_inverse(t_a, q_a)
    return pose_compose(ti, qi, t_b, q_b)


def quat_log(q: torch.Tensor, canonical: bool = True) -> torch.Tensor:
    """MapNet log map ``u/‖u‖ · acos(w)``; with ``canonical`` (default) ``q`` is first flipped to ``w ≥ 0`` so ``q``
    and ``-q`` agree. ``canonical=False`` keeps the given sign (norm up to π): for a distance between two
    quaternions whose signs were aligned first, which stays continuous across 180° rotations where ``w`` = 0."""
    q = quat_normalize(q) if canonical else q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    w = q[..., :1].clamp(-1.0 + 1e-7, 1.0 - 1e-7)
    u = q[..., 1:]
    n = u.norm(dim=-1, keepdim=True)
    # acos(w)/n → 1 as n → 0; use atan2 for a gradient that stays finite near the identity.
    angle = torch.atan2(n, q[..., :1])
    scale = torch.where(n > 1e-7, angle / n.clamp_min(1e-7), torch.ones_like(n))
    del w
    return u * scale


def quat_exp(v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quat_log`."""
    n = v.norm(dim=-1, keepdim=True)
    sinc = torch.where(n > 1e-7, torch.sin(n) / n.clamp_min(1e-7), torch.ones_like(n))
    return torch.cat([torch.cos(n), v * sinc], dim=-1)


def rotation_error_deg(q: torch.Tensor, q_hat: torch.Tensor) -> torch.Tensor:
    """``2·acos|<q, q̂>|`` in degrees (not for gradients: acos is singular at 1)."""
    d = (quat_normalize(q) * quat_normalize(q_hat)).sum(-1).abs().clamp(0.0, 1.0)
    return 2.0 * torch.acos(d) * (180.0 / math.pi)


def translation_error(t: torch.Tensor, t_hat: torch.Tensor) -> torch.Tensor:
    """Euclidean position error."""
    return (t - t_hat).norm(dim=-1)
