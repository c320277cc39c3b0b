"""The camera intake: serialized camera messages taken on a thread of their own, outside any rclpy executor.

Why not executor callbacks (as before): rclpy's executor spends ~200 µs of Python per message — it rebuilds its wait
set, makes a Task, triggers its guard condition twice and re-polls — all under the GIL. For a 10-camera rig that
was 2.2 ms per bundle, 3.5 ms per pose at twice the model rate offered: a third of the model's own time, taken
from the inference thread on the one core the GIL gives a Python process (issue 25, measured per thread). Here one
wait set is built once, and each woken subscription is drained with ``take_message``: a few µs per message.

It also makes the camera path independent of ``executor_threads``: single- or multi-threaded, the executor never
sees a camera message (the subscriptions are in an :class:`IntakeCallbackGroup`, which no executor waits on), so
a multi-threaded executor cannot reorder, delay or starve them; it serves the timers and services only.

Each message goes to ``on_message(index, serialized_bytes)`` on the intake thread, one at a time and in arrival
order per camera (the synchronizer needs nothing more). ``on_message`` must not raise (the node's callback counts
bad input as drops); if it does, the message is counted in :attr:`CameraIntake.errors` and logged, and the intake
goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

_LOG = logging.getLogger(__name__)

#: the intake thread re-checks its stop flag and the context at least this often (ns), even when no camera sends
WAIT_TIMEOUT_NS = 100_000_000
#: after one wait, ready subscriptions are drained in at most this many passes of one message each: round robin, so
#: a backlog reaches the synchronizer interleaved across cameras as it was published. Draining one camera's backlog
#: before the next one's (up to 8 messages each, as before) pushed that camera ``queue_size`` bundles ahead of the
#: others, and the synchronizer dropped them as queue overflow (issue 25: 60-200 sync drops per 2x-overload step)
MAX_TAKE_PER_ROUND = 8
#: the subscriptions' QoS events are looked at this often (s): in the wait set, rmw_fastrtps wakes it for each
#: message through them — a second wake-up per message (537 waits for 1,090 messages against 146 without, measured)
EVENT_PERIOD_S = 0.5


class IntakeCallbackGroup(CallbackGroup):
    """The callback group of subscriptions served by a :class:`CameraIntake`: no executor ever executes (or waits
    on) them — ``can_execute`` is always False — so their messages stay in the subscription for the intake."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:  # pragma: no cover - never begun
        pass


def intake_subscription(node: Any, msg_type: Any, topic: str, qos: Any, **kwargs: Any) -> Any:
    """``node.create_subscription`` for the intake: raw (serialized bytes), in an :class:`IntakeCallbackGroup`.

    The subscription's QoS event handlers (rclpy's default warns about a publisher with incompatible QoS) stay in
    that group too and are served by the intake: in an executor's wait set, rmw_fastrtps wakes it for every message
    on the subscription (1,300 empty wake-ups in 2.3 s at 50 bundles/s of 10 cameras, measured). ``kwargs`` go to
    ``create_subscription`` (``qos_overriding_options``)."""
    sub = node.create_subscription(msg_type, topic, _never_called, qos, callback_group=IntakeCallbackGroup(),
                                   raw=True, **kwargs)
    return sub


def _never_called(_msg: Any) -> None:  # pragma: no cover - IntakeCallbackGroup: no executor calls it
    raise RuntimeError("an intake subscription's callback was called by an executor")


class CameraIntake:
    """One thread that takes the messages of ``subscriptions`` (made by :func:`intake_subscription`) and hands each
    to ``on_message(index, data)``. :meth:`start` once; :meth:`stop` before the subscriptions are destroyed."""

    def __init__(self, context: Any, subscriptions: Sequence[Any], on_message: Callable[[int, bytes], Any],
                 name: str = "mfapr") -> None:
        self._context = context
        self._subs = list(subscriptions)
        self._on_message = on_message
        self._stop = threading.Event()
        self._wake = GuardCondition(None, None, context=context)
        self.taken = 0  #: messages handed to on_message
        self.errors = 0  #: on_message raised (it should not: the node counts bad input itself)
        self._thread = threading.Thread(target=self._run, name=f"{name}-intake", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking messages and join the thread (what is still in the subscriptions stays there)."""
        self._stop.set()
        with contextlib.suppress(Exception):  # a context already shut down: the wait times out instead
            self._wake.trigger()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOG.warning("%s did not stop within %.1f s", self._thread.name, timeout)
        with contextlib.suppress(Exception):
            self._wake.destroy()

    def _run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                # the handles stay entered while the thread runs: a subscription destroyed meanwhile is released
                # only once we let go of it (rclpy's Destroyable), never under a take
                stack.enter_context(self._context.handle)
                handles = [s.handle for s in self._subs]
                for h in handles:
                    stack.enter_context(h)
                wake = self._wake.handle
                stack.enter_context(wake)
                events = [e for s in self._subs for e in s.event_handlers]  # QoS events (incompatible QoS, ...)
                for e in events:
                    stack.enter_context(e)
                wait_set = _rclpy.WaitSet(len(handles), 1, 0, 0, 0, len(events), self._context.handle)
                types = [s.msg_type for s in self._subs]
                next_events = 0.0
                while not self._stop.is_set() and self._context.ok():
                    wait_set.clear_entities()
                    for h in handles:
                        wait_set.add_subscription(h)
                    wait_set.add_guard_condition(wake)
                    with_events = time.monotonic() >= next_events
                    if with_events:
                        for e in events:
                            e.add_to_wait_set(wait_set)
                    wait_set.wait(WAIT_TIMEOUT_NS)
                    if with_events:
                        next_events = time.monotonic() + EVENT_PERIOD_S
                        for e in events:
                            if e.is_ready(wait_set):
                                self._event(e)
                    ready = wait_set.get_ready_entities("subscription")
                    if ready:
                        self._drain([i for i, h in enumerate(handles) if h.pointer in ready], handles, types)
        except Exception as e:  # noqa: BLE001 - a dead intake must be visible, not silent
            if not self._stop.is_set() and self._context.ok():
                _LOG.error("camera intake stopped: %s: %s", type(e).__name__, e)

    def _event(self, handler: Any) -> None:
        """A QoS event of a subscription (rclpy's default callback logs an incompatible-QoS publisher)."""
        try:
            data = handler.take_data()
            if data and handler.callback is not None:
                handler.callback(data)
        except Exception as e:  # noqa: BLE001 - an event callback must not stop the intake
            _LOG.warning("camera intake: QoS event callback failed: %s: %s", type(e).__name__, e)

    def _drain(self, ready: list[int], handles: list[Any], types: list[Any]) -> None:
        """Take from the ready subscriptions one message each per pass (round robin; see MAX_TAKE_PER_ROUND); a
        subscription leaves the rotation once empty. What is left after the last pass wakes the next wait."""
        for _ in range(MAX_TAKE_PER_ROUND):
            still = []
            for i in ready:
                taken = handles[i].take_message(types[i], True)
                if taken is None:
                    continue
                still.append(i)
                self.taken += 1
                try:
                    self._on_message(i, taken[0])
                except Exception as e:  # noqa: BLE001 - counted, logged, the intake goes on
                    self.errors += 1
                    _LOG.warning("camera intake: on_message failed: %s: %s", type(e).__name__, e)
            if not still:
                return
            ready = still
