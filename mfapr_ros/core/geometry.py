"""Rigid-body geometry on numpy arrays: the one implementation used by the node, evaluation and data code.

Conventions (stated once, here):
- A quaternion is ``(w, x, y, z)`` everywhere inside the package. ROS messages use ``(x, y, z, w)``; the only
  conversions are :func:`quat_wxyz_to_xyzw` and :func:`quat_xyzw_to_wxyz`.
- A pose ``(t, q)`` is ``T_a_b``: it maps points in frame ``b`` to frame ``a`` (``p_a = R(q) p_b + t``). The rig
  pose is ``T_world_rig``. kapture stores ``T_device_world``; readers invert at their boundary.
- Functions broadcast over leading dimensions: ``q`` is ``(..., 4)``, ``t`` is ``(..., 3)``.
- Rotation error is ``2·acos|<q, q̂>|`` in degrees, so ``q`` and ``-q`` are the same rotation.
- Timestamps are integer nanoseconds (``int`` / ``np.int64``).

Batched torch twins for losses live in :mod:`mfapr_ros.core.geometry_torch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError

#: kapture/NAVER LABS recall bins: (max translation error in m, max rotation error in degrees).
RECALL_BINS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))

_EPS = 1e-12


def _arr(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------- conventions
def quat_wxyz_to_xyzw(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Package order ``(w, x, y, z)`` → ROS message order ``(x, y, z, w)``."""
    q = _arr(q)
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def quat_xyzw_to_wxyz(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """ROS message order ``(x, y, z, w)`` → package order ``(w, x, y, z)``."""
    q = _arr(q)
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


# --------------------------------------------------------------------------------------------- quaternions
def quat_norm_error(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """``| ‖q‖ − 1 |``: used by validators to reject non-unit quaternions with a clear message."""
    return np.abs(np.linalg.norm(_arr(q), axis=-1) - 1.0)


def quat_normalize(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unit quaternion with a non-negative ``w`` (a canonical sign makes outputs comparable)."""
    q = _arr(q)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < _EPS):
        raise DataError("cannot normalise a zero quaternion")
    q = q / n
    return np.where(q[..., :1] < 0, -q, q)


def quat_mul(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` (rotation ``b`` first, then ``a``)."""
    a, b = _arr(a), _arr(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conj(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Conjugate; the inverse of a unit quaternion."""
    q = _arr(q)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


quat_inv = quat_conj


def quat_rotate(q: Sequence[float] | np.ndarray, v: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) by unit quaternions ``q`` (..., 4)."""
    q, v = _arr(q), _arr(v)
    w = q[..., :1]
    u = q[..., 1:]
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def quat_to_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from unit quaternions."""
    q = quat_normalize(q)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (w ≥ 0) from rotation matrices (..., 3, 3); numerically stable (Shepperd's method)."""
    m = _arr(m)
    batch = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    for i, r in enumerate(m):
        tr = r[0, 0] + r[1, 1] + r[2, 2]
        if tr > 0:
            s = np.sqrt(tr + 1.0) * 2
            out[i] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
            out[i] = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
        elif r[1, 1] > r[2, 2]:
            s = np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
            out[i] = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
        else:
            s = np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
            out[i] = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    return quat_normalize(out).reshape(*batch, 4)


def quat_from_axis_angle(axis: Sequence[float] | np.ndarray, angle: float | np.ndarray) -> np.ndarray:
    """Quaternion of a rotation by ``angle`` radians about ``axis`` (normalised here)."""
    axis = _arr(axis)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * np.asarray(angle, dtype=np.float64)[..., None]
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def quat_from_yaw(yaw: float | np.ndarray) -> np.ndarray:
    """Rotation about +z (the ROS up axis) by ``yaw`` radians."""
    return quat_from_axis_angle(np.array([0.0, 0.0, 1.0]), yaw)


def quat_to_yaw(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Heading (rotation about +z) of a quaternion, radians in (−π, π]."""
    w, x, y, z = np.moveaxis(_arr(q), -1, 0)
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quat_log(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """MapNet's logarithm of a unit quaternion: ``u/‖u‖ · acos(w)`` (3-vector, half the rotation angle).

    ``q`` and ``-q`` map to the same value because ``w`` is made non-negative first.
    """
    q = quat_normalize(q)
    w = np.clip(q[..., :1], -1.0, 1.0)
    u = q[..., 1:]
    n = np.linalg.norm(u, axis=-1, keepdims=True)
    scale = np.where(n > 1e-9, np.arccos(w) / np.maximum(n, 1e-300), 1.0)
    return u * scale


def quat_exp(v: Sequence[float] | np.ndarray) -> np.ndarray:
    """Inverse of :func:`quat_log`: ``(cos‖v‖, sin‖v‖ · v/‖v‖)``."""
    v = _arr(v)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    sinc = np.where(n > 1e-9, np.sin(n) / np.maximum(n, 1e-300), 1.0)
    return np.concatenate([np.cos(n), v * sinc], axis=-1)


def quat_slerp(q0: Sequence[float] | np.ndarray, q1: Sequence[float] | np.ndarray,
               alpha: float | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; ``alpha`` in [0, 1] broadcasts."""
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    alpha = np.asarray(alpha, dtype=np.float64)[..., None]
    d = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(d < 0, -q1, q1)
    d = np.abs(d)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    s = np.sin(theta)
    small = s < 1e-6
    w0 = np.where(small, 1.0 - alpha, np.sin((1.0 - alpha) * theta) / np.where(small, 1.0, s))
    w1 = np.where(small, alpha, np.sin(alpha * theta) / np.where(small, 1.0, s))
    return quat_normalize(w0 * q0 + w1 * q1)


# --------------------------------------------------------------------------------------------- SE(3)
def pose_compose(t_ab: np.ndarray, q_ab: np.ndarray, t_bc: np.ndarray, q_bc: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``T_ac = T_ab · T_bc``."""
    t_ab, q_ab, t_bc, q_bc = _arr(t_ab), _arr(q_ab), _arr(t_bc), _arr(q_bc)
    return t_ab + quat_rotate(q_ab, t_bc), quat_normalize(quat_mul(q_ab, q_bc))


def pose_inverse(t: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_ba = T_ab⁻¹``."""
    qi = quat_conj(quat_normalize(q))
    return -quat_rotate(qi, _arr(t)), quat_normalize(qi)


def pose_between(t_a: np.ndarray, q_a: np.ndarray, t_b: np.ndarray, q_b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Relative pose ``T_a⁻¹ · T_b`` (MapNet's relative motion between two frames of a track)."""
    ti, qi = pose_inverse(t_a, q_a)
    return pose_compose(ti, qi, t_b, q_b)


def map_to_odom(t_map_base: np.ndarray, q_map_base: np.ndarray, t_odom_base: np.ndarray, q_odom_base: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """REP-105 correction: ``T_map_odom = T_map_base · T_odom_base⁻¹`` (both at the bundle stamp).

    What a localizer broadcasts as ``map → odom`` so that odometry keeps owning ``odom → base`` (nav2 AMCL does
    the same); composing it with ``T_odom_base`` gives back ``T_map_base``.
    """
    ti, qi = pose_inverse(_arr(t_odom_base), _arr(q_odom_base))
    return pose_compose(_arr(t_map_base), _arr(q_map_base), ti, qi)


# --------------------------------------------------------------------------------------------- time
def interpolate_poses(stamps_ns: Sequence[int] | np.ndarray, t: np.ndarray, q: np.ndarray,
                      query_ns: Sequence[int] | np.ndarray, max_gap_ns: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses of a trajectory at query stamps: linear in translation, slerp in rotation.

    Returns ``(t, q, valid)``; ``valid`` is False for queries outside the trajectory's time span or (when
    ``max_gap_ns`` is given) between two samples further apart than that, so callers can drop and count them.
    Stamps must be strictly increasing integers (nanoseconds).
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    query = np.atleast_1d(np.asarray(query_ns, dtype=np.int64))
    t, q = _arr(t), _arr(q)
    if stamps.ndim != 1 or len(stamps) == 0:
        raise DataError("interpolate_poses needs a non-empty 1-D trajectory")
    if np.any(np.diff(stamps) <= 0):
        raise DataError("trajectory stamps must be strictly increasing (sort and de-duplicate first)")
    valid = (query >= stamps[0]) & (query <= stamps[-1])
    hi = np.clip(np.searchsorted(stamps, query, side="left"), 0, len(stamps) - 1)
    lo = np.clip(hi - 1, 0, len(stamps) - 1)
    exact = stamps[hi] == query
    lo = np.where(exact, hi, lo)
    span = (stamps[hi] - stamps[lo]).astype(np.float64)
    alpha = np.where(span > 0, (query - stamps[lo]).astype(np.float64) / np.where(span > 0, span, 1.0), 0.0)
    alpha = np.clip(alpha, 0.0, 1.0)
    if max_gap_ns is not None:
        valid &= (stamps[hi] - stamps[lo]) <= max_gap_ns
    t_out = t[lo] + alpha[:, None] * (t[hi] - t[lo])
    q_out = quat_slerp(q[lo], q[hi], alpha)
    return t_out, q_out, valid


# --------------------------------------------------------------------------------------------- errors
def translation_error(t: np.ndarray, t_hat: np.ndarray) -> np.ndarray:
    """Euclidean position error in metres."""
    return np.linalg.norm(_arr(t) - _arr(t_hat), axis=-1)


def rotation_error_deg(q: np.ndarray, q_hat: np.ndarray) -> np.ndarray:
    """Angle of the relative rotation, ``2·acos|<q, q̂>|`` in degrees (sign-invariant)."""
    q, q_hat = quat_normalize(q), quat_normalize(q_hat)
    d = np.clip(np.abs(np.sum(q * q_hat, axis=-1)), 0.0, 1.0)
    return np.degrees(2.0 * np.arccos(d))


def recall_at_bins(t_err: np.ndarray, r_err_deg: np.ndarray,
                   bins: Sequence[tuple[float, float]] = RECALL_BINS) -> list[float]:
    """Share (0..1) of poses within each ``(metres, degrees)`` bin; empty input gives zeros."""
    t_err, r_err_deg = _arr(t_err), _arr(r_err_deg)
    if t_err.size == 0:
        return [0.0 for _ in bins]
    return [float(np.mean((t_err <= m) & (r_err_deg <= d))) for m, d in bins]


def mean_pose(t: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean pose: mean translation and the Markley average quaternion (sign-invariant).

    Used for the mean-pose baseline and to fuse per-camera rig estimates of the mix-stream models.
    """
    t, q = _arr(t), quat_normalize(q)
    w = np.ones(len(t)) if weights is None else _arr(weights)
    if w.sum() <= 0:
        raise DataError("mean_pose needs positive total weight")
    w = w / w.sum()
    t_mean = (w[:, None] * t).sum(0)
    m = (w[:, None, None] * q[:, :, None] * q[:, None, :]).sum(0)
    vals, vecs = np.linalg.eigh(m)
    return t_mean, quat_normalize(vecs[:, np.argmax(vals)])
