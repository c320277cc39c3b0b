"""`mfapr explain`: where the fused model looks, per camera (the paper's Figure 8), and what each camera contributes.

    mfapr explain --checkpoint CKPT (--bag BAG | --data DATASET_DIR) [--stamp S ...] [--count N] --out DIR

For each chosen bundle (``--stamp``: the bundle nearest each stamp; else ``--count`` bundles evenly spaced) it writes
``bundle_<stamp_ns>.png`` (every camera's model input, its saliency overlay per output, and a per-camera contribution
bar chart) and ``bundle_<stamp_ns>.json`` (pose, contributions, saliency shares), plus ``explain.json`` (the list).

* Saliency (``--method auto``): TransPoseNet-style models (any model containing ``nn.TransformerDecoder``) → the
  decoder cross-attention of the learned position / orientation queries over the CNN feature tokens (last decoder
  layer, mean over heads), captured by forward hooks on the ``nn.MultiheadAttention`` modules found by type (no model
  code is touched); token-fused inputs are split back per camera, tile canvases cut back into tiles, mix-stream /
  late-fusion models give one map per camera; channel- and mid-fused models share one map over all cameras.
  Every other backbone (PoseNet, PoseLSTM, MapNet, ViT) → gradient saliency ``Σ_k |∂y_k/∂x|`` (max over colour
  channels, lightly box-smoothed) with y = the normalised position (3) or the quaternion (4).
* Contribution of camera i: the pose change (m, °) when camera i is masked out (slot zeroed, mask False, as a
  missing camera). A camera already absent from the bundle gives exactly 0 (the model never sees masked pixels);
  the last present camera cannot be removed (``null``).

Bags are read the way ``mfapr eval-bag`` reads them (the bag → bundles pipeline :mod:`mfapr_ros.bag.bundles` with
the node's synchronizer settings, a ±``--window`` s read around each target stamp; only chosen bundles decode);
datasets the way ``mfapr evaluate`` loads them (``data.load_split`` + ``BundleDataset``). Stamps: an integer of ≥ 12
digits is absolute ns, anything else is seconds from the start of the bag (or the first bundle of the dataset).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.core.errors import ConfigError, DataError

LOG = logging.getLogger("mfapr.explain")
ROLES = ("position", "orientation")


@dataclass
class ExplainInput:
    """One preprocessed bundle: ``x`` (T,3,S,S) normalised float tensor, ``mask`` (T,) bool tensor."""

    stamp_ns: int
    x: Any
    mask: Any
    t_gt: np.ndarray | None = None
    q_gt: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------------------- poses
def rotation_angle_deg(q1: np.ndarray, q2: np.ndarray) -> float:
    """Angle between two unit quaternions; exactly 0 for equal ones (atan2 form, no acos rounding)."""
    q1, q2 = np.asarray(q1, np.float64), np.asarray(q2, np.float64)
    s = -1.0 if float(np.dot(q1, q2)) < 0 else 1.0
    return float(np.degrees(2.0 * math.atan2(np.linalg.norm(q1 - s * q2), np.linalg.norm(q1 + s * q2))))


def _pose(model: Any, x: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        out = model(x[None], mask[None])
    t = out["t"][0].double().cpu().numpy()
    q = out["q"][0].double().cpu().numpy()
    q = q / np.linalg.norm(q)
    return t, (q if q[0] >= 0 else -q)


def contributions(model: Any, x: Any, mask: Any, names: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The bundle's pose and, per camera, the pose change when that camera is masked out."""
    t0, q0 = _pose(model, x, mask)
    present = mask.bool().cpu().numpy()
    rows = []
    for i, name in enumerate(names):
        row: dict[str, Any] = {"camera": name, "present": bool(present[i]), "delta_t_m": None,
                               "delta_rot_deg": None, "only_camera": False}
        m2 = mask.clone()
        m2[i] = False
        if not bool(m2.any()):
            row["only_camera"] = True  # nothing left to localise from
        else:
            x2 = x.clone()
            x2[i] = 0  # exactly what preprocess_bundle makes of a missing camera
            t, q = _pose(model, x2, m2)
            row["delta_t_m"] = float(np.linalg.norm(t - t0))
            row["delta_rot_deg"] = rotation_angle_deg(q, q0)
        rows.append(row)
    return {"t": t0.tolist(), "q_wxyz": q0.tolist()}, rows


# ------------------------------------------------------------------------------------------------------- attention
class CrossAttentionRecorder:
    """Forward hooks that record the cross-attention weights of every ``nn.TransformerDecoder`` call.

    Modules are found by type: cross-attention is an ``nn.MultiheadAttention`` call whose query is not its key;
    its ``need_weights`` is switched on (per-head weights) by a forward pre-hook. Each decoder call keeps the weights
    of its last layer, ``(N, heads, queries, keys)``, with the decoder's module name.
    """

    def __init__(self, model: Any) -> None:
        from torch import nn

        self.calls: list[tuple[str, Any]] = []
        self._stack: list[list[Any]] = []
        self._handles: list[Any] = []
        for name, mod in model.named_modules():
            if isinstance(mod, nn.TransformerDecoder):
                self._handles.append(mod.register_forward_pre_hook(self._dec_pre))
                self._handles.append(mod.register_forward_hook(self._dec_post(name)))
            elif isinstance(mod, nn.MultiheadAttention):
                self._handles.append(mod.register_forward_pre_hook(self._mha_pre, with_kwargs=True))
                self._handles.append(mod.register_forward_hook(self._mha_post))
        self.found = any(isinstance(m, nn.TransformerDecoder) for m in model.modules())

    def _dec_pre(self, module: Any, args: Any) -> None:
        self._stack.append([])

    def _dec_post(self, name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            group = self._stack.pop() if self._stack else []
            if group:
                self.calls.append((name, group[-1]))
        return hook

    def _mha_pre(self, module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        query = args[0] if args else kwargs.get("query")
        key = args[1] if len(args) > 1 else kwargs.get("key")
        if not self._stack or query is key:
            return None
        kwargs = dict(kwargs, need_weights=True, average_attn_weights=False)
        return args, kwargs

    def _mha_post(self, module: Any, args: Any, output: Any) -> None:
        query = args[0] if args else None
        key = args[1] if len(args) > 1 else None
        if self._stack and query is not key and isinstance(output, tuple) and output[1] is not None:
            self._stack[-1].append(output[1].detach())

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def by_role(self) -> dict[str, Any]:
        """``{"position"|"orientation": (N, keys)}``: last-layer weights, mean over heads and queries, the calls of
        a role concatenated in call order (late fusion without shared weights: one call per camera)."""
        import torch

        out: dict[str, list[Any]] = {r: [] for r in ROLES}
        for k, (name, w) in enumerate(self.calls):
            low = name.lower()
            if re.search(r"pos", low) and not re.search(r"ori", low):
                role = "position"
            elif re.search(r"ori|rot", low):
                role = "orientation"
            else:  # the branches run position first, then orientation
                role = ROLES[k % 2]
            w = w.float()
            if w.dim() == 4:
                w = w.mean(dim=1)
            out[role].append(w.mean(dim=1))
        return {r: torch.cat(v, dim=0) for r, v in out.items() if v}


def _tile_grid(T: int) -> tuple[int, int]:
    """(rows, cols) of the input-fusion tile mosaic (models.layers.tile_grid: most square grid, cols ≥ rows)."""
    cols = math.ceil(math.sqrt(T))
    return math.ceil(T / cols), cols


def _square(n: int, what: str) -> int:
    s = int(round(math.sqrt(n)))
    if s * s != n:
        raise DataError(f"explain: cannot lay {n} attention keys out as a square feature map ({what})")
    return s


def split_attention(w: Any, cfg: dict[str, Any]) -> tuple[Any, str]:
    """(N, L) attention of one role → ``((T, h, w) maps, layout)``. ``layout``: ``joint`` (one softmax over the
    tokens of all cameras: input tokens / tile — the cameras' shares are meaningful), ``per_camera`` (one softmax
    per camera: mix-stream, late fusion), ``shared`` (one map for all cameras: channel / mid fusion, where each
    feature position mixes every camera)."""
    T = int(cfg["num_cameras"])
    fusion = cfg.get("fusion", {})
    N, L = w.shape
    if N == T and (T == 1 or fusion.get("position") in ("none", "late")):
        s = _square(L, "per camera")
        return w.reshape(T, s, s), "per_camera" if T > 1 else "joint"
    if N != 1:
        raise DataError(f"explain: {N} decoder calls for a {T}-camera {fusion} model; cannot assign them to cameras")
    mode = fusion.get("mode")
    if fusion.get("position") == "input" and mode == "tokens":
        if L % T:
            raise DataError(f"explain: {L} tokens do not split over {T} cameras")
        s = _square(L // T, "tokens per camera")
        return w[0].reshape(T, s, s), "joint"
    if fusion.get("position") == "input" and mode == "tile":
        rows, cols = _tile_grid(T)
        s = _square(L // (rows * cols), "tile")
        canvas = w[0].reshape(rows * s, cols * s)
        tiles = [canvas[(i // cols) * s:(i // cols + 1) * s, (i % cols) * s:(i % cols + 1) * s] for i in range(T)]
        import torch

        return torch.stack(tiles), "joint"
    s = _square(L, "shared feature map")
    return w[0].reshape(1, s, s).expand(T, s, s), "shared"


def attention_maps(model: Any, x: Any, mask: Any) -> tuple[dict[str, Any], str] | None:
    """Per-role ``(T, S, S)`` attention maps upsampled to the input size, or None when the model has no decoder."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    rec = CrossAttentionRecorder(model)
    if not rec.found:
        rec.close()
        return None
    try:
        with torch.inference_mode():
            model(x[None], mask[None])
        roles = rec.by_role()
    finally:
        rec.close()
    if not roles:
        return None
    S = x.shape[-1]
    maps, layout = {}, "joint"
    for role, w in roles.items():
        m, layout = split_attention(w, model.config)
        maps[role] = F.interpolate(m[:, None].float(), size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    return maps, layout


def gradient_maps(model: Any, x: Any, mask: Any) -> dict[str, Any]:
    """Per-role ``(T, S, S)`` gradient saliency ``Σ_k |∂y_k/∂x|`` (max over channels, box-smoothed)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    S = x.shape[-1]
    k = max(1, S // 16) | 1
    xi = x[None].detach().clone().requires_grad_(True)
    maps = {}
    with torch.enable_grad():
        out = model(xi, mask[None])
        for role, key in (("position", "t_norm"), ("orientation", "q")):
            y = out[key][0].float()
            total = torch.zeros(x.shape[0], S, S, device=x.device)
            for j in range(y.numel()):
                (g,) = torch.autograd.grad(y[j], xi, retain_graph=True)
                total = total + g[0].abs().amax(dim=1)
            maps[role] = F.avg_pool2d(total[:, None], k, stride=1, padding=k // 2)[:, 0]
    return maps


def saliency(model: Any, x: Any, mask: Any, method: str = "auto") -> tuple[str, dict[str, np.ndarray], str]:
    """``(method used, {role: (T,S,S) numpy ≥ 0}, layout)`` (layout: see :func:`split_attention`; ``gradient``
    for gradients); absent cameras' maps are zero."""
    res = attention_maps(model, x, mask) if method in ("auto", "attention") else None
    if res is None:
        if method == "attention":
            raise ConfigError("--method attention: this model has no transformer decoder (use gradient or auto)")
        maps, layout, used = gradient_maps(model, x, mask), "gradient", "gradient"
    else:
        (maps, layout), used = res, "attention"
    keep = mask.float().cpu().numpy()[:, None, None]
    return used, {r: np.clip(m.detach().float().cpu().numpy(), 0, None) * keep for r, m in maps.items()}, layout


# ---------------------------------------------------------------------------------------------------------- driver
def to_uint8(x: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (T,3,S,S) model input → (T,S,S,3) uint8 (what the model sees)."""
    a = x.detach().float().cpu().numpy()
    a = a * np.asarray(std, np.float32)[None, :, None, None] + np.asarray(mean, np.float32)[None, :, None, None]
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def explain_bundle(model: Any, item: ExplainInput, names: Sequence[str], pre: Any, out_dir: Path,
                   method: str = "auto", meta: dict[str, Any] | None = None, plot: bool = True) -> dict[str, Any]:
    """Write ``bundle_<stamp>.json`` (+ ``.png``) for one bundle; returns the JSON document."""
    from mfapr_ros.core.io import atomic_write_json

    x, mask = item.x, item.mask.bool()
    pose, contrib = contributions(model, x, mask, names)
    used, maps, layout = saliency(model, x, mask, method)
    shares = {}
    for role, m in maps.items():
        tot = float(m.sum())
        shares[role] = {n: (float(m[i].sum()) / tot if tot > 0 else 0.0) for i, n in enumerate(names)}
    doc: dict[str, Any] = {
        "stamp_ns": int(item.stamp_ns), "cameras": list(names), "mask": mask.cpu().numpy().tolist(),
        "pose": pose, "contributions": contrib, "method": used, "map_layout": layout, "saliency_share": shares,
        **(meta or {}),
    }
    if item.t_gt is not None and item.q_gt is not None and np.all(np.isfinite(item.t_gt)):
        doc["gt"] = {"t": np.asarray(item.t_gt, float).tolist(), "q_wxyz": np.asarray(item.q_gt, float).tolist()}
        doc["error"] = {"t_m": float(np.linalg.norm(np.asarray(pose["t"]) - item.t_gt)),
                        "rot_deg": rotation_angle_deg(np.asarray(pose["q_wxyz"]), np.asarray(item.q_gt, float))}
    stem = out_dir / f"bundle_{int(item.stamp_ns)}"
    if plot:
        from .explain_plots import plot_bundle

        plot_bundle(stem.with_suffix(".png"), to_uint8(x, pre.mean, pre.std), maps, doc)
        doc["png"] = stem.with_suffix(".png").name
    atomic_write_json(stem.with_suffix(".json"), doc)
    return doc


def parse_stamp(s: str, origin_ns: int) -> int:
    """An integer of ≥ 12 digits → absolute ns; else seconds from ``origin_ns``."""
    s = str(s).strip()
    if re.fullmatch(r"\d{12,}", s):
        return int(s)
    try:
        return origin_ns + int(round(float(s) * 1e9))
    except ValueError:
        raise ConfigError(f"--stamp '{s}': give seconds from the start (1.5) or absolute nanoseconds") from None


def bag_inputs(loc: Any, bag_path: str | Path, stamps: Sequence[str] | None, count: int, *,
               topics: dict[str, str] | None = None, sync: Any = None, window_s: float = 1.0,
               enforce_image_size: bool = True) -> Iterator[ExplainInput]:
    """The bag's bundle nearest each target stamp, bound, synchronised and decoded by the bag → bundles pipeline
    `mfapr eval-bag` uses (:mod:`mfapr_ros.bag.bundles`); only the chosen bundles are decoded."""
    from mfapr_ros.bag.bundles import bind_bag_topics, decode_bundles, iter_bundles
    from mfapr_ros.bag.reader import BagReader
    from mfapr_ros.core.drops import DropCounter
    from mfapr_ros.core.preprocess import preprocess_bundle
    from mfapr_ros.core.sync import SyncSettings

    sync = sync or SyncSettings()  # the node's defaults
    with BagReader(bag_path) as bag:
        info = bag.info()
        bindings = bind_bag_topics(loc.rig, {t: i.msgtype for t, i in info.topics.items()}, topics,
                                   source=f"bag {bag_path}")
        if stamps:
            targets = [parse_stamp(s, info.start_ns) for s in stamps]
        else:
            span = info.end_ns - info.start_ns
            targets = [info.start_ns + int(span * (k + 0.5) / count) for k in range(count)]
        seen: set[int] = set()
        w = int(window_s * 1e9)
        for target in targets:
            drops = DropCounter.for_reader()
            best = None
            synchronizer = sync.make(len(bindings))
            for b in iter_bundles(bag, bindings, synchronizer, target - w, target + w + 1, drops):
                if best is None or abs(b.stamp_ns - target) < abs(best.stamp_ns - target):
                    best = b
            # the node's and eval-bag's bad-frame rule (core.bundle_decode): size checked after the synchronizer
            decoded = (next(iter(decode_bundles(iter([best]), drops, bindings=bindings,
                                                min_present=synchronizer.min_streams,
                                                enforce_image_size=enforce_image_size)), None)
                       if best is not None else None)
            if decoded is None:
                LOG.warning("no bundle within %.1f s of %d ns (drops: %s)", window_s, target, dict(drops))
                continue
            if decoded.stamp_ns in seen:
                continue
            seen.add(decoded.stamp_ns)
            x, m = preprocess_bundle(decoded.images, loc.preprocess_cfg, device=loc.device)
            yield ExplainInput(decoded.stamp_ns, x, m)


def data_inputs(loc: Any, data: str, split: str, fmt: str, stamps: Sequence[str] | None, count: int,
                gt_topic: str | None = None) -> Iterator[ExplainInput]:
    """Bundles of a dataset split, loaded the way `mfapr evaluate` loads them (with their GT pose)."""
    from .data import detect_format, even_subset, load_split
    from .datasets import BundleDataset

    fmt = detect_format(data) if fmt == "auto" else fmt
    if fmt == "rosbag" and split and not (Path(data) / split).exists():
        split = ""  # DATA is the bag itself
    meta = loc.checkpoint.meta or {}
    sync = ((meta.get("provenance") or {}).get("training_config") or {}).get("data", {}).get("sync") or {}
    rig = loc.rig
    records = sorted(load_split(fmt, data, split, rig=rig, cameras=rig.camera_names, gt_topic=gt_topic,
                                sync=sync).records, key=lambda r: r.stamp_ns)
    if not records:
        raise DataError(f"{data} (split '{split}'): no bundles")
    if stamps:
        st = np.array([r.stamp_ns for r in records], dtype=np.int64)
        idx = sorted({int(np.abs(st - parse_stamp(s, int(st[0]))).argmin()) for s in stamps})
    else:
        idx = even_subset(len(records), count)
    ds = BundleDataset([records[i] for i in idx], rig, loc.preprocess_cfg, steps=1, track_aug=None,
                       photometric=False)
    for k in range(len(ds)):
        it = ds[k]
        t = it["t"][0].numpy()
        yield ExplainInput(int(it["stamp_ns"][0]), it["images"][0].to(loc.device), it["mask"][0].to(loc.device),
                           t if np.all(np.isfinite(t)) else None, it["q"][0].double().numpy())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfapr explain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint (NAME, NAME.json or NAME.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", help="rosbag2 directory (read as `mfapr eval-bag` does)")
    src.add_argument("--data", help="dataset folder (synth / kapture / rosbag, as `mfapr evaluate --data`)")
    p.add_argument("--stamp", nargs="+", default=None, help="bundles nearest these stamps: seconds from the start "
                   "(1.5) or absolute ns (≥ 12 digits)")
    p.add_argument("--count", type=int, default=4, help="without --stamp: this many evenly spaced bundles (4)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=("auto", "attention", "gradient"), default="auto",
                   help="auto: decoder cross-attention when the model has a transformer decoder, else gradients")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--topics", default=None, help="--bag: camera→topic overrides cam0=/a,cam1=/b")
    from mfapr_ros.evaluation.bag_inputs import add_sync_options

    add_sync_options(p)  # --bag: the node's sync.* settings (--slop, --min-cameras …); lower --min-cameras to
    # explain bundles with missing cameras
    p.add_argument("--enforce-image-size", action=argparse.BooleanOptionalAction, default=True,
                   help="--bag: drop images whose size differs from the rig's, as localize_node does (default on)")
    p.add_argument("--window", type=float, default=1.0, help="--bag: seconds read either side of each target (1)")
    p.add_argument("--format", choices=("auto", "synth", "kapture", "rosbag"), default="auto", help="--data format")
    p.add_argument("--split", default="query", help="--data split (default query; '' = DATA is the split)")
    p.add_argument("--gt-topic", default=None, help="--data rosbag: ground-truth topic")
    p.add_argument("--no-plots", action="store_true", help="JSON only")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mfapr explain`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    from mfapr_ros.core.io import atomic_write_json
    from mfapr_ros.evaluation.bag_inputs import parse_topic_map, sync_settings_from_args
    from mfapr_ros.inference.localizer import Localizer

    loc = Localizer(args.checkpoint, device=args.device, warmup=0, retrieval=False)
    model = loc.model.eval()
    names = loc.rig.camera_names
    cfg = model.config
    meta = {"checkpoint": str(args.checkpoint), "backbone": cfg.get("backbone"), "fusion": cfg.get("fusion")}
    if args.bag:
        sync = sync_settings_from_args(args)
        items = bag_inputs(loc, args.bag, args.stamp, args.count, topics=parse_topic_map(args.topics), sync=sync,
                           window_s=args.window, enforce_image_size=args.enforce_image_size)
        meta["bag"] = str(args.bag)
    else:
        items = data_inputs(loc, args.data, args.split, args.format, args.stamp, args.count, args.gt_topic)
        meta["data"] = str(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = []
    for item in items:
        doc = explain_bundle(model, item, names, loc.preprocess_cfg, out, args.method, meta, not args.no_plots)
        docs.append(doc)
        parts = [f"{c['camera']} {c['delta_t_m']:.3f} m/{c['delta_rot_deg']:.2f}°" if c["delta_t_m"] is not None
                 else f"{c['camera']} n/a" for c in doc["contributions"]]
        print(f"bundle {doc['stamp_ns']}: {doc['method']}; contribution {', '.join(parts)}")
    if not docs:
        raise DataError("explain: no bundle found (check --stamp, --window, --min-cameras)")
    atomic_write_json(out / "explain.json", {"bundles": [{"stamp_ns": d["stamp_ns"], "json": f"bundle_{d['stamp_ns']}"
                                                          ".json", "png": d.get("png")} for d in docs], **meta})
    print(f"mfapr explain: {len(docs)} bundle(s) in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
