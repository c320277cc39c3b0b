"""Loss values and gradients on hand-computed inputs; gradient-blending weights on a hand-made case."""

from __future__ import annotations

import math

import pytest
import torch
from mfapr_training.gradient_blending import BlendMeasurement, GradientBlender, blend_weights
from mfapr_training.losses import (
    LearnedWeighting,
    LossSettings,
    PoseLoss,
    camera_ground_truth,
    heteroscedastic_nll,
    rotation_distance,
    vector_distance,
)

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry_torch import quat_normalize

ID = torch.tensor([[1.0, 0.0, 0.0, 0.0]])


def yaw_quat(theta: float) -> torch.Tensor:
    return torch.tensor([[math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]])


def test_vector_distance_l1_l2() -> None:
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 3)
    assert vector_distance(a, b, "l1").item() == pytest.approx(6.0)
    assert vector_distance(a, b, "l2").item() == pytest.approx(math.sqrt(14.0))
    with pytest.raises(ConfigError, match="loss.norm"):
        vector_distance(a, b, "l3")


def test_rotation_distance_sign_invariant_and_logq() -> None:
    q = yaw_quat(0.4)
    assert rotation_distance(q, -q, "l1", "quat").item() == pytest.approx(0.0, abs=1e-7)
    assert rotation_distance(q, -q, "l2", "logq").item() == pytest.approx(0.0, abs=1e-6)
    # identity vs 90° about x: ‖(1,0,0,0) − (c,c,0,0)‖₁ = (1 − c) + c = 1 with c = √½ (the −q side is larger)
    q90 = torch.tensor([[math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0]])
    assert rotation_distance(ID, q90, "l1", "quat").item() == pytest.approx(1.0, abs=1e-6)
    # log map of a yaw by θ is (0, 0, θ/2): the l2 distance to the identity is θ/2
    assert rotation_distance(ID, yaw_quat(0.6), "l2", "logq").item() == pytest.approx(0.3, abs=1e-6)


def test_learned_weighting_value_and_gradients() -> None:
    w = LearnedWeighting(sx=0.0, sq=-3.0)
    d_t, d_q = torch.tensor(2.0), torch.tensor(0.1)
    loss = w(d_t, d_q)
    assert loss.item() == pytest.approx(2.0 + 0.0 + 0.1 * math.exp(3.0) - 3.0, rel=1e-6)
    loss.backward()
    # dL/ds = 1 − d·e^(−s)
    assert w.sx.grad.item() == pytest.approx(1.0 - 2.0, rel=1e-6)
    assert w.sq.grad.item() == pytest.approx(1.0 - 0.1 * math.exp(3.0), rel=1e-6)
    frozen = LearnedWeighting(0.0, -3.0, learn=False)
    assert not frozen.sx.requires_grad and not frozen.sq.requires_grad


def test_pose_loss_known_value_and_prediction_gradient() -> None:
    crit = PoseLoss(LossSettings(norm="l1", rotation_distance="quat", sx=0.0, sq=-3.0))
    t_pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    q_pred = torch.cat([ID, yaw_quat(0.0)])
    out = {"t_norm": t_pred, "q": q_pred}
    t_gt, q_gt = torch.zeros(2, 3), torch.cat([ID, -ID])  # -ID: same rotation, zero rotation loss
    loss, parts = crit(out, t_gt, q_gt)
    # mean L1 translation = (6 + 0)/2 = 3; rotation 0 → L = 3·e^0 + 0 + 0 − 3 = 0
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["d_t"] == pytest.approx(3.0) and parts["d_q"] == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    # d/dt of mean_i Σ|t_i| · e^0 = sign(t)/2 for sample 0; sample 1 sits at the kink (sign(0) = 0)
    assert torch.allclose(t_pred.grad[0], torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(t_pred.grad[1], torch.zeros(3))


def test_learned_weights_move_toward_the_optimum() -> None:
    """With fixed distances the optimum of d·e^(−s) + s is s = log d: sx and sq must move there."""
    w = LearnedWeighting(0.0, -3.0)
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    d_t, d_q = torch.tensor(0.5), torch.tensor(0.2)
    for _ in range(300):
        opt.zero_grad()
        w(d_t, d_q).backward()
        opt.step()
    assert w.sx.item() == pytest.approx(math.log(0.5), abs=0.02)
    assert w.sq.item() == pytest.approx(math.log(0.2), abs=0.02)


def test_relative_loss_ignores_constant_offset_and_sees_rotation_change() -> None:
    crit = PoseLoss(LossSettings(norm="l1", rotation_distance="quat", relative_weight=1.0, srx=0.0, srq=-3.0))
    t_gt = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    q_gt = torch.cat([ID, yaw_quat(0.5)])
    # prediction = ground truth shifted by a constant: the relative pose is unchanged → distances 0
    rel = crit.relative_loss(t_gt + torch.tensor([5.0, -2.0, 1.0]), q_gt, t_gt, q_gt, steps=2)
    assert rel.item() == pytest.approx(0.0 + 0.0 - 3.0, abs=1e-5)
    # second frame predicted without its yaw: relative rotation error is ‖q_rel − (1,0,0,0)‖₁
    rel2 = crit.relative_loss(t_gt, torch.cat([ID, ID]), t_gt, q_gt, steps=2)
    d_q = (1 - math.cos(0.25)) + math.sin(0.25)
    assert rel2.item() == pytest.approx(d_q * math.exp(3.0) - 3.0, rel=1e-4)
    with pytest.raises(ConfigError, match="tuples"):
        crit.relative_loss(torch.zeros(3, 3), torch.cat([ID] * 3), torch.zeros(3, 3), torch.cat([ID] * 3), steps=2)


def test_mix_stream_loss_uses_masked_camera_poses() -> None:
    crit = PoseLoss(LossSettings(norm="l1", rotation_distance="quat", sx=0.0, sq=0.0, rig_weight=0.0))
    t_bc = torch.tensor([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])
    q_bc = torch.cat([ID, yaw_quat(math.pi)])
    ct, cq = camera_ground_truth(torch.zeros(1, 3), ID, t_bc, q_bc)
    assert torch.allclose(ct[0], t_bc) and torch.allclose(cq[0].abs(), quat_normalize(q_bc).abs(), atol=1e-6)
    pred_t = ct.clone()
    pred_t[0, 1] += torch.tensor([1.0, 1.0, 1.0])  # camera 1 wrong by 3 (L1) …
    mask = torch.tensor([[True, False]])  # … but absent: it must not count
    out = {"t_norm": torch.zeros(1, 3), "q": ID, "per_camera_t_norm": pred_t, "per_camera_q": cq}
    loss, parts = crit(out, torch.zeros(1, 3), ID, 1, ct, cq, mask)
    assert parts["loss_cam"] == pytest.approx(0.0, abs=1e-5)
    loss2, parts2 = crit(out, torch.zeros(1, 3), ID, 1, ct, cq, torch.tensor([[True, True]]))
    assert parts2["loss_cam"] == pytest.approx(1.5, abs=1e-5)  # (0 + 3)/2
    assert "loss_abs" not in parts  # rig_weight 0: the fused pose is not trained directly


def test_heteroscedastic_nll() -> None:
    d_t, d_q = torch.tensor([2.0, 1.0]), torch.tensor([0.5, 0.5])
    lv = torch.tensor([[0.0, 0.0], [math.log(1.0), math.log(0.5)]], requires_grad=True)
    v = heteroscedastic_nll(d_t, d_q, lv)
    expected = ((2.0 + 0.5) + (1.0 + 0.0 + 0.5 / 0.5 + math.log(0.5))) / 2
    assert v.item() == pytest.approx(expected, rel=1e-6)
    v.backward()
    assert lv.grad[0, 0].item() == pytest.approx((1 - 2.0) / 2, rel=1e-6)
    crit = PoseLoss(LossSettings(sx=5.0))  # a model that predicts log_var is trained with the NLL
    out = {"t_norm": torch.tensor([[2.0, 0, 0]]), "q": ID, "log_var": torch.zeros(1, 2)}
    loss, _ = crit(out, torch.zeros(1, 3), ID)
    assert loss.item() == pytest.approx(2.0, abs=1e-6)  # uses log_var, not the global sx = 5


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="loss.rotation_distance"):
        PoseLoss(LossSettings(rotation_distance="euler"))


def test_gradient_blending_weights_hand_case() -> None:
    prev = BlendMeasurement(0, train=[1.0, 1.0, 1.0], val=[1.2, 1.2, 1.2])
    cur = BlendMeasurement(100, train=[0.5, 0.8, 0.6], val=[1.0, 1.3, 0.9])
    # stream 0: ΔG = 0.2, ΔO = 0.5 − 0.2 = 0.3 → 0.2/0.09; stream 1: ΔG = −0.1 → 0; fused: ΔG = 0.3, ΔO = 0.1 → 30
    raw = [0.2 / 0.09, 0.0, 0.3 / 0.01]
    w = blend_weights(prev, cur)
    assert w == pytest.approx([r / sum(raw) for r in raw], rel=1e-6)
    gb = GradientBlender(2)
    assert gb.weights == pytest.approx([1 / 3] * 3)
    gb.update(0, prev.train, prev.val)
    gb.update(100, cur.train, cur.val)
    assert gb.weights == pytest.approx(w)
    total = gb.combine(torch.tensor([1.0, 2.0]), torch.tensor(3.0))
    assert total.item() == pytest.approx(w[0] * 1 + w[1] * 2 + w[2] * 3, rel=1e-6)
    # nothing generalised → uniform, never a division by zero
    assert blend_weights(cur, cur) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ConfigError):
        gb.update(200, [1.0], [1.0])


def test_loss_config_is_the_loss_settings() -> None:
    """The config's loss section is the dataclass the loss runs with (one type, so no field exists on one side
    only); its None defaults are exactly the fields the model decides, which loss_settings fills in."""
    import dataclasses

    from mfapr_training.config import ExperimentConfig
    from mfapr_training.losses import MODEL_DEPENDENT_LOSS_FIELDS, LossSettings
    from mfapr_training.step import loss_settings

    assert isinstance(ExperimentConfig().loss, LossSettings)
    none_defaults = {f.name for f in dataclasses.fields(LossSettings) if f.default is None}
    assert none_defaults - {"weights_lr"} == set(MODEL_DEPENDENT_LOSS_FIELDS)

    class _Cfg:
        loss = LossSettings(sx=0.5, relative_weight=1.0)

    class _Mix(torch.nn.Module):
        mix_stream, rotation_repr = True, "logq"

    s = loss_settings(_Cfg(), _Mix())  # type: ignore[arg-type]
    assert (s.sx, s.relative, s.rotation_distance, s.rig_weight) == (0.5, True, "logq", 0.0)
    s = loss_settings(_Cfg(), torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    assert (s.rotation_distance, s.rig_weight) == ("quat", 1.0)


def test_logq_distance_is_continuous_across_180_degrees() -> None:
    """Headings 2° apart across ±180° yaw are 2° apart for the logq loss too (the canonical w ≥ 0 log made them π
    apart), and the distance ignores the sign of either quaternion."""
    import numpy as np
    from mfapr_training.losses import rotation_distance

    from mfapr_ros.core.geometry import quat_from_yaw

    def q(deg: float) -> torch.Tensor:
        return torch.tensor(quat_from_yaw(np.radians(deg)), dtype=torch.float64)[None]

    half_rad = np.radians(1.0)  # logq is the half-angle axis vector: 2° apart → 1° in logq
    for a, b in ((179.0, -179.0), (-179.0, 179.0), (10.0, 12.0), (90.0, 92.0)):
        for sa in (1, -1):
            for sb in (1, -1):
                d = rotation_distance(sa * q(a), sb * q(b), "l2", "logq")
                assert float(d) == pytest.approx(half_rad, rel=1e-6), (a, b, sa, sb, float(d))
    qh = (q(179.0) * 1.3).requires_grad_(True)  # unnormalised prediction: gradients finite
    rotation_distance(q(-179.0), qh, "l1", "logq").sum().backward()
    assert torch.isfinite(qh.grad).all()


def test_mix_stream_heteroscedastic_trains_the_variance_heads_and_fuses_scales() -> None:
    """Mix-stream + model.predict_variance: the per-camera term is the NLL with the per-camera log-scales (the
    variance heads got no gradient before), and the fused scale of T equal, equally weighted cameras is σ/√T."""
    import math

    from mfapr_training.losses import LossSettings, PoseLoss

    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.models import build_model, extrinsics_from_rig, preset

    torch.manual_seed(0)
    m = build_model(preset("tiny", image_size=32, fusion={"position": "none"}, predict_variance=True,
                           extrinsics=extrinsics_from_rig(ring_rig(4))))
    assert m.mix_stream
    x = torch.randn(3, 4, 3, 32, 32)
    mask = torch.tensor([[True] * 4, [True] * 4, [True, False, True, False]])
    out = m(x, mask)
    loss, _ = PoseLoss(LossSettings(rig_weight=0.0))(
        out, torch.zeros(3, 3), torch.tensor([[1.0, 0, 0, 0]] * 3), cam_t_gt_norm=torch.zeros(3, 4, 3),
        cam_q_gt=torch.tensor([[1.0, 0, 0, 0]]).expand(3, 4, 4), mask=mask)
    loss.backward()
    heads = m.net.head
    assert heads.var_t.weight.grad is not None and heads.var_t.weight.grad.abs().sum() > 0
    assert heads.var_r.weight.grad is not None and heads.var_r.weight.grad.abs().sum() > 0
    # fusion of log-scales: equal per-camera s and weights 1/T → s − ½·log T
    lv = torch.full((1, 4, 2), 0.3)
    w = torch.full((1, 4), 0.25)
    fused = 0.5 * torch.logsumexp(2 * lv + 2 * torch.log(w)[..., None], dim=1)
    assert torch.allclose(fused, torch.full((1, 2), 0.3 - 0.5 * math.log(4)))
    with torch.no_grad():
        o = m(x, mask)
    pc, wt = o["per_camera_log_var"], o["fusion_weights"]
    expect = 0.5 * torch.log((wt[..., None] ** 2 * torch.exp(2 * pc)).sum(1))
    assert torch.allclose(o["log_var"], expect, atol=1e-5)


def test_share_log_with_fixed_weights_counts_the_distance_part_only() -> None:
    """With fixed weights the constants sx, sq move no gradient: ``share_position`` must be ``e^(−sx)·d_t`` over the
    sum of such parts (the demo's sx = −1.1 would otherwise read |3·d − 1.1| as the position's say)."""
    t_gt = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.2, 0.0]])
    out = {"t_norm": torch.zeros(2, 3), "q": ID.expand(2, 4)}
    q_gt = yaw_quat(0.1).expand(2, 4)
    crit = PoseLoss(LossSettings(norm="l1", rotation_distance="quat", sx=-1.1, sq=0.0, weights_lr=0))
    loss, parts = crit(out, t_gt, q_gt)
    pos, rot = math.exp(1.1) * parts["d_t"], parts["d_q"]
    assert parts["share_position"] == pytest.approx(pos / (pos + rot), rel=1e-5)
    assert parts["share_rotation"] == pytest.approx(rot / (pos + rot), rel=1e-5)
    assert float(loss) == pytest.approx(pos + rot - 1.1, rel=1e-5)  # the value itself is unchanged
    learned = PoseLoss(LossSettings(norm="l1", rotation_distance="quat", sx=-1.1, sq=0.0))
    _, lp = learned(out, t_gt, q_gt)  # learned weights: the constant is part of the objective and of the share
    assert lp["share_position"] == pytest.approx(abs(pos - 1.1) / (abs(pos - 1.1) + rot), rel=1e-5)
