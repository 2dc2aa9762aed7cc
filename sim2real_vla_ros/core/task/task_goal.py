"""One ExecuteTask goal as a plain object: when it ends and with which outcome (ROS-free).

The planner node's action server (``nodes/task_action.py``) starts the chain for a goal and
then, at the planner rate, asks :meth:`TaskGoal.check` whether the goal is over. The verdict
comes from the graph's own view, the chain's phase (the planner's done probability after
validated steps, the validator's aborts), never from a privileged simulator check:

========================  ====================  =======================================
chain / goal              outcome               the driver then
========================  ====================  =======================================
client canceled           ``CANCELED``          stops the chain: the arms hold
phase succeeded           ``SUCCEEDED``         (success = true)
phase failed              ``FAILED``            (max steps, invalid predictions)
phase aborted             ``ABORTED``           (validator: retries exhausted)
phase idle                ``STOPPED``           (vla/stop, the e-stop, or a newer goal)
running past timeout_s    ``TIMED_OUT``         stops the chain: the arms hold
running past max_steps    ``FAILED``            stops the chain: the arms hold
========================  ====================  =======================================

The outcome values are ``ExecuteTask.Result.OUTCOME_*`` (checked by test_interfaces).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from sim2real_vla_ros.core.task.affordance_chain import ChainPhase, ChainState

OUTCOME_SUCCEEDED = 0
OUTCOME_FAILED = 1
OUTCOME_ABORTED = 2
OUTCOME_TIMED_OUT = 3
OUTCOME_CANCELED = 4
OUTCOME_STOPPED = 5
OUTCOME_NAMES = {OUTCOME_SUCCEEDED: "succeeded", OUTCOME_FAILED: "failed", OUTCOME_ABORTED: "aborted",
                 OUTCOME_TIMED_OUT: "timed_out", OUTCOME_CANCELED: "canceled", OUTCOME_STOPPED: "stopped"}
_TERMINAL = {ChainPhase.SUCCEEDED: OUTCOME_SUCCEEDED, ChainPhase.FAILED: OUTCOME_FAILED,
             ChainPhase.ABORTED: OUTCOME_ABORTED, ChainPhase.IDLE: OUTCOME_STOPPED}


@dataclass(frozen=True)
class GoalLimits:
    """A goal's optional limits (0 = none / the planner's own setting).

    Raises
    ------
    ValueError
        A negative or non-finite timeout, or a negative step count.
    """

    timeout_s: float = 0.0
    max_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s >= 0.0):
            raise ValueError(f"timeout_s must be finite and >= 0, got {self.timeout_s!r}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps!r}")


@dataclass(frozen=True)
class GoalVerdict:
    """How a goal ended: ``outcome`` (``OUTCOME_*``), success, reason, and whether the driver
    must stop the chain (the arms hold) because the goal ended while it was still running."""

    outcome: int
    success: bool
    reason: str
    stop_chain: bool


class TaskGoal:
    """The supervision of one goal, from the moment its task was started.

    Parameters
    ----------
    limits : GoalLimits
    started_s : float
        When the goal's task started (the planner's clock).
    """

    def __init__(self, limits: GoalLimits, started_s: float) -> None:
        self.limits = limits
        self.started_s = float(started_s)
        self.superseded = False

    def elapsed_s(self, now_s: float) -> float:
        return max(0.0, now_s - self.started_s)

    def check(self, state: ChainState, now_s: float, cancel_requested: bool = False) -> Optional[GoalVerdict]:
        """The verdict if the goal is over now, else None (see the module docstring)."""
        if cancel_requested:
            return GoalVerdict(OUTCOME_CANCELED, False, "canceled by the client: stopped, the arms hold", True)
        if self.superseded:
            return GoalVerdict(OUTCOME_STOPPED, False, "stopped: a newer goal started", False)
        if state.phase == ChainPhase.RUNNING:
            limits = self.limits
            if limits.timeout_s and self.elapsed_s(now_s) >= limits.timeout_s:
                return GoalVerdict(OUTCOME_TIMED_OUT, False, f"timed out after {limits.timeout_s:g} s "
                                   f"({state.achieved_count} affordances achieved): stopped, the arms hold", True)
            if limits.max_steps and state.current is not None and state.current.index >= limits.max_steps:
                return GoalVerdict(OUTCOME_FAILED, False, f"failed: no done after the goal's max_steps="
                                   f"{limits.max_steps} affordances: stopped, the arms hold", True)
            return None
        outcome = _TERMINAL[state.phase]
        return GoalVerdict(outcome, outcome == OUTCOME_SUCCEEDED, state.last_reason or state.phase.value, False)


__all__ = ["OUTCOME_SUCCEEDED", "OUTCOME_FAILED", "OUTCOME_ABORTED", "OUTCOME_TIMED_OUT", "OUTCOME_CANCELED",
           "OUTCOME_STOPPED", "OUTCOME_NAMES", "GoalLimits", "GoalVerdict", "TaskGoal"]
