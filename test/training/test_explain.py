"""`mfapr explain`: per-bundle PNG + JSON for a transformer (attention) and a CNN (gradients) checkpoint; a camera the
model cannot see contributes exactly 0, a visible one more than 0."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag  # noqa: E402
from mfapr_ros.core.rig import ring_rig  # noqa: E402

SIZE = 32
RIG = ring_rig(4)
T0 = 1_700_000_000_000_000_000
CONFIGS = {
    "transformer": ("tiny", {}),
    "cnn": ("demo", {"width": 4, "fc_dim": 32, "num_anchors": 0}),
}


def _checkpoint(tmp_path, kind):
    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.models import build_model, model_meta, preset

    name, kw = CONFIGS[kind]
    torch.manual_seed(0)
    model = build_model(preset(name, image_size=SIZE, **kw))
    meta = model_meta(model, RIG, PreprocessConfig(resize=SIZE, crop=SIZE), {"test": True})
    return save_checkpoint(tmp_path / kind, model, meta)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / "b"
    # camera 2 silent 1.0–2.2 s: with --min-cameras 3 the bundles there are partial (mask False for cam 2)
    write_synth_bag(path, SynthBagSpec([c.topic for c in RIG.cameras], frames=25, size=SIZE,
                                       missing={2: (1.0, 2.2)}))
    return path


def _png_ok(p):
    from PIL import Image

    assert p.stat().st_size > 20_000
    with Image.open(p) as im:
        im.load()
        assert im.size[0] > 500 and im.size[1] > 500
        assert np.asarray(im.convert("L")).std() > 10  # not blank


@pytest.mark.parametrize("kind,method", [("transformer", "attention"), ("cnn", "gradient")])
def test_explain_bag_writes_png_and_json(tmp_path, bag, kind, method):
    from mfapr_ros.cli import main

    ck = _checkpoint(tmp_path, kind)
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(ck), "--bag", str(bag), "--stamp", "0.5", "1.8", "--out", str(out),
               "--device", "cpu", "--min-cameras", "3"])
    assert rc == 0
    index = json.loads((out / "explain.json").read_text())
    assert len(index["bundles"]) == 2
    docs = [json.loads((out / b["json"]).read_text()) for b in index["bundles"]]
    for doc, want in zip(docs, (0.5, 1.8), strict=True):
        assert abs((doc["stamp_ns"] - T0) / 1e9 - want) < 0.1
        assert doc["method"] == method and doc["cameras"] == RIG.camera_names
        assert doc["map_layout"] == ("joint" if kind == "transformer" else "gradient")
        assert len(doc["pose"]["t"]) == 3 and abs(np.linalg.norm(doc["pose"]["q_wxyz"]) - 1) < 1e-6
        assert len(doc["contributions"]) == 4
        for role in ("position", "orientation"):
            assert sum(doc["saliency_share"][role].values()) == pytest.approx(1.0)
        _png_ok(out / doc["png"])
    full, partial = docs
    assert all(full["mask"]) and full["mask"] != partial["mask"] and not partial["mask"][2]
    # the absent camera: masking it changes nothing, exactly; its saliency is zero; visible cameras matter
    c2 = partial["contributions"][2]
    assert c2["present"] is False and c2["delta_t_m"] == 0.0 and c2["delta_rot_deg"] == 0.0
    assert partial["saliency_share"]["position"]["cam2"] == 0.0
    for doc in docs:
        for c in doc["contributions"]:
            if c["present"]:
                assert c["delta_t_m"] > 0 and c["delta_rot_deg"] > 0, (kind, c)


def test_ignored_input_contributes_exactly_zero(tmp_path):
    """Garbage pixels in a slot whose mask is False: the model ignores them, so the contribution is exactly 0."""
    from mfapr_training.explain import contributions, saliency

    from mfapr_ros.inference.localizer import Localizer

    for kind in CONFIGS:
        loc = Localizer(_checkpoint(tmp_path, kind), device="cpu", warmup=0, retrieval=False)
        x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        mask = torch.tensor([True, False, True, True])
        _, rows = contributions(loc.model.eval(), x, mask, RIG.camera_names)
        assert rows[1]["delta_t_m"] == 0.0 and rows[1]["delta_rot_deg"] == 0.0
        assert all(rows[i]["delta_t_m"] > 0 for i in (0, 2, 3))
        _, maps, _ = saliency(loc.model, x, mask)
        assert all(float(np.abs(m[1]).max()) == 0.0 and float(m[0].max()) > 0 for m in maps.values())


def test_explain_dataset(tmp_path, bag):
    """--data (here the bag read as a rosbag dataset, as `mfapr evaluate` does): GT and error in the JSON."""
    from mfapr_ros.cli import main

    ck = _checkpoint(tmp_path, "transformer")
    out = tmp_path / "d"
    rc = main(["explain", "--checkpoint", str(ck), "--data", str(bag), "--count", "2", "--out", str(out),
               "--device", "cpu", "--no-plots"])
    assert rc == 0
    index = json.loads((out / "explain.json").read_text())
    assert len(index["bundles"]) == 2 and index["bundles"][0]["png"] is None
    doc = json.loads((out / index["bundles"][0]["json"]).read_text())
    assert doc["method"] == "attention" and "gt" in doc and doc["error"]["t_m"] >= 0


@pytest.mark.parametrize("fusion,layout", [
    ({"position": "input", "mode": "tile"}, "joint"),
    ({"position": "none"}, "per_camera"),
    ({"position": "late", "fc": "fc-1"}, "per_camera"),
    ({"position": "mid", "block": "cnn"}, "shared"),
])
def test_attention_layouts(fusion, layout):
    """Decoder cross-attention is found by module type and laid out per camera for every TransPoseNet fusion."""
    from mfapr_training.explain import contributions, saliency

    from mfapr_ros.models import build_model, extrinsics_from_rig, preset

    torch.manual_seed(0)
    extra = {"extrinsics": extrinsics_from_rig(RIG)} if fusion["position"] == "none" else {}
    model = build_model(preset("tiny", image_size=SIZE, fusion=fusion, **extra)).eval()
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([True, True, False, True])
    used, maps, got = saliency(model, x, mask)
    assert used == "attention" and got == layout
    for m in maps.values():
        assert m.shape == (4, SIZE, SIZE) and float(m[2].max()) == 0.0 and float(m[0].max()) > 0
    _, rows = contributions(model, x, mask, RIG.camera_names)
    assert rows[2]["delta_t_m"] == 0.0 and rows[2]["delta_rot_deg"] == 0.0 and rows[0]["delta_t_m"] > 0
