"""core.run_report on synthetic runs (pure: no rclpy) and core.ros2_msgdef's schema text."""
import json
import math

import numpy as np
import pytest

from sim2real_vla_ros.tools import ros2_msgdef
from sim2real_vla_ros.tools.run_report import (AffordanceRecord, ChunkRecord, DiagnosticRecord, Episode, JointCommand,
                                              JointLimitTable, NodeRun, RunData, StampRecord, build_report,
                                              distribution, limit_check, seam_section, summary_lines)

NAMES = tuple(f"left_joint{i}" for i in range(1, 8))
LIMITS = JointLimitTable(NAMES, (-2.0,) * 6 + (0.0,), (2.0,) * 6 + (0.035,), (3.0,) * 7)
DT = 0.02


def commands_along(positions: np.ndarray, start_s: float = 10.0, dt: float = DT, names=NAMES) -> list:
    return [JointCommand(start_s + k * dt + 0.001, start_s + k * dt, names, tuple(map(float, row)))
            for k, row in enumerate(positions)]


def chunk_at(recv_s: float, stamp_s: float, steps: int = 25, dt: float = DT, start=None) -> ChunkRecord:
    start = np.zeros(7) if start is None else start
    points = tuple(tuple(map(float, start + 0.001 * k)) for k in range(steps))
    return ChunkRecord(recv_s, stamp_s, NAMES, points, tuple(dt * (k + 1) for k in range(steps)))


def plan_state(phase, index, seq, achieved=0, reason=""):
    return {"phase": phase, "index": index,
            "affordance": None if seq is None else {"seq": seq, "index": index}, "achieved_count": achieved,
            "reason": reason}


def synthetic_run(ticks: int = 200) -> RunData:
    """10 s .. 14 s sim: a smooth ramp on joint 1, chunks every 0.5 s, one re-plan, two advances."""
    data = RunData(task="pour_water_single", seed=42, instruction="pour", task_arms=("left",), actor_arms=("left",),
                   control_rate_hz=1.0 / DT, joint_limits={"left": LIMITS})
    data.episode = Episode(start_sim_s=10.0, end_sim_s=14.0, start_wall_s=100.0, end_wall_s=108.0,
                           end_reason="duration limit", total_wall_s=130.0, graph_connected_wall_s=15.0)
    data.nodes = [NodeRun("planner", 0, False), NodeRun("actor_left", 0, False)]
    positions = np.zeros((ticks, 7))
    positions[:, 0] = np.linspace(0.0, 0.4, ticks)  # 0.1 rad/s
    data.commands["left"] = commands_along(positions)
    data.chunks["left"] = [chunk_at(10.0 + 0.5 * k + 0.1, 10.0 + 0.5 * k, steps=50) for k in range(8)]
    data.plan_states = [(9.0, plan_state("idle", 0, None)), (10.1, plan_state("running", 0, 1)),
                        (10.6, plan_state("running", 0, 1)),            # repeated: not a change
                        (11.0, plan_state("running", 0, 2, reason="replan")),
                        (11.9, plan_state("running", 1, None, achieved=1)),   # predicting the next one
                        (12.0, plan_state("running", 1, 3, achieved=1)),
                        (13.0, plan_state("running", 2, 4, achieved=2))]
    data.task_states = [(11.0, {"phase": "running", "decisions_count": 5, "arms": {"left": {"prob": 0.2}}}),
                        (13.5, {"phase": "running", "decisions_count": 17, "arms": {"left": {"prob": 0.7}}})]
    data.validator_events = [(10.9, {"event": "replan", "index": 0, "reason": "timeout"}),
                             (11.9, {"event": "open", "index": 0}), (12.9, {"event": "open", "index": 1})]
    data.affordances["left"] = [AffordanceRecord(10.1, 9.9, 4, 0), AffordanceRecord(12.0, 11.8, 4, 1)]
    data.affordances["right"] = [AffordanceRecord(10.1, 9.9, 0, None)]
    data.masked["cam_high"] = [StampRecord(10.0 + 0.1 * k + 0.05, 10.0 + 0.1 * k) for k in range(30)]
    data.diagnostics = [
        DiagnosticRecord(11.0, "planner", "planner: chain", 0, "ok", {"model_p50_ms": "40", "model_p99_ms": "90"}),
        DiagnosticRecord(12.0, "planner", "planner: chain", 0, "ok", {"model_p50_ms": "42", "model_p99_ms": "95",
                                                                     "count.stale_input": "3"}),
        DiagnosticRecord(12.0, "actor_left", "actor", 1, "holds", {"inference_p50_ms": "120", "inference_p99_ms": "200",
                                                                  "safety.stale_input:cam_high": "4",
                                                                  "safety.velocity_limited": "0",
                                                                  "safety.ticks": "500", "inference.ok": "9",
                                                                  "tick.ticks_without_fresh_setpoint": "7",
                                                                  "tick.jitter_p50_ms": "0.5",
                                                                  "seam.max_jump": "0.01",
                                                                  "joint_reading.accepted": "900",
                                                                  "joint_reading.rejected:outside_limits": "1"}),
    ]
    data.sim_status = [(9.5, {"task": "pour_water_single", "success": False, "seed": 42,
                              "counters": {"accepted:/left_arm_controller/joint_trajectory": 3}}),
                       (13.9, {"task": "pour_water_single", "success": False, "seed": 42, "criteria": {"poured": False},
                               "counters": {"rejected:/left_arm_controller/joint_trajectory": 2}})]
    return data


def test_distribution_ignores_nonfinite_and_handles_empty():
    stats = distribution([1.0, 2.0, float("nan"), 3.0, None])
    assert stats["n"] == 3 and stats["p50"] == 2.0 and stats["max"] == 3.0
    assert distribution([]) == {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}


def test_report_sections_from_a_synthetic_run():
    report = build_report(synthetic_run())
    json.dumps(report, allow_nan=False)  # strictly JSON (no NaN)
    run = report["run"]
    assert run["episode_sim_s"] == pytest.approx(4.0) and run["episode_wall_s"] == pytest.approx(8.0)
    assert run["real_time_factor"] == pytest.approx(0.5)
    aff = report["affordances"]
    assert (aff["advances"], aff["replans"]) == (2, 1)
    assert aff["published"]["left"] == {"messages": 2, "with_keypoints": 2, "indices": [0, 1]}
    assert aff["published"]["right"]["with_keypoints"] == 0
    assert [h["seq"] for h in aff["history"]] == [None, 1, 2, None, 3, 4]
    val = report["validator"]
    assert val["decisions"] == 17 and val["events"] == {"replan": 1, "open": 2}
    assert val["last_probabilities"] == {"left": 0.7}
    latency = report["latency"]
    assert latency["reported_by_nodes_ms"]["planner.model"] == {"p50_ms": 42.0, "p99_ms": 95.0}
    assert latency["reported_by_nodes_ms"]["actor_left.inference"] == {"p50_ms": 120.0, "p99_ms": 200.0}
    assert not any("jitter" in stage for stage in latency["reported_by_nodes_ms"])
    masked = latency["measured_sim_ms"]["camera_to_masked.cam_high"]
    assert masked["p50"] == pytest.approx(50.0) and masked["n"] == 30
    assert latency["measured_sim_ms"]["observation_to_chunk.left"]["p50"] == pytest.approx(100.0)
    assert latency["measured_sim_ms"]["observation_to_affordance.left"]["p50"] == pytest.approx(200.0)


def test_control_rate_jitter_limits_and_freshness():
    control = build_report(synthetic_run())["control"]["left"]
    assert control["commands"] == 200 and control["rate_hz_sim"] == pytest.approx(50.0)
    assert control["tick_jitter_ms"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert control["chunks_decoded"] == 8
    assert control["limits"]["within_limits"] and control["limits"]["non_finite"] == 0
    # Chunks cover [stamp, stamp + 1 s] and arrive 0.1 s after their stamp: only the ticks
    # before the first arrival (10.0 .. 10.08 s) have no fresh setpoint.
    assert control["ticks_without_fresh_setpoint_derived"] == 5
    data = synthetic_run()
    data.chunks["left"] = [chunk_at(c.recv_sim_s, c.stamp_s, steps=25) for c in data.chunks["left"]]
    # 0.5 s chunks every 0.5 s arriving 0.1 s late: besides the first 5 ticks, the ticks strictly
    # between a chunk's end (stamp + 0.5 s) and the next arrival (stamp + 0.6 s), 4 per seam.
    assert build_report(data)["control"]["left"]["ticks_without_fresh_setpoint_derived"] == 5 + 4 * 7
    assert control["reported_all_ticks"] == {"ticks_without_fresh_setpoint": 7.0, "jitter_p50_ms": 0.5}
    assert control["seams"]["reported_by_actor"] == {"max_jump": 0.01}
    seams = control["seams"]
    assert seams["seams"] == 7
    assert seams["max_velocity_seam"] == pytest.approx(0.4 / 199 / DT, rel=1e-6)
    assert seams["velocity_limit_ratio_max"] < 0.1
    assert seams["velocity_limit_ratio_max_by_stamps"] == pytest.approx(seams["velocity_limit_ratio_max"])


def test_jitter_measures_irregular_ticks():
    data = synthetic_run()
    commands = data.commands["left"]
    shifted = [JointCommand(c.recv_sim_s, c.stamp_s + (0.005 if k == 50 else 0.0), c.names, c.positions)
               for k, c in enumerate(commands)]
    data.commands["left"] = shifted
    jitter = build_report(data)["control"]["left"]["tick_jitter_ms"]
    assert jitter["max"] == pytest.approx(5.0, abs=1e-6)  # 25 ms then 15 ms intervals
    assert jitter["p50"] == pytest.approx(0.0, abs=1e-6)


def test_limit_check_counts_violations_and_nonfinite_by_name_order():
    rows = np.zeros((4, 7))
    rows[1, 0] = 2.5                      # joint1 above its upper limit
    rows[2, 6] = math.nan                 # NaN gripper
    reversed_names = tuple(reversed(NAMES))
    commands = commands_along(rows[:, ::-1], names=reversed_names)  # names in another order: mapped by name
    result = limit_check(commands, LIMITS)
    assert result["checked"] == 4 and result["non_finite"] == 1 and result["outside_limits"] == 1
    assert result["outside_by_joint"] == {"left_joint1": 1} and result["within_limits"] is False


def test_a_jump_at_a_seam_shows_in_the_seam_velocity_not_elsewhere():
    positions = np.zeros((100, 7))
    positions[50:, 1] = 0.05              # a 0.05 rad step at tick 50 (t = 11.0 s)
    commands = commands_along(positions)
    chunks = [chunk_at(10.0, 9.9), chunk_at(11.0, 10.9)]
    seams = seam_section(commands, chunks, LIMITS, DT)
    assert seams["seams"] == 1
    assert seams["max_velocity_seam"] == pytest.approx(0.05 / DT)
    assert seams["max_velocity_elsewhere"] == pytest.approx(0.0)
    assert seams["max_step_seam"] == pytest.approx(0.05) and seams["max_step_elsewhere"] == pytest.approx(0.0)
    assert seams["max_acceleration_seam"] == pytest.approx(0.05 / DT ** 2)


def test_bunched_ticks_show_in_the_velocity_by_stamps_only():
    positions = np.zeros((10, 7))
    positions[:, 0] = 0.01 * np.arange(10)                  # 0.5 rad/s per nominal tick
    commands = commands_along(positions)
    commands[5] = JointCommand(commands[5].recv_sim_s, commands[4].stamp_s + 0.004, NAMES, commands[5].positions)
    seams = seam_section(commands, [], LIMITS, DT)
    assert seams["velocity_limit_ratio_max"] == pytest.approx(0.5 / 3.0)
    assert seams["velocity_limit_ratio_max_by_stamps"] == pytest.approx(0.01 / 0.004 / 3.0)


def test_safety_section_collects_nonzero_counters_of_every_node_and_rejected_commands():
    safety = build_report(synthetic_run())["safety"]
    assert safety["by_node"]["actor_left"] == {"joint_reading.rejected:outside_limits": 1,
                                               "safety.stale_input:cam_high": 4}
    assert safety["by_node"]["planner"] == {"count.stale_input": 3}
    assert safety["by_node"]["sim_mujoco"] == {"rejected:/left_arm_controller/joint_trajectory": 2}
    assert safety["actor_safety_events"] == {"left": {"stale_input:cam_high": 4}}
    assert safety["actor_safety_event_total"] == 4


def test_safety_section_counts_collision_guard_stops_per_arm():
    data = synthetic_run()
    data.diagnostics.append(DiagnosticRecord(13.0, "actor_right", "actor", 0, "ok",
                                             {"collision_guard.checks": "500", "collision_guard.blocked.arm_arm": "3",
                                              "collision_guard.blocked.table": "0"}))
    safety = build_report(data)["safety"]
    assert safety["by_node"]["actor_right"] == {"collision_guard.blocked.arm_arm": 3}
    assert safety["actor_collision_guard_stops"]["right"] == {"arm_arm": 3}
    assert safety["actor_collision_guard_stop_total"] == 3


def test_simulator_section_uses_the_last_status_of_the_episode():
    sim = build_report(synthetic_run())["simulator"]
    assert sim["task_success"] is False and sim["criteria"] == {"poured": False} and sim["received"] == 2


def test_checks_pass_for_the_normal_path_and_fail_without_chunks_or_with_a_dead_node():
    report = build_report(synthetic_run())
    assert report["checks"]["normal_path_ok"], report["checks"]
    data = synthetic_run()
    data.chunks["left"] = []
    assert not build_report(data)["checks"]["chunks_decoded"]
    data = synthetic_run()
    data.nodes.append(NodeRun("validator", 1, True))
    checks = build_report(data)["checks"]
    assert not checks["all_nodes_ran"] and not checks["normal_path_ok"]
    data = synthetic_run()
    data.commands["left"][3] = JointCommand(10.06, 10.06, NAMES, (math.inf,) + (0.0,) * 6)
    checks = build_report(data)["checks"]
    assert not checks["no_non_finite_commands"] and not checks["commands_within_limits"]


def test_messages_outside_the_episode_are_not_counted_for_rates():
    data = synthetic_run()
    data.commands["left"].insert(0, JointCommand(5.0, 5.0, NAMES, (0.0,) * 7))  # before the start
    assert build_report(data)["control"]["left"]["commands"] == 200


def test_empty_run_gives_a_report_with_none_values_and_failed_checks():
    data = RunData(task="t", actor_arms=("left",), task_arms=("left",), joint_limits={"left": LIMITS})
    report = build_report(data)
    json.dumps(report, allow_nan=False)
    assert report["run"]["episode_sim_s"] is None and report["control"]["left"]["rate_hz_sim"] is None
    assert not report["checks"]["normal_path_ok"]
    assert report["simulator"]["task_success"] is None
    assert len(summary_lines(report)) >= 4


def test_summary_mentions_the_essentials():
    text = "\n".join(summary_lines(build_report(synthetic_run())))
    for fragment in ("pour_water_single", "2 advances", "actor_left: 8 chunks", "planner: model 42.0/95.0",
                     "actor_left safety events: {'stale_input:cam_high': 4}", "other counted events",
                     "normal path ok: True"):
        assert fragment in text


# ----------------------------------------------------------------------------- ros2_msgdef

DEFINITIONS = {
    "pkg/Outer": "# comment\nstd_msgs/Header header\nInner[] items  # same package\nuint8 KIND_A=1\n"
                 "string<=10 label\nfloat64[3] xyz\nHeader second\n",
    "pkg/Inner": "builtin_interfaces/Time when\nint32 value 5\n",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec\n",
}


def test_referenced_types_resolve_packages_and_skip_primitives_and_constants():
    assert ros2_msgdef.referenced_types("pkg", DEFINITIONS["pkg/Outer"]) == ["std_msgs/Header", "pkg/Inner"]
    with pytest.raises(ros2_msgdef.MessageDefinitionError, match="no field name"):
        ros2_msgdef.referenced_types("pkg", "float64\n")


def test_concatenated_definition_lists_each_dependency_once_depth_first():
    text = ros2_msgdef.concatenated_definition("pkg/msg/Outer", DEFINITIONS.__getitem__)
    sections = text.split(ros2_msgdef.SEPARATOR + "\n")
    assert sections[0].startswith("# comment")
    assert [s.splitlines()[0] for s in sections[1:]] == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time",
                                                         "MSG: pkg/Inner"]


def test_concatenated_definition_names_a_missing_type():
    with pytest.raises(ros2_msgdef.MessageDefinitionError, match="pkg/Inner"):
        ros2_msgdef.concatenated_definition("pkg/Outer", {k: v for k, v in DEFINITIONS.items()
                                                          if k != "pkg/Inner"}.__getitem__)


@pytest.mark.parametrize("bad", ["Image", "sensor_msgs/srv/Image/x", "", "1pkg/Type"])
def test_type_names_are_checked(bad):
    with pytest.raises(ros2_msgdef.MessageDefinitionError):
        ros2_msgdef.short_type_name(bad)
    assert ros2_msgdef.full_type_name("sensor_msgs/Image") == "sensor_msgs/msg/Image"


# ----------------------------------------------------------------------------- verdict (issue 10)

from sim2real_vla_ros.tools import run_report  # noqa: E402
from sim2real_vla_ros.tools.run_report import RATE_TOLERANCE, rate_check, report_json, verdict  # noqa: E402

ACCELERATION = (8.0,) * 6 + (0.5,)  # the safety filter's defaults, used when the table has none


def run_with_joint1(positions_joint1, stamps=None) -> RunData:
    """The synthetic run with joint 1's sent commands replaced (one value per tick)."""
    data = synthetic_run()
    positions = np.zeros((len(positions_joint1), 7))
    positions[:, 0] = positions_joint1
    commands = commands_along(positions)
    if stamps is not None:
        commands = [JointCommand(s + 0.001, s, NAMES, c.positions) for c, s in zip(commands, stamps)]
    data.commands["left"] = commands
    return data


def ramp_to_speed(speed, ticks=60, hold=20):
    """Accelerate at the limit to ``speed`` (rad/s), then cruise: within every limit."""
    velocity = np.minimum(np.arange(ticks) * ACCELERATION[0] * DT, speed)
    return np.concatenate([np.zeros(hold), np.cumsum(velocity) * DT])


@pytest.mark.parametrize("factor, ok", [(1.0, True), (1.0 + RATE_TOLERANCE / 2, True),
                                        (1.0 + 2 * RATE_TOLERANCE, False), (9.07, False)])
def test_velocity_verdict_on_both_sides_of_the_limit(factor, ok):
    # Joint 1 steps at factor x its 3 rad/s limit for three ticks (its acceleration is checked, and
    # failed, too: this test is about the velocity check).
    positions = np.concatenate([np.zeros(3), np.arange(1, 4) * 3.0 * factor * DT])
    report = build_report(run_with_joint1(positions))
    rates = report["control"]["left"]["rates"]
    assert rates["velocity_ratio_max"] == pytest.approx(factor)
    assert report["checks"]["commands_within_velocity_limit"] is ok
    if not ok:
        assert report["verdict"]["exit_code"] == 3
        reason = report["checks"]["failed"]["commands_within_velocity_limit"]
        assert "left_joint1" in reason and f"{factor:.2f}x" in reason
        assert any(r.startswith("commands_within_velocity_limit") for r in report["verdict"]["reasons"])
    json.loads(report_json(report))


@pytest.mark.parametrize("factor, ok", [(1.0, True), (1.0 + RATE_TOLERANCE / 2, True), (1.0 + 2 * RATE_TOLERANCE, False)])
def test_acceleration_verdict_on_both_sides_of_the_limit(factor, ok):
    # From rest, one tick at factor x the acceleration limit, then cruise at that speed.
    step = ACCELERATION[0] * factor * DT * DT
    positions = np.concatenate([np.zeros(5), step * np.arange(1, 6)])
    report = build_report(run_with_joint1(positions))
    rates = report["control"]["left"]["rates"]
    assert rates["acceleration_ratio_max"] == pytest.approx(factor)
    assert rates["acceleration_limit_source"] == "safety filter default max_acceleration"
    assert report["checks"]["commands_within_acceleration_limit"] is ok
    assert report["verdict"]["exit_code"] == (0 if ok else 3)


def test_an_estop_freeze_is_the_one_exempt_acceleration_and_a_jump_back_is_not():
    moving = ramp_to_speed(2.0)
    frozen = np.concatenate([moving, np.repeat(moving[-1], 10)])      # stops dead: the e-stop freeze
    rates = build_report(run_with_joint1(frozen))["control"]["left"]["rates"]
    assert rates["within_acceleration_limit"] and rates["stop_freezes"] == 1
    jumped = np.concatenate([moving, moving[-1] - 0.001 * np.arange(1, 11)])  # reverses: not a freeze
    report = build_report(run_with_joint1(jumped))
    assert not report["checks"]["commands_within_acceleration_limit"] and report["verdict"]["exit_code"] == 3


def test_configured_acceleration_limits_are_used_and_gaps_are_not_acceleration():
    limits = JointLimitTable(NAMES, LIMITS.lower, LIMITS.upper, LIMITS.velocity, (100.0,) * 7)
    positions = np.zeros((6, 7))
    positions[3:, 0] = 0.02 * np.arange(1, 4)  # 50 rad/s^2: within 100
    rates = rate_check(commands_along(positions), limits, DT)
    assert rates["within_acceleration_limit"] and rates["acceleration_limit_source"] == "actor max_acceleration"
    # A command the recorder missed: one double step over two ticks is neither too fast nor an acceleration.
    stamps = 10.0 + DT * np.array([0, 1, 2, 4, 5, 6])
    positions = np.zeros((6, 7))
    positions[:, 0] = [0.0, 0.01, 0.02, 0.04, 0.05, 0.06]
    commands = [JointCommand(s, s, NAMES, tuple(row)) for s, row in zip(stamps, positions)]
    rates = rate_check(commands, LIMITS, DT)
    assert rates["within_velocity_limit"] and rates["velocity_ratio_max"] == pytest.approx(0.5 / 3.0)
    assert rates["acceleration_skipped_gaps"] == 2 and rates["within_acceleration_limit"]


def test_a_position_violation_or_nan_is_unsafe_and_a_dead_node_is_an_infrastructure_failure():
    data = synthetic_run()
    data.commands["left"][3] = JointCommand(10.06, 10.06, NAMES, (2.5,) + (0.0,) * 6)
    report = build_report(data)
    assert report["verdict"]["exit_code"] == 3
    assert "outside the position limits" in report["checks"]["failed"]["commands_within_limits"]
    data = synthetic_run()
    data.nodes.append(NodeRun("validator", -11, True, "logs/validator.log"))
    report = build_report(data)
    assert report["verdict"]["exit_code"] == 1
    assert "node validator died during the run (exit code -11" in " ".join(report["verdict"]["reasons"])
    data = synthetic_run()
    data.chunks["left"] = []
    assert build_report(data)["verdict"] == {"exit_code": 2, "outcome": "COMPLETED, but the normal path was not shown",
                                             "reasons": ["normal path not shown: chunks_decoded (not shown)"]}
    assert build_report(synthetic_run())["verdict"] == {"exit_code": 0, "outcome": "OK", "reasons": []}


@pytest.mark.parametrize("rate", [0.0, float("nan"), -50.0, None])
def test_an_unusable_control_rate_still_gives_a_complete_report_and_fails(rate):
    data = synthetic_run()
    data.control_rate_hz = rate
    report = build_report(data)
    text = report_json(report)
    assert json.loads(text)["schema"] == run_report.REPORT_SCHEMA
    control = report["control"]["left"]
    assert control["commands"] == 200 and control["limits"]["within_limits"]  # what is known is still there
    assert "error" in control["rates"] and "control_rate_hz" in control["rates"]["error"]
    assert report["checks"]["checks_computed"] is False
    assert report["verdict"]["exit_code"] == 1
    assert "could not compute" in report["checks"]["failed"]["checks_computed"]
    assert any("verdict" in line for line in summary_lines(report))


def test_a_crash_in_report_building_is_recorded_and_fails_the_run(monkeypatch):
    def broken(data):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_report, "control_section", broken)
    report = build_report(synthetic_run())
    assert report["errors"] == {"control": "RuntimeError: boom"} and report["control"] is None
    assert report["validator"]["decisions"] == 17  # the other sections are there
    assert report["checks"]["checks_computed"] is False and report["verdict"]["exit_code"] == 1
    json.loads(report_json(report))
    assert any(line.startswith("verdict: FAILED (exit 1)") for line in summary_lines(report))

    monkeypatch.setattr(run_report, "checks_section", broken)
    report = build_report(synthetic_run())
    assert report["checks"]["normal_path_ok"] is False and report["verdict"]["exit_code"] == 1


def test_report_json_is_always_valid_and_the_verdict_of_a_partial_report_fails(tmp_path):
    data = synthetic_run()
    data.settings = {"real_time_factor_setting": float("nan"), "odd": object(), "array": np.array([1.0, np.inf])}
    data.outputs = {"overlay": {"fps": float("inf")}}
    report = build_report(data)
    path = tmp_path / "report.json"
    run_report.write_report(str(path), report)
    loaded = json.loads(path.read_text())
    assert loaded["run"]["real_time_factor_setting"] is None and loaded["run"]["array"] == [1.0, None]
    assert loaded["outputs"]["overlay"]["fps"] is None
    assert verdict({})["exit_code"] == 1 and "checks missing" in verdict({})["reasons"][0]
    assert verdict({"run": {}, "checks": "garbage"})["exit_code"] == 1


def test_the_dry_run_exit_status_is_the_verdict(monkeypatch, capsys):
    from sim2real_vla_ros.tools import dry_run

    report = build_report(run_with_joint1(np.concatenate([np.zeros(3), np.arange(1, 4) * 9.07 * 3.0 * DT])))
    assert dry_run.exit_code(report) == 3
    assert dry_run.exit_code(build_report(synthetic_run())) == 0
    report = build_report(synthetic_run())
    report["run"]["failure"] = "node planner exited with 1 during the run"
    assert dry_run.exit_code(report) == 1
