"""Launch files, Gazebo world and bridge, rviz config: everything that can be checked without ROS launch.

``launch`` / ``launch_ros``, Gazebo and rviz2 are not installable here, so the launch files are
checked statically (they compile, every argument has a description, every package file, graph
function, include and xacro argument they name exists) and the files they hand to Gazebo and
rviz2 are parsed. ``test_generate_launch_description_builds_the_actions`` runs them for real
where ``launch`` is installed and is skipped here with that reason.
"""
import ast
import importlib.util
import os
import py_compile
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import yaml

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim import gazebo_scene
from sim2real_vla_ros.sim.objects import add_object, object_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_DIR = os.path.join(REPO, "launch")
LAUNCH_FILES = sorted(name for name in os.listdir(LAUNCH_DIR) if name.endswith(".launch.py"))
EXPECTED_LAUNCH_FILES = {"robot.launch.py", "vla.launch.py", "sim_mujoco.launch.py",
                         "sim_gazebo.launch.py", "rviz.launch.py"}
# Launch files of other packages that ours include.
EXTERNAL_INCLUDES = {"gz_sim.launch.py": "ros_gz_sim"}
WORLD = os.path.join(REPO, "config", "worlds", "cobot_magic_table.sdf")
BRIDGE = os.path.join(REPO, "config", "gz_bridge.yaml")
RVIZ = os.path.join(REPO, "config", "sim2real_vla.rviz")
XACRO = os.path.join(REPO, "urdf", "cobot_magic.urdf.xacro")


def launch_tree(name: str) -> ast.Module:
    with open(os.path.join(LAUNCH_DIR, name), encoding="utf-8") as stream:
        return ast.parse(stream.read(), filename=name)


def calls_named(tree: ast.AST, function: str) -> list[ast.Call]:
    """Calls of ``function`` or ``anything.function``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name == function:
                found.append(node)
    return found


def string_constants(tree: ast.AST) -> set[str]:
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def argument_table(tree: ast.Module) -> list[tuple[ast.AST, ast.AST, ast.AST]]:
    """(name, default, description) nodes of the module's ARGUMENTS table, generators included."""
    rows = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets):
            for element in node.value.elts:
                if isinstance(element, ast.Starred):
                    element = element.value.elt  # (... for ... in ...)
                assert isinstance(element, ast.Tuple) and len(element.elts) == 3, ast.unparse(element)
                rows.append(tuple(element.elts))
    return rows


def xacro_arguments() -> dict[str, str]:
    root = ET.parse(XACRO).getroot()
    tag = "{http://www.ros.org/wiki/xacro}arg"
    return {element.get("name"): element.get("default") for element in root.iter(tag)}


# --------------------------------------------------------------------------- launch files


def test_the_five_launch_files_exist():
    assert EXPECTED_LAUNCH_FILES <= set(LAUNCH_FILES)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_compiles_and_defines_a_typed_generate_launch_description(name, tmp_path):
    py_compile.compile(os.path.join(LAUNCH_DIR, name), cfile=str(tmp_path / "x.pyc"), doraise=True)
    tree = launch_tree(name)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    returns = functions["generate_launch_description"].returns
    assert returns is not None and ast.unparse(returns) == "LaunchDescription"
    assert ast.get_docstring(tree), f"{name} needs a module docstring saying what it starts"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_launch_argument_has_a_description(name):
    tree = launch_tree(name)
    declarations = calls_named(tree, "DeclareLaunchArgument")
    assert declarations, f"{name} declares no launch argument"
    for call in declarations:
        description = next((k.value for k in call.keywords if k.arg == "description"), None)
        assert description is not None, f"{name}: {ast.unparse(call)} has no description"
        if isinstance(description, ast.Constant):
            assert description.value.strip(), f"{name}: empty description in {ast.unparse(call)}"
    names = []
    for name_node, _default, description in argument_table(tree):
        assert isinstance(description, (ast.Constant, ast.JoinedStr)), ast.unparse(description)
        if isinstance(description, ast.Constant):
            assert len(description.value.strip()) > 10, description.value
        names.append(ast.unparse(name_node))
    assert len(names) == len(set(names)), f"{name}: duplicate launch arguments {names}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_graph_functions_used_by_launch_files_exist(name):
    tree = launch_tree(name)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "graph"}
    missing = sorted(attr for attr in used if not hasattr(graph, attr))
    assert not missing, f"{name} uses graph.{missing}, which the graph package does not export"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_package_files_and_includes_named_by_launch_files_exist(name):
    tree = launch_tree(name)
    for call in calls_named(tree, "share_file"):
        parts = [ast.literal_eval(arg) for arg in call.args]
        assert os.path.exists(os.path.join(REPO, *parts)), f"{name}: share file {parts} is missing"
    for constant in string_constants(tree):
        if constant.endswith(".launch.py"):
            if constant in EXTERNAL_INCLUDES:
                assert EXTERNAL_INCLUDES[constant] in string_constants(tree)
            else:
                assert os.path.isfile(os.path.join(LAUNCH_DIR, constant)), f"{name}: include {constant} missing"
    for call in calls_named(tree, "get_package_share_directory"):
        package = ast.literal_eval(call.args[0])
        root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
        assert package in {e.text for e in root.findall("exec_depend")}, package


def test_graph_share_files_exist():
    package = os.path.join(REPO, "sim2real_vla_ros", "graph")
    calls = []
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), encoding="utf-8") as stream:
                calls += [(name, call) for call in calls_named(ast.parse(stream.read()), "share_file")]
    assert calls
    for name, call in calls:
        if call.args and all(isinstance(arg, ast.Constant) for arg in call.args):
            parts = [arg.value for arg in call.args]
            assert os.path.exists(os.path.join(REPO, *parts)), f"graph/{name} names missing {parts}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_xacro_arguments_used_by_launch_files_are_declared_in_the_xacro(name):
    declared = xacro_arguments()
    assert set(robot.XACRO_ARGS) == set(declared)
    for call in calls_named(launch_tree(name), "urdf_xml"):
        for keyword in call.keywords:
            assert keyword.arg in declared, f"{name}: xacro argument {keyword.arg!r} is not in the xacro"
        plugin = next((k.value for k in call.keywords if k.arg == "ros2_control_plugin"), None)
        if isinstance(plugin, ast.Constant):
            assert plugin.value in robot.ROS2_CONTROL_PLUGINS


def test_robot_launch_defaults_agree_with_the_xacro():
    declared = xacro_arguments()
    rows = {ast.literal_eval(n): d for n, d, _ in argument_table(launch_tree("robot.launch.py"))
            if isinstance(n, ast.Constant)}
    for argument in ("hardware_plugin", "can_interface_left", "can_interface_right"):
        assert ast.literal_eval(rows[argument]) == declared[argument], argument
    tree = launch_tree("robot.launch.py")
    plugin_map = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                      and getattr(node.targets[0], "id", "") == "XACRO_PLUGIN")
    mapping = ast.literal_eval(plugin_map)
    assert set(mapping) == set(graph.ROBOT_INTERFACES)
    assert set(mapping.values()) <= set(robot.ROS2_CONTROL_PLUGINS)


def require_ros_launch():
    """The ROS ``launch`` package, or a skip. Our own ``launch/`` folder is importable as a
    namespace package from the repository root, so check for the real API, not the name."""
    reason = "launch / launch_ros are not installable here (no full ROS 2 install)"
    launch = pytest.importorskip("launch", reason=reason)
    if not hasattr(launch, "LaunchDescription"):
        pytest.skip(reason)
    pytest.importorskip("launch_ros.actions", reason=reason)
    return launch


@pytest.mark.ros_launch
@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_generate_launch_description_builds_the_actions(name):
    """Where ROS launch exists: build each description and run its OpaqueFunctions (no process starts)."""
    launch = require_ros_launch()
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    if name == "sim_gazebo.launch.py":
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            get_package_share_directory("ros_gz_sim")
        except PackageNotFoundError:
            pytest.skip("ros_gz_sim is not installed")
    module_spec = importlib.util.spec_from_file_location(name.replace(".", "_"), os.path.join(LAUNCH_DIR, name))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
    context = launch.LaunchContext()
    nodes = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.visit(context)
        elif isinstance(entity, OpaqueFunction):
            for action in entity.visit(context) or []:
                if isinstance(action, Node):
                    nodes.append(action)
    assert nodes, f"{name} started no node"


# --------------------------------------------------------------------------- Gazebo


def test_world_sdf_has_physics_and_the_systems_the_launch_needs():
    root = ET.parse(WORLD).getroot()
    world = root.find("world")
    assert root.tag == "sdf" and world.get("name") == graph.GAZEBO_WORLD
    assert float(world.findtext("physics/max_step_size")) <= 0.002  # >= 500 Hz like the controllers
    plugins = {plugin.get("filename"): plugin for plugin in world.findall("plugin")}
    for needed in ("gz-sim-physics-system", "gz-sim-user-commands-system",
                   "gz-sim-scene-broadcaster-system", "gz-sim-sensors-system"):
        assert needed in plugins, f"world lacks {needed}"
    assert plugins["gz-sim-sensors-system"].findtext("render_engine") == "ogre2"
    assert world.find("light") is not None
    assert world.find("model[@name='ground_plane']/link/collision/geometry/plane") is not None
    # The table comes with the robot description (as in MuJoCo): never a second one here.
    assert not any("table" in (model.get("name") or "") for model in world.findall("model"))


def test_bridge_carries_clock_and_every_gazebo_camera_sensor_topic():
    with open(BRIDGE, encoding="utf-8") as stream:
        entries = yaml.safe_load(stream)
    urdf = robot.urdf_xml(ros2_control_plugin="gazebo")
    sensor_topics = {}
    for sensor in ET.fromstring(urdf).iter("sensor"):
        sensor_topics["/" + sensor.findtext("topic").lstrip("/")] = "sensor_msgs/msg/Image"
        info = sensor.findtext("camera/camera_info_topic")
        sensor_topics["/" + info.lstrip("/")] = "sensor_msgs/msg/CameraInfo"
    bridged = {}
    for entry in entries:
        assert set(entry) == {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
        assert entry["direction"] == "GZ_TO_ROS"
        assert entry["ros_topic_name"] == entry["gz_topic_name"]
        bridged[entry["ros_topic_name"]] = (entry["ros_type_name"], entry["gz_type_name"])
    expected = {"/clock": ("rosgraph_msgs/msg/Clock", "gz.msgs.Clock")}
    for camera in robot.CAMERAS:
        expected[f"/{camera}/image_raw"] = ("sensor_msgs/msg/Image", "gz.msgs.Image")
        expected[f"/{camera}/camera_info"] = ("sensor_msgs/msg/CameraInfo", "gz.msgs.CameraInfo")
    assert bridged == expected
    assert {topic: types[0] for topic, types in bridged.items() if topic != "/clock"} == sensor_topics
    # What the bridge publishes is what the VLA graph reads from a simulator.
    connections = graph.expected_connections()
    assert set(bridged) <= {topic for topic, ends in connections.items() if graph.SIM_NODE in ends.publishers}


def test_gazebo_urdf_spawns_with_gz_ros2_control_and_the_controllers_file():
    root = ET.fromstring(robot.urdf_xml(ros2_control_plugin="gazebo"))
    plugin = root.find("gazebo/plugin[@filename='gz_ros2_control-system']")
    assert plugin is not None
    assert os.path.realpath(plugin.findtext("parameters")) == os.path.realpath(
        os.path.join(REPO, "config", "controllers.yaml"))
    assert root.find("joint[@name='world_joint']") is not None


@pytest.mark.parametrize("task", list(tasks.load_tasks()))
def test_gazebo_objects_come_from_the_task_sampling(task):
    spec = tasks.get_task(task)
    table_z = robot.table_top().z
    placed = gazebo_scene.scene_objects(task, seed=5)
    assert [p.name for p in placed] == [o.name for o in spec.objects]
    expected = tasks.sample_scene(spec, np.random.default_rng(5))
    for item, obj in zip(placed, spec.objects):
        x, y, z = item.position
        assert (x, y, item.yaw) == pytest.approx(expected[obj.name])
        assert obj.x_range[0] <= x <= obj.x_range[1] and obj.y_range[0] <= y <= obj.y_range[1]
        lift = object_model(spec.object(obj.on).kind).height if obj.on else 0.0
        assert z == pytest.approx(table_z + gazebo_scene.DROP_CLEARANCE_M + lift)
        model = ET.fromstring(item.sdf).find("model")
        assert model.get("name") == obj.name
        link = model.find("link")
        assert len(link.findall("collision")) == len(object_model(obj.kind).parts) == len(link.findall("visual"))
    assert [p.position for p in gazebo_scene.scene_objects(task)] == \
        [p.position for p in gazebo_scene.scene_objects(task, seed=spec.seed)]


@pytest.mark.parametrize("kind", tasks.OBJECT_KINDS)
def test_gazebo_object_mass_and_inertia_match_mujoco(kind):
    """Independent check of the SDF inertial: MuJoCo computes the same object's body inertia itself."""
    model = object_model(kind)
    inertial = ET.fromstring(gazebo_scene.object_sdf(model)).find("model/link/inertial")
    mass = float(inertial.findtext("mass"))
    values = {key: float(inertial.findtext(f"inertia/{key}")) for key in
              ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")}
    sdf_inertia = np.array([[values["ixx"], values["ixy"], values["ixz"]],
                            [values["ixy"], values["iyy"], values["iyz"]],
                            [values["ixz"], values["iyz"], values["izz"]]])
    com = np.array([float(v) for v in inertial.findtext("pose").split()[:3]])

    spec = mujoco.MjSpec()
    add_object(spec, model)
    compiled = spec.compile()
    body = compiled.body(model.name).id
    assert mass == pytest.approx(compiled.body_mass[body], rel=1e-5)
    assert com == pytest.approx(compiled.body_ipos[body], abs=1e-6)
    principal = np.sort(np.linalg.eigvalsh(sdf_inertia))
    expected = np.sort(compiled.body_inertia[body])
    assert principal == pytest.approx(expected, rel=1e-4)
    assert np.all(principal > 0)
    assert principal[2] <= principal[0] + principal[1] + 1e-12  # triangle inequality


# --------------------------------------------------------------------------- rviz


def test_rviz_config_shows_the_robot_the_cameras_and_the_affordances():
    with open(RVIZ, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == robot.BASE_LINK
    displays = {display["Class"]: [] for display in manager["Displays"]}
    topics = []
    for display in manager["Displays"]:
        topic = display.get("Topic", display.get("Description Topic"))
        if topic is not None:
            displays[display["Class"]].append(topic["Value"])
            topics.append(topic["Value"])
    assert displays["rviz_default_plugins/RobotModel"] == ["/robot_description"]
    assert "rviz_default_plugins/TF" in displays
    assert displays["rviz_default_plugins/MarkerArray"] == ["/vla/affordance_markers"]
    assert sorted(displays["rviz_default_plugins/Image"]) == sorted(
        [f"/{camera}/image_raw" for camera in robot.CAMERAS] + ["/vla/affordance_overlay"])
    known = set(graph.expected_connections(robot_state_publisher=True))
    assert set(topics) <= known, f"rviz names topics outside the graph: {set(topics) - known}"
