"""The chain-of-affordances state machine the planner node runs.

The paper (section 4.1) casts a task as a chain of affordances q_0 .. q_K: each q_k is a set
of 2D keypoints per arm in the ``cam_high`` image, predicted by the planner conditioned on
the previous affordance (K = 1 previous affordance worked best, appendix A.7), the masked
observation and the instruction. The acting system executes q_k and the validator decides
when it is achieved (section 4.2); only then does the planner predict q_{k+1}. A done
probability from the planner ends the chain.

`AffordanceChain` is that logic without ROS: the planner node asks it whether a prediction
is needed, builds the model's conditioning from it (`PredictionRequest`), hands the model
output back (`on_prediction`), and forwards the validator gate's events (`on_gate_event`).
Every transition leaves a readable reason in `ChainState.last_reason`; bad predictions are
rejected and counted, never executed; answers to superseded requests are ignored by
request id. Times are seconds on one clock, always passed in by the caller.

Phases: idle -> running -> succeeded | failed | aborted; ``stop`` returns to idle from any
phase. Terminal phases hold until the next ``start``.

Planner node loop (sketch)::

    if chain.needs_prediction(now):               # also applies request / step timeouts
        request = chain.request_prediction(now)   # prev_affordance [K,2,P,2], prev_valid [K]
        ... run the planner model (maybe in another thread) ...
        chain.on_prediction(request.request_id, denormalise_keypoints(kp, size), arm_active,
                            done, obs_stamp, now)
    # validator event topic callback:
    chain.on_gate_event(event_value, now, affordance_index)
    publish(chain.state.as_dict())                # latched task state
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np

from sim2real_vla_ros.core.task.validator_gate import DEFAULT_ARMS, GateEvent

ARMS: tuple[str, str] = DEFAULT_ARMS  # index 0 = left, 1 = right in every (2, ...) array


class ChainPhase(str, Enum):
    """Task phase, published on the latched task-state topic by its value."""

    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class PredictionOutcome(str, Enum):
    """What `AffordanceChain.on_prediction` did with a model output."""

    ACCEPTED = "accepted"  # became the current affordance
    SUCCEEDED = "succeeded"  # done probability ended the chain
    FAILED = "failed"  # chain ran past max_steps, or too many invalid predictions in a row
    REJECTED = "rejected"  # invalid keypoints / flags / probability; a new prediction is requested
    IGNORED_STALE = "ignored_stale"  # answer to a superseded request (after stop, advance, retry)


class ChainStateError(RuntimeError):
    """A chain operation was called in a phase where it has no meaning (e.g. start while running)."""


def normalise_keypoints(keypoints_px: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel keypoints -> [0, 1) image fractions: ``x / width``, ``y / height``.

    Parameters
    ----------
    keypoints_px : np.ndarray
        (..., 2) array of (x, y) pixel coordinates.
    image_size : tuple of int
        (width, height) of the image the keypoints refer to.
    """
    width, height = image_size
    return np.asarray(keypoints_px, dtype=np.float64) / np.array([width, height], dtype=np.float64)


def denormalise_keypoints(keypoints_norm: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of `normalise_keypoints`: image fractions -> pixel coordinates."""
    width, height = image_size
    return np.asarray(keypoints_norm, dtype=np.float64) * np.array([width, height], dtype=np.float64)


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Affordance:
    """One link of the chain: a target per arm in the ``cam_high`` image.

    Attributes
    ----------
    index : int
        Position in the chain (0 = first affordance of the task).
    keypoints_px : np.ndarray
        (2, P, 2) float64, read-only; (x, y) pixels of ``cam_high``, arm order ``ARMS``.
        An inactive arm has no target (the planner publishes an empty polygon for it), but
        its predicted keypoints are kept (clipped into the image; zeros if non-finite)
        because they are part of what the planner conditions on next time.
    arm_active : tuple of bool
        (left, right): whether each arm has a target in this affordance.
    image_size : tuple of int
        (width, height) of ``cam_high``.
    obs_stamp_s : float
        Stamp of the observation the prediction was made from (the published header stamp).
    current_since_s : float
        Time the affordance became current.
    """

    index: int
    keypoints_px: np.ndarray
    arm_active: tuple[bool, bool]
    image_size: tuple[int, int]
    obs_stamp_s: float
    current_since_s: float

    @property
    def keypoints_normalised(self) -> np.ndarray:
        """(2, P, 2) keypoints as image fractions (see `normalise_keypoints`)."""
        return normalise_keypoints(self.keypoints_px, self.image_size)

    @property
    def active_arms(self) -> tuple[str, ...]:
        """Names of the arms with a target."""
        return tuple(name for name, active in zip(ARMS, self.arm_active) if active)

    def arm_keypoints_px(self, arm: str) -> np.ndarray:
        """(P, 2) pixel keypoints of one arm (check ``arm_active`` before using them as a target)."""
        return self.keypoints_px[ARMS.index(arm)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the task-state topic and run reports."""
        return {
            "index": self.index,
            "arm_active": list(self.arm_active),
            "keypoints_px": self.keypoints_px.tolist(),
            "image_size": list(self.image_size),
            "obs_stamp_s": self.obs_stamp_s,
            "current_since_s": self.current_since_s,
        }


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class PredictionRequest:
    """Everything the planner model call needs, tagged with the id its answer must carry.

    Attributes
    ----------
    request_id : int
        Pass back to `AffordanceChain.on_prediction`; a superseded id is ignored.
    index : int
        Chain index the prediction is for.
    replan : bool
        True when this re-plans the current step after a validator timeout.
    instruction : str
        The task instruction.
    prev_affordance : np.ndarray
        (K, 2, P, 2) float32, normalised keypoints of the last K achieved affordances,
        oldest first, most recent at [K-1]; missing entries (early in the chain) are zeros
        at the front.
    prev_valid : np.ndarray
        (K,) float32, 1.0 where ``prev_affordance`` holds a real affordance, else 0.0.
    requested_s : float
        Time of the request.
    """

    request_id: int
    index: int
    replan: bool
    instruction: str
    prev_affordance: np.ndarray
    prev_valid: np.ndarray
    requested_s: float


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class ChainState:
    """Observable state of the chain, for the latched task-state topic and diagnostics.

    Attributes
    ----------
    phase : ChainPhase
        Task phase.
    index : int
        Index of the affordance being predicted or executed (= number achieved so far).
    instruction : str
        Task instruction ("" before the first start).
    arm_active : tuple of bool
        (left, right) of the current affordance; (False, False) without one (arms hold).
    current : Affordance or None
        The affordance being executed.
    achieved_count : int
        Affordances achieved in this task.
    retries, total_retries : int
        Re-plans of the current step; of the whole task.
    replan_requested : bool
        A re-plan of the current step is pending.
    outstanding_request_id : int or None
        Id of the prediction request in flight.
    last_reason : str
        Human-readable reason of the last transition or rejection.
    updated_s : float or None
        Time of the last transition.
    counters : dict
        Event counters (kept across tasks).
    """

    phase: ChainPhase
    index: int
    instruction: str
    arm_active: tuple[bool, bool]
    current: Affordance | None
    achieved_count: int
    retries: int
    total_retries: int
    replan_requested: bool
    outstanding_request_id: int | None
    last_reason: str
    updated_s: float | None
    counters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (e.g. the payload of a latched ``std_msgs/String``)."""
        return {
            "phase": self.phase.value,
            "index": self.index,
            "instruction": self.instruction,
            "arm_active": list(self.arm_active),
            "current": None if self.current is None else self.current.as_dict(),
            "achieved_count": self.achieved_count,
            "retries": self.retries,
            "total_retries": self.total_retries,
            "replan_requested": self.replan_requested,
            "outstanding_request_id": self.outstanding_request_id,
            "last_reason": self.last_reason,
            "updated_s": self.updated_s,
            "counters": dict(self.counters),
        }


_COUNTER_NAMES = (
    "requests",
    "predictions_accepted",
    "predictions_rejected",
    "predictions_ignored_stale",
    "request_timeouts",
    "done_ignored_before_first_step",
    "gate_opens",
    "gate_events_ignored",
    "timeouts",
    "step_backstop_timeouts",
)


class AffordanceChain:
    """Chain-of-affordances state machine (planner side).

    Parameters
    ----------
    image_size : tuple of int
        (width, height) of ``cam_high``; predictions must lie inside it.
    keypoints_per_arm : int
        P, keypoints per arm in one affordance (from the model contract).
    history_length : int
        K, how many previous achieved affordances condition the planner (paper: K = 1 best).
    max_retries : int
        Re-plans of one step allowed; the next timeout aborts the task (hold).
    max_steps : int
        Largest number of affordances in a chain; a prediction for step ``max_steps`` that is
        not "done" fails the task.
    done_threshold : float
        The chain succeeds when a prediction's done probability is above this (and at least
        one affordance was achieved).
    step_timeout_s : float or None
        Planner-side backstop when no validator event arrives: after this long without the
        gate opening, the step is re-planned as on a validator timeout. Set it above the
        validator's own step timeout (or None to rely on the validator alone).
    request_timeout_s : float
        An outstanding prediction request older than this is considered lost (counted) and a
        new one is requested.
    max_consecutive_invalid : int
        Invalid predictions in a row after which the task fails instead of asking again.
    edge_tolerance_px : float
        Active keypoints up to this far outside the image are clipped onto its border;
        farther ones reject the prediction.
    arm_active_threshold : float
        When ``arm_active`` comes as probabilities, an arm is active at or above this.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        keypoints_per_arm: int,
        history_length: int = 1,
        max_retries: int = 2,
        max_steps: int = 10,
        done_threshold: float = 0.5,
        step_timeout_s: float | None = None,
        request_timeout_s: float = 5.0,
        max_consecutive_invalid: int = 5,
        edge_tolerance_px: float = 0.0,
        arm_active_threshold: float = 0.5,
    ) -> None:
        width, height = (int(value) for value in image_size)
        _require(width > 0 and height > 0, f"image_size must be positive (width, height), got {image_size}")
        _require(int(keypoints_per_arm) >= 1, f"keypoints_per_arm must be >= 1, got {keypoints_per_arm}")
        _require(int(history_length) >= 1, f"history_length (K) must be >= 1, got {history_length}")
        _require(int(max_retries) >= 0, f"max_retries must be >= 0, got {max_retries}")
        _require(int(max_steps) >= 1, f"max_steps must be >= 1, got {max_steps}")
        _require(0.0 <= done_threshold < 1.0, f"done_threshold must be in [0, 1), got {done_threshold}")
        _require(
            step_timeout_s is None or (math.isfinite(step_timeout_s) and step_timeout_s > 0),
            f"step_timeout_s must be None or > 0, got {step_timeout_s}",
        )
        _require(
            math.isfinite(request_timeout_s) and request_timeout_s > 0,
            f"request_timeout_s must be > 0, got {request_timeout_s}",
        )
        _require(
            int(max_consecutive_invalid) >= 1,
            f"max_consecutive_invalid must be >= 1, got {max_consecutive_invalid}",
        )
        _require(
            0.0 < arm_active_threshold <= 1.0, f"arm_active_threshold must be in (0, 1], got {arm_active_threshold}"
        )
        _require(
            math.isfinite(edge_tolerance_px) and edge_tolerance_px >= 0,
            f"edge_tolerance_px must be >= 0, got {edge_tolerance_px}",
        )
        self.image_size = (width, height)
        self.keypoints_per_arm = int(keypoints_per_arm)
        self.history_length = int(history_length)
        self.max_retries = int(max_retries)
        self.max_steps = int(max_steps)
        self.done_threshold = float(done_threshold)
        self.step_timeout_s = None if step_timeout_s is None else float(step_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self.max_consecutive_invalid = int(max_consecutive_invalid)
        self.edge_tolerance_px = float(edge_tolerance_px)
        self.arm_active_threshold = float(arm_active_threshold)
        self._counters = {name: 0 for name in _COUNTER_NAMES}
        self._next_request_id = 1
        self._phase = ChainPhase.IDLE
        self._instruction = ""
        self._last_reason = "idle: not started"
        self._updated_s: float | None = None
        self._reset_task()

    # ------------------------------------------------------------------ task lifecycle
    def start(self, instruction: str, now_s: float) -> ChainState:
        """Start a task from idle or a finished phase; the first prediction is then needed.

        Raises
        ------
        ValueError
            Empty instruction.
        ChainStateError
            A task is already running (stop it first).
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"AffordanceChain.start: instruction must be a non-empty string, got {instruction!r}")
        if self._phase == ChainPhase.RUNNING:
            raise ChainStateError(
                f"AffordanceChain.start: a task is already running ({self._instruction!r}); stop it first"
            )
        self._reset_task()
        self._instruction = instruction.strip()
        self._transition(ChainPhase.RUNNING, f"started: {self._instruction!r}", now_s)
        return self.state

    def stop(self, reason: str, now_s: float) -> ChainState:
        """Return to idle from any phase (hold); in-flight predictions become stale."""
        self._outstanding = None
        self._current = None
        self._replan_requested = False
        self._transition(ChainPhase.IDLE, f"stopped: {reason}", now_s)
        return self.state

    def abort(self, reason: str, now_s: float) -> ChainState:
        """Abort a running task (hold); ignored in other phases."""
        if self._phase != ChainPhase.RUNNING:
            self._counters["gate_events_ignored"] += 1
            return self.state
        self._finish(ChainPhase.ABORTED, f"aborted: {reason}", now_s)
        return self.state

    # ------------------------------------------------------------------ prediction cycle
    def tick(self, now_s: float) -> None:
        """Apply time-based transitions: lost prediction requests and the planner step backstop."""
        if self._phase != ChainPhase.RUNNING:
            return
        if self._outstanding is not None and now_s - self._outstanding[1] > self.request_timeout_s:
            self._counters["request_timeouts"] += 1
            self._last_reason = (
                f"request {self._outstanding[0]} unanswered for {now_s - self._outstanding[1]:.3f} s; asking again"
            )
            self._outstanding = None
        if (
            self.step_timeout_s is not None
            and self._current is not None
            and not self._replan_requested
            and self._step_clock_s is not None
            and now_s - self._step_clock_s >= self.step_timeout_s
        ):
            self._counters["step_backstop_timeouts"] += 1
            self._timeout(now_s, f"no validator decision within the planner backstop {self.step_timeout_s} s")

    def needs_prediction(self, now_s: float) -> bool:
        """True when running, no request is in flight, and there is no current affordance or a re-plan is due.

        Calls `tick` first, so the planner timer only needs this call.
        """
        self.tick(now_s)
        if self._phase != ChainPhase.RUNNING or self._outstanding is not None:
            return False
        return self._current is None or self._replan_requested

    def request_prediction(self, now_s: float) -> PredictionRequest:
        """Open a prediction request (superseding any in flight) with the model's conditioning.

        Raises
        ------
        ChainStateError
            The chain is not running.
        """
        if self._phase != ChainPhase.RUNNING:
            raise ChainStateError(f"AffordanceChain.request_prediction: chain is {self._phase.value}, not running")
        request_id = self._next_request_id
        self._next_request_id += 1
        self._outstanding = (request_id, float(now_s))
        self._counters["requests"] += 1
        prev_affordance, prev_valid = self.previous_affordances()
        return PredictionRequest(
            request_id=request_id,
            index=self._index,
            replan=self._replan_requested,
            instruction=self._instruction,
            prev_affordance=prev_affordance,
            prev_valid=prev_valid,
            requested_s=float(now_s),
        )

    def previous_affordances(self) -> tuple[np.ndarray, np.ndarray]:
        """The planner's conditioning on the last K achieved affordances.

        Returns
        -------
        prev_affordance : np.ndarray
            (K, 2, P, 2) float32 normalised keypoints, oldest first, most recent at [K-1],
            zero-padded at the front while fewer than K were achieved.
        prev_valid : np.ndarray
            (K,) float32 validity mask (1.0 / 0.0) matching ``prev_affordance``.

        Notes
        -----
        dtypes match the planner contract's ``prev_affordance`` / ``prev_valid`` inputs; the
        node adds the batch axis (``[None]``).
        """
        k = self.history_length
        prev_affordance = np.zeros((k, len(ARMS), self.keypoints_per_arm, 2), dtype=np.float32)
        prev_valid = np.zeros((k,), dtype=np.float32)
        recent = self._history[-k:]
        offset = k - len(recent)
        for slot, affordance in enumerate(recent, start=offset):
            prev_affordance[slot] = affordance.keypoints_normalised
            prev_valid[slot] = 1.0
        return prev_affordance, prev_valid

    def on_prediction(
        self,
        request_id: int,
        keypoints_px: np.ndarray,
        arm_active: Sequence[bool] | np.ndarray,
        done_prob: float,
        obs_stamp_s: float,
        now_s: float,
    ) -> PredictionOutcome:
        """Take the planner model's answer to request ``request_id``.

        Parameters
        ----------
        request_id : int
            The id of the `PredictionRequest` this answers.
        keypoints_px : np.ndarray
            (2, P, 2) (x, y) pixels in ``cam_high``, arm order ``ARMS`` (a model that
            outputs image fractions goes through `denormalise_keypoints` first). Only active
            arms are checked (finite, inside the image); see `Affordance.keypoints_px` for
            what is kept of inactive arms.
        arm_active : sequence of bool or float
            (2,) whether each arm has a target: booleans, or the model's probabilities
            (active when >= ``arm_active_threshold``).
        done_prob : float
            Planner's probability that the task is complete, in [0, 1].
        obs_stamp_s : float
            Stamp of the observation the model saw.
        now_s : float
            Current time.

        Returns
        -------
        PredictionOutcome
            See the enum; ``state.last_reason`` says why for every outcome but ACCEPTED.
        """
        if self._phase != ChainPhase.RUNNING or self._outstanding is None or request_id != self._outstanding[0]:
            self._counters["predictions_ignored_stale"] += 1
            self._last_reason = f"ignored prediction for superseded request {request_id}"
            return PredictionOutcome.IGNORED_STALE
        self._outstanding = None
        problem = _check_scalar("done_prob", done_prob, 0.0, 1.0) or _check_scalar("obs_stamp_s", obs_stamp_s)
        if problem is None and float(done_prob) > self.done_threshold:
            if self._history:
                self._finish(
                    ChainPhase.SUCCEEDED,
                    f"succeeded: done_prob {float(done_prob):.3f} > {self.done_threshold} after "
                    f"{len(self._history)} affordances",
                    now_s,
                )
                return PredictionOutcome.SUCCEEDED
            # Done before anything was achieved is a planner error; use its keypoints instead.
            self._counters["done_ignored_before_first_step"] += 1
        if problem is None and self._index >= self.max_steps:
            self._finish(ChainPhase.FAILED, f"failed: no done after max_steps={self.max_steps} affordances", now_s)
            return PredictionOutcome.FAILED
        checked = None
        if problem is None:
            checked, problem = self._check_keypoints(keypoints_px, arm_active)
        if problem is not None or checked is None:
            return self._reject(problem or "invalid prediction", now_s)
        keypoints, active = checked
        self._consecutive_invalid = 0
        self._current = Affordance(
            index=self._index,
            keypoints_px=keypoints,
            arm_active=active,
            image_size=self.image_size,
            obs_stamp_s=float(obs_stamp_s),
            current_since_s=float(now_s),
        )
        self._step_clock_s = float(now_s)
        was_replan = self._replan_requested
        self._replan_requested = False
        self._counters["predictions_accepted"] += 1
        kind = "re-planned" if was_replan else "new"
        self._last_reason = f"{kind} affordance {self._index} for arms {list(self._current.active_arms)}"
        self._updated_s = float(now_s)
        return PredictionOutcome.ACCEPTED

    # ------------------------------------------------------------------ validator events
    def on_gate_event(self, event: GateEvent | str, now_s: float, affordance_index: int | None = None) -> bool:
        """Apply a `GateEvent` (or its wire value) from the validator; returns whether it changed anything."""
        gate_event = GateEvent(event)
        if gate_event == GateEvent.OPEN:
            return self.on_gate_open(now_s, affordance_index)
        if gate_event == GateEvent.TIMEOUT_RETRY:
            return self.on_timeout(now_s, affordance_index)
        if gate_event == GateEvent.ABORT:
            if not self._event_applies(affordance_index):
                return False
            self.abort(f"validator gave up on affordance {self._index} after {self.max_retries} retries", now_s)
            return True
        return False

    def on_gate_open(self, now_s: float, affordance_index: int | None = None) -> bool:
        """The validator says the current affordance is achieved: push it to history and advance.

        Ignored (counted, returns False) unless running with a current affordance whose index
        equals ``affordance_index`` (when given), so a late event cannot advance twice.
        """
        if self._current is None or not self._event_applies(affordance_index):
            if self._current is None:
                self._counters["gate_events_ignored"] += 1
            return False
        self._history.append(self._current)
        self._counters["gate_opens"] += 1
        self._last_reason = f"affordance {self._index} achieved; predicting affordance {self._index + 1}"
        self._index += 1
        self._current = None
        self._retries = 0
        self._replan_requested = False
        self._outstanding = None  # a prediction in flight was for the step just finished
        self._step_clock_s = None
        self._updated_s = float(now_s)
        return True

    def on_timeout(self, now_s: float, affordance_index: int | None = None) -> bool:
        """The validator timed out on the current step: re-plan it, or abort after ``max_retries``."""
        if not self._event_applies(affordance_index):
            return False
        self._counters["timeouts"] += 1
        self._timeout(now_s, "validator timeout")
        return True

    # ------------------------------------------------------------------ observation
    @property
    def phase(self) -> ChainPhase:
        """Current phase."""
        return self._phase

    @property
    def current(self) -> Affordance | None:
        """The affordance being executed, or None."""
        return self._current

    @property
    def history(self) -> tuple[Affordance, ...]:
        """Achieved affordances of this task, oldest first."""
        return tuple(self._history)

    @property
    def counters(self) -> dict[str, int]:
        """Copy of the event counters (kept across tasks)."""
        return dict(self._counters)

    @property
    def state(self) -> ChainState:
        """Snapshot for the latched task-state topic."""
        active = self._current.arm_active if self._current is not None else (False, False)
        return ChainState(
            phase=self._phase,
            index=self._index,
            instruction=self._instruction,
            arm_active=active,
            current=self._current,
            achieved_count=len(self._history),
            retries=self._retries,
            total_retries=self._total_retries,
            replan_requested=self._replan_requested,
            outstanding_request_id=None if self._outstanding is None else self._outstanding[0],
            last_reason=self._last_reason,
            updated_s=self._updated_s,
            counters=self.counters,
        )

    # ------------------------------------------------------------------ internals
    def _reset_task(self) -> None:
        self._index = 0
        self._history: list[Affordance] = []
        self._current: Affordance | None = None
        self._retries = 0
        self._total_retries = 0
        self._replan_requested = False
        self._outstanding: tuple[int, float] | None = None  # (request id, requested at)
        self._step_clock_s: float | None = None
        self._consecutive_invalid = 0

    def _transition(self, phase: ChainPhase, reason: str, now_s: float) -> None:
        self._phase = phase
        self._last_reason = reason
        self._updated_s = float(now_s)

    def _finish(self, phase: ChainPhase, reason: str, now_s: float) -> None:
        # The current affordance is cleared so the planner publishes empty targets (actors hold).
        self._current = None
        self._outstanding = None
        self._replan_requested = False
        self._transition(phase, reason, now_s)

    def _event_applies(self, affordance_index: int | None) -> bool:
        if self._phase != ChainPhase.RUNNING or (affordance_index is not None and affordance_index != self._index):
            self._counters["gate_events_ignored"] += 1
            return False
        return True

    def _timeout(self, now_s: float, cause: str) -> None:
        self._retries += 1
        self._total_retries += 1
        if self._retries > self.max_retries:
            self._finish(
                ChainPhase.ABORTED,
                f"aborted: {cause} on affordance {self._index} after {self.max_retries} retries",
                now_s,
            )
            return
        # Keep the current affordance published until its replacement arrives, so the actors
        # keep a target; any prediction in flight predates the timeout and is superseded.
        self._replan_requested = True
        self._outstanding = None
        self._step_clock_s = float(now_s)
        self._last_reason = f"{cause} on affordance {self._index}: re-plan {self._retries}/{self.max_retries}"
        self._updated_s = float(now_s)

    def _reject(self, problem: str, now_s: float) -> PredictionOutcome:
        self._counters["predictions_rejected"] += 1
        self._consecutive_invalid += 1
        if self._consecutive_invalid >= self.max_consecutive_invalid:
            self._finish(
                ChainPhase.FAILED,
                f"failed: {self._consecutive_invalid} invalid predictions in a row, last: {problem}",
                now_s,
            )
            return PredictionOutcome.FAILED
        self._last_reason = f"rejected prediction for affordance {self._index}: {problem}; asking again"
        self._updated_s = float(now_s)
        return PredictionOutcome.REJECTED

    def _check_keypoints(
        self, keypoints_px: np.ndarray, arm_active: Sequence[bool] | np.ndarray
    ) -> tuple[tuple[np.ndarray, tuple[bool, bool]] | None, str | None]:
        expected = (len(ARMS), self.keypoints_per_arm, 2)
        try:
            keypoints = np.array(keypoints_px, dtype=np.float64)
            active_array = np.asarray(arm_active)
        except (TypeError, ValueError) as error:
            return None, f"keypoints/arm_active not numeric ({error})"
        if keypoints.shape != expected:
            return None, f"keypoints shape {keypoints.shape} != expected {expected}"
        active, problem = self._check_arm_active(active_array)
        if problem is not None or active is None:
            return None, problem
        width, height = self.image_size
        tolerance = self.edge_tolerance_px
        for arm_slot, arm in enumerate(ARMS):
            points = keypoints[arm_slot]
            finite = bool(np.all(np.isfinite(points)))
            if not active[arm_slot]:
                # No target, but kept for the planner's conditioning (see Affordance).
                if not finite:
                    points[:] = 0.0
                self._clip_into_image(points)
                continue
            if not finite:
                return None, f"{arm} keypoints contain NaN/Inf"
            outside = (
                (points[:, 0] < -tolerance)
                | (points[:, 0] > width - 1 + tolerance)
                | (points[:, 1] < -tolerance)
                | (points[:, 1] > height - 1 + tolerance)
            )
            if np.any(outside):
                point = int(np.flatnonzero(outside)[0])
                x, y = points[point]
                return None, f"{arm} keypoint {point} ({x:.1f}, {y:.1f}) outside the {width}x{height} image"
            self._clip_into_image(points)
        keypoints.setflags(write=False)
        return (keypoints, active), None

    def _clip_into_image(self, points: np.ndarray) -> None:
        """Clip (P, 2) pixel points onto the image in place."""
        width, height = self.image_size
        np.clip(points[:, 0], 0.0, width - 1, out=points[:, 0])
        np.clip(points[:, 1], 0.0, height - 1, out=points[:, 1])

    def _check_arm_active(self, active_array: np.ndarray) -> tuple[tuple[bool, bool] | None, str | None]:
        if active_array.shape != (len(ARMS),) or active_array.dtype.kind not in "biuf":
            return None, f"arm_active must be {len(ARMS)} booleans or probabilities, got {active_array!r}"
        if active_array.dtype.kind == "f":
            if not np.all(np.isfinite(active_array)):
                return None, f"arm_active contains NaN/Inf: {active_array.tolist()}"
            flags = active_array >= self.arm_active_threshold
        else:
            flags = active_array != 0
        active = (bool(flags[0]), bool(flags[1]))
        if not any(active):
            return None, "no arm is active and the task is not done"
        return active, None


def _check_scalar(name: str, value: float, low: float | None = None, high: float | None = None) -> str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{name} is not a number ({value!r})"
    if not math.isfinite(number):
        return f"{name} is not finite ({number})"
    if (low is not None and number < low) or (high is not None and number > high):
        return f"{name} {number} outside [{low}, {high}]"
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"AffordanceChain: {message}")
