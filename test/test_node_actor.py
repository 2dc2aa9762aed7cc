"""actor node as a real process with the reference bundle: rate and limits, e-stop, stale camera,
fault injection (NaN chunks, undecodable tokens), start-up errors.

The probe's FakeWorld (actor_world.py) stands in for camera_mask, the planner and the arm, so
the actor runs closed loop on wall time (``use_sim_time`` false).
"""
import os

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point32, PolygonStamped
from rcl_interfaces.srv import ListParameters, SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from actor_world import BUNDLE, MODULE, RATE_HZ, TICK_S, VLA_YAML, FakeWorld, start_actor
from ros_harness import NodeProcess, Probe, WallClock, wait_for
from sim2real_vla_ros import graph
from sim2real_vla_ros.core.robot import arm_joint_names, arm_limits
from sim2real_vla_ros.nodes import common

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def probe():
    assert os.path.isfile(os.path.join(BUNDLE, "bundle.yaml")), \
        f"reference bundle missing at {BUNDLE}: run `make setup` (make_reference_bundle)"
    rclpy.init()
    probe = Probe("actor_probe", use_sim_time=False)
    for arm in ("left", "right"):
        probe.subscribe(JointState, f"/vla/actor_{arm}/command", common.COMMAND_QOS)
        probe.subscribe(JointTrajectory, f"/vla/actor_{arm}/chunk", common.COMMAND_QOS)
    probe.subscribe(JointTrajectory, "/left_arm_controller/joint_trajectory", common.COMMAND_QOS)
    probe.subscribe(Float64MultiArray, "/left_arm_position_controller/commands", common.COMMAND_QOS)
    probe.subscribe(JointState, "/master/joint_right", common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    probe.subscribe(Bool, "/vla/estop", common.LATCHED_QOS)
    probe.world = FakeWorld(probe)
    probe.clock = WallClock(probe)
    yield probe
    probe.clock.close()
    probe.world.close()
    probe.shutdown()
    rclpy.shutdown()


def stop(process):
    code = process.stop()
    assert code in (0, -2), f"{process.name} exited with {code}:\n{process.output[-3000:]}"


def diagnostics(probe, node_name):
    """Newest /diagnostics values of a node (dict of strings), or None."""
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == node_name:
                return {kv.key: kv.value for kv in status.values}
    return None


def counter(probe, node_name, key):
    values = diagnostics(probe, node_name) or {}
    return float(values.get(key, 0))


def commands(probe, arm, since_s=-np.inf):
    """(stamps, positions) of the actor's sent commands stamped after ``since_s``."""
    messages = [m for m in probe.received(f"/vla/actor_{arm}/command")
                if common.stamp_to_seconds(m.header.stamp) > since_s]
    stamps = np.array([common.stamp_to_seconds(m.header.stamp) for m in messages])
    positions = np.array([m.position for m in messages]).reshape(-1, 7)
    return stamps, positions


def assert_within_limits(positions, arm, what):
    limits = arm_limits(arm)
    positions = np.asarray(positions, dtype=float).reshape(-1, 7)
    assert np.all(np.isfinite(positions)), f"{what}: non-finite values"
    low = positions < limits.lower - 1e-9
    high = positions > limits.upper + 1e-9
    assert not low.any() and not high.any(), f"{what}: outside the URDF limits at {np.argwhere(low | high)[:5]}"


def wait_moving(probe, arm, process, window=10):
    def moving():
        _, positions = commands(probe, arm)
        return len(positions) >= window and np.ptp(positions[-window:], axis=0).max() > 1e-6
    wait_for(moving, 30.0, f"actor_{arm}'s commands to move", processes=[process])


@pytest.fixture(scope="class")
def actor(probe):
    """actor_left in trajectory mode, driving the echoing fake arm."""
    process = start_actor("left")
    wait_for(lambda: probe.received("/vla/actor_left/chunk"), 60.0, "a first chunk from actor_left",
             processes=[process])
    yield process
    stop(process)


@pytest.fixture(scope="class")
def actors(probe):
    """actor_left (stream) with NaN chunks and actor_right (vendor) with undecodable tokens, every 2nd inference."""
    # Fault injection is a test hook: refused unless use_sim_time (the probe's WallClock feeds /clock).
    left = start_actor("left", output_mode="stream", fault_injection="nan_chunk", fault_injection_period=2,
                       use_sim_time=True)
    right = start_actor("right", output_mode="vendor", fault_injection="undecodable_tokens", fault_injection_period=2,
                        use_sim_time=True)
    yield left, right
    stop(left)
    stop(right)


class TestClosedLoop:
    """One actor_left (trajectory mode) driving the echoing fake arm."""

    def test_commands_are_published_at_the_control_rate_within_joint_limits(self, actor, probe):
        start = probe.world.now()
        wait_for(lambda: commands(probe, "left", start)[0].size and
                 commands(probe, "left", start)[0][-1] - start >= 2.0, 20.0, "2 s of commands", processes=[actor])
        stamps, positions = commands(probe, "left", start)
        rate = (stamps.size - 1) / (stamps[-1] - stamps[0])
        intervals = np.diff(stamps)
        print(f"actor_left: {rate:.2f} Hz, period p50 {np.median(intervals) * 1e3:.1f} ms, "
              f"p99 {np.percentile(intervals, 99) * 1e3:.1f} ms, max {intervals.max() * 1e3:.1f} ms")
        # Wall clock on a shared 2-core machine: the timer period must be right (median); the mean
        # rate only within a margin for ticks the OS delayed (sim-time rates: test_graph_live).
        assert np.median(intervals) == pytest.approx(TICK_S, rel=0.10)
        # The mean wall-clock rate is only meaningful on an idle machine: on a busy 2-core CI box
        # the OS delays whole stretches of ticks (seen: p99 600 ms). Sim-time rates, which are what
        # the controllers see, are asserted in test_graph_live regardless of load.
        load_per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
        if load_per_core < 0.5:
            assert rate == pytest.approx(RATE_HZ, rel=0.35)
        else:
            print(f"mean-rate bound not checked: load {load_per_core:.2f} per core")
        assert_within_limits(positions, "left", "sent commands")
        assert np.ptp(positions[:, :6], axis=0).max() > 1e-3, "the policy did not move the arm"
        limits = arm_limits("left")
        steps = np.abs(np.diff(positions, axis=0))
        assert np.all(steps <= limits.velocity * TICK_S + 1e-9), "a command stepped faster than the URDF velocity"

        trajectories = probe.received("/left_arm_controller/joint_trajectory")
        assert trajectories, "no JointTrajectory on /left_arm_controller/joint_trajectory"
        for message in trajectories[-100:]:
            assert message.joint_names == arm_joint_names("left")
            assert (message.header.stamp.sec, message.header.stamp.nanosec) == (0, 0), "future-stamped goal"
            times = np.array([p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in message.points])
            assert times[0] == pytest.approx(TICK_S) and np.all(np.diff(times) > 0)
            points = np.array([p.positions for p in message.points])
            assert_within_limits(points, "left", "trajectory points")
            if len(points) > 2:  # every trajectory ends at rest: a stalled actor leaves a stopped arm
                np.testing.assert_allclose(points[-1], points[-2], atol=1e-12)

        chunks = probe.received("/vla/actor_left/chunk")
        assert all(len(c.points) == 25 and np.all(np.isfinite([p.positions for p in c.points])) for c in chunks)
        values = diagnostics(probe, "actor_left")
        print("actor_left inference total p50/p99 ms:", values["latency.total.p50_ms"], values["latency.total.p99_ms"],
              "| observation->splice p50 ms:", values["observation_to_splice_p50_ms"],
              "| tick jitter p99 ms:", values["tick.jitter_p99_ms"],
              "| ticks without fresh setpoint:", values["execution.ticks_without_fresh_setpoint"],
              "of", values["execution.ticks"], "| seam max |v| rad/s:", values["seam.max_velocity"])

    def test_every_vla_yaml_parameter_is_declared(self, actor, probe):
        section = graph.load_node_section(VLA_YAML, "actor_left")
        listing = probe.call(ListParameters, "/actor_left/list_parameters", ListParameters.Request(depth=0))
        undeclared = sorted(set(section) - set(listing.result.names))
        assert not undeclared, f"config/vla.yaml actor_left sets undeclared parameters {undeclared}"

    def test_velocity_scale_applies_live_and_other_parameters_are_refused(self, actor, probe):
        name = "/actor_left/set_parameters"

        def set_parameter(parameter, value):
            request = SetParameters.Request(parameters=[Parameter(parameter, value=value).to_parameter_msg()])
            return probe.call(SetParameters, name, request).results[0]

        refused = set_parameter("control_rate_hz", 10.0)
        assert not refused.successful and "read-only" in refused.reason
        assert not set_parameter("velocity_scale", 1.5).successful
        assert set_parameter("velocity_scale", 0.1).successful
        try:
            # The limit ramps down at the acceleration limit (at most ~0.4 s from the URDF velocity).
            start = probe.world.now() + 1.0
            wait_for(lambda: commands(probe, "left", start)[0].size > 50, 20.0, "1 s of commands after the ramp",
                     processes=[actor])
            _, positions = commands(probe, "left", start)
            # The filter bounds each step by the velocity limit over the nominal tick.
            steps = np.abs(np.diff(positions, axis=0))
            slow = 0.1 * arm_limits("left").velocity * TICK_S
            assert np.all(steps <= slow + 1e-9), f"largest steps {steps.max(axis=0)} vs {slow}"
        finally:
            assert set_parameter("velocity_scale", 1.0).successful

    def test_estop_holds_the_command_within_one_tick(self, actor, probe):
        # The e-stop must land while a chunk executes. On a loaded machine the arm can already be
        # holding when it arrives (a stale-input hold after the fake world was descheduled): then
        # the premise is missing, not the hold, so release and try again (at most three times).
        for attempt in range(3):
            moving_before = self._estop_while_moving(actor, probe)
            if moving_before:
                break
            safety = {k: v for k, v in (diagnostics(probe, "actor_left") or {}).items() if k.startswith("safety.")}
            print(f"attempt {attempt + 1}: the arm was already holding when the e-stop arrived ({safety})")
        assert moving_before, "the arm was never moving when the e-stop arrived (3 attempts)"

    @staticmethod
    def _estop_while_moving(actor, probe) -> bool:
        """Engage the e-stop while moving; assert nothing moves after it. Returns whether the arm
        was moving in the 0.5 s before the actor received it."""
        wait_moving(probe, "left", actor)
        requested = probe.world.now()
        probe.world.set_estop(True)
        try:
            def received_at():
                values = diagnostics(probe, "actor_left") or {}
                value = values.get("estop_received_at_s", "none")
                return float(value) if value != "none" and float(value) >= requested else None

            wait_for(received_at, 10.0, "actor_left to report the e-stop", processes=[actor])
            received = received_at()
            wait_for(lambda: commands(probe, "left", received + 0.5)[0].size >= 5, 10.0,
                     "0.5 s of commands after the e-stop", processes=[actor])
            stamps, positions = commands(probe, "left", received - 0.5)
            before = positions[stamps <= received]
            _, after = commands(probe, "left", received + TICK_S)
            assert np.ptp(after, axis=0).max() == 0.0, f"moved after the e-stop ({len(after)} ticks)"
            latency = diagnostics(probe, "actor_left")["estop_hold_latency_ms"]
            print(f"e-stop hold latency {latency} ms (tick {TICK_S * 1e3:.0f} ms)")
            assert float(latency) < 0.5e3, "the e-stop waited behind something (inference?)"
            return len(before) > 1 and np.ptp(before[:, :6], axis=0).max() > 0
        finally:
            probe.world.set_estop(False)
            wait_moving(probe, "left", actor)  # released: a fresh chunk, and the arm moves again

    def test_a_release_alone_never_moves_the_arm_only_a_new_start_does(self, actor, probe):
        wait_moving(probe, "left", actor)
        probe.world.auto_start = False
        try:
            response = probe.call(SetBool, "/actor_left/set_estop", SetBool.Request(data=True), processes=[actor])
            assert response.success
            # The actor republished the engage (latched) for every other node.
            wait_for(lambda: any(m.data for m in probe.received("/vla/estop")), 10.0, "the actor's latched engage")
            wait_for(lambda: (diagnostics(probe, "actor_left") or {}).get("hold_reason") == "estop", 10.0,
                     "hold_reason estop", processes=[actor])
            released = probe.world.now()
            assert probe.call(SetBool, "/actor_left/set_estop", SetBool.Request(data=False), processes=[actor]).success
            wait_for(lambda: (diagnostics(probe, "actor_left") or {}).get("hold_reason") == "awaiting_start", 10.0,
                     "hold_reason awaiting_start after the release", processes=[actor])
            wait_for(lambda: commands(probe, "left", released + 1.5)[0].size >= 10, 20.0,
                     "1.5 s of commands after the release", processes=[actor])
            _, after = commands(probe, "left", released + TICK_S)
            assert np.ptp(after, axis=0).max() == 0.0, "the arm moved after a release without a new start"
        finally:
            probe.world.auto_start = True
        probe.world.start_run()
        wait_moving(probe, "left", actor)

    def test_a_silent_planner_holds_the_arm_within_the_heartbeat_timeout(self, actor, probe):
        wait_moving(probe, "left", actor)
        lost_before = counter(probe, "actor_left", "permit.count.planner_lost")
        probe.world.planner_alive = False
        stopped = probe.world.now()
        try:
            wait_for(lambda: (diagnostics(probe, "actor_left") or {}).get("hold_reason") == "planner_lost", 20.0,
                     "hold_reason planner_lost", processes=[actor])
            assert counter(probe, "actor_left", "permit.count.planner_lost") == lost_before + 1
            _, moving = commands(probe, "left", stopped - 1.0)
            speed = np.abs(np.diff(moving[:, :6], axis=0)).max() / TICK_S
            # 1.5 s timeout (+ the last heartbeat's period, 0.25 s), then a controlled stop at 8 rad/s^2.
            deadline = stopped + 1.5 + 0.25 + speed / 8.0 + 3 * TICK_S
            wait_for(lambda: commands(probe, "left", deadline + 0.5)[0].size >= 5, 20.0, "commands after the deadline",
                     processes=[actor])
            _, after = commands(probe, "left", deadline)
            assert np.ptp(after, axis=0).max() < 1e-9, "still moving after the heartbeat timeout"
        finally:
            probe.world.planner_alive = True
        wait_moving(probe, "left", actor)  # the same planner process is back: its run goes on

    def test_an_affordance_index_that_is_no_chain_index_holds(self, actor, probe):
        wait_moving(probe, "left", actor)
        before = counter(probe, "actor_left", "fault.malformed_affordance")
        message = PolygonStamped()
        message.header.stamp = probe.node.get_clock().now().to_msg()
        message.polygon.points = [Point32(x=100.0, y=100.0, z=float("nan"))] * 3
        probe.world.timers[2].cancel()  # no target switch meanwhile
        try:
            probe.world.affordance_pubs["left"].publish(message)
            wait_for(lambda: counter(probe, "actor_left", "fault.malformed_affordance") > before, 10.0,
                     "malformed_affordance counted", processes=[actor])
            wait_for(lambda: (diagnostics(probe, "actor_left") or {}).get("target_index") == "none", 10.0,
                     "no target", processes=[actor])
        finally:
            probe.world.timers[2].reset()
            probe.world._next_target()
        wait_moving(probe, "left", actor)

    def test_a_silent_camera_makes_the_actor_hold_within_the_staleness_limit(self, actor, probe):
        wait_moving(probe, "left", actor)
        max_age = 0.5  # config/vla.yaml actor_left max_input_age_s.wrist
        probe.world.silenced.add("cam_left_wrist")
        try:
            last_frame = probe.world.last_image_s["cam_left_wrist"]
            wait_for(lambda: counter(probe, "actor_left", "safety.stale_input:wrist") > 0, 10.0,
                     "a stale_input:wrist hold in /diagnostics", processes=[actor])
            _, moving = commands(probe, "left", last_frame - 1.0)
            speed = np.abs(np.diff(moving[:, :6], axis=0)).max() / TICK_S
            # Stale at last_frame + max_age; then it brakes at max_acceleration (8 rad/s^2).
            deadline = last_frame + max_age + speed / 8.0 + 3 * TICK_S
            wait_for(lambda: commands(probe, "left", deadline + 0.5)[0].size >= 5, 10.0, "commands after the deadline",
                     processes=[actor])
            _, held = commands(probe, "left", deadline)
            assert np.ptp(held, axis=0).max() < 1e-12, "commands still change after the staleness limit"
            assert counter(probe, "actor_left", "safety.held_ticks") > 0
        finally:
            probe.world.silenced.discard("cam_left_wrist")
        wait_moving(probe, "left", actor)  # the camera is back: the actor resumes


TIGHT_TRACKING_ERROR = 0.05  # rad: small, so the policy's own motion exceeds it within seconds


@pytest.fixture(scope="class")
def tight_actor(probe):
    """actor_right (trajectory mode) with a small max_tracking_error for the arm joints."""
    process = start_actor("right", max_tracking_error=[TIGHT_TRACKING_ERROR] * 6 + [1.0])
    wait_for(lambda: probe.received("/vla/actor_right/chunk"), 60.0, "a first chunk from actor_right",
             processes=[process])
    yield process
    probe.world.blocked.discard("right")
    stop(process)


class TestBlockedArm:
    """The fake right arm stops following its commands (an obstacle): the actor stops pushing,
    by decelerating from its current command (never a step to the reading)."""

    def test_an_arm_that_stops_following_is_held_by_a_controlled_stop(self, tight_actor, probe):
        wait_moving(probe, "right", tight_actor)
        blocked_at = probe.world.now()
        probe.world.blocked.add("right")
        # Either rule may see it first: the filter's tracking-error hold, or the joint-reading
        # validator refusing a reading that its recent commands cannot explain (not stored, so the
        # stale joint state holds the arm). Both are the same controlled stop.
        wait_for(lambda: counter(probe, "actor_right", "safety.tracking_error") > 0
                 or counter(probe, "actor_right", "joint_reading.rejected:inconsistent_with_command") > 0, 30.0,
                 "a tracking-error hold or a rejected reading in /diagnostics", processes=[tight_actor])
        held_seen = probe.world.now()
        wait_for(lambda: commands(probe, "right", held_seen)[0].size >= 5, 10.0,
                 "commands after the hold", processes=[tight_actor])
        stuck = probe.world.positions["right"].copy()
        _, after = commands(probe, "right", blocked_at + 0.1)  # the arm's last echo may trail the block
        assert_within_limits(after, "right", "commands while blocked")
        # Measured from just before the block: the arm may have been faster then than since.
        _, around = commands(probe, "right", blocked_at - 0.2)
        steps = np.abs(np.diff(around, axis=0))
        # No step beyond the velocity limit: the hold never jumps back to the measured position.
        assert np.all(steps <= arm_limits("right").velocity * TICK_S + 1e-9), "a command jumped"
        speed = steps.max(axis=0, initial=0.0) / TICK_S
        # The rule's allowance (+ velocity x joint-state age 0.1 s), one step and the braking distance
        # at max_acceleration (8 rad/s^2); a tick whose reading is stale (a loaded machine) is not
        # judged but brakes the same way.
        allowance = TIGHT_TRACKING_ERROR + speed[:6] * (0.1 + TICK_S) + speed[:6] ** 2 / (2 * 8.0)
        deviation = np.abs(after[:, :6] - stuck[:6]).max(axis=0)
        print(f"blocked: max deviation {np.round(deviation, 4)} rad, allowance {np.round(allowance, 4)}, "
              f"holds {counter(probe, 'actor_right', 'safety.tracking_error'):.0f}, rejected readings "
              f"{counter(probe, 'actor_right', 'joint_reading.rejected:inconsistent_with_command'):.0f}")
        assert np.all(deviation <= allowance + 1e-9), "the command drifted away from the blocked arm"


class TestFaultInjection:
    """actor_left (stream mode) gets NaN chunks, actor_right (vendor mode) undecodable tokens,
    in every second inference: each bad output is counted and never executed."""

    def test_faulty_model_outputs_are_counted_and_nothing_unsafe_is_published(self, actors, probe):
        left, right = actors
        wait_for(lambda: counter(probe, "actor_left", "executor.dropped:non_finite") >= 3
                 and counter(probe, "actor_left", "executor.accepted") >= 3, 40.0,
                 "actor_left: NaN chunks dropped and clean chunks executed", processes=[left, right])
        wait_for(lambda: counter(probe, "actor_right", "inference.decode_failed/invalid_id") >= 3
                 and counter(probe, "actor_right", "inference.ok") >= 3, 40.0,
                 "actor_right: undecodable token sequences counted and clean ones executed", processes=[left, right])
        # The pipeline counts an outcome before the controller counts the fault (one diagnostics
        # message can fall between the two): wait for the fault counts too.
        wait_for(lambda: counter(probe, "actor_left", "fault.chunk_dropped.non_finite") >= 3
                 and counter(probe, "actor_right", "fault.inference_failure.decode_failed/invalid_id") >= 3, 20.0,
                 "the faults counted", processes=[left, right])
        wait_moving(probe, "left", left)  # execution continues from the valid chunks
        wait_moving(probe, "right", right)

        streamed = [m.data for m in probe.received("/left_arm_position_controller/commands")]
        assert streamed and all(len(values) == 7 for values in streamed)
        assert_within_limits(streamed, "left", "stream commands")
        vendor = probe.received("/master/joint_right")
        assert vendor and all(list(m.name) == [f"joint{i}" for i in range(7)] for m in vendor)
        widths = np.array([m.position for m in vendor])
        finger = np.column_stack([widths[:, :6], widths[:, 6] / 2.0])  # vendor gripper = total width
        assert_within_limits(finger, "right", "vendor commands")
        for arm in ("left", "right"):
            assert_within_limits(commands(probe, arm)[1], arm, f"actor_{arm} commands")
            for chunk in probe.received(f"/vla/actor_{arm}/chunk"):
                assert np.all(np.isfinite([p.positions for p in chunk.points])), "a NaN chunk was published"


def test_fault_injection_is_refused_without_sim_time():
    process = start_actor("left", fault_injection="nan_chunk")
    assert process.wait_exit(60.0) == 1
    fatal = [line for line in process.output.splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1 and "fault_injection" in fatal[0] and "use_sim_time" in fatal[0], process.output[-2000:]


def test_missing_model_file_and_bad_arm_fail_at_startup_with_a_clear_message(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in os.listdir(BUNDLE):
        if name != "actor_decoder.onnx":
            os.symlink(os.path.join(BUNDLE, name), bundle / name)
    missing = NodeProcess(MODULE, "actor_left", params={"arm": "left", "bundle_path": str(bundle)})
    bad_arm = NodeProcess(MODULE, "actor_left", params={"arm": "middle", "bundle_path": BUNDLE})
    assert missing.wait_exit(60.0) == 1, missing.output
    assert "[FATAL] BundleError" in missing.output and "actor_decoder.onnx" in missing.output, missing.output
    assert bad_arm.wait_exit(60.0) == 1, bad_arm.output
    # Checked against the node's PARAMETERS before rclpy.init: one line naming where, the node and the parameter.
    assert "[FATAL] command line -p: node /actor_left: parameter 'arm' = 'middle'" in bad_arm.output, bad_arm.output


def test_a_request_threshold_shorter_than_the_crossfade_is_warned_at_startup():
    process = NodeProcess(MODULE, "actor_left", params={"arm": "left", "bundle_path": BUNDLE, "crossfade_s": 0.4,
                                                        "request_threshold_s": 0.2})
    try:
        wait_for(lambda: "request_threshold_s 0.2 < crossfade_s 0.4" in process.output, 60.0,
                 "actor_left's start-up warning", processes=[process])
    finally:
        stop(process)


def test_a_restarted_actor_comes_up_held_until_a_new_start(probe):
    """An actor (re)started while a task runs does not join it: it holds until the next start."""
    probe.world.auto_start = False
    probe.world.start_run()  # the run that was going on before this actor came up
    process = start_actor("right")
    try:
        wait_for(lambda: (diagnostics(probe, "actor_right") or {}).get("hold_reason") == "awaiting_start", 60.0,
                 "actor_right holding, awaiting a start", processes=[process])
        up = probe.world.now()
        wait_for(lambda: commands(probe, "right", up + 2.0)[0].size >= 10, 30.0, "2 s of actor_right commands",
                 processes=[process])
        _, held = commands(probe, "right", up)
        assert np.ptp(held, axis=0).max() == 0.0, "a restarted actor moved without a new start"
        probe.world.start_run()
        wait_moving(probe, "right", process)
    finally:
        probe.world.auto_start = True
        stop(process)
