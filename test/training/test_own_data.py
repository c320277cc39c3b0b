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
                       "--set", f"data.root={data}", "--set", f"data.rig={rig}", "--set", "data.gt_tf=map:base_link",
                       *TRAIN, "--out", str(runs))
    assert rc == 0, err
    ck = json.loads((runs / "best.json").read_text())
    assert [c["topic"] for c in ck["rig"]["cameras"]] == ["/robot/cam0/image_raw", "/robot/cam1/image_raw"]
    rc, out, err = run(capsys, "eval-bag", "--checkpoint", str(runs / "best"), "--bag", str(data / "query"),
                       "--gt-tf", "map:base_link", "--out", str(tmp_path / "report"), "--device", "cpu",
                       "--no-plots", "--no-progress")
    assert rc == 0, err
    assert check_report(tmp_path / "report")["metrics"]["count"] == counts["query"] // 2
