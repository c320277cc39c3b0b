"""Offline bundling: feed recorded per-camera streams through the project's one synchronizer.

Readers must form bundles exactly like the live node does, so they do not re-implement the policy: they merge
the per-camera streams in stamp order (what a live subscriber would see) and push them into
``mfapr_ros.sync.ApproximateTimeSynchronizer`` with the same settings the node uses.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mfapr_ros.errors import ConfigError

#: Defaults shared by readers: 4 cameras at up to 30 Hz, phones up to ~1/2 frame apart.
DEFAULT_MAX_INTERVAL_NS = 20_000_000
DEFAULT_QUEUE_SIZE = 30


@dataclass(frozen=True)
class SyncSettings:
    """Bundling policy (same meaning as the node's parameters).

    ``max_interval_ns`` is the slop: the largest spread of stamps inside one bundle. ``min_streams`` is the
    fewest cameras a bundle may have (partial bundles carry a mask); ``None`` means all cameras.
    """

    max_interval_ns: int = DEFAULT_MAX_INTERVAL_NS
    queue_size: int = DEFAULT_QUEUE_SIZE
    min_streams: int | None = None
    stream_timeout_ns: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_interval_ns, int) or self.max_interval_ns < 0:
            raise ConfigError(f"sync.max_interval_ns must be a non-negative integer (ns), got {self.max_interval_ns!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ConfigError(f"sync.queue_size must be a positive integer, got {self.queue_size!r}")
        if self.min_streams is not None and (not isinstance(self.min_streams, int) or self.min_streams < 1):
            raise ConfigError(f"sync.min_streams must be a positive integer or null, got {self.min_streams!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SyncSettings:
        """From a config mapping; ``max_interval_ms`` is accepted as a friendlier alias of ``max_interval_ns``."""
        d = dict(d or {})
        if "max_interval_ms" in d:
            d["max_interval_ns"] = int(round(float(d.pop("max_interval_ms")) * 1e6))
        unknown = set(d) - {"max_interval_ns", "queue_size", "min_streams", "stream_timeout_ns"}
        if unknown:
            raise ConfigError(f"sync: unknown keys {sorted(unknown)}; allowed: max_interval_ns (or max_interval_ms), "
                              "queue_size, min_streams, stream_timeout_ns")
        return cls(**d)

    def synchronizer(self, num_streams: int) -> Any:
        from mfapr_ros.sync import ApproximateTimeSynchronizer

        min_streams = self.min_streams if self.min_streams is not None else num_streams
        return ApproximateTimeSynchronizer(num_streams, self.queue_size, self.max_interval_ns,
                                           min_streams=min(min_streams, num_streams),
                                           stream_timeout_ns=self.stream_timeout_ns)


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


def sync_stats(sync: Any) -> dict[str, int]:
    """The synchronizer's non-zero message-drop counters as ``{"sync_<cause>": n}``, for a reader's drop table."""
    from mfapr_ros.sync import DROP_KEYS

    stats = dict(getattr(sync, "stats", {}) or {})
    return {f"sync_{k}": int(stats[k]) for k in DROP_KEYS if int(stats.get(k, 0))}
