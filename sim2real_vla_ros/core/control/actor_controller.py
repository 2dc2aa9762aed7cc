"""One arm's actor behaviour as a plain object: inputs in, filtered commands and inference requests out.

:class:`ActorController` is the whole per-arm control logic of the actor (pure, ROS-free):
the control tick (slot time on the timer grid, clock-jump restart, idle/e-stop transitions,
the chunk executor's setpoint through the safety filter, the trajectory-mode preview), the
schedule that decides when to ask for a chunk, the observation snapshot an inference runs
on, and the splice of its result. Three drivers run this same object:

* the actor node (``nodes/actor.py``): messages in, :class:`TickOutput` out as messages, the
  inference in a worker thread;
* the benchmarks (``benchmarks/bench_async_actor.py``), in simulated time;
* the in-process evaluator, with the simulator in the loop.

Thread safety: the input methods and :meth:`tick` run on one thread (the node's executor),
:meth:`take_snapshot` / :meth:`submit_chunk` / :meth:`record_failure` /
:meth:`inference_finished` on another (the inference worker); shared state is under one lock.

Two schedules (``ActorConfig.schedule``):

* ``'async'`` (the shipped one): ask for the next chunk when at most ``request_threshold_s``
  of the current one remains, splice the result with the *measured* time since its
  observation, blend the seam (``blend``). The loop never waits.
* ``'sync'``: openpi's ``ActionChunkBroker``, kept as the baseline of the async-vs-sync
  benchmark: ask only when the chunk has run out; while the model runs the arm gets no fresh
  setpoint (the filter decelerates it to rest); the result is executed from its step 0
  (stamped at its arrival: no latency compensation), ``sync_horizon`` steps of it. Same model,
  executor and safety filter.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from sim2real_vla_ros.core.control.actor_io import (AffordanceError, InferenceRequest, affordance_keypoints,
                                                    inference_due, safe_trajectory_tail)
from sim2real_vla_ros.core.control.chunk_executor import (BLEND_MODES, INTERPOLATIONS, ChunkExecutor, Setpoint,
                                                          SpliceReport, TickStats)
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard, OtherArmState
from sim2real_vla_ros.core.control.motion_permit import MotionPermit
from sim2real_vla_ros.core.control.joint_reading import (JointReadingValidator, ReadingVerdict, ValidatedJointState,
                                                         validator_diagnostics)
from sim2real_vla_ros.core.control.safety import (SafetyDecision, SafetyEventKind, SafetyFilter, SafetyLimits,
                                                  check_input_ages)
from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.vocabulary import ARMS, INPUT_NAMES, OUTPUT_MODES

SCHEDULES = ("async", "sync")
MAX_CHAIN_INDEX = 1000  # the planner's max_steps upper bound: a larger affordance index is no chain index
TIMING_STAGES = ("preprocess", "encoder", "denoiser", "token_generation", "decode", "unnormalise", "total")
REVOLUTE = slice(0, 6)  # seam metrics in rad; the finger (m) is reported apart
IMAGE_INPUTS = ("cam_high", "wrist")


@dataclass(frozen=True)
class ActorConfig:
    """The actor's control settings (the node's parameters of the same names).

    ``top_image_size`` (width, height) fixes the pixel frame of the affordance keypoints;
    None takes it from the plan (:meth:`ActorController.on_plan`). ``instruction`` fixes the
    instruction; '' takes it from the plan.
    """

    arm: str
    control_rate_hz: float = 50.0
    output_mode: str = "trajectory"
    blend: str = "crossfade"
    crossfade_s: float = 0.2
    ensemble_decay: float = 0.01
    chunk_interpolation: str = "pchip"
    request_threshold_s: float = 0.5
    trajectory_horizon_steps: int = 5
    instruction: str = ""
    top_image_size: Optional[tuple] = None
    schedule: str = "async"
    sync_horizon: Optional[int] = None

    def __post_init__(self) -> None:
        for name, value, choices in (("arm", self.arm, ARMS), ("output_mode", self.output_mode, OUTPUT_MODES),
                                     ("blend", self.blend, BLEND_MODES),
                                     ("chunk_interpolation", self.chunk_interpolation, INTERPOLATIONS),
                                     ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ValueError(f"ActorConfig: {name} must be one of {choices}, got {value!r}")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise ValueError(f"ActorConfig: control_rate_hz must be finite and > 0, got {self.control_rate_hz!r}")
        if self.sync_horizon is not None and self.sync_horizon < 1:
            raise ValueError(f"ActorConfig: sync_horizon must be >= 1 or None, got {self.sync_horizon!r}")

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    def warnings(self) -> list:
        """Settings that work but are likely a mistake, in words (a node logs them at start-up)."""
        found = []
        if self.blend == "crossfade" and self.request_threshold_s < self.crossfade_s:
            # The blend mixes in the old chunk for crossfade_s after the new one arrives: if the old
            # one ends first, its last step is held and the arm's velocity dips mid-blend.
            found.append(f"request_threshold_s {self.request_threshold_s:g} < crossfade_s {self.crossfade_s:g}: the "
                         "current chunk can end during a crossfade (velocity dips); choose request_threshold_s >= "
                         "crossfade_s + the expected inference latency")
        return found


@dataclass(frozen=True)
class Target:
    """The arm's current affordance: pixels in the cam_high native image, its chain index."""

    pixels: np.ndarray
    index: int
    stamp_s: float
    seq: int  # increments when the index changes or the arm becomes active


@dataclass(frozen=True)
class Snapshot:
    """The observation one inference runs on. Images are the driver's payloads, as given."""

    wrist: Any
    top: Any
    joints: np.ndarray
    target: Target
    keypoints: np.ndarray  # (P, 2) normalised to [0, 1]
    instruction: str
    stamp_s: float  # the older of the two image stamps


@dataclass(frozen=True)
class TickOutput:
    """What one control tick decided.

    Attributes
    ----------
    decision : SafetyDecision
        The safety filter's verdict; ``decision.command`` is None when nothing is to be sent
        (no measured state yet).
    slot_s : float
        The tick time snapped to the control grid (what the command is for).
    trajectory : np.ndarray or None
        ``output_mode == 'trajectory'``: the points of this tick's message, one ``dt`` apart
        from ``slot_s + dt`` (the command first, then safe future setpoints and a stop).
    request_inference : bool
        The schedule wants a new chunk: run :meth:`ActorController.take_snapshot` and an
        inference (the flag also marks the inference as in flight until
        :meth:`ActorController.inference_finished`).
    active : bool
        The arm has a target, an instruction and no e-stop.
    """

    decision: SafetyDecision
    slot_s: float
    trajectory: Optional[np.ndarray]
    request_inference: bool
    active: bool

    @property
    def command(self) -> Optional[np.ndarray]:
        return self.decision.command


class FaultCounter:
    """Counts faults by reason; ``on_fault(reason, detail)`` is told each one (a node logs it)."""

    def __init__(self, on_fault: Optional[Callable[[str, str], None]] = None) -> None:
        self._counts: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._on_fault = on_fault

    def fault(self, reason: str, detail: str) -> None:
        self.count(reason)
        if self._on_fault is not None:
            self._on_fault(reason, detail)

    def count(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass
class _Inputs:
    images: Dict[str, Any] = field(default_factory=lambda: {name: None for name in IMAGE_INPUTS})
    stamps: Dict[str, Optional[float]] = field(default_factory=lambda: {name: None for name in INPUT_NAMES})
    target: Optional[Target] = None
    target_seq: int = 0
    plan_instruction: str = ""
    plan_image_size: Optional[tuple] = None


class ActorController:
    """One arm's actor: schedule, executor and safety filter (see the module docstring).

    Parameters
    ----------
    config : ActorConfig
    limits : SafetyLimits
        The arm's limits (URDF + safety configuration).
    chunk_dt : float
        Spacing of a chunk's steps (1 / the bundle's action rate).
    keypoints_per_arm : int
        Affordance keypoints the model expects (P).
    faults : FaultCounter, optional
        Where faults are counted (a node passes one that also logs them).
    urdf_limits : object, optional
        The arm's URDF limits (``lower``, ``upper``, ``velocity``; ``robot.arm_limits(arm)``):
        what a joint reading is validated against, and the velocity limits at speed scale 1
        that :meth:`set_velocity_scale` scales. Default: the filter's own limits.
    guard : CollisionGuard, optional
        Checks every command (and trajectory point) against self, arm-arm, table and body
        collisions before it is sent; needs the other arm's state (:meth:`on_other_arm`), else
        it holds. None: no collision check (single-arm benchmarks).
    other_limits : SafetyLimits, optional
        The other arm's limits (its maximum velocity and acceleration bound its motion between
        readings); required with ``guard``.
    permit : MotionPermit, optional
        The e-stop latch, start-after-release rule and planner heartbeat (motion_permit.py):
        consulted at every tick, any hold reason holds like the e-stop; :meth:`set_estop` then
        latches it. None (benchmarks, single-arm drivers): a plain e-stop flag.
    """

    def __init__(self, config: ActorConfig, limits: SafetyLimits, chunk_dt: float, keypoints_per_arm: int,
                 faults: Optional[FaultCounter] = None, urdf_limits=None, guard: Optional[CollisionGuard] = None,
                 other_limits: Optional[SafetyLimits] = None, permit: Optional[MotionPermit] = None) -> None:
        if guard is not None and other_limits is None:
            raise ValueError("ActorController: a collision guard needs the other arm's limits (other_limits)")
        self.config = config
        self.limits = limits
        self.dt = config.dt
        self.chunk_dt = float(chunk_dt)
        self.keypoints_per_arm = int(keypoints_per_arm)
        self.faults = faults or FaultCounter()
        self.safety = SafetyFilter(limits)
        # Live speed scaling: the filter's velocity limit moves toward this target by at most
        # max_acceleration * dt per tick, so a lower limit never asks for a harder deceleration
        # than the acceleration limit allows (the change itself causes no jump).
        urdf_limits = urdf_limits or _Limits(limits.lower, limits.upper, limits.max_velocity)
        self._full_velocity = np.asarray(urdf_limits.velocity, dtype=np.float64).copy()
        # Every joint reading is validated before it is believed; a rejected one is not stored,
        # so its age grows and the filter's stale-input hold stops the arm (joint_reading.py).
        self.joint_state = ValidatedJointState(JointReadingValidator.from_limits(urdf_limits, limits))
        self.guard = guard
        self._other_limits = other_limits
        self._other: Optional[OtherArmState] = None
        self._base_ramp_velocity = limits.ramp_velocity.copy()
        self._velocity_target = limits.max_velocity.copy()
        self.threshold_steps = 0 if config.schedule == "sync" else \
            int(math.ceil(config.request_threshold_s / self.chunk_dt - 1e-9))
        self.chunks = ChunkExecutor(
            self.chunk_dt, blend="none" if config.schedule == "sync" else config.blend,
            crossfade_steps=int(math.ceil(config.crossfade_s / self.chunk_dt - 1e-9)),
            ensemble_decay=config.ensemble_decay, max_velocity=limits.max_velocity,
            max_acceleration=limits.max_acceleration, num_joints=limits.num_joints,
            interpolation=config.chunk_interpolation)
        self._lock = threading.Lock()
        self._inputs = _Inputs()
        self._estop = False
        self.permit = permit
        self.hold_reason: Optional[str] = None
        self._was_active = False
        self._grid_origin: Optional[float] = None
        self._last_tick_s: Optional[float] = None
        self._in_flight = False
        self._last_inferred_obs_s: Optional[float] = None
        self._executing_seq: Optional[int] = None
        self._last_failure: Optional[str] = None
        self.inferences = 0
        self.commands = 0
        self.latency = {stage: LatencyWindow() for stage in TIMING_STAGES}
        self.splice_delay = LatencyWindow()  # observation -> splice (control clock)
        self.execution_stats = TickStats(self.dt)  # ticks with a chunk: fresh or not
        self.tick_stats = TickStats(self.dt)  # every tick: jitter
        self.seam = {"last_jump": 0.0, "max_jump": 0.0, "max_velocity": 0.0, "max_acceleration": 0.0,
                     "last_skipped_steps": 0, "max_skipped_steps": 0}

    # ------------------------------------------------------------------ inputs
    def on_image(self, name: str, payload: Any, stamp_s: float) -> None:
        """A masked image (``'cam_high'`` or ``'wrist'``); the payload is converted only when inferred on."""
        if name not in IMAGE_INPUTS:
            raise ValueError(f"image input must be one of {IMAGE_INPUTS}, got {name!r}")
        with self._lock:
            self._inputs.images[name] = payload
            self._inputs.stamps[name] = stamp_s

    def on_joint_state(self, positions: np.ndarray, stamp_s: float, now_s: Optional[float] = None) -> ReadingVerdict:
        """A measured 7-vector (joints 1-6 rad, finger m), stored only if the validator accepts it.

        ``now_s`` (the control clock) lets a reading stamped in the future be refused.
        """
        return self.joint_state.update(positions, stamp_s, now_s)

    def on_other_arm(self, positions: np.ndarray, velocities: Optional[np.ndarray], stamp_s: float) -> None:
        """The other arm's reading (from the same /joint_states), for the collision guard."""
        if self._other_limits is None:
            return
        self._other = OtherArmState(np.asarray(positions, dtype=np.float64),
                                    None if velocities is None else np.asarray(velocities, dtype=np.float64),
                                    float(stamp_s), self._other_limits.max_velocity,
                                    self._other_limits.max_acceleration)

    def on_malformed_joint_state(self, detail: str) -> None:
        """A joint-state message that could not be read (counted as a rejected reading)."""
        self.joint_state.malformed(detail)

    def on_affordance(self, pixels: np.ndarray, index: Optional[float], stamp_s: float) -> None:
        """The arm's affordance: (P, 2) pixels of cam_high and its chain index; no pixels = idle.

        A new index (or idle -> active) asks for a new chunk at once. An index that is not a
        chain index (not finite, not an integer, outside [0, MAX_CHAIN_INDEX]: NaN, 1e30) or
        non-finite pixels make no target: the arm holds (counted ``malformed_affordance``).
        """
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        problem = None if pixels.shape[0] == 0 else affordance_problem(pixels, index)
        if problem is not None:
            self.faults.fault("malformed_affordance", problem)
        with self._lock:
            inputs = self._inputs
            if pixels.shape[0] == 0 or problem is not None:
                inputs.target = None
            else:
                chain_index = int(round(index))
                if inputs.target is None or inputs.target.index != chain_index:
                    inputs.target_seq += 1
                inputs.target = Target(pixels, chain_index, stamp_s, inputs.target_seq)
            inputs.stamps["affordance"] = stamp_s

    def on_plan(self, instruction: str, image_size: Optional[tuple]) -> None:
        """The plan's instruction ('' = none) and the pixel frame (width, height) of its affordances."""
        with self._lock:
            self._inputs.plan_instruction = instruction
            self._inputs.plan_image_size = image_size

    def set_estop(self, engaged: bool, now_s: Optional[float] = None) -> bool:
        """Engage / release the e-stop; returns whether it changed. Applied from the next tick.

        With a :class:`MotionPermit` the latch is the permit's: a release at ``now_s`` (None:
        the next tick's time) needs a task run started after it before the arm moves again.
        """
        if self.permit is not None:
            return self.permit.set(bool(engaged), now_s)
        changed = bool(engaged) != self._estop
        self._estop = bool(engaged)  # a plain attribute: atomic, never waits behind the inference
        return changed

    def set_velocity_scale(self, factor: float) -> None:
        """Velocity limits = ``factor`` x ``full_velocity``, reached by a ramp over the next ticks.

        ``factor`` in (0, 1]: an operator slowing the robot down or back up (MoveIt Servo /
        Franka style speed scaling).
        """
        if not (math.isfinite(factor) and 0.0 < factor <= 1.0):
            raise ValueError(f"velocity scale factor must be in (0, 1], got {factor!r}")
        self._velocity_target = self._full_velocity * float(factor)

    def _ramp_velocity_limit(self) -> None:
        limits = self.safety.limits
        gap = self._velocity_target - limits.max_velocity
        if not np.any(np.abs(gap) > 1e-12):
            return
        step = np.clip(gap, -limits.max_acceleration * self.dt, limits.max_acceleration * self.dt)
        velocity = limits.max_velocity + step
        self.safety.limits = dataclasses.replace(
            limits, max_velocity=velocity, ramp_velocity=np.minimum(self._base_ramp_velocity, velocity))

    @property
    def velocity_limit(self) -> np.ndarray:
        """The velocity limits the filter applies now (rad/s, m/s)."""
        return self.safety.limits.max_velocity.copy()

    @property
    def estop(self) -> bool:
        return self.permit.engaged if self.permit is not None else self._estop

    @property
    def active(self) -> bool:
        return self._was_active

    def instruction(self) -> str:
        with self._lock:
            return self.config.instruction or self._inputs.plan_instruction

    def target(self) -> Optional[Target]:
        with self._lock:
            return self._inputs.target

    def newest_observation_s(self) -> Optional[float]:
        """The stamp a snapshot taken now would carry (the older of the two image stamps); None without both."""
        with self._lock:
            images = (self._inputs.stamps["cam_high"], self._inputs.stamps["wrist"])
        return None if None in images else min(images)

    @property
    def inference_in_flight(self) -> bool:
        return self._in_flight

    # ------------------------------------------------------------------ control tick
    def tick(self, now_s: float) -> TickOutput:
        """One control tick at ``now_s`` (the control clock: sim time under use_sim_time)."""
        self.hold_reason = self.permit.hold_reason(now_s) if self.permit is not None else None
        # The e-stop freezes the setpoint within this tick (safety.py rule 3); the other permit
        # holds (awaiting a start, planner lost) make the arm idle: the controlled stop at the
        # acceleration limit (rule 5), as a missing target does.
        estop = self._estop or self.hold_reason == "estop"
        permitted = self.hold_reason is None or self.hold_reason == "estop"
        measured, joint_stamp = self.joint_state.latest
        with self._lock:
            stamps = {**self._inputs.stamps, "joint_state": joint_stamp}
            target = self._inputs.target
            instruction = self.config.instruction or self._inputs.plan_instruction
        if self._last_tick_s is not None and now_s < self._last_tick_s - self.dt:
            self._restart_after_clock_jump(now_s)
        self._last_tick_s = now_s
        self._ramp_velocity_limit()
        active = target is not None and bool(instruction) and not estop and permitted
        if active != self._was_active:
            # Idle or e-stop, and back: drop the plan, so that resuming starts from a fresh
            # chunk computed from where the arm is, not from a plan whose time has passed.
            self.chunks.reset()
            self._last_failure = None
        self._was_active = active
        slot = self._slot_time(now_s)
        setpoint = self.chunks.setpoint(slot) if active else None
        candidate = None if setpoint is None else setpoint.positions
        fault = self._last_failure if active and candidate is None else None
        # A command the guard refuses is never committed: the filter freezes this tick instead
        # (holds the last command sent, which was checked in its own tick).
        blocked = self._guard_blocks(candidate, measured, estop, now_s)
        decision = self.safety.filter(candidate, measured, now_s, stamps, estop or blocked, self.dt,
                                      candidate_fault=fault)
        self.tick_stats.record(now_s, True)
        if setpoint is not None and setpoint.positions is not None:
            self.execution_stats.record(now_s, setpoint.fresh)
        trajectory = None
        if decision.command is not None:
            self.commands += 1
            self.joint_state.commanded(decision.command, now_s)
            if self.config.output_mode == "trajectory":
                trajectory = self._guarded(self._trajectory_points(decision, slot, measured, setpoint), decision,
                                           measured, now_s)
        request = active and self._request_due(now_s, stamps, target, setpoint)
        return TickOutput(decision, slot, trajectory, request, active)

    def suspend(self) -> None:
        """Stop as the source of this arm's commands (the node's lifecycle deactivate).

        While suspended another tool may move the arm (``go_to_start`` homes it between
        episodes), so everything tied to the commands this controller sent is forgotten: the
        plan, the safety filter's command history (the next command starts from the measured
        position) and the joint-reading validator's command span and references (readings are
        no longer compared with old commands). The inputs (target, plan, images) are kept;
        counters too. A tick after this starts afresh, like the first tick of a new controller.
        """
        self.chunks.reset()
        self.safety.reset()
        self.joint_state.reset()
        with self._lock:
            self._last_inferred_obs_s = None
            self._executing_seq = None
        self._was_active = False
        self._grid_origin = None
        self._last_tick_s = None
        self._last_failure = None

    def _restart_after_clock_jump(self, now_s: float) -> None:
        """Time went back by more than a tick (a simulator restarted, a system clock step).

        The plan and the last inferred observation carry stamps of the old time line and would
        make every new chunk "not newer"; they are dropped (the arm decelerates to a hold until
        a new chunk comes). The safety filter keeps its command history: restarting it while
        the arm moves would be a velocity step.
        """
        self.faults.fault("clock_jumped_back", f"time went back from {self._last_tick_s:.3f} s to {now_s:.3f} s: "
                          "plan and observation history cleared")
        self.chunks.reset()
        self._grid_origin = None
        self.joint_state.validator.reset_time()
        with self._lock:
            self._last_inferred_obs_s = None
            self._executing_seq = None

    def _slot_time(self, now_s: float) -> float:
        """``now_s`` snapped to the timer's grid of ``dt`` steps.

        The executor is sampled at the nominal tick time, not at the moment the callback ran:
        a tick the OS delayed by a few ms still advances the command by exactly one step of
        the plan, so scheduling jitter does not turn into velocity/acceleration spikes (the
        filter works with the nominal dt). Re-anchored when the clock jumps back.
        """
        if self._grid_origin is None or now_s < self._grid_origin:
            self._grid_origin = now_s
        return self._grid_origin + round((now_s - self._grid_origin) / self.dt) * self.dt

    def _trajectory_points(self, decision: SafetyDecision, slot_s: float, measured, setpoint) -> np.ndarray:
        future = None
        horizon = self.config.trajectory_horizon_steps
        if not decision.held and setpoint is not None and setpoint.positions is not None and horizon:
            # The executor's own output on the control grid after this tick (what stream mode
            # would send next), checked by the filter's preview in safe_trajectory_tail.
            future = np.stack([self.chunks.setpoint(slot_s + k * self.dt).positions for k in range(1, horizon + 1)])
        tail = safe_trajectory_tail(self.safety, future, measured, self.dt)
        return np.vstack([decision.command[None], tail])

    def _guard_blocks(self, candidate, measured, estop: bool, now_s: float) -> bool:
        if self.guard is None or candidate is None or estop:
            return False
        verdict = self.guard.check_next_command(self.safety, candidate, measured, self._other, now_s, self.dt)
        return verdict is not None and not verdict.ok

    def _guarded(self, points: np.ndarray, decision: SafetyDecision, measured, now_s: float) -> np.ndarray:
        """Trajectory points the guard allows: all of them, else the command and a stop from it.

        A message cut short at a blocked point would leave the controller holding a point it
        reached at speed; the stop tail (the filter's controlled stop) ends at rest instead, and
        is itself cut only if even stopping would come too close (then the controller holds).
        """
        if self.guard is None:
            return points
        allowed = self.guard.check_trajectory_tail(points, self._other, now_s)
        if allowed == len(points):
            return points
        stop = np.vstack([decision.command[None], safe_trajectory_tail(self.safety, None, measured, self.dt)])
        return stop[: max(1, self.guard.check_trajectory_tail(stop, self._other, now_s))]

    def _request_due(self, now_s: float, stamps: Mapping[str, Optional[float]], target: Target,
                     setpoint: Optional[Setpoint]) -> bool:
        images = (stamps["cam_high"], stamps["wrist"])
        fresh = not check_input_ages(now_s, stamps, self.limits.max_input_age_s)
        with self._lock:
            if self.config.schedule == "sync":
                # The broker infers only once the chunk has run out (or before the first one).
                needs = setpoint is None or setpoint.positions is None or not setpoint.fresh
            else:
                needs = self.chunks.needs_new_chunk(now_s, self.threshold_steps)
            request = InferenceRequest(
                active=fresh, in_flight=self._in_flight, needs_chunk=needs,
                target_changed=self._executing_seq != target.seq,
                newest_observation_s=None if None in images else min(images),
                last_inferred_observation_s=self._last_inferred_obs_s)
            due = inference_due(request)
            if due:
                self._in_flight = True
        return due

    # ------------------------------------------------------------------ inference
    def take_snapshot(self) -> Optional[Snapshot]:
        """The observation for the inference just requested; None (counted) when it cannot run."""
        joints, _ = self.joint_state.latest
        with self._lock:
            inputs = self._inputs
            wrist, top, target = inputs.images["wrist"], inputs.images["cam_high"], inputs.target
            instruction = self.config.instruction or inputs.plan_instruction
            size = self.config.top_image_size or inputs.plan_image_size
            if wrist is None or top is None or joints is None or target is None or not instruction:
                return None
            stamp = min(inputs.stamps["wrist"], inputs.stamps["cam_high"])
            self._last_inferred_obs_s = stamp
        if size is None:
            self.record_failure("no_image_size", "cam_high size unknown: no top_image_size configured and no "
                                "image_size in the plan yet; cannot normalise the affordance")
            return None
        try:
            keypoints = affordance_keypoints(target.pixels, *size, self.keypoints_per_arm)
        except AffordanceError as exc:
            # A malformed target is no target: hold rather than act on a guess.
            self.record_failure("malformed_affordance", str(exc))
            return None
        self.inferences += 1
        return Snapshot(wrist, top, joints, target, keypoints, instruction, stamp)

    def record_timings(self, timings) -> None:
        """Per-stage latency (s) of one inference (an ``ActorPipeline`` result's ``timings``)."""
        for stage in TIMING_STAGES:
            value = getattr(timings, stage, None)
            if value is not None:
                self.latency[stage].add(value * 1e3)

    def record_failure(self, reason: str, detail: str, kind: str = "") -> None:
        """Count a failed inference; the executor keeps the last valid chunk (or the arm holds)."""
        self.faults.fault(f"{reason}.{kind}" if kind else reason, detail)
        self._last_failure = f"{reason}:{kind}" if kind else reason

    def submit_chunk(self, snapshot: Snapshot, chunk: np.ndarray, now_s: float,
                     execute_from_s: Optional[float] = None) -> Optional[SpliceReport]:
        """Splice an inferred chunk (robot units, step k at ``snapshot.stamp_s + k chunk_dt``) in.

        ``execute_from_s`` re-stamps the chunk (the sync broker executes it from its step 0 at
        arrival). Returns the splice report, or None when the chunk was discarded or dropped
        (counted).
        """
        if self.estop or not self._was_active or self.target() is None:
            # The arm went idle or e-stopped while this ran: never execute it afterwards.
            self.faults.count("chunk_discarded_inactive")
            return None
        if self.config.schedule == "sync" and self.config.sync_horizon is not None:
            chunk = np.asarray(chunk)[: self.config.sync_horizon]
        stamp = snapshot.stamp_s if execute_from_s is None else execute_from_s
        report = self.chunks.submit(chunk, stamp, now_s)
        if report.dropped:
            self.record_failure("chunk_dropped", report.detail, kind=report.reason)
            return None
        with self._lock:
            self._executing_seq = snapshot.target.seq
        self._last_failure = None
        self.splice_delay.add(report.elapsed_s * 1e3)
        self._record_seam(report)
        return report

    def apply_result(self, snapshot: Snapshot, result, now_s: float,
                     execute_from_s: Optional[float] = None) -> Optional[SpliceReport]:
        """Take an ``ActorPipeline.infer`` result: timings recorded, a failure counted, a chunk spliced."""
        self.record_timings(result.timings)
        if not result.ok:
            failure = result.failure
            kind = failure.kind.value + (f"/{failure.fast_failure.value}" if failure.fast_failure else "")
            self.record_failure("inference_failure", failure.describe(), kind=kind)
            return None
        return self.submit_chunk(snapshot, result.chunk, now_s, execute_from_s)

    def inference_finished(self) -> None:
        """The requested inference is over (whatever its outcome): the next one may start."""
        with self._lock:
            self._in_flight = False

    def _record_seam(self, report: SpliceReport) -> None:
        seam = self.seam
        seam["last_skipped_steps"] = report.skipped_steps
        seam["max_skipped_steps"] = max(seam["max_skipped_steps"], report.skipped_steps)
        if report.seam_jump is None:
            return
        seam["last_jump"] = float(np.max(report.seam_jump[REVOLUTE]))
        seam["max_jump"] = max(seam["max_jump"], seam["last_jump"])
        seam["max_velocity"] = max(seam["max_velocity"], float(np.max(report.seam_velocity[REVOLUTE])))
        seam["max_acceleration"] = max(seam["max_acceleration"], float(np.max(report.seam_acceleration[REVOLUTE])))

    # ------------------------------------------------------------------ diagnostics
    def health_counts(self, faults: Optional[Mapping[str, int]] = None) -> tuple:
        """(errors, warnings) totals: inference failures, dropped chunks, malformed inputs and
        callback errors; holds on stale or missing inputs. ``faults``: counts by reason (default:
        the controller's own; a node passes its log, which also holds its callbacks' faults)."""
        faults = self.faults.snapshot() if faults is None else faults
        errors = sum(n for key, n in faults.items()
                     if key.startswith(("inference_", "chunk_dropped", "malformed")) or key.endswith("_error"))
        counters = self.safety.counters
        warnings = counters.count_kind(SafetyEventKind.STALE_INPUT) + counters.count_kind(SafetyEventKind.NO_MEASURED_STATE)
        return errors, warnings

    def diagnostics(self) -> Dict[str, Any]:
        """Every counter and statistic, flat (keys as /diagnostics shows them)."""
        target = self.target()
        values: Dict[str, Any] = {
            "arm": self.config.arm, "output_mode": self.config.output_mode, "blend": self.config.blend,
            "schedule": self.config.schedule, "estop": self.estop, "active": self._was_active,
            "hold_reason": self.hold_reason or "none",
            **(self.permit.diagnostics() if self.permit is not None else {}),
            "target_index": "none" if target is None else target.index,
            "instruction": self.instruction() or "none", "inference_in_flight": self._in_flight,
            "inferences": self.inferences, "commands_published": self.commands,
            **{f"latency.{stage}.{key}": value for stage, window in self.latency.items()
               for key, value in window.stats().items()},
            **{f"observation_to_splice_{key}": value for key, value in self.splice_delay.stats().items()},
            **{f"executor.{key}": value for key, value in self.chunks.counters().items()},
            **{f"safety.{key}": value for key, value in self.safety.counters.as_dict().items()},
            **validator_diagnostics(self.joint_state.validator),
            **(self.guard.diagnostics() if self.guard is not None else {}),
            **{f"fault.{key}": value for key, value in self.faults.snapshot().items()},
            **{f"seam.{key}": value for key, value in self.seam.items()},
            **{f"execution.{key}": _none(value) for key, value in self.execution_stats.summary().items()},
            **{f"tick.{key}": _none(value) for key, value in self.tick_stats.summary().items()},
        }
        return values


def affordance_problem(pixels: np.ndarray, index: Optional[float]) -> Optional[str]:
    """Why an affordance (P, 2 pixels, chain index ``z``) is no target, or None when it is valid."""
    if isinstance(index, (bool, str)) or index is None:
        return f"affordance index {index!r} is not a number"
    try:
        index = float(index)
    except (TypeError, ValueError):
        return f"affordance index {index!r} is not a number"
    if not math.isfinite(index):
        return f"affordance index {index!r} is not a finite number"
    if abs(index - round(index)) > 1e-6 or not 0 <= round(index) <= MAX_CHAIN_INDEX:
        return f"affordance index {index!r} is not a chain index (an integer in [0, {MAX_CHAIN_INDEX}])"
    if not np.all(np.isfinite(pixels)):
        return "affordance pixels are not finite"
    return None


def observation_of(snapshot: Snapshot, to_rgb: Callable[[Any], np.ndarray] = np.asarray) -> ActorObservation:
    """The model input of a snapshot; ``to_rgb`` turns the driver's image payloads into (H, W, 3) uint8."""
    return ActorObservation(to_rgb(snapshot.wrist), to_rgb(snapshot.top), snapshot.keypoints, snapshot.joints,
                            snapshot.instruction)


def build_limits(arm_urdf_limits, safety_config: Mapping[str, Any], max_input_age_s: Mapping[str, float]) -> SafetyLimits:
    """SafetyLimits from the URDF limits and the node's safety parameters."""
    return SafetyLimits.from_config(arm_urdf_limits, {**safety_config, "max_input_age_s": dict(max_input_age_s)})


@dataclass(frozen=True)
class _Limits:
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray


def _none(value):
    return "none" if value is None else value
