"""Pose-regression losses: learned-weighting absolute loss, MapNet relative loss, mix-stream and heteroscedastic NLL.

Why learned weighting: metres and quaternion units are incommensurable, and hand-tuning β per scene (PoseNet) is
brittle. Kendall & Cipolla's homoscedastic form ``L = d_t·e^(−sx) + sx + d_q·e^(−sq) + sq`` learns the balance;
MapNet initialises ``sx = 0, sq = −3`` (rotation ≈ 20× the weight of position at the start).

All translations here are in the model's *normalised* frame (``t_norm`` = ``(t − t_mean)/t_scale``) so one set of
initial weights suits a 10 m synthetic room and a 500 m mall alike. Quaternions are ``(w, x, y, z)``; every
rotation distance is sign-invariant (``q`` and ``−q`` are the same rotation), either through ``min(‖q−q̂‖, ‖q+q̂‖)``
or through the log map with ``w ≥ 0`` (:func:`mfapr_ros.core.geometry_torch.quat_log`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry_torch import (
    chordal_distance,
    geodesic_distance,
    pose_between,
    pose_compose,
    quat_log,
    quat_normalize,
    quat_to_matrix,
)
from mfapr_ros.models.layers import PoseHead

NORMS = ("l1", "l2")
#: rotation distances: on quaternions (PoseNet), log-quaternions (MapNet), or rotation matrices (chordal ‖R − R̂‖_F,
#: geodesic angle) — the matrix forms are continuous everywhere and go with the 6d / 9d_svd representations
ROTATIONS = ("quat", "logq", "chordal", "geodesic")
MATRIX_ROTATIONS = ("chordal", "geodesic")


def vector_distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row distance over the last dim: ``l1`` = Σ|a−b| (robust, MapNet default), ``l2`` = Euclidean ‖a−b‖₂."""
    d = a - b
    if norm == "l1":
        return d.abs().sum(-1)
    if norm == "l2":
        # sqrt with an epsilon: the gradient of ‖·‖₂ at exactly 0 is NaN otherwise (a perfect prediction).
        return (d.square().sum(-1) + 1e-12).sqrt()
    raise ConfigError(f"loss.norm is '{norm}'; expected one of {NORMS}")


def rotation_distance(q: torch.Tensor, q_hat: torch.Tensor, norm: str, rotation: str,
                      r: torch.Tensor | None = None) -> torch.Tensor:
    """Sign-invariant per-row rotation distance between a prediction ``q`` (or its matrix ``r``, used when given —
    the 6d / 9d_svd heads produce it directly) and the target ``q_hat``; ``rotation`` names the distance."""
    if rotation in MATRIX_ROTATIONS:
        r = quat_to_matrix(q) if r is None else r
        r_hat = quat_to_matrix(q_hat)
        return chordal_distance(r, r_hat) if rotation == "chordal" else geodesic_distance(r, r_hat)
    if rotation == "quat":
        qn, qh = quat_normalize(q), quat_normalize(q_hat)
        return torch.minimum(vector_distance(qn, qh, norm), vector_distance(qn, -qh, norm))
    if rotation == "logq":
        # Align q̂'s sign to q, then take both logs without re-canonicalising: the canonical (w ≥ 0) log jumps where
        # w changes sign (180° rotations), which made two headings 2° apart across ±180° yaw look π apart.
        qn = quat_normalize(q)
        flip = (qn * q_hat).sum(-1, keepdim=True) < 0
        qh = torch.where(flip, -q_hat, q_hat)  # quat_log normalises; the sign test does not need it
        return vector_distance(quat_log(qn, canonical=False), quat_log(qh, canonical=False), norm)
    raise ConfigError(f"loss.rotation_distance is '{rotation}'; expected one of {ROTATIONS}")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


@dataclass
class GradientBlendingConfig:
    """``loss.gradient_blending``: when and how the late-fusion blending weights are measured
    (:mod:`mfapr_training.gradient_blending`)."""

    every_steps: int = 0  # measure every this many steps; 0 = off (was the separate switch `enabled`)
    batches: int = 4  # batches of train and held-out data per measurement

    @property
    def enabled(self) -> bool:
        """Whether gradient blending runs (``every_steps > 0``)."""
        return self.every_steps > 0


#: fields whose ``None`` means "decided by the model" (:meth:`LossSettings.for_model` fills them in)
MODEL_DEPENDENT_LOSS_FIELDS = ("rotation_distance", "rig_weight")


@dataclass
class LossSettings:
    """The ``loss`` section of the training config *and* what :class:`PoseLoss` runs with — one dataclass, so a
    field cannot exist on one side only (the YAML keys are these fields; :mod:`mfapr_training.config` validates).

    ``rotation_distance`` and ``rig_weight`` may be ``None`` = decided by the model: :meth:`for_model` resolves them
    (into a copy: mutable like every config section, so ``--set``-style edits in code work on ``cfg.loss``).
    """

    norm: str = "l1"
    # the rotation *distance* (not the model's rotation representation, model.rotation): quat | logq | chordal |
    # geodesic; default: quat/logq for those model representations, chordal for 6d/9d_svd
    rotation_distance: str | None = None
    sx: float = 0.0
    sq: float = -3.0
    # lr of the learned sx/sq/srx/srq (own group, no weight decay); None = optim.lr; 0 = fixed weights (the old
    # switch learn_weights: false)
    weights_lr: float | None = None
    relative_weight: float = 0.0  # weight of the relative loss; 0 = off (the old switch relative: false)
    relative_warmup_steps: int = 0  # the relative term's weight ramps 0 → 1 over these steps
    srx: float = 0.0
    srq: float = -3.0
    rig_weight: float | None = None  # default 1, or 0 for mix-stream models (they learn per-camera poses)
    anchor_weight: float = 1.0  # cross-entropy weight of an anchor head (model.num_anchors > 0)
    gradient_blending: GradientBlendingConfig = field(default_factory=GradientBlendingConfig)

    @property
    def learn_weights(self) -> bool:
        """Whether sx/sq (and srx/srq) are learned: ``weights_lr`` is not 0."""
        return self.weights_lr != 0

    @property
    def relative(self) -> bool:
        """Whether the relative loss runs: ``relative_weight > 0``."""
        return self.relative_weight > 0

    def for_model(self, rotation_repr: str = "quat", mix_stream: bool = False) -> LossSettings:
        """These settings with the model-dependent ``None`` fields filled: the rotation distance matching the
        model's representation (quat/logq, else chordal) and no rig term for mix-stream models."""
        rotation = self.rotation_distance or (rotation_repr if rotation_repr in ("quat", "logq") else "chordal")
        rig_weight = self.rig_weight if self.rig_weight is not None else (0.0 if mix_stream else 1.0)
        return replace(self, rotation_distance=rotation, rig_weight=rig_weight)


class LearnedWeighting(nn.Module):
    """``d_t·e^(−sx) + sx + d_q·e^(−sq) + sq`` with ``sx``, ``sq`` trained (or frozen when ``learn=False``)."""

    def __init__(self, sx: float, sq: float, learn: bool = True) -> None:
        super().__init__()
        self.sx = nn.Parameter(torch.tensor(float(sx)), requires_grad=learn)
        self.sq = nn.Parameter(torch.tensor(float(sq)), requires_grad=learn)

    def terms(self, d_t: torch.Tensor, d_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The position and rotation parts of the combination (for logging each term's share)."""
        return d_t * torch.exp(-self.sx) + self.sx, d_q * torch.exp(-self.sq) + self.sq

    def forward(self, d_t: torch.Tensor, d_q: torch.Tensor) -> torch.Tensor:
        """Combine *already averaged* distances (scalars)."""
        a, b = self.terms(d_t, d_q)
        return a + b


def anchor_terms(out: dict[str, torch.Tensor], t_gt: torch.Tensor, norm: str,
                 radius_spacings: float = PoseHead.RADIUS_SPACINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(offset distance, cross-entropy)`` of an anchor head (``layers.PoseHead`` with ``num_anchors``).

    Offsets: every anchor within ``radius_spacings`` anchor spacings of the target (at least the nearest) is
    trained to point at it, whatever the classifier chose — exactly the anchors the head averages at inference
    (the same ``PoseHead.RADIUS_SPACINGS``), so each candidate in that average is a trained estimate, not an
    untrained offset that pulls the position towards an anchor centre. Classifier: cross-entropy against soft labels
    ``∝ exp(−d²/2σ²)``, σ = half the anchor spacing: neighbouring anchors are nearly as right as the nearest one,
    which keeps the labels smooth along a track.
    """
    centres, cand, logits = out["anchor_centres"].float(), out["anchor_positions"].float(), out["anchor_logits"]
    spacing = out["anchor_spacing"].float().clamp_min(1e-6)
    d = torch.cdist(t_gt[None].float(), centres[None])[0]  # (B, K)
    near = d <= radius_spacings * spacing
    near = near | (d == d.min(dim=1, keepdim=True).values)
    per = vector_distance(cand, t_gt.float()[:, None, :].expand_as(cand), norm)  # (B, K)
    w = near.float()
    off = (per * w).sum(1) / w.sum(1)
    soft = torch.softmax(-d.square() / (2 * (0.5 * spacing) ** 2), dim=1)
    ce = -(soft * torch.log_softmax(logits.float(), dim=1)).sum(1)
    return off, ce


def heteroscedastic_nll(d_t: torch.Tensor, d_q: torch.Tensor, log_var: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample version of the learned weighting: ``d·e^(−s) + s`` with ``s`` = the model's predicted log-variance.

    This is the Laplace negative log-likelihood (up to constants) when ``norm = l1``; the network learns to report
    a larger variance where it is unsure, which the node turns into the pose covariance.
    """
    s_t, s_q = log_var[..., 0], log_var[..., 1]
    per = d_t * torch.exp(-s_t) + s_t + d_q * torch.exp(-s_q) + s_q
    return _masked_mean(per, mask)


class PoseLoss(nn.Module):
    """The full training criterion on a model output dict and a batch of ground truth.

    Inputs (batch ``B``, tuple length ``S``, cameras ``T``): ``out`` from the model on the flattened ``B·S``
    bundles; ``t_gt_norm`` (B·S, 3) ground-truth positions in the normalised frame; ``q_gt`` (B·S, 4);
    ``steps = S`` for the relative loss; for mix-stream models ``cam_t_gt_norm`` (B·S, T, 3), ``cam_q_gt``
    (B·S, T, 4) and ``mask`` (B·S, T). Returns ``(loss, parts)`` where ``parts`` holds detached scalars for logging.
    """

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        settings = settings.for_model()  # fields the model decides and nobody did: a plain quaternion model's
        if settings.norm not in NORMS:
            raise ConfigError(f"loss.norm is '{settings.norm}'; expected one of {NORMS}")
        if settings.rotation_distance not in ROTATIONS:
            raise ConfigError(f"loss.rotation_distance is '{settings.rotation_distance}'; expected one of "
                              f"{ROTATIONS}")
        self.settings = settings
        self.step = 0  # optimizer step, set by the trainer (relative-loss warm-up)
        self.absolute = LearnedWeighting(settings.sx, settings.sq, settings.learn_weights)
        self.relative = LearnedWeighting(settings.srx, settings.srq, settings.learn_weights) if settings.relative \
            else None

    def distances(self, t: torch.Tensor, q: torch.Tensor, t_gt: torch.Tensor, q_gt: torch.Tensor,
                  r: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row ``(d_t, d_q)`` with the configured norm and rotation distance (``r``: predicted matrices)."""
        s = self.settings
        return vector_distance(t, t_gt, s.norm), rotation_distance(q, q_gt, s.norm, s.rotation_distance, r)

    def forward(self, out: dict[str, torch.Tensor], t_gt_norm: torch.Tensor, q_gt: torch.Tensor, steps: int = 1,
                cam_t_gt_norm: torch.Tensor | None = None, cam_q_gt: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        parts: dict[str, float] = {}
        terms: dict[str, torch.Tensor] = {}  # each term's contribution to the total, for the share log
        shares: dict[str, torch.Tensor] = {}  # a term's magnitude for the share log where it differs from its value
        total = t_gt_norm.new_zeros(())
        t_pred, q_pred = out["t_norm"].float(), out["q"].float()
        r_pred = out["R"].float() if "R" in out else None
        d_t, d_q = self.distances(t_pred, q_pred, t_gt_norm, q_gt, r_pred)
        parts["d_t"] = float(d_t.detach().mean())
        if "anchor_logits" in out:  # anchor head: its own position terms replace the direct distance
            d_t, ce = anchor_terms(out, t_gt_norm, s.norm)
            terms["anchor_ce"] = s.anchor_weight * ce.mean()
            parts["anchor_ce"] = float(ce.detach().mean())
            parts["d_offset"] = float(d_t.detach().mean())
        if s.rig_weight > 0:
            if out.get("log_var") is not None:  # the model predicts its variance (model.predict_variance)
                rig = heteroscedastic_nll(d_t, d_q, out["log_var"].float())
                terms["absolute"] = s.rig_weight * rig
            else:
                a, b = self.absolute.terms(d_t.mean(), d_q.mean())
                rig = a + b
                terms["position"], terms["rotation"] = s.rig_weight * a, s.rig_weight * b
                if not s.learn_weights:  # fixed weights: the constants sx, sq move no gradient, so a term's share
                    # is its distance part only (with sx = -1.1, |3·d - 1.1| would read as the position's weight)
                    shares["position"] = s.rig_weight * d_t.mean() * torch.exp(-self.absolute.sx)
                    shares["rotation"] = s.rig_weight * d_q.mean() * torch.exp(-self.absolute.sq)
            parts["loss_abs"] = float(rig.detach())
        parts["d_q"] = float(d_q.detach().mean())
        if out.get("per_camera_t_norm") is not None:
            if cam_t_gt_norm is None or cam_q_gt is None:
                raise ConfigError("the model predicts per-camera poses (mix-stream) but the batch has no camera "
                                  "ground truth; the training module must pass cam_t_gt_norm/cam_q_gt")
            pct, pcq = out["per_camera_t_norm"].float(), out["per_camera_q"].float()
            pcr = out["per_camera_R"].float() if "per_camera_R" in out else None
            cd_t, cd_q = self.distances(pct, pcq, cam_t_gt_norm, cam_q_gt, pcr)
            if out.get("per_camera_log_var") is not None:  # mix-stream with model.predict_variance: trains the
                cam = heteroscedastic_nll(cd_t, cd_q, out["per_camera_log_var"].float(), mask)  # variance heads
            else:
                cam = self.absolute(_masked_mean(cd_t, mask), _masked_mean(cd_q, mask))
            terms["per_camera"] = cam
            parts["loss_cam"] = float(cam.detach())
        if self.relative is not None and steps > 1:
            rel = self.relative_loss(t_pred, q_pred, t_gt_norm, q_gt, steps)
            terms["relative"] = s.relative_weight * self.relative_ramp() * rel
            parts["loss_rel"] = float(rel.detach())
        for v in terms.values():
            total = total + v
        # each term's share of the loss magnitude: a term at 95 % for the whole run is a weighting problem
        size = {name: float(shares.get(name, v).detach().abs()) for name, v in terms.items()}
        mag = sum(size.values()) or 1.0
        for name, v in size.items():
            parts[f"share_{name}"] = v / mag
        parts["sx"], parts["sq"] = float(self.absolute.sx.detach()), float(self.absolute.sq.detach())
        if self.relative is not None:
            parts["srx"], parts["srq"] = float(self.relative.sx.detach()), float(self.relative.sq.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    def relative_ramp(self) -> float:
        """Weight factor of the relative term at ``self.step`` (set by the trainer): 0 → 1 linearly over
        ``relative_warmup_steps``. Why: early on, a constant prediction satisfies the relative loss almost for free
        (frames close in time have nearly equal poses) and rewards a collapsed head; the absolute loss must shape
        the embedding first."""
        n = self.settings.relative_warmup_steps
        return 1.0 if n <= 0 else min(1.0, self.step / n)

    def relative_loss(self, t: torch.Tensor, q: torch.Tensor, t_gt: torch.Tensor, q_gt: torch.Tensor,
                      steps: int) -> torch.Tensor:
        """MapNet's relative term over consecutive frames of each tuple: ``T_i⁻¹·T_{i+1}`` predicted vs true."""
        assert self.relative is not None
        if t.shape[0] % steps:
            raise ConfigError(f"relative loss: batch of {t.shape[0]} bundles is not a whole number of "
                              f"{steps}-frame tuples")
        rt, rq = relative_poses(t.view(-1, steps, 3), q.view(-1, steps, 4))
        gt_rt, gt_rq = relative_poses(t_gt.view(-1, steps, 3), q_gt.view(-1, steps, 4))
        d_t, d_q = self.distances(rt.reshape(-1, 3), rq.reshape(-1, 4), gt_rt.reshape(-1, 3), gt_rq.reshape(-1, 4))
        return self.relative(d_t.mean(), d_q.mean())


def relative_poses(t: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive relative poses along dim 1: ``(B, S, ·) → (B, S−1, ·)`` via ``geometry_torch.pose_between``."""
    return pose_between(t[:, :-1], q[:, :-1], t[:, 1:], q[:, 1:])


def camera_ground_truth(t_world_rig: torch.Tensor, q_world_rig: torch.Tensor, t_base_cam: torch.Tensor,
                        q_base_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-camera world poses ``T_world_cam_i = T_world_rig · T_rig_cam_i``: (N,3),(N,4) × (T,3),(T,4) → (N,T,·)."""
    n, t_cams = t_world_rig.shape[0], t_base_cam.shape[0]
    tw = t_world_rig[:, None, :].expand(n, t_cams, 3)
    qw = q_world_rig[:, None, :].expand(n, t_cams, 4)
    return pose_compose(tw, qw, t_base_cam[None].expand(n, t_cams, 3), q_base_cam[None].expand(n, t_cams, 4))
