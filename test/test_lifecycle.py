"""Managed (lifecycle) VLA nodes and vla_lifecycle_manager, as real processes over DDS.

Every transition of the state machine (configure, activate, deactivate, cleanup, shutdown) on a
planner started with ``lifecycle_autostart:=false``, what each state publishes (nothing but
/diagnostics unless active), a failed configure (a bundle that does not exist) that leaves the
node unconfigured with its error visible, an inactive actor that never commands the arm, and
the manager's start-up sequence with homing (go_to_start) against the simulator.

Observation windows ("nothing arrives") are bounded by the node's own /diagnostics: the test
waits for several of its diagnostics messages (5 Hz here) and checks what came meanwhile.
"""
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from sim2real_vla_interfaces.msg import PlanState
from trajectory_msgs.msg import JointTrajectory

from ros_harness import REPO, NodeProcess, Probe, WallClock, wait_for
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control import homing
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.nodes import common

pytestmark = pytest.mark.integration
VLA_YAML = f"{REPO}/config/vla.yaml"
DIAGNOSTICS_HZ = 5.0


def diagnostics_of(probe: Probe, node: str) -> list:
    return [status for array in probe.received(vocab.DIAGNOSTICS) for status in array.status
            if status.hardware_id == node]


def values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def observe(probe: Probe, node: str, reports: int, process) -> None:
    """Wait until ``node`` has published ``reports`` more diagnostics (a bounded window)."""
    start = len(diagnostics_of(probe, node))
    wait_for(lambda: len(diagnostics_of(probe, node)) >= start + reports, 10.0 + reports / DIAGNOSTICS_HZ,
             f"{reports} diagnostics from {node}", processes=[process])


def state(probe: Probe, node: str, process) -> str:
    return probe.call(GetState, f"/{node}/get_state", GetState.Request(), processes=[process]).current_state.label


def change(probe: Probe, node: str, transition: int, process) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition
    return probe.call(ChangeState, f"/{node}/change_state", request, timeout=60.0, processes=[process]).success


@pytest.fixture(scope="module", autouse=True)
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def probe():
    probe = Probe("lifecycle_probe")
    clock = WallClock(probe)
    yield probe
    clock.close()
    probe.shutdown()


def test_planner_goes_through_every_transition_and_publishes_only_while_active(probe):
    process = NodeProcess("sim2real_vla_ros.nodes.planner", "planner", params_file=VLA_YAML, params={
        "use_sim_time": True, "lifecycle_autostart": False, "diagnostics_rate_hz": DIAGNOSTICS_HZ})
    try:
        probe.subscribe(Header, vocab.PLANNER_HEARTBEAT, common.HEARTBEAT_QOS)
        probe.subscribe(PlanState, vocab.PLAN_STATE, common.LATCHED_QOS)
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        assert state(probe, "planner", process) == "unconfigured"
        observe(probe, "planner", 3, process)
        assert values(diagnostics_of(probe, "planner")[-1])["lifecycle.state"] == "unconfigured"

        assert change(probe, "planner", Transition.TRANSITION_CONFIGURE, process)
        assert state(probe, "planner", process) == "inactive"
        observe(probe, "planner", 5, process)
        assert values(diagnostics_of(probe, "planner")[-1])["lifecycle.state"] == "inactive"
        assert not probe.received(vocab.PLANNER_HEARTBEAT), "an inactive planner sent heartbeats"
        assert not probe.received(vocab.PLAN_STATE), "an inactive planner published plan_state"

        assert change(probe, "planner", Transition.TRANSITION_ACTIVATE, process)
        wait_for(lambda: len(probe.received(vocab.PLANNER_HEARTBEAT)) >= 3, 15.0, "heartbeats after activate",
                 processes=[process])
        wait_for(lambda: probe.received(vocab.PLAN_STATE), 15.0, "plan_state after activate", processes=[process])
        assert probe.received(vocab.PLAN_STATE)[-1].phase == PlanState.PHASE_IDLE

        assert change(probe, "planner", Transition.TRANSITION_DEACTIVATE, process)
        observe(probe, "planner", 1, process)  # a heartbeat already on its way may still land
        probe.clear(vocab.PLANNER_HEARTBEAT)
        observe(probe, "planner", 5, process)
        assert not probe.received(vocab.PLANNER_HEARTBEAT), "heartbeats continued after deactivate"

        assert change(probe, "planner", Transition.TRANSITION_CLEANUP, process)
        assert state(probe, "planner", process) == "unconfigured"
        assert change(probe, "planner", Transition.TRANSITION_CONFIGURE, process), "configure after cleanup"
        assert change(probe, "planner", Transition.TRANSITION_INACTIVE_SHUTDOWN, process)
        assert state(probe, "planner", process) == "finalized"
        observe(probe, "planner", 2, process)
        last = values(diagnostics_of(probe, "planner")[-1])
        assert last["lifecycle.state"] == "finalized"
        assert int(last["lifecycle.configured"]) == 2 and int(last["lifecycle.cleaned_up"]) == 1
    finally:
        assert process.stop() == 0, process.output[-3000:]


TRANSITIONS = [(Transition.TRANSITION_CONFIGURE, "inactive"), (Transition.TRANSITION_ACTIVATE, "active"),
               (Transition.TRANSITION_DEACTIVATE, "inactive"), (Transition.TRANSITION_CLEANUP, "unconfigured"),
               (Transition.TRANSITION_CONFIGURE, "inactive"), (Transition.TRANSITION_ACTIVATE, "active"),
               (Transition.TRANSITION_ACTIVE_SHUTDOWN, "finalized")]


@pytest.mark.parametrize("module, name, params", [
    ("camera_mask", "camera_mask", {}),
    ("validator", "validator", {}),
    ("actor_inference", "actor_left_inference", {"arm": "left"}),
    ("actor_control", "actor_left", {"arm": "left"}),
])
def test_every_managed_node_goes_through_the_state_machine(probe, module, name, params):
    process = NodeProcess(f"sim2real_vla_ros.nodes.{module}", name, params_file=VLA_YAML, params={
        "use_sim_time": True, "lifecycle_autostart": False, "diagnostics_rate_hz": DIAGNOSTICS_HZ, **params})
    try:
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        assert state(probe, name, process) == "unconfigured"
        for transition, expected in TRANSITIONS:
            assert change(probe, name, transition, process), (transition, process.output[-2000:])
            assert state(probe, name, process) == expected
            observe(probe, name, 1, process)
            wait_for(lambda: values(diagnostics_of(probe, name)[-1]).get("lifecycle.state") == expected, 10.0,
                     f"{name} reporting {expected}", processes=[process])
    finally:
        assert process.stop() == 0, process.output[-3000:]


def test_failed_configure_leaves_the_node_unconfigured_with_its_error(probe, tmp_path):
    missing = str(tmp_path / "no_such_bundle")
    process = NodeProcess("sim2real_vla_ros.nodes.validator", "validator", params_file=VLA_YAML, params={
        "use_sim_time": True, "lifecycle_autostart": False, "diagnostics_rate_hz": DIAGNOSTICS_HZ,
        "bundle_path": missing})
    try:
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        assert not change(probe, "validator", Transition.TRANSITION_CONFIGURE, process)
        assert state(probe, "validator", process) == "unconfigured"
        observe(probe, "validator", 2, process)
        status = diagnostics_of(probe, "validator")[-1]
        assert int.from_bytes(status.level, "little") == 2
        assert "configure failed" in status.message and "no_such_bundle" in status.message
        assert values(status)["lifecycle.configure_failed"] == "1"
        assert not change(probe, "validator", Transition.TRANSITION_ACTIVATE, process), "activate from unconfigured"
        assert process.proc.poll() is None, "a failed configure must not end the process"
    finally:
        assert process.stop() == 0, process.output[-3000:]


def test_failed_configure_with_autostart_exits_1_with_one_line(tmp_path):
    process = NodeProcess("sim2real_vla_ros.nodes.validator", "validator", params_file=VLA_YAML, params={
        "bundle_path": str(tmp_path / "no_such_bundle")})
    assert process.wait_exit(60.0) == 1, process.output[-3000:]
    fatal = [line for line in process.output.splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1 and "no_such_bundle" in fatal[0], process.output[-3000:]


@pytest.fixture
def simulator():
    process = NodeProcess("sim2real_vla_ros.sim.sim_node", "sim_mujoco", {
        "task": "pour_water_single", "real_time_factor": 1.0, "enable_cameras": False, "reset_arms": "keep"})
    yield process
    assert process.stop() == 0, process.output[-3000:]


def test_an_inactive_actor_never_commands_and_an_active_one_does(simulator):
    probe = Probe("lifecycle_actor_probe")  # on /clock from the simulator
    actor = NodeProcess("sim2real_vla_ros.nodes.actor", "actor_left", params_file=VLA_YAML, params={
        "use_sim_time": True, "arm": "left", "lifecycle_autostart": False, "diagnostics_rate_hz": DIAGNOSTICS_HZ})
    topic = vocab.arm_command_topic("left", "trajectory")
    try:
        probe.subscribe(JointTrajectory, topic, common.COMMAND_QOS)
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        assert change(probe, "actor_left", Transition.TRANSITION_CONFIGURE, actor)
        observe(probe, "actor_left", 5, actor)
        assert not probe.received(topic), "an inactive actor commanded the arm"
        assert change(probe, "actor_left", Transition.TRANSITION_ACTIVATE, actor)
        # Active without a run: the filter holds the arm where it is (measured), every tick.
        wait_for(lambda: len(probe.received(topic)) >= 10, 20.0, "hold commands after activate", processes=[actor])
        first = np.array(probe.received(topic)[-1].points[0].positions)
        np.testing.assert_allclose(first, homing.REST_POSE["left"], atol=0.02)
        assert change(probe, "actor_left", Transition.TRANSITION_DEACTIVATE, actor)
        observe(probe, "actor_left", 1, actor)
        probe.clear(topic)
        observe(probe, "actor_left", 5, actor)
        assert not probe.received(topic), "commands continued after deactivate"
    finally:
        assert actor.stop() == 0, actor.output[-3000:]
        probe.shutdown()


def test_manager_configures_homes_the_arms_then_activates(simulator):
    probe = Probe("lifecycle_manager_probe")
    actors = [NodeProcess("sim2real_vla_ros.nodes.actor", f"actor_{arm}", params_file=VLA_YAML, params={
        "use_sim_time": True, "arm": arm, "lifecycle_autostart": False}) for arm in robot.ARMS]
    manager = NodeProcess("sim2real_vla_ros.tools.lifecycle_manager", "vla_lifecycle_manager", params={
        "use_sim_time": True, "node_names": ["actor_left", "actor_right"], "go_to_start_task": "pour_water_single",
        "diagnostics_rate_hz": DIAGNOSTICS_HZ})
    processes = [manager, *actors]
    try:
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        probe.subscribe(JointState, vocab.JOINT_STATES, common.SENSOR_QOS)
        phase = lambda: (values(diagnostics_of(probe, "vla_lifecycle_manager")[-1])  # noqa: E731
                         if diagnostics_of(probe, "vla_lifecycle_manager") else {})
        wait_for(lambda: phase().get("phase") in ("active", "failed"), 120.0, "the manager's start-up",
                 processes=processes)
        assert phase()["phase"] == "active", phase()
        assert phase()["homing.exit_code"] == "0"
        for arm in robot.ARMS:
            assert state(probe, f"actor_{arm}", manager) == "active"
        start = tasks.get_task("pour_water_single")
        latest = probe.received(vocab.JOINT_STATES)[-1]
        index = {name: i for i, name in enumerate(latest.name)}
        for arm in robot.ARMS:
            measured = [latest.position[index[name]] for name in robot.arm_joint_names(arm)]
            np.testing.assert_allclose(measured, start.init_joints(arm), atol=0.03)
        # Between episodes: ~/deactivate stops every actor (reverse order).
        assert probe.call(Trigger, "/vla_lifecycle_manager/deactivate", Trigger.Request(),
                          processes=processes).success
        wait_for(lambda: phase().get("phase") == "inactive", 60.0, "the manager's deactivation", processes=processes)
        for arm in robot.ARMS:
            assert state(probe, f"actor_{arm}", manager) == "inactive"
    finally:
        for process in processes:
            assert process.stop() == 0, process.output[-3000:]
        probe.shutdown()


def test_a_failed_homing_leaves_the_nodes_inactive_and_the_manager_failed(simulator):
    """go_to_start --backend moveit without moveit_py exits 1: nothing may be activated after it."""
    probe = Probe("lifecycle_homing_failure_probe")
    actor = NodeProcess("sim2real_vla_ros.nodes.actor", "actor_left", params_file=VLA_YAML, params={
        "use_sim_time": True, "arm": "left", "lifecycle_autostart": False})
    manager = NodeProcess("sim2real_vla_ros.tools.lifecycle_manager", "vla_lifecycle_manager", params={
        "use_sim_time": True, "node_names": ["actor_left"], "go_to_start_task": "pour_water_single",
        "go_to_start_backend": "moveit", "diagnostics_rate_hz": DIAGNOSTICS_HZ})
    processes = [manager, actor]
    try:
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        last = lambda: (values(diagnostics_of(probe, "vla_lifecycle_manager")[-1])  # noqa: E731
                        if diagnostics_of(probe, "vla_lifecycle_manager") else {})
        wait_for(lambda: last().get("phase") in ("active", "failed"), 120.0, "the manager's start-up",
                 processes=processes)
        assert last()["phase"] == "failed" and "go_to_start" in last()["error"], last()
        assert state(probe, "actor_left", manager) == "inactive"
    finally:
        for process in processes:
            assert process.stop() == 0, process.output[-3000:]
        probe.shutdown()
