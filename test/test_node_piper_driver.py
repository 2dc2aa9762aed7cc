"""piper_driver node as a real process, driving two emulated arms through the vendor SDK.

The emulated arms run inside the driver's process (``emulate:=true``: python-can's virtual bus
is in-process); everything from the ROS messages down to the CAN frames is the real robot's
code path. A probe in this process sends commands and records /joint_states, /diagnostics and
~/enabled. Every wait has a deadline.
"""
import json

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import NodeProcess, Probe, wait_for
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.nodes import common

pytestmark = pytest.mark.integration
MODULE = "sim2real_vla_ros.nodes.piper_driver"
STARTUP_TIMEOUT_S = 60.0
# Loose thresholds: this machine is shared and loaded (the node's defaults are the real arm's).
PARAMS = {"emulate": True, "bustype": "virtual", "can_left": "vcan_left", "can_right": "vcan_right",
          "rate_hz": 100.0, "emulator_rate_hz": 100.0, "feedback_timeout_s": 0.5, "min_feedback_rate_hz": 10.0,
          "diagnostics_rate_hz": 5.0, "speed_rate": 100}
START = [0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0]  # the emulated arms' start (joints rad, finger m)


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("piper_driver_probe", use_sim_time=False)
    probe.subscribe(JointState, "/joint_states", common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    probe.subscribe(Bool, "/piper_driver/enabled", common.LATCHED_QOS)
    node = probe.node
    probe.stream = {arm: node.create_publisher(Float64MultiArray, "/" + vocab.arm_command_topic(arm, "stream"),
                                               common.COMMAND_QOS) for arm in robot.ARMS}
    probe.trajectory = {arm: node.create_publisher(JointTrajectory, "/" + vocab.arm_command_topic(arm, "trajectory"),
                                                   common.COMMAND_QOS) for arm in robot.ARMS}
    probe.estop = node.create_publisher(Bool, "/" + vocab.ESTOP, common.LATCHED_QOS)
    probe.fault = node.create_publisher(String, "/piper_driver/emulator/fault", common.COMMAND_QOS)
    yield probe
    probe.shutdown()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def driver(probe):
    process = NodeProcess(MODULE, "piper_driver", PARAMS)
    try:
        wait_for(lambda: _enabled(probe), STARTUP_TIMEOUT_S, "both arms enabled (~/enabled true)",
                 processes=[process])
        yield process
    finally:
        assert process.stop() == 0, process.output[-3000:]
    assert "Traceback" not in process.output


def _enabled(probe):
    messages = probe.received("/piper_driver/enabled")
    return bool(messages) and messages[-1].data


def _positions(probe):
    messages = probe.received("/joint_states")
    return dict(zip(messages[-1].name, messages[-1].position)) if messages else {}


def _arm(probe, arm):
    positions = _positions(probe)
    names = robot.arm_joint_names(arm)
    return np.array([positions[n] for n in names]) if all(n in positions for n in names) else None


def _reached(probe, arm, target, tol=2e-3):
    def check():
        q = _arm(probe, arm)
        return q is not None and np.allclose(q, target, atol=tol)
    return check


def _arm_status(probe, arm):
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == f"piper_{arm}":
                return {kv.key: kv.value for kv in status.values}
    return {}


def _enable(probe, driver):
    return probe.call(Trigger, "/piper_driver/enable", Trigger.Request(), timeout=20.0, processes=[driver])


def test_enabled_arms_publish_the_16_urdf_joints_where_they_are(probe, driver):
    wait_for(lambda: len(_positions(probe)) == 16, 20.0, "a 16-joint /joint_states", processes=[driver])
    msg = probe.received("/joint_states")[-1]
    assert list(msg.name) == list(robot.ALL_JOINT_NAMES)
    for arm in robot.ARMS:
        assert _arm(probe, arm) == pytest.approx(START, abs=1e-4)
        positions = _positions(probe)
        assert positions[f"{arm}_joint8"] == pytest.approx(-positions[f"{arm}_joint7"])
    assert "left arm enabled and running" in driver.output and "firmware S-V1.6-3" in driver.output
    wait_for(lambda: _arm_status(probe, "left").get("state") == "running", 10.0, "diagnostics: running",
             processes=[driver])


def test_stream_and_trajectory_commands_move_the_emulated_arms(probe, driver):
    left = [0.3, 1.0, -0.8, 0.2, -0.4, 0.5, 0.03]
    probe.stream["left"].publish(Float64MultiArray(data=left))
    wait_for(_reached(probe, "left", left), 20.0, "the left arm at the stream target", processes=[driver])
    right = [-0.2, 0.8, -0.6, 0.0, 0.3, -0.3, 0.02]
    msg = JointTrajectory(joint_names=robot.arm_joint_names("right"))
    point = JointTrajectoryPoint(positions=right)
    point.time_from_start.sec = 1
    msg.points = [point]
    probe.trajectory["right"].publish(msg)
    wait_for(_reached(probe, "right", right), 20.0, "the right arm at the trajectory's end", processes=[driver])


def test_estop_stops_both_arms_and_motion_needs_an_explicit_enable(probe, driver):
    probe.estop.publish(Bool(data=True))
    wait_for(lambda: _arm_status(probe, "left").get("state") == "estop"
             and _arm_status(probe, "right").get("state") == "estop", 10.0, "both arms e-stopped",
             processes=[driver])
    wait_for(lambda: not _enabled(probe), 5.0, "~/enabled false", processes=[driver])
    before = _arm(probe, "left")
    probe.stream["left"].publish(Float64MultiArray(data=[0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0]))
    response = _enable(probe, driver)
    assert not response.success and "e-stop engaged" in response.message
    probe.estop.publish(Bool(data=False))
    wait_for(lambda: "e-stop released" in driver.output, 10.0, "the release logged", processes=[driver])
    assert _arm(probe, "left") == pytest.approx(before, abs=1e-3)  # nothing moved
    response = _enable(probe, driver)
    assert response.success, response.message
    wait_for(lambda: _enabled(probe), 20.0, "~/enabled true again", processes=[driver])
    assert _arm(probe, "left") == pytest.approx(before, abs=1e-3)  # re-enabled: holds where it is
    target = [0.1, 0.7, -0.7, 0.0, 0.0, 0.0, 0.01]
    probe.stream["left"].publish(Float64MultiArray(data=target))
    wait_for(_reached(probe, "left", target), 20.0, "moving again after the re-enable", processes=[driver])


def test_a_lost_bus_is_reported_holds_and_does_not_resume_by_itself(probe, driver):
    probe.fault.publish(String(data=json.dumps({"arm": "right", "bus_lost": True})))
    wait_for(lambda: _arm_status(probe, "right").get("state") == "hold", 10.0, "the right arm holding",
             processes=[driver])
    reasons = _arm_status(probe, "right")["hold_reasons"]
    assert "can_silent" in reasons or "feedback_rate_low" in reasons, reasons
    probe.clear("/joint_states")
    wait_for(lambda: "joint_states_withheld" in _counters(probe), 10.0, "/joint_states withheld", processes=[driver])
    probe.fault.publish(String(data=json.dumps({"arm": "right", "clear": True})))
    wait_for(lambda: len(_positions(probe)) == 16, 10.0, "/joint_states again once the bus is back",
             processes=[driver])
    target = [0.2, 0.9, -0.9, 0.0, 0.0, 0.0, 0.01]
    before = _arm(probe, "right")
    probe.stream["right"].publish(Float64MultiArray(data=target))
    wait_for(lambda: int(_counters(probe).get("right.stream_commands", 0)) >= 1, 10.0, "the command taken in",
             processes=[driver])
    assert _arm_status(probe, "right")["state"] == "hold"
    assert _arm(probe, "right") == pytest.approx(before, abs=1e-3)
    wait_for(lambda: _rate(probe, "right") > 2 * PARAMS["min_feedback_rate_hz"], 10.0,
             "the feedback rate recovered (a re-enable is refused until then)", processes=[driver])
    response = _enable(probe, driver)
    assert response.success, response.message
    # A command that arrives while the arm is still enabling is dropped (it starts holding where it is).
    wait_for(lambda: _arm_status(probe, "right").get("state") == "running", 10.0, "running again",
             processes=[driver])
    assert _reached(probe, "right", before)(), "the re-enabled arm must hold where it was"
    probe.stream["right"].publish(Float64MultiArray(data=target))
    wait_for(_reached(probe, "right", target), 20.0, "moving after the re-enable", processes=[driver])


def test_out_of_limit_commands_are_clipped_before_the_can_frames(probe, driver):
    probe.stream["left"].publish(Float64MultiArray(data=[3.5, 3.5, 0.5, 2.0, 2.0, 3.0, 0.09]))
    upper = robot.arm_limits("left").upper
    lower = robot.arm_limits("left").lower
    expected = np.clip([3.5, 3.5, 0.5, 2.0, 2.0, 3.0, 0.09], lower, upper)
    wait_for(_reached(probe, "left", expected), 20.0, "the left arm at its limits", processes=[driver])
    wait_for(lambda: "left.stream_clipped" in _counters(probe), 10.0, "the clip counted", processes=[driver])
    for arm in robot.ARMS:
        assert _arm_status(probe, arm)["emulator.out_of_limit_commands"] == "0"


def _rate(probe, arm):
    try:
        return float(_arm_status(probe, arm).get("feedback_rate_hz", "0"))
    except ValueError:  # "n/a" before a full window
        return 0.0


def _counters(probe):
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == "piper_driver":
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_firmware_older_than_s_v1_6_3_refuses_to_start():
    process = NodeProcess(MODULE, "piper_driver_old", {**PARAMS, "can_left": "old_left", "can_right": "old_right",
                                                       "emulator_firmware": "S-V1.5-2"})
    try:
        code = process.wait_exit(timeout=STARTUP_TIMEOUT_S)
    finally:
        process.stop()
    assert code == 1
    assert "firmware S-V1.5-2 is older than S-V1.6-3" in process.output
    assert "Traceback" not in process.output
