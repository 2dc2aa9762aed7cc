"""The node graph definition (sim2real_vla_ros.graph): executables, ros-args, parameters, topics, namespaces.

No node is started here. The ros-args that ``to_command`` builds are checked by handing them to
rcl itself (``rclpy.init(args=...)`` + a node that declares every override it is given), so
the check is the real parser, not a re-implementation. That each running node *declares*
every parameter of its vla.yaml section is checked by the integration tests, which can ask
the node (``~/list_parameters``) and compare with ``graph.expected_parameters(spec)``.
"""
import ast
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.graph import parameter_files
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.control.chunk_executor import BLEND_MODES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VLA_YAML = os.path.join(REPO, "config", "vla.yaml")


def console_scripts() -> dict[str, str]:
    """``name = module:function`` entries of setup.py, read from its AST (setup.py is not run)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return {name.strip(): target.strip()
                            for name, target in (entry.split("=", 1) for entry in entries)}
    raise AssertionError("setup.py has no console_scripts entry points")


def exec_depends() -> set[str]:
    root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
    return {element.text.strip() for element in root.findall("exec_depend")}


def all_specs() -> list[graph.NodeSpec]:
    """Every process any launch file or runner can start (one representative per builder)."""
    hardware_urdf = robot.urdf_xml(ros2_control_plugin="hardware")
    return [
        *graph.simulator_nodes("mujoco"),
        *graph.simulator_nodes("gazebo"),
        *graph.vla_nodes(),
        *graph.vla_nodes(split_inference=True),
        *graph.robot_nodes(hardware_urdf, interface="ros2_control"),
        *graph.robot_nodes(robot.urdf_xml(ros2_control_plugin="none"), interface="vendor"),
        *graph.controller_spawner_nodes(),
        *graph.gazebo_object_spawn_nodes(),
        graph.rviz_node(),
    ]


def python_specs() -> list[graph.NodeSpec]:
    unique = {}
    for spec in all_specs():
        if spec.runs_here:
            unique.setdefault(spec.executable, spec)
    return list(unique.values())


# --------------------------------------------------------------------------- executables


@pytest.mark.parametrize("spec", python_specs(), ids=lambda spec: spec.executable)
def test_python_node_is_a_console_script_whose_module_has_main(spec):
    scripts = console_scripts()
    assert scripts.get(spec.executable) == f"{spec.module}:main", \
        f"setup.py console script {spec.executable!r} must be '{spec.module}:main'"
    path = os.path.join(REPO, *spec.module.split(".")) + ".py"
    assert os.path.isfile(path), f"{spec.executable}: module file {path} does not exist (yet)"
    with open(path, encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "main" in functions, f"{path} defines no top-level main()"
    # `python -m module` (to_command, the test harness) needs the guard that calls main().
    guards = [node for node in tree.body if isinstance(node, ast.If)
              and "__main__" in ast.unparse(node.test) and "main(" in ast.unparse(node)]
    assert guards, f"{path} has no `if __name__ == \"__main__\": main()` guard"


def test_other_packages_are_exec_depends_of_package_xml():
    needed = {spec.package for spec in all_specs() if spec.package != graph.PACKAGE}
    assert needed <= set(graph.EXTERNAL_PACKAGES)
    missing = needed - exec_depends()
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def test_node_names_are_unique_within_each_launch_graph():
    urdf = robot.urdf_xml(ros2_control_plugin="none")
    mujoco = [*graph.simulator_nodes("mujoco"), graph.robot_state_publisher_node(urdf, True),
              *graph.vla_nodes(), graph.rviz_node()]
    gazebo = [[*graph.simulator_nodes("gazebo"), *graph.controller_spawner_nodes(),
               *graph.gazebo_object_spawn_nodes(task), *graph.vla_nodes()]
              for task in tasks.load_tasks()]
    for specs in (mujoco, *gazebo):
        names = [spec.full_name for spec in specs]
        assert len(names) == len(set(names)), names


# --------------------------------------------------------------------------- ros-args


RESOLVED_NAMES = ("cam_high/image_raw", "cam_high/camera_info", "unmapped", "vla/estop", "/clock", "/diagnostics")


def parse_with_rcl(command: list[str]) -> tuple[str, dict, dict]:
    """Give the ros-args of ``command`` to rcl; return the fully qualified node name, the
    parameters and how the node resolves :data:`RESOLVED_NAMES`.

    The probe node declares every override it receives, which is exactly what rcl parsed
    (parameter files included: rcl applies their sections by fully qualified node name).
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    ros_args = command[command.index("--ros-args"):]
    context = Context()
    rclpy.init(args=["probe", *ros_args], context=context)
    try:
        node = Node("unnamed_probe", context=context,
                    automatically_declare_parameters_from_overrides=True)
        values = {name: node.get_parameter(name).value for name in node._parameters}
        resolved = {topic: node.resolve_topic_name(topic) for topic in RESOLVED_NAMES}
        name = node.get_fully_qualified_name()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return name, values, resolved


def _same(expected, actual) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, float) and math.isclose(actual, float(expected))
    if isinstance(expected, (list, tuple)):
        return list(actual) == list(expected)
    return type(actual) is type(expected) and actual == expected


RUNNER_SPECS = [
    *graph.simulator_nodes("mujoco", task="table_rearrangement", seed=7, camera_width=320,
                           camera_height=240, camera_rate_hz=10.0, real_time_factor=0.0,
                           command_interface="vendor"),
    *graph.vla_nodes(bundle_path="/tmp/bundle 1", output_mode="trajectory", instruction="42",
                     camera_topics={"cam_high": "/camera_f/color/image_raw"}),
    # The same graph in a namespace: vla.yaml's sections must still reach every node.
    *graph.simulator_nodes("mujoco", namespace="robot1"),
    *graph.vla_nodes(bundle_path="/tmp/bundle 1", output_mode="vendor", namespace="/fleet/robot1",
                     camera_topics={"cam_high": "/camera_f/color/image_raw"}),
    graph.vendor_bridge_node(namespace="robot1"),
]


@pytest.mark.parametrize("spec", RUNNER_SPECS, ids=lambda spec: spec.full_name)
def test_to_command_ros_args_are_parsed_by_rcl_as_intended(spec):
    command = graph.to_command(spec, sys.executable)
    assert command[:3] == [sys.executable, "-m", spec.module]
    name, values, resolved = parse_with_rcl(command)
    assert name == spec.full_name
    expected_parameters = graph.expected_parameters(spec)
    if spec.parameter_files:  # the file's section applies in the spec's namespace too
        assert len(expected_parameters) > len(parameter_files.flatten(spec.parameters))
    for parameter, expected in expected_parameters.items():
        assert parameter in values, f"{spec.full_name}: rcl did not receive {parameter}"
        assert _same(expected, values[parameter]), (parameter, expected, values[parameter])
    remapped = dict(spec.remappings)
    for topic in RESOLVED_NAMES:  # remapping rules name relative topics
        assert resolved[topic] == remapped.get(topic, vocab.absolute(topic, spec.namespace)), topic
    assert resolved["/clock"] == "/clock" and resolved["/diagnostics"] == "/diagnostics"


def test_strings_that_look_like_other_types_stay_strings_through_rcl():
    tricky = {"as_int": "42", "as_float": "1.5", "as_bool": "true", "empty": "",
              "quoted": 'say "hi": \\ ok\nnext line', "colon": "a: b", "unicode": "Löffel"}
    spec = graph.NodeSpec("string_probe", graph.PACKAGE, "x", module="sim2real_vla_ros.graph",
                          parameters={**tricky, "flag": True, "count": 3, "ratio": 2.0,
                                      "tiny": 1e-5, "ints": [1, 2], "floats": [1, 2.5],
                                      "names": ["left", "right"], "group": {"inner": 0.25}})
    _, values, _ = parse_with_rcl(graph.to_command(spec, sys.executable))
    for key, text in tricky.items():
        assert values[key] == text and isinstance(values[key], str), key
    assert values["flag"] is True and values["count"] == 3 and isinstance(values["count"], int)
    assert isinstance(values["ratio"], float) and values["tiny"] == pytest.approx(1e-5)
    assert list(values["ints"]) == [1, 2] and list(values["floats"]) == [1.0, 2.5]
    assert list(values["names"]) == ["left", "right"] and values["group.inner"] == 0.25


SECTION_KEYS = ("planner", "/planner", "/**/planner", "/*/planner", "/robot1/planner", "/**", "/fleet/**/planner",
                "camera_mask")
NODE_NAMESPACES = ("", "/robot1", "/fleet/robot1")


@pytest.mark.parametrize("namespace", NODE_NAMESPACES)
def test_section_matching_is_what_rcl_applies(namespace, tmp_path):
    """parameter_files' reading of section keys against rcl's own, for a planner in each namespace."""
    document = {key: {"ros__parameters": {f"section_{index}": index}} for index, key in enumerate(SECTION_KEYS)}
    document["/**/planner"]["ros__parameters"]["order"] = "wildcard"
    document["/robot1/planner"]["ros__parameters"]["order"] = "full name"  # later in the file: wins
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    spec = graph.NodeSpec("planner", graph.PACKAGE, "planner", module="sim2real_vla_ros.nodes.planner",
                          parameter_files=(str(path),), namespace=namespace)
    _, values, _ = parse_with_rcl(graph.to_command(spec, sys.executable))
    applied = {key for index, key in enumerate(SECTION_KEYS) if f"section_{index}" in values}
    assert applied == {key for key in SECTION_KEYS if parameter_files.section_applies(key, spec.full_name)}
    from_file = {key: value for key, value in values.items() if key.startswith("section_") or key == "order"}
    assert from_file == graph.expected_parameters(spec)


def test_vla_nodes_in_a_namespace():
    specs = graph.vla_nodes(params_file=VLA_YAML, namespace="robot1")
    assert {spec.full_name for spec in specs} == {
        "/robot1/camera_mask", "/robot1/planner", "/robot1/actor_left", "/robot1/actor_right", "/robot1/validator"}
    actor = next(spec for spec in specs if spec.name == "actor_left")
    assert graph.expected_parameters(actor) == graph.expected_parameters(graph.vla_nodes(params_file=VLA_YAML)[2])
    sim, = graph.simulator_nodes("mujoco", namespace="/robot1")
    assert sim.full_name == "/robot1/sim_mujoco"
    with pytest.raises(ValueError, match="namespace"):
        graph.simulator_nodes("gazebo", namespace="robot1")
    with pytest.raises(ValueError, match="namespace"):
        graph.vla_nodes(params_file=VLA_YAML, namespace="robot-1")


def test_a_params_file_keyed_by_bare_node_names_is_refused_in_a_namespace(tmp_path):
    bare = tmp_path / "bare.yaml"
    with open(VLA_YAML, encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    bare.write_text(yaml.safe_dump({key.rsplit("/", 1)[1]: section for key, section in document.items()}))
    assert len(graph.vla_nodes(params_file=str(bare))) == 5  # the root namespace: bare keys apply
    with pytest.raises(ValueError, match=r"section 'camera_mask' does not apply to /robot1/camera_mask.*'/\*\*/camera_mask'"):
        graph.vla_nodes(params_file=str(bare), namespace="robot1")


def test_contract_in_a_namespace_moves_everything_but_clock_and_diagnostics():
    root = graph.expected_connections()
    moved = graph.expected_connections(namespace="robot1")
    assert len(moved) == len(root)
    for topic, ends in root.items():
        name = topic if topic in ("/clock", "/diagnostics") else "/robot1" + topic
        assert moved[name] == ends, topic
    assert graph.expected_services(namespace="/robot1") == {
        "/robot1" + name: node for name, node in graph.expected_services().items()}
    assert graph.external_inputs("robot1") == ("/robot1/vla/instruction",)
    assert graph.EXTERNAL_INPUTS == ("/vla/instruction",)


def test_camera_remappings_in_a_namespace():
    # The graph's own camera topic in the namespace needs no rule; a global one does.
    assert graph.camera_remappings({"cam_high": "/robot1/cam_high/image_raw"}, "robot1") == ()
    assert dict(graph.camera_remappings({"cam_high": "/cam_high/image_raw"}, "robot1")) == {
        "cam_high/image_raw": "/cam_high/image_raw", "cam_high/camera_info": "/cam_high/camera_info"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [], [1, "a"], [True, 1], {1, 2}, None])
def test_unrepresentable_parameter_values_raise(value):
    with pytest.raises(ValueError):
        graph.ros_param_value(value)


def test_a_urdf_goes_through_an_overrides_file(tmp_path):
    urdf = robot.urdf_xml(ros2_control_plugin="mock")
    spec = graph.NodeSpec("description_probe", graph.PACKAGE, "x", module="sim2real_vla_ros.graph",
                          parameters={"robot_description": urdf, "use_sim_time": True})
    with pytest.raises(ValueError, match="overrides_dir"):
        graph.to_command(spec, sys.executable)
    command = graph.to_command(spec, sys.executable, overrides_dir=str(tmp_path))
    assert not any(arg.startswith("robot_description:=") for arg in command)
    _, values, _ = parse_with_rcl(command)
    assert values["robot_description"] == urdf and values["use_sim_time"] is True


def test_to_command_refuses_nodes_of_other_packages():
    spec = graph.robot_state_publisher_node(robot.urdf_xml(ros2_control_plugin="none"), True)
    assert not spec.runs_here
    with pytest.raises(ValueError, match="cannot be started here"):
        graph.to_command(spec, sys.executable)


def test_node_spec_rejects_bad_names_and_is_immutable():
    with pytest.raises(ValueError, match="node name"):
        graph.NodeSpec("bad-name", graph.PACKAGE, "x")
    with pytest.raises(ValueError, match="parameter name"):
        graph.NodeSpec("ok", graph.PACKAGE, "x", parameters={"9lives": 1})
    spec = graph.NodeSpec("ok", graph.PACKAGE, "x", parameters={"a": 1})
    with pytest.raises(TypeError):
        spec.parameters["a"] = 2


# --------------------------------------------------------------------------- parameters


def test_vla_yaml_sections_are_the_graph_nodes():
    with open(VLA_YAML, encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    node_names = {spec.name for spec in graph.vla_nodes(params_file=VLA_YAML)}
    # Keyed /**/<node> so that each section applies in any namespace (see the namespace tests).
    assert set(document) == {f"/**/{name}" for name in node_names}, \
        "vla.yaml needs exactly one section per VLA node, keyed /**/<node name>"
    for key, section in document.items():
        name = key.rsplit("/", 1)[1]
        assert set(section) == {"ros__parameters"}, name
        flat = graph.load_node_section(VLA_YAML, name)
        assert flat, f"section {name} is empty"
        for parameter in flat:
            assert parameter_files.PARAMETER_NAME.match(parameter), f"{name}: invalid parameter name {parameter!r}"
    for arm in graph.ARMS:
        actor = graph.load_node_section(VLA_YAML, graph.actor_node_name(arm))
        assert actor["arm"] == arm
        assert actor["output_mode"] in graph.OUTPUT_MODES
        assert actor["blend"] in BLEND_MODES
        assert set(actor) == set(graph.load_node_section(VLA_YAML, "actor_left")), \
            "both actor sections must set the same parameters"


def test_graph_overrides_keep_the_yaml_types():
    """An override must have the type the params file gives the same parameter (rcl refuses a change)."""
    for spec in graph.vla_nodes(params_file=VLA_YAML, bundle_path="/b", output_mode="vendor",
                                instruction="x"):
        from_file = graph.load_node_section(VLA_YAML, spec.name)
        for key, value in parameter_files.flatten(spec.parameters).items():
            if key in from_file:
                assert type(value) is type(from_file[key]), (spec.name, key)


def test_vla_nodes_apply_the_launch_arguments():
    specs = {spec.name: spec for spec in graph.vla_nodes(
        bundle_path="/models/x", params_file=VLA_YAML, arms="left", output_mode="vendor",
        use_sim_time=False, instruction="Pick up the bottle")}
    assert set(specs) == {"camera_mask", "planner", "actor_left", "validator"}
    assert all(spec.parameters["bundle_path"] == "/models/x" for spec in specs.values())
    assert all(spec.parameters["use_sim_time"] is False for spec in specs.values())
    assert all(spec.parameter_files == (VLA_YAML,) for spec in specs.values())
    assert specs["actor_left"].parameters["output_mode"] == "vendor"
    assert specs["actor_left"].parameters["arm"] == "left"
    assert specs["planner"].parameters["instruction"] == "Pick up the bottle"
    defaults = {spec.name: spec for spec in graph.vla_nodes(params_file=VLA_YAML)}
    assert "bundle_path" not in defaults["planner"].parameters  # '' keeps the node's default
    assert "output_mode" not in defaults["actor_right"].parameters  # None keeps the file's value
    expected = graph.expected_parameters(specs["actor_left"])
    assert expected["output_mode"] == "vendor" and expected["control_rate_hz"] == 50.0
    with pytest.raises(ValueError, match="output_mode"):
        graph.vla_nodes(params_file=VLA_YAML, output_mode="teleport")
    with pytest.raises(ValueError, match="arms"):
        graph.vla_nodes(params_file=VLA_YAML, arms="left,middle")


def test_camera_remappings_point_at_the_driver_topics():
    rules = dict(graph.camera_remappings({"cam_high": "/camera_f/color/image_raw",
                                          "cam_left_wrist": "/cam_left_wrist/image_raw"}))
    assert rules == {"cam_high/image_raw": "/camera_f/color/image_raw",
                     "cam_high/camera_info": "/camera_f/color/camera_info"}
    with pytest.raises(ValueError, match="absolute"):
        graph.camera_remappings({"cam_high": "camera_f/image"})
    with pytest.raises(ValueError, match="camera"):
        graph.camera_remappings({"cam_top": "/x/image_raw"})


def test_simulator_spec_matches_the_sim_node_parameters():
    spec, = graph.simulator_nodes("mujoco", task="pour_water_single", seed=3, camera_rate_hz=5.0,
                                  command_interface="vendor", extra_parameters={"jitter": False})
    assert spec.name == graph.SIM_NODE and spec.executable == "sim_mujoco"
    assert dict(spec.parameters) == {"task": "pour_water_single", "seed": 3, "camera_rate_hz": 5.0,
                                     "command_interface": "vendor", "jitter": False}
    # The simulator owns /clock: it is never told to follow it.
    assert "use_sim_time" not in spec.parameters
    with pytest.raises(ValueError, match="command_interface"):
        graph.simulator_nodes("mujoco", command_interface="trajectory")
    with pytest.raises(ValueError, match="sim"):
        graph.simulator_nodes("isaac")


# --------------------------------------------------------------------------- robot side


def test_robot_nodes_per_interface():
    hardware = robot.urdf_xml(ros2_control_plugin="hardware", can_interface_left="can0")
    specs = graph.robot_nodes(hardware, interface="ros2_control")
    assert [spec.executable for spec in specs] == [
        "robot_state_publisher", "ros2_control_node", "spawner", "spawner", "spawner", "spawner", "spawner"]
    manager = specs[1]
    assert manager.parameter_files == (graph.share_file("config", "controllers.yaml"),)
    assert os.path.isfile(manager.parameter_files[0])
    assert ("~/robot_description", "robot_description") in manager.remappings
    assert "robot_description" not in manager.parameters
    spawned = {spec.arguments[0]: "--inactive" not in spec.arguments for spec in specs[2:]}
    assert spawned == {"joint_state_broadcaster": True, "left_arm_controller": True, "right_arm_controller": True,
                       "left_arm_position_controller": False, "right_arm_position_controller": False}
    with open(manager.parameter_files[0], encoding="utf-8") as stream:
        controllers = yaml.safe_load(stream)["controller_manager"]["ros__parameters"]
    assert all(spec.arguments[0] in controllers for spec in specs[2:])
    assert "robot_description" in graph.robot_nodes(hardware, humble=True)[1].parameters
    # Stream mode: the forward position controllers own the joints, the JTCs wait inactive.
    stream = graph.robot_nodes(hardware, interface="ros2_control", output_mode="stream")
    spawned = {spec.arguments[0]: "--inactive" not in spec.arguments for spec in stream[2:]}
    assert spawned == {"joint_state_broadcaster": True, "left_arm_controller": False, "right_arm_controller": False,
                       "left_arm_position_controller": True, "right_arm_position_controller": True}
    with pytest.raises(ValueError, match="output_mode"):
        graph.robot_nodes(hardware, interface="ros2_control", output_mode="vendor")

    none_urdf = robot.urdf_xml(ros2_control_plugin="none")
    vendor = graph.robot_nodes(none_urdf, interface="vendor", use_sim_time=True)
    assert [spec.name for spec in vendor] == ["robot_state_publisher", "vendor_bridge"]
    bridge = vendor[1]
    assert bridge.runs_here and bridge.module == "sim2real_vla_ros.nodes.vendor_bridge"
    assert bridge.parameters["use_sim_time"] is True
    with pytest.raises(ValueError, match="output_mode"):
        graph.robot_nodes(none_urdf, interface="vendor", output_mode="stream")
    with pytest.raises(ValueError, match="ros2_control"):
        graph.robot_nodes(robot.urdf_xml(ros2_control_plugin="none"), interface="mock")
    with pytest.raises(ValueError, match="interface"):
        graph.robot_nodes(hardware, interface="can")


def test_initial_trajectory_reaches_the_task_start_pose():
    task = tasks.get_task("table_rearrangement")
    message = json.loads(graph.initial_trajectory_yaml(task.name, "right", 2.5))
    assert message["joint_names"] == robot.arm_joint_names("right")
    point, = message["points"]
    assert point["positions"] == pytest.approx(task.init_joints("right").tolist())
    assert point["time_from_start"] == {"sec": 2, "nanosec": 500_000_000}
    with pytest.raises(ValueError):
        graph.initial_trajectory_yaml(task.name, "right", 0.0)


def test_launch_node_kwargs_without_string_parameters():
    spec = graph.NodeSpec("ok", "pkg", "exe", parameters={"rate": 2.0, "nested": {"n": 1}},
                          parameter_files=("/a.yaml",), remappings=(("/x", "/y"),),
                          arguments=("-d", "f.rviz"))
    kwargs = graph.launch_node_kwargs(spec)
    assert kwargs == {"package": "pkg", "executable": "exe", "name": "ok", "output": "screen",
                      "parameters": ["/a.yaml", {"rate": 2.0, "nested": {"n": 1}}],
                      "remappings": [("/x", "/y")], "arguments": ["-d", "f.rviz"]}
    assert "namespace" not in kwargs  # launch_ros then applies a namespace an including file pushes
    assert graph.launch_node_kwargs(graph.vla_nodes(namespace="robot1")[0])["namespace"] == "robot1"


@pytest.mark.ros_launch
def test_launch_node_kwargs_build_a_launch_ros_node():
    pytest.importorskip("launch_ros.actions", reason="launch_ros is not installable here (no full ROS 2 install)")
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    for spec in graph.vla_nodes(bundle_path="/b", instruction="1"):
        kwargs = graph.launch_node_kwargs(spec)
        assert isinstance(kwargs["parameters"][-1]["bundle_path"], ParameterValue)
        Node(**kwargs)


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize("output_mode,command_interface", [("trajectory", "ros2_control"),
                                                           ("stream", "ros2_control"),
                                                           ("vendor", "vendor"),
                                                           ("stream", None), ("vendor", None)])
def test_every_subscription_has_a_publisher_in_the_dry_run_graph(output_mode, command_interface):
    connections = graph.expected_connections(output_mode=output_mode, command_interface=command_interface)
    orphans = [topic for topic, ends in connections.items()
               if ends.subscribers and not ends.publishers and topic not in graph.EXTERNAL_INPUTS]
    assert not orphans, f"subscribed but never published: {orphans}"
    for arm in graph.ARMS:
        command = connections[vocab.absolute(graph.arm_command_topic(arm, output_mode))]
        assert command.publishers == {graph.actor_node_name(arm)}
        assert command.subscribers == {graph.SIM_NODE}
    assert connections["/joint_states"].publishers == {graph.SIM_NODE}
    assert graph.VENDOR_BRIDGE_NODE not in set().union(*(e.publishers | e.subscribers for e in connections.values()))


def test_command_interface_follows_the_output_mode():
    assert [graph.command_interface_for(mode) for mode in graph.OUTPUT_MODES] == [
        "ros2_control", "ros2_control", "vendor"]
    with pytest.raises(ValueError, match="output_mode"):
        graph.command_interface_for("teleport")


def test_real_robot_vendor_graph_relays_puppet_state_into_joint_states():
    connections = graph.expected_connections(simulator=None, output_mode="vendor")
    for arm in graph.ARMS:
        puppet = connections[f"/puppet/joint_{arm}"]
        assert puppet.subscribers == {graph.VENDOR_BRIDGE_NODE} and puppet.publishers == frozenset()  # the driver
        master = connections[f"/master/joint_{arm}"]
        assert master.publishers == {graph.actor_node_name(arm)} and master.subscribers == frozenset()
    joint_states = connections["/joint_states"]
    assert joint_states.publishers == {graph.VENDOR_BRIDGE_NODE}
    assert {"actor_left", "actor_right", "validator"} <= joint_states.subscribers
    assert graph.VENDOR_BRIDGE_NODE in connections["/diagnostics"].publishers
    # With ros2_control the joint_state_broadcaster (outside the graph) publishes /joint_states.
    assert connections.keys() >= {"/joint_states"}
    trajectory = graph.expected_connections(simulator=None, output_mode="trajectory")
    assert trajectory["/joint_states"].publishers == frozenset()
    assert "/puppet/joint_left" not in trajectory


def test_connections_name_only_nodes_of_the_graph():
    urdf = robot.urdf_xml(ros2_control_plugin="none")
    specs = [*graph.simulator_nodes("mujoco"), *graph.vla_nodes(),
             graph.robot_state_publisher_node(urdf, True)]
    names = {spec.name for spec in specs}
    connections = graph.expected_connections(robot_state_publisher=True)
    mentioned = set().union(*(ends.publishers | ends.subscribers for ends in connections.values()))
    assert mentioned == names
    assert set(graph.expected_services().values()) <= names


def test_real_robot_graph_leaves_camera_publishers_to_the_drivers():
    connections = graph.expected_connections(simulator=None, arms=("left",))
    assert connections["/cam_high/image_raw"].publishers == frozenset()
    assert connections["/cam_high/image_raw"].subscribers == {"camera_mask"}
    assert "actor_right" not in connections["/vla/affordance/right"].subscribers
    assert "/sim/reset" not in graph.expected_services(simulator=None)


@pytest.mark.parametrize("arm", graph.ARMS)
def test_position_controllers_in_controllers_yaml_forward_the_arm_joints(arm):
    with open(graph.share_file("config", "controllers.yaml"), encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    name = graph.POSITION_CONTROLLERS[arm]
    assert graph.arm_command_topic(arm, "stream") == f"{name}/commands"
    manager = document["controller_manager"]["ros__parameters"]
    assert manager[name]["type"] == "forward_command_controller/ForwardCommandController"
    # forward_command_controller's parameters (generate_parameter_library): joints, interface_name.
    assert document[name]["ros__parameters"] == {"joints": robot.arm_joint_names(arm), "interface_name": "position"}
    # The same joints as the trajectory controller it replaces, so only one can be active.
    assert document[graph.ARM_CONTROLLERS[arm]]["ros__parameters"]["joints"] == robot.arm_joint_names(arm)
    active, inactive = graph.arm_controller_names("stream")
    assert name in active and graph.ARM_CONTROLLERS[arm] in inactive
    with pytest.raises(ValueError, match="inactive"):
        graph.controller_spawner_nodes(["joint_state_broadcaster"], inactive=[name])


def test_dry_run_param_overrides_reach_only_their_node_and_are_checked():
    from sim2real_vla_ros.tools import dry_run

    options = dry_run.parse_args(["--param", 'validator.scripted_probabilities:="1.0"',
                                  "--param", "validator.max_input_age_s.wrist:=0.7", "--param", "planner.autostart:=true"])
    assert options.node_parameters == {"validator": {"scripted_probabilities": "1.0", "max_input_age_s.wrist": 0.7},
                                       "planner": {"autostart": True}}
    specs = {spec.name: spec for spec in dry_run.graph_specs(options)}
    validator = graph.to_command(specs["validator"], sys.executable)
    assert 'scripted_probabilities:="1.0"' in validator and "max_input_age_s.wrist:=0.7" in validator
    assert "use_sim_time:=true" in validator  # a test hook needs it, and the dry run always runs on sim time
    assert not any("scripted_probabilities" in arg for arg in graph.to_command(specs["camera_mask"], sys.executable))
    with pytest.raises(ValueError, match="NODE.NAME:=VALUE"):
        dry_run.parse_args(["--param", "threshold:=0.6"])
    with pytest.raises(ValueError, match=r"\['vendor_bridge'\]"):
        dry_run.parse_args(["--param", "vendor_bridge.max_age_s:=0.2"])
