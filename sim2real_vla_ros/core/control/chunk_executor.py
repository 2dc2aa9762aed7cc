"""Time-domain execution and splicing of action chunks (pure, ROS-free).

An actor runs inference asynchronously and a control timer (50 Hz by default) executes the
current chunk. :class:`ChunkExecutor` sits between them:

* the inference callback calls :meth:`ChunkExecutor.submit` with each new chunk, the stamp
  of the observation it was computed from and the current time;
* the control timer calls :meth:`ChunkExecutor.setpoint` (stream / vendor modes) or
  :meth:`ChunkExecutor.as_trajectory` (trajectory mode), then passes the result through the
  safety filter; it asks for the next inference early with :meth:`ChunkExecutor.needs_new_chunk`
  so execution never stalls (LeRobot's queue threshold, in time instead of queue length).

Time convention
---------------
A chunk is ``(T, n)`` joint positions at ``dt = 1 / control_rate`` spacing, and **step k is
meant for time ``obs_stamp_s + k * dt``**: step 0 is the action for the instant of the
observation, as in ALOHA/ACT data where action[t] is recorded with observation[t]. Between
steps the chunk is interpolated in time, so a timer tick that comes a little early or late
gets the matching point instead of repeating or skipping a whole step (the jerk a
sample-and-hold would add under jitter). ``interpolation`` chooses how:

* ``'linear'``: straight segments; the velocity changes at every step, so when the chunk is
  coarser than the control loop (25 Hz chunks on a 50 Hz loop) each step is an acceleration
  spike of ``delta v / control dt``;
* ``'pchip'``: SciPy's monotone piecewise cubic Hermite interpolation: the velocity is
  continuous, and between two steps the value stays between them (no overshoot, so a chunk
  inside the joint limits stays inside them).

Before step 0 a chunk gives step 0, after its last step it gives the last step.

Splicing
--------
When a chunk arrives at ``now_s``, the steps whose time has passed are skipped: the number is
*measured* from ``now_s - obs_stamp_s`` (inference + transport delay), never guessed. The seam
between what was being executed and the new chunk is then blended:

* ``'none'``: switch at once (the safety filter still limits velocity and acceleration);
* ``'crossfade'``: ``out(t) = (1 - w) old(t) + w new(t)``, ``w`` rising from 0 at ``now_s`` to 1
  after ``crossfade_steps`` steps, cosine-shaped by default (``w' = 0`` at both ends: no velocity
  step at the seam) or linear. ``old`` is whatever was executing, including an unfinished
  earlier crossfade. With ``max_velocity`` / ``max_acceleration`` given, the crossfade is
  lengthened when the seam jump ``J`` is large, so the blend's own contribution stays within
  them: cosine ``D >= pi J / (2 v_max)`` and ``D >= pi sqrt(J / (2 a_max))`` (linear: velocity only).
* ``'ensemble'``: ACT temporal ensembling. At time ``t`` every chunk that covers ``t`` (from its
  step 0 to its last step) contributes with weight ``exp(-m * i)``, normalised, where **i = 0 is
  the oldest covering chunk** (by observation stamp) and ``m = ensemble_decay`` (0.01 as in ACT,
  where older predictions weigh slightly more; a negative ``m`` favours new chunks).

Each accepted splice is described by a :class:`SpliceReport` with the seam jump and the largest
velocity / acceleration of the executor's output over the seam (per joint, in the chunk's units
per s and per s^2), sampled on the control grid from two steps before the splice to two steps
after the blend.

Chunks are dropped (reported, counted, never raised) when they are non-finite, badly shaped,
entirely in the past (no step after ``now_s``), not newer than the executing chunk (a late
arrival must not replace a newer plan) or stamped further in the future than ``max_stamp_lead_s``.
If the clock goes back (``now_s`` more than one step before the executing chunk's arrival, as
after a simulator reset), the old plan is forgotten (counted) and the new chunk starts afresh.

Threads: one lock guards the plan; ``submit`` (inference thread) and ``setpoint`` (control
timer) may run concurrently. Plans are immutable, so a setpoint
is computed outside the lock from a consistent snapshot.
"""
from __future__ import annotations

import functools
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy.interpolate import PchipInterpolator

BLEND_MODES = ("none", "crossfade", "ensemble")
INTERPOLATIONS = ("linear", "pchip")
CROSSFADE_SHAPES = ("cosine", "linear")

DROP_BAD_SHAPE = "bad_shape"
DROP_NON_FINITE = "non_finite"
DROP_BAD_STAMP = "bad_stamp"
DROP_IN_PAST = "in_past"
DROP_NOT_NEWER = "not_newer"
DROP_FUTURE_STAMP = "future_stamp"
DROP_REASONS = (DROP_BAD_SHAPE, DROP_NON_FINITE, DROP_BAD_STAMP, DROP_IN_PAST, DROP_NOT_NEWER, DROP_FUTURE_STAMP)

_STEP_EPS = 1e-6  # fraction of a step: 0.1 / 0.02 must read as 5 steps, not 4.999999
_SEAM_STEPS_BEFORE = 2
_SEAM_STEPS_AFTER = 2
_MAX_ENSEMBLE_CHUNKS = 64


@dataclass(frozen=True, eq=False)
class Chunk:
    """One accepted chunk: positions (T, n), read-only, with step k at ``obs_stamp_s + k dt``."""

    chunk_id: int
    positions: np.ndarray
    obs_stamp_s: float
    dt: float
    received_s: float
    interpolation: str = "linear"

    @property
    def num_steps(self) -> int:
        """T."""
        return int(self.positions.shape[0])

    @property
    def end_s(self) -> float:
        """Time of the last step."""
        return self.obs_stamp_s + (self.num_steps - 1) * self.dt

    def step_position(self, time_s: float) -> float:
        """Fractional step index at ``time_s`` (negative before step 0)."""
        return (time_s - self.obs_stamp_s) / self.dt

    def covers(self, time_s: float) -> bool:
        """True from step 0 to the last step (inclusive, within rounding)."""
        position = self.step_position(time_s)
        return -_STEP_EPS <= position <= self.num_steps - 1 + _STEP_EPS

    def sample(self, time_s: float) -> np.ndarray:
        """Position at ``time_s``: interpolated between steps, clamped to the first/last step."""
        position = min(max(self.step_position(time_s), 0.0), self.num_steps - 1.0)
        lower = min(int(math.floor(position + _STEP_EPS)), self.num_steps - 1)
        fraction = position - lower
        if fraction <= _STEP_EPS or lower == self.num_steps - 1:
            return self.positions[lower].copy()
        if self.interpolation == "pchip":
            return np.asarray(self._pchip(position), dtype=float)
        return (1.0 - fraction) * self.positions[lower] + fraction * self.positions[lower + 1]

    @functools.cached_property
    def _pchip(self) -> PchipInterpolator:
        """The chunk as a function of the fractional step index (built once, on first use)."""
        return PchipInterpolator(np.arange(self.num_steps, dtype=float), self.positions, axis=0)


def crossfade_weight(progress: float, shape: str) -> float:
    """Weight of the new chunk at blend progress in [0, 1] (clamped): linear or cosine."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return progress
    return 0.5 - 0.5 * math.cos(math.pi * progress)


@dataclass(frozen=True, eq=False)
class _Crossfade:
    """Blend from an earlier plan to a new chunk over ``[start_s, start_s + duration_s]``."""

    old: "Plan"
    new: Chunk
    start_s: float
    duration_s: float
    shape: str

    @property
    def newest(self) -> Chunk:
        return self.new

    def evaluate(self, time_s: float) -> np.ndarray:
        if self.duration_s <= 0.0 or time_s >= self.start_s + self.duration_s:
            return self.new.sample(time_s)
        weight = crossfade_weight((time_s - self.start_s) / self.duration_s, self.shape)
        if weight <= 0.0:
            return self.old.evaluate(time_s)
        return (1.0 - weight) * self.old.evaluate(time_s) + weight * self.new.sample(time_s)

    def pruned(self, now_s: float) -> "Plan":
        """The same plan without the parts that can no longer affect times >= now_s."""
        if self.duration_s <= 0.0 or now_s >= self.start_s + self.duration_s:
            return _ChunkPlan(self.new)
        return _Crossfade(self.old.pruned(now_s), self.new, self.start_s, self.duration_s, self.shape)


@dataclass(frozen=True, eq=False)
class _ChunkPlan:
    """A single chunk executed as is ('none' mode, or a finished crossfade)."""

    chunk: Chunk

    @property
    def newest(self) -> Chunk:
        return self.chunk

    def evaluate(self, time_s: float) -> np.ndarray:
        return self.chunk.sample(time_s)

    def pruned(self, now_s: float) -> "Plan":
        return self


@dataclass(frozen=True, eq=False)
class _Ensemble:
    """ACT temporal ensembling over chunks ordered oldest first."""

    chunks: tuple[Chunk, ...]
    decay: float

    @property
    def newest(self) -> Chunk:
        return self.chunks[-1]

    def evaluate(self, time_s: float) -> np.ndarray:
        covering = [chunk for chunk in self.chunks if chunk.covers(time_s)]
        if not covering:
            # Before every chunk or after all of them: the newest plan's clamped value.
            latest = max(self.chunks, key=lambda chunk: (chunk.end_s, chunk.obs_stamp_s))
            return latest.sample(time_s)
        weights = np.exp(-self.decay * np.arange(len(covering)))
        samples = np.stack([chunk.sample(time_s) for chunk in covering])
        return weights @ samples / weights.sum()

    def pruned(self, now_s: float) -> "Plan":
        kept = [chunk for chunk in self.chunks[:-1] if chunk.end_s >= now_s] + [self.chunks[-1]]
        return _Ensemble(tuple(kept[-_MAX_ENSEMBLE_CHUNKS:]), self.decay)


Plan = Union[_ChunkPlan, _Crossfade, _Ensemble]


@dataclass(frozen=True, eq=False)
class SpliceReport:
    """What :meth:`ChunkExecutor.submit` did with a chunk.

    Attributes
    ----------
    dropped : bool
        True when the chunk was not used; ``reason`` is then one of :data:`DROP_REASONS`.
    reason, detail : str
        Short code for counters and a human message (empty when accepted).
    chunk_id : int or None
        Id given to the accepted chunk (None when dropped).
    elapsed_s : float
        Measured ``now_s - obs_stamp_s`` (NaN when the stamps were unusable).
    skipped_steps : int
        Steps before the one executing now: ``floor(elapsed_s / dt)`` (0 if negative).
    remaining : int
        Steps of the new chunk strictly after ``now_s``.
    seam_jump : np.ndarray or None
        ``|new(now) - previous output(now)|`` per joint: what an unblended switch would jump.
        None for the first chunk (nothing to splice onto) or when dropped.
    seam_velocity, seam_acceleration : np.ndarray or None
        Largest ``|v|`` and ``|a|`` per joint of the blended output over the seam window.
    blend_steps : int
        Crossfade length actually used (0 for 'none' and 'ensemble').
    """

    dropped: bool
    reason: str = ""
    detail: str = ""
    chunk_id: int | None = None
    elapsed_s: float = math.nan
    skipped_steps: int = 0
    remaining: int = 0
    seam_jump: np.ndarray | None = None
    seam_velocity: np.ndarray | None = None
    seam_acceleration: np.ndarray | None = None
    blend_steps: int = 0

    def as_dict(self) -> dict:
        """JSON-friendly form for run reports."""
        def listed(array: np.ndarray | None) -> list[float] | None:
            return None if array is None else [float(x) for x in array]

        return {
            "dropped": self.dropped,
            "reason": self.reason,
            "detail": self.detail,
            "chunk_id": self.chunk_id,
            "elapsed_s": None if math.isnan(self.elapsed_s) else self.elapsed_s,
            "skipped_steps": self.skipped_steps,
            "remaining": self.remaining,
            "seam_jump": listed(self.seam_jump),
            "seam_velocity": listed(self.seam_velocity),
            "seam_acceleration": listed(self.seam_acceleration),
            "blend_steps": self.blend_steps,
        }


@dataclass(frozen=True, eq=False)
class Setpoint:
    """The executor's output at one time.

    Attributes
    ----------
    positions : np.ndarray or None
        (n,) positions; None before the first chunk.
    fresh : bool
        False when there is no chunk or the newest chunk has run out (its last point is held):
        a tick without a fresh setpoint.
    chunk_id, step_index : int or None
        Newest chunk and the step of it executing now (floor, clamped to ``[0, T-1]``).
    """

    positions: np.ndarray | None
    fresh: bool
    chunk_id: int | None
    step_index: int | None


def _remaining_after(chunk: Chunk, now_s: float) -> int:
    """Steps k of ``chunk`` with ``obs_stamp + k dt > now_s``."""
    position = chunk.step_position(now_s)
    first_future = int(math.floor(position + _STEP_EPS)) + 1
    return int(chunk.num_steps - min(max(first_future, 0), chunk.num_steps))


class ChunkExecutor:
    """Executes action chunks in the time domain and splices new ones in (thread-safe).

    Parameters
    ----------
    dt : float
        Control period (s) = chunk step spacing, e.g. 0.02 at 50 Hz.
    blend : {'none', 'crossfade', 'ensemble'}
    crossfade_steps : int
        Minimum crossfade length in steps ('crossfade' only).
    ensemble_decay : float
        ``m`` in ACT's ``exp(-m i)`` ('ensemble' only).
    max_velocity, max_acceleration : float or array_like, optional
        Per joint; lengthen a crossfade whose seam jump would need more (see module docstring).
    num_joints : int
        Columns of a chunk (7 for one arm).
    crossfade_shape : {'cosine', 'linear'}
    interpolation : {'linear', 'pchip'}
        Between a chunk's steps (see the module docstring).
    max_stamp_lead_s : float
        How far an observation stamp may lie ahead of ``now_s`` (clock skew) before the
        chunk is dropped.
    history : int
        Accepted splice reports kept for :meth:`splices`.

    Raises
    ------
    ValueError
        On any invalid parameter, naming it.
    """

    def __init__(
        self,
        dt: float,
        blend: str = "crossfade",
        crossfade_steps: int = 5,
        ensemble_decay: float = 0.01,
        max_velocity: float | np.ndarray | None = None,
        max_acceleration: float | np.ndarray | None = None,
        num_joints: int = 7,
        crossfade_shape: str = "cosine",
        interpolation: str = "linear",
        max_stamp_lead_s: float = 0.05,
        history: int = 1000,
    ) -> None:
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"ChunkExecutor: dt must be finite and > 0, got {dt!r}")
        if blend not in BLEND_MODES:
            raise ValueError(f"ChunkExecutor: blend must be one of {BLEND_MODES}, got {blend!r}")
        if crossfade_shape not in CROSSFADE_SHAPES:
            raise ValueError(
                f"ChunkExecutor: crossfade_shape must be one of {CROSSFADE_SHAPES}, got {crossfade_shape!r}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"ChunkExecutor: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if int(crossfade_steps) != crossfade_steps or crossfade_steps < 0:
            raise ValueError(f"ChunkExecutor: crossfade_steps must be an integer >= 0, got {crossfade_steps!r}")
        if not math.isfinite(ensemble_decay):
            raise ValueError(f"ChunkExecutor: ensemble_decay must be finite, got {ensemble_decay!r}")
        if int(num_joints) != num_joints or num_joints < 1:
            raise ValueError(f"ChunkExecutor: num_joints must be an integer >= 1, got {num_joints!r}")
        if not (math.isfinite(max_stamp_lead_s) and max_stamp_lead_s >= 0):
            raise ValueError(f"ChunkExecutor: max_stamp_lead_s must be finite and >= 0, got {max_stamp_lead_s!r}")
        self.dt = float(dt)
        self.blend = blend
        self.crossfade_steps = int(crossfade_steps)
        self.crossfade_shape = crossfade_shape
        self.interpolation = interpolation
        self.ensemble_decay = float(ensemble_decay)
        self.num_joints = int(num_joints)
        self.max_stamp_lead_s = float(max_stamp_lead_s)
        self.max_velocity = self._optional_limit("max_velocity", max_velocity)
        self.max_acceleration = self._optional_limit("max_acceleration", max_acceleration)
        self._lock = threading.Lock()
        # submit() counts while holding self._lock: the counts get their own lock (no re-entry).
        self._counts_lock = threading.Lock()
        self._plan: Plan | None = None
        self._next_id = 0
        self._splices: deque[SpliceReport] = deque(maxlen=int(history))
        self._counts: dict[str, int] = {
            "accepted": 0,
            "clock_jumped_back": 0,
            **{f"dropped:{reason}": 0 for reason in DROP_REASONS},
        }

    def _optional_limit(self, name: str, value: float | np.ndarray | None) -> np.ndarray | None:
        if value is None:
            return None
        array = np.broadcast_to(np.asarray(value, dtype=float), (self.num_joints,)).copy()
        if not np.all(np.isfinite(array) & (array > 0)):
            raise ValueError(f"ChunkExecutor: {name} must be finite and > 0 per joint, got {array.tolist()}")
        return array

    # ------------------------------------------------------------------ inference side

    def submit(self, chunk: np.ndarray, obs_stamp_s: float, now_s: float) -> SpliceReport:
        """Splice a new chunk in at ``now_s`` (called from the inference callback).

        Parameters
        ----------
        chunk : array_like (T, n)
            Joint positions, step k for ``obs_stamp_s + k dt``.
        obs_stamp_s : float
            Stamp of the observation the chunk was computed from.
        now_s : float
            Current time, same clock.

        Returns
        -------
        SpliceReport
            Never raises on bad data: a bad chunk is dropped with a reason and counted.
        """
        positions, problem = self._validated(chunk, obs_stamp_s, now_s)
        if problem is not None:
            return self._count(SpliceReport(True, *problem))
        elapsed = now_s - obs_stamp_s
        with self._lock:
            old_plan = self._plan
            newest = None if old_plan is None else old_plan.newest
            if newest is not None and now_s + self.dt < newest.received_s:
                # The clock went back (a simulator reset under use_sim_time): the old plan's
                # times mean nothing now, and keeping it would drop every new chunk as not newer.
                self._counts["clock_jumped_back"] += 1
                old_plan = newest = self._plan = None
            if newest is not None and obs_stamp_s <= newest.obs_stamp_s:
                detail = (
                    f"observation {obs_stamp_s:.6f} s is not newer than the executing chunk's "
                    f"{newest.obs_stamp_s:.6f} s"
                )
                return self._count(SpliceReport(True, DROP_NOT_NEWER, detail, elapsed_s=elapsed))
            chunk_obj = Chunk(self._next_id, positions, float(obs_stamp_s), self.dt, float(now_s), self.interpolation)
            remaining = _remaining_after(chunk_obj, now_s)
            if remaining == 0:
                duration = (chunk_obj.num_steps - 1) * self.dt
                detail = f"elapsed {elapsed:.4f} s since the observation >= chunk span {duration:.4f} s"
                return self._count(SpliceReport(True, DROP_IN_PAST, detail, elapsed_s=elapsed))
            self._next_id += 1
            new_plan, blend_steps = self._spliced(old_plan, chunk_obj, now_s)
            self._plan = new_plan
            report = SpliceReport(
                False,
                chunk_id=chunk_obj.chunk_id,
                elapsed_s=elapsed,
                skipped_steps=max(0, int(math.floor(elapsed / self.dt + _STEP_EPS))),
                remaining=remaining,
                blend_steps=blend_steps,
                **self._seam_metrics(old_plan, new_plan, chunk_obj, now_s, blend_steps),
            )
            self._splices.append(report)
            return self._count(report)

    def _validated(
        self, chunk: object, obs_stamp_s: float, now_s: float
    ) -> tuple[np.ndarray | None, tuple[str, str] | None]:
        """The chunk as a read-only float array, or None and (drop reason, detail)."""
        try:
            positions = np.array(chunk, dtype=float)
        except (TypeError, ValueError) as error:
            return None, (DROP_BAD_SHAPE, f"chunk is not numeric: {error}")
        if positions.ndim != 2 or positions.shape[0] < 1 or positions.shape[1] != self.num_joints:
            return None, (DROP_BAD_SHAPE, f"chunk shape {positions.shape}, expected (T >= 1, {self.num_joints})")
        if not np.all(np.isfinite(positions)):
            bad = np.argwhere(~np.isfinite(positions))[:3].tolist()
            return None, (DROP_NON_FINITE, f"chunk has NaN/Inf at (step, joint) {bad}...")
        try:
            stamps_ok = math.isfinite(obs_stamp_s) and math.isfinite(now_s)
        except TypeError:
            stamps_ok = False
        if not stamps_ok:
            return None, (DROP_BAD_STAMP, f"obs_stamp_s={obs_stamp_s!r}, now_s={now_s!r} must be finite numbers")
        if obs_stamp_s - now_s > self.max_stamp_lead_s:
            lead = obs_stamp_s - now_s
            detail = f"observation stamp {lead:.4f} s ahead of now (> {self.max_stamp_lead_s} s): clocks disagree"
            return None, (DROP_FUTURE_STAMP, detail)
        positions.setflags(write=False)
        return positions, None

    def _spliced(self, old_plan: Plan | None, chunk: Chunk, now_s: float) -> tuple[Plan, int]:
        """The plan after splicing ``chunk`` in at ``now_s``, and the crossfade steps used."""
        if old_plan is None or self.blend == "none":
            return _ChunkPlan(chunk), 0
        old_plan = old_plan.pruned(now_s)
        if self.blend == "ensemble":
            chunks = old_plan.chunks if isinstance(old_plan, _Ensemble) else (old_plan.newest,)
            return _Ensemble(chunks + (chunk,), self.ensemble_decay).pruned(now_s), 0
        steps = self._crossfade_steps_for(np.abs(chunk.sample(now_s) - old_plan.evaluate(now_s)))
        if steps == 0:
            return _ChunkPlan(chunk), 0
        return _Crossfade(old_plan, chunk, float(now_s), steps * self.dt, self.crossfade_shape), steps

    def _crossfade_steps_for(self, jump: np.ndarray) -> int:
        """Configured crossfade length, lengthened so the blend term respects the limits."""
        duration = self.crossfade_steps * self.dt
        if self.max_velocity is not None:
            # Peak of J * w'(t): pi J / (2 D) for cosine, J / D for linear.
            factor = math.pi / 2 if self.crossfade_shape == "cosine" else 1.0
            duration = max(duration, float(np.max(factor * jump / self.max_velocity)))
        if self.max_acceleration is not None and self.crossfade_shape == "cosine":
            # Peak of J * w''(t) = pi^2 J / (2 D^2).
            duration = max(duration, float(np.max(math.pi * np.sqrt(jump / (2.0 * self.max_acceleration)))))
        return int(math.ceil(duration / self.dt - _STEP_EPS))

    def _seam_metrics(
        self, old_plan: Plan | None, new_plan: Plan, chunk: Chunk, now_s: float, blend_steps: int
    ) -> dict:
        """Seam jump (unblended) and the blended output's peak |v|, |a| around the splice."""
        if old_plan is None:
            return {}
        before = [old_plan.evaluate(now_s + k * self.dt) for k in range(-_SEAM_STEPS_BEFORE, 0)]
        after_steps = max(blend_steps, 1) + _SEAM_STEPS_AFTER
        after = [new_plan.evaluate(now_s + k * self.dt) for k in range(0, after_steps + 1)]
        samples = np.stack(before + after)
        velocity = np.diff(samples, axis=0) / self.dt
        acceleration = np.diff(velocity, axis=0) / self.dt
        return {
            "seam_jump": np.abs(chunk.sample(now_s) - old_plan.evaluate(now_s)),
            "seam_velocity": np.max(np.abs(velocity), axis=0),
            "seam_acceleration": np.max(np.abs(acceleration), axis=0),
        }

    def _count(self, report: SpliceReport) -> SpliceReport:
        key = f"dropped:{report.reason}" if report.dropped else "accepted"
        with self._counts_lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        return report

    # ------------------------------------------------------------------ control side

    def setpoint(self, now_s: float) -> Setpoint:
        """The position to command at ``now_s`` (called from the control timer)."""
        with self._lock:
            plan = self._plan
        if plan is None:
            return Setpoint(None, False, None, None)
        newest = plan.newest
        step = min(max(int(math.floor(newest.step_position(now_s) + _STEP_EPS)), 0), newest.num_steps - 1)
        fresh = newest.step_position(now_s) <= newest.num_steps - 1 + _STEP_EPS
        return Setpoint(plan.evaluate(now_s), fresh, newest.chunk_id, step)

    def remaining_steps(self, now_s: float) -> int:
        """Steps of the newest chunk strictly after ``now_s`` (0 without a chunk)."""
        with self._lock:
            plan = self._plan
        return 0 if plan is None else _remaining_after(plan.newest, now_s)

    def needs_new_chunk(self, now_s: float, threshold_steps: int) -> bool:
        """True when inference should start now: no chunk, or at most ``threshold_steps`` left.

        Choose ``threshold_steps`` >= the expected inference delay in steps (plus a margin),
        so the next chunk arrives before this one runs out and execution never stalls; the
        actor must itself avoid starting a second inference while one is in flight.
        """
        if threshold_steps < 0:
            raise ValueError(f"ChunkExecutor.needs_new_chunk: threshold_steps must be >= 0, got {threshold_steps}")
        with self._lock:
            plan = self._plan
        return plan is None or _remaining_after(plan.newest, now_s) <= threshold_steps

    def as_trajectory(
        self, now_s: float, horizon: int | None = None, include_now: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rest of the plan on the control grid, relative to ``now_s`` (trajectory mode).

        Points are the executor's own (blended) output at ``now_s + k dt`` for ``k = 1, 2, ...``
        (``k = 0`` too with ``include_now``) up to the newest chunk's last step, at most
        ``horizon`` points. Resampling on the control grid makes trajectory mode execute exactly
        what stream mode would, and lets :meth:`SafetyFilter.preview` check it with the same ``dt``.

        Returns
        -------
        times_from_now : np.ndarray (m,)
            Seconds after ``now_s`` (``time_from_start`` for a message stamped ``now_s``).
        positions : np.ndarray (m, n)
        """
        with self._lock:
            plan = self._plan
        if plan is None:
            return np.empty(0), np.empty((0, self.num_joints))
        first = 0 if include_now else 1
        last = int(math.floor((plan.newest.end_s - now_s) / self.dt + _STEP_EPS))
        if horizon is not None:
            last = min(last, first + int(horizon) - 1)
        steps = np.arange(first, last + 1)
        if steps.size == 0:
            return np.empty(0), np.empty((0, self.num_joints))
        times = steps * self.dt
        return times, np.stack([plan.evaluate(now_s + t) for t in times])

    # ------------------------------------------------------------------ diagnostics

    def splices(self) -> list[SpliceReport]:
        """Accepted splice reports, oldest first (bounded by ``history``)."""
        with self._lock:
            return list(self._splices)

    def counters(self) -> dict[str, int]:
        """``accepted``, ``dropped:<reason>`` and ``clock_jumped_back`` counts."""
        with self._counts_lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget every chunk (new episode); the next chunk starts without a seam."""
        with self._lock:
            self._plan = None


class TickStats:
    """Control-loop statistics from the actual tick times: jitter and ticks without a fresh setpoint.

    Parameters
    ----------
    nominal_dt : float
        The timer period (s).
    max_samples : int
        Intervals kept for the percentiles (the most recent ones).
    """

    def __init__(self, nominal_dt: float, max_samples: int = 100_000) -> None:
        if not (math.isfinite(nominal_dt) and nominal_dt > 0):
            raise ValueError(f"TickStats: nominal_dt must be finite and > 0, got {nominal_dt!r}")
        self.nominal_dt = float(nominal_dt)
        self._intervals: deque[float] = deque(maxlen=int(max_samples))
        self._last_tick_s: float | None = None
        self._lock = threading.Lock()
        self.ticks = 0
        self.ticks_without_fresh = 0
        self.longest_stale_streak = 0
        self.clock_jumps = 0  # non-increasing tick times (sim reset): no interval recorded
        self._streak = 0

    def record(self, tick_s: float, fresh: bool) -> None:
        """Record one control tick at time ``tick_s`` and whether its setpoint was fresh."""
        with self._lock:
            self.ticks += 1
            if fresh:
                self._streak = 0
            else:
                self.ticks_without_fresh += 1
                self._streak += 1
                self.longest_stale_streak = max(self.longest_stale_streak, self._streak)
            if self._last_tick_s is not None:
                if tick_s > self._last_tick_s:
                    self._intervals.append(tick_s - self._last_tick_s)
                else:
                    self.clock_jumps += 1
            self._last_tick_s = tick_s

    def summary(self) -> dict[str, float | int | None]:
        """Counts, mean period and jitter ``|interval - nominal_dt|`` p50 / p99 / max in ms."""
        with self._lock:
            intervals = np.asarray(self._intervals, dtype=float)
            summary: dict[str, float | int | None] = {
                "ticks": self.ticks,
                "ticks_without_fresh_setpoint": self.ticks_without_fresh,
                "longest_stale_streak": self.longest_stale_streak,
                "clock_jumps": self.clock_jumps,
                "nominal_period_ms": 1e3 * self.nominal_dt,
            }
        if intervals.size == 0:
            summary.update(mean_period_ms=None, jitter_p50_ms=None, jitter_p99_ms=None, jitter_max_ms=None)
            return summary
        jitter = np.abs(intervals - self.nominal_dt) * 1e3
        summary.update(
            mean_period_ms=float(intervals.mean() * 1e3),
            jitter_p50_ms=float(np.percentile(jitter, 50)),
            jitter_p99_ms=float(np.percentile(jitter, 99)),
            jitter_max_ms=float(jitter.max()),
        )
        return summary
