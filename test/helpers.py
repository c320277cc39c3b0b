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
