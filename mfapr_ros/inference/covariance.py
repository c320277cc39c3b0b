"""Covariance maths of a published pose: what the model's output means as a 6×6 covariance, in one place.

Why a module of its own: ``mfapr evaluate`` and ``mfapr calibrate`` must score exactly the covariance the node
publishes, without loading a :class:`~mfapr_ros.inference.localizer.Localizer`; they import these functions, the
Localizer calls them on every forward pass. Order ``[x y z rot_x rot_y rot_z]``, m² and rad² (``RigPose``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.settings import finite_number, setting

from .calibration import apply_scales


@dataclass(frozen=True)
class CovarianceSettings:
    """The fallback covariance when the model predicts none: standard deviations, the one schema of the node's
    ``covariance.<field>`` parameters (``ros.params`` generates them from these fields), validated once here.

    The defaults — 0.5 m and 0.1 rad (5.7°), roughly the accuracy of absolute pose regression on a building-scale
    scene — are also :data:`DEFAULT_COVARIANCE`, what ``mfapr evaluate``/``calibrate`` and eval-bag score, so the
    covariance they score and calibrate is the one the node publishes by default; calibration rescales it.
    """

    position_std: float = setting(0.5, "Position std (m) used when the model has no predicted variance (before the "
                                  "checkpoint's covariance calibration).", "> 0")
    orientation_std: float = setting(0.1, "Orientation std (rad) used when the model has no predicted variance "
                                     "(before the checkpoint's covariance calibration).", "> 0")

    def __post_init__(self) -> None:
        for name in ("position_std", "orientation_std"):
            object.__setattr__(self, name, finite_number(f"covariance.{name}", getattr(self, name), 0.0,
                                                         strict=True))

    def variances(self) -> tuple[float, float]:
        """``(position variance m², rotation variance rad²)``: the form :func:`covariance_matrix` accepts."""
        return self.position_std ** 2, self.orientation_std ** 2

    def diagonal(self) -> list[float]:
        """The 6×6 covariance's diagonal ``[x y z roll pitch yaw]`` (variances)."""
        p, o = self.variances()
        return [p, p, p, o, o, o]


#: Default covariance diagonal: (position variance m², rotation variance rad²) of :class:`CovarianceSettings`'
#: defaults (the node's ``covariance.*`` defaults).
DEFAULT_COVARIANCE = CovarianceSettings().variances()


def covariance_matrix(value: Any) -> np.ndarray:
    """``(pos_var, rot_var)``, a 6-vector diagonal, or a 6×6 symmetric PSD matrix → a 6×6 covariance."""
    a = np.asarray(value, dtype=np.float64)
    if a.shape == (2,):
        a = np.diag([a[0]] * 3 + [a[1]] * 3)
    elif a.shape == (6,):
        a = np.diag(a)
    elif a.shape != (6, 6):
        raise ConfigError(f"default_covariance must be (pos_var, rot_var), a 6-vector or a 6x6 matrix; got shape "
                          f"{a.shape}")
    if not np.all(np.isfinite(a)) or not np.allclose(a, a.T) or np.linalg.eigvalsh(a).min() <= 0:
        raise ConfigError(f"default_covariance must be finite, symmetric and positive definite (variances > 0 in "
                          f"m² and rad²); got diagonal {np.diag(a).tolist()}")
    return a


def covariance_from_log_var(log_var: np.ndarray, t_scale: float) -> np.ndarray:
    """The model's ``log_var`` (B, 2) → (B, 6, 6) diagonal covariances.

    Training (``heteroscedastic_nll``: ``d·e^(−s) + s``) makes ``e^s`` the expected error *distance*: in the
    normalised position frame for ``s_t`` and as a quaternion distance (≈ half the rotation angle) for ``s_q``. We
    spread that distance evenly over the three axes: σ²_axis = (t_scale·e^(s_t))²/3 m² and (2·e^(s_q))²/3 rad².
    An approximation — the loss norm and rotation representation are training choices — but monotone in what the
    network reports, which is what a downstream filter (robot_localization) needs.
    """
    s = np.clip(np.asarray(log_var, dtype=np.float64), -30.0, 30.0)
    pos = (t_scale * np.exp(s[:, 0])) ** 2 / 3.0
    rot = (2.0 * np.exp(s[:, 1])) ** 2 / 3.0
    cov = np.zeros((s.shape[0], 6, 6))
    idx = np.arange(3)
    cov[:, idx, idx] = pos[:, None]
    cov[:, idx + 3, idx + 3] = rot[:, None]
    return cov


def anchor_position_covariance(logits: Any, positions: Any, t_norm: Any, t_scale: float) -> np.ndarray:
    """(B, 3, 3) m²: second moment of the anchor head's mixture about the estimate.

    The anchor head (``PoseHead.num_anchors``) classifies the place over K anchors; its softmax is a distribution
    over K candidate positions ``anchor + offset``. ``Σ_k w_k (c_k − t̂)(c_k − t̂)ᵀ`` (normalised frame × t_scale²)
    is small when the classifier is sure and large when mass sits on other places — a per-pose position
    uncertainty the model already computes, where a constant covariance is blind to ambiguous views.
    """
    lg = np.asarray(logits, dtype=np.float64)
    w = np.exp(lg - lg.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    d = np.asarray(positions, dtype=np.float64) - np.asarray(t_norm, dtype=np.float64)[:, None, :]
    return (t_scale ** 2) * np.einsum("bk,bki,bkj->bij", w, d, d)


def pose_covariances(log_var: Any, n: int, t_scale: float, default_covariance: np.ndarray,
                     scales: tuple[float, float] | None = None,
                     anchors: tuple[Any, Any, Any] | None = None) -> np.ndarray:
    """The (n, 6, 6) covariances the Localizer publishes: from the model's ``log_var`` when it predicts one
    (:func:`covariance_from_log_var`), else ``default_covariance`` — plus, for an anchor-head model, the anchor
    mixture's spread on the position block (``anchors = (logits, positions, t_norm)``,
    :func:`anchor_position_covariance`); then the checkpoint's calibration ``scales`` ``(position σ factor,
    rotation σ factor)`` (:mod:`mfapr_ros.inference.calibration`). One function so ``mfapr evaluate`` and ``mfapr
    calibrate`` score exactly what the node publishes."""
    if log_var is not None:
        cov = covariance_from_log_var(np.asarray(log_var, dtype=np.float64).reshape(n, 2), t_scale)
    else:
        cov = np.broadcast_to(np.asarray(default_covariance, dtype=np.float64), (n, 6, 6)).copy()
        if anchors is not None:
            cov[:, :3, :3] += anchor_position_covariance(*anchors, t_scale)
    if scales is not None:
        cov = apply_scales(cov, *scales)
    return cov


def model_anchors(out: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(logits, positions, t_norm)`` numpy arrays of an anchor-head model's output, or ``None``."""
    if out.get("anchor_logits") is None or out.get("anchor_positions") is None:
        return None
    return (out["anchor_logits"].float().cpu().numpy(), out["anchor_positions"].float().cpu().numpy(),
            out["t_norm"].float().cpu().numpy())
