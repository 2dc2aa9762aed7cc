"""Closed-loop integration test of the sim_mujoco node with real rclpy over loopback DDS.

The simulator runs as a child process started the way a launch file would start it
(``python -m sim2real_vla_ros.sim.sim_node --ros-args -p ...``); a probe node in this
process (use_sim_time) sends commands and records topics. Every wait has a deadline;
rates and tracking are measured in simulated time (header stamps), never wall time.
"""
import json

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, stamp_to_seconds
from ros_harness import NodeProcess, Probe, wait_for

pytestmark = pytest.mark.integration

MODULE = "sim2real_vla_ros.sim.sim_node"
# Table 5 ranges of the default task (paper), for the reset check.
POUR_RANGES = {"bottle": ((0.67, 0.83), (0.06, 0.22)), "cup": ((0.67, 0.83), (-0.22, -0.06))}
TOLERANCE_RAD = 0.02
STARTUP_TIMEOUT_S = 40.0
CAM_HIGH_RATE_HZ = 5.0


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("sim_node_test_probe")
    probe.subscribe(JointState, "/joint_states", COMMAND_QOS)
    probe.subscribe(String, "/sim/task_status", LATCHED_QOS)
    for camera in robot.CAMERAS:
        probe.subscribe(Image, f"/{camera}/image_raw", SENSOR_QOS)
        probe.subscribe(CameraInfo, f"/{camera}/camera_info", SENSOR_QOS)
    for side in robot.ARMS:
        probe.subscribe(JointState, f"/puppet/joint_{side}", COMMAND_QOS)
    yield probe
    probe.shutdown()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def sim(probe):
    """The simulator in ros2_control mode, default task, cam_high at its own rate."""
    process = NodeProcess(MODULE, "sim_mujoco", {
        "task": "pour_water_single", "real_time_factor": 1.0, "camera_rate_hz": 10.0,
        "cam_high.rate_hz": CAM_HIGH_RATE_HZ, "interpolation": "cubic",
    })
    try:
        wait_for(lambda: probe.received("/joint_states") and probe.received("/sim/task_status"),
                 STARTUP_TIMEOUT_S, "first /joint_states and /sim/task_status", processes=[process])
        yield process
    finally:
        process.stop()


@pytest.fixture
def shared_sim_stopped(sim):
    """Stop the shared simulator (two simulators would both publish /clock and /joint_states)."""
    code = sim.stop()
    assert code == 0, f"sim node did not exit cleanly on SIGINT ({code}):\n{sim.output[-3000:]}"


def _latest_positions(probe):
    msg = probe.received("/joint_states")[-1]
    return dict(zip(msg.name, msg.position)), stamp_to_seconds(msg.header.stamp)


def _latest_status(probe):
    return json.loads(probe.received("/sim/task_status")[-1].data)


def _publisher(probe, msg_type, topic, process):
    publisher = probe.node.create_publisher(msg_type, topic, COMMAND_QOS)
    wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, f"subscriber on {topic}", processes=[process])
    return publisher


def _trajectory(names, positions, seconds):
    msg = JointTrajectory()
    msg.joint_names = list(names)
    point = JointTrajectoryPoint()
    point.positions = [float(v) for v in positions]
    point.time_from_start = Duration(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))
    msg.points = [point]
    return msg  # header.stamp 0: start on receipt


def test_trajectory_on_each_arm_is_tracked_in_sim_time(probe, sim):
    current, _ = _latest_positions(probe)
    delta = np.array([0.3, -0.25, 0.2, 0.4, -0.3, 0.5, -0.015])
    targets, sent_at = {}, {}
    for side in robot.ARMS:
        names = robot.arm_joint_names(side)
        target = robot.arm_limits(side).clip(np.array([current[n] for n in names]) + delta)
        targets[side] = dict(zip(names, target))
        publisher = _publisher(probe, JointTrajectory, f"/{side}_arm_controller/joint_trajectory", sim)
        sent_at[side] = _latest_positions(probe)[1]
        publisher.publish(_trajectory(names, target, 1.0))

    def reached():
        positions, stamp = _latest_positions(probe)
        errors = [abs(positions[n] - v) for t in targets.values() for n, v in t.items()]
        return stamp if max(errors) < TOLERANCE_RAD else None

    reached_at = wait_for(reached, 20.0, "both arms within 0.02 rad of their targets", processes=[sim])
    # The move took the trajectory's 1 s of sim time (not a jump), plus a little settling.
    for side in robot.ARMS:
        assert 0.8 <= reached_at - sent_at[side] <= 2.0, (reached_at, sent_at)
    msg = probe.received("/joint_states")[-1]
    assert list(msg.name) == list(robot.ALL_JOINT_NAMES) and len(msg.velocity) == 16
    positions = dict(zip(msg.name, msg.position))
    for side in robot.ARMS:  # the mimic finger mirrors joint7
        assert positions[f"{side}_joint8"] == pytest.approx(-positions[f"{side}_joint7"], abs=1e-3)


def test_cameras_publish_at_the_configured_rate_in_sim_time(probe, sim):
    for camera in robot.CAMERAS:
        probe.clear(f"/{camera}/image_raw")
    window = 2.5  # s of simulated time
    expected = {"cam_high": CAM_HIGH_RATE_HZ, "cam_left_wrist": 10.0, "cam_right_wrist": 10.0}

    def stamps_of(camera):
        return np.unique([stamp_to_seconds(m.header.stamp) for m in probe.received(f"/{camera}/image_raw")])

    def window_covered():
        # The window, and two consecutive frames of each camera (one period apart) somewhere in it.
        spans = {c: stamps_of(c) for c in expected}
        return all(len(s) > 1 and s[-1] - s[0] >= window and np.any(np.abs(np.diff(s) - 1.0 / expected[c]) < 1e-3)
                   for c, s in spans.items())

    wait_for(window_covered, 30.0, f"{window} s of sim time of images from every camera, two of them consecutive",
             processes=[sim])
    for camera, rate in expected.items():
        stamps = stamps_of(camera)
        # Frames are exactly one period apart in sim time, never closer. Sensor-data QoS is best
        # effort: when this shared 2-core machine is busy the probe (a Python executor taking
        # 230 kB images next to 100 Hz joint states) loses some, and how many depends on the load,
        # so the schedule is checked, not the delivery rate: every gap is a whole number of periods.
        periods = np.diff(stamps) * rate
        assert np.all(np.abs(periods - np.round(periods)) < 1e-3 * rate) and periods.min() > 0.5, (camera, stamps)
        images = probe.received(f"/{camera}/image_raw")
        image = images[-1]
        assert (image.height, image.width, image.encoding) == (240, 320, "rgb8")
        assert image.header.frame_id == f"{camera}_optical_frame"
        pixels = np.frombuffer(bytes(image.data), np.uint8)
        assert pixels.size == 240 * 320 * 3 and pixels.std() > 10.0
        info = probe.received(f"/{camera}/camera_info")[-1]
        k = robot.camera_specs(320, 240)[camera].intrinsics()
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), k)
        assert info.header.frame_id == f"{camera}_optical_frame"


def test_reset_resamples_the_scene_inside_table5_ranges(probe, sim):
    before = _latest_status(probe)
    response = probe.call(Trigger, "/sim/reset", Trigger.Request(), timeout=10.0)
    assert response.success, response.message
    status = wait_for(lambda: _latest_status(probe)["episode"] == before["episode"] + 1 and _latest_status(probe),
                      10.0, "task status of the new episode", processes=[sim])
    assert status["seed"] == before["seed"] + 1
    assert status["task"] == "pour_water_single" and status["success"] is False
    for name, ((x0, x1), (y0, y1)) in POUR_RANGES.items():
        sampled, now = status["sampled"][name], status["objects"][name]
        assert x0 <= sampled["x"] <= x1 and y0 <= sampled["y"] <= y1, (name, sampled)
        assert x0 - 0.005 <= now["x"] <= x1 + 0.005 and y0 - 0.005 <= now["y"] <= y1 + 0.005, (name, now)
    assert status["sampled"] != before["sampled"]

    # The arms went back to the task's start pose (Table 6 within the jitter).
    def at_start():
        positions, _ = _latest_positions(probe)
        return all(abs(positions[f"{side}_joint{i}"] - value) < 0.2
                   for side, init in (("left", (-0.3, 1.0, -1.2, 0.0, 0.6, 0.0)), ("right", (0.3, 1.0, -1.2, 0.0, 0.6, 0.0)))
                   for i, value in enumerate(init, start=1))
    wait_for(at_start, 10.0, "arms at the task's initial configuration", processes=[sim])


def test_malformed_trajectories_are_rejected_and_counted(probe, sim):
    topic = "/left_arm_controller/joint_trajectory"
    publisher = _publisher(probe, JointTrajectory, topic, sim)
    names = robot.arm_joint_names("left")
    before, _ = _latest_positions(probe)
    unknown = _trajectory(names[:-1] + ["left_joint9"], [0.0] * 7, 1.0)
    not_a_number = _trajectory(names, [0.0, 1.0, float("nan"), 0.0, 0.0, 0.0, 0.01], 1.0)
    publisher.publish(unknown)
    publisher.publish(not_a_number)
    key = f"rejected:{topic}"
    wait_for(lambda: _latest_status(probe)["counters"].get(key, 0) >= 2, 10.0, "two counted rejections",
             processes=[sim])
    assert "unknown_joint" in sim.output and "non_finite" in sim.output
    # Still running and still holding the arm where it was.
    stamp = _latest_positions(probe)[1]
    wait_for(lambda: _latest_positions(probe)[1] > stamp + 0.5, 10.0, "joint states keep coming", processes=[sim])
    after, _ = _latest_positions(probe)
    assert max(abs(after[n] - before[n]) for n in names) < 0.01


def test_stream_commands_are_applied_at_once_and_the_newest_command_wins(probe, sim):
    """forward_command_controller semantics on /left_arm_position_controller/commands, next to the JTC topic."""
    topic = "/left_arm_position_controller/commands"
    stream = _publisher(probe, Float64MultiArray, topic, sim)
    trajectory = _publisher(probe, JointTrajectory, "/left_arm_controller/joint_trajectory", sim)
    names = robot.arm_joint_names("left")
    limits = robot.arm_limits("left")
    current, _ = _latest_positions(probe)
    start = np.array([current[n] for n in names])
    delta = np.array([0.2, -0.15, 0.15, 0.3, -0.2, 0.3, -0.01])

    def at(target):
        def reached():
            positions, stamp = _latest_positions(probe)
            error = max(abs(positions[n] - v) for n, v in zip(names, target))
            return stamp if error < TOLERANCE_RAD else None
        return reached

    # One command moves the arm there with no trajectory in between (the PD servo's own
    # response, far faster than the 1 s the same move took as a trajectory above).
    first = limits.clip(start + delta)
    sent_at = _latest_positions(probe)[1]
    stream.publish(Float64MultiArray(data=first.tolist()))
    reached_at = wait_for(at(first), 10.0, "the arm at the streamed position", processes=[sim])
    assert reached_at - sent_at < 0.8, (sent_at, reached_at)

    # A slow trajectory, then a stream command while it runs: the newest command wins.
    slow_goal = limits.clip(start + 2 * delta)
    trajectory.publish(_trajectory(names, slow_goal, 2.0))
    sent_at = _latest_positions(probe)[1]
    wait_for(lambda: _latest_positions(probe)[1] > sent_at + 0.3, 10.0, "0.3 s of the trajectory", processes=[sim])
    stream.publish(Float64MultiArray(data=start.tolist()))
    wait_for(at(start), 10.0, "the arm back at the streamed start position", processes=[sim])
    wait_for(lambda: _latest_positions(probe)[1] > sent_at + 2.5, 10.0, "past the trajectory's end", processes=[sim])
    assert at(start)(), "the replaced trajectory moved the arm after the stream command"

    # The simulated hardware clips into the joint limits (counted); malformed commands are
    # rejected with a counted reason and change nothing.
    wide_open = start.copy()
    wide_open[6] = limits.upper[6] + 0.02
    stream.publish(Float64MultiArray(data=wide_open.tolist()))
    stream.publish(Float64MultiArray(data=start[:6].tolist()))
    stream.publish(Float64MultiArray(data=[float("nan")] + start[1:].tolist()))

    def counted():
        status = _latest_status(probe)
        return status if status["counters"].get(f"rejected:{topic}", 0) >= 2 and \
            status["counters"].get(f"clipped:{topic}", 0) >= 1 else None

    status = wait_for(counted, 10.0, "clipped and rejected stream commands in /sim/task_status", processes=[sim])
    assert status["stream_rejections_by_reason"]["left"] == {"wrong_length": 1, "non_finite": 1}
    assert "wrong_length" in sim.output and "non_finite" in sim.output
    clipped = start.copy()
    clipped[6] = limits.upper[6]
    wait_for(at(clipped), 10.0, "the gripper at its upper limit", processes=[sim])


def test_vendor_interface_commands_and_reports_gripper_width(probe, shared_sim_stopped):
    process = NodeProcess(MODULE, "sim_mujoco_vendor", {
        "task": "pour_water_single", "command_interface": "vendor", "enable_cameras": False,
        "real_time_factor": 2.0,
    })
    try:
        probe.clear("/joint_states")
        wait_for(lambda: probe.received("/puppet/joint_left") and probe.received("/joint_states"), STARTUP_TIMEOUT_S,
                 "/puppet/joint_left and /joint_states", processes=[process])
        state = probe.received("/puppet/joint_left")[-1]
        assert list(state.name) == [f"joint{i}" for i in range(7)]
        assert state.position[6] == pytest.approx(0.07, abs=1e-3)  # open: 2 x 0.035 m
        target = np.array(state.position) + np.array([0.2, -0.2, 0.2, 0.0, 0.2, 0.0, -0.04])
        publisher = _publisher(probe, JointState, "/master/joint_left", process)
        command = JointState(name=[f"joint{i}" for i in range(7)], position=target.tolist())
        publisher.publish(command)

        def reached():
            position = np.array(probe.received("/puppet/joint_left")[-1].position)
            return bool(np.max(np.abs(position - target)) < TOLERANCE_RAD)

        wait_for(reached, 20.0, "/puppet/joint_left at the /master/joint_left target", processes=[process])
        positions, _ = _latest_positions(probe)
        assert positions["left_joint7"] == pytest.approx(target[6] / 2.0, abs=1e-3)  # width -> one finger
        publisher.publish(JointState(position=[0.0] * 6))  # 6 values: rejected, logged, no crash
        wait_for(lambda: "expected 7 positions" in process.output, 10.0, "logged rejection", processes=[process])
    finally:
        assert process.stop() == 0, process.output[-3000:]


@pytest.mark.parametrize("params,message", [
    ({"task": "make_coffee"}, "unknown task 'make_coffee'; valid tasks: pour_water_single"),
    ({"camera_rate_hz": 0}, "parameter 'camera_rate_hz' = 0: must be a finite number > 0"),
    ({"cam_left_wrist.rate_hz": -2.0}, "parameter 'cam_left_wrist.rate_hz' = -2.0"),
    ({"command_interface": "can_bus"}, "must be one of ['ros2_control', 'vendor']"),
])
def test_bad_parameters_stop_the_node_with_a_clear_error(params, message):
    process = NodeProcess(MODULE, "sim_mujoco_bad", params)
    try:
        code = process.wait_exit(timeout=STARTUP_TIMEOUT_S)
    finally:
        process.stop()
    assert code != 0
    assert message in process.output, process.output
    assert "Traceback" not in process.output
