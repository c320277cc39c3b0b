"""The traced inference path (``Localizer(torchscript=True)``, inference/compiled.py): same poses as eager mode on
rendered camera images (a missing camera included), the GIL released while the graph runs, validation kept outside
the graph, and the eager fallback when a graph cannot be trusted."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mfapr_ros.bag.synth import encode_jpeg, render, trajectory
from mfapr_ros.core.checkpoint import save_checkpoint
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.images import decode_compressed
from mfapr_ros.core.preprocess import PreprocessConfig, preprocess_bundle
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.inference import compiled as compiled_mod
from mfapr_ros.inference.compiled import ATOL, compile_model
from mfapr_ros.inference.localizer import Localizer
from mfapr_ros.models import build_model, model_meta, preset

CAMERAS, SIZE = 10, 64  # bench/node.py's rig and the demo model's input
T_MEAN, T_SCALE = (1000.0, -2000.0, 5.0), 13.6  # the demo world's t_scale; a map origin far away: t ≁ 0


def camera_images(k: int) -> list[np.ndarray]:
    """The rig's views along the synthetic loop at step ``k``, through JPEG and the node's decoder (what it infers)."""
    t, q = trajectory(np.array([0.4 * k]), 3.0)
    yaw = 2.0 * float(np.arctan2(q[0, 3], q[0, 0]))
    return [decode_compressed("jpeg", encode_jpeg(render(t[0], yaw, c, SIZE))) for c in range(CAMERAS)]


def _checkpoint(folder: Path, preset_name: str, **overrides: Any) -> Path:
    """A model fitted for 40 steps to six bundles of :func:`camera_images` with poses metres apart: an untrained
    model answers nearly the same pose for every input (t spread ~1e-4 m), which would make a 1e-5 m comparison
    vacuous; this one's poses differ by tens of metres and its quaternions by ~1."""
    torch.manual_seed(0)
    mean = torch.tensor(T_MEAN, dtype=torch.float64)
    model = build_model(preset(preset_name, num_cameras=CAMERAS, image_size=SIZE,
                               pose_normalization={"t_mean": list(T_MEAN), "t_scale": T_SCALE}, **overrides))
    if model.config["num_anchors"]:
        model.set_anchors(torch.randn(model.config["num_anchors"], 3, dtype=torch.float64) * 20 + mean, 5.0)
    cfg = PreprocessConfig(resize=SIZE, crop=SIZE)
    xs = torch.stack([preprocess_bundle(camera_images(k), cfg)[0] for k in range(6)])
    masks = torch.ones(6, CAMERAS, dtype=torch.bool)
    t_goal = mean + 10.0 * torch.randn(6, 3, dtype=torch.float64)
    q_goal = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(40):
        out = model(xs, masks)
        loss = ((out["t"] - t_goal) / T_SCALE).pow(2).mean().float() + (1 - (out["q"] * q_goal).sum(1).abs()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    rig = ring_rig(CAMERAS, image_size=SIZE, hfov_deg=90.0)
    meta = model_meta(model, rig, cfg, {"test": "compiled"})
    return save_checkpoint(folder / preset_name, model, meta)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as bench/node.py builds it (10 cameras, 64 px, anchor head), fitted a little."""
    return _checkpoint(tmp_path_factory.mktemp("compiled"), "demo")


@pytest.fixture(scope="module")
def tiny_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that predicts variances (the covariance then comes from the graph's log_var)."""
    return _checkpoint(tmp_path_factory.mktemp("compiled"), "tiny", predict_variance=True)


def _max_diff(a: Any, b: Any) -> tuple[float, float, float]:
    return (float(np.abs(a.t - b.t).max()), float(np.abs(a.q - b.q).max()),
            float(np.abs(a.covariance - b.covariance).max()))


@pytest.mark.parametrize("model", ["demo", "tiny_var"])
def test_graph_poses_equal_eager_on_camera_images(model: str, request: pytest.FixtureRequest) -> None:
    """t (m), q and the covariance within 1e-5 of eager mode: full bundles, a camera missing (None), a mask."""
    ckpt = request.getfixturevalue(model)
    eager = Localizer(ckpt, device="cpu", torchscript=False, retrieval=False)
    graph = Localizer(ckpt, device="cpu", retrieval=False)
    assert eager.inference_path == "eager" and eager.compiled is None
    assert graph.inference_path == "torchscript" and graph.compiled is not None
    assert "torchscript" in repr(graph)
    poses = []
    for k in range(5, 9):  # five was fitted, six to eight were not
        ims = camera_images(k)
        cases = [(ims, None), ([None, *ims[1:]], None), (ims, [True] * 7 + [False] * 3)]
        for images, mask in cases:
            a, b = eager.infer(images, k, mask), graph.infer(images, k, mask)
            dt, dq, dc = _max_diff(a, b)
            assert dt <= 1e-5 and dq <= 1e-5, (k, mask, dt, dq)
            assert dc <= 1e-5 * max(1.0, float(np.abs(a.covariance).max()))
            np.testing.assert_array_equal(a.mask, b.mask)
            poses.append(b.t)
    assert np.ptp(np.array(poses), axis=0).max() > 1.0  # metres apart: the comparison is not vacuous


def test_batches_stay_eager_and_agree(demo: Path) -> None:
    """The graph is for batch 1 (the node); infer_batch runs eagerly and agrees with the graph's single poses."""
    loc = Localizer(demo, device="cpu", retrieval=False)
    items = [(camera_images(k), k) for k in range(3)]
    x, m = loc.preprocess(items[0][0])
    assert loc.compiled.accepts(x[None], m[None]) and not loc.compiled.accepts(torch.stack([x, x]),
                                                                                torch.stack([m, m]))
    for (ims, stamp), b in zip(items, loc.infer_batch(items), strict=True):
        s = loc.infer(ims, stamp)
        assert _max_diff(s, b)[0] <= 1e-5 and _max_diff(s, b)[1] <= 1e-5


def test_validation_runs_outside_the_graph(demo: Path) -> None:
    """check_inputs still refuses a bundle without any camera, which a traced graph would silently infer."""
    loc = Localizer(demo, device="cpu", retrieval=False)
    x, _ = loc.preprocess(camera_images(0))
    with pytest.raises(DataError, match="no camera present"):
        loc.infer_preprocessed(x, torch.zeros(CAMERAS, dtype=torch.bool), 0)


def _throughput(fn: Any, threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to show two threads running at once")
def test_two_threads_get_more_than_one_threads_throughput(demo: Path) -> None:
    """The GIL is released while the graph runs: two threads calling infer_preprocessed get > 1.3x one thread's
    bundles/s (eager mode, GIL-bound: ~1.0x). Best of three tries (the machine is shared)."""
    loc = Localizer(demo, device="cpu", retrieval=False)
    x, m = loc.preprocess(camera_images(1))
    fn = lambda: loc.infer_preprocessed(x, m, 0)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per thread: intra-op threads would blur what two Python threads get
    try:
        ratios = []
        for _ in range(3):
            one = _throughput(fn, 1, 1.0)
            ratios.append(_throughput(fn, 2, 1.0) / one)
            if ratios[-1] > 1.3:
                break
    finally:
        torch.set_num_threads(torch_threads)
    assert max(ratios) > 1.3, f"two threads / one thread = {ratios}: the graph does not run in parallel"


class _MaskBranch(nn.Module):
    """A model whose forward branches on the mask in Python: a trace keeps one branch, so the graph is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.fc(images.mean(dim=(3, 4)).mean(dim=1))
        t = feat * 2.0 if bool(mask.all()) else feat * 3.0
        return {"t": t.double(), "q": torch.nn.functional.normalize(torch.cat([feat, feat[:, :1]], 1), dim=1)}


def test_a_graph_that_differs_from_eager_is_refused() -> None:
    graph, why = compile_model(_MaskBranch().eval(), 4, 8, torch.device("cpu"))
    assert graph is None and "differs from eager mode: t" in why and "optimized" in why and "traced" in why


def test_the_traced_graph_is_bit_identical_to_eager(tiny_var: Path) -> None:
    """The last graph tried (no folding) runs eager mode's kernels in eager mode's order: no difference at all, so a
    model whose rounding is too loose for the folded graphs still leaves the GIL."""
    loc = Localizer(tiny_var, device="cpu", retrieval=False, torchscript=False)
    graph, why = compile_model(loc.model, CAMERAS, SIZE, torch.device("cpu"), variants=("traced",))
    assert graph is not None and graph.kind == "traced", why
    for k in (6, 7):
        x, m = loc.preprocess([None, *camera_images(k)[1:]])
        with torch.inference_mode():
            ref, got = loc.model(x[None], m[None]), graph(x[None], m[None])
        for key, value in got.items():
            assert torch.equal(value, ref[key]), key


def test_tracing_failure_falls_back_to_eager_with_a_log_line(demo: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("this model cannot be traced")

    monkeypatch.setattr(compiled_mod.torch.jit, "trace", refuse)
    with caplog.at_level(logging.INFO, logger="mfapr_ros.inference.localizer"):
        loc = Localizer(demo, device="cpu", retrieval=False)
    assert loc.inference_path == "eager" and loc.compiled is None
    assert "could not be traced" in caplog.text and "this model cannot be traced" in caplog.text
    monkeypatch.undo()
    ref = Localizer(demo, device="cpu", retrieval=False)
    ims = camera_images(2)
    assert _max_diff(loc.infer(ims, 0), ref.infer(ims, 0))[0] <= ATOL


def test_only_cpu_fp32_is_traced(demo: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mfapr_ros.inference.localizer"):
        bf = Localizer(demo, device="cpu", precision="bf16", retrieval=False, warmup=0)
    assert bf.inference_path == "eager" and "only CPU fp32 inference is traced" in caplog.text
