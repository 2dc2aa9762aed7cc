"""Joint-reading validation: a /joint_states sample is checked before anything believes it (pure, ROS-free).

A fault campaign showed that one implausible sample (``left_joint1 = 1e6``, an arm's names
swapped with the other's, a forged offset) was taken as the arm's state. One
:class:`JointReadingValidator` per arm sits between the message and the consumer's stored
measured state. Each reading is checked, in this order, and the first failed check names the
rejection:

1. ``wrong_size`` / ``non_finite``: not n finite values; ``stamp_not_finite``.
2. ``outside_limits``: outside the URDF limits by more than ``position_margin`` (joints named).
3. ``stamp_in_future`` (when the consumer passes ``now_s``): stamped later than ``now_s`` +
   ``max_stamp_lead_s``; ``stamp_went_back``: older than the last accepted reading (after a
   clock jump back the consumer calls :meth:`JointReadingValidator.reset_time`).
4. ``implausible_speed``: further from the last accepted reading than the arm can move in the
   stamp time between them, ``noise + speed_factor * max_velocity * elapsed``.
   ``unconfirmed``: with no recent accepted reading (the first ones, or none accepted for
   ``reacquire_after_s``) there is nothing to compare with, so a reading is only accepted
   once ``confirmations`` consecutive readings agree with each other by the same rule: an
   isolated bad sample can never become the reference (or seed a filter's first command).
5. ``inconsistent_with_command``: further than ``max_tracking_error + noise`` outside the span
   of the commands sent within the last ``tracking_lag_s`` (the arm is somewhere along the
   path it was recently told to follow, give or take its tracking error). Skipped until the
   consumer reports a command (:meth:`JointReadingValidator.commanded`).

A rejected reading is **not stored**: the consumer keeps its previous measured state *and
its stamp*, so the input ages, and after ``max_input_age_s['joint_state']`` the safety
filter's stale-input hold (a controlled stop) stops the arm. A stream of rejected readings
therefore stops the arm instead of being followed. Every rejection is counted by reason
(:meth:`JointReadingValidator.counters`, for /diagnostics) and the last one is described.

Known limit: a reading that is wrong from the very first sample *and* self-consistent
(a sustained forged offset present before the first command) cannot be told from the truth
here; :meth:`JointReadingValidator.commanded` with the arm controller's current reference at
start-up closes most of that gap (rule 5).

Wiring (the consumer's two calls)::

    validator = JointReadingValidator.from_limits(arm_limits(arm), safety.limits)

    # each /joint_states sample (any thread)
    try:
        positions = arm_state_from_joint_state(msg.name, msg.position, arm)
    except ValueError as exc:
        validator.reject_malformed(str(exc))
    else:
        verdict = validator.check(positions, stamp_s, now_s)
        if verdict.accepted:
            measured, stamps["joint_state"] = verdict.positions, stamp_s   # only then

    # after each control tick that produced a command (any output mode)
    validator.commanded(decision.command, now_s)
"""
from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_POSITION_MARGIN = (0.1,) * 6 + (0.01,)
"""rad / m beyond the URDF limits before a reading is impossible (calibration, contact)."""
DEFAULT_SPEED_FACTOR = 1.5
"""Plausible joint speed = this x the URDF velocity limit (an external push can exceed the
drives' own limit a little; a 1e6 rad or a swapped-arm sample exceeds it by orders)."""
DEFAULT_NOISE = (0.01,) * 6 + (0.002,)
"""rad / m: reading noise allowed on top of every distance check (two samples 1 ms apart)."""
DEFAULT_TRACKING_LAG_S = 0.1
"""s: commands this recent span the positions the arm may be at (its tracking lag; the safety
filter allows the same lag, ``|v| * max_input_age_s['joint_state']``, in its tracking rule)."""
DEFAULT_CONFIRMATIONS = 2
"""Consecutive mutually plausible readings needed when there is no recent accepted one."""
DEFAULT_REACQUIRE_AFTER_S = 0.1
"""s without an accepted reading after which the last one is no reference any more."""
DEFAULT_MAX_STAMP_LEAD_S = 0.1
"""s a reading's stamp may lie ahead of the consumer's clock."""

REJECTION_REASONS = ("malformed", "wrong_size", "non_finite", "stamp_not_finite", "outside_limits",
                     "stamp_in_future", "stamp_went_back", "implausible_speed", "unconfirmed",
                     "inconsistent_with_command")
"""Every rejection reason, in the order the checks run (``malformed``: the consumer could not
even extract the arm's values, see :meth:`JointReadingValidator.reject_malformed`)."""


@dataclass(frozen=True, eq=False)
class ReadingVerdict:
    """What the validator decided about one reading.

    Attributes
    ----------
    accepted : bool
    positions : np.ndarray or None
        The accepted reading (n,), a copy; None when rejected.
    reason : str
        One of :data:`REJECTION_REASONS`; empty when accepted.
    joints : tuple of int
        Joints that failed the check (limits, speed, consistency); empty otherwise.
    detail : str
        Human-readable numbers for /diagnostics.
    """

    accepted: bool
    positions: np.ndarray | None = None
    reason: str = ""
    joints: tuple[int, ...] = ()
    detail: str = ""


def _vector(name: str, value: object, size: int | None = None) -> np.ndarray:
    array = np.array(value, dtype=float).reshape(-1)
    if size is not None and array.size == 1:
        array = np.full(size, float(array[0]))
    if size is not None and array.size != size:
        raise ValueError(f"JointReadingValidator: {name} must be a scalar or {size} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"JointReadingValidator: {name} must be finite, got {array.tolist()}")
    array.setflags(write=False)
    return array


class JointReadingValidator:
    """Checks each joint reading of one arm before it is believed (see the module docstring).

    Parameters
    ----------
    lower, upper, max_velocity : array_like (n,)
        URDF position limits and velocity limits (rad, rad/s; m, m/s for the finger).
    position_margin, noise : array_like, optional
        Per joint or scalar; defaults :data:`DEFAULT_POSITION_MARGIN`, :data:`DEFAULT_NOISE`
        (for a 7-joint arm; required otherwise).
    speed_factor : float
        Plausible speed = ``speed_factor * max_velocity``, >= 1.
    max_tracking_error : array_like, optional
        Allowed distance outside the span of recent commands (default: the safety filter's
        :data:`~sim2real_vla_ros.core.control.safety.DEFAULT_MAX_TRACKING_ERROR`).
    tracking_lag_s : float
        Commands within this of the newest one form that span (> 0).
    confirmations : int
        Consecutive agreeing readings required with no recent reference (>= 1; 1 disables).
    reacquire_after_s : float
        A last accepted reading older than this (stamp time) is no reference any more (> 0).
    max_stamp_lead_s : float
        How far a stamp may lie ahead of ``now_s`` (when the consumer passes it; > 0).
    joint_names : sequence of str, optional
        For messages only.

    Notes
    -----
    Thread-safe (one lock): the joint-state callback calls :meth:`check`, the control tick
    :meth:`commanded`, a diagnostics timer :meth:`counters`.
    """

    def __init__(
        self,
        lower: Sequence[float],
        upper: Sequence[float],
        max_velocity: Sequence[float],
        *,
        position_margin: object = None,
        noise: object = None,
        speed_factor: float = DEFAULT_SPEED_FACTOR,
        max_tracking_error: object = None,
        tracking_lag_s: float = DEFAULT_TRACKING_LAG_S,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        reacquire_after_s: float = DEFAULT_REACQUIRE_AFTER_S,
        max_stamp_lead_s: float = DEFAULT_MAX_STAMP_LEAD_S,
        joint_names: Sequence[str] = (),
    ) -> None:
        from sim2real_vla_ros.core.control.safety import DEFAULT_MAX_TRACKING_ERROR

        self.lower = _vector("lower", lower)
        size = self.lower.size
        self.upper = _vector("upper", upper, size)
        if not np.all(self.lower < self.upper):
            raise ValueError("JointReadingValidator: lower must be < upper for every joint")
        self.max_velocity = _vector("max_velocity", max_velocity, size)

        def per_joint(name: str, value: object, default: tuple[float, ...]) -> np.ndarray:
            if value is None:
                if size != len(default):
                    raise ValueError(f"JointReadingValidator: {name} is required for a {size}-joint limb")
                value = default
            array = _vector(name, value, size)
            if np.any(array < 0):
                raise ValueError(f"JointReadingValidator: {name} must be >= 0, got {array.tolist()}")
            return array

        self.position_margin = per_joint("position_margin", position_margin, DEFAULT_POSITION_MARGIN)
        self.noise = per_joint("noise", noise, DEFAULT_NOISE)
        self.max_tracking_error = per_joint("max_tracking_error", max_tracking_error, DEFAULT_MAX_TRACKING_ERROR)
        if np.any(self.max_velocity <= 0):
            raise ValueError("JointReadingValidator: max_velocity must be > 0 for every joint")
        checks = {"speed_factor": (speed_factor, speed_factor >= 1.0, ">= 1"),
                  "tracking_lag_s": (tracking_lag_s, tracking_lag_s > 0, "> 0"),
                  "reacquire_after_s": (reacquire_after_s, reacquire_after_s > 0, "> 0"),
                  "max_stamp_lead_s": (max_stamp_lead_s, max_stamp_lead_s > 0, "> 0")}
        for name, (value, ok, rule) in checks.items():
            if not (math.isfinite(value) and ok):
                raise ValueError(f"JointReadingValidator: {name} must be finite and {rule}, got {value!r}")
        if int(confirmations) != confirmations or confirmations < 1:
            raise ValueError(f"JointReadingValidator: confirmations must be an integer >= 1, got {confirmations!r}")
        self.speed_factor = float(speed_factor)
        self.tracking_lag_s = float(tracking_lag_s)
        self.confirmations = int(confirmations)
        self.reacquire_after_s = float(reacquire_after_s)
        self.max_stamp_lead_s = float(max_stamp_lead_s)
        names = tuple(joint_names) or tuple(f"joint{i + 1}" for i in range(size))
        if len(names) != size:
            raise ValueError(f"JointReadingValidator: {len(names)} joint_names for {size} joints")
        self.joint_names = names
        self._max_speed = self.speed_factor * self.max_velocity
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_rejection = ""
        self._reference: tuple[np.ndarray, float] | None = None  # last accepted (positions, stamp)
        self._pending: tuple[np.ndarray, float] | None = None    # last plausible reading while confirming
        self._agreeing = 0
        self._commands: deque[tuple[float, np.ndarray]] = deque()
        # The span of the recent commands, widened by the allowance: kept up to date by commanded()
        # (50 Hz) so that check() (every sample, 200 Hz or more) only compares.
        self._span: tuple[np.ndarray, np.ndarray] | None = None
        self._allowance = self.max_tracking_error + self.noise
        self._bounds = (self.lower - self.position_margin, self.upper + self.position_margin)

    @classmethod
    def from_limits(cls, joint_limits: object, safety_limits: object = None, **overrides) -> "JointReadingValidator":
        """A validator for an arm from its URDF limits and (optionally) its safety filter's limits.

        Parameters
        ----------
        joint_limits : object
            ``lower``, ``upper``, ``velocity`` (and ``names``) arrays, e.g.
            ``robot.arm_limits(arm)``: the URDF, not the filter's narrowed limits.
        safety_limits : SafetyLimits, optional
            Supplies ``max_tracking_error`` and, from ``max_input_age_s['joint_state']``,
            ``reacquire_after_s`` and ``tracking_lag_s`` (both that age).
        **overrides
            Any constructor keyword.
        """
        options: dict[str, object] = {"joint_names": tuple(getattr(joint_limits, "names", ()) or ())}
        if safety_limits is not None:
            options["max_tracking_error"] = safety_limits.max_tracking_error
            age = dict(safety_limits.max_input_age_s).get("joint_state")
            if age:
                options["reacquire_after_s"] = float(age)
                options["tracking_lag_s"] = float(age)
        options.update(overrides)
        return cls(joint_limits.lower, joint_limits.upper, joint_limits.velocity, **options)

    @property
    def num_joints(self) -> int:
        return int(self.lower.size)

    @property
    def last_accepted(self) -> tuple[np.ndarray, float] | None:
        """Copy of the last accepted ``(positions, stamp_s)`` (None before the first)."""
        with self._lock:
            return None if self._reference is None else (self._reference[0].copy(), self._reference[1])

    # ------------------------------------------------------------------ inputs
    def check(self, positions: object, stamp_s: float, now_s: float | None = None) -> ReadingVerdict:
        """Validate one reading; accepted readings become the reference for the next ones.

        Parameters
        ----------
        positions : array_like (n,)
            The arm's reading (joints 1-6 rad, joint7 finger m), e.g. from
            ``arm_state_from_joint_state``.
        stamp_s : float
            The reading's header stamp (s), the clock of the consumer's ``now_s``.
        now_s : float, optional
            The consumer's current time: enables the ``stamp_in_future`` check.

        Returns
        -------
        ReadingVerdict
            Store ``verdict.positions`` (and ``stamp_s`` as the joint state's stamp) only when
            ``verdict.accepted``; otherwise keep the previous ones so that the input ages.
        """
        verdict = self._judge(positions, stamp_s, now_s)
        with self._lock:
            self._count(verdict)
        return verdict

    def reject_malformed(self, detail: str = "") -> ReadingVerdict:
        """Count a message the consumer could not turn into a reading (names missing, NaN)."""
        verdict = ReadingVerdict(False, reason="malformed", detail=str(detail))
        with self._lock:
            self._count(verdict)
        return verdict

    def commanded(self, command: object, stamp_s: float) -> None:
        """Record a command sent to the arm at ``stamp_s`` (for the consistency check).

        Call after every tick that sent a command (the safety filter's ``decision.command``),
        in every output mode; at start-up, optionally with the arm controller's current
        reference. Non-finite commands and stamps are ignored. A stamp earlier than the newest
        recorded (a clock jump back) restarts the history.
        """
        vector = np.array(command, dtype=float).reshape(-1)
        if vector.size != self.num_joints or not np.all(np.isfinite(vector)) or not math.isfinite(stamp_s):
            return
        with self._lock:
            if self._commands and stamp_s < self._commands[-1][0]:
                self._commands.clear()
            self._commands.append((float(stamp_s), vector))
            horizon = stamp_s - self.tracking_lag_s
            while len(self._commands) > 1 and self._commands[0][0] < horizon:
                self._commands.popleft()
            recent = np.array([recorded for _, recorded in self._commands])
            self._span = (recent.min(axis=0) - self._allowance, recent.max(axis=0) + self._allowance)

    def reset_time(self) -> None:
        """The clock jumped back (a restarted /clock, a system time step): forget every stamp.

        The next readings are confirmed afresh; the command history is kept (its span still
        describes where the arm may be) until the next command restarts it.
        """
        with self._lock:
            self._reference = None
            self._pending = None
            self._agreeing = 0

    def reset(self) -> None:
        """Forget everything but the counters (the arm was moved on purpose, e.g. a simulator reset)."""
        with self._lock:
            self._reference = None
            self._pending = None
            self._agreeing = 0
            self._commands.clear()
            self._span = None

    # ------------------------------------------------------------------ outputs
    def counters(self) -> dict[str, int | str]:
        """``{'accepted': n, 'rejected:<reason>': n, ..., 'last_rejection': text}`` for /diagnostics."""
        with self._lock:
            snapshot: dict[str, int | str] = dict(sorted(self._counts.items()))
            snapshot["last_rejection"] = self._last_rejection or "none"
            return snapshot

    def rejected(self, reason: str | None = None) -> int:
        """Rejections so far, of one reason or of all."""
        with self._lock:
            if reason is not None:
                return self._counts.get(f"rejected:{reason}", 0)
            return sum(n for key, n in self._counts.items() if key.startswith("rejected:"))

    # ------------------------------------------------------------------ internals
    def _count(self, verdict: ReadingVerdict) -> None:
        key = "accepted" if verdict.accepted else f"rejected:{verdict.reason}"
        self._counts[key] = self._counts.get(key, 0) + 1
        if not verdict.accepted:
            joints = ", ".join(self.joint_names[j] for j in verdict.joints)
            self._last_rejection = f"{verdict.reason}" + (f" ({joints})" if joints else "") + \
                (f": {verdict.detail}" if verdict.detail else "")

    def _reject(self, reason: str, joints: np.ndarray | tuple = (), detail: str = "") -> ReadingVerdict:
        index = tuple(np.flatnonzero(joints).tolist()) if isinstance(joints, np.ndarray) else tuple(joints)
        return ReadingVerdict(False, None, reason, index, detail)

    def _too_far(self, a: np.ndarray, b: np.ndarray, elapsed: float) -> np.ndarray:
        return np.abs(a - b) > self.noise + self._max_speed * max(elapsed, 0.0)

    def _judge(self, positions: object, stamp_s: float, now_s: float | None) -> ReadingVerdict:
        try:
            vector = np.array(positions, dtype=float).reshape(-1)
        except (TypeError, ValueError) as error:
            return self._reject("wrong_size", detail=f"not numeric: {error}")
        if vector.size != self.num_joints:
            return self._reject("wrong_size", detail=f"{vector.size} values, expected {self.num_joints}")
        finite = np.isfinite(vector)
        if not finite.all():
            return self._reject("non_finite", ~finite)
        if not (isinstance(stamp_s, (int, float)) and math.isfinite(stamp_s)):
            return self._reject("stamp_not_finite", detail=repr(stamp_s))
        low, high = self._bounds
        outside = (vector < low) | (vector > high)
        if outside.any():
            return self._reject("outside_limits", outside, np.array2string(vector[outside], precision=4))
        if now_s is not None and math.isfinite(now_s) and stamp_s > now_s + self.max_stamp_lead_s:
            return self._reject("stamp_in_future", detail=f"stamp {stamp_s:.3f} s, now {now_s:.3f} s")
        with self._lock:
            reference = self._reference
            if reference is not None and stamp_s < reference[1]:
                return self._reject("stamp_went_back", detail=f"stamp {stamp_s:.3f} s < {reference[1]:.3f} s")
            if reference is not None and stamp_s - reference[1] <= self.reacquire_after_s:
                far = self._too_far(vector, reference[0], stamp_s - reference[1])
                if far.any():
                    return self._reject("implausible_speed", far,
                                        f"moved {np.array2string(np.abs(vector - reference[0])[far], precision=4)} "
                                        f"in {stamp_s - reference[1]:.4f} s")
            else:
                # No recent reference: the reading must agree with its predecessors first.
                pending = self._pending
                agrees = pending is not None and stamp_s >= pending[1] and \
                    not self._too_far(vector, pending[0], stamp_s - pending[1]).any()
                self._agreeing = self._agreeing + 1 if agrees else 1
                self._pending = (vector, float(stamp_s))
                if self._agreeing < self.confirmations:
                    return self._reject("unconfirmed", detail=f"{self._agreeing} of {self.confirmations} "
                                                              "agreeing readings")
            off = self._off_command(vector)
            if off is not None:
                return self._reject("inconsistent_with_command", off[0], off[1])
            self._reference = (vector, float(stamp_s))
            # Should the reference go stale, confirmation starts afresh from new readings.
            self._pending, self._agreeing = None, 0
        return ReadingVerdict(True, vector.copy())

    def _off_command(self, vector: np.ndarray) -> tuple[np.ndarray, str] | None:
        """Joints further outside the span of recent commands than the tracking allowance."""
        if self._span is None:
            return None
        low, high = self._span
        off = (vector < low) | (vector > high)
        if not off.any():
            return None
        distance = np.maximum(low - vector, vector - high) + self._allowance
        return off, f"{np.array2string(distance[off], precision=4)} outside the commanded span"


class ValidatedJointState:
    """A consumer's measured joint state that only ever holds accepted readings.

    The reference consumer of :class:`JointReadingValidator`: :meth:`update` stores a reading
    (and its stamp) only when the validator accepts it, so a rejected reading leaves the
    previous state and stamp in place; as the stamp ages, the safety filter's stale-input hold
    stops the arm. Thread-safe.

    Parameters
    ----------
    validator : JointReadingValidator
    """

    def __init__(self, validator: JointReadingValidator) -> None:
        self.validator = validator
        self._lock = threading.Lock()
        self._positions: np.ndarray | None = None
        self._stamp: float | None = None

    def update(self, positions: object, stamp_s: float, now_s: float | None = None) -> ReadingVerdict:
        """Validate a reading and store it if accepted (see :meth:`JointReadingValidator.check`)."""
        verdict = self.validator.check(positions, stamp_s, now_s)
        if verdict.accepted:
            with self._lock:
                self._positions, self._stamp = verdict.positions, float(stamp_s)
        return verdict

    def malformed(self, detail: str = "") -> ReadingVerdict:
        """A message that could not be read (counted; nothing stored)."""
        return self.validator.reject_malformed(detail)

    def commanded(self, command: object, stamp_s: float) -> None:
        """Forward a sent command to the validator (see :meth:`JointReadingValidator.commanded`)."""
        self.validator.commanded(command, stamp_s)

    @property
    def latest(self) -> tuple[np.ndarray | None, float | None]:
        """``(positions, stamp_s)`` of the last accepted reading; ``(None, None)`` before one.

        Give ``positions`` to the filter as ``measured`` and ``stamp_s`` as
        ``input_stamps['joint_state']``.
        """
        with self._lock:
            return (None if self._positions is None else self._positions.copy()), self._stamp

    def reset(self) -> None:
        """Forget the stored state and the validator's references (the arm was moved on purpose)."""
        self.validator.reset()
        with self._lock:
            self._positions, self._stamp = None, None


def validator_diagnostics(validator: JointReadingValidator, prefix: str = "joint_reading.") -> Mapping[str, object]:
    """The validator's counters as /diagnostics values (``joint_reading.rejected:<reason>`` ...)."""
    return {f"{prefix}{key}": value for key, value in validator.counters().items()}


__all__ = ["DEFAULT_CONFIRMATIONS", "DEFAULT_MAX_STAMP_LEAD_S", "DEFAULT_NOISE", "DEFAULT_POSITION_MARGIN",
           "DEFAULT_REACQUIRE_AFTER_S", "DEFAULT_SPEED_FACTOR", "DEFAULT_TRACKING_LAG_S", "JointReadingValidator",
           "REJECTION_REASONS", "ReadingVerdict", "ValidatedJointState", "validator_diagnostics"]
