"""Node specs: every process the stack starts, described once as a :class:`NodeSpec`.

The builders here (:func:`simulator_nodes`, :func:`vla_nodes`, :func:`robot_nodes`, the
Gazebo and rviz ones) are what the launch files (through :mod:`.launch_adapter`) and the dry
run (through :mod:`.command_line`) start; :mod:`.contract` states what the running graph must
then look like. A ``namespace`` given to :func:`simulator_nodes`, :func:`vla_nodes` or
:func:`vendor_bridge_node` moves those nodes and every relative topic and service they use
under it (core.vocabulary); ``/clock`` and ``/diagnostics`` stay global.

Pure Python: no launch, launch_ros or rclpy import.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS, OUTPUT_MODES, absolute
from sim2real_vla_ros.graph.parameter_files import PARAMETER_NAME, flatten, load_node_section, sections_missing_the_node

PACKAGE = "sim2real_vla_ros"
# How the simulator (or the real robot without ros2_control) takes arm commands.
COMMAND_INTERFACES = ("ros2_control", "vendor")  # the sim node's command_interface
# The default actor output mode for each command interface.
OUTPUT_MODE_FOR_INTERFACE = {"ros2_control": "trajectory", "vendor": "vendor"}
# Every output mode an interface can take: ros2_control runs a joint_trajectory_controller
# (trajectory) or a forward_command_controller (stream) per arm; the vendor driver takes
# /master/joint_<arm> only.
OUTPUT_MODES_OF_INTERFACE = {"ros2_control": ("trajectory", "stream"), "vendor": ("vendor",)}
ROBOT_INTERFACES = ("ros2_control", "mock", "vendor", "piper")

# Node names.
SIM_NODE = "sim_mujoco"
CAMERA_MASK_NODE = "camera_mask"
PLANNER_NODE = "planner"
VALIDATOR_NODE = "validator"
ROBOT_STATE_PUBLISHER_NODE = "robot_state_publisher"
CONTROLLER_MANAGER_NODE = "controller_manager"
GZ_BRIDGE_NODE = "gz_bridge"
RVIZ_NODE = "rviz2"
VENDOR_BRIDGE_NODE = "vendor_bridge"
PIPER_DRIVER_NODE = "piper_driver"
LIFECYCLE_MANAGER_NODE = "vla_lifecycle_manager"

# ros2_control controllers of config/controllers.yaml, in spawn order.
JOINT_STATE_BROADCASTER = "joint_state_broadcaster"
ARM_CONTROLLERS = {arm: vocab.trajectory_controller(arm) for arm in ARMS}  # joint_trajectory_controller
# forward_command_controller per arm (output_mode stream); only one of the two may be active.
POSITION_CONTROLLERS = {arm: vocab.position_controller(arm) for arm in ARMS}

# Gazebo: the world's <world name>, the spawned robot's entity name.
GAZEBO_WORLD = "cobot_magic_table"
GAZEBO_ROBOT_ENTITY = "cobot_magic"

EXTERNAL_PACKAGES = (
    "robot_state_publisher", "controller_manager", "ros_gz_sim", "ros_gz_bridge", "rviz2",
)

_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# '' (root), 'robot1', '/robot1', '/fleet/robot1': ROS name tokens separated by '/'.
_NAMESPACE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*)?$")


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class NodeSpec:
    """One process of the graph.

    Attributes
    ----------
    name : str
        Node name (``-r __node:=name``); unique in the graph.
    package, executable : str
        ROS package and executable, as ``ros2 run`` / launch_ros take them.
    module : str or None
        For this package's Python nodes: the module whose ``main()`` the console script
        calls (``setup.py`` entry point ``executable = module:main``). None for nodes of other
        packages (C++ or not installable here): the dry run cannot start those.
    parameters : Mapping[str, Any]
        Overrides applied after ``parameter_files`` (later wins); nested mappings are ROS
        parameter namespaces (``{"a": {"b": 1}}`` is ``a.b``).
    parameter_files : tuple of str
        ROS parameter YAML files; rcl applies a section whose key matches the node's
        fully qualified name (:mod:`.parameter_files`).
    remappings : tuple of (str, str)
        Topic / service remappings ``(from, to)``.
    arguments : tuple of str
        Non-ROS command-line arguments (e.g. rviz2's ``-d file``, a spawner's controller).
    namespace : str
        Node namespace ('' = root; ``robot1`` and ``/robot1`` both mean ``/robot1`` to
        :func:`.command_line.to_command`; launch_ros puts a relative one under a pushed
        namespace).
    """

    name: str
    package: str
    executable: str
    module: Optional[str] = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    parameter_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    namespace: str = ""

    def __post_init__(self) -> None:
        if not _NODE_NAME.match(self.name):
            raise ValueError(f"NodeSpec: invalid node name {self.name!r}")
        absolute_namespace(self.namespace)  # ValueError for an invalid one
        for key in flatten(self.parameters):
            if not PARAMETER_NAME.match(key):
                raise ValueError(f"NodeSpec {self.name}: invalid parameter name {key!r}")
        # Read-only view: a spec is shared by launch files and runners and must not change.
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "parameter_files", tuple(self.parameter_files))
        object.__setattr__(self, "remappings", tuple((str(a), str(b)) for a, b in self.remappings))
        object.__setattr__(self, "arguments", tuple(str(a) for a in self.arguments))

    @property
    def runs_here(self) -> bool:
        """True for this package's Python nodes, which :func:`.command_line.to_command` can start."""
        return self.module is not None

    @property
    def absolute_namespace(self) -> str:
        """``''`` for the root namespace, else ``/robot1`` (leading slash, none trailing)."""
        return absolute_namespace(self.namespace)

    @property
    def full_name(self) -> str:
        """Fully qualified node name, e.g. ``/planner`` or ``/robot1/planner``."""
        return f"{self.absolute_namespace}/{self.name}"


# --------------------------------------------------------------------------- small helpers


def parse_bool(text: Any, name: str = "value") -> bool:
    """A launch-argument boolean: true/false/1/0/yes/no (any case); ValueError otherwise."""
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {text!r}")


def parse_arms(text: Any) -> tuple[str, ...]:
    """``'left,right'`` / ``'left'`` / a sequence -> validated tuple of arms, in ARMS order."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    unknown = sorted(set(items) - set(ARMS))
    if not items or unknown:
        raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {text!r}")
    return tuple(arm for arm in ARMS if arm in items)


def actor_node_name(arm: str) -> str:
    """``actor_left`` / ``actor_right``."""
    check_choice("arm", arm, ARMS)
    return f"actor_{arm}"


def command_interface_for(output_mode: str) -> str:
    """The robot / simulator command interface an actor output mode needs.

    ``trajectory`` and ``stream`` go to ros2_control controllers (in the MuJoCo simulator:
    ``command_interface:=ros2_control``, which takes both), ``vendor`` to the vendor driver.
    """
    check_choice("output_mode", output_mode, OUTPUT_MODES)
    return next(interface for interface, modes in OUTPUT_MODES_OF_INTERFACE.items() if output_mode in modes)


def share_file(*parts: str) -> str:
    """Installed path of a package share file (through the ament index)."""
    from sim2real_vla_ros.paths import share_path

    return share_path(*parts)


def default_params_file() -> str:
    """``config/vla.yaml`` of the installed package."""
    return share_file("config", "vla.yaml")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """ValueError naming ``name`` and the choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def absolute_namespace(namespace: str) -> str:
    """``''`` / ``'/'`` -> ``''``; ``'robot1'`` / ``'/robot1'`` -> ``'/robot1'``.

    Raises
    ------
    ValueError
        Not a ROS namespace (name tokens ``[A-Za-z_][A-Za-z0-9_]*`` separated by ``/``).
    """
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid ROS namespace {namespace!r}: name tokens [A-Za-z_][A-Za-z0-9_]* "
                         "separated by '/', e.g. robot1 or /fleet/robot1")
    stripped = namespace.strip("/")
    return "/" + stripped if stripped else ""


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# --------------------------------------------------------------------------- simulator


def simulator_nodes(sim: str = "mujoco", *, task: Optional[str] = None, seed: Optional[int] = None,
                    camera_width: Optional[int] = None, camera_height: Optional[int] = None,
                    camera_rate_hz: Optional[float] = None,
                    joint_state_rate_hz: Optional[float] = None,
                    real_time_factor: Optional[float] = None,
                    command_interface: Optional[str] = None,
                    extra_parameters: Optional[Mapping[str, Any]] = None,
                    use_sim_time: bool = True,
                    gz_bridge_config: Optional[str] = None, namespace: str = "") -> list[NodeSpec]:
    """The simulator's ROS processes.

    Parameters
    ----------
    sim : {'mujoco', 'gazebo'}
        'mujoco': the embedded MuJoCo node (console script ``sim_mujoco``), which owns
        ``/clock``. 'gazebo': the ros_gz bridge (images, camera_info, /clock) and the robot's
        ``ros_gz_sim create`` (the task objects: :func:`gazebo_object_spawn_nodes`; the
        controller spawners: :func:`controller_spawner_nodes`; gz sim itself is started by
        ``ros_gz_sim``'s ``gz_sim.launch.py``).
    task, seed, camera_width, camera_height, camera_rate_hz, joint_state_rate_hz,
    real_time_factor, command_interface
        MuJoCo node parameters; None leaves the node's default.
    extra_parameters : Mapping, optional
        More MuJoCo node parameters (overrides).
    use_sim_time : bool
        For the Gazebo processes (the MuJoCo node publishes /clock itself and never follows it).
    gz_bridge_config : str, optional
        ros_gz_bridge YAML; default the package's ``config/gz_bridge.yaml``.
    namespace : str
        MuJoCo only: the simulator's namespace (its topics and ``sim/reset`` move under it;
        ``/clock`` stays global). Gazebo's bridge names absolute topics in its YAML.
    """
    check_choice("sim", sim, ("mujoco", "gazebo"))
    if sim == "gazebo":
        if absolute_namespace(namespace):
            raise ValueError("namespace: only the MuJoCo simulator runs in a namespace "
                             "(config/gz_bridge.yaml names absolute ROS topics)")
        return [gz_bridge_node(gz_bridge_config, use_sim_time=use_sim_time),
                gz_spawn_robot_node(use_sim_time=use_sim_time)]
    if command_interface is not None:
        check_choice("command_interface", command_interface, COMMAND_INTERFACES)
    parameters = _without_none({
        "task": task, "seed": seed, "camera_width": camera_width, "camera_height": camera_height,
        "camera_rate_hz": camera_rate_hz, "joint_state_rate_hz": joint_state_rate_hz,
        "real_time_factor": real_time_factor, "command_interface": command_interface,
    })
    parameters.update(extra_parameters or {})
    return [NodeSpec(SIM_NODE, PACKAGE, "sim_mujoco", module="sim2real_vla_ros.sim.sim_node",
                     parameters=parameters, namespace=namespace)]


# --------------------------------------------------------------------------- VLA nodes


def vla_nodes(bundle_path: str = "", params_file: Optional[str] = None,
              arms: Sequence[str] = ARMS, output_mode: Optional[str] = None,
              use_sim_time: bool = True, camera_topics: Optional[Mapping[str, str]] = None,
              instruction: Optional[str] = None, namespace: str = "",
              split_inference: bool = False, lifecycle_manager: bool = False,
              go_to_start_task: Optional[str] = None) -> list[NodeSpec]:
    """camera_mask, planner, one actor per arm, validator (+ the lifecycle manager).

    Parameters
    ----------
    bundle_path : str
        Model bundle folder for every node; '' keeps the nodes' default (share models/reference).
    params_file : str, optional
        Parameter YAML with one section per node; default :func:`default_params_file`. Under
        a namespace its sections must be keyed so that rcl applies them there (``/**/planner``
        or ``/robot1/planner``, :mod:`.parameter_files`), else ValueError.
    arms : sequence of str
        Arms that get an actor.
    output_mode : {'trajectory', 'stream', 'vendor'}, optional
        Actor output; None keeps the value of ``params_file``.
    use_sim_time : bool
        True in simulation (the simulator publishes /clock).
    camera_topics : Mapping[str, str], optional
        Camera name -> the driver's absolute image topic (e.g.
        ``{'cam_high': '/camera_f/color/image_raw'}``); every VLA node is remapped to read it
        and the camera_info next to it (same namespace, ``camera_info``): camera_mask reads
        the images, the planner cam_high's camera_info (and its raw image for a raw overlay).
        A rule for a topic a node does not use is inert. A camera left out is read from the
        graph's own ``<camera>/image_raw``, under ``namespace``.
    instruction : str, optional
        Planner ``instruction`` parameter override (None: from the params file).
    namespace : str
        The nodes' namespace ('' = root): every relative topic and service moves under it
        (``/robot1/vla/estop``); ``/clock`` and ``/diagnostics`` stay global.
    split_inference : bool
        Each actor as two processes (:func:`split_actor_nodes`): ``actor_<arm>`` runs
        ``actor_control`` (control loop, safety; robot host) and ``actor_<arm>_inference`` runs
        ``actor_inference`` (the model; GPU host). :func:`host_of` says where each node goes.
    lifecycle_manager : bool
        The VLA nodes wait unconfigured (``lifecycle_autostart: false``) and
        ``vla_lifecycle_manager`` (:func:`lifecycle_manager_node`) brings them up in order;
        False: each node configures and activates itself at start-up.
    go_to_start_task : str, optional
        With ``lifecycle_manager``: the task whose start pose the manager homes the arms to
        (go_to_start) between configure and activate; None or '': no homing.
    """
    arms = parse_arms(arms)
    if output_mode is not None:
        check_choice("output_mode", output_mode, OUTPUT_MODES)
    files = (params_file or default_params_file(),)
    shared = _without_none({"use_sim_time": bool(use_sim_time), "bundle_path": bundle_path or None})
    remaps = camera_remappings(camera_topics or {}, namespace)

    def node(name: str, executable: str, **overrides: Any) -> NodeSpec:
        return NodeSpec(name, PACKAGE, executable, module=f"sim2real_vla_ros.nodes.{executable}",
                        parameters={**shared, **_without_none(overrides)}, parameter_files=files,
                        remappings=remaps, namespace=namespace)

    actors = [node(actor_node_name(arm), "actor", arm=arm, output_mode=output_mode) for arm in arms]
    if split_inference:
        actors = [half for actor in actors for half in split_actor_nodes(actor)]
    specs = [
        node(CAMERA_MASK_NODE, "camera_mask"),
        node(PLANNER_NODE, "planner", instruction=instruction),
        *actors,
        node(VALIDATOR_NODE, "validator"),
    ]
    if absolute_namespace(namespace):
        for spec in specs:
            _check_sections_apply(spec)
    if go_to_start_task and not lifecycle_manager:
        raise ValueError("go_to_start_task: homing runs in the lifecycle manager (lifecycle_manager=True)")
    if lifecycle_manager:
        specs = [replace(spec, parameters={**spec.parameters, "lifecycle_autostart": False}) for spec in specs]
        specs.append(lifecycle_manager_node(managed_order(specs), go_to_start_task or "",
                                            use_sim_time=use_sim_time, namespace=namespace))
    return specs


def managed_order(specs: Sequence[NodeSpec]) -> list[str]:
    """Start-up order of the managed nodes: camera_mask, planner, validator, the actors' inference
    halves, then the actors (their control halves): every input of a node is up before it."""
    rank = {CAMERA_MASK_NODE: 0, PLANNER_NODE: 1, VALIDATOR_NODE: 2}

    def key(spec: NodeSpec) -> tuple:
        return (rank.get(spec.name, 3 if spec.executable == "actor_inference" else 4), spec.name)

    return [spec.name for spec in sorted(specs, key=key)]


def lifecycle_manager_node(node_names: Sequence[str], go_to_start_task: str = "", *, use_sim_time: bool = True,
                           namespace: str = "") -> NodeSpec:
    """``vla_lifecycle_manager`` (tools.lifecycle_manager): configure ``node_names`` in order, home
    the arms to ``go_to_start_task``'s start pose ('' = no homing), activate."""
    return NodeSpec(LIFECYCLE_MANAGER_NODE, PACKAGE, "vla_lifecycle_manager",
                    module="sim2real_vla_ros.tools.lifecycle_manager",
                    parameters={"use_sim_time": bool(use_sim_time), "node_names": list(node_names),
                                "go_to_start_task": go_to_start_task}, namespace=namespace)


def actor_inference_node_name(arm: str) -> str:
    """``actor_left_inference`` / ``actor_right_inference`` (the split actor's model half)."""
    return f"{actor_node_name(arm)}_inference"


def split_actor_nodes(actor: NodeSpec) -> list[NodeSpec]:
    """An actor spec as its two halves: (control, inference).

    The control half keeps the actor's name, parameter file and overrides (its section of
    config/vla.yaml applies unchanged; it declares every actor parameter but the model-only
    ones). The inference half gets the model's parameters copied from that section and the
    overrides (rcl keys file sections by node name, so it could not read the actor's own).
    """
    from sim2real_vla_ros.core.control.split_actor import INFERENCE_PARAMETER_NAMES, MODEL_ONLY_PARAMETER_NAMES

    values: dict[str, Any] = {}
    for path in actor.parameter_files:
        values.update(load_node_section(path, actor.full_name))
    values.update(flatten(actor.parameters))
    control = NodeSpec(actor.name, PACKAGE, "actor_control", module="sim2real_vla_ros.nodes.actor_control",
                       parameters={k: v for k, v in actor.parameters.items() if k not in MODEL_ONLY_PARAMETER_NAMES},
                       parameter_files=actor.parameter_files, remappings=actor.remappings,
                       namespace=actor.namespace)
    inference = NodeSpec(f"{actor.name}_inference", PACKAGE, "actor_inference",
                         module="sim2real_vla_ros.nodes.actor_inference",
                         parameters={k: v for k, v in values.items() if k in INFERENCE_PARAMETER_NAMES},
                         remappings=actor.remappings, namespace=actor.namespace)
    return [control, inference]


HOSTS = ("robot", "gpu")
"""The two-host layout: the robot host (arms, cameras, control and safety) and the GPU host (models)."""
MASK_HOSTS = HOSTS


def host_of(spec: NodeSpec, mask_host: str = "robot") -> str:
    """Where a node of a split graph runs: 'robot' or 'gpu'.

    GPU host: the planner, the validator and the actors' inference halves (the models that
    need a GPU). Robot host: everything that touches the arms or must keep running when the
    link is cut (the simulator or drivers, the actors' control halves with the safety filter,
    robot_state_publisher, controllers). camera_mask goes where ``mask_host`` says: on the
    robot host only masked images at model size cross the link (README: two hosts); on the
    GPU host the raw frames do.
    """
    check_choice("mask_host", mask_host, MASK_HOSTS)
    if spec.name == CAMERA_MASK_NODE:
        return mask_host
    if spec.name in (PLANNER_NODE, VALIDATOR_NODE) or spec.executable == "actor_inference":
        return "gpu"
    return "robot"


def _check_sections_apply(spec: NodeSpec) -> None:
    """ValueError if a params file section meant for ``spec`` would not reach it in its namespace.

    rcl silently ignores a section whose key does not match the node's fully qualified name,
    so a ``planner:`` section and a planner in /robot1 would start on the defaults.
    """
    for path in spec.parameter_files:
        for key in sections_missing_the_node(path, spec.full_name):
            raise ValueError(f"{path}: section {key!r} does not apply to {spec.full_name} (rcl matches "
                             f"sections by fully qualified node name); key it '/**/{spec.name}' "
                             f"(any namespace) or '{spec.full_name}'")


def camera_remappings(camera_topics: Mapping[str, str], namespace: str = "") -> tuple[tuple[str, str], ...]:
    """Remap rules from the graph's ``<camera>/image_raw`` (+ camera_info) to driver topics.

    A topic the nodes in ``namespace`` resolve anyway (``/robot1/cam_high/image_raw``) needs
    no rule.

    Raises
    ------
    ValueError
        An unknown camera name or a topic that is not absolute.
    """
    rules = []
    for camera, topic in camera_topics.items():
        check_choice("camera", camera, CAMERAS)
        if not topic.startswith("/") or topic.endswith("/"):
            raise ValueError(f"camera topic for {camera} must be an absolute topic name, got {topic!r}")
        if topic == absolute(vocab.camera_image_topic(camera), namespace):  # already the graph's name
            continue
        driver_namespace = topic.rsplit("/", 1)[0]
        rules.append((vocab.camera_image_topic(camera), topic))
        rules.append((vocab.camera_info_topic(camera), f"{driver_namespace}/camera_info"))
    return tuple(rules)


# --------------------------------------------------------------------------- robot side


def robot_state_publisher_node(urdf_text: str, use_sim_time: bool) -> NodeSpec:
    """robot_state_publisher with the processed CobotMagic URDF (``robot.urdf_xml``)."""
    if "<robot" not in urdf_text:
        raise ValueError("robot_state_publisher_node: urdf_text is not a URDF document")
    return NodeSpec(ROBOT_STATE_PUBLISHER_NODE, "robot_state_publisher", "robot_state_publisher",
                    parameters={"robot_description": urdf_text, "use_sim_time": bool(use_sim_time)})


def ros2_control_node(controllers_file: Optional[str] = None, *, use_sim_time: bool = False,
                      urdf_text: Optional[str] = None) -> NodeSpec:
    """controller_manager's ``ros2_control_node`` loading ``config/controllers.yaml``.

    Jazzy and newer read the URDF from the ``/robot_description`` topic (remapped from
    ``~/robot_description``); pass ``urdf_text`` only for Humble, which needs the parameter.
    """
    parameters: dict[str, Any] = {"use_sim_time": bool(use_sim_time)}
    if urdf_text is not None:
        parameters["robot_description"] = urdf_text
    return NodeSpec(CONTROLLER_MANAGER_NODE, "controller_manager", "ros2_control_node",
                    parameters=parameters,
                    parameter_files=(controllers_file or share_file("config", "controllers.yaml"),),
                    remappings=(("~/robot_description", vocab.ROBOT_DESCRIPTION),))


def controller_spawner_nodes(controllers: Optional[Sequence[str]] = None, *,
                             use_sim_time: bool = False,
                             controller_manager: str = "/" + CONTROLLER_MANAGER_NODE,
                             manager_timeout_s: Optional[float] = None,
                             inactive: Sequence[str] = ()) -> list[NodeSpec]:
    """One ``controller_manager spawner`` per controller (default: the broadcaster, then both arms).

    One process per controller, rather than one spawner with a list, works on every ROS 2
    distribution from Humble on.

    Parameters
    ----------
    inactive : sequence of str
        Controllers to load and configure but not activate (spawner ``--inactive``), e.g. the
        forward position controllers next to active trajectory controllers; switch later with
        ``ros2 control switch_controllers --deactivate <a> --activate <b>`` (the
        controller_manager's ``~/switch_controller`` service).
    """
    names = list(controllers) if controllers is not None else [
        JOINT_STATE_BROADCASTER, *ARM_CONTROLLERS.values()]
    unknown = sorted(set(inactive) - set(names))
    if unknown:
        raise ValueError(f"inactive controllers {unknown} are not among the spawned {names}")
    specs = []
    for controller in names:
        arguments = [controller, "--controller-manager", controller_manager]
        if manager_timeout_s is not None:
            arguments += ["--controller-manager-timeout", f"{float(manager_timeout_s):g}"]
        if controller in inactive:
            arguments.append("--inactive")
        specs.append(NodeSpec(f"spawner_{controller}", "controller_manager", "spawner",
                              parameters={"use_sim_time": bool(use_sim_time)}, arguments=arguments))
    return specs


def arm_controller_names(output_mode: str = "trajectory") -> tuple[list[str], list[str]]:
    """(active, inactive) arm controllers of config/controllers.yaml for a ros2_control output mode.

    ``trajectory``: the joint_trajectory_controllers active, the forward position controllers
    loaded inactive; ``stream``: the reverse. Both kinds claim the same joints' position
    interfaces, so the controller_manager lets only one of them be active per arm.
    """
    check_choice("output_mode", output_mode, OUTPUT_MODES_OF_INTERFACE["ros2_control"])
    trajectory, stream = list(ARM_CONTROLLERS.values()), list(POSITION_CONTROLLERS.values())
    return (trajectory, stream) if output_mode == "trajectory" else (stream, trajectory)


def vendor_bridge_node(*, use_sim_time: bool = False, max_age_s: Optional[float] = None,
                       namespace: str = "") -> NodeSpec:
    """The ``vendor_bridge`` relay: /puppet/joint_left|right -> /joint_states with URDF names.

    Needed with the vendor interface on the real robot (the AgileX driver publishes no
    /joint_states); the MuJoCo simulator publishes /joint_states itself. In a ``namespace``
    it reads ``<ns>/puppet/*`` and publishes ``<ns>/joint_states``.
    """
    parameters = _without_none({"use_sim_time": bool(use_sim_time), "max_age_s": max_age_s})
    return NodeSpec(VENDOR_BRIDGE_NODE, PACKAGE, "vendor_bridge", module="sim2real_vla_ros.nodes.vendor_bridge",
                    parameters=parameters, namespace=namespace)


def piper_driver_node(*, can_left: str = "can_left", can_right: str = "can_right", use_sim_time: bool = False,
                      namespace: str = "", **parameters: Any) -> NodeSpec:
    """The ``piper_driver`` node: both Piper arms through the vendor SDK (ROS 2 only).

    It takes the actors' trajectory / stream topics itself (joint_trajectory_controller and
    forward_command_controller semantics) and publishes /joint_states; ``parameters`` are
    further node parameters (e.g. ``emulate=True, bustype="virtual"`` for emulated arms).
    """
    values = {"can_left": can_left, "can_right": can_right, "use_sim_time": bool(use_sim_time), **parameters}
    return NodeSpec(PIPER_DRIVER_NODE, PACKAGE, "piper_driver", module="sim2real_vla_ros.nodes.piper_driver",
                    parameters=_without_none(values), namespace=namespace)


def robot_nodes(urdf_text: str, *, interface: str = "ros2_control",
                controllers_file: Optional[str] = None, use_sim_time: bool = False,
                humble: bool = False, output_mode: Optional[str] = None,
                piper_parameters: Optional[Mapping[str, Any]] = None) -> list[NodeSpec]:
    """The real robot's processes (cameras are the user's own drivers).

    Parameters
    ----------
    urdf_text : str
        URDF from ``robot.urdf_xml(ros2_control_plugin=...)``: 'hardware' for
        ``interface='ros2_control'``, 'mock' for 'mock', 'none' for 'vendor'.
    interface : {'ros2_control', 'mock', 'vendor', 'piper'}
        ros2_control with the user's hardware plugin or mock_components (controller_manager +
        spawners), the vendor topic interface (robot_state_publisher and the
        ``vendor_bridge`` relay: the vendor driver publishes /puppet/joint_* and takes
        /master/joint_*, and the relay turns its state into /joint_states), or the
        ``piper_driver`` node on the vendor SDK (URDF without ros2_control: 'none').
    piper_parameters : mapping, optional
        Parameters of the piper_driver node (interface 'piper'), e.g. its CAN ports.
    humble : bool
        Pass the URDF to ros2_control_node as a parameter (Humble) too.
    output_mode : str, optional
        The actors' output mode; None: the interface's default (trajectory, or vendor).
        With ros2_control / mock it selects which arm controllers are spawned active
        (:func:`arm_controller_names`); the others are loaded ``--inactive``.

    Raises
    ------
    ValueError
        An unknown interface, an output mode the interface cannot take, or a URDF without
        ``<ros2_control>`` for ros2_control / mock.
    """
    check_choice("interface", interface, ROBOT_INTERFACES)
    command_interface = "vendor" if interface == "vendor" else "ros2_control"
    output_mode = output_mode or OUTPUT_MODE_FOR_INTERFACE[command_interface]
    check_choice(f"output_mode for interface {interface!r}", output_mode,
                  OUTPUT_MODES_OF_INTERFACE[command_interface])
    specs = [robot_state_publisher_node(urdf_text, use_sim_time)]
    if interface == "vendor":
        return specs + [vendor_bridge_node(use_sim_time=use_sim_time)]
    if interface == "piper":  # the driver is both arms' controllers: no controller_manager
        return specs + [piper_driver_node(use_sim_time=use_sim_time, **(piper_parameters or {}))]
    if "<ros2_control" not in urdf_text:
        raise ValueError(f"interface {interface!r} needs a URDF with <ros2_control> tags "
                         "(urdf_xml(ros2_control_plugin='hardware' or 'mock'))")
    specs.append(ros2_control_node(controllers_file, use_sim_time=use_sim_time,
                                   urdf_text=urdf_text if humble else None))
    active, inactive = arm_controller_names(output_mode)
    specs.extend(controller_spawner_nodes([JOINT_STATE_BROADCASTER, *active, *inactive],
                                          use_sim_time=use_sim_time, inactive=inactive))
    return specs


# --------------------------------------------------------------------------- Gazebo, rviz


def gz_bridge_node(config_file: Optional[str] = None, *, use_sim_time: bool = True) -> NodeSpec:
    """ros_gz_bridge ``parameter_bridge`` reading ``config/gz_bridge.yaml`` (images, camera_info, /clock)."""
    return NodeSpec(GZ_BRIDGE_NODE, "ros_gz_bridge", "parameter_bridge",
                    parameters={"config_file": config_file or share_file("config", "gz_bridge.yaml"),
                                "use_sim_time": bool(use_sim_time)})


def gz_spawn_robot_node(*, world: str = GAZEBO_WORLD, use_sim_time: bool = True) -> NodeSpec:
    """``ros_gz_sim create`` spawning the robot from robot_state_publisher's ``/robot_description``.

    That URDF must come from ``urdf_xml(ros2_control_plugin='gazebo')`` (world joint and the
    gz_ros2_control plugin loading config/controllers.yaml).
    """
    return NodeSpec(f"spawn_{GAZEBO_ROBOT_ENTITY}", "ros_gz_sim", "create",
                    parameters={"use_sim_time": bool(use_sim_time)},
                    arguments=("-world", world, "-topic", vocab.ROBOT_DESCRIPTION,
                               "-name", GAZEBO_ROBOT_ENTITY))


def gazebo_object_spawn_nodes(task: Optional[str] = None, seed: Optional[int] = None, *,
                              table_top_z: Optional[float] = None, world: str = GAZEBO_WORLD,
                              use_sim_time: bool = True) -> list[NodeSpec]:
    """One ``ros_gz_sim create`` per task object, placed by ``core.tasks.sample_scene``.

    The scene comes from the same tasks.yaml sampling as the MuJoCo simulator
    (:func:`sim2real_vla_ros.sim.gazebo_scene.scene_objects`), so both simulators start from
    the same object layout for a task and seed. Numeric flags use gflags' ``-flag=value`` form
    so a negative coordinate is never read as a flag.
    """
    from sim2real_vla_ros.sim.gazebo_scene import scene_objects

    specs = []
    for placed in scene_objects(task, seed, table_top_z=table_top_z):
        x, y, z = placed.position
        specs.append(NodeSpec(
            f"spawn_{placed.name}", "ros_gz_sim", "create",
            parameters={"use_sim_time": bool(use_sim_time)},
            arguments=("-world", world, "-name", placed.name, "-string", placed.sdf,
                       f"-x={x:.6f}", f"-y={y:.6f}", f"-z={z:.6f}", f"-Y={placed.yaw:.6f}")))
    return specs


def initial_trajectory_yaml(task: Optional[str], arm: str, duration_s: float = 3.0) -> str:
    """A JointTrajectory (YAML, for ``ros2 topic pub``) moving ``arm`` to the task's initial pose.

    Gazebo starts the arms at zero; the MuJoCo simulator places them at the task's Table 6
    configuration itself. Stamp 0 means "start now" for joint_trajectory_controller.
    """
    from sim2real_vla_ros.core import robot
    from sim2real_vla_ros.core.task import tasks

    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    spec = tasks.get_task(task or tasks.default_task_name())
    seconds = int(duration_s)
    message = {
        "joint_names": robot.arm_joint_names(arm),
        "points": [{
            "positions": [float(v) for v in spec.init_joints(arm)],
            "time_from_start": {"sec": seconds, "nanosec": int(round((duration_s - seconds) * 1e9))},
        }],
    }
    return json.dumps(message)  # JSON is YAML: ros2 topic pub parses it


def rviz_node(config_file: Optional[str] = None, *, use_sim_time: bool = True) -> NodeSpec:
    """rviz2 with ``config/sim2real_vla.rviz`` (robot model, TF, cameras, affordances)."""
    return NodeSpec(RVIZ_NODE, "rviz2", "rviz2",
                    parameters={"use_sim_time": bool(use_sim_time)},
                    arguments=("-d", config_file or share_file("config", "sim2real_vla.rviz")))


