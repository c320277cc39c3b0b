"""Covariance calibration: coverage of exact Gaussians hits the χ² targets, fit_scales recovers a known scale, the
checkpoint stores it atomically, the Localizer applies it, and eval-bag reports carry the calibration section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mfapr_ros.core.checkpoint import read_checkpoint_meta, update_checkpoint_meta
from mfapr_ros.core.errors import CheckpointError
from mfapr_ros.inference import calibration as cal

N = 20000


def _gauss(k: int, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Errors with true σ = ``sigma`` and unit predicted covariances."""
    rng = np.random.default_rng(seed)
    return rng.normal(scale=sigma, size=(N, k)), np.broadcast_to(np.eye(k), (N, k, k))


@pytest.mark.parametrize("k,targets", [(1, (68.27, 95.45, 99.73)), (2, (39.35, 86.47, 98.89)),
                                       (3, (19.87, 73.85, 97.07))])
def test_coverage_of_exact_gaussians_matches_chi2(k: int, targets: tuple[float, ...]) -> None:
    assert [round(v, 2) for v in cal.coverage_targets(k).values()] == list(targets)
    e, c = _gauss(k, 1.0, seed=k)
    res = cal.coverage(e, c)
    for key, target in zip(("1sigma", "2sigma", "3sigma"), targets, strict=True):
        assert abs(res["coverage"][key] - target) < 1.5, (key, res["coverage"][key])
    # the mean NLL of a calibrated Gaussian is k/2·(1 + log 2π)
    assert res["nll"] == pytest.approx(0.5 * k * (1 + math.log(2 * math.pi)), abs=0.05)
    # correlated covariance: a full Σ, errors drawn from it
    rng = np.random.default_rng(7)
    a = rng.normal(size=(k, k))
    sig = a @ a.T + 0.5 * np.eye(k)
    e = rng.multivariate_normal(np.zeros(k), sig, size=N)
    res = cal.coverage(e, np.broadcast_to(sig, (N, k, k)))
    assert abs(res["coverage"]["1sigma"] - targets[0]) < 1.5


def test_fit_scale_recovers_known_scale() -> None:
    e, c = _gauss(2, 2.0, seed=3)
    s = cal.fit_scale(e, c)
    assert s == pytest.approx(2.0, rel=0.05)
    e1, c1 = _gauss(1, 0.3, seed=4)
    assert cal.fit_scale(e1, c1) == pytest.approx(0.3, rel=0.05)
    assert cal.fit_scale(e, c) == s  # deterministic


def test_fit_scales_on_poses_and_apply() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    t_gt = rng.normal(size=(n, 3)) * 10
    yaw_gt = rng.uniform(-math.pi, math.pi, n)
    yaw_err = rng.normal(scale=0.1, size=n)  # true yaw σ 0.1 rad; predicted 0.05 → factor 2
    yaw_est = cal.wrap_pi(yaw_gt + yaw_err)

    def q(y: np.ndarray) -> np.ndarray:
        return np.stack([np.cos(y / 2), 0 * y, 0 * y, np.sin(y / 2)], axis=1)

    t_est = t_gt + rng.normal(scale=1.5, size=(n, 3))  # true σ 1.5 m; predicted 0.5 → factor 3
    cov = np.broadcast_to(np.diag([0.25] * 3 + [0.0025] * 3), (n, 6, 6)).copy()
    before = cal.calibration_report(t_gt, q(yaw_gt), t_est, q(yaw_est), cov)
    assert before["position_2d"]["coverage"]["1sigma"] < 10  # over-confident
    scales = cal.fit_scales(t_gt, q(yaw_gt), t_est, q(yaw_est), cov)
    assert scales["position_scale"] == pytest.approx(3.0, rel=0.05)
    assert scales["rotation_scale"] == pytest.approx(2.0, rel=0.05)
    after = cal.calibration_report(t_gt, q(yaw_gt), t_est, q(yaw_est), cal.apply_scales(cov, **scales))
    for block in ("position_2d", "position_3d", "yaw"):
        assert cal.max_coverage_gap(after[block]) < 3.0, (block, after[block])
        assert after[block]["nll"] < before[block]["nll"]
    # the yaw error wraps: 179° vs −179° is 2°, not 358°
    e = cal.calibration_blocks(t_gt[:1], q(np.array([math.radians(179)])), t_gt[:1],
                               q(np.array([math.radians(-179)])), cov[:1])["yaw"][0]
    assert abs(float(e[0, 0])) == pytest.approx(math.radians(2), abs=1e-9)
    lines = cal.markdown_table(cal.report_section(t_gt, q(yaw_gt), t_est, q(yaw_est), cov, None))
    assert any(line.startswith("| position_2d |") for line in lines)


def test_singular_covariance_counts_outside() -> None:
    e = np.ones((3, 2))
    c = np.stack([np.eye(2), np.zeros((2, 2)), np.eye(2) * 4])
    d2 = cal.mahalanobis_sq(e, c)
    assert d2[0] == pytest.approx(2.0) and math.isinf(d2[1]) and d2[2] == pytest.approx(0.5)


def _ckpt(tmp_path: Path, predict_variance: bool) -> Path:
    from test_localizer import make_checkpoint

    return make_checkpoint(tmp_path / "tiny", predict_variance=predict_variance)


def test_checkpoint_meta_update_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = _ckpt(tmp_path, False)
    before = read_checkpoint_meta(path)
    doc = {"position_scale": 2.5, "rotation_scale": 0.5, "fitted_on": "x:val", "n": 10}
    update_checkpoint_meta(path, {cal.META_KEY: doc})
    after = read_checkpoint_meta(path)
    assert after[cal.META_KEY] == doc
    assert after["tensors"] == before["tensors"]  # weights untouched, hash still valid
    assert cal.stored_scales(after) == (2.5, 0.5)
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind
    with pytest.raises(CheckpointError):
        update_checkpoint_meta(path, {"tensors": {}})
    with pytest.raises(CheckpointError):
        update_checkpoint_meta(path, {"x": object()})
    assert read_checkpoint_meta(path)[cal.META_KEY] == doc  # a failed update leaves the old document


@pytest.mark.parametrize("predict_variance", [False, True])
def test_localizer_applies_stored_scales(tmp_path: Path, predict_variance: bool) -> None:
    from mfapr_ros.inference.localizer import Localizer

    path = _ckpt(tmp_path, predict_variance)
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(4)]
    raw = Localizer(path, device="cpu", warmup=0, retrieval=False).infer(ims, 1).covariance
    update_checkpoint_meta(path, {cal.META_KEY: {"position_scale": 3.0, "rotation_scale": 0.5}})
    loc = Localizer(path, device="cpu", warmup=0, retrieval=False)
    assert loc.covariance_scales == (3.0, 0.5)
    got = loc.infer(ims, 1).covariance
    np.testing.assert_allclose(got[:3, :3], raw[:3, :3] * 9.0, rtol=1e-5)
    np.testing.assert_allclose(got[3:, 3:], raw[3:, 3:] * 0.25, rtol=1e-5)
    batch = loc.infer_batch([(ims, 1), (ims, 2)])
    np.testing.assert_allclose(batch[0].covariance, got, rtol=1e-4)
    off = Localizer(path, device="cpu", warmup=0, retrieval=False, calibrated=False).infer(ims, 1).covariance
    np.testing.assert_allclose(off, raw, rtol=1e-6)


def test_eval_bag_report_has_calibration_section(tmp_path: Path) -> None:
    import torch

    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
    from mfapr_ros.cli import main
    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.models import build_model, model_meta, preset

    torch.manual_seed(0)
    model = build_model(preset("tiny", image_size=32))
    ck = save_checkpoint(tmp_path / "ck" / "tiny", model,
                         model_meta(model, ring_rig(4), PreprocessConfig(resize=32, crop=32), {"test": True}))
    update_checkpoint_meta(ck, {cal.META_KEY: {"position_scale": 2.0, "rotation_scale": 1.0, "fitted_on": "t",
                                               "n": 1}})
    path = tmp_path / "b"
    write_synth_bag(path, SynthBagSpec([c.topic for c in ring_rig(4).cameras], frames=12, size=32))
    out = tmp_path / "rep"
    rc = main(["eval-bag", "--checkpoint", str(ck), "--bag", str(path), "--batch", "4", "--out", str(out),
               "--device", "cpu", "--no-progress", "--no-plots", "--baseline", "none"])
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    sec = doc["calibration"]
    assert set(sec["blocks"]) == {"position_2d", "position_3d", "yaw"}
    assert sec["blocks"]["position_2d"]["target"]["1sigma"] == pytest.approx(39.35, abs=0.01)
    assert sec["stored"]["position_scale"] == 2.0
    assert "Covariance calibration" in (out / "report.md").read_text()


def test_online_evaluator_scores_published_covariances() -> None:
    from mfapr_ros.evaluation.online import OnlineEvaluator

    ev = OnlineEvaluator()
    rng = np.random.default_rng(1)
    q = np.array([1.0, 0, 0, 0])
    for i in range(200):
        ev.add_gt(i * 100_000_000, [0.1 * i, 0, 0], q)
    for i in range(1, 199):
        t = np.array([0.1 * i, 0, 0]) + rng.normal(scale=0.5, size=3)
        ev.add_estimate(i * 100_000_000, t, q, covariance=np.diag([0.25] * 3 + [0.01] * 3).reshape(-1))
    ev.match(final=True)
    sec = ev.calibration_section(sorted(ev.stamps))
    assert sec is not None and abs(sec["blocks"]["position_2d"]["coverage"]["1sigma"] - 39.3) < 15
    ev.add_estimate(100 * 100_000_000 + 50_000_000, [10.0, 0, 0], q)  # one pose without covariance → no section
    ev.match(final=True)
    assert ev.count == 199
    assert ev.calibration_section(sorted(ev.stamps)) is None


def test_train_calibrates_and_cli_refits(tmp_path: Path) -> None:
    """`mfapr train` stores a calibration fitted on its validation split; `mfapr calibrate` refits it; `mfapr
    evaluate` reports the section (tiny synth world, a few steps: wiring, not accuracy)."""
    import os

    import torch

    from mfapr_ros.cli import main as mfapr

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    world = tmp_path / "world"
    assert mfapr(["synth", "--out", str(world), "--frames", "40", "--size", "32", "--bags", "none",
                  "--workers", "1"]) == 0
    run = tmp_path / "run"
    sets = ["--set", f"data.root={world}", "--set", "model={preset: tiny, num_anchors: 8}", "--set",
            "preprocess.resize=32", "--set", "preprocess.crop=32", "--set", "train.max_steps=2", "--set",
            "train.batch_size=2", "--set", "data.max_train=8", "--set", "data.max_val=6", "--set",
            "train.tensorboard=false"]
    assert mfapr(["train", "--config", "demo", "--out", str(run), "-q", *sets]) == 0
    stored = read_checkpoint_meta(run / "best.json")[cal.META_KEY]
    assert stored["n"] == 6 and stored["source"] in ("anchor_mixture", "default_covariance")
    assert set(stored["source_candidates_nll_position_2d"]) == {"anchor_mixture", "default_covariance"}
    assert stored["position_scale"] > 0 and stored["rotation_scale"] > 0
    assert mfapr(["calibrate", "--checkpoint", str(run / "best.json"), "--data", str(world), "--max-bundles", "5",
                  "--covariance-source", "default", "--device", "cpu"]) == 0
    stored = read_checkpoint_meta(run / "best.json")[cal.META_KEY]
    assert stored["n"] == 5 and stored["source"] == "default_covariance"
    rep = tmp_path / "rep"
    assert mfapr(["evaluate", "--checkpoint", str(run / "best.json"), "--data", str(world), "--out", str(rep),
                  "--max-bundles", "6", "--no-plots"]) == 0
    doc = json.loads((rep / "report.json").read_text())
    assert doc["calibration"]["stored"]["source"] == "default_covariance"
    assert set(doc["calibration"]["blocks"]) == {"position_2d", "position_3d", "yaw"}
    assert "Covariance calibration" in (rep / "report.md").read_text()
