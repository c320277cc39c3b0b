"""The synthetic-world pipeline: world → tracks → stamps → render (parallel) → JPEG → kapture + rosbag2 + world.json.

Determinism: every random choice is drawn from a generator seeded by ``(seed, purpose, index)``, never from a shared
stream, so the output does not depend on ``workers``, chunking or the order splits are written in. Same seed →
byte-identical images and CSVs; a different seed → a different floor, routes, lighting and offsets.

Rendering runs in worker processes (``fork``; the world is inherited, not pickled per task); the main process
writes files in frame order, so kapture and bag writes stream with bounded memory.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.geometry import pose_compose
from mfapr_ros.core.io import atomic_write_json
from mfapr_ros.core.odometry import OdometryDrift, simulate_odometry
from mfapr_ros.core.rig import Intrinsics, Rig, write_rig

from .bag_writer import STORAGES, TRANSPORTS, BagSplitWriter
from .kapture_writer import KaptureSplitWriter
from .render import CameraModel, render
from .tracks import MAPPING_SIDES, NS, StampPlan, Track, camera_offsets_ns, plan_stamps, plan_tracks
from .world import Lighting, World, WorldConfig, build_world, make_lighting

SPLITS = ("mapping", "validation", "query", "query_reverse")
#: ``both``: forward query tracks in ``query`` plus their reversed twins in ``query_reverse`` (one world, two tests)
QUERY_DIRECTIONS = ("reverse", "forward", "both")
FORMAT_VERSION = 1


@dataclass
class SynthConfig:
    """Everything that defines a synthetic dataset (saved in world.json)."""

    out: str
    rig: str = "ring4"
    seed: int = 0
    frames: int = 500
    mapping_tracks: int = 2
    mapping_lanes: int = 1  # passes per mapping route, each in its own lane and lighting
    validation_route: str = "walk"  # walk (a new random walk) | revisit (a mapping route, like the query)
    validation_tracks: int = 1
    query_tracks: int = 1
    query_direction: str = "reverse"  # query track k drives mapping route k in reverse, forward, or both
    mapping_side: str = "both"  # mapping passes span both sides of the centre line, or only the right (hard case)
    size: int = 128
    rate_hz: float = 10.0
    speed_mps: float = 1.0
    transport: str = "raw"
    bag_storage: str = "sqlite3"
    bags: tuple[str, ...] = ("query",)
    drop_rate: float = 0.0
    shared_trigger: bool = False
    offset_ms: float = 15.0
    jitter_ms: float = 3.0
    jpeg_quality: int = 90
    workers: int = 2
    lighting_variation: bool = True
    # simulated wheel odometry (odom → base_link on the bags' /tf, with drift); None = GT TF map → base_link only
    odometry: OdometryDrift | None = field(default_factory=OdometryDrift)
    world: WorldConfig = field(default_factory=WorldConfig)

    def validate(self) -> None:
        """Every bad value → ConfigError naming the option and what to pass instead."""
        def bad(opt: str, msg: str) -> ConfigError:
            return ConfigError(f"--{opt.replace('_', '-')}: {msg}")

        if self.frames < 2:
            raise bad("frames", f"need at least 2 frames per track, got {self.frames}")
        for name in ("mapping_tracks", "validation_tracks", "query_tracks"):
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.mapping_lanes <= 16:
            raise bad("mapping_lanes", f"must be in 1..16, got {self.mapping_lanes}")
        if self.validation_route not in ("walk", "revisit"):
            raise bad("validation_route", f"'{self.validation_route}' is not one of walk, revisit")
        if self.query_direction not in QUERY_DIRECTIONS:
            raise bad("query_direction", f"'{self.query_direction}' is not one of {', '.join(QUERY_DIRECTIONS)}")
        if self.mapping_side not in MAPPING_SIDES:
            raise bad("mapping_side", f"'{self.mapping_side}' is not one of {', '.join(MAPPING_SIDES)}")
        if self.mapping_tracks + self.validation_tracks + self.query_tracks == 0:
            raise bad("mapping_tracks", "all track counts are 0; nothing to generate")
        if not 8 <= self.size <= 2048:
            raise bad("size", f"image width must be in 8..2048 px, got {self.size}")
        if not 0.5 <= self.rate_hz <= 200:
            raise bad("rate_hz", f"frame rate must be in 0.5..200 Hz, got {self.rate_hz}")
        if not 0.05 <= self.speed_mps <= 5:
            raise bad("speed_mps", f"speed must be in 0.05..5 m/s, got {self.speed_mps}")
        if self.transport not in TRANSPORTS:
            raise bad("transport", f"'{self.transport}' is not one of {TRANSPORTS}")
        if self.bag_storage not in STORAGES:
            raise bad("bag_storage", f"'{self.bag_storage}' is not one of {sorted(STORAGES)}")
        for b in self.bags:
            if b not in SPLITS:
                raise bad("bags", f"unknown split '{b}'; use a comma list of {SPLITS}, 'all' or 'none'")
        if not 0.0 <= self.drop_rate < 1.0:
            raise bad("drop_rate", f"must be in [0, 1), got {self.drop_rate}")
        if not 0.0 <= self.offset_ms <= 1000 or not 0.0 <= self.jitter_ms <= 1000:
            raise bad("offset_ms", "offset and jitter must be in [0, 1000] ms")
        if self.offset_ms + self.jitter_ms >= 500.0 / self.rate_hz:
            raise bad("offset_ms", f"offset + jitter ({self.offset_ms + self.jitter_ms} ms) must stay under half "
                                   f"a frame period ({500.0 / self.rate_hz:.1f} ms) so frames keep their order")
        if not 1 <= self.jpeg_quality <= 100:
            raise bad("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}")
        if not 1 <= self.workers <= 64:
            raise bad("workers", f"must be in 1..64, got {self.workers}")
        self.world.validate()


def camera_models(rig: Rig, size: int, default_hfov_deg: float = 90.0) -> list[CameraModel]:
    """Render intrinsics per camera: the rig's intrinsics scaled to width ``size`` (aspect kept).

    A camera without intrinsics gets a ``default_hfov_deg`` pinhole; one without an image size is assumed to have
    its principal point at the image centre (size ``2·cx × 2·cy``).
    """
    out = []
    for c in rig.cameras:
        k = c.intrinsics
        w0 = c.width or (int(round(2 * k.cx)) if k else size)
        h0 = c.height or (int(round(2 * k.cy)) if k else size)
        s = size / w0
        h = max(1, int(round(h0 * s)))
        if k is None:
            f = 0.5 * size / math.tan(math.radians(default_hfov_deg) / 2)
            out.append(CameraModel(size, h, f, f, size / 2, h / 2))
        else:
            out.append(CameraModel(size, h, k.fx * s, k.fy * s, k.cx * s, k.cy * s))
    return out


def rendered_rig(rig: Rig, models: list[CameraModel], transport: str) -> Rig:
    """The rig as the generated data has it: rendered image size and intrinsics, and the bag's transport.

    Written to OUT/rig.yaml so training, the node and the player bind to exactly what is in the data.
    """
    cams = tuple(replace(c, width=m.width, height=m.height, transport=transport,
                         intrinsics=Intrinsics(m.fx, m.fy, m.cx, m.cy))
                 for c, m in zip(rig.cameras, models, strict=True))
    return Rig(rig.name, cams, rig.base_frame, rig.source)


def exposure(seed: int, slot: int, stamps_ns: np.ndarray) -> np.ndarray:
    """Per-camera auto-exposure drift (±6 %, slow sine), a deterministic function of the stamp."""
    rng = np.random.default_rng([seed, 0xE7905, slot])
    period, phase = rng.uniform(5.0, 15.0), rng.uniform(0, 2 * np.pi)
    return 1.0 + 0.06 * np.sin(2 * np.pi * (np.asarray(stamps_ns) % (1000 * NS)) / NS / period + phase)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class _Job:
    """What a worker needs (inherited through fork)."""

    world: World
    rig: Rig
    models: list[CameraModel]
    tracks: list[Track]
    lightings: list[Lighting]
    plans: list[StampPlan]
    seed: int
    quality: int
    raw_tracks: set[int]
    odometry: OdometryDrift | None = None
    odom_cache: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


_JOB: _Job | None = None


def render_chunk(job: _Job, ti: int, f0: int, f1: int) -> list[tuple[int, int, bytes, np.ndarray | None]]:
    """Render, for track ``ti`` frames ``[f0, f1)``, every present camera image at its own stamp.

    Returns ``(frame, slot, jpeg, rgb-or-None)`` in (frame, slot) order; rgb is kept only for raw bags.
    """
    plan, track = job.plans[ti], job.tracks[ti]
    out: list[tuple[int, int, bytes, np.ndarray | None]] = []
    results: dict[tuple[int, int], np.ndarray] = {}
    # one batch per camera model (cameras may differ in size); cameras sharing a model batch together
    groups: dict[CameraModel, list[int]] = {}
    for slot, m in enumerate(job.models):
        groups.setdefault(m, []).append(slot)
    t_bc, q_bc = job.rig.extrinsics()
    for model, slots in groups.items():
        ff, ss = np.nonzero(plan.present[f0:f1][:, slots])
        if len(ff) == 0:
            continue
        ff = ff + f0
        sl = np.asarray(slots)[ss]
        stamps = plan.camera_ns[ff, sl]
        t_wr, q_wr = track.pose_at(stamps)
        t_wc, q_wc = pose_compose(t_wr, q_wr, t_bc[sl], q_bc[sl])
        expo = np.empty(len(sl))
        for s in np.unique(sl):
            expo[sl == s] = exposure(job.seed, int(s), stamps[sl == s])
        imgs = render(job.world, job.lightings[ti], model, t_wc, q_wc, exposure=expo)
        for k in range(len(ff)):
            results[int(ff[k]), int(sl[k])] = imgs[k]  # type: ignore[index]
    keep_raw = ti in job.raw_tracks
    for key in sorted(results):
        rgb = results[key]
        out.append((key[0], key[1], encode_jpeg(rgb, job.quality), rgb if keep_raw else None))
    return out


def _worker(task: tuple[int, int, int]) -> tuple[tuple[int, int, int], list[tuple[int, int, bytes, np.ndarray | None]]]:
    assert _JOB is not None
    return task, render_chunk(_JOB, *task)


@dataclass
class SynthResult:
    """Paths and figures of one run (also in world.json)."""

    out: Path
    images: int
    frames: int
    dropped: int
    seconds: float
    render_seconds: float
    splits: dict[str, dict[str, Any]]

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def _chunks(tracks: list[Track], frames: int, per_chunk: int, indices: list[int]) -> Iterator[tuple[int, int, int]]:
    for ti in indices:
        for f0 in range(0, frames, per_chunk):
            yield ti, f0, min(frames, f0 + per_chunk)


@dataclass
class Scene:
    """Everything a dataset is rendered from, rebuilt exactly from its config (the seed fixes every draw)."""

    world: World
    rig: Rig  # the rendered rig (intrinsics of the rendered images, the dataset's transport)
    models: list[CameraModel]
    tracks: list[Track]
    plans: list[StampPlan]
    lightings: list[Lighting]
    offsets: np.ndarray


def build_scene(cfg: SynthConfig, rig: Rig) -> Scene:
    """World, tracks, camera stamps and per-track lighting of ``cfg`` — what :func:`generate` renders, and what a
    diagnostic needs to re-render a track under changed conditions (bench/relight.py)."""
    world = build_world(cfg.world)
    models = camera_models(rig, cfg.size)
    rig = rendered_rig(rig, models, cfg.transport)
    tracks = plan_tracks(world, cfg.seed, cfg.frames, cfg.rate_hz, cfg.mapping_tracks, cfg.validation_tracks,
                         cfg.query_tracks, cfg.speed_mps, cfg.query_direction, cfg.mapping_lanes,
                         cfg.validation_route, cfg.mapping_side)
    offsets = camera_offsets_ns(cfg.seed, rig.num_cameras, cfg.shared_trigger, cfg.offset_ms)
    plans = [plan_stamps(tr, cfg.frames, cfg.rate_hz, offsets, cfg.shared_trigger, cfg.jitter_ms, cfg.drop_rate,
                         cfg.seed, i) for i, tr in enumerate(tracks)]
    lightings = [make_lighting(world, (cfg.seed, 0x11647, i), cfg.lighting_variation) for i in range(len(tracks))]
    return Scene(world, rig, models, tracks, plans, lightings, offsets)


def config_from_world_doc(doc: dict[str, Any], out: str | None = None) -> SynthConfig:
    """The :class:`SynthConfig` a dataset was generated with, from its ``world.json`` (``out`` replaces the
    folder)."""
    c = dict(doc["config"])
    c["world"] = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c["world"].items()})
    c["odometry"] = OdometryDrift(**c["odometry"]) if c.get("odometry") is not None else None
    c["bags"] = tuple(c.get("bags") or ())
    if out is not None:
        c["out"] = out
    cfg = SynthConfig(**c)
    cfg.validate()
    return cfg


def generate(cfg: SynthConfig, rig: Rig, progress: Callable[[str], None] | None = None) -> SynthResult:
    """Generate the dataset described by ``cfg`` with ``rig`` into ``cfg.out`` (which must not hold a dataset)."""
    global _JOB
    cfg.validate()
    out = Path(cfg.out)
    for sub in ("kapture", "bags", "world.json"):
        if (out / sub).exists():
            raise ConfigError(f"--out {out} already holds a synthetic dataset ({sub}); choose a new folder")
    t_start = time.perf_counter()
    scene = build_scene(cfg, rig)
    world, models, rig, tracks = scene.world, scene.models, scene.rig, scene.tracks
    offsets, plans, lightings = scene.offsets, scene.plans, scene.lightings
    raw_tracks = {i for i, tr in enumerate(tracks) if tr.split in cfg.bags and cfg.transport == "raw"}
    job = _Job(world, rig, models, tracks, lightings, plans, cfg.seed, cfg.jpeg_quality, raw_tracks, cfg.odometry)
    out.mkdir(parents=True, exist_ok=True)
    write_rig(rig, out / "rig.yaml")

    per_chunk = max(1, 256 // rig.num_cameras)
    total_frames = len(tracks) * cfg.frames
    done_frames = images = dropped = 0
    render_s = 0.0
    split_info: dict[str, dict[str, Any]] = {}
    pool = None
    if cfg.workers > 1:
        _JOB = job
        pool = mp.get_context("fork").Pool(cfg.workers)
    try:
        for split in SPLITS:
            idx = [i for i, tr in enumerate(tracks) if tr.split == split]
            if not idx:
                continue
            kw = KaptureSplitWriter(out / "kapture" / split, rig, models)
            bw = (BagSplitWriter(out / "bags" / split, rig, cfg.bag_storage, cfg.transport)
                  if split in cfg.bags else None)
            try:
                tasks = list(_chunks(tracks, cfg.frames, per_chunk, idx))
                t0 = time.perf_counter()
                results = (pool.imap(_worker, tasks) if pool is not None
                           else ((task, render_chunk(job, *task)) for task in tasks))
                for (ti, f0, f1), items in results:
                    images += _write_chunk(job, ti, f0, f1, items, kw, bw, cfg)
                    dropped += int((~plans[ti].present[f0:f1]).sum())
                    done_frames += f1 - f0
                    if progress is not None:
                        el = time.perf_counter() - t_start
                        progress(f"synth: {split:<10} {done_frames}/{total_frames} frames, {images} images, "
                                 f"{images / max(el, 1e-9):.0f} img/s")
                render_s += time.perf_counter() - t0
                kw.close()
                if bw is not None:
                    bw.close()
            except BaseException:
                kw.abort()
                if bw is not None:
                    bw.abort()
                raise
            split_info[split] = {"tracks": [tracks[i].name for i in idx], "kapture": f"kapture/{split}",
                                 "bag": f"bags/{split}" if bw is not None else None,
                                 "bag_topics": dict(bw.counts) if bw is not None else None,
                                 "images": kw.count}
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _JOB = None
    seconds = time.perf_counter() - t_start
    result = SynthResult(out, images, total_frames, dropped, seconds, render_s, split_info)
    atomic_write_json(out / "world.json", _world_doc(cfg, rig, world, tracks, plans, lightings, offsets, models,
                                                     result))
    return result


def _write_chunk(job: _Job, ti: int, f0: int, f1: int, items: list[tuple[int, int, bytes, np.ndarray | None]],
                 kw: KaptureSplitWriter, bw: BagSplitWriter | None, cfg: SynthConfig) -> int:
    """Write one rendered chunk: kapture images + per-camera GT, and bag messages in time order."""
    plan, track, rig = job.plans[ti], job.tracks[ti], job.rig
    t_bc, q_bc = rig.extrinsics()
    if items:
        fr = np.array([it[0] for it in items])
        sl = np.array([it[1] for it in items])
        stamps = plan.camera_ns[fr, sl]
        t_wr, q_wr = track.pose_at(stamps)
        t_wc, q_wc = pose_compose(t_wr, q_wr, t_bc[sl], q_bc[sl])
        for k, (_f, slot, jpeg, _rgb) in enumerate(items):
            kw.add(rig.cameras[slot].name, int(stamps[k]), jpeg, t_wc[k], q_wc[k])
    if bw is not None:
        # GT at the trigger stamps, one frame beyond each end so camera stamps with negative/positive offsets at
        # the track ends stay inside GT coverage
        period = int(round(NS / cfg.rate_hz))
        gt_frames = list(range(f0, f1))
        if f0 == 0:
            gt_frames.insert(0, -1)
        if f1 == cfg.frames:
            gt_frames.append(cfg.frames)
        gt_ns = track.start_ns + np.array(gt_frames, dtype=np.int64) * period
        gt_t, gt_q = track.pose_at(gt_ns)
        odom = _track_odometry(job, ti, cfg)
        msgs: list[tuple[int, int, int]] = [(int(s), 0, k) for k, s in enumerate(gt_ns)]
        msgs += [(int(plan.camera_ns[it[0], it[1]]), 1, k) for k, it in enumerate(items)]
        for stamp, typ, k in sorted(msgs):
            if typ == 0:
                f = gt_frames[k] + 1  # odometry rows start at frame -1
                bw.write_gt(stamp, gt_t[k], gt_q[k], None if odom is None else (odom[0][f], odom[1][f]))
            else:
                _f, slot, jpeg, rgb = items[k]
                bw.write_image(slot, stamp, rgb=rgb, jpeg=jpeg)
    return len(items)


def _track_odometry(job: _Job, ti: int, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Simulated odometry ``T_odom_base`` of track ``ti`` at its GT frames ``-1 .. frames`` (row 0 = frame −1),
    computed once per track from its own generator ``(seed, 0x0D0, ti)``, so it does not depend on chunking."""
    if job.odometry is None:
        return None
    if ti not in job.odom_cache:
        track = job.tracks[ti]
        period = int(round(NS / cfg.rate_hz))
        gt_ns = track.start_ns + np.arange(-1, cfg.frames + 1, dtype=np.int64) * period
        t, q = track.pose_at(gt_ns)
        job.odom_cache[ti] = simulate_odometry(t, q, job.odometry, np.random.default_rng((cfg.seed, 0x0D0, ti)))
    return job.odom_cache[ti]


def _world_doc(cfg: SynthConfig, rig: Rig, world: World, tracks: list[Track], plans: list[StampPlan],
               lightings: list[Lighting], offsets: np.ndarray, models: list[CameraModel],
               result: SynthResult) -> dict[str, Any]:
    doc_cfg = asdict(cfg)
    doc_cfg["bags"] = list(cfg.bags)
    doc_cfg["odometry"] = cfg.odometry.to_dict() if cfg.odometry is not None else None
    track_docs = []
    for tr, pl, li in zip(tracks, plans, lightings, strict=True):
        d = tr.summary()
        d.update({"frames": int(len(pl.frame_ns)), "first_frame_ns": int(pl.frame_ns[0]),
                  "last_frame_ns": int(pl.frame_ns[-1]),
                  "first_stamp_ns": int(pl.camera_ns.min()), "last_stamp_ns": int(pl.camera_ns.max()),
                  "dropped_per_camera": {c.name: int((~pl.present[:, i]).sum()) for i, c in enumerate(rig.cameras)},
                  "lighting": li.summary()})
        track_docs.append(d)
    return {
        "format_version": FORMAT_VERSION,
        "generator": "mfapr_training.synth",
        "seed": cfg.seed,
        "config": doc_cfg,
        "rig": rig.name,
        "cameras": [{"name": c.name, "offset_ns": int(offsets[i]), "width": m.width, "height": m.height,
                     "fx": m.fx, "fy": m.fy, "cx": m.cx, "cy": m.cy}
                    for i, (c, m) in enumerate(zip(rig.cameras, models, strict=True))],
        "stamp_offsets_ns": {c.name: int(offsets[i]) for i, c in enumerate(rig.cameras)},
        "world": world.summary(),
        "tracks": track_docs,
        "splits": result.splits,
        "counts": {"frames": result.frames, "images": result.images, "dropped": result.dropped},
        "timing": {"seconds": round(result.seconds, 3), "render_write_seconds": round(result.render_seconds, 3),
                   "images_per_s": round(result.images_per_s, 1), "frames_per_s": round(result.frames_per_s, 1),
                   "workers": cfg.workers},
    }
