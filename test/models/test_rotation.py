"""Rotation representations (models/rotation.py) and rotation losses (training/losses.py): every representation
round-trips, every loss is zero at the target and continuous across ±180° yaw; the continuous representations have
no jump where quaternions flip sign."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mfapr_training.losses import ROTATIONS, rotation_distance

from mfapr_ros.core import geometry_torch as gt
from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.models import build_model, preset
from mfapr_ros.models.rotation import REPRESENTATIONS, identity_raw, quat_to_raw, raw_to_matrix, raw_to_quat


def random_quats(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return gt.quat_normalize(torch.randn(n, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_representation_round_trips(rep: str) -> None:
    q = random_quats(256)
    back = raw_to_quat(quat_to_raw(q, rep), rep)
    assert float(gt.rotation_error_deg(q, back).max()) < 1e-4
    # the matrix of the raw form is the quaternion's matrix
    assert torch.allclose(raw_to_matrix(quat_to_raw(q, rep), rep), gt.quat_to_matrix(q), atol=1e-6)


@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_identity_raw_is_the_identity(rep: str) -> None:
    r = raw_to_matrix(torch.tensor([identity_raw(rep)], dtype=torch.float64), rep)
    assert torch.allclose(r[0], torch.eye(3, dtype=torch.float64), atol=1e-9)


def test_matrix_quat_conversions_agree_with_numpy_and_cover_all_branches() -> None:
    from mfapr_ros.core.geometry import quat_to_matrix as np_q2m

    # rotations of 180° about each axis hit the three non-w Shepperd branches
    q = torch.cat([random_quats(64, 1), torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                                                      dtype=torch.float64)])
    m = gt.quat_to_matrix(q)
    assert np.allclose(m.numpy(), np.stack([np_q2m(x) for x in q.numpy()]), atol=1e-12)
    assert float(gt.rotation_error_deg(gt.matrix_to_quat(m), q).max()) < 1e-4


def test_continuous_representations_are_continuous_where_quaternions_flip() -> None:
    """Yaw sweeping through 180°: the quaternion's canonical (w ≥ 0) form jumps, the 6-D and 9-D forms do not."""
    yaw = np.radians(np.linspace(170, 190, 41))
    q = torch.as_tensor(quat_from_yaw(yaw))
    steps = {rep: float(quat_to_raw(gt.quat_normalize(q), rep).diff(dim=0).norm(dim=1).max()) for rep in
             ("quat", "6d", "9d_svd")}
    assert steps["quat"] > 1.0  # the sign flip at 180°
    assert steps["6d"] < 0.05 and steps["9d_svd"] < 0.05


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_rotation_losses_zero_at_target_and_continuous_across_180(rotation: str) -> None:
    q = random_quats(32, 2).float()
    assert float(rotation_distance(q, q, "l2", rotation).max()) < 1e-3
    assert float(rotation_distance(q, -q, "l2", rotation).max()) < 1e-3  # q and −q are the same rotation
    # headings 2° apart across ±180°: the distance is that of 2°, not of ~360°
    a = torch.as_tensor(quat_from_yaw(np.radians([179.0])), dtype=torch.float32)
    b = torch.as_tensor(quat_from_yaw(np.radians([-179.0])), dtype=torch.float32)
    c = torch.as_tensor(quat_from_yaw(np.radians([1.0])), dtype=torch.float32)
    d = torch.as_tensor(quat_from_yaw(np.radians([-1.0])), dtype=torch.float32)
    across, near_zero = rotation_distance(a, b, "l2", rotation), rotation_distance(c, d, "l2", rotation)
    assert float(across) == pytest.approx(float(near_zero), rel=1e-3, abs=1e-5)
    assert float(across) > 0


def test_geodesic_loss_is_the_angle_and_chordal_its_chord() -> None:
    a = torch.as_tensor(quat_from_yaw(np.radians([0.0, 0.0])), dtype=torch.float64)
    b = torch.as_tensor(quat_from_yaw(np.radians([30.0, 179.0])), dtype=torch.float64)
    ang = rotation_distance(a, b, "l1", "geodesic")
    assert np.allclose(ang.numpy(), np.radians([30.0, 179.0]), atol=1e-6)
    chord = rotation_distance(a, b, "l1", "chordal")
    assert np.allclose(chord.numpy(), 2 * math.sqrt(2) * np.sin(np.radians([30.0, 179.0]) / 2), atol=1e-6)


@pytest.mark.parametrize("rep", ("6d", "9d_svd"))
def test_models_with_continuous_heads_output_unit_quaternions_and_matrices(rep: str) -> None:
    model = build_model(preset("tiny", rotation=rep)).eval()
    out = model(torch.randn(2, 4, 3, 64, 64))
    assert out["q"].shape == (2, 4) and torch.allclose(out["q"].norm(dim=1), torch.ones(2), atol=1e-5)
    r = out["R"]
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert float(gt.rotation_error_deg(gt.matrix_to_quat(r), out["q"]).max()) < 1e-2


def test_rotation_loss_gradients_are_finite_at_zero_error() -> None:
    raw = quat_to_raw(random_quats(4, 3).float(), "6d").requires_grad_(True)
    r = raw_to_matrix(raw, "6d")
    for rotation in ("chordal", "geodesic"):
        loss = rotation_distance(raw_to_quat(raw, "6d"), raw_to_quat(raw.detach(), "6d"), "l1", rotation, r).sum()
        (g,) = torch.autograd.grad(loss, raw, retain_graph=True)
        assert torch.isfinite(g).all()
