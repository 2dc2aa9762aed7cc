"""The stack's vocabulary, defined once: arms, cameras, output modes, backends, topic names.

Every node, ``graph``, the tools and the tests take these names from here, so a renamed topic
or a third camera changes one line.

Topic and service names are *relative* (``vla/estop``, ``joint_states``) wherever ROS
conventions expect a node's namespace to apply: starting the graph under a namespace, or
remapping in a launch file, moves all of it (``/robot1/vla/estop``). Only names that are
global by convention stay absolute: ``/clock`` (the time source of every node) and
``/diagnostics`` (read by diagnostic_aggregator and rqt_robot_monitor at the root).
Use :func:`absolute` for the fully qualified name a node in a namespace resolves.

Pure Python: no rclpy.
"""
from __future__ import annotations

# --------------------------------------------------------------------------- robot
ARMS = ("left", "right")
"""The CobotMagic's two Piper arms, in the order every per-arm list uses."""

TOP_CAMERA = "cam_high"
WRIST_CAMERA = {"left": "cam_left_wrist", "right": "cam_right_wrist"}
CAMERAS = (TOP_CAMERA, WRIST_CAMERA["left"], WRIST_CAMERA["right"])
"""The three cameras in the order the mask model batches them."""

# --------------------------------------------------------------------------- actor
OUTPUT_MODES = ("trajectory", "stream", "vendor")
"""How an actor sends commands: a joint_trajectory_controller, a forward position
controller, or the AgileX vendor driver's /master topics."""

INPUT_NAMES = ("cam_high", "wrist", "joint_state", "affordance")
"""The actor's inputs, each with a maximum age (parameter ``max_input_age_s.<name>``)."""

DEFAULT_INPUT_AGES = {"cam_high": 0.5, "wrist": 0.5, "joint_state": 0.1, "affordance": 30.0}
"""Default maximum input ages (s). The affordance is published once per step (stamp = its
observation) and a step may last up to the validator's step_timeout_s (20 s) before a re-plan
publishes a new one, hence its long age."""

BACKENDS = ("onnxruntime", "tensorrt")
"""Inference runtimes a node can load its models with."""

# --------------------------------------------------------------------------- topics
CLOCK = "/clock"
DIAGNOSTICS = "/diagnostics"
JOINT_STATES = "joint_states"
ROBOT_DESCRIPTION = "robot_description"
TF = "/tf"
TF_STATIC = "/tf_static"

ESTOP = "vla/estop"
INSTRUCTION = "vla/instruction"
PLAN_STATE = "vla/plan_state"
PLANNER_HEARTBEAT = "vla/planner/heartbeat"
TASK_STATE = "vla/task_state"
VALIDATOR_EVENT = "vla/validator/event"
AFFORDANCE_MARKERS = "vla/affordance_markers"
AFFORDANCE_OVERLAY = "vla/affordance_overlay"

SIM_TASK_STATUS = "sim/task_status"

# --------------------------------------------------------------------------- services
START_SERVICE = "vla/start"
STOP_SERVICE = "vla/stop"
SET_ESTOP_SERVICE = "vla/set_estop"
ACTOR_SET_ESTOP_SERVICE = "set_estop"  # private to each actor: /actor_<arm>/set_estop
SIM_RESET_SERVICE = "sim/reset"

# --------------------------------------------------------------------------- actions
EXECUTE_TASK_ACTION = "vla/execute_task"


def _arm(arm: str) -> str:
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    return arm


def _camera(camera: str) -> str:
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    return camera


def camera_image_topic(camera: str) -> str:
    """Raw rgb8 images of a camera (simulator or camera driver)."""
    return f"{_camera(camera)}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"{_camera(camera)}/camera_info"


def mask_topic(camera: str) -> str:
    """camera_mask's mono8 class mask of a camera."""
    return f"vla/mask/{_camera(camera)}"


def masked_topic(camera: str) -> str:
    """camera_mask's masked rgb8 image (background black) of a camera, at model size."""
    return f"vla/masked/{_camera(camera)}"


def affordance_topic(arm: str) -> str:
    """The planner's current affordance of an arm (PolygonStamped, latched)."""
    return f"vla/affordance/{_arm(arm)}"


def actor_chunk_topic(arm: str) -> str:
    """Each accepted decoded chunk of an arm's actor (for recording)."""
    return f"vla/actor_{_arm(arm)}/chunk"


def actor_request_topic(arm: str) -> str:
    """Split actor: the control node's chunk request to the inference node (std_msgs/Header:
    stamp = the newest observation wanted, frame_id = ``<arm>/<target index>/<request id>``)."""
    return f"vla/actor_{_arm(arm)}/request"


def actor_inferred_chunk_topic(arm: str) -> str:
    """Split actor: each chunk the inference node decoded (trajectory_msgs/JointTrajectory,
    header.stamp = its observation time, frame_id as the request's; no points = a failed inference)."""
    return f"vla/actor_{_arm(arm)}/inferred_chunk"


def actor_command_topic(arm: str) -> str:
    """The command an arm's actor actually sent each tick (after the safety filter)."""
    return f"vla/actor_{_arm(arm)}/command"


def actor_status_topic(arm: str) -> str:
    """An arm's actor after each control tick (sim2real_vla_interfaces/ActorStatus)."""
    return f"vla/actor_{_arm(arm)}/status"


def trajectory_controller(arm: str) -> str:
    """The arm's joint_trajectory_controller (config/controllers.yaml)."""
    return f"{_arm(arm)}_arm_controller"


def position_controller(arm: str) -> str:
    """The arm's forward_command_controller for stream mode (config/controllers.yaml)."""
    return f"{_arm(arm)}_arm_position_controller"


def vendor_command_topic(arm: str) -> str:
    """The AgileX driver's command input of an arm (names joint0..joint6)."""
    return f"master/joint_{_arm(arm)}"


def vendor_state_topic(arm: str) -> str:
    """The AgileX driver's joint state output of an arm."""
    return f"puppet/joint_{_arm(arm)}"


def arm_command_topic(arm: str, output_mode: str) -> str:
    """The topic an actor publishes its commands on in an output mode."""
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
    if output_mode == "trajectory":
        return f"{trajectory_controller(arm)}/joint_trajectory"
    if output_mode == "stream":
        return f"{position_controller(arm)}/commands"
    return vendor_command_topic(arm)


def absolute(name: str, namespace: str = "") -> str:
    """The fully qualified name a node in ``namespace`` resolves ``name`` to.

    >>> absolute("vla/estop", "robot1")
    '/robot1/vla/estop'
    >>> absolute("/clock", "robot1")
    '/clock'
    """
    if name.startswith("/"):
        return name
    prefix = namespace.strip("/")
    return f"/{prefix}/{name}" if prefix else f"/{name}"
