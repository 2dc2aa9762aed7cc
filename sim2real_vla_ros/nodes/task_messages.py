"""The task-level records (``core.task.records``) as ``sim2real_vla_interfaces`` messages, and back.

The cores build plain records; the planner and validator nodes publish them as ``PlanState``,
``ValidatorEvent`` and ``TaskState``, and every reader (the validator, the actors, the dry
run's recorder, the tests) turns a received message back into the same record with the
``*_from_msg`` functions, so one set of parsers (``records.parse_*``) checks them. The round
trip keeps every field; keypoints travel as float32 pixels (``Affordance``) and come back
normalised to within float32 precision.

No rclpy import: only the generated message classes (usable without ``rclpy.init``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from builtin_interfaces.msg import Time
from sim2real_vla_interfaces.msg import (Affordance, ArmValidation, GateState, Keypoint, PlanState, TaskState,
                                         ValidatorEvent)

from sim2real_vla_ros.core.task.affordance_chain import ChainPhase
from sim2real_vla_ros.core.task import validator_gate
from sim2real_vla_ros.core.vocabulary import ARMS

FRAME_ID = "cam_high_optical_frame"

PHASE_TO_MSG = {ChainPhase.IDLE.value: PlanState.PHASE_IDLE, ChainPhase.RUNNING.value: PlanState.PHASE_RUNNING,
                ChainPhase.SUCCEEDED.value: PlanState.PHASE_SUCCEEDED, ChainPhase.FAILED.value: PlanState.PHASE_FAILED,
                ChainPhase.ABORTED.value: PlanState.PHASE_ABORTED}
PHASE_FROM_MSG = {value: name for name, value in PHASE_TO_MSG.items()}
EVENT_TO_MSG = {"none": ValidatorEvent.EVENT_NONE, "open": ValidatorEvent.EVENT_OPEN,
                "replan": ValidatorEvent.EVENT_REPLAN, "abort": ValidatorEvent.EVENT_ABORT}
EVENT_FROM_MSG = {value: name for name, value in EVENT_TO_MSG.items()}
DECISION_TO_MSG = {"none": ArmValidation.DECISION_NONE,
                   validator_gate.DECISION_POSITIVE: ArmValidation.DECISION_POSITIVE,
                   validator_gate.DECISION_NEGATIVE: ArmValidation.DECISION_NEGATIVE,
                   validator_gate.DECISION_NAN: ArmValidation.DECISION_NAN,
                   validator_gate.DECISION_IGNORED_INACTIVE: ArmValidation.DECISION_IGNORED_INACTIVE,
                   validator_gate.DECISION_IGNORED_UNARMED: ArmValidation.DECISION_IGNORED_UNARMED,
                   validator_gate.DECISION_IGNORED_STALE_OBS: ArmValidation.DECISION_IGNORED_STALE_OBS}
DECISION_FROM_MSG = {value: name for name, value in DECISION_TO_MSG.items()}


def to_time(seconds: Optional[float]) -> Time:
    """Seconds -> builtin_interfaces/Time (None or negative = zero)."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0.0:
        return Time()
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def from_time(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _lookup(table: Mapping, key: Any, what: str):
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"{what} {key!r} is not one of {sorted(table, key=str)}") from None


# ----------------------------------------------------------------------------- plan state
def plan_state_to_msg(record: Mapping[str, Any], fallback_size: Optional[Tuple[int, int]] = None) -> PlanState:
    """A plan-state record as ``PlanState``.

    Keypoints go out in pixels of cam_high's native size (``record['image_size']``); while that
    is unknown, in pixels of ``fallback_size`` (the model's input size), with that size in
    ``image_width``/``image_height``: each ``Affordance`` always names the frame of its pixels.
    """
    msg = PlanState()
    msg.header.stamp = to_time(record["stamp"])
    msg.header.frame_id = FRAME_ID
    msg.phase = _lookup(PHASE_TO_MSG, record["phase"], "plan_state.phase")
    msg.index = int(record["index"])
    msg.retries, msg.total_retries = int(record["retries"]), int(record["total_retries"])
    msg.achieved_count = int(record["achieved_count"])
    msg.replan_requested = bool(record["replan_requested"])
    msg.instruction = str(record.get("instruction") or "")
    msg.task = str(record.get("task") or "")
    affordance = record.get("affordance")
    msg.has_affordance = affordance is not None
    size = record.get("image_size") or fallback_size or (0, 0)
    width, height = int(size[0]), int(size[1])
    affordances = []
    for slot, arm in enumerate(ARMS):
        entry = record["arms"][arm]
        item = Affordance(arm=slot, active=bool(entry["active"]), image_width=width, image_height=height)
        item.header.frame_id = FRAME_ID
        if affordance is not None:
            item.header.stamp = to_time(affordance["obs_stamp"])
            item.index, item.seq = int(affordance["index"]), int(affordance["seq"])
        else:
            item.index = int(record["index"])
        if entry["active"]:
            if width <= 0 or height <= 0:
                raise ValueError("plan_state: an active affordance needs an image size (native or fallback)")
            item.keypoints = [Keypoint(x=float(x) * width, y=float(y) * height) for x, y in entry["keypoints_norm"]]
        affordances.append(item)
    msg.affordances = affordances
    msg.current_since = to_time(affordance["current_since"] if affordance is not None else None)
    msg.estop = bool(record.get("estop"))
    run_started = record.get("run_started")
    msg.has_run = run_started is not None
    msg.run_started = to_time(run_started)
    msg.reason = str(record.get("reason") or "")
    msg.last_error = str(record.get("last_error") or "")
    return msg


def plan_state_from_msg(msg: PlanState) -> Dict[str, Any]:
    """``PlanState`` -> the plan-state record (``records.parse_plan_state`` checks it).

    ``image_size`` is the frame of the affordances' pixels (None when it is zero).

    Raises
    ------
    ValueError
        An unknown phase, or an active affordance without a positive image size.
    """
    phase = _lookup(PHASE_FROM_MSG, msg.phase, "plan_state.phase")
    arms = {}
    width = height = 0
    for slot, arm in enumerate(ARMS):
        item = msg.affordances[slot]
        width, height = (width or item.image_width), (height or item.image_height)
        keypoints = []
        if item.active:
            if item.image_width <= 0 or item.image_height <= 0:
                raise ValueError(f"plan_state.affordances[{slot}] is active but has no image size")
            keypoints = [[p.x / item.image_width, p.y / item.image_height] for p in item.keypoints]
        arms[arm] = {"active": bool(item.active), "keypoints_norm": keypoints}
    affordance = None
    if msg.has_affordance:
        first = msg.affordances[0]
        affordance = {"seq": int(first.seq), "index": int(first.index), "obs_stamp": from_time(first.header.stamp),
                      "current_since": from_time(msg.current_since)}
    return {
        "stamp": from_time(msg.header.stamp), "phase": phase, "index": int(msg.index),
        "instruction": msg.instruction, "task": msg.task or None, "arms": arms, "affordance": affordance,
        "retries": int(msg.retries), "total_retries": int(msg.total_retries),
        "achieved_count": int(msg.achieved_count), "replan_requested": bool(msg.replan_requested),
        "reason": msg.reason, "estop": bool(msg.estop), "last_error": msg.last_error,
        "image_size": [int(width), int(height)] if width > 0 and height > 0 else None,
        "run_started": from_time(msg.run_started) if msg.has_run else None,
    }


# ----------------------------------------------------------------------------- validator event
def validator_event_to_msg(record: Mapping[str, Any]) -> ValidatorEvent:
    """A validator-event record as ``ValidatorEvent``."""
    msg = ValidatorEvent(event=_lookup(EVENT_TO_MSG, record["event"], "validator event"),
                         index=ValidatorEvent.INDEX_NONE if record.get("index") is None else int(record["index"]),
                         seq=int(record.get("seq") or 0), retries=int(record.get("retries") or 0),
                         reason=str(record.get("reason") or ""))
    msg.header.stamp = to_time(record.get("stamp"))
    return msg


def validator_event_from_msg(msg: ValidatorEvent) -> Dict[str, Any]:
    """``ValidatorEvent`` -> the validator-event record (``records.parse_validator_event`` checks it)."""
    name = EVENT_FROM_MSG.get(msg.event, f"unknown({msg.event})")
    return {"event": name, "index": None if msg.index == ValidatorEvent.INDEX_NONE else int(msg.index),
            "seq": int(msg.seq) or None, "retries": int(msg.retries), "reason": msg.reason,
            "stamp": from_time(msg.header.stamp)}


# ----------------------------------------------------------------------------- task state
def _nan_if_none(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


def _none_if_nan(value: float) -> Optional[float]:
    return None if not math.isfinite(value) else float(value)


def task_state_to_msg(record: Mapping[str, Any]) -> TaskState:
    """A task-state record as ``TaskState``."""
    msg = TaskState(phase=_lookup(PHASE_TO_MSG, record["phase"], "task_state.phase"), index=int(record["index"]),
                    seq=int(record.get("seq") or 0), last_reason=str(record.get("last_reason") or ""),
                    decisions_count=int(record.get("decisions_count") or 0))
    msg.header.stamp = to_time(record.get("stamp"))
    arms = []
    for slot, arm in enumerate(ARMS):
        entry = record["arms"][arm]
        arms.append(ArmValidation(arm=slot, active=bool(entry["active"]), probability=_nan_if_none(entry.get("prob")),
                                  decision=_lookup(DECISION_TO_MSG, entry.get("decision", "none"), "decision"),
                                  consecutive=int(entry["consecutive"]), achieved=bool(entry["achieved"])))
    msg.arms = arms
    msg.gate = GateState(armed=bool(record["armed"]), consecutive_required=int(record.get("consecutive_required") or 0),
                         retries=int(record["retries"]), dwell_s=_nan_if_none(record.get("dwell_s")),
                         last_event=_lookup(EVENT_TO_MSG, record.get("last_event", "none"), "last_event"))
    return msg


def task_state_from_msg(msg: TaskState) -> Dict[str, Any]:
    """``TaskState`` -> the task-state record."""
    arms = {}
    for slot, arm in enumerate(ARMS):
        item = msg.arms[slot]
        arms[arm] = {"active": bool(item.active), "achieved": bool(item.achieved), "consecutive": int(item.consecutive),
                     "prob": _none_if_nan(item.probability),
                     "decision": DECISION_FROM_MSG.get(item.decision, f"unknown({item.decision})")}
    return {
        "stamp": from_time(msg.header.stamp), "phase": PHASE_FROM_MSG.get(msg.phase, f"unknown({msg.phase})"),
        "index": int(msg.index), "seq": int(msg.seq) or None, "arms": arms, "armed": bool(msg.gate.armed),
        "retries": int(msg.gate.retries), "dwell_s": _none_if_nan(msg.gate.dwell_s),
        "last_event": EVENT_FROM_MSG.get(msg.gate.last_event, f"unknown({msg.gate.last_event})"),
        "consecutive_required": int(msg.gate.consecutive_required),
        "last_reason": msg.last_reason, "decisions_count": int(msg.decisions_count),
    }


__all__ = ["FRAME_ID", "PHASE_TO_MSG", "PHASE_FROM_MSG", "EVENT_TO_MSG", "EVENT_FROM_MSG", "DECISION_TO_MSG",
           "DECISION_FROM_MSG", "to_time", "from_time", "plan_state_to_msg", "plan_state_from_msg",
           "validator_event_to_msg", "validator_event_from_msg", "task_state_to_msg", "task_state_from_msg"]
