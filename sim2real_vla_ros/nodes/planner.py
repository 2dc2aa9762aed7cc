"""planner node: the chain of affordances (paper section 4.1) at a low rate, gated by the validator.

Parameters: ``PARAMETERS`` below (the README's table is generated from it); ``instruction``
can be set at run time (``ros2 param set /planner instruction '...'``), the others are read-only.

Subscriptions
-------------
/vla/masked/cam_high : sensor_msgs/Image rgb8
    Newest masked top image (from camera_mask); the planner model's observation.
/vla/validator/event : sim2real_vla_interfaces/ValidatorEvent
    ``open`` advances the chain, ``replan`` re-plans the same step, ``abort`` aborts and holds.
/vla/instruction : std_msgs/String (latched)
    Setting it (re)starts the task with that instruction. A sample written before this planner
    process started (the latched one a restarted planner receives) only sets the instruction
    for the next /vla/start: a restarted planner never resumes a task by itself.
/vla/estop : std_msgs/Bool (latched)
    Engaged (from any publisher) stops the task: empty affordances, arms hold.
/cam_high/camera_info : sensor_msgs/CameraInfo
    Native cam_high size (pixel coordinates of the published keypoints) and intrinsics (markers).
/cam_high/image_raw : sensor_msgs/Image (only with overlay_source = raw)

Publications
------------
/vla/affordance/left, /vla/affordance/right : geometry_msgs/PolygonStamped (latched)
    Keypoints in native cam_high pixels, z = affordance index, stamp = the observation the
    prediction came from, frame cam_high_optical_frame; empty polygon = arm idle / hold.
/vla/plan_state : sim2real_vla_interfaces/PlanState (latched)
    Phase, index, retries, instruction, task, per-arm ``Affordance`` (keypoints in native
    cam_high pixels, or the model's while the native size is unknown), e-stop, reason.
/vla/affordance_markers : visualization_msgs/MarkerArray
    Keypoints on their camera rays at ``marker_depth_m`` in cam_high_optical_frame.
/vla/affordance_overlay : sensor_msgs/Image rgb8, keypoints drawn on the newest cam_high image.
/vla/estop : std_msgs/Bool (latched), set by /vla/set_estop. Nothing is published at start-up:
    a restarted planner must not release an e-stop engaged before it came up (the actors keep
    the latch and republish it, so an engaged e-stop reaches a restarted planner).
/vla/planner/heartbeat : std_msgs/Header, HEARTBEAT_RATE_HZ from the executor thread; stamp =
    node clock, frame_id = this process's boot id. The actors hold when it stops
    (core/control/motion_permit.py) and treat a new boot id as a restart.
/diagnostics : diagnostic_msgs/DiagnosticArray

Services
--------
/vla/start : sim2real_vla_interfaces/StartTask
    Start (or restart) with the request's instruction; an empty one = the last instruction
    (topic) or the ``instruction`` parameter (what std_srvs/Trigger did); fails with the reason (unknown instruction, e-stop engaged) and the node keeps running.
/vla/stop : std_srvs/Trigger
    Stop the task and hold (phase idle, empty affordances).
/vla/set_estop : std_srvs/SetBool
    true engages the e-stop (task stopped, arms hold), false releases it (start again to resume).

Actions
-------
/vla/execute_task : sim2real_vla_interfaces/ExecuteTask (nodes/task_action.py)
    Run one task to its end: feedback at the planner rate (phase, index, per-arm progress from
    /vla/task_state and /vla/actor_<arm>/status, which it subscribes), result from the chain's
    phase, the goal's timeout or max_steps; cancel = stop and hold.
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Optional

import numpy as np
from geometry_msgs.msg import Point, Point32, PolygonStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, ColorRGBA, Header, String
from std_srvs.srv import SetBool, Trigger
from sim2real_vla_interfaces.msg import PlanState, ValidatorEvent
from sim2real_vla_interfaces.srv import StartTask
from visualization_msgs.msg import Marker, MarkerArray

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.bounded_text import bounded
from sim2real_vla_ros.core.task.affordance_chain import denormalise_keypoints
from sim2real_vla_ros.core.task.planner_logic import PlannerConfig, PlannerCore
from sim2real_vla_ros.core.perception.camera_pairing import RateMeter
from sim2real_vla_ros.core.policy.observation import pixels_to_optical_points
from sim2real_vla_ros.core.perception.overlay import ARM_COLORS, draw_affordances
from sim2real_vla_ros.core.task.records import EVENT_WIRE_NAMES, parse_validator_event
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.task_action import ExecuteTaskServer
from sim2real_vla_ros.nodes.task_messages import plan_state_to_msg, validator_event_from_msg
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.lifecycle import LIFECYCLE_AUTOSTART, ManagedNode
from sim2real_vla_ros.nodes.node_support import (BUNDLE_PARAMETERS, DIAGNOSTICS_RATE, FaultLog,
                                                 LevelTracker, load_node_bundle)
from sim2real_vla_ros.core.vocabulary import ARMS

FRAME_ID = "cam_high_optical_frame"
HEARTBEAT_RATE_HZ = 4.0
"""Heartbeat rate: the actors' planner_timeout_s (1.5 s) is 6 heartbeat periods, so a loaded
executor may miss 5 in a row before the arms hold."""
OVERLAY_SOURCES = ("masked", "raw")

PARAMETERS = (
    *BUNDLE_PARAMETERS,
    Param("instruction", "", "Task instruction used by /vla/start (must have an embedding in the bundle); '' = "
          "wait for /vla/instruction", read_only=False),
    Param("autostart", False, "Start with 'instruction' at the first timer tick (no /vla/start needed); refused "
          "without use_sim_time: a respawned planner would restart the task by itself", test_hook=True),
    Param("planner_rate_hz", 2.0, "Planner timer rate (Hz, node clock: sim time under use_sim_time)",
          lambda v: 0.0 < v <= 50.0, "in (0, 50]"),
    Param("chain_length", 1, "K: previous affordances the planner is conditioned on (checked against the model)",
          lambda v: 1 <= v <= 16, "in [1, 16]"),
    Param("max_retries", 2, "Re-plans of one step before the task aborts (keep equal to the validator's "
          "max_retries)", lambda v: 0 <= v <= 100, "in [0, 100]"),
    Param("max_steps", 10, "Largest number of affordances in one task; more fails it",
          lambda v: 1 <= v <= 1000, "in [1, 1000]"),
    Param("done_threshold", 0.5, "The task succeeds when the model's done probability exceeds this",
          lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    Param("backstop_timeout_s", 0.0, "Re-plan a step after this long without a validator event (s); 0 = off "
          "(rely on the validator)", lambda v: v >= 0.0, ">= 0"),
    Param("max_input_age_s.cam_high", 1.0, "Oldest masked cam_high image a prediction may use (s)",
          lambda v: 0.0 < v <= 60.0, "in (0, 60]"),
    Param("image_width", 0, "Native cam_high width (px) of the published keypoints; 0 = from camera_info "
          "(image_width and image_height: both 0 or both set)", lambda v: 0 <= v <= 16384, "in [0, 16384]"),
    Param("image_height", 0, "Native cam_high height (px); 0 = from camera_info",
          lambda v: 0 <= v <= 16384, "in [0, 16384]"),
    Param("overlay_source", "masked", "Image the overlay is drawn on: masked (model resolution) or raw (native "
          "cam_high)", lambda v: v in OVERLAY_SOURCES, f"one of {list(OVERLAY_SOURCES)}"),
    Param("overlay_rate_hz", 5.0, "Overlay image and rviz marker rate (Hz)", lambda v: 0.0 < v <= 60.0,
          "in (0, 60]"),
    Param("marker_depth_m", 1.0, "Depth of the keypoint markers along their camera rays (m)",
          lambda v: 0.0 < v <= 20.0, "in (0, 20]"),
    DIAGNOSTICS_RATE,
    LIFECYCLE_AUTOSTART,
)


class PlannerNode(ManagedNode):
    """Runs `AffordanceChain` with the bundle's planner model; publishes targets and task state."""

    def __init__(self) -> None:
        super().__init__("planner")
        self._values = self._declare_parameters()
        self.faults = FaultLog(self)
        self._levels = LevelTracker()
        self._lock = threading.Lock()  # the core is not thread-safe: executor and tick threads share it
        self._instruction = self.instruction_param
        self.boot_id = uuid.uuid4().hex[:12]
        self._started_wall_ns = time.time_ns()  # DDS source timestamps are system time
        self._latest_raw: Optional[Image] = None
        self._native_size = (self.image_width, self.image_height) if self.image_width and self.image_height else None
        self._intrinsics: Optional[np.ndarray] = None
        self._autostart_pending = self.autostart
        self._tick_rate = RateMeter(window_s=max(5.0, 5.0 / self.rate_hz))
        self._ticks = 0
        self._execute_task = None
        self.bundle = self.model = self.core = self.chain = None
        common.on_set_parameters(self, PARAMETERS, self._apply_parameters)
        self.start_lifecycle(self._values["lifecycle_autostart"], self.diagnostics_rate_hz, self.faults)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        self.bundle = load_node_bundle(self, self._values)
        manifest = self.bundle.manifest
        self.model = self.bundle.model("planner")
        self.model_size = (manifest.image.width, manifest.image.height)
        self._check_chain_length()
        # Every decision (chain, task, what to publish) lives in the ROS-free core, shared with
        # the in-process runner; this node translates messages to and from it.
        self.core = PlannerCore(self.bundle, PlannerConfig(
            rate_hz=self.rate_hz, chain_length=self.chain_length, max_retries=self.max_retries,
            max_steps=self.max_steps, done_threshold=self.done_threshold,
            backstop_timeout_s=self.backstop_timeout_s, max_image_age_s=self.max_image_age_s),
            self.faults, to_rgb=lambda msg: common.image_to_numpy(msg, "rgb8"), task_name=_task_name)
        self.chain = self.core.chain
        self.model.warmup(1)  # the first ONNX Runtime run allocates: keep it out of the first plan
        self._create_interfaces()
        self.get_logger().info(f"planner ready: {self.rate_hz} Hz, K={self.chain_length}, "
                               f"P={manifest.keypoints_per_arm}, instruction={self._instruction!r}")

    def activate(self) -> None:
        # The planning tick (the model) runs in its own thread, woken by the timer: services,
        # validator events and the e-stop stay responsive while it computes, and two ticks
        # never overlap. Deactivation stops it (the base's), and with it the heartbeat (its
        # timer returns unless active): the actors hold within planner_timeout_s.
        self.start_worker("tick", self._on_tick, "tick_error")
        with self._lock:
            self.core.forget_published()  # what was given while inactive was dropped: publish it now
            self._publish_state_locked(common.now_seconds(self))

    def release(self) -> None:
        if self._execute_task is not None:
            self._execute_task.destroy()
            self._execute_task = None
        self.bundle = self.model = self.core = self.chain = None

    # ------------------------------------------------------------------ set-up
    def _declare_parameters(self) -> dict:
        values = common.declare_parameters(self, PARAMETERS)
        self.instruction_param = values["instruction"]
        self.autostart = values["autostart"]
        self.rate_hz = values["planner_rate_hz"]
        self.chain_length = values["chain_length"]
        self.max_retries = values["max_retries"]
        self.max_steps = values["max_steps"]
        self.done_threshold = values["done_threshold"]
        self.backstop_timeout_s = values["backstop_timeout_s"]
        self.max_image_age_s = values["max_input_age_s.cam_high"]
        self.image_width, self.image_height = values["image_width"], values["image_height"]
        if (self.image_width == 0) != (self.image_height == 0):
            raise ValueError("parameters 'image_width' and 'image_height' must both be 0 (camera_info) or both set")
        self.overlay_source = values["overlay_source"]
        self.overlay_rate_hz = values["overlay_rate_hz"]
        self.marker_depth_m = values["marker_depth_m"]
        self.diagnostics_rate_hz = values["diagnostics_rate_hz"]
        return values

    def _check_chain_length(self) -> None:
        shape = self.model.input_specs["prev_affordance"].shape
        if isinstance(shape[1], int) and shape[1] != self.chain_length:
            raise ValueError(f"parameter 'chain_length' = {self.chain_length}, but the bundle's planner model takes "
                             f"K = {shape[1]} previous affordances (prev_affordance {list(shape)})")

    def destroy_node(self) -> None:
        if self._execute_task is not None:
            self._execute_task.destroy()
        super().destroy_node()

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        self.create_subscription(Image, vocab.masked_topic(vocab.TOP_CAMERA), guard(self._on_masked, "callback_error"),
                                 common.SENSOR_QOS)
        if self.overlay_source == "raw":
            self.create_subscription(Image, vocab.camera_image_topic(vocab.TOP_CAMERA), guard(self._on_raw, "callback_error"),
                                     common.SENSOR_QOS)
        self.create_subscription(CameraInfo, vocab.camera_info_topic(vocab.TOP_CAMERA), guard(self._on_camera_info, "callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(ValidatorEvent, vocab.VALIDATOR_EVENT, guard(self._on_validator_event, "callback_error"),
                                 common.COMMAND_QOS)
        self.create_subscription(String, vocab.INSTRUCTION, guard(self._on_instruction, "callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Bool, vocab.ESTOP, guard(self._on_estop, "callback_error"), common.LATCHED_QOS)
        # Lifecycle publishers: nothing goes out unless active. The e-stop is a plain publisher:
        # ~/set_estop must reach the actors in every state.
        lifecycle_publisher = self.create_lifecycle_publisher
        self.affordance_pubs = {arm: lifecycle_publisher(PolygonStamped, vocab.affordance_topic(arm), common.LATCHED_QOS)
                                for arm in ARMS}
        self.state_pub = lifecycle_publisher(PlanState, vocab.PLAN_STATE, common.LATCHED_QOS)
        self.marker_pub = lifecycle_publisher(MarkerArray, vocab.AFFORDANCE_MARKERS, common.COMMAND_QOS)
        self.overlay_pub = lifecycle_publisher(Image, vocab.AFFORDANCE_OVERLAY, common.SENSOR_QOS)
        self.estop_pub = self.create_publisher(Bool, vocab.ESTOP, common.LATCHED_QOS)
        self.heartbeat_pub = lifecycle_publisher(Header, vocab.PLANNER_HEARTBEAT, common.HEARTBEAT_QOS)
        self.create_service(StartTask, vocab.START_SERVICE, self._handle_start)
        self.create_service(Trigger, vocab.STOP_SERVICE, self._handle_stop)
        self.create_service(SetBool, vocab.SET_ESTOP_SERVICE, self._handle_set_estop)
        self._execute_task = ExecuteTaskServer(self, self._start, self._stop_task, self._chain_state, self.rate_hz)
        self.create_timer(1.0 / self.rate_hz, self.wake_worker)
        # On the executor, not in the tick thread: it says the process and its executor are alive;
        # a slow model run does not stop it (the actors' affordance age covers a stuck model).
        self.create_timer(1.0 / HEARTBEAT_RATE_HZ, guard(self._publish_heartbeat, "heartbeat_error"))
        self.create_timer(1.0 / self.overlay_rate_hz, guard(self._publish_visuals, "visuals_error"))

    def _apply_parameters(self, values: dict) -> None:
        """A run-time set of the live parameters (only ``instruction``): used by the next /vla/start."""
        with self._lock:
            self._instruction = str(values["instruction"])

    # ------------------------------------------------------------------ inputs
    def _on_masked(self, msg: Image) -> None:
        with self._lock:
            self.core.on_masked_image(msg, common.stamp_to_seconds(msg.header.stamp))

    def _on_raw(self, msg: Image) -> None:
        with self._lock:
            self._latest_raw = msg
            if self.image_width == 0 and msg.width > 0 and msg.height > 0:
                self._native_size = (int(msg.width), int(msg.height))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if msg.width <= 0 or msg.height <= 0:
            self.faults.fault("malformed_camera_info", f"camera_info size {msg.width}x{msg.height}")
            return
        intrinsics = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        with self._lock:
            if self.image_width == 0:
                self._native_size = (int(msg.width), int(msg.height))
            if intrinsics[0, 0] > 0 and intrinsics[1, 1] > 0:
                # Intrinsics belong to the camera_info's size; rescale if the parameters say otherwise.
                scale = np.diag([self._native_size[0] / msg.width, self._native_size[1] / msg.height, 1.0])
                self._intrinsics = scale @ intrinsics

    def _on_instruction(self, msg: String, info) -> None:
        # ``info`` (rclpy MessageInfo) must stay a required argument: rclpy passes it only to a
        # callback that cannot be called with the message alone.
        written_ns = info.get("source_timestamp", 0) if isinstance(info, dict) else 0
        if written_ns and written_ns < self._started_wall_ns:
            # The latched sample of an instruction sent before this process started: a restarted
            # planner must not resume a task by itself (a start is needed after any release).
            with self._lock:
                self._instruction = msg.data.strip()
            self.faults.fault("instruction_not_started", "latched /vla/instruction written before this planner "
                              f"started ({bounded(msg.data, 80)!r}): kept for the next /vla/start, not started")
            return
        ok, message = self._start(msg.data, vocab.INSTRUCTION)
        if ok:
            self.get_logger().info(f"/vla/instruction: {message}")

    def _on_validator_event(self, msg: ValidatorEvent) -> None:
        try:
            event, index, reason = parse_validator_event(validator_event_from_msg(msg))
        except ValueError as exc:
            self.faults.fault("malformed_validator_event", str(exc))
            return
        now = common.now_seconds(self)
        with self._lock:
            if self.core.on_gate_event(event, index, now):
                self.get_logger().info(f"validator {EVENT_WIRE_NAMES[event]} for affordance {index}: "
                                       f"{bounded(reason)} -> {bounded(self.chain.state.last_reason)}")
            self._publish_state_locked(now)

    def _on_estop(self, msg: Bool) -> None:
        self._apply_estop(bool(msg.data), vocab.ESTOP)

    def _apply_estop(self, engaged: bool, source: str) -> None:
        now = common.now_seconds(self)
        with self._lock:
            changed = self.core.set_estop(engaged, source, now)
            self._publish_state_locked(now)
        if changed:
            self.get_logger().warning(f"e-stop {'ENGAGED' if engaged else 'released'} ({source})")

    def _publish_heartbeat(self) -> None:
        if not self.is_active:
            return
        beat = Header(frame_id=self.boot_id)
        beat.stamp = self.get_clock().now().to_msg()
        self.heartbeat_pub.publish(beat)

    # ------------------------------------------------------------------ services
    def _handle_start(self, request, response):
        try:
            response.success, response.message = self._start(request.instruction or None, vocab.START_SERVICE,
                                                              request.task_name)
            if response.success:
                self.get_logger().info(f"/vla/start: {response.message}")
        except Exception as exc:  # never let a service callback raise
            self.faults.fault("start_error", f"{type(exc).__name__}: {exc}")
            response.success, response.message = False, f"start failed: {type(exc).__name__}: {exc}"
        return response

    def _stop_task(self, source: str) -> None:
        """Stop the task and hold (phase idle, empty affordances)."""
        now = common.now_seconds(self)
        with self._lock:
            self.core.stop(source, now)
            self._publish_state_locked(now)

    def _chain_state(self):
        with self._lock:
            return self.chain.state

    def _handle_stop(self, request, response):
        self._stop_task(vocab.STOP_SERVICE)
        response.success, response.message = True, "stopped: arms hold (empty affordances)"
        return response

    def _handle_set_estop(self, request, response):
        engaged = bool(request.data)
        self.estop_pub.publish(Bool(data=engaged))
        self._apply_estop(engaged, vocab.SET_ESTOP_SERVICE)
        response.success = True
        response.message = ("e-stop engaged: task stopped, arms hold" if engaged
                            else "e-stop released: call /vla/start to resume")
        return response

    def _start(self, instruction: Optional[str], source: str, task_name: str = "") -> tuple:
        """Start or restart the chain; returns (success, message).

        ``instruction`` None = the last one; ``task_name`` (optional) must be the tasks.yaml task
        of the instruction.
        """
        if not self.is_active:
            return self._refused(f"planner {self.lifecycle_state}: activate it before starting a task")
        with self._lock:
            text = (self._instruction if instruction is None else instruction).strip()
        # rclpy does not check string bounds on receipt (README, Interfaces): the core refuses an
        # instruction longer than StartTask's string<=512 (core.bounded_text.MAX_ECHO_CHARS).
        if task_name and _task_name(text) != task_name:
            return self._refused(f"task_name {bounded(task_name, 64)!r} does not match the instruction "
                                 f"{bounded(text, 80)!r} "
                                 f"(its task: {_task_name(text)!r})")
        now = common.now_seconds(self)
        with self._lock:
            ok, message = self.core.start(text, now, source)
            if ok:
                self._instruction = text
            self._publish_state_locked(now)
        return ok, message

    def _refused(self, message: str) -> tuple:
        """A start refused before it reached the core (counted, shown in plan_state)."""
        now = common.now_seconds(self)
        with self._lock:
            ok, message = self.core.refuse(message)
            self._publish_state_locked(now)
        return ok, message

    # ------------------------------------------------------------------ planning
    def _on_tick(self) -> None:
        now = common.now_seconds(self)
        self._ticks += 1
        self._tick_rate.add(now)
        if self._autostart_pending:
            self._autostart_pending = False
            ok, message = self._start(None, "autostart")
            if ok:
                self.get_logger().info(f"autostart: {message}")
        with self._lock:
            job = self.core.prepare(now)
            self._publish_state_locked(now)
        if job is None:
            return
        outputs = self.core.predict(job)  # on failure (counted) the request lapses and is asked again
        if outputs is None:
            return
        now = common.now_seconds(self)
        with self._lock:
            self.core.on_outputs(job, outputs, now)
            self._publish_state_locked(now)

    # ------------------------------------------------------------------ outputs
    def _publish_state_locked(self, now: float) -> None:
        """Publish plan_state and the affordances when they changed (caller holds the lock)."""
        publication = self.core.publication(now, self._native_size)
        if publication.plan_state is not None:
            self.state_pub.publish(plan_state_to_msg(publication.plan_state, self._native_size or self.model_size))
        for arm, target in (publication.affordances or {}).items():
            msg = PolygonStamped()
            msg.header.frame_id = FRAME_ID
            msg.header.stamp = common.seconds_to_stamp(target.stamp_s)
            msg.polygon.points = [Point32(x=float(x), y=float(y), z=float(target.index)) for x, y in target.pixels]
            self.affordance_pubs[arm].publish(msg)

    def _publish_visuals(self) -> None:
        if not self.is_active:
            return
        with self._lock:
            state = self.chain.state
            native_size, intrinsics = self._native_size, self._intrinsics
            image_msg = self._latest_raw if self.overlay_source == "raw" else self.core.latest_image
        self._publish_markers(state, native_size, intrinsics)
        if image_msg is not None:
            self._publish_overlay(state, image_msg)

    def _publish_overlay(self, state, image_msg: Image) -> None:
        try:
            rgb = common.image_to_numpy(image_msg, "rgb8")
        except common.ImageMessageError as exc:
            self.faults.fault("malformed_image", str(exc))
            return
        keypoints, active = {}, {}
        if state.current is not None:
            size = (rgb.shape[1], rgb.shape[0])
            for slot, arm in enumerate(ARMS):
                keypoints[arm] = denormalise_keypoints(state.current.keypoints_normalised[slot], size)
                active[arm] = bool(state.current.arm_active[slot])
        overlay = draw_affordances(rgb, keypoints, active, index=state.index, label=state.phase.value)
        self.overlay_pub.publish(common.numpy_to_image(overlay, "rgb8", image_msg.header.stamp, FRAME_ID))

    def _publish_markers(self, state, native_size, intrinsics) -> None:
        clear = Marker(action=Marker.DELETEALL)
        clear.header.frame_id = FRAME_ID
        markers = [clear]
        if state.current is not None and native_size is not None:
            if intrinsics is None:
                intrinsics = _urdf_intrinsics(native_size)
            stamp = common.seconds_to_stamp(state.current.obs_stamp_s)
            for slot, arm in enumerate(ARMS):
                if not state.current.arm_active[slot]:
                    continue
                pixels = denormalise_keypoints(state.current.keypoints_normalised[slot], native_size)
                points = [Point(x=float(x), y=float(y), z=float(z))
                          for x, y, z in pixels_to_optical_points(pixels, intrinsics, self.marker_depth_m)]
                markers += _arm_markers(arm, points, stamp, state.index)
        self.marker_pub.publish(MarkerArray(markers=markers))

    def publish_diagnostics(self) -> None:
        now = common.now_seconds(self)
        with self._lock:
            state = self.chain.state
            seq = self.core.seq
        faults = self.faults.snapshot()
        model = self.model.latency_stats()
        values = {"phase": state.phase.value, "index": state.index, "instruction": state.instruction,
                  "affordance_seq": seq, "achieved": state.achieved_count, "retries": state.retries,
                  "reason": state.last_reason, "ticks": self._ticks, "tick_rate_hz": self._tick_rate.rate_hz(now),
                  "model_p50_ms": model["p50_ms"], "model_p99_ms": model["p99_ms"], "model_runs": model["total_runs"],
                  **{f"chain.{k}": v for k, v in state.counters.items()},
                  **{f"count.{k}": v for k, v in faults.items()}, **self.lifecycle_values()}
        errors = sum(v for k, v in faults.items() if "error" in k)
        warnings = sum(v for k, v in faults.items() if not k.startswith(("outcome.", "gate_")))
        level = self._levels.level(errors, warnings)
        message = ["ok", "faults counted since the last report", "errors counted since the last report"][level]
        status = common.diagnostic_status(f"{self.get_name()}: affordance chain", self.get_name(), level,
                                          f"{state.phase.value} #{state.index}: {message}", values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def _arm_markers(arm: str, points: list, stamp, index: int) -> list:
    red, green, blue = (c / 255.0 for c in ARM_COLORS.get(arm, (255, 0, 255)))
    color = ColorRGBA(r=red, g=green, b=blue, a=1.0)
    spheres = Marker(ns=f"affordance/{arm}", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD, points=points,
                     color=color)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.02
    line = Marker(ns=f"affordance/{arm}", id=1, type=Marker.LINE_STRIP, action=Marker.ADD, points=points, color=color)
    line.scale.x = 0.005
    label = Marker(ns=f"affordance/{arm}", id=2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                   text=f"{arm} #{index}", color=color)
    label.scale.z = 0.03
    label.pose.position = Point(x=points[0].x, y=points[0].y - 0.04, z=points[0].z)
    for marker in (spheres, line, label):
        marker.header.frame_id = FRAME_ID
        marker.header.stamp = stamp
        marker.pose.orientation.w = 1.0
    return [spheres, line, label]


_INTRINSICS_CACHE: dict = {}


def _urdf_intrinsics(native_size) -> np.ndarray:
    """cam_high intrinsics from the URDF's camera model when no camera_info carried them."""
    if native_size not in _INTRINSICS_CACHE:
        from sim2real_vla_ros.core.robot import camera_specs

        _INTRINSICS_CACHE[native_size] = camera_specs(*native_size)["cam_high"].intrinsics()
    return _INTRINSICS_CACHE[native_size]


def _task_name(instruction: str) -> Optional[str]:
    """Name of the tasks.yaml task with this instruction, None if it is not one of them."""
    from sim2real_vla_ros.core.task.tasks import TaskConfigError, UnknownTaskError, task_for_instruction

    try:
        return task_for_instruction(instruction).name
    except (UnknownTaskError, TaskConfigError):
        return None


def main(args=None) -> int:
    # Services, events, visuals and diagnostics on the executor's thread, planning in its own.
    return common.run_node(PlannerNode)


if __name__ == "__main__":
    sys.exit(main())
