"""Write one split of the synthetic world as a rosbag2 (sqlite3 or MCAP) with `rosbags` — no ROS install needed.

Topics (what `mfapr play`, `mfapr eval-bag` and the rosbag2 reader expect):

- per camera: ``sensor_msgs/msg/Image`` (``rgb8``) on the rig camera's ``topic`` (``--transport raw``), or
  ``sensor_msgs/msg/CompressedImage`` (``jpeg``) on ``<topic>/compressed`` (``--transport compressed``);
  header stamp = the camera's own stamp, ``frame_id = <camera>_optical_frame``;
- ``/ground_truth/pose``: ``geometry_msgs/msg/PoseStamped`` (frame ``map``) of base_link at the frame rate;
- ``/tf``: ``tf2_msgs/msg/TFMessage`` at the same stamps: ``odom → base_link`` (simulated wheel odometry with
  drift, :mod:`mfapr_ros.core.odometry`) and ``map → odom`` (the GT correction ``T_map_base · T_odom_base⁻¹``), so
  the chain ``map → odom → base_link`` is the GT (``--gt-tf map:base_link`` keeps working) while ``odom →
  base_link`` alone is what a robot's odometry would publish (what the pose fusion uses). Without odometry:
  ``map → base_link``;
- ``/tf_static``: base_link → ``<camera>_optical_frame`` (the rig extrinsics), once at the start.

Messages are written in timestamp order (bag log time = header stamp), CDR-serialised with the Humble typestore
(the message definitions used here are identical in Humble..Kilted). The bag is written under a hidden temporary
name and renamed into place on ``close()``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import map_to_odom, quat_wxyz_to_xyzw
from mfapr_ros.core.rig import Rig

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
TRANSPORTS = ("raw", "compressed")
GT_TOPIC = "/ground_truth/pose"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
MAP_FRAME = "map"
ODOM_FRAME = "odom"


def camera_topic(topic: str, transport: str) -> str:
    """The bag topic of a camera: its base topic for raw, image_transport's ``<topic>/compressed`` otherwise."""
    if transport == "compressed" and not topic.endswith("/compressed"):
        return topic.rstrip("/") + "/compressed"
    return topic


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


class BagSplitWriter:
    """Stream camera images and GT of one split into a rosbag2."""

    def __init__(self, out_path: str | Path, rig: Rig, storage: str = "sqlite3", transport: str = "raw") -> None:
        if storage not in STORAGES:
            raise ConfigError(f"bag storage '{storage}' unknown; use one of {sorted(STORAGES)}")
        if transport not in TRANSPORTS:
            raise ConfigError(f"transport '{transport}' unknown; use one of {TRANSPORTS}")
        self.out_path = Path(out_path)
        if self.out_path.exists():
            raise ConfigError(f"bag output {self.out_path} exists already; choose an empty --out folder")
        # rosbags names the storage file after the bag folder, so write <out>/.<name>.partial/<name> and move it
        self.tmp_root = self.out_path.parent / f".{self.out_path.name}.partial"
        if self.tmp_root.exists():
            shutil.rmtree(self.tmp_root)
        self.tmp_root.mkdir(parents=True)
        self.tmp_path = self.tmp_root / self.out_path.name
        self.rig, self.transport = rig, transport
        self.ts = get_typestore(Stores.ROS2_HUMBLE)
        self.writer = Writer(self.tmp_path, version=9, storage_plugin=STORAGES[storage])
        self.writer.open()
        msg = "sensor_msgs/msg/Image" if transport == "raw" else "sensor_msgs/msg/CompressedImage"
        self.topics = [camera_topic(c.topic, transport) for c in rig.cameras]
        self.cam_conns = [self.writer.add_connection(t, msg, typestore=self.ts) for t in self.topics]
        self.gt_conn = self.writer.add_connection(GT_TOPIC, "geometry_msgs/msg/PoseStamped", typestore=self.ts)
        self.tf_conn = self.writer.add_connection(TF_TOPIC, "tf2_msgs/msg/TFMessage", typestore=self.ts)
        self.tf_static_conn = self.writer.add_connection(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage",
                                                         typestore=self.ts)
        self.counts = {t: 0 for t in [*self.topics, GT_TOPIC, TF_TOPIC, TF_STATIC_TOPIC]}
        self._static_written = False
        T = self.ts.types
        self._Header, self._Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
        self._Image, self._Compressed = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"]
        self._PoseStamped, self._Pose = T["geometry_msgs/msg/PoseStamped"], T["geometry_msgs/msg/Pose"]
        self._Point, self._Quat = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
        self._Vec3, self._Transform = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Transform"]
        self._TFs, self._TFMessage = T["geometry_msgs/msg/TransformStamped"], T["tf2_msgs/msg/TFMessage"]

    def _header(self, stamp_ns: int, frame: str) -> object:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self._Header(stamp=self._Time(sec=sec, nanosec=nanosec), frame_id=frame)

    def _transform(self, stamp_ns: int, parent: str, child: str, t: np.ndarray, q_wxyz: np.ndarray) -> object:
        x, y, z, w = (float(v) for v in quat_wxyz_to_xyzw(q_wxyz))
        return self._TFs(header=self._header(stamp_ns, parent), child_frame_id=child,
                         transform=self._Transform(
                             translation=self._Vec3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                             rotation=self._Quat(x=x, y=y, z=z, w=w)))

    def _write(self, conn: object, topic: str, stamp_ns: int, msg: object, msgtype: str) -> None:
        self.writer.write(conn, int(stamp_ns), self.ts.serialize_cdr(msg, msgtype))  # type: ignore[arg-type]
        self.counts[topic] += 1

    def write_static(self, stamp_ns: int) -> None:
        """The rig extrinsics as /tf_static (base_link → each optical frame)."""
        t_bc, q_bc = self.rig.extrinsics()
        tfs = [self._transform(stamp_ns, self.rig.base_frame, optical_frame(c.name), t_bc[i], q_bc[i])
               for i, c in enumerate(self.rig.cameras)]
        self._write(self.tf_static_conn, TF_STATIC_TOPIC, stamp_ns, self._TFMessage(transforms=tfs),
                    "tf2_msgs/msg/TFMessage")
        self._static_written = True

    def write_gt(self, stamp_ns: int, t: np.ndarray, q_wxyz: np.ndarray,
                 odom: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """GT rig pose ``T_map_base_link`` as PoseStamped and TF; with ``odom`` (``T_odom_base_link`` at the same
        stamp) the TF is ``map → odom → base_link`` instead of ``map → base_link`` (module docstring)."""
        if not self._static_written:
            self.write_static(stamp_ns)
        x, y, z, w = (float(v) for v in quat_wxyz_to_xyzw(q_wxyz))
        pose = self._Pose(position=self._Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                          orientation=self._Quat(x=x, y=y, z=z, w=w))
        self._write(self.gt_conn, GT_TOPIC, stamp_ns, self._PoseStamped(header=self._header(stamp_ns, MAP_FRAME),
                                                                        pose=pose), "geometry_msgs/msg/PoseStamped")
        if odom is None:
            tfs = [self._transform(stamp_ns, MAP_FRAME, self.rig.base_frame, t, q_wxyz)]
        else:
            t_mo, q_mo = map_to_odom(t, q_wxyz, odom[0], odom[1])
            tfs = [self._transform(stamp_ns, MAP_FRAME, ODOM_FRAME, t_mo, q_mo),
                   self._transform(stamp_ns, ODOM_FRAME, self.rig.base_frame, odom[0], odom[1])]
        tf = self._TFMessage(transforms=tfs)
        self._write(self.tf_conn, TF_TOPIC, stamp_ns, tf, "tf2_msgs/msg/TFMessage")

    def write_image(self, slot: int, stamp_ns: int, rgb: np.ndarray | None = None, jpeg: bytes | None = None
                    ) -> None:
        """Camera ``slot``'s image: raw ``rgb`` (H, W, 3) uint8 or ``jpeg`` bytes, matching the transport."""
        if not self._static_written:
            self.write_static(stamp_ns)
        header = self._header(stamp_ns, optical_frame(self.rig.cameras[slot].name))
        topic = self.topics[slot]
        if self.transport == "raw":
            if rgb is None:
                raise ConfigError("raw transport needs the RGB array")
            h, w = rgb.shape[:2]
            msg = self._Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                              data=np.ascontiguousarray(rgb).reshape(-1))
            self._write(self.cam_conns[slot], topic, stamp_ns, msg, "sensor_msgs/msg/Image")
        else:
            if jpeg is None:
                raise ConfigError("compressed transport needs the JPEG bytes")
            msg = self._Compressed(header=header, format="jpeg", data=np.frombuffer(jpeg, dtype=np.uint8))
            self._write(self.cam_conns[slot], topic, stamp_ns, msg, "sensor_msgs/msg/CompressedImage")

    def close(self) -> Path:
        """Finish the bag (metadata.yaml) and rename it into place."""
        self.writer.close()
        os.replace(self.tmp_path, self.out_path)
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        return self.out_path

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - best effort on an already failing path; the folder is removed next
            pass
        shutil.rmtree(self.tmp_root, ignore_errors=True)
