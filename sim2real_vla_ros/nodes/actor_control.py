"""actor_control node (split actor, robot host): one arm's control loop and safety, the model elsewhere.

Run as ``actor_control --ros-args -r __node:=actor_left -p arm:=left``, with
``actor_inference`` (node ``actor_left_inference``) on the GPU host. It keeps the actor's node
name, parameters (config/vla.yaml's ``actor_<arm>`` section) and outputs, so the rest of the
graph sees the same actor; only the inference moved. The whole per-arm behaviour is the same
:class:`~sim2real_vla_ros.core.control.actor_controller.ActorController` as in the
single-process actor: when its schedule wants a chunk, this node publishes a request instead of
waking a worker thread, and splices the chunk that answers it by the chunk's measured
observation age (:class:`~sim2real_vla_ros.core.control.split_actor.RemoteInference` decides
which chunks count). Every command goes through the safety filter here.

If chunks stop arriving (a cut link, the GPU host down) or arrive older than
``max_chunk_age_s``, nothing is spliced: the arm finishes its last chunk (at most one chunk
horizon after that chunk's observation) and the filter decelerates it to a hold. A request
unanswered for ``request_timeout_s`` is given up and asked again (newest observation);
after a restored link the arm moves again only once a fresh chunk has been spliced.

========================================  ==============================  =======================
Topic (relative names; core.vocabulary)   Type                            Direction
========================================  ==============================  =======================
vla/masked/cam_high, vla/masked/<wrist>   sensor_msgs/Image               in (sensor QoS; ages only)
joint_states                              sensor_msgs/JointState          in
vla/affordance/<arm>                      geometry_msgs/PolygonStamped    in (latched)
vla/plan_state                            std_msgs/String (JSON)          in (latched)
vla/estop                                 std_msgs/Bool                   in (latched)
vla/actor_<arm>/inferred_chunk            trajectory_msgs/JointTrajectory in (reliable, depth 1)
vla/actor_<arm>/request                   std_msgs/Header                 out (reliable, depth 1)
<arm> command topic (output_mode)         as the actor's                  out
vla/actor_<arm>/chunk                     trajectory_msgs/JointTrajectory out (each spliced chunk)
vla/actor_<arm>/command                   sensor_msgs/JointState          out (each command sent)
/diagnostics                              diagnostic_msgs/DiagnosticArray out
========================================  ==============================  =======================

Parameters: the actor's (``nodes.actor.PARAMETERS``) less the model-only ones, plus
``request_timeout_s`` and ``max_chunk_age_s``. The bundle is read for its manifest only
(chunk spacing, keypoints, instructions): no model is loaded on the robot host.
Threads: one SingleThreadedExecutor; every callback is short (no inference here).
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PolygonStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control.actor_controller import ActorController, FaultCounter
from sim2real_vla_ros.core.control.actor_io import actor_plan_inputs, arm_state_from_joint_state
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard
from sim2real_vla_ros.core.control.split_actor import MODEL_ONLY_PARAMETER_NAMES, RemoteInference
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor
from sim2real_vla_ros.core.policy.bundle import load_instruction_embeddings, read_manifest
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.robot import arm_joint_names, arm_limits
from sim2real_vla_ros.core.vocabulary import ARMS, WRIST_CAMERA
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.actor import PARAMETERS as ACTOR_PARAMETERS
from sim2real_vla_ros.nodes.actor import actor_config, safety_limits
from sim2real_vla_ros.nodes.actor_inference import SPLIT_QOS
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.node_support import FaultLog, LevelTracker, default_bundle_path

# The model-only parameters live on the inference node.
PARAMETERS = (
    *(param for param in ACTOR_PARAMETERS if param.name not in MODEL_ONLY_PARAMETER_NAMES),
    Param("request_timeout_s", 1.0, "Give up a chunk request unanswered this long (s) and ask again",
          lambda v: 0.0 < v <= 30.0, "in (0, 30]"),
    Param("max_chunk_age_s", 1.0, "Refuse a chunk whose observation is older than this on arrival (s); "
          "keep it <= the chunk horizon (a chunk that old has no step left to execute)",
          lambda v: 0.0 < v <= 10.0, "in (0, 10]"),
)


class ActorControlNode(Node):
    """Messages in -> ActorController -> commands out; chunks requested from the inference node."""

    def __init__(self) -> None:
        super().__init__("actor_control")
        values = common.declare_parameters(self, PARAMETERS)
        self.arm, self.output_mode = values["arm"], values["output_mode"]
        self.control_rate_hz, self.diagnostics_rate_hz = values["control_rate_hz"], values["diagnostics_rate_hz"]
        self.joint_names = arm_joint_names(self.arm)
        config = actor_config(values)
        manifest = read_manifest(values["bundle_path"] or default_bundle_path())
        self.instructions = load_instruction_embeddings(manifest)
        if config.instruction and config.instruction not in self.instructions:
            raise ValueError(f"parameter 'instruction': {config.instruction!r} is not one of the bundle's "
                             f"instructions {sorted(self.instructions)}")
        self.faults = FaultLog(self)
        self.other_arm = next(arm for arm in ARMS if arm != self.arm)
        guard = CollisionGuard(self.arm, horizon_s=config.dt) if values["collision_guard"] else None
        chunk_dt = 1.0 / manifest.action.control_rate_hz
        self.controller = ActorController(config, safety_limits(values), chunk_dt, manifest.keypoints_per_arm,
                                          FaultCounter(self.faults.fault), urdf_limits=arm_limits(self.arm),
                                          guard=guard, other_limits=safety_limits({**values, "arm": self.other_arm}))
        horizon_s = manifest.action.chunk_length * chunk_dt
        if values["max_chunk_age_s"] > horizon_s:
            self.get_logger().warning(f"max_chunk_age_s {values['max_chunk_age_s']:g} > the chunk horizon "
                                      f"{horizon_s:g} s: such chunks have no step left and are dropped anyway")
        self.remote = RemoteInference(self.arm, chunk_dt, len(self.joint_names), values["request_timeout_s"],
                                      values["max_chunk_age_s"])
        self._snapshot = None  # the snapshot of the request in flight (its target; stamp replaced by the chunk's)
        for warning in config.warnings():
            self.get_logger().warning(warning)
        self.tick_compute = LatencyWindow()
        self.round_trip = LatencyWindow()  # request -> chunk arrival (ms, control clock)
        self.chunk_age = LatencyWindow()  # chunk observation -> arrival (ms)
        self._levels = LevelTracker()
        self._stopping = False
        self._create_interfaces()
        self.get_logger().info(
            f"{self.get_name()} ready (split: inference remote): arm={self.arm}, output_mode={self.output_mode}, "
            f"control {self.control_rate_hz:g} Hz, chunk {manifest.action.chunk_length} steps, request at <= "
            f"{self.controller.threshold_steps} steps left, max chunk age {values['max_chunk_age_s']:g} s")

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        for name, camera in (("cam_high", vocab.TOP_CAMERA), ("wrist", WRIST_CAMERA[self.arm])):
            # Only the stamps matter here (stale cameras hold the arm); the pixels go to the model
            # on the inference host.
            self.create_subscription(Image, vocab.masked_topic(camera),
                                     guard(lambda m, name=name: self.controller.on_image(
                                         name, m.header, common.stamp_to_seconds(m.header.stamp)),
                                           "image_callback_error"),
                                     common.SENSOR_QOS)
        self.create_subscription(JointState, vocab.JOINT_STATES, guard(self._on_joint_state, "joint_state_callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(PolygonStamped, vocab.affordance_topic(self.arm),
                                 guard(self._on_affordance, "affordance_callback_error"), common.LATCHED_QOS)
        self.create_subscription(String, vocab.PLAN_STATE, guard(self._on_plan_state, "plan_state_callback_error"),
                                 common.LATCHED_QOS)
        self.create_subscription(Bool, vocab.ESTOP, guard(self._on_estop, "estop_callback_error"), common.LATCHED_QOS)
        self.create_subscription(JointTrajectory, vocab.actor_inferred_chunk_topic(self.arm),
                                 guard(self._on_chunk, "chunk_callback_error"), SPLIT_QOS)
        command_type = {"trajectory": JointTrajectory, "stream": Float64MultiArray, "vendor": JointState}
        self.command_pub = self.create_publisher(command_type[self.output_mode],
                                                 vocab.arm_command_topic(self.arm, self.output_mode),
                                                 common.COMMAND_QOS)
        self.request_pub = self.create_publisher(Header, vocab.actor_request_topic(self.arm), SPLIT_QOS)
        self.chunk_pub = self.create_publisher(JointTrajectory, vocab.actor_chunk_topic(self.arm), common.COMMAND_QOS)
        self.sent_pub = self.create_publisher(JointState, vocab.actor_command_topic(self.arm), common.COMMAND_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        self.create_timer(1.0 / self.control_rate_hz, guard(self._control_tick, "control_tick_error"))
        common.on_set_parameters(self, PARAMETERS, self._apply_live_parameters)
        self.create_timer(1.0 / self.diagnostics_rate_hz, guard(self._publish_diagnostics, "diagnostics_error"))

    def _apply_live_parameters(self, changed: dict) -> None:
        if "velocity_scale" in changed:
            self.controller.set_velocity_scale(changed["velocity_scale"])
            self.get_logger().info(f"velocity_scale -> {changed['velocity_scale']:g} (ramped at the acceleration limit)")

    def destroy_node(self) -> None:
        self._stopping = True
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            joints = arm_state_from_joint_state(msg.name, msg.position, self.arm)
        except ValueError as exc:
            self.faults.fault("malformed_joint_state", str(exc))
            self.controller.on_malformed_joint_state(str(exc))
            return
        stamp_s = common.stamp_to_seconds(msg.header.stamp)
        verdict = self.controller.on_joint_state(joints, stamp_s, common.now_seconds(self))
        if not verdict.accepted:
            self.faults.fault(f"joint_reading_rejected.{verdict.reason}", verdict.detail)
        if self.controller.guard is None:
            return
        try:
            other = arm_state_from_joint_state(msg.name, msg.position, self.other_arm)
        except ValueError:
            return  # the guard holds on a stale other arm
        velocities = None
        if len(msg.velocity) == len(msg.name):
            try:
                velocities = arm_state_from_joint_state(msg.name, msg.velocity, self.other_arm)
            except ValueError:
                velocities = None
        self.controller.on_other_arm(other, velocities, stamp_s)

    def _on_affordance(self, msg: PolygonStamped) -> None:
        points = msg.polygon.points
        pixels = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2)
        self.controller.on_affordance(pixels, points[0].z if points else None, common.stamp_to_seconds(msg.header.stamp))

    def _on_plan_state(self, msg: String) -> None:
        try:
            payload = common.parse_json_message(msg, required=("schema",))
            instruction, image_size, problem = actor_plan_inputs(payload, self._instruction_embedding)
        except ValueError as exc:
            self.faults.fault("malformed_plan_state", str(exc))
            return
        if problem:
            self.faults.fault("unknown_instruction", problem)
        self.controller.on_plan(instruction, image_size)

    def _instruction_embedding(self, text: str):
        if text not in self.instructions:
            raise LookupError(f"instruction {text!r} is not in the bundle")
        return self.instructions[text]

    def _on_estop(self, msg: Bool) -> None:
        if self.controller.set_estop(bool(msg.data)):
            if msg.data:
                self._give_up("estop")  # its answer must never be spliced after the e-stop
            self.get_logger().warning(f"e-stop {'ENGAGED: holding' if msg.data else 'released'}")

    def _give_up(self, reason: str) -> None:
        if self.remote.pending is not None:
            self.faults.count(f"request_cancelled.{reason}")
            self.remote.cancel()
            self._snapshot = None
            self.controller.inference_finished()

    # ------------------------------------------------------------------ control tick
    def _control_tick(self) -> None:
        if self._stopping:
            return
        started = common.monotonic()
        tick_time = self.get_clock().now()
        now_s = tick_time.nanoseconds * 1e-9
        if self.remote.timed_out(now_s):
            self.faults.fault("request_timed_out", f"no chunk within {self.remote.request_timeout_s:g} s "
                              "(inference host or link down?): holding when the current chunk ends")
            self._snapshot = None
            self.controller.inference_finished()
        output = self.controller.tick(now_s)
        if output.command is not None:
            self._publish_command(output, tick_time.to_msg())
        if output.request_inference:
            self._request(now_s)
        self.tick_compute.add((common.monotonic() - started) * 1e3)

    def _request(self, now_s: float) -> None:
        snapshot = self.controller.take_snapshot()
        if snapshot is None:
            self.controller.inference_finished()
            return
        self._snapshot = snapshot
        message = Header(stamp=common.seconds_to_stamp(snapshot.stamp_s))
        message.frame_id = self.remote.request(snapshot.target.index, snapshot.target.seq, snapshot.stamp_s, now_s)
        self.request_pub.publish(message)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now_s = common.now_seconds(self)
        positions = [list(point.positions) for point in msg.points]
        step_s = None
        if len(msg.points) > 1:
            step_s = common.stamp_to_seconds(msg.points[1].time_from_start) - \
                common.stamp_to_seconds(msg.points[0].time_from_start)
        verdict = self.remote.on_chunk(msg.header.frame_id, common.stamp_to_seconds(msg.header.stamp),
                                       positions if positions else np.zeros((0, len(self.joint_names))), step_s, now_s)
        if not verdict.finished:
            self.faults.count(verdict.reason.split(":")[0])  # a late answer to a request given up
            return
        snapshot, self._snapshot = self._snapshot, None
        try:
            if np.isfinite(verdict.round_trip_s):
                self.round_trip.add(verdict.round_trip_s * 1e3)
            if np.isfinite(verdict.age_s):
                self.chunk_age.add(verdict.age_s * 1e3)
            if not verdict.accept:
                reason, _, kind = verdict.reason.partition(".")
                if reason == "inference_remote_failure":
                    self.controller.record_failure(reason, msg.header.frame_id, kind=kind)
                else:
                    self.controller.record_failure(verdict.reason.split(":")[0], f"{verdict.reason} "
                                                   f"(frame_id {msg.header.frame_id}, age {verdict.age_s:.3f} s)")
                return
            if snapshot is None:
                return
            report = self.controller.submit_chunk(dataclasses.replace(snapshot, stamp_s=verdict.observation_s),
                                                  verdict.chunk, now_s)
            if report is not None:
                self.remote.accepted(now_s)
                self.chunk_pub.publish(common.joint_trajectory(self.joint_names, verdict.chunk, self.controller.chunk_dt,
                                                               0.0, stamp=msg.header.stamp))
        finally:
            self.controller.inference_finished()

    # ------------------------------------------------------------------ outputs
    def _publish_command(self, output, stamp) -> None:
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

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        controller = self.controller
        faults = self.faults.snapshot()
        now_s = common.now_seconds(self)
        last = self.remote.last_chunk_s
        values = {
            **controller.diagnostics(),
            "split_inference": True,
            "request_in_flight": self.remote.pending is not None,
            "since_last_chunk_s": "none" if last is None else now_s - last,
            **{f"request_to_chunk_{key}": value for key, value in self.round_trip.stats().items()},
            **{f"chunk_age_on_arrival_{key}": value for key, value in self.chunk_age.stats().items()},
            **{f"control_tick_compute_{key}": value for key, value in self.tick_compute.stats().items()},
            **{f"fault.{key}": value for key, value in faults.items()},
        }
        errors, warnings = controller.health_counts(faults)
        level = 2 if controller.estop else self._levels.level(errors, warnings)
        message = "e-stop engaged: holding" if controller.estop else \
            ["ok", "holding on stale or missing inputs", "inference failures or dropped chunks"][level]
        status = common.diagnostic_status(f"{self.get_name()}: actor (split)", self.get_name(), level, message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def main(args=None) -> int:
    return common.run_node(ActorControlNode)


if __name__ == "__main__":
    sys.exit(main())
