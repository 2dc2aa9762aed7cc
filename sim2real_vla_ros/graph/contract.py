"""The graph contract: what the running graph must look like, which the tests and the dry run check.

:func:`expected_connections` (who publishes and who subscribes each topic),
:func:`expected_services` (who offers each service), :func:`expected_parameters` (what each
node starts with) and :func:`external_inputs` (what the user or a runner publishes). Names are
fully qualified: the vocabulary's relative names resolved in the graph's ``namespace``
(``/robot1/vla/estop``), the global ones (``/clock``, ``/diagnostics``) as they are.

Pure Python: no rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS, OUTPUT_MODES, WRIST_CAMERA, absolute, arm_command_topic
from sim2real_vla_ros.graph.parameter_files import flatten, load_node_section
from sim2real_vla_ros.graph.specs import (CAMERA_MASK_NODE, COMMAND_INTERFACES, OUTPUT_MODES_OF_INTERFACE, PLANNER_NODE,
                                          ROBOT_STATE_PUBLISHER_NODE, SIM_NODE, VALIDATOR_NODE, VENDOR_BRIDGE_NODE,
                                          NodeSpec, check_choice, actor_inference_node_name, actor_node_name, command_interface_for, parse_arms)


@dataclass(frozen=True)
class TopicEnds:
    """Who must publish and who must subscribe a topic (node names; empty = outside the graph),
    and the topic's message type (``package/msg/Type``)."""

    publishers: frozenset[str]
    subscribers: frozenset[str]
    type_name: str = ""


_TASK = "sim2real_vla_interfaces/msg/"
_COMMAND_TYPES = {"trajectory": "trajectory_msgs/msg/JointTrajectory", "stream": "std_msgs/msg/Float64MultiArray",
                  "vendor": "sensor_msgs/msg/JointState"}


def topic_types() -> dict[str, str]:
    """Relative (vocabulary) topic name -> its message type, for every topic a graph may have.

    The task-level topics carry ``sim2real_vla_interfaces`` types; only the user's
    ``vla/instruction``, ``robot_description`` and the simulator's privileged
    ``sim/task_status`` (per-task criteria, JSON) are ``std_msgs/String``.
    """
    types = {
        vocab.CLOCK: "rosgraph_msgs/msg/Clock", vocab.DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
        vocab.JOINT_STATES: "sensor_msgs/msg/JointState", vocab.ROBOT_DESCRIPTION: "std_msgs/msg/String",
        vocab.TF: "tf2_msgs/msg/TFMessage", vocab.TF_STATIC: "tf2_msgs/msg/TFMessage",
        vocab.ESTOP: "std_msgs/msg/Bool", vocab.INSTRUCTION: "std_msgs/msg/String",
        vocab.PLANNER_HEARTBEAT: "std_msgs/msg/Header",
        vocab.PLAN_STATE: _TASK + "PlanState", vocab.TASK_STATE: _TASK + "TaskState",
        vocab.VALIDATOR_EVENT: _TASK + "ValidatorEvent",
        vocab.AFFORDANCE_MARKERS: "visualization_msgs/msg/MarkerArray",
        vocab.AFFORDANCE_OVERLAY: "sensor_msgs/msg/Image", vocab.SIM_TASK_STATUS: "std_msgs/msg/String",
    }
    for camera in CAMERAS:
        types[vocab.camera_image_topic(camera)] = "sensor_msgs/msg/Image"
        types[vocab.camera_info_topic(camera)] = "sensor_msgs/msg/CameraInfo"
        types[vocab.mask_topic(camera)] = "sensor_msgs/msg/Image"
        types[vocab.masked_topic(camera)] = "sensor_msgs/msg/Image"
    for arm in ARMS:
        types[vocab.affordance_topic(arm)] = "geometry_msgs/msg/PolygonStamped"
        types[vocab.actor_chunk_topic(arm)] = "trajectory_msgs/msg/JointTrajectory"
        types[vocab.actor_command_topic(arm)] = "sensor_msgs/msg/JointState"
        types[vocab.actor_status_topic(arm)] = _TASK + "ActorStatus"
        types[vocab.actor_request_topic(arm)] = "std_msgs/msg/Header"
        types[vocab.actor_inferred_chunk_topic(arm)] = "trajectory_msgs/msg/JointTrajectory"
        types[vocab.vendor_command_topic(arm)] = "sensor_msgs/msg/JointState"
        types[vocab.vendor_state_topic(arm)] = "sensor_msgs/msg/JointState"
        for mode, type_name in _COMMAND_TYPES.items():
            types[arm_command_topic(arm, mode)] = type_name
    return types


def expected_connections(arms: Sequence[str] = ARMS, output_mode: str = "trajectory",
                         simulator: Optional[str] = SIM_NODE,
                         command_interface: Optional[str] = None,
                         robot_state_publisher: bool = False, namespace: str = "",
                         robot_driver: Optional[str] = None, split_inference: bool = False) -> dict[str, TopicEnds]:
    """Fully qualified topic -> the nodes that must publish / subscribe it.

    Parameters
    ----------
    arms : sequence of str
        Arms with an actor.
    output_mode : str
        Actor output mode (selects the command topic).
    simulator : str or None
        Node name of the simulator publishing cameras, /joint_states and /clock
        (None: the real robot, whose drivers are outside the graph: those topics then have
        no listed publisher).
    command_interface : {'ros2_control', 'vendor'}, optional
        How the arms take commands; None: :func:`command_interface_for` the output mode.
        With a simulator: what it subscribes (the output mode's controller topic for
        ros2_control, /master/* for vendor) and whether it also publishes /puppet/*. On the
        real robot (``simulator=None``) with 'vendor': the ``vendor_bridge`` relay turns the
        driver's /puppet/* into /joint_states (the driver itself is outside the graph).
    robot_state_publisher : bool
        Include robot_state_publisher (not installable here).
    namespace : str
        The namespace the graph runs in: relative names resolve under it
        (``/robot1/joint_states``); ``/clock``, ``/diagnostics``, ``/tf`` stay global.
    robot_driver : str, optional
        Node name of an arm driver in the graph (``piper_driver``: the hardware-in-the-loop dry
        run): it takes the actors' command topics and publishes /joint_states, which the
        simulator then follows (``follow_joint_states``) instead of taking commands.
    split_inference : bool
        Each actor as its control half (``actor_<arm>``, same topics as the actor, plus the
        request out and the inferred chunk in) and its inference half (``actor_<arm>_inference``).

    Notes
    -----
    ``/vla/instruction`` has no publisher in the graph (the user or the dry-run runner sets
    it). ``/diagnostics`` is published by every VLA node (and the vendor bridge) and consumed
    by tools. The MuJoCo simulator in ros2_control mode subscribes both the trajectory and
    the stream controller topics; only the output mode's one is listed, so that every listed
    subscription has a publisher.
    """
    arms = parse_arms(arms)
    check_choice("output_mode", output_mode, OUTPUT_MODES)
    command_interface = command_interface or command_interface_for(output_mode)
    check_choice("command_interface", command_interface, COMMAND_INTERFACES)
    pubs: dict[str, set[str]] = {}
    subs: dict[str, set[str]] = {}

    def publish(node: str, *topics: str) -> None:
        for topic in topics:
            pubs.setdefault(topic, set()).add(node)
            subs.setdefault(topic, set())

    def subscribe(node: str, *topics: str) -> None:
        for topic in topics:
            subs.setdefault(topic, set()).add(node)
            pubs.setdefault(topic, set())

    actors = [actor_node_name(arm) for arm in arms]
    vla = [CAMERA_MASK_NODE, PLANNER_NODE, *actors, VALIDATOR_NODE]
    if robot_driver is not None:
        publish(robot_driver, vocab.JOINT_STATES, vocab.DIAGNOSTICS)
        subscribe(robot_driver, vocab.ESTOP, *(arm_command_topic(arm, output_mode) for arm in arms))
    if simulator is not None:
        publish(simulator, vocab.CLOCK, vocab.SIM_TASK_STATUS,
                *(vocab.camera_image_topic(camera) for camera in CAMERAS),
                *(vocab.camera_info_topic(camera) for camera in CAMERAS))
        if robot_driver is not None:  # the arms follow the driver's /joint_states
            subscribe(simulator, vocab.JOINT_STATES)
        elif command_interface == "vendor":
            publish(simulator, vocab.JOINT_STATES)
            subscribe(simulator, *(vocab.vendor_command_topic(arm) for arm in ARMS))
            publish(simulator, *(vocab.vendor_state_topic(arm) for arm in ARMS))
        else:
            publish(simulator, vocab.JOINT_STATES)
            controller_mode = output_mode if output_mode in OUTPUT_MODES_OF_INTERFACE["ros2_control"] else "trajectory"
            subscribe(simulator, *(arm_command_topic(arm, controller_mode) for arm in ARMS))
    elif command_interface == "vendor":
        subscribe(VENDOR_BRIDGE_NODE, *(vocab.vendor_state_topic(arm) for arm in ARMS))
        publish(VENDOR_BRIDGE_NODE, vocab.JOINT_STATES, vocab.DIAGNOSTICS)
    if robot_state_publisher:
        subscribe(ROBOT_STATE_PUBLISHER_NODE, vocab.JOINT_STATES)
        publish(ROBOT_STATE_PUBLISHER_NODE, vocab.TF, vocab.TF_STATIC, vocab.ROBOT_DESCRIPTION)

    subscribe(CAMERA_MASK_NODE, *(vocab.camera_image_topic(camera) for camera in CAMERAS))
    publish(CAMERA_MASK_NODE, *(vocab.mask_topic(camera) for camera in CAMERAS),
            *(vocab.masked_topic(camera) for camera in CAMERAS))

    # The planner reads cam_high's native size from its camera_info and
    # holds on /vla/estop.
    subscribe(PLANNER_NODE, vocab.masked_topic(vocab.TOP_CAMERA), vocab.VALIDATOR_EVENT, vocab.INSTRUCTION,
              vocab.camera_info_topic(vocab.TOP_CAMERA), vocab.ESTOP)
    # ExecuteTask feedback: the validator's view and the actors' progress.
    subscribe(PLANNER_NODE, vocab.TASK_STATE, *(vocab.actor_status_topic(arm) for arm in arms))
    publish(PLANNER_NODE, *(vocab.affordance_topic(arm) for arm in ARMS), vocab.PLAN_STATE,
            vocab.AFFORDANCE_MARKERS, vocab.AFFORDANCE_OVERLAY, vocab.ESTOP, vocab.PLANNER_HEARTBEAT)

    # The actor also reads the latched plan_state: the instruction (only the planner knows it
    # when a task is started by service) and the pixel frame of the affordance.
    for arm, actor in zip(arms, actors):
        subscribe(actor, vocab.masked_topic(vocab.TOP_CAMERA), vocab.masked_topic(WRIST_CAMERA[arm]), vocab.JOINT_STATES,
                  vocab.affordance_topic(arm), vocab.PLAN_STATE, vocab.ESTOP, vocab.PLANNER_HEARTBEAT)
        # Every actor keeps the e-stop latch and republishes it (latched): it outlives the planner.
        publish(actor, arm_command_topic(arm, output_mode), vocab.actor_chunk_topic(arm),
                vocab.actor_command_topic(arm), vocab.actor_status_topic(arm), vocab.ESTOP)
        if split_inference:
            inference = actor_inference_node_name(arm)
            publish(actor, vocab.actor_request_topic(arm))
            subscribe(actor, vocab.actor_inferred_chunk_topic(arm))
            subscribe(inference, vocab.masked_topic(vocab.TOP_CAMERA), vocab.masked_topic(WRIST_CAMERA[arm]),
                      vocab.JOINT_STATES, vocab.affordance_topic(arm), vocab.PLAN_STATE, vocab.actor_request_topic(arm))
            publish(inference, vocab.actor_inferred_chunk_topic(arm), vocab.DIAGNOSTICS)

    # The validator takes its targets from plan_state (keypoints and index in one message), not
    # from the affordance polygons, so phase, index and keypoints can never disagree.
    subscribe(VALIDATOR_NODE, *(vocab.masked_topic(camera) for camera in CAMERAS), vocab.JOINT_STATES,
              vocab.PLAN_STATE)
    publish(VALIDATOR_NODE, vocab.VALIDATOR_EVENT, vocab.TASK_STATE)

    for node in vla:
        publish(node, vocab.DIAGNOSTICS)
    types = topic_types()
    return {absolute(topic, namespace): TopicEnds(frozenset(pubs[topic]), frozenset(subs[topic]), types[topic])
            for topic in sorted(pubs)}


def expected_services(simulator: Optional[str] = SIM_NODE, namespace: str = "",
                      arms: Sequence[str] = ARMS) -> dict[str, str]:
    """Fully qualified service name -> the node that must offer it (each actor: its own e-stop)."""
    services = {vocab.START_SERVICE: PLANNER_NODE, vocab.STOP_SERVICE: PLANNER_NODE, vocab.SET_ESTOP_SERVICE: PLANNER_NODE,
                **{f"{actor_node_name(arm)}/{vocab.ACTOR_SET_ESTOP_SERVICE}": actor_node_name(arm) for arm in arms}}
    if simulator is not None:
        services[vocab.SIM_RESET_SERVICE] = simulator
    return {absolute(name, namespace): node for name, node in services.items()}


def expected_actions(namespace: str = "") -> dict[str, str]:
    """Fully qualified action name -> the node that must serve it."""
    return {absolute(vocab.EXECUTE_TASK_ACTION, namespace): PLANNER_NODE}


def external_inputs(namespace: str = "") -> tuple[str, ...]:
    """Topics the graph subscribes without publishing them itself (set by the user or a runner)."""
    return (absolute(vocab.INSTRUCTION, namespace),)


EXTERNAL_INPUTS = external_inputs()
""":func:`external_inputs` of a graph in the root namespace."""


def expected_parameters(spec: NodeSpec) -> dict[str, Any]:
    """Flattened parameter values the node starts with: its file sections, then the overrides.

    A file section counts where rcl applies it to the node's fully qualified name
    (:mod:`.parameter_files`). The integration tests compare these names with what the running
    node declares (its ``~/list_parameters`` service): every name here must be declared by the
    node.
    """
    values: dict[str, Any] = {}
    for path in spec.parameter_files:
        values.update(load_node_section(path, spec.full_name))
    values.update(flatten(spec.parameters))
    return values
