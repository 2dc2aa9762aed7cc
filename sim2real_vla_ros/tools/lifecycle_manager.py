"""vla_lifecycle_manager: bring the managed VLA nodes up in order, homing the arms in between.

    ros2 run sim2real_vla_ros vla_lifecycle_manager --ros-args \\
        -p node_names:="[camera_mask, planner, validator, actor_left, actor_right]" \\
        -p go_to_start_task:=pour_water_single -p use_sim_time:=true

The VLA nodes are managed nodes (``nodes.lifecycle``). Started with ``lifecycle_autostart:=false``
(what ``vla.launch.py`` and the dry run do when homing) they wait unconfigured; this node then

1. waits for each node's ``~/change_state`` service and **configures** them all at once (bundles
   loaded, models warmed up, in parallel as without a manager; a failed configure stops the
   sequence: that node stays unconfigured with its error, this node reports it);
2. with ``go_to_start_task`` set, runs **go_to_start** for that task (the console script, the
   same command an operator runs; fallback planner or MoveItPy) while no actor is active, so
   nothing else commands the arms during the homing;
3. **activates** them in order; the actors then wait for a run started after their activation.

Services (std_srvs/Trigger; each answers at once, the outcome is logged and in /diagnostics):
``~/deactivate`` deactivates every active node in reverse order (the actors stop commanding; the
arms hold); ``~/home_and_activate`` deactivates, homes again and activates: what an evaluation
does between episodes. ``/diagnostics``: the phase (waiting, configuring, homing, activating,
active, failed) and each node's lifecycle state.

Parameters: ``PARAMETERS`` below (the README's table is generated from it).

The lifecycle services are those of lifecycle_msgs (``ChangeState``, ``GetState``), so ``ros2
lifecycle set /planner configure`` and Nav2-style managers work on the same nodes.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from std_srvs.srv import Trigger

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.task import tasks as task_config
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.node_support import DIAGNOSTICS_RATE, FaultLog

GO_TO_START_MODULE = "sim2real_vla_ros.tools.go_to_start"
DEFAULT_NODES = ["camera_mask", "planner", "validator", "actor_left", "actor_right"]
STATE_LABELS = {State.PRIMARY_STATE_UNCONFIGURED: "unconfigured", State.PRIMARY_STATE_INACTIVE: "inactive",
                State.PRIMARY_STATE_ACTIVE: "active", State.PRIMARY_STATE_FINALIZED: "finalized"}


def _task_ok(name: str) -> bool:
    if not name:
        return True
    try:
        task_config.get_task(name)
    except Exception:
        return False
    return True


PARAMETERS = (
    Param("node_names", list(DEFAULT_NODES), "Managed nodes in start-up order (names relative to this node's "
          "namespace); deactivation runs in reverse order", lambda v: len(v) > 0 and all(v), "a non-empty list "
          "of node names"),
    Param("go_to_start_task", "", "Home both arms to this task's start pose (go_to_start) between configure and "
          "activate; '' = no homing", _task_ok, "'' or a task of config/tasks.yaml"),
    Param("go_to_start_backend", "auto", "go_to_start --backend: auto, moveit or fallback",
          lambda v: v in ("auto", "moveit", "fallback"), "auto, moveit or fallback"),
    Param("transition_timeout_s", 120.0, "Longest wait for a node's lifecycle service or one transition (s); "
          "configure loads and warms up models", lambda v: 0.0 < v <= 3600.0, "in (0, 3600]"),
    Param("homing_timeout_s", 120.0, "Longest go_to_start run (s, wall time)", lambda v: 0.0 < v <= 3600.0,
          "in (0, 3600]"),
    DIAGNOSTICS_RATE,
)


class LifecycleError(RuntimeError):
    """A step of the sequence failed (the message names the node and the transition)."""


class LifecycleClients:
    """``~/change_state`` and ``~/get_state`` of a list of managed nodes, waited on from a thread
    other than the one spinning ``node`` (the futures complete on the spinning thread)."""

    def __init__(self, node: Node, names: Sequence[str], timeout_s: float) -> None:
        self.node, self.names, self.timeout_s = node, list(names), float(timeout_s)
        self.change = {name: node.create_client(ChangeState, f"{name}/change_state") for name in self.names}
        self.get = {name: node.create_client(GetState, f"{name}/get_state") for name in self.names}

    def _send(self, client, request, what: str, deadline: float):
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise LifecycleError(f"{what}: service {client.srv_name} not available after {self.timeout_s:g} s")
            time.sleep(0.05)  # the spinning thread updates the graph; this thread only waits
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _future: done.set())
        return future, done

    def _wait(self, client, sent, what: str, deadline: float):
        future, done = sent
        if not done.wait(max(0.0, deadline - time.monotonic())):
            client.remove_pending_request(future)
            raise LifecycleError(f"{what}: no answer within {self.timeout_s:g} s")
        return future.result()

    def state(self, name: str) -> str:
        deadline = time.monotonic() + self.timeout_s
        what = f"{name} get_state"
        response = self._wait(self.get[name], self._send(self.get[name], GetState.Request(), what, deadline), what,
                              deadline)
        return STATE_LABELS.get(response.current_state.id, response.current_state.label)

    def transition(self, names: Sequence[str], transition_id: int, label: str) -> None:
        """Ask every node of ``names`` for the transition at once, then wait for all the answers
        (configure loads models: the nodes do it in parallel, as they would without a manager)."""
        deadline = time.monotonic() + self.timeout_s
        request = ChangeState.Request()
        request.transition.id = transition_id
        sent = {name: self._send(self.change[name], request, f"{name} {label}", deadline) for name in names}
        failed = [name for name in names
                  if not self._wait(self.change[name], sent[name], f"{name} {label}", deadline).success]
        if failed:
            raise LifecycleError(f"{', '.join(failed)}: {label} failed (see the node's log and /diagnostics "
                                 "lifecycle.last_error)")


def start_up(clients: LifecycleClients, home: Optional[Callable[[], None]], log: Callable[[str], None],
             set_phase: Callable[[str], None]) -> None:
    """Configure every unconfigured node in order, home (optional), activate every inactive one."""
    set_phase("configuring")
    unconfigured = [name for name in clients.names if clients.state(name) == "unconfigured"]
    clients.transition(unconfigured, Transition.TRANSITION_CONFIGURE, "configure")
    log(f"configured: {', '.join(unconfigured) or 'none needed it'}")
    home_and_activate(clients, home, log, set_phase)


def home_and_activate(clients: LifecycleClients, home: Optional[Callable[[], None]], log: Callable[[str], None],
                      set_phase: Callable[[str], None]) -> None:
    """Deactivate the active nodes (reverse order), home (optional), activate them all in order."""
    deactivate_all(clients, log)
    if home is not None:
        set_phase("homing")
        home()
    set_phase("activating")
    for name in clients.names:
        state = clients.state(name)
        if state == "inactive":
            clients.transition([name], Transition.TRANSITION_ACTIVATE, "activate")
            log(f"{name}: active")
        elif state != "active":
            raise LifecycleError(f"{name} is {state}: cannot activate it")
    set_phase("active")


def deactivate_all(clients: LifecycleClients, log: Callable[[str], None]) -> None:
    for name in reversed(clients.names):
        if clients.state(name) == "active":
            clients.transition([name], Transition.TRANSITION_DEACTIVATE, "deactivate")
            log(f"{name}: inactive")


def go_to_start_command(task: str, backend: str, use_sim_time: bool, namespace: str, timeout_s: float) -> List[str]:
    """The go_to_start command line the manager runs (in the manager's namespace and clock)."""
    command = [sys.executable, "-m", GO_TO_START_MODULE, "--task", task, "--backend", backend,
               "--timeout-s", f"{timeout_s:g}", "--ros-args", "-p", f"use_sim_time:={str(use_sim_time).lower()}"]
    if namespace and namespace != "/":
        command += ["-r", f"__ns:={namespace}"]
    return command


class LifecycleManagerNode(Node):
    """Runs the start-up sequence in a thread; services start the other sequences there too."""

    def __init__(self) -> None:
        super().__init__("vla_lifecycle_manager")
        values = common.declare_parameters(self, PARAMETERS)
        self.node_names = list(values["node_names"])
        self.task = values["go_to_start_task"]
        self.backend = values["go_to_start_backend"]
        self.homing_timeout_s = values["homing_timeout_s"]
        self.faults = FaultLog(self)
        self.clients_ = LifecycleClients(self, self.node_names, values["transition_timeout_s"])
        self.phase = "waiting"
        self.error = ""
        self.homing: Dict[str, object] = {}
        self._busy = threading.Lock()
        self._threads: List[threading.Thread] = []
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        self.create_timer(1.0 / values["diagnostics_rate_hz"],
                          self.faults.guard(self._publish_diagnostics, "diagnostics_error"))
        self.create_service(Trigger, "~/deactivate", self._handle_deactivate)
        self.create_service(Trigger, "~/home_and_activate", self._handle_home_and_activate)
        self._run_in_thread("start-up", lambda: start_up(self.clients_, self._home_or_none(), self._log,
                                                         self._set_phase))

    # ------------------------------------------------------------------ sequences
    def _home_or_none(self) -> Optional[Callable[[], None]]:
        return self._home if self.task else None

    def _home(self) -> None:
        use_sim_time = bool(self.get_parameter("use_sim_time").value)
        command = go_to_start_command(self.task, self.backend, use_sim_time, self.get_namespace(),
                                      self.homing_timeout_s)
        self._log(f"homing: {' '.join(command[1:])}")
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.homing_timeout_s + 30.0)
        except subprocess.TimeoutExpired:
            raise LifecycleError(f"go_to_start did not end within {self.homing_timeout_s + 30.0:g} s") from None
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("[go_to_start]"):
                self._log(line)
        self.homing = {"task": self.task, "exit_code": result.returncode,
                       "wall_s": round(time.monotonic() - started, 2),
                       "summary": next((line for line in reversed(result.stdout.splitlines())
                                        if line.startswith("[go_to_start]")), "")}
        if result.returncode != 0:
            raise LifecycleError(f"go_to_start --task {self.task} failed (exit {result.returncode}): "
                                 f"{result.stdout.strip().splitlines()[-1:] or result.stderr.strip()[-300:]}")

    def _run_in_thread(self, what: str, sequence: Callable[[], None]) -> bool:
        if not self._busy.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                sequence()
                self.error = ""
                self._log(f"{what}: done ({self.phase})")
            except Exception as exc:  # one clear line; the nodes stay where the sequence left them
                self.error = f"{what}: {exc}"
                self.phase = "failed"
                self.get_logger().error(self.error)
            finally:
                self._busy.release()

        thread = threading.Thread(target=run, name=f"lifecycle_{what}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return True

    def _handle_deactivate(self, request, response):
        response.success = self._run_in_thread("deactivate", self._deactivate)
        response.message = "deactivating (see /diagnostics)" if response.success else f"busy ({self.phase})"
        return response

    def _deactivate(self) -> None:
        deactivate_all(self.clients_, self._log)
        self._set_phase("inactive")

    def _handle_home_and_activate(self, request, response):
        response.success = self._run_in_thread("home_and_activate", lambda: home_and_activate(
            self.clients_, self._home_or_none(), self._log, self._set_phase))
        response.message = "homing and activating (see /diagnostics)" if response.success else f"busy ({self.phase})"
        return response

    # ------------------------------------------------------------------ reporting
    def _log(self, text: str) -> None:
        self.get_logger().info(text)

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self._log(f"phase: {phase}")

    def _publish_diagnostics(self) -> None:
        level = 2 if self.phase == "failed" else 0
        values = {"phase": self.phase, "error": self.error or "none", "nodes": ",".join(self.node_names),
                  "go_to_start_task": self.task or "none",
                  **{f"homing.{key}": value for key, value in self.homing.items()}}
        status = common.diagnostic_status(f"{self.get_name()}: lifecycle", self.get_name(), level,
                                          self.error or self.phase, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))

    def destroy_node(self) -> None:
        for thread in self._threads:
            thread.join(timeout=0.5)  # a sequence waiting on a service ends at its timeout; daemon threads
        super().destroy_node()


def main(args=None) -> int:
    return common.run_node(LifecycleManagerNode)


if __name__ == "__main__":
    sys.exit(main())
