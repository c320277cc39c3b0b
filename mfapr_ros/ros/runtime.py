"""How a console script runs a node: rclpy start-up with our own stop flag, the executor, the spin loop and the
shutdown (final summary line, destroy, rclpy shutdown). Shared by ``localize_node`` and ``localize_lifecycle_node``.

Why apart from the node: none of this is localization; it is the process around it, and the two entry points must
stop the same way (the issue-11 shutdown hang was fixed here once for both).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
)

from mfapr_ros.core.errors import MfaprError

from .diagnostics import diagnostics_summary, final_summary_line

if TYPE_CHECKING:
    from .localize_node import LocalizeCore

#: The stop request of a console script (set by :func:`init_ros`'s SIGINT/SIGTERM handler).
STOP: dict[str, str | None] = {"signal": None}


class InlineCallbackGroup(MutuallyExclusiveCallbackGroup):
    """Callbacks that take microseconds (a camera callback: read the stamp, feed the synchronizer, hand a bundle
    over): :class:`NodeExecutor` runs them in its own spinning thread instead of handing each to its thread pool.

    Why: rclpy's MultiThreadedExecutor pays a ThreadPoolExecutor submission, a future and a GIL hand-over per
    callback, and re-polls entities whose mutually exclusive group is still busy; for a 10-camera rig at 160 Hz that
    overhead (and the GIL contention with inference) was the whole cost — ``executor_threads=4`` published 1 pose/s
    where one thread published 43 (issue 25). On a single-threaded executor it is an ordinary mutually exclusive
    group.
    """


class NodeExecutor(MultiThreadedExecutor):
    """The multi-threaded executor of ``executor_threads > 1``: callbacks of an :class:`InlineCallbackGroup` run
    in the spinning thread, exactly as on the single-threaded executor; every other callback (the diagnostics
    timer, services, other nodes of the process) runs on the pool of ``threads`` threads, so a slow one never
    delays the cameras. Never slower than single-threaded for the cameras: their path is the same."""

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Any = lambda: False) -> None:
        try:
            handler, entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        if isinstance(getattr(entity, "callback_group", None), InlineCallbackGroup):
            handler()
            exception = handler.exception()
            if exception is not None:
                raise exception
            return
        self._executor.submit(handler)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exceptions


def make_executor(threads: int, context: Any = None) -> Any:
    """The executor the console scripts spin the node on (parameter ``executor_threads``).

    Single-threaded by default: the camera callbacks only read a stamp and synchronize (decoding and inference run
    on the node's own pipeline threads, ``core.bundle_pipeline``). ``threads > 1`` gives :class:`NodeExecutor`:
    the camera callbacks still run inline (their :class:`InlineCallbackGroup`), everything else on ``threads``
    pool threads — and the node decodes a chosen bundle's frames on that many threads when decoding is slow
    enough to gain from it. (rclpy's plain MultiThreadedExecutor is not used: with use_sim_time and 4 compressed
    cameras its loop took a whole core and starved inference — demo replay 29 of 500 poses, docs/node.md.)
    """
    if threads <= 1:
        return SingleThreadedExecutor(context=context)
    return NodeExecutor(num_threads=threads, context=context)


def init_ros(args: list[str] | None = None) -> None:
    """``rclpy.init`` with this process's own SIGINT/SIGTERM handling: a flag that :func:`spin_until_shutdown` checks.

    Why not rclpy's handlers: they wake the executors that exist when the signal arrives. A Ctrl-C while the node
    is still loading its checkpoint (no executor yet) was lost, and the node then spun forever after start-up —
    the 1-in-9 shutdown hang, reproduced by 50 start/SIGINT cycles under load. A second signal raises
    KeyboardInterrupt, so a stuck start-up can still be broken.
    """
    import signal

    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    STOP["signal"] = None

    def on_signal(signum: int, frame: Any) -> None:
        if STOP["signal"] is not None:
            raise KeyboardInterrupt
        STOP["signal"] = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


def describe_failure(e: BaseException) -> str:
    """One line for a start/transition failure: our errors carry their own message; anything else (CUDA out of
    memory, rclpy's RuntimeError for a bad qos override) is prefixed with its type, which the bare text lacks."""
    return str(e) if isinstance(e, MfaprError) else f"{type(e).__name__}: {e}"


def spin_until_shutdown(node: LocalizeCore, threads: int) -> int:
    """Spin the node of a console script until Ctrl-C / SIGTERM / rclpy shutdown, then print the final summary
    line (if the node is configured at that moment), destroy the node and shut rclpy down; returns status 0."""
    executor = make_executor(threads)
    executor.add_node(node)
    try:
        # spin_once with a timeout, not spin(): the stop flag of init_ros is seen within 0.1 s even when it was set
        # before spinning began (a signal during start-up); rclpy's own handlers (a caller that used rclpy.init)
        # still end the loop through the exceptions below or the context.
        while STOP["signal"] is None and node.context.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A callback racing the SIGINT shutdown (a timer publishing on the context rclpy's signal handler just shut
        # down: "publisher's context is invalid") ends a normal stop; found by 50 start/SIGINT cycles under load,
        # where it exited 1 with a traceback. With the context still up it is a real failure.
        if node.context.ok():
            raise
    finally:
        executor.shutdown()
        if node._configured:
            _log_final_summary(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _log_final_summary(node: LocalizeCore) -> None:
    """One line at shutdown with what came in and what went out, so a replay that produced nothing says why."""
    try:
        print(f"localize_node: stopped: {final_summary_line(diagnostics_summary(node))}", file=sys.stderr,
              flush=True)
    except Exception as e:  # noqa: BLE001 - a summary must never turn a clean shutdown into a crash
        print(f"localize_node: stopped (no summary: {e})", file=sys.stderr)
