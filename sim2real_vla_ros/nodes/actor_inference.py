"""actor_inference node (split actor, GPU host): one arm's model, answering the control node's requests.

Run as ``actor_inference --ros-args -r __node:=actor_left_inference -p arm:=left`` next to the
control half (``actor_control``, node name ``actor_left``, on the robot host). It keeps the
arm's newest observation (masked ``cam_high`` and wrist images, joints, affordance, plan) in
an :class:`ActorController` used as an input store only (it never ticks: control and safety
are the robot host's), and on each request runs the model in a worker thread and publishes the
decoded chunk stamped with the observation it was computed from. The control node splices it
by its measured age and filters every command; nothing here can move the arm.

========================================  ==============================  =======================
Topic (relative names; core.vocabulary)   Type                            Direction
========================================  ==============================  =======================
vla/masked/cam_high, vla/masked/<wrist>   sensor_msgs/Image               in (sensor QoS)
joint_states                              sensor_msgs/JointState          in (sensor QoS)
vla/affordance/<arm>                      geometry_msgs/PolygonStamped    in (latched)
vla/plan_state                            sim2real_vla_interfaces/PlanState (latched, in)
vla/actor_<arm>/request                   std_msgs/Header                 in (reliable, depth 1)
vla/actor_<arm>/inferred_chunk            trajectory_msgs/JointTrajectory out (reliable, depth 1)
/diagnostics                              diagnostic_msgs/DiagnosticArray out
========================================  ==============================  =======================

A request's ``stamp`` is the newest observation the control node saw; the node waits up to
``observation_wait_s`` for an observation at least that new (images cross the network after
the control node's copy) and infers on its newest one either way: the chunk's ``header.stamp``
is the observation actually used, ``frame_id`` ``<arm>/<target index>/<request id>``. A failed
inference is a chunk without points (``frame_id`` + ``/failed:<reason>``), so the control node
can ask again at once instead of waiting for its request timeout.

Parameters: ``PARAMETERS`` below (the actor's model parameters, same names as in the actor's
section of config/vla.yaml, plus ``observation_wait_s``).
"""
from __future__ import annotations

import sys
import threading
from typing import Optional

import numpy as np
from geometry_msgs.msg import PolygonStamped
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from sim2real_vla_interfaces.msg import PlanState
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController, FaultCounter, observation_of
from sim2real_vla_ros.core.control.actor_io import (UndecodableTokensDecoder, actor_plan_inputs,
                                                    arm_state_from_joint_state, inject_nan)
from sim2real_vla_ros.core.control.safety import SafetyLimits
from sim2real_vla_ros.core.control.split_actor import (INFERENCE_PARAMETER_NAMES, ChunkRequest, format_request_id,
                                                      parse_request_id)
from sim2real_vla_ros.core.policy.actor_pipeline import ActorPipeline
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.robot import arm_joint_names, arm_limits
from sim2real_vla_ros.core.vocabulary import WRIST_CAMERA
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.task_messages import plan_state_from_msg
from sim2real_vla_ros.nodes.actor import PARAMETERS as ACTOR_PARAMETERS
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.lifecycle import LIFECYCLE_AUTOSTART, ManagedNode
from sim2real_vla_ros.nodes.node_support import FaultLog, LevelTracker, load_node_bundle

# The actor's parameters that concern the model and its inputs (same names, same checks).
PARAMETERS = (
    *(param for param in ACTOR_PARAMETERS if param.name in INFERENCE_PARAMETER_NAMES),
    Param("observation_wait_s", 0.1, "Wait this long (s) for an observation as new as the request's before "
          "inferring on the newest one held (images cross the network after the control node's copy)",
          lambda v: 0.0 <= v <= 2.0, "in [0, 2]"),
    LIFECYCLE_AUTOSTART,
)
# Chunks and requests cross the network: reliable (a lost chunk costs a whole inference) and
# depth 1 (only the newest matters; after a cut link an old queued one is worthless).
SPLIT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


class ActorInferenceNode(ManagedNode):
    """Observation in, requests in -> model in a worker thread -> stamped chunks out; a managed node.

    configure loads the bundle and the pipeline, subscribes and warms the model up; activate
    starts answering requests (chunks are a lifecycle publisher); deactivate stops; cleanup
    releases the model (nodes.lifecycle).
    """

    def __init__(self) -> None:
        super().__init__("actor_inference")
        self._values = values = common.declare_parameters(self, PARAMETERS)
        self.arm = values["arm"]
        self.fault_injection, self.fault_period = values["fault_injection"], values["fault_injection_period"]
        self.inference_delay_s, self.observation_wait_s = values["inference_delay_s"], values["observation_wait_s"]
        self.diagnostics_rate_hz = values["diagnostics_rate_hz"]
        self.joint_names = arm_joint_names(self.arm)
        self.faults = FaultLog(self)
        top_size = (values["top_image_width"], values["top_image_height"])
        if (top_size[0] == 0) != (top_size[1] == 0):
            raise ValueError("parameters 'top_image_width' and 'top_image_height' must both be 0 or both set")
        self._config = ActorConfig(arm=self.arm, instruction=values["instruction"],
                                   top_image_size=top_size if top_size[0] else None)
        self._request_lock = threading.Lock()
        self._request: Optional[ChunkRequest] = None
        self._newer_image = threading.Condition()
        self._stop = threading.Event()
        self.context.on_shutdown(self._stop.set)
        self.bundle = self.pipeline = self.inputs = None
        self.requests = 0
        self.chunks_published = 0
        self.failures_published = 0
        self.round_trip = LatencyWindow()  # request received -> chunk published (ms, node clock)
        self.observation_age = LatencyWindow()  # observation stamp -> chunk published (ms)
        self._levels = LevelTracker()
        self._inject_now = False
        self.start_lifecycle(values["lifecycle_autostart"], self.diagnostics_rate_hz, self.faults)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        values = self._values
        self.bundle = load_node_bundle(self, values, load_fast_tokenizer=True)
        if values["instruction"]:
            try:
                self.bundle.instruction_embedding(values["instruction"])
            except UnknownInstructionError as exc:
                raise ValueError(f"parameter 'instruction': {exc}") from None
        self.pipeline = ActorPipeline(self.bundle, self.arm, relaxed_decode=values["relaxed_decode"])
        if self.fault_injection == "undecodable_tokens":
            spec = self.pipeline.token_spec
            self.pipeline.decoder = UndecodableTokensDecoder(self.pipeline.decoder, spec.bos_id, spec.eos_id,
                                                             enabled=lambda: self._inject_now)
        # An input store and the snapshot logic only: it never ticks, so its limits (the URDF's,
        # default safety settings) only validate joint readings. Control is the robot host's.
        self.inputs = ActorController(self._config, SafetyLimits.from_config(arm_limits(self.arm)),
                                      1.0 / self.bundle.manifest.action.control_rate_hz,
                                      self.bundle.manifest.keypoints_per_arm, FaultCounter(self.faults.fault),
                                      urdf_limits=arm_limits(self.arm))
        self._create_interfaces()
        self.pipeline.encoder.warmup(1)
        self.pipeline.decoder.warmup(1)
        self.get_logger().info(
            f"{self.get_name()} ready: arm={self.arm}, chunk {self.pipeline.chunk_length} steps"
            + (f", FAULT INJECTION '{self.fault_injection}'" if self.fault_injection else "")
            + (f", artificial delay {self.inference_delay_s:g} s" if self.inference_delay_s else ""))

    def activate(self) -> None:
        with self._request_lock:
            self._request = None  # a request received while inactive is not answered
        self.start_worker("inference", self._run_inference, "inference_callback_error")

    def release(self) -> None:
        self.bundle = self.pipeline = self.inputs = None

    def stop_worker(self) -> None:
        with self._newer_image:
            self._newer_image.notify_all()  # an inference waiting for a newer image gives up now
        super().stop_worker()

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        for name, camera in (("cam_high", vocab.TOP_CAMERA), ("wrist", WRIST_CAMERA[self.arm])):
            self.create_subscription(Image, vocab.masked_topic(camera),
                                     guard(lambda m, name=name: self._on_image(name, m), "image_callback_error"),
                                     common.SENSOR_QOS)
        self.create_subscription(JointState, vocab.JOINT_STATES, guard(self._on_joint_state, "joint_state_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(PolygonStamped, vocab.affordance_topic(self.arm),
                                 guard(self._on_affordance, "affordance_callback_error"), common.LATCHED_QOS)
        self.create_subscription(PlanState, vocab.PLAN_STATE, guard(self._on_plan_state, "plan_state_callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Header, vocab.actor_request_topic(self.arm),
                                 guard(self._on_request, "request_callback_error"), SPLIT_QOS)
        self.chunk_pub = self.create_lifecycle_publisher(JointTrajectory, vocab.actor_inferred_chunk_topic(self.arm),
                                                         SPLIT_QOS)

    def destroy_node(self) -> None:
        self._stop.set()
        super().destroy_node()  # stops the worker

    # ------------------------------------------------------------------ inputs
    def _on_image(self, name: str, msg: Image) -> None:
        self.inputs.on_image(name, msg, common.stamp_to_seconds(msg.header.stamp))
        with self._newer_image:
            self._newer_image.notify_all()

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            joints = arm_state_from_joint_state(msg.name, msg.position, self.arm)
        except ValueError as exc:
            self.faults.fault("malformed_joint_state", str(exc))
            return
        # No "future stamp" check against this host's clock: the reading was stamped on the
        # robot host (a clock offset between hosts is not a fault of the reading).
        verdict = self.inputs.on_joint_state(joints, common.stamp_to_seconds(msg.header.stamp))
        if not verdict.accepted:
            self.faults.fault(f"joint_reading_rejected.{verdict.reason}", verdict.detail)

    def _on_affordance(self, msg: PolygonStamped) -> None:
        points = msg.polygon.points
        pixels = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2)
        self.inputs.on_affordance(pixels, points[0].z if points else None, common.stamp_to_seconds(msg.header.stamp))

    def _on_plan_state(self, msg: PlanState) -> None:
        try:
            instruction, image_size, problem = actor_plan_inputs(plan_state_from_msg(msg),
                                                                 self.bundle.instruction_embedding)
        except ValueError as exc:
            self.faults.fault("malformed_plan_state", str(exc))
            return
        if problem:
            self.faults.fault("unknown_instruction", problem)
        self.inputs.on_plan(instruction, image_size)

    def _on_request(self, msg: Header) -> None:
        try:
            arm, target_index, request_id = parse_request_id(msg.frame_id)
        except ValueError as exc:
            self.faults.fault("malformed_request", str(exc))
            return
        if arm != self.arm:
            self.faults.fault("malformed_request", f"request for arm {arm!r} reached the {self.arm} arm's node")
            return
        with self._request_lock:
            # A newer request replaces one not started yet: only the newest is worth answering.
            self._request = ChunkRequest(common.stamp_to_seconds(msg.stamp), target_index, request_id,
                                         common.now_seconds(self))
        self.requests += 1
        self.wake_worker()

    # ------------------------------------------------------------------ inference (worker thread)
    def _run_inference(self) -> None:
        with self._request_lock:
            request, self._request = self._request, None
        if request is None or self._stop.is_set():
            return
        with self._newer_image:
            self._newer_image.wait_for(lambda: self._stop.is_set() or (self.inputs.newest_observation_s() or -1.0)
                                       >= request.observation_s, timeout=self.observation_wait_s)
        snapshot = self.inputs.take_snapshot()
        if snapshot is None:
            self._publish_failure(request, "no_observation")
            return
        try:
            observation = observation_of(snapshot, lambda msg: common.image_to_numpy(msg, "rgb8"))
        except common.ImageMessageError as exc:
            self.faults.fault("malformed_image", str(exc))
            self._publish_failure(request, "malformed_image")
            return
        inject = bool(self.fault_injection) and self.inputs.inferences % self.fault_period == 0
        self._inject_now = inject
        try:
            result = self.pipeline.infer(observation)
        except (ValueError, TypeError) as exc:
            self.faults.fault("inference_error", f"{type(exc).__name__}: {exc}")
            self._publish_failure(request, "inference_error")
            return
        finally:
            self._inject_now = False
        self.inputs.record_timings(result.timings)
        if self.inference_delay_s > 0.0:
            self._stop.wait(self.inference_delay_s)  # artificial latency (benchmarks only)
        if self._stop.is_set():
            return
        if not result.ok:
            self.faults.fault("inference_failure", result.failure.describe())
            self._publish_failure(request, f"inference_failure.{result.failure.kind.value}")
            return
        chunk = inject_nan(result.chunk) if inject and self.fault_injection == "nan_chunk" else result.chunk
        message = common.joint_trajectory(self.joint_names, chunk, self.inputs.chunk_dt, 0.0,
                                          stamp=common.seconds_to_stamp(snapshot.stamp_s))
        message.header.frame_id = format_request_id(self.arm, snapshot.target.index, request.request_id)
        self.chunk_pub.publish(message)
        now = common.now_seconds(self)
        self.chunks_published += 1
        self.round_trip.add((now - request.received_s) * 1e3)
        self.observation_age.add((now - snapshot.stamp_s) * 1e3)

    def _publish_failure(self, request: ChunkRequest, reason: str) -> None:
        if self._stop.is_set():
            return
        message = JointTrajectory(joint_names=list(self.joint_names))
        message.header.stamp = common.seconds_to_stamp(request.observation_s)
        message.header.frame_id = f"{format_request_id(self.arm, request.target_index, request.request_id)}" \
                                  f"/failed:{reason}"
        self.chunk_pub.publish(message)
        self.failures_published += 1

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        faults = self.faults.snapshot()
        values = {
            "arm": self.arm, "requests": self.requests, "inferences": self.inputs.inferences,
            "chunks_published": self.chunks_published, "failures_published": self.failures_published,
            "fault_injection": self.fault_injection or "off",
            **{f"latency.{stage}.{key}": value for stage, window in self.inputs.latency.items()
               for key, value in window.stats().items()},
            **{f"request_to_chunk_{key}": value for key, value in self.round_trip.stats().items()},
            **{f"observation_to_chunk_{key}": value for key, value in self.observation_age.stats().items()},
            **{f"inference.{key}": value for key, value in self.pipeline.outcome_counts().items()},
            **{f"fault.{key}": value for key, value in faults.items()},
            **self.lifecycle_values(),
        }
        errors = sum(n for key, n in faults.items() if key.startswith(("inference_", "malformed")) or key.endswith("_error"))
        level = self._levels.level(errors, 0)
        message = ["ok", "warnings", "inference failures or malformed inputs"][level]
        status = common.diagnostic_status(f"{self.get_name()}: actor inference", self.get_name(), level, message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def main(args=None) -> int:
    return common.run_node(ActorInferenceNode)


if __name__ == "__main__":
    sys.exit(main())
