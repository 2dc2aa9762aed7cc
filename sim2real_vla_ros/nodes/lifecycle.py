"""Managed (lifecycle) nodes: the one state machine every VLA node follows.

The VLA nodes (camera_mask, planner, validator, the actors, the actors' inference nodes) are
rclpy ``LifecycleNode`` s, as hardware-facing ROS 2 stacks make theirs (Nav2, ros2_control):

=============  =========================================================================
transition     what the node does
=============  =========================================================================
configure      load and check the bundle, build its core and the sessions, subscribe,
               create its (lifecycle) publishers, timers and services, warm the models up
activate       start publishing: predictions, decisions, commands. An actor restarts its
               controller from the measured position and waits for a run started after
               the activation; nothing an inactive node computes goes out
deactivate     stop publishing; an actor stops commanding (the joint controllers hold the
               last setpoint they got: an inactive actor is the same as a stopped one)
cleanup        release the models and every entity configure created -> unconfigured
shutdown       from any state: deactivate, release -> finalized
=============  =========================================================================

A failed configure (a missing model file, a bad parameter value only the bundle can check)
leaves the node **unconfigured** with the error in its log and in ``/diagnostics`` (ERROR,
``lifecycle.last_error``); a later configure may succeed. ``/diagnostics`` is published in every
state (a plain publisher), so the state is always visible (``lifecycle.state``).

``lifecycle_autostart`` (default true: the dry run, the tests and a plain ``ros2 run``)
configures and activates the node at start-up, and a failed configure then exits 1 as a
broken start-up always has. The launch files set it false and start ``vla_lifecycle_manager``
(:mod:`sim2real_vla_ros.tools.lifecycle_manager`), which configures the nodes in order, homes
the arms (``go_to_start``) while nothing commands them, then activates.

How the states gate the node: its output publishers are lifecycle publishers (they drop a
publish unless active), and its timers return at once unless active; the entities configure
created are recorded and destroyed at cleanup (:meth:`ManagedNode._release_configured`).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle.publisher import LifecyclePublisher

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.node_support import BackgroundWorker

LIFECYCLE_AUTOSTART = common.Param(
    "lifecycle_autostart", True,
    "Configure and activate at start-up (a failed configure then exits 1); false: stay unconfigured until a "
    "lifecycle manager calls ~/change_state (the launch files' vla_lifecycle_manager)")

UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = "unconfigured", "inactive", "active", "finalized"


class ConfigureError(RuntimeError):
    """configure failed at start-up with lifecycle_autostart (the message says why)."""


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclasses fill in four hooks.

    ``configure()`` (may raise: the transition then fails and the node stays unconfigured),
    ``activate()``, ``deactivate()`` and ``release()`` (drop the models; the subscriptions,
    publishers, timers, services and clients configure created are destroyed here). A subclass
    calls :meth:`start_lifecycle` at the end of its ``__init__``, once its parameters are
    declared and its fault log exists.

    The thread a node's model runs in while it is active is the base's: ``activate()`` calls
    :meth:`start_worker`, callbacks call :meth:`wake_worker` (a no-op unless active), and the
    worker is stopped at deactivate, cleanup, shutdown, on error and when the node is destroyed.
    """

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.lifecycle_state = UNCONFIGURED
        self.last_error = ""
        self.transitions: Counter = Counter()
        self._configured_entities: Dict[str, list] = {}
        self._configure_exception: Exception | None = None
        self.diagnostics_pub = None
        self.worker: Optional[BackgroundWorker] = None
        self._faults = None

    # ------------------------------------------------------------------ hooks
    def configure(self) -> None:
        raise NotImplementedError

    def activate(self) -> None:
        """Called once the lifecycle publishers are active, before the state reads active."""

    def deactivate(self) -> None:
        """Called after the state left active (timers already return at once)."""

    def release(self) -> None:
        """Drop what configure built beyond ROS entities (models, worker threads)."""

    def publish_diagnostics(self) -> None:
        """The configured node's /diagnostics (values should include :meth:`lifecycle_values`)."""

    # ------------------------------------------------------------------ start-up
    def start_lifecycle(self, autostart: bool, diagnostics_rate_hz: float, faults) -> None:
        """Start /diagnostics (every state) and, with ``autostart``, configure + activate.

        Raises
        ------
        Exception
            ``autostart`` and configure failed: what configure raised (a ``BundleError`` naming
            the file, a ``ValueError`` naming the parameter), which ``common.run_node`` prints as
            one ``[FATAL]`` line before exiting 1, as without a lifecycle.
        """
        self._faults = faults
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        self.create_timer(1.0 / diagnostics_rate_hz, faults.guard(self._diagnostics_tick, "diagnostics_error"))
        if not autostart:
            self.get_logger().info(f"{self.get_name()} unconfigured: waiting for a lifecycle manager (~/change_state)")
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self._configure_exception or ConfigureError(self.last_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigureError(self.last_error or "activate failed")

    # ------------------------------------------------------------------ the model's thread
    def start_worker(self, role: str, work: Callable[[], None], fault_reason: str) -> None:
        """Start the thread ``work`` runs in whenever :meth:`wake_worker` is called (from
        ``activate()``); an exception in it is counted under ``fault_reason``."""
        self.worker = BackgroundWorker(f"{self.get_name()}_{role}", work,
                                       lambda exc: self._faults.fault(fault_reason, f"{type(exc).__name__}: {exc}"))

    def wake_worker(self) -> None:
        worker = self.worker
        if self.is_active and worker is not None:
            worker.wake()

    def stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()

    def destroy_node(self) -> None:
        self.stop_worker()
        super().destroy_node()

    @property
    def is_active(self) -> bool:
        return self.lifecycle_state == ACTIVE

    @property
    def is_configured(self) -> bool:
        return self.lifecycle_state in (INACTIVE, ACTIVE)

    def lifecycle_values(self) -> dict:
        return {"lifecycle.state": self.lifecycle_state, "lifecycle.last_error": self.last_error or "none",
                **{f"lifecycle.{name}": count for name, count in sorted(self.transitions.items())}}

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = self._entities()
        try:
            self.configure()
        except Exception as exc:  # a bad bundle or setting: stay unconfigured, the error visible
            self._configure_exception = exc
            self.last_error = f"configure failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.last_error)
            self.transitions["configure_failed"] += 1
            self._configured_entities = self._created_since(before)
            self._safe_release()
            return TransitionCallbackReturn.FAILURE
        self._configured_entities = self._created_since(before)
        self.last_error = ""
        self.lifecycle_state = INACTIVE
        self.transitions["configured"] += 1
        self.get_logger().info(f"{self.get_name()} configured (inactive)")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # the lifecycle publishers first
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self.activate()
        except Exception as exc:
            self.last_error = f"activate failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.last_error)
            super().on_deactivate(state)
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_state = ACTIVE
        self.transitions["activated"] += 1
        self.get_logger().info(f"{self.get_name()} active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.lifecycle_state = INACTIVE
        self.stop_worker()
        self.deactivate()
        self.transitions["deactivated"] += 1
        self.get_logger().info(f"{self.get_name()} inactive: nothing published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe_release()
        self.lifecycle_state = UNCONFIGURED
        self.transitions["cleaned_up"] += 1
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.lifecycle_state == ACTIVE:
            self.lifecycle_state = INACTIVE
            self.stop_worker()
            self.deactivate()
        if self.lifecycle_state == INACTIVE:
            self._safe_release()
        self.lifecycle_state = FINALIZED
        self.transitions["shut_down"] += 1
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition callback raised (rclpy turns that into ERROR): release and go back to
        # unconfigured, from where a manager may configure again.
        self.transitions["error"] += 1
        self.last_error = self.last_error or f"error while leaving {state.label}"
        self._safe_release()
        self.lifecycle_state = UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ internals
    def _safe_release(self) -> None:
        self.stop_worker()
        try:
            self.release()
        finally:
            self._release_configured()

    def _entities(self) -> Dict[str, list]:
        return {"publishers": list(self.publishers), "subscriptions": list(self.subscriptions),
                "timers": list(self.timers), "services": list(self.services), "clients": list(self.clients)}

    def _created_since(self, before: Dict[str, list]) -> Dict[str, list]:
        now = self._entities()
        return {kind: [entity for entity in now[kind] if not any(entity is old for old in before[kind])]
                for kind in now}

    def _release_configured(self) -> None:
        """Destroy every entity configure created (publishers, subscriptions, timers, services, clients)."""
        entities, self._configured_entities = self._configured_entities, {}
        for publisher in entities.get("publishers", ()):
            if isinstance(publisher, LifecyclePublisher):
                self.destroy_lifecycle_publisher(publisher)
            else:
                self.destroy_publisher(publisher)
        for kind, destroy in (("subscriptions", self.destroy_subscription), ("timers", self.destroy_timer),
                              ("services", self.destroy_service), ("clients", self.destroy_client)):
            for entity in entities.get(kind, ()):
                destroy(entity)

    def _diagnostics_tick(self) -> None:
        if self.is_configured:
            self.publish_diagnostics()
            return
        level = 2 if self.last_error else 0
        message = self.last_error or f"{self.lifecycle_state}: waiting for configure"
        status = common.diagnostic_status(f"{self.get_name()}: lifecycle", self.get_name(), level, message,
                                          self.lifecycle_values())
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))

