"""Report figures (PNG bytes) drawn with matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` rather than ``pyplot``, so nothing touches
the global backend or leaks figures in a long-running process (the evaluator node draws on shutdown). Each function
returns PNG bytes; :mod:`.report` writes them atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mfapr_ros.core.geometry import RECALL_BINS

DPI = 100


def _figure(w: float = 6.4, h: float = 4.8) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _no_data(ax: Any, text: str = "no matched poses") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def error_cdf(t_err: np.ndarray, r_err: np.ndarray, t_err_base: np.ndarray | None = None,
              r_err_base: np.ndarray | None = None,
              bins: Sequence[tuple[float, float]] = RECALL_BINS) -> bytes:
    """Cumulative share of poses under a translation (left) / rotation (right) error, model vs baseline."""
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, err, base, unit, thresholds in (
        (axes[0], t_err, t_err_base, "m", [b[0] for b in bins]),
        (axes[1], r_err, r_err_base, "°", [b[1] for b in bins]),
    ):
        if len(err) == 0:
            _no_data(ax)
            continue
        for values, label, style in ((err, "model", "-"), (base, "mean-pose baseline", "--")):
            if values is None or len(values) == 0:
                continue
            x = np.sort(np.asarray(values))
            y = np.arange(1, len(x) + 1) / len(x)
            ax.step(x, y, style, where="post", label=label)
        for th in thresholds:
            ax.axvline(th, color="grey", lw=0.6, ls=":")
        ax.set_xscale("symlog", linthresh=0.1 if unit == "m" else 1.0)
        ax.set_xlabel(f"error ({unit})")
        ax.set_ylabel("share of poses")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_title("translation error CDF")
    axes[1].set_title("rotation error CDF")
    return _png(fig)


def trajectory(t_gt: np.ndarray, t_est: np.ndarray, t_err: np.ndarray) -> bytes:
    """Top-down (x, y) view: GT as a line, estimates as points coloured by translation error."""
    fig = _figure(6.4, 6.0)
    ax = fig.subplots()
    if len(t_gt) == 0:
        _no_data(ax)
        return _png(fig)
    ax.plot(t_gt[:, 0], t_gt[:, 1], "-", color="black", lw=1.0, label="ground truth")
    sc = ax.scatter(t_est[:, 0], t_est[:, 1], c=t_err, cmap="viridis", s=12, label="estimate")
    fig.colorbar(sc, ax=ax, label="translation error (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("trajectory (top-down), estimate coloured by error")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return _png(fig)


def error_over_time(stamps_ns: np.ndarray, t_err: np.ndarray, r_err: np.ndarray) -> bytes:
    """Translation and rotation error against time since the first pose (gaps show dropped bundles)."""
    fig = _figure(10, 4.5)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    if len(stamps_ns) == 0:
        _no_data(ax1)
        return _png(fig)
    s = (np.asarray(stamps_ns, dtype=np.int64) - int(np.min(stamps_ns))) / 1e9
    ax1.plot(s, t_err, ".-", ms=3, lw=0.8)
    ax1.set_ylabel("translation (m)")
    ax1.grid(True, alpha=0.3)
    ax2.plot(s, r_err, ".-", ms=3, lw=0.8, color="tab:orange")
    ax2.set_ylabel("rotation (°)")
    ax2.set_xlabel("time (s)")
    ax2.grid(True, alpha=0.3)
    ax1.set_title("error over time")
    return _png(fig)


def camera_availability(stamps_ns: np.ndarray, masks: np.ndarray, camera_names: Sequence[str] | None) -> bytes:
    """One row per camera, dark where the camera's image was in the bundle: shows dropouts at a glance."""
    masks = np.asarray(masks, dtype=bool)
    n_cam = masks.shape[1] if masks.ndim == 2 else 0
    fig = _figure(10, 0.6 + 0.35 * max(n_cam, 1))
    ax = fig.subplots()
    if masks.ndim != 2 or len(masks) == 0:
        _no_data(ax, "no camera masks")
        return _png(fig)
    s = (np.asarray(stamps_ns, dtype=np.int64) - int(np.min(stamps_ns))) / 1e9
    end = float(s[-1]) if len(s) > 1 else 1.0
    ax.imshow(masks.T.astype(float), aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
              extent=(0.0, end if end > 0 else 1.0, n_cam - 0.5, -0.5))
    names = list(camera_names) if camera_names is not None and len(camera_names) == n_cam else \
        [f"cam{i}" for i in range(n_cam)]
    ax.set_yticks(range(n_cam))
    ax.set_yticklabels(names)
    ax.set_xlabel("time (s)")
    ax.set_title("camera availability (dark = image present)")
    return _png(fig)
