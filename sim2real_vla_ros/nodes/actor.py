"""actor node (one executable, two instances): one arm's asynchronous chunked policy + safety filter.

Run as ``actor --ros-args -r __node:=actor_left -p arm:=left`` (and ``actor_right``). Each
instance sees only its own wrist camera, ``cam_high``, its own joints and its own affordance
(the paper's arm-decoupled design).

Subscriptions
-------------
/vla/masked/cam_<arm>_wrist, /vla/masked/cam_high : sensor_msgs/Image (sensor-data QoS)
    Masked rgb8 images from camera_mask (background exactly black), model resolution.
/joint_states : sensor_msgs/JointState (sensor-data QoS)
    ``<arm>_joint1..7`` are used (other joints ignored). The vendor layout ``joint0..joint6``
    (gripper = total width) is accepted too, so ``/puppet/joint_<arm>`` can be remapped here.
/vla/affordance/<arm> : geometry_msgs/PolygonStamped (latched)
    Target keypoints in pixels of the cam_high image at its native resolution, z = affordance
    index, stamp = the observation it was predicted from; empty = idle: hold, no inference. A
    new index (or idle -> active) asks for a new chunk at once. The planner publishes an
    affordance once, when it becomes current (and again on a re-plan), so its age grows during
    a step: ``max_input_age_s.affordance`` must exceed the validator's ``step_timeout_s``.
/vla/plan_state : std_msgs/String JSON (latched)
    Its ``instruction`` (the actor encoder is conditioned on it; unless the ``instruction``
    parameter is set) and ``image_size`` (the planner's pixel frame; unless
    ``top_image_width`` / ``top_image_height`` are set).
/vla/estop : std_msgs/Bool (latched)
    True: hold the last sent setpoint from the next control tick on (inference runs in another
    thread, so it never waits behind it); false: resume with a fresh chunk.

Publications
------------
/<arm>_arm_controller/joint_trajectory : trajectory_msgs/JointTrajectory (output_mode trajectory)
    Every tick, header.stamp = 0 ("start now": never future-stamped, ros2_controllers #2607),
    positions only (JTC interpolates linearly): this tick's filtered command at
    time_from_start = dt, then up to ``trajectory_horizon_steps`` further safe setpoints and a
    deceleration to rest, all through the safety filter's preview. Each message replaces the
    not-yet-executed part of the previous one; if messages stop, the controller brakes to a
    stop within the limits instead of holding a moving setpoint.
/<arm>_arm_position_controller/commands : std_msgs/Float64MultiArray (output_mode stream)
    The filtered command (joints 1-6 rad, joint7 finger m), once per tick.
/master/joint_<arm> : sensor_msgs/JointState (output_mode vendor)
    names joint0..joint6, the 7th value = total gripper width (m).
/vla/actor_<arm>/chunk : trajectory_msgs/JointTrajectory
    Each accepted raw decoded chunk (robot units), header.stamp = its observation time,
    time_from_start = k / the bundle's action rate. For recording; not a command.
/vla/actor_<arm>/command : sensor_msgs/JointState
    The command actually sent each tick (after the safety filter), with its velocity.
/diagnostics : diagnostic_msgs/DiagnosticArray
    Inference latency p50/p99 per stage, inference failures by kind, chunk drops by reason,
    safety events by reason, ticks without a fresh setpoint, tick jitter, seam metrics,
    e-stop state and hold latency.

Parameters
----------
arm (str, required): left | right.
bundle_path, inference_backend, intra_op_threads: the model bundle and runtime (node_support).
control_rate_hz (50.0): control tick rate (node clock: sim time under use_sim_time).
output_mode (trajectory): trajectory | stream | vendor.
blend (crossfade): none | crossfade | ensemble seam blending; crossfade_s (0.2), ensemble_decay (0.01).
chunk_interpolation (pchip): linear | pchip between a chunk's steps (pchip: velocity continuous, no overshoot).
request_threshold_s (0.5): ask for the next chunk when at most this much of the current one is left
    (warned at start-up when below crossfade_s with blend crossfade).
trajectory_horizon_steps (5): safe future setpoints per trajectory message (plus the stop tail).
max_input_age_s.{cam_high,wrist,joint_state,affordance} (0.5, 0.5, 0.1, 30.0): older input -> hold.
velocity_scale (1.0), position_margin (0.0), max_acceleration, max_deviation_from_measured,
ramp_velocity, max_tracking_error: safety limits (7 values each for the per-joint ones; URDF
limits are read).
top_image_width / top_image_height (0 = plan_state's image_size): affordance pixel frame.
instruction (''): fixed instruction; '' = take it from /vla/plan_state.
relaxed_decode (false): FAST relaxed decoding (truncate/pad; counted when used).
fault_injection ('') and fault_injection_period (1): TEST / DRY-RUN ONLY. 'nan_chunk' puts NaN/Inf
    into decoded chunks, 'undecodable_tokens' makes the decoder's outputs an undecodable token
    sequence; applied to every period-th inference inside the inference path so the real
    checks downstream (executor, safety filter) handle them.
inference_delay_s (0.0): artificial latency added to each inference (async-vs-sync benchmark).
diagnostics_rate_hz (1.0).

Threads: inference runs in its own thread (node_support.BackgroundWorker), woken by the
control tick; the control timer, e-stop, inputs and diagnostics are short callbacks on a
SingleThreadedExecutor, so a slow inference never delays a control tick or the e-stop (and
rclpy's MultiThreadedExecutor, which busy-waits holding the GIL, is not used).
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PolygonStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control.actor_io import (FAULT_INJECTIONS, AffordanceError, InferenceRequest,
                                            UndecodableTokensDecoder, affordance_keypoints,
                                            arm_state_from_joint_state, inference_due, inject_nan,
                                            safe_trajectory_tail)
from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation, ActorPipeline
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError
from sim2real_vla_ros.core.control.chunk_executor import BLEND_MODES, INTERPOLATIONS, ChunkExecutor, TickStats
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.task.payloads import PLAN_STATE_SCHEMA
from sim2real_vla_ros.core.robot import ARM_DOF, arm_joint_names, arm_limits
from sim2real_vla_ros.core.control.safety import (DEFAULT_MAX_ACCELERATION, DEFAULT_MAX_DEVIATION,
                                          DEFAULT_MAX_TRACKING_ERROR, DEFAULT_RAMP_VELOCITY, SafetyEventKind,
                                          SafetyFilter, SafetyLimits, check_input_ages)
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.node_support import BackgroundWorker, FaultLog, LevelTracker, load_node_bundle
from sim2real_vla_ros.core.vocabulary import ARMS, DEFAULT_INPUT_AGES, INPUT_NAMES, OUTPUT_MODES, WRIST_CAMERA

TIMING_STAGES = ("preprocess", "encoder", "denoiser", "token_generation", "decode", "unnormalise", "total")
REVOLUTE = slice(0, ARM_DOF - 1)  # seam metrics in rad; the finger (m) is reported apart


def _per_joint_ok(values) -> bool:
    return len(values) == ARM_DOF and all(math.isfinite(v) and v > 0 for v in values)


@dataclass(frozen=True)
class _Target:
    """The current affordance of this arm."""

    pixels: np.ndarray  # (P, 2) in the cam_high native image
    index: int
    stamp_s: float
    seq: int  # increments when the index changes or the arm becomes active


@dataclass(frozen=True)
class _Snapshot:
    """One observation taken for an inference."""

    wrist: Image
    top: Image
    joints: np.ndarray
    target: _Target
    keypoints: np.ndarray  # (P, 2) normalised
    instruction: str
    stamp_s: float


class ActorNode(Node):
    """Asynchronous chunk inference + control-rate execution through the safety filter."""

    def __init__(self) -> None:
        super().__init__("actor")
        self._declare_parameters()
        self.bundle = load_node_bundle(self, load_fast_tokenizer=True)
        self.pipeline = ActorPipeline(self.bundle, self.arm, relaxed_decode=self.relaxed_decode)
        self._check_instruction_parameter()
        self._inject_now = False  # set per inference by the inference thread only
        if self.fault_injection == "undecodable_tokens":
            spec = self.pipeline.token_spec
            self.pipeline.decoder = UndecodableTokensDecoder(self.pipeline.decoder, spec.bos_id, spec.eos_id,
                                                             enabled=lambda: self._inject_now)
        self._build_core()
        self._init_state()
        self._create_interfaces()
        self._warm_up()
        self.get_logger().info(
            f"{self.get_name()} ready: arm={self.arm}, output_mode={self.output_mode}, blend={self.blend}, "
            f"control {self.control_rate_hz:g} Hz, chunk {self.pipeline.chunk_length} steps at "
            f"{1.0 / self.chunk_dt:g} Hz, request at <= {self.threshold_steps} steps left"
            + (f", FAULT INJECTION '{self.fault_injection}' every {self.fault_period} inference(s)"
               if self.fault_injection else "")
            + (f", artificial delay {self.inference_delay_s:g} s" if self.inference_delay_s else ""))

    # ------------------------------------------------------------------ set-up
    def _declare_parameters(self) -> None:
        declare = common.declare
        self.arm = declare(self, "arm", "", "Which arm this actor drives: left or right",
                           lambda v: v in ARMS, f"one of {list(ARMS)}")
        expected_name = f"actor_{self.arm}"
        if self.get_name() not in ("actor", expected_name):
            self.get_logger().warning(f"node name '{self.get_name()}' for arm '{self.arm}': the graph calls it "
                                      f"'{expected_name}' (parameter file sections are keyed by node name)")
        self.control_rate_hz = declare(self, "control_rate_hz", 50.0,
                                       "Control tick rate (Hz, node clock: sim time under use_sim_time)",
                                       lambda v: 0.0 < v <= 1000.0, "in (0, 1000]")
        self.dt = 1.0 / self.control_rate_hz
        self.output_mode = declare(self, "output_mode", "trajectory",
                                   "Command output: trajectory (JTC), stream (forward position controller) or "
                                   "vendor (/master/joint_<arm>)", lambda v: v in OUTPUT_MODES,
                                   f"one of {list(OUTPUT_MODES)}")
        self.blend = declare(self, "blend", "crossfade", "Chunk seam blending: none, crossfade or ensemble",
                             lambda v: v in BLEND_MODES, f"one of {list(BLEND_MODES)}")
        self.crossfade_s = declare(self, "crossfade_s", 0.2,
                                   "Minimum crossfade length at a seam (s; lengthened to respect the "
                                   "velocity/acceleration limits)", lambda v: 0.0 <= v <= 5.0, "in [0, 5]")
        self.chunk_interpolation = declare(
            self, "chunk_interpolation", "pchip",
            "Between a chunk's steps: linear, or pchip (monotone cubic: continuous velocity, no overshoot)",
            lambda v: v in INTERPOLATIONS, f"one of {list(INTERPOLATIONS)}")
        self.ensemble_decay = declare(self, "ensemble_decay", 0.01,
                                      "Temporal ensembling weight decay m in exp(-m i), i = 0 the oldest chunk (ACT)",
                                      lambda v: math.isfinite(v) and abs(v) <= 10.0, "finite, |m| <= 10")
        self.request_threshold_s = declare(self, "request_threshold_s", 0.5,
                                           "Ask for the next chunk when at most this much of the current chunk "
                                           "remains (s); choose >= the expected inference latency",
                                           lambda v: 0.0 <= v <= 10.0, "in [0, 10]")
        self.horizon_steps = declare(self, "trajectory_horizon_steps", 5,
                                     "trajectory mode: future safe setpoints per message, before the stop tail",
                                     lambda v: 0 <= v <= 200, "in [0, 200]")
        self.max_input_age = {
            name: declare(self, f"max_input_age_s.{name}", DEFAULT_INPUT_AGES[name],
                          f"Hold when the newest {name} input is older than this (s)",
                          lambda v: 0.0 < v <= 60.0, "in (0, 60]")
            for name in INPUT_NAMES}
        self.safety_config = {
            "velocity_scale": declare(self, "velocity_scale", 1.0, "Fraction of the URDF joint velocity limits used",
                                      lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
            "position_margin": declare(self, "position_margin", 0.0,
                                       "Margin kept inside the URDF position limits (rad / m)",
                                       lambda v: 0.0 <= v <= 0.2, "in [0, 0.2]"),
            "max_acceleration": declare(self, "max_acceleration", list(DEFAULT_MAX_ACCELERATION),
                                        "Per-joint acceleration limit (rad/s^2 joints 1-6, m/s^2 finger)",
                                        _per_joint_ok, f"{ARM_DOF} positive values"),
            "max_deviation_from_measured": declare(
                self, "max_deviation_from_measured", list(DEFAULT_MAX_DEVIATION),
                "A setpoint further than this from the measured state is approached slowly (rad / m)",
                _per_joint_ok, f"{ARM_DOF} positive values"),
            "ramp_velocity": declare(self, "ramp_velocity", list(DEFAULT_RAMP_VELOCITY),
                                     "Speed of that slow approach (rad/s / m/s)", _per_joint_ok,
                                     f"{ARM_DOF} positive values"),
            "max_tracking_error": declare(
                self, "max_tracking_error", list(DEFAULT_MAX_TRACKING_ERROR),
                "Last command - measured state beyond this (plus velocity x joint-state age) holds at the "
                "measured state: the arm is blocked or not following (rad / m)", _per_joint_ok,
                f"{ARM_DOF} positive values"),
        }
        self.top_size = (declare(self, "top_image_width", 0,
                                 "cam_high native width (px) of the affordance pixels; 0 = the planner's "
                                 "image_size in /vla/plan_state", lambda v: 0 <= v <= 10000, "in [0, 10000]"),
                         declare(self, "top_image_height", 0,
                                 "cam_high native height (px) of the affordance pixels; 0 = the planner's "
                                 "image_size in /vla/plan_state", lambda v: 0 <= v <= 10000, "in [0, 10000]"))
        if (self.top_size[0] == 0) != (self.top_size[1] == 0):
            raise ValueError("parameters 'top_image_width' and 'top_image_height' must both be 0 (from "
                             "/vla/plan_state) or both set")
        self.instruction_parameter = declare(self, "instruction", "",
                                             "Task instruction for the actor encoder; empty = from /vla/plan_state")
        self.relaxed_decode = declare(self, "relaxed_decode", False,
                                      "FAST relaxed decoding (truncate/pad to T x 7; counted). Off: a wrong-length "
                                      "sequence is a decode failure")
        self.fault_injection = declare(self, "fault_injection", "",
                                       "TEST/DRY-RUN ONLY: '' (off), 'nan_chunk' or 'undecodable_tokens', applied to "
                                       "model outputs in the inference path", lambda v: v in FAULT_INJECTIONS,
                                       f"one of {list(FAULT_INJECTIONS)}")
        self.fault_period = declare(self, "fault_injection_period", 1,
                                    "TEST/DRY-RUN ONLY: inject into every N-th inference (1 = all; the first "
                                    "N-1 are clean)", lambda v: 1 <= v <= 1000, "in [1, 1000]")
        self.inference_delay_s = declare(self, "inference_delay_s", 0.0,
                                         "Artificial latency added to every inference (s), for benchmarks",
                                         lambda v: 0.0 <= v <= 10.0, "in [0, 10]")
        self.diagnostics_rate_hz = declare(self, "diagnostics_rate_hz", 1.0, "/diagnostics publication rate (Hz)",
                                           lambda v: 0.0 < v <= 50.0, "in (0, 50]")

    def _check_instruction_parameter(self) -> None:
        if self.instruction_parameter:
            try:
                self.bundle.instruction_embedding(self.instruction_parameter)
            except UnknownInstructionError as exc:
                raise ValueError(f"parameter 'instruction': {exc}") from None

    def _build_core(self) -> None:
        limits = arm_limits(self.arm)
        self.limits = SafetyLimits.from_config(limits, {**self.safety_config, "max_input_age_s": self.max_input_age})
        self.safety = SafetyFilter(self.limits)
        self.chunk_dt = 1.0 / self.bundle.manifest.action.control_rate_hz
        self.chunks = ChunkExecutor(
            self.chunk_dt, blend=self.blend, crossfade_steps=int(math.ceil(self.crossfade_s / self.chunk_dt - 1e-9)),
            ensemble_decay=self.ensemble_decay, max_velocity=self.limits.max_velocity,
            max_acceleration=self.limits.max_acceleration, num_joints=ARM_DOF,
            interpolation=self.chunk_interpolation)
        self.threshold_steps = int(math.ceil(self.request_threshold_s / self.chunk_dt - 1e-9))
        if self.blend == "crossfade" and self.request_threshold_s < self.crossfade_s:
            # The blend mixes in the old chunk for crossfade_s after the new one arrives: if the old
            # one ends first, its last step is held and the arm's velocity dips mid-blend.
            self.get_logger().warning(
                f"request_threshold_s {self.request_threshold_s:g} < crossfade_s {self.crossfade_s:g}: the current "
                "chunk can end during a crossfade (velocity dips); choose request_threshold_s >= crossfade_s + the "
                "expected inference latency")
        self.joint_names = arm_joint_names(self.arm)
        self.wrist_camera = WRIST_CAMERA[self.arm]

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set at shutdown: interrupts the artificial delay, stops publishing
        self.context.on_shutdown(self._stop.set)
        self._images: dict = {"cam_high": None, "wrist": None}
        self._measured: Optional[np.ndarray] = None
        self._stamps: dict = {name: None for name in INPUT_NAMES}
        self._target: Optional[_Target] = None
        self._target_seq = 0
        self._plan_instruction = ""
        self._plan_image_size: Optional[tuple] = None
        self._estop = False
        self._estop_received_mono: Optional[float] = None
        self._estop_received_s: Optional[float] = None
        self._estop_first_hold_s: Optional[float] = None
        self._was_active = False
        self._grid_origin: Optional[float] = None
        self._last_tick_s: Optional[float] = None
        self._in_flight = False
        self._last_inferred_obs_s: Optional[float] = None
        self._executing_seq: Optional[int] = None
        self._last_failure: Optional[str] = None
        self._inferences = 0
        self._commands = 0
        self.faults = FaultLog(self)
        self.latency = {stage: LatencyWindow() for stage in TIMING_STAGES}
        self.splice_delay = LatencyWindow()  # observation -> splice, node clock
        self.tick_compute = LatencyWindow()
        self.execution_stats = TickStats(self.dt)  # ticks with a chunk: fresh or not
        self.tick_stats = TickStats(self.dt)  # every tick: jitter
        self._seam = {"last_jump": 0.0, "max_jump": 0.0, "max_velocity": 0.0, "max_acceleration": 0.0,
                      "last_skipped_steps": 0, "max_skipped_steps": 0}
        self._levels = LevelTracker()

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        # Inference runs in its own thread, woken by the control tick: it may take hundreds of
        # ms and must never delay a tick or the e-stop.
        self._inference_worker = BackgroundWorker(
            f"{self.get_name()}_inference", self._run_inference,
            lambda exc: self.faults.fault("inference_callback_error", f"{type(exc).__name__}: {exc}"))
        self.create_subscription(Image, vocab.masked_topic(vocab.TOP_CAMERA),
                                 guard(lambda m: self._on_image("cam_high", m), "image_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(Image, vocab.masked_topic(self.wrist_camera),
                                 guard(lambda m: self._on_image("wrist", m), "image_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(JointState, vocab.JOINT_STATES, guard(self._on_joint_state, "joint_state_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(PolygonStamped, vocab.affordance_topic(self.arm),
                                 guard(self._on_affordance, "affordance_callback_error"), common.LATCHED_QOS)
        self.create_subscription(String, vocab.PLAN_STATE, guard(self._on_plan_state, "plan_state_callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Bool, vocab.ESTOP, guard(self._on_estop, "estop_callback_error"),
                                 common.LATCHED_QOS)
        command_type = {"trajectory": JointTrajectory, "stream": Float64MultiArray, "vendor": JointState}
        self.command_pub = self.create_publisher(command_type[self.output_mode],
                                                 vocab.arm_command_topic(self.arm, self.output_mode),
                                                 common.COMMAND_QOS)
        self.chunk_pub = self.create_publisher(JointTrajectory, vocab.actor_chunk_topic(self.arm), common.COMMAND_QOS)
        self.sent_pub = self.create_publisher(JointState, vocab.actor_command_topic(self.arm), common.COMMAND_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        self.create_timer(self.dt, guard(self._control_tick, "control_tick_error"))
        self.create_timer(1.0 / self.diagnostics_rate_hz, guard(self._publish_diagnostics, "diagnostics_error"))

    def _warm_up(self) -> None:
        # The first ONNX Runtime run allocates; doing it now keeps it out of the first chunk's latency.
        self.pipeline.encoder.warmup(1)
        self.pipeline.decoder.warmup(1)

    def destroy_node(self) -> None:
        self._stop.set()
        self._inference_worker.stop()
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def _on_image(self, name: str, msg: Image) -> None:
        stamp = common.stamp_to_seconds(msg.header.stamp)
        with self._lock:
            self._images[name] = msg  # converted only when an inference uses it
            self._stamps[name] = stamp

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            joints = arm_state_from_joint_state(msg.name, msg.position, self.arm)
        except ValueError as exc:
            self.faults.fault("malformed_joint_state", str(exc))
            return
        with self._lock:
            self._measured = joints
            self._stamps["joint_state"] = common.stamp_to_seconds(msg.header.stamp)

    def _on_affordance(self, msg: PolygonStamped) -> None:
        # Pixels are normalised when an inference uses them: the planner's image size may
        # arrive (in /vla/plan_state) after the affordance.
        pixels = np.array([(p.x, p.y) for p in msg.polygon.points], dtype=np.float64).reshape(-1, 2)
        stamp = common.stamp_to_seconds(msg.header.stamp)
        with self._lock:
            if pixels.shape[0] == 0:
                self._target = None
            else:
                index = int(round(msg.polygon.points[0].z)) if math.isfinite(msg.polygon.points[0].z) else -1
                if self._target is None or self._target.index != index:
                    self._target_seq += 1
                self._target = _Target(pixels, index, stamp, self._target_seq)
            self._stamps["affordance"] = stamp

    def _on_plan_state(self, msg: String) -> None:
        try:
            payload = common.parse_json_message(msg, required=("schema",))
        except ValueError as exc:
            self.faults.fault("malformed_plan_state", str(exc))
            return
        if payload["schema"] != PLAN_STATE_SCHEMA:
            self.faults.fault("malformed_plan_state", f"schema {payload['schema']!r}, expected {PLAN_STATE_SCHEMA!r}")
            return
        size = payload.get("image_size")
        image_size = None
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            image_size = (size[0], size[1])
        instruction = str(payload.get("instruction") or "")
        if instruction:
            try:
                self.bundle.instruction_embedding(instruction)
            except UnknownInstructionError as exc:
                self.faults.fault("unknown_instruction", str(exc))
                instruction = ""
        with self._lock:
            self._plan_instruction = instruction
            self._plan_image_size = image_size

    def _on_estop(self, msg: Bool) -> None:
        engaged = bool(msg.data)
        if engaged == self._estop:
            return
        if engaged:
            self._estop_received_mono = common.monotonic()
            self._estop_received_s = common.now_seconds(self)
            self._estop_first_hold_s = None
        self._estop = engaged  # read by the next control tick (a plain attribute: atomic)
        self.get_logger().warning(f"e-stop {'ENGAGED: holding' if engaged else 'released'}")

    # ------------------------------------------------------------------ control tick
    def _control_tick(self) -> None:
        if self._stop.is_set():
            return  # shutting down: publishers are being destroyed
        started = common.monotonic()
        tick_time = self.get_clock().now()
        now = tick_time.nanoseconds * 1e-9
        estop = self._estop
        with self._lock:
            measured = self._measured
            stamps = dict(self._stamps)
            target = self._target
            instruction = self.instruction_parameter or self._plan_instruction
        if self._last_tick_s is not None and now < self._last_tick_s - self.dt:
            self._restart_after_clock_jump(now)
        self._last_tick_s = now
        active = target is not None and bool(instruction) and not estop
        if active != self._was_active:
            # Idle or e-stop, and back: drop the plan, so that resuming starts from a fresh
            # chunk computed from where the arm is, not from a plan whose time has passed.
            self.chunks.reset()
            self._last_failure = None
        self._was_active = active
        slot = self._slot_time(now)
        setpoint = self.chunks.setpoint(slot) if active else None
        candidate = None if setpoint is None else setpoint.positions
        fault = self._last_failure if active and candidate is None else None
        decision = self.safety.filter(candidate, measured, now, stamps, estop, self.dt, candidate_fault=fault)
        self.tick_stats.record(now, True)
        if setpoint is not None and setpoint.positions is not None:
            self.execution_stats.record(now, setpoint.fresh)
        if decision.command is not None:
            self._publish_command(decision, tick_time.to_msg(), slot, measured, setpoint)
            if estop and self._estop_first_hold_s is None and self._estop_received_mono is not None:
                self._estop_first_hold_s = common.monotonic() - self._estop_received_mono
        if active:
            self._maybe_request_inference(now, stamps, target)
        self.tick_compute.add((common.monotonic() - started) * 1e3)

    def _restart_after_clock_jump(self, now: float) -> None:
        """Time went back by more than a tick (a simulator restarted, a system clock step).

        The plan and the last inferred observation carry stamps of the old time line and would
        make every new chunk "not newer"; they are dropped (the arm decelerates to a hold until
        a new chunk comes). The safety filter keeps its command history: restarting it while
        the arm moves would be a velocity step. (This project's simulator keeps sim time
        monotonic across resets; a replayed or restarted /clock does jump back.)
        """
        self.faults.fault("clock_jumped_back", f"time went back from {self._last_tick_s:.3f} s to {now:.3f} s: "
                          "plan and observation history cleared")
        self.chunks.reset()
        self._grid_origin = None
        with self._lock:
            self._last_inferred_obs_s = None
            self._executing_seq = None

    def _slot_time(self, now: float) -> float:
        """``now`` snapped to the timer's grid of ``dt`` steps.

        The executor is sampled at the nominal tick time, not at the moment the callback ran:
        a tick the OS delayed by a few ms then still advances the command by exactly one step
        of the plan, so scheduling jitter does not turn into velocity/acceleration spikes (the
        filter works with the nominal dt). Re-anchored when the clock jumps back (sim reset).
        """
        if self._grid_origin is None or now < self._grid_origin:
            self._grid_origin = now
        return self._grid_origin + round((now - self._grid_origin) / self.dt) * self.dt

    def _maybe_request_inference(self, now: float, stamps: dict, target: _Target) -> None:
        images = (stamps["cam_high"], stamps["wrist"])
        fresh = not check_input_ages(now, stamps, self.limits.max_input_age_s)
        with self._lock:
            request = InferenceRequest(
                active=fresh, in_flight=self._in_flight,
                needs_chunk=self.chunks.needs_new_chunk(now, self.threshold_steps),
                target_changed=self._executing_seq != target.seq,
                newest_observation_s=None if None in images else min(images),
                last_inferred_observation_s=self._last_inferred_obs_s)
            due = inference_due(request)
            if due:
                self._in_flight = True
        if due:
            self._inference_worker.wake()

    # ------------------------------------------------------------------ inference
    def _take_snapshot(self) -> Optional[_Snapshot]:
        with self._lock:
            wrist, top, joints, target = self._images["wrist"], self._images["cam_high"], self._measured, self._target
            instruction = self.instruction_parameter or self._plan_instruction
            size = self.top_size if self.top_size[0] else self._plan_image_size
            if wrist is None or top is None or joints is None or target is None or not instruction:
                return None
            stamp = min(self._stamps["wrist"], self._stamps["cam_high"])
            self._last_inferred_obs_s = stamp
        if size is None:
            self._fail("no_image_size", "cam_high size unknown: top_image_width/height not set and no image_size "
                       "in /vla/plan_state yet; cannot normalise the affordance")
            return None
        try:
            keypoints = affordance_keypoints(target.pixels, *size, self.pipeline.keypoints)
        except AffordanceError as exc:
            # A malformed target is no target: hold rather than act on a guess.
            self._fail("malformed_affordance", str(exc))
            return None
        return _Snapshot(wrist, top, joints.copy(), target, keypoints, instruction, stamp)

    def _run_inference(self) -> None:
        try:
            snapshot = None if self._stop.is_set() else self._take_snapshot()
            if snapshot is not None:
                self._infer_and_submit(snapshot)
        finally:
            with self._lock:
                self._in_flight = False

    def _infer_and_submit(self, snapshot: _Snapshot) -> None:
        try:
            observation = ActorObservation(common.image_to_numpy(snapshot.wrist, "rgb8"),
                                           common.image_to_numpy(snapshot.top, "rgb8"), snapshot.keypoints,
                                           snapshot.joints, snapshot.instruction)
        except common.ImageMessageError as exc:
            self._fail("malformed_image", str(exc))
            return
        inject = bool(self.fault_injection) and self._inferences % self.fault_period == self.fault_period - 1
        self._inferences += 1
        self._inject_now = inject
        try:
            result = self.pipeline.infer(observation)
        except (ValueError, TypeError) as exc:  # unknown instruction, contract error: hold, counted
            self._fail("inference_error", f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._inject_now = False
        if self.inference_delay_s > 0.0:
            self._stop.wait(self.inference_delay_s)  # artificial latency (benchmarks only)
        self._record_timings(result.timings)
        if not result.ok:
            self._fail("inference_failure", result.failure.describe(), kind=self._failure_key(result.failure))
            return
        chunk = inject_nan(result.chunk) if inject and self.fault_injection == "nan_chunk" else result.chunk
        with self._lock:
            target = self._target
        if self._estop or target is None or not self._was_active:
            # The arm went idle or e-stopped while this ran: never execute it afterwards.
            self.faults.count("chunk_discarded_inactive")
            return
        now = common.now_seconds(self)
        report = self.chunks.submit(chunk, snapshot.stamp_s, now)
        if report.dropped:
            self._fail("chunk_dropped", report.detail, kind=report.reason)
            return
        if self._stop.is_set():
            return
        with self._lock:
            self._executing_seq = snapshot.target.seq
        self._last_failure = None
        self.splice_delay.add(report.elapsed_s * 1e3)
        self._record_seam(report)
        self.chunk_pub.publish(self._chunk_message(chunk, snapshot.stamp_s))

    @staticmethod
    def _failure_key(failure) -> str:
        return failure.kind.value + (f"/{failure.fast_failure.value}" if failure.fast_failure else "")

    def _fail(self, reason: str, detail: str, kind: str = "") -> None:
        """Count a failed inference; the executor keeps the last valid chunk (or the arm holds)."""
        key = f"{reason}.{kind}" if kind else reason
        self.faults.fault(key, detail)
        self._last_failure = f"{reason}:{kind}" if kind else reason

    def _record_timings(self, timings) -> None:
        for stage in TIMING_STAGES:
            value = getattr(timings, stage)
            if value is not None:
                self.latency[stage].add(value * 1e3)

    def _record_seam(self, report) -> None:
        seam = self._seam
        seam["last_skipped_steps"] = report.skipped_steps
        seam["max_skipped_steps"] = max(seam["max_skipped_steps"], report.skipped_steps)
        if report.seam_jump is None:
            return
        seam["last_jump"] = float(np.max(report.seam_jump[REVOLUTE]))
        seam["max_jump"] = max(seam["max_jump"], seam["last_jump"])
        seam["max_velocity"] = max(seam["max_velocity"], float(np.max(report.seam_velocity[REVOLUTE])))
        seam["max_acceleration"] = max(seam["max_acceleration"], float(np.max(report.seam_acceleration[REVOLUTE])))

    # ------------------------------------------------------------------ outputs
    def _publish_command(self, decision, stamp, now: float, measured, setpoint) -> None:
        """Publish the filtered command; ``stamp`` is the tick's time (what the filter decided for)."""
        command = decision.command
        if self.output_mode == "trajectory":
            self.command_pub.publish(self._trajectory_message(decision, now, measured, setpoint))
        elif self.output_mode == "stream":
            self.command_pub.publish(Float64MultiArray(data=[float(v) for v in command]))
        else:
            names, positions = urdf_to_vendor(self.arm, command)
            vendor = JointState(name=names, position=positions)
            vendor.header.stamp = stamp
            self.command_pub.publish(vendor)
        sent = JointState(name=list(self.joint_names), position=[float(v) for v in command])
        if decision.velocity is not None:
            sent.velocity = [float(v) for v in decision.velocity]
        sent.header.stamp = stamp
        self.sent_pub.publish(sent)
        self._commands += 1

    def _trajectory_message(self, decision, now: float, measured, setpoint) -> JointTrajectory:
        future = None
        if not decision.held and setpoint is not None and setpoint.positions is not None and self.horizon_steps:
            # The executor's own output on the control grid after this tick (what stream mode
            # would send next), checked by the filter's preview below.
            future = np.stack([self.chunks.setpoint(now + k * self.dt).positions
                               for k in range(1, self.horizon_steps + 1)])
        tail = safe_trajectory_tail(self.safety, future, measured, self.dt)
        message = JointTrajectory(joint_names=list(self.joint_names))  # header.stamp 0 = start on receipt
        for index, positions in enumerate([decision.command, *tail]):
            message.points.append(JointTrajectoryPoint(positions=[float(v) for v in positions],
                                                       time_from_start=_duration((index + 1) * self.dt)))
        return message

    def _chunk_message(self, chunk: np.ndarray, stamp_s: float) -> JointTrajectory:
        message = JointTrajectory(joint_names=list(self.joint_names))
        message.header.stamp = common.seconds_to_stamp(stamp_s)
        for step, positions in enumerate(chunk):
            message.points.append(JointTrajectoryPoint(positions=[float(v) for v in positions],
                                                       time_from_start=_duration(step * self.chunk_dt)))
        return message

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        safety = self.safety.counters.as_dict()
        executor = self.chunks.counters()
        outcomes = self.pipeline.outcome_counts()
        faults = self.faults.snapshot()
        with self._lock:
            target = self._target
            instruction = self.instruction_parameter or self._plan_instruction
            in_flight = self._in_flight
        values = {
            "arm": self.arm, "output_mode": self.output_mode, "blend": self.blend,
            "estop": self._estop, "active": self._was_active,
            "target_index": "none" if target is None else target.index,
            "instruction": instruction or "none", "inference_in_flight": in_flight,
            "inferences": self._inferences, "commands_published": self._commands,
            "fault_injection": self.fault_injection or "off",
            # Full precision (the generic float format keeps 6 digits, too few for a time stamp).
            "estop_received_at_s": "none" if self._estop_received_s is None else f"{self._estop_received_s:.6f}",
            "estop_hold_latency_ms": "none" if self._estop_first_hold_s is None else self._estop_first_hold_s * 1e3,
            **{f"latency.{stage}.{key}": value for stage, window in self.latency.items()
               for key, value in window.stats().items()},
            **{f"observation_to_splice_{key}": value for key, value in self.splice_delay.stats().items()},
            **{f"control_tick_compute_{key}": value for key, value in self.tick_compute.stats().items()},
            **{f"inference.{key}": value for key, value in outcomes.items()},
            **{f"executor.{key}": value for key, value in executor.items()},
            **{f"safety.{key}": value for key, value in safety.items()},
            **{f"fault.{key}": value for key, value in faults.items()},
            **{f"seam.{key}": value for key, value in self._seam.items()},
            **{f"execution.{key}": _none(value) for key, value in self.execution_stats.summary().items()},
            **{f"tick.{key}": _none(value) for key, value in self.tick_stats.summary().items()},
        }
        failures = sum(n for key, n in faults.items() if key.startswith(("inference_", "chunk_dropped", "malformed")))
        errors = failures + sum(n for key, n in faults.items() if key.endswith("_error"))
        warnings = self.safety.counters.count_kind(SafetyEventKind.STALE_INPUT) + \
            self.safety.counters.count_kind(SafetyEventKind.NO_MEASURED_STATE)
        level = 2 if self._estop else self._levels.level(errors, warnings)
        message = "e-stop engaged: holding" if self._estop else \
            ["ok", "holding on stale or missing inputs", "inference failures or dropped chunks"][level]
        status = common.diagnostic_status(f"{self.get_name()}: actor", self.get_name(), level, message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def _duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _none(value):
    return "none" if value is None else value


def main(args=None) -> int:
    # Five groups (control, inference, e-stop, inputs, diagnostics): one thread each, so none waits on another.
    return common.run_node(ActorNode)


if __name__ == "__main__":
    sys.exit(main())
