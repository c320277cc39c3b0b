"""Write one split of the synthetic world as a kapture folder, with the `kapture` package's own CSV IO.

Why kapture's IO (not hand-written CSV): training reads the synthetic data through the very path that reads a NAVER
LABS download (``kapture.io.csv.kapture_from_dir``), so the synthetic files must be what kapture itself writes.

Conventions, as in the NAVER LABS release (checked against ``kapture/core/Rigs.py`` and ``Trajectories.py``):

- timestamps are integer **microseconds** (our stamps are ns on a µs grid, so ``ns // 1000`` is exact);
- ``trajectories.txt`` holds **per-camera** poses at each camera's own timestamp, as kapture ``PoseTransform``
  *device-from-world*: ``T_cam_world = (T_world_rig · T_rig_cam)⁻¹`` (points in the world → camera frame);
- ``rigs.txt`` holds ``rigs[rig_id, cam] = T_cam_rig`` (kapture: "PoseTransform transforming points from rig to
  camera"), i.e. the inverse of the rig YAML's ``T_base_camera``;
- sensor ids are the rig's camera names; cameras are ``PINHOLE [w, h, fx, fy, cx, cy]``;
- images live in ``sensors/records_data/<camera>/<stamp_us>.jpg``.

The split is written into a hidden temporary folder and renamed into place on ``close()``, so a reader never sees a
half-written split (the kapture writer itself is not atomic).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import kapture
import kapture.io.csv as kcsv
import numpy as np

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import pose_inverse
from mfapr_ros.core.rig import Rig

from .render import CameraModel


def kapture_pose(t: np.ndarray, q_wxyz: np.ndarray) -> kapture.PoseTransform:
    """A kapture PoseTransform from our ``(t, q wxyz)`` (kapture also stores quaternions as w, x, y, z)."""
    return kapture.PoseTransform(r=[float(v) for v in q_wxyz], t=[float(v) for v in t])


class KaptureSplitWriter:
    """Stream images and per-camera GT of one split, then write the kapture CSVs and move the folder into place."""

    def __init__(self, out_dir: str | Path, rig: Rig, models: list[CameraModel], rig_id: str = "rig") -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists():
            raise ConfigError(f"kapture output {self.out_dir} exists already; choose an empty --out folder")
        if rig_id in rig.camera_names:
            raise ConfigError(f"kapture rig id '{rig_id}' collides with a camera name of rig '{rig.name}'")
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.partial"
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.rig, self.rig_id = rig, rig_id
        self.sensors = kapture.Sensors()
        self.rigs = kapture.Rigs()
        t_bc, q_bc = rig.extrinsics()
        for cam, m, tb, qb in zip(rig.cameras, models, t_bc, q_bc, strict=True):
            self.sensors[cam.name] = kapture.Camera(kapture.CameraType.PINHOLE,
                                                    [m.width, m.height, m.fx, m.fy, m.cx, m.cy], name=cam.name)
            t_cr, q_cr = pose_inverse(tb, qb)  # T_cam_rig
            self.rigs[rig_id, cam.name] = kapture_pose(t_cr, q_cr)
        self.trajectories = kapture.Trajectories()
        self.records = kapture.RecordsCamera()
        self.count = 0
        self._made: set[str] = set()

    def add(self, camera: str, stamp_ns: int, jpeg: bytes, t_world_cam: np.ndarray, q_world_cam: np.ndarray
            ) -> None:
        """One image of ``camera`` at ``stamp_ns`` (must be a whole µs) with its world pose ``T_world_cam``."""
        if stamp_ns % 1000:
            raise ConfigError(f"kapture stamps are µs: stamp {stamp_ns} ns of {camera} is not on the µs grid")
        ts = int(stamp_ns // 1000)
        rel = f"{camera}/{ts}.jpg"
        folder = self.tmp_dir / "sensors" / "records_data" / camera
        if camera not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(camera)
        with open(folder / f"{ts}.jpg", "wb") as f:
            f.write(jpeg)
        self.records[ts, camera] = rel
        t_cw, q_cw = pose_inverse(np.asarray(t_world_cam), np.asarray(q_world_cam))
        self.trajectories[ts, camera] = kapture_pose(t_cw, q_cw)
        self.count += 1

    def close(self) -> Path:
        """Write sensors/rigs/trajectories/records with kapture's writers and rename the folder into place."""
        sensors_dir = self.tmp_dir / "sensors"
        sensors_dir.mkdir(parents=True, exist_ok=True)
        kcsv.sensors_to_file(str(sensors_dir / "sensors.txt"), self.sensors)
        kcsv.rigs_to_file(str(sensors_dir / "rigs.txt"), self.rigs)
        kcsv.trajectories_to_file(str(sensors_dir / "trajectories.txt"), self.trajectories)
        kcsv.records_camera_to_file(str(sensors_dir / "records_camera.txt"), self.records)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_dir, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        """Remove the partial folder after a failure."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
