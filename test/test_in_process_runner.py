"""The in-process closed-loop runner (sim/in_process.py): alone (no ROS), and against the ROS dry run.

The equivalence test runs one short ROS dry run and the in-process runner for the same task,
seed, output mode, parameter file and episode limit, and compares their decisions.

Why its own dry run, with a scripted validator: with the reference validator model the gate
is not reproducible even between two ROS dry runs of one seed. The model's probability
depends on the arm's state, which depends on when each chunk arrived, so the 3-in-a-row
positives come at different times or not at all (measured over four dry runs of seed 42:
the second affordance opened 1.4 s, 3.2 s and 1.1 s after it became current, and in the
fourth run the first one never opened within 8 s). The dry run's test hook
``scripted_probabilities: '1.0'`` (vla.yaml with only that value changed) makes every
decision of the gate, the chain and the actors depend on the models and the schedule alone,
so the two runs must take the same decisions and differ only in timing.

Why timing differs: in the ROS graph every timer runs on /clock but fires when the OS
schedules it on a shared CPU (the actors reach ~36-47 of their 50 Hz under load), the
planner's and validator's timers start at whatever sim time their node came up, the
instruction is sent once the graph is connected, and camera_mask and inference latencies are
wall-clock time; the runner steps every rate on one exact sim-time grid. It is given the dry
run's measured camera-to-masked latency (p50), so the actors see images of the same age.

Tolerances:

* affordances: the index sequence (each new current affordance, re-plans included), the
  validator's events and the planner's final phase are equal.
* episode length (task start to the planner's verdict): equal within one planner period per
  prediction (the planner's timer phase: each prediction waits up to one period) plus one
  validator period, one camera period and the dry run's camera-to-masked p99 per gate event
  (the validator's timer phase, and the first image newer than the affordance it may count).
* chunks per arm, counted by observation stamp in the window both episodes cover (from the
  task start): equal within ``2 + ceil(n * camera_period / (horizon - request_threshold_s))``.
  An active arm asks for its next chunk when the current one (which starts at its
  observation's stamp) has ``request_threshold_s`` left, i.e. every ``horizon - threshold -
  image age``; the image age at a request varies over one camera period in both runs, so the
  counts of n chunks may differ by that fraction; 2 covers a chunk in flight at each end of the
  window. An arm that never had a target has 0 chunks in both.
* every command the runner sent is finite and within the URDF position and velocity limits
  (the same safety filter as the actor node; checked on the commands themselves).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ros_harness import REPO, ros_env
from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.policy.bundle import read_manifest
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.in_process import (TERMINAL_PHASES, RunnerOptions, affordance_indices, limit_check, main,
                                             resolve_settings, run_episode)
from sim2real_vla_ros.tools import dry_run as dry_run_tool

SHORT_EPISODE_S = 2.0
EQUIVALENCE_EPISODE_S = 8.0  # a limit: with the scripted validator the task ends after ~3 s
DRY_RUN_WALL_LIMIT_S = 150


@pytest.fixture(scope="module")
def short_episode():
    return run_episode(RunnerOptions(task=tasks.default_task_name(), duration_s=SHORT_EPISODE_S, max_steps=1000))


def test_settings_come_from_the_parameter_files_and_the_dry_runs_overrides():
    settings = resolve_settings(RunnerOptions(task=tasks.default_task_name(), output_mode="stream"))
    params = graph.default_params_file()
    overridden = {"output_mode", "overlay_source"}  # the dry run's overrides (the overlay at camera resolution)
    for node in (graph.PLANNER_NODE, graph.VALIDATOR_NODE, graph.CAMERA_MASK_NODE, "actor_left"):
        from_file = graph.load_node_section(params, node)
        assert {k: settings.nodes[node][k] for k in from_file if k not in overridden} == \
            {k: v for k, v in from_file.items() if k not in overridden}
    assert settings.nodes[graph.PLANNER_NODE]["overlay_source"] == "raw"
    assert settings.nodes["actor_left"]["output_mode"] == "stream" and settings.nodes["actor_right"]["arm"] == "right"
    sim = settings.simulator
    assert sim.task_name == tasks.default_task_name() and sim.command_interface == "ros2_control"
    assert sim.real_time_factor == dry_run_tool.DEFAULT_REAL_TIME_FACTOR
    assert sim.physics_rate_hz >= 500 and sim.camera_width > 0 and set(sim.camera_rates) == set(robot.CAMERAS)


def test_a_short_episode_runs_the_whole_graph_logic_without_ros(short_episode):
    summary = short_episode.summary
    json.dumps(summary, allow_nan=False)  # the CLI's output
    settings = resolve_settings(RunnerOptions(task=tasks.default_task_name()))
    control_rate = settings.nodes["actor_left"]["control_rate_hz"]
    camera_rate = next(iter(settings.simulator.camera_rates.values()))
    assert summary["end_reason"].startswith("duration limit")
    assert math.isclose(summary["episode_sim_s"], SHORT_EPISODE_S, abs_tol=1e-6)
    # Every rate on the sim-time grid from t = 0: one tick / set at each multiple of the period.
    assert summary["camera_mask"]["sets"] == round(SHORT_EPISODE_S * camera_rate) + 1
    assert summary["planner"]["final_phase"] == "running" and summary["planner"]["affordance_indices"] == [0]
    for arm in graph.ARMS:
        control = summary["control"][arm]
        # Every tick but the first commands: at t = 0 the arm has reported once, and a joint
        # reading is believed only once two agree (JointReadingValidator's confirmation).
        assert control["commands"] == round(SHORT_EPISODE_S * control_rate)
        assert control["limits"]["within_limits"], control["limits"]
    assert summary["control"]["left"]["chunks"] >= 2  # the task's arm moves
    # Every trajectory message was taken by the simulated joint_trajectory_controller.
    assert all(not rejected for rejected in summary["simulator"]["rejected_commands"].values())
    assert summary["sim_s_per_wall_s"] > 0 and summary["simulator"]["task_success"] in (True, False)


def test_the_arm_moves_as_commanded(short_episode):
    slots, commands = short_episode.arms["left"].command_matrix()
    assert np.all(np.diff(slots) > 0)
    assert np.ptp(commands[:, :6], axis=0).max() > 1e-3  # executed chunks, not a hold


def test_limit_check_flags_position_and_velocity_violations():
    limits = robot.arm_limits("left")
    rest = np.clip(np.zeros(7), limits.lower, limits.upper)
    slots = np.array([0.0, 0.02, 0.04])
    ok = limit_check(slots, np.stack([rest, rest, rest]), "left")
    assert ok["within_limits"] and ok["max_velocity_limit_ratio"] == 0.0
    too_fast = np.stack([rest, rest, rest])
    too_fast[2, 0] += 2.0 * limits.velocity[0] * 0.02
    assert not limit_check(slots, too_fast, "left")["within_limits"]
    outside = np.stack([rest, rest, rest])
    outside[1, 0] = limits.upper[0] + 0.1
    assert limit_check(slots, outside, "left")["outside_position_limits"] == 1
    nan = np.stack([rest, rest, rest])
    nan[0, 3] = np.nan
    assert limit_check(slots, nan, "left")["non_finite"] == 1


def test_affordance_indices_count_new_targets_and_replans():
    history = [(0, None), (0, 1), (0, 1), (1, None), (1, 2), (1, 3), (2, None)]
    assert affordance_indices(history) == [0, 1, 1]


def test_cli_rejects_a_bad_argument(capsys):
    assert main(["--task", "no_such_task"]) == 1
    assert "no_such_task" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scripted_dry_run(tmp_path_factory):
    """One short dry run with vla.yaml's validator ``scripted_probabilities`` set to '1.0'."""
    folder = tmp_path_factory.mktemp("equivalence")
    with open(graph.default_params_file(), "r", encoding="utf-8") as stream:
        params = yaml.safe_load(stream)
    from sim2real_vla_ros.graph.parameter_files import fully_qualified, section_applies

    validator_sections = [key for key in params if section_applies(key, fully_qualified(graph.VALIDATOR_NODE))]
    assert validator_sections, "no validator section in vla.yaml"
    params[validator_sections[-1]]["ros__parameters"]["scripted_probabilities"] = "1.0"
    params_file = str(folder / "vla_scripted.yaml")
    with open(params_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(params, stream)
    out = str(folder / "run")
    command = [sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--duration-s", str(EQUIVALENCE_EPISODE_S),
               "--params-file", params_file, "--out", out]
    result = subprocess.run(command, cwd=REPO, env=ros_env(), capture_output=True, text=True,
                            timeout=DRY_RUN_WALL_LIMIT_S)
    print(result.stdout[-3000:])
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(os.path.join(out, "report.json"), "r", encoding="utf-8") as stream:
        return {"folder": out, "report": json.load(stream), "params_file": params_file}


def _ros_chunk_stamps(folder: str, arm: str) -> list:
    """Observation stamps of the actor's chunks in the dry run's MCAP.

    Matched with or without the leading slash: the recorder currently writes the relative
    names the nodes use (``vla/actor_left/chunk``).
    """
    from mcap_ros2.reader import read_ros2_messages

    topic = vocab.actor_chunk_topic(arm).lstrip("/")
    return [message.ros_msg.header.stamp.sec + 1e-9 * message.ros_msg.header.stamp.nanosec
            for message in read_ros2_messages(os.path.join(folder, "run.mcap"))
            if message.channel.topic.lstrip("/") == topic]


@pytest.mark.integration
@pytest.mark.slow
def test_in_process_runner_takes_the_dry_runs_decisions(scripted_dry_run):
    report = scripted_dry_run["report"]
    run = report["run"]
    measured = report["latency"]["measured_sim_ms"]["camera_to_masked.cam_high"]
    options = RunnerOptions(task=run["task"], seed=run["seed"], duration_s=run["duration_limit_sim_s"],
                            max_steps=run["max_steps"], output_mode=run["output_mode"], arms=run["actor_arms"],
                            params_file=scripted_dry_run["params_file"], camera_latency_s=measured["p50"] * 1e-3)
    result = run_episode(options)
    summary = result.summary
    print(json.dumps({k: summary[k] for k in ("end_reason", "episode_sim_s", "wall_s", "sim_s_per_wall_s",
                                              "sim_s_per_cpu_s")}))
    print(json.dumps({"planner": summary["planner"], "events": summary["validator"]["events"],
                      "chunks": {arm: summary["control"][arm]["chunks"] for arm in summary["control"]}}))

    # 1. The same affordances, gate events and verdict.
    history = report["affordances"]["history"]
    ros_sequence = affordance_indices((entry["index"], entry["seq"]) for entry in history)
    assert len(ros_sequence) >= 2, f"the dry run did not advance: {history}"
    assert summary["planner"]["affordance_indices"] == ros_sequence, (summary["planner"], history)
    assert [(e["event"], e["index"]) for e in summary["validator"]["events"]] == \
        [(e["event"], e["index"]) for e in report["validator"]["event_log"]]
    assert summary["planner"]["final_phase"] == report["affordances"]["final_phase"]

    # 2. Episode length within the scheduling tolerance (module docstring).
    settings = resolve_settings(options)
    planner_period = 1.0 / settings.nodes[graph.PLANNER_NODE]["planner_rate_hz"]
    validator_period = 1.0 / settings.nodes[graph.VALIDATOR_NODE]["validator_rate_hz"]
    camera_period = 1.0 / next(iter(settings.simulator.camera_rates.values()))
    ros_start = next(entry["sim_s"] for entry in history if entry["phase"] == "running")
    ros_end = next((entry["sim_s"] for entry in history if entry["phase"] in TERMINAL_PHASES), None)
    assert ros_end is not None, f"the dry run did not finish its task within {EQUIVALENCE_EPISODE_S} s: {history}"
    predictions = len(ros_sequence) + (report["affordances"]["final_phase"] == "succeeded")
    events = len(report["validator"]["event_log"])
    length_tolerance = predictions * planner_period + \
        events * (validator_period + camera_period + measured["p99"] * 1e-3)
    ros_length, length = ros_end - ros_start, summary["episode_sim_s"]
    assert abs(length - ros_length) <= length_tolerance, (length, ros_length, length_tolerance)

    # 3. Chunk counts per arm in the common window, within the image-age tolerance.
    window_s = min(ros_length, length)
    manifest = read_manifest(settings.bundle_path)
    started = summary["task_started_sim_s"]
    for arm in run["actor_arms"]:
        actor = settings.nodes[graph.actor_node_name(arm)]
        request_period = manifest.action.chunk_length / manifest.action.control_rate_hz - actor["request_threshold_s"]
        ros_stamps = _ros_chunk_stamps(scripted_dry_run["folder"], arm)
        ros = sum(1 for stamp in ros_stamps if ros_start <= stamp <= ros_start + window_s)
        here = sum(1 for stamp in result.arms[arm].chunk_stamps if started <= stamp <= started + window_s)
        if not ros_stamps:
            assert summary["control"][arm]["chunks"] == 0, f"{arm}: idle in the dry run, not in process"
            continue
        tolerance = 2 + math.ceil(ros * camera_period / request_period)
        assert abs(here - ros) <= tolerance, (arm, here, ros, tolerance, window_s)

    # 4. Every in-process command within the URDF position and velocity limits.
    for arm in run["actor_arms"]:
        limits = summary["control"][arm]["limits"]
        assert limits["checked"] > 0 and limits["within_limits"], (arm, limits)
