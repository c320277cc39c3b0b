"""Rotation representations a pose head can regress, and the conversions every caller needs.

Why more than quaternions: a network that regresses a 4-D quaternion (or MapNet's 3-D log-quaternion) must learn a
discontinuous function where ``q`` and ``−q`` meet, and near-symmetric views (a corridor seen from the front and the
back) pull it towards the average of two antipodal targets — a point 90° from both. Zhou et al. (CVPR 2019) show
every 3-D/4-D representation of SO(3) is discontinuous; the 6-D Gram–Schmidt form and the 9-D SVD form
(Levinson et al., NeurIPS 2020) are continuous, and with a chordal or geodesic loss on the rotation matrix they train
stably. ``quat`` and ``logq`` stay for the paper's configs.

Every representation maps to a rotation matrix (for the losses) and to a unit quaternion ``(w, x, y, z)`` with
``w ≥ 0`` (what the rest of the package uses).
"""

from __future__ import annotations

import torch

from mfapr_ros.core import geometry_torch as gt

#: representation → raw head width
RAW_DIMS = {"quat": 4, "logq": 3, "6d": 6, "9d_svd": 9}
REPRESENTATIONS = tuple(RAW_DIMS)
CONTINUOUS = ("6d", "9d_svd")


def identity_raw(rotation: str) -> list[float]:
    """The raw vector of the identity rotation (the head's bias starts there, so early outputs are well posed)."""
    return {"quat": [1.0, 0.0, 0.0, 0.0], "logq": [0.0, 0.0, 0.0], "6d": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            "9d_svd": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}[rotation]


def raw_to_rotation(raw: torch.Tensor, rotation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output ``(…, RAW_DIMS[rotation])`` → ``(unit quaternion (w, x, y, z) with w ≥ 0, rotation matrix)``,
    each computed once: the continuous forms go through the matrix, the quaternion forms through the quaternion.

    Full precision even under autocast (a bf16 rotation matrix is not orthogonal to 1e-2): the input is cast up and
    every op on the way is elementwise or an SVD, none of which autocast lowers (no autocast context: it does not
    survive torch.export serialisation).
    """
    if raw.dtype in (torch.float16, torch.bfloat16):
        raw = raw.float()
    if rotation in CONTINUOUS:
        r = gt.gram_schmidt_6d(raw) if rotation == "6d" else gt.svd_orthogonalize(raw)
        return gt.matrix_to_quat(r), r
    q = gt.quat_normalize(gt.quat_exp(raw) if rotation == "logq" else raw)
    return q, gt.quat_to_matrix(q)


def raw_to_quat(raw: torch.Tensor, rotation: str) -> torch.Tensor:
    """The quaternion of :func:`raw_to_rotation`."""
    return raw_to_rotation(raw, rotation)[0]


def raw_to_matrix(raw: torch.Tensor, rotation: str) -> torch.Tensor:
    """The rotation matrix of :func:`raw_to_rotation`."""
    return raw_to_rotation(raw, rotation)[1]


def quat_to_raw(q: torch.Tensor, rotation: str) -> torch.Tensor:
    """Unit quaternion → the raw form of ``rotation`` (``raw_to_quat(quat_to_raw(q)) == q``)."""
    if rotation == "logq":
        return gt.quat_log(q)
    if rotation == "quat":
        return q
    m = gt.quat_to_matrix(q)
    if rotation == "6d":
        return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)
    return m.reshape(*m.shape[:-2], 9)
