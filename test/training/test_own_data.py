"""Bring your own data (issue 23, docs/own_data.md), followed with the documented commands only.

Three recordings shaped like the public samples go from the raw folder to a report through ``mfapr split`` →
``mfapr train --config own_data --set …`` → ``mfapr evaluate`` / ``mfapr eval-bag``, no file edited in between:

- naver/kapture ``samples/t265/ros_kapture``: ``sensors/`` at the root (no split folders), rig ``t265`` of two
  grayscale OPENCV_FISHEYE cameras in ``rigs.txt``, ns epoch stamps, the rig's own trajectory;
- 7-Scenes ``stairs`` (``samples/7scenes/kapture/stairs/mapping``): one RGB camera ``kinect_rgb`` beside two depth
  sensors, no ``rigs.txt``, frame-index stamps (a unit must be given), poses under the device ``kinect``;
- one rosbag2 recording: two JPEG camera topics and the ground truth on /tf (map → odom static, odom → base_link).

Then each message/behaviour of the issue: the split plan, the split-not-found error (splits on disk,
``--set data.val_split=null``), ``data.train_split=`` (the root is the split), stamp-unit hints, missing image files,
ROS 1 bags, the rotation verdicts, the no-validation warning and the retrieval file names, the camera model in the
checkpoint's rig, the single-camera identity rig and the topic placeholders / ``data.topics``.
Images are 64 px, training runs 2 steps on CPU: the tests check the plumbing and the messages, not accuracy.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mfapr_ros.bag.synth import render, trajectory
from mfapr_ros.cli import main
from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.geometry import pose_inverse

TRAIN = ["--set", "train.max_steps=2", "--set", "train.batch_size=8", "--set", "train.device=cpu",
         "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "model.num_anchors=16"]
T0_NS = 1553180224360915899  # samples/t265/ros_kapture's first stamp
FISHEYE = "OPENCV_FISHEYE, {w}, {h}, 21.5, 21.6, 32.1, 29.8, -0.0074, 0.0442, -0.0418, 0.0077"


def gray_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).convert("L").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rgb_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _kapture_pose(t: np.ndarray, q: np.ndarray) -> str:
    """T_world_device (t, q wxyz) → kapture's T_device_world row fields."""
    ti, qi = pose_inverse(t, q)
    return ", ".join(f"{v:.9f}" for v in [*qi, *ti])


def t265_ros_kapture(root: Path, frames: int = 60, hz: float = 10.0, size: int = 64) -> Path:
    """samples/t265/ros_kapture's shape: sensors/ at the root (no split folders), rig ``t265`` of two grayscale
    OPENCV_FISHEYE cameras ±3.2 cm apart, ns epoch stamps, the rig's trajectory at every frame."""
    s = root / "sensors"
    (s / "records_data").mkdir(parents=True)
    (s / "sensors.txt").write_text("# kapture format: 1.1\n# sensor_id, name, sensor_type, [sensor_params]+\n"
                                   + "".join(f"cam00{i}, {side} fisheye, camera, {FISHEYE.format(w=size, h=size)}\n"
                                             for i, side in ((1, "left"), (2, "right"))))
    (s / "rigs.txt").write_text("# kapture format: 1.1\n# rig_id, sensor_id, qw, qx, qy, qz, tx, ty, tz\n"
                                "t265, cam001,  1.0, -0.0, -0.0, -0.0, 0.032,  0.0,  0.0\n"
                                "t265, cam002,  1.0, -0.0, -0.0, -0.0, -0.032,  0.0,  0.0\n")
    recs, traj = [], []
    period = int(round(1e9 / hz))
    for k in range(frames):
        st = T0_NS + k * period
        t, q = trajectory(np.array([k / hz]), 3.0)
        yaw = float(2 * np.pi * (k / hz) / 8.0)
        traj.append(f"{st}, t265, {_kapture_pose(t[0], q[0])}")
        for i, cam in enumerate(("cam001", "cam002")):
            rel = f"{cam}/frame_{k + 1:09d}.jpg"
            (s / "records_data" / cam).mkdir(exist_ok=True)
            (s / "records_data" / rel).write_bytes(gray_jpeg(render(t[0], yaw, i, size)))
            recs.append(f"{st}, {cam}, {rel}")
    (s / "records_camera.txt").write_text("# kapture format: 1.1\n# timestamp, device_id, image_path\n"
                                          + "\n".join(recs) + "\n")
    (s / "trajectories.txt").write_text("# kapture format: 1.1\n# timestamp, device_id, qw, qx, qy, qz, tx, ty, tz\n"
                                        + "\n".join(traj) + "\n")
    return root


def stairs_7scenes(root: Path, frames: int = 60, size: int = 64) -> Path:
    """7-Scenes ``stairs`` (naver/kapture samples/7scenes/kapture/stairs/mapping) shape: one RGB camera
    ``kinect_rgb`` (SIMPLE_PINHOLE) beside two depth sensors, no rigs.txt, frame-index stamps (a 30 Hz Kinect), the
    poses stored under the device ``kinect`` (not a sensor)."""
    s = root / "sensors"
    (s / "records_data").mkdir(parents=True)
    (s / "sensors.txt").write_text(
        "# kapture format: 1.1\n# sensor_id, name, sensor_type, [sensor_params]+\n"
        f"kinect_rgb, kinect_rgb, camera, SIMPLE_PINHOLE, {size}, {size}, 52.5, {size / 2}, {size / 2}\n"
        f"kinect_depth, kinect_depth, depth, SIMPLE_PINHOLE, {size}, {size}, 58.5, {size / 2}, {size / 2}\n"
        f"kinect_depth_reg, kinect_depth_reg, depth, SIMPLE_PINHOLE, {size}, {size}, 52.5, {size / 2}, {size / 2}\n")
    recs, traj = [], []
    for k in range(frames):
        t, q = trajectory(np.array([k / 30.0 * 4]), 1.5)  # walk 4x faster than the frames: a short sample
        rel = f"seq-{1 + k // 30:02d}/frame-{k % 30:06d}.color.jpg"
        (s / "records_data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (s / "records_data" / rel).write_bytes(rgb_jpeg(render(t[0], float(2 * np.pi * (k / 30 * 4) / 8), 0, size)))
        recs.append(f"{k}, kinect_rgb, {rel}")
        traj.append(f"{k:8d}, kinect, {_kapture_pose(t[0], q[0])}")
    (s / "records_camera.txt").write_text("# kapture format: 1.1\n# timestamp, device_id, image_path\n"
                                          + "\n".join(recs) + "\n")
    (s / "trajectories.txt").write_text("# kapture format: 1.1\n# timestamp, device_id, qw, qx, qy, qz, tx, ty, tz\n"
                                        + "\n".join(traj) + "\n")
    return root


def one_recording_bag(root: Path, frames: int = 60, size: int = 64) -> tuple[Path, Path]:
    """A single recording as a robot makes one: a 2-camera rig's JPEG topics and the ground truth on /tf
    (map → odom static, odom → base_link moving: a SLAM/mocap pose published as TF), plus an unrelated topic.
    Returns (bag, rig YAML naming the topics)."""
    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
    from mfapr_ros.core.rig import ring_rig, write_rig

    rig = ring_rig(2, topic_fmt="/robot/{name}/image_raw", transport="compressed")
    root.mkdir(parents=True, exist_ok=True)
    write_rig(rig, root / "rig.yaml")
    spec = SynthBagSpec([c.topic for c in rig.cameras], frames=frames, size=size, compressed=True, gt="tf",
                        gt_hz=30.0)
    write_synth_bag(root / "run1", spec)
    return root / "run1", root / "rig.yaml"


# --------------------------------------------------------------------------------------------- helpers
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``mfapr ARGV`` through the dispatcher, as a user types it: (exit code, stdout, stderr)."""
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def split_stamps(folder: Path) -> list[int]:
    return [int(ln.split(",")[0]) for ln in (folder / "sensors" / "records_camera.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def check_report(report: Path) -> dict:
    """A complete report whose Markdown judges position AND rotation against both baselines."""
    doc = json.loads((report / "report.json").read_text())
    md = (report / "report.md").read_text()
    for name in ("the mean-pose baseline", "image retrieval"):
        assert "on median position" in md and f"{name} on median rotation" in md, md
    assert doc["baseline"] is not None and doc["retrieval"] is not None
    return doc


# --------------------------------------------------------------------------------------------- three paths
def test_t265_ros_kapture_from_raw_folder_to_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    raw = t265_ros_kapture(tmp_path / "ros_kapture", frames=40)
    data, runs = tmp_path / "data", tmp_path / "run"
    rc, out, err = run(capsys, "split", str(raw), "--out", str(data))
    assert rc == 0, err
    assert f"--set data.root={data} --set data.train_split=mapping --set data.val_split=validation" in out
    # contiguous blocks: every query stamp lies in a query block, none is a training stamp; nothing lost
    plan = json.loads((data / "split.json").read_text())["plan"]["blocks_ns"]
    train_s, val_s, test_s = (set(split_stamps(data / n)) for n in ("mapping", "validation", "query"))
    assert not (train_s & test_s) and not (train_s & val_s) and not (val_s & test_s)
    assert len(train_s) + len(val_s) + len(test_s) == 40
    assert all(any(a <= s < b for a, b in plan["query"]) for s in test_s)
    rc, out, err = run(capsys, "train", "--config", "own_data", "--set", f"data.root={data}", *TRAIN,
                       "--out", str(runs))
    assert rc == 0, err
    assert "PLACEHOLDERS" in caplog.text and "--set data.topics=" in caplog.text  # kapture has no topics
    assert "OPENCV_FISHEYE" in caplog.text and "ignores distortion" in caplog.text
    # the recipe's yaw augmentation (auto) stays off for a fisheye rig, and says why
    assert "yaw augmentation (data.yaw_aug_deg: auto): off:" in caplog.text and "lens distortion" in caplog.text
    assert "shift augmentation (data.shift_aug: auto): off:" in caplog.text  # ... and so does the shift
    ck = json.loads((runs / "best.json").read_text())
    cams = ck["rig"]["cameras"]
    assert [c["intrinsics"]["model"] for c in cams] == ["OPENCV_FISHEYE"] * 2  # the model it was given
    assert cams[0]["intrinsics"]["distortion"] == [-0.0074, 0.0442, -0.0418, 0.0077]
    assert cams[0]["topic"] == "/kapture/cam001/image_raw" and cams[0]["transport"] == "compressed"
    rc, out, err = run(capsys, "evaluate", "--checkpoint", str(runs / "best"), "--data", str(data),
                       "--out", str(tmp_path / "report"), "--device", "cpu", "--no-plots")
    assert rc == 0, err
    doc = check_report(tmp_path / "report")
    assert doc["metrics"]["count"] == len(test_s)  # one bundle per shared stamp
    assert "on median rotation" in out  # the console verdicts too


def test_7scenes_stairs_from_raw_folder_to_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    raw = stairs_7scenes(tmp_path / "stairs", frames=40)
    data, runs = tmp_path / "data", tmp_path / "run"
    rc, _, err = run(capsys, "split", str(raw), "--out", str(data))  # frame indices: the unit must be given
    assert rc == 2 and "frame indices" in err and "--stamp-unit frame@<N>hz" in err and "frame@30hz" in err
    rc, out, err = run(capsys, "split", str(raw), "--out", str(data), "--stamp-unit", "frame@30hz")
    assert rc == 0, err
    assert "--set data.stamp_unit=frame@30hz" in out
    rc, _, err = run(capsys, "train", "--config", "own_data", "--set", f"data.root={data}", *TRAIN,
                     "--out", str(runs))
    assert rc == 2 and "--set data.stamp_unit=frame@<N>hz" in err and err.count("\n") == 1
    rc, _, err = run(capsys, "train", "--config", "own_data", "--set", f"data.root={data}",
                     "--set", "data.stamp_unit=frame@30hz", *TRAIN, "--out", str(runs))
    assert rc == 0, err
    assert "single camera 'kinect_rgb' without a rigs.txt entry: identity rig" in caplog.text
    assert "one device 'kinect'" in caplog.text  # the poses stored under the rig's id
    assert "yaw augmentation (data.yaw_aug_deg: auto): off: turned by 5° the rig's cameras see" in caplog.text
    assert "shift augmentation (data.shift_aug: auto): off: moved by 0.3 m the rig's cameras see" in caplog.text
    ck = json.loads((runs / "best.json").read_text())
    (cam,) = ck["rig"]["cameras"]
    assert cam["name"] == "kinect_rgb" and cam["extrinsics"] == {"xyz": [0.0, 0.0, 0.0],
                                                                 "quat_wxyz": [1.0, 0.0, 0.0, 0.0]}
    assert cam["intrinsics"]["model"] == "SIMPLE_PINHOLE" and cam["intrinsics"]["fx"] == 52.5
    # evaluate reads the stamps as the model was trained (the checkpoint's data.stamp_unit)
    rc, _, err = run(capsys, "evaluate", "--checkpoint", str(runs / "best"), "--data", str(data),
                     "--out", str(tmp_path / "report"), "--device", "cpu", "--no-plots")
    assert rc == 0, err
    assert check_report(tmp_path / "report")["metrics"]["count"] == len(split_stamps(data / "query"))


def test_one_bag_with_tf_ground_truth_from_recording_to_report(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mfapr_ros.bag.reader import BagReader

    bag, rig = one_recording_bag(tmp_path / "rec", frames=40)
    data, runs = tmp_path / "bags", tmp_path / "run"
    rc, out, err = run(capsys, "split", str(bag), "--out", str(data))
    assert rc == 0, err
    counts = {}
    for name in ("mapping", "validation", "query"):
        with BagReader(data / name) as b:
            topics = b.info().topics
            counts[name] = sum(t.count for k, t in topics.items() if "image_raw" in k)
            assert "/tf" in topics and "/tf_static" in topics  # the GT travels with each split
    assert sum(counts.values()) == 80 and counts["query"] > 0 and counts["validation"] > 0
    rc, out, err = run(capsys, "train", "--config", "own_data", "--set", "data.format=rosbag",
                       "--set", f"data.root={data}", "--set", f"data.rig={rig}", "--set", "data.gt=map:base_link",
                       *TRAIN, "--out", str(runs))
    assert rc == 0, err
    ck = json.loads((runs / "best.json").read_text())
    assert [c["topic"] for c in ck["rig"]["cameras"]] == ["/robot/cam0/image_raw", "/robot/cam1/image_raw"]
    rc, out, err = run(capsys, "eval-bag", "--checkpoint", str(runs / "best"), "--bag", str(data / "query"),
                       "--gt-tf", "map:base_link", "--out", str(tmp_path / "report"), "--device", "cpu",
                       "--no-plots", "--no-progress")
    assert rc == 0, err
    assert check_report(tmp_path / "report")["metrics"]["count"] == counts["query"] // 2
    # `mfapr evaluate` on the split folder: rosbag detected from DATA/query, GT (data.gt) from the checkpoint
    rc, out, err = run(capsys, "evaluate", "--checkpoint", str(runs / "best"), "--data", str(data),
                       "--out", str(tmp_path / "report2"), "--device", "cpu", "--no-plots")
    assert rc == 0, err
    doc = check_report(tmp_path / "report2")
    assert doc["meta"]["format"] == "rosbag" and doc["metrics"]["count"] == counts["query"] // 2


# --------------------------------------------------------------------------------------------- split
def test_split_plans_are_contiguous_disjoint_and_cover_the_recording() -> None:
    from mfapr_training.split import TEST, TRAIN, VAL, parse_ranges, plan_split

    s = 1_000_000_000
    p = plan_split(0, 10 * s - 1, "time", val=0.2, test=0.2, blocks=10)
    # 10 blocks T T Q V T T T Q V T: held-out blocks spread over the recording, neighbours merged
    assert {n: len(b) for n, b in p.blocks.items()} == {TRAIN: 3, TEST: 2, VAL: 2}
    assert sum(b - a for bl in p.blocks.values() for a, b in bl) == 10 * s  # covers, no overlap
    assert [p.assign(k * s) for k in range(10)].count(TEST) == 2
    f = plan_split(0, 10 * s - 1, "fraction", val=0.1, test=0.3)
    assert f.blocks == {TRAIN: [(0, 6 * s)], VAL: [(6 * s, 7 * s)], TEST: [(7 * s, 10 * s)]}
    r = plan_split(0, 100 * s, "ranges", ranges=parse_ranges(["mapping=0:60", "query=70:90,95:100"]), gap_s=0)
    assert r.blocks == {TRAIN: [(0, 60 * s)], TEST: [(70 * s, 90 * s), (95 * s, 100 * s)]}
    assert r.assign(65 * s) is None  # outside every range: dropped (and counted by the writers)
    g = plan_split(0, 10 * s - 1, "fraction", val=0.0, test=0.5, gap_s=1.0)
    assert g.blocks == {TRAIN: [(0, int(4.5 * s))], TEST: [(int(5.5 * s), 10 * s)]}  # 1 s between the splits
    assert plan_split(0, s, "fraction", val=0.0, test=0.2).blocks.keys() == {TRAIN, TEST}
    with pytest.raises(ConfigError, match="overlaps"):
        parse_ranges(["mapping=0:60", "query=50:90"])
    with pytest.raises(ConfigError, match="at least one block must stay for training"):
        plan_split(0, s, "time", val=0.3, test=0.3, blocks=2)


def test_split_with_a_gap_drops_edge_frames_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = t265_ros_kapture(tmp_path / "raw", frames=20, size=16)
    rc, out, _ = run(capsys, "split", str(raw), "--out", str(tmp_path / "d"), "--by", "fraction", "--val", "0",
                     "--test", "0.5", "--gap-s", "0.35")
    assert rc == 0 and "images outside every split" in out
    tr, te = split_stamps(tmp_path / "d" / "mapping"), split_stamps(tmp_path / "d" / "query")
    assert min(te) - max(tr) >= 350_000_000  # no test frame within 0.35 s of a training frame
    assert not (tmp_path / "d" / "validation").exists()
    assert "--set data.val_split=null" in out


# --------------------------------------------------------------------------------------------- errors
def test_missing_validation_split_lists_splits_on_disk_and_suggests_val_split_null(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = t265_ros_kapture(tmp_path / "raw", frames=20, size=16)
    run(capsys, "split", str(raw), "--out", str(tmp_path / "d"), "--by", "fraction", "--val", "0", "--test", "0.3")
    rc, _, err = run(capsys, "train", "--config", "own_data", "--set", f"data.root={tmp_path / 'd'}", *TRAIN,
                     "--out", str(tmp_path / "run"))
    assert rc == 2 and err.count("\n") == 1
    assert "no kapture split 'validation'" in err and "kapture splits found there: mapping, query" in err
    assert "--set data.val_split=null" in err


def test_root_is_the_split_trains_without_validation_and_says_what_is_off(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """``data.train_split=`` (empty: data.root is the split) and ``data.val_split=null``: one loud warning lists
    the checks that are off; the log names only the retrieval database actually written (last, not best)."""
    caplog.set_level(logging.INFO)
    raw = t265_ros_kapture(tmp_path / "raw", frames=16, size=16)
    run_dir = tmp_path / "run"
    rc, out, err = run(capsys, "train", "--config", "own_data", "--set", f"data.root={raw}",
                       "--set", "data.train_split=", "--set", "data.val_split=null", *TRAIN, "--out", str(run_dir))
    assert rc == 0, err
    warn = [r.getMessage() for r in caplog.records if "NO VALIDATION SPLIT" in r.getMessage()]
    assert len(warn) == 1 and all(w in warn[0] for w in ("health check", "best-checkpoint selection",
                                                        "covariance calibration"))
    retrieval = [r.getMessage() for r in caplog.records if "retrieval baseline database" in r.getMessage()]
    assert "last.retrieval.safetensors" in retrieval[0] and "best.retrieval" not in retrieval[0]
    assert (run_dir / "last.retrieval.safetensors").is_file() and not (run_dir / "best.json").exists()
    assert "no validation split" in out


@pytest.mark.parametrize(("stamps", "setting"), [([1600000000, 1600000001], "--set data.stamp_unit=s"),
                                                 ([1600000000000, 1600000000100], "--set data.stamp_unit=ms"),
                                                 ([0, 1, 2], "--set data.stamp_unit=frame@<N>hz")])
def test_stamp_unit_errors_name_the_exact_setting(stamps: list[int], setting: str) -> None:
    from mfapr_training.datasets.kapture_text import detect_stamp_unit, stamp_unit_factor

    with pytest.raises(DataError) as e:
        detect_stamp_unit({"c": stamps}, "x")
    assert setting in str(e.value) and "read_kapture" not in str(e.value)
    assert stamp_unit_factor("s") == 10**9 and stamp_unit_factor("frame@30hz") == 33_333_333


def test_stamp_unit_and_gt_settings_are_validated() -> None:
    from mfapr_training.config import ExperimentConfig, load_config, split_gt

    cfg = load_config("own_data", ["data.stamp_unit=us", "data.gt=map:base_link", "data.transport=raw",
                                   "data.topics={cam0: /front/image_raw}"])
    assert (cfg.data.stamp_unit, cfg.data.gt, cfg.data.topics) == ("us", "map:base_link",
                                                                   {"cam0": "/front/image_raw"})
    assert split_gt(cfg.data.gt) == (None, "map:base_link") and split_gt("/gt") == ("/gt", None)
    # the old pair (one setting under two names) is still read, as data.gt; both given is an error
    assert load_config("own_data", ["data.gt_tf=map:base_link"]).data.gt == "map:base_link"
    assert load_config("own_data", ["data.gt_topic=/gt/pose"]).data.gt == "/gt/pose"
    with pytest.raises(ConfigError, match="same setting"):
        ExperimentConfig.from_dict({"data": {"gt_topic": "/a", "gt_tf": "map:base_link"}})
    for bad, word in (("data.stamp_unit=furlongs", "frame@<N>hz"), ("data.gt=map", "PARENT:CHILD"),
                      ("data.transport=udp", "raw or compressed"), ("data.topics={cam0: front}", "absolute")):
        with pytest.raises(ConfigError, match=word):
            load_config("own_data", [bad])


def test_missing_image_files_say_missing(tmp_path: Path) -> None:
    from mfapr_training.datasets import read_kapture

    raw = t265_ros_kapture(tmp_path / "raw", frames=4, size=16)
    for f in (raw / "sensors" / "records_data").rglob("*.jpg"):
        f.unlink()
    with pytest.raises(DataError) as e:
        read_kapture(raw)
    assert "all 8 image files listed for cameras ['cam001', 'cam002'] are missing" in str(e.value)
    assert "records_data" in str(e.value)


def test_ros1_bag_names_the_converter(tmp_path: Path) -> None:
    from mfapr_ros.bag.reader import BagReader

    bag = tmp_path / "t265.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n" + b"\0" * 64)
    for path in (bag, tmp_path):  # the file, or the folder holding it
        with pytest.raises(DataError) as e:
            BagReader(path)
        assert "ROS 1 bag" in str(e.value) and f"rosbags-convert --src {bag} --dst {tmp_path / 't265_ros2'}" \
            in str(e.value)


def test_bag_without_ground_truth_names_the_training_settings(tmp_path: Path) -> None:
    from mfapr_training.data import load_split

    from mfapr_ros.core.rig import load_rig

    bag, rig = one_recording_bag(tmp_path / "rec", frames=6)
    with pytest.raises(DataError) as e:  # GT is on /tf: the usual GT topics are not there
        load_split("rosbag", str(bag), "", rig=load_rig(rig))
    assert "--set data.gt=TOPIC or --set data.gt=PARENT:CHILD" in str(e.value)
    assert len(load_split("rosbag", str(bag), "", rig=load_rig(rig), gt_tf="map:base_link")) == 6


# --------------------------------------------------------------------------------------------- reports
def _metrics(t: float, r: float) -> dict:
    return {"translation_m": {"median": t}, "rotation_deg": {"median": r}}


def test_report_verdicts_judge_rotation_as_well_as_position() -> None:
    from mfapr_ros.evaluation.report import verdict, verdict_lines

    text = verdict(_metrics(0.5, 33.85), _metrics(2.0, 0.14), "the mean-pose baseline")
    assert "beats the mean-pose baseline on median position" in text
    assert "does not beat the mean-pose baseline on median rotation (33.85° vs 0.14°" in text
    assert "Orientation is not learned" in text
    both = verdict(_metrics(0.5, 1.0), _metrics(2.0, 10.0), "image retrieval")
    assert "not learned" not in both and both.count("beats image retrieval") == 2
    assert "Position is not learned" in verdict(_metrics(3.0, 1.0), _metrics(2.0, 10.0), "x")
    assert "does not beat x on median rotation" in verdict(_metrics(1.0, 90.0), _metrics(2.0, 90.0), "x")  # a tie
    lines = verdict_lines(_metrics(1.0, 1.0), _metrics(2.0, 2.0), _metrics(0.5, 0.5))
    assert len(lines) == 2 and "mean-pose" in lines[0] and "image retrieval" in lines[1]


# --------------------------------------------------------------------------------------------- rigs, topics
def test_camera_model_round_trips_through_the_rig_document() -> None:
    from mfapr_ros.core.rig import Camera, Intrinsics, Rig

    k = Intrinsics(284.5, 285.5, 424.4, 393.7, "OPENCV_FISHEYE", (0.1, -0.2, 0.03, 0.0))
    rig = Rig("t265", (Camera("cam001", "/t265/fisheye1/image_raw", intrinsics=k),
                       Camera("cam002", "/t265/fisheye2/image_raw", intrinsics=Intrinsics(1, 1, 1, 1))))
    doc = rig.to_dict()
    assert doc["cameras"][0]["intrinsics"]["model"] == "OPENCV_FISHEYE"
    assert "model" not in doc["cameras"][1]["intrinsics"]  # plain pinhole documents are unchanged
    back = Rig.from_dict(doc)
    assert back.cameras[0].intrinsics == k and back.cameras[0].intrinsics.distorted
    assert not back.cameras[1].intrinsics.distorted


def test_aachen_style_single_camera_without_rigs_gets_the_identity_rig(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from mfapr_training.datasets import read_kapture

    caplog.set_level(logging.INFO)
    raw = t265_ros_kapture(tmp_path / "raw", frames=4, size=16)
    sd = raw / "sensors"
    (sd / "rigs.txt").unlink()
    rows = [ln for ln in (sd / "records_camera.txt").read_text().splitlines() if "cam002" not in ln]
    (sd / "records_camera.txt").write_text("\n".join(rows) + "\n")
    (sd / "trajectories.txt").write_text((sd / "trajectories.txt").read_text().replace(", t265,", ", cam001,"))
    bs = read_kapture(raw, ["cam001"])
    assert bs.has_poses and len(bs) == 4
    assert bs.rig.cameras[0].t_base_cam == (0.0, 0.0, 0.0) and bs.rig.cameras[0].q_base_cam == (1.0, 0.0, 0.0, 0.0)
    assert "single camera 'cam001' without a rigs.txt entry: identity rig" in caplog.text


def test_data_topics_bind_the_checkpoint_rig_and_silence_the_placeholder_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mfapr_training.config import load_config
    from mfapr_training.train import build_datasets

    raw = t265_ros_kapture(tmp_path / "raw", frames=6, size=16)
    base = [f"data.root={raw}", "data.train_split=", "data.val_split=null", "preprocess.resize=16",
            "preprocess.crop=16"]
    caplog.set_level(logging.INFO)
    rig, *_ = build_datasets(load_config("own_data", [*base, "data.transport=raw", "data.topics={cam001: "
                                                      "/t265/fisheye1/image_raw, cam002: /t265/fisheye2/image_raw}"]))
    assert [(c.topic, c.transport) for c in rig.cameras] == [("/t265/fisheye1/image_raw", "raw"),
                                                             ("/t265/fisheye2/image_raw", "raw")]
    assert "PLACEHOLDERS" not in caplog.text
    with pytest.raises(ConfigError, match=r"camera\(s\) \['cam9'\]"):
        build_datasets(load_config("own_data", [*base, "data.topics={cam9: /x/image_raw}"]))


def test_missing_bag_split_lists_the_bags_and_suggests_val_split_null(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mfapr_training.data import load_split

    from mfapr_ros.core.rig import load_rig

    bag, rig = one_recording_bag(tmp_path / "rec", frames=10, size=16)
    rc, out, err = run(capsys, "split", str(bag), "--out", str(tmp_path / "bags"), "--val", "0", "--test", "0.3")
    assert rc == 0 and "--set data.val_split=null" in out, err
    with pytest.raises(DataError) as e:
        load_split("rosbag", str(tmp_path / "bags"), "validation", rig=load_rig(rig), gt_tf="map:base_link",
                   setting="data.val_split")
    msg = str(e.value)
    assert "bags found there: ['mapping', 'query']" in msg and "--set data.val_split=null" in msg
