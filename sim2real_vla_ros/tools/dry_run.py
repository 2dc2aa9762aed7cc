"""`make dry-run`: run the MuJoCo simulator node, drive both arms through it, save camera frames.

First version of the dry run (the VLA nodes join it later). It starts ``sim_mujoco`` as a
child process for a task (default: tasks.yaml's default task), then, from a node of its own
running on the simulator's ``/clock``:

1. waits for /joint_states, an image from every camera and the task status;
2. sends a scripted joint motion to both arms through
   ``/<side>_arm_controller/joint_trajectory`` (JTC semantics) and checks /joint_states
   reaches each waypoint within tolerance;
3. saves frames of the three cameras (start, mid-motion, end) as PNG and a ``summary.json``
   into ``runs/<UTC timestamp>/``;
4. calls ``/sim/reset`` and checks the next episode's status arrives;
5. prints a summary and exits 0, or 1 with the reason for the first failure.

DDS stays on loopback: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is set for this process
and the simulator it starts (``ROS_DOMAIN_ID`` is kept if set, else one is chosen).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

SIDES = ("left", "right")
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
TOLERANCE_RAD = 0.02
# Joint-space offsets (joints 1-6 rad, joint7 finger m) from the task's start pose, and the
# time (s, sim) to reach each: reach forward and down over the table (the tool centre point
# drops ~0.26 m), turn toward the middle rolling the wrist and half-closing the gripper,
# come back. Joint1 is mirrored for the right arm so both turn inward.
SCRIPT = (
    (2.0, (0.0, 0.5, 0.1, 0.0, 0.2, 0.0, 0.0)),
    (4.0, (-0.25, 0.5, 0.1, 0.0, 0.2, 0.6, -0.02)),
    (6.0, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
)
SETTLE_S = 0.5  # sim time after the last waypoint before the steady-state error is read
START_DELAY_S = 0.3  # the trajectories start this long (sim time) after they are sent


class DryRunError(RuntimeError):
    """A step of the dry run failed; the message says which and why."""


def _environment() -> Dict[str, str]:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never let DDS leave the machine
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(5, 95)))
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class SimulatorProcess:
    """The sim_mujoco node as a child process whose output is kept (printed on failure)."""

    def __init__(self, task: str, real_time_factor: float, env: Dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "sim2real_vla_ros.sim.sim_node", "--ros-args",
               "-p", f"task:={task}", "-p", f"real_time_factor:={float(real_time_factor)}"]
        self.lines: List[str] = []
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        self._reader.join(timeout=2.0)
        return self.proc.returncode


class DryRun:
    """The dry run's own node: records topics, sends trajectories, waits with deadlines."""

    def __init__(self, simulator: SimulatorProcess) -> None:
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from sim2real_vla_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

        self.simulator = simulator
        self.node = Node("dry_run", parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        self.joint_state: Optional[JointState] = None
        self.images: Dict[str, Image] = {}
        self.status: Optional[dict] = None
        self.node.create_subscription(JointState, "/joint_states", self._on_joint_state, COMMAND_QOS)
        self.node.create_subscription(String, "/sim/task_status", self._on_status, LATCHED_QOS)
        for camera in CAMERAS:
            self.node.create_subscription(Image, f"/{camera}/image_raw",
                                          lambda msg, c=camera: self.images.__setitem__(c, msg), SENSOR_QOS)
        self.trajectory_pubs = {side: self.node.create_publisher(JointTrajectory, f"/{side}_arm_controller/joint_trajectory",
                                                                 COMMAND_QOS) for side in SIDES}

    def _on_joint_state(self, msg) -> None:
        self.joint_state = msg

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def spin_until(self, condition: Callable[[], object], timeout: float, what: str):
        """Spin this node until ``condition()`` is truthy; DryRunError at the deadline or if the simulator died."""
        import rclpy

        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self.simulator.proc.poll() is not None:
                tail = "".join(self.simulator.lines[-8:])
                raise DryRunError(f"the simulator exited ({self.simulator.proc.returncode}) while waiting for "
                                  f"{what}; its last output:\n{tail}")
            if time.monotonic() > deadline:
                raise DryRunError(f"timed out after {timeout:.0f} s waiting for {what}")
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def sim_time(self) -> float:
        from sim2real_vla_ros.nodes.common import stamp_to_seconds

        return stamp_to_seconds(self.joint_state.header.stamp)

    def arm_positions(self, side: str) -> np.ndarray:
        positions = dict(zip(self.joint_state.name, self.joint_state.position))
        return np.array([positions[f"{side}_joint{i}"] for i in range(1, 8)])

    def send_script(self, starts: Dict[str, np.ndarray], start_s: float) -> Dict[str, List[np.ndarray]]:
        """Publish the scripted waypoints: one trajectory per arm, both starting at sim time ``start_s``.

        A future header stamp is joint_trajectory_controller's "start then": both arms start
        together, however long each message takes to arrive.
        """
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from sim2real_vla_ros.core import robot
        from sim2real_vla_ros.nodes.common import seconds_to_stamp

        waypoints = {}
        for side in SIDES:
            mirror = np.array([1.0 if side == "left" else -1.0] + [1.0] * 6)
            limits = robot.arm_limits(side)
            msg = JointTrajectory()
            msg.header.stamp = seconds_to_stamp(start_s)
            msg.joint_names = robot.arm_joint_names(side)
            waypoints[side] = []
            for seconds, offset in SCRIPT:
                target = limits.clip(starts[side] + mirror * np.asarray(offset))
                point = JointTrajectoryPoint(positions=target.tolist())
                point.time_from_start = Duration(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)))
                msg.points.append(point)
                waypoints[side].append(target)
            self.spin_until(lambda s=side: self.trajectory_pubs[s].get_subscription_count() > 0, 10.0,
                            f"the simulator's {side} trajectory subscription")
            self.trajectory_pubs[side].publish(msg)
        return waypoints

    def tracking_error(self, targets: Dict[str, np.ndarray]) -> float:
        return max(float(np.max(np.abs(self.arm_positions(side) - targets[side]))) for side in SIDES)

    def save_frames(self, folder: str, label: str) -> List[str]:
        import cv2

        from sim2real_vla_ros.nodes.common import image_to_numpy

        paths = []
        for camera in CAMERAS:
            path = os.path.join(folder, f"{label}_{camera}.png")
            if not cv2.imwrite(path, image_to_numpy(self.images[camera], "bgr8")):
                raise DryRunError(f"could not write {path}")
            paths.append(path)
        return paths


def _drive_script(dry: DryRun, folder: str, timeout: float) -> dict:
    """Send the scripted motion, check each waypoint is reached, save frames along the way."""
    frames = dry.save_frames(folder, "0_start")
    starts = {side: dry.arm_positions(side) for side in SIDES}
    t_start = dry.sim_time() + START_DELAY_S
    waypoints = dry.send_script(starts, t_start)
    errors = []
    for index, (seconds, _offset) in enumerate(SCRIPT):
        targets = {side: waypoints[side][index] for side in SIDES}
        dry.spin_until(lambda s=seconds: dry.sim_time() >= t_start + s, timeout, f"sim time of waypoint {index + 1}")
        errors.append(round(dry.tracking_error(targets), 5))  # servo error when the waypoint is due
        dry.spin_until(lambda t=targets: dry.tracking_error(t) < TOLERANCE_RAD, timeout,
                       f"both arms within {TOLERANCE_RAD} rad of waypoint {index + 1}")
        previous = {c: dry.images[c].header.stamp for c in CAMERAS}
        dry.spin_until(lambda p=previous: all(dry.images[c].header.stamp != p[c] for c in CAMERAS), timeout,
                       "fresh images")
        frames += dry.save_frames(folder, f"{index + 1}_waypoint")
    settle_until = dry.sim_time() + SETTLE_S
    dry.spin_until(lambda: dry.sim_time() >= settle_until, timeout, "settling at the last waypoint")
    steady = round(dry.tracking_error(targets), 5)
    if steady >= TOLERANCE_RAD:
        raise DryRunError(f"steady-state tracking error {steady} rad at the last waypoint")
    return {
        "waypoint_errors_rad": errors,  # largest joint error when each waypoint was due
        "steady_state_error_rad": steady,
        "motion_sim_s": round(dry.sim_time() - t_start, 3),
        "frames": [os.path.basename(p) for p in frames],
    }


def _reset_episode(dry: DryRun, timeout: float) -> str:
    """Call /sim/reset and wait for the next episode's task status; returns the reply message."""
    from std_srvs.srv import Trigger

    client = dry.node.create_client(Trigger, "/sim/reset")
    dry.spin_until(client.service_is_ready, timeout, "/sim/reset")
    episode = dry.status["episode"]
    future = client.call_async(Trigger.Request())
    dry.spin_until(future.done, timeout, "the /sim/reset reply")
    if not future.result().success:
        raise DryRunError(f"/sim/reset failed: {future.result().message}")
    dry.spin_until(lambda: dry.status["episode"] == episode + 1, timeout, "the new episode's task status")
    return future.result().message


def run(task: Optional[str], out_dir: Optional[str], real_time_factor: float, timeout: float) -> dict:
    """Run the dry run; returns the summary (DryRunError on the first failed step)."""
    import rclpy

    from sim2real_vla_ros.core import tasks

    env = _environment()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "MUJOCO_GL")})
    task = task or tasks.default_task_name()
    tasks.get_task(task)  # an unknown name fails here, before anything starts
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = out_dir or os.path.join("runs", stamp)
    os.makedirs(folder, exist_ok=True)
    wall_start = time.monotonic()
    simulator = SimulatorProcess(task, real_time_factor, env)
    summary: dict = {"task": task, "ros_domain_id": env["ROS_DOMAIN_ID"], "folder": os.path.abspath(folder)}
    try:
        with rclpy.init():
            dry = DryRun(simulator)
            dry.spin_until(lambda: dry.joint_state is not None and dry.status is not None
                           and all(c in dry.images for c in CAMERAS), timeout, "joint states, task status and images")
            summary["seed"] = dry.status["seed"]
            summary.update(_drive_script(dry, folder, timeout))
            summary["status_before_reset"] = {k: dry.status[k] for k in ("episode", "success", "criteria")}
            summary["reset"] = _reset_episode(dry, timeout)
            summary["measured_real_time_factor"] = dry.status.get("real_time_factor_measured")
            dry.node.destroy_node()
    finally:
        code = simulator.stop()
        summary["simulator_exit_code"] = code
        summary["wall_s"] = round(time.monotonic() - wall_start, 2)
        with open(os.path.join(folder, "simulator.log"), "w", encoding="utf-8") as stream:
            stream.write(simulator.output)
    if code != 0:
        raise DryRunError(f"the simulator exited with {code} (log: {folder}/simulator.log)")
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=2)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="MuJoCo dry run: simulator, scripted motion, camera frames.")
    parser.add_argument("--task", default=None, help="task name in config/tasks.yaml (default: its default_task)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<UTC timestamp>)")
    parser.add_argument("--real-time-factor", type=float, default=2.0,
                        help="simulated seconds per wall second (0 = as fast as possible)")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each step (wall s)")
    args = parser.parse_args(argv)
    try:
        summary = run(args.task, args.out, args.real_time_factor, args.timeout)
    except (DryRunError, KeyError, ValueError) as exc:
        print(f"dry run FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"dry run OK: task {summary['task']} (seed {summary['seed']}), scripted motion of both arms over "
          f"{summary['motion_sim_s']} s sim time, waypoint errors {summary['waypoint_errors_rad']} rad, "
          f"steady-state error {summary['steady_state_error_rad']} rad, "
          f"{len(summary['frames'])} frames, reset -> {summary['reset']}")
    print(f"measured real-time factor {summary['measured_real_time_factor']}, wall {summary['wall_s']} s; "
          f"outputs in {summary['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
