"""The `mfapr explain` figure: per camera its model input and saliency overlays, and a contribution bar chart."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported lazily (Agg backend) inside plot_bundle
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import SubplotSpec
    from matplotlib.image import AxesImage

ROLE_LABEL = {
    "attention": {"position": "position-query\nattention", "orientation": "orientation-query\nattention"},
    "gradient": {"position": "|∂ position / ∂ x|", "orientation": "|∂ orientation / ∂ x|"},
}


CBAR_LABEL = {
    "joint": "relative attention (one softmax over all cameras;\n% = camera's share)",
    "gradient": "relative gradient (shared scale;\n% = camera's share)",
    "per_camera": "relative attention (one softmax per camera)",
    "shared": "relative attention (one map shared by all cameras)",
}


def _title(doc: dict[str, Any]) -> str:
    """Suptitle: bundle stamp, backbone and fusion, predicted position and (when GT was known) its error."""
    pose = doc["pose"]
    fusion = doc.get("fusion") or {}
    fusion_s = " ".join(str(fusion[k]) for k in ("position", "mode", "block", "fc") if fusion.get(k))
    title = (f"mfapr explain — bundle {doc['stamp_ns']}   {doc.get('backbone', '')} ({fusion_s} fusion)"
             f"\npose t = ({', '.join(f'{v:.2f}' for v in pose['t'])}) m")
    if "error" in doc:
        title += f"   error vs GT {doc['error']['t_m']:.2f} m, {doc['error']['rot_deg']:.1f}°"
    return title


def _input_cell(fig: Figure, spec: SubplotSpec, image: np.ndarray, name: str, present: bool, first: bool) -> None:
    """Top row: the model's input crop, or a grey tile marked "absent" so a missing camera is not read as black."""
    ax = fig.add_subplot(spec)
    ax.imshow(image if present else np.full_like(image, 200))
    ax.set_title(name + ("" if present else " (absent)"), fontsize=9, color="black" if present else "grey")
    if not present:
        ax.text(0.5, 0.5, "absent", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
    if first:
        ax.set_ylabel("input", fontsize=9)


def _saliency_cell(fig: Figure, spec: SubplotSpec, image: np.ndarray, saliency: np.ndarray, vmax: float,
                   present: bool, share: float | None, show_share: bool, ylabel: str | None) -> AxesImage | None:
    """One camera × role cell: the heat map (scaled by ``vmax``, shared across cameras so maps compare) over a
    dimmed grey copy of the input, so colours read as saliency only; returns the heat-map image for the colour bar
    (``None`` for an absent camera, drawn as a grey tile)."""
    ax = fig.add_subplot(spec)
    im_obj = None
    if present:
        grey = image.astype(np.float32).mean(axis=2) / 255.0
        ax.imshow(0.25 + 0.5 * grey, cmap="gray", vmin=0, vmax=1)
        im_obj = ax.imshow(saliency / vmax, cmap="jet", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")
        if show_share:  # a camera's share is meaningful only for a joint map
            ax.text(0.03, 0.97, f"{100 * share:.0f}%", transform=ax.transAxes, ha="left", va="top",
                    fontsize=8, color="white",
                    bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "edgecolor": "none"})
    else:
        ax.imshow(np.full_like(image, 200))
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=8)
    return im_obj


def _contribution_labels(contributions: list[dict[str, Any]]) -> list[str]:
    """Bar labels: the camera name, and why its bar is zero or unannotated (absent / the only camera)."""
    labels = []
    for r in contributions:
        lab = r["camera"]
        if not r["present"]:
            lab += "\n(absent: 0)"
        elif r["only_camera"]:
            lab += "\n(only camera)"
        labels.append(lab)
    return labels


def _contribution_bars(ax: Axes, contributions: list[dict[str, Any]], T: int) -> None:
    """Bottom panel: pose change when each camera is masked out, position (left axis) and rotation (twin axis),
    each bar annotated unless the camera was absent or the only one (then the change is not a contribution)."""
    c = contributions
    x = np.arange(T)
    dt = np.array([r["delta_t_m"] if r["delta_t_m"] is not None else 0.0 for r in c])
    dr = np.array([r["delta_rot_deg"] if r["delta_rot_deg"] is not None else 0.0 for r in c])
    wbar = 0.38
    b1 = ax.bar(x - wbar / 2, dt, wbar, color="tab:blue", label="Δ position (m)")
    ax.set_ylabel("Δ position (m)", color="tab:blue", fontsize=9)
    ax.tick_params(axis="y", labelcolor="tab:blue", labelsize=8)
    ax2 = ax.twinx()
    b2 = ax2.bar(x + wbar / 2, dr, wbar, color="tab:orange", label="Δ rotation (°)")
    ax2.set_ylabel("Δ rotation (°)", color="tab:orange", fontsize=9)
    ax2.tick_params(axis="y", labelcolor="tab:orange", labelsize=8)
    ax.set_ylim(0, float(dt.max()) * 1.6 if dt.max() > 0 else 1.0)
    ax2.set_ylim(0, float(dr.max()) * 1.6 if dr.max() > 0 else 1.0)
    for bars, vals, a, unit in ((b1, dt, ax, "m"), (b2, dr, ax2, "°")):
        for bar, v, r in zip(bars, vals, c, strict=True):
            if r["present"] and not r["only_camera"]:
                a.annotate(f"{v:.3g} {unit}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                           fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(_contribution_labels(c), fontsize=8)
    ax.set_xlim(-0.6, T - 0.4)
    ax.set_title("contribution: pose change when the camera is masked out", fontsize=9)
    ax.legend([b1, b2], ["Δ position (m)", "Δ rotation (°)"], fontsize=8, loc="upper right", framealpha=0.8)


def plot_bundle(path: str | Path, images: np.ndarray, maps: dict[str, np.ndarray], doc: dict[str, Any]) -> None:
    """``images`` (T,S,S,3) uint8 (the model's input crops), ``maps`` {role: (T,S,S)}, ``doc`` the bundle JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import gridspec

    from mfapr_ros.core.io import atomic_write_bytes

    names = doc["cameras"]
    mask = np.asarray(doc["mask"], bool)
    T = len(names)
    roles = [r for r in ("position", "orientation") if r in maps]
    method = doc["method"]
    layout = doc.get("map_layout", "joint")
    cell = 1.9
    fig = plt.figure(figsize=(max(1.0 + cell * T + 0.8, 7.5), cell * (1 + len(roles)) + 3.2), dpi=110)
    gs = gridspec.GridSpec(2 + len(roles), T + 1, figure=fig, width_ratios=[1] * T + [0.06],
                           height_ratios=[1] * (1 + len(roles)) + [1.35], hspace=0.28, wspace=0.06,
                           left=0.09, right=0.94, top=0.9, bottom=0.1)
    fig.suptitle(_title(doc), fontsize=10)
    im_obj = None
    for i in range(T):  # column by column (input, then each role), the order the axes were always created in
        _input_cell(fig, gs[0, i], images[i], names[i], bool(mask[i]), i == 0)
        for r, role in enumerate(roles):
            m = maps[role]
            vmax = float(m.max()) or 1.0  # one scale across cameras: their maps are comparable
            share = doc["saliency_share"][role][names[i]] if mask[i] else None
            drawn = _saliency_cell(fig, gs[1 + r, i], images[i], m[i], vmax, bool(mask[i]), share,
                                   layout in ("joint", "gradient"), ROLE_LABEL[method][role] if i == 0 else None)
            im_obj = drawn if drawn is not None else im_obj
    if im_obj is not None and roles:
        cax = fig.add_subplot(gs[1:1 + len(roles), T])
        cb = fig.colorbar(im_obj, cax=cax)
        cb.set_label(CBAR_LABEL.get(layout, "relative saliency"), fontsize=7)
        cb.ax.tick_params(labelsize=7)
    _contribution_bars(fig.add_subplot(gs[1 + len(roles), :T]), doc["contributions"], T)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
