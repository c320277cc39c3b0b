"""kapture poses: ``trajectories.txt`` read, validated and inverted (kapture stores ``T_device_world``), camera
trajectories turned into the rig's, and the rig pose of one bundle at its stamp.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.geometry import interpolate_poses, mean_pose, pose_compose, pose_inverse, rotation_error_deg

from .kapture_text import US_TO_NS, rows
from .records import validate_pose

log = logging.getLogger(__name__)


def lone_rig_device(root: Path, traj_path: Path, sensors: dict[str, Any], krigs: dict[str, Any],
                     chosen: list[str]) -> str | None:
    """The device whose trajectory is the rig's, for a single camera without rigs.txt whose poses are stored under
    another id (7-Scenes: records by ``kinect_rgb``, poses by ``kinect``): the one non-sensor device, identity
    extrinsics (logged). None when the camera has its own poses, there is a rigs.txt, or the choice is ambiguous."""
    if krigs or len(chosen) != 1 or not traj_path.is_file():
        return None
    devices = {row[1] for _, row in rows(traj_path) if len(row) > 1}
    if chosen[0] in devices:
        return None
    others = sorted(devices - set(sensors))
    if len(others) != 1:
        return None
    log.info("kapture %s: trajectories.txt has no poses for camera '%s' but one device '%s' (not a sensor, no "
             "rigs.txt): using it as the rig pose with identity extrinsics", root, chosen[0], others[0])
    return others[0]


def read_trajectories(path: Path, devices: set[str], drops: DropCounter, to_ns: int = US_TO_NS
                       ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{device: (stamps_ns (N,), t_world_device (N,3), q_world_device (N,4))}``, sorted, validated, inverted.

    kapture stores ``T_device_world``; inversion happens here, vectorised (equal to kapture's
    ``PoseTransform.inverse()``, which the tests check).
    """
    if not path.is_file():
        return {}
    per: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for line, row in rows(path):
        where = f"{path}:{line}"
        if len(row) != 9:
            drops.add("malformed_pose", f"{where}: expected 'timestamp, device_id, qw, qx, qy, qz, tx, ty, tz'")
            continue
        if row[1] not in devices:
            drops.add("unknown_device_pose", f"{where}: device '{row[1]}' is neither a sensor nor a rig")
            continue
        try:
            stamp = int(row[0]) * to_ns
            vals = [float(v) for v in row[2:]]
        except ValueError:
            drops.add("malformed_pose", f"{where}: non-numeric field in {row}")
            continue
        checked = validate_pose(vals[4:7], vals[0:4], where)
        if isinstance(checked, str):
            drops.add("non_unit_quaternion" if "norm" in checked else "malformed_pose", checked)
            continue
        d = per.setdefault(row[1], {})
        if stamp in d:
            drops.add("duplicate_pose", f"{where}: device {row[1]} has two poses at stamp {row[0]}; keeping the first")
            continue
        d[stamp] = checked
    out = {}
    for dev, d in per.items():
        stamps = np.array(sorted(d), dtype=np.int64)
        t_dw = np.stack([d[s][0] for s in stamps])
        q_dw = np.stack([d[s][1] for s in stamps])
        t_wd, q_wd = pose_inverse(t_dw, q_dw)
        out[dev] = (stamps, t_wd, q_wd)
    return out


def empty_pose(p: Any) -> bool:
    """kapture parses an empty rigs.txt pose (all fields blank) to a PoseTransform without rotation/translation."""
    return getattr(p, "t_raw", None) is None or getattr(p, "r_raw", None) is None


def rig_trajectory(cam: tuple[np.ndarray, np.ndarray, np.ndarray], t_cam_rig: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera's trajectory turned into the rig trajectory it implies: ``T_world_rig = T_world_cam · T_cam_rig``."""
    stamps, t_wc, q_wc = cam
    t, q = pose_compose(t_wc, q_wc, t_cam_rig[0], t_cam_rig[1])
    return stamps, t, q


def pose_at(traj: tuple[np.ndarray, np.ndarray, np.ndarray], stamp: int, own: int | None
             ) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """``(t, q, at_stamp)``: the pose at ``stamp`` (interpolated inside the trajectory's span, ``at_stamp`` True);
    else the pose at the ``own`` stamp if the trajectory has it exactly (``at_stamp`` False); else None."""
    stamps, t, q = traj
    ti, qi, ok = interpolate_poses(stamps, t, q, [stamp])
    if ok[0]:
        return ti[0], qi[0], True
    if own is not None:
        k = int(np.searchsorted(stamps, own))
        if k < len(stamps) and stamps[k] == own:
            return t[k], q[k], False
    return None


def bundle_pose(stamp: int, chosen: list[str], stamps: list[int | None],
                 rig_traj: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 cam_traj: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], info: dict[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Rig pose of one bundle at its stamp: from the rig trajectory, else the average over present cameras."""
    if rig_traj is not None:
        p = pose_at(rig_traj, stamp, stamp)
        if p is not None:
            info["pose_source"] = "rig"
            return p[0], p[1]
    # Poses at the bundle stamp first; a camera whose trajectory does not cover it (end of a track, a gap) gives its
    # pose at its own stamp — up to one slop earlier — which is used only when no camera covers the bundle stamp.
    at_stamp: list[tuple[np.ndarray, np.ndarray]] = []
    at_own: list[tuple[np.ndarray, np.ndarray]] = []
    for c, own in zip(chosen, stamps, strict=True):
        if own is None or c not in cam_traj:
            continue
        p = pose_at(cam_traj[c], stamp, own)
        if p is not None:
            (at_stamp if p[2] else at_own).append((p[0], p[1]))
    use = at_stamp or at_own
    if not use:
        return None
    if at_stamp and at_own:
        info["own_stamp_poses_skipped"] = len(at_own)
    t_arr, q_arr = np.stack([p[0] for p in use]), np.stack([p[1] for p in use])
    t, q = mean_pose(t_arr, q_arr)
    info["pose_source"] = f"{len(use)} cameras" + ("" if at_stamp else " (at their own stamps)")
    info["disagreement_m"] = float(np.max(np.linalg.norm(t_arr - t, axis=-1)))
    info["disagreement_deg"] = float(np.max(rotation_error_deg(q_arr, np.broadcast_to(q, q_arr.shape))))
    return t, q
