"""The live node's bundle pipeline (ROS-free): a bounded bundle queue, decode one bundle ahead, infer, publish.

Why not decode in the camera callbacks (as before issue 25): every image was decoded before the synchronizer and
latest-wins decided whether it would be used, so the more bundles were offered the fewer poses came out (10
compressed cameras: 62 poses/s at 82 offered, 43/s at 163). Here the synchronizer carries the undecoded messages
and only the bundle that will be inferred is decoded:

* :meth:`BundlePipeline.submit` (a camera callback, after the synchronizer) never blocks: the new bundle joins a
  bounded wait queue of ``depth`` bundles; when it is full the *oldest* waiting one is superseded, counted
  ``stale_dropped`` (never decoded). ``depth`` 1 is pure latest-wins. Why deeper (the node's default is 2,
  ``bundle_queue_depth``): near capacity the model's jitter (forward pass 3.0 → 5.4 ms p50 → p99 on a 2-vCPU VM)
  superseded 11–31 % of the bundles at 0.75–1x of the model rate with one slot (issue 25); a second slot absorbs a
  slow forward pass at the cost of at most one bundle's wait under overload, where the queue is always full;
* the *prepare* thread decodes the oldest waiting bundle (the queue is FIFO; under overload it holds only the
  newest ``depth``) as soon as the inference thread has taken the previous
  one — one bundle ahead, so decoding overlaps inference (the decoders and torch release the GIL) and nothing
  decoded is thrown away unless the pipeline is closed; ``prepare`` may reject a bundle (a bad frame, see
  :mod:`mfapr_ros.core.bundle_decode`), counted ``rejected``;
* the *inference* thread runs the model on the prepared bundle and hands the result to the *publish* thread,
  which calls ``on_result`` (publishing) while the model already runs the next bundle. Why a thread of its own:
  publishing is Python and DDS work (~0.5 ms per pose, issue 25) that on the inference thread delayed every next
  forward pass; the model's kernels release the GIL, so the two overlap on a second core. A result is never dropped
  for being slow to publish: the inference thread waits for the publish slot (bounded back-pressure).

At most ``depth`` bundles wait, one is being decoded, one is decoded, one is inferred, one result waits to be published
and one is being published: no unbounded queue. No lock is held across decode, inference or the callbacks.
One lock guards the slots; each thread waits on a condition of its own (and :meth:`wait_idle` on another), and a
state change wakes only the thread that can act on it. Why: with one shared condition every change woke all three
workers (~7 ``notify_all`` per pose, ~20 wake-ups), each of which had to take the GIL just to go back to sleep —
GIL hand-overs that delayed the inference thread coming back from the model (issue 25).
Per-bundle stage times (wait, decode, inference) are passed to ``on_result`` for /diagnostics. The interface
(``stats``, ``wait_idle``, ``discard_pending``, ``close``) is
:class:`~mfapr_ros.inference.localizer.AsyncLocalizer`'s, so lifecycle transitions treat both alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageTimes:
    """Seconds one bundle spent waiting (submit → decode starts, plus decoded → model starts), decoding (+ checks)
    and in the model; ``total_s`` is submit → result, the pose's end-to-end latency inside the node."""

    wait_s: float
    decode_s: float
    inference_s: float

    @property
    def total_s(self) -> float:
        return self.wait_s + self.decode_s + self.inference_s


class BundlePipeline:
    """Three worker threads (prepare, inference, publish) behind a bounded wait queue; see the module docstring.

    Args:
        prepare: ``prepare(item) -> (images, stamp_ns) | None`` — decode and check one submitted item; ``None``
            rejects it (already counted by the caller's rule). Runs on the prepare thread.
        infer: ``infer(images, stamp_ns) -> result`` (``Localizer.infer``). Runs on the inference thread.
        on_result: ``on_result(result, StageTimes)`` on the publish thread, in inference order.
        on_error: ``on_error(exc)`` for a failed prepare, inference or ``on_result`` (counted; logged when None).
        depth: bundles that may wait for the prepare thread (>= 1); a new one beyond it supersedes the oldest.
    """

    def __init__(self, prepare: Callable[[Any], tuple[Any, int] | None], infer: Callable[[Any, int], Any],
                 on_result: Callable[[Any, StageTimes], Any],
                 on_error: Callable[[BaseException], Any] | None = None, name: str = "mfapr-pipeline",
                 logger: logging.Logger | None = None, depth: int = 1) -> None:
        if int(depth) < 1:
            raise ValueError(f"pipeline depth must be >= 1, got {depth}")
        self.depth = int(depth)
        self._prepare, self._infer, self._on_result, self._on_error = prepare, infer, on_result, on_error
        self._log = logger or _LOG
        lock = threading.RLock()  # guards every slot below; each condition waits on it
        self._cond = threading.Condition(lock)  # ``with self._cond`` takes the lock; wait_idle() waits on it
        self._wake_prepare = threading.Condition(lock)  # a bundle to decode, or the decoded slot became free
        self._wake_infer = threading.Condition(lock)  # a decoded bundle, or the publish slot became free
        self._wake_publish = threading.Condition(lock)  # a result to publish, or the end of the pipeline
        self._pending: deque[tuple[Any, float]] = deque()  # (item, t_submit), oldest first, at most depth
        self._ready: tuple[Any, int, float, float, float] | None = None  # images, stamp, wait, decode, t_done
        self._result: tuple[Any, StageTimes] | None = None  # inferred, waiting for the publish thread
        self._preparing = False
        self._drop_decoding = False  # discard_pending() during a decode: drop (already counted) when it returns
        self._busy = False
        self._publishing = False
        self._closed = False
        self._stats = {"submitted": 0, "processed": 0, "stale_dropped": 0, "rejected": 0, "errors": 0,
                       "callback_errors": 0, "dropped_closed": 0, "discarded": 0}
        self._threads = [threading.Thread(target=self._run_prepare, name=f"{name}-decode", daemon=True),
                         threading.Thread(target=self._run_infer, name=f"{name}-inference", daemon=True),
                         threading.Thread(target=self._run_publish, name=f"{name}-publish", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def stats(self) -> dict[str, int]:
        with self._cond:
            return dict(self._stats)

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def submit(self, item: Any) -> bool:
        """Hand over a bundle; with ``depth`` already waiting, the oldest is superseded (counted
        ``stale_dropped``). False once closed."""
        with self._cond:
            if self._closed:
                self._stats["dropped_closed"] += 1
                return False
            self._stats["submitted"] += 1
            if len(self._pending) >= self.depth:
                self._pending.popleft()
                self._stats["stale_dropped"] += 1
            self._pending.append((item, time.perf_counter()))
            self._wake_prepare.notify()
        return True

    def _idle(self) -> bool:
        return (not self._pending and self._ready is None and self._result is None and not self._preparing
                and not self._busy and not self._publishing)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing waits, is decoded, inferred or published (tests, deactivation); False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._idle():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def discard_pending(self) -> int:
        """Drop the bundles not yet in the model (waiting, being decoded or decoded; counted ``discarded``); the
        running ones finish and their results are handed to ``on_result``. Returns how many were dropped (a lifecycle
        deactivate: queued input is not published later; the node counts each).

        A bundle in the middle of its decode is counted now and dropped when the decode returns: left alone it
        would reach the model after the deactivate and be published (a lifecycle test caught it as a race)."""
        with self._cond:
            drop_decoding = self._preparing and not self._drop_decoding
            n = len(self._pending) + (self._ready is not None) + drop_decoding
            self._drop_decoding = self._drop_decoding or drop_decoding
            self._pending.clear()
            self._ready = None
            self._stats["discarded"] += n
            self._wake_prepare.notify()  # the decoded slot may be free now
            self._cond.notify_all()  # wait_idle()
            return int(n)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop accepting bundles, drop those not yet in the model, finish the running ones (their results still
        reach ``on_result``), join the threads."""
        with self._cond:
            self._stats["dropped_closed"] += len(self._pending) + (self._ready is not None)
            self._pending.clear()
            self._ready = None
            self._closed = True
            self._wake_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
                if t.is_alive():
                    self._log.warning("%s did not stop within %.1f s", t.name, timeout or 0.0)

    def _wake_all(self) -> None:
        """Every waiting thread (the lock is held): closing, or an end-of-pipeline condition changed."""
        for cond in (self._wake_prepare, self._wake_infer, self._wake_publish, self._cond):
            cond.notify_all()

    def __enter__(self) -> BundlePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report(self, exc: BaseException, what: str) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc)
                return
            except Exception:  # noqa: BLE001 - an error handler failing must not kill a worker
                self._log.exception("pipeline on_error callback failed")
        self._log.warning("pipeline %s failed: %s: %s", what, type(exc).__name__, exc)

    def _run_prepare(self) -> None:
        while True:
            with self._cond:
                # one bundle ahead: decode only when the inference thread has taken the previous one
                while not self._closed and (not self._pending or self._ready is not None):
                    self._wake_prepare.wait()
                if self._closed:
                    return
                item, t_submit = self._pending.popleft()
                self._preparing = True
            t0 = time.perf_counter()
            failed = False
            try:
                out = self._prepare(item)
            except Exception as e:  # noqa: BLE001 - counted and reported, the worker keeps serving
                out, failed = None, True
                self._report(e, "decode")
            t1 = time.perf_counter()
            with self._cond:
                self._preparing = False
                if self._drop_decoding:  # discarded while it was decoded: counted then, dropped now
                    self._drop_decoding = False
                elif failed:  # counted once: an error, not also a rejected bundle
                    self._stats["errors"] += 1
                elif out is None:
                    self._stats["rejected"] += 1
                elif self._closed:
                    self._stats["dropped_closed"] += 1
                else:
                    self._ready = (out[0], int(out[1]), t0 - t_submit, t1 - t0, t1)
                if self._closed:  # the inference and publish threads end once nothing is being decoded
                    self._wake_all()
                elif self._ready is not None:
                    self._wake_infer.notify()
                else:  # rejected or failed: only wait_idle() can care
                    self._cond.notify_all()

    def _run_infer(self) -> None:
        while True:
            with self._cond:
                while self._ready is None and not (self._closed and not self._preparing):
                    self._wake_infer.wait()
                if self._ready is None:
                    return
                images, stamp, wait_s, decode_s, t_decoded = self._ready
                self._ready = None
                self._busy = True
                self._wake_prepare.notify()  # the prepare thread may start on the next bundle now
            done: tuple[Any, StageTimes] | None = None
            try:
                t0 = time.perf_counter()
                try:
                    result = self._infer(images, stamp)
                except Exception as e:  # noqa: BLE001
                    with self._cond:
                        self._stats["errors"] += 1
                    self._report(e, "inference")
                    continue
                done = (result, StageTimes(wait_s + (t0 - t_decoded), decode_s, time.perf_counter() - t0))
            finally:
                with self._cond:
                    if done is not None:
                        self._stats["processed"] += 1
                        while self._result is not None:  # the previous result is still waiting: back-pressure
                            self._wake_infer.wait()
                        self._result = done
                    self._busy = False
                    if self._closed:
                        self._wake_all()
                    else:
                        self._wake_publish.notify()
                        self._cond.notify_all()  # wait_idle(): idle once published, but an error leaves it idle now

    def _run_publish(self) -> None:
        while True:
            with self._cond:
                while self._result is None and not (self._closed and not self._preparing and not self._busy
                                                    and self._ready is None):
                    self._wake_publish.wait()
                if self._result is None:
                    return
                result, times = self._result
                self._result = None
                self._publishing = True
                self._wake_infer.notify()  # the inference thread may hand over its next result
            try:
                self._on_result(result, times)
            except Exception as e:  # noqa: BLE001
                with self._cond:
                    self._stats["callback_errors"] += 1
                self._report(e, "on_result callback")
            finally:
                with self._cond:
                    self._publishing = False
                    self._cond.notify_all()  # wait_idle()
