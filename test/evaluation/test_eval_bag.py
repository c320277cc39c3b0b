"""`mfapr eval-bag` on bags written here: metrics equal a direct computation; bad bags fail with clear messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfapr_ros.bag.reader import BagReader, read_gt
from mfapr_ros.bag.synth import SynthBagSpec, encode_jpeg, trajectory, write_synth_bag
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.core.sync import SyncSettings
from mfapr_ros.evaluation import compute_metrics
from mfapr_ros.evaluation.bag_inputs import parse_topic_map
from mfapr_ros.evaluation.eval_bag import evaluate_bag
from mfapr_ros.inference.baselines import mean_pose_record

localizer_mod = pytest.importorskip("mfapr_ros.inference.localizer", reason="needs torch")

SIZE = 32
RIG = ring_rig(4)
TOPICS = [c.topic for c in RIG.cameras]
MEAN_POSE = {"t": [0.0, 0.0, 0.0], "q_wxyz": [1.0, 0.0, 0.0, 0.0]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.models import build_model, model_meta, preset

    torch.manual_seed(0)
    model = build_model(preset("tiny", image_size=SIZE))
    provenance = {**mean_pose_record(MEAN_POSE["t"], MEAN_POSE["q_wxyz"]), "test": True}
    meta = model_meta(model, RIG, PreprocessConfig(resize=SIZE, crop=SIZE), provenance)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", model, meta)


@pytest.fixture(scope="module")
def localizer(checkpoint):
    return localizer_mod.Localizer(str(checkpoint), device="cpu")


def _bag(tmp_path, name, **kw):
    spec = SynthBagSpec(TOPICS, frames=kw.pop("frames", 30), size=SIZE, **kw)
    path = tmp_path / name
    return path, spec, write_synth_bag(path, spec)


def _direct(res, truth, spec, localizer, compressed):
    """Rebuild every bundle's images from the truth (JPEG round trip for compressed cameras), run the Localizer one
    bundle at a time, and score against the analytic trajectory: independent of the bag, sync and batching code."""
    from mfapr_ros.core import images

    t_est, q_est = [], []
    for row in res.camera_stamps_ns:
        imgs = []
        for j, s in enumerate(row):
            if s < 0:
                imgs.append(None)
                continue
            img = truth["images"][j][truth["stamps_ns"][j].index(int(s))]
            imgs.append(images.decode_compressed("jpeg", encode_jpeg(img)) if compressed[j] else img)
        p = localizer.infer(imgs, int(max(x for x in row if x >= 0)))
        t_est.append(p.t)
        q_est.append(p.q)
    t_gt, q_gt = trajectory((res.stamps_ns - spec.t0_ns) / 1e9, spec.radius)
    return np.asarray(t_est), np.asarray(q_est), t_gt, q_gt


@pytest.mark.parametrize("storage,compressed,gt", [
    ("sqlite3", (False, False, False, False), "pose"),
    ("mcap", (True, False, True, False), "tf"),
])
def test_eval_bag_matches_direct_computation(tmp_path, localizer, checkpoint, storage, compressed, gt):
    path, spec, truth = _bag(tmp_path, f"bag_{storage}", storage=storage, compressed=list(compressed), gt=gt,
                             missing={2: (1.0, 2.0)})
    res = evaluate_bag(checkpoint, path, gt_tf="map:base_link" if gt == "tf" else None, batch=8,
                       sync=SyncSettings.from_dict({"min_cameras": 3}), progress=False, localizer=localizer)
    # 30 frames; camera 2 silent from 1.0 to 2.0 s: with min_cameras=3 those become partial bundles
    assert 26 <= res.bundles <= 30
    absent = ~res.masks[:, 2]
    assert 7 <= absent.sum() <= 11 and res.masks[:, [0, 1, 3]].all()
    assert res.topics[0] == (TOPICS[0] + "/compressed" if compressed[0] else TOPICS[0])
    t_d, q_d, t_gt, q_gt = _direct(res, truth, spec, localizer, compressed)
    # batched inference (8 per pass) equals one-by-one inference on independently rebuilt bundles
    np.testing.assert_allclose(res.t_est, t_d, atol=1e-4)
    np.testing.assert_allclose(np.abs((res.q_est * q_d).sum(1)), 1.0, atol=1e-5)
    # GT interpolated from 50 Hz samples (or the TF chain map→odom→base_link) equals the analytic trajectory
    np.testing.assert_allclose(res.t_gt, t_gt, atol=2e-3)
    mine = compute_metrics(res.t_gt, res.q_gt, res.t_est, res.q_est)
    direct = compute_metrics(t_gt, q_gt, t_d, q_d)
    assert mine["count"] == direct["count"] == len(res.stamps_ns)
    assert mine["translation_m"]["median"] == pytest.approx(direct["translation_m"]["median"], abs=3e-3)
    assert mine["rotation_deg"]["mean"] == pytest.approx(direct["rotation_deg"]["mean"], abs=0.05)


def test_all_cameras_required_by_default(tmp_path, localizer, checkpoint):
    """The node's default (sync.min_cameras 0 = all) drops the bundles of the stretch where a camera is missing."""
    assert SyncSettings().to_dict() == {"slop": 0.02, "queue_size": 10, "min_cameras": 0, "stream_timeout": 0.5,
                                        "stream_timeout_periods": 3.0, "time_jump": 1.0}
    path, _, _ = _bag(tmp_path, "b", missing={1: (1.0, 2.0)}, gt="odom", gt_topic="/odom_gt")
    res = evaluate_bag(checkpoint, path, gt_topic="/odom_gt", progress=False, localizer=localizer, batch=4)
    assert res.masks.all() and 18 <= res.bundles <= 20
    assert res.drops.get("sync_dropped_unmatched", 0) > 0


def test_window_and_cli_report(tmp_path, checkpoint, capsys):
    from mfapr_ros.cli import main

    path, _, _ = _bag(tmp_path, "b", frames=30, gt="pose_cov", gt_topic="/ground_truth")
    out = tmp_path / "rep"
    rc = main(["eval-bag", "--checkpoint", str(checkpoint), "--bag", str(path), "--start", "0.5",
               "--max-duration", "1.5", "--batch", "4", "--out", str(out), "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads((out / "report.json").read_text())
    assert 13 <= doc["metrics"]["count"] <= 16  # 1.5 s at 10 Hz
    stamps = [r["stamp_ns"] for r in doc["rows"]]
    t0 = 1_700_000_000_000_000_000
    assert min(stamps) >= t0 + 0.45e9 and max(stamps) <= t0 + 2.05e9
    assert doc["baseline"]["t"] == MEAN_POSE["t"]
    assert doc["meta"]["baseline_source"].startswith("checkpoint")
    assert doc["meta"]["gt"].startswith("/ground_truth [geometry_msgs/msg/PoseWithCovarianceStamped]")
    assert doc["meta"]["sync"]["slop"] == 0.02 and doc["meta"]["sync"]["min_cameras"] == 0
    assert doc["meta"]["speedup_vs_realtime"] > 0
    for f in ("report.md", "error_cdf.png", "trajectory.png", "error_over_time.png", "camera_availability.png"):
        assert (out / f).exists(), f
    assert "× real time" in captured.out and "median error" in captured.out
    assert doc["meta"]["sync_accounting"].endswith(" OK") and doc["meta"]["sync_accounting"] in captured.out


def _rewrite_storage(path, ident):
    meta = path / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: sqlite3", f"storage_identifier: {ident}"))


def test_bad_bags_fail_clearly(tmp_path, checkpoint, capsys):
    from mfapr_ros.cli import main

    def run(*extra):
        rc = main(["eval-bag", "--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu",
                   "--out", str(tmp_path / "o"), *extra])
        return rc, capsys.readouterr().err

    # no camera topics
    other = SynthBagSpec(["/front/image_raw"], frames=5, size=SIZE)
    write_synth_bag(tmp_path / "nocam", other)
    rc, err = run("--bag", str(tmp_path / "nocam"))
    assert rc == 2 and "lacks the camera topic" in err and "cam0" in err and "/front/image_raw" in err
    # remapping fixes a name mismatch, and a wrong remap names the camera
    rc, err = run("--bag", str(tmp_path / "nocam"), "--topics", "camX=/front/image_raw")
    assert rc == 2 and "camX" in err
    # no ground truth
    path, _, _ = _bag(tmp_path, "nogt", frames=5, gt="none")
    rc, err = run("--bag", str(path))
    assert rc == 2 and "no ground truth" in err and "--gt-topic" in err
    rc, err = run("--bag", str(path), "--gt-topic", "/missing")
    assert rc == 2 and "/missing" in err
    rc, err = run("--bag", str(path), "--gt-tf", "map:base_link")
    assert rc == 2 and "TF" in err
    # unknown storage format / not a bag at all
    path, _, _ = _bag(tmp_path, "weird", frames=5)
    _rewrite_storage(path, "rosbag_v2")
    rc, err = run("--bag", str(path))
    assert rc == 2 and "storage format 'rosbag_v2'" in err and "sqlite3, mcap" in err
    rc, err = run("--bag", str(tmp_path / "o"))
    assert rc == 2 and ("does not exist" in err or "metadata.yaml" in err)


def test_helpers_validate():
    assert parse_topic_map("cam0=/a, cam1=/b") == {"cam0": "/a", "cam1": "/b"}
    with pytest.raises(ConfigError, match="CAMERA=TOPIC"):
        parse_topic_map("cam0:/a")
    with pytest.raises(ConfigError, match="min-cameras"):
        SyncSettings.from_dict({"min_cameras": 9}).make(4)


def test_read_gt_kinds_agree(tmp_path):
    """PoseStamped, PoseWithCovarianceStamped, Odometry and a TF chain give the same trajectory."""
    trajs = []
    for gt in ("pose", "pose_cov", "odom", "tf"):
        path, spec, truth = _bag(tmp_path, gt, frames=5, gt=gt, storage="mcap" if gt == "odom" else "sqlite3")
        with BagReader(path) as b:
            tr = read_gt(b, gt_topic=None if gt in ("pose", "tf") else spec.gt_topic,
                         gt_tf="map:base_link" if gt == "tf" else None)
        trajs.append(tr)
        np.testing.assert_allclose(tr.t, truth["gt"][1], atol=1e-9)
    for tr in trajs[1:]:
        np.testing.assert_array_equal(tr.stamps_ns, trajs[0].stamps_ns)
    with BagReader(path) as b, pytest.raises(DataError, match="no TF path"):
        b.read_tf_trajectory("map", "nowhere")


def test_eval_bag_fuses_with_the_bags_odometry_and_reports_a_fused_row(tmp_path, localizer, checkpoint):
    """Drifting odometry on /tf: every bundle gets one fused pose whose status is counted; the report carries the
    fused row (metrics, coverage, counters). Without odometry in the bag every pose passes through, counted."""
    pytest.importorskip("gtsam")
    from mfapr_ros.core.fusion import STATUSES, FusionSettings
    from mfapr_ros.core.odometry import OdometryDrift
    from mfapr_ros.evaluation import load_report, write_report
    from mfapr_ros.evaluation.eval_bag import fused_report

    path, _, _ = _bag(tmp_path, "odom", frames=40, odometry=OdometryDrift())
    settings = FusionSettings(enabled=True)
    res = evaluate_bag(checkpoint, path, batch=8, progress=False, localizer=localizer, fusion=settings)
    n = len(res.stamps_ns)
    assert res.fused.t.shape == (n, 3) and res.fused.covariance.shape == (n, 6, 6)
    st = res.fusion_stats
    assert st["received"] == res.bundles == sum(st[s] for s in STATUSES)
    assert st["no_odometry"] == 0 and st["initialized"] >= 1
    # the fused pose differs from the raw one (odometry moved it) but stays finite and rigid
    assert np.all(np.isfinite(res.fused.t)) and not np.allclose(res.fused.t[5:], res.t_est[5:])
    paths = write_report(tmp_path / "rep", stamps_ns=res.stamps_ns, t_gt=res.t_gt, q_gt=res.q_gt, t_est=res.t_est,
                         q_est=res.q_est, plots_enabled=False, fused=fused_report(res, settings))
    doc = load_report(paths["json"])
    assert doc["fused"]["metrics"]["count"] == n and doc["fused"]["stats"]["received"] == res.bundles
    assert set(doc["fused"]["calibration"]["blocks"]) == {"position_2d", "position_3d", "yaw"}
    assert doc["fused"]["after_warmup"]["count"] < n
    md = paths["markdown"].read_text()
    assert "model fused with odometry" in md and "### Fused with odometry" in md

    bare, _, _ = _bag(tmp_path, "bare", frames=20)
    res2 = evaluate_bag(checkpoint, bare, batch=8, progress=False, localizer=localizer, fusion=settings)
    assert res2.fusion_stats["no_odometry"] == res2.bundles
    np.testing.assert_array_equal(res2.fused.t, res2.t_est)  # raw poses passed through
def test_fit_fusion_writes_the_params_file_that_eval_bag_and_the_node_read(tmp_path, checkpoint, capsys):
    """`mfapr fit-fusion` on a drive with odometry writes a parameters file (fusion on, the fitted σ factors, the
    starting file's odometry σ kept); `mfapr eval-bag --params` fuses with exactly those settings. A drive without
    odometry, or too short, is one clear error."""
    pytest.importorskip("gtsam")
    from mfapr_ros.core.errors import MfaprError
    from mfapr_ros.core.fusion import load_fusion_params
    from mfapr_ros.core.odometry import OdometryDrift
    from mfapr_ros.evaluation import eval_bag, fusion_fit, load_report

    drive, _, _ = _bag(tmp_path, "drive", frames=60, odometry=OdometryDrift())
    start = tmp_path / "robot.yaml"
    start.write_text("/**:\n  ros__parameters:\n    checkpoint: m.json\n    fusion:\n"
                     "      odom_translation_per_m: 0.05\n")
    out = tmp_path / "fusion.yaml"
    assert fusion_fit.main(["--checkpoint", str(checkpoint), "--bag", str(drive), "--out", str(out), "--params",
                            str(start), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fit-fusion on" in printed and "kept" in printed and "starting settings" in printed
    fitted = load_fusion_params(str(out))
    assert fitted.enabled and fitted.odom_translation_per_m == 0.05
    assert (fitted.position_scale, fitted.rotation_scale) != (1.0, 1.0)  # an untrained model is not calibrated
    assert out.read_text().startswith("# fusion.* fitted by mfapr fit-fusion on")
    assert eval_bag.main(["--checkpoint", str(checkpoint), "--bag", str(drive), "--out", str(tmp_path / "rep"),
                          "--params", str(out), "--device", "cpu", "--no-plots", "--no-progress"]) == 0
    doc = load_report(tmp_path / "rep" / "report.json")
    assert doc["fused"]["settings"] == fitted.to_dict()
    assert str(out) in doc["meta"]["fusion"]

    bare, _, _ = _bag(tmp_path, "bare", frames=60)
    with pytest.raises(MfaprError, match="no odom -> base_link transform"):
        fusion_fit.main(["--checkpoint", str(checkpoint), "--bag", str(bare), "--out", str(tmp_path / "x.yaml"),
                         "--device", "cpu", "--no-progress"])
    short, _, _ = _bag(tmp_path, "short", frames=20, odometry=OdometryDrift())
    with pytest.raises(MfaprError, match="at least 50 are needed"):
        fusion_fit.main(["--checkpoint", str(checkpoint), "--bag", str(short), "--out", str(tmp_path / "y.yaml"),
                         "--device", "cpu", "--no-progress"])
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "y.yaml").exists()

    # --max-map-distance: needs the mapped positions (the retrieval database beside the checkpoint)
    with pytest.raises(MfaprError, match="no retrieval database"):
        fusion_fit.main(["--checkpoint", str(checkpoint), "--bag", str(drive), "--out", str(tmp_path / "z.yaml"),
                         "--device", "cpu", "--no-progress", "--max-map-distance", "0.25"])
    with pytest.raises(MfaprError, match="must be > 0 m"):
        fusion_fit.main(["--checkpoint", str(checkpoint), "--bag", str(drive), "--out", str(tmp_path / "z.yaml"),
                         "--device", "cpu", "--no-progress", "--max-map-distance", "0"])


def test_fit_fusion_scores_the_mapped_places_of_the_drive(tmp_path, checkpoint, capsys):
    """With a retrieval database (the mapped positions) beside the checkpoint, ``--max-map-distance`` scores the
    poses whose ground truth lies that close to a mapped position, and the console and eval-bag report how far the
    drive is from the map."""
    pytest.importorskip("gtsam")
    import shutil

    from mfapr_ros.core.checkpoint import checkpoint_paths
    from mfapr_ros.core.errors import MfaprError
    from mfapr_ros.core.odometry import OdometryDrift
    from mfapr_ros.evaluation import eval_bag, fusion_fit, load_report
    from mfapr_ros.inference.baselines import THUMB, RetrievalDatabase, database_path

    ck = tmp_path / "ck" / "tiny.json"
    ck.parent.mkdir()
    for p in checkpoint_paths(checkpoint):
        shutil.copy(p, ck.parent / p.name)
    drive, _, _ = _bag(tmp_path, "drive", frames=80, odometry=OdometryDrift())
    gt = evaluate_bag(str(ck), drive, batch=8, progress=False, device="cpu").t_gt
    n = len(gt)
    mapped = gt[:60] + np.array([0.0, 0.1, 0.0])  # mapping drove the first 60 places, 0.1 m to the side
    RetrievalDatabase(np.ones((60, len(RIG.cameras) * THUMB * THUMB)), mapped,
                      np.tile([1.0, 0, 0, 0], (60, 1))).save(database_path(ck))
    out = tmp_path / "fusion.yaml"
    assert fusion_fit.main(["--checkpoint", str(ck), "--bag", str(drive), "--out", str(out), "--device", "cpu",
                            "--no-progress", "--max-map-distance", "0.25"]) == 0
    printed = capsys.readouterr().out
    step = np.median(np.linalg.norm(np.diff(gt, axis=0), axis=1))
    scored = int(np.sum(np.min(np.linalg.norm(gt[:, None] - mapped[None], axis=2), axis=1) <= 0.25))
    assert 60 <= scored < n and step < 0.25
    assert f"scoring {scored} of {n} poses" in printed and f"fit-fusion on {drive}: {scored} poses" in printed
    assert "this drive        : median 0.100 m" in printed and "drive: median 0.100 m" in out.read_text()
    assert eval_bag.main(["--checkpoint", str(ck), "--bag", str(drive), "--out", str(tmp_path / "rep"),
                          "--params", str(out), "--device", "cpu", "--no-plots", "--no-progress"]) == 0
    doc = load_report(tmp_path / "rep")
    assert doc["map_distance"]["count"] == n and doc["map_distance"]["within_m"]["0.25"] == pytest.approx(scored / n)
    # eval-bag compares this bag's distance from the map with the fit drive's (from the file's header)
    shown = capsys.readouterr().out
    here = doc["map_distance"]["translation_m"]["median"]
    assert f"fitted on a drive 0.100 m from the map (median); this bag is {here:.3f} m" in shown
    assert ("closer" in shown) == (0.100 / here > eval_bag.FIT_DRIVE_RATIO)
    far = tmp_path / "far.yaml"
    far.write_text(out.read_text().replace("# drive: median 0.100 m", "# drive: median 0.900 m"))
    assert eval_bag.main(["--checkpoint", str(ck), "--bag", str(drive), "--out", str(tmp_path / "rep2"),
                          "--params", str(far), "--device", "cpu", "--no-plots", "--no-progress"]) == 0
    assert "× closer: the network is likely more precise here" in capsys.readouterr().out
    assert eval_bag.fit_drive_comparison(str(tmp_path / "missing.yaml"), doc) is None
    assert eval_bag.fit_drive_comparison(str(far), {"map_distance": None}) is None
    with pytest.raises(MfaprError, match="poses are scored; at least 50"):
        fusion_fit.main(["--checkpoint", str(ck), "--bag", str(drive), "--out", str(out), "--device", "cpu",
                         "--no-progress", "--max-map-distance", "0.01"])


# ---------------------------------------------------------------- topic / transport resolution (--topics, --transport)
_RAW, _JPEG = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
_BOTH = {**{f"/cam{i}/image_raw": _RAW for i in range(4)}, **{f"/cam{i}/image_raw/compressed": _JPEG for i in range(4)}}


def _read(rig, topics=None, transports=None, bag_types=_BOTH):
    from mfapr_ros.evaluation.bag_inputs import resolve_bindings

    return [(b.topic, b.transport) for b in resolve_bindings(rig, bag_types, topics, transports)]


def test_transport_is_explicit_and_topics_are_read_as_written():
    from mfapr_ros.evaluation.bag_inputs import parse_transport_map

    jpeg_rig = ring_rig(4, transport="compressed")  # a checkpoint whose rig says compressed
    assert _read(jpeg_rig)[0] == ("/cam0/image_raw/compressed", "compressed")  # the rig's rule
    # --transport raw: every camera from its raw topic although the rig says compressed and both are recorded
    assert _read(jpeg_rig, transports=parse_transport_map("raw")) == [(f"/cam{i}/image_raw", "raw") for i in range(4)]
    assert _read(jpeg_rig, transports=parse_transport_map("cam1=raw"))[:2] == [
        ("/cam0/image_raw/compressed", "compressed"), ("/cam1/image_raw", "raw")]
    # --topics alone: exactly that topic, never the rig's transport appended; transport = the recorded type
    assert _read(jpeg_rig, parse_topic_map("cam0=/cam0/image_raw"))[0] == ("/cam0/image_raw", "raw")
    assert _read(ring_rig(4), parse_topic_map("cam2=/cam2/image_raw/compressed"))[2] == (
        "/cam2/image_raw/compressed", "compressed")
    # topic@transport: image_transport naming on a base topic, as the node's topics.<cam> + transport.<cam>
    assert _read(ring_rig(4), parse_topic_map("cam3=/cam3/image_raw@compressed"))[3] == (
        "/cam3/image_raw/compressed", "compressed")
    assert _read(jpeg_rig, parse_topic_map("cam0=/cam0/image_raw@raw"))[0] == ("/cam0/image_raw", "raw")


@pytest.mark.parametrize("topics,transports,exc,match", [
    (None, "h264", ConfigError, "'h264' is not a transport"),
    (None, "cam0=h264", ConfigError, "'h264' is not a transport"),
    (None, "camX=raw", ConfigError, r"camera\(s\) \['camX'\]"),
    (None, "cam0:raw,cam1=raw", ConfigError, "CAMERA=TRANSPORT"),
    ("cam0=/cam0/image_raw@h264", None, ConfigError, "TOPIC@TRANSPORT"),
    ("cam0=/cam0/image_raw@raw", "cam0=compressed", ConfigError, "give it once"),
    ("cam0=/cam0/image_raw/compressed@raw", None, ConfigError, "does not end in '/compressed'"),
    ("cam0=/cam1/image_raw", None, ConfigError, "distinct"),
])
def test_bad_topic_or_transport_is_named(topics, transports, exc, match):
    from mfapr_ros.evaluation.bag_inputs import parse_transport_map

    with pytest.raises(exc, match=match):
        _read(ring_rig(4), parse_topic_map(topics), parse_transport_map(transports))


def test_explicit_choice_never_falls_back():
    """The rig's rule falls back to the other transport when only that one is recorded; an explicit choice does
    not: it is an error naming the camera, the topic and what the bag has."""
    only_jpeg = {t: ty for t, ty in _BOTH.items() if ty == _JPEG}
    assert _read(ring_rig(4), bag_types=only_jpeg)[0] == ("/cam0/image_raw/compressed", "compressed")
    with pytest.raises(DataError, match=r"camera cam0 \(--transport cam0=raw\) reads /cam0/image_raw, which is "
                                        r"not recorded"):
        _read(ring_rig(4), transports={"cam0": "raw"}, bag_types=only_jpeg)
    with pytest.raises(DataError, match="recorded as sensor_msgs/msg/CompressedImage"):
        _read(ring_rig(4), parse_topic_map("cam0=/x@raw"), bag_types={**only_jpeg, "/x": _JPEG})


def test_cli_transport_raw_on_a_bag_with_both(tmp_path, checkpoint, capsys):
    """End to end: a bag with raw and compressed copies of every camera; the rig says raw, --transport compressed
    reads the JPEG topics (report meta names them); a bad --transport is one line, exit 2, before the model loads."""
    from mfapr_ros.cli import main

    topics = TOPICS + [t + "/compressed" for t in TOPICS]
    path = tmp_path / "both"
    write_synth_bag(path, SynthBagSpec(topics, frames=6, size=SIZE, compressed=[False] * 4 + [True] * 4))
    out = tmp_path / "rep"
    rc = main(["eval-bag", "--checkpoint", str(checkpoint), "--bag", str(path), "--transport", "compressed",
               "--batch", "4", "--out", str(out), "--device", "cpu", "--no-progress", "--no-plots"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["topics"] == {f"cam{i}": f"/cam{i}/image_raw/compressed" for i in range(4)}
    assert meta["transports"] == dict.fromkeys(meta["topics"], "compressed")
    capsys.readouterr()
    rc = main(["eval-bag", "--checkpoint", str(tmp_path / "absent.json"), "--bag", str(path), "--transport", "jpeg"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--transport 'jpeg' is not a transport" in err
