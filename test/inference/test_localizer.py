"""Localizer (checkpoint → RigPose) and AsyncLocalizer (worker thread, latest bundle wins) on a tiny random model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mfapr_ros.core.checkpoint import save_checkpoint
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.preprocess import PreprocessConfig, preprocess_bundle
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.inference.covariance import covariance_from_log_var, covariance_matrix
from mfapr_ros.inference.localizer import AsyncLocalizer, Localizer, RigPose, resolve_device
from mfapr_ros.models import build_model, model_meta, preset

T_MEAN = [10.0, -5.0, 1.0]


def make_checkpoint(path: Path, predict_variance: bool = False) -> Path:
    torch.manual_seed(0)
    cfg = preset("tiny", predict_variance=predict_variance,
                 pose_normalization={"t_mean": T_MEAN, "t_scale": 3.0})
    model = build_model(cfg)
    meta = model_meta(model, ring_rig(4), PreprocessConfig(resize=64, crop=64), {"test": True})
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("loc") / "tiny")


@pytest.fixture(scope="module")
def loc(ckpt: Path) -> Localizer:
    return Localizer(ckpt, device="cpu")


def images(seed: int, n: int = 4, h: int = 48, w: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def check_pose(p: RigPose, stamp: int, mask: list[bool]) -> None:
    assert p.stamp_ns == stamp
    assert p.t.shape == (3,) and p.q.shape == (4,) and p.covariance.shape == (6, 6)
    assert np.all(np.isfinite(p.t)) and abs(np.linalg.norm(p.q) - 1) < 1e-6 and p.q[0] >= 0
    np.testing.assert_allclose(p.covariance, p.covariance.T)
    assert np.linalg.eigvalsh(p.covariance).min() > 0
    assert p.latency_s > 0 and list(p.mask) == mask


def test_loads_rig_and_preprocessing_from_checkpoint(loc: Localizer) -> None:
    assert loc.rig.camera_names == ring_rig(4).camera_names
    assert loc.preprocess_cfg == PreprocessConfig(resize=64, crop=64)
    assert loc.device == torch.device("cpu") and loc.precision == "fp32" and loc.num_cameras == 4


def test_infer_matches_model_on_the_one_preprocessing(loc: Localizer) -> None:
    ims = images(1)
    p = loc.infer(ims, 123_456_789)
    check_pose(p, 123_456_789, [True] * 4)
    x, m = preprocess_bundle(ims, loc.preprocess_cfg)
    with torch.no_grad():
        ref = loc.model(x[None], m[None])
    np.testing.assert_allclose(p.t, ref["t"][0].numpy(), atol=1e-5)
    q = ref["q"][0].numpy() * np.sign(ref["q"][0, 0].item())
    np.testing.assert_allclose(p.q, q, atol=1e-5)
    np.testing.assert_allclose(np.diag(p.covariance), [0.25] * 3 + [0.01] * 3)  # default: 0.5 m, 0.1 rad
    assert np.linalg.norm(p.t - T_MEAN) < 3.0 * 10  # de-normalised around t_mean with t_scale 3


def test_missing_cameras_and_masks(loc: Localizer) -> None:
    ims = images(2)
    p = loc.infer([ims[0], None, ims[2], None], 5)
    check_pose(p, 5, [True, False, True, False])
    p2 = loc.infer(ims, 5, mask=[True, False, True, False])
    np.testing.assert_allclose(p.t, p2.t, atol=1e-6)
    with pytest.raises(DataError, match="no camera image"):
        loc.infer([None] * 4, 5)
    with pytest.raises(DataError, match="has 4 cameras"):
        loc.infer(ims[:3], 5)
    with pytest.raises(DataError, match="mask has 3 entries"):
        loc.infer(ims, 5, mask=[True] * 3)


def test_batch_equals_single(loc: Localizer) -> None:
    items = [(images(10 + k), 1000 + k) for k in range(5)]
    items.append(([None, *images(99)[1:]], 2000))
    loc.max_batch = 4  # two forward passes
    try:
        batch = loc.infer_batch(items)
    finally:
        loc.max_batch = 32
    assert [b.stamp_ns for b in batch] == [1000, 1001, 1002, 1003, 1004, 2000]
    for (ims, stamp), b in zip(items, batch, strict=True):
        s = loc.infer(ims, stamp)
        np.testing.assert_allclose(b.t, s.t, atol=1e-5)
        np.testing.assert_allclose(b.q, s.q, atol=1e-5)
        np.testing.assert_array_equal(b.mask, s.mask)
    assert not np.allclose(batch[0].t, batch[1].t)  # different images → different poses (the model is not constant)


def test_log_var_gives_the_covariance(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "var", predict_variance=True)
    loc = Localizer(path, device="cpu", warmup=0)
    ims = images(3)
    p = loc.infer(ims, 1)
    x, m = preprocess_bundle(ims, loc.preprocess_cfg)
    with torch.no_grad():
        lv = loc.model(x[None], m[None])["log_var"].numpy()
    # float32 model output: the two forward passes may differ in the last bit (1.2e-7 relative seen on CI)
    np.testing.assert_allclose(p.covariance, covariance_from_log_var(lv, 3.0)[0], rtol=1e-5)
    d = np.diag(p.covariance)
    np.testing.assert_allclose(d[:3], (3.0 * np.exp(lv[0, 0])) ** 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(d[3:], (2.0 * np.exp(lv[0, 1])) ** 2 / 3, rtol=1e-6)


def test_default_covariance_forms() -> None:
    np.testing.assert_allclose(np.diag(covariance_matrix((1.0, 2.0))), [1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(np.diag(covariance_matrix([1, 2, 3, 4, 5, 6])), [1, 2, 3, 4, 5, 6])
    with pytest.raises(ConfigError, match="positive definite"):
        covariance_matrix((0.0, 1.0))
    with pytest.raises(ConfigError, match="shape"):
        covariance_matrix([1, 2, 3])


def test_cuda_missing_falls_back_or_errors(ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mfapr_ros.inference.localizer"):
        loc = Localizer(ckpt, device="cuda:0", warmup=0)
    assert loc.device.type == "cpu" and "running on the CPU" in caplog.text
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Localizer(ckpt, device="cuda", strict=True)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="not valid"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="integer"):
        resolve_device("cuda:x")


def test_precision_rules_on_cpu(ckpt: Path, loc: Localizer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mfapr_ros.inference.localizer"):
        half = Localizer(ckpt, device="cpu", precision="fp16", warmup=0)
    assert half.precision == "fp32" and "fp16 is not supported on the CPU" in caplog.text
    with pytest.raises(ConfigError, match="fp16"):
        Localizer(ckpt, device="cpu", precision="fp16", strict=True)
    with pytest.raises(ConfigError, match="precision 'fp64'"):
        Localizer(ckpt, device="cpu", precision="fp64")
    bf = Localizer(ckpt, device="cpu", precision="bf16", warmup=0)
    ims = images(4)
    a, b = loc.infer(ims, 0), bf.infer(ims, 0)
    check_pose(b, 0, [True] * 4)
    assert np.abs(a.t - b.t).max() < 0.5  # bf16 has ~3 significant digits; the pose stays close


# ---------------------------------------------------------------------------- AsyncLocalizer
class GatedFake:
    """A localizer whose inference blocks until released; records what it was asked."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.seen: list[int] = []

    def infer(self, images: list[Any], stamp_ns: int, mask: Any = None) -> RigPose:
        self.seen.append(stamp_ns)
        self.started.release()
        assert self.release.acquire(timeout=10)
        if stamp_ns < 0:
            raise DataError(f"bad bundle {stamp_ns}")
        return RigPose(stamp_ns, np.zeros(3), np.array([1.0, 0, 0, 0]), np.eye(6), 0.0, np.ones(4, bool))


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mfapr-localizer"]


def test_latest_bundle_wins_and_stale_are_counted() -> None:
    fake = GatedFake()
    results: list[RigPose] = []
    a = AsyncLocalizer(fake, results.append)
    try:
        assert a.submit([], 1)
        assert fake.started.acquire(timeout=10)  # the worker is busy with bundle 1
        submitted: list[bool] = []
        t = threading.Thread(target=lambda: submitted.extend(a.submit([], s) for s in (2, 3, 4)))
        t.start()
        t.join(timeout=10)  # the worker is still gated: a blocking submit would never return
        assert not t.is_alive() and submitted == [True, True, True]
        fake.release.release()
        assert fake.started.acquire(timeout=10)  # now running 4 (2 and 3 were replaced)
        fake.release.release()
        assert a.wait_idle(timeout=10)
    finally:
        a.close()
    assert fake.seen == [1, 4] and [r.stamp_ns for r in results] == [1, 4]
    st = a.stats
    assert st["submitted"] == 4 and st["stale_dropped"] == 2 and st["processed"] == 2 and st["errors"] == 0
    assert all(r.latency_s > 0 for r in results) and len(a.latencies()) == 2


def test_errors_are_reported_not_raised_and_worker_survives() -> None:
    fake = GatedFake()
    results: list[RigPose] = []
    errors: list[BaseException] = []
    a = AsyncLocalizer(fake, results.append, errors.append)
    try:
        fake.release.release()
        a.submit([], -1)
        assert a.wait_idle(timeout=10)
        fake.release.release()
        a.submit([], 7)
        assert a.wait_idle(timeout=10)
        assert a.alive
    finally:
        a.close()
    assert len(errors) == 1 and isinstance(errors[0], DataError) and "bad bundle -1" in str(errors[0])
    assert [r.stamp_ns for r in results] == [7]
    assert a.stats["errors"] == 1 and a.stats["processed"] == 1


def test_callback_errors_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    fake = GatedFake()

    def boom(_: RigPose) -> None:
        raise RuntimeError("subscriber gone")

    a = AsyncLocalizer(fake, boom)
    try:
        fake.release.release()
        with caplog.at_level(logging.WARNING, logger="mfapr_ros.inference.localizer"):
            a.submit([], 3)
            assert a.wait_idle(timeout=10)
    finally:
        a.close()
    assert a.stats["callback_errors"] == 1 and "subscriber gone" in caplog.text


def test_close_joins_thread_and_refuses_new_work() -> None:
    before = len(worker_threads())
    fake = GatedFake()
    a = AsyncLocalizer(fake, lambda r: None)
    assert len(worker_threads()) == before + 1
    a.close()
    assert not a.alive and len(worker_threads()) == before
    assert a.submit([], 1) is False and a.stats["dropped_closed"] == 1
    a.close()  # idempotent


def test_async_with_real_localizer(loc: Localizer) -> None:
    results: list[RigPose] = []
    with AsyncLocalizer(loc, results.append) as a:
        a.submit(images(5), 42, [True, True, False, True])
        assert a.wait_idle(timeout=30)
    assert not a.alive
    check_pose(results[0], 42, [True, True, False, True])


def test_preprocess_then_infer_preprocessed_equals_infer(loc: Localizer) -> None:
    """The node's split (preprocess on its decode thread, the model on the inference thread) changes nothing."""
    ims = images(4)
    ims[1] = None
    p = loc.infer(ims, 77)
    x, m = loc.preprocess(ims)
    q = loc.infer_preprocessed(x, m, 77)
    run = loc.run_model(x, m)  # the node's inference thread; finish() runs on its publish thread
    r = loc.finish(run, 77)
    for other in (q, r):
        assert other.stamp_ns == 77 and other.mask.tolist() == p.mask.tolist() == [True, False, True, True]
        np.testing.assert_array_equal(other.t, p.t)
        np.testing.assert_array_equal(other.q, p.q)
        np.testing.assert_array_equal(other.covariance, p.covariance)
    assert run.outputs["t"].shape == (1, 3) and run.x is x and run.mask is m


def test_poses_own_their_arrays(loc: Localizer) -> None:
    """A RigPose never views a model tensor: consumers keep poses (~/path keeps 1000), and views pinned the model's
    freed buffers in the allocator (~470 MiB RSS at 2x offered, issue 25)."""
    x, m = loc.preprocess(images(5))
    for p in (loc.infer_preprocessed(x, m, 1), loc.infer_batch([(images(6), 2)])[0]):
        for a in (p.t, p.q, p.covariance, p.mask):
            base = a
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            assert not isinstance(base, torch.Tensor), type(base)
