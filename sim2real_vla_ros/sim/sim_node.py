"""sim_mujoco: the MuJoCo dry-run simulator of the CobotMagic as a ROS 2 node.

It exposes what ros2_control and the cameras expose on the real robot, so the rest of the
stack cannot tell the difference, plus privileged task scoring. The simulator owns time:
it publishes ``/clock`` and every other node runs with ``use_sim_time:=true``; all stamps
below are simulated time (starting at 0, monotonic across resets). This node's own stamps
come from the simulation whether or not it is started with use_sim_time (a launch file may
set it for every node). The physics runs in its own thread; the executor thread serves
subscriptions and the reset service (both guarded by one lock).

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
/right_arm_controller/joint_trajectory    joint_trajectory_controller semantics (core.trajectory);
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

Parameters (read-only, checked at start-up; a bad value stops the node with one message)
----------
task (str)                   task name in config/tasks.yaml (default: its default_task)
seed (int)                   first episode's seed; -1 = the task's seed (42)
physics_rate_hz (float)      physics steps per simulated second, >= 500
real_time_factor (float)     simulated seconds per wall second; 0 = as fast as possible
clock_rate_hz (float)        /clock rate in sim time
joint_state_rate_hz (float)  /joint_states (and /puppet/*) rate in sim time
camera_width, camera_height (int)  image size of every camera
camera_rate_hz (float)       default image rate of every camera (sim time)
<camera>.rate_hz (float)     per-camera override, e.g. cam_high.rate_hz
enable_cameras (bool)        false publishes no images (physics-only runs)
shadows (bool)               render shadows (slow on a CPU)
render_multisamples (int)    anti-aliasing samples, 0 = off (fast on a CPU)
status_rate_hz (float)       /sim/task_status rate in sim time
command_interface (str)      ros2_control | vendor
interpolation (str)          linear | cubic (trajectory interpolation)
jitter (bool)                apply the task's +-jitter_m initial end-effector jitter
"""
from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core import robot

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.trajectory import TrajectoryPoint
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor, vendor_to_arm
from sim2real_vla_ros.nodes.common import (COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, json_message,
                                           numpy_to_image, run_node, seconds_to_stamp, stamp_to_seconds)
from sim2real_vla_ros.sim.controllers import DirectArmController, TrajectoryArmController
from sim2real_vla_ros.sim.simulator import Simulator

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


class SimNode(Node):
    """The MuJoCo simulator node (see the module docstring for its interface)."""

    def __init__(self) -> None:
        super().__init__("sim_mujoco")
        self._read_parameters()
        self.sim = Simulator(self.task_name, seed=self.seed_param, camera_width=self.camera_width,
                             camera_height=self.camera_height, timestep=1.0 / self.physics_rate_hz,
                             shadows=self.shadows, jitter=self.jitter, multisamples=self.multisamples)
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
    def _declare(self, name: str, default, description: str, constraints: str = ""):
        descriptor = ParameterDescriptor(description=description, additional_constraints=constraints,
                                         read_only=True, dynamic_typing=isinstance(default, float))
        return self.declare_parameter(name, default, descriptor).value

    def _number(self, name: str, default: float, description: str, minimum: float, inclusive: bool) -> float:
        """A float parameter (an integer value is accepted too) with a lower bound."""
        relation = ">=" if inclusive else ">"
        value = self._declare(name, default, description, f"{relation} {minimum:g}")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= minimum if inclusive else value > minimum)
        if not ok:
            raise SimConfigError(f"parameter '{name}' = {value!r}: must be a finite number {relation} {minimum:g}")
        return float(value)

    def _choice(self, name: str, default: str, description: str, choices) -> str:
        value = self._declare(name, default, description, f"one of {list(choices)}")
        if value not in choices:
            raise SimConfigError(f"parameter '{name}' = {value!r}: must be one of {list(choices)}")
        return value

    def _read_parameters(self) -> None:
        task = self._declare("task", tasks.default_task_name(), "Task name from config/tasks.yaml")
        try:
            tasks.get_task(task)
        except tasks.UnknownTaskError as exc:
            raise SimConfigError(f"parameter 'task' = {task!r}: {exc}") from None
        self.task_name = task
        seed = self._declare("seed", -1, "Seed of the first episode; -1 uses the task's seed (tasks.yaml)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < -1:
            raise SimConfigError(f"parameter 'seed' = {seed!r}: must be an integer >= 0, or -1 for the task's seed")
        self.seed_param: Optional[int] = None if seed == -1 else seed
        self.physics_rate_hz = self._number("physics_rate_hz", 500.0, "Physics steps per simulated second",
                                            MIN_PHYSICS_RATE_HZ, True)
        self.real_time_factor = self._number("real_time_factor", 1.0,
                                             "Simulated seconds per wall second; 0 runs as fast as possible", 0.0, True)
        self.clock_rate_hz = self._number("clock_rate_hz", 200.0, "/clock publishing rate (sim time)", 0.0, False)
        self.joint_state_rate_hz = self._number("joint_state_rate_hz", 100.0,
                                                "/joint_states (and /puppet/*) rate (sim time)", 0.0, False)
        self.status_rate_hz = self._number("status_rate_hz", 2.0, "/sim/task_status rate (sim time)", 0.0, False)
        for name in ("camera_width", "camera_height"):
            value = self._declare(name, 320 if name == "camera_width" else 240, f"Image {name[7:]} of every camera (px)",
                                  "integer > 0")
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SimConfigError(f"parameter '{name}' = {value!r}: must be a positive integer")
            setattr(self, name, value)
        if self.camera_width > 1920 or self.camera_height > 1080:
            raise SimConfigError(f"camera size {self.camera_width}x{self.camera_height}: at most 1920x1080")
        default_rate = self._number("camera_rate_hz", 10.0, "Image rate of every camera (sim time)", 0.0, False)
        self.camera_rates = {
            camera: self._number(f"{camera}.rate_hz", default_rate, f"Image rate of {camera} (overrides camera_rate_hz)",
                                 0.0, False)
            for camera in robot.CAMERAS
        }
        self.enable_cameras = bool(self._declare("enable_cameras", True, "Publish camera images"))
        self.shadows = bool(self._declare("shadows", False, "Render shadows (several times slower on a CPU)"))
        self.multisamples = self._declare("render_multisamples", 0,
                                          "Anti-aliasing samples per pixel; 0 = off (about 3x faster on a CPU)",
                                          "integer in [0, 16]")
        if isinstance(self.multisamples, bool) or not isinstance(self.multisamples, int) or not 0 <= self.multisamples <= 16:
            raise SimConfigError(f"parameter 'render_multisamples' = {self.multisamples!r}: must be an integer in [0, 16]")
        self.jitter = bool(self._declare("jitter", True, "Apply the task's initial end-effector jitter"))
        self.command_interface = self._choice("command_interface", "ros2_control",
                                              "ros2_control (JointTrajectory topics) or vendor (/master, /puppet)",
                                              COMMAND_INTERFACES)
        self.interpolation = self._choice("interpolation", "linear", "Trajectory interpolation", ("linear", "cubic"))
        rates = {"clock_rate_hz": self.clock_rate_hz, "joint_state_rate_hz": self.joint_state_rate_hz,
                 "status_rate_hz": self.status_rate_hz}
        rates.update({f"{camera}.rate_hz": rate for camera, rate in self.camera_rates.items()})
        for name, rate in rates.items():  # nothing can be published more often than physics steps
            if rate > self.physics_rate_hz:
                raise SimConfigError(f"parameter '{name}' = {rate:g}: must not exceed physics_rate_hz "
                                     f"({self.physics_rate_hz:g})")

    # --------------------------------------------------------------- interfaces
    def _make_controllers(self) -> None:
        if self.command_interface == "ros2_control":
            self.controllers = {side: TrajectoryArmController(side, self.interpolation) for side in robot.ARMS}
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
        for side in robot.ARMS:
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
        if self.command_interface == "ros2_control":
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
