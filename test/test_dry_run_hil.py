"""The hardware-in-the-loop dry run (``--robot emulated-can``): its graph, and one short episode
end to end (piper_driver on emulated Piper arms over the SDK's CAN frames; the simulator follows
their joints and renders the cameras)."""
import json
import os
import subprocess
import sys

import pytest

from ros_harness import REPO, ros_env
from sim2real_vla_ros import graph
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.tools import dry_run

EPISODE_SIM_S = 8.0
WALL_LIMIT_S = 240


def test_emulated_can_graph_has_the_driver_and_a_following_simulator():
    options = dry_run.parse_args(["--robot", "emulated-can", "--duration-s", "5"])
    specs = {spec.name: spec for spec in dry_run.graph_specs(options)}
    driver = specs[graph.PIPER_DRIVER_NODE]
    assert driver.parameters["emulate"] is True and driver.parameters["bustype"] == "virtual"
    assert driver.parameters["use_sim_time"] is True and driver.parameters["enable_on_start"] is False
    task = tasks.get_task(options.task)
    assert driver.parameters["emulator_initial_left"] == pytest.approx(list(task.init_joints("left")))
    assert specs[graph.SIM_NODE].parameters["follow_joint_states"] is True
    connections = graph.expected_connections(output_mode="trajectory", robot_driver=graph.PIPER_DRIVER_NODE)
    assert connections["/joint_states"].publishers == {graph.PIPER_DRIVER_NODE}
    assert graph.SIM_NODE in connections["/joint_states"].subscribers
    assert graph.PIPER_DRIVER_NODE in connections["/left_arm_controller/joint_trajectory"].subscribers
    with pytest.raises(ValueError, match="emulated-can"):
        dry_run.parse_args(["--robot", "emulated-can", "--output-mode", "vendor"])
    assert graph.SIM_NODE in graph.expected_connections()["/joint_states"].publishers  # default unchanged


@pytest.mark.integration
@pytest.mark.slow
def test_hardware_in_the_loop_dry_run_completes_with_every_frame_within_limits(tmp_path):
    folder = str(tmp_path / "run")
    command = [sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--robot", "emulated-can",
               "--duration-s", str(EPISODE_SIM_S), "--out", folder]
    result = subprocess.run(command, cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=WALL_LIMIT_S)
    print(result.stdout[-4000:])
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
        report = json.load(stream)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    checks = report["checks"]
    assert checks["commands_within_limits"] and checks["robot_driver_frames_within_limits"]
    assert checks["robot_driver_commanded_the_arms"]
    assert report["run"]["robot"] == "emulated-can"
