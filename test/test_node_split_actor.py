"""The split actor as real processes on loopback: actor_control (actor_left) + actor_inference
(actor_left_inference) closed loop on the FakeWorld; e-stop; a stopped inference node holds the arm.

The two-host version (network namespaces, a cut link) is test_two_hosts.py.
"""
import os

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from actor_world import BUNDLE, RATE_HZ, VLA_YAML, FakeWorld, instruction, TOP_H, TOP_W
from ros_harness import NodeProcess, Probe, WallClock, wait_for
from sim2real_vla_ros.nodes import common
from test_node_actor import assert_within_limits, commands, counter, stop

pytestmark = pytest.mark.integration
CONTROL = "sim2real_vla_ros.nodes.actor_control"
INFERENCE = "sim2real_vla_ros.nodes.actor_inference"


def start_split(arm, env=None, inference_params=None, control_params=None):
    """(control, inference) processes for ``arm``, parameters as graph.split_actor_nodes gives them."""
    shared = {"arm": arm, "bundle_path": BUNDLE, "instruction": instruction(), "top_image_width": TOP_W,
              "top_image_height": TOP_H, "diagnostics_rate_hz": 5.0}
    inference = NodeProcess(INFERENCE, f"actor_{arm}_inference", params={**shared, **(inference_params or {})}, env=env)
    control = NodeProcess(CONTROL, f"actor_{arm}", params_file=VLA_YAML,
                          params={**shared, "control_rate_hz": RATE_HZ, **(control_params or {})}, env=env)
    return control, inference


@pytest.fixture(scope="module")
def probe():
    assert os.path.isfile(os.path.join(BUNDLE, "bundle.yaml")), f"reference bundle missing at {BUNDLE}: make setup"
    rclpy.init()
    probe = Probe("split_probe", use_sim_time=False)
    probe.subscribe(JointState, "/vla/actor_left/command", common.COMMAND_QOS)
    probe.subscribe(JointTrajectory, "/vla/actor_left/chunk", common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    probe.world = FakeWorld(probe)
    probe.clock = WallClock(probe)
    yield probe
    probe.clock.close()
    probe.world.close()
    probe.shutdown()
    rclpy.shutdown()


def test_split_actor_runs_closed_loop_holds_on_estop_and_when_inference_stops(probe):
    control, inference = start_split("left")
    processes = [control, inference]
    try:
        wait_for(lambda: len(probe.received("/vla/actor_left/chunk")) >= 3, 90.0, "three spliced chunks",
                 processes=processes)
        _, positions = commands(probe, "left")
        assert_within_limits(positions, "left", "split actor commands")
        wait_for(lambda: np.ptp(commands(probe, "left")[1][-10:], axis=0).max() > 1e-6, 30.0, "motion",
                 processes=processes)
        # Chunks are spliced by their measured age (observation -> arrival), reported per arm.
        wait_for(lambda: counter(probe, "actor_left", "chunk_age_on_arrival_count") >= 1, 20.0,
                 "chunk ages in actor_left's diagnostics", processes=processes)

        probe.world.set_estop(True)
        wait_for(lambda: diagnostics_value(probe, "estop") == "True", 10.0, "the e-stop to reach actor_left",
                 processes=processes)
        engaged = probe.node.get_clock().now().nanoseconds * 1e-9
        wait_for(lambda: len(commands(probe, "left", engaged + 1.5)[0]) >= 20, 20.0, "commands after the e-stop",
                 processes=processes)
        _, held = commands(probe, "left", engaged + 1.0)
        assert np.ptp(held, axis=0).max() < 1e-9, "the arm must hold under the e-stop"
        probe.world.set_estop(False)
        wait_for(lambda: np.ptp(commands(probe, "left")[1][-10:], axis=0).max() > 1e-6, 30.0,
                 "motion after the e-stop release", processes=processes)

        # The inference host goes away: the arm holds once its last chunk has run out.
        assert inference.stop() in (0, -2)
        gone = probe.node.get_clock().now().nanoseconds * 1e-9
        horizon = 1.0  # 25 steps at 25 Hz (the reference bundle)
        wait_for(lambda: len(commands(probe, "left", gone + horizon + 1.5)[0]) >= 20, 30.0,
                 "commands after the inference node stopped", processes=[control])
        _, after = commands(probe, "left", gone + horizon + 1.0)
        assert np.ptp(after, axis=0).max() < 1e-9, "the arm must hold when chunks stop arriving"
        assert_within_limits(commands(probe, "left")[1], "left", "all commands")
        wait_for(lambda: counter(probe, "actor_left", "fault.request_timed_out") >= 1, 20.0,
                 "a request timeout counted", processes=[control])
    finally:
        probe.world.set_estop(False)
        for process in processes:
            stop(process)


def diagnostics_value(probe, key, node="actor_left"):
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == node:
                return {kv.key: kv.value for kv in status.values}.get(key)
    return None
