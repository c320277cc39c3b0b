"""rosbag2 reader: bags written with rosbags (sqlite3 and MCAP) → bundles, GT interpolated at bundle stamps
(checked numerically), TF chains, and bag-level errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from mfapr_training.datasets.rosbag_reader import GroundTruthSpec, iter_bag_bundles, read_rosbag
from PIL import Image
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import quat_from_yaw, quat_wxyz_to_xyzw, rotation_error_deg
from mfapr_ros.core.rig import ring_rig

TS = get_typestore(Stores.ROS2_HUMBLE)
RIG = ring_rig(4)
T0 = 1_700_000_000 * 1_000_000_000
FRAME_NS = 100_000_000  # 10 Hz cameras
CAM_OFFSETS_NS = (0, 2_000_000, 5_000_000, 9_000_000)  # per-camera stamp offsets (< 20 ms slop)
N_FRAMES = 10
GT_START_NS = T0 + 150_000_000  # GT begins after the first two bundles: those must be dropped and counted
GT_PERIOD_NS = 33_000_000  # GT at ~30 Hz, never on an image stamp


def rig_pose(ns: int) -> tuple[np.ndarray, np.ndarray]:
    tau = (ns - T0) / 1e9
    return np.array([1.0 + 2.0 * tau, 3.0 - 1.0 * tau, 0.0]), quat_from_yaw(-0.5 + 0.8 * tau)


def _header(ns: int, frame: str):
    h, t = TS.types["std_msgs/msg/Header"], TS.types["builtin_interfaces/msg/Time"]
    return h(stamp=t(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)


def _pose(t: np.ndarray, q: np.ndarray):
    P = TS.types
    x, y, z, w = quat_wxyz_to_xyzw(q)
    return P["geometry_msgs/msg/Pose"](position=P["geometry_msgs/msg/Point"](x=t[0], y=t[1], z=t[2]),
                                       orientation=P["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))


def _transform(child: str, parent: str, ns: int, t: np.ndarray, q: np.ndarray):
    P = TS.types
    x, y, z, w = quat_wxyz_to_xyzw(q)
    tr = P["geometry_msgs/msg/Transform"](translation=P["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                                          rotation=P["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))
    return P["geometry_msgs/msg/TransformStamped"](header=_header(ns, parent), child_frame_id=child, transform=tr)


def write_bag(path: Path, plugin: StoragePlugin, gt: str = "pose", with_cams: bool = True) -> Path:
    """cam0/cam1 raw rgb8 Image, cam2/cam3 CompressedImage (JPEG); GT PoseStamped or TF (map→odom static,
    odom→base_link dynamic with odom offset)."""
    msgs: list[tuple[int, str, str, object]] = []
    for k in range(N_FRAMES):
        for i, cam in enumerate(RIG.cameras):
            ns = T0 + k * FRAME_NS + CAM_OFFSETS_NS[i]
            arr = np.full((12, 16, 3), (10 * i, 20 * k, 50), dtype=np.uint8)
            if i < 2:
                m = TS.types["sensor_msgs/msg/Image"](header=_header(ns, cam.name), height=12, width=16,
                                                      encoding="rgb8", is_bigendian=0, step=48, data=arr.reshape(-1))
                msgs.append((ns + 1_000_000, cam.topic, "sensor_msgs/msg/Image", m))
            else:
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG")
                m = TS.types["sensor_msgs/msg/CompressedImage"](header=_header(ns, cam.name), format="jpeg",
                                                                data=np.frombuffer(buf.getvalue(), np.uint8))
                msgs.append((ns + 1_000_000, cam.topic + "/compressed", "sensor_msgs/msg/CompressedImage", m))
    ns = GT_START_NS
    odom_t, odom_q = np.array([0.5, -0.25, 0.0]), quat_from_yaw(0.3)
    while ns <= T0 + (N_FRAMES - 1) * FRAME_NS + 40_000_000:
        t, q = rig_pose(ns)
        if gt == "pose":
            m = TS.types["geometry_msgs/msg/PoseStamped"](header=_header(ns, "map"), pose=_pose(t, q))
            msgs.append((ns, "/ground_truth/pose", "geometry_msgs/msg/PoseStamped", m))
        elif gt == "tf":
            from mfapr_ros.core.geometry import pose_compose, pose_inverse

            ot, oq = pose_compose(*pose_inverse(odom_t, odom_q), t, q)  # T_odom_base = T_map_odom⁻¹ · T_map_base
            m = TS.types["tf2_msgs/msg/TFMessage"](transforms=[_transform("base_link", "odom", ns, ot, oq)])
            msgs.append((ns, "/tf", "tf2_msgs/msg/TFMessage", m))
        ns += GT_PERIOD_NS
    if gt == "tf":
        m = TS.types["tf2_msgs/msg/TFMessage"](transforms=[_transform("odom", "map", T0, odom_t, odom_q)])
        msgs.append((T0, "/tf_static", "tf2_msgs/msg/TFMessage", m))
    if not with_cams:
        msgs = [m for m in msgs if "cam" not in m[1]]
    msgs.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for ts, topic, ty, m in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, ty, typestore=TS)
            w.write(conns[topic], ts, TS.serialize_cdr(m, ty))
    return path


@pytest.mark.parametrize("plugin", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_bag_bundles_and_interpolated_gt(tmp_path: Path, plugin: StoragePlugin) -> None:
    bag = write_bag(tmp_path / "run1", plugin)
    bs = read_rosbag(bag, RIG)
    # first two bundles (stamps T0+9ms, T0+109ms) precede the GT (T0+150ms): dropped and counted
    assert bs.drops == {"outside_ground_truth": 2}
    assert len(bs) == N_FRAMES - 2 and bs.has_poses and bs.tracks() == ["run1"]
    for r, k in zip(bs.records, range(2, N_FRAMES), strict=True):
        assert r.stamps_ns == [T0 + k * FRAME_NS + o for o in CAM_OFFSETS_NS] and r.mask.all()
        assert r.stamp_ns == T0 + k * FRAME_NS + CAM_OFFSETS_NS[-1]
        t, q = rig_pose(r.stamp_ns)  # linear motion + constant yaw rate: lerp + slerp are exact
        np.testing.assert_allclose(r.t_world_rig, t, atol=1e-9)
        assert rotation_error_deg(r.q_world_rig, q) < 1e-5
        assert r.images[0].is_raw and r.images[0].encoding == "rgb8" and r.images[0].width == 16
        assert r.images[3].format == "jpeg" and r.images[3].data[:2] == b"\xff\xd8"


def test_tf_chain_gt_and_time_window(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "tfbag", StoragePlugin.SQLITE3, gt="tf")
    drops = DropCounter.for_reader()
    start = T0 + 4 * FRAME_NS
    recs = list(iter_bag_bundles(bag, RIG, gt=GroundTruthSpec(tf="map:base_link"), start_ns=start, drops=drops))
    assert [r.index for r in recs] == list(range(len(recs))) and len(recs) == N_FRAMES - 4
    for r in recs:
        t, q = rig_pose(r.stamp_ns)
        np.testing.assert_allclose(r.t_world_rig, t, atol=1e-9)
        assert rotation_error_deg(r.q_world_rig, q) < 1e-5


def test_inference_only_bag_and_errors(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "nogt", StoragePlugin.MCAP, gt="none")
    bs = read_rosbag(bag, RIG, require_gt=False)
    assert len(bs) == N_FRAMES and not bs.has_poses
    with pytest.raises(DataError, match="no ground truth"):
        read_rosbag(bag, RIG)
    with pytest.raises(DataError, match="camera topic"):
        read_rosbag(bag, RIG, topics={"cam1": "/nope/image_raw"})
    (tmp_path / "notabag").mkdir()
    with pytest.raises(DataError, match="metadata.yaml"):
        read_rosbag(tmp_path / "notabag", RIG)
    (tmp_path / "x.bag").write_bytes(b"ROS1")
    with pytest.raises(DataError, match="not a rosbag2"):
        read_rosbag(tmp_path / "x.bag", RIG)
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: mcap", "storage_identifier: leveldb"))
    with pytest.raises(DataError, match="leveldb"):
        read_rosbag(bag, RIG, require_gt=False)


def test_zero_header_stamps_use_the_recording_time(tmp_path: Path) -> None:
    """A driver that leaves header.stamp at 0: the one bag pipeline (mfapr_ros.bag.bundles, under training's reader
    and eval-bag) falls back to the recording time (counted), so bundles still form (the reader used to keep 0 and
    form at most one bundle); the reader's records are exactly the pipeline's bundles."""
    from mfapr_ros.bag.bundles import bind_bag_topics, iter_bundles
    from mfapr_ros.bag.reader import BagReader
    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
    from mfapr_ros.core.sync import SyncSettings

    rig4 = ring_rig(4)
    bag = tmp_path / "zero"
    spec = SynthBagSpec([c.topic for c in rig4.cameras], frames=12, size=16, storage="mcap", jitter_ms=1.0,
                        zero_header_stamps=True)
    write_synth_bag(bag, spec)
    bs = read_rosbag(bag, rig4)
    assert len(bs) == 12 and bs.drops["zero_header_stamp"] == 48
    stamps = [r.stamp_ns for r in bs.records]
    assert stamps == sorted(stamps) and all(s > spec.t0_ns for s in stamps)
    assert all(r.t_world_rig is not None for r in bs.records)
    drops = DropCounter.for_reader()
    with BagReader(bag) as reader:
        bindings = bind_bag_topics(rig4, reader.topic_types())
        ev_stamps = [b.stamp_ns for b in iter_bundles(reader, bindings, SyncSettings().make(4), drops=drops)]
    assert ev_stamps == stamps and drops["zero_header_stamp"] == 48
