"""sim_mujoco: the MuJoCo dry-run simulator of the CobotMagic as a ROS 2 node.

It exposes what ros2_control and the cameras expose on the real robot, so the rest of the
stack cannot tell the difference, plus privileged task scoring. The simulator owns time:
it publishes ``/clock`` and every other node runs with ``use_sim_time:=true``; all stamps
below are simulated time (starting at 0, monotonic across resets). This node's own stamps
come from the simulation whether or not it is started with use_sim_time (a launch file may
set it for every node). The physics runs in its own thread; the executor thread serves
subscriptions and the reset service (both guarded by one lock). Parameters: ``PARAMETERS``
below (the README's table is generated from it), all read-only and checked at start-up (a bad
value stops the node with one message).

Publishes
---------
Names below are as resolved in the root namespace (all but /clock are relative, so the
node can be pushed into a namespace).

/clock                       rosgraph_msgs/Clock          ``clock_rate_hz`` (sim time)
/joint_states                sensor_msgs/JointState       16 joints (robot.ALL_JOINT_NAMES),
                                                          position/velocity/effort, ``joint_state_rate_hz``
/<camera>/image_raw          sensor_msgs/Image            rgb8, frame ``<camera>_optical_frame``,
/<camera>/camera_info        sensor_msgs/CameraInfo       sensor-data QoS, ``<camera>.rate_hz``;
                                                          camera in cam_high, cam_left_wrist, cam_right_wrist
/sim/task_status             std_msgs/String (JSON)       latched (transient local, depth 1),
                                                          ``status_rate_hz`` and after every reset:
                                                          task, episode, seed, success, criteria,
                                                          object poses, command counters
/puppet/joint_left|right     sensor_msgs/JointState       only with ``command_interface:=vendor``:
                                                          joint0..joint6, position[6] = gripper width (m)

Subscribes
----------
/left_arm_controller/joint_trajectory,    trajectory_msgs/JointTrajectory  (``command_interface:=ros2_control``)
/right_arm_controller/joint_trajectory    joint_trajectory_controller semantics (sim.trajectory);
                                          a rejected message is logged with its reason and counted
/left_arm_position_controller/commands,   std_msgs/Float64MultiArray  (``command_interface:=ros2_control``)
/right_arm_position_controller/commands   forward_command_controller semantics: 7 positions
                                          (joints 1-7 in order) become the position command at
                                          once, no interpolation; clipped into the joint limits
                                          (counted), wrong length / NaN rejected and counted.
                                          On the robot only one of an arm's two controllers is
                                          active (controllers.yaml); here both listen and the
                                          newest command wins: a forward command replaces a
                                          trajectory in progress, a trajectory starts from the
                                          last forward command.
/master/joint_left|right                  sensor_msgs/JointState  (``command_interface:=vendor``),
                                          7 positions (joint0..joint6, gripper width m), approached
                                          at the joint velocity limits

Services
--------
/sim/reset                   std_srvs/Trigger             next seed, resample the scene, arms to the
                                                          task's initial configuration
"""
from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, List

import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core import robot

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.trajectory import REPLACEMENTS, TrajectoryPoint
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor, vendor_to_arm
from sim2real_vla_ros.nodes.common import (COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, Param, declare_parameters,
                                           json_message, numpy_to_image, run_node, seconds_to_stamp,
                                           stamp_to_seconds)
from sim2real_vla_ros.sim.controllers import DirectArmController, TrajectoryArmController
from sim2real_vla_ros.sim.simulator import RESET_ARMS, Simulator

COMMAND_INTERFACES = ("ros2_control", "vendor")
MIN_PHYSICS_RATE_HZ = 500.0
# Wall time the loop may fall behind a real-time schedule before it stops trying to catch up
# (catching up would run a burst of physics faster than real time).
MAX_LAG_S = 0.25
# Longest simulated chunk between releases of the lock, so command callbacks get in quickly.
MAX_CHUNK_S = 0.01
# A trajectory starting this far in the future is executed as JTC would, but it almost always
# means the sender stamps with wall time instead of /clock (use_sim_time not set): say so.
FUTURE_START_WARNING_S = 10.0
# Images are published one per loop iteration and at least this far apart in wall time.
# Fast DDS hands same-host samples over a 512 kB shared-memory segment per participant: three
# 230 kB images published back to back overflow it and the first one is lost for a slow
# reader (measured here: 10-50 % of cam_high frames lost under load, none after spacing them).
# The stamps stay those of the render, so the three cameras remain synchronised in sim time.
IMAGE_SPACING_S = 0.003
MAX_IMAGE_SIZE = (1920, 1080)


def _rate(name: str, default: float, description: str, minimum: float = 0.0, inclusive: bool = False) -> Param:
    """A float parameter with a lower bound (an integer value is accepted too)."""
    relation = ">=" if inclusive else ">"
    check = (lambda v: math.isfinite(v) and v >= minimum) if inclusive else (lambda v: math.isfinite(v) and v > minimum)
    return Param(name, default, description, check, f"a finite number {relation} {minimum:g}")


def _choice(name: str, default: str, description: str, choices) -> Param:
    return Param(name, default, description, lambda v: v in choices, f"one of {list(choices)}")


PARAMETERS = (
    Param("task", "", "Task name in config/tasks.yaml; '' = its default_task"),
    Param("seed", -1, "Seed of the first episode; -1 = the task's seed (tasks.yaml)", lambda v: v >= -1,
          "an integer >= 0, or -1 for the task's seed"),
    _rate("physics_rate_hz", 500.0, "Physics steps per simulated second", MIN_PHYSICS_RATE_HZ, inclusive=True),
    _rate("real_time_factor", 1.0, "Simulated seconds per wall second; 0 = as fast as possible", inclusive=True),
    _rate("clock_rate_hz", 200.0, "/clock publishing rate (sim time)"),
    _rate("joint_state_rate_hz", 100.0, "/joint_states (and /puppet/*) rate (sim time)"),
    _rate("status_rate_hz", 2.0, "/sim/task_status rate (sim time)"),
    Param("camera_width", 320, "Image width of every camera (px)", lambda v: 0 < v <= MAX_IMAGE_SIZE[0],
          f"an integer in [1, {MAX_IMAGE_SIZE[0]}]"),
    Param("camera_height", 240, "Image height of every camera (px)", lambda v: 0 < v <= MAX_IMAGE_SIZE[1],
          f"an integer in [1, {MAX_IMAGE_SIZE[1]}]"),
    _rate("camera_rate_hz", 10.0, "Image rate of every camera (sim time)"),
    *(_rate(f"{camera}.rate_hz", 0.0, f"Image rate of {camera} (sim time); 0 = camera_rate_hz", inclusive=True)
      for camera in robot.CAMERAS),
    Param("enable_cameras", True, "Publish camera images (false: physics-only runs)"),
    Param("shadows", False, "Render shadows (several times slower on a CPU)"),
    Param("render_multisamples", 0, "Anti-aliasing samples per pixel; 0 = off (about 3x faster on a CPU)",
          lambda v: 0 <= v <= 16, "an integer in [0, 16]"),
    Param("jitter", True, "Apply the task's initial end-effector jitter (tasks.yaml jitter_m)"),
    Param("reset_arms", "task_start", "Where a reset puts the arms: task_start (the task's start pose, a teleport) or "
          "keep (the first episode at the rest pose, later resets leave them where they are: go_to_start homes "
          "them through the command path)", lambda v: v in RESET_ARMS, f"one of {list(RESET_ARMS)}"),
    _choice("command_interface", "ros2_control", "ros2_control (trajectory and position-command topics) or vendor "
            "(/master/joint_<arm> commands, /puppet/joint_<arm> state)", COMMAND_INTERFACES),
    _choice("interpolation", "linear", "Trajectory interpolation between points: linear or cubic",
            ("linear", "cubic")),
    _choice("trajectory_replacement", "replace", "What a new trajectory does to the current one: replace "
            "(joint_trajectory_controller as released) or splice (ros2_controllers master only); see "
            "sim.trajectory", REPLACEMENTS),
    Param("interpolate_from_desired_state", True, "A new trajectory starts from the desired state (as "
          "config/controllers.yaml sets the real controller) instead of the measured one"),
    Param("follow_joint_states", False, "Hardware-in-the-loop: the arms follow /joint_states of a driver "
          "(piper_driver with emulated arms) instead of taking commands; no /joint_states published"),
)


class SimConfigError(ValueError):
    """A parameter value the simulator cannot run with; the message names the parameter."""


@dataclass
class _Periodic:
    """A sim-time schedule: ``action(t)`` at t = 0, period, 2 period, ..."""

    period: float
    action: Callable[[float], None]
    next_time: float = 0.0

    def due(self, now: float, tolerance: float) -> bool:
        return now >= self.next_time - tolerance

    def advance(self, now: float, tolerance: float) -> None:
        while self.next_time <= now + tolerance:
            self.next_time += self.period


def sim_settings(values: dict) -> SimpleNamespace:
    """The simulator's settings from its declared parameter values, checked together.

    Shared by the node and the in-process runner (which has the values without a parameter
    server), so both read the same defaults the same way.

    Raises
    ------
    SimConfigError
        An unknown task, or a publication rate above the physics rate.
    """
    task = values["task"] or tasks.default_task_name()
    try:
        tasks.get_task(task)
    except tasks.UnknownTaskError as exc:
        raise SimConfigError(f"parameter 'task' = {task!r}: {exc}") from None
    settings = SimpleNamespace(
        task_name=task, seed_param=None if values["seed"] == -1 else values["seed"],
        physics_rate_hz=values["physics_rate_hz"], real_time_factor=values["real_time_factor"],
        clock_rate_hz=values["clock_rate_hz"], joint_state_rate_hz=values["joint_state_rate_hz"],
        status_rate_hz=values["status_rate_hz"], camera_width=values["camera_width"],
        camera_height=values["camera_height"],
        camera_rates={camera: values[f"{camera}.rate_hz"] or values["camera_rate_hz"] for camera in robot.CAMERAS},
        enable_cameras=values["enable_cameras"], shadows=values["shadows"],
        multisamples=values["render_multisamples"], jitter=values["jitter"],
        command_interface=values["command_interface"], interpolation=values["interpolation"],
        trajectory_replacement=values["trajectory_replacement"],
        interpolate_from_desired_state=values["interpolate_from_desired_state"],
        follow_joint_states=values["follow_joint_states"], reset_arms=values["reset_arms"])
    rates = {"clock_rate_hz": settings.clock_rate_hz, "joint_state_rate_hz": settings.joint_state_rate_hz,
             "status_rate_hz": settings.status_rate_hz}
    rates.update({f"{camera}.rate_hz": rate for camera, rate in settings.camera_rates.items()})
    for name, rate in rates.items():  # nothing can be published more often than physics steps
        if rate > settings.physics_rate_hz:
            raise SimConfigError(f"parameter '{name}' = {rate:g}: must not exceed physics_rate_hz "
                                 f"({settings.physics_rate_hz:g})")
    return settings


class SimNode(Node):
    """The MuJoCo simulator node (see the module docstring for its interface)."""

    def __init__(self) -> None:
        super().__init__("sim_mujoco")
        self._read_parameters()
        self.sim = Simulator(self.task_name, seed=self.seed_param, camera_width=self.camera_width,
                             camera_height=self.camera_height, timestep=1.0 / self.physics_rate_hz,
                             shadows=self.shadows, jitter=self.jitter, multisamples=self.multisamples,
                             reset_arms=self.reset_arms)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failed = False
        # Event counters, written by the executor thread and read by the physics thread.
        self.counters: Counter = Counter()
        self._counter_lock = threading.Lock()
        self._make_controllers()
        self._make_interfaces()
        self._camera_infos = self._build_camera_infos()
        self._measured_rtf = float("nan")
        self._pending: List = []  # (publisher, message) queued inside the lock, published after it
        self._image_outbox: "OrderedDict[str, tuple]" = OrderedDict()  # camera -> (image, camera_info)
        self._last_image_wall = 0.0
        self._thread = threading.Thread(target=self._run, name="mujoco_physics", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"task {self.task_name!r} episode 1 (seed {self.sim.seed}); physics {self.physics_rate_hz:g} Hz, "
            f"real_time_factor {self.real_time_factor:g}, command_interface {self.command_interface}, "
            f"cameras {list(self.camera_rates) if self.enable_cameras else 'off'}")

    # ------------------------------------------------------------- parameters
    def _read_parameters(self) -> None:
        vars(self).update(vars(sim_settings(declare_parameters(self, PARAMETERS))))

    # --------------------------------------------------------------- interfaces
    def _make_controllers(self) -> None:
        if self.follow_joint_states:  # approach the driver's measured positions at the URDF velocity limits
            self.controllers = {side: DirectArmController(side) for side in robot.ARMS}
        elif self.command_interface == "ros2_control":
            self.controllers = {side: TrajectoryArmController(side, self.interpolation, self.trajectory_replacement,
                                                              self.interpolate_from_desired_state)
                                for side in robot.ARMS}
        else:
            self.controllers = {side: DirectArmController(side) for side in robot.ARMS}
        self._hold_initial_pose()

    def _hold_initial_pose(self) -> None:
        for side, controller in self.controllers.items():
            controller.hold(self.sim.initial_arms[side], self.sim.sim_time)

    def _make_interfaces(self) -> None:
        self.clock_pub = self.create_publisher(Clock, vocab.CLOCK, COMMAND_QOS)
        self.joint_state_pub = self.create_publisher(JointState, vocab.JOINT_STATES, COMMAND_QOS)
        self.status_pub = self.create_publisher(String, vocab.SIM_TASK_STATUS, LATCHED_QOS)
        self.image_pubs, self.info_pubs = {}, {}
        if self.enable_cameras:
            for camera in robot.CAMERAS:
                self.image_pubs[camera] = self.create_publisher(Image, vocab.camera_image_topic(camera), SENSOR_QOS)
                self.info_pubs[camera] = self.create_publisher(CameraInfo, vocab.camera_info_topic(camera), SENSOR_QOS)
        self.puppet_pubs = {}
        if self.follow_joint_states:
            self.create_subscription(JointState, vocab.JOINT_STATES, self._on_driver_joint_states, COMMAND_QOS)
        for side in robot.ARMS:
            if self.follow_joint_states:
                continue
            if self.command_interface == "ros2_control":
                topic = self.resolve_topic_name(f"{side}_arm_controller/joint_trajectory")
                self.create_subscription(JointTrajectory, topic,
                                         lambda msg, s=side, t=topic: self._on_trajectory(s, t, msg), COMMAND_QOS)
                topic = self.resolve_topic_name(f"{side}_arm_position_controller/commands")
                self.create_subscription(Float64MultiArray, topic,
                                         lambda msg, s=side, t=topic: self._on_forward_command(s, t, msg),
                                         COMMAND_QOS)
            else:
                topic = self.resolve_topic_name(vocab.vendor_command_topic(side))
                self.create_subscription(JointState, topic,
                                         lambda msg, s=side, t=topic: self._on_vendor_command(s, t, msg), COMMAND_QOS)
                self.puppet_pubs[side] = self.create_publisher(JointState, vocab.vendor_state_topic(side), COMMAND_QOS)
        self.create_service(Trigger, vocab.SIM_RESET_SERVICE, self._on_reset)

    def _build_camera_infos(self) -> Dict[str, CameraInfo]:
        infos = {}
        for camera, k in self.sim.camera_intrinsics().items():
            info = CameraInfo()
            info.header.frame_id = f"{camera}_optical_frame"
            info.width, info.height = self.camera_width, self.camera_height
            info.distortion_model = "plumb_bob"
            info.d = [0.0] * 5
            info.k = k.reshape(-1).tolist()
            info.r = np.eye(3).reshape(-1).tolist()
            info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
            infos[camera] = info
        return infos

    # ---------------------------------------------------------------- callbacks
    def _count(self, key: str) -> None:
        with self._counter_lock:
            self.counters[key] += 1

    def _reject(self, topic: str, reason: str) -> None:
        self._count(f"rejected:{topic}")
        self.get_logger().warning(f"rejected command on {topic}: {reason}")

    def _on_trajectory(self, side: str, topic: str, msg: JointTrajectory) -> None:
        try:
            names = list(msg.joint_names)
            points = [TrajectoryPoint(list(p.positions), p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec,
                                      list(p.velocities) or None) for p in msg.points]
            stamp_s = stamp_to_seconds(msg.header.stamp)
        except Exception as exc:  # a callback must never raise: count and log instead
            self._reject(topic, f"malformed message ({type(exc).__name__}: {exc})")
            return
        with self._lock:
            now = self.sim.sim_time
            result = self.controllers[side].accept(names, points, stamp_s, now, self.sim.arm_positions(side))
        if not result.ok:
            self._reject(topic, result.reason)
            return
        self._count(f"accepted:{topic}")
        lead = result.start_time - now
        if lead > FUTURE_START_WARNING_S:
            self.get_logger().warning(
                f"trajectory on {topic} starts {lead:.0f} s in the future (stamp {stamp_s:.3f} s, sim time "
                f"{now:.3f} s): is the sender running with use_sim_time:=true?")

    def _on_forward_command(self, side: str, topic: str, msg: Float64MultiArray) -> None:
        try:
            values = np.asarray(msg.data, dtype=float)
        except Exception as exc:  # a callback must never raise: count and log instead
            self._reject(topic, f"malformed message ({type(exc).__name__}: {exc})")
            return
        with self._lock:
            result = self.controllers[side].forward_command(values, self.sim.sim_time)
        if not result.ok:
            self._reject(topic, f"{result.code}: {result.reason}")
            return
        self._count(f"accepted:{topic}")
        if result.clipped:
            self._count(f"clipped:{topic}")

    def _on_vendor_command(self, side: str, topic: str, msg: JointState) -> None:
        try:
            positions = vendor_to_arm(msg.name, msg.position)
        except ValueError as exc:
            self._reject(topic, str(exc))
            return
        with self._lock:
            try:
                self.controllers[side].set_target(positions, self.sim.sim_time)
            except ValueError as exc:
                self._reject(topic, str(exc))
                return
        self._count(f"accepted:{topic}")

    def _on_driver_joint_states(self, msg: JointState) -> None:
        """follow_joint_states: each arm present in the message becomes that arm's target."""
        positions = dict(zip(msg.name, msg.position))
        with self._lock:
            for side in robot.ARMS:
                names = robot.arm_joint_names(side)
                if all(name in positions for name in names):
                    try:
                        self.controllers[side].set_target([positions[n] for n in names], self.sim.sim_time)
                    except ValueError as exc:
                        self._reject(vocab.JOINT_STATES, str(exc))
                        continue
                    self._count(f"followed:{side}")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            with self._lock:
                poses = self.sim.reset()
                self._hold_initial_pose()
                status = self._status_payload()
            self.status_pub.publish(json_message(status))
            placed = ", ".join(f"{n} ({x:.3f}, {y:.3f}, {math.degrees(yaw):.0f} deg)" for n, (x, y, yaw) in poses.items())
            response.success = True
            response.message = f"episode {self.sim.episode} seed {self.sim.seed}: {placed}"
            self.get_logger().info(f"reset: {response.message}")
        except Exception as exc:  # report the failure to the caller instead of crashing the executor
            response.success = False
            response.message = f"reset failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(response.message)
        return response

    # ----------------------------------------------------------- physics thread
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # the simulation cannot continue: say why and stop the process
            # After Ctrl-C the context goes down before destroy_node() stops this thread; a
            # publish failing then is the normal end, not a simulator failure.
            if not self._stop.is_set() and self.context.ok():
                self.failed = True
                self.get_logger().fatal(f"simulation thread failed: {type(exc).__name__}: {exc}")
                self.context.try_shutdown()
        finally:
            self.sim.close()  # the renderers' OpenGL contexts belong to this thread

    def _schedules(self) -> List[_Periodic]:
        schedules = [
            _Periodic(1.0 / self.clock_rate_hz, self._publish_clock),
            _Periodic(1.0 / self.joint_state_rate_hz, self._publish_joint_states),
            _Periodic(1.0 / self.status_rate_hz, self._publish_status),
        ]
        if self.enable_cameras:
            for camera, rate in self.camera_rates.items():
                schedules.append(_Periodic(1.0 / rate, lambda t, c=camera: self._publish_camera(c, t)))
        start = self.sim.sim_time
        for schedule in schedules:
            schedule.next_time = start
        return schedules

    def _loop(self) -> None:
        dt = self.sim.timestep
        tolerance = 0.5 * dt
        schedules = self._schedules()
        wall_anchor, sim_anchor = time.monotonic(), self.sim.sim_time
        rtf_wall, rtf_sim = wall_anchor, sim_anchor
        first = True
        while not self._stop.is_set():
            self._pending = []
            with self._lock:
                if not first:
                    next_event = min(s.next_time for s in schedules)
                    steps = max(1, math.ceil((next_event - self.sim.sim_time) / dt - 1e-6))
                    steps = min(steps, max(1, int(MAX_CHUNK_S / dt)))
                    self.sim.step(steps, self.controllers)
                first = False
                now = self.sim.sim_time
                for schedule in schedules:
                    if schedule.due(now, tolerance):
                        schedule.action(now)
                        schedule.advance(now, tolerance)
            for publisher, msg in self._pending:
                publisher.publish(msg)
            self._publish_one_image()
            wall = time.monotonic()
            if wall - rtf_wall >= 2.0:
                self._measured_rtf = (now - rtf_sim) / (wall - rtf_wall)
                rtf_wall, rtf_sim = wall, now
            if self.real_time_factor > 0.0:
                target = wall_anchor + (now - sim_anchor) / self.real_time_factor
                if target - wall < -MAX_LAG_S:
                    self._count("real_time_overruns")
                    wall_anchor, sim_anchor = wall, now  # do not burst to catch up
                self._wait_until(target)

    def _wait_until(self, wall_target: float) -> None:
        """Sleep until ``wall_target`` (monotonic), sending queued images meanwhile."""
        while not self._stop.is_set():
            remaining = wall_target - time.monotonic()
            if remaining <= 0.0:
                return
            self._stop.wait(min(remaining, IMAGE_SPACING_S) if self._image_outbox else remaining)
            self._publish_one_image()

    # The publish_* actions run inside the lock and only queue messages; the loop publishes
    # them after releasing it.
    def _publish_clock(self, now: float) -> None:
        self._pending.append((self.clock_pub, Clock(clock=seconds_to_stamp(now))))

    def _publish_status(self, now: float) -> None:
        self._pending.append((self.status_pub, json_message(self._status_payload())))

    def _publish_joint_states(self, now: float) -> None:
        if self.follow_joint_states:
            return  # the driver publishes them
        stamp = seconds_to_stamp(now)
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(robot.ALL_JOINT_NAMES)
        msg.position = self.sim.joint_positions().tolist()
        msg.velocity = self.sim.joint_velocities().tolist()
        msg.effort = self.sim.joint_efforts().tolist()
        self._pending.append((self.joint_state_pub, msg))
        for side, publisher in self.puppet_pubs.items():
            index = [robot.ALL_JOINT_NAMES.index(n) for n in robot.arm_joint_names(side)]
            puppet = JointState()
            puppet.header.stamp = stamp
            puppet.name, puppet.position = urdf_to_vendor(side, self.sim.arm_positions(side))
            _, puppet.velocity = urdf_to_vendor(side, np.asarray(msg.velocity)[index])
            puppet.effort = np.asarray(msg.effort)[index].tolist()
            self._pending.append((publisher, puppet))

    def _publish_camera(self, camera: str, now: float) -> None:
        stamp = seconds_to_stamp(now)
        image = numpy_to_image(self.sim.render(camera), "rgb8", stamp, f"{camera}_optical_frame")
        info = copy.deepcopy(self._camera_infos[camera])
        info.header.stamp = stamp
        if camera in self._image_outbox:  # the previous frame never went out: only the newest counts
            self._count(f"images_superseded:{camera}")
            del self._image_outbox[camera]
        self._image_outbox[camera] = (image, info)

    def _publish_one_image(self) -> None:
        """Publish the oldest queued image and its camera_info (see IMAGE_SPACING_S)."""
        wall = time.monotonic()
        if not self._image_outbox or wall - self._last_image_wall < IMAGE_SPACING_S:
            return
        camera, (image, info) = self._image_outbox.popitem(last=False)
        self.image_pubs[camera].publish(image)
        self.info_pubs[camera].publish(info)
        self._last_image_wall = wall

    def _status_payload(self) -> Dict:
        status = self.sim.task_status()
        status["command_interface"] = self.command_interface
        with self._counter_lock:
            status["counters"] = dict(self.counters)
        status["follow_joint_states"] = self.follow_joint_states
        if self.command_interface == "ros2_control" and not self.follow_joint_states:
            status["rejections_by_reason"] = {
                side: {code.value: n for code, n in controller.rejection_counts.items()}
                for side, controller in self.controllers.items()}
            status["stream_rejections_by_reason"] = {
                side: dict(controller.forward_rejection_counts) for side, controller in self.controllers.items()}
        status["real_time_factor_measured"] = None if math.isnan(self._measured_rtf) else round(self._measured_rtf, 3)
        return status

    def destroy_node(self):
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    """Console script ``sim_mujoco``: exits non-zero on a bad parameter or a simulation failure."""
    sys.exit(run_node(SimNode, exit_code=lambda node: 1 if node.failed else 0))


if __name__ == "__main__":
    main()
