"""rviz2 with config/sim2real_vla.rviz: robot model, TF, the three cameras, affordance markers and overlay.

    ros2 launch sim2real_vla_ros rviz.launch.py use_sim_time:=false
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sim2real_vla_ros import graph


def _rviz_actions(context: LaunchContext) -> list:
    config = LaunchConfiguration("rviz_config").perform(context)
    use_sim_time = graph.parse_bool(LaunchConfiguration("use_sim_time").perform(context), "use_sim_time")
    spec = graph.rviz_node(config or None, use_sim_time=use_sim_time)
    return [Node(**graph.launch_node_kwargs(spec))]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("rviz_config", default_value="",
                              description="rviz2 config file; empty: the package's config/sim2real_vla.rviz"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="Follow /clock (true in simulation, false on the real robot)"),
        OpaqueFunction(function=_rviz_actions),
    ])
