"""Running statistics of a live pipeline: event rates and latency percentiles (ROS-free, thread-safe).

Why here and not in the node: they are plain numbers fed from several threads (camera callbacks, the inference
worker) and read by /diagnostics, the shutdown summary and the benchmark; keeping them ROS-free lets their maths be
tested, and reused, without a ROS install.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RateMeter:
    """Events per second over a sliding window of wall-clock time (monotonic; sim time does not matter here)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._t: collections.deque[float] = collections.deque()
        self.count = 0
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        """Record one event (at ``now``, monotonic seconds; default: the current time)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._t.append(now)
            self.count += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self, now: float | None = None) -> float:
        """Hz over the window: (n-1) / (last - first) — exact for a steady stream, 0 with fewer than 2 events."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._t) < 2 or self._t[-1] <= self._t[0]:
                return 0.0
            return (len(self._t) - 1) / (self._t[-1] - self._t[0])

    def last(self) -> float | None:
        """Time of the latest event still in the window (None when none is), for "silent for N s"."""
        with self._lock:
            return self._t[-1] if self._t else None


class LatencyStats:
    """The last ``n`` latencies (seconds) with percentiles, for /diagnostics and the benchmark."""

    def __init__(self, n: int = 1000) -> None:
        self._v: collections.deque[float] = collections.deque(maxlen=n)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one latency in seconds."""
        with self._lock:
            self._v.append(float(seconds))

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) of the kept values; NaN before the first one."""
        with self._lock:
            return float(np.percentile(np.array(self._v), p)) if self._v else float("nan")

    def __len__(self) -> int:
        return len(self._v)
