"""actor node (one executable, two instances): a thin translator around one arm's ActorController.

Run as ``actor --ros-args -r __node:=actor_left -p arm:=left`` (and ``actor_right``). Each
instance sees only its own wrist camera, ``cam_high``, its own joints and its own affordance
(the paper's arm-decoupled design). All control behaviour (schedule, splicing, safety filter)
lives in :class:`sim2real_vla_ros.core.control.actor_controller.ActorController`; this node
converts messages to its inputs, runs the model in a worker thread and publishes its outputs.
Parameters: ``PARAMETERS`` below (the README's table is generated from it); ``velocity_scale`` is
live, ``fault_injection`` and ``inference_delay_s`` are test hooks (refused without use_sim_time).

========================================  ==============================  =======================
Topic (relative names; core.vocabulary)   Type                            Direction
========================================  ==============================  =======================
vla/masked/cam_high, vla/masked/<wrist>   sensor_msgs/Image               in (sensor QoS)
joint_states                              sensor_msgs/JointState          in (URDF or vendor names)
vla/affordance/<arm>                      geometry_msgs/PolygonStamped    in (latched; empty = idle)
vla/plan_state                            sim2real_vla_interfaces/PlanState (latched, in)
vla/estop                                 std_msgs/Bool                   in + out (latched; mirror)
vla/planner/heartbeat                     std_msgs/Header                 in (hold when it stops)
<arm>_arm_controller/joint_trajectory     trajectory_msgs/JointTrajectory out (output_mode trajectory)
<arm>_arm_position_controller/commands    std_msgs/Float64MultiArray      out (output_mode stream)
master/joint_<arm>                        sensor_msgs/JointState          out (output_mode vendor)
vla/actor_<arm>/chunk                     trajectory_msgs/JointTrajectory out (each accepted chunk)
vla/actor_<arm>/command                   sensor_msgs/JointState          out (each command sent)
vla/actor_<arm>/status                    sim2real_vla_interfaces/ActorStatus (<= 10 Hz, out)
/diagnostics                              diagnostic_msgs/DiagnosticArray out
========================================  ==============================  =======================

Service ``~/set_estop`` (std_srvs/SetBool, ``/actor_<arm>/set_estop``): engages / releases this
actor's latch and publishes the value on ``vla/estop`` (latched), so every other node latches
it too. The e-stop is a latch in *every* actor (core/control/motion_permit.py), fed by any
publisher of ``vla/estop`` and by this service; an actor that latched an engage from the topic
republishes it on its own latched publisher, so the engaged state outlives the process that
engaged it (a restarted planner or actor receives it). A release never moves the arm: it
moves only for a task run that started after the release and was not already running before this
process came up, while the planner's heartbeat is fresh (``planner_timeout_s``).

Trajectory mode: header.stamp = 0 ("start now": never future-stamped, ros2_controllers #2607),
the filtered command at ``time_from_start = dt``, safe future setpoints, then a stop at rest:
if messages stop, the controller brakes within the limits instead of holding a moving setpoint.
Vendor mode: names joint0..joint6, the 7th value the total gripper width (m).

Threads: inference runs in a BackgroundWorker thread woken by the control tick; the control
timer, e-stop, inputs and diagnostics are short callbacks on a SingleThreadedExecutor, so a
slow inference never delays a tick or the e-stop (rclpy's MultiThreadedExecutor busy-waits
holding the GIL; see node_support.BackgroundWorker).
"""
from __future__ import annotations

import math
import sys
import threading
import time
import dataclasses
from typing import Optional

import numpy as np
from geometry_msgs.msg import PolygonStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header
from std_srvs.srv import SetBool
from sim2real_vla_interfaces.msg import ActorStatus, PlanState
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController, FaultCounter, observation_of
from sim2real_vla_ros.core.control.motion_permit import MotionPermit
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard
from sim2real_vla_ros.core.control.actor_io import (FAULT_INJECTIONS, UndecodableTokensDecoder, actor_plan_inputs,
                                                    actor_status_fields, arm_state_from_joint_state, inject_nan)
from sim2real_vla_ros.core.control.chunk_executor import BLEND_MODES, INTERPOLATIONS
from sim2real_vla_ros.core.control.safety import (DEFAULT_MAX_ACCELERATION, DEFAULT_MAX_DEVIATION,
                                                  DEFAULT_MAX_TRACKING_ERROR, DEFAULT_RAMP_VELOCITY, SafetyLimits)
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor
from sim2real_vla_ros.core.policy.actor_pipeline import ActorPipeline
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.robot import ARM_DOF, arm_joint_names, arm_limits
from sim2real_vla_ros.core.vocabulary import ARMS, DEFAULT_INPUT_AGES, INPUT_NAMES, OUTPUT_MODES, WRIST_CAMERA
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.lifecycle import LIFECYCLE_AUTOSTART, ManagedNode
from sim2real_vla_ros.nodes.task_messages import plan_state_from_msg
from sim2real_vla_ros.nodes.node_support import (BUNDLE_PARAMETERS, DIAGNOSTICS_RATE, BackgroundWorker, FaultLog,
                                                LevelTracker, load_node_bundle)


STATUS_RATE_HZ = 10.0  # vla/actor_<arm>/status: at most this often (control clock)


def _per_joint_ok(values) -> bool:
    return len(values) == ARM_DOF and all(math.isfinite(v) and v > 0 for v in values)


SAFETY_PARAMETERS = ("velocity_scale", "position_margin", "max_acceleration", "max_deviation_from_measured",
                     "ramp_velocity", "max_tracking_error")

PARAMETERS = (
    Param("arm", "", "Which arm this actor drives: left or right (required)", lambda v: v in ARMS,
          f"one of {list(ARMS)}", required=True),
    *BUNDLE_PARAMETERS,
    Param("control_rate_hz", 50.0, "Control tick rate (Hz, node clock: sim time under use_sim_time)",
          lambda v: 0.0 < v <= 1000.0, "in (0, 1000]"),
    Param("output_mode", "trajectory", "Command output: trajectory (JTC), stream (forward position controller) or "
          "vendor (master/joint_<arm>)", lambda v: v in OUTPUT_MODES, f"one of {list(OUTPUT_MODES)}"),
    Param("blend", "crossfade", "Chunk seam blending: none, crossfade or ensemble", lambda v: v in BLEND_MODES,
          f"one of {list(BLEND_MODES)}"),
    Param("crossfade_s", 0.2, "Minimum crossfade length at a seam (s; lengthened to respect the velocity/"
          "acceleration limits)", lambda v: 0.0 <= v <= 5.0, "in [0, 5]"),
    Param("chunk_interpolation", "pchip", "Between a chunk's steps: linear, or pchip (monotone cubic: continuous "
          "velocity, no overshoot)", lambda v: v in INTERPOLATIONS, f"one of {list(INTERPOLATIONS)}"),
    Param("ensemble_decay", 0.01, "Temporal ensembling weight decay m in exp(-m i), i = 0 the oldest chunk (ACT)",
          lambda v: math.isfinite(v) and abs(v) <= 10.0, "finite, |m| <= 10"),
    Param("request_threshold_s", 0.5, "Ask for the next chunk when at most this much of the current chunk "
          "remains (s); choose >= crossfade_s + the expected inference latency", lambda v: 0.0 <= v <= 10.0,
          "in [0, 10]"),
    Param("trajectory_horizon_steps", 5, "trajectory mode: future safe setpoints per message, before the stop tail",
          lambda v: 0 <= v <= 200, "in [0, 200]"),
    *(Param(f"max_input_age_s.{name}", DEFAULT_INPUT_AGES[name], f"Hold when the newest {name} input is older "
            "than this (s)", lambda v: 0.0 < v <= 60.0, "in (0, 60]") for name in INPUT_NAMES),
    Param("velocity_scale", 1.0, "Fraction of the URDF joint velocity limits used; LIVE: a set ramps the limit "
          "at the acceleration limit", lambda v: 0.0 < v <= 1.0, "in (0, 1]", read_only=False),
    Param("position_margin", 0.0, "Margin kept inside the URDF position limits (rad / m)",
          lambda v: 0.0 <= v <= 0.2, "in [0, 0.2]"),
    Param("max_acceleration", list(DEFAULT_MAX_ACCELERATION), "Per-joint acceleration limit (rad/s^2 joints 1-6, "
          "m/s^2 finger)", _per_joint_ok, f"{ARM_DOF} positive values"),
    Param("max_deviation_from_measured", list(DEFAULT_MAX_DEVIATION), "A setpoint further than this from the "
          "measured state is approached slowly (rad / m)", _per_joint_ok, f"{ARM_DOF} positive values"),
    Param("ramp_velocity", list(DEFAULT_RAMP_VELOCITY), "Speed of that slow approach (rad/s / m/s)", _per_joint_ok,
          f"{ARM_DOF} positive values"),
    Param("max_tracking_error", list(DEFAULT_MAX_TRACKING_ERROR), "Last command - measured state beyond this (plus "
          "velocity x joint-state age) holds: the arm is blocked or not following (rad / m)", _per_joint_ok,
          f"{ARM_DOF} positive values"),
    Param("planner_timeout_s", 1.5, "Hold both arms when no planner heartbeat (vla/planner/heartbeat, 4 Hz) "
          "arrived for this long (s): 6 heartbeat periods, 3 ticks of the 2 Hz planner", lambda v: 0.0 < v <= 60.0,
          "in (0, 60]"),
    Param("collision_guard", True, "Check every command against self, arm-arm, table and body collisions (both "
          "arms' joints must be in joint_states; without the other arm's reading the arm holds)"),
    Param("top_image_width", 0, "cam_high native width (px) of the affordance pixels; 0 = the planner's image_size "
          "in vla/plan_state", lambda v: 0 <= v <= 10000, "in [0, 10000]"),
    Param("top_image_height", 0, "cam_high native height (px) of the affordance pixels; 0 = the planner's "
          "image_size in vla/plan_state", lambda v: 0 <= v <= 10000, "in [0, 10000]"),
    Param("instruction", "", "Task instruction for the actor encoder; empty = from vla/plan_state"),
    Param("relaxed_decode", False, "FAST relaxed decoding (truncate/pad to T x 7; counted). Off: a wrong-length "
          "sequence is a decode failure"),
    Param("fault_injection", "", "'' (off), 'nan_chunk' or 'undecodable_tokens', applied to model outputs in the "
          "inference path so the real checks downstream handle them", lambda v: v in FAULT_INJECTIONS,
          f"one of {list(FAULT_INJECTIONS)}", test_hook=True),
    Param("fault_injection_period", 1, "Inject into every N-th inference (1 = all; the first N-1 are clean)",
          lambda v: 1 <= v <= 1000, "in [1, 1000]"),
    Param("inference_delay_s", 0.0, "Artificial latency added to every inference (s), for benchmarks",
          lambda v: 0.0 <= v <= 10.0, "in [0, 10]", test_hook=True),
    DIAGNOSTICS_RATE,
    LIFECYCLE_AUTOSTART,
)


class ActorNode(ManagedNode):
    """Messages in -> ActorController -> messages out; the model runs in a worker thread.

    The robot-side behaviour (inputs, e-stop latch and mirror, planner heartbeat, control tick,
    commands, status, diagnostics) lives here once; where the chunks come from is a handful of
    methods (``_load_policy``, ``_create_inference_interfaces``, ``_request_inference``, ...) that
    nodes.actor_control overrides to ask an inference node on another host instead.
    """

    PARAMETERS = PARAMETERS
    KIND = "actor"

    def __init__(self) -> None:
        super().__init__("actor")
        self._started_wall_ns = time.time_ns()  # DDS source timestamps are system time
        self._values = values = common.declare_parameters(self, self.PARAMETERS)
        self.arm, self.output_mode = values["arm"], values["output_mode"]
        self.control_rate_hz, self.diagnostics_rate_hz = values["control_rate_hz"], values["diagnostics_rate_hz"]
        self.joint_names = arm_joint_names(self.arm)
        self.config = actor_config(values)
        self.faults = FaultLog(self)
        self._stop = threading.Event()  # set at shutdown: interrupts the artificial delay, stops publishing
        self.context.on_shutdown(self._stop.set)
        self.other_arm = next(arm for arm in ARMS if arm != self.arm)
        # Comes up held: never joins a run whose plan_state predates this process (a restarted
        # actor does not resume the run it was part of); moves only with a fresh planner heartbeat.
        # It outlives the lifecycle: an e-stop latched before a cleanup is still latched after.
        self.permit = MotionPermit(values["planner_timeout_s"], faults=FaultCounter(self.faults.fault))
        self.controller: Optional[ActorController] = None
        self._published_estop: Optional[bool] = None  # what this actor's latched vla/estop sample says
        self._estop_received_mono: Optional[float] = None
        self._estop_received_s: Optional[float] = None
        self._estop_first_hold_s: Optional[float] = None
        self.tick_compute = LatencyWindow()
        self._levels = LevelTracker()
        common.on_set_parameters(self, self.PARAMETERS, self._apply_live_parameters)
        if self.get_name() not in ("actor", f"actor_{self.arm}"):
            self.get_logger().warning(f"node name '{self.get_name()}' for arm '{self.arm}': the graph calls it "
                                      f"'actor_{self.arm}' (parameter file sections are keyed by node name)")
        self.start_lifecycle(values["lifecycle_autostart"], self.diagnostics_rate_hz, self.faults)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        values, config = self._values, self.config
        chunk_dt, keypoints_per_arm = self._load_policy(values)
        self._check_instruction(config.instruction)
        guard = CollisionGuard(self.arm, horizon_s=config.dt) if values["collision_guard"] else None
        self.controller = ActorController(config, safety_limits(values), chunk_dt, keypoints_per_arm,
                                          FaultCounter(self.faults.fault), urdf_limits=arm_limits(self.arm),
                                          guard=guard, other_limits=safety_limits({**values, "arm": self.other_arm}),
                                          permit=self.permit)
        for warning in config.warnings():
            self.get_logger().warning(warning)
        self._create_interfaces()
        self._create_inference_interfaces()
        self._warm_up()
        self.get_logger().info(
            f"{self.get_name()} ready{self._ready_note()}: arm={self.arm}, output_mode={self.output_mode}, "
            f"blend={config.blend}, control {self.control_rate_hz:g} Hz, chunk {self.chunk_length} steps, "
            f"request at <= {self.controller.threshold_steps} steps left{self._ready_details()}")

    def activate(self) -> None:
        # An activation never joins a run already going (as after an e-stop release): the arm
        # may have been moved meanwhile (go_to_start), and the run's plan predates this start.
        self.permit.require_new_run(common.now_seconds(self))

    def deactivate(self) -> None:
        # No more commands from here (the control tick returns at once): the joint controllers
        # hold the last setpoint, in trajectory mode after the stop at rest the last message
        # carried. The plan and the command history go: another tool may move the arm now.
        self.controller.suspend()
        self._on_suspended()

    def _on_suspended(self) -> None:
        """Called on deactivate (the split actor gives up its request in flight)."""

    def release(self) -> None:
        self._stop_inference()
        self.controller = None

    # ------------------------------------------------------------------ the policy (local model)
    def _load_policy(self, values: dict) -> tuple:
        """Load what produces chunks (sets ``chunk_length``); returns (chunk step in s, keypoints per arm)."""
        self.fault_injection, self.fault_period = values["fault_injection"], values["fault_injection_period"]
        self.inference_delay_s = values["inference_delay_s"]
        self.bundle = load_node_bundle(self, values, load_fast_tokenizer=True)
        self.pipeline = ActorPipeline(self.bundle, self.arm, relaxed_decode=values["relaxed_decode"])
        self._inject_now = False  # set per inference by the inference thread only
        if self.fault_injection == "undecodable_tokens":
            spec = self.pipeline.token_spec
            self.pipeline.decoder = UndecodableTokensDecoder(self.pipeline.decoder, spec.bos_id, spec.eos_id,
                                                             enabled=lambda: self._inject_now)
        manifest = self.bundle.manifest
        self.chunk_length = self.pipeline.chunk_length
        return 1.0 / manifest.action.control_rate_hz, manifest.keypoints_per_arm

    def instruction_embedding(self, text: str):
        return self.bundle.instruction_embedding(text)

    def _ready_note(self) -> str:
        return ""

    def _ready_details(self) -> str:
        return ((f", FAULT INJECTION '{self.fault_injection}' every {self.fault_period} inference(s)"
                 if self.fault_injection else "")
                + (f", artificial delay {self.inference_delay_s:g} s" if self.inference_delay_s else ""))

    def _check_instruction(self, instruction: str) -> None:
        if instruction:
            try:
                self.instruction_embedding(instruction)
            except UnknownInstructionError as exc:
                raise ValueError(f"parameter 'instruction': {exc}") from None

    def _create_inference_interfaces(self) -> None:
        # Inference runs in its own thread, woken by the control tick: it may take hundreds of
        # ms and must never delay a tick or the e-stop.
        self._inference_worker = BackgroundWorker(
            f"{self.get_name()}_inference", self._run_inference,
            lambda exc: self.faults.fault("inference_callback_error", f"{type(exc).__name__}: {exc}"))

    def _request_inference(self, now_s: float) -> None:
        if self._inference_worker is not None:
            self._inference_worker.wake()

    def _before_tick(self, now_s: float) -> None:
        """Called at the start of every control tick (the split actor gives up lost requests here)."""

    def _on_estop_engaged(self) -> None:
        """Called when the e-stop engages (the split actor cancels its request in flight)."""

    def _inference_ok_count(self) -> int:
        return self.pipeline.outcome_counts().get("ok", 0)

    def _inference_diagnostics(self) -> dict:
        return {"fault_injection": self.fault_injection or "off",
                **{f"inference.{key}": value for key, value in self.pipeline.outcome_counts().items()}}

    def _warm_up(self) -> None:
        # The first ONNX Runtime run allocates; doing it now keeps it out of the first chunk's latency.
        self.pipeline.encoder.warmup(1)
        self.pipeline.decoder.warmup(1)

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        top, wrist = vocab.TOP_CAMERA, WRIST_CAMERA[self.arm]
        self.create_subscription(Image, vocab.masked_topic(top),
                                 guard(lambda m: self._on_image("cam_high", m), "image_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(Image, vocab.masked_topic(wrist),
                                 guard(lambda m: self._on_image("wrist", m), "image_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(JointState, vocab.JOINT_STATES,
                                 guard(self._on_joint_state, "joint_state_callback_error"), common.SENSOR_QOS)
        self.create_subscription(PolygonStamped, vocab.affordance_topic(self.arm),
                                 guard(self._on_affordance, "affordance_callback_error"), common.LATCHED_QOS)
        self.create_subscription(PlanState, vocab.PLAN_STATE, guard(self._on_plan_state, "plan_state_callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Bool, vocab.ESTOP, guard(self._on_estop, "estop_callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Header, vocab.PLANNER_HEARTBEAT, guard(self._on_heartbeat, "heartbeat_callback_error"),
                                 common.HEARTBEAT_QOS)
        # The e-stop mirror is a plain publisher (it must work in every state); the outputs are
        # lifecycle publishers: an actor never commands unless active.
        self.estop_pub = self.create_publisher(Bool, vocab.ESTOP, common.LATCHED_QOS)
        self.create_service(SetBool, f"~/{vocab.ACTOR_SET_ESTOP_SERVICE}", self._handle_set_estop)
        command_type = {"trajectory": JointTrajectory, "stream": Float64MultiArray, "vendor": JointState}
        lifecycle_publisher = self.create_lifecycle_publisher
        self.command_pub = lifecycle_publisher(command_type[self.output_mode],
                                               vocab.arm_command_topic(self.arm, self.output_mode), common.COMMAND_QOS)
        self.chunk_pub = lifecycle_publisher(JointTrajectory, vocab.actor_chunk_topic(self.arm), common.COMMAND_QOS)
        self.sent_pub = lifecycle_publisher(JointState, vocab.actor_command_topic(self.arm), common.COMMAND_QOS)
        self.status_pub = lifecycle_publisher(ActorStatus, vocab.actor_status_topic(self.arm), common.COMMAND_QOS)
        # Every tick's status would double the actor's publishing at 50 Hz on a shared CPU; a
        # tenth of a second is fine enough for a supervisor or ExecuteTask feedback.
        self._status_every = max(1, round(self.control_rate_hz / STATUS_RATE_HZ))
        self._status_ticks = 0
        self.create_timer(1.0 / self.control_rate_hz, guard(self._control_tick, "control_tick_error"))

    def _apply_live_parameters(self, changed: dict) -> None:
        if "velocity_scale" in changed:
            self._values["velocity_scale"] = changed["velocity_scale"]  # for a controller built later
            if self.controller is not None:
                self.controller.set_velocity_scale(changed["velocity_scale"])
            self.get_logger().info(f"velocity_scale -> {changed['velocity_scale']:g} (ramped at the acceleration limit)")

    def destroy_node(self) -> None:
        self._stop.set()
        self._stop_inference()
        super().destroy_node()

    def _stop_inference(self) -> None:
        worker, self._inference_worker = getattr(self, "_inference_worker", None), None
        if worker is not None:
            worker.stop()

    # ------------------------------------------------------------------ inputs
    def _on_image(self, name: str, msg: Image) -> None:
        self.controller.on_image(name, self._image_payload(msg), common.stamp_to_seconds(msg.header.stamp))

    def _image_payload(self, msg: Image):
        return msg  # converted to an array only when an inference uses it

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            joints = arm_state_from_joint_state(msg.name, msg.position, self.arm)
        except ValueError as exc:
            self.faults.fault("malformed_joint_state", str(exc))
            self.controller.on_malformed_joint_state(str(exc))
            return
        stamp_s = common.stamp_to_seconds(msg.header.stamp)
        verdict = self.controller.on_joint_state(joints, stamp_s, common.now_seconds(self))
        if not verdict.accepted and verdict.reason != "unconfirmed":
            # (Unconfirmed: the first readings, or the first after a silence, wait for a second
            # that agrees; expected at start-up, counted by the validator, not a fault.)
            self.faults.fault(f"joint_reading_rejected.{verdict.reason}", verdict.detail)
        if self.controller.guard is not None:
            self._on_other_arm(msg, stamp_s)

    def _on_other_arm(self, msg: JointState, stamp_s: float) -> None:
        try:
            other = arm_state_from_joint_state(msg.name, msg.position, self.other_arm)
        except ValueError:
            return  # only this arm's joints (a vendor /puppet topic): the guard holds on a stale other arm
        velocities = None
        if len(msg.velocity) == len(msg.name):
            try:
                velocities = arm_state_from_joint_state(msg.name, msg.velocity, self.other_arm)
            except ValueError:
                velocities = None  # unknown velocities are bounded by the other arm's limit
        self.controller.on_other_arm(other, velocities, stamp_s)

    def _on_affordance(self, msg: PolygonStamped) -> None:
        points = msg.polygon.points
        pixels = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2)
        self.controller.on_affordance(pixels, points[0].z if points else None,
                                      common.stamp_to_seconds(msg.header.stamp))

    def _on_plan_state(self, msg: PlanState, info) -> None:
        # ``info`` (rclpy MessageInfo) must stay required: rclpy passes it only to a callback that
        # cannot be called with the message alone.
        try:
            plan = plan_state_from_msg(msg)
            instruction, image_size, problem = actor_plan_inputs(plan, self.instruction_embedding)
        except ValueError as exc:
            self.faults.fault("malformed_plan_state", str(exc))
            return
        if problem:
            self.faults.fault("unknown_instruction", problem)
        self.controller.on_plan(instruction, image_size)
        written_ns = info.get("source_timestamp", 0) if isinstance(info, dict) else 0
        self.permit.on_plan(plan["phase"] == "running", plan["run_started"],
                            written_before_start=bool(written_ns) and written_ns < self._started_wall_ns)

    def _on_heartbeat(self, msg: Header) -> None:
        self.permit.on_heartbeat(msg.frame_id[:64], common.now_seconds(self))

    def _on_estop(self, msg: Bool) -> None:
        engaged = bool(msg.data)
        if self._apply_estop(engaged, vocab.ESTOP):
            # Mirror: an engage is republished on this actor's own latched publisher (it outlives
            # the process that engaged it); a release only where this actor's sample said engaged,
            # so that a late joiner does not see a stale engage from it. Only changes are
            # republished, so mirrors never echo each other forever.
            if engaged or self._published_estop:
                self._publish_estop(engaged)

    def _handle_set_estop(self, request, response):
        engaged = bool(request.data)
        self._apply_estop(engaged, f"~/{vocab.ACTOR_SET_ESTOP_SERVICE}")
        self._publish_estop(engaged)
        response.success = True
        response.message = ("e-stop engaged: every arm holds" if engaged else
                            "e-stop released: the arms move again only for a task started after this (/vla/start)")
        return response

    def _publish_estop(self, engaged: bool) -> None:
        self._published_estop = engaged
        self.estop_pub.publish(Bool(data=engaged))

    def _apply_estop(self, engaged: bool, source: str) -> bool:
        if engaged and not self.controller.estop:
            self._estop_received_mono = common.monotonic()
            self._estop_received_s = common.now_seconds(self)
            self._estop_first_hold_s = None
        changed = self.controller.set_estop(engaged, common.now_seconds(self))
        if changed and engaged:
            self._on_estop_engaged()
        if changed:
            self.get_logger().warning(f"e-stop {'ENGAGED: holding' if engaged else 'released (no motion until a new start)'}"
                                      f" ({source})")
        return changed

    # ------------------------------------------------------------------ control tick
    def _control_tick(self) -> None:
        if self._stop.is_set() or not self.is_active:
            return  # shutting down (publishers are being destroyed), or not active: never command
        started = common.monotonic()
        tick_time = self.get_clock().now()
        self._before_tick(tick_time.nanoseconds * 1e-9)
        output = self.controller.tick(tick_time.nanoseconds * 1e-9)
        if output.command is not None:
            self._publish_command(output, tick_time.to_msg())
            if self.controller.estop and self._estop_first_hold_s is None and self._estop_received_mono is not None:
                self._estop_first_hold_s = common.monotonic() - self._estop_received_mono
        if output.request_inference:
            self._request_inference(tick_time.nanoseconds * 1e-9)
        self._status_ticks += 1
        if self._status_ticks % self._status_every == 0:
            self._publish_status(output, tick_time)
        self.tick_compute.add((common.monotonic() - started) * 1e3)

    # ------------------------------------------------------------------ inference (worker thread)
    def _run_inference(self) -> None:
        try:
            snapshot = None if self._stop.is_set() else self.controller.take_snapshot()
            if snapshot is not None:
                self._infer_and_submit(snapshot)
        finally:
            self.controller.inference_finished()

    def _infer_and_submit(self, snapshot) -> None:
        try:
            observation = observation_of(snapshot, lambda msg: common.image_to_numpy(msg, "rgb8"))
        except common.ImageMessageError as exc:
            self.controller.record_failure("malformed_image", str(exc))
            return
        inject = bool(self.fault_injection) and self.controller.inferences % self.fault_period == 0
        self._inject_now = inject
        try:
            result = self.pipeline.infer(observation)
        except (ValueError, TypeError) as exc:  # unknown instruction, contract error: hold, counted
            self.controller.record_failure("inference_error", f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._inject_now = False
        if self.inference_delay_s > 0.0:
            self._stop.wait(self.inference_delay_s)  # artificial latency (benchmarks only)
        if inject and self.fault_injection == "nan_chunk" and result.ok:
            result = dataclasses.replace(result, chunk=inject_nan(result.chunk))
        if self._stop.is_set():
            return
        report = self.controller.apply_result(snapshot, result, common.now_seconds(self))
        if report is not None and not self._stop.is_set():
            self.chunk_pub.publish(common.joint_trajectory(self.joint_names, result.chunk, self.controller.chunk_dt, 0.0,
                                                           stamp=common.seconds_to_stamp(snapshot.stamp_s)))

    # ------------------------------------------------------------------ outputs
    def _publish_command(self, output, stamp) -> None:
        """Publish the filtered command; ``stamp`` is the tick's time (what the filter decided for)."""
        command, dt = output.command, 1.0 / self.control_rate_hz
        if self.output_mode == "trajectory":
            self.command_pub.publish(common.joint_trajectory(self.joint_names, output.trajectory, dt, dt))
        elif self.output_mode == "stream":
            self.command_pub.publish(Float64MultiArray(data=[float(v) for v in command]))
        else:
            names, positions = urdf_to_vendor(self.arm, command)
            vendor = JointState(name=names, position=positions)
            vendor.header.stamp = stamp
            self.command_pub.publish(vendor)
        sent = JointState(name=list(self.joint_names), position=[float(v) for v in command])
        if output.decision.velocity is not None:
            sent.velocity = [float(v) for v in output.decision.velocity]
        sent.header.stamp = stamp
        self.sent_pub.publish(sent)

    def _publish_status(self, output, tick_time) -> None:
        fields = actor_status_fields(self.controller, output, tick_time.nanoseconds * 1e-9,
                                     self._inference_ok_count())
        status = ActorStatus(arm=ARMS.index(self.arm), **fields)
        status.header.stamp = tick_time.to_msg()
        self.status_pub.publish(status)

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        controller = self.controller
        faults = self.faults.snapshot()
        values = {
            **controller.diagnostics(),
            **self._inference_diagnostics(),
            # Full precision (the generic float format keeps 6 digits, too few for a time stamp).
            "estop_received_at_s": "none" if self._estop_received_s is None else f"{self._estop_received_s:.6f}",
            "estop_hold_latency_ms": "none" if self._estop_first_hold_s is None else self._estop_first_hold_s * 1e3,
            **{f"control_tick_compute_{key}": value for key, value in self.tick_compute.stats().items()},
            **{f"fault.{key}": value for key, value in faults.items()},
            **self.lifecycle_values(),
        }
        errors, warnings = controller.health_counts(faults)
        level = 2 if controller.estop else self._levels.level(errors, warnings)
        message = "e-stop engaged: holding" if controller.estop else \
            ["ok", "holding on stale or missing inputs", "inference failures or dropped chunks"][level]
        if controller.hold_reason == "planner_lost":
            level, message = 2, "planner lost (no heartbeat): holding"
        elif controller.hold_reason in ("awaiting_start", "no_planner_heartbeat") and level == 0:
            message = f"holding: {controller.hold_reason}"
        status = common.diagnostic_status(f"{self.get_name()}: {self.KIND}", self.get_name(), level, message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def actor_config(values: dict) -> ActorConfig:
    """The controller's settings from the declared parameter values."""
    top_size = (values["top_image_width"], values["top_image_height"])
    if (top_size[0] == 0) != (top_size[1] == 0):
        raise ValueError("parameters 'top_image_width' and 'top_image_height' must both be 0 (from vla/plan_state) "
                         "or both set")
    return ActorConfig(
        arm=values["arm"], control_rate_hz=values["control_rate_hz"], output_mode=values["output_mode"],
        blend=values["blend"], crossfade_s=values["crossfade_s"], ensemble_decay=values["ensemble_decay"],
        chunk_interpolation=values["chunk_interpolation"], request_threshold_s=values["request_threshold_s"],
        trajectory_horizon_steps=values["trajectory_horizon_steps"], instruction=values["instruction"],
        top_image_size=top_size if top_size[0] else None)


def safety_limits(values: dict) -> SafetyLimits:
    """The arm's safety limits: URDF limits + the safety parameters + the input ages."""
    ages = {name: values[f"max_input_age_s.{name}"] for name in INPUT_NAMES}
    return SafetyLimits.from_config(arm_limits(values["arm"]),
                                    {**{name: values[name] for name in SAFETY_PARAMETERS}, "max_input_age_s": ages})


def main(args=None) -> int:
    return common.run_node(ActorNode)


if __name__ == "__main__":
    sys.exit(main())
