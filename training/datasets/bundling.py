"""Offline bundling of recorded per-camera streams (kapture) through the project's one synchronizer.

Readers must form bundles exactly like the live node does, so they do not re-implement the policy: they merge
the per-camera streams in stamp order (what a live subscriber would see) and push them into
``ApproximateTimeSynchronizer`` built from the same :class:`~mfapr_ros.core.sync.SyncSettings` the node
and ``eval-bag`` use (``data.sync`` in the training YAML, with the node's parameter names and defaults). Bags go
through :mod:`mfapr_ros.bag.bundles`, the one bag pipeline, instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mfapr_ros.core.sync import SyncSettings

__all__ = ["SyncSettings", "merge_streams", "run_synchronizer"]


def merge_streams(streams: Sequence[Iterable[tuple[int, Any]]]) -> Iterator[tuple[int, int, Any]]:
    """``(stream, stamp_ns, payload)`` of several stamp-sorted streams in global stamp order (ties: stream order)."""
    def tagged(s: int, st: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, int, Any]]:
        for stamp, payload in st:
            yield stamp, s, payload

    its = [tagged(s, st) for s, st in enumerate(streams)]
    for stamp, s, payload in heapq.merge(*its, key=lambda x: (x[0], x[1])):
        yield s, stamp, payload


def run_synchronizer(sync: Any, events: Iterable[tuple[int, int, Any]]) -> Iterator[Any]:
    """Push ``(stream, stamp_ns, payload)`` events through ``sync`` and yield its bundles, then flush the tail.

    A synchronizer may hold the last bundle back until it is sure no better match can arrive; at the end of a
    recording nothing more will arrive, so a ``flush()`` (if the class offers one) releases it.
    """
    for s, stamp, payload in events:
        yield from sync.add(s, stamp, payload)
    flush = getattr(sync, "flush", None)
    if callable(flush):
        yield from flush() or []
