"""A rig-equivariant head (``fusion: {position: late, symmetric: true}``): the model averages its own answers over
the rig's cyclic slot shifts, so a ring rig driven at heading ψ + k·90° is, to the network, exactly the mapped
drive at heading ψ — track augmentation built into the architecture instead of sampled into the data.

Why: cyclic track augmentation (``data.track_aug: cyclic``) teaches the network the ring's symmetry from examples.
At demo scale that costs the mapped heading precision (the network spends capacity on four appearances of every
place: forward 0.31 → 0.42 m median, docs/results.md) and it is never exact. Here the per-camera trunk (shared
weights) runs once; its T embeddings are fed to the fc stack and the head in each of the T cyclic orders (the
head is cheap), and each answer is mapped back to the real rig before the average:

    shift k: slot j gets camera (j + k) mod T  →  the head sees a virtual rig  T_world_rig' = T_world_rig · Δ_k
    back:    T_world_rig = T_world_rig'_k · Δ_k⁻¹   (R = R'_k · R_Δkᵀ; a ring centred on the rig origin: t = t'_k)

Position (anchor logits and offsets) is averaged as is (invariant: Δ_k has no translation), the rotation in the
6-D form of ``Rᵀ`` (:func:`average_columns`), log-variances as is. The result is exactly
equivariant: shifting the input by one slot turns the output by Δ_1 — the test in test/models/test_symmetry.py.

``symmetric: auto`` (the demo preset) turns it on exactly where it can be exact (:func:`unavailable`): with a
ring rig's extrinsics (what `mfapr train` fills in) it is on, with no extrinsics or another rig it is off.

Requires what makes it exact: shared per-camera weights, the 6-D rotation form, and extrinsics
whose cyclic shifts are symmetries of the rig about its origin (ring rigs); anything else is refused at build time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mfapr_ros.core import geometry as g
from mfapr_ros.core.errors import ConfigError

from .checks import config_error

#: a rig whose cyclic shifts are off by more than this is not a ring about its origin: refused (m, rad)
TOLERANCE_M = 1e-3
TOLERANCE_RAD = 1e-3


def shift_rotations(cfg: dict[str, Any]) -> torch.Tensor:
    """``R_Δk`` (T, 3, 3) for every cyclic shift k of the config's rig extrinsics, checked to be exact symmetries
    (every slot agrees on Δ_k) that fix the rig origin (no translation); otherwise a config error saying why."""
    ext = cfg.get("extrinsics")
    if ext is None:
        raise config_error("fusion.symmetric", "needs the rig extrinsics (model config 'extrinsics'; `mfapr train` "
                           "fills them from the rig)")
    t = np.asarray(ext["t"], dtype=np.float64)
    q = np.asarray(ext["q"], dtype=np.float64)
    T = len(t)
    ti, qi = g.pose_inverse(t, q)
    out = []
    for k in range(T):
        idx = [(j + k) % T for j in range(T)]
        dt, dq = g.pose_compose(t[idx], q[idx], ti, qi)  # Δ_k seen from every slot j
        spread = float(np.max(g.rotation_error_deg(dq, np.broadcast_to(dq[0], dq.shape))))
        if np.radians(spread) > TOLERANCE_RAD or float(np.max(np.linalg.norm(dt - dt[0], axis=1))) > TOLERANCE_M:
            raise config_error("fusion.symmetric", f"the rig's cyclic slot shift by {k} is not a symmetry of its "
                               f"extrinsics (slots disagree by {spread:.2f}°); a symmetric head needs a ring rig "
                               "(cameras evenly spaced in yaw, in ring order), or fusion.symmetric: false")
        if float(np.linalg.norm(dt[0])) > TOLERANCE_M:
            raise config_error("fusion.symmetric", f"the rig's cyclic slot shift by {k} moves the rig origin by "
                               f"{np.linalg.norm(dt[0]):.3f} m: the ring is not centred on base_link; put base_link "
                               "at the ring's centre, or fusion.symmetric: false")
        out.append(g.quat_to_matrix(dq[0]))
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


def unavailable(cfg: dict[str, Any]) -> str | None:
    """Why the symmetric head cannot be exact for the resolved config ``cfg`` (None: it can) — what
    ``fusion.symmetric: auto`` decides on: late fusion with shared weights, the 6-D rotation, ring extrinsics."""
    if cfg["fusion"]["position"] != "late" or not cfg["fusion"]["shared_weights"]:
        return "it needs late fusion with shared weights"
    if cfg["rotation"] != "6d":
        return "it needs the 6-D rotation form"
    try:
        shift_rotations(cfg)
    except ConfigError as e:
        return str(e).split(": ", 1)[-1]
    return None


def shifted_batch(per_camera: torch.Tensor) -> torch.Tensor:
    """``(B, T, …)`` per-camera embeddings → ``(T·B, T·…)``: row block k holds the slots in cyclic order k
    (slot j ← camera (j + k) mod T), flattened as the fc stack expects."""
    T = per_camera.shape[1]
    return torch.cat([torch.roll(per_camera, -k, dims=1).flatten(1) for k in range(T)], dim=0)


def average_columns(raw: torch.Tensor, r_delta: torch.Tensor) -> torch.Tensor:
    """The head's 6-D outputs for the T cyclic orders ``(T, B, 6)`` → their equivariant mean ``(B, 6)``.

    In the symmetric head a 6-D output is read as the first two columns of ``Rᵀ`` (world axes in the rig frame),
    so mapping order k's answer back to the real rig is a *left* multiplication, ``Rᵀ = R_Δk · R'_kᵀ``, applied to
    both columns before the linear mean; Gram-Schmidt of the mean then commutes with a slot shift (it is
    equivariant under left rotations, not right ones, and an SVD projection would flip at det < 0 while the
    orders still disagree early in training).
    """
    T, B = raw.shape[:2]
    cols = torch.einsum("kij,kbcj->kbci", r_delta.to(raw), raw.reshape(T, B, 2, 3))
    return cols.mean(0).reshape(B, 6)
