"""The dry run end to end: simulator + the full VLA graph with the reference bundle, one short episode.

Runs the dry-run command as a child process (as `make dry-run` does, with a short episode),
then checks its run folder: the report's fields and evidence of the normal path, and the MCAP
recording read back with mcap_ros2 (expected topics; every command actually sent is finite and
within the URDF joint limits).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages

from ros_harness import REPO, ros_env
from sim2real_vla_ros import graph
from sim2real_vla_ros.tools import run_page
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.task import tasks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRY_RUN_MODULE = "sim2real_vla_ros.tools.dry_run"
EPISODE_SIM_S = 8.0
WALL_LIMIT_S = 150
LIMIT_TOLERANCE = 1e-6
REPORT_SECTIONS = ("schema", "run", "checks", "nodes", "affordances", "validator", "latency", "control", "safety",
                   "simulator", "messages", "outputs")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dry_run") / "run")
    command = [sys.executable, "-m", DRY_RUN_MODULE, "--duration-s", str(EPISODE_SIM_S), "--out", folder]
    result = subprocess.run(command, cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=WALL_LIMIT_S)
    print(result.stdout[-4000:])
    report_path = os.path.join(folder, "report.json")
    assert os.path.isfile(report_path), f"no report.json (exit {result.returncode}):\n{result.stdout[-3000:]}\n" \
                                        f"{result.stderr[-3000:]}"
    with open(report_path, "r", encoding="utf-8") as stream:
        report = json.load(stream)
    return {"folder": folder, "result": result, "report": report}


def test_exits_zero_and_prints_a_summary(dry_run):
    result = dry_run["result"]
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "dry run OK" in result.stdout and "normal path ok: True" in result.stdout


def test_report_has_every_section_and_the_episode(dry_run):
    report = dry_run["report"]
    assert all(section in report for section in REPORT_SECTIONS)
    run = report["run"]
    assert run["task"] == tasks.default_task_name() and not run["failure"]
    assert run["episode_sim_s"] >= EPISODE_SIM_S - 0.5 or run["end_reason"].startswith("task ")
    assert run["episode_wall_s"] > 0 and run["real_time_factor"] > 0 and run["clean_shutdown"]
    assert report["simulator"]["task_success"] in (True, False)
    for stage in ("camera_to_masked.cam_high", "observation_to_chunk.left"):
        assert report["latency"]["measured_sim_ms"][stage]["n"] > 0, stage
    assert any(stage.startswith("actor_left.") for stage in report["latency"]["reported_by_nodes_ms"])


def test_every_node_ran_and_stopped_cleanly(dry_run):
    nodes = dry_run["report"]["nodes"]
    expected = {spec.name for spec in graph.simulator_nodes("mujoco") + graph.vla_nodes(lifecycle_manager=True)}
    assert set(nodes) == expected
    for name, entry in nodes.items():
        assert not entry["died_during_run"] and entry["exit_code"] == 0, (name, entry)


def test_the_normal_path_worked(dry_run):
    report = dry_run["report"]
    assert report["checks"]["normal_path_ok"], report["checks"]
    assert report["affordances"]["published"]["left"]["with_keypoints"] > 0
    left = report["control"]["left"]
    assert left["chunks_decoded"] > 0 and left["commands"] > 0
    assert left["limits"]["within_limits"] and left["limits"]["non_finite"] == 0
    assert left["controller_points"]["within_limits"]
    # No rate here: this episode's rate depends on the machine's load (a rate is measured by
    # benchmarks; test_graph_live checks the control period in sim time).
    assert report["validator"]["decisions"] > 0


def test_mcap_reads_back_with_the_run_topics_and_commands_within_limits(dry_run):
    path = os.path.join(dry_run["folder"], "run.mcap")
    counts = {}
    commands = {arm: [] for arm in graph.ARMS}
    trajectory_points = {arm: [] for arm in graph.ARMS}
    for message in read_ros2_messages(path):
        topic = message.channel.topic
        counts[topic] = counts.get(topic, 0) + 1
        for arm in graph.ARMS:
            if topic == f"/vla/actor_{arm}/command":
                commands[arm].append((list(message.ros_msg.name), list(message.ros_msg.position)))
            elif topic == "/" + graph.arm_command_topic(arm, "trajectory"):  # relative name, root namespace
                trajectory_points[arm] += [(list(message.ros_msg.joint_names), list(p.positions))
                                           for p in message.ros_msg.points]
    expected = {"/joint_states", "/sim/task_status", "/vla/plan_state", "/vla/task_state", "/diagnostics",
                "/vla/masked/cam_high", "/vla/affordance/left", "/vla/actor_left/chunk", "/vla/actor_left/command",
                "/left_arm_controller/joint_trajectory", "/vla/affordance_overlay"}
    assert expected <= set(counts), f"missing topics: {sorted(expected - set(counts))}"
    for arm in graph.ARMS:
        limits = robot.arm_limits(arm)
        for label, rows in (("command", commands[arm]), ("trajectory point", trajectory_points[arm])):
            assert rows, f"no {label}s of the {arm} arm in the MCAP"
            for names, positions in rows:
                order = [names.index(name) for name in limits.names]
                values = np.asarray(positions)[order]
                assert np.all(np.isfinite(values)), f"{arm} {label} not finite: {values}"
                assert np.all(values >= limits.lower - LIMIT_TOLERANCE) and \
                    np.all(values <= limits.upper + LIMIT_TOLERANCE), f"{arm} {label} outside limits: {values}"


def test_overlay_video_or_frames_written(dry_run):
    overlay = dry_run["report"]["outputs"]["overlay"]
    assert overlay["frames"] > 0 and os.path.exists(overlay["path"]), overlay
    if overlay["format"] in ("webm", "mp4"):
        import cv2

        capture = cv2.VideoCapture(overlay["path"])
        ok, frame = capture.read()
        capture.release()
        assert ok and frame.ndim == 3


def test_namespace_option_puts_every_node_in_it():
    """``--namespace`` reaches every spec the dry run starts (the namespaced graph itself: test_graph_namespace)."""
    from sim2real_vla_ros.tools import dry_run as runner

    options = runner.parse_args(["--namespace", "robot1", "--duration-s", "1"])
    assert {spec.full_name for spec in runner.graph_specs(options)} == {
        f"/robot1/{spec.name}" for spec in graph.simulator_nodes("mujoco") + graph.vla_nodes(lifecycle_manager=True)}
    with pytest.raises(ValueError, match="namespace"):
        runner.parse_args(["--namespace", "robot-1"])


def test_split_inference_and_two_hosts_options_start_both_halves_of_each_actor():
    from sim2real_vla_ros.tools import dry_run as runner

    for flags in (["--split-inference"], ["--two-hosts"]):
        options = runner.parse_args([*flags, "--duration-s", "1"])
        assert options.split_inference and options.two_hosts == ("--two-hosts" in flags)
        specs = {spec.name: spec for spec in runner.graph_specs(options)}
        for arm in graph.ARMS:
            assert specs[f"actor_{arm}"].executable == "actor_control"
            assert specs[f"actor_{arm}_inference"].executable == "actor_inference"
    # Test hooks of the model go to the inference half by its name.
    options = runner.parse_args(["--split-inference", "--param", "actor_left_inference.inference_delay_s:=0.2"])
    specs = {spec.name: spec for spec in runner.graph_specs(options)}
    assert specs["actor_left_inference"].parameters["inference_delay_s"] == 0.2
    assert not runner.parse_args(["--duration-s", "1"]).split_inference  # the single-process actor stays the default


def test_the_report_page_leads_with_the_worlds_verdict_and_plots_the_run(dry_run):
    page = open(os.path.join(dry_run["folder"], "report.html"), encoding="utf-8").read()
    world = dry_run["report"]["world"]
    assert world["line"] in page.replace("&#x27;", "'")
    assert world["task_completed"] == dry_run["report"]["simulator"]["task_success"]
    assert world["planner_claimed_done"] == (dry_run["report"]["affordances"]["final_phase"] == "succeeded")
    assert page.count("<svg") >= 7 + 1 + 2  # a task arm's joints, the validator, two latency histograms
    assert "commanded dashed, measured solid" in page and "Event timeline" in page


@pytest.mark.skipif(run_page.chromium_binary() is None,
                    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_report_page_loads_in_a_real_browser(dry_run, tmp_path):
    checked = run_page.check_in_chromium(os.path.join(dry_run["folder"], "report.html"), str(tmp_path / "page.png"))
    assert checked["exit_codes"] == (0, 0) and not checked["errors"], checked
    assert checked["svg"] >= 10 and checked["video"] == 1
    assert checked["non_white_fraction"] > 0.05, checked  # text and plots drawn, not a blank page
    overlay = dry_run["report"]["outputs"]["overlay"]["path"]
    played = run_page.video_plays_in_chromium(overlay, str(tmp_path))
    assert played.startswith("loaded"), played  # the browser decodes the overlay (VP8), not just lists it
