"""The validator's gate: when is the current affordance achieved, when to re-plan, when to give up.

The validator model (paper section 4.2, "Affordance Validation"; appendix A.1) says per arm
and per observation whether the current target affordance has been reached. One positive
classification is too noisy to advance a sequentially dependent chain on, so the gate opens
only after ``consecutive_required`` consecutive positive decisions for *every active arm*
and after the affordance has been current for ``min_dwell_s``. If it is not achieved within
``step_timeout_s`` the gate asks the planner to re-plan the same step; after
``max_retries`` re-plans it aborts (the planner then holds).

The validator node owns a `ValidatorGate`; the planner node owns an
`~sim2real_vla_ros.core.task.affordance_chain.AffordanceChain`. They only exchange the
`GateEvent` values below over a topic (the chain accepts them by value in
``AffordanceChain.on_gate_event``), so the two stay decoupled.

Pure core: no rclpy; every time is passed in by the caller (seconds on one clock).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Sequence
from sim2real_vla_ros.core.vocabulary import ARMS

DEFAULT_ARMS = ARMS

# Decision labels in the decisions log.
DECISION_POSITIVE = "positive"
DECISION_NEGATIVE = "negative"
DECISION_NAN = "nan"  # non-finite probability, treated as negative
DECISION_IGNORED_INACTIVE = "ignored_inactive"  # arm has no affordance this step
DECISION_IGNORED_UNARMED = "ignored_unarmed"  # no current affordance, or an event already latched
DECISION_IGNORED_STALE_OBS = "ignored_stale_obs"  # observation older than the affordance


class GateEvent(str, Enum):
    """What the gate tells the planner; the values are the wire names on the event topic."""

    NONE = "none"
    OPEN = "open"  # the current affordance is achieved: advance the chain
    TIMEOUT_RETRY = "timeout_retry"  # not achieved in time: re-plan the same step
    ABORT = "abort"  # retries exhausted: abort the task and hold


@dataclass(frozen=True)
class GateStatus:
    """Snapshot of the gate for diagnostics and the task-state topic.

    Attributes
    ----------
    armed : bool
        An affordance is current and no OPEN/ABORT has been emitted for it yet.
    affordance_index : int or None
        Index of the current affordance (given by the caller or counted by the gate).
    active_arms : tuple of str
        Arms that must achieve the current affordance.
    consecutive : dict
        Arm -> current run of consecutive positive decisions.
    achieved : dict
        Arm -> whether its run reached ``consecutive_required``.
    dwell_s : float or None
        Time the current affordance has been current (s).
    retries : int
        Re-plans of the current step so far.
    last_event : GateEvent
        Last event other than NONE returned by ``poll``.
    counters : dict
        Counts of decisions by kind and of events.
    """

    armed: bool
    affordance_index: int | None
    active_arms: tuple[str, ...]
    consecutive: dict[str, int]
    achieved: dict[str, bool]
    dwell_s: float | None
    retries: int
    last_event: GateEvent
    counters: dict[str, int] = field(default_factory=dict)


class ValidatorGate:
    """Debounced achievement gate with dwell, timeout, retries and abort.

    Parameters
    ----------
    arms : Sequence[str]
        All arm names the gate may see (default ``("left", "right")``).
    threshold : float
        A probability >= threshold is a positive decision. In (0, 1].
    consecutive_required : int
        Consecutive positive decisions each active arm needs, >= 1. A negative resets the run.
    min_dwell_s : float
        Minimum time an affordance must be current before the gate may open, >= 0.
    step_timeout_s : float
        Time without opening after which the gate asks for a re-plan, > 0. The clock restarts
        at each re-plan request and at each new affordance.
    max_retries : int
        Re-plans allowed per step, >= 0; the next timeout returns ABORT.
    log_capacity : int
        Bound on the decisions and events logs (oldest entries fall off).
    """

    def __init__(
        self,
        arms: Sequence[str] = DEFAULT_ARMS,
        threshold: float = 0.5,
        consecutive_required: int = 3,
        min_dwell_s: float = 0.5,
        step_timeout_s: float = 20.0,
        max_retries: int = 2,
        log_capacity: int = 2000,
    ) -> None:
        _check_config(arms, threshold, consecutive_required, min_dwell_s, step_timeout_s, max_retries, log_capacity)
        self.arms = tuple(arms)
        self.threshold = float(threshold)
        self.consecutive_required = int(consecutive_required)
        self.min_dwell_s = float(min_dwell_s)
        self.step_timeout_s = float(step_timeout_s)
        self.max_retries = int(max_retries)
        self._decisions: deque[tuple[float, str, float, str]] = deque(maxlen=int(log_capacity))
        self._events: deque[tuple[float, str, int | None, int]] = deque(maxlen=int(log_capacity))
        self._counters = {
            "updates": 0,
            "positive": 0,
            "negative": 0,
            "nan_probs": 0,
            "ignored_inactive": 0,
            "ignored_unarmed": 0,
            "ignored_stale_obs": 0,
            "opens": 0,
            "timeouts": 0,
            "aborts": 0,
        }
        self.clear()

    # ------------------------------------------------------------------ lifecycle
    def clear(self) -> None:
        """Disarm and forget the step (call when a task starts or stops). Logs and counters stay."""
        self._armed = False
        self._active_arms: tuple[str, ...] = ()
        self._consecutive = {arm: 0 for arm in self.arms}
        self._step_start_s: float | None = None
        self._timeout_start_s: float | None = None
        self._retries = 0
        self._index: int | None = None
        self._last_event = GateEvent.NONE

    def reset_for_new_affordance(
        self, active_arms: Iterable[str], now_s: float, affordance_index: int | None = None
    ) -> None:
        """Arm the gate for a new current affordance (a new step or a re-plan of the same one).

        Parameters
        ----------
        active_arms : Iterable[str]
            Arms that have a target in this affordance; at least one.
        now_s : float
            Time the affordance became current; dwell and timeout count from here.
        affordance_index : int, optional
            Chain index of the affordance. When given, the retry count is kept if it equals
            the previous index (a re-plan) and reset otherwise. When omitted, the gate infers
            it: the first affordance after ``clear()`` or after an OPEN is a new step,
            anything else is a re-plan of the same step.

        Raises
        ------
        ValueError
            No active arm, or an arm not in ``arms``.
        """
        active = tuple(dict.fromkeys(active_arms))
        if not active:
            raise ValueError("ValidatorGate.reset_for_new_affordance: at least one arm must be active")
        for arm in active:
            self._check_arm(arm)
        if affordance_index is not None:
            new_step = affordance_index != self._index
            index = int(affordance_index)
        else:
            new_step = self._index is None or self._last_event == GateEvent.OPEN
            index = 0 if self._index is None else self._index + int(new_step)
        if new_step:
            self._retries = 0
        self._index = index
        self._active_arms = active
        self._consecutive = {arm: 0 for arm in self.arms}
        self._step_start_s = float(now_s)
        self._timeout_start_s = float(now_s)
        self._armed = True
        self._last_event = GateEvent.NONE

    # ------------------------------------------------------------------ inputs
    def update(self, arm: str, prob: float, now_s: float, obs_stamp_s: float | None = None) -> bool:
        """Record one validator decision for ``arm``.

        Parameters
        ----------
        arm : str
            Arm the validator ran for.
        prob : float
            Validator probability that the arm's target is achieved. NaN/Inf count as negative
            (and are counted in ``nan_probs``).
        now_s : float
            Time of the decision (s).
        obs_stamp_s : float, optional
            Stamp of the observation the decision was made on. If it is older than the time
            the current affordance became current, the decision is ignored (it was computed
            against the previous affordance's scene).

        Returns
        -------
        bool
            Whether the decision counted as positive for the gate.

        Raises
        ------
        ValueError
            ``arm`` is not one of ``arms``.
        """
        self._check_arm(arm)
        try:
            prob_value = float(prob)
        except (TypeError, ValueError) as error:
            raise TypeError(f"ValidatorGate.update: prob for arm {arm!r} must be a number, got {prob!r}") from error
        self._counters["updates"] += 1
        if not self._armed:
            return self._log(now_s, arm, prob_value, DECISION_IGNORED_UNARMED, "ignored_unarmed")
        if arm not in self._active_arms:
            return self._log(now_s, arm, prob_value, DECISION_IGNORED_INACTIVE, "ignored_inactive")
        if obs_stamp_s is not None and self._step_start_s is not None and obs_stamp_s < self._step_start_s:
            return self._log(now_s, arm, prob_value, DECISION_IGNORED_STALE_OBS, "ignored_stale_obs")
        if not math.isfinite(prob_value):
            self._consecutive[arm] = 0
            return self._log(now_s, arm, prob_value, DECISION_NAN, "nan_probs")
        if prob_value >= self.threshold:
            self._consecutive[arm] += 1
            self._log(now_s, arm, prob_value, DECISION_POSITIVE, "positive")
            return True
        self._consecutive[arm] = 0
        return self._log(now_s, arm, prob_value, DECISION_NEGATIVE, "negative")

    def poll(self, now_s: float) -> GateEvent:
        """Return the event due at ``now_s``; each OPEN/TIMEOUT_RETRY/ABORT is returned once.

        OPEN wins over a timeout due at the same time. After OPEN or ABORT the gate returns
        NONE until the next ``reset_for_new_affordance``. After TIMEOUT_RETRY it stays armed
        with a restarted timeout clock, so a planner that never re-plans still leads to ABORT.
        """
        if not self._armed or self._step_start_s is None or self._timeout_start_s is None:
            return GateEvent.NONE
        dwell_ok = now_s - self._step_start_s >= self.min_dwell_s
        if dwell_ok and all(self._consecutive[arm] >= self.consecutive_required for arm in self._active_arms):
            self._armed = False
            return self._emit(now_s, GateEvent.OPEN, "opens")
        if now_s - self._timeout_start_s >= self.step_timeout_s:
            self._counters["timeouts"] += 1
            self._retries += 1
            if self._retries > self.max_retries:
                self._armed = False
                return self._emit(now_s, GateEvent.ABORT, "aborts")
            self._timeout_start_s = float(now_s)
            return self._emit(now_s, GateEvent.TIMEOUT_RETRY, None)
        return GateEvent.NONE

    # ------------------------------------------------------------------ outputs
    @property
    def retries(self) -> int:
        """Re-plans requested for the current step."""
        return self._retries

    @property
    def counters(self) -> dict[str, int]:
        """Copy of the decision and event counters."""
        return dict(self._counters)

    def status(self, now_s: float) -> GateStatus:
        """Snapshot for diagnostics and the task-state topic."""
        achieved = {arm: self._consecutive[arm] >= self.consecutive_required for arm in self._active_arms}
        return GateStatus(
            armed=self._armed,
            affordance_index=self._index,
            active_arms=self._active_arms,
            consecutive={arm: self._consecutive[arm] for arm in self._active_arms},
            achieved=achieved,
            dwell_s=None if self._step_start_s is None else now_s - self._step_start_s,
            retries=self._retries,
            last_event=self._last_event,
            counters=self.counters,
        )

    def decisions(self) -> list[tuple[float, str, float, str]]:
        """Bounded log of ``(time_s, arm, prob, decision)``; decision is one of the DECISION_* labels."""
        return list(self._decisions)

    def events(self) -> list[tuple[float, str, int | None, int]]:
        """Bounded log of ``(time_s, event value, affordance_index, retries)`` for emitted events."""
        return list(self._events)

    # ------------------------------------------------------------------ helpers
    def _emit(self, now_s: float, event: GateEvent, counter: str | None) -> GateEvent:
        if counter is not None:
            self._counters[counter] += 1
        self._last_event = event
        self._events.append((float(now_s), event.value, self._index, self._retries))
        return event

    def _log(self, now_s: float, arm: str, prob: float, decision: str, counter: str) -> bool:
        self._counters[counter] += 1
        self._decisions.append((float(now_s), arm, prob, decision))
        return False

    def _check_arm(self, arm: str) -> None:
        if arm not in self.arms:
            raise ValueError(f"ValidatorGate: unknown arm {arm!r}; expected one of {self.arms}")


def _check_config(
    arms: Sequence[str],
    threshold: float,
    consecutive_required: int,
    min_dwell_s: float,
    step_timeout_s: float,
    max_retries: int,
    log_capacity: int,
) -> None:
    if not arms or len(set(arms)) != len(tuple(arms)):
        raise ValueError(f"ValidatorGate: arms must be non-empty and unique, got {tuple(arms)}")
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"ValidatorGate: threshold must be in (0, 1], got {threshold}")
    if int(consecutive_required) < 1:
        raise ValueError(f"ValidatorGate: consecutive_required must be >= 1, got {consecutive_required}")
    if not (math.isfinite(min_dwell_s) and min_dwell_s >= 0.0):
        raise ValueError(f"ValidatorGate: min_dwell_s must be finite and >= 0, got {min_dwell_s}")
    if not (math.isfinite(step_timeout_s) and step_timeout_s > 0.0):
        raise ValueError(f"ValidatorGate: step_timeout_s must be finite and > 0, got {step_timeout_s}")
    if int(max_retries) < 0:
        raise ValueError(f"ValidatorGate: max_retries must be >= 0, got {max_retries}")
    if int(log_capacity) < 1:
        raise ValueError(f"ValidatorGate: log_capacity must be >= 1, got {log_capacity}")
