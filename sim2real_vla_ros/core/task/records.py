"""Plain records of what the planner and the validator publish (ROS-free).

The cores (``planner_logic``, ``validator_logic``) build these plain dicts; the nodes convert
them to and from the typed messages of ``sim2real_vla_interfaces`` (``nodes/task_messages``),
and the in-process runner passes them on as they are. One definition of the fields, so the
planner, the validator, the actors, the dry-run recorder, the report and the tests agree.
Parsers raise ``ValueError`` naming the bad field. Nothing here is JSON any more: no topic of
the graph carries JSON (the records are what a typed message holds, as Python values).

- plan state (``vla/plan_state``, ``sim2real_vla_interfaces/PlanState``): the chain phase,
  index, per-arm targets (normalised keypoints; the message carries them in pixels with their
  image size), and ``affordance.seq``, which changes whenever a new affordance becomes current
  (a new step or a re-plan of the same step).
- validator event (``vla/validator/event``, ``ValidatorEvent``): ``open`` | ``replan`` |
  ``abort`` for an index.
- task state (``vla/task_state``, ``TaskState``): what the gate sees per arm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from sim2real_vla_ros.core.task.affordance_chain import ChainPhase, ChainState
from sim2real_vla_ros.core.task.validator_gate import GateEvent, GateStatus
from sim2real_vla_ros.core.vocabulary import ARMS

#: Gate events as named on the wire; TIMEOUT_RETRY is "replan" there.
EVENT_WIRE_NAMES = {GateEvent.OPEN: "open", GateEvent.TIMEOUT_RETRY: "replan", GateEvent.ABORT: "abort"}
_EVENT_FROM_WIRE = {name: event for event, name in EVENT_WIRE_NAMES.items()}
PHASES = tuple(phase.value for phase in ChainPhase)


# ----------------------------------------------------------------------------- plan state
def plan_state_record(state: ChainState, seq: int, stamp_s: float, task: Optional[str] = None,
                      estop: bool = False, last_error: str = "", image_size: Optional[tuple] = None,
                      run_started: Optional[float] = None) -> dict:
    """The plan-state record of a chain snapshot.

    Parameters
    ----------
    state : ChainState
        ``AffordanceChain.state``.
    seq : int
        Number of affordances the planner has made current so far (a new value = a new target).
    stamp_s : float
        Time of the snapshot.
    task : str, optional
        Name of the task in tasks.yaml that matches the instruction, if any.
    estop : bool
        Whether the e-stop is engaged.
    last_error : str
        Last refused command (e.g. an unknown instruction), "" if none.
    image_size : tuple of int, optional
        cam_high's native (width, height), the frame of the published pixel keypoints; None
        while unknown.
    run_started : float, optional
        When the current run was started; None before the first start.
    """
    current = state.current
    arms = {}
    for slot, arm in enumerate(ARMS):
        active = current is not None and bool(current.arm_active[slot])
        keypoints = current.keypoints_normalised[slot].tolist() if active else []
        arms[arm] = {"active": active, "keypoints_norm": keypoints}
    affordance = None
    if current is not None:
        affordance = {"seq": int(seq), "index": current.index, "obs_stamp": current.obs_stamp_s,
                      "current_since": current.current_since_s}
    return {
        "stamp": float(stamp_s), "phase": state.phase.value, "index": state.index,
        "instruction": state.instruction, "task": task, "arms": arms, "affordance": affordance,
        "retries": state.retries, "total_retries": state.total_retries, "achieved_count": state.achieved_count,
        "replan_requested": state.replan_requested, "reason": state.last_reason, "estop": bool(estop),
        "last_error": last_error, "image_size": list(image_size) if image_size else None,
        "run_started": None if run_started is None else float(run_started),
    }


@dataclass(frozen=True, eq=False)
class PlanView:
    """What the validator needs from a plan-state record.

    Attributes
    ----------
    phase : str
        One of ``PHASES``.
    index : int
        Chain index.
    seq : int or None
        Identity of the current affordance (None: no current affordance, arms hold).
    active_arms : tuple of str
        Arms with a target.
    keypoints_norm : Mapping[str, np.ndarray]
        Arm -> (P, 2) float32 normalised keypoints, for active arms.
    instruction : str
    """

    phase: str
    index: int
    seq: Optional[int]
    active_arms: tuple
    keypoints_norm: Mapping[str, np.ndarray]
    instruction: str = ""

    @property
    def has_target(self) -> bool:
        return self.phase == ChainPhase.RUNNING.value and self.seq is not None and bool(self.active_arms)


def parse_plan_state(record: Mapping[str, Any], keypoints_per_arm: Optional[int] = None) -> PlanView:
    """Check a plan-state record and extract a `PlanView`.

    Raises
    ------
    ValueError
        Unknown phase, or malformed arms / keypoints (the message names the field).
    """
    if not isinstance(record, Mapping):
        raise ValueError("plan state must be a mapping")
    phase = record.get("phase")
    if phase not in PHASES:
        raise ValueError(f"plan_state.phase {phase!r} is not one of {list(PHASES)}")
    index = _int_field(record, "index")
    affordance = record.get("affordance")
    seq = None
    if affordance is not None:
        if not isinstance(affordance, Mapping):
            raise ValueError("plan_state.affordance must be an object or null")
        seq = _int_field(affordance, "seq", "plan_state.affordance")
    arms = record.get("arms")
    if not isinstance(arms, Mapping):
        raise ValueError("plan_state.arms must be an object")
    active, keypoints = [], {}
    for arm in ARMS:
        entry = arms.get(arm)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("active"), bool):
            raise ValueError(f"plan_state.arms.{arm} must be an object with a boolean 'active'")
        if not entry["active"]:
            continue
        points = np.asarray(entry.get("keypoints_norm"), dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 1:
            raise ValueError(f"plan_state.arms.{arm}.keypoints_norm must be a (P, 2) list, got shape "
                             f"{list(points.shape)}")
        if keypoints_per_arm is not None and points.shape[0] != keypoints_per_arm:
            raise ValueError(f"plan_state.arms.{arm}.keypoints_norm has {points.shape[0]} points, the bundle "
                             f"uses {keypoints_per_arm}")
        if not np.all(np.isfinite(points)):
            raise ValueError(f"plan_state.arms.{arm}.keypoints_norm has non-finite values")
        active.append(arm)
        keypoints[arm] = points.astype(np.float32)
    return PlanView(phase=phase, index=index, seq=seq, active_arms=tuple(active), keypoints_norm=keypoints,
                    instruction=str(record.get("instruction") or ""))


# ----------------------------------------------------------------------------- validator events
def validator_event_record(event: GateEvent, index: Optional[int], retries: int, reason: str,
                           stamp_s: float, seq: Optional[int] = None) -> dict:
    """The validator-event record of a gate event (OPEN, TIMEOUT_RETRY or ABORT); ``seq`` is the
    affordance (plan state ``affordance.seq``) it is for, None if unknown."""
    if event not in EVENT_WIRE_NAMES:
        raise ValueError(f"gate event {event!r} is not published (only {list(EVENT_WIRE_NAMES)})")
    return {"event": EVENT_WIRE_NAMES[event], "index": index, "seq": seq,
            "retries": int(retries), "reason": reason, "stamp": float(stamp_s)}


def parse_validator_event(record: Mapping[str, Any]) -> tuple:
    """``(GateEvent, index or None, reason)`` from a validator-event record.

    Raises
    ------
    ValueError
        Unknown event name, or a non-integer index.
    """
    if not isinstance(record, Mapping):
        raise ValueError("validator event must be a mapping")
    name = record.get("event")
    if name not in _EVENT_FROM_WIRE:
        raise ValueError(f"validator event {name!r} is not one of {sorted(_EVENT_FROM_WIRE)}")
    index = record.get("index")
    if index is not None:
        index = _int_field(record, "index", "validator event")
    return _EVENT_FROM_WIRE[name], index, str(record.get("reason") or "")


# ----------------------------------------------------------------------------- task state
def task_state_record(plan: Optional[PlanView], status: GateStatus, last_probs: Mapping[str, float],
                      last_reason: str, decisions_count: int, stamp_s: float, last_event: str = "none",
                      consecutive_required: int = 0, decisions: Optional[Mapping[str, str]] = None) -> dict:
    """The validator's latched task-state record.

    ``last_event`` is the wire name of the last event sent (the gate forgets its own when
    the planner stops or advances, the task state should not); ``decisions`` the gate's last
    decision label per arm (``validator_gate.DECISION_*``; missing = none yet).
    """
    decisions = decisions or {}
    arms = {}
    for arm in ARMS:
        prob = last_probs.get(arm)
        arms[arm] = {"active": plan is not None and plan.has_target and arm in plan.active_arms,
                     "achieved": bool(status.achieved.get(arm, False)),
                     "consecutive": int(status.consecutive.get(arm, 0)),
                     "prob": None if prob is None or not math.isfinite(prob) else float(prob),
                     "decision": decisions.get(arm, "none")}
    return {
        "stamp": float(stamp_s),
        "phase": plan.phase if plan is not None else ChainPhase.IDLE.value,
        "index": plan.index if plan is not None else 0,
        "seq": plan.seq if plan is not None else None,
        "arms": arms, "armed": status.armed, "retries": status.retries,
        "dwell_s": status.dwell_s, "last_event": last_event, "consecutive_required": int(consecutive_required),
        "last_reason": last_reason, "decisions_count": int(decisions_count),
    }


def _int_field(record: Mapping[str, Any], key: str, where: str = "plan_state") -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key} must be an integer, got {value!r}")
    return int(value)


__all__ = ["EVENT_WIRE_NAMES", "PHASES", "plan_state_record", "PlanView", "parse_plan_state",
           "validator_event_record", "parse_validator_event", "task_state_record"]
