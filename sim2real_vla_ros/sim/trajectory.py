"""joint_trajectory_controller semantics as a pure, ROS-free class.

The simulator (and the piper_driver node) execute ``/<arm>_arm_controller/joint_trajectory``
messages with this class, so that the rest of the stack sees the behaviour it will see from
ros2_controllers' joint_trajectory_controller (JTC) on the real robot. Inputs are plain
Python: joint names, :class:`TrajectoryPoint` items (or mappings with the same keys) and
times in seconds.

Which behaviour is modelled
---------------------------
``replacement="replace"`` (the default) models JTC **as released** for Humble, Jazzy and
Kilted (topic interface; ``joint_trajectory_controller.cpp`` ``topic_callback`` /
``update``, ``trajectory.cpp`` ``sample``):

* A new trajectory **replaces the old one outright** (nothing of the old one is kept).
* ``stamp_s == 0`` means "start now"; a positive stamp is the absolute start time and
  ``time_from_start`` is relative to it. A trajectory with a non-zero stamp whose last point
  is already in the past is rejected ("ends in the past"); the current one continues.
* The new trajectory starts from a *point before the trajectory* taken when it is accepted:
  the **measured** state (``anchor="measured"``: JTC's default) or the **desired** state of
  the trajectory being replaced (``anchor="desired"``: ``interpolate_from_desired_state``
  (Jazzy, Kilted) / ``open_loop_control`` (Humble) set to true). The measured anchor carries
  zero velocity here (callers pass positions only); the desired one carries the desired
  velocity.
* A **future stamp starts interpolating at once**: from the anchor at "now" to the first point
  at ``stamp + time_from_start`` (JTC does not wait for the stamp). A first point at or before
  now (e.g. stamp 0 and ``time_from_start`` 0) is a step; points already past are not skipped:
  the sample lands mid-trajectory, as JTC's does.
* **Out-of-limit points are not rejected** (JTC has no position-limit check on trajectories);
  the sampled setpoint is clipped to the limits here, as the simulated (and the driver's)
  hardware does, and every clipped sample is counted in :attr:`TrajectoryFollower.clipped_samples`.
  ``reject_out_of_limits=True`` rejects them instead.

``replacement="splice"`` models the trajectory splicing that exists only on ros2_controllers'
master (not in a release): the current trajectory keeps running until the new start time
``t_s = max(start, now)`` where the new one is spliced in from the desired state at ``t_s``
(position and velocity, so the splice is continuous); points already past are skipped and a
trajectory whose points are all past is rejected.

Common to both: after the last point its position is held. Joint names may come in any order
but must be exactly the controller's joints (``allow_partial_joints_goal: false``). NaN/Inf,
negative or non-increasing ``time_from_start``, an empty point list and a bad stamp are
rejected with a reason; rejection never raises. Interpolation ``linear`` (positions only;
given velocities are ignored; this is what JTC's ``splines`` does for points without
velocities) or ``cubic`` (Hermite; JTC uses it only when the points carry velocities). For
cubic, a point's velocities are used when given; otherwise they are estimated with a monotone
(Fritsch-Carlson) rule: the three-point slope, set to zero at local extrema and limited to
three times the neighbouring secant slopes, so the curve never overshoots the waypoints. The
last point's velocity is zero when not given.

Not modelled: tolerances and goal aborts, ``cmd_timeout``, the action interface, partial
goals, angle wrap-around, quintic splines, the JTC's own update-rate sampling.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

INTERPOLATION_METHODS = ("linear", "cubic")
REPLACEMENTS = ("replace", "splice")
"""``replace``: JTC as released (Humble/Jazzy/Kilted); ``splice``: ros2_controllers master."""
ANCHORS = ("measured", "desired")
"""Where a replacing trajectory starts: JTC's default, or interpolate_from_desired_state."""


class RejectReason(str, Enum):
    """Why a trajectory was rejected (a string enum, handy as a counter key or log field)."""

    EMPTY_POINTS = "empty_points"
    UNKNOWN_JOINT = "unknown_joint"
    MISSING_JOINT = "missing_joint"
    DUPLICATE_JOINT = "duplicate_joint"
    SIZE_MISMATCH = "size_mismatch"
    NON_FINITE = "non_finite"
    TIME_NOT_INCREASING = "time_not_increasing"
    OUT_OF_LIMITS = "out_of_limits"
    BAD_STAMP = "bad_stamp"
    ALL_POINTS_IN_PAST = "all_points_in_past"
    NO_CURRENT_STATE = "no_current_state"


@dataclass(frozen=True)
class TrajectoryPoint:
    """One waypoint: positions in the message's joint order, time relative to the start.

    From a ``trajectory_msgs/JointTrajectoryPoint`` ``p``::

        TrajectoryPoint(list(p.positions),
                        p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec,
                        list(p.velocities) or None)
    """

    positions: Sequence[float]
    time_from_start: float
    velocities: Optional[Sequence[float]] = None


PointLike = Union[TrajectoryPoint, Mapping]


@dataclass(frozen=True)
class Acceptance:
    """Result of :meth:`TrajectoryFollower.accept`; truthy when accepted.

    Attributes
    ----------
    ok : bool
        True when the trajectory was taken.
    reason : str
        Human-readable reason for a rejection (names the joint / point); empty when accepted.
    code : RejectReason or None
        Machine-readable rejection reason, None when accepted.
    start_time : float or None
        Absolute time the new trajectory was spliced in (``max(start, now)``) when accepted.
    skipped_points : int
        Points dropped because their time was already past.
    """

    ok: bool
    reason: str = ""
    code: Optional[RejectReason] = None
    start_time: Optional[float] = None
    skipped_points: int = 0

    def __bool__(self) -> bool:
        return self.ok


def _reject(code: RejectReason, message: str) -> Acceptance:
    return Acceptance(ok=False, reason=f"{code.value}: {message}", code=code)


def _as_point(point: PointLike) -> TrajectoryPoint:
    if isinstance(point, TrajectoryPoint):
        return point
    if isinstance(point, Mapping):
        return TrajectoryPoint(
            positions=point.get("positions", ()),
            time_from_start=point.get("time_from_start", float("nan")),
            velocities=point.get("velocities"),
        )
    raise TypeError(f"trajectory point must be TrajectoryPoint or a mapping, got {type(point).__name__}")


class TrajectoryFollower:
    """Executes joint trajectories for one controller (one arm) with JTC semantics.

    Parameters
    ----------
    joint_names : sequence of str
        The controller's joints, in the order of every array this class returns.
    lower, upper : array_like
        Position limits per joint (same order). Waypoints outside are rejected.
    interpolation : {'linear', 'cubic'}
        Interpolation between waypoints (see the module docstring).
    limit_tolerance : float
        Slack allowed on the position limits, so values that went through a float round trip
        (e.g. the 0.035 m finger limit) are not rejected.
    replacement : {'replace', 'splice'}
        What a new trajectory does to the current one (see the module docstring).
    anchor : {'measured', 'desired'}
        ``replace`` only: the state a new trajectory starts from.
    reject_out_of_limits : bool
        Reject waypoints outside the limits (JTC accepts them; default False).

    Notes
    -----
    Not thread-safe: call it from one thread (the simulator's step loop), or guard it.
    Internally the follower keeps a list of knots ``(time, position, velocity)``; before a
    :meth:`hold` or a first :meth:`accept` it has no state and :meth:`sample` raises.
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        lower: Sequence[float],
        upper: Sequence[float],
        interpolation: str = "linear",
        limit_tolerance: float = 1e-6,
        replacement: str = "replace",
        anchor: str = "measured",
        reject_out_of_limits: bool = False,
    ) -> None:
        self.joint_names = list(joint_names)
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ValueError(f"joint_names must be non-empty and unique, got {self.joint_names}")
        self.lower = np.asarray(lower, dtype=float).reshape(-1)
        self.upper = np.asarray(upper, dtype=float).reshape(-1)
        n = len(self.joint_names)
        if self.lower.shape != (n,) or self.upper.shape != (n,):
            raise ValueError(f"lower/upper must have {n} values (one per joint)")
        if np.any(self.lower > self.upper):
            raise ValueError("lower limit above upper limit for some joint")
        if interpolation not in INTERPOLATION_METHODS:
            raise ValueError(f"interpolation must be one of {INTERPOLATION_METHODS}, got {interpolation!r}")
        self.interpolation = interpolation
        if replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}")
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        self.replacement = replacement
        self.anchor = anchor
        self.reject_out_of_limits = bool(reject_out_of_limits)
        self.out_of_limit_points = 0
        self.limit_tolerance = float(limit_tolerance)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._times = np.zeros(0)
        self._pos = np.zeros((0, n))
        self._vel = np.zeros((0, n))
        self._active = False
        self.accepted_count = 0
        self.rejection_counts: Counter = Counter()
        self.clipped_samples = 0

    # ------------------------------------------------------------------ state
    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def has_state(self) -> bool:
        """True once :meth:`hold` or :meth:`accept` gave the follower a desired state."""
        return self._times.size > 0

    @property
    def active(self) -> bool:
        """True while the state comes from an accepted trajectory (False after :meth:`hold`)."""
        return self._active

    @property
    def knot_count(self) -> int:
        """Number of stored knots (old ones are pruned on every accept, so this stays small)."""
        return int(self._times.size)

    @property
    def end_time(self) -> Optional[float]:
        """Absolute time of the last knot (None without state)."""
        return float(self._times[-1]) if self.has_state else None

    def finished(self, now_s: float) -> bool:
        """True when there is nothing left to execute at ``now_s`` (holding or no state)."""
        return not self.has_state or now_s >= self._times[-1]

    def hold(self, positions: Sequence[float], now_s: float = 0.0) -> None:
        """Drop any trajectory and hold ``positions`` (controller order), e.g. after a reset."""
        q = np.asarray(positions, dtype=float).reshape(-1)
        if q.shape != (self.num_joints,) or not np.all(np.isfinite(q)):
            raise ValueError(f"hold needs {self.num_joints} finite positions, got {positions!r}")
        self._times = np.array([float(now_s)])
        self._pos = q[None, :].copy()
        self._vel = np.zeros((1, self.num_joints))
        self._active = False

    # --------------------------------------------------------------- sampling
    def sample(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Desired ``(positions, velocities)`` at ``now_s``, in controller joint order."""
        if not self.has_state:
            raise RuntimeError("TrajectoryFollower has no state: call hold() or accept() first")
        q, v = self._sample_raw(float(now_s))
        clipped = np.clip(q, self.lower, self.upper)
        if np.any(clipped != q):
            self.clipped_samples += 1
        return clipped, v

    def setpoint(self, now_s: float) -> np.ndarray:
        """Desired positions at ``now_s`` (see :meth:`sample`)."""
        return self.sample(now_s)[0]

    def _sample_raw(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        times = self._times
        if t <= times[0]:
            return self._pos[0].copy(), np.zeros(self.num_joints)
        if t >= times[-1]:
            return self._pos[-1].copy(), np.zeros(self.num_joints)
        i = int(np.searchsorted(times, t, side="right")) - 1
        return self._interpolate(i, t)

    def _interpolate(self, i: int, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Segment ``i`` (knot i to i+1) evaluated at time ``t`` inside it."""
        t0, t1 = self._times[i], self._times[i + 1]
        q0, q1 = self._pos[i], self._pos[i + 1]
        h = t1 - t0
        s = (t - t0) / h
        if self.interpolation == "linear":
            return q0 + (q1 - q0) * s, (q1 - q0) / h
        v0, v1 = self._vel[i], self._vel[i + 1]
        # Cubic Hermite basis on s in [0, 1]; velocities scale by the segment length h.
        s2, s3 = s * s, s * s * s
        h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
        q = h00 * q0 + h10 * h * v0 + h01 * q1 + h11 * h * v1
        d00, d10, d01, d11 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, -6 * s2 + 6 * s, 3 * s2 - 2 * s
        v = (d00 * q0 + d01 * q1) / h + d10 * v0 + d11 * v1
        return q, v

    # -------------------------------------------------------------- accepting
    def accept(
        self,
        names: Sequence[str],
        points: Iterable[PointLike],
        stamp_s: float,
        now_s: float,
        current_positions: Optional[Sequence[float]] = None,
    ) -> Acceptance:
        """Validate a trajectory and splice it in; never raises on bad message content.

        Parameters
        ----------
        names : sequence of str
            ``JointTrajectory.joint_names`` (any order, exactly the controller's joints).
        points : iterable of TrajectoryPoint or mapping
            Waypoints, ``positions`` in the order of ``names``.
        stamp_s : float
            ``header.stamp`` in seconds; 0 means "start now".
        now_s : float
            Current (sim) time in seconds.
        current_positions : sequence of float, optional
            Measured positions (controller order): the start state of a replacing trajectory
            with ``anchor="measured"``, and of any first trajectory.

        Returns
        -------
        Acceptance
            ``ok`` and, when rejected, ``reason`` / ``code``. Rejections are also counted in
            :attr:`rejection_counts`.
        """
        try:
            result = self._accept(names, points, float(stamp_s), float(now_s), current_positions)
        except (TypeError, ValueError) as exc:  # malformed containers: still a rejection, not a crash
            result = _reject(RejectReason.SIZE_MISMATCH, f"malformed trajectory ({exc})")
        if result.ok:
            self.accepted_count += 1
        else:
            self.rejection_counts[result.code] += 1
        return result

    def _accept(self, names, points, stamp_s, now_s, current_positions) -> Acceptance:
        points = [_as_point(p) for p in points]
        order_or_reject = self._map_names(list(names))
        if isinstance(order_or_reject, Acceptance):
            return order_or_reject
        order = order_or_reject  # order[k] = controller index of message column k
        if not points:
            return _reject(RejectReason.EMPTY_POINTS, "trajectory has no points")
        parsed = self._parse_points(points, order)
        if isinstance(parsed, Acceptance):
            return parsed
        times, pos, vel = parsed
        if not math.isfinite(stamp_s) or stamp_s < 0.0:
            return _reject(RejectReason.BAD_STAMP, f"header stamp {stamp_s} is not a time >= 0")

        start = now_s if stamp_s == 0.0 else stamp_s
        abs_times = start + times
        if self.replacement == "replace":
            return self._replace(now_s, stamp_s, abs_times, pos, vel, current_positions)
        keep = abs_times >= now_s
        skipped = int(np.count_nonzero(~keep))
        if not np.any(keep):
            return _reject(
                RejectReason.ALL_POINTS_IN_PAST,
                f"all {len(times)} points are before now ({now_s:.3f} s; last at {abs_times[-1]:.3f} s)",
            )
        splice = max(start, now_s)
        anchor = self._anchor_state(splice, current_positions)
        if isinstance(anchor, Acceptance):
            return anchor
        self._splice(now_s, splice, anchor, abs_times[keep], pos[keep], [vel[i] for i in np.flatnonzero(keep)])
        self._active = True
        return Acceptance(ok=True, start_time=splice, skipped_points=skipped)

    def _replace(self, now_s, stamp_s, abs_times, pos, vel, current_positions) -> Acceptance:
        """JTC as released: the new trajectory replaces the old one, from a point before it."""
        if stamp_s != 0.0 and abs_times[-1] < now_s:
            return _reject(RejectReason.ALL_POINTS_IN_PAST,
                           f"trajectory ends in the past (last point at {abs_times[-1]:.3f} s, now {now_s:.3f} s)")
        anchor = self._replace_anchor(now_s, current_positions)
        if isinstance(anchor, Acceptance):
            return anchor
        anchor_q, anchor_v = anchor
        if abs_times[0] > now_s:
            times = np.concatenate([[now_s], abs_times])
            positions = [anchor_q] + list(pos)
            velocities = [anchor_v] + self._estimate_velocities(now_s, anchor_q, anchor_v, abs_times, pos, vel)
        else:  # first point at or before now: a step onto the trajectory (mid-way if points are past)
            times = np.asarray(abs_times, dtype=float)
            positions = list(pos)
            velocities = self._estimate_velocities(abs_times[0], pos[0], np.zeros(self.num_joints), abs_times,
                                                   pos, vel)
        self._times = np.asarray(times, dtype=float)
        self._pos = np.asarray(positions, dtype=float).reshape(len(times), self.num_joints)
        self._vel = np.asarray(velocities, dtype=float).reshape(len(times), self.num_joints)
        self._active = True
        skipped = int(np.count_nonzero(abs_times < now_s))
        return Acceptance(ok=True, start_time=float(now_s), skipped_points=skipped)

    def _replace_anchor(self, now_s, current_positions):
        measured = None
        if current_positions is not None:
            q = np.asarray(current_positions, dtype=float).reshape(-1)
            if q.shape == (self.num_joints,) and np.all(np.isfinite(q)):
                measured = q
        if self.anchor == "desired" and self.has_state:
            return self._sample_raw(now_s)
        if measured is not None:
            return measured, np.zeros(self.num_joints)
        if self.has_state:  # no measurement given: the desired state is the best estimate
            return self._sample_raw(now_s)
        return _reject(RejectReason.NO_CURRENT_STATE,
                       f"no desired state yet and no valid current_positions ({self.num_joints} finite values)")

    def _map_names(self, names: list) -> Union[list, Acceptance]:
        seen = set()
        for name in names:
            if name in seen:
                return _reject(RejectReason.DUPLICATE_JOINT, f"joint {name!r} appears twice")
            seen.add(name)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            return _reject(
                RejectReason.UNKNOWN_JOINT, f"unknown joint(s) {unknown}; controller joints are {self.joint_names}"
            )
        missing = [n for n in self.joint_names if n not in seen]
        if missing:
            return _reject(RejectReason.MISSING_JOINT, f"missing joint(s) {missing} (partial goals not allowed)")
        return [self._index[n] for n in names]

    def _parse_points(self, points: list, order: list):
        """Reorder to controller order and validate; returns (times, pos, vel list) or a rejection."""
        n = self.num_joints
        times = np.empty(len(points))
        pos = np.empty((len(points), n))
        vel: list = []
        for k, p in enumerate(points):
            q = np.asarray(p.positions, dtype=float).reshape(-1)
            if q.shape != (n,):
                return _reject(RejectReason.SIZE_MISMATCH, f"point {k} has {q.size} positions, expected {n}")
            v = None
            if p.velocities is not None and len(p.velocities) > 0:  # empty = not given, as in the msg
                v = np.asarray(p.velocities, dtype=float).reshape(-1)
                if v.shape != (n,):
                    return _reject(RejectReason.SIZE_MISMATCH, f"point {k} has {v.size} velocities, expected {n}")
            t = float(p.time_from_start)
            if not (np.all(np.isfinite(q)) and math.isfinite(t) and (v is None or np.all(np.isfinite(v)))):
                return _reject(RejectReason.NON_FINITE, f"point {k} contains NaN or Inf")
            pos[k, order] = q
            if v is not None:
                v_ordered = np.empty(n)
                v_ordered[order] = v
                v = v_ordered
            vel.append(v)
            times[k] = t
        if times[0] < 0.0:
            return _reject(RejectReason.TIME_NOT_INCREASING, f"point 0 time_from_start {times[0]} is negative")
        bad = np.flatnonzero(np.diff(times) <= 0.0)
        if bad.size:
            k = int(bad[0]) + 1
            return _reject(
                RejectReason.TIME_NOT_INCREASING,
                f"point {k} time_from_start {times[k]} is not after point {k - 1} ({times[k - 1]})",
            )
        tol = self.limit_tolerance
        outside = (pos < self.lower - tol) | (pos > self.upper + tol)
        if np.any(outside) and not self.reject_out_of_limits:
            self.out_of_limit_points += int(np.count_nonzero(np.any(outside, axis=1)))
            return times, pos, vel  # kept as sent (JTC); samples are clipped and counted
        if np.any(outside):
            k, j = (int(x) for x in np.argwhere(outside)[0])
            return _reject(
                RejectReason.OUT_OF_LIMITS,
                f"point {k} joint {self.joint_names[j]!r} = {pos[k, j]:.6g} outside "
                f"[{self.lower[j]:.6g}, {self.upper[j]:.6g}]",
            )
        return times, np.clip(pos, self.lower, self.upper), vel

    def _anchor_state(self, splice: float, current_positions):
        """Desired (q, v) at the splice time, or the measured state when there is no desired one."""
        if self.has_state:
            return self._sample_raw(splice)
        if current_positions is None:
            return _reject(RejectReason.NO_CURRENT_STATE, "no desired state yet and no current_positions given")
        q = np.asarray(current_positions, dtype=float).reshape(-1)
        if q.shape != (self.num_joints,) or not np.all(np.isfinite(q)):
            return _reject(
                RejectReason.NO_CURRENT_STATE, f"current_positions must be {self.num_joints} finite values"
            )
        return q, np.zeros(self.num_joints)

    def _splice(self, now: float, splice: float, anchor, new_times, new_pos, new_vel) -> None:
        """Keep the old knots before ``splice``, add the anchor, then the new knots."""
        old_idx = np.flatnonzero(self._times < splice)
        # The follower is sampled at times >= now from here on, so old knots before the last
        # one at or before ``now`` can go; this keeps the knot list short under streaming.
        at_or_before_now = old_idx[self._times[old_idx] <= now]
        if at_or_before_now.size > 1:
            old_idx = old_idx[old_idx >= at_or_before_now[-1]]
        times = [self._times[i] for i in old_idx]
        pos = [self._pos[i] for i in old_idx]
        vel = [self._vel[i] for i in old_idx]
        anchor_q, anchor_v = anchor
        if new_times[0] > splice:
            times.append(splice)
            pos.append(anchor_q)
            vel.append(anchor_v)
        fixed_v = [v for v in new_vel]
        estimated = self._estimate_velocities(splice, anchor_q, anchor_v, new_times, new_pos, fixed_v)
        times.extend(new_times)
        pos.extend(new_pos)
        vel.extend(estimated)
        self._times = np.asarray(times, dtype=float)
        self._pos = np.asarray(pos, dtype=float).reshape(len(times), self.num_joints)
        self._vel = np.asarray(vel, dtype=float).reshape(len(times), self.num_joints)

    def _estimate_velocities(self, splice, anchor_q, anchor_v, times, pos, given) -> list:
        """Velocities of the new knots: given ones kept, the rest by the monotone rule."""
        n = self.num_joints
        if self.interpolation == "linear":
            return [np.zeros(n) for _ in times]  # unused by linear sampling
        # Knot sequence used for slopes: the anchor (if distinct) followed by the new points.
        if times[0] > splice:
            t_all = np.concatenate([[splice], times])
            q_all = np.vstack([anchor_q[None, :], pos])
            offset = 1
        else:
            t_all, q_all, offset = np.asarray(times), np.asarray(pos), 0
        secants = np.diff(q_all, axis=0) / np.diff(t_all)[:, None]  # slope of each segment
        result = []
        last = len(times) - 1
        for k in range(len(times)):
            if given[k] is not None:
                result.append(given[k])
                continue
            i = k + offset  # index in the combined sequence
            if k == last or i == 0:
                result.append(np.zeros(n))  # end: held afterwards; start without anchor: a step
                continue
            d_prev, d_next = secants[i - 1], secants[i]
            h_prev, h_next = t_all[i] - t_all[i - 1], t_all[i + 1] - t_all[i]
            three_point = (h_next * d_prev + h_prev * d_next) / (h_prev + h_next)
            limit = 3.0 * np.minimum(np.abs(d_prev), np.abs(d_next))
            v = np.where(d_prev * d_next > 0.0, np.clip(three_point, -limit, limit), 0.0)
            result.append(v)
        return result
