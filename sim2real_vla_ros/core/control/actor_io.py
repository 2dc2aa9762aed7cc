"""The actor node's message-independent logic (pure, ROS-free).

The actor node (``sim2real_vla_ros.nodes.actor``) only translates messages; what it decides
lives here so it can be unit-tested without rclpy:

* :func:`arm_state_from_joint_state`: an arm's 7-vector from a JointState's names/positions,
  with the URDF names (``<arm>_joint1..7``) or the AgileX vendor layout (``joint0..joint6``,
  7th value = total gripper width).
* :func:`affordance_keypoints`: a PolygonStamped's pixel keypoints -> normalised (P, 2);
  an empty polygon means "arm idle".
* :func:`safe_trajectory_tail`: the points a ``trajectory``-mode message carries after this
  tick's command: the next safe setpoints, then a deceleration to rest, all through
  :meth:`SafetyFilter.preview` (so every point obeys the same limits as a streamed command).
* :class:`InferenceRequest` / :func:`inference_due`: when the actor asks for a new chunk.
* Fault injection for tests and the dry run (:data:`FAULT_INJECTIONS`): :func:`inject_nan`
  and :class:`UndecodableTokensDecoder`, applied to model outputs so that the real safety
  path downstream is exercised.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from sim2real_vla_ros.core.robot import arm_joint_names
from sim2real_vla_ros.core.control.vendor import VENDOR_JOINT_NAMES
from sim2real_vla_ros.core.vocabulary import ARMS

FAULT_INJECTIONS = ("", "nan_chunk", "undecodable_tokens")
"""Values of the actor's ``fault_injection`` parameter ('' = off)."""


class AffordanceError(ValueError):
    """An affordance polygon that cannot be a target (wrong point count, outside the image, NaN)."""


# ----------------------------------------------------------------------------- inputs
def arm_state_from_joint_state(names: Sequence[str], positions: Sequence[float], arm: str) -> np.ndarray:
    """The arm's 7-vector (joints 1-6 rad, joint7 finger m) from a JointState's names/positions.

    Accepts the URDF names ``<arm>_joint1..7`` (``/joint_states`` of the simulator or
    joint_state_broadcaster, other joints ignored) or the vendor layout ``joint0..joint6``
    (``/puppet/joint_<arm>`` remapped onto ``/joint_states``), whose 7th value is the total
    gripper width and is halved into the finger position.

    Raises
    ------
    ValueError
        Lengths differ, the arm's joints are missing, or a value is not finite (named).
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    names = list(names)
    values = list(positions)
    if len(names) != len(values):
        raise ValueError(f"joint state has {len(names)} names but {len(values)} positions")
    index = {name: i for i, name in enumerate(names)}
    wanted = arm_joint_names(arm)
    vendor = not all(name in index for name in wanted) and all(name in index for name in VENDOR_JOINT_NAMES)
    if vendor:
        wanted = list(VENDOR_JOINT_NAMES)
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(f"joint state lacks {missing} (expected {arm_joint_names(arm)} or the vendor "
                         f"{list(VENDOR_JOINT_NAMES)})")
    vector = np.array([values[index[name]] for name in wanted], dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        bad = [name for name, value in zip(wanted, vector) if not math.isfinite(value)]
        raise ValueError(f"joint state has non-finite values for {bad}")
    if vendor:
        vector[-1] = vector[-1] / 2.0  # total opening width -> one finger
    return vector


def actor_plan_inputs(record: Mapping, instruction_embedding) -> tuple:
    """What an actor takes from a plan-state record (``core.task.records``; the node gets it
    from a ``PlanState`` message): (instruction, image size, problem).

    ``instruction_embedding(text)`` raises for an instruction the bundle does not know; such an
    instruction is dropped ('' = the arm idles) and ``problem`` says why (else None). The image
    size (width, height) is None unless the plan carries two positive integers.

    Raises
    ------
    ValueError
        The record is not a mapping.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"plan state must be a mapping, got {type(record).__name__}")
    payload = record
    size = payload.get("image_size")
    image_size = None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        image_size = (size[0], size[1])
    instruction = str(payload.get("instruction") or "")
    problem = None
    if instruction:
        try:
            instruction_embedding(instruction)
        except LookupError as exc:  # the bundle's UnknownInstructionError
            problem, instruction = str(exc), ""
    return instruction, image_size, problem


def affordance_keypoints(points_xy: Sequence[Sequence[float]], width: float, height: float,
                         expected: int) -> Optional[np.ndarray]:
    """Pixel keypoints in the ``cam_high`` image -> normalised (P, 2) ``(x / width, y / height)``.

    Parameters
    ----------
    points_xy : sequence of (x, y)
        The polygon's points (z, the affordance index, is not part of them).
    width, height : float
        The ``cam_high`` native resolution the planner's pixels refer to.
    expected : int
        Keypoints per arm of the bundle (P).

    Returns
    -------
    np.ndarray or None
        float64 (P, 2) in [0, 1]; None for an empty polygon (the arm is idle: hold).

    Raises
    ------
    AffordanceError
        Wrong number of points, non-finite values, or a point outside the image (beyond half
        a pixel: the planner clips its keypoints to the image).
    """
    if not (width > 0 and height > 0):
        raise AffordanceError(f"image size must be positive, got {width}x{height}")
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) if len(points_xy) else np.empty((0, 2))
    if points.shape[0] == 0:
        return None
    if points.shape[0] != expected:
        raise AffordanceError(f"affordance has {points.shape[0]} keypoints, the bundle expects {expected}")
    if not np.all(np.isfinite(points)):
        raise AffordanceError("affordance has non-finite keypoints")
    size = np.array([width, height], dtype=np.float64)
    if np.any(points < -0.5) or np.any(points > size + 0.5):
        raise AffordanceError(f"affordance keypoints {points.round(1).tolist()} lie outside the "
                              f"{width:g}x{height:g} cam_high image")
    return np.clip(points / size, 0.0, 1.0)


# ----------------------------------------------------------------------------- outputs
MAX_STATUS_REASONS = 16  # ActorStatus: string<=32[<=16] safety_reasons


def actor_status_fields(controller, output, now_s: float, chunks_received: int) -> dict:
    """The fields of an ``ActorStatus`` message after a control tick (plain values; the node
    fills the message, ``header`` and ``arm`` aside).

    Parameters
    ----------
    controller : ActorController
        After its :meth:`tick`.
    output : TickOutput
        What the tick decided.
    now_s : float
        The tick time (control clock).
    chunks_received : int
        Chunks that came back from inference decoded (the pipeline's ``ok`` count).
    """
    target = controller.target()
    spliced = int(controller.chunks.counters().get("accepted", 0))
    steps = controller.chunks.remaining_steps(now_s)
    reasons = []
    for event in output.decision.reasons:
        kind = event.kind.value
        if kind not in reasons:
            reasons.append(kind[:32])
    delay_ms = controller.splice_delay.last_ms
    return {
        "active": bool(output.active), "estop": bool(controller.estop),
        "target_index": -1 if target is None else int(target.index),
        "inference_in_flight": bool(controller.inference_in_flight),
        "chunks_received": int(chunks_received), "chunks_spliced": spliced,
        # The executor numbers accepted chunks from 0 in splice order.
        "chunk_id": spliced - 1,
        "splice_delay_s": delay_ms * 1e-3 if math.isfinite(delay_ms) else 0.0,
        "skipped_steps": int(controller.seam.get("last_skipped_steps", 0) or 0),
        "horizon_steps": int(steps), "horizon_s": float(steps * controller.chunk_dt),
        "held": bool(output.decision.held), "safety_reasons": reasons[:MAX_STATUS_REASONS],
        "last_failure": str(getattr(controller, "_last_failure", None) or "")[:64],
    }


def stop_steps_bound(velocity: Optional[np.ndarray], max_velocity: np.ndarray, max_acceleration: np.ndarray,
                     dt: float, horizon: int) -> int:
    """Ticks enough to decelerate to rest after ``horizon`` more ticks of motion.

    The velocity after ``horizon`` ticks is at most ``|v| + a horizon dt`` (and ``max_velocity``);
    braking at ``a`` takes that over ``a`` seconds. One extra tick absorbs rounding.
    """
    speed = np.zeros_like(max_velocity) if velocity is None else np.abs(np.asarray(velocity, dtype=float))
    reachable = np.minimum(speed + max_acceleration * horizon * dt, max_velocity)
    return int(math.ceil(float(np.max(reachable / max_acceleration)) / dt)) + 1


def safe_trajectory_tail(safety, future_candidates: Optional[np.ndarray], measured: Optional[np.ndarray],
                         dt: float) -> np.ndarray:
    """Safe points to follow this tick's command in a ``trajectory``-mode message.

    The future setpoints (on the control grid, one ``dt`` apart, starting one ``dt`` after the
    command just decided) are followed by a deceleration to rest, and the whole sequence is
    rolled through :meth:`SafetyFilter.preview`: every point obeys the position, deviation,
    velocity and acceleration rules, and the trajectory *ends at rest*. If no newer message
    arrives (the actor stalls or dies) the controller therefore brakes to a stop within the
    limits instead of holding a moving setpoint. Trailing duplicate rest points are trimmed.

    Parameters
    ----------
    safety : SafetyFilter
        Called after this tick's :meth:`SafetyFilter.filter` (its state is not changed).
    future_candidates : np.ndarray (m, n) or None
        The executor's setpoints for the next ``m`` ticks; None or empty when holding.
    measured : np.ndarray (n,) or None
        Measured joint state (for the deviation rule; None stops at once).
    dt : float
        Control period (s).

    Returns
    -------
    np.ndarray (k, n)
        Points for ``now + 2 dt, now + 3 dt, ...`` (empty when the command is already at rest
        and there is nothing to follow).
    """
    size = safety.limits.num_joints
    future = np.empty((0, size)) if future_candidates is None else np.asarray(future_candidates, dtype=float)
    future = future.reshape(-1, size)
    tail = stop_steps_bound(safety.last_velocity, safety.limits.max_velocity, safety.limits.max_acceleration, dt,
                            future.shape[0])
    rows = np.vstack([future, np.full((tail, size), np.nan)])
    points = safety.preview(rows, measured, dt)
    if points.shape[0] == 0:
        return points
    last = safety.last_command
    previous = np.vstack([last[None], points[:-1]])
    moving = np.any(np.abs(points - previous) > 1e-12, axis=1)
    if not moving.any():
        return points[:0]
    # Keep everything up to the last moving point plus the first point at rest after it.
    end = min(int(np.flatnonzero(moving)[-1]) + 2, points.shape[0])
    return points[:end]


# ----------------------------------------------------------------------------- scheduling
@dataclass(frozen=True)
class InferenceRequest:
    """The state the control tick looks at to decide whether to start an inference.

    Attributes
    ----------
    active : bool
        The arm has an affordance (not idle), an instruction, and no e-stop.
    in_flight : bool
        An inference is running (at most one at a time).
    needs_chunk : bool
        ``ChunkExecutor.needs_new_chunk(now, threshold_steps)``.
    target_changed : bool
        The affordance changed since the chunk being executed was inferred.
    newest_observation_s : float or None
        Stamp of the newest complete observation (None: not all inputs received).
    last_inferred_observation_s : float or None
        Observation stamp of the last inference started.
    """

    active: bool
    in_flight: bool
    needs_chunk: bool
    target_changed: bool
    newest_observation_s: Optional[float]
    last_inferred_observation_s: Optional[float]


def inference_due(request: InferenceRequest) -> bool:
    """True when a new inference should start now.

    Only one inference runs at a time; only an observation newer than the last one used is
    worth inferring from (the executor would drop a chunk that is not newer); and a chunk is
    asked for early (remaining steps below the threshold, LeRobot-style) or as soon as the
    target changes.
    """
    if not request.active or request.in_flight or request.newest_observation_s is None:
        return False
    if request.last_inferred_observation_s is not None and \
            request.newest_observation_s <= request.last_inferred_observation_s:
        return False
    return request.needs_chunk or request.target_changed


# ----------------------------------------------------------------------------- fault injection
def inject_nan(chunk: np.ndarray) -> np.ndarray:
    """A copy of ``chunk`` with NaN and Inf in it (fault injection ``nan_chunk``).

    Mimics a model whose decoded output is corrupt in part of the chunk (the rest stays
    plausible, which is the case a check must not miss): half of joint 1 becomes NaN and one
    gripper value +Inf.
    """
    corrupted = np.array(chunk, dtype=np.float64, copy=True)
    steps = corrupted.shape[0]
    corrupted[steps // 2:, 0] = np.nan
    corrupted[steps - 1, -1] = np.inf
    return corrupted


class UndecodableTokensDecoder:
    """Wraps an actor decoder backend so that its outputs form an undecodable FAST sequence.

    Fault injection ``undecodable_tokens``: the wrapped model runs normally, then its
    next-token ``logits`` are overridden so that the second generated token is the BOS id (not
    a FAST id) and the third is EOS. The pipeline's real generation loop and FAST decoder
    then reject the sequence (``decode_failed/invalid_id``), and nothing downstream sees a
    chunk. A one-shot decoder's ``tokens`` output is replaced by ``[first, BOS]``.

    Parameters
    ----------
    inner : object
        The backend (anything with ``run(feeds) -> dict``).
    bos_id, eos_id : int
        The decoder's token ids.
    enabled : callable, optional
        Returns whether to inject for the current inference (default: always).
    """

    def __init__(self, inner, bos_id: int, eos_id: int, enabled=None) -> None:
        self.inner = inner
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self._enabled = enabled or (lambda: True)
        self._step = 0
        self._active = True
        self._lock = threading.Lock()

    def __getattr__(self, name):
        # Everything but run() (contract, latency stats, warm-up) is the wrapped backend's.
        return getattr(self.inner, name)

    def _starts_generation(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """The first call of a generation: an empty key/value cache, or (no cache) BOS alone."""
        if "past_key" in feeds:
            return np.asarray(feeds["past_key"]).shape[3] == 0  # [layers, batch, heads, past, head_dim]
        tokens = np.asarray(feeds.get("tokens", np.empty((1, 0))))
        return tokens.shape == (1, 1) and int(tokens[0, 0]) == self.bos_id

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict:
        outputs = dict(self.inner.run(feeds))
        with self._lock:
            if self._starts_generation(feeds):
                self._step = 0
                self._active = bool(self._enabled())
            step = self._step
            self._step += 1
            active = self._active
        if not active:
            return outputs
        if "logits" in outputs and step in (1, 2):
            logits = np.array(outputs["logits"], copy=True)
            logits[...] = 0.0
            logits[..., self.bos_id if step == 1 else self.eos_id] = 1.0
            outputs["logits"] = logits
        elif "tokens" in outputs and "logits" not in outputs:
            generated = np.asarray(outputs["tokens"])
            first = int(generated.reshape(-1)[0]) if generated.size else 0
            outputs["tokens"] = np.array([[first, self.bos_id]], dtype=generated.dtype if generated.size else np.int64)
        return outputs


__all__ = ["AffordanceError", "FAULT_INJECTIONS", "MAX_STATUS_REASONS", "actor_status_fields", "InferenceRequest", "UndecodableTokensDecoder",
           "VENDOR_JOINT_NAMES", "affordance_keypoints", "arm_state_from_joint_state", "inference_due",
           "inject_nan", "safe_trajectory_tail", "stop_steps_bound"]
