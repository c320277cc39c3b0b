"""Yaw augmentation: the re-projected images must be what the turned rig sees (checked against the renderer), the
target must turn with them, and bad rigs / settings must be refused with a clear message."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import render_scene, rendered_bundle_set
from mfapr_training.config import load_config
from mfapr_training.datasets.dataset import BundleDataset
from mfapr_training.datasets.yaw_augmentation import STEP_DEG, YawAugmentation, preprocessed_intrinsics
from mfapr_training.synth.render import render

from mfapr_ros.core import geometry as g
from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.preprocess import PreprocessConfig, resize_crop, to_float_chw
from mfapr_ros.core.rig import Intrinsics, load_rig, ring_rig

PRE = PreprocessConfig(resize=64, crop=64)


@pytest.fixture(scope="module")
def scene() -> tuple:
    return render_scene()


def _images(scene: tuple, yaw: float) -> torch.Tensor:
    """The rig's 4 preprocessed images at a fixed place in the first corridor, heading ``yaw`` (rad)."""
    world, light, models, rig = scene
    t_cam, q_cam = rig.camera_poses(np.array([world.xs[0], 0.5 * (world.bounds[1] + world.bounds[3]), 0.0]),
                                    g.quat_from_yaw(yaw))
    ims = [render(world, light, models[i], t_cam[i], q_cam[i])[0] for i in range(rig.num_cameras)]
    return torch.stack([resize_crop(to_float_chw(im), PRE) for im in ims])[None]


@pytest.mark.parametrize("turn_deg", [2.0, -4.0])
def test_reprojected_images_are_what_the_turned_rig_sees(scene: tuple, turn_deg: float) -> None:
    aug = YawAugmentation(scene[3], PRE, 5.0)
    psi = 0.3
    before, after = _images(scene, psi), _images(scene, psi + math.radians(turn_deg))
    warped, q = aug.apply(turn_deg, before, g.quat_from_yaw(np.array([psi])))
    # the target turns with the images: q · Rz(δ)
    assert math.degrees(float(g.quat_to_yaw(q)[0])) == pytest.approx(math.degrees(psi) + turn_deg, abs=1e-6)
    seen = aug.lookup(turn_deg)[2].reshape(1, 4, 64, 64)  # rays some camera's image holds (≥ 98 %)
    assert float(seen.float().mean()) > 0.98
    unchanged = float((before - after).abs().mean(2)[seen].mean())
    reprojected = float((warped - after).abs().mean(2)[seen].mean())
    # measured: 0.025 → 0.011 at 2°, 0.037 → 0.012 at 4° (the rest is bilinear resampling and seam parallax);
    # the wrong turn direction would be further off than no turn at all
    assert reprojected < 0.5 * unchanged
    wrong, _ = aug.apply(-turn_deg, before, g.quat_from_yaw(np.array([psi])))
    assert float((wrong - after).abs().mean(2)[seen].mean()) > unchanged


def test_turns_are_on_the_grid_seeded_and_zero_is_identity(scene: tuple) -> None:
    aug = YawAugmentation(scene[3], PRE, 1.0)
    gen = torch.Generator().manual_seed(3)
    draws = [aug.sample(gen) for _ in range(400)]
    assert min(draws) == pytest.approx(-1.0) and max(draws) == pytest.approx(1.0)
    assert all(abs(d / STEP_DEG - round(d / STEP_DEG)) < 1e-9 for d in draws)
    again = torch.Generator().manual_seed(3)
    assert draws == [aug.sample(again) for _ in range(400)]  # seeded: a sample's turn is reproducible
    x = torch.rand(2, 4, 3, 64, 64)
    q = g.quat_from_yaw(np.array([0.1, 0.2]))
    x0, q0 = aug.apply(0.0, x, q)
    assert x0 is x and q0 is q
    # a turn by a whole camera step of a 4-ring (90°, beyond the setting's range but the same geometry) is a slot
    # shift: slot j shows camera j+1's image (up to the 0.5-px resampling of the pinhole edges)
    big = YawAugmentation(scene[3], PRE, 45.0)
    idx, w, covered = big.lookup(45.0)
    assert 0.05 < 1 - float(covered.float().mean()) < 0.3  # top and bottom corners of a 45° turn: in no image
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, atol=1e-6)  # ... filled from the nearest edge, not black
    out, _ = big.apply(45.0, torch.ones(1, 4, 3, 64, 64), q[:1])
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-5)
    # a single camera turned by 45°: half its view is in no image, filled from its own edge
    one = YawAugmentation(dataclasses.replace(scene[3], cameras=scene[3].cameras[:1]), PRE, 45.0)
    _, w1, c1 = one.lookup(45.0)
    assert 0.4 < 1 - float(c1.float().mean()) < 0.6 and float(w1.sum(-1).min()) == pytest.approx(1.0, abs=1e-6)


def test_preprocessed_intrinsics_follow_resize_and_crop() -> None:
    rig = load_rig("ring4")  # 128 px, f = 64
    k = preprocessed_intrinsics(rig, PreprocessConfig(resize=64, crop=48))
    np.testing.assert_allclose(k[0], [32.0, 32.0, 24.0, 24.0])


def test_rigs_it_cannot_reproject_are_refused() -> None:
    rig = ring_rig(4)  # no intrinsics
    with pytest.raises(ConfigError, match="no intrinsics or image size"):
        YawAugmentation(rig, PRE, 5.0)
    good = load_rig("ring4")
    cams = list(good.cameras)
    cams[1] = dataclasses.replace(cams[1], intrinsics=Intrinsics(64.0, 64.0, 64.0, 64.0, "OPENCV", (0.1, 0, 0, 0)))
    with pytest.raises(ConfigError, match="lens distortion"):
        YawAugmentation(dataclasses.replace(good, cameras=tuple(cams)), PRE, 5.0)
    for bad in (0.0, -1.0, 50.0):
        with pytest.raises(ConfigError, match="yaw_aug_deg"):
            YawAugmentation(good, PRE, bad)


def test_config_validates_yaw_aug_deg(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\ndata: {root: x}\n")
    assert load_config(cfg, ["data.yaw_aug_deg=5"]).data.yaw_aug_deg == 5
    assert load_config(cfg, []).data.yaw_aug_deg == 0.0
    assert load_config(cfg, ["data.yaw_aug_deg=auto"]).data.yaw_aug_deg == "auto"
    for bad in ("-1", "60", "true", "automatic"):
        with pytest.raises(ConfigError, match="data.yaw_aug_deg"):
            load_config(cfg, [f"data.yaw_aug_deg={bad}"])


def test_auto_turns_only_rigs_whose_cameras_see_the_turned_rig() -> None:
    """``data.yaw_aug_deg: auto``: on (5°) for rings of undistorted pinholes (the demo's 4 × 90°, 10 × 40°, 6 × 60°);
    off, with the reason, for one camera or two facing apart (the turned-in strip would be a repeated edge: ~10 % of
    the pixels at 5°), a distorted lens or a rig without intrinsics."""
    from mfapr_training.datasets.yaw_augmentation import AUTO_DEG, auto_yaw_aug

    deg, why = auto_yaw_aug(load_rig("ring4"), PRE)
    assert deg == AUTO_DEG == 5.0 and "the cameras see 98." in why
    for n, fov in ((10, 40.0), (6, 60.0)):
        assert auto_yaw_aug(ring_rig(n, image_size=128, hfov_deg=fov), PRE)[0] == 5.0
    for n, fov in ((1, 60.0), (1, 90.0), (2, 90.0)):
        deg, why = auto_yaw_aug(ring_rig(n, image_size=128, hfov_deg=fov), PRE)
        assert deg == 0.0 and why.startswith("off: turned by 5° the rig's cameras see ") and "needs 97 %" in why
        assert 85.0 < float(why.split("see ")[1].split(" %")[0]) < 95.0
    good = load_rig("ring4")
    cams = list(good.cameras)
    cams[1] = dataclasses.replace(cams[1], intrinsics=Intrinsics(64.0, 64.0, 64.0, 64.0, "OPENCV", (0.1, 0, 0, 0)))
    deg, why = auto_yaw_aug(dataclasses.replace(good, cameras=tuple(cams)), PRE)
    assert deg == 0.0 and "lens distortion" in why and "set data.yaw_aug_deg" not in why
    deg, why = auto_yaw_aug(ring_rig(4), PRE)
    assert deg == 0.0 and "no intrinsics or image size" in why


def test_dataset_turns_images_and_target_together(scene: tuple, tmp_path: Path) -> None:
    rig = scene[3]
    bs = rendered_bundle_set(scene, tmp_path)
    plain = BundleDataset(bs, preprocess_cfg=PRE, steps=2)[0]
    ds = BundleDataset(bs, preprocess_cfg=PRE, steps=2, yaw_aug=YawAugmentation(rig, PRE, 5.0), seed=1)
    a = ds[0]
    assert torch.equal(a["images"], ds[0]["images"])  # seeded
    turn = np.degrees(g.quat_to_yaw(a["q"].double().numpy()) - g.quat_to_yaw(plain["q"].double().numpy()))
    assert turn[0] == pytest.approx(turn[1], abs=1e-4) and 0.05 < abs(turn[0]) <= 5.0 + 1e-4  # one turn per tuple
    assert torch.equal(a["t"], plain["t"])  # a turn about the rig origin keeps the position
    assert not torch.allclose(a["images"], plain["images"])


def test_residual_bounds_are_one_setting_and_the_old_pair_still_reads(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\ndata: {root: x, track_aug_max_residual_deg: 2.5}\n")
    assert load_config(cfg).data.track_aug_max_residual == [0.01, 2.5]
    assert "'data.track_aug_max_residual_deg' is deprecated" in caplog.text
    assert load_config(cfg, ["data.track_aug_max_residual_m=0.05"]).data.track_aug_max_residual == [0.05, 2.5]
    with pytest.raises(ConfigError, match=r"\[metres, degrees\]"):
        load_config(tmp_path / "c.yaml", ["data.track_aug_max_residual=[0.01]"])
