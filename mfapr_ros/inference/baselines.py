"""The baselines every report compares a model against, in one place: the training set's mean pose and image
retrieval.

Why: a pose regressor that does not beat "always answer the training set's mean pose" has learned nothing, and one
that does not approach nearest-neighbour image retrieval over the training images is not worth its weights. Both
are runtime concepts too (the node publishes the retrieval pose live as a prior), so they live in the ROS-free core
that the localizer, the evaluators and training all import.

Mean pose: written by training into the checkpoint (``provenance.train_mean_pose``) with :func:`mean_pose_record`
and read back only by :func:`checkpoint_mean_pose`.

Image retrieval: the pose of the most similar training bundle, from tiny thumbnail descriptors.

Why every report shows it: absolute pose regression behaves much like image retrieval (Sattler et al., CVPR 2019),
so a regressor that does not beat nearest-neighbour retrieval on the same map has not learned anything a user could
not get for free. The descriptor is deliberately simple and cheap — each camera's image as a 16×16 grey thumbnail,
high-pass filtered (minus a 3×3 box blur, so global brightness and lighting gradients do not dominate), zero-mean
and unit-norm per camera, concatenated in slot order (absent cameras are zeros), and the whole vector unit-norm —
so a bundle is compared place *and* heading at once, and the baseline costs milliseconds per query.

The database (descriptors + poses of the training split) is written beside a checkpoint as
``<checkpoint>.retrieval.safetensors`` by training and read by every evaluation; it can also be built from any
bundle source with :meth:`RetrievalDatabase.build`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mfapr_ros.core.errors import CheckpointError, DataError
from mfapr_ros.core.geometry import pose_compose, pose_inverse
from mfapr_ros.core.rig_symmetry import PermutationOffset

if TYPE_CHECKING:  # torch is imported where a thumbnail is computed: the mean-pose reader stays numpy-only
    import torch

THUMB = 16
SUFFIX = ".retrieval.safetensors"


def thumbnails(images: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None,
               size: int = THUMB) -> np.ndarray:
    """Bundle descriptors ``(B, T·size²)`` float32 from images ``(B, T, 3, H, W)`` (any range, float or uint8).

    Grey = channel mean (the same for ImageNet-normalised or [0, 1] inputs up to an affine map, which the per-camera
    normalisation removes).
    """
    import torch

    x = torch.as_tensor(images).float()
    if x.dim() != 5 or x.shape[2] != 3:
        raise DataError(f"retrieval thumbnails: images must be (B, T, 3, H, W), got {tuple(x.shape)}")
    b, t = x.shape[:2]
    g = x.mean(dim=2).reshape(b * t, 1, *x.shape[3:])
    g = torch.nn.functional.adaptive_avg_pool2d(g, size)
    blur = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(g, (1, 1, 1, 1), mode="replicate"), 3, 1)
    d = (g - blur).reshape(b, t, size * size)
    d = d - d.mean(dim=-1, keepdim=True)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    if mask is not None:
        d = d * torch.as_tensor(mask, dtype=torch.bool).reshape(b, t, 1).float()
    d = d.reshape(b, t * size * size)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return d.numpy().astype(np.float32)


@dataclass
class RetrievalDatabase:
    """Descriptors ``(N, D)`` and world poses ``t (N, 3)`` float64, ``q (N, 4)`` (w, x, y, z) of a training split."""

    desc: np.ndarray
    t: np.ndarray
    q: np.ndarray

    def __post_init__(self) -> None:
        self.desc = np.ascontiguousarray(self.desc, dtype=np.float32)
        self.t = np.asarray(self.t, dtype=np.float64)
        self.q = np.asarray(self.q, dtype=np.float64)
        if not (len(self.desc) == len(self.t) == len(self.q)) or len(self.desc) == 0:
            raise DataError(f"retrieval database: {len(self.desc)} descriptors, {len(self.t)} positions, "
                            f"{len(self.q)} rotations; need the same non-zero count")

    @classmethod
    def build(cls, batches: Iterable[tuple[Any, Any, Any, Any]]) -> RetrievalDatabase:
        """From ``(images (B,T,3,H,W), mask (B,T), t (B,3), q (B,4))`` batches."""
        d, ts, qs = [], [], []
        for images, mask, t, q in batches:
            d.append(thumbnails(images, mask))
            ts.append(np.asarray(t, dtype=np.float64).reshape(-1, 3))
            qs.append(np.asarray(q, dtype=np.float64).reshape(-1, 4))
        if not d:
            raise DataError("retrieval database: no training bundles")
        return cls(np.concatenate(d), np.concatenate(ts), np.concatenate(qs))

    def query(self, desc: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose of the best match per query descriptor and its cosine similarity: ``(t, q, score)``."""
        desc = np.asarray(desc, dtype=np.float32)
        if desc.ndim != 2 or desc.shape[1] != self.desc.shape[1]:
            raise DataError(f"retrieval query: descriptors of width {desc.shape[-1]} against a database of width "
                            f"{self.desc.shape[1]} (another rig or thumbnail size)")
        best, score = np.empty(len(desc), np.int64), np.empty(len(desc), np.float32)
        for i in range(0, len(desc), chunk):
            s = desc[i:i + chunk] @ self.desc.T
            best[i:i + chunk] = s.argmax(1)
            score[i:i + chunk] = s.max(1)
        return self.t[best], self.q[best], score

    def query_shifts(self, desc: np.ndarray, shifts: Sequence[PermutationOffset], chunk: int = 1024
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Shift-aware retrieval: the best match over the query's slot permutations ``shifts`` (a ring rig's exact
        cyclic shifts), its pose composed with the shift's rigid motion: ``(t, q, score, shift index)``.

        Why: plain retrieval can only find a place in the heading it was mapped in. A query driving the other way
        sees, at a mapped place, the mapped images in other slots: feeding slot ``j`` camera ``π(j)`` turns the
        query into a virtual rig at ``T·Δ_π`` (:mod:`.rig_symmetry`); if that matches a mapped pose ``T_db`` the
        query is at ``T_db·Δ_π⁻¹``. This is the best lookup a learned model with track augmentation competes with.
        Descriptors are per-slot blocks (``thumbnails``), so a permutation of blocks is the permuted bundle's
        descriptor (the global norm is unchanged).
        """
        desc = np.asarray(desc, dtype=np.float32)
        if not shifts:
            raise DataError("retrieval query_shifts: no slot permutations given")
        n = len(shifts[0].perm)
        b = len(desc)
        blocks = desc.reshape(b, n, -1)
        best_t, best_q = np.zeros((b, 3)), np.zeros((b, 4))
        best_s, best_k = np.full(b, -np.inf, np.float32), np.zeros(b, np.int64)
        for k, off in enumerate(shifts):
            t, q, score = self.query(np.ascontiguousarray(blocks[:, list(off.perm)].reshape(b, -1)), chunk)
            ti, qi = pose_inverse(off.t, off.q)
            t, q = pose_compose(t, q, np.broadcast_to(ti, t.shape), np.broadcast_to(qi, q.shape))
            better = score > best_s
            best_t[better], best_q[better], best_s[better], best_k[better] = t[better], q[better], score[better], k
        return best_t, best_q, best_s, best_k

    def save(self, path: str | Path) -> Path:
        """Atomic write of ``path`` (safetensors; no pickle)."""
        import torch
        from safetensors.torch import save

        from mfapr_ros.core.io import atomic_write_bytes

        path = Path(path)
        data = save({"desc": torch.from_numpy(self.desc).half(), "t": torch.from_numpy(self.t),
                     "q": torch.from_numpy(self.q)}, metadata={"format": "mfapr_ros.retrieval",
                                                               "thumb": json.dumps(THUMB)})
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RetrievalDatabase:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            d = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{path}: not a readable retrieval database ({e})") from None
        if set(d) != {"desc", "t", "q"}:
            raise CheckpointError(f"{path}: retrieval database keys {sorted(d)}; expected desc, q, t")
        return cls(d["desc"].float().numpy(), d["t"].numpy(), d["q"].numpy())


def database_path(checkpoint: str | Path) -> Path:
    """``run/best.json`` → ``run/best.retrieval.safetensors``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SUFFIX)


def load_for_checkpoint(checkpoint: str | Path) -> RetrievalDatabase | None:
    """The database written beside ``checkpoint``, or ``None`` when there is none (older checkpoints)."""
    p = database_path(checkpoint)
    return RetrievalDatabase.load(p) if p.is_file() else None


#: where training records the mean pose in a checkpoint's metadata (``{"t": [3], "q_wxyz": [4]}``)
MEAN_POSE_KEY = "train_mean_pose"


def mean_pose_record(t: np.ndarray, q_wxyz: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """The provenance entry training writes, so that :func:`checkpoint_mean_pose` reads exactly what was written."""
    return {MEAN_POSE_KEY: {"t": [float(x) for x in t], "q_wxyz": [float(x) for x in q_wxyz]}}


def checkpoint_mean_pose(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The training set's mean pose (t, q_wxyz) recorded in a checkpoint's metadata, or None when it has none."""
    mp = (meta.get("provenance") or {}).get(MEAN_POSE_KEY)
    if isinstance(mp, dict) and "t" in mp and "q_wxyz" in mp:
        return np.asarray(mp["t"], dtype=np.float64), np.asarray(mp["q_wxyz"], dtype=np.float64)
    return None
