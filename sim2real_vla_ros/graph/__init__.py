"""The node graph: one definition used by the launch files, the dry-run runner and the tests.

Split by job:

- :mod:`.specs`: :class:`NodeSpec` (executable, node name, namespace, parameter files,
  overrides, remappings) and the builders of the simulator, VLA, robot, Gazebo and rviz
  processes;
- :mod:`.contract`: what the running graph must look like (:func:`expected_connections`,
  :func:`expected_services`, :func:`expected_parameters`, :data:`EXTERNAL_INPUTS`), which the
  tests and the dry run check;
- :mod:`.command_line`: a spec as the command line that starts it here (:func:`to_command`),
  the way ``ros2 run`` + launch_ros would;
- :mod:`.launch_adapter`: a spec as launch_ros ``Node`` arguments (:func:`launch_node_kwargs`)
  and includes, for the launch files only;
- :mod:`.parameter_files`: how rcl reads a parameter file (which sections apply to a node in
  a namespace).

Topic and service names come from core.vocabulary: relative, so a namespace (``namespace=``
of the builders, ``-r __ns:=`` or a launch namespace) moves the whole graph, except the
global ``/clock`` and ``/diagnostics``.

The names other code uses are re-exported here (``from sim2real_vla_ros import graph;
graph.vla_nodes(...)``). Pure Python: no launch, launch_ros or rclpy import at module level.
"""
from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS, OUTPUT_MODES, arm_command_topic  # noqa: F401 (used as graph.X)
from sim2real_vla_ros.graph.command_line import ros_param_value, to_command
from sim2real_vla_ros.graph.contract import (EXTERNAL_INPUTS, TopicEnds, expected_connections, expected_parameters,
                                             expected_actions, expected_services, external_inputs, topic_types)
from sim2real_vla_ros.graph.launch_adapter import include_launch, launch_node_kwargs
from sim2real_vla_ros.graph.parameter_files import load_node_section
from sim2real_vla_ros.graph.specs import (
    ARM_CONTROLLERS, CAMERA_MASK_NODE, COMMAND_INTERFACES, CONTROLLER_MANAGER_NODE, EXTERNAL_PACKAGES,
    GAZEBO_ROBOT_ENTITY, GAZEBO_WORLD, GZ_BRIDGE_NODE, JOINT_STATE_BROADCASTER, OUTPUT_MODE_FOR_INTERFACE,
    OUTPUT_MODES_OF_INTERFACE, PACKAGE, PLANNER_NODE, POSITION_CONTROLLERS, ROBOT_INTERFACES,
    PIPER_DRIVER_NODE, ROBOT_STATE_PUBLISHER_NODE, RVIZ_NODE, SIM_NODE, VALIDATOR_NODE, VENDOR_BRIDGE_NODE, NodeSpec,
    HOSTS, MASK_HOSTS, absolute_namespace, actor_inference_node_name, actor_node_name, host_of, split_actor_nodes, arm_controller_names, camera_remappings, command_interface_for,
    controller_spawner_nodes, default_params_file, gazebo_object_spawn_nodes, gz_bridge_node, gz_spawn_robot_node,
    initial_trajectory_yaml, parse_arms, parse_bool, piper_driver_node, robot_nodes, robot_state_publisher_node,
    ros2_control_node,
    rviz_node, share_file, simulator_nodes, vendor_bridge_node, vla_nodes,
    LIFECYCLE_MANAGER_NODE, lifecycle_manager_node, managed_order)

__all__ = [
    "ARMS", "CAMERAS", "OUTPUT_MODES", "arm_command_topic",
    "ros_param_value", "to_command",
    "EXTERNAL_INPUTS", "TopicEnds", "topic_types", "expected_actions", "expected_connections", "expected_parameters", "expected_services",
    "external_inputs",
    "include_launch", "launch_node_kwargs",
    "load_node_section",
    "ARM_CONTROLLERS", "CAMERA_MASK_NODE", "COMMAND_INTERFACES", "CONTROLLER_MANAGER_NODE", "EXTERNAL_PACKAGES",
    "GAZEBO_ROBOT_ENTITY", "GAZEBO_WORLD", "GZ_BRIDGE_NODE", "JOINT_STATE_BROADCASTER", "OUTPUT_MODE_FOR_INTERFACE",
    "OUTPUT_MODES_OF_INTERFACE", "PACKAGE", "PLANNER_NODE", "POSITION_CONTROLLERS", "ROBOT_INTERFACES",
    "PIPER_DRIVER_NODE", "ROBOT_STATE_PUBLISHER_NODE", "RVIZ_NODE", "SIM_NODE", "VALIDATOR_NODE", "VENDOR_BRIDGE_NODE",
    "NodeSpec",
    "HOSTS", "MASK_HOSTS", "absolute_namespace", "actor_inference_node_name", "actor_node_name", "host_of",
    "split_actor_nodes", "arm_controller_names", "camera_remappings", "command_interface_for",
    "controller_spawner_nodes", "default_params_file", "gazebo_object_spawn_nodes", "gz_bridge_node",
    "gz_spawn_robot_node", "initial_trajectory_yaml", "parse_arms", "parse_bool", "piper_driver_node", "robot_nodes",
    "robot_state_publisher_node", "ros2_control_node", "rviz_node", "share_file", "simulator_nodes",
    "vendor_bridge_node", "vla_nodes",
    "LIFECYCLE_MANAGER_NODE", "lifecycle_manager_node", "managed_order",
]
