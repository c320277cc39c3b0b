"""`mfapr eval-bag`: accuracy of a checkpoint on a recorded rosbag2, offline and faster than real time.

The pipeline is the live node's, piece by piece, so the numbers transfer: camera topics are bound to model slots
by :func:`mfapr_ros.ros.params.bind_cameras` (same topic / transport rules, same defaults as
``config/localize.yaml``), bundled by the one :class:`mfapr_ros.core.sync.ApproximateTimeSynchronizer` with the node's
settings, decoded by :mod:`~mfapr_ros.core.images`,
and localised by :class:`~mfapr_ros.core.localizer.Localizer` — except that
bundles are batched (``--batch``) through ``infer_batch``, which is what makes a CPU run faster than real time.
Ground truth (PoseStamped / PoseWithCovarianceStamped / Odometry topic, or TF between two frames) is interpolated
at each bundle stamp; the shared report (:mod:`mfapr_ros.evaluation`) is written to ``--out``.

Every image or bundle that does not make it into the metrics is counted by cause in ``meta.drops`` of the report
(synchronizer drops, decode errors, bundles without GT coverage) and summarised on the console.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.bag.reader import COMPRESSED_IMAGE, IMAGE_TYPES, BagMessage, BagReader, Trajectory, image_fields, read_gt
from mfapr_ros.core.errors import ConfigError, DataError

LOG = logging.getLogger("mfapr.eval_bag")


def node_sync_defaults() -> dict[str, Any]:
    """The node's sync defaults (one table: :data:`mfapr_ros.ros.params.PARAM_SPECS`, = config/localize.yaml)."""
    from mfapr_ros.ros.params import SPEC_BY_NAME

    return {k[5:]: s.default for k, s in SPEC_BY_NAME.items() if k.startswith("sync.")}


class SyncConfig:
    """Builds the one :class:`~.core.sync.SyncSettings` from the node's defaults and the CLI's overrides (seconds,
    ``min_cameras`` 0 = all), so eval-bag bundles exactly as ``localize_node`` with the same parameters."""

    @staticmethod
    def from_node_defaults(slop_ms: float | None = None, min_cameras: int | None = None,
                           queue_size: int | None = None, stream_timeout_s: float | None = None,
                           **more: Any) -> Any:
        from mfapr_ros.core.sync import SyncSettings

        d = node_sync_defaults()
        for key, v in (("slop", None if slop_ms is None else slop_ms / 1e3), ("min_cameras", min_cameras),
                       ("queue_size", queue_size), ("stream_timeout", stream_timeout_s), *more.items()):
            if v is not None:
                d[key] = v
        if not d["slop"] > 0:
            raise ConfigError(f"--slop-ms must be > 0, got {d['slop'] * 1e3}")
        return SyncSettings.from_dict(d, where="eval-bag sync")


def message_size(m: BagMessage) -> tuple[int, int] | None:
    """(width, height) of a bag image without decoding it (raw: the header fields; compressed: the JPEG/PNG header),
    None when it cannot be read (the decoder then reports the image)."""
    if m.msgtype != COMPRESSED_IMAGE:
        return int(m.msg.width), int(m.msg.height)
    import io

    try:
        from PIL import Image

        with Image.open(io.BytesIO(np.asarray(m.msg.data, dtype=np.uint8).tobytes())) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - unreadable header: left to the decoder, which counts it as corrupt
        return None


def parse_topic_map(spec: str | Sequence[str] | None) -> dict[str, str]:
    """``"cam0=/a,cam1=/b"`` (or a list of ``cam=topic``) → ``{"cam0": "/a", ...}``."""
    if not spec:
        return {}
    items = spec.split(",") if isinstance(spec, str) else [x for s in spec for x in s.split(",")]
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.count("=") != 1 or not all(item.split("=")):
            raise ConfigError(f"--topics entry '{item}' must be CAMERA=TOPIC, e.g. cam0=/front/image_raw")
        cam, topic = item.split("=")
        out[cam.strip()] = topic.strip()
    return out


def resolve_camera_topics(rig: Any, bag_types: dict[str, str], topic_map: dict[str, str] | None = None,
                          checkpoint: str = "checkpoint") -> list[str]:
    """Bag topic of each model slot, with the node's binding rules; a camera whose bound topic is absent from the
    bag falls back to its other transport (``/x`` ↔ ``/x/compressed``) when that one is there. DataError lists
    the missing cameras and the bag's image topics."""
    from mfapr_ros.ros.params import TOPIC_PREFIX, bind_cameras, validate_params

    topic_map = topic_map or {}
    unknown = [c for c in topic_map if c not in rig.camera_names]
    if unknown:
        raise ConfigError(f"--topics names camera(s) {unknown} not in the checkpoint's rig {rig.camera_names}")
    params = validate_params({"checkpoint": checkpoint})
    bindings = bind_cameras(params, rig, None, {TOPIC_PREFIX + c: t for c, t in topic_map.items()})
    topics: list[str] = []
    missing = []
    for b in bindings:
        cands = [b.topic]
        base = b.topic[: -len("/compressed")] if b.topic.endswith("/compressed") else b.topic
        cands += [base, base + "/compressed"]
        found = next((c for c in cands if bag_types.get(c) in IMAGE_TYPES), None)
        if found is None:
            missing.append(f"{b.name} → {b.topic}")
        topics.append(found or b.topic)
    if missing:
        images = sorted(t for t, ty in bag_types.items() if ty in IMAGE_TYPES)
        raise DataError(f"the bag lacks the camera topic(s) {missing} (image topics in the bag: {images or 'none'}); "
                        "map cameras to topics with --topics cam0=/topic,...")
    return topics


def decode_message(m: BagMessage, device: Any = None) -> np.ndarray:
    """Decode one bag image with the package's one decoder (:mod:`mfapr_ros.core.images`)."""
    from mfapr_ros.core import images

    f = image_fields(m.msgtype, m.msg)
    if m.msgtype == COMPRESSED_IMAGE:
        if device is None:
            return images.decode_compressed(f["format"], f["data"])
        return images.decode_compressed(f["format"], f["data"], device=device)
    return images.decode_raw(f["encoding"], f["height"], f["width"], f["step"], f["data"],
                             is_bigendian=f["is_bigendian"])


@dataclass
class DecodedBundle:
    """A synchronized bundle with decoded images (``None`` where a camera is absent or failed to decode)."""

    stamp_ns: int
    images: list[np.ndarray | None]
    mask: np.ndarray
    stamps_ns: list[int | None]


def iter_bundles(bag: BagReader, topics: Sequence[str], sync: Any, start_ns: int | None = None,
                 end_ns: int | None = None, drops: dict[str, int] | None = None, device: Any = None,
                 on_message: Callable[[], None] | None = None,
                 bindings: Sequence[Any] | None = None) -> Iterator[DecodedBundle]:
    """Stream bundles from ``topics`` (slot order) through ``sync``; images decode only once bundled.

    Stamps are header stamps (bag log time where a header stamp is zero, counted as ``zero_header_stamp``).
    With ``bindings`` (:class:`mfapr_ros.ros.params.CameraBinding` per slot, i.e. ``enforce_image_size``), an
    image whose size differs from its camera's is dropped *before* the synchronizer (``wrong_size``), exactly
    where the node drops it. Undecodable images become absent slots (``decode_error``); a bundle left with no
    image is dropped.
    """
    drops = drops if drops is not None else {}
    slot = {t: i for i, t in enumerate(topics)}

    def finish(bundles: list[Any]) -> Iterator[DecodedBundle]:
        for b in bundles:
            imgs: list[np.ndarray | None] = []
            for m in b.payloads:
                if m is None:
                    imgs.append(None)
                    continue
                try:
                    imgs.append(decode_message(m, device))
                except DataError as e:
                    drops["decode_error"] = drops.get("decode_error", 0) + 1
                    LOG.warning("dropping an image of %s at %d ns: %s", m.topic, m.log_time_ns, e)
                    imgs.append(None)
            mask = np.array([x is not None for x in imgs], dtype=bool)
            if not mask.any():
                drops["empty_bundle"] = drops.get("empty_bundle", 0) + 1
                continue
            stamps = [s if ok else None for s, ok in zip(b.stamps_ns, mask, strict=True)]
            yield DecodedBundle(int(b.stamp_ns), imgs, mask, stamps)

    for m in bag.messages(topics, start_ns, end_ns):
        if on_message is not None:
            on_message()
        f = m.msg.header.stamp
        stamp = int(f.sec) * 1_000_000_000 + int(f.nanosec)
        if stamp == 0:
            drops["zero_header_stamp"] = drops.get("zero_header_stamp", 0) + 1
            stamp = m.log_time_ns
        if bindings is not None:
            size = message_size(m)
            why = bindings[slot[m.topic]].size_mismatch(*size) if size is not None else None
            if why is not None:
                drops["wrong_size"] = drops.get("wrong_size", 0) + 1
                if drops["wrong_size"] <= 3:
                    LOG.warning("dropping an image of %s at %d ns: %s", m.topic, stamp, why)
                continue
        yield from finish(sync.add(slot[m.topic], stamp, m))
    yield from finish(sync.flush())


@dataclass
class EvalResult:
    """Per-bundle estimates paired with GT, plus everything the report's meta needs."""

    stamps_ns: np.ndarray
    t_est: np.ndarray
    q_est: np.ndarray
    t_gt: np.ndarray
    q_gt: np.ndarray
    masks: np.ndarray
    camera_stamps_ns: np.ndarray  # (N, T) header stamp of each slot's image, -1 where absent
    latency_s: np.ndarray
    drops: dict[str, int]
    bundles: int
    bag_seconds: float
    wall_seconds: float
    infer_seconds: float
    camera_names: list[str]
    topics: list[str]
    gt: Trajectory
    meta: dict[str, Any] = field(default_factory=dict)
    retrieval_t: np.ndarray | None = None  # the image-retrieval baseline per row (None without a database)
    retrieval_q: np.ndarray | None = None

    @property
    def bundles_per_s(self) -> float:
        return self.bundles / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def speedup(self) -> float:
        """Bag time covered / wall time spent: > 1 means faster than real time."""
        return self.bag_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def evaluate_bag(checkpoint: str | Path, bag_path: str | Path, *, topics: dict[str, str] | None = None,
                 gt_topic: str | None = None, gt_tf: str | None = None, start_s: float = 0.0,
                 end_s: float | None = None, max_duration_s: float | None = None, batch: int = 16,
                 device: str = "auto", sync: Any = None, max_gap_s: float = 0.5,
                 progress: bool = True, localizer: Any = None, enforce_image_size: bool = True) -> EvalResult:
    """Run the checkpoint on the bag and pair estimates with interpolated GT (see the module docstring)."""
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if localizer is None:
        from mfapr_ros.core.localizer import Localizer

        localizer = Localizer(str(checkpoint), device=device)
    rig = localizer.rig
    sync = sync or SyncConfig.from_node_defaults()
    with BagReader(bag_path) as bag:
        info = bag.info()
        types = {t: i.msgtype for t, i in info.topics.items()}
        cam_topics = resolve_camera_topics(rig, types, topics, str(checkpoint))
        start_ns = info.start_ns + int(round(start_s * 1e9))
        end_ns = info.end_ns + 1
        if end_s is not None:
            end_ns = min(end_ns, info.start_ns + int(round(end_s * 1e9)))
        if max_duration_s is not None:
            end_ns = min(end_ns, start_ns + int(round(max_duration_s * 1e9)))
        if end_ns <= start_ns:
            raise ConfigError(f"empty time window: start {start_s} s, end {end_s} s, max duration {max_duration_s} s "
                              f"(bag is {info.duration_s:.1f} s long)")
        gt = read_gt(bag, gt_topic, gt_tf)
        drops: dict[str, int] = {f"gt_{k}": v for k, v in gt.drops.items()}
        synchronizer = sync.make(len(cam_topics), logger=LOG.debug)
        from mfapr_ros.ros.params import CameraBinding

        bindings = None
        if enforce_image_size:  # the node's policy: a wrong-size image is dropped before the synchronizer
            bindings = [CameraBinding(i, c.name, t, c.transport, c.width, c.height)
                        for i, (c, t) in enumerate(zip(rig.cameras, cam_topics, strict=True))]
        n_msgs = sum(info.topics[t].count for t in cam_topics)
        bar = _progress(n_msgs, progress)
        stamps: list[int] = []
        t_est: list[np.ndarray] = []
        q_est: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        cam_stamps: list[list[int]] = []
        lat: list[float] = []
        ret_t: list[np.ndarray] = []
        ret_q: list[np.ndarray] = []
        pending: list[DecodedBundle] = []
        infer_s = 0.0
        wall0 = time.perf_counter()

        def run(chunk: list[DecodedBundle]) -> None:
            nonlocal infer_s
            t0 = time.perf_counter()
            poses = localizer.infer_batch([(b.images, b.stamp_ns) for b in chunk])
            infer_s += time.perf_counter() - t0
            for b, p in zip(chunk, poses, strict=True):
                stamps.append(b.stamp_ns)
                t_est.append(np.asarray(p.t, dtype=np.float64))
                q_est.append(np.asarray(p.q, dtype=np.float64))
                masks.append(b.mask)
                cam_stamps.append([-1 if x is None else int(x) for x in b.stamps_ns])
                lat.append(float(getattr(p, "latency_s", float("nan"))))
                ex = getattr(p, "extras", None) or {}
                if "retrieval_t" in ex:
                    ret_t.append(np.asarray(ex["retrieval_t"], dtype=np.float64))
                    ret_q.append(np.asarray(ex["retrieval_q"], dtype=np.float64))
            if bar is not None:
                el = time.perf_counter() - wall0
                bar.set_postfix_str(f"{len(stamps)} bundles, {len(stamps) / max(el, 1e-9):.1f} bundles/s")

        tick = bar.update if bar is not None else None
        for b in iter_bundles(bag, cam_topics, synchronizer, start_ns, end_ns, drops,
                              on_message=(lambda: tick(1)) if tick else None, bindings=bindings):
            pending.append(b)
            if len(pending) >= batch:
                run(pending)
                pending = []
        if pending:
            run(pending)
        wall = time.perf_counter() - wall0
        if bar is not None:
            bar.close()
    for k, v in synchronizer.stats.items():
        if (k.startswith("dropped_") or k == "duplicates") and v:
            drops[f"sync_{k}"] = v
    if not stamps:
        raise DataError(f"no bundle could be formed from {cam_topics} in {bag_path} (sync stats "
                        f"{synchronizer.stats}); check --topics, --slop-ms and --min-cameras (a camera missing for "
                        "the whole bag needs --min-cameras below the number of cameras)")
    s = np.asarray(stamps, dtype=np.int64)
    tg, qg, ok = gt.at(s, max_gap_ns=int(round(max_gap_s * 1e9)))
    if (~ok).any():
        drops["no_gt_at_stamp"] = int((~ok).sum())
        LOG.warning("%d of %d bundles have no ground truth at their stamp (outside the GT span or in a gap > %.2f s)",
                    int((~ok).sum()), len(s), max_gap_s)
    if not ok.any():
        raise DataError(f"ground truth {gt.source} does not cover any bundle stamp of {bag_path} (GT spans "
                        f"{gt.stamps_ns[0]}..{gt.stamps_ns[-1]} ns, bundles {s[0]}..{s[-1]} ns); check the GT "
                        "topic and that both use the same clock")
    bag_seconds = (min(end_ns, info.end_ns) - start_ns) / 1e9
    return EvalResult(
        stamps_ns=s[ok], t_est=np.asarray(t_est)[ok], q_est=np.asarray(q_est)[ok], t_gt=tg[ok], q_gt=qg[ok],
        masks=np.asarray(masks)[ok], camera_stamps_ns=np.asarray(cam_stamps, dtype=np.int64)[ok],
        latency_s=np.asarray(lat)[ok], drops=drops, bundles=len(s),
        bag_seconds=bag_seconds, wall_seconds=wall, infer_seconds=infer_s, camera_names=list(rig.camera_names),
        topics=cam_topics, gt=gt,
        meta={"sync": sync.to_dict(), "sync_stats": synchronizer.stats, "enforce_image_size": enforce_image_size,
              "window_ns": [start_ns, end_ns],
              "bag_storage": info.storage},
        retrieval_t=np.asarray(ret_t)[ok] if len(ret_t) == len(s) else None,
        retrieval_q=np.asarray(ret_q)[ok] if len(ret_q) == len(s) else None)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but a bar is never worth a crash
        return None
    return tqdm(total=total, unit="msg", desc="eval-bag", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def checkpoint_baseline(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The training set's mean pose when the checkpoint recorded it (``provenance.mean_pose = {t, q_wxyz}``)."""
    prov = meta.get("provenance") or {}
    mp = prov.get("mean_pose") or prov.get("train_mean_pose")
    if isinstance(mp, dict) and "t" in mp and ("q_wxyz" in mp or "q" in mp):
        return np.asarray(mp["t"], dtype=np.float64), np.asarray(mp.get("q_wxyz", mp.get("q")), dtype=np.float64)
    return None


def build_parser() -> argparse.ArgumentParser:
    d = node_sync_defaults()
    p = argparse.ArgumentParser(prog="mfapr eval-bag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint (NAME, NAME.json or NAME.safetensors)")
    p.add_argument("--bag", required=True, help="rosbag2 directory (sqlite3 or MCAP)")
    p.add_argument("--topics", default=None, help="camera→topic overrides: cam0=/a/image_raw,cam1=/b/...")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="GT topic (PoseStamped, PoseWithCovarianceStamped, Odometry); "
                   "default: the first of /ground_truth/pose, /ground_truth, /gt/pose found")
    g.add_argument("--gt-tf", default=None, metavar="PARENT:CHILD", help="GT from TF, e.g. map:base_link")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the bag to start at")
    p.add_argument("--end", type=float, default=None, help="seconds into the bag to stop at")
    p.add_argument("--max-duration", type=float, default=None, help="evaluate at most this many seconds of bag")
    p.add_argument("--batch", type=int, default=16, help="bundles per forward pass (default 16)")
    p.add_argument("--out", default="out/eval_bag", help="report folder (default out/eval_bag)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--slop-ms", type=float, default=None, help=f"sync slop in ms (node default {d['slop'] * 1e3:g})")
    p.add_argument("--min-cameras", type=int, default=None,
                   help=f"fewest cameras per bundle, 0 = all (node default {d['min_cameras']})")
    p.add_argument("--queue-size", type=int, default=None, help=f"sync queue per camera (default {d['queue_size']})")
    p.add_argument("--stream-timeout", type=float, default=None,
                   help=f"seconds after which a silent camera stops blocking (default {d['stream_timeout']})")
    p.add_argument("--sync-policy", choices=("pivot", "frames"), default=None,
                   help=f"bundle assignment (node default {d['policy']}; frames: period-aware, for loose stamps)")
    p.add_argument("--sync-publish", choices=("arrival", "optimal"), default=None,
                   help=f"when a bundle leaves (node default {d['publish']})")
    p.add_argument("--enforce-image-size", action=argparse.BooleanOptionalAction, default=True,
                   help="drop (and count) images whose size differs from the rig's, as localize_node does "
                        "(default: on, like its enforce_image_size)")
    p.add_argument("--max-gap", type=float, default=0.5, help="max GT sample gap (s) to interpolate across")
    p.add_argument("--baseline", choices=("auto", "checkpoint", "gt", "none"), default="auto",
                   help="mean-pose baseline: the training mean stored in the checkpoint (auto falls back to the "
                        "mean of this bag's GT, labelled as such)")
    p.add_argument("--no-plots", action="store_true", help="write JSON + Markdown only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr eval-bag`; errors surface as MfaprError (the dispatcher prints one line, exit 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    from mfapr_ros.core.localizer import Localizer

    from . import print_summary, write_report

    sync = SyncConfig.from_node_defaults(args.slop_ms, args.min_cameras, args.queue_size, args.stream_timeout,
                                         policy=args.sync_policy, publish=args.sync_publish)
    localizer = Localizer(args.checkpoint, device=args.device)
    res = evaluate_bag(args.checkpoint, args.bag, topics=parse_topic_map(args.topics), gt_topic=args.gt_topic,
                       gt_tf=args.gt_tf, start_s=args.start, end_s=args.end, max_duration_s=args.max_duration,
                       batch=args.batch, device=args.device, sync=sync, max_gap_s=args.max_gap,
                       progress=not args.no_progress, localizer=localizer,
                       enforce_image_size=args.enforce_image_size)
    ck_meta = getattr(getattr(localizer, "checkpoint", None), "meta", None) or {}
    baseline, base_src = None, "none"
    if args.baseline in ("auto", "checkpoint"):
        baseline = checkpoint_baseline(ck_meta)
        base_src = "checkpoint provenance (training mean pose)" if baseline is not None else "none"
        if baseline is None and args.baseline == "checkpoint":
            raise DataError(f"checkpoint {args.checkpoint} records no training mean pose (provenance.mean_pose); "
                            "use --baseline gt or none")
    if baseline is None and args.baseline in ("auto", "gt"):
        baseline, base_src = (res.t_gt, res.q_gt), "mean of this bag's ground truth (optimistic baseline)"
    meta = {
        "source": "mfapr eval-bag", "checkpoint": str(args.checkpoint), "bag": str(args.bag),
        "cameras": res.camera_names, "topics": dict(zip(res.camera_names, res.topics, strict=True)),
        "gt": res.gt.source, "baseline_source": base_src, "batch": args.batch, "device": args.device,
        "drops": res.drops, "bundles": res.bundles, "bag_seconds": res.bag_seconds,
        "wall_seconds": res.wall_seconds, "inference_seconds": res.infer_seconds,
        "bundles_per_s": res.bundles_per_s, "speedup_vs_realtime": res.speedup, **res.meta,
    }
    paths = write_report(args.out, stamps_ns=res.stamps_ns, t_gt=res.t_gt, q_gt=res.q_gt, t_est=res.t_est,
                         q_est=res.q_est, baseline=baseline, masks=res.masks, latency_s=res.latency_s, meta=meta,
                         camera_names=res.camera_names, plots_enabled=not args.no_plots,
                         retrieval=(res.retrieval_t, res.retrieval_q) if res.retrieval_t is not None else None)
    from . import load_report

    print_summary(load_report(paths["json"]))
    print(f"{res.bundles} bundles in {res.wall_seconds:.2f} s ({res.bundles_per_s:.1f} bundles/s); "
          f"{res.bag_seconds:.1f} s of bag → {res.speedup:.1f}× real time")
    if res.drops:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(res.drops.items())))
    print(f"report: {paths['markdown']}")
    return 0
