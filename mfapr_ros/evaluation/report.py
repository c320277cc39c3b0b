"""The evaluation report written by `mfapr evaluate`, `mfapr eval-bag` and `evaluator_node`.

One folder, always the same file names, so scripts (and the demo) can read any run the same way::

    report.json               metrics, baseline metrics, meta (resolved config, drops, provenance), per-pose rows
    report.md                 summary table: model vs mean-pose baseline, recall bins, latency
    error_cdf.png             translation / rotation error CDF, model vs baseline
    trajectory.png            top-down GT vs estimate coloured by error
    error_over_time.png       errors against time
    camera_availability.png   per-camera presence strip (only when masks are given)

Every file is written atomically (:mod:`mfapr_ros.core.io`), so a report is complete or absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros import __version__
from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import RECALL_BINS
from mfapr_ros.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from mfapr_ros.inference import baselines as _baselines
from mfapr_ros.inference.calibration import calibration_report, levels_text
from mfapr_ros.inference.calibration import markdown_table as calibration_markdown

from . import plots
from .metrics import bin_label, compute_metrics, map_distance, mean_pose_baseline, pose_errors

REPORT_FORMAT = "mfapr_ros.eval_report"
REPORT_VERSION = 1
#: where the image-retrieval baseline is implemented, derived from the module itself so the text cannot go stale
RETRIEVAL_SOURCE = _baselines.__name__.replace(".", "/") + ".py"
FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "error_cdf": "error_cdf.png",
    "trajectory": "trajectory.png",
    "error_over_time": "error_over_time.png",
    "camera_availability": "camera_availability.png",
}


def resolve_baseline(baseline: tuple[Any, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The baseline pose from ``(t, q)``: either one pose (``(3,)``, ``(4,)``) or training poses (``(N,3)``,
    ``(N,4)``), which are averaged with :func:`mean_pose_baseline`."""
    if baseline is None:
        return None
    t, q = (np.asarray(x, dtype=np.float64) for x in baseline)
    if t.shape == (3,) and q.shape == (4,):
        return t, q / np.linalg.norm(q)
    if t.ndim == 2 and q.ndim == 2:
        return mean_pose_baseline(t, q)
    raise DataError(f"baseline must be one pose ((3,), (4,)) or training poses ((N,3), (N,4)); got {t.shape}, "
                    f"{q.shape}")


def _as_rows(a: Any, width: int) -> np.ndarray:
    """``a`` as float64 ``(N, width)`` rows: callers pass lists, tensors' numpy views or flat arrays alike."""
    return np.asarray(a, dtype=np.float64).reshape(-1, width)


def _side_inputs(n: int, latency_s: Sequence[float] | np.ndarray | None,
                 masks: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Check the optional per-pose inputs against ``n`` poses before anything is written, so a mismatched call
    fails with a message naming the input instead of a broadcasting error (or a half-written report).
    Returns ``(latencies (N,) or None, masks (N, T) bool or None)``."""
    lat = None if latency_s is None else np.asarray(latency_s, dtype=np.float64).reshape(-1)
    if lat is not None and len(lat) != n:
        raise DataError(f"write_report: {len(lat)} latencies for {n} poses")
    mask_arr = None if masks is None else np.asarray(masks, dtype=bool)
    if mask_arr is not None and (mask_arr.ndim != 2 or len(mask_arr) != n):
        raise DataError(f"write_report: masks must be (N={n}, num_cameras) booleans, got {mask_arr.shape}")
    return lat, mask_arr


def _baseline_section(base: tuple[np.ndarray, np.ndarray] | None, t_gt: np.ndarray, q_gt: np.ndarray,
                      tracks: Sequence[str] | None
                      ) -> tuple[dict[str, Any] | None, np.ndarray | None, np.ndarray | None]:
    """The mean-pose baseline's JSON section and its per-pose errors (for the CDF plot); all ``None`` without one.

    The baseline is one pose broadcast to every row, so the model is compared against "always answer the mean"."""
    if base is None:
        return None, None, None
    n = len(t_gt)
    tb = np.broadcast_to(base[0], (n, 3))
    qb = np.broadcast_to(base[1], (n, 4))
    t_err_b, r_err_b = pose_errors(t_gt, q_gt, tb, qb)
    doc = {"t": base[0].tolist(), "q_wxyz": base[1].tolist(),
           "metrics": compute_metrics(t_gt, q_gt, tb, qb, tracks=tracks)}
    return doc, t_err_b, r_err_b


def _retrieval_section(retrieval: tuple[Any, Any] | None, t_gt: np.ndarray, q_gt: np.ndarray,
                       tracks: Sequence[str] | None) -> dict[str, Any] | None:
    """The image-retrieval baseline's JSON section (metrics + method), or ``None`` when none was given."""
    if retrieval is None:
        return None
    n = len(t_gt)
    tr = _as_rows(retrieval[0], 3)
    qr = _as_rows(retrieval[1], 4)
    if len(tr) != n or len(qr) != n:
        raise DataError(f"write_report: {len(tr)} retrieval poses for {n} poses; give one per pose")
    return {"metrics": compute_metrics(t_gt, q_gt, tr, qr, tracks=tracks),
            "method": f"nearest training bundle by 16x16 high-pass thumbnails ({RETRIEVAL_SOURCE})"}


def _retrieval_shift_section(retrieval_shift: tuple[Any, Any] | None, t_gt: np.ndarray, q_gt: np.ndarray,
                             tracks: Sequence[str] | None) -> dict[str, Any] | None:
    """The shift-aware retrieval baseline (best match over the query's cyclic slot shifts, ring rigs), or None."""
    doc = _retrieval_section(retrieval_shift, t_gt, q_gt, tracks)
    if doc is not None:
        doc["method"] = ("nearest training bundle over the query's cyclic slot shifts, the shift's rigid motion "
                         "composed into the pose (inference/baselines.py RetrievalDatabase.query_shifts)")
    return doc


def _map_distance_section(mapped_t: Any, t_gt: np.ndarray) -> dict[str, Any] | None:
    """The drive's distance from the map (:func:`~.metrics.map_distance`) with how it was measured, or None."""
    if mapped_t is None or len(t_gt) == 0:
        return None
    doc = map_distance(t_gt, mapped_t)
    doc["method"] = ("ground-truth position to the nearest mapped (training) position: the error of an oracle that "
                     "answers with the mapped pose nearest the truth, the floor of any lookup")
    return doc


def map_distance_line(doc: dict[str, Any]) -> str | None:
    """One sentence on the drive's distance from the map (Markdown report and console), or None without one."""
    md = doc.get("map_distance")
    if not md or md["translation_m"]["median"] is None:
        return None
    t = md["translation_m"]
    return (f"Distance from the map (nearest mapped position to the truth): median {_fmt(t['median'])} m, p90 "
            f"{_fmt(t['p90'])} m, {_pct(md['within_m'].get('0.25'))} within 0.25 m — no method that answers with a "
            "mapped pose (image retrieval) can be more precise; a regressor must extrapolate from the map to be.")


#: The fused pose's figures skip the filter's first seconds (it starts from one network pose).
FUSED_WARMUP_S = 2.0


def fused_section(stamps_ns: Any, t_gt: Any, q_gt: Any, t_fused: Any, q_fused: Any, covariance: Any = None,
                  stats: dict[str, int] | None = None, settings: dict[str, Any] | None = None,
                  tracks: Sequence[str] | None = None, source: str = "") -> dict[str, Any]:
    """The report's ``fused`` section: the network pose fused with odometry (:mod:`mfapr_ros.core.fusion`) scored
    like the raw one (metrics), its covariance coverage (calibration blocks), the worst error after the first
    :data:`FUSED_WARMUP_S` seconds, and the estimator's counters (outliers rejected, poses without odometry, …)."""
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    t_gt, q_gt, t_f, q_f = _as_rows(t_gt, 3), _as_rows(q_gt, 4), _as_rows(t_fused, 3), _as_rows(q_fused, 4)
    if not (len(stamps) == len(t_gt) == len(t_f) == len(q_f)):
        raise DataError(f"fused_section: {len(t_f)} fused poses for {len(t_gt)} GT rows; give one per row")
    doc: dict[str, Any] = {"metrics": compute_metrics(t_gt, q_gt, t_f, q_f, tracks=tracks), "calibration": None,
                           "stats": dict(stats) if stats is not None else None, "settings": settings,
                           "source": source}
    if len(stamps):
        t_err, _ = pose_errors(t_gt, q_gt, t_f, q_f)
        late = stamps >= stamps.min() + int(FUSED_WARMUP_S * 1e9)
        doc["after_warmup"] = {"warmup_s": FUSED_WARMUP_S, "count": int(late.sum()),
                               "max_translation_m": float(t_err[late].max()) if late.any() else None,
                               "over_1m": int((t_err[late] > 1.0).sum())}
    if covariance is not None and len(stamps):
        cov = np.asarray(covariance, dtype=np.float64).reshape(len(stamps), 6, 6)
        doc["calibration"] = {"blocks": calibration_report(t_gt, q_gt, t_f, q_f, cov)}
    return doc


def _camera_presence(mask_arr: np.ndarray, names: Sequence[str] | None) -> dict[str, float]:
    """Fraction of poses each camera was present in; named ``cam{i}`` when the names do not match the mask width."""
    n, num = mask_arr.shape
    return {(names[i] if names and len(names) == num else f"cam{i}"): float(mask_arr[:, i].mean()) if n else 0.0
            for i in range(num)}


def _pose_rows(stamps: np.ndarray, t_gt: np.ndarray, q_gt: np.ndarray, t_est: np.ndarray, q_est: np.ndarray,
               t_err: np.ndarray, r_err: np.ndarray, tracks: Sequence[str] | None, mask_arr: np.ndarray | None,
               lat: np.ndarray | None) -> list[dict[str, Any]]:
    """One JSON row per pose, so a reader can re-derive any metric; optional fields only when their input exists."""
    rows = []
    for i in range(len(t_gt)):
        row: dict[str, Any] = {
            "stamp_ns": int(stamps[i]),
            "t_gt": t_gt[i].tolist(), "q_gt_wxyz": q_gt[i].tolist(),
            "t_est": t_est[i].tolist(), "q_est_wxyz": q_est[i].tolist(),
            "t_err_m": float(t_err[i]), "r_err_deg": float(r_err[i]),
        }
        if tracks is not None:
            row["track"] = str(tracks[i])
        if mask_arr is not None:
            row["mask"] = mask_arr[i].astype(int).tolist()
        if lat is not None:
            row["latency_s"] = float(lat[i]) if np.isfinite(lat[i]) else None
        rows.append(row)
    return rows


def _figures(stamps: np.ndarray, t_gt: np.ndarray, t_est: np.ndarray, t_err: np.ndarray, r_err: np.ndarray,
             t_err_b: np.ndarray | None, r_err_b: np.ndarray | None, mask_arr: np.ndarray | None,
             names: Sequence[str] | None) -> dict[str, Callable[[], bytes]]:
    """The plots to draw, as ``{kind: draw() -> PNG bytes}`` in FILES order; drawn lazily, one at a time, by the
    writer (the availability strip only when masks are given)."""
    figures: dict[str, Callable[[], bytes]] = {
        "error_cdf": lambda: plots.error_cdf(t_err, r_err, t_err_b, r_err_b),
        "trajectory": lambda: plots.trajectory(t_gt, t_est, t_err),
        "error_over_time": lambda: plots.error_over_time(stamps, t_err, r_err),
    }
    if mask_arr is not None:
        figures["camera_availability"] = lambda: plots.camera_availability(stamps, mask_arr, names)
    return figures


def write_report(out_dir: str | Path, *, stamps_ns: Sequence[int] | np.ndarray, t_gt: Any, q_gt: Any, t_est: Any,
                 q_est: Any, baseline: tuple[Any, Any] | None = None, masks: Any = None,
                 tracks: Sequence[str] | None = None, latency_s: Sequence[float] | np.ndarray | None = None,
                 meta: dict[str, Any] | None = None, camera_names: Sequence[str] | None = None,
                 plots_enabled: bool = True, retrieval: tuple[Any, Any] | None = None,
                 retrieval_shift: tuple[Any, Any] | None = None,
                 calibration: dict[str, Any] | None = None, fused: dict[str, Any] | None = None,
                 mapped_t: Any = None) -> dict[str, Path]:
    """Write the report for paired GT/estimate rows into ``out_dir``; returns ``{kind: path}`` (keys of FILES).

    ``baseline``: see :func:`resolve_baseline`. ``masks``: ``(N, T)`` bool camera presence per pose (the
    availability strip; names from ``camera_names`` or ``meta["cameras"]``). ``meta``: anything JSON-serialisable
    the reader needs to reproduce the run (checkpoint, bag, resolved options, drop counters). ``retrieval``:
    ``(t (N,3), q (N,4))`` the image-retrieval baseline's pose per row (:mod:`.retrieval`), or ``None``;
    ``retrieval_shift`` the same for the shift-aware lookup (ring rigs).
    ``calibration``: the covariance-calibration section (:func:`~mfapr_ros.inference.calibration.report_section`:
    1σ/2σ/3σ coverage and NLL of the published covariance), or ``None`` when the poses carry no covariance.
    ``fused``: the pose fused with odometry (:func:`fused_section`), or ``None`` when fusion did not run.
    ``mapped_t``: ``(M, 3)`` the mapped (training) positions, e.g. the retrieval database's: the report then says
    how far the drive is from the map (:func:`~.metrics.map_distance`), the floor of any lookup's error.
    """
    meta = dict(meta or {})
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    t_gt, q_gt, t_est, q_est = _as_rows(t_gt, 3), _as_rows(q_gt, 4), _as_rows(t_est, 3), _as_rows(q_est, 4)
    n = len(t_gt)
    if len(stamps) != n:
        raise DataError(f"write_report: {len(stamps)} stamps for {n} poses; give one stamp per pose")
    t_err, r_err = pose_errors(t_gt, q_gt, t_est, q_est)
    lat, mask_arr = _side_inputs(n, latency_s, masks)
    names = list(camera_names) if camera_names is not None else meta.get("cameras")

    metrics = compute_metrics(t_gt, q_gt, t_est, q_est, tracks=tracks, latency_s=lat)
    base_doc, t_err_b, r_err_b = _baseline_section(resolve_baseline(baseline), t_gt, q_gt, tracks)
    retrieval_doc = _retrieval_section(retrieval, t_gt, q_gt, tracks)
    if mask_arr is not None:
        metrics["camera_presence"] = _camera_presence(mask_arr, names)
    doc = {
        "format": REPORT_FORMAT, "format_version": REPORT_VERSION, "mfapr_ros_version": __version__,
        "metrics": metrics, "baseline": base_doc, "retrieval": retrieval_doc,
        "retrieval_shift": _retrieval_shift_section(retrieval_shift, t_gt, q_gt, tracks), "calibration": calibration,
        "fused": fused, "map_distance": _map_distance_section(mapped_t, t_gt), "meta": meta,
        "rows": _pose_rows(stamps, t_gt, q_gt, t_est, q_est, t_err, r_err, tracks, mask_arr, lat),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["json"] = out / FILES["json"]
    atomic_write_json(paths["json"], _finite(doc))
    paths["markdown"] = out / FILES["markdown"]
    atomic_write_text(paths["markdown"], markdown_summary(doc))
    if plots_enabled:
        for kind, draw in _figures(stamps, t_gt, t_est, t_err, r_err, t_err_b, r_err_b, mask_arr, names).items():
            paths[kind] = out / FILES[kind]
            atomic_write_bytes(paths[kind], draw())
    return paths


def _finite(x: Any) -> Any:
    """NaN/inf are not JSON: replace them by null so every reader (not only Python's) can parse the report."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report folder (or its report.json) back; raises DataError when it is missing or not a report."""
    p = Path(path)
    if p.is_dir():
        p = p / FILES["json"]
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise DataError(f"no evaluation report at {p}; run mfapr eval-bag / evaluate first") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON ({e})") from e
    if doc.get("format") != REPORT_FORMAT:
        raise DataError(f"{p} is not an mfapr_ros evaluation report (format={doc.get('format')!r})")
    return doc


def _fmt(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100.0 * x:.1f} %"


def markdown_summary(doc: dict[str, Any]) -> str:
    """Markdown table: model vs mean-pose baseline (median/mean/p90 errors, recall bins), latency, per track."""
    m = doc["metrics"]
    b = doc["baseline"]["metrics"] if doc.get("baseline") else None
    bins = [tuple(x) for x in m.get("bins", RECALL_BINS)]
    meta = doc.get("meta", {})
    lines = ["# Pose regression evaluation", ""]
    for key in ("source", "checkpoint", "bag", "dataset", "model"):
        if key in meta and isinstance(meta[key], str | int | float):
            lines.append(f"- **{key}**: `{meta[key]}`")
    lines.append(f"- **poses evaluated**: {m['count']}")
    lines.append("")
    header = ["", "median (m)", "median (°)", "mean (m)", "mean (°)", "p90 (m)", "p90 (°)"]
    header += [f"≤{mm:g} m, {dd:g}°" for mm, dd in bins]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")

    def row(name: str, mm: dict[str, Any]) -> str:
        t, r = mm["translation_m"], mm["rotation_deg"]
        cells = [name, _fmt(t["median"]), _fmt(r["median"], 2), _fmt(t["mean"]), _fmt(r["mean"], 2),
                 _fmt(t["p90"]), _fmt(r["p90"], 2)]
        cells += [_pct(mm["recall"].get(bin_label(bb))) for bb in bins]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("**model**", m))
    fz = doc.get("fused")
    if fz:
        lines.append(row("model fused with odometry", fz["metrics"]))
    if b is not None:
        lines.append(row("mean-pose baseline", b))
    rb = doc["retrieval"]["metrics"] if doc.get("retrieval") else None
    if rb is not None:
        lines.append(row("image-retrieval baseline", rb))
    rs = doc["retrieval_shift"]["metrics"] if doc.get("retrieval_shift") else None
    if rs is not None:
        lines.append(row("shift-aware retrieval baseline", rs))
    if b is not None and m["translation_m"]["median"] is not None and b["translation_m"]["median"]:
        ratio = m["translation_m"]["median"] / b["translation_m"]["median"]
        lines += ["", f"Median translation error is {100 * ratio:.1f} % of the mean-pose baseline's."]
    verdicts = verdict_lines(m, b, rb) + ([verdict(m, rs, "shift-aware retrieval")] if rs is not None else [])
    if verdicts:
        lines += ([""] if b is None else []) + verdicts
    rf = m.get("robot_frame_m")
    if rf and rf["forward"]["median_abs"] is not None:
        lines += ["", "Position error in the robot frame (the ground truth's base_link): median size "
                      + ", ".join(f"{ax} {_fmt(rf[ax]['median_abs'])} m" for ax in ("forward", "left", "up"))
                      + "; signed median " + ", ".join(f"{ax} {_fmt(rf[ax]['median_signed'])} m"
                                                      for ax in ("forward", "left", "up"))
                      + " (a signed median near the size is a steady offset, not noise)."]
    mdl = map_distance_line(doc)
    if mdl:
        lines += ["", mdl]
    lat = m.get("latency_s")
    if lat and lat.get("count"):
        lines += ["", f"Latency: p50 {1e3 * lat['p50']:.1f} ms, p99 {1e3 * lat['p99']:.1f} ms "
                      f"({lat['count']} poses)."]
    if "camera_presence" in m:
        pres = ", ".join(f"{k} {_pct(v)}" for k, v in m["camera_presence"].items())
        lines += ["", f"Camera presence: {pres}."]
    per_track = m.get("per_track")
    if per_track and len(per_track) > 1:
        lines += ["", "## Per track", "", "| track | poses | median (m) | median (°) |", "|---|---:|---:|---:|"]
        for name, tm in per_track.items():
            lines.append(f"| {name} | {tm['count']} | {_fmt(tm['translation_m']['median'])} | "
                         f"{_fmt(tm['rotation_deg']['median'], 2)} |")
    lines += calibration_markdown(doc.get("calibration"))
    lines += _fused_markdown(fz)
    drops = meta.get("drops")
    if isinstance(drops, dict) and drops:
        lines += ["", "Dropped: " + ", ".join(f"{k} {v}" for k, v in drops.items()) + "."]
    lines.append("")
    return "\n".join(lines)


def _fused_counts(fz: dict[str, Any]) -> str:
    st = fz.get("stats") or {}
    keys = ("fused", "initialized", "outlier_rejected", "no_odometry", "invalid", "solver_error", "resets")
    return ", ".join(f"{k} {st[k]}" for k in keys if st.get(k))


def _fused_markdown(fz: dict[str, Any] | None) -> list[str]:
    """The fused pose's extra lines: worst error after the warm-up, estimator counters, covariance coverage."""
    if not fz:
        return []
    lines = ["", "### Fused with odometry", ""]
    aw = fz.get("after_warmup") or {}
    if aw.get("count"):
        lines.append(f"After the first {aw['warmup_s']:g} s: max error {_fmt(aw['max_translation_m'])} m, "
                     f"{aw['over_1m']} of {aw['count']} poses more than 1 m off.")
    if fz.get("stats"):
        lines.append(f"Estimator: {_fused_counts(fz)} (of {fz['stats'].get('received', '?')} poses).")
    if fz.get("source"):
        lines.append(f"Source: {fz['source']}.")
    cal = (fz.get("calibration") or {}).get("blocks")
    if cal:
        lines += ["", "| fused covariance | 1σ | 2σ | 3σ | mean NLL |", "|---|---|---|---|---|"]
        for name, bl in cal.items():
            cells = [f"{bl['coverage'][k]:.1f} % ({bl['target'][k]:.1f})" for k in bl["target"]]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {bl['nll']:.3f} |")
    return lines


def _beats(model: float | None, base: float | None) -> bool | None:
    """Whether the model's median is below the baseline's by more than 0.1 % (None when either is missing)."""
    if model is None or base is None:
        return None
    return bool(model < base and not math.isclose(model, base, rel_tol=1e-3))  # a tie does not beat


def verdict(m: dict[str, Any], base: dict[str, Any], name: str) -> str:
    """One sentence: does the model beat ``name`` on median position AND on median rotation, with both numbers.

    Position alone hides a model that learned where but not which way (33.85° median rotation against the mean
    pose's 0.14° is a failed model however good its metres are); both axes are judged, each against the same
    baseline, and a loss on either is said plainly."""
    mt, mr = m["translation_m"]["median"], m["rotation_deg"]["median"]
    bt, br = base["translation_m"]["median"], base["rotation_deg"]["median"]
    pos, rot = _beats(mt, bt), _beats(mr, br)

    def part(ok: bool | None, axis: str, a: Any, b: Any, unit: str, nd: int) -> str:
        if ok is None:
            return f"cannot be compared on median {axis}"
        ratio = f", {a / b:.2f}× its median" if b else ""
        return (f"{'beats' if ok else 'does not beat'} {name} on median {axis} ({_fmt(a, nd)}{unit} vs "
                f"{_fmt(b, nd)}{unit}{ratio})")

    text = f"The model {part(pos, 'position', mt, bt, ' m', 3)}; it {part(rot, 'rotation', mr, br, '°', 2)}."
    if pos is True and rot is False:
        text += f" Orientation is not learned: worse than {name} on rotation."
    elif pos is False and rot is True:
        text += f" Position is not learned: worse than {name} on position."
    elif pos is False and rot is False:
        text += f" Not better than {name} on either axis."
    return text


def verdict_lines(m: dict[str, Any], baseline: dict[str, Any] | None, retrieval: dict[str, Any] | None
                  ) -> list[str]:
    """The verdicts against the mean-pose and the image-retrieval baselines (those present), position and
    rotation each (:func:`verdict`); shared by the Markdown report and the console summary."""
    out = []
    if baseline is not None:
        out.append(verdict(m, baseline, "the mean-pose baseline"))
    if retrieval is not None:
        out.append(verdict(m, retrieval, "image retrieval"))
    return out


def format_summary(doc_or_metrics: dict[str, Any], baseline_metrics: dict[str, Any] | None = None) -> str:
    """A few console lines: count, median errors, recall bins, and the baselines' medians for comparison."""
    retrieval = shift = cal = None
    if "metrics" in doc_or_metrics:
        m = doc_or_metrics["metrics"]
        base = doc_or_metrics.get("baseline")
        baseline_metrics = base["metrics"] if base else baseline_metrics
        retrieval = (doc_or_metrics.get("retrieval") or {}).get("metrics")
        shift = (doc_or_metrics.get("retrieval_shift") or {}).get("metrics")
        cal = (doc_or_metrics.get("calibration") or {}).get("blocks")
    else:
        m = doc_or_metrics
    t, r = m["translation_m"], m["rotation_deg"]
    rec = ", ".join(f"{k.replace('m_', ' m/').replace('deg', '°')}: {_pct(v)}" for k, v in m["recall"].items())
    lines = [f"poses: {m['count']}  median error: {_fmt(t['median'])} m, {_fmt(r['median'], 2)}°  "
             f"(mean {_fmt(t['mean'])} m, {_fmt(r['mean'], 2)}°)",
             f"recall: {rec}"]
    if baseline_metrics is not None:
        bt, br = baseline_metrics["translation_m"], baseline_metrics["rotation_deg"]
        lines.append(f"mean-pose baseline median: {_fmt(bt['median'])} m, {_fmt(br['median'], 2)}°")
    if retrieval is not None:
        rt, rr = retrieval["translation_m"], retrieval["rotation_deg"]
        lines.append(f"image-retrieval baseline median: {_fmt(rt['median'])} m, {_fmt(rr['median'], 2)}° "
                     f"(mean {_fmt(rt['mean'])} m, {_fmt(rr['mean'], 2)}°)")
    if shift is not None:
        st, sr = shift["translation_m"], shift["rotation_deg"]
        lines.append(f"shift-aware retrieval median: {_fmt(st['median'])} m, {_fmt(sr['median'], 2)}° "
                     f"(mean {_fmt(st['mean'])} m, {_fmt(sr['mean'], 2)}°)")
    mdl = map_distance_line(doc_or_metrics) if "metrics" in doc_or_metrics else None
    if mdl:
        lines.append(mdl.split(" — ")[0].replace("Distance from the map", "distance from the map")
                     + " (the floor of any lookup)")
    if cal:
        lines.append("covariance coverage 1σ/2σ/3σ: " + "; ".join(
            f"{name} {levels_text(b['coverage'])} % (target {levels_text(b['target'])})" for name, b in cal.items()))
    fz = doc_or_metrics.get("fused") if "metrics" in doc_or_metrics else None
    if fz:
        ft, fr = fz["metrics"]["translation_m"], fz["metrics"]["rotation_deg"]
        aw = fz.get("after_warmup") or {}
        line = (f"fused with odometry median: {_fmt(ft['median'])} m, {_fmt(fr['median'], 2)}° (mean "
                f"{_fmt(ft['mean'])} m); max after {aw.get('warmup_s', FUSED_WARMUP_S):g} s: "
                f"{_fmt(aw.get('max_translation_m'))} m")
        counts = _fused_counts(fz)
        lines.append(line + (f"; {counts}" if counts else ""))
        fcal = (fz.get("calibration") or {}).get("blocks")
        if fcal:
            lines.append("fused covariance coverage 1σ/2σ/3σ: " + "; ".join(
                f"{n} {levels_text(b['coverage'])} %" for n, b in fcal.items() if n != "position_3d"))
    lat = m.get("latency_s")
    if lat and lat.get("count"):
        lines.append(f"latency p50 {1e3 * lat['p50']:.1f} ms, p99 {1e3 * lat['p99']:.1f} ms")
    lines += verdict_lines(m, baseline_metrics, retrieval)
    return "\n".join(lines)


def print_summary(doc_or_metrics: dict[str, Any], baseline_metrics: dict[str, Any] | None = None) -> None:
    """Print :func:`format_summary` to stdout (the last thing `mfapr eval-bag` and the demo show)."""
    print(format_summary(doc_or_metrics, baseline_metrics))
