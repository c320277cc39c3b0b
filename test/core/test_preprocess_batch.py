"""preprocess_bundle's batched path (issue 25): bit-identical to preprocessing each image on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfapr_ros.core.preprocess import PreprocessConfig, preprocess_bundle, preprocess_image


@pytest.mark.parametrize(("h", "w", "cfg"), [(64, 64, PreprocessConfig(64, 64)), (48, 80, PreprocessConfig(40, 32)),
                                             (30, 20, PreprocessConfig(36, 36))])
def test_batched_equals_one_by_one(h: int, w: int, cfg: PreprocessConfig) -> None:
    rng = np.random.default_rng(h + w)
    ims: list = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(5)]
    ims[2] = None
    ims[4] = torch.from_numpy(ims[4])  # numpy and torch inputs mix
    x, m = preprocess_bundle(ims, cfg)
    assert x.shape == (5, 3, cfg.crop, cfg.crop) and m.tolist() == [True, True, False, True, True]
    assert torch.count_nonzero(x[2]) == 0
    for i in (0, 1, 3, 4):
        assert torch.equal(x[i], preprocess_image(torch.as_tensor(ims[i]), cfg)), i


def test_mixed_sizes_and_grey_take_the_per_image_path() -> None:
    """Images that cannot be stacked (different sizes, a grey one) give the same result as one by one."""
    cfg = PreprocessConfig(32, 32)
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
           rng.integers(0, 256, (32, 32), dtype=np.uint8)]
    x, m = preprocess_bundle(ims, cfg)
    assert m.all()
    for i, im in enumerate(ims):
        assert torch.equal(x[i], preprocess_image(im, cfg)), i


def test_no_image_gives_zeros() -> None:
    x, m = preprocess_bundle([None, None], PreprocessConfig(16, 16))
    assert x.shape == (2, 3, 16, 16) and not m.any() and torch.count_nonzero(x) == 0


@pytest.mark.parametrize(("h", "w", "cfg"), [(64, 64, PreprocessConfig(64, 64)), (48, 80, PreprocessConfig(40, 32)),
                                             (64, 64, PreprocessConfig(64, 48))])
def test_a_full_bundle_equals_one_by_one_and_owns_its_memory(h: int, w: int, cfg: PreprocessConfig) -> None:
    """Every camera present (the fast path: normalised in place, no zero tensor, no scatter): the same bits as one
    by one, with and without resize / crop, and a contiguous tensor of its own (the caller's images untouched)."""
    rng = np.random.default_rng(h * w)
    ims = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    before = [im.copy() for im in ims]
    x, m = preprocess_bundle(ims, cfg)
    assert x.shape == (4, 3, cfg.crop, cfg.crop) and x.is_contiguous() and m.dtype == torch.bool and m.all()
    assert all(np.array_equal(a, b) for a, b in zip(ims, before, strict=True))
    for i, im in enumerate(ims):
        assert torch.equal(x[i], preprocess_image(im, cfg)), i
    x[0].zero_()
    assert ims[0].any()
