"""Rig loading, validation messages, and extrinsics helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import quat_from_yaw, quat_rotate, rotation_error_deg
from mfapr_ros.core.rig import Rig, load_rig, ring_rig, write_rig


def test_shipped_rigs_load():
    ring4 = load_rig("ring4")
    assert ring4.camera_names == ["cam0", "cam1", "cam2", "cam3"]
    assert load_rig("ring10").num_cameras == 10 and load_rig("ring6").num_cameras == 6
    m1x = load_rig("naverlabs_m1x")
    assert "22970285" in m1x.camera_names and "AC01324954" in m1x.camera_names
    assert m1x.subset(["AC01324954", "AC01324955", "AC01324968", "AC01324969"]).num_cameras == 4


def test_ring_cameras_look_outwards():
    rig = ring_rig(4)
    _, q = rig.extrinsics()
    for i in range(4):
        forward = quat_rotate(q[i], [0, 0, 1])  # optical z axis in base_link
        yaw = 2 * math.pi * i / 4
        assert np.allclose(forward, [math.cos(yaw), math.sin(yaw), 0], atol=1e-9)


def test_roundtrip_and_camera_poses(tmp_path):
    rig = ring_rig(6, image_size=64, hfov_deg=80)
    write_rig(rig, tmp_path / "r.yaml")
    back = load_rig(tmp_path / "r.yaml")
    assert back.camera_names == rig.camera_names and back.cameras[2].intrinsics == rig.cameras[2].intrinsics
    assert np.allclose(back.extrinsics()[0], rig.extrinsics()[0])
    assert np.allclose(back.extrinsics()[1], rig.extrinsics()[1])
    t_w, q_w = np.array([1.0, 2.0, 0.0]), quat_from_yaw(0.3)
    tc, qc = rig.camera_poses(t_w, q_w)
    for i in range(6):
        tr, qr = rig.rig_from_camera(i, tc[i], qc[i])
        assert np.allclose(tr, t_w) and rotation_error_deg(qr, q_w) < 1e-5


def _doc(**cam):
    base = {"name": "cam0", "topic": "/c0", "extrinsics": {"xyz": [0, 0, 0], "quat_wxyz": [1, 0, 0, 0]}}
    base.update(cam)
    return {"name": "x", "cameras": [base]}


@pytest.mark.parametrize("doc, match", [
    ({"name": "x", "cameras": []}, "non-empty"),
    (_doc(topic=None), r"cameras\[0\] \('cam0'\)\.topic"),
    (_doc(extrinsics={"xyz": [0, 0, 0], "quat_wxyz": [1, 1, 0, 0]}), "not a unit quaternion"),
    (_doc(transport="h264"), "transport"),
    (_doc(extrinsics=None), r"cameras\[0\] \('cam0'\)\.extrinsics must be a mapping"),
    (_doc(extrinsics={"xyz": [0, 0], "quat_wxyz": [1, 0, 0, 0]}), "xyz must be a list of 3"),
    ({"name": "x", "cameras": [_doc()["cameras"][0]] * 2}, "duplicate camera name"),
    ({"name": "x", "cameras": [dict(_doc()["cameras"][0], name=f"c{i}") for i in range(17)]}, "at most 16"),
])
def test_bad_rigs_name_the_key(doc, match):
    with pytest.raises(ConfigError, match=match):
        Rig.from_dict(doc, source="bad.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="rig file not found"):
        load_rig(tmp_path / "nope.yaml")
    (tmp_path / "b.yaml").write_text("cameras: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rig(tmp_path / "b.yaml")


def test_topic_remap_and_compressed_subscription():
    rig = ring_rig(4, transport="compressed").with_topics({"cam1": "/front/image"})
    assert rig.cameras[1].topic == "/front/image"
    assert rig.cameras[1].subscribe_topic == "/front/image/compressed"
    with pytest.raises(ConfigError, match="no camera 'camX'"):
        rig.with_topics({"camX": "/x"})
    assert yaml.safe_load(yaml.safe_dump(rig.to_dict()))["cameras"][1]["topic"] == "/front/image"


def test_camera_without_extrinsics_is_a_config_error_naming_camera_and_key(tmp_path):
    """No silent identity: a rig camera without ``extrinsics`` is refused (one line naming the camera and the key),
    the identity written explicitly loads."""
    doc = _doc()
    del doc["cameras"][0]["extrinsics"]
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_rig(path)
    msg = str(e.value)
    assert "\n" not in msg and "cameras[0] ('cam0')" in msg and "'extrinsics' is missing" in msg
    assert "quat_wxyz: [1, 0, 0, 0]" in msg  # how to write the identity
    path.write_text(yaml.safe_dump(_doc()))
    assert load_rig(path).cameras[0].q_base_cam == (1.0, 0.0, 0.0, 0.0)


def test_cli_with_a_rig_without_extrinsics_exits_2_with_one_line(tmp_path, capsys):
    pytest.importorskip("mfapr_training.synth.cli")
    from mfapr_ros import cli

    doc = _doc()
    del doc["cameras"][0]["extrinsics"]
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(doc))
    rc = cli.main(["synth", "--rig", str(tmp_path / "rig.yaml"), "--out", str(tmp_path / "w"), "--frames", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'extrinsics' is missing" in err and "('cam0')" in err
    assert not (tmp_path / "w").exists()
