"""go_to_start: move both arms to a task's start pose (Table 6) before an episode.

    go_to_start --task items_handover_place [--backend auto|moveit|fallback] [--speed-scale 0.2]
                [--planning-time-s 10] [--timeout-s 60] [--plan-only] [--ros-args ...]

Backends
--------
``moveit``   MoveItPy (moveit_py): planning component ``both_arms`` (both arms and grippers,
             so each joint_trajectory_controller gets all 7 of its joints), goal = the SRDF's
             named state ``<task>_start``, OMPL RRTConnect, planning scene from /joint_states
             with the robot's own geometry (the table is a link of the URDF, table_link, so it
             is in the planning scene and collision-checked without adding an object),
             executed through the FollowJointTrajectory actions of config/moveit/
             moveit_controllers.yaml. **Written against the moveit_py documentation (Motion
             Planning Python API tutorial); not run here: moveit_py has no PyPI wheel.**
``fallback`` :mod:`sim2real_vla_ros.core.control.homing`: straight line or RRT-Connect over the same
             geometry (URDF collision primitives + the SRDF's matrix), timed with synchronised
             trapezoids, executed like the actors' trajectory mode: every 1/50 s each arm's next
             sample goes through its collision guard and safety filter
             (:class:`core.homing.HomingExecutor`) and is published as a one-point
             JointTrajectory on ``<arm>_arm_controller/joint_trajectory``.
``auto``     moveit when ``moveit.planning`` imports, else fallback.

Topics (fallback): ``joint_states`` (sensor_msgs/JointState) in; ``left_arm_controller/
joint_trajectory`` and ``right_arm_controller/joint_trajectory`` (trajectory_msgs/
JointTrajectory) out. Uses the node clock, so ``--ros-args -p use_sim_time:=true`` works in
simulation. Exit status: 0 at the start pose; 1 no plan / timed out / bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import yaml

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control import collision, homing
from sim2real_vla_ros.core.task import tasks as task_config
from sim2real_vla_ros.core.vocabulary import ARMS

CONTROL_RATE_HZ = homing.CONTROL_RATE_HZ
BACKENDS = ("auto", "moveit", "fallback")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="go_to_start", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=None, help="task name from tasks.yaml (default: its default_task)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--speed-scale", type=float, default=homing.DEFAULT_SPEED_SCALE,
                        help="fraction of the velocity / acceleration limits (0, 1]")
    parser.add_argument("--planning-time-s", type=float, default=homing.DEFAULT_PLANNING_TIME_S)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="give up waiting / executing after this")
    parser.add_argument("--plan-only", action="store_true", help="plan from the current state, print, do not move")
    from rclpy.utilities import remove_ros_args

    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(remove_ros_args(["go_to_start", *raw])[1:])
    args.ros_argv = ["go_to_start", *raw]  # for rclpy.init: remappings, use_sim_time
    if not 0.0 < args.speed_scale <= 1.0:
        parser.error("--speed-scale must be in (0, 1]")
    args.task = args.task or task_config.default_task_name()
    task_config.get_task(args.task)  # UnknownTaskError names the known tasks
    return args


def moveit_available() -> bool:
    try:
        import moveit.planning  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- moveit_py (not run here)


def moveit_config_dict() -> Dict[str, object]:
    """The parameters MoveItPy needs, from config/moveit/ (what MoveItConfigsBuilder.to_dict()
    assembles for a Setup-Assistant package; built by hand because our files live in
    config/moveit/ of this package rather than a separate *_moveit_config package)."""
    from sim2real_vla_ros.paths import share_path

    def load(name):
        with open(share_path("config", "moveit", name), encoding="utf-8") as stream:
            return yaml.safe_load(stream)

    with open(collision.srdf_path(), encoding="utf-8") as stream:
        srdf = stream.read()
    config: Dict[str, object] = {
        "robot_description": robot.urdf_xml(),
        "robot_description_semantic": srdf,
        "robot_description_kinematics": load("kinematics.yaml"),
        "robot_description_planning": load("joint_limits.yaml"),
        "ompl": load("ompl_planning.yaml"),
    }
    config.update(load("moveit_controllers.yaml"))
    config.update(load("moveit_py.yaml"))
    return config


def run_moveit(args: argparse.Namespace) -> int:  # pragma: no cover - moveit_py is not installed here
    """Plan and execute with MoveItPy (documented API; NOT RUN in this repository's tests)."""
    import rclpy
    from moveit.planning import MoveItPy, PlanRequestParameters

    rclpy.init(args=args.ros_argv)
    try:
        moveit = MoveItPy(node_name="go_to_start", config_dict=moveit_config_dict())
        both_arms = moveit.get_planning_component("both_arms")
        # The planning scene monitor tracks /joint_states; the table is table_link of the URDF,
        # already in the scene with its collision box (no CollisionObject needed). Reading it
        # here fails early when no joint state arrived.
        with moveit.get_planning_scene_monitor().read_only() as scene:
            scene.current_state.update()
        both_arms.set_start_state_to_current_state()
        both_arms.set_goal_state(configuration_name=f"{args.task}_start")
        params = PlanRequestParameters(moveit, "plan_request_params")
        params.planning_time = args.planning_time_s
        params.max_velocity_scaling_factor = args.speed_scale
        params.max_acceleration_scaling_factor = args.speed_scale
        result = both_arms.plan(single_plan_parameters=params)
        if not result:
            print(f"[go_to_start] MoveIt found no plan to {args.task}_start", flush=True)
            return 1
        if args.plan_only:
            print(f"[go_to_start] planned {len(result.trajectory.get_robot_trajectory_msg().joint_trajectory.points)} "
                  "points (not executed: --plan-only)", flush=True)
            return 0
        moveit.execute(result.trajectory, controllers=[])
        return 0
    finally:
        rclpy.shutdown()


# --------------------------------------------------------------------------- fallback


def run_fallback(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from builtin_interfaces.msg import Duration

    from sim2real_vla_ros.core import vocabulary as vocab
    from sim2real_vla_ros.nodes import common

    task = task_config.get_task(args.task)
    goal = homing.start_pose(task)
    dt = 1.0 / CONTROL_RATE_HZ

    class GoToStart(Node):
        def __init__(self) -> None:
            super().__init__("go_to_start")
            self.positions: Dict[str, np.ndarray] = {}
            self.velocities: Dict[str, np.ndarray] = {}
            self.stamp_s: Optional[float] = None
            self.create_subscription(JointState, vocab.JOINT_STATES, self._on_joint_state, common.SENSOR_QOS)
            self.publishers_ = {arm: self.create_publisher(JointTrajectory, vocab.arm_command_topic(arm, "trajectory"),
                                                           common.COMMAND_QOS) for arm in ARMS}

        def _on_joint_state(self, msg: JointState) -> None:
            index = {name: i for i, name in enumerate(msg.name)}
            for arm in ARMS:
                names = robot.arm_joint_names(arm)
                if all(name in index for name in names):
                    self.positions[arm] = np.array([msg.position[index[n]] for n in names])
                    if len(msg.velocity) == len(msg.name):
                        self.velocities[arm] = np.array([msg.velocity[index[n]] for n in names])
            self.stamp_s = common.now_seconds(self)

        def publish(self, arm: str, command: np.ndarray) -> None:
            message = JointTrajectory(joint_names=robot.arm_joint_names(arm))
            message.points.append(JointTrajectoryPoint(positions=[float(v) for v in command],
                                                       time_from_start=Duration(nanosec=int(dt * 1e9))))
            self.publishers_[arm].publish(message)

    rclpy.init(args=args.ros_argv)
    node = GoToStart()
    try:
        deadline = common.now_seconds(node) + args.timeout_s
        while len(node.positions) < len(ARMS):
            rclpy.spin_once(node, timeout_sec=0.1)
            if common.now_seconds(node) > deadline:
                print("[go_to_start] no joint state for both arms on /joint_states", flush=True)
                return 1
        start = np.concatenate([node.positions[arm] for arm in ARMS])
        planner = homing.JointSpacePlanner()
        try:
            plan = planner.plan(start, goal, time_limit_s=args.planning_time_s)
        except homing.HomingError as error:
            print(f"[go_to_start] {error}", flush=True)
            return 1
        velocity, acceleration = homing.homing_limits(args.speed_scale)
        trajectory = homing.time_parameterize(plan.waypoints, dt, velocity, acceleration)
        print(f"[go_to_start] {args.task}: {plan.method} plan, {len(plan.waypoints)} waypoints, "
              f"{len(trajectory) * dt:.1f} s, {plan.checks} collision checks in {plan.planning_time_s:.2f} s",
              flush=True)
        if args.plan_only:
            return 0
        executor = homing.HomingExecutor(trajectory, dt)
        node.stamp_s = None  # the reading planned from aged while planning: wait for a fresh one
        while node.stamp_s is None:
            rclpy.spin_once(node, timeout_sec=0.1)
            if common.now_seconds(node) > deadline:
                print("[go_to_start] joint states stopped", flush=True)
                return 1
        next_tick = common.now_seconds(node)
        while True:
            rclpy.spin_once(node, timeout_sec=max(0.0, next_tick - common.now_seconds(node)))
            now = common.now_seconds(node)
            if now < next_tick:
                continue
            next_tick += dt
            if executor.done(node.positions):
                print(f"[go_to_start] at {args.task}_start (guard stops: {executor.blocked})", flush=True)
                return 0
            if now > deadline:
                print("[go_to_start] timed out before reaching the start pose", flush=True)
                return 1
            commands = executor.tick(now, node.positions, node.stamp_s, node.velocities or None)
            for arm, command in commands.items():
                if command is not None:
                    node.publish(arm, command)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    backend = args.backend
    if backend == "auto":
        backend = "moveit" if moveit_available() else "fallback"
    if backend == "moveit":
        if not moveit_available():
            print("[go_to_start] --backend moveit: moveit_py is not installed", flush=True)
            return 1
        return run_moveit(args)
    return run_fallback(args)


if __name__ == "__main__":
    sys.exit(main())
