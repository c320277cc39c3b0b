"""Managed (lifecycle) variant of the localization node, executable ``localize_lifecycle_node``.

Why: nav2-style bring-up. A lifecycle manager (nav2_lifecycle_manager, ``ros2 lifecycle set``, or launch_ros'
lifecycle events) decides when the model is loaded and when the cameras are subscribed, so a robot can load the
checkpoint once at boot, localize only while a mission runs, and swap a retrained checkpoint with
cleanup → configure without restarting the process.

States (REP-2 / ``lifecycle_msgs``), mapped on :class:`mfapr_ros.ros.localize_node.LocalizeCore`:

* ``configure``: parameters validated, checkpoint loaded and warmed up, publishers (lifecycle publishers: silent
  until active) and the inference worker created. A bad parameter or checkpoint → ``FAILURE`` with the reason logged;
  the node stays *unconfigured* and can be configured again.
* ``activate``: camera subscriptions and /diagnostics start. ``deactivate``: subscriptions removed, the running
  inference is still published, queued frames are dropped and counted (``sync.dropped_reset``).
* ``cleanup`` / ``shutdown``: the worker is joined and the publishers are released.

Parameter ``autostart`` (default false): configure and activate at startup, like nav2's lifecycle manager with
``autostart: true``, for a robot without a manager; a failed autostart exits with status 2 and the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from mfapr_ros.core.errors import MfaprError

from .localize_node import NODE_NAME, LocalizeCore
from .params import PARAM_SPECS, TOPIC_PREFIX, TRANSPORT_PREFIX, NodeParams
from .runtime import STOP, describe_failure, init_ros, spin_until_shutdown

AUTOSTART = "autostart"
_STATIC_NAMES = frozenset(spec.name for spec in PARAM_SPECS)


class LocalizeLifecycleNode(LocalizeCore, LifecycleNode):
    """The localization node as a managed node; starts *unconfigured* (unless ``autostart``).

    Its parameters (checkpoint, rig, sync.*, topics.<camera> …) can be changed while *unconfigured* and are
    validated by the next ``configure``; while configured a change is rejected with the reason, because the
    loaded model, bindings and synchronizer would silently disagree with it.
    """

    _OWN_PARAMS = (AUTOSTART,)
    _PARAMS_READ_ONLY = False

    def __init__(self, node_name: str = NODE_NAME, *, localizer_factory: Callable[[NodeParams], Any] | None = None,
                 **node_kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **node_kwargs)
        self._init_core()
        self._factory = localizer_factory
        self.last_error: str | None = None  # why the last configure failed (also logged)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.declare_parameter(AUTOSTART, False, ParameterDescriptor(
            description="configure + activate at startup (no lifecycle manager needed)", read_only=True))
        try:
            self._declare_static()  # declared now so `ros2 param` shows them in the unconfigured state
        except MfaprError:
            LifecycleNode.destroy_node(self)
            raise

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        per_camera = (TOPIC_PREFIX, TRANSPORT_PREFIX)
        ours = [p.name for p in params if p.name in _STATIC_NAMES or p.name.startswith(per_camera)]
        if ours and self._configured:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(ours)}: parameters change only while unconfigured (deactivate + cleanup, set, "
                "configure): the loaded model and camera bindings would not follow"))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle publishers
    def _make_publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        return self.create_lifecycle_publisher(msg_type, topic, qos)

    def _drop_publisher(self, pub: Any) -> None:
        self.destroy_lifecycle_publisher(pub)

    # ------------------------------------------------------------------ transitions
    def _failed(self, what: str, e: BaseException) -> TransitionCallbackReturn:
        """Keep and log the reason (rclpy would turn an unexpected exception into ERROR without saying why)."""
        self.last_error = describe_failure(e)
        self.get_logger().error(f"{what} failed: {self.last_error}")
        return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure(self._factory)
        except Exception as e:  # noqa: BLE001 - bad parameter/checkpoint, CUDA out of memory …: FAILURE + reason
            return self._failed("configure", e)
        self.last_error = None
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enable the lifecycle publishers first: a pose may follow the subscriptions
        try:
            self._activate()
        except Exception as e:  # noqa: BLE001 - e.g. a malformed qos_overrides value: stay inactive, say why
            self._deactivate()
            super().on_deactivate(state)
            return self._failed("activate", e)
        self.get_logger().info(f"active: subscribed to {len(self._subs)} camera topics")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()  # unsubscribe and finish the running inference while the publishers are still enabled
        ret = super().on_deactivate(state)
        self.get_logger().info("inactive: camera subscriptions removed")
        return ret

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in '{state.label}': releasing everything")
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured, ready for another configure

    def destroy_node(self) -> None:
        """Stop the inference thread (joined) before the ROS entities go away; safe to call twice."""
        self._shutdown_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``localize_lifecycle_node``: 0 on a clean shutdown, 2 when it cannot start (bad parameter type,
    or ``autostart`` and configure failed)."""
    init_ros(args)  # our own SIGINT/SIGTERM flag: a Ctrl-C during start-up is not lost (see runtime.init_ros)
    try:
        node = LocalizeLifecycleNode()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - any construction failure: one line, status 2
        if STOP["signal"] is not None:
            print(f"localize_lifecycle_node: {STOP['signal']} during start-up: stopped", file=sys.stderr)
            rclpy.try_shutdown()
            return 0
        print(f"localize_lifecycle_node: refusing to start: {describe_failure(e)}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if node.get_parameter(AUTOSTART).value:
        node.trigger_configure()
        if not node._configured:
            print(f"localize_lifecycle_node: autostart: configure failed: {node.last_error}", file=sys.stderr)
            node.destroy_node()
            rclpy.try_shutdown()
            return 2
        node.trigger_activate()
        if not node._active:
            print(f"localize_lifecycle_node: autostart: activate failed: {node.last_error}", file=sys.stderr)
            node.trigger_cleanup()
            node.destroy_node()
            rclpy.try_shutdown()
            return 2
    else:
        node.get_logger().info("unconfigured; waiting for a lifecycle manager (or: ros2 lifecycle set "
                               f"{node.get_fully_qualified_name()} configure, then activate)")
    # the executor is chosen before configure validates the parameters: read the declared value, default 1
    threads = node.get_parameter("executor_threads").value
    return spin_until_shutdown(node, threads if isinstance(threads, int) else 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
