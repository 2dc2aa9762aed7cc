"""MuJoCo dry run: the simulator node + robot_state_publisher (+ the VLA nodes, + rviz).

The simulator stands in for ros2_control and the three cameras (/clock, /joint_states,
/<camera>/image_raw + camera_info, the arm controllers' joint_trajectory topics or the vendor
topics), so the VLA nodes run unchanged. The same nodes run without ``ros2 launch`` through
``make dry-run`` (sim2real_vla_ros.graph + subprocesses).

    ros2 launch sim2real_vla_ros sim_mujoco.launch.py task:=pour_water_single use_rviz:=true
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot

ARGUMENTS = (
    ("task", "", "Task name from config/tasks.yaml; empty: its default_task"),
    ("seed", "", "Scene sampling seed; empty: the task's seed (42)"),
    ("camera_width", "320", "Camera image width (px), all three cameras"),
    ("camera_height", "240", "Camera image height (px), all three cameras"),
    ("camera_rate_hz", "10.0", "Camera rate in sim time (Hz)"),
    ("real_time_factor", "", "Simulation speed relative to wall time; empty: the simulator's default"),
    ("command_interface", "ros2_control",
     "Arm command interface the simulator exposes: ros2_control (joint_trajectory_controller topics) or vendor (/master/joint_*, /puppet/joint_*)"),
    ("with_vla", "true", "Also start the VLA nodes (vla.launch.py)"),
    ("go_to_start", "false", "Start the arms at the rest pose and home them to the task's start pose with go_to_start "
                             "(vla_lifecycle_manager, before the VLA nodes are activated); false: the simulator "
                             "places them there"),
    ("use_rviz", "false", "Start rviz2 with config/sim2real_vla.rviz"),
    ("params_file", "", "VLA parameter YAML; empty: the package's config/vla.yaml"),
    ("bundle_path", "", "Model bundle folder; empty: the nodes' default (share models/reference)"),
    ("output_mode", "", "Actor output: trajectory | stream | vendor; empty: the one command_interface takes"),
    ("instruction", "", "Task instruction for the planner; empty: the value in params_file"),
)

def _optional(text: str, kind: type):
    return kind(text) if text.strip() else None


def _sim_actions(context: LaunchContext) -> list:
    """Resolve the arguments; the simulator, robot_state_publisher and the includes."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    width, height = int(value["camera_width"]), int(value["camera_height"])
    camera_rate = float(value["camera_rate_hz"])
    home = graph.parse_bool(value["go_to_start"], "go_to_start") and graph.parse_bool(value["with_vla"], "with_vla")
    specs = graph.simulator_nodes(
        "mujoco", task=value["task"] or None, seed=_optional(value["seed"], int),
        camera_width=width, camera_height=height, camera_rate_hz=camera_rate,
        real_time_factor=_optional(value["real_time_factor"], float),
        command_interface=value["command_interface"],
        extra_parameters={"reset_arms": "keep"} if home else None)
    # The simulator builds its model from the same xacro; no ros2_control tags are needed.
    urdf = robot.urdf_xml(ros2_control_plugin="none", camera_width=width, camera_height=height,
                          camera_rate=camera_rate)
    specs.append(graph.robot_state_publisher_node(urdf, use_sim_time=True))
    actions: list = [Node(**graph.launch_node_kwargs(spec)) for spec in specs]

    use_rviz = graph.parse_bool(value["use_rviz"], "use_rviz")
    if graph.parse_bool(value["with_vla"], "with_vla"):
        actions.append(graph.include_launch("vla.launch.py", {
            "params_file": value["params_file"],
            "bundle_path": value["bundle_path"],
            "use_sim_time": "true",
            "output_mode": value["output_mode"] or graph.OUTPUT_MODE_FOR_INTERFACE[value["command_interface"]],
            "instruction": value["instruction"],
            "use_rviz": str(use_rviz).lower(),
            "go_to_start": str(home).lower(),
            "task": value["task"],
        }))
    elif use_rviz:
        actions.append(graph.include_launch("rviz.launch.py", {"use_sim_time": "true"}))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in ARGUMENTS),
        OpaqueFunction(function=_sim_actions),
    ])
