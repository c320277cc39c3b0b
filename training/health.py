"""Training health monitor: is each head still a function of its input, or has it collapsed to a constant?

Why: the old demo recipe trained for minutes with an orientation branch whose embedding barely varied across
bundles (77 % of its units never active) and a yaw that was the same for every input — and nothing said so; the loss
curve looked fine. Per validation pass this module compares the spread of the predictions with the spread of the
targets (position std in metres, circular yaw std in degrees) and counts dead units (constant over the pass) in the
embedding each head reads. A spread ratio under :data:`COLLAPSE_RATIO` or a dead share over :data:`DEAD_SHARE`
becomes a loud warning in the log and in ``summary.json``.

A collapse is a head that *stays* constant: a low spread warns when the previous validation pass was low too, or at
the last pass of the run. A first low pass mid-run is reported as pending (logged, no warning): every freshly
initialised head starts with little spread, and a transformer whose learned queries barely read the memory yet is
still learning at its first pass (issue 19: the input-fused transformer's yaw spread was 2.6-5.8° of 62° at step 93,
in its LR warm-up's wake, and healthy at every later pass). The original failure (collapsed from step 93 to 465)
warns from its second pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mfapr_ros.core.geometry import quat_to_yaw

COLLAPSE_RATIO = 0.1  # predictions spread < 10 % of the targets' spread = collapsed
DEAD_SHARE = 0.9  # > 90 % of a head's input units constant over a validation pass = dead
MIN_TARGET_SPREAD = (0.5, 5.0)  # m, °: below this the targets themselves hardly vary; no verdict


def circular_std_deg(yaw_rad: np.ndarray) -> float:
    """Circular standard deviation of angles (degrees): ``sqrt(−2 ln R)``, R = mean resultant length."""
    if len(yaw_rad) == 0:
        return float("nan")
    r = float(np.hypot(np.mean(np.cos(yaw_rad)), np.mean(np.sin(yaw_rad))))
    return math.degrees(math.sqrt(max(0.0, -2.0 * math.log(max(r, 1e-12)))))


def position_std(t: np.ndarray) -> float:
    """RMS distance to the mean position (metres)."""
    t = np.asarray(t, dtype=np.float64)
    return float(np.sqrt(((t - t.mean(0)) ** 2).sum(1).mean())) if len(t) else float("nan")


class HeadProbe:
    """Records, during a validation pass, each head input unit's min and max (a forward pre-hook on the head).

    Branch names: ``position`` and ``orientation`` for two-branch models (TransPoseNet), ``shared`` otherwise.
    """

    def __init__(self, model: nn.Module) -> None:
        self.head = getattr(getattr(model, "net", None), "head", None)
        self.lo: list[torch.Tensor] = []
        self.hi: list[torch.Tensor] = []
        self._handle: Any = None

    def __enter__(self) -> HeadProbe:
        if self.head is not None:
            self._handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _hook(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        emb = args[0]
        for i, e in enumerate(emb):
            e = e.detach().float().reshape(e.shape[0], -1)
            lo, hi = e.min(0).values.cpu(), e.max(0).values.cpu()
            if i < len(self.lo):
                self.lo[i], self.hi[i] = torch.minimum(self.lo[i], lo), torch.maximum(self.hi[i], hi)
            else:
                self.lo.append(lo)
                self.hi.append(hi)

    def dead_shares(self) -> dict[str, float]:
        names = ["position", "orientation"] if len(self.lo) == 2 else ["shared"] * len(self.lo)
        return {n: float(((h - lo) <= 1e-6 * (1.0 + h.abs())).float().mean())
                for n, lo, h in zip(names, self.lo, self.hi, strict=True)}


def health_report(pred: dict[str, np.ndarray], dead: dict[str, float], previous: dict[str, Any] | None = None,
                  final: bool = True) -> dict[str, Any]:
    """Spreads, dead shares and warnings from a validation pass (``pred``: ``t_est, q_est, t_gt, q_gt``).

    ``previous``: the last pass's report (None: this is the first); ``final``: the run ends with this pass. A low
    spread warns when the previous pass was low too or when ``final``; otherwise it is listed in ``pending``.
    """
    pos_pred, pos_gt = position_std(pred["t_est"]), position_std(pred["t_gt"])
    yaw_pred = circular_std_deg(quat_to_yaw(pred["q_est"]))
    yaw_gt = circular_std_deg(quat_to_yaw(pred["q_gt"]))
    low = {"position": bool(pos_gt >= MIN_TARGET_SPREAD[0] and pos_pred < COLLAPSE_RATIO * pos_gt),
           "orientation": bool(yaw_gt >= MIN_TARGET_SPREAD[1] and yaw_pred < COLLAPSE_RATIO * yaw_gt)}
    said = {"position": f"predictions vary {pos_pred:.2f} m across a validation set whose targets vary {pos_gt:.2f} m",
            "orientation": f"predictions vary {yaw_pred:.1f}° across a validation set whose targets vary "
                           f"{yaw_gt:.1f}°"}
    was_low = (previous or {}).get("low", {})
    warnings, pending = [], []
    for head in ("position", "orientation"):
        if not low[head]:
            continue
        if final or was_low.get(head, False):
            again = " (two validation passes in a row)" if was_low.get(head, False) else ""
            warnings.append(f"{head} head collapsed{again}: {said[head]}")
        else:
            pending.append(f"{head} spread low at this pass, judged at the next: {said[head]}")
    for name, share in dead.items():
        if share > DEAD_SHARE:
            warnings.append(f"{name} head input is {100 * share:.0f} % dead units (constant over the validation "
                            "pass)")
    return {"position_std_pred_m": pos_pred, "position_std_target_m": pos_gt, "yaw_std_pred_deg": yaw_pred,
            "yaw_std_target_deg": yaw_gt, "dead_units": dead, "low": low, "pending": pending, "warnings": warnings}
