"""Safety filter in front of every joint command an actor publishes (pure, ROS-free).

One :class:`SafetyFilter` per arm. The actor calls :meth:`SafetyFilter.filter` once per
control tick with the executor's setpoint (the *candidate*), the measured joint state, the
current time and the stamps of every input; it publishes the returned
:attr:`SafetyDecision.command` and nothing else. Time is always an argument (``now_s``,
``dt``): the filter never reads a clock, so it works the same under ``use_sim_time``, and a
clock that jumps (a replayed ``/clock``, a system clock step) changes input ages, never the
size of a step.

The measured state is *advice*, never a command: it seeds the very first command, decides
whether the arm follows (tracking error) and how fast to approach a far candidate
(deviation ramp), but no rule moves the command to a reading. Readings should pass a
:class:`~sim2real_vla_ros.core.control.joint_reading.JointReadingValidator` first; the filter
still treats a reading far outside the limits as absent (rule 2).

Rules, in the order they are applied each tick
----------------------------------------------
1. **First tick.** With no previous command the filter starts from the measured state
   (clipped into the position limits, velocity zero), or from :meth:`SafetyFilter.seed`.
   Until a usable measured state has been seen there is nothing safe to send:
   ``command is None``.
2. **Hold reasons** (any one holds): e-stop; candidate missing (``None``), with or without a
   fault such as a failed FAST decode (``candidate_fault``); candidate NaN/Inf or of the wrong
   size; measured state missing, NaN, or implausible (further outside the position limits
   than ``max_deviation_from_measured``: no arm can be there, so the reading is not used at
   all, not even clipped); an input older than its maximum age, never received, or stamped
   further in the future than its maximum age (clocks that disagree), each named.
3. **E-stop holds immediately**: the command is the last sent setpoint in the same tick
   (the *e-stop freeze*). This is the one rule allowed to exceed ``max_acceleration`` (by at
   most ``|v| / dt``): an e-stop must hold *within one control tick*, while braking
   at ``max_acceleration`` would take ``v / a`` seconds (0.25 s from 5 rad/s at 20 rad/s^2).
   Positions and velocities stay within limits, and the arm's own controller absorbs the step.
4. **Tracking error holds** (the arm is blocked, collided or not following): when the last
   command is further from a fresh measured state than ``max_tracking_error`` plus the
   distance the commanded velocity covers within the joint state's maximum age, the filter
   holds like rule 5, decelerating from the *current command*; it never steps the command to
   the reading (a corrupt reading would otherwise be a command jump of up to the whole joint
   range). The hold lasts while the error does. The gripper finger's default is larger than
   its travel: a grasped object blocks the fingers by design.
5. **Every other hold is the controlled stop**: the command decelerates at
   ``max_acceleration`` from the last command to rest (closest admissible velocity to zero
   each tick, which also brakes for the position limits), so a stale camera or a blocked
   arm never jerks it. While at rest this is exactly "hold the last sent setpoint".
6. **Position limits**: the candidate is clipped into ``[lower, upper]`` (counted, joints named).
7. **Deviation from the measured state**: if any joint of the (clipped) candidate is further
   than ``max_deviation_from_measured`` from the measured state, the filter does not jump:
   it moves the last command toward the candidate along a straight line in joint space at
   ``ramp_velocity`` (the slowest joint sets the pace, so the direction is kept).
8. **Velocity and acceleration limits** per joint, relative to the last two sent commands:
   ``|q[k] - q[k-1]| / dt <= max_velocity`` and ``|q[k] - 2 q[k-1] + q[k-2]| / dt^2 <=
   max_acceleration``. The admissible velocity interval also brakes for the position limits
   (``v <= -a dt + sqrt((a dt)^2 + 2 a (upper - q))``), so a joint moving toward a limit can
   always stop before it without ever exceeding ``max_acceleration``; the interval can never
   become empty (proved in :func:`admissible_velocity`). A feasible candidate passes through
   unchanged; an infeasible one (a big step) is tracked with a trapezoidal profile that brakes
   to arrive at it instead of overshooting.
9. **Last-line invariant check** (:func:`command_violations`), on every command before it is
   returned, and on every point :meth:`SafetyFilter.preview` returns: finite; inside
   ``[lower, upper]``; ``|q[k] - q[k-1]| <= max_velocity dt (1 + INVARIANT_RELATIVE_TOLERANCE)
   + INVARIANT_ABSOLUTE_TOLERANCE``; ``|q[k] - 2 q[k-1] + q[k-2]| <= max_acceleration dt^2
   (1 + INVARIANT_RELATIVE_TOLERANCE) + INVARIANT_ABSOLUTE_TOLERANCE`` except for a stop
   freeze (below). A violating command is not returned: the controlled stop from the last
   command is sent instead (or, should that fail the check too, the freeze), the decision is
   held, and ``invariant_violation:<what>`` is counted. Rules 1-8 never produce a violation;
   the check is there for the bug nobody has found yet.

Stop profiles (IEC 60204-1 stop categories)
-------------------------------------------
Both are **category 2** stops as far as this filter is concerned: power stays on and the
arm's joint controllers hold the final setpoint. Category 0/1 (removing power) belongs to
the robot's hardware e-stop, which this software cannot replace.

* *Controlled stop* (rules 4, 5, 9): decelerate at ``max_acceleration`` to rest from the
  current command; every step obeys the velocity and acceleration limits, and the hold
  target is where that profile comes to rest (at most ``v^2 / (2 a) + v dt`` from the command
  that was current when the stop began).
* *Freeze* (rule 3, and rule 9's last resort): the command stays at the last sent setpoint
  from this tick on. The only documented exception to the acceleration limit: in the freeze
  tick ``|q[k] - 2 q[k-1] + q[k-2]| = |q[k-1] - q[k-2]| <= max_velocity dt``.

Guarantee: every command returned is finite and inside ``[lower, upper]``; between
consecutive commands of one filter the step never exceeds ``max_velocity * dt`` (with the
tolerances above), and the acceleration never exceeds ``max_acceleration``, except in a
freeze tick. ``dt`` must be the *nominal* control period and the filter called once per
period: the step bound is per call, so the caller's timer defines the elapsed time.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

NUM_ARM_JOINTS = 7
"""Per-arm vector: joints 1-6 (rad) + joint7, one gripper finger (m)."""

DEFAULT_MAX_INPUT_AGE_S: dict[str, float] = {
    "cam_high": 0.5,
    "wrist": 0.5,
    "joint_state": 0.1,
    # The planner publishes an affordance once, when it becomes current, so its stamp ages
    # through the whole step; the limit sits above the validator's step_timeout_s (20 s).
    "affordance": 30.0,
}
"""Default maximum input ages (s)."""

# Defaults for from_config, per joint: six revolute joints (rad) then the gripper finger (m).
DEFAULT_MAX_ACCELERATION = (8.0,) * 6 + (0.5,)
"""rad/s^2 for joints 1-6, m/s^2 for the finger."""
DEFAULT_MAX_DEVIATION = (0.5,) * 6 + (0.02,)
"""rad / m. 0.5 rad is the jump above which AgileX's own deployment ramps slowly."""
DEFAULT_RAMP_VELOCITY = (0.25,) * 6 + (0.01,)
"""rad/s / m/s: the slow approach used for large deviations."""
DEFAULT_MAX_TRACKING_ERROR = (0.35,) * 6 + (1.0,)
"""rad / m: command - measured beyond this (plus velocity x joint-state age) holds (a controlled
stop from the current command). The finger's 1 m exceeds its travel: grasping blocks the
fingers by design."""

_LIMIT_TOLERANCE = 1e-12  # floating-point slack when comparing velocity bounds

INVARIANT_RELATIVE_TOLERANCE = 1e-6
"""Relative slack of the last-line check on the velocity and acceleration limits. The rules
compute steps that meet the limits exactly; this only absorbs floating-point round-off."""
INVARIANT_ABSOLUTE_TOLERANCE = 1e-9
"""Absolute slack (rad / m) of the last-line check, per joint: far below any encoder's
resolution, so a real violation is never hidden by it."""


class SafetyEventKind(str, Enum):
    """Why the filter held or changed a candidate (a string enum: usable as a counter key)."""

    NO_MEASURED_STATE = "no_measured_state"
    """No finite measured state this tick (or ever, on the first tick)."""
    ESTOP = "estop"
    NO_CANDIDATE = "no_candidate"
    """The executor had no setpoint (no chunk yet)."""
    CANDIDATE_FAULT = "candidate_fault"
    """No candidate because producing it failed (a failed FAST decode, an inference error)."""
    NON_FINITE_CANDIDATE = "non_finite_candidate"
    BAD_CANDIDATE_SHAPE = "bad_candidate_shape"
    STALE_INPUT = "stale_input"
    POSITION_CLIPPED = "position_clipped"
    DEVIATION_RAMP = "deviation_ramp"
    VELOCITY_LIMITED = "velocity_limited"
    ACCELERATION_LIMITED = "acceleration_limited"
    LIMIT_BRAKING = "limit_braking"
    """Slowed down to be able to stop before a position limit."""
    TRACKING_ERROR = "tracking_error"
    """The arm is not following the commands (blocked, collided): a controlled stop from the
    current command (never a step to the reading)."""
    IMPLAUSIBLE_MEASURED_STATE = "implausible_measured_state"
    """The measured state lies further outside the position limits than
    ``max_deviation_from_measured``: not used (holds like a missing one)."""
    INVARIANT_VIOLATION = "invariant_violation"
    """The last-line check caught a command that broke a limit (``detail``: ``non_finite``,
    ``position``, ``velocity`` or ``acceleration``); it was not sent."""


HOLD_KINDS = frozenset(
    {
        SafetyEventKind.NO_MEASURED_STATE,
        SafetyEventKind.ESTOP,
        SafetyEventKind.NO_CANDIDATE,
        SafetyEventKind.CANDIDATE_FAULT,
        SafetyEventKind.NON_FINITE_CANDIDATE,
        SafetyEventKind.BAD_CANDIDATE_SHAPE,
        SafetyEventKind.STALE_INPUT,
        SafetyEventKind.TRACKING_ERROR,
        SafetyEventKind.IMPLAUSIBLE_MEASURED_STATE,
        SafetyEventKind.INVARIANT_VIOLATION,
    }
)
"""Event kinds that make the filter hold (or decelerate to a hold) instead of tracking."""


@dataclass(frozen=True)
class SafetyEvent:
    """One reason the filter held or changed the candidate in a tick.

    Attributes
    ----------
    kind : SafetyEventKind
    detail : str
        Which input, fault or message, e.g. ``'cam_high'`` for a stale camera or the decode
        failure for a candidate fault; empty when the kind says it all.
    joints : tuple of int
        Joint indices concerned (clipping, ramp, rate limits); empty otherwise.
    """

    kind: SafetyEventKind
    detail: str = ""
    joints: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """Counter key: ``kind`` or ``kind:detail`` (e.g. ``'stale_input:cam_high'``)."""
        return f"{self.kind.value}:{self.detail}" if self.detail else self.kind.value


class SafetyCounters(Mapping[str, int]):
    """Counts of safety events by :attr:`SafetyEvent.key`, plus tick totals (thread-safe reads).

    Each key is counted at most once per tick. ``ticks`` counts calls to the filter and
    ``held_ticks`` those that held (including e-stop).
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.ticks = 0
        self.held_ticks = 0

    def record(self, events: Sequence[SafetyEvent], held: bool) -> None:
        """Count one tick's events (each distinct key once)."""
        with self._lock:
            self.ticks += 1
            self.held_ticks += int(held)
            for key in {event.key for event in events}:
                self._counts[key] = self._counts.get(key, 0) + 1

    def count(self, events: Sequence[SafetyEvent]) -> None:
        """Count events that do not belong to a tick (e.g. a violation caught in a preview)."""
        with self._lock:
            for key in {event.key for event in events}:
                self._counts[key] = self._counts.get(key, 0) + 1

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._counts))

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)

    def count_kind(self, kind: SafetyEventKind) -> int:
        """Sum over every key of this kind (e.g. all stale inputs together)."""
        with self._lock:
            return sum(n for key, n in self._counts.items() if key.split(":", 1)[0] == kind.value)

    def as_dict(self) -> dict[str, int]:
        """Snapshot for diagnostics / JSON: ``ticks``, ``held_ticks`` and every event key."""
        with self._lock:
            snapshot = {"ticks": self.ticks, "held_ticks": self.held_ticks}
            snapshot.update(sorted(self._counts.items()))
            return snapshot


def _per_joint(name: str, value: object, size: int, *, positive: bool) -> np.ndarray:
    """A read-only (size,) float vector from a scalar or a sequence, validated."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        array = np.full(size, float(array))
    if array.shape != (size,):
        raise ValueError(f"SafetyLimits: {name} must be a scalar or {size} values, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"SafetyLimits: {name} must be finite, got {array.tolist()}")
    if positive and not np.all(array > 0.0):
        raise ValueError(f"SafetyLimits: {name} must be > 0 for every joint, got {array.tolist()}")
    array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits and input ages the filter enforces (arrays are (n,), read-only).

    Parameters
    ----------
    lower, upper : array_like
        Position limits (rad; m for the finger). Scalars are broadcast to ``num_joints``.
    max_velocity, max_acceleration : array_like
        Per-tick limits on the commands (rad/s, rad/s^2; m/s, m/s^2).
    max_deviation_from_measured : array_like
        A candidate further than this from the measured state (any joint) is ramped to.
    ramp_velocity : array_like
        Speed of that ramp; must not exceed ``max_velocity``.
    max_input_age_s : mapping of str to float
        Maximum age per input name; an input missing from the stamps given to the filter is
        treated as never received (stale).
    joint_names : sequence of str, optional
        For messages only; defaults to ``joint1..joint<n>``.
    max_tracking_error : array_like, optional
        Last command - measured state beyond this (plus ``|velocity| *
        max_input_age_s['joint_state']``) holds (controlled stop). Default
        :data:`DEFAULT_MAX_TRACKING_ERROR` for a 7-joint arm; required for other sizes.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    max_deviation_from_measured: np.ndarray
    ramp_velocity: np.ndarray
    max_input_age_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_INPUT_AGE_S))
    joint_names: tuple[str, ...] = ()
    max_tracking_error: np.ndarray | None = None

    def __post_init__(self) -> None:
        size = np.asarray(self.lower, dtype=float).size
        if size < 1:
            raise ValueError("SafetyLimits: lower must have at least one joint")
        set_ = object.__setattr__  # frozen dataclass: normalise once, here
        set_(self, "lower", _per_joint("lower", self.lower, size, positive=False))
        set_(self, "upper", _per_joint("upper", self.upper, size, positive=False))
        if not np.all(self.lower < self.upper):
            bad = np.flatnonzero(self.lower >= self.upper).tolist()
            raise ValueError(f"SafetyLimits: lower must be < upper; not so for joints {bad}")
        if self.max_tracking_error is None:
            if size != len(DEFAULT_MAX_TRACKING_ERROR):
                raise ValueError(f"SafetyLimits: max_tracking_error is required for a {size}-joint limb")
            set_(self, "max_tracking_error", DEFAULT_MAX_TRACKING_ERROR)
        for name in ("max_velocity", "max_acceleration", "max_deviation_from_measured", "ramp_velocity",
                     "max_tracking_error"):
            set_(self, name, _per_joint(name, getattr(self, name), size, positive=True))
        if np.any(self.ramp_velocity > self.max_velocity):
            raise ValueError(
                "SafetyLimits: ramp_velocity must not exceed max_velocity, got "
                f"{self.ramp_velocity.tolist()} > {self.max_velocity.tolist()}"
            )
        ages = {}
        for name, age in dict(self.max_input_age_s).items():
            if not (isinstance(age, (int, float)) and math.isfinite(age) and age > 0):
                raise ValueError(f"SafetyLimits: max_input_age_s[{name!r}] must be a finite number > 0, got {age!r}")
            ages[str(name)] = float(age)
        set_(self, "max_input_age_s", ages)
        names = tuple(self.joint_names) or tuple(f"joint{i + 1}" for i in range(size))
        if len(names) != size:
            raise ValueError(f"SafetyLimits: {len(names)} joint_names for {size} joints")
        set_(self, "joint_names", names)

    @property
    def num_joints(self) -> int:
        """Number of joints (7 for one CobotMagic arm)."""
        return int(self.lower.size)

    @classmethod
    def from_config(cls, joint_limits: object, config: Mapping[str, object] | None = None) -> "SafetyLimits":
        """Build limits from a robot's joint limits and a (YAML / ROS parameter) mapping.

        Parameters
        ----------
        joint_limits : object
            Anything with ``lower``, ``upper`` and ``velocity`` arrays and optionally ``names``,
            e.g. ``sim2real_vla_ros.core.robot.arm_limits(side)``.
        config : mapping, optional
            Keys (all optional; scalars broadcast, sequences are per joint):
            ``velocity_scale`` (0 < s <= 1, default 1: fraction of the URDF velocity used),
            ``position_margin`` (>= 0, default 0: shrinks ``[lower, upper]`` on both sides),
            ``max_acceleration``, ``max_deviation_from_measured``, ``ramp_velocity``,
            ``max_tracking_error`` (defaults: the module's ``DEFAULT_*`` for a 7-joint arm), and
            ``max_input_age_s`` (mapping; default :data:`DEFAULT_MAX_INPUT_AGE_S`).

        Raises
        ------
        ValueError
            An unknown key or an out-of-range value, naming it.
        """
        config = dict(config or {})
        known = {
            "velocity_scale",
            "position_margin",
            "max_acceleration",
            "max_deviation_from_measured",
            "ramp_velocity",
            "max_tracking_error",
            "max_input_age_s",
        }
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"SafetyLimits.from_config: unknown keys {unknown}; known: {sorted(known)}")
        lower = np.asarray(joint_limits.lower, dtype=float)
        upper = np.asarray(joint_limits.upper, dtype=float)
        size = lower.size
        scale = float(config.get("velocity_scale", 1.0))
        if not (0.0 < scale <= 1.0):
            raise ValueError(f"SafetyLimits.from_config: velocity_scale must be in (0, 1], got {scale}")
        margin = _per_joint("position_margin", config.get("position_margin", 0.0), size, positive=False)
        if np.any(margin < 0) or np.any(lower + margin >= upper - margin):
            raise ValueError(
                f"SafetyLimits.from_config: position_margin {margin.tolist()} is negative or closes a range"
            )

        def default(values: tuple[float, ...]) -> object:
            # The per-joint defaults are written for a 7-joint arm; other sizes must configure.
            return values if size == len(values) else None

        values = {}
        for key, fallback in (
            ("max_acceleration", DEFAULT_MAX_ACCELERATION),
            ("max_deviation_from_measured", DEFAULT_MAX_DEVIATION),
            ("ramp_velocity", DEFAULT_RAMP_VELOCITY),
            ("max_tracking_error", DEFAULT_MAX_TRACKING_ERROR),
        ):
            value = config.get(key, default(fallback))
            if value is None:
                raise ValueError(f"SafetyLimits.from_config: {key} is required for a {size}-joint limb")
            values[key] = value
        max_velocity = scale * np.asarray(joint_limits.velocity, dtype=float)
        ramp = np.minimum(_per_joint("ramp_velocity", values.pop("ramp_velocity"), size, positive=True), max_velocity)
        return cls(
            lower=lower + margin,
            upper=upper - margin,
            max_velocity=max_velocity,
            ramp_velocity=ramp,
            max_input_age_s=dict(config.get("max_input_age_s", DEFAULT_MAX_INPUT_AGE_S)),
            joint_names=tuple(getattr(joint_limits, "names", ()) or ()),
            **values,
        )


@dataclass(frozen=True, eq=False)
class SafetyDecision:
    """What the filter decided for one tick.

    Attributes
    ----------
    command : np.ndarray or None
        The (n,) command to send: finite and within limits. None only while no finite measured
        state has ever been seen (nothing safe is known, so nothing must be sent).
    held : bool
        True when a hold reason applied (e-stop holds; the others decelerate to a hold).
    reasons : tuple of SafetyEvent
        Every event of this tick, hold reasons and modifications alike.
    clipped_joints : tuple of int
        Joints whose candidate was clipped into the position limits.
    velocity : np.ndarray or None
        The command's velocity ``(command - previous) / dt`` (n,), for diagnostics.
    """

    command: np.ndarray | None
    held: bool
    reasons: tuple[SafetyEvent, ...]
    clipped_joints: tuple[int, ...] = ()
    velocity: np.ndarray | None = None

    def has(self, kind: SafetyEventKind) -> bool:
        """True when an event of this kind occurred this tick."""
        return any(event.kind is kind for event in self.reasons)


# ---------------------------------------------------------------------------- pure functions


def as_finite_vector(value: object, size: int) -> np.ndarray | None:
    """``value`` as a float (size,) array if it is finite with that size, else None."""
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    if array.shape != (size,) or not np.isfinite(array).all():
        return None
    return array


def check_input_ages(
    now_s: float, input_stamps: Mapping[str, float | None], max_input_age_s: Mapping[str, float]
) -> tuple[SafetyEvent, ...]:
    """Stale-input events, one per input that is too old, missing, or from the future.

    Parameters
    ----------
    now_s : float
        Current time (s), same clock as the stamps (sim time under ``use_sim_time``).
    input_stamps : mapping of str to float or None
        Latest stamp per input name; None or a missing name means never received. Names
        without a maximum age are ignored.
    max_input_age_s : mapping of str to float
        Maximum age per input name.

    Returns
    -------
    tuple of SafetyEvent
        ``STALE_INPUT`` events, ``detail`` = input name (sorted by name).
    """
    events = []
    for name in sorted(max_input_age_s):
        max_age = max_input_age_s[name]
        stamp = input_stamps.get(name)
        if stamp is None or not math.isfinite(stamp):
            events.append(SafetyEvent(SafetyEventKind.STALE_INPUT, name))
            continue
        age = now_s - stamp
        # A stamp far in the future means the clocks disagree (e.g. sim time was reset): the
        # input's real age is unknown, which is as bad as too old.
        if age > max_age or age < -max_age:
            events.append(SafetyEvent(SafetyEventKind.STALE_INPUT, name))
    return tuple(events)


def clip_to_limits(position: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Clip into ``[lower, upper]``; also return the indices that were clipped."""
    clipped = np.clip(position, lower, upper)
    return clipped, tuple(np.flatnonzero(clipped != position).tolist())


def ramp_toward(start: np.ndarray, goal: np.ndarray, ramp_velocity: np.ndarray, dt: float) -> np.ndarray:
    """One tick along the straight joint-space line from ``start`` to ``goal`` at ``ramp_velocity``.

    The joint that needs the longest time sets the pace for all, so the motion keeps its
    direction in joint space (per-joint clipping would bend the path).
    """
    delta = goal - start
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(delta != 0.0, ramp_velocity * dt / np.abs(delta), np.inf)
    scale = min(1.0, float(np.min(fraction)))
    return start + scale * delta


def stopping_velocity_bound(distance: np.ndarray, max_acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest velocity from which the next command can still stop within ``distance``.

    Solves ``v^2 / (2 a) + v dt <= distance`` for ``v >= 0``: after moving ``v dt`` this tick,
    braking at ``a`` per tick covers at most ``v^2 / (2 a)``. ``distance`` is clamped at 0.
    """
    a_dt = max_acceleration * dt
    return -a_dt + np.sqrt(a_dt * a_dt + 2.0 * max_acceleration * np.maximum(distance, 0.0))


def admissible_velocity(
    position: np.ndarray, velocity: np.ndarray, limits: SafetyLimits, dt: float
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Velocity interval for the next command, per joint, and which constraint set each bound.

    The interval is the intersection of ``|v| <= max_velocity``, ``|v - velocity| <= a dt``
    and the braking bounds toward both position limits. It is never empty when the current
    state satisfies the braking bounds (true from rest inside the limits, and preserved):
    if ``v`` satisfied ``v^2/(2a) <= upper - q``, then ``v - a dt`` satisfies the bound at
    the next position, because ``(v - a dt)^2/(2a) + (v - a dt) dt = v^2/(2a) - a dt^2/2``.

    Returns
    -------
    low, high : np.ndarray
        Interval bounds (n,).
    bounds : dict
        ``{'velocity': (low, high), 'acceleration': (...), 'braking': (...)}`` for reporting.
    """
    a = limits.max_acceleration
    velocity_bounds = (-limits.max_velocity, limits.max_velocity)
    acceleration_bounds = (velocity - a * dt, velocity + a * dt)
    braking_bounds = (
        -stopping_velocity_bound(position - limits.lower, a, dt),
        stopping_velocity_bound(limits.upper - position, a, dt),
    )
    low = np.maximum(np.maximum(velocity_bounds[0], acceleration_bounds[0]), braking_bounds[0])
    high = np.minimum(np.minimum(velocity_bounds[1], acceleration_bounds[1]), braking_bounds[1])
    # Rounding can cross the bounds by ~1e-16 at a limit; meet in the middle then.
    crossed = low > high
    if crossed.any():
        middle = 0.5 * (low + high)
        low = np.where(crossed, middle, low)
        high = np.where(crossed, middle, high)
    bounds = {"velocity": velocity_bounds, "acceleration": acceleration_bounds, "braking": braking_bounds}
    return low, high, bounds


def desired_velocity(
    position: np.ndarray,
    velocity: np.ndarray,
    target: np.ndarray,
    target_velocity: np.ndarray,
    limits: SafetyLimits,
    dt: float,
) -> np.ndarray:
    """Velocity that lands on ``target`` next tick when that is smooth, else one that brakes onto it.

    Landing exactly on the target is chosen when it needs at most ``max_acceleration`` now
    *and* leaves a velocity within ``max_acceleration`` of the target's own, so a feasible
    chunk passes through unchanged (no lag). Otherwise (a big step) the joint closes the gap
    in the target's moving frame with the braking law ``r <= -a dt + sqrt((a dt)^2 + 2 a g)``,
    a trapezoidal profile that arrives instead of overshooting and coming back.

    Parameters
    ----------
    target_velocity : np.ndarray
        The target's estimated velocity (zeros when unknown or after a jump).
    """
    a_dt = limits.max_acceleration * dt
    error = target - position
    direct = error / dt
    reachable_now = np.abs(direct - velocity) <= a_dt + _LIMIT_TOLERANCE
    can_follow_after = np.abs(direct - target_velocity) <= a_dt + _LIMIT_TOLERANCE
    smooth = reachable_now & can_follow_after
    gap = error - target_velocity * dt
    braking = stopping_velocity_bound(np.abs(gap), limits.max_acceleration, dt)
    closing = np.sign(gap) * np.minimum(np.abs(gap) / dt, braking)
    return np.where(smooth, direct, target_velocity + closing)


def estimate_target_velocity(
    previous_target: np.ndarray | None, target: np.ndarray, limits: SafetyLimits, dt: float
) -> np.ndarray:
    """Per-joint target velocity from two consecutive targets; zero where unknown or a jump.

    A target that moved faster than ``max_velocity`` in one tick jumped (an unblended seam):
    treating that as a velocity to match would make the joint overshoot, so it counts as 0.
    """
    if previous_target is None:
        return np.zeros_like(target)
    velocity = (target - previous_target) / dt
    return np.where(np.abs(velocity) <= limits.max_velocity, velocity, 0.0)


def rate_limited_step(
    position: np.ndarray,
    velocity: np.ndarray,
    target: np.ndarray | None,
    limits: SafetyLimits,
    dt: float,
    target_velocity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[SafetyEvent, ...]]:
    """The next command from ``(position, velocity)`` toward ``target`` within all limits.

    Parameters
    ----------
    position, velocity : np.ndarray
        Last sent command and its velocity (n,).
    target : np.ndarray or None
        Where to go (already clipped into the position limits); None decelerates to a stop at
        ``max_acceleration``.
    limits : SafetyLimits
    dt : float
        Control period (s).
    target_velocity : np.ndarray, optional
        See :func:`estimate_target_velocity`; zeros when omitted.

    Returns
    -------
    command, command_velocity : np.ndarray
    events : tuple of SafetyEvent
        ``VELOCITY_LIMITED`` / ``ACCELERATION_LIMITED`` / ``LIMIT_BRAKING`` with the joints
        whose desired velocity was cut by that constraint (none when decelerating to hold).
    """
    low, high, bounds = admissible_velocity(position, velocity, limits, dt)
    if target is None:
        wanted = np.zeros_like(position)
    else:
        moving = np.zeros_like(position) if target_velocity is None else target_velocity
        wanted = desired_velocity(position, velocity, target, moving, limits, dt)
    chosen = np.clip(wanted, low, high)
    events = []
    if target is not None:
        cut = np.abs(chosen - wanted) > 1e-9
        if cut.any():
            # np.maximum / np.minimum return one of their inputs exactly, so equality names the
            # constraint that set the bound (a crossed, averaged bound matches none: not reported).
            for name, kind in (
                ("velocity", SafetyEventKind.VELOCITY_LIMITED),
                ("acceleration", SafetyEventKind.ACCELERATION_LIMITED),
                ("braking", SafetyEventKind.LIMIT_BRAKING),
            ):
                below, above = bounds[name]
                active = cut & (((wanted < chosen) & (chosen == below)) | ((wanted > chosen) & (chosen == above)))
                if active.any():
                    events.append(SafetyEvent(kind, joints=tuple(np.flatnonzero(active).tolist())))
    # Final clip only guards against rounding: the braking bounds already keep it inside.
    command = np.clip(position + chosen * dt, limits.lower, limits.upper)
    return command, (command - position) / dt, tuple(events)


def hold_reasons(
    candidate: object,
    candidate_vector: np.ndarray | None,
    measured_vector: np.ndarray | None,
    now_s: float,
    input_stamps: Mapping[str, float | None],
    estop: bool,
    candidate_fault: str | None,
    limits: SafetyLimits,
    implausible_joints: tuple[int, ...] = (),
) -> tuple[SafetyEvent, ...]:
    """Every reason to hold this tick (empty tuple: track the candidate).

    ``implausible_joints`` names the joints of a measured state that was set aside by
    :func:`implausible_joints` (reported instead of ``no_measured_state``).
    """
    events = []
    if estop:
        events.append(SafetyEvent(SafetyEventKind.ESTOP))
    if implausible_joints:
        events.append(SafetyEvent(SafetyEventKind.IMPLAUSIBLE_MEASURED_STATE, joints=implausible_joints))
    elif measured_vector is None:
        events.append(SafetyEvent(SafetyEventKind.NO_MEASURED_STATE))
    if candidate_fault:
        events.append(SafetyEvent(SafetyEventKind.CANDIDATE_FAULT, str(candidate_fault)))
    elif candidate is None:
        events.append(SafetyEvent(SafetyEventKind.NO_CANDIDATE))
    elif candidate_vector is None:
        events.append(_describe_bad_candidate(candidate, limits.num_joints))
    events.extend(check_input_ages(now_s, input_stamps, limits.max_input_age_s))
    return tuple(events)


def implausible_joints(measured: np.ndarray, limits: SafetyLimits) -> tuple[int, ...]:
    """Joints of a measured state further outside the position limits than
    ``max_deviation_from_measured`` (no arm can be there: a corrupt or misassigned reading)."""
    margin = limits.max_deviation_from_measured
    outside = (measured < limits.lower - margin) | (measured > limits.upper + margin)
    return tuple(np.flatnonzero(outside).tolist()) if outside.any() else ()


def command_violations(
    previous: np.ndarray,
    previous_velocity: np.ndarray,
    command: np.ndarray,
    limits: SafetyLimits,
    dt: float,
    freeze_allowed: bool = False,
) -> tuple[SafetyEvent, ...]:
    """The last-line check of one command against the one before it (empty: it may be sent).

    Parameters
    ----------
    previous, previous_velocity : np.ndarray
        The command sent before (n,) and its velocity ``(previous - the one before) / dt``.
    command : np.ndarray
        The command about to be sent (n,).
    limits : SafetyLimits
    dt : float
        Nominal control period (s).
    freeze_allowed : bool
        The decision is a stop freeze (e-stop, or the check's own last resort): a command equal
        to ``previous`` is exempt from the acceleration limit (module docstring, stop profiles).

    Returns
    -------
    tuple of SafetyEvent
        ``INVARIANT_VIOLATION`` events, ``detail`` one of ``non_finite``, ``position``,
        ``velocity``, ``acceleration``, with the joints concerned.
    """
    command = np.asarray(command, dtype=float)
    if command.shape != previous.shape or not np.isfinite(command).all():
        bad = np.flatnonzero(~np.isfinite(command.reshape(-1))).tolist() if command.size else []
        return (SafetyEvent(SafetyEventKind.INVARIANT_VIOLATION, "non_finite", tuple(bad)),)
    slack = INVARIANT_ABSOLUTE_TOLERANCE
    scale = 1.0 + INVARIANT_RELATIVE_TOLERANCE
    events = []
    outside = (command < limits.lower - slack) | (command > limits.upper + slack)
    if outside.any():
        events.append(SafetyEvent(SafetyEventKind.INVARIANT_VIOLATION, "position",
                                  tuple(np.flatnonzero(outside).tolist())))
    step = command - previous
    fast = np.abs(step) > limits.max_velocity * dt * scale + slack
    if fast.any():
        events.append(SafetyEvent(SafetyEventKind.INVARIANT_VIOLATION, "velocity", tuple(np.flatnonzero(fast).tolist())))
    if not (freeze_allowed and not step.any()):
        jerk = np.abs(step - previous_velocity * dt) > limits.max_acceleration * dt * dt * scale + slack
        if jerk.any():
            events.append(SafetyEvent(SafetyEventKind.INVARIANT_VIOLATION, "acceleration",
                                      tuple(np.flatnonzero(jerk).tolist())))
    return tuple(events)


def tracking_error_joints(
    command: np.ndarray, velocity: np.ndarray, measured: np.ndarray, limits: SafetyLimits
) -> tuple[int, ...]:
    """Joints whose last command is further from the measured state than the arm's lag explains.

    The allowance is ``max_tracking_error`` plus the distance the commanded velocity covers
    within the joint state's maximum age (a moving arm's reading trails its command by that).
    """
    reading_age = limits.max_input_age_s.get("joint_state", 0.0)
    allowed = limits.max_tracking_error + np.abs(velocity) * reading_age
    return tuple(np.flatnonzero(np.abs(command - measured) > allowed).tolist())


def _describe_bad_candidate(candidate: object, size: int) -> SafetyEvent:
    try:
        array = np.asarray(candidate, dtype=float).reshape(-1)
    except (TypeError, ValueError) as error:
        return SafetyEvent(SafetyEventKind.BAD_CANDIDATE_SHAPE, f"not numeric: {error}")
    if array.shape != (size,):
        return SafetyEvent(SafetyEventKind.BAD_CANDIDATE_SHAPE, f"{array.size} values, expected {size}")
    return SafetyEvent(SafetyEventKind.NON_FINITE_CANDIDATE, joints=tuple(np.flatnonzero(~np.isfinite(array)).tolist()))


# ---------------------------------------------------------------------------- the filter


class SafetyFilter:
    """Stateful wrapper: keeps the last command, its velocity and the counters; nothing else.

    Parameters
    ----------
    limits : SafetyLimits

    Notes
    -----
    Thread-safe (one lock): the control timer calls :meth:`filter`, a diagnostics timer may
    read :attr:`counters` concurrently.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.counters = SafetyCounters()
        self._lock = threading.Lock()
        self._last_command: np.ndarray | None = None
        self._last_velocity: np.ndarray | None = None
        self._last_target: np.ndarray | None = None  # to estimate the target's velocity
        # Precomputed bounds for the per-tick fast paths (the detailed functions run on a failure).
        self._plausible = (limits.lower - limits.max_deviation_from_measured,
                           limits.upper + limits.max_deviation_from_measured)
        self._position_bounds = (limits.lower - INVARIANT_ABSOLUTE_TOLERANCE,
                                 limits.upper + INVARIANT_ABSOLUTE_TOLERANCE)
        self._rate_bounds: tuple[float, np.ndarray, np.ndarray] | None = None  # (dt, max step, max jerk)

    def _passes(self, previous: np.ndarray, previous_velocity: np.ndarray, command: np.ndarray, dt: float) -> bool:
        """Fast path of :func:`command_violations` (same bounds; NaN fails every comparison)."""
        if self._rate_bounds is None or self._rate_bounds[0] != dt:
            scale = 1.0 + INVARIANT_RELATIVE_TOLERANCE
            self._rate_bounds = (dt, self.limits.max_velocity * dt * scale + INVARIANT_ABSOLUTE_TOLERANCE,
                                 self.limits.max_acceleration * dt * dt * scale + INVARIANT_ABSOLUTE_TOLERANCE)
        _, max_step, max_jerk = self._rate_bounds
        step = command - previous
        low, high = self._position_bounds
        return bool((np.abs(step) <= max_step).all() and (np.abs(step - previous_velocity * dt) <= max_jerk).all()
                    and (command >= low).all() and (command <= high).all())

    @property
    def last_command(self) -> np.ndarray | None:
        """Copy of the last command returned (None before the first)."""
        with self._lock:
            return None if self._last_command is None else self._last_command.copy()

    @property
    def last_velocity(self) -> np.ndarray | None:
        """Copy of the last command's velocity (n,)."""
        with self._lock:
            return None if self._last_velocity is None else self._last_velocity.copy()

    def reset(self) -> None:
        """Forget the command history: the next tick starts again from the measured state.

        Only call while the arm is at rest (e.g. after a simulator reset); the counters stay.
        """
        with self._lock:
            self._last_command = None
            self._last_velocity = None
            self._last_target = None

    def seed(self, command: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Continue from a known command instead of starting from the measured state.

        For a consumer that replaces its filter while it knows what was last sent (another
        filter's ``last_command`` / ``last_velocity``, or the arm controller's current
        reference after a restart): the next command then obeys the velocity and
        acceleration limits relative to that one, as if this filter had sent it.

        Parameters
        ----------
        command : array_like (n,)
            Finite; clipped into the position limits.
        velocity : array_like (n,), optional
            Its velocity (default: at rest); clipped to ``max_velocity``.

        Raises
        ------
        ValueError
            ``command`` or ``velocity`` is not finite or of the wrong size.
        """
        size = self.limits.num_joints
        start = as_finite_vector(command, size)
        if start is None:
            raise ValueError(f"SafetyFilter.seed: command must be {size} finite values, got {command!r}")
        moving = np.zeros(size) if velocity is None else as_finite_vector(velocity, size)
        if moving is None:
            raise ValueError(f"SafetyFilter.seed: velocity must be {size} finite values, got {velocity!r}")
        with self._lock:
            self._last_command = np.clip(start, self.limits.lower, self.limits.upper)
            self._last_velocity = np.clip(moving, -self.limits.max_velocity, self.limits.max_velocity)
            self._last_target = None

    def filter(
        self,
        candidate: np.ndarray | None,
        measured: np.ndarray | None,
        now_s: float,
        input_stamps: Mapping[str, float | None],
        estop: bool,
        dt: float,
        candidate_fault: str | None = None,
    ) -> SafetyDecision:
        """Decide the command for this tick (see the module docstring for the rules).

        Parameters
        ----------
        candidate : array_like (n,) or None
            The executor's setpoint. None when there is none (no chunk yet) or when producing
            it failed (then give ``candidate_fault``).
        measured : array_like (n,) or None
            Latest measured joint positions (None when never received), ideally the latest
            reading a :class:`~sim2real_vla_ros.core.control.joint_reading.JointReadingValidator`
            accepted.
        now_s : float
            Current time (s), same clock as ``input_stamps``.
        input_stamps : mapping of str to float or None
            Latest stamp per input name (see :attr:`SafetyLimits.max_input_age_s`).
        estop : bool
            E-stop engaged: hold the last command in this very tick.
        dt : float
            Nominal control period (s), > 0.
        candidate_fault : str, optional
            Why there is no usable candidate, e.g. ``'fast_decode:wrong_length'``; counted as
            ``candidate_fault:<text>``. When given, the filter holds whatever ``candidate`` is.

        Returns
        -------
        SafetyDecision

        Raises
        ------
        ValueError
            ``dt`` or ``now_s`` not finite, or ``dt <= 0`` (a programming error, not data).
        """
        if not (math.isfinite(dt) and dt > 0.0):
            raise ValueError(f"SafetyFilter.filter: dt must be finite and > 0, got {dt}")
        if not math.isfinite(now_s):
            raise ValueError(f"SafetyFilter.filter: now_s must be finite, got {now_s}")
        size = self.limits.num_joints
        candidate_vector = as_finite_vector(candidate, size)
        measured_vector = as_finite_vector(measured, size)
        implausible: tuple[int, ...] = ()
        low, high = self._plausible
        if measured_vector is not None and not ((measured_vector >= low).all() and (measured_vector <= high).all()):
            implausible = implausible_joints(measured_vector, self.limits)
            if implausible:
                measured_vector = None  # not used at all: not for the start, tracking or deviation
        holds = hold_reasons(candidate, candidate_vector, measured_vector, now_s, input_stamps, estop,
                             candidate_fault, self.limits, implausible)
        with self._lock:
            decision = self._decide(candidate_vector, measured_vector, holds, dt)
            self.counters.record(decision.reasons, decision.held)
            return decision

    def _decide(
        self,
        candidate: np.ndarray | None,
        measured: np.ndarray | None,
        holds: tuple[SafetyEvent, ...],
        dt: float,
    ) -> SafetyDecision:
        limits = self.limits
        first_tick_events: tuple[SafetyEvent, ...] = ()
        if self._last_command is None:
            if measured is None:
                return SafetyDecision(None, True, holds)
            # Start where the arm is (clipped into the limits: a reading a hair outside the URDF
            # range must not be commanded), at rest.
            start, clipped = clip_to_limits(measured, limits.lower, limits.upper)
            if clipped:
                first_tick_events = (SafetyEvent(SafetyEventKind.POSITION_CLIPPED, "measured", clipped),)
            self._last_command = start
            self._last_velocity = np.zeros(limits.num_joints)
        position, velocity = self._last_command, self._last_velocity

        estop = any(event.kind is SafetyEventKind.ESTOP for event in holds)
        # Judged only on a fresh reading: a stale one trails a moving arm by more than the allowance.
        reading_unusable = estop or any(
            event.kind is SafetyEventKind.STALE_INPUT and event.detail == "joint_state" for event in holds)
        if measured is not None and not reading_unusable:
            lagging = tracking_error_joints(position, velocity, measured, limits)
            if lagging:
                holds = holds + (SafetyEvent(SafetyEventKind.TRACKING_ERROR, joints=lagging),)

        if holds:
            self._last_target = None  # after a hold the target's motion is unknown again
            if estop:
                return self._commit(position.copy(), dt, True, first_tick_events + holds, (), freeze=True)
            command, _, _ = rate_limited_step(position, velocity, None, limits, dt)
            return self._commit(command, dt, True, first_tick_events + holds, ())

        target, clipped = clip_to_limits(candidate, limits.lower, limits.upper)
        events = list(first_tick_events)
        if clipped:
            events.append(SafetyEvent(SafetyEventKind.POSITION_CLIPPED, joints=clipped))
        far = np.abs(target - measured) > limits.max_deviation_from_measured
        if far.any():
            events.append(SafetyEvent(SafetyEventKind.DEVIATION_RAMP, joints=tuple(np.flatnonzero(far).tolist())))
            target = ramp_toward(position, target, limits.ramp_velocity, dt)
        target_velocity = estimate_target_velocity(self._last_target, target, limits, dt)
        self._last_target = target
        command, _, rate_events = rate_limited_step(position, velocity, target, limits, dt, target_velocity)
        events.extend(rate_events)
        return self._commit(command, dt, False, tuple(events), clipped)

    def _commit(
        self,
        command: np.ndarray,
        dt: float,
        held: bool,
        events: tuple[SafetyEvent, ...],
        clipped: tuple[int, ...],
        freeze: bool = False,
    ) -> SafetyDecision:
        """Check ``command`` (rule 9), record it as sent and return the decision."""
        previous, previous_velocity = self._last_command, self._last_velocity
        violations: tuple[SafetyEvent, ...] = ()
        if not self._passes(previous, previous_velocity, command, dt):
            violations = command_violations(previous, previous_velocity, command, self.limits, dt, freeze)
        if violations:
            # Not sent: the controlled stop from the last command instead, or the freeze if even
            # that fails the check (a corrupted state); both are holds.
            events, held, clipped = events + violations, True, ()
            self._last_target = None
            command, _, _ = rate_limited_step(previous, previous_velocity, None, self.limits, dt)
            if command_violations(previous, previous_velocity, command, self.limits, dt):
                command = previous.copy()
        velocity = (command - previous) / dt
        self._last_command = command
        self._last_velocity = velocity
        return SafetyDecision(command.copy(), held, events, clipped, velocity.copy())

    def preview(
        self, candidates: np.ndarray | None, measured: np.ndarray, dt: float, steps: int | None = None
    ) -> np.ndarray:
        """Roll the rules forward over future candidates without changing the filter's state.

        For the ``trajectory`` output mode: after this tick's :meth:`filter`, pass the future
        setpoints (``ChunkExecutor.as_trajectory`` on the same ``dt`` grid) and publish the
        result, so every published point obeys the same position, deviation, velocity and
        acceleration rules as streamed commands. Hold checks are not repeated (this tick's
        decision already made them): if it held, pass ``candidates=None`` and ``steps`` to get
        the deceleration profile. The last-line check (rule 9) runs over the whole rollout: from
        a violating point on, the rollout is the controlled stop instead (counted as
        ``invariant_violation:<what>``).

        Parameters
        ----------
        candidates : np.ndarray (m, n) or None
            Future setpoints at ``dt`` spacing, starting one ``dt`` after the last command.
            Rows that are not finite make the rest of the preview decelerate to a stop.
        measured : np.ndarray (n,)
            Measured state, for the deviation rule (kept constant over the preview). A missing
            or implausible one (rule 2) makes the whole preview decelerate to a stop.
        dt : float
        steps : int, optional
            Number of points when ``candidates`` is None.

        Returns
        -------
        np.ndarray (m, n)
            Safe positions; empty (0, n) before the first command.
        """
        size = self.limits.num_joints
        with self._lock:
            if self._last_command is None:
                return np.empty((0, size))
            start, start_velocity = self._last_command.copy(), self._last_velocity.copy()
            previous_target = None if self._last_target is None else self._last_target.copy()
        if candidates is None:
            rows = [None] * int(steps or 0)
        else:
            rows = list(np.asarray(candidates, dtype=float).reshape(-1, size))
        measured_vector = as_finite_vector(measured, size)
        if measured_vector is not None and implausible_joints(measured_vector, self.limits):
            measured_vector = None
        output = np.empty((len(rows), size))
        position, velocity = start, start_velocity
        stopping = measured_vector is None
        for index, row in enumerate(rows):
            target = None
            if not stopping and row is not None and np.all(np.isfinite(row)):
                target = np.clip(row, self.limits.lower, self.limits.upper)
                if np.any(np.abs(target - measured_vector) > self.limits.max_deviation_from_measured):
                    target = ramp_toward(position, target, self.limits.ramp_velocity, dt)
            else:
                stopping = True  # once invalid, never resume inside one preview
            moving = None
            if target is not None:
                moving = estimate_target_velocity(previous_target, target, self.limits, dt)
            previous_target = target
            position, velocity, _ = rate_limited_step(position, velocity, target, self.limits, dt, moving)
            output[index] = position
        return self._checked_rollout(start, start_velocity, output, dt)

    def _checked_rollout(self, start: np.ndarray, start_velocity: np.ndarray, points: np.ndarray,
                         dt: float) -> np.ndarray:
        """Rule 9 over a rollout at once; from the first violating point on, the controlled stop."""
        bad_row, violations = first_violation(start, start_velocity, points, self.limits, dt)
        if bad_row is None:
            return points
        self.counters.count(violations)
        position = start if bad_row == 0 else points[bad_row - 1]
        if bad_row == 0:
            velocity = start_velocity
        else:
            velocity = (points[bad_row - 1] - (start if bad_row == 1 else points[bad_row - 2])) / dt
        for index in range(bad_row, points.shape[0]):
            command, _, _ = rate_limited_step(position, velocity, None, self.limits, dt)
            if command_violations(position, velocity, command, self.limits, dt):
                command = position.copy()  # the freeze: the last resort of rule 9
            velocity = (command - position) / dt
            position = command
            points[index] = command
        return points


def first_violation(
    start: np.ndarray, start_velocity: np.ndarray, points: np.ndarray, limits: SafetyLimits, dt: float
) -> tuple[int | None, tuple[SafetyEvent, ...]]:
    """Rule 9 over a sequence of commands following ``start`` (vectorised).

    Returns
    -------
    row : int or None
        Index of the first point of ``points`` (m, n) that violates a limit; None when all pass.
    events : tuple of SafetyEvent
        That point's violations (see :func:`command_violations`).
    """
    if points.shape[0] == 0:
        return None, ()
    slack = INVARIANT_ABSOLUTE_TOLERANCE
    scale = 1.0 + INVARIANT_RELATIVE_TOLERANCE
    steps = np.diff(np.vstack([start[None], points]), axis=0)
    previous_steps = np.vstack([(start_velocity * dt)[None], steps[:-1]])
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(points)
        bad |= (points < limits.lower - slack) | (points > limits.upper + slack)
        bad |= np.abs(steps) > limits.max_velocity * dt * scale + slack
        bad |= np.abs(steps - previous_steps) > limits.max_acceleration * dt * dt * scale + slack
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size == 0:
        return None, ()
    row = int(rows[0])
    before = start if row == 0 else points[row - 1]
    return row, command_violations(before, previous_steps[row] / dt, points[row], limits, dt)
