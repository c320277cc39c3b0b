"""kapture readers on the shapes of public samples (issue 11): naver/kapture ``samples/t265`` (ns stamps, empty rig
poses, frame-index stamps), stamp-unit detection, the NAVER M1X trigger stamp with partial bundles, and a camera
without images. The fixtures reproduce the samples' files (same columns, stamps and pose fields); the images are
empty files (the reader only references them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mfapr_training.datasets import read_kapture
from mfapr_training.datasets.kapture_text import detect_stamp_unit

from mfapr_ros.core.errors import DataError

FISHEYE = "OPENCV_FISHEYE, 848, 800, 284.468, 285.51, 424.355, 393.742, 0.0008, 0.031, -0.03, 0.005"
POSES = ["0.9540331248716523, -0.03768128483784883, -0.2972570621910482, -0.0062565444214723875, 2.7429402281860904, "
         "0.13236653865769618, -2.868626176500939",
         "0.9538392426506648, -0.03767831996842963, -0.2978817523126402, -0.006124150940520545, 2.746130169011789, "
         "0.1326022155674856, -2.865672078562964",
         "0.953665737146655, -0.0369936220286568, -0.29852359854878024, -0.006055891712342887, 2.74922352952307, "
         "0.13789556798025995, -2.8617067482160743"]


def write_split(root: Path, sensors: list[str], rigs: list[str], records: list[tuple[str, str, str]],
                traj: list[str]) -> Path:
    s = root / "sensors"
    (s / "records_data").mkdir(parents=True)
    (s / "sensors.txt").write_text("# kapture format: 1.1\n# sensor_id, name, sensor_type, [sensor_params]+\n"
                                   + "\n".join(sensors) + "\n")
    (s / "rigs.txt").write_text("# kapture format: 1.0\n# rig_id, sensor_id, qw, qx, qy, qz, tx, ty, tz\n"
                                + "\n".join(rigs) + "\n")
    (s / "records_camera.txt").write_text("# kapture format: 1.1\n# timestamp, device_id, image_path\n"
                                          + "\n".join(f"{t}, {c}, {p}" for t, c, p in records) + "\n")
    (s / "trajectories.txt").write_text("# kapture format: 1.0\n# timestamp, device_id, qw, qx, qy, qz, tx, ty, tz\n"
                                        + "\n".join(traj) + "\n")
    for _, _, p in records:
        f = s / "records_data" / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    return root


def ros_kapture(root: Path) -> Path:
    """samples/t265/ros_kapture: ns epoch stamps, rig ``t265`` with two fisheyes, trajectory of the rig."""
    stamps = [1553180224360915899, 1553180224394249439, 1553180224427582741]
    recs = [(str(t), c, f"{c}/frame_{k + 1:09d}.jpg") for k, t in enumerate(stamps) for c in ("cam001", "cam002")]
    return write_split(root, [f"cam001, left fisheye, camera, {FISHEYE}", f"cam002, right fisheye, camera, {FISHEYE}"],
                       ["t265, cam001,  1.0, -0.0, -0.0, -0.0, 0.032,  0.0,  0.0",
                        "t265, cam002,  1.0, -0.0, -0.0, -0.0, -0.032,  0.0,  0.0"],
                       recs, [f"{t}, t265, {p}" for t, p in zip(stamps, POSES, strict=True)])


def test_t265_ros_kapture_nanosecond_stamps_load(tmp_path: Path) -> None:
    bs = read_kapture(ros_kapture(tmp_path / "ros_kapture"))
    assert len(bs) == 3 and all(r.is_full if hasattr(r, "is_full") else r.mask.all() for r in bs.records)
    assert [r.stamp_ns for r in bs.records] == [1553180224360915899, 1553180224394249439, 1553180224427582741]
    assert bs.info["pose_source"] == "rig" and all(r.has_pose for r in bs.records)
    assert bs.rig.camera_names == ["cam001", "cam002"]
    np.testing.assert_allclose(bs.rig.cameras[0].t_base_cam, [-0.032, 0, 0], atol=1e-12)


def t265_kapture(root: Path, stamps: list[int]) -> Path:
    """samples/t265/kapture: rig0 with empty poses for 001/002, per-camera trajectories."""
    recs = [(str(t), c, f"{'left' if c == '001' else 'right'}raw/frame_{k + 1:09d}.jpg")
            for k, t in enumerate(stamps) for c in ("001", "002")]
    return write_split(root, [f"001, , camera, {FISHEYE}", f"002, , camera, {FISHEYE}"],
                       [" rig0,   001,     ,     ,     ,     ,     ,     ,     ",
                        " rig0,   002,     ,     ,     ,     ,     ,     ,     "],
                       recs, [f"       {t},   {c}, {p}" for t, p in zip(stamps, POSES, strict=True)
                              for c in ("001", "002")])


def test_t265_kapture_frame_index_stamps_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_kapture(t265_kapture(tmp_path / "kapture", [0, 1, 2]))
    msg = str(e.value)
    assert "frame indices" in msg and "× 1000" in msg and "\n" not in msg


def test_empty_rig_poses_are_handled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same files with µs stamps (10 Hz) load: identity placeholder extrinsics with a warning, and since the
    cameras' own trajectories cannot be turned into rig poses without extrinsics, the bundles have no pose."""
    bs = read_kapture(t265_kapture(tmp_path / "kapture_us", [0, 100_000, 200_000]))
    assert len(bs) == 3 and all(r.mask.all() for r in bs.records)
    assert bs.rig.cameras[1].t_base_cam == (0.0, 0.0, 0.0)
    assert "no pose for camera '001'" in caplog.text
    assert not bs.has_poses


@pytest.mark.parametrize(("stamps", "factor"), [([1553180224360915899, 1553180224394249439], 1),
                                                ([1600000000000000, 1600000000100000], 1000),
                                                ([0, 100_000, 200_000], 1000), ([0, 33_333_333, 66_666_666], 1)])
def test_stamp_units_detected(stamps: list[int], factor: int) -> None:
    assert detect_stamp_unit({"c": stamps}, "x") == factor


@pytest.mark.parametrize(("stamps", "word"), [([1600000000000, 1600000000100], "milliseconds"),
                                              ([0, 100, 200], "milliseconds"), ([0, 1, 2], "frame indices"),
                                              ([1600000000, 1600000001], "seconds")])
def test_wrong_stamp_units_refused(stamps: list[int], word: str) -> None:
    with pytest.raises(DataError, match=word):
        detect_stamp_unit({"c": stamps}, "x")
    assert detect_stamp_unit({"c": stamps}, "x", unit="us") == 1000  # the explicit override


BASLER = ["22970285", "22970286", "22970288", "22970289", "22970290", "22970291"]


def m1x(root: Path, frames: int = 6) -> Path:
    """NAVER M1X shape: 6 Basler cameras sharing a trigger stamp at about 1 Hz (µs), per-camera trajectories."""
    stamps = [1_600_000_000_000_000 + k * 1_000_000 for k in range(frames)]
    recs = [(str(t), c, f"{c}/{t}.jpg") for t in stamps for c in BASLER]
    rigs = [f"m1x, {c}, 1.0, 0.0, 0.0, 0.0, {0.1 * k}, 0.0, 0.0" for k, c in enumerate(BASLER)]
    traj = [f"{t}, {c}, 1.0, 0.0, 0.0, 0.0, {-0.1 * k - 0.5 * j}, 0.0, 0.0" for j, t in enumerate(stamps)
            for k, c in enumerate(BASLER)]
    return write_split(root, [f"{c}, basler, camera, PINHOLE, 640, 480, 500, 500, 320, 240" for c in BASLER],
                       rigs, recs, traj)


@pytest.mark.parametrize("min_cameras", [1, 3, 5])
def test_m1x_partial_bundles_keep_every_camera_of_a_trigger(tmp_path: Path, min_cameras: int) -> None:
    bs = read_kapture(m1x(tmp_path / f"m1x{min_cameras}"), "basler", sync={"min_cameras": min_cameras})
    assert len(bs) == 6 and all(r.mask.all() for r in bs.records)
    assert not any(k.startswith("sync_") for k in bs.drops)


def test_camera_without_images_is_named_when_full_bundles_are_required(tmp_path: Path) -> None:
    d = m1x(tmp_path / "m1x")
    rec = d / "sensors" / "records_camera.txt"
    rec.write_text("\n".join(ln for ln in rec.read_text().splitlines() if "22970289" not in ln) + "\n")
    with pytest.raises(DataError, match=r"\['22970289'\] have no images.*min_cameras"):
        read_kapture(d, "basler")
    bs = read_kapture(d, "basler", sync={"min_cameras": 5})  # partial bundles allowed: the slot is masked
    assert len(bs) == 6 and all(not r.mask[3] and r.mask.sum() == 5 for r in bs.records)
