"""Helpers shared by the test suite (one module, imported as ``helpers``: test/conftest.py's folder is on sys.path).

Why one module: several suites need the same tiny random checkpoint for a ring rig, the same JPEG encoder and the
same bounded waits on an executor; copies drift (different seeds, sizes, timeouts) and then tests disagree.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMG = 32  # published image size (px); the model runs at 32 px too
PERIOD_NS = 33_333_333  # 30 Hz stamps


def make_checkpoint(tmp_path: Path, num_cameras: int) -> Path:
    """A tiny randomly initialised model for a ring rig whose cameras are IMG×IMG px."""
    import torch

    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.models import build_model, model_meta
    from mfapr_ros.models.registry import preset

    torch.manual_seed(0)
    model = build_model(preset("tiny", num_cameras=num_cameras, image_size=IMG))
    rig = ring_rig(num_cameras, image_size=IMG, hfov_deg=90.0)
    meta = model_meta(model, rig, PreprocessConfig(resize=IMG, crop=IMG), {"test": "helpers"})
    return save_checkpoint(tmp_path / f"tiny{num_cameras}", model, meta)


def jpeg(img: np.ndarray) -> bytes:
    import torch
    from torchvision.io import encode_jpeg

    return bytes(encode_jpeg(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)).numpy().tobytes())


def spin(executor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)


def wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_stable(probe, hold_s: float, timeout: float, what: str) -> None:
    """Wait until ``probe()`` returns a tuple whose first item is true and which stays equal for ``hold_s``."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        now = probe()
        if now != last:
            last, since = now, time.monotonic()
        elif now[0] and time.monotonic() - since >= hold_s:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last state {last}")
        time.sleep(0.02)


def rendered_bundle_set(scene: tuple, folder: Path, count: int = 3):
    """A tiny :class:`BundleSet` of ``count`` bundles rendered by the synthetic world's renderer (``scene`` =
    ``(world, lighting, camera models, rig)``): rig 0.3 m apart along the first corridor, turning 0.2 rad each, one
    PNG per camera — what the yaw and shift augmentation tests feed a :class:`BundleDataset`."""
    from mfapr_training.datasets.records import BundleRecord, BundleSet, ImageRef
    from mfapr_training.synth.render import render
    from PIL import Image

    from mfapr_ros.core import geometry as g

    world, light, models, rig = scene
    recs = []
    for k in range(count):
        t = np.array([world.xs[0], 0.5 * (world.bounds[1] + world.bounds[3]) + 0.3 * k, 0.0])
        q = g.quat_from_yaw(0.2 * k)
        t_cam, q_cam = rig.camera_poses(t, q)
        refs = []
        for i in range(rig.num_cameras):
            p = folder / f"{k}_{i}.png"
            Image.fromarray(render(world, light, models[i], t_cam[i], q_cam[i])[0]).save(p)
            refs.append(ImageRef.from_path(p))
        recs.append(BundleRecord(1000 * k, refs, [1000 * k] * rig.num_cameras, np.ones(rig.num_cameras, bool), t, q,
                                 "a", k))
    return BundleSet(rig, recs, {}, "mini")


def render_scene(num_cameras: int = 4, size: int = 96) -> tuple:
    """``(world, lighting, camera models, rig)`` of the default synthetic world with a ring of ``num_cameras``
    rendered at ``size`` px: the renderer-checked augmentation tests' scene (build it once per module)."""
    from mfapr_training.synth.generate import camera_models, rendered_rig
    from mfapr_training.synth.world import build_world, make_lighting

    from mfapr_ros.core.rig import ring_rig

    world = build_world()
    rig0 = ring_rig(num_cameras)
    models = camera_models(rig0, size)
    return world, make_lighting(world, 0), models, rendered_rig(rig0, models, "raw")
