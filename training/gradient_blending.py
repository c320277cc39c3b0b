"""Gradient blending (Wang, Tran & Feiszli, CVPR 2020, arXiv 1905.12681) for late-fusion models.

Why: a late-fusion network trained only on the fused output lets one stream dominate and the others overfit
(the "multi-modal is worse than the best single modality" effect). Gradient blending adds one auxiliary loss per
stream (here: per camera, from the model's per-camera heads) and weights all losses — the streams' and the fused
one — by how much each generalises relative to how much it overfits, measured on a held-out split:

    O_N  = L_val(N) − L_train(N)                 overfitting at checkpoint N
    ΔO   = O_{N+n} − O_N,   ΔG = L_val(N) − L_val(N+n)
    w_k  ∝ ΔG_k / ΔO_k²     (normalised to sum 1; a stream that did not generalise, ΔG ≤ 0, gets 0)

The weights are re-estimated every ``every_steps`` training steps from the last two measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mfapr_ros.core.errors import ConfigError


@dataclass
class BlendMeasurement:
    """Per-stream (train, val) losses at one step; stream ``K`` (the last) is the fused output."""

    step: int
    train: list[float]
    val: list[float]


@dataclass
class GradientBlender:
    """Holds the current blending weights and the measurement history they come from.

    ``num_streams`` counts the auxiliary (per-camera) streams; the weight vector has ``num_streams + 1`` entries,
    the last for the fused prediction. Until two measurements exist the weights are uniform.
    """

    num_streams: int
    min_delta_o: float = 1e-3
    history: list[BlendMeasurement] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.num_streams < 1:
            raise ConfigError("gradient blending needs at least one auxiliary stream (a per-camera head)")
        if not self.weights:
            self.weights = [1.0 / (self.num_streams + 1)] * (self.num_streams + 1)

    def update(self, step: int, train_losses: list[float], val_losses: list[float]) -> list[float]:
        """Record one measurement and, from the second on, re-estimate the weights; returns the weights."""
        k = self.num_streams + 1
        if len(train_losses) != k or len(val_losses) != k:
            raise ConfigError(f"gradient blending: expected {k} losses (streams + fused), got "
                              f"{len(train_losses)}/{len(val_losses)}")
        self.history.append(BlendMeasurement(step, [float(x) for x in train_losses], [float(x) for x in val_losses]))
        if len(self.history) >= 2:
            self.weights = blend_weights(self.history[-2], self.history[-1], self.min_delta_o)
        return self.weights

    def combine(self, stream_losses: torch.Tensor, fused_loss: torch.Tensor) -> torch.Tensor:
        """``Σ w_k L_k + w_fused L_fused`` (``stream_losses`` is (K,), the per-stream scalars)."""
        w = stream_losses.new_tensor(self.weights)
        return (w[:-1] * stream_losses).sum() + w[-1] * fused_loss

    def state_dict(self) -> dict:
        return {"weights": list(self.weights),
                "history": [{"step": m.step, "train": m.train, "val": m.val} for m in self.history[-2:]]}

    def load_state_dict(self, d: dict) -> None:
        self.weights = [float(x) for x in d["weights"]]
        self.history = [BlendMeasurement(int(m["step"]), list(m["train"]), list(m["val"])) for m in d["history"]]


def blend_weights(prev: BlendMeasurement, cur: BlendMeasurement, min_delta_o: float = 1e-3) -> list[float]:
    """Wang et al.'s weights ``ΔG/ΔO²`` (normalised), from two measurements; uniform if no stream generalised."""
    raw = []
    for tr0, va0, tr1, va1 in zip(prev.train, prev.val, cur.train, cur.val, strict=True):
        d_g = va0 - va1
        d_o = (va1 - tr1) - (va0 - tr0)
        # A stream whose overfitting did not grow is limited by min_delta_o, not rewarded with an infinite weight.
        d_o = max(abs(d_o), min_delta_o)
        raw.append(max(d_g, 0.0) / (d_o * d_o) if math.isfinite(d_g) else 0.0)
    total = sum(raw)
    if total <= 0 or not math.isfinite(total):
        return [1.0 / len(raw)] * len(raw)
    return [r / total for r in raw]
