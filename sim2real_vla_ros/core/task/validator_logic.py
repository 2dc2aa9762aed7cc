"""The validator's decisions as a plain object: per-arm probability, the gate, the events it sends.

:class:`ValidatorCore` is the validator node's logic without ROS: it keeps the newest masked
images, joint states and plan, and at each tick (:meth:`tick`) follows the plan (arming the
:class:`~sim2real_vla_ros.core.task.validator_gate.ValidatorGate` for each new target,
disarming it when the planner holds), runs the validator model for every active arm whose
inputs are fresh, feeds the gate and returns its event (a validator-event record,
``core.task.records``) and the task state (a task-state record, when it changed); the node
converts them to ``ValidatorEvent`` / ``TaskState`` messages. Two drivers run it: the validator
node (``nodes/validator.py``, the tick in a worker thread) and the in-process runner
(``sim/in_process.py``). Input methods may be called from another thread than :meth:`tick`
(they only store, under a lock).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np

from sim2real_vla_ros.core.policy.observation import masked_model_input
from sim2real_vla_ros.core.task.records import (EVENT_WIRE_NAMES, PlanView, task_state_record,
                                                validator_event_record)
from sim2real_vla_ros.core.task.validator_gate import GateEvent, ValidatorGate
from sim2real_vla_ros.core.vocabulary import ARMS, TOP_CAMERA, WRIST_CAMERA

MODEL_SOURCE = "model"


def parse_scripted_probability(text: str) -> Optional[float]:
    """``'model'`` -> None (use the model); a number in [0, 1] -> that probability.

    Raises
    ------
    ValueError
        Anything else (the message says what is accepted).
    """
    if text.strip().lower() == MODEL_SOURCE:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"parameter 'scripted_probabilities' = {text!r}: must be 'model' or a probability in "
                         "[0, 1] (test / dry-run only)")
    return value


@dataclass(frozen=True)
class ValidatorConfig:
    """The validator's decision settings (the node's parameters of the same names)."""

    threshold: float = 0.5
    consecutive_required: int = 3
    min_dwell_s: float = 0.5
    step_timeout_s: float = 20.0
    max_retries: int = 2
    max_top_age_s: float = 0.5
    max_wrist_age_s: float = 0.5
    max_joint_age_s: float = 0.5
    scripted: Optional[float] = None  # TEST / DRY-RUN ONLY: replaces the model's probability


@dataclass(frozen=True)
class ValidatorTick:
    """What one tick decided: the event sent (record, or None) and the task state (None = unchanged)."""

    event: GateEvent
    event_record: Optional[dict]
    reason: str
    task_state: Optional[dict]


class ValidatorCore:
    """Inputs -> validator model per active arm -> :class:`ValidatorGate` -> events.

    Parameters
    ----------
    bundle : Bundle
        Its ``validator`` model, image preprocessor, action normalisers and manifest.
    config : ValidatorConfig
    faults : object
        ``fault(reason, detail)`` and ``count(reason)``.
    to_rgb : callable
        The driver's image payload -> uint8 (H, W, 3) (raises on a malformed image).
    """

    def __init__(self, bundle, config: ValidatorConfig, faults,
                 to_rgb: Callable[[Any], np.ndarray] = np.asarray) -> None:
        self.bundle = bundle
        self.config = config
        self.faults = faults
        self.to_rgb = to_rgb
        self.model = bundle.model("validator")
        self.gate = ValidatorGate(arms=ARMS, threshold=config.threshold,
                                  consecutive_required=config.consecutive_required, min_dwell_s=config.min_dwell_s,
                                  step_timeout_s=config.step_timeout_s, max_retries=config.max_retries)
        self._lock = threading.Lock()  # the latest inputs
        self._images: Dict[str, tuple] = {}  # camera -> (stamp_s, payload)
        self._joints: Dict[str, tuple] = {}  # arm -> (stamp_s, 7-vector)
        self._plan_received: Optional[PlanView] = None
        self.plan: Optional[PlanView] = None  # the plan the gate is armed for (tick thread only)
        self.last_probs: Dict[str, float] = {}
        self.last_reason = "waiting for a plan"
        self.decisions = 0
        self.events_sent = 0
        self.last_event = "none"
        self.last_decisions: Dict[str, str] = {}  # arm -> the gate's last decision label
        self._published_state = None

    # ------------------------------------------------------------------ inputs
    def on_image(self, camera: str, payload: Any, stamp_s: float) -> None:
        """A masked image of ``camera`` (converted only when a decision uses it)."""
        with self._lock:
            self._images[camera] = (float(stamp_s), payload)

    def on_joint_state(self, arm: str, positions: np.ndarray, stamp_s: float) -> None:
        """One arm's measured 7-vector."""
        with self._lock:
            self._joints[arm] = (float(stamp_s), np.asarray(positions, dtype=np.float64))

    def on_plan(self, plan: PlanView) -> None:
        """The planner's newest plan (a parsed plan-state record)."""
        with self._lock:
            self._plan_received = plan

    # ------------------------------------------------------------------ decisions
    def tick(self, now_s: float) -> ValidatorTick:
        """Follow the plan, decide for every active arm, poll the gate."""
        with self._lock:
            plan = self._plan_received
        self._follow_plan(plan, now_s)
        if self.plan is not None and self.plan.has_target:
            for arm in self.plan.active_arms:
                self._decide(arm, now_s)
        event = self.gate.poll(now_s)
        record, reason = None, ""
        if event != GateEvent.NONE:
            record, reason = self._event(event, now_s)
        return ValidatorTick(event, record, reason, self._task_state(now_s))

    def _follow_plan(self, plan: Optional[PlanView], now_s: float) -> None:
        """Arm the gate for a new target, or disarm it when the planner holds."""
        previous = self.plan
        self.plan = plan
        if plan is None or not plan.has_target:
            if previous is not None and previous.has_target:
                self.gate.clear()
                self.last_probs.clear()
                self.last_decisions.clear()
                self.last_reason = f"planner {plan.phase if plan else 'gone'}: no target"
            return
        if previous is None or previous.seq != plan.seq or not previous.has_target:
            self.gate.reset_for_new_affordance(plan.active_arms, now_s, plan.index)
            self.last_probs.clear()
            self.last_decisions.clear()
            self.last_reason = (f"new target #{plan.index} (seq {plan.seq}) for {list(plan.active_arms)}; "
                                f"retries {self.gate.retries}")

    def _decide(self, arm: str, now_s: float) -> None:
        inputs = self._fresh_inputs(arm, now_s)
        if inputs is None:
            return
        (top_stamp, top), (wrist_stamp, wrist), joints = inputs
        try:  # on failure: no decision this tick; the step timeout still runs
            top_rgb, wrist_rgb = self.to_rgb(top), self.to_rgb(wrist)
        except Exception as exc:
            self.faults.fault("malformed_image", f"{arm}: {exc}")
            return
        try:
            prob = self.probability(arm, top_rgb, wrist_rgb, joints)
        except Exception as exc:
            self.faults.fault("validator_model_error", f"{arm}: {type(exc).__name__}: {exc}")
            return
        self.gate.update(arm, prob, now_s, min(top_stamp, wrist_stamp))
        self.last_decisions[arm] = self.gate.decisions()[-1][3]
        self.last_probs[arm] = prob
        self.decisions += 1

    def _fresh_inputs(self, arm: str, now_s: float):
        wrist = WRIST_CAMERA[arm]
        with self._lock:
            top_entry, wrist_entry = self._images.get(TOP_CAMERA), self._images.get(wrist)
            joints = self._joints.get(arm)
        config = self.config
        for name, entry, max_age in ((TOP_CAMERA, top_entry, config.max_top_age_s),
                                     (wrist, wrist_entry, config.max_wrist_age_s)):
            if entry is None:
                self.faults.fault(f"missing_input.{name}", f"no /vla/masked/{name} image yet")
                return None
            age = now_s - entry[0]
            if age > max_age:
                self.faults.fault(f"stale_input.{name}", f"{age:.3f} s old (max {max_age})")
                return None
        if joints is None:
            self.faults.fault(f"missing_input.joint_state.{arm}", "no /joint_states with this arm's joints yet")
            return None
        age = now_s - joints[0]
        if age > config.max_joint_age_s:
            self.faults.fault(f"stale_input.joint_state.{arm}", f"{age:.3f} s old (max {config.max_joint_age_s})")
            return None
        return top_entry, wrist_entry, joints[1]

    def probability(self, arm: str, top_rgb: np.ndarray, wrist_rgb: np.ndarray, joints: np.ndarray) -> float:
        """The validator model's probability that ``arm`` achieved its current target."""
        preprocess = self.bundle.image_preprocessor
        top = masked_model_input(preprocess, top_rgb)
        wrist = masked_model_input(preprocess, wrist_rgb)
        if self.config.scripted is not None:
            return self.config.scripted  # inputs were still converted and checked above
        feed = {"top_image": top, "wrist_image": wrist,
                "affordance": self.plan.keypoints_norm[arm][None].astype(np.float32),
                "joint_state": self.bundle.normalizer(arm).normalize(joints.astype(np.float32))[None]}
        return float(self.model.run(feed)["achieved"][0])

    def _event(self, event: GateEvent, now_s: float) -> tuple:
        config = self.config
        status = self.gate.status(now_s)
        if event == GateEvent.OPEN:
            reason = (f"every active arm {list(status.active_arms)} positive {config.consecutive_required} times "
                      f"in a row after {status.dwell_s:.2f} s")
        elif event == GateEvent.TIMEOUT_RETRY:
            reason = f"not achieved within {config.step_timeout_s} s: re-plan {status.retries}/{config.max_retries}"
        else:
            reason = f"not achieved after {config.max_retries} re-plans: abort and hold"
        seq = self.plan.seq if self.plan is not None else None
        record = validator_event_record(event, status.affordance_index, status.retries, reason, now_s, seq)
        self.events_sent += 1
        self.last_event = EVENT_WIRE_NAMES[event]
        self.last_reason = f"{EVENT_WIRE_NAMES[event]} #{status.affordance_index}: {reason}"
        self.faults.count(f"event.{EVENT_WIRE_NAMES[event]}")
        return record, self.last_reason

    def _task_state(self, now_s: float) -> Optional[dict]:
        record = task_state_record(self.plan, self.gate.status(now_s), self.last_probs, self.last_reason,
                                   self.decisions, now_s, self.last_event,
                                   self.config.consecutive_required, self.last_decisions)
        comparable = {k: v for k, v in record.items() if k not in ("stamp", "dwell_s")}
        if comparable == self._published_state:
            return None
        self._published_state = comparable
        return record
