"""The rig-equivariant head (``fusion.symmetric``, models/symmetry.py): exact equivariance under slot shifts, the
refusals that keep it exact, and that it trains (finite gradients through the averaged 6-D form)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import rotation_error_deg
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.core.rig_symmetry import permute_target
from mfapr_ros.models import build_model, extrinsics_from_rig, preset, resolve_config

SYM = {"position": "late", "fc": "fc-0", "shared_weights": True, "symmetric": True}


def _model(num_cameras: int = 4, anchors: int = 16, **kw: object) -> torch.nn.Module:
    rig = ring_rig(num_cameras)
    cfg = preset("demo", num_cameras=num_cameras, image_size=32, num_anchors=anchors, fusion=dict(SYM),
                 extrinsics=extrinsics_from_rig(rig), **kw)
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    with torch.no_grad():
        if anchors:
            m.set_anchors(torch.randn(anchors, 3) * 5, 1.0)
        # weights that make the T cyclic orders disagree (an untrained head answers ~the same for all of them)
        m.net.head.fc_r.weight.normal_(0.0, 1.0)
    return m


@pytest.mark.parametrize(("num_cameras", "anchors"), [(4, 16), (6, 0)])
def test_a_slot_shift_turns_the_answer_by_the_rig_symmetry(num_cameras: int, anchors: int) -> None:
    m = _model(num_cameras, anchors)
    rig = ring_rig(num_cameras)
    x = torch.randn(3, num_cameras, 3, 32, 32)
    mask = torch.ones(3, num_cameras, dtype=torch.bool)
    mask[1, 2] = False  # a missing camera moves with its slot
    with torch.no_grad():
        out = m(x, mask)
        for k in (1, 2):
            perm = [(j + k) % num_cameras for j in range(num_cameras)]
            shifted = m(x[:, perm], mask[:, perm])
            t_exp, q_exp = permute_target(rig, perm, out["t"].numpy(), out["q"].double().numpy())
            np.testing.assert_allclose(shifted["t"].numpy(), t_exp, atol=1e-5)
            # float32 cancellation only (a wrong back-rotation is 2-15° off)
            assert float(np.max(rotation_error_deg(shifted["q"].double().numpy(), q_exp))) < 0.2
            # and the answer really turned (the check above is not vacuous)
            assert float(np.min(rotation_error_deg(shifted["q"].double().numpy(),
                                                   out["q"].double().numpy()))) > 10.0


def test_the_symmetric_head_trains() -> None:
    m = _model().train()
    x = torch.randn(4, 4, 3, 32, 32)
    out = m(x, torch.ones(4, 4, dtype=torch.bool))
    (out["t"].float().sum() + out["R"].sum() + out["anchor_logits"].logsumexp(-1).sum()).backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert float(m.net.head.fc_r.weight.grad.abs().sum()) > 0


def test_configs_that_cannot_be_exact_are_refused() -> None:
    ext = extrinsics_from_rig(ring_rig(4))
    base = preset("demo", extrinsics=ext)
    with pytest.raises(ConfigError, match="fusion.symmetric.*late"):
        resolve_config({**base, "fusion": {"position": "input", "mode": "tile", "symmetric": True}})
    with pytest.raises(ConfigError, match="fusion.symmetric.*shared_weights"):
        resolve_config({**base, "fusion": {**SYM, "shared_weights": False}})
    with pytest.raises(ConfigError, match="fusion.symmetric.*6d"):
        resolve_config({**base, "fusion": SYM, "rotation": "quat"})
    with pytest.raises(ConfigError, match="fusion.symmetric.*true, false or auto"):
        resolve_config({**base, "fusion": {**SYM, "symmetric": "yes"}})
    with pytest.raises(ConfigError, match="fusion.symmetric.*extrinsics"):
        build_model({**base, "extrinsics": None, "fusion": SYM})
    # cameras out of ring order: shifting slots is no rig motion
    swapped = {"t": [ext["t"][i] for i in (0, 2, 1, 3)], "q": [ext["q"][i] for i in (0, 2, 1, 3)]}
    with pytest.raises(ConfigError, match="not a symmetry"):
        build_model({**base, "extrinsics": swapped, "fusion": SYM})
    # a ring whose centre is not base_link: the shift moves the rig origin
    off = {"t": [[t[0] + 0.3, t[1], t[2]] for t in ext["t"]], "q": ext["q"]}
    with pytest.raises(ConfigError, match="not centred"):
        build_model({**base, "extrinsics": off, "fusion": SYM})


def test_configs_without_it_resolve_as_before() -> None:
    fusion = resolve_config(preset("demo", fusion={"position": "late", "fc": "fc-0", "shared_weights": True}))["fusion"]
    assert fusion == {"position": "late", "fc": "fc-0", "shared_weights": True}
    assert resolve_config({**preset("demo"), "fusion": SYM,
                           "extrinsics": extrinsics_from_rig(ring_rig(4))})["fusion"]["symmetric"] is True


def test_auto_turns_it_on_for_a_ring_and_off_otherwise() -> None:
    auto = {**preset("demo"), "fusion": {**SYM, "symmetric": "auto"}}
    assert preset("demo")["fusion"]["symmetric"] == "auto"  # the demo model: on wherever training gives a ring
    ext = extrinsics_from_rig(ring_rig(4))
    assert resolve_config({**auto, "extrinsics": ext})["fusion"]["symmetric"] is True
    assert build_model({**auto, "extrinsics": ext}).net.shift_rotations is not None
    # off (the key is not stored: such a config resolves exactly as before): no rig, another rig, another rotation
    swapped = {"t": [ext["t"][i] for i in (0, 2, 1, 3)], "q": [ext["q"][i] for i in (0, 2, 1, 3)]}
    for cfg in (auto, {**auto, "extrinsics": swapped}, {**auto, "extrinsics": ext, "rotation": "quat"},
                {**auto, "extrinsics": ext, "fusion": {**SYM, "symmetric": "auto", "shared_weights": False}}):
        assert "symmetric" not in resolve_config(cfg)["fusion"]
    assert build_model(auto).net.shift_rotations is None
