"""The VLA nodes: camera_mask, planner, actor_left / actor_right, validator (+ rviz).

The nodes, their parameter file and remappings come from ``sim2real_vla_ros.graph.vla_nodes``,
the same definition the dry-run runner starts without ``ros2 launch``. Included by
robot.launch.py, sim_mujoco.launch.py and sim_gazebo.launch.py.

``namespace:=robot1`` moves every node and every relative topic and service under /robot1
(/robot1/vla/instruction, /robot1/joint_states, ...); /clock and /diagnostics stay global. An
including launch file may instead push a namespace (``PushROSNamespace``). config/vla.yaml's
sections are keyed ``/**/<node>`` so that they apply in any namespace.

    ros2 launch sim2real_vla_ros vla.launch.py bundle_path:=/path/to/bundle use_sim_time:=false

Start-up (managed nodes, README "Lifecycle"): with ``lifecycle_manager:=true`` (the default) the
VLA nodes come up unconfigured and ``vla_lifecycle_manager`` configures them in order, runs
``go_to_start`` for ``task`` when ``go_to_start:=true`` (both arms to the task's Table 6 start
pose, collision-checked, while no actor commands), then activates them:

    ros2 launch sim2real_vla_ros vla.launch.py go_to_start:=true task:=pour_water_single use_sim_time:=false

Two hosts (README: "Two hosts"): ``split_inference:=true`` runs each actor as ``actor_<arm>``
(actor_control: control loop + safety filter) and ``actor_<arm>_inference`` (the model);
``host:=robot`` starts only the robot host's share of the graph, ``host:=gpu`` the GPU host's
(``graph.host_of``), the same launch file on both machines:

    robot host:  ros2 launch sim2real_vla_ros vla.launch.py split_inference:=true host:=robot use_sim_time:=false
    GPU host:    ros2 launch sim2real_vla_ros vla.launch.py split_inference:=true host:=gpu use_sim_time:=false
"""
import os

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sim2real_vla_ros import graph
from sim2real_vla_ros.core.task import tasks

ARGUMENTS = (
    ("params_file", "", "Parameter YAML with one section per node name; empty: the package's config/vla.yaml"),
    ("bundle_path", "", "Model bundle folder for every VLA node; empty: the nodes' default (share models/reference)"),
    ("use_sim_time", "true", "Follow /clock (true in simulation, false on the real robot)"),
    ("output_mode", "", "Actor output: trajectory | stream | vendor; empty: the value in params_file"),
    ("arms", "left,right", "Arms that get an actor: left, right or left,right"),
    ("instruction", "", "Task instruction for the planner; empty: the value in params_file (or publish /vla/instruction)"),
    ("use_rviz", "false", "Start rviz2 with config/sim2real_vla.rviz"),
    ("lifecycle_manager", "true", "Start the VLA nodes unconfigured and let vla_lifecycle_manager configure and "
                                  "activate them in order; false: each node configures and activates itself"),
    ("go_to_start", "false", "Home both arms to the task's start pose (go_to_start) between configuring and "
                             "activating the VLA nodes; needs lifecycle_manager:=true"),
    ("task", "", "Task of config/tasks.yaml whose start pose go_to_start homes to; empty: its default_task"),
    ("namespace", "", "Namespace of the VLA nodes, e.g. robot1 (relative topics and services move under it; "
                      "/clock and /diagnostics stay global); empty: the root or a pushed namespace"),
    ("split_inference", "false", "Run each actor as a control node (robot host) and an inference node (GPU host) "
                                 "exchanging requests and stamped chunks over DDS; false: the single-process actor"),
    ("host", "all", "Which share of the graph this launch starts: all | robot (control, safety, camera_mask by "
                    "default) | gpu (planner, validator, actors' inference); robot/gpu need split_inference:=true"),
    ("mask_host", "robot", "With split_inference: where camera_mask runs, robot (masked images at model size cross "
                           "the link) or gpu (raw frames cross it)"),
    *((f"{camera}_topic", "",
       f"Absolute image topic of the {camera} camera driver (its camera_info is read next to it); "
       f"empty: {camera}/image_raw in the nodes' namespace")
      for camera in graph.CAMERAS),
)


def _vla_actions(context: LaunchContext) -> list:
    """Resolve the arguments and turn the graph's VLA specs into Node actions."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    split = graph.parse_bool(value["split_inference"], "split_inference")
    host = value["host"]
    if host not in ("all", *graph.HOSTS):
        raise ValueError(f"host must be one of {('all', *graph.HOSTS)}, got {host!r}")
    if host != "all" and not split:
        raise ValueError(f"host:={host} places the halves of split actors: add split_inference:=true")
    managed = graph.parse_bool(value["lifecycle_manager"], "lifecycle_manager")
    home = graph.parse_bool(value["go_to_start"], "go_to_start")
    if home and not managed:
        raise ValueError("go_to_start:=true homes between configure and activate: add lifecycle_manager:=true")
    specs = graph.vla_nodes(
        bundle_path=value["bundle_path"],
        params_file=value["params_file"] or None,
        arms=graph.parse_arms(value["arms"]),
        output_mode=value["output_mode"] or None,
        use_sim_time=graph.parse_bool(value["use_sim_time"], "use_sim_time"),
        camera_topics={camera: value[f"{camera}_topic"] for camera in graph.CAMERAS if value[f"{camera}_topic"]},
        instruction=value["instruction"] or None,
        namespace=value["namespace"],
        split_inference=split,
        lifecycle_manager=managed,
        go_to_start_task=(value["task"] or tasks.default_task_name()) if home else None,
    )
    if host != "all":
        specs = [spec for spec in specs if graph.host_of(spec, value["mask_host"]) == host]
    return [Node(**graph.launch_node_kwargs(spec)) for spec in specs]


def generate_launch_description() -> LaunchDescription:
    rviz = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(graph.share_file("launch"), "rviz.launch.py")),
        launch_arguments={"use_sim_time": LaunchConfiguration("use_sim_time")}.items(),
        condition=IfCondition(LaunchConfiguration("use_rviz")),
    )
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in ARGUMENTS),
        OpaqueFunction(function=_vla_actions),
        rviz,
    ])
