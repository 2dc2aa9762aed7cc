"""Helpers shared by the rclpy nodes: QoS by role, image conversion, parameters,
JSON-in-String payloads, diagnostics and the executable entry point.

Image conversion is done here rather than with cv_bridge: the cv_bridge on PyPI
(1.13) calls ``ndarray.tostring()``, which NumPy 2 removed, and the maintained
cv_bridge only ships with a full ROS install. The functions below handle the three
encodings this stack uses and validate every field, so a malformed message becomes
one ``ImageMessageError`` instead of a crash in a callback.
"""
from __future__ import annotations

import faulthandler
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import rclpy
import rclpy.signals
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sim2real_vla_ros.nodes.shutdown import ShutdownWatchdog, release_node

# --- QoS by role -------------------------------------------------------------------
#: Camera images and masks: best effort, newest only (a late frame is worthless).
SENSOR_QOS = qos_profile_sensor_data
#: Commands and events: reliable, a short queue.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
#: State that a late joiner must see (task state, affordances, e-stop): latched.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Liveness heartbeats: reliable, newest only, never replayed to a late joiner (an old beat
#: must not make a dead publisher look alive).
HEARTBEAT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)

# --- images ------------------------------------------------------------------------
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class ImageMessageError(ValueError):
    """A sensor_msgs/Image whose fields do not describe a valid image."""


def image_to_numpy(msg: Image, want: str = "rgb8") -> np.ndarray:
    """Convert a sensor_msgs/Image to a uint8 array (H, W, 3) for rgb8/bgr8 or (H, W) for mono8.

    Parameters
    ----------
    msg : sensor_msgs.msg.Image
    want : str
        ``rgb8`` (colour images are converted to it), ``bgr8`` or ``mono8``.

    Raises
    ------
    ImageMessageError
        Unsupported encoding, zero size, or a step/data length that does not match.
    """
    if msg.encoding not in _CHANNELS:
        raise ImageMessageError(f"unsupported image encoding '{msg.encoding}' (rgb8, bgr8, mono8)")
    channels = _CHANNELS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageMessageError(f"empty image {width}x{height}")
    if step < width * channels:
        raise ImageMessageError(f"step {step} is smaller than width*channels {width * channels}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != step * height:
        raise ImageMessageError(f"data has {data.size} bytes, expected step*height = {step * height}")
    rows = data.reshape(height, step)[:, : width * channels]
    array = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    return _convert_channels(array, msg.encoding, want)


def _convert_channels(array: np.ndarray, have: str, want: str) -> np.ndarray:
    if have == want:
        return np.ascontiguousarray(array)
    if want == "mono8" or have == "mono8":
        raise ImageMessageError(f"cannot convert {have} to {want}")
    return np.ascontiguousarray(array[..., ::-1])  # rgb8 <-> bgr8


def numpy_to_image(array: np.ndarray, encoding: str, stamp: Optional[TimeMsg] = None,
                   frame_id: str = "") -> Image:
    """Build a sensor_msgs/Image from a uint8 array; (H, W) for mono8, (H, W, 3) otherwise."""
    if encoding not in _CHANNELS:
        raise ImageMessageError(f"unsupported image encoding '{encoding}'")
    array = np.asarray(array)
    channels = _CHANNELS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if array.dtype != np.uint8 or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ImageMessageError(f"{encoding} needs uint8 of {expected_ndim} dims, got {array.dtype} {array.shape}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


# --- time --------------------------------------------------------------------------
def stamp_to_seconds(stamp: TimeMsg) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def seconds_to_stamp(seconds: float) -> TimeMsg:
    """float seconds -> builtin_interfaces/Time (non-negative)."""
    # Round once, in integer nanoseconds: rounding the fraction alone turned 2.9999999999 into
    # 2 s + 1e9 ns % 1e9 = 2.0 s, a one-second jump back in sim time.
    nanoseconds = int(round(max(0.0, float(seconds)) * 1e9))
    return TimeMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration(seconds: float) -> DurationMsg:
    """float seconds -> builtin_interfaces/Duration."""
    nanoseconds = int(round(float(seconds) * 1e9))
    return DurationMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def joint_trajectory(joint_names: Sequence[str], points, step_s: float, first_s: float,
                     stamp: Optional[TimeMsg] = None) -> JointTrajectory:
    """A positions-only JointTrajectory: point k at ``time_from_start = first_s + k step_s``.

    ``stamp`` None leaves header.stamp 0 ("start on receipt" for a joint_trajectory_controller).
    """
    message = JointTrajectory(joint_names=list(joint_names))
    if stamp is not None:
        message.header.stamp = stamp
    for index, positions in enumerate(points):
        message.points.append(JointTrajectoryPoint(positions=[float(v) for v in positions],
                                                   time_from_start=duration(first_s + index * step_s)))
    return message


def now_seconds(node: Node) -> float:
    """The node's clock (sim time when use_sim_time is true) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


# --- JSON payloads in std_msgs/String ----------------------------------------------
# Only outside the VLA graph's task topics (those are sim2real_vla_interfaces types): the
# simulator's privileged /sim/task_status and the piper driver's emulator fault injection.
def json_message(payload: Mapping[str, Any]) -> String:
    """Wrap a JSON-serialisable payload in std_msgs/String."""
    return String(data=json.dumps(payload, sort_keys=True, default=_json_default))


def parse_json_message(msg: String, required: Sequence[str] = ()) -> Dict[str, Any]:
    """Parse a JSON payload; raises ValueError naming what is wrong."""
    try:
        payload = json.loads(msg.data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("JSON payload is not an object")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ValueError(f"JSON payload lacks {missing}")
    return payload


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- parameters --------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One node parameter as data: declared by :func:`declare_parameters`, listed in the README.

    Each node module keeps its parameters in a module-level tuple ``PARAMETERS`` of these; the
    node's ``__init__`` declares them and ``tools/readme_parameters.py`` renders the README's
    parameter tables from the same tuple, so a description exists once.

    Attributes
    ----------
    name : str
        Parameter name (dots for namespaces, e.g. ``max_input_age_s.camera``).
    default : Any
        Default value; its type is the parameter's type. A float default makes the parameter
        accept integers too (``rate:=2``), converted to float.
    description : str
        One line for ``ros2 param describe`` and the README.
    check : callable, optional
        ``check(value) -> bool``; a value that fails stops the node at start-up (and refuses a
        run-time set of a live parameter) with ``parameter 'x' = v: must be <requirement>``.
    requirement : str
        What ``check`` demands, in words (``"in (0, 50]"``).
    read_only : bool
        True (default): read once at start-up, a run-time set is refused. False: a live
        parameter, which the node applies at run time (:func:`on_set_parameters`).
    test_hook : bool
        A test / dry-run hook (fault injection, scripted outputs): a value other than the
        default is refused at start-up unless ``use_sim_time`` is true, so it cannot be
        switched on for a robot by accident.
    required : bool
        The default is a placeholder that fails ``check``: the node refuses to start unless the
        parameter is given (the actor's ``arm``).
    """

    name: str
    default: Any
    description: str
    check: Optional[Callable[[Any], bool]] = None
    requirement: str = ""
    read_only: bool = True
    test_hook: bool = False
    required: bool = False

    @property
    def is_float(self) -> bool:
        return isinstance(self.default, float)

    def validate(self, value: Any) -> Any:
        """The value as the node uses it (ints made floats for a float parameter), checked.

        Raises
        ------
        ValueError
            ``parameter '<name>' = <value>: must be <requirement>``.
        """
        given = value
        if self.is_float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"parameter '{self.name}' = {given!r}: must be a number")
            value = float(value)
            if not math.isfinite(value):  # inf passes a check like `v >= 0`: no parameter takes NaN or inf
                raise ValueError(f"parameter '{self.name}' = {given!r}: must be a finite number")
        if self.check is not None and not self.check(value):
            raise ValueError(f"parameter '{self.name}' = {given!r}: must be {self.requirement or 'valid'}")
        return value

    def descriptor(self) -> ParameterDescriptor:
        # A float parameter given as `rate:=2` arrives as an integer; rclpy would refuse it with
        # InvalidParameterTypeException, so floats are declared dynamically typed and coerced.
        description = self.description
        if self.test_hook:
            description = f"TEST / DRY-RUN HOOK (refused unless use_sim_time is true): {description}"
        return ParameterDescriptor(description=description, additional_constraints=self.requirement,
                                   read_only=self.read_only, dynamic_typing=self.is_float)


def declare_parameters(node: Node, params: Sequence[Param]) -> Dict[str, Any]:
    """Declare every parameter of ``params`` with its descriptor; return {name: checked value}.

    Read-only parameters (the default) are declared ``read_only`` so that rclpy refuses a
    run-time set (``ros2 param set``) with "Trying to set a read-only parameter" instead of
    reporting success for a value the node never reads again.

    Raises
    ------
    ValueError
        A value fails its check (``parameter 'x' = v: must be ...``), or a test hook is set
        while ``use_sim_time`` is false; one line naming the parameter, so ``run_node`` stops
        the node with it.
    """
    values: Dict[str, Any] = {}
    for param in params:
        value = param.validate(node.declare_parameter(param.name, param.default, param.descriptor()).value)
        if param.test_hook and value != param.validate(param.default) and not _uses_sim_time(node):
            raise ValueError(f"parameter '{param.name}' = {value!r}: a test / dry-run hook, refused unless "
                             "use_sim_time is true (never set it on a robot)")
        values[param.name] = value
    return values


def _uses_sim_time(node: Node) -> bool:
    return node.has_parameter("use_sim_time") and node.get_parameter("use_sim_time").value is True


def declare(node: Node, name: str, default: Any, description: str,
            check: Optional[Callable[[Any], bool]] = None, requirement: str = "") -> Any:
    """Declare one parameter and return its checked value: the form that predates :class:`Param`.

    Kept for nodes not yet converted to a ``PARAMETERS`` tuple; prefer :func:`declare_parameters`.
    As before, the descriptor is not marked read-only: such a node refuses or applies run-time
    sets in its own set-parameters callback (the actor's live ``velocity_scale``).
    """
    return declare_parameters(node, [Param(name, default, description, check, requirement, read_only=False)])[name]


def on_set_parameters(node: Node, params: Sequence[Param], apply: Callable[[Dict[str, Any]], None]) -> None:
    """Accept run-time sets of the live parameters among ``params``, checked like at start-up.

    A set of a live parameter is checked with its ``Param.check`` (refused with the same
    ``parameter 'x' = v: must be ...`` reason) and, once rclpy has stored it, handed to
    ``apply({name: value})`` (ints made floats for float parameters). A set of a read-only one
    is refused with a reason that says so; rclpy refuses those first (their descriptor is
    read_only), this is the same refusal for a parameter declared without that flag. Names not
    in ``params`` (``use_sim_time``, another helper's) are left to their own callbacks.

    ``apply`` runs on the executor thread (the ``~/set_parameters`` service): it must only
    hand the value to the node's logic under the node's lock (e.g. set a target that the
    control loop ramps to), never block.
    """
    by_name = {param.name: param for param in params}

    def validate(parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            if spec is None:
                continue
            if spec.read_only:
                return SetParametersResult(successful=False, reason=read_only_reason(spec.name))
            try:
                spec.validate(parameter.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def applied(parameters) -> None:
        changed = {p.name: by_name[p.name].validate(p.value) for p in parameters
                   if p.name in by_name and not by_name[p.name].read_only}
        if changed:
            apply(changed)

    post_set = getattr(node, "add_post_set_parameters_callback", None)
    if post_set is None:  # Humble: no post-set callbacks; apply once the whole request is valid
        def validate_and_apply(parameters) -> SetParametersResult:
            result = validate(parameters)
            if result.successful:
                applied(parameters)
            return result

        node.add_on_set_parameters_callback(validate_and_apply)
    else:
        node.add_on_set_parameters_callback(validate)
        post_set(applied)


def read_only_reason(name: str) -> str:
    """Why a run-time set of a read-only parameter is refused."""
    return (f"parameter '{name}' is read-only: the node reads it once at start-up; set it in the parameter "
            "file or with --ros-args -p and restart the node")


# --- diagnostics -------------------------------------------------------------------
@dataclass
class Counters:
    """Named event counters shown in /diagnostics (faults, drops, holds, ...)."""

    values: Dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + amount

    def get(self, name: str) -> int:
        return self.values.get(name, 0)


def diagnostic_status(name: str, hardware_id: str, level: int, message: str,
                      values: Mapping[str, Any]) -> DiagnosticStatus:
    """One DiagnosticStatus with stringified key/values.

    ``level`` is DiagnosticStatus.OK / WARN / ERROR / STALE (a one-byte ``bytes`` in rclpy)
    or the same as an int 0..3.
    """
    if isinstance(level, int):
        level = bytes([level])
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=_value_text(v)) for k, v in values.items()]
    return status


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # full precision: stamps and latencies are read back from diagnostics
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return str(value)


def diagnostic_array(node: Node, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = node.get_clock().now().to_msg()
    array.status = list(statuses)
    return array


# --- entry point -------------------------------------------------------------------
SPIN_POLL_S = 0.1
"""Longest the main loop waits before it looks at a SIGINT request again (s)."""


def run_node(node_factory: Callable[[], Node], executor_factory=None,
             exit_code: Optional[Callable[[Node], int]] = None) -> int:
    """Standard main(): init, build the node (start-up errors exit 1 with one message), spin.

    Returns the process exit code: 0, or ``exit_code(node)`` when given (read once the node
    has stopped spinning; the simulator returns 1 after a simulation failure). A node that
    raises during construction (bad parameter, missing model file) logs one clear error line
    and exits 1 instead of printing a traceback.

    SIGINT (Ctrl-C, a launcher stopping the node) and SIGTERM only set a flag that the spin
    loop reads at least every ``SPIN_POLL_S``. rclpy's signal handlers are not installed,
    because each of its stop paths failed here at the end of dry runs (every process stops at
    once, and no message or sim-time timer wakes an executor again): Python's
    KeyboardInterrupt, raised at an arbitrary point of the main thread, landed inside rclpy (a
    RuntimeError from ``take_message``, exit 1); without it, the executor sometimes slept on
    forever (1 stop in 3 for a minimal node); and rclpy's handler thread shutting the context
    down while the executor built its wait set raised RCLError (2 dry runs in 16).

    Then the shutdown (``nodes.shutdown``): the executor is shut down, the node destroyed (its
    own threads first) and the context shut down, in that order, under a watchdog that ends
    the process with the same exit code if it is not over within ``SHUTDOWN_DEADLINE_S``
    (plus under a second when a C call holds the GIL), after one line saying what was still
    held and every thread's stack. The watchdog stays armed until the process has exited, so
    it also bounds the interpreter's own finalisation: run_node is a process entry point.
    SIGUSR1 prints every thread's stack to stderr (faulthandler), for a node that does not stop.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    interrupted = _InterruptFlag()
    signal.signal(signal.SIGINT, interrupted.set)
    signal.signal(signal.SIGTERM, interrupted.set)
    problems = startup_config_problems(node_factory)
    if problems:  # before rclpy.init: a misspelled name or a bad value never reaches a node
        for problem in problems:
            print(f"[FATAL] {problem}", flush=True)
        return 1
    code = 0
    try:
        init = rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    except Exception as exc:  # rcl refused the command line or a --params-file: one line, not a traceback
        print(f"[FATAL] rclpy.init refused the command line or a --params-file: {_one_line(exc)}", flush=True)
        return 1
    try:
        with init as initialised:
            context = initialised.context
            try:
                node = node_factory()
            except Exception as exc:  # start-up failure: one clear message, non-zero exit
                code = 0 if interrupted.raised or not context.ok() else 1  # stopped while starting: no failure
                if code:
                    print(f"[FATAL] {type(exc).__name__}: {exc}", flush=True)
                # Shutting the context down destroys the half-built node (and the DDS participant).
                ShutdownWatchdog("run_node", exit_code=code).arm().step(
                    "the context shutdown after a failed start-up (rclpy.shutdown destroys the half-built node)")
                return code
            executor = executor_factory() if executor_factory else rclpy.executors.SingleThreadedExecutor()
            executor.add_node(node)
            try:
                while not interrupted.raised and context.ok():
                    executor.spin_once(timeout_sec=SPIN_POLL_S)
            finally:
                failed = sys.exc_info()[0] is not None  # an exception from a callback: exit 1 (traceback)
                code = 1 if failed else int(exit_code(node)) if exit_code is not None else 0
                watchdog = ShutdownWatchdog(node.get_name(), exit_code=code).arm()
                release_node(node, executor, watchdog)
                watchdog.step("the context shutdown (rclpy.shutdown)")
            # leaving the with block shuts the context down, under the armed watchdog
    except ExternalShutdownException:
        pass
    return code


def startup_config_problems(node_factory, argv: Optional[Sequence[str]] = None) -> list:
    """One line per problem of the parameters this process was started with (``--params-file``
    and ``-p`` after ``--ros-args``) against the node module's ``PARAMETERS``: unknown names,
    wrong types, out-of-range values, NaN, unreadable files (graph.config_check)."""
    from sim2real_vla_ros.graph.config_check import check_command_line

    module = sys.modules.get(getattr(node_factory, "__module__", ""), None)
    params = getattr(module, "PARAMETERS", None)
    if params is None:
        return []
    spec = getattr(module, "__spec__", None)  # python -m: __module__ is __main__, the spec has the name
    default_name = (spec.name if spec is not None else node_factory.__module__).rsplit(".", 1)[-1]
    try:
        return check_command_line(sys.argv if argv is None else argv, params, default_name)
    except Exception as exc:  # the check itself must never be the crash it is there to prevent
        return [f"parameter check failed: {type(exc).__name__}: {_one_line(exc)}"]


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines)[:500] or type(exc).__name__


class _InterruptFlag:
    """Set from the SIGINT / SIGTERM handler. A plain attribute: a handler that took a lock
    could deadlock against the code it interrupted."""

    def __init__(self) -> None:
        self.raised = False

    def set(self, signum=None, frame=None) -> None:
        self.raised = True


def monotonic() -> float:
    """Wall-clock monotonic seconds, for measuring compute latency (never for control time)."""
    return time.monotonic()
