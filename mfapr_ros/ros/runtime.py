"""How a console script runs a node: rclpy start-up with our own stop flag, the executor, the spin loop and the
shutdown (final summary line, destroy, rclpy shutdown). Shared by ``localize_node`` and ``localize_lifecycle_node``.

Why apart from the node: none of this is localization; it is the process around it, and the two entry points must
stop the same way (the issue-11 shutdown hang was fixed here once for both).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

from mfapr_ros.core.errors import MfaprError

from .diagnostics import diagnostics_summary, final_summary_line

if TYPE_CHECKING:
    from .localize_node import LocalizeCore

#: The stop request of a console script (set by :func:`init_ros`'s SIGINT/SIGTERM handler).
STOP: dict[str, str | None] = {"signal": None}


def make_executor(threads: int, context: Any = None) -> Any:
    """The executor the console scripts spin the node on (parameter ``executor_threads``).

    Single-threaded by default: the camera callbacks only decode and synchronize (inference has its own worker
    thread), and rclpy's Python MultiThreadedExecutor rebuilds its wait set and scans its futures at every wake-up
    while holding the GIL. With ``use_sim_time`` (a /clock subscription at 50 Hz) and 4 compressed cameras at 10 Hz
    that loop took a whole core and starved inference (demo replay: 29 of 500 poses, inference p50 1.4 s, against
    499 of 500 and 17 ms single-threaded, docs/node.md).
    """
    if threads <= 1:
        return SingleThreadedExecutor(context=context)
    return MultiThreadedExecutor(num_threads=threads, context=context)


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
