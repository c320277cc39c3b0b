"""BundleDataset samples (tuples, the shared preprocessing, caching, bad images), track augmentation identities,
photometric jitter and pose normalisation statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mfapr_training.datasets.dataset import BundleDataset, build_tuples
from mfapr_training.datasets.normalization import pose_normalization
from mfapr_training.datasets.photometric import SHADING_GRID, SHADING_GRIDS, PhotometricConfig, color_jitter
from mfapr_training.datasets.records import BundleRecord, BundleSet, ImageRef
from mfapr_training.datasets.track_augmentation import (
    TrackAugmentation,
    cyclic_shifts,
    permutation_offset,
    permute_target,
)
from PIL import Image

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.geometry import (
    pose_compose,
    quat_from_axis_angle,
    quat_from_yaw,
    quat_mul,
    rotation_error_deg,
)
from mfapr_ros.core.preprocess import PreprocessConfig, preprocess_bundle
from mfapr_ros.core.rig import Camera, Rig, load_rig, ring_rig

CFG = PreprocessConfig(resize=32, crop=32)


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=95)
    return arr


def make_set(tmp: Path, n: int = 6, tracks: tuple[str, ...] = ("a",)) -> BundleSet:
    rig = load_rig("ring4")
    rng = np.random.default_rng(1)
    recs = []
    for tr in tracks:
        for k in range(n):
            refs = []
            for c in range(rig.num_cameras):
                p = tmp / f"{tr}_{k}_{c}.jpg"
                _jpeg(p, rng)
                refs.append(ImageRef.from_path(p))
            recs.append(BundleRecord(1000 * k, refs, [1000 * k] * 4, np.ones(4, bool), np.array([k, 2.0 * k, 0.0]),
                                     quat_from_yaw(0.1 * k), tr, len(recs)))
    return BundleSet(rig, recs, {}, "mini")


# ------------------------------------------------------------------------------------------ track augmentation
def test_ring4_shift_by_one_is_a_90_degree_yaw() -> None:
    rig = load_rig("ring4")
    off = permutation_offset(rig, [1, 2, 3, 0])  # slot j sees camera j+1
    assert off.is_exact
    np.testing.assert_allclose(off.t, 0.0, atol=1e-12)  # the rig origin stays put (ring centred on it)
    assert rotation_error_deg(off.q, quat_from_yaw(math.pi / 2)) < 1e-6
    t, q = np.array([3.0, -2.0, 0.5]), quat_mul(quat_from_yaw(0.7), quat_from_axis_angle([1, 0, 0], 0.1))
    t2, q2 = permute_target(rig, [1, 2, 3, 0], t, q)
    np.testing.assert_allclose(t2, t, atol=1e-12)
    assert rotation_error_deg(q2, quat_mul(q, quat_from_yaw(math.pi / 2))) < 1e-6
    # the virtual rig's slot j camera is exactly the real camera j+1 (definition of the target)
    vt, vq = rig.camera_poses(t2, q2)
    rt, rq = rig.camera_poses(t, q)
    np.testing.assert_allclose(vt, rt[[1, 2, 3, 0]], atol=1e-12)
    assert np.max(rotation_error_deg(vq, rq[[1, 2, 3, 0]])) < 1e-6


def test_shift_composition_and_identity() -> None:
    rig = ring_rig(6, radius=0.3)
    shifts = cyclic_shifts(6)
    assert shifts[0] == tuple(range(6)) and permutation_offset(rig, shifts[0]).is_exact
    t, q = np.array([1.0, 2.0, 3.0]), quat_from_yaw(0.2)
    ta, qa = permute_target(rig, shifts[1], *permute_target(rig, shifts[1], t, q))
    tb, qb = permute_target(rig, shifts[2], t, q)  # two shifts by one = one shift by two (a group action)
    np.testing.assert_allclose(ta, tb, atol=1e-12)
    assert rotation_error_deg(qa, qb) < 1e-6
    with pytest.raises(ConfigError, match="not a permutation"):
        permutation_offset(rig, [0, 0, 1, 2, 3, 4])


def test_non_symmetric_rig_uses_the_averaged_offset_and_reports_residual() -> None:
    # a 3-camera rig: front, left, and right-but-further-out: shifting is not a symmetry
    base = ring_rig(4)
    cams = list(base.cameras[:2]) + [Camera("cam3", "/c3", t_base_cam=(0.0, -0.4, 1.2),
                                            q_base_cam=base.cameras[3].q_base_cam)]
    rig = Rig("odd", tuple(cams))
    perm = [1, 2, 0]
    off = permutation_offset(rig, perm)
    assert not off.is_exact and off.residual_m > 0.05
    # the approximation is the Markley/mean over all slots' exact anchors Δ_j
    t_rc, q_rc = rig.extrinsics()
    from mfapr_ros.core.geometry import mean_pose, pose_inverse

    anchors = [pose_compose(t_rc[perm[j]], q_rc[perm[j]], *pose_inverse(t_rc[j], q_rc[j])) for j in range(3)]
    mt, mq = mean_pose(np.stack([a[0] for a in anchors]), np.stack([a[1] for a in anchors]))
    np.testing.assert_allclose(off.t, mt, atol=1e-12)
    assert rotation_error_deg(off.q, mq) < 1e-6
    # each single anchor is exact for its own slot; the average is no further than the reported residual
    vt, _ = rig.camera_poses(off.t, off.q)
    assert np.max(np.linalg.norm(vt - t_rc[perm], axis=-1)) == pytest.approx(off.residual_m)
    # 'cyclic' on a rig whose shifts are not symmetries is refused with the residual and the keys to change;
    # 'symmetric' with nothing but the identity left is an error, not a silent no-op
    with pytest.raises(ConfigError, match=r"'cyclic' on rig 'odd': 2 of 3 cyclic shifts.*track_aug_max_residual="):
        TrackAugmentation(rig, "cyclic")
    with pytest.raises(ConfigError, match="'symmetric' on rig 'odd': no slot permutation other than the identity"):
        TrackAugmentation(rig, "symmetric")
    loose = TrackAugmentation(rig, "cyclic", max_residual_m=1.0, max_residual_deg=180.0)  # explicitly allowed
    assert len(loose.candidates) == 3 and "residual" not in loose.describe() and " m, " in loose.describe()
    ring = TrackAugmentation(ring_rig(4), "symmetric")
    assert len(ring.candidates) == 4  # the ring's 4 rotations
    assert ring.describe().startswith("track augmentation 'symmetric': p=0.5, 4 permutations: [0, 1, 2, 3] (0.000 m")


def test_stereo_pair_swap_is_refused() -> None:
    """A 2-camera stereo rig (both looking forward, 6.4 cm apart): 'cyclic' would swap left and right with an
    identity target 6.4 cm off — refused by default, naming the residual."""
    q = ring_rig(4).cameras[0].q_base_cam
    rig = Rig("stereo", (Camera("left", "/l", t_base_cam=(0.0, 0.032, 1.0), q_base_cam=q),
                         Camera("right", "/r", t_base_cam=(0.0, -0.032, 1.0), q_base_cam=q)))
    with pytest.raises(ConfigError, match=r"residual 0\.064 m / 0\.0°"):
        TrackAugmentation(rig, "cyclic")


# ------------------------------------------------------------------------------------------ dataset
def test_tuples_stay_inside_tracks() -> None:
    recs = [BundleRecord(s, [None], [None], np.zeros(1, bool), None, None, tr, i)
            for i, (s, tr) in enumerate([(5, "a"), (1, "a"), (2, "b"), (3, "a"), (4, "b"), (9, "a")])]
    tup = build_tuples(recs, steps=2, skip=2)
    # track a in time order: idx 1 (s1), 3 (s3), 0 (s5), 5 (s9) → stride-2 pairs; track b (2 bundles) is too short
    assert tup == [[1, 0], [3, 5]]
    with pytest.raises(ConfigError):
        build_tuples(recs, 0, 1)


def test_sample_matches_the_shared_preprocessing(tmp_path: Path) -> None:
    bs = make_set(tmp_path)
    ds = BundleDataset(bs, preprocess_cfg=CFG, steps=3, skip=2)
    assert len(ds) == 2
    s = ds[1]
    assert s["images"].shape == (3, 4, 3, 32, 32) and s["mask"].shape == (3, 4) and s["mask"].all()
    assert s["t"].shape == (3, 3) and s["q"].shape == (3, 4) and s["track"] == "a"
    assert s["index"].tolist() == [1, 3, 5] and s["stamp_ns"].tolist() == [1000, 3000, 5000]
    np.testing.assert_allclose(s["t"][2].numpy(), [5.0, 10.0, 0.0])
    from mfapr_training.datasets.dataset import load_image

    ref, _ = preprocess_bundle([load_image(r) for r in bs.records[3].images], CFG)
    # identical up to the uint8 quantisation of the cached resized image (≤ 0.5/255 / std)
    assert float((s["images"][1] - ref).abs().max()) <= 0.5 / 255 / min(CFG.std) + 1e-5
    assert ds.cache is not None and len(ds.cache) == 12
    ds[1]
    assert ds.cache.hits >= 12  # second access decodes nothing


def test_augmented_samples_are_seeded_and_consistent(tmp_path: Path) -> None:
    bs = make_set(tmp_path)
    ds = BundleDataset(bs, preprocess_cfg=CFG, steps=2, track_aug=TrackAugmentation(bs.rig, "cyclic", p=1.0),
                       photometric=PhotometricConfig(), seed=7)
    a, b = ds[0], ds[0]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["perm"], b["perm"])
    plain = BundleDataset(bs, preprocess_cfg=CFG, steps=2)[0]
    perm = a["perm"].tolist()
    shift = next(k for k in range(4) if perm == [(j + k) % 4 for j in range(4)])
    t_exp, q_exp = permute_target(bs.rig, perm, plain["t"].double().numpy(), plain["q"].double().numpy())
    np.testing.assert_allclose(a["t"].numpy(), t_exp, atol=1e-5)
    assert np.max(rotation_error_deg(a["q"].numpy(), q_exp)) < 1e-3
    # the targets are yaw-only, so a shift by k is a yaw of 90°·k: angle 0, 90, 180, 90 from the plain target
    angle = np.max(rotation_error_deg(a["q"].numpy(), plain["q"].numpy()))
    assert angle == pytest.approx([0.0, 90.0, 180.0, 90.0][shift], abs=1e-2)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["images"], a["images"])  # another epoch draws other jitter


def test_bad_images_are_masked_and_counted_or_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bs = make_set(tmp_path, n=2)
    good = bs.records[0].images[1].path
    data = Path(good).read_bytes()
    Path(good).write_bytes(data[: len(data) // 3])  # truncated JPEG
    Path(bs.records[1].images[2].path).unlink()  # missing file
    ds = BundleDataset(bs, preprocess_cfg=CFG)
    s0, s1 = ds[0], ds[1]
    assert s0["mask"][0].tolist() == [True, False, True, True] and float(s0["images"][0, 1].abs().max()) == 0.0
    assert s1["mask"][0].tolist() == [True, True, False, True]
    assert ds.drops["bad_image"] == 2 and "not found" in caplog.text
    with pytest.raises(DataError, match=r"cannot decode image .*\.jpg|not found"):
        BundleDataset(bs, preprocess_cfg=CFG, on_bad_image="raise")[0]


def test_empty_split_and_wrong_slot_count(tmp_path: Path) -> None:
    bs = make_set(tmp_path, n=2)
    with pytest.raises(DataError, match="no samples"):
        BundleDataset(bs, preprocess_cfg=CFG, steps=3)
    with pytest.raises(DataError, match="4 image slots.*3 cameras"):
        BundleDataset(bs.records, rig=ring_rig(3), preprocess_cfg=CFG)


def test_predecode_fills_cache(tmp_path: Path) -> None:
    bs = make_set(tmp_path, n=3)
    ds = BundleDataset(bs, preprocess_cfg=CFG)
    info = ds.predecode(num_threads=2)
    assert info["images"] == 12 and info["cache_mb"] == pytest.approx(12 * 3 * 32 * 32 / 1e6)
    misses = ds.cache.misses
    ds[2]
    assert ds.cache.misses == misses


# ------------------------------------------------------------------------------------------ photometric / stats
def test_color_jitter_properties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g)
    off = PhotometricConfig(0, 0, 0, 0, white_balance=0, shading=0)
    assert torch.equal(color_jitter(x, off), x)  # all-zero strengths: identity
    y1 = color_jitter(x, PhotometricConfig(), torch.Generator().manual_seed(3))
    y2 = color_jitter(x, PhotometricConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2) and not torch.equal(y1, x) and y1.min() >= 0 and y1.max() <= 1
    # brightness only: a pure per-image scale
    yb = color_jitter(x * 0.5, PhotometricConfig(0.3, 0, 0, 0, white_balance=0, shading=0),
                      torch.Generator().manual_seed(1))
    scale = yb[:, :, :1, :1].mean(dim=(1, 2, 3), keepdim=True) / (x[:, :, :1, :1] * 0.5).mean(
        dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(yb, x * 0.5 * scale, atol=1e-5) and 0.7 <= float(scale.min()) <= float(scale.max()) <= 1.3
    # hue only keeps luma (YIQ rotation) where nothing clips
    mid = 0.4 + 0.2 * x
    yh = color_jitter(mid, PhotometricConfig(0, 0, 0, 0.1, white_balance=0, shading=0),
                      torch.Generator().manual_seed(2))
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    assert torch.allclose((yh * w).sum(-3), (mid * w).sum(-3), atol=1e-5)
    with pytest.raises(ConfigError):
        PhotometricConfig(hue=0.7)
    # white balance only: one gain per colour channel and image, within ±10 %
    yw = color_jitter(mid, PhotometricConfig(0, 0, 0, 0, shading=0), torch.Generator().manual_seed(4))
    gains = (yw / mid).flatten(2)
    assert torch.allclose(gains.max(-1).values, gains.min(-1).values, atol=1e-5)  # uniform over the image
    assert 0.9 - 1e-5 <= float(gains.min()) and float(gains.max()) <= 1.1 + 1e-5
    assert float((gains[:, 0, 0] - gains[:, 2, 0]).abs().max()) > 0.01  # the channels differ: a tint


def test_shading_is_a_smooth_grey_gain_field_within_its_strength() -> None:
    """Shading (lights on or off between sessions): one grey gain per pixel, smooth over the image, in [1 ± s],
    differing between the image's corners and between images."""
    mid = 0.4 + 0.2 * torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    ys = color_jitter(mid, PhotometricConfig(0, 0, 0, 0, white_balance=0, shading=0.3, shading_grids=(SHADING_GRID,)),
                      torch.Generator().manual_seed(5))
    gains = ys / mid
    assert torch.allclose(gains[:, 0], gains[:, 1], atol=1e-5) and torch.allclose(gains[:, 0], gains[:, 2], atol=1e-5)
    assert 0.7 - 1e-5 <= float(gains.min()) and float(gains.max()) <= 1.3 + 1e-5
    g = gains[:, 0]
    step = 0.6 / (23 / (SHADING_GRID - 1))  # bilinear: at most the full gain range across one grid interval
    assert float((g[:, 1:, :] - g[:, :-1, :]).abs().max()) <= step + 1e-5  # no edges
    corners = torch.stack([g[:, 0, 0], g[:, 0, -1], g[:, -1, 0], g[:, -1, -1]], 1)
    assert float((corners.max(1).values - corners.min(1).values).min()) > 0.02  # not uniform: a field
    assert float(corners[:, 0].std()) > 0.02  # each image draws its own
    off = color_jitter(mid, PhotometricConfig(0, 0, 0, 0, white_balance=0, shading=0), torch.Generator())
    assert torch.equal(off, mid)
    with pytest.raises(ConfigError):
        PhotometricConfig(shading=1.0)


def test_shading_grids_multiply_fields_of_several_scales() -> None:
    """``shading_grids`` (5, 9): the product of a 5x5 and a 9x9 field — finer patches than 5x5 alone, gains within
    [(1 − s)², (1 + s)²]; the default (5,) is the single field; bad grids are a one-line config error; the training
    config's ``data.photometric`` takes the same settings as a mapping."""
    from mfapr_training.config import load_config

    mid = 0.4 + 0.2 * torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5
    one = color_jitter(mid, PhotometricConfig(0, 0, 0, 0, white_balance=0, shading=0.2, shading_grids=[5]),
                       torch.Generator().manual_seed(5)) / mid
    two = color_jitter(mid, PhotometricConfig(0, 0, 0, 0, white_balance=0, shading=0.2, shading_grids=[5, 9]),
                       torch.Generator().manual_seed(5)) / mid
    assert PhotometricConfig().shading_grids == SHADING_GRIDS == (5, 9, 17)
    assert 0.64 - 1e-5 <= float(two.min()) and float(two.max()) <= 1.44 + 1e-5
    assert float(two.max() - two.min()) > float(one.max() - one.min())

    def roughness(g: torch.Tensor) -> float:  # mean |second difference| across columns: fine structure
        return float((g[..., 2:] - 2 * g[..., 1:-1] + g[..., :-2]).abs().mean())

    assert roughness(two[:, 0]) > 1.5 * roughness(one[:, 0])
    for bad in ([1], [], [5.0], "5"):
        with pytest.raises(ConfigError, match="shading_grids"):
            PhotometricConfig(shading_grids=bad)
    cfg = load_config(None, ["data.photometric={shading: 0.2, shading_grids: [5, 9]}"])
    assert PhotometricConfig.from_dict(cfg.data.photometric).shading_grids == (5, 9)
    assert PhotometricConfig.from_dict(PhotometricConfig(shading_grids=(3, 7)).to_dict()).shading_grids == (3, 7)
    for bad_value in ("{shading_grids: [1]}", "{shadows: 1}", "3"):
        with pytest.raises(ConfigError, match="data.photometric"):
            load_config(None, [f"data.photometric={bad_value}"])


def test_shading_field_is_bilinear_upsampling_and_jitter_leaves_its_input_alone() -> None:
    """The separable shading field (``A_H @ g @ A_W.T``) is ``F.interpolate(bilinear, align_corners=True)`` within
    1e-6, on square and non-square images; jitter works on a copy (the cached resized images are reused every
    epoch); with ``p`` < 1 the images not drawn come back unchanged."""
    from mfapr_training.datasets.photometric import _bilinear_matrix

    g = torch.rand(3, 1, 17, 17, generator=torch.Generator().manual_seed(0))
    for k, (h, w) in ((5, (64, 64)), (9, (48, 80)), (17, (24, 24)), (2, (7, 3))):
        gk = g[..., :k, :k].contiguous()
        ref = torch.nn.functional.interpolate(gk, size=(h, w), mode="bilinear", align_corners=True)
        assert torch.allclose(_bilinear_matrix(k, h) @ gk @ _bilinear_matrix(k, w).T, ref, atol=1e-6), (k, h, w)
    x = torch.rand(8, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    for cfg in (PhotometricConfig(), PhotometricConfig(brightness=0), PhotometricConfig(p=0.5)):
        y = color_jitter(x, cfg, torch.Generator().manual_seed(2))
        assert torch.equal(x, before) and y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    y = color_jitter(x, PhotometricConfig(p=0.5), torch.Generator().manual_seed(2))
    same = [torch.equal(y[i], x[i]) for i in range(8)]
    assert 0 < sum(same) < 8  # some drawn, some passed through untouched


def test_pose_normalization_stats(tmp_path: Path) -> None:
    bs = make_set(tmp_path, n=4)
    st = pose_normalization(bs)
    t = np.array([[k, 2.0 * k, 0.0] for k in range(4)])
    np.testing.assert_allclose(st["t_mean"], t.mean(0))
    assert st["t_scale"] == pytest.approx(math.sqrt(np.mean(np.sum((t - t.mean(0)) ** 2, -1))))
    assert pose_normalization(np.ones((3, 3)))["t_scale"] == 1.0
    with pytest.raises(DataError, match="no"):
        pose_normalization([BundleRecord(0, [None], [None], np.zeros(1, bool), None, None, "a", 0)])


# ------------------------------------------------------------------------------------------ batched samples
def _old_draws(n: int, cfg: PhotometricConfig, gen: torch.Generator) -> list[torch.Tensor]:
    """The factors as the per-factor jitter drew them (one ``torch.rand`` per factor, this order)."""
    def factors(s: float) -> torch.Tensor:
        return 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * s

    out = [torch.rand(n, generator=gen) < cfg.p, factors(cfg.brightness), factors(cfg.contrast),
           factors(cfg.saturation), (torch.rand(n, generator=gen) * 2 - 1) * cfg.hue]
    if cfg.white_balance > 0:
        out.append(1.0 + (torch.rand(n, 3, generator=gen) * 2 - 1) * cfg.white_balance)
    if cfg.shading > 0:
        out += [1.0 + (torch.rand(n, 1, k, k, generator=gen) * 2 - 1) * cfg.shading for k in cfg.shading_grids]
    return out


@pytest.mark.parametrize("cfg", [PhotometricConfig(), PhotometricConfig(p=0.5, white_balance=0),
                                 PhotometricConfig(shading=0, shading_grids=(3,)), PhotometricConfig(hue=0.2)])
def test_one_draw_of_all_uniforms_is_the_per_factor_stream(cfg: PhotometricConfig) -> None:
    """draw_jitter takes every uniform in one call and cuts it: the factors must be the per-factor draws (the
    CPU generator's stream is the same), so batching changed no sample of any training run."""
    from mfapr_training.datasets.photometric import draw_jitter

    for n in (1, 4, 12):
        new = draw_jitter(n, cfg, torch.Generator().manual_seed(11))
        old = _old_draws(n, cfg, torch.Generator().manual_seed(11))
        got = [new.apply, new.brightness, new.contrast, new.saturation, new.hue]
        got += ([new.white_balance] if cfg.white_balance > 0 else []) + list(new.shading)
        assert len(got) == len(old)
        for a, b in zip(got, old, strict=True):
            assert a is not None and torch.equal(a, b)


def test_jitter_uniforms_of_the_wrong_shape_are_refused() -> None:
    from mfapr_training.datasets.photometric import jitter_from_uniforms, jitter_uniforms

    cfg = PhotometricConfig()
    with pytest.raises(ValueError, match="uniforms"):
        jitter_from_uniforms(torch.rand(2, jitter_uniforms(4, cfg) - 1), 4, cfg)


def test_batched_samples_are_the_item_by_item_samples(tmp_path: Path) -> None:
    """The DataLoader's batched path (``__getitems__``, through SeededDataset and a Subset as the trainer wraps it)
    must give bit-identical samples to one item at a time — with yaw augmentation, colour jitter and track
    augmentation all drawing — and leave the global RNG where it was."""
    import torch.utils.data as tud
    from mfapr_training.batches import SeededDataset
    from mfapr_training.datasets.yaw_augmentation import YawAugmentation

    base = make_set(tmp_path, n=8)
    rig = ring_rig(4, image_size=48, hfov_deg=90.0)
    cfg = PreprocessConfig(resize=32, crop=32)
    ds = BundleDataset(base.records, rig=rig, preprocess_cfg=cfg, track_aug="cyclic", photometric=True,
                       yaw_aug=YawAugmentation(rig, cfg, 5.0))
    wrapped = SeededDataset(tud.Subset(ds, [7, 1, 3, 5, 0, 2]), seed=4)
    wrapped.epoch = 3
    idx = [0, 4, 2, 5]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    batched = wrapped.__getitems__(idx)
    assert torch.equal(torch.rand(3), before)  # the model's RNG stream is untouched by loading data
    single = [wrapped[i] for i in idx]
    perms = set()
    for a, b in zip(batched, single, strict=True):
        assert set(a) == set(b)
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), k
            else:
                assert a[k] == b[k]
        perms.add(tuple(a["perm"].tolist()))
    assert len(perms) > 1  # the augmentations did draw (not the identity everywhere)
    # a dataset seeded by itself (seed=...) batches the same way; order within a batch does not matter
    own = BundleDataset(base.records, rig=rig, preprocess_cfg=cfg, photometric=True, seed=9,
                        yaw_aug=YawAugmentation(rig, cfg, 5.0))
    fwd, rev = own.__getitems__([1, 2, 3]), own.__getitems__([3, 2, 1])
    for a, b in zip(fwd, reversed(rev), strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["q"], b["q"])
    assert not torch.equal(fwd[0]["images"], own.getitems([1], [torch.Generator().manual_seed(0)])[0]["images"])
