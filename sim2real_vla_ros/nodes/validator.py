"""validator node: is the current affordance achieved? Debounced by `ValidatorGate` (paper section 4.2).

For each active arm it runs the validator model on the newest masked cam_high image, that
arm's masked wrist image, the arm's target (normalised keypoints) and its joint state
(normalised with the bundle's action normaliser), feeds the probability to the gate, and
publishes the gate's decisions: ``open`` after N consecutive positives of every active arm
and a minimum dwell, ``replan`` on a step timeout, ``abort`` after M re-plans. Parameters:
``PARAMETERS`` below (the README's table is generated from it); ``scripted_probabilities`` is
a test / dry-run hook, refused unless ``use_sim_time`` is true.

Subscriptions
-------------
/vla/masked/cam_high, /vla/masked/cam_left_wrist, /vla/masked/cam_right_wrist : sensor_msgs/Image rgb8
/joint_states : sensor_msgs/JointState (``<side>_joint1..7`` used per arm)
/vla/plan_state : sim2real_vla_interfaces/PlanState (latched; phase, index, per-arm affordances
    with their pixel keypoints and image size, ``seq`` that changes with every new target)

Publications
------------
/vla/validator/event : sim2real_vla_interfaces/ValidatorEvent (reliable, depth 10):
    EVENT_OPEN | EVENT_REPLAN | EVENT_ABORT for an index and seq, retries, reason
/vla/task_state : sim2real_vla_interfaces/TaskState (latched): phase, index, seq, per-arm
    ArmValidation (active, probability, decision, consecutive, achieved), GateState, last_reason,
    decisions_count
/diagnostics : diagnostic_msgs/DiagnosticArray (every lifecycle state)

A managed node (nodes.lifecycle): ``~/change_state``, ``~/get_state``; events and task state
are published only while active.
"""
from __future__ import annotations

import sys


from sensor_msgs.msg import Image, JointState
from sim2real_vla_interfaces.msg import PlanState, TaskState, ValidatorEvent

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.vocabulary import ARMS, WRIST_CAMERA
from sim2real_vla_ros.core.policy.observation import joint_vector
from sim2real_vla_ros.core.task.records import parse_plan_state
from sim2real_vla_ros.core.robot import arm_joint_names
from sim2real_vla_ros.core.task.validator_logic import (MODEL_SOURCE, ValidatorConfig, ValidatorCore,
                                                        parse_scripted_probability)
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.lifecycle import LIFECYCLE_AUTOSTART, ManagedNode
from sim2real_vla_ros.nodes.task_messages import plan_state_from_msg, task_state_to_msg, validator_event_to_msg
from sim2real_vla_ros.nodes.node_support import (BUNDLE_PARAMETERS, DIAGNOSTICS_RATE, FaultLog,
                                                 LevelTracker, load_node_bundle)

TOP_CAMERA = "cam_high"


def _scripted_ok(text: str) -> bool:
    try:
        parse_scripted_probability(text)
    except ValueError:
        return False
    return True


PARAMETERS = (
    *BUNDLE_PARAMETERS,
    Param("validator_rate_hz", 5.0, "Validator decision rate (Hz, node clock)", lambda v: 0.0 < v <= 100.0,
          "in (0, 100]"),
    Param("threshold", 0.5, "A probability >= threshold is a positive decision", lambda v: 0.0 < v <= 1.0,
          "in (0, 1]"),
    Param("consecutive_required", 3, "N: consecutive positive decisions every active arm needs to open the gate",
          lambda v: 1 <= v <= 1000, "in [1, 1000]"),
    Param("min_dwell_s", 0.5, "Minimum time a target is current before the gate may open (s)",
          lambda v: 0.0 <= v <= 600.0, "in [0, 600]"),
    Param("step_timeout_s", 20.0, "Time without opening after which a re-plan is requested (s)",
          lambda v: 0.0 < v <= 3600.0, "in (0, 3600]"),
    Param("max_retries", 2, "M: re-plans per step; the next timeout aborts the task (keep equal to the "
          "planner's)", lambda v: 0 <= v <= 100, "in [0, 100]"),
    Param("max_input_age_s.cam_high", 0.5, "An older masked cam_high image gives no decision (s, counted)",
          lambda v: 0.0 < v <= 60.0, "in (0, 60]"),
    Param("max_input_age_s.wrist", 0.5, "An older masked wrist image gives no decision (s, counted)",
          lambda v: 0.0 < v <= 60.0, "in (0, 60]"),
    Param("max_input_age_s.joint_state", 0.5, "Older joint states give no decision (s, counted)",
          lambda v: 0.0 < v <= 60.0, "in (0, 60]"),
    Param("scripted_probabilities", MODEL_SOURCE, "'model', or a fixed probability that replaces the validator "
          "model's output (inputs are still required and checked) so the gate sequence can be scripted",
          _scripted_ok, "'model' or a probability in [0, 1]", test_hook=True),
    DIAGNOSTICS_RATE,
    LIFECYCLE_AUTOSTART,
)


class ValidatorNode(ManagedNode):
    """Validator model per active arm -> `ValidatorGate` -> events for the planner; a managed node.

    configure loads the bundle, builds the core, subscribes and warms the model up; activate
    starts the decisions (events and task state are lifecycle publishers); deactivate stops
    deciding and forgets the gate's step; cleanup releases the model (nodes.lifecycle).
    """

    def __init__(self) -> None:
        super().__init__("validator")
        self.bundle = self.model = self.core = self.gate = None
        self._values = self._declare_parameters()
        self.faults = FaultLog(self)
        self._levels = LevelTracker()
        self._joint_names = {arm: arm_joint_names(arm) for arm in ARMS}
        self.start_lifecycle(self._values["lifecycle_autostart"], self.diagnostics_rate_hz, self.faults)

    def _declare_parameters(self) -> dict:
        values = common.declare_parameters(self, PARAMETERS)
        self.rate_hz = values["validator_rate_hz"]
        self.threshold = values["threshold"]
        self.consecutive_required = values["consecutive_required"]
        self.min_dwell_s = values["min_dwell_s"]
        self.step_timeout_s = values["step_timeout_s"]
        self.max_retries = values["max_retries"]
        self.max_top_age_s = values["max_input_age_s.cam_high"]
        self.max_wrist_age_s = values["max_input_age_s.wrist"]
        self.max_joint_age_s = values["max_input_age_s.joint_state"]
        self.scripted = parse_scripted_probability(values["scripted_probabilities"])
        self.diagnostics_rate_hz = values["diagnostics_rate_hz"]
        return values

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        self.bundle = load_node_bundle(self, self._values)
        self.model = self.bundle.model("validator")
        self.keypoints_per_arm = self.bundle.manifest.keypoints_per_arm
        # Every decision (plan following, model, gate, events) lives in the ROS-free core, shared
        # with the in-process runner; this node translates messages to and from it.
        self.core = ValidatorCore(self.bundle, ValidatorConfig(
            threshold=self.threshold, consecutive_required=self.consecutive_required, min_dwell_s=self.min_dwell_s,
            step_timeout_s=self.step_timeout_s, max_retries=self.max_retries, max_top_age_s=self.max_top_age_s,
            max_wrist_age_s=self.max_wrist_age_s, max_joint_age_s=self.max_joint_age_s, scripted=self.scripted),
            self.faults, to_rgb=lambda msg: common.image_to_numpy(msg, "rgb8"))
        self.gate = self.core.gate
        self.model.warmup(1)  # the first ONNX Runtime run allocates: keep it out of the first decision
        self._create_interfaces()
        self.get_logger().info(
            f"validator ready: {self.rate_hz} Hz, N={self.consecutive_required}, dwell {self.min_dwell_s} s, "
            f"timeout {self.step_timeout_s} s, M={self.max_retries}, probabilities from "
            f"{'the model' if self.scripted is None else f'a SCRIPTED constant {self.scripted} (test/dry run only)'}")

    def activate(self) -> None:
        # The decision (the model) runs in its own thread, woken by the timer: input callbacks
        # keep storing the newest messages while it computes, and decisions never overlap.
        # Deactivation stops only that thread (the base's): the core keeps the plan and the
        # gate's step, so a re-activation continues the step (its dwell and timeout count the
        # time it has been current, inactive time included).
        self.start_worker("decision", self._on_tick, "tick_error")

    def release(self) -> None:
        self.bundle = self.model = self.core = self.gate = None

    def _create_interfaces(self) -> None:
        guard = self.faults.guard
        for camera in (TOP_CAMERA, *WRIST_CAMERA.values()):
            self.create_subscription(Image, vocab.masked_topic(camera),
                                     guard(lambda msg, c=camera: self._on_image(c, msg), "callback_error"),
                                     common.SENSOR_QOS)
        self.create_subscription(JointState, vocab.JOINT_STATES, guard(self._on_joint_states, "callback_error"),
                                 common.SENSOR_QOS)
        self.create_subscription(PlanState, vocab.PLAN_STATE, guard(self._on_plan_state, "callback_error"),
                                 common.LATCHED_QOS)
        self.event_pub = self.create_lifecycle_publisher(ValidatorEvent, vocab.VALIDATOR_EVENT, common.COMMAND_QOS)
        self.state_pub = self.create_lifecycle_publisher(TaskState, vocab.TASK_STATE, common.LATCHED_QOS)
        self.create_timer(1.0 / self.rate_hz, self.wake_worker)

    # ------------------------------------------------------------------ inputs
    def _on_image(self, camera: str, msg: Image) -> None:
        self.core.on_image(camera, msg, common.stamp_to_seconds(msg.header.stamp))

    def _on_joint_states(self, msg: JointState) -> None:
        stamp_s = common.stamp_to_seconds(msg.header.stamp)
        names = set(msg.name)
        for arm in ARMS:
            if names.isdisjoint(self._joint_names[arm]):
                continue  # a per-arm driver publishes each arm in its own message
            try:
                values = joint_vector(list(msg.name), list(msg.position), self._joint_names[arm])
            except ValueError as exc:
                self.faults.fault(f"malformed_joint_states.{arm}", str(exc))
                continue
            self.core.on_joint_state(arm, values, stamp_s)

    def _on_plan_state(self, msg: PlanState) -> None:
        try:
            plan = parse_plan_state(plan_state_from_msg(msg), self.keypoints_per_arm)
        except ValueError as exc:
            self.faults.fault("malformed_plan_state", str(exc))
            return
        self.core.on_plan(plan)

    # ------------------------------------------------------------------ decisions
    def _on_tick(self) -> None:
        now = common.now_seconds(self)
        decided = self.core.tick(now)
        if decided.event_record is not None:
            self.event_pub.publish(validator_event_to_msg(decided.event_record))
            self.get_logger().info(decided.reason)
        if decided.task_state is not None:
            self.state_pub.publish(task_state_to_msg(decided.task_state))

    def publish_diagnostics(self) -> None:
        faults = self.faults.snapshot()
        gate = self.gate.counters
        model = self.model.latency_stats()
        values = {"decisions": self.core.decisions, "events_sent": self.core.events_sent,
                  "source": "model" if self.scripted is None else f"SCRIPTED {self.scripted}",
                  "model_p50_ms": model["p50_ms"], "model_p99_ms": model["p99_ms"], "model_runs": model["total_runs"],
                  "last_reason": self.core.last_reason, **{f"gate.{k}": v for k, v in gate.items()},
                  **self.lifecycle_values(),
                  **{f"count.{k}": v for k, v in faults.items()}}
        errors = sum(v for k, v in faults.items() if "error" in k)
        warnings = sum(v for k, v in faults.items() if not k.startswith("event."))
        level = self._levels.level(errors, warnings)
        if self.scripted is not None:
            level = max(level, 1)  # a scripted validator must never look healthy on a robot
        message = ["ok", "faults counted since the last report (or scripted probabilities)",
                   "errors counted since the last report"][level]
        status = common.diagnostic_status(f"{self.get_name()}: affordance gate", self.get_name(), level, message,
                                          values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def main(args=None) -> int:
    # Inputs and diagnostics on the executor's thread, decisions (the model) in their own.
    return common.run_node(ValidatorNode)


if __name__ == "__main__":
    sys.exit(main())
