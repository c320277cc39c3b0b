"""The one counter of dropped inputs: by cause (and by source), with rate-limited warnings.

Why one: the node (camera messages), the dataset readers (rows of a kapture file, bag messages), the training
dataset (undecodable images) and the online evaluator (estimates without GT) all skip inputs, and every skip must be
counted by cause and some of them logged, without a broken camera at 30 Hz or a 100k-row file with a bad column
flooding the log. One class means one log policy and one shape of the counts (``cause -> n``) in every report.

Two call styles share the counts and the policy:

* :meth:`DropCounter.drop` ``(source, cause, detail)`` — the node's: counted per ``(source, cause)`` (a camera name or
  the model side), always eligible for a log line.
* :meth:`DropCounter.add` ``(cause, detail, n)`` — the readers': no source, logged only when a ``detail`` (where and
  why) is given.

The log policy per ``(source, cause)``: the first ``burst`` drops are logged at once, later ones at most once per
``period_s`` seconds with the number suppressed in between (``period_s=math.inf``: never again, after one notice
that further drops are only counted). Lines go through :func:`mfapr_ros.core.log_sink.warn`, so a caller hands in an
rclpy logger method, a ``logging.Logger``, any ``callable(str)`` or nothing (this module's logger).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .log_sink import warn

_LOG = logging.getLogger(__name__)

LogTarget = logging.Logger | Callable[[str], Any]

#: readers' policy: log the first few occurrences of a cause with their location, then count silently
READER_BURST = 3


def summarize_drops(drops: Mapping[str, int], source: str, kept: int) -> str:
    """The one line a reader logs when done: what was kept and what was skipped by cause."""
    if not drops:
        return f"{source}: {kept} bundles, nothing skipped"
    parts = ", ".join(f"{k}={v}" for k, v in sorted(drops.items()))
    return f"{source}: {kept} bundles; skipped: {parts}"


class DropCounter(dict[str, int]):
    """Counts of dropped inputs; as a ``dict`` it is ``cause -> n`` summed over sources (what reports store).

    Per-source counts are in :attr:`counts` (``(source, cause) -> n``; the readers' source is ``""``). ``clock`` is
    injectable so tests need no sleeps. Thread-safe (node callbacks may run on several executor threads); picklable
    (a dataset holding one goes to DataLoader worker processes) — the lock is recreated, not copied.
    """

    def __init__(self, logger: LogTarget | None = None, period_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, burst: int = 1) -> None:
        super().__init__()
        self._logger = logger
        self.period_s = float(period_s)
        self.burst = int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    @classmethod
    def for_reader(cls) -> DropCounter:
        """The readers' and datasets' policy: the first :data:`READER_BURST` of a cause logged, then only counted."""
        return cls(period_s=math.inf, burst=READER_BURST)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def drop(self, source: str, cause: str, detail: str = "", n: int = 1) -> bool:
        """Count ``n`` drops (one, by default) of ``source`` (a camera, the model side); returns whether a log line
        was emitted."""
        return self._count(source, cause, detail, n, always_log=True)

    def add(self, cause: str, detail: str = "", n: int = 1) -> bool:
        """Count ``n`` source-less drops of ``cause``; logged (within the policy) only when ``detail`` says where."""
        return self._count("", cause, detail, n, always_log=False)

    def merge(self, other: Mapping[str, int], prefix: str = "") -> None:
        """Add another ``cause -> n`` mapping (a synchronizer's stats, a sub-reader's drops) without logging."""
        with self._lock:
            for k, v in other.items():
                key = ("", prefix + k)
                self._counts[key] = self._counts.get(key, 0) + int(v)
                self[prefix + k] = self.get(prefix + k, 0) + int(v)

    def summary(self, source: str, kept: int) -> str:
        return summarize_drops(self, source, kept)

    def _count(self, source: str, cause: str, detail: str, n: int, always_log: bool) -> bool:
        key = (source, cause)
        now = self._clock()
        with self._lock:
            total = self._counts[key] = self._counts.get(key, 0) + n
            self[cause] = self.get(cause, 0) + n
            if not (always_log or detail):
                return False
            last = self._last_log.get(key)
            throttled = math.isinf(self.period_s) or (last is not None and now - last < self.period_s)
            if total > self.burst and throttled:
                self._suppressed[key] = self._suppressed.get(key, 0) + n
                return False
            suppressed = self._suppressed.pop(key, 0)
            self._last_log[key] = now
        self._emit(self._message(source, cause, detail, suppressed, total))
        if total == self.burst and math.isinf(self.period_s):
            self._emit(f"further '{cause}' skips are counted but not logged")
        return True

    @staticmethod
    def _message(source: str, cause: str, detail: str, suppressed: int, total: int) -> str:
        if not source:
            return f"skipped ({cause}): {detail}"
        more = f" (+{suppressed} more since the last report)" if suppressed else ""
        return (f"camera '{source}': dropped input ({cause}){': ' + detail if detail else ''}{more}; "
                f"{total} dropped for this cause so far")

    def _emit(self, msg: str) -> None:
        warn(self._logger, _LOG, msg)

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def by_cause(self) -> dict[str, int]:
        with self._lock:
            return dict(self)

    def by_camera(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (cam, _), n in self.counts.items():
            out[cam] = out.get(cam, 0) + n
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())
