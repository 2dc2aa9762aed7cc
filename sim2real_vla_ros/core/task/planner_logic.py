"""The planner's decisions as a plain object: when to predict, how the chain advances, what to publish.

:class:`PlannerCore` is the planner node's logic without ROS: it owns the
:class:`~sim2real_vla_ros.core.task.affordance_chain.AffordanceChain`, the task (instruction,
embedding, e-stop, refusals) and the newest masked cam_high image; it decides at each tick
whether a prediction is due (:meth:`prepare`), runs the planner model (:meth:`predict`),
applies the answer (:meth:`on_outputs`) and the validator's events (:meth:`on_gate_event`),
and says what the latched topics must carry now (:meth:`publication`: the plan-state record
and the per-arm affordances, each only when it changed). Two drivers run it:

* the planner node (``nodes/planner.py``): messages in, publications out as messages, the
  tick in a worker thread; the node holds its lock around every call (not thread-safe here);
* the in-process runner (``sim/in_process.py``), synchronously in sim time.

Faults are counted through ``faults`` (``fault(reason, detail)`` / ``count(reason)``: the
node's FaultLog, or :class:`~sim2real_vla_ros.core.control.actor_controller.FaultCounter`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from sim2real_vla_ros.core.bounded_text import MAX_ECHO_CHARS, bounded
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError
from sim2real_vla_ros.core.policy.observation import masked_model_input
from sim2real_vla_ros.core.task.affordance_chain import (AffordanceChain, ChainPhase, PredictionOutcome,
                                                         PredictionRequest, denormalise_keypoints)
from sim2real_vla_ros.core.task.records import EVENT_WIRE_NAMES, plan_state_record
from sim2real_vla_ros.core.vocabulary import ARMS


@dataclass(frozen=True)
class PlannerConfig:
    """The planner's decision settings (the node's parameters of the same names)."""

    rate_hz: float = 2.0
    chain_length: int = 1
    max_retries: int = 2
    max_steps: int = 10
    done_threshold: float = 0.5
    backstop_timeout_s: float = 0.0
    max_image_age_s: float = 1.0


@dataclass(frozen=True)
class PlannerJob:
    """One prediction to run: the chain's request, the image it runs on and the instruction embedding."""

    request: PredictionRequest
    image: Any  # the driver's payload, converted by ``to_rgb``
    image_stamp_s: float
    embedding: np.ndarray


@dataclass(frozen=True)
class AffordanceTarget:
    """One arm's affordance as published: (P, 2) native cam_high pixels (none = idle), index, stamp."""

    pixels: np.ndarray
    index: int
    stamp_s: float


@dataclass(frozen=True)
class PlannerPublication:
    """What the latched topics must carry now; None = unchanged since the last publication."""

    plan_state: Optional[dict]  # records.plan_state_record
    affordances: Optional[Dict[str, AffordanceTarget]]


class PlannerCore:
    """Affordance chain + task + planner model (see the module docstring).

    Parameters
    ----------
    bundle : Bundle
        Its ``planner`` model, image preprocessor, instruction embeddings and manifest.
    config : PlannerConfig
    faults : object
        ``fault(reason, detail)`` and ``count(reason)``.
    to_rgb : callable
        The driver's image payload -> uint8 (H, W, 3) (raises on a malformed image).
    task_name : callable, optional
        Instruction -> tasks.yaml task name or None (for plan_state's ``task``).
    """

    def __init__(self, bundle, config: PlannerConfig, faults, to_rgb: Callable[[Any], np.ndarray] = np.asarray,
                 task_name: Optional[Callable[[str], Optional[str]]] = None) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.config = config
        self.faults = faults
        self.to_rgb = to_rgb
        self.task_name = task_name or (lambda instruction: None)
        self.model = bundle.model("planner")
        self.model_size: Tuple[int, int] = (manifest.image.width, manifest.image.height)
        self.chain = AffordanceChain(
            image_size=self.model_size, keypoints_per_arm=manifest.keypoints_per_arm,
            history_length=config.chain_length, max_retries=config.max_retries, max_steps=config.max_steps,
            done_threshold=config.done_threshold, step_timeout_s=config.backstop_timeout_s or None,
            # The model runs synchronously inside the tick, so a request is only "lost" when
            # that run failed; re-request at the next tick.
            request_timeout_s=0.5 / config.rate_hz,
            # Model keypoints are fractions of the image, [0, 1] continuous; the chain checks
            # pixel centres [0, size - 1], so allow (and clip) the last pixel's width.
            edge_tolerance_px=1.0)
        self.embedding: Optional[np.ndarray] = None
        self.task: Optional[str] = None
        self.last_error = ""
        self.estop = False
        self.run_started_s: Optional[float] = None  # when the current run started (actors move only for a
        # run started after their last e-stop release: core/control/motion_permit.py)
        self.seq = 0  # affordances made current so far: a new value = a new target
        self.latest_image: Any = None
        self.latest_image_stamp_s: Optional[float] = None
        self._published_state: Optional[dict] = None
        self._published_affordance: Any = _UNPUBLISHED

    # ------------------------------------------------------------------ inputs
    def on_masked_image(self, payload: Any, stamp_s: float) -> None:
        """The newest masked cam_high image (converted only when a prediction uses it)."""
        self.latest_image, self.latest_image_stamp_s = payload, float(stamp_s)

    def start(self, text: str, now_s: float, source: str) -> Tuple[bool, str]:
        """Start (or restart) the task with ``text``; returns (success, message). A refusal is counted."""
        if self.estop:
            return self._refuse("e-stop is engaged; release it with /vla/set_estop (data: false) before starting")
        if not text:
            return self._refuse("no instruction: set the 'instruction' parameter or publish /vla/instruction")
        if len(text) > MAX_ECHO_CHARS:
            # No instruction of a bundle is this long; the text itself is never echoed whole.
            return self._refuse(f"instruction of {len(text)} characters refused (longer than {MAX_ECHO_CHARS}): "
                                f"{bounded(text, 80)!r}")
        try:
            embedding = self.bundle.instruction_embedding(text)
        except UnknownInstructionError as exc:
            return self._refuse(bounded(str(exc)))
        restarted = self.chain.phase == ChainPhase.RUNNING
        if restarted:
            self.chain.stop(f"restarted by {source}", now_s)
        self.chain.start(text, now_s)
        self.run_started_s = float(now_s)
        self.embedding = np.array(embedding[None], dtype=np.float32)
        self.task = self.task_name(text)
        self.last_error = ""
        return True, f"{'restarted' if restarted else 'started'}: {text!r} (task {self.task or 'not in tasks.yaml'})"

    def refuse(self, message: str) -> Tuple[bool, str]:
        """Refuse a start the driver checked itself (counted, shown as ``last_error``)."""
        return self._refuse(message)

    def _refuse(self, message: str) -> Tuple[bool, str]:
        message = bounded(message)
        self.faults.fault("start_refused", message)
        self.last_error = message
        return False, message

    def stop(self, reason: str, now_s: float) -> None:
        """Stop the task and hold (phase idle, empty affordances)."""
        self.chain.stop(reason, now_s)

    def set_estop(self, engaged: bool, source: str, now_s: float) -> bool:
        """Engage / release the e-stop (engaging stops a running task); returns whether it changed."""
        changed = engaged != self.estop
        self.estop = engaged
        if engaged and self.chain.phase == ChainPhase.RUNNING:
            self.chain.stop(f"e-stop engaged ({source})", now_s)
        return changed

    def on_gate_event(self, event, index: Optional[int], now_s: float) -> bool:
        """A validator event (``GateEvent``); returns whether the chain applied it (both counted)."""
        applied = self.chain.on_gate_event(event, now_s, index)
        self.faults.count(f"gate_{EVENT_WIRE_NAMES[event]}" if applied else "gate_event_ignored")
        return applied

    # ------------------------------------------------------------------ planning
    def prepare(self, now_s: float) -> Optional[PlannerJob]:
        """The prediction due at this tick, or None (not due, or no usable image: counted)."""
        if not self.chain.needs_prediction(now_s):
            return None
        if self.latest_image is None:
            self.faults.fault("no_image", "no masked cam_high image received yet (/vla/masked/cam_high)")
            return None
        age = now_s - self.latest_image_stamp_s
        if age > self.config.max_image_age_s:
            self.faults.fault("stale_image", f"newest masked cam_high is {age:.3f} s old "
                              f"(max_input_age_s.cam_high = {self.config.max_image_age_s})")
            return None
        return PlannerJob(self.chain.request_prediction(now_s), self.latest_image, self.latest_image_stamp_s,
                          self.embedding)

    def predict(self, job: PlannerJob) -> Optional[dict]:
        """Run the planner model for ``job``; None on failure (counted: the request lapses and is
        asked again at a later tick). Needs no lock: it touches no state."""
        try:
            rgb = self.to_rgb(job.image)
        except Exception as exc:
            self.faults.fault("malformed_image", f"/vla/masked/cam_high: {exc}")
            return None
        try:
            request = job.request
            feed = {"top_image": masked_model_input(self.bundle.image_preprocessor, rgb),
                    "instruction": job.embedding,
                    "prev_affordance": request.prev_affordance[None].astype(np.float32),
                    "prev_valid": request.prev_valid[None].astype(np.float32)}
            return self.model.run(feed)
        except Exception as exc:
            self.faults.fault("planner_model_error", f"{type(exc).__name__}: {exc}")
            return None

    def on_outputs(self, job: PlannerJob, outputs: dict, now_s: float) -> PredictionOutcome:
        """Hand the model's answer to the chain (a new current affordance, success, or a rejection)."""
        keypoints_px = denormalise_keypoints(outputs["keypoints"][0], self.model_size)
        outcome = self.chain.on_prediction(job.request.request_id, keypoints_px, outputs["arm_active"][0],
                                           float(outputs["done"][0]), job.image_stamp_s, now_s)
        if outcome == PredictionOutcome.ACCEPTED:
            self.seq += 1
        elif outcome in (PredictionOutcome.REJECTED, PredictionOutcome.FAILED):
            self.faults.fault(f"prediction_{outcome.value}", self.chain.state.last_reason)
        self.faults.count(f"outcome.{outcome.value}")
        return outcome

    # ------------------------------------------------------------------ outputs
    def forget_published(self) -> None:
        """Offer plan_state and the affordances again at the next :meth:`publication` (the
        node's publishers dropped what they were given while it was inactive)."""
        self._published_state = None
        self._published_affordance = _UNPUBLISHED

    def publication(self, now_s: float, native_size: Optional[Tuple[int, int]]) -> PlannerPublication:
        """plan_state and the affordances, each when it changed since the last call that returned it.

        ``native_size`` (width, height) is cam_high's native size, the pixel frame of the
        published keypoints; without it a current affordance is not published (counted) and
        is offered again at the next call.
        """
        state = self.chain.state
        record = plan_state_record(state, self.seq, now_s, task=self.task, estop=self.estop,
                                   last_error=self.last_error, image_size=native_size,
                                   run_started=self.run_started_s)
        comparable = {k: v for k, v in record.items() if k != "stamp"}
        plan_state = None
        if comparable != self._published_state:
            plan_state, self._published_state = record, comparable
        affordances = None
        identity = self.seq if state.current is not None else None
        if identity != self._published_affordance:
            affordances = self._affordances(state.current, now_s, native_size)
            if affordances is not None:
                self._published_affordance = identity
        return PlannerPublication(plan_state, affordances)

    def _affordances(self, current, now_s: float, native_size) -> Optional[Dict[str, AffordanceTarget]]:
        if current is not None and native_size is None:
            self.faults.fault("no_image_size", "cam_high size unknown: no /cam_high/camera_info yet and "
                              "image_width/image_height not set; affordance not published")
            return None
        targets = {}
        for slot, arm in enumerate(ARMS):
            stamp = now_s if current is None else current.obs_stamp_s
            pixels = np.zeros((0, 2))
            if current is not None and current.arm_active[slot]:
                pixels = denormalise_keypoints(current.keypoints_normalised[slot], native_size)
            targets[arm] = AffordanceTarget(pixels, -1 if current is None else int(current.index), float(stamp))
        return targets


_UNPUBLISHED = object()
