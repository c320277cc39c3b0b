"""kapture / NAVER LABS reader: a kapture folder → multi-camera bundles with rig poses ``T_world_rig``.

Layout read (one folder per split, e.g. ``<floor>/release/mapping`` of a NAVER LABS download, or
``OUT/kapture/<split>`` of ``mfapr synth``)::

    <split>/sensors/sensors.txt          # sensor_id, name, sensor_type, [params]   (camera intrinsics)
    <split>/sensors/rigs.txt             # rig_id, sensor_id, qw..tz   pose = T_sensor_rig ("device from rig")
    <split>/sensors/trajectories.txt     # timestamp(µs), device_id, qw..tz   pose = T_device_world (COLMAP)
    <split>/sensors/records_camera.txt   # timestamp(µs), sensor_id, image_path
    <split>/sensors/records_data/<image_path>

Conventions at this boundary (and nowhere else): µs → integer ns; kapture's world→device poses are inverted to
``T_world_device``; ``rigs.txt`` (device-from-rig, ``T_cam_rig``) is inverted to the rig extrinsics
``T_base_cam``, so the kapture rig frame *is* ``base_link``. Camera frames are kapture's (COLMAP) optical frames,
which is the package's camera convention too.

Bundling uses the project's one synchronizer (:mod:`.bundling`): the 6 NAVER Basler cameras share a trigger stamp
(bundled exactly), each Galaxy phone has its own µs stamp (bundled within ``sync.slop``).

The rig pose of a bundle comes from a rig-level trajectory when the file has one (``device_id`` = the rig id);
otherwise from each present camera's own trajectory (NAVER stores per-camera poses): camera ``i`` implies
``T_world_rig = T_world_cam_i · T_cam_i_rig``, interpolated to the bundle stamp along that camera's trajectory,
and the bundle pose is their average (mean translation, Markley quaternion mean). Their spread is recorded per
bundle (``record.info["disagreement_m"/"_deg"]``) and summarised in ``BundleSet.info`` — a large spread means a
wrong ``rigs.txt`` or a bad slop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import pose_inverse
from mfapr_ros.core.rig import Camera, Intrinsics, Rig

from .bundling import SyncSettings, merge_streams, run_synchronizer
from .kapture_poses import bundle_pose, empty_pose, lone_rig_device, read_trajectories, rig_trajectory
from .kapture_text import detect_stamp_unit
from .kapture_text import rows as kapture_rows
from .records import BundleRecord, BundleSet, ImageRef, split_tracks_on_gaps, validate_pose

log = logging.getLogger(__name__)

#: NAVER LABS camera subsets by the dataset's sensor ids (the M1X platform).
NAVER_GALAXY = ("AC01324954", "AC01324955", "AC01324968", "AC01324969")
NAVER_BASLER = ("22970285", "22970286", "22970288", "22970289", "22970290", "22970291")
CAMERA_SUBSETS = {"galaxy": NAVER_GALAXY, "basler": NAVER_BASLER}
#: kapture has no ROS topics: cameras read without a rig YAML get this placeholder (compressed transport).
PLACEHOLDER_TOPIC = "/kapture/{name}/image_raw"

KAPTURE_SPLITS = ("mapping", "validation", "test")
def kapture_splits_on_disk(root: str | Path) -> list[str]:
    """The split folders under ``root`` that hold ``sensors/sensors.txt`` (directly, or under ``kapture/`` or
    NAVER's ``release/``), by name; ``""`` first when ``root`` itself is a split (``data.train_split=``)."""
    root = Path(root)
    found = [""] if (root / "sensors" / "sensors.txt").is_file() else []
    for base in (root, root / "kapture", root / "release"):
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.is_dir() and ((d / "sensors" / "sensors.txt").is_file()
                               or (d / "kapture" / "sensors" / "sensors.txt").is_file()) and d.name not in found:
                found.append(d.name)
    return found


def find_kapture_split(root: str | Path, split: str | None = None, setting: str | None = None) -> Path:
    """The folder holding ``sensors/`` for ``split`` under ``root`` (``root/<split>``, ``root/kapture/<split>`` or
    NAVER's ``root/release/<split>``); ``split=None`` (or ``""``) means ``root`` itself is the split folder.

    The error lists the splits actually on disk and what to do; ``setting`` names the config key the split came from
    (``data.train_split``, ``data.val_split``) so the hint is the exact ``--set`` to type."""
    root = Path(root)
    if not split:
        cands = [root]
    else:
        cands = [root / split, root / "kapture" / split, root / "release" / split, root / split / "kapture"]
    for c in cands:
        if (c / "sensors" / "sensors.txt").is_file():
            return c
    found = kapture_splits_on_disk(root)
    listing = ", ".join("'' (the root itself)" if f == "" else f for f in found) or "none"
    what = f"no kapture split {split!r} under {root}" if split else f"{root} is not a kapture folder"
    todo: list[str] = []
    if setting == "data.val_split":
        todo.append("train without validation: --set data.val_split=null")
    if setting and found:
        todo.append(f"use a split that exists: --set {setting}={found[0]}")
    if found:
        todo.append(f"or cut the recording into mapping/validation/query with `mfapr split {root} --out DIR`")
    else:
        todo.append("point data.root (or --data) at a folder that contains sensors/sensors.txt or split folders "
                    "holding one")
    raise DataError(f"{what} (looked for {', '.join(str(c / 'sensors' / 'sensors.txt') for c in cands)}); "
                    f"kapture splits found there: {listing}. To fix: {'; '.join(todo)}")


def resolve_cameras(cameras: Sequence[str] | str | None) -> list[str] | None:
    """A camera list from config: explicit ids, or the names ``galaxy``/``basler`` for the NAVER subsets."""
    if cameras is None:
        return None
    if isinstance(cameras, str):
        if cameras.lower() in CAMERA_SUBSETS:
            return list(CAMERA_SUBSETS[cameras.lower()])
        return [c.strip() for c in cameras.split(",") if c.strip()]
    return [str(c) for c in cameras]


#: COLMAP/kapture camera models with one focal length (params after w, h: f, cx, cy, distortion…); the others
#: have fx, fy, cx, cy, distortion… (``PINHOLE``, ``OPENCV``, ``OPENCV_FISHEYE``, ``FULL_OPENCV``, ``FOV`` …).
SINGLE_FOCAL_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")


def _intrinsics(sensor: Any) -> tuple[int | None, int | None, Intrinsics | None]:
    """Image size and intrinsics of a kapture camera, keeping its model name and distortion parameters (the rig and
    the checkpoint say which lens the model was trained on; the model itself takes the images as they are)."""
    try:
        params = [float(p) for p in sensor.camera_params]
        model = sensor.camera_type.value
    except (AttributeError, TypeError, ValueError):
        return None, None, None
    if len(params) < 3:
        return None, None, None
    w, h = int(params[0]), int(params[1])
    if model in SINGLE_FOCAL_MODELS and len(params) >= 5:
        return w, h, Intrinsics(params[2], params[2], params[3], params[4], model, tuple(params[5:]))
    if len(params) >= 6 and model != "UNKNOWN_CAMERA":
        return w, h, Intrinsics(params[2], params[3], params[4], params[5], model, tuple(params[6:]))
    return w, h, None


def read_kapture(path: str | Path, cameras: Sequence[str] | str | None = None, *, split: str | None = None,
                 rig_id: str | None = None, rig: Rig | None = None, sync: SyncSettings | dict | None = None,
                 track: str | None = None, track_gap_ns: int | None = 1_000_000_000,
                 check_files: bool = True, topic_fmt: str = PLACEHOLDER_TOPIC,
                 stamp_unit: str = "auto", setting: str | None = None) -> BundleSet:
    """Read one kapture split into a :class:`BundleSet`.

    Args:
        path: the split folder (containing ``sensors/``), or a dataset root together with ``split``.
        cameras: camera sensor ids in model slot order, or ``"galaxy"``/``"basler"``; default: all cameras of the
            rig in ``rigs.txt`` order. An id not in ``sensors.txt`` is a :class:`DataError`.
        rig_id: which rig of ``rigs.txt`` (default: the one rig holding all chosen cameras).
        rig: optional rig whose extrinsics (by camera name) replace ``rigs.txt`` and whose topics are kept.
        sync: bundling policy (slop etc.), see :class:`SyncSettings`.
        track: track name (default: ``<split folder name>``); a gap longer than ``track_gap_ns`` starts a new
            segment.
        check_files: drop (and count) records whose image file is missing.
        stamp_unit: ``auto`` (detected, see :func:`detect_stamp_unit`), ``ns``, ``us``, ``ms``, ``s`` or
            ``frame@<N>hz`` (``data.stamp_unit``).
        setting: the config key ``split`` came from (``data.train_split`` …), named in the not-found error.

    Topics: kapture has none; without ``rig`` the cameras get placeholders ``/kapture/<id>/image_raw`` (compressed)
    and ``info["placeholder_topics"]`` is True (training says so loudly; set real ones with ``data.topics``).
    """
    root = find_kapture_split(path, split, setting)
    sensors_dir = root / "sensors"
    name = track or root.name
    sync = sync if isinstance(sync, SyncSettings) else SyncSettings.from_dict(sync)
    drops = DropCounter.for_reader()
    sensors, cam_ids, krigs = _read_sensors(sensors_dir)
    rig_id, chosen = _choose_rig(root, sensors_dir, krigs, cam_ids, resolve_cameras(cameras), rig_id)
    cam_rig, unknown_extrinsics = _camera_extrinsics(root, sensors_dir, krigs, rig_id, chosen, rig)
    out_rig = _make_rig(root, sensors_dir, sensors, rig_id, chosen, cam_rig, rig, topic_fmt)
    rec_path = sensors_dir / "records_camera.txt"
    streams, rows, to_ns = _read_camera_records(rec_path, sensors, chosen, check_files, stamp_unit, drops)
    _check_streams(root, rec_path, chosen, streams, rows, sync)
    # --- trajectories: per device, T_world_device
    traj_path = sensors_dir / "trajectories.txt"
    lone = lone_rig_device(root, traj_path, sensors, krigs, chosen)
    traj = read_trajectories(traj_path, set(sensors) | set(krigs) | ({lone} if lone else set()), drops, to_ns)
    rig_traj = traj.get(rig_id) if rig_id is not None else (traj.get(lone) if lone else None)
    cam_traj = {c: rig_trajectory(traj[c], cam_rig[c]) for c in chosen if c in traj and c not in unknown_extrinsics}
    syncer = sync.make(len(chosen))
    records, spreads_m, spreads_deg = _bundle_records(root, name, chosen, syncer, streams, rig_traj, cam_traj, drops)
    drops.merge(syncer.drop_counts())
    if not records:
        raise DataError(f"{root}: no bundles formed from cameras {chosen} ({drops.summary(str(root), 0)}); check "
                        "the camera ids and sync.slop (the spread allowed between cameras' stamps, s)")
    split_tracks_on_gaps(records, track_gap_ns)
    info_out: dict[str, Any] = {"root": str(root), "rig_id": rig_id or lone, "cameras": list(chosen),
                                "pose_source": "rig" if rig_traj is not None else ("cameras" if cam_traj else "none"),
                                "placeholder_topics": rig is None or any(c not in rig.camera_names for c in chosen)}
    _disagreement_info(root, spreads_m, spreads_deg, info_out)
    if rig_traj is None and not cam_traj:
        log.info("kapture %s: no trajectories: %d inference-only bundles (pose None)", root, len(records))
    out = BundleSet(out_rig, records, dict(drops), name, info_out)
    log.info(out.summary())
    return out


def _read_sensors(sensors_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, dict[str, Any]]]:
    """``sensors.txt`` (all sensors, the camera ids) and ``rigs.txt`` (rig id → camera id → pose), through the
    kapture package, the reference for this format."""
    import kapture  # noqa: F401 - the kapture package is the reference for this format
    from kapture.io.csv import rigs_from_file, sensors_from_file

    try:
        sensors = sensors_from_file(str(sensors_dir / "sensors.txt"))
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{sensors_dir / 'sensors.txt'}: cannot parse kapture sensors ({e})") from None
    cam_ids = [sid for sid, s in sensors.items() if getattr(s, "sensor_type", "") == "camera"]
    if not cam_ids:
        raise DataError(f"{sensors_dir / 'sensors.txt'} lists no camera sensors")
    krigs: dict[str, dict[str, Any]] = {}
    if (sensors_dir / "rigs.txt").is_file():
        try:
            parsed = rigs_from_file(str(sensors_dir / "rigs.txt"), set(sensors.keys()))
            krigs = {rid: dict(r) for rid, r in parsed.items()}
        except (ValueError, TypeError) as e:
            raise DataError(f"{sensors_dir / 'rigs.txt'}: cannot parse kapture rigs ({e})") from None
    return sensors, cam_ids, krigs


def _choose_rig(root: Path, sensors_dir: Path, krigs: dict[str, dict[str, Any]], cam_ids: list[str],
                chosen: list[str] | None, rig_id: str | None) -> tuple[str | None, list[str]]:
    """The rig of ``rigs.txt`` to use and the cameras in slot order (checked against ``sensors.txt``)."""
    if chosen is not None:
        unknown = [c for c in chosen if c not in cam_ids]
        if unknown:
            raise DataError(f"{root}: camera id(s) {unknown} not in sensors.txt; cameras there: {sorted(cam_ids)}. "
                            "Fix `cameras:` in the dataset config (NAVER: 'galaxy' or 'basler')")
        if len(set(chosen)) != len(chosen):
            raise DataError(f"{root}: camera list {chosen} has duplicates")
    if rig_id is None and krigs:
        want = set(chosen or [])
        holders = [rid for rid, r in krigs.items() if want <= set(r)] if want else list(krigs)
        if not holders:
            raise DataError(f"{sensors_dir / 'rigs.txt'}: no rig holds all of {sorted(want)}; rigs: "
                            f"{ {k: sorted(v) for k, v in krigs.items()} }")
        rig_id = holders[0]
        if len(holders) > 1:
            log.info("kapture %s: several rigs hold the cameras %s; using '%s'", root, sorted(want), rig_id)
    if rig_id is not None and rig_id not in krigs:
        raise DataError(f"{sensors_dir / 'rigs.txt'}: no rig '{rig_id}'; rigs: {sorted(krigs)}")
    if chosen is None:
        chosen = [c for c in krigs[rig_id] if c in cam_ids] if rig_id is not None else sorted(cam_ids)
        if not chosen:
            raise DataError(f"{sensors_dir / 'rigs.txt'}: rig '{rig_id}' holds no camera")
    return rig_id, chosen


def _camera_extrinsics(root: Path, sensors_dir: Path, krigs: dict[str, dict[str, Any]], rig_id: str | None,
                       chosen: list[str], rig: Rig | None
                       ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], set[str]]:
    """``T_cam_rig`` per chosen camera (a given rig YAML wins over ``rigs.txt``) and the cameras whose pose
    ``rigs.txt`` leaves unknown (identity placeholder; their own trajectories are not turned into rig poses)."""
    cam_rig: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # T_cam_rig per chosen camera
    unknown_extrinsics: set[str] = set()
    for c in chosen:
        if rig is not None and c in rig.camera_names:
            cam = rig.cameras[rig.index(c)]
            cam_rig[c] = pose_inverse(np.array(cam.t_base_cam), np.array(cam.q_base_cam))
        elif rig_id is not None and c in krigs[rig_id] and empty_pose(krigs[rig_id][c]):
            # kapture allows an unknown pose in rigs.txt (naver/kapture samples/t265/kapture): identity extrinsics
            # as a placeholder, and this camera's own trajectory is not turned into rig poses (below)
            log.warning("kapture %s: rigs.txt gives no pose for camera '%s' of rig '%s'; using identity extrinsics "
                        "(pass a rig YAML with the real ones: the checkpoint stores them)", root, c, rig_id)
            cam_rig[c] = (np.zeros(3), np.array([1.0, 0, 0, 0]))
            unknown_extrinsics.add(c)
        elif rig_id is not None and c in krigs[rig_id]:
            p = krigs[rig_id][c]
            checked = validate_pose(p.t_raw, p.r_raw, f"{sensors_dir / 'rigs.txt'} rig '{rig_id}' camera '{c}'")
            if isinstance(checked, str):
                raise DataError(checked)
            cam_rig[c] = checked
        elif len(chosen) == 1:
            # a single camera without rigs.txt (Aachen, 7-Scenes): identity is the only sensible rig
            log.info("kapture %s: single camera '%s' without a rigs.txt entry: identity rig (base_link = the "
                     "camera's optical frame)", root, c)
            cam_rig[c] = (np.zeros(3), np.array([1.0, 0, 0, 0]))
        else:
            raise DataError(f"{root}: no extrinsics for camera '{c}': it is not in rigs.txt"
                            f"{f' rig {rig_id!r}' if rig_id else ' (file missing)'}; add it there or pass a rig YAML")
    return cam_rig, unknown_extrinsics


def _make_rig(root: Path, sensors_dir: Path, sensors: dict[str, Any], rig_id: str | None, chosen: list[str],
              cam_rig: dict[str, tuple[np.ndarray, np.ndarray]], rig: Rig | None, topic_fmt: str) -> Rig:
    """The output rig: ``T_base_cam = (T_cam_rig)^-1``, intrinsics from ``sensors.txt``, topics from ``rig``."""
    cams = []
    for c in chosen:
        t_bc, q_bc = pose_inverse(*cam_rig[c])
        w, h, intr = _intrinsics(sensors[c])
        base = rig.cameras[rig.index(c)] if rig is not None and c in rig.camera_names else None
        topic = base.topic if base else topic_fmt.format(name=c)
        cams.append(Camera(c, topic, base.transport if base else "compressed",
                           tuple(float(v) for v in t_bc), tuple(float(v) for v in q_bc),  # type: ignore[arg-type]
                           w, h, intr))
    return Rig(rig.name if rig is not None else (rig_id or root.name), tuple(cams),
               rig.base_frame if rig is not None else "base_link", str(sensors_dir / "rigs.txt"))


def _read_camera_records(rec_path: Path, sensors: dict[str, Any], chosen: list[str], check_files: bool,
                         stamp_unit: str, drops: DropCounter
                         ) -> tuple[list[dict[int, ImageRef]], list[tuple[str, str, int, str, str]], int]:
    """``records_camera.txt`` → one ``{stamp ns: ImageRef}`` stream per chosen camera (bad rows counted), the parsed
    rows and the stamp unit factor (to ns)."""
    if not rec_path.is_file():
        raise DataError(f"{rec_path} is missing; a kapture split needs records_camera.txt")
    slot = {c: i for i, c in enumerate(chosen)}
    streams: list[dict[int, ImageRef]] = [{} for _ in chosen]
    last_stamp: dict[str, int] = {}
    data_dir = rec_path.parent / "records_data"
    rows: list[tuple[str, str, int, str, str]] = []  # where, camera, raw stamp, raw text, image path
    for line, row in kapture_rows(rec_path):
        where = f"{rec_path}:{line}"
        if len(row) < 3:
            drops.add("malformed_row", f"{where}: expected 'timestamp, sensor_id, image_path', got {row}")
            continue
        stamp_s, dev, img = row[0], row[1], ",".join(row[2:])
        if dev not in sensors:
            drops.add("unknown_camera", f"{where}: sensor id '{dev}' is not in sensors.txt")
            continue
        if dev not in slot:
            continue  # a camera outside the chosen subset: selection, not a drop
        try:
            raw = int(stamp_s)
        except ValueError:
            drops.add("malformed_row", f"{where}: timestamp '{stamp_s}' is not an integer")
            continue
        rows.append((where, dev, raw, stamp_s, img))
    by_cam: dict[str, list[int]] = {}
    for _, dev, raw, _, _ in rows:
        by_cam.setdefault(dev, []).append(raw)
    to_ns = detect_stamp_unit(by_cam, str(rec_path), stamp_unit)
    unit = "ns" if to_ns == 1 else "µs"
    for where, dev, raw, stamp_s, img in rows:
        stamp = raw * to_ns
        if dev in last_stamp and stamp < last_stamp[dev]:
            drops.add("out_of_order_reordered", f"{where}: camera {dev} stamp {stamp_s} {unit} is before the "
                      "previous row's; kept and re-sorted")
        last_stamp[dev] = max(stamp, last_stamp.get(dev, stamp))
        s = streams[slot[dev]]
        if stamp in s:
            drops.add("duplicate_record", f"{where}: camera {dev} has two images at {stamp_s} {unit}; keeping the "
                      "first")
            continue
        p = data_dir / img
        if check_files and not p.is_file():
            drops.add("missing_image_file", f"{where}: {p} does not exist")
            continue
        s[stamp] = ImageRef.from_path(p)
    return streams, rows, to_ns


def _check_streams(root: Path, rec_path: Path, chosen: list[str], streams: list[dict[int, ImageRef]],
                   rows: list[tuple[str, str, int, str, str]], sync: SyncSettings) -> None:
    """A camera without images fails when bundles need every camera, else it is warned about (always masked)."""
    if not any(streams):
        if rows:  # the cameras have records, but none of their image files exists
            first = rec_path.parent / "records_data" / rows[0][4]
            raise DataError(f"{rec_path}: all {len(rows)} image files listed for cameras {chosen} are missing "
                            f"(first missing: {first}); copy or link the images into {rec_path.parent / 'records_data'}"
                            " (the paths in records_camera.txt are relative to it)")
        raise DataError(f"{rec_path}: no images for cameras {chosen} (empty split, or wrong camera ids); "
                        f"cameras with records: {sorted(set(d for _, r in kapture_rows(rec_path) for d in r[1:2]))}")
    empty = [c for c, s in zip(chosen, streams, strict=True) if not s]
    full_only = not sync.min_streams or sync.min_streams >= len(chosen)
    if empty and full_only:
        listed = any(d in empty for _, d, _, _, _ in rows)
        why = " (their image files are missing)" if listed else " (no records in records_camera.txt)"
        raise DataError(f"{rec_path}: camera(s) {empty} have no images{why}, but bundles need all {len(chosen)} "
                        "cameras; drop them from `cameras:` (data.cameras) or "
                        f"allow partial bundles with data.sync.min_cameras < {len(chosen)}")
    for c in empty:
        log.warning("kapture %s: camera %s has no images; its slot is always masked", root, c)


def _bundle_records(root: Path, name: str, chosen: list[str], syncer: Any, streams: list[dict[int, ImageRef]],
                    rig_traj: Any, cam_traj: dict[str, Any], drops: DropCounter
                    ) -> tuple[list[BundleRecord], list[float], list[float]]:
    """Bundles through the shared synchronizer, each with its rig pose when there are trajectories (bundles without
    one are counted drops); also the per-bundle disagreement of the cameras' rig poses (m, °)."""
    events = merge_streams([sorted(s.items()) for s in streams])
    records: list[BundleRecord] = []
    has_gt = rig_traj is not None or bool(cam_traj)
    spreads_m: list[float] = []
    spreads_deg: list[float] = []
    for b in run_synchronizer(syncer, events):
        mask = np.asarray(b.mask, dtype=bool)
        imgs = [b.payloads[i] if mask[i] else None for i in range(len(chosen))]
        stamps = [int(b.stamps_ns[i]) if mask[i] else None for i in range(len(chosen))]
        info: dict[str, Any] = {}
        t = q = None
        if has_gt:
            pose = bundle_pose(int(b.stamp_ns), chosen, stamps, rig_traj, cam_traj, info)
            if pose is None:
                drops.add("no_ground_truth", f"{root}: bundle at {b.stamp_ns} ns has no trajectory pose for any "
                          "present camera (or the rig)")
                continue
            t, q = pose
            if "disagreement_m" in info:
                spreads_m.append(info["disagreement_m"])
                spreads_deg.append(info["disagreement_deg"])
        records.append(BundleRecord(int(b.stamp_ns), imgs, stamps, mask, t, q, name, len(records), info))
    return records, spreads_m, spreads_deg


def _disagreement_info(root: Path, spreads_m: list[float], spreads_deg: list[float], info_out: dict[str, Any]) -> None:
    """Record (and log) how far the per-camera rig poses disagree, when several cameras gave one."""
    if not spreads_m:
        return
    info_out["disagreement_m"] = {"median": float(np.median(spreads_m)), "max": float(np.max(spreads_m))}
    info_out["disagreement_deg"] = {"median": float(np.median(spreads_deg)), "max": float(np.max(spreads_deg))}
    log.info("kapture %s: per-camera rig poses disagree by median %.3f m / %.2f° (max %.3f m / %.2f°)", root,
             info_out["disagreement_m"]["median"], info_out["disagreement_deg"]["median"],
             info_out["disagreement_m"]["max"], info_out["disagreement_deg"]["max"])


def read_kapture_splits(root: str | Path, cameras: Sequence[str] | str | None = None,
                        splits: Sequence[str] = KAPTURE_SPLITS, **kw: Any) -> dict[str, BundleSet]:
    """Each present split of a dataset root as its own :class:`BundleSet` (``{split: set}``); none → DataError."""
    out = {}
    for s in splits:
        try:
            folder = find_kapture_split(root, s)
        except DataError:
            continue
        out[s] = read_kapture(folder, cameras, **kw)
    if not out:
        raise DataError(f"{root}: none of the splits {list(splits)} is a kapture folder (each needs sensors/)")
    return out


