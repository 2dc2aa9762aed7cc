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
vla/plan_state                            sim2real_vla_interfaces/PlanState (latched, in)
vla/estop                                 std_msgs/Bool                   in + out (latched; mirror)
vla/planner/heartbeat                     std_msgs/Header                 in (hold when it stops)
vla/actor_<arm>/inferred_chunk            trajectory_msgs/JointTrajectory in (reliable, depth 1)
vla/actor_<arm>/request                   std_msgs/Header                 out (reliable, depth 1)
<arm> command topic (output_mode)         as the actor's                  out
vla/actor_<arm>/chunk                     trajectory_msgs/JointTrajectory out (each spliced chunk)
vla/actor_<arm>/command                   sensor_msgs/JointState          out (each command sent)
vla/actor_<arm>/status                    sim2real_vla_interfaces/ActorStatus (<= 10 Hz, out)
/diagnostics                              diagnostic_msgs/DiagnosticArray out
========================================  ==============================  =======================

The node is the single-process actor (nodes.actor.ActorNode) with its chunk source replaced:
the e-stop latch and its mirror, ``~/set_estop``, the planner heartbeat, the motion permit, the
commands, status and diagnostics are the same code.

Parameters: the actor's (``nodes.actor.PARAMETERS``) less the model-only ones, plus
``request_timeout_s`` and ``max_chunk_age_s``. The bundle is read for its manifest only
(chunk spacing, keypoints, instructions): no model is loaded on the robot host.
Threads: one SingleThreadedExecutor; every callback is short (no inference here).
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.control.split_actor import MODEL_ONLY_PARAMETER_NAMES, RemoteInference
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError, load_instruction_embeddings, read_manifest
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.actor import PARAMETERS as ACTOR_PARAMETERS
from sim2real_vla_ros.nodes.actor import ActorNode
from sim2real_vla_ros.nodes.actor_inference import SPLIT_QOS
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.node_support import default_bundle_path

# The model-only parameters live on the inference node.
PARAMETERS = (
    *(param for param in ACTOR_PARAMETERS if param.name not in MODEL_ONLY_PARAMETER_NAMES),
    Param("request_timeout_s", 1.0, "Give up a chunk request unanswered this long (s) and ask again",
          lambda v: 0.0 < v <= 30.0, "in (0, 30]"),
    Param("max_chunk_age_s", 1.0, "Refuse a chunk whose observation is older than this on arrival (s); "
          "keep it <= the chunk horizon (a chunk that old has no step left to execute)",
          lambda v: 0.0 < v <= 10.0, "in (0, 10]"),
)


class ActorControlNode(ActorNode):
    """The actor with its chunks requested from the inference node instead of a local model."""

    PARAMETERS = PARAMETERS
    KIND = "actor (split)"

    # ------------------------------------------------------------------ the policy (remote)
    def _load_policy(self, values: dict) -> tuple:
        manifest = read_manifest(values["bundle_path"] or default_bundle_path())
        self.instructions = load_instruction_embeddings(manifest)
        chunk_dt = 1.0 / manifest.action.control_rate_hz
        self.chunk_length = manifest.action.chunk_length
        horizon_s = self.chunk_length * chunk_dt
        if values["max_chunk_age_s"] > horizon_s:
            self.get_logger().warning(f"max_chunk_age_s {values['max_chunk_age_s']:g} > the chunk horizon "
                                      f"{horizon_s:g} s: such chunks have no step left and are dropped anyway")
        self.remote = RemoteInference(self.arm, chunk_dt, len(self.joint_names), values["request_timeout_s"],
                                      values["max_chunk_age_s"])
        self._max_chunk_age_s = values["max_chunk_age_s"]
        self._snapshot = None  # the snapshot of the request in flight (its target; stamp replaced by the chunk's)
        self.round_trip = LatencyWindow()  # request -> chunk arrival (ms, control clock)
        self.chunk_age = LatencyWindow()  # chunk observation -> arrival (ms)
        self._chunks_accepted = 0
        return chunk_dt, manifest.keypoints_per_arm

    def instruction_embedding(self, text: str):
        if text not in self.instructions:
            raise UnknownInstructionError(f"instruction {text!r} is not one of the bundle's instructions "
                                          f"{sorted(self.instructions)}")
        return self.instructions[text]

    def _ready_note(self) -> str:
        return " (split: inference remote)"

    def _ready_details(self) -> str:
        return f", max chunk age {self._max_chunk_age_s:g} s"

    def _warm_up(self) -> None:
        pass  # no model on this host

    def _image_payload(self, msg):
        return msg.header  # only the stamps matter here (stale cameras hold); the pixels go to the GPU host

    def _stop_inference(self) -> None:
        pass

    def _inference_ok_count(self) -> int:
        return self._chunks_accepted

    def _create_inference_interfaces(self) -> None:
        self.request_pub = self.create_lifecycle_publisher(Header, vocab.actor_request_topic(self.arm), SPLIT_QOS)
        self.create_subscription(JointTrajectory, vocab.actor_inferred_chunk_topic(self.arm),
                                 self.faults.guard(self._on_chunk, "chunk_callback_error"), SPLIT_QOS)

    def _on_estop_engaged(self) -> None:
        self._give_up("estop")  # its answer must never be spliced after the e-stop

    def _on_suspended(self) -> None:
        self._give_up("deactivated")

    def _give_up(self, reason: str) -> None:
        if self.remote.pending is not None:
            self.faults.count(f"request_cancelled.{reason}")
            self.remote.cancel()
            self._snapshot = None
            self.controller.inference_finished()

    def _before_tick(self, now_s: float) -> None:
        if self.remote.timed_out(now_s):
            self.faults.fault("request_timed_out", f"no chunk within {self.remote.request_timeout_s:g} s "
                              "(inference host or link down?): holding when the current chunk ends")
            self._snapshot = None
            self.controller.inference_finished()

    def _request_inference(self, now_s: float) -> None:
        snapshot = self.controller.take_snapshot()
        if snapshot is None:
            self.controller.inference_finished()
            return
        self._snapshot = snapshot
        message = Header(stamp=common.seconds_to_stamp(snapshot.stamp_s))
        message.frame_id = self.remote.request(snapshot.target.index, snapshot.target.seq, snapshot.stamp_s, now_s)
        self.request_pub.publish(message)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if self._stop.is_set():
            return
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
            self._chunks_accepted += 1
            report = self.controller.submit_chunk(dataclasses.replace(snapshot, stamp_s=verdict.observation_s),
                                                  verdict.chunk, now_s)
            if report is not None:
                self.remote.accepted(now_s)
                self.chunk_pub.publish(common.joint_trajectory(self.joint_names, verdict.chunk, self.controller.chunk_dt,
                                                               0.0, stamp=msg.header.stamp))
        finally:
            self.controller.inference_finished()

    def _inference_diagnostics(self) -> dict:
        now_s = common.now_seconds(self)
        last = self.remote.last_chunk_s
        return {
            "split_inference": True,
            "request_in_flight": self.remote.pending is not None,
            "since_last_chunk_s": "none" if last is None else now_s - last,
            **{f"request_to_chunk_{key}": value for key, value in self.round_trip.stats().items()},
            **{f"chunk_age_on_arrival_{key}": value for key, value in self.chunk_age.stats().items()},
        }


def main(args=None) -> int:
    return common.run_node(ActorControlNode)


if __name__ == "__main__":
    sys.exit(main())
