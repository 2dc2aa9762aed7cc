"""The real CobotMagic: robot description, arm control, and the VLA nodes on the camera drivers.

interface:=ros2_control  robot_state_publisher, ros2_control_node with the user's hardware plugin
                         (xacro ros2_control_plugin:=hardware, one system per arm with its CAN bus)
                         and config/controllers.yaml, spawners for joint_state_broadcaster,
                         left_arm_controller and right_arm_controller.
interface:=mock          the same with mock_components/GenericSystem (no robot needed).
interface:=vendor        robot_state_publisher and vendor_bridge: the AgileX driver takes /master/joint_*
                         and publishes /puppet/joint_* (the actors use output_mode vendor);
                         vendor_bridge merges /puppet/joint_* into /joint_states with the URDF names.
interface:=piper         robot_state_publisher and piper_driver: both arms through the vendor SDK
                         on can_interface_left / can_interface_right (output_mode trajectory or stream).
output_mode:=stream      (ros2_control) spawns the forward_command_controllers active and the
                         joint_trajectory_controllers inactive.

The cameras are the user's own drivers (e.g. AgileX's /camera_f|l|r/color/image_raw); the
``<camera>_topic`` arguments remap the VLA nodes onto them. The VLA nodes come from vla.launch.py.

    ros2 launch sim2real_vla_ros robot.launch.py interface:=ros2_control \\
        hardware_plugin:=my_piper_hardware/PiperSystem can_interface_left:=can0 can_interface_right:=can1
"""
import os

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot

VENDOR_CAMERA_TOPICS = {
    "cam_high": "/camera_f/color/image_raw",
    "cam_left_wrist": "/camera_l/color/image_raw",
    "cam_right_wrist": "/camera_r/color/image_raw",
}
XACRO_PLUGIN = {"ros2_control": "hardware", "mock": "mock", "vendor": "none", "piper": "none"}

ARGUMENTS = (
    ("interface", "ros2_control", "Arm interface: ros2_control (hardware plugin), mock (mock_components), vendor "
     "(AgileX ROS 1 topics) or piper (the piper_driver node on the vendor SDK; recommended on ROS 2)"),
    ("hardware_plugin", "socket_can_hardware_interface/SocketCanHardwareInterface",
     "ros2_control hardware plugin of the arms (interface:=ros2_control)"),
    ("can_interface_left", "can_left", "CAN bus of the left arm (hardware plugin parameter can_interface; "
     "piper_driver can_left)"),
    ("can_interface_right", "can_right", "CAN bus of the right arm (hardware plugin parameter can_interface; "
     "piper_driver can_right)"),
    ("controllers_file", "", "ros2_control controller parameters; empty: the package's config/controllers.yaml"),
    ("camera_width", "640", "Camera image width (px) in the robot description (camera intrinsics)"),
    ("camera_height", "480", "Camera image height (px) in the robot description"),
    ("camera_rate_hz", "30.0", "Camera rate (Hz) in the robot description"),
    *((f"{camera}_topic", topic, f"Image topic of the {camera} camera driver (camera_info next to it)")
      for camera, topic in VENDOR_CAMERA_TOPICS.items()),
    ("use_sim_time", "false", "Follow /clock (false on the real robot)"),
    ("with_vla", "true", "Also start the VLA nodes (vla.launch.py)"),
    ("go_to_start", "false", "Home both arms to the task's start pose with go_to_start before the VLA nodes are "
                             "activated (vla_lifecycle_manager)"),
    ("task", "", "Task of config/tasks.yaml for go_to_start; empty: its default_task"),
    ("use_rviz", "false", "Start rviz2 with config/sim2real_vla.rviz"),
    ("params_file", "", "VLA parameter YAML; empty: the package's config/vla.yaml"),
    ("bundle_path", "", "Model bundle folder; empty: the nodes' default (share models/reference)"),
    ("output_mode", "", "Actor output: trajectory | stream | vendor; empty: trajectory, or vendor with interface:=vendor"),
    ("instruction", "", "Task instruction for the planner; empty: the value in params_file"),
)


def _robot_actions(context: LaunchContext) -> list:
    """Resolve the arguments; the robot-side nodes and the includes."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    interface = value["interface"]
    if interface not in graph.ROBOT_INTERFACES:
        raise ValueError(f"interface must be one of {graph.ROBOT_INTERFACES}, got {interface!r}")
    use_sim_time = graph.parse_bool(value["use_sim_time"], "use_sim_time")
    urdf = robot.urdf_xml(
        ros2_control_plugin=XACRO_PLUGIN[interface], hardware_plugin=value["hardware_plugin"],
        can_interface_left=value["can_interface_left"], can_interface_right=value["can_interface_right"],
        camera_width=int(value["camera_width"]), camera_height=int(value["camera_height"]),
        camera_rate=float(value["camera_rate_hz"]))
    output_mode = value["output_mode"] or ("vendor" if interface == "vendor" else "trajectory")
    specs = graph.robot_nodes(urdf, interface=interface,
                              controllers_file=value["controllers_file"] or None,
                              use_sim_time=use_sim_time,
                              humble=os.environ.get("ROS_DISTRO") == "humble",
                              output_mode=output_mode,
                              piper_parameters={"can_left": value["can_interface_left"],
                                                "can_right": value["can_interface_right"]})
    actions: list = [Node(**graph.launch_node_kwargs(spec)) for spec in specs]

    use_rviz = graph.parse_bool(value["use_rviz"], "use_rviz")
    if graph.parse_bool(value["with_vla"], "with_vla"):
        actions.append(graph.include_launch("vla.launch.py", {
            "params_file": value["params_file"],
            "bundle_path": value["bundle_path"],
            "use_sim_time": str(use_sim_time).lower(),
            "output_mode": output_mode,
            "instruction": value["instruction"],
            "use_rviz": str(use_rviz).lower(),
            "go_to_start": value["go_to_start"],
            "task": value["task"],
            **{f"{camera}_topic": value[f"{camera}_topic"] for camera in graph.CAMERAS},
        }))
    elif use_rviz:
        actions.append(graph.include_launch("rviz.launch.py", {"use_sim_time": str(use_sim_time).lower()}))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in ARGUMENTS),
        OpaqueFunction(function=_robot_actions),
    ])
