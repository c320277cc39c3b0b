"""Model zoo: every backbone × every valid fusion, masks, gradients, config errors, checkpoints, export."""

from __future__ import annotations

import itertools

import pytest
import torch

from mfapr_ros.core.checkpoint import save_checkpoint
from mfapr_ros.core.errors import CheckpointError, ConfigError, DataError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.models import (
    BACKBONES,
    PRESETS,
    build_model,
    extrinsics_from_rig,
    load_model,
    model_meta,
    preset,
    resolve_config,
)
from mfapr_ros.models.base import get_backbone
from mfapr_ros.models.fusions.late import LATE_FCS
from mfapr_ros.models.layers import robust_fuse, tile_grid

torch.set_num_threads(1)
S = 32

#: the smallest knobs per backbone so the full matrix stays fast on 2 shared cores
SMALL: dict[str, dict] = {
    "posenet": {"arch": "tiny", "width": 2, "fc_dim": 16},
    "posenet_resnet": {"arch": "tiny", "width": 2, "fc_dim": 16},
    "poselstm": {"arch": "tiny", "width": 2, "fc_dim": 16, "lstm_hidden": 4},
    "mapnet": {"arch": "tiny", "width": 2, "fc_dim": 16},
    "transposenet": {"arch": "tiny", "width": 2, "d_model": 8, "num_heads": 2, "num_layers": 1, "dim_feedforward": 16,
                     "fc_dim": 16},
    "vit": {"patch": 8, "d_model": 8, "num_layers": 1, "num_heads": 2, "dim_feedforward": 16, "fc_dim": 16},
}


def fusions(backbone: str) -> list[dict]:
    out = [{"position": "none"}]
    out += [{"position": "input", "mode": m} for m in get_backbone(backbone).input_modes]
    out += [{"position": "mid", "block": b} for b in get_backbone(backbone).mid_blocks]
    out += [{"position": "late", "fc": f} for f in LATE_FCS]
    return out


ALL = [(b, f) for b in BACKBONES for f in fusions(b)]


def cfg_for(backbone: str, fusion: dict, T: int, **kw) -> dict:
    cfg = {"backbone": backbone, "num_cameras": T, "image_size": S, "fusion": dict(fusion), "dropout": 0.0,
           **SMALL[backbone], **kw}
    if fusion["position"] == "none":
        cfg["extrinsics"] = extrinsics_from_rig(ring_rig(T))
    return cfg


def _id(p: tuple) -> str:
    return f"{p[0]}-{'-'.join(str(v) for v in p[1].values())}"


def _check_out(out: dict, B: int, T: int, model) -> None:
    assert out["t"].shape == (B, 3) and out["q"].shape == (B, 4) and out["t_norm"].shape == (B, 3)
    assert torch.isfinite(out["t"]).all() and torch.isfinite(out["q"]).all()
    torch.testing.assert_close(out["q"].norm(dim=-1), torch.ones(B), atol=1e-5, rtol=0)
    assert (out["q"][:, 0] >= 0).all()
    if model.mix_stream:
        assert out["per_camera_t"].shape == (B, T, 3) and out["per_camera_q"].shape == (B, T, 4)


@pytest.mark.parametrize("backbone,fusion", ALL, ids=[_id(p) for p in ALL])
def test_builds_for_every_rig_size(backbone, fusion):
    """Every backbone × fusion builds for T ∈ {1, 4, 6, 10} and gives finite poses with unit quaternions.
    Per-camera weights are tested at T=1, 4 and 6; T=10 uses shared weights (the code path is the same, ×10)."""
    for T in (1, 4, 6, 10):
        f = dict(fusion)
        if T == 10 and fusion["position"] in ("mid", "late"):
            f["shared_weights"] = True
        torch.manual_seed(T)
        model = build_model(cfg_for(backbone, f, T)).eval()
        assert model.config["num_cameras"] == T
        with torch.no_grad():
            out = model(torch.randn(2, T, 3, S, S), torch.ones(2, T, dtype=torch.bool))
        _check_out(out, 2, T, model)


@pytest.mark.parametrize("backbone,fusion", ALL, ids=[_id(p) for p in ALL])
def test_gradients_and_masks(backbone, fusion):
    """Gradients reach every parameter; with 1 and 2 cameras missing the pose is finite and the missing
    cameras' pixels have no influence at all (eval mode, exact)."""
    T = 4
    torch.manual_seed(0)
    model = build_model(cfg_for(backbone, fusion, T, predict_variance=True))
    model.train()
    x = torch.randn(2, T, 3, S, S)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 0] = False  # row 1 exercises the learned missing tokens, row 0 the camera-0 networks
    out = model(x, mask)
    _check_out(out, 2, T, model)
    assert out["log_var"].shape == (2, 2)
    g = torch.Generator().manual_seed(1)
    loss = sum((out[k] * torch.randn(out[k].shape, generator=g)).sum() for k in ("t", "q", "log_var"))
    if model.mix_stream:
        loss = loss + (out["per_camera_t"] * mask[..., None]).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not no_grad, f"parameters without gradient: {no_grad}"

    model.eval()
    for missing in ([2], [1, 3]):
        m = torch.ones(1, T, dtype=torch.bool)
        m[0, missing] = False
        a = x[:1].clone()
        b = a.clone()
        b[0, missing] = torch.randn(len(missing), 3, S, S) * 5
        with torch.no_grad():
            oa, ob = model(a, m), model(b, m)
        _check_out(oa, 1, T, model)
        torch.testing.assert_close(oa["t"], ob["t"], atol=1e-6, rtol=0)
        torch.testing.assert_close(oa["q"], ob["q"], atol=1e-6, rtol=0)


def test_present_camera_pixels_do_influence_output():
    """Guards the test above against a model that ignores its input altogether."""
    model = build_model(preset("tiny")).eval()
    x = torch.randn(1, 4, 3, 64, 64)
    y = x.clone()
    y[0, 1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x)["t"], model(y)["t"])


def test_mix_stream_fuses_per_camera_poses_through_extrinsics():
    """The rig pose of the mix-stream model is the fusion of T_world_cam_i · T_rig_cam_i⁻¹: if every camera's
    prediction were consistent, the rig pose is reproduced; an outlier camera is down-weighted."""
    from mfapr_ros.core import geometry_torch as gt

    rig = ring_rig(4)
    ext = extrinsics_from_rig(rig)
    et, eq = torch.tensor(ext["t"]), torch.tensor(ext["q"])
    t_rig = torch.tensor([[1.0, 2.0, 0.5]])
    q_rig = gt.quat_normalize(torch.tensor([[0.9, 0.1, -0.2, 0.3]]))
    ct, cq = gt.pose_compose(t_rig[:, None].expand(1, 4, 3), q_rig[:, None].expand(1, 4, 4), et[None], eq[None])
    ti, qi = gt.pose_inverse(et, eq)
    rt, rq = gt.pose_compose(ct, cq, ti[None], qi[None])
    rt_bad = rt.clone()
    rt_bad[0, 3] += torch.tensor([5.0, 0.0, 0.0])
    mask = torch.ones(1, 4, dtype=torch.bool)
    t, q, w = robust_fuse(rt, rq, mask)
    torch.testing.assert_close(t, t_rig, atol=1e-5, rtol=0)
    assert gt.rotation_error_deg(q, q_rig).item() < 0.05
    t2, _, w2 = robust_fuse(rt_bad, rq, mask)
    assert (t2 - t_rig).norm() < 0.15 * 5.0 / 4  # plain mean would be off by 1.25 m
    assert w2[0, 3] < 0.2 * w2[0, 0]
    t3, _, w3 = robust_fuse(rt_bad, rq, torch.tensor([[True, True, True, False]]))
    torch.testing.assert_close(t3, t_rig, atol=1e-5, rtol=0)
    assert w3[0, 3] == 0


def test_pose_normalization_buffers_make_metres():
    cfg = preset("tiny", pose_normalization={"t_mean": [10.0, -5.0, 1.0], "t_scale": 4.0})
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, 3, 64, 64))
    assert out["t"].dtype == torch.float64  # de-normalised in float64 (large map coordinates)
    torch.testing.assert_close(out["t"], out["t_norm"].double() * 4.0 + torch.tensor([10.0, -5.0, 1.0],
                                                                                   dtype=torch.float64))
    # training computes the statistics first and builds the model with them (mfapr_training.train)
    model = build_model(dict(cfg, pose_normalization={"t_mean": [1.0, 2.0, 3.0], "t_scale": 2.0}))
    assert model.config["pose_normalization"] == {"t_mean": [1.0, 2.0, 3.0], "t_scale": 2.0}


def test_mapnet_uses_log_quaternion_head():
    model = build_model(cfg_for("mapnet", {"position": "input", "mode": "tile"}, 2)).eval()
    assert model.rotation_repr == "logq"
    with torch.no_grad():
        out = model(torch.randn(2, 2, 3, S, S))
    assert out["q_raw"].shape == (2, 3)
    assert build_model(cfg_for("posenet", {"position": "input", "mode": "tile"}, 2)).rotation_repr == "quat"


def test_tile_grid():
    assert [tile_grid(t) for t in (1, 2, 3, 4, 5, 6, 9, 10)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (2, 3),
                                                                 (3, 3), (3, 4)]


BAD = [
    ({"backbone": "resnet"}, "backbone"),
    ({"backbone": "mapnet", "num_cameras": 0}, "num_cameras"),
    ({"backbone": "mapnet", "num_cameras": 11}, "num_cameras"),
    ({"backbone": "mapnet", "fusion": {"position": "input", "mode": "tokens"}}, "fusion.mode"),
    ({"backbone": "vit", "fusion": {"position": "mid", "block": "block-3"}}, "not available for backbone 'vit'"),
    ({"backbone": "vit", "fusion": {"position": "mid"}}, "'mid' is not available"),
    ({"backbone": "transposenet", "fusion": {"position": "mid", "block": "block-3"}}, "fusion.block"),
    ({"backbone": "mapnet", "fusion": {"position": "late", "fc": "fc-3"}}, "fusion.fc"),
    ({"backbone": "mapnet", "fusion": {"position": "sideways"}}, "fusion.position"),
    ({"backbone": "mapnet", "fusion": {"position": "late", "mode": "tile"}}, "fusion.mode"),
    ({"backbone": "mapnet", "fusion": {"position": "none"}}, "extrinsics"),
    ({"backbone": "mapnet", "fusion": {"position": "none", "shared_weights": False},
      "extrinsics": {"t": [[0, 0, 0]] * 4, "q": [[1, 0, 0, 0]] * 4}}, "shared_weights"),
    ({"backbone": "mapnet", "fusion": {"position": "none"}, "extrinsics": {"t": [[0, 0, 0]], "q": [[1, 0, 0, 0]]}},
     "extrinsics"),
    ({"backbone": "mapnet", "fusion": {"position": "none"},
      "extrinsics": {"t": [[0, 0, 0]] * 4, "q": [[2, 0, 0, 0]] * 4}}, "extrinsics.q[0]"),
    ({"backbone": "mapnet", "arch": "vgg16"}, "arch"),
    ({"backbone": "mapnet", "d_model": 64}, "unknown keys ['d_model']"),
    ({"backbone": "mapnet", "pretrained": "yes"}, "pretrained"),
    ({"backbone": "mapnet", "image_size": 8}, "image_size"),
    ({"backbone": "mapnet", "num_fc": 1, "fusion": {"position": "late", "fc": "fc-2"}}, "num_fc"),
    ({"backbone": "mapnet", "pose_normalization": {"t_mean": [0, 0], "t_scale": 1}}, "pose_normalization.t_mean"),
    ({"backbone": "mapnet", "pose_normalization": {"t_mean": [0, 0, 0], "t_scale": 0}}, "t_scale"),
    ({"backbone": "mapnet", "rotation": "euler"}, "rotation"),
    ({"backbone": "mapnet", "dropout": 1.5}, "dropout"),
    ({"backbone": "vit", "image_size": 36, "patch": 16}, "image_size"),
    ({"backbone": "vit", "d_model": 10, "num_heads": 3}, "d_model"),
    ({"backbone": "vit", "dim": 16, "d_model": 16}, "same setting"),
    ({"backbone": "vit", "pretrained": True}, "pretrained"),
    ({"backbone": "transposenet", "d_model": 30, "num_heads": 3}, "d_model"),
    ({"backbone": "poselstm", "fc_dim": 100, "lstm_grid": [10, 11]}, "lstm_grid"),
    ({"backbone": "mapnet", "arch": "tiny", "pretrained": True}, "pretrained"),
]


@pytest.mark.parametrize("cfg,needle", BAD, ids=[n for _, n in BAD])
def test_invalid_configs_raise_clear_errors(cfg, needle):
    with pytest.raises(ConfigError, match=None) as e:
        build_model(cfg)
    assert needle in str(e.value), str(e.value)


def test_pretrained_offline_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    def _offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)  # never download, even on a connected box
    with pytest.raises(ConfigError, match="TORCH_HOME") as e:
        build_model({"backbone": "mapnet", "arch": "resnet18", "pretrained": True, "image_size": 32})
    assert "resnet18" in str(e.value) and "pretrained: false" in str(e.value)


def test_resolve_is_idempotent_and_json():
    import json

    for name in PRESETS:
        r = resolve_config(PRESETS[name])
        assert resolve_config(json.loads(json.dumps(r))) == r


def test_input_validation_errors():
    model = build_model(preset("tiny")).eval()
    with pytest.raises(DataError, match="num_cameras=4"):
        model(torch.randn(1, 3, 3, 64, 64))
    with pytest.raises(DataError, match="image_size=64"):
        model(torch.randn(1, 4, 3, 32, 32))
    with pytest.raises(DataError, match="no camera present"):
        model(torch.randn(2, 4, 3, 64, 64), torch.tensor([[True] * 4, [False] * 4]))


def test_tiny_presets_stay_tiny():
    """The tiny presets are meant for other modules' tests: a size bound (parameters and FLOPs, deterministic,
    unlike a wall-clock bound on a shared CI box) catches an accidental heavy default; speed is bench/models.py's."""
    from torch.utils.flop_counter import FlopCounterMode

    for name in ("tiny", "tiny_tile"):
        model = build_model(PRESETS[name]).eval()
        assert sum(p.numel() for p in model.parameters()) < 200_000
        x = torch.randn(2, 4, 3, 64, 64)
        with FlopCounterMode(display=False) as fc:
            model(x, torch.ones(2, 4, dtype=torch.bool))
        assert fc.get_total_flops() < 2e9, fc.get_total_flops()


@pytest.mark.parametrize("name,fusion", [("tiny", None), ("mix", {"position": "none"}),
                                         ("late", {"position": "late", "fc": "fc-1"})])
def test_checkpoint_roundtrip_identical_outputs(tmp_path, name, fusion):
    rig = ring_rig(4)
    cfg = preset("tiny", predict_variance=True, pose_normalization={"t_mean": [1.0, 2.0, 3.0], "t_scale": 5.0})
    if fusion is not None:
        cfg["fusion"] = fusion
        cfg["extrinsics"] = extrinsics_from_rig(rig)
    model = build_model(cfg)
    model.eval()
    meta = model_meta(model, rig, PreprocessConfig(64, 64), provenance={"step": 7})
    assert meta["pose_normalization"] == {"t_mean": [1.0, 2.0, 3.0], "t_scale": 5.0}
    path = save_checkpoint(tmp_path / "m", model, meta)
    loaded, ck = load_model(path)
    assert ck.meta["provenance"] == {"step": 7} and ck.rig.camera_names == rig.camera_names
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 4, 3, 64, 64)
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    with torch.no_grad():
        a, b = model(x, mask), loaded(x, mask)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_load_model_rejects_mismatched_weights(tmp_path):
    model = build_model(preset("tiny"))
    meta = model_meta(model, ring_rig(4), PreprocessConfig(64, 64))
    meta["model"]["d_model"] = 64  # JSON now describes another network
    meta["model"]["dim_feedforward"] = 64
    path = save_checkpoint(tmp_path / "m", model, meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)
    meta["model"]["backbone"] = "nonsense"
    path = save_checkpoint(tmp_path / "n", model, meta)
    with pytest.raises(CheckpointError, match="backbone"):
        load_model(path)


def test_model_meta_checks_rig_and_preprocess():
    model = build_model(preset("tiny"))
    with pytest.raises(ConfigError, match="4 cameras|num_cameras=4"):
        model_meta(model, ring_rig(6), PreprocessConfig(64, 64))
    with pytest.raises(ConfigError, match="image_size"):
        model_meta(model, ring_rig(4), PreprocessConfig(96, 96))


@pytest.mark.parametrize("arch", ["resnet18", "googlenet", "efficientnet_b0"])
def test_real_trunks_build_and_run(arch):
    """The torchvision trunks (not just `tiny`) wire up at every stage: channel fusion widens the first conv,
    mid fusion cuts the trunk, TransPoseNet takes two scales."""
    for backbone, fusion in [("posenet", {"position": "input", "mode": "channel"}),
                             ("mapnet", {"position": "mid", "block": "block-3", "shared_weights": True}),
                             ("transposenet", {"position": "input", "mode": "tokens"})]:
        cfg = {"backbone": backbone, "arch": arch, "num_cameras": 2, "image_size": 32, "fusion": fusion}
        if backbone == "transposenet":
            cfg.update(d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, fc_dim=16)
        else:
            cfg["fc_dim"] = 32
        model = build_model(cfg).eval()
        with torch.no_grad():
            _check_out(model(torch.randn(1, 2, 3, 32, 32)), 1, 2, model)


def test_presets_resolve():
    for name in PRESETS:
        cfg = resolve_config(PRESETS[name])
        # the demo model is late fusion at fc-0 (per-camera CNN, embeddings concatenated in slot order)
        assert cfg["fusion"]["position"] == "input" or name.startswith("mapnet_") or name == "demo"
    assert PRESETS["tiny"]["fusion"]["mode"] == "tokens" and PRESETS["tiny_tile"]["fusion"]["mode"] == "tile"


def test_channel_and_tile_inputs_combine_cameras():
    from mfapr_ros.models.layers import InputFusion

    x = torch.arange(2 * 3 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 3, 2, 2)
    mask = torch.tensor([[True, True, True], [True, False, True]])
    tile = InputFusion("tile", 3)
    out = tile(x, mask)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[0, :, 0:2, 0:2], x[0, 0])
    torch.testing.assert_close(out[0, :, 0:2, 2:4], x[0, 1])
    torch.testing.assert_close(out[0, :, 2:4, 0:2], x[0, 2])
    assert (out[0, :, 2:4, 2:4] == 0).all()
    assert (out[1, :, 0:2, 2:4] == tile.missing.view(3, 1, 1)).all()
    ch = InputFusion("channel", 3)(x, mask)
    assert ch.shape == (2, 9, 2, 2)
    torch.testing.assert_close(ch[0, 3:6], x[0, 1])


def test_every_matrix_entry_is_distinct():
    """Sanity for the matrix itself: 4 CNN backbones × 10 + TransPoseNet 8 + ViT 7 fusion settings."""
    assert len(ALL) == 4 * 10 + 8 + 7
    assert len({_id(p) for p in ALL}) == len(ALL)
    assert all(isinstance(p, tuple) for p in itertools.islice(ALL, 3))


def test_pose_outputs_stay_fp32_under_autocast() -> None:
    """precision bf16 / AMP training: the backbone runs in bf16, the regressors in fp32, so a position is not
    rounded to 8 significant bits (0.13 m at t_scale 30 m before the fix) and the quaternion stays unit."""
    import torch

    from mfapr_ros.models import build_model, preset

    torch.manual_seed(0)
    m = build_model(preset("tiny", image_size=32, predict_variance=True,
                           pose_normalization={"t_mean": [0.0, 0.0, 0.0], "t_scale": 30.0})).eval()
    x = torch.randn(4, 4, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    for key in ("t_norm", "q", "log_var"):
        assert out[key].dtype == torch.float32, key
    assert out["t"].dtype == torch.float64  # world positions are de-normalised in float64
    assert torch.allclose(out["q"].norm(dim=-1), torch.ones(4), atol=1e-6)
    assert not bool((out["t_norm"].bfloat16().float() == out["t_norm"]).all())  # not bf16-rounded values


def test_large_map_coordinates_keep_centimetres() -> None:
    """A map frame at UTM-like coordinates (northing 5.4e6 m, float32 spacing 0.5 m): positions computed by the
    model, the localizer and the training targets keep sub-centimetre resolution (float64 de-normalisation)."""
    import numpy as np
    import torch

    from mfapr_ros.models import build_model, preset

    mean = [512345.678, 5412345.632, 41.25]
    m = build_model(preset("tiny", image_size=32, pose_normalization={"t_mean": mean, "t_scale": 30.0})).eval()
    with torch.no_grad():
        m.net.head.fc_t.weight.zero_()
        m.net.head.fc_t.bias.copy_(torch.tensor([0.001, -0.002, 0.0]))  # 3 cm / 6 cm from the mean
        out = m(torch.randn(1, 4, 3, 32, 32))
    want = np.array(mean) + np.array([0.03, -0.06, 0.0])
    np.testing.assert_allclose(out["t"][0].numpy(), want, atol=1e-6)
    assert float(torch.tensor(mean[1], dtype=torch.float32)) != mean[1]  # the float32 path could not do this


def test_transposenet_slot_queries_read_their_own_camera_in_slot_order() -> None:
    """Token fusion's orientation branch (``ori_readout: slots``): query j reads only slot j's encoder memory, the
    outputs are concatenated in slot order, and a missing camera's block is the learned "missing" vector — so a
    cyclic slot shift permutes the blocks instead of vanishing into an attention average."""
    from mfapr_ros.models.backbones.transposenet import TransformerBranch

    torch.manual_seed(0)
    br = TransformerBranch(16, 2, 1, 32, 0.0, slot_queries=3).eval()
    class PassThrough(torch.nn.Module):
        def forward(self, x, src_key_padding_mask=None):
            return x

    br.encoder = PassThrough()  # isolate the decoder's per-slot reading (the encoder mixes cameras by design)
    tok = torch.randn(2, 3 * 5, 16)
    pos = torch.zeros(3 * 5, 16)
    with torch.no_grad():
        a = br(tok, pos).reshape(2, 3, 16)
        t2 = tok.clone()
        t2[:, 5:10] += 1.0  # change slot 1's tokens only
        b = br(t2, pos).reshape(2, 3, 16)
        assert torch.allclose(a[:, 0], b[:, 0]) and torch.allclose(a[:, 2], b[:, 2])
        assert not torch.allclose(a[:, 1], b[:, 1])
        br.missing.fill_(7.0)
        m = br(tok, pos, mask=torch.tensor([[True, False, True], [True, True, True]])).reshape(2, 3, 16)
        assert torch.all(m[0, 1] == 7.0) and torch.allclose(m[1], a[1]) and torch.allclose(m[0, 0], a[0, 0])
    cfg = preset("demo_transformer")
    cfg["num_anchors"] = 0
    model = build_model(cfg)
    assert model.config["ori_readout"] == "slots"
    with pytest.raises(ConfigError, match="ori_readout"):
        build_model({**preset("demo_transformer"), "ori_readout": "mean"})


def test_one_vocabulary_for_transformer_sizes() -> None:
    """ViT and TransPoseNet both take torch.nn.Transformer's names (d_model, num_heads, num_layers,
    dim_feedforward); a checkpoint stored with ViT's old names (dim, heads, depth, mlp_dim) resolves to the same
    config, written back in the current names."""
    from mfapr_ros.models import resolve_config
    from mfapr_ros.models.base import get_backbone

    for b in ("vit", "transposenet"):
        assert {"d_model", "num_heads", "num_layers", "dim_feedforward"} <= set(get_backbone(b).defaults)
    old = resolve_config({"backbone": "vit", "patch": 8, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32})
    new = resolve_config({"backbone": "vit", "patch": 8, "d_model": 16, "num_layers": 1, "num_heads": 2,
                          "dim_feedforward": 32})
    assert old == new and "dim" not in new and new["d_model"] == 16


def test_transposenet_content_queries_make_the_readout_depend_on_the_input_at_init() -> None:
    """``content_queries``: each decoder query starts from the mean image token it reads. Why: with constant
    learned queries the decoder's output at init is mostly the input-independent part (query self-attention, the
    positional + slot codes averaged by near-uniform cross-attention, then LayerNorm), the orientation head sees
    almost the same embedding for every bundle, and the first validations of the demo run reported it collapsed.
    Measured here on a fresh model: the orientation embedding (the head's input) varies ≥ 1.5x more across inputs
    relative to its size with content queries than without (≈ 2.5x on the demo world)."""

    def spread(content: bool) -> float:
        torch.manual_seed(0)
        cfg = {**preset("demo_transformer"), "num_anchors": 0, "content_queries": content}
        model = build_model(cfg).train()  # batch statistics in BatchNorm, as in the first training steps
        torch.manual_seed(1)
        x = torch.rand(16, 4, 3, 64, 64) * torch.rand(16, 4, 1, 1, 1)  # inputs that differ in content and level
        with torch.no_grad():
            emb = model.net.encoder(x, torch.ones(16, 4, dtype=torch.bool))
            e = model.net.stacks[1](emb[1])
        return float(e.std(0).norm() / e.norm(dim=1).mean())

    with_content, without = spread(True), spread(False)
    assert with_content > 1.5 * without, (with_content, without)
    with pytest.raises(ConfigError, match="content_queries"):
        build_model({**preset("demo_transformer"), "content_queries": "yes"})


def test_transposenet_single_query_content_ignores_missing_cameras() -> None:
    """The single (position) query starts from the mean over the present cameras' tokens only: a missing camera's
    zero image must not drag the mean (its tokens are key-padded in attention too)."""
    from mfapr_ros.models.backbones.transposenet import TransformerBranch

    br = TransformerBranch(8, 2, 1, 16, 0.0)
    tok = torch.randn(2, 3 * 4, 8)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[0, 4:8] = True  # camera 1 missing in sample 0
    tok_changed = tok.clone()
    tok_changed[0, 4:8] = 100.0  # whatever sits in a padded slot
    a, b = br.pooled(tok, pad), br.pooled(tok_changed, pad)
    assert torch.allclose(a, b)
    assert torch.allclose(a[0, 0], torch.cat([tok[0, :4], tok[0, 8:]]).mean(0), atol=1e-6)
    assert torch.allclose(a[1, 0], tok[1].mean(0), atol=1e-6)


def test_transformer_checkpoint_from_before_content_queries_loads_plain_queries(tmp_path):
    """A TransPoseNet checkpoint whose JSON has no ``content_queries`` (written before they existed) rebuilds the
    model it was trained as — plain learned queries — not today's default."""
    rig = ring_rig(4)
    model = build_model(preset("tiny", content_queries=False)).eval()
    meta = model_meta(model, rig, PreprocessConfig(64, 64))
    del meta["model"]["content_queries"]
    loaded, _ = load_model(save_checkpoint(tmp_path / "old", model, meta))
    assert loaded.config["content_queries"] is False
    x = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["t"], loaded(x)["t"])
