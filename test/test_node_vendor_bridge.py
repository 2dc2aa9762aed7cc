"""vendor_bridge node as a real process: /puppet/joint_left|right in, one URDF-named /joint_states out.

A probe in this process stands in for the AgileX driver (it publishes the two vendor arm
topics) and records /joint_states and /diagnostics. Every wait has a deadline.
"""
import math
import os
import signal

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState

from ros_harness import NodeProcess, Probe, wait_for
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.vendor import VENDOR_JOINT_NAMES
from sim2real_vla_ros.nodes import common

pytestmark = pytest.mark.integration
MODULE = "sim2real_vla_ros.nodes.vendor_bridge"
MAX_AGE_S = 0.2
STARTUP_TIMEOUT_S = 30.0
LEFT = [0.1, 1.2, -0.9, 0.05, 0.4, -0.3, 0.042]  # vendor layout: the 7th is the total gripper width
RIGHT = [-0.1, 1.0, -1.1, 0.0, 0.6, 0.2, 0.07]


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("vendor_bridge_probe", use_sim_time=False)
    probe.subscribe(JointState, "/joint_states", common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    probe.puppet = {side: probe.node.create_publisher(JointState, f"/puppet/joint_{side}", common.COMMAND_QOS)
                    for side in robot.ARMS}
    yield probe
    probe.shutdown()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def bridge(probe):
    process = NodeProcess(MODULE, "vendor_bridge", {"max_age_s": MAX_AGE_S, "diagnostics_rate_hz": 10.0})
    try:
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in probe.puppet.values()), STARTUP_TIMEOUT_S,
                 "the bridge subscribing /puppet/joint_left and /puppet/joint_right", processes=[process])
        yield process
    finally:
        assert process.stop() == 0, process.output[-3000:]


def _send(probe, side, positions, names=VENDOR_JOINT_NAMES, velocities=(), stamp_s=None):
    msg = JointState(name=list(names), position=[float(v) for v in positions], velocity=list(velocities))
    msg.header.stamp = (probe.node.get_clock().now().to_msg() if stamp_s is None
                        else common.seconds_to_stamp(stamp_s))
    probe.puppet[side].publish(msg)


def _diagnostics(probe):
    """Key/values of the bridge's newest DiagnosticStatus (empty before the first)."""
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == "vendor_bridge":
                return {kv.key: kv.value for kv in status.values}
    return {}


def _counter(probe, key):
    return int(_diagnostics(probe).get(key, 0))


def test_both_arms_become_one_urdf_joint_state_with_the_newest_stamp(probe, bridge):
    probe.clear("/joint_states")
    now = probe.node.get_clock().now().nanoseconds * 1e-9

    def relayed():
        _send(probe, "left", LEFT, velocities=[0.0] * 6 + [0.02], stamp_s=now - 0.01)
        _send(probe, "right", RIGHT, velocities=[0.1] * 7, stamp_s=now)
        return probe.received("/joint_states")

    messages = wait_for(relayed, 10.0, "a relayed /joint_states", processes=[bridge])
    msg = messages[-1]
    assert list(msg.name) == list(robot.ALL_JOINT_NAMES)
    positions = dict(zip(msg.name, msg.position))
    for i in range(6):
        assert positions[f"left_joint{i + 1}"] == pytest.approx(LEFT[i])
        assert positions[f"right_joint{i + 1}"] == pytest.approx(RIGHT[i])
    assert positions["left_joint7"] == pytest.approx(0.021) and positions["left_joint8"] == pytest.approx(-0.021)
    assert positions["right_joint7"] == pytest.approx(0.035) and positions["right_joint8"] == pytest.approx(-0.035)
    velocities = dict(zip(msg.name, msg.velocity))
    assert velocities["left_joint7"] == pytest.approx(0.01) and velocities["right_joint8"] == pytest.approx(-0.05)
    assert common.stamp_to_seconds(msg.header.stamp) == pytest.approx(now, abs=1e-6)  # the newer of the two
    assert len(msg.effort) == 0


def test_a_silent_arm_stops_the_relay_and_is_counted(probe, bridge):
    # Both arms report, then the right arm goes silent while the left keeps publishing.
    wait_for(lambda: _send(probe, "left", LEFT) or _send(probe, "right", RIGHT) or probe.received("/joint_states"),
             10.0, "relaying with both arms", processes=[bridge])
    stale_before = _counter(probe, "right.stale_withheld")

    def withheld_for_a_while():
        _send(probe, "left", LEFT)
        return _counter(probe, "right.stale_withheld") >= stale_before + 3
    wait_for(withheld_for_a_while, 10.0, "merges withheld because the right arm is silent", processes=[bridge])
    # From now on nothing may come out, however many left messages arrive.
    probe.clear("/joint_states")
    received_before = _counter(probe, "left.received")

    def left_taken_in():
        _send(probe, "left", LEFT)
        return _counter(probe, "left.received") >= received_before + 5
    wait_for(left_taken_in, 10.0, "five more left messages taken in", processes=[bridge])
    assert probe.received("/joint_states") == []
    diagnostics = _diagnostics(probe)
    assert "right" in diagnostics["stale_now"]
    assert float(diagnostics["right.age_s"]) > MAX_AGE_S
    level = [s.level for a in probe.received("/diagnostics") for s in a.status if s.hardware_id == "vendor_bridge"][-1]
    assert level == b"\x01"  # WARN


def test_malformed_messages_are_counted_and_the_node_keeps_relaying(probe, bridge):
    before = {key: _counter(probe, key) for key in
              ("left.malformed", "left.malformed.wrong_length", "left.malformed.non_finite",
               "left.malformed.unknown_names")}
    _send(probe, "left", LEFT[:6])
    _send(probe, "left", [0.0, math.nan, 0.0, 0.0, 0.0, 0.0, 0.04])
    _send(probe, "left", LEFT, names=[f"left_joint{i}" for i in range(1, 8)])
    _send(probe, "left", LEFT, velocities=[math.inf] * 7)
    wait_for(lambda: _counter(probe, "left.malformed") >= before["left.malformed"] + 4, 10.0,
             "four malformed left messages counted", processes=[bridge])
    diagnostics = _diagnostics(probe)
    assert int(diagnostics["left.malformed.wrong_length"]) == before["left.malformed.wrong_length"] + 1
    assert int(diagnostics["left.malformed.non_finite"]) == before["left.malformed.non_finite"] + 2
    assert int(diagnostics["left.malformed.unknown_names"]) == before["left.malformed.unknown_names"] + 1
    assert "NaN or Inf" in diagnostics["left.last_malformed"]
    assert "malformed.left" in bridge.output  # logged (throttled), not raised
    assert "Traceback" not in bridge.output
    # Alive and relaying again as soon as valid messages come from both arms.
    probe.clear("/joint_states")
    wait_for(lambda: _send(probe, "left", LEFT) or _send(probe, "right", RIGHT) or probe.received("/joint_states"),
             10.0, "relaying after the malformed messages", processes=[bridge])


def test_a_bad_parameter_stops_the_node_with_a_clear_error():
    process = NodeProcess(MODULE, "vendor_bridge_bad", {"max_age_s": -1.0})
    try:
        code = process.wait_exit(timeout=STARTUP_TIMEOUT_S)
    finally:
        process.stop()
    assert code != 0
    assert "parameter 'max_age_s' = -1.0: must be in (0, 10]" in process.output
    assert "Traceback" not in process.output


def test_sigusr1_dumps_the_threads_and_sigint_stops_the_node_cleanly(bridge):
    """Every node's main (common.run_node): a stack dump on demand, and Ctrl-C ends it with exit 0."""
    os.kill(bridge.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "in run_node" in bridge.output, 10.0, "the stack dump in the node's output", processes=[bridge])
    assert bridge.proc.poll() is None, "SIGUSR1 must not stop the node"
    assert bridge.stop(timeout=5.0) == 0, bridge.output[-3000:]
    assert "Traceback" not in bridge.output and "KeyboardInterrupt" not in bridge.output


def test_sigint_stops_an_idle_node_every_time():
    """Nothing wakes this node's executor (sim time without /clock, no input): only the SIGINT
    handling can end its spin. rclpy's own handling left such a node waiting about 1 stop in 3."""
    for attempt in range(4):
        process = NodeProcess(MODULE, f"vendor_bridge_idle_{attempt}", {"use_sim_time": True})
        try:
            wait_for(lambda: "relaying" in process.output, STARTUP_TIMEOUT_S, "the bridge to start",
                     processes=[process])
        finally:
            code = process.stop(timeout=5.0)
        assert code == 0, f"attempt {attempt}: exit {code}\n{process.output[-3000:]}"

