"""Anchor positions for an anchor pose head: spread evenly over the places the training data visits.

Farthest-point sampling over the training positions: every training pose is within about one spacing of an anchor,
the anchors follow the trajectories (not a grid over walls and shops nobody drove through), and the result is a
deterministic function of the data.
"""

from __future__ import annotations

import logging

import numpy as np

from mfapr_ros.core.errors import DataError

log = logging.getLogger(__name__)


def farthest_point_anchors(t: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """``k`` anchors (k, 3) from positions ``t`` (N, 3) and their median nearest-neighbour spacing (metres)."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0:
        raise DataError(f"anchors: need training positions (N, 3), got shape {t.shape}")
    if k > len(t):
        # a tiny training split (a smoke test, a CI run): every pose is an anchor, repeated to fill the head's K
        # outputs — duplicates are harmless (they get the same soft labels), an error would make the shipped
        # configs unusable on small data
        log.warning("model.num_anchors is %d but the training split has only %d poses: every pose is an anchor "
                    "(repeated); lower model.num_anchors for this dataset", k, len(t))
        a = t[np.arange(k) % len(t)]
        return a, _spacing(t) if len(t) > 1 else 1.0
    sel = [0]
    d = np.linalg.norm(t - t[0], axis=1)
    for _ in range(k - 1):
        i = int(d.argmax())
        sel.append(i)
        d = np.minimum(d, np.linalg.norm(t - t[i], axis=1))
    a = t[sel]
    return a, (_spacing(a) if k > 1 else 1.0)


def _spacing(a: np.ndarray) -> float:
    """Median nearest-neighbour distance between distinct points (metres, at least 1 mm)."""
    a = np.unique(a, axis=0)
    if len(a) < 2:
        return 1.0
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float(max(np.median(dist.min(axis=1)), 1e-3))
