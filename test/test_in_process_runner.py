"""The in-process closed-loop runner (sim/in_process.py): alone (no ROS), and against the ROS dry run.

The equivalence test runs the in-process runner for the dry run's task, seed, output mode
and episode limit (the session's shared dry run, conftest.py), and compares decisions, not
timing. Exact times differ: in the ROS graph every timer runs on /clock but fires when the OS
schedules it on a shared CPU (the actors reach ~47 of their 50 Hz at a real-time factor of 1),
the planner's and validator's timers start at whatever sim time their node came up, the
instruction is sent once the graph is connected, and camera_mask and inference latencies are
wall-clock time; the runner steps every rate on one exact sim-time grid. The runner is given
the dry run's measured camera-to-masked latency (p50), so the actors see images of the same
age. Tolerances:

* affordances: the index sequence (each new current affordance, re-plans included) and the
  validator's event sequence must agree in order: equal when both episodes ended in a terminal
  phase (then with the same phase), else the shorter one a non-empty prefix of the longer.
  When a gate opens depends on the validator model's probability, which depends on the arm's
  state, which depends on chunk timing: measured over two dry runs of the same seed, the
  second affordance opened 1.4 s and 3.2 s after it became current, so an 8 s episode may end
  before the second open in one run and after it in another. The order may never differ.
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

import numpy as np
import pytest

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.policy.bundle import read_manifest
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.in_process import (TERMINAL_PHASES, RunnerOptions, affordance_indices, limit_check, main,
                                             resolve_settings, run_episode)
from sim2real_vla_ros.tools import dry_run as dry_run_tool

SHORT_EPISODE_S = 2.0


@pytest.fixture(scope="module")
def short_episode():
    return run_episode(RunnerOptions(task=tasks.default_task_name(), duration_s=SHORT_EPISODE_S, max_steps=1000))


def test_settings_come_from_the_parameter_files_and_the_dry_runs_overrides():
    settings = resolve_settings(RunnerOptions(task=tasks.default_task_name(), output_mode="stream"))
    params = graph.default_params_file()
    for node in (graph.PLANNER_NODE, graph.VALIDATOR_NODE, graph.CAMERA_MASK_NODE, "actor_left"):
        from_file = graph.load_node_section(params, node)
        assert {k: settings.nodes[node][k] for k in from_file if k != "output_mode"} == \
            {k: v for k, v in from_file.items() if k != "output_mode"}
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
        assert control["commands"] == round(SHORT_EPISODE_S * control_rate) + 1
        assert control["limits"]["within_limits"], control["limits"]
    assert summary["control"]["left"]["chunks"] >= 2  # the task's arm moves
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


def _ordered_alike(shorter_or_equal, other, both_terminal: bool) -> bool:
    if both_terminal:
        return shorter_or_equal == other
    a, b = sorted((list(shorter_or_equal), list(other)), key=len)
    return bool(a) and b[:len(a)] == a


def _ros_chunk_stamps(folder: str, arm: str) -> list:
    from mcap_ros2.reader import read_ros2_messages

    topic = f"/vla/actor_{arm}/chunk"
    return [message.ros_msg.header.stamp.sec + 1e-9 * message.ros_msg.header.stamp.nanosec
            for message in read_ros2_messages(os.path.join(folder, "run.mcap"), topics=[topic])]


@pytest.mark.integration
@pytest.mark.slow
def test_in_process_runner_takes_the_dry_runs_decisions(dry_run):
    report = dry_run["report"]
    run = report["run"]
    assert not run["failure"], run["failure"]
    camera_latency_s = report["latency"]["measured_sim_ms"]["camera_to_masked.cam_high"]["p50"] * 1e-3
    options = RunnerOptions(task=run["task"], seed=run["seed"], duration_s=run["duration_limit_sim_s"],
                            max_steps=run["max_steps"], output_mode=run["output_mode"], arms=run["actor_arms"],
                            camera_latency_s=camera_latency_s)
    result = run_episode(options)
    summary = result.summary
    print(json.dumps({k: summary[k] for k in ("end_reason", "episode_sim_s", "wall_s", "sim_s_per_wall_s",
                                              "sim_s_per_cpu_s")}))
    print(json.dumps({"planner": summary["planner"], "events": summary["validator"]["events"],
                      "chunks": {arm: summary["control"][arm]["chunks"] for arm in summary["control"]}}))

    # 1. The same affordances and gate events in the same order, and the same verdict when both ended.
    history = report["affordances"]["history"]
    ros_sequence = affordance_indices((entry["index"], entry["seq"]) for entry in history)
    ros_phase, phase = report["affordances"]["final_phase"], summary["planner"]["final_phase"]
    both_terminal = ros_phase in TERMINAL_PHASES and phase in TERMINAL_PHASES
    assert ros_sequence, "the dry run made no affordance current"
    assert _ordered_alike(summary["planner"]["affordance_indices"], ros_sequence, both_terminal), \
        (summary["planner"], history)
    if both_terminal:
        assert phase == ros_phase
    assert _ordered_alike([(e["event"], e["index"]) for e in summary["validator"]["events"]],
                          [(e["event"], e["index"]) for e in report["validator"]["event_log"]], both_terminal)

    # 2. Chunk counts per arm in the common window, within the image-age tolerance.
    settings = resolve_settings(options)
    ros_start = next(entry["sim_s"] for entry in history if entry["phase"] == "running")
    window_s = min(run["episode_sim_s"], summary["episode_sim_s"])
    manifest = read_manifest(settings.bundle_path)
    camera_period = 1.0 / next(iter(settings.simulator.camera_rates.values()))
    for arm in run["actor_arms"]:
        actor = settings.nodes[graph.actor_node_name(arm)]
        request_period = manifest.action.chunk_length / manifest.action.control_rate_hz - actor["request_threshold_s"]
        ros = sum(1 for stamp in _ros_chunk_stamps(dry_run["folder"], arm) if ros_start <= stamp <= ros_start + window_s)
        started = summary["task_started_sim_s"]
        here = sum(1 for stamp in result.arms[arm].chunk_stamps if started <= stamp <= started + window_s)
        if report["control"][arm]["chunks_decoded"] == 0:
            assert summary["control"][arm]["chunks"] == 0, f"{arm}: idle in the dry run, not in process"
            continue
        tolerance = 2 + math.ceil(ros * camera_period / request_period)
        assert abs(here - ros) <= tolerance, (arm, here, ros, tolerance, window_s)

    # 3. Every in-process command within the URDF position and velocity limits.
    for arm in run["actor_arms"]:
        limits = summary["control"][arm]["limits"]
        assert limits["checked"] > 0 and limits["within_limits"], (arm, limits)
