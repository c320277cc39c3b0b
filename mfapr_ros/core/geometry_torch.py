"""Batched, differentiable torch twins of :mod:`mfapr_ros.core.geometry` for losses and model heads.

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


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``(…, 4)`` → rotation matrix ``(…, 3, 3)`` (differentiable; ``q`` is normalised first)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(…, 3, 3)`` → unit quaternion ``(…, 4)`` with ``w ≥ 0``.

    Why all four Shepperd branches are computed: the branch with the largest diagonal term is the well-conditioned
    one, and selecting it with ``torch.where`` keeps the function batched, exportable and differentiable where it is
    evaluated (the other branches' NaN-free square roots are clamped).
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    cands = []
    for diag, parts in (
        (1 + m00 + m11 + m22, lambda s: (s / 4, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s)),
        (1 + m00 - m11 - m22, lambda s: ((m21 - m12) / s, s / 4, (m01 + m10) / s, (m02 + m20) / s)),
        (1 - m00 + m11 - m22, lambda s: ((m02 - m20) / s, (m01 + m10) / s, s / 4, (m12 + m21) / s)),
        (1 - m00 - m11 + m22, lambda s: ((m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, s / 4)),
    ):
        s = 2.0 * diag.clamp_min(1e-6).sqrt()
        cands.append((diag, torch.stack(parts(s), dim=-1)))
    diags = torch.stack([d for d, _ in cands], dim=-1)
    best = diags.argmax(dim=-1, keepdim=True)
    q = torch.stack([c for _, c in cands], dim=-2)  # (…, 4 branches, 4)
    q = torch.gather(q, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    return quat_normalize(q)


def gram_schmidt_6d(v: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s continuous 6-D representation ``(…, 6)`` (two columns) → rotation matrix ``(…, 3, 3)``."""
    a, b = v[..., :3], v[..., 3:6]
    c1 = a / a.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    b = b - (c1 * b).sum(-1, keepdim=True) * c1
    c2 = b / b.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    c3 = torch.cross(c1, c2, dim=-1)
    return torch.stack([c1, c2, c3], dim=-1)


def svd_orthogonalize(v: torch.Tensor) -> torch.Tensor:
    """Levinson et al.'s 9-D representation: the nearest rotation to a 3×3 matrix (special-orthogonal SVD)."""
    m = v.reshape(*v.shape[:-1], 3, 3)
    if m.dtype in (torch.float16, torch.bfloat16):
        m = m.float()
    u, _, vh = torch.linalg.svd(m)
    # U·diag(1, 1, det(U Vᵀ))·Vᵀ written elementwise (a matmul would run in bf16 under autocast)
    d = torch.det(u) * torch.det(vh)
    ones = torch.ones_like(d)
    s = torch.stack([ones, ones, d], dim=-1)
    return ((u * s[..., None, :])[..., :, :, None] * vh[..., None, :, :]).sum(dim=-2)


def chordal_distance(r: torch.Tensor, r_hat: torch.Tensor) -> torch.Tensor:
    """``‖R − R̂‖_F = 2√2·sin(θ/2)``: continuous everywhere, ≈ √2·θ near 0 (an eps keeps the gradient finite)."""
    return ((r - r_hat).square().sum(dim=(-2, -1)) + 1e-12).sqrt()


def geodesic_distance(r: torch.Tensor, r_hat: torch.Tensor) -> torch.Tensor:
    """Rotation angle θ of ``R̂ᵀR`` in radians via ``atan2(sin, cos)``: stable at 0 and π, unlike ``acos``."""
    m = r_hat.transpose(-1, -2) @ r
    cos = (m.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    axis = torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = ((axis.square().sum(-1) + 1e-12).sqrt()) / 2.0
    return torch.atan2(sin, cos)
