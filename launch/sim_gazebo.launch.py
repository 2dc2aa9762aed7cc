"""Gazebo (gz sim) dry run, for users with Gazebo and ros_gz / gz_ros2_control installed.

Starts gz sim with config/worlds/cobot_magic_table.sdf, robot_state_publisher with the CobotMagic
xacro processed with ros2_control_plugin:=gazebo (gz_ros2_control loads config/controllers.yaml),
spawns that robot with ``ros_gz_sim create``, then, once it exists, the task objects sampled
from config/tasks.yaml (the same sampling as the MuJoCo simulator) and the controller spawners;
once the arm controllers are active it moves both arms to the task's initial configuration.
ros_gz_bridge carries /clock and every camera's image_raw + camera_info (config/gz_bridge.yaml).
Every node uses sim time. The VLA nodes come from vla.launch.py.

    ros2 launch sim2real_vla_ros sim_gazebo.launch.py task:=pour_water_single gui:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import FindExecutable, LaunchConfiguration
from launch_ros.actions import Node

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot

ARGUMENTS = (
    ("task", "", "Task name from config/tasks.yaml; empty: its default_task"),
    ("seed", "", "Scene sampling seed; empty: the task's seed (42)"),
    ("world", "", "Gazebo world SDF; empty: the package's config/worlds/cobot_magic_table.sdf"),
    ("gui", "true", "Show the Gazebo GUI (false: server only, headless rendering for the cameras)"),
    ("gz_verbosity", "3", "gz sim console verbosity, 0 (none) to 4 (debug)"),
    ("spawn_objects", "true", "Spawn the task's objects on the table"),
    ("camera_width", "320", "Camera image width (px), all three cameras"),
    ("camera_height", "240", "Camera image height (px), all three cameras"),
    ("camera_rate_hz", "10.0", "Camera rate in sim time (Hz)"),
    ("with_vla", "true", "Also start the VLA nodes (vla.launch.py)"),
    ("use_rviz", "false", "Start rviz2 with config/sim2real_vla.rviz"),
    ("params_file", "", "VLA parameter YAML; empty: the package's config/vla.yaml"),
    ("bundle_path", "", "Model bundle folder; empty: the nodes' default (share models/reference)"),
    ("output_mode", "trajectory", "Actor output: trajectory (joint_trajectory_controller) in Gazebo"),
    ("instruction", "", "Task instruction for the planner; empty: the value in params_file"),
)
INITIAL_MOVE_S = 3.0  # time for the arms to reach the task's initial configuration


def _include(path: str, arguments: dict) -> IncludeLaunchDescription:
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                    launch_arguments=arguments.items())


def _node(spec: graph.NodeSpec) -> Node:
    return Node(**graph.launch_node_kwargs(spec))


def _move_to_initial_pose(task: str, arm: str) -> ExecuteProcess:
    """Publish one trajectory to the arm's controller (waits for its subscription, then exits)."""
    return ExecuteProcess(
        cmd=[FindExecutable(name="ros2"), "topic", "pub", "--once",
             graph.arm_command_topic(arm, "trajectory"), "trajectory_msgs/msg/JointTrajectory",
             graph.initial_trajectory_yaml(task, arm, INITIAL_MOVE_S)],
        output="screen")


def _gazebo_actions(context: LaunchContext) -> list:
    """Resolve the arguments; Gazebo, the robot, the objects, the controllers and the includes."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    width, height = int(value["camera_width"]), int(value["camera_height"])
    camera_rate = float(value["camera_rate_hz"])
    task = value["task"] or None
    seed = int(value["seed"]) if value["seed"].strip() else None
    world = value["world"] or graph.share_file("config", "worlds", "cobot_magic_table.sdf")
    gz_args = f"-r -v {int(value['gz_verbosity'])} {world}"
    if not graph.parse_bool(value["gui"], "gui"):
        gz_args += " -s --headless-rendering"

    gazebo = _include(
        os.path.join(get_package_share_directory("ros_gz_sim"), "launch", "gz_sim.launch.py"),
        {"gz_args": gz_args, "on_exit_shutdown": "true"})
    urdf = robot.urdf_xml(ros2_control_plugin="gazebo", camera_width=width, camera_height=height,
                          camera_rate=camera_rate)
    bridge, spawn_robot = (_node(spec) for spec in graph.simulator_nodes("gazebo", use_sim_time=True))
    state_publisher = _node(graph.robot_state_publisher_node(urdf, use_sim_time=True))

    broadcaster, *arm_spawners = (_node(spec) for spec in graph.controller_spawner_nodes(
        use_sim_time=True, manager_timeout_s=60.0))
    # Objects rest on the table, which belongs to the robot model: spawn them after the robot.
    after_robot = [broadcaster]
    if graph.parse_bool(value["spawn_objects"], "spawn_objects"):
        after_robot += [_node(spec) for spec in graph.gazebo_object_spawn_nodes(
            task, seed, table_top_z=robot.table_top(urdf).z, use_sim_time=True)]
    actions: list = [
        gazebo, state_publisher, bridge, spawn_robot,
        RegisterEventHandler(OnProcessExit(target_action=spawn_robot, on_exit=after_robot)),
        RegisterEventHandler(OnProcessExit(target_action=broadcaster, on_exit=arm_spawners)),
    ]
    for arm, spawner in zip(graph.ARMS, arm_spawners):
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=spawner, on_exit=[_move_to_initial_pose(task, arm)])))

    use_rviz = graph.parse_bool(value["use_rviz"], "use_rviz")
    launch_dir = graph.share_file("launch")
    if graph.parse_bool(value["with_vla"], "with_vla"):
        actions.append(_include(os.path.join(launch_dir, "vla.launch.py"), {
            "params_file": value["params_file"],
            "bundle_path": value["bundle_path"],
            "use_sim_time": "true",
            "output_mode": value["output_mode"],
            "instruction": value["instruction"],
            "use_rviz": str(use_rviz).lower(),
        }))
    elif use_rviz:
        actions.append(_include(os.path.join(launch_dir, "rviz.launch.py"), {"use_sim_time": "true"}))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in ARGUMENTS),
        OpaqueFunction(function=_gazebo_actions),
    ])
