"""Training on your own rosbag2, end to end, the way README.md / docs/training.md tell a user to do it.

A synthetic 4-camera bag (``ring_rig(4)``, 32 px, sqlite3 or MCAP, raw or JPEG images, a PoseStamped GT topic) is
written with ``write_synth_bag``; the test writes a rig YAML naming the camera topics and a training config with
``data.format: rosbag``, runs ``mfapr train --config CFG --out DIR`` through the ``mfapr`` dispatcher, and checks
what a user relies on: the checkpoint pair loads with the runtime loaders, the loss went down, the dataset held
exactly the bundles / tuples the bag spec implies (computed here, independently of the reader), the checkpoint
carries the rig and its topics, and ``evaluate_bag`` (and ``mfapr evaluate --format rosbag``) run the produced
checkpoint on a bag (one estimate per bundle). Bad bag configs (a camera or GT topic the bag lacks, a split
without a bag) exit 2 with one line naming it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mfapr_ros.bag.synth import SynthBagSpec, trajectory, write_synth_bag
from mfapr_ros.core.rig import load_rig, ring_rig, write_rig

SIZE = 32
FRAMES = 40  # training bag, 10 Hz
VAL_FRAMES = 12
MISSING = {1: (1.0, 2.5)}  # cam1 silent 1.0–2.5 s in the training bag: no complete bundle there (the default sync)
STEPS = 2  # frames per tuple (relative loss on)
BATCH = 4
MAX_STEPS = 15
TRACK_GAP_S = 1.0  # the reader's default track split (docs/data.md)
RIG = ring_rig(4)
TOPICS = [c.topic for c in RIG.cameras]
GT_TOPIC = "/ground_truth/pose"


def kept_times(spec: SynthBagSpec) -> list[float]:
    """Nominal times (s) of the frames that form a bundle, from the spec alone: every frame outside a camera's
    missing window (all cameras required, jitter ≪ slop, GT covers the whole bag)."""
    times = [k / spec.hz for k in range(spec.frames)]
    return [t for t in times if not any(lo <= t < hi for lo, hi in spec.missing.values())]


def expected_tracks(spec: SynthBagSpec, gap_s: float = TRACK_GAP_S) -> list[int]:
    """Bundles per track: a time gap longer than ``gap_s`` between kept frames starts a new track."""
    kept = kept_times(spec)
    tracks = [1]
    for a, b in zip(kept, kept[1:], strict=False):
        if b - a > gap_s:
            tracks.append(1)
        else:
            tracks[-1] += 1
    return tracks


def make_dataset(root: Path, storage: str, compressed: bool | list[bool]) -> dict[str, object]:
    """``root/rig.yaml`` and ``root/bags/{train_bag,val_bag}`` (one bag per split, as the README lays them out)."""
    root.mkdir(parents=True, exist_ok=True)
    write_rig(RIG, root / "rig.yaml")
    train = SynthBagSpec(TOPICS, frames=FRAMES, size=SIZE, storage=storage, compressed=compressed, missing=MISSING,
                         gt_topic=GT_TOPIC, seed=0)
    val = SynthBagSpec(TOPICS, frames=VAL_FRAMES, size=SIZE, storage=storage, compressed=compressed,
                       gt_topic=GT_TOPIC, seed=1, t0_ns=train.t0_ns + 60_000_000_000)
    write_synth_bag(root / "bags" / "train_bag", train)
    write_synth_bag(root / "bags" / "val_bag", val)
    return {"root": root, "bags": root / "bags", "rig": root / "rig.yaml", "train": train, "val": val}


def write_config(path: Path, data: dict[str, object], **data_overrides: object) -> Path:
    """A user's training config for the bags (docs/training.md: data.format/root/rig/*_split/gt)."""
    import yaml

    doc = {
        "name": "mybot",
        "data": {"format": "rosbag", "root": str(data["bags"]), "rig": str(data["rig"]),
                 "train_split": "train_bag", "val_split": "val_bag", "gt": GT_TOPIC,
                 "steps": STEPS, "skip": 1, "photometric": False, **data_overrides},
        "preprocess": {"resize": SIZE, "crop": SIZE},
        "model": {"preset": "tiny"},
        "loss": {"relative_weight": 1.0},
        "optim": {"lr": 3.0e-3},
        "schedule": {"name": "constant"},
        "train": {"epochs": 10, "max_steps": MAX_STEPS, "batch_size": BATCH, "device": "cpu", "seed": 0,
                  "log_every": 1, "progress": False, "tensorboard": False},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def train_losses(run: Path) -> list[float]:
    rows = [r.split(",") for r in (run / "scalars.csv").read_text().splitlines()[1:]]
    return [float(v) for step, _epoch, name, v in rows if name == "train/loss"]


@pytest.mark.parametrize("storage,compressed", [("mcap", False), ("sqlite3", [True, False, True, False])],
                         ids=["mcap-raw", "sqlite3-jpeg"])
def test_train_on_bag_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: str,
                                 compressed: bool | list[bool]) -> None:
    from mfapr_training.datasets import read_rosbag

    from mfapr_ros.cli import main
    from mfapr_ros.core.checkpoint import load_checkpoint
    from mfapr_ros.evaluation.eval_bag import evaluate_bag
    from mfapr_ros.inference.localizer import Localizer
    from mfapr_ros.models import load_model

    data = make_dataset(tmp_path / "data", storage, compressed)
    cfg = write_config(tmp_path / "mybot.yaml", data)
    run = tmp_path / "runs" / "mybot"
    t0 = time.perf_counter()
    rc = main(["train", "--config", str(cfg), "--out", str(run), "-q"])
    train_s = time.perf_counter() - t0
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert f"mybot: {MAX_STEPS} steps" in out.out

    # --- the dataset: bundles and tuples exactly as the bag spec implies
    tracks = expected_tracks(data["train"])  # type: ignore[arg-type]
    assert tracks == [10, 15]  # frames 10..24 lack cam1; the 1.6 s hole splits the track
    n_bundles = sum(tracks)
    n_tuples = sum(n - (STEPS - 1) for n in tracks)
    missing_frames = FRAMES - n_bundles
    ck = load_checkpoint(run / "last")
    ds = ck.meta["provenance"]["dataset"]
    assert (ds["format"], ds["train_split"], ds["val_split"]) == ("rosbag", "train_bag", "val_bag")
    assert ds["train_samples"] == n_tuples == 23
    assert ds["val_samples"] == VAL_FRAMES
    bags, user_rig = Path(data["bags"]), load_rig(data["rig"])  # type: ignore[arg-type]
    train_set = read_rosbag(bags / "train_bag", user_rig, gt={"topic": GT_TOPIC}, track="train_bag")
    assert len(train_set) == n_bundles == 25
    assert [sum(r.track == t for r in train_set.records) for t in train_set.tracks()] == tracks
    # the other three cameras' images of the silent stretch are counted, never silently lost
    # (queue 10 like the node: 15 silent frames overflow the other cameras' queues, counted as overflow)
    assert set(ds["drops"]) <= {"sync_dropped_unmatched", "sync_dropped_queue_overflow"}
    assert sum(ds["drops"].values()) == missing_frames * (RIG.num_cameras - 1)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == MAX_STEPS and summary["epoch"] == MAX_STEPS // (n_tuples // BATCH)

    # --- the checkpoint: safetensors + JSON pairs that the runtime loaders read
    for name in ("best", "last"):
        assert (run / f"{name}.json").is_file() and (run / f"{name}.safetensors").is_file()
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == MAX_STEPS and (run / "checkpoints" / f"{latest['model']}.safetensors").is_file()
    model, best = load_model(run / "best", device="cpu")
    assert model.num_cameras == 4 and model.config["image_size"] == SIZE
    # rig and topics in the checkpoint are the rig YAML the user wrote (names, order, topics, extrinsics)
    for c in (best, ck):
        assert (c.rig.name, c.rig.base_frame, c.rig.camera_names) == (user_rig.name, "base_link", RIG.camera_names)
        assert [(cam.topic, cam.transport) for cam in c.rig.cameras] == [(t, "raw") for t in TOPICS]
        t_ck, q_ck = c.rig.extrinsics()
        t_user, q_user = user_rig.extrinsics()
        np.testing.assert_allclose(t_ck, t_user, atol=1e-12)  # quaternions re-normalise on load: last-ulp only
        np.testing.assert_allclose(q_ck, q_user, atol=1e-12)
        assert c.preprocess["crop"] == SIZE
        assert c.meta["provenance"]["training_config"]["data"]["format"] == "rosbag"
    # pose normalisation = statistics of the GT at the kept bundles (analytic trajectory; ±3 ms jitter ≈ 7 mm)
    train_spec: SynthBagSpec = data["train"]  # type: ignore[assignment]
    t_kept, _ = trajectory(np.array(kept_times(train_spec)), train_spec.radius)
    norm = ck.meta["pose_normalization"]
    np.testing.assert_allclose(norm["t_mean"], t_kept.mean(0), atol=0.01)
    assert norm["t_scale"] == pytest.approx(np.sqrt(((t_kept - t_kept.mean(0)) ** 2).sum(1).mean()), abs=0.01)

    # --- training did something: the logged loss went down, every step was logged, weights are finite
    losses = train_losses(run)
    assert len(losses) == MAX_STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    assert all(np.isfinite(v.numpy()).all() for v in ck.state_dict.values())

    # --- eval-bag on the produced checkpoint: one estimate per bundle, the same bundles the training reader forms
    val_bag = bags / "val_bag"
    loc = Localizer(str(run / "best.json"), device="cpu")
    res = evaluate_bag(run / "best.json", val_bag, gt_topic=GT_TOPIC, batch=8, device="cpu", progress=False,
                       localizer=loc)
    assert res.bundles == VAL_FRAMES and len(res.t_est) == len(res.q_est) == len(res.t_gt) == VAL_FRAMES
    assert np.isfinite(res.t_est).all() and np.allclose(np.linalg.norm(res.q_est, axis=1), 1.0, atol=1e-5)
    reader_stamps = [r.stamp_ns for r in read_rosbag(val_bag, user_rig, gt={"topic": GT_TOPIC}).records]
    assert res.stamps_ns.tolist() == reader_stamps
    comp = [compressed] * 4 if isinstance(compressed, bool) else compressed
    assert res.topics == [t + "/compressed" if c else t for t, c in zip(TOPICS, comp, strict=True)]
    # ... and docs/training.md's second command, `mfapr evaluate --format rosbag --split val_bag`
    rc = main(["evaluate", "--checkpoint", str(run / "best"), "--data", str(bags), "--format", "rosbag",
               "--split", "val_bag", "--gt-topic", GT_TOPIC, "--out", str(tmp_path / "eval"), "--device", "cpu",
               "--no-plots"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["metrics"]["count"] == VAL_FRAMES and report["meta"]["format"] == "rosbag"
    print(f"\n[{storage}] train {train_s:.1f} s, {n_bundles} bundles, {n_tuples} tuples, loss "
          f"{losses[0]:.3f} → {losses[-1]:.3f}, eval-bag {res.bundles} bundles")


def test_max_gap_ms_sets_the_track_split(tmp_path: Path) -> None:
    """``data.max_gap_ms`` (config.py: "split tracks at time gaps (rosbag)") reaches the reader: with 2 s the
    1.6 s camera hole no longer splits the training bag, so one more tuple spans it."""
    from mfapr_training.config import load_config
    from mfapr_training.train import build_datasets

    from mfapr_ros.core.errors import ConfigError

    data = make_dataset(tmp_path / "data", "mcap", False)
    cfg_path = write_config(tmp_path / "cfg.yaml", data)
    counts = {}
    for gap in (None, 2000.0, 500.0):
        cfg = load_config(cfg_path, [f"data.max_gap_ms={gap if gap is not None else 'null'}"])
        _, train_ds, _, train = build_datasets(cfg)
        counts[gap] = (len(train.tracks()), len(train_ds))
    n = sum(expected_tracks(data["train"]))  # type: ignore[arg-type]
    assert counts[None] == (2, n - 2)  # default: split at gaps > 1 s
    assert counts[2000.0] == (1, n - 1)
    assert counts[500.0] == (2, n - 2)
    with pytest.raises(ConfigError, match=r"data\.max_gap_ms"):
        load_config(cfg_path, ["data.max_gap_ms=0"])


@pytest.mark.parametrize("case", ["camera_topic", "gt_topic", "split"])
def test_bad_bag_config_fails_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  case: str) -> None:
    """The README's command (``--config demo`` + ``--set data.format=rosbag ...``) with a wrong camera topic in the
    rig YAML, a GT topic the bag lacks, or a split with no bag: exit 2, one line naming the culprit, nothing
    written."""
    from mfapr_ros.cli import main

    data = make_dataset(tmp_path / "data", "sqlite3", False)
    rig_path = Path(data["rig"])  # type: ignore[arg-type]
    gt, split, culprit = GT_TOPIC, "train_bag", ""
    if case == "camera_topic":
        culprit = "/cam2/no_such_image"
        bad = RIG.with_topics({"cam2": culprit})
        rig_path = tmp_path / "bad_rig.yaml"
        write_rig(bad, rig_path)
    elif case == "gt_topic":
        gt = culprit = "/mocap/pose"
    else:
        split = culprit = "no_such_bag"
    run = tmp_path / "runs" / "bad"
    rc = main(["train", "--config", "demo", "--out", str(run), "-q",
               "--set", "data.format=rosbag", "--set", f"data.root={data['bags']}", "--set", f"data.rig={rig_path}",
               "--set", f"data.train_split={split}", "--set", "data.val_split=val_bag",
               "--set", f"data.gt={gt}", "--set", f"preprocess.resize={SIZE}",
               "--set", f"preprocess.crop={SIZE}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("mfapr train: error:")]
    assert len(lines) == 1 and culprit in lines[0], err
    if case == "camera_topic":
        assert "cam2" in lines[0] and "/cam2/image_raw" in lines[0]  # what the bag does have
    assert not (run / "last.json").exists() and not (run / "checkpoints").exists()


def test_compressed_fallback_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A rig saying ``transport: raw`` on a bag that has only ``…/compressed`` for a camera: training uses the
    compressed topic, and says that the checkpoint keeps ``raw`` (the robot would subscribe to a silent topic)."""
    import logging

    from mfapr_ros.bag.bundles import bind_bag_topics
    from mfapr_ros.bag.reader import BagReader

    bag = tmp_path / "bag"
    spec = SynthBagSpec(TOPICS, frames=3, size=SIZE, storage="mcap", compressed=[False, True, False, False])
    write_synth_bag(bag, spec)
    with BagReader(bag) as reader, caplog.at_level(logging.WARNING):
        topics = [b.topic for b in bind_bag_topics(RIG, reader.topic_types())]
    assert topics == [TOPICS[0], TOPICS[1] + "/compressed", TOPICS[2], TOPICS[3]]
    warned = [r.getMessage() for r in caplog.records if "keeps transport" in r.getMessage()]
    assert len(warned) == 1 and "cam1" in warned[0] and "transport.cam1:=compressed" in warned[0]
