"""How a console script runs a node: rclpy start-up with our own stop flag, the executor, the spin loop and the
shutdown (final summary line, destroy, rclpy shutdown). Shared by ``localize_node`` and ``localize_lifecycle_node``.

Why apart from the node: none of this is localization; it is the process around it, and the two entry points must
stop the same way (the issue-11 shutdown hang was fixed here once for both).
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import rclpy
from rclpy.context import Context
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
)
from rclpy.subscription import Subscription

from mfapr_ros.core.errors import MfaprError

from .diagnostics import final_summary_line


class ConsoleNode(Protocol):
    """What :func:`spin_until_shutdown` needs of the node it runs: an rclpy node (``LocalizeNode`` or
    ``LocalizeLifecycleNode``; named, not imported: they import this module) that can summarise its run."""

    context: Context
    _configured: bool  # configured now: there is a run to summarise

    def destroy_node(self) -> None: ...

    def diagnostics_summary(self) -> dict[str, Any]: ...

#: The stop request of a console script (set by :func:`init_ros`'s SIGINT/SIGTERM handler).
STOP: dict[str, str | None] = {"signal": None}


class NodeExecutor(MultiThreadedExecutor):
    """The multi-threaded executor of ``executor_threads > 1``: subscription callbacks run in the spinning thread,
    exactly as on the single-threaded executor; timers, services, clients and events run on the pool of
    ``threads`` threads, so a slow one (a /diagnostics publication, a service call) never delays a subscription.

    Why not rclpy's MultiThreadedExecutor as it is: it hands a subscription's *take* to the pool too, and until a pool
    thread has taken the message, rmw_fastrtps keeps waking the wait set through the subscription's QoS event handler
    (which stays in the wait set): the spinning thread loops with nothing to do and holds the GIL the pool thread
    needs. Measured with one pose subscriber beside the node: 3,400 empty wake-ups in 2.3 s and the spinning thread
    at 36 % of a core at half the model rate, where the single-threaded executor had none (issue 25). Taking and
    running a subscription callback inline costs microseconds (camera messages do not come through any executor:
    ``ros/intake.py``). The node's own subscriptions (/clock, /tf for fusion, the relocalization watch) are short."""

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Any = lambda: False) -> None:
        try:
            handler, entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        if isinstance(entity, Subscription):
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

    Single-threaded by default: camera messages never reach the executor (the node's intake thread takes them,
    ``ros/intake.py``) and decoding and inference run on the node's pipeline threads (``core.bundle_pipeline``), so
    the executor serves only short callbacks. ``threads > 1`` gives :class:`NodeExecutor`: subscriptions inline,
    timers and services on ``threads`` pool threads — and the node may decode a chosen bundle's frames on that many
    threads when that measurably helps (large images; see ``localize_node.ParallelDecode``).
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


def spin_until_shutdown(node: ConsoleNode, threads: int) -> int:
    """Spin the node of a console script until Ctrl-C / SIGTERM / rclpy shutdown, then print the final summary
    line (if the node is configured at that moment), destroy the node and shut rclpy down; returns status 0."""
    executor = make_executor(threads)
    executor.add_node(node)  # type: ignore[arg-type]  # a Node that is also a ConsoleNode
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


def _log_final_summary(node: ConsoleNode) -> None:
    """One line at shutdown with what came in and what went out, so a replay that produced nothing says why."""
    try:
        print(f"localize_node: stopped: {final_summary_line(node.diagnostics_summary())}", file=sys.stderr,
              flush=True)
    except Exception as e:  # noqa: BLE001 - a summary must never turn a clean shutdown into a crash
        print(f"localize_node: stopped (no summary: {e})", file=sys.stderr)
