"""Camera rig description: ordered cameras, their ROS topics and transports, and base_link←camera extrinsics.

A rig is the contract between data, model and node: model input slot ``i`` is ``rig.cameras[i]``; checkpoints
store the rig so the node binds topics to camera *names*, never to positions. Camera frames are optical frames
(z forward, x right, y down, REP-103 ``*_optical_frame``); ``T_base_camera`` maps camera points to base_link.

YAML layout (``config/rigs/*.yaml``)::

    name: ring4
    base_frame: base_link
    cameras:
      - name: cam0
        topic: /cam0/image_raw          # for transport: compressed the node subscribes to <topic>/compressed
        transport: raw                  # raw | compressed
        extrinsics: {xyz: [0.1, 0.0, 1.2], quat_wxyz: [w, x, y, z]}   # T_base_camera; required (identity too)
        image: {width: 128, height: 128}                               # optional
        intrinsics: {fx: 64, fy: 64, cx: 64, cy: 64}                   # optional, pixels
        # optional: the camera model the intrinsics come from (COLMAP/kapture names) and its distortion
        # parameters, kept so a checkpoint says which lens it was trained on (models take images as they are)
        # intrinsics: {fx: 284.5, fy: 285.5, cx: 424.4, cy: 393.7, model: OPENCV_FISHEYE, distortion: [k1, k2, k3, k4]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError
from .geometry import pose_compose, pose_inverse, quat_from_yaw, quat_mul, quat_norm_error, quat_normalize

MAX_CAMERAS = 16
TRANSPORTS = ("raw", "compressed")

#: Rotation base_link (x fwd, y left, z up) ← optical frame (z fwd, x right, y down), as (w, x, y, z).
Q_BASE_OPTICAL = np.array([0.5, -0.5, 0.5, -0.5])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels, with the camera model they came from (``PINHOLE``, ``OPENCV``,
    ``OPENCV_FISHEYE`` … as COLMAP/kapture name them) and that model's distortion parameters (empty: none)."""

    fx: float
    fy: float
    cx: float
    cy: float
    model: str = "PINHOLE"
    distortion: tuple[float, ...] = ()

    @property
    def distorted(self) -> bool:
        """True when the lens model has non-zero distortion (a model fed raw images learns through it)."""
        return any(abs(d) > 0 for d in self.distortion)


@dataclass(frozen=True)
class Camera:
    """One camera of the rig: its name, ROS topic, transport and extrinsics ``T_base_camera``."""

    name: str
    topic: str
    transport: str = "raw"
    t_base_cam: tuple[float, float, float] = (0.0, 0.0, 0.0)
    q_base_cam: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    width: int | None = None
    height: int | None = None
    intrinsics: Intrinsics | None = None

    @property
    def subscribe_topic(self) -> str:
        """Topic the node subscribes to: image_transport's ``<base>/compressed`` for compressed cameras."""
        if self.transport == "compressed" and not self.topic.endswith("/compressed"):
            return self.topic.rstrip("/") + "/compressed"
        return self.topic


@dataclass(frozen=True)
class Rig:
    """An ordered list of cameras mounted on one base frame."""

    name: str
    cameras: tuple[Camera, ...]
    base_frame: str = "base_link"
    source: str = field(default="<dict>", compare=False)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    def index(self, name: str) -> int:
        """Slot of a camera by name, with a clear error listing the rig's cameras."""
        for i, c in enumerate(self.cameras):
            if c.name == name:
                return i
        raise ConfigError(f"rig '{self.name}' ({self.source}) has no camera '{name}'; cameras: {self.camera_names}")

    def extrinsics(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t (T,3), q (T,4))`` of all ``T_base_camera`` in slot order."""
        t = np.array([c.t_base_cam for c in self.cameras], dtype=np.float64)
        q = np.array([c.q_base_cam for c in self.cameras], dtype=np.float64)
        return t, q

    def camera_poses(self, t_world_rig: np.ndarray, q_world_rig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World poses of every camera ``T_world_cam_i = T_world_rig · T_rig_cam_i``; shapes (..., T, 3/4)."""
        t_bc, q_bc = self.extrinsics()
        return pose_compose(np.asarray(t_world_rig)[..., None, :], np.asarray(q_world_rig)[..., None, :], t_bc, q_bc)

    def rig_from_camera(self, slot: int, t_world_cam: np.ndarray, q_world_cam: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Rig pose implied by camera ``slot``'s world pose: ``T_world_rig = T_world_cam · T_rig_cam⁻¹``."""
        c = self.cameras[slot]
        ti, qi = pose_inverse(np.array(c.t_base_cam), np.array(c.q_base_cam))
        return pose_compose(t_world_cam, q_world_cam, ti, qi)

    def subset(self, names: list[str]) -> Rig:
        """A rig of the named cameras in the given order (e.g. the 4 Galaxy phones of the NAVER LABS M1X)."""
        return Rig(self.name, tuple(self.cameras[self.index(n)] for n in names), self.base_frame, self.source)

    def with_topics(self, topics: dict[str, str]) -> Rig:
        """Copy with some cameras' topics remapped (``{camera_name: topic}``); unknown names are an error."""
        for n in topics:
            self.index(n)
        cams = tuple(_replace(c, topic=topics.get(c.name, c.topic)) for c in self.cameras)
        return Rig(self.name, cams, self.base_frame, self.source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON document form (stored in checkpoints and reports)."""
        cams = []
        for c in self.cameras:
            d: dict[str, Any] = {
                "name": c.name,
                "topic": c.topic,
                "transport": c.transport,
                "extrinsics": {"xyz": list(c.t_base_cam), "quat_wxyz": list(c.q_base_cam)},
            }
            if c.width is not None and c.height is not None:
                d["image"] = {"width": c.width, "height": c.height}
            if c.intrinsics is not None:
                d["intrinsics"] = {"fx": c.intrinsics.fx, "fy": c.intrinsics.fy,
                                   "cx": c.intrinsics.cx, "cy": c.intrinsics.cy}
                if c.intrinsics.model != "PINHOLE" or c.intrinsics.distortion:
                    d["intrinsics"]["model"] = c.intrinsics.model
                    d["intrinsics"]["distortion"] = list(c.intrinsics.distortion)
            cams.append(d)
        return {"name": self.name, "base_frame": self.base_frame, "cameras": cams}

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> Rig:
        """Validate a rig document; every error names the source and the offending key."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: a rig must be a mapping with 'name' and 'cameras'")
        cams_doc = doc.get("cameras")
        if not isinstance(cams_doc, list) or not cams_doc:
            raise ConfigError(f"{source}: 'cameras' must be a non-empty list (a rig has 1..{MAX_CAMERAS} cameras)")
        if len(cams_doc) > MAX_CAMERAS:
            raise ConfigError(f"{source}: 'cameras' has {len(cams_doc)} entries; at most {MAX_CAMERAS} are supported")
        cams = []
        seen: set[str] = set()
        for i, cd in enumerate(cams_doc):
            where = f"{source}: cameras[{i}]"
            if not isinstance(cd, dict):
                raise ConfigError(f"{where} must be a mapping")
            name = cd.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}.name is missing or not a string")
            where = f"{source}: cameras[{i}] ('{name}')"
            if name in seen:
                raise ConfigError(f"{where}: duplicate camera name '{name}'")
            seen.add(name)
            topic = cd.get("topic")
            if not isinstance(topic, str) or not topic:
                raise ConfigError(f"{where}.topic is missing; give the ROS image topic of this camera")
            transport = cd.get("transport", "raw")
            if transport not in TRANSPORTS:
                raise ConfigError(f"{where}.transport is '{transport}'; expected one of {TRANSPORTS}")
            if "extrinsics" not in cd:  # never a silent identity: a forgotten mount would still publish poses
                raise ConfigError(f"{where}: key 'extrinsics' is missing (T_base_camera); write it explicitly, "
                                  "e.g. extrinsics: {xyz: [0, 0, 0], quat_wxyz: [1, 0, 0, 0]} for the identity")
            ext = cd["extrinsics"]
            if not isinstance(ext, dict):
                raise ConfigError(f"{where}.extrinsics must be a mapping with xyz and quat_wxyz, got {ext!r}")
            xyz = _floats(ext.get("xyz"), 3, f"{where}.extrinsics.xyz")
            quat = _floats(ext.get("quat_wxyz"), 4, f"{where}.extrinsics.quat_wxyz")
            if quat_norm_error(quat) > 1e-3:
                raise ConfigError(f"{where}.extrinsics.quat_wxyz {quat} is not a unit quaternion "
                                  f"(norm {np.linalg.norm(quat):.4f}); order is (w, x, y, z)")
            q = tuple(float(v) for v in quat_normalize(quat))
            width = height = None
            if "image" in cd:
                img = cd["image"]
                if not isinstance(img, dict):
                    raise ConfigError(f"{where}.image must be a mapping with width and height")
                width, height = _posint(img.get("width"), f"{where}.image.width"), _posint(
                    img.get("height"), f"{where}.image.height")
            intr = None
            if "intrinsics" in cd:
                k = cd["intrinsics"]
                if not isinstance(k, dict):
                    raise ConfigError(f"{where}.intrinsics must be a mapping fx, fy, cx, cy")
                try:
                    intr = Intrinsics(*(float(k[key]) for key in ("fx", "fy", "cx", "cy")),
                                      model=str(k.get("model", "PINHOLE")),
                                      distortion=tuple(float(v) for v in k.get("distortion", ()) or ()))
                except (KeyError, TypeError, ValueError) as e:
                    raise ConfigError(f"{where}.intrinsics needs numeric fx, fy, cx, cy (and optional model, "
                                      f"distortion: a list of numbers) ({e})") from None
            cams.append(Camera(name, topic, transport, tuple(xyz), q, width, height, intr))  # type: ignore[arg-type]
        name = doc.get("name", Path(source).stem)
        base = doc.get("base_frame", "base_link")
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{source}: base_frame must be a non-empty string")
        return cls(str(name), tuple(cams), base, source)


def _replace(c: Camera, **kw: Any) -> Camera:
    from dataclasses import replace

    return replace(c, **kw)


def _floats(v: Any, n: int, where: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ConfigError(f"{where} must be a list of {n} numbers")
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a list of {n} numbers, got {v!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise ConfigError(f"{where} must be finite, got {v!r}")
    return out


def _posint(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {v!r}")
    return v


def load_rig(path: str | Path) -> Rig:
    """Load and validate a rig YAML file. A bare name like ``ring4`` resolves to the shipped ``config/rigs``."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and not p.parent.name:
        p = shipped_config_dir() / "rigs" / f"{p.name}.yaml"
    if not p.exists():
        raise ConfigError(f"rig file not found: {path} (shipped rigs: {sorted(shipped_rig_names())})")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    return Rig.from_dict(doc, source=str(p))


def shipped_config_dir() -> Path:
    """The package's ``config/`` folder: the source tree, or ``share/mfapr_ros/config`` of an install."""
    here = Path(__file__).resolve().parent
    candidates = [here.parents[1] / "config"]
    try:  # a colcon/ament install
        from ament_index_python.packages import get_package_share_directory  # type: ignore[import-not-found]

        candidates.append(Path(get_package_share_directory("mfapr_ros")) / "config")
    except Exception:  # noqa: BLE001 - ament index absent or package not indexed: fall back to the source tree
        pass
    import sys

    candidates.append(Path(sys.prefix) / "share" / "mfapr_ros" / "config")
    for c in candidates:
        if (c / "rigs").is_dir():
            return c
    return candidates[0]


def shipped_rig_names() -> list[str]:
    return [p.stem for p in (shipped_config_dir() / "rigs").glob("*.yaml")]


def ring_rig(num_cameras: int, radius: float = 0.1, height: float = 1.2, name: str | None = None,
             topic_fmt: str = "/{name}/image_raw", transport: str = "raw", image_size: int | None = None,
             hfov_deg: float | None = None) -> Rig:
    """A ring of cameras looking outwards at equal yaw steps (camera i at yaw ``i·360°/N``).

    Ring rigs are the symmetric case of track augmentation: shifting slots by one equals a yaw of ``360°/N``.
    """
    if not 1 <= num_cameras <= MAX_CAMERAS:
        raise ConfigError(f"ring_rig: num_cameras must be in 1..{MAX_CAMERAS}, got {num_cameras}")
    cams = []
    for i in range(num_cameras):
        yaw = 2.0 * math.pi * i / num_cameras
        q = quat_normalize(quat_mul(quat_from_yaw(yaw), Q_BASE_OPTICAL))
        t = (radius * math.cos(yaw), radius * math.sin(yaw), height)
        cname = f"cam{i}"
        intr = None
        if image_size is not None and hfov_deg is not None:
            f = _tidy(0.5 * image_size / math.tan(math.radians(hfov_deg) / 2))
            intr = Intrinsics(f, f, image_size / 2, image_size / 2)
        cams.append(Camera(cname, topic_fmt.format(name=cname, i=i), transport,
                           tuple(_tidy(v) for v in t), tuple(_tidy(v) for v in q),  # type: ignore[arg-type]
                           image_size, image_size, intr))
    return Rig(name or f"ring{num_cameras}", tuple(cams))


def _tidy(v: float) -> float:
    """Round away float noise (6e-18 → 0.0) so generated rig files read cleanly; exact to 1e-10."""
    return round(float(v), 10) + 0.0


def write_rig(rig: Rig, path: str | Path) -> None:
    """Write a rig YAML (atomically) that :func:`load_rig` reads back to an equal rig."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(rig.to_dict(), sort_keys=False))
