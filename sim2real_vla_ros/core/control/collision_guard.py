"""Collision guard in front of every joint command of one arm (pure, ROS-free).

One :class:`CollisionGuard` per arm. Before a setpoint is sent, :meth:`CollisionGuard.check`
poses a kinematic copy of the robot (:class:`sim2real_vla_ros.core.control.collision.CollisionScene`:
the URDF's collision primitives in MuJoCo, the same geometry the simulator collides and the
SRDF's matrix was computed on) with this arm at the setpoint and the other arm at its last
reading, and measures the signed distance of every checked link pair that involves this arm:

* ``self``       this arm against itself (non-adjacent links, and its own base);
* ``arm_arm``    this arm against the other arm;
* ``table``      this arm against the table;
* ``body``       this arm against the fixed robot parts (robot body, arm bases, camera mast,
                 ``cam_high``).

The setpoint passes when every distance is at least the margin of its kind plus the motion
allowances below; otherwise the verdict says which pair, how close, and the reason is counted.
The guard never reads a clock and holds no ROS objects.

Motion between readings (the other arm)
---------------------------------------
Each actor knows only its own commands; the other arm's configuration comes from
``/joint_states``, ``other_age_s`` old, and keeps moving while this setpoint is executed. The
guard assumes it moves at most ``other_velocity_bound`` (per joint, rad/s and m/s) during
``other_age_s + horizon_s`` (``horizon_s``: until this arm's next check, one control period by
default), and inflates every arm-arm distance requirement by the farthest that motion can
carry any point of the other arm's surface::

    other_sweep = sum_i radius_i * bound_i * (other_age_s + horizon_s) + bound_finger * (...)

with ``radius_i`` a configuration-independent upper bound of the distance from joint i's axis
to the arm's geometry (:meth:`CollisionScene.motion_radii`). A good ``other_velocity_bound`` is
the other arm's measured speed plus what its acceleration limit adds within that time, capped
at its velocity limit (:func:`velocity_bound`). A reading older than ``max_other_age_s``
(default 0.1 s, the actors' joint-state age limit) or none at all blocks arm-arm checks
(reason ``other_state_stale``): no pair can be proved clear without knowing where the arm is.

Motion of this arm between two checks
-------------------------------------
With ``own_from_q7`` (the command sent last tick) the distances to the other arm and the fixed
parts must also cover how far the straight joint-space step from it can move any point
(``sum_i radius_i |dq_i|``), so a thin obstacle cannot slip between two checked setpoints.
Self pairs are not inflated (only the joints between the two links move them relative to
each other, a few millimetres per tick); the two fingers of a gripper are never checked
against each other (:data:`core.collision.FINGER_PAIRS`).
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import mujoco
import numpy as np

from sim2real_vla_ros.core.control import collision
from sim2real_vla_ros.core.vocabulary import ARMS

GUARD_KINDS = ("self", "arm_arm", "table", "body")
DEFAULT_MARGINS_M: Dict[str, float] = {
    # Between the arms: the hand-over tasks bring the grippers within a few centimetres.
    "arm_arm": 0.02,
    # Non-adjacent links of one arm: the primitives sit 8 mm apart at the wrist (link3 / link5)
    # in the paper's start poses, so only a small margin is possible without false stops.
    "self": 0.003,
    # Table: grasping brings the finger pads to 5 mm above it for flat objects (a plate, a fork).
    "table": 0.0,
    "body": 0.01,
}
"""Minimum distance (m) per kind of pair."""
DEFAULT_MAX_OTHER_AGE_S = 0.1
DEFAULT_HORIZON_S = 0.02
# Contacts are generated up to the largest margin; beyond this nothing is measured (speed).
_MAX_GENERATION_MARGIN_M = 0.25


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's answer for one setpoint.

    Attributes
    ----------
    ok : bool
        True: the setpoint may be sent.
    reason : str
        Empty when ok; otherwise ``<kind>`` (``self``, ``arm_arm``, ``table``, ``body``) or
        ``other_state_stale`` / ``bad_input``.
    min_clearance_m : float
        Smallest (distance - required distance) over the measured pairs; negative when blocked;
        inf when no pair came within the generation horizon.
    distance_m : float
        Raw signed distance of that pair (m; negative = penetration), inf if none measured.
    pair : tuple of str or None
        The link pair with the smallest clearance.
    """

    ok: bool
    reason: str
    min_clearance_m: float
    distance_m: float
    pair: Optional[Tuple[str, str]]


@dataclass(frozen=True)
class OtherArmState:
    """The other arm as the actor knows it: its latest /joint_states reading and its limits.

    ``positions`` / ``velocities``: its 7 values (joints 1-6 + joint7) from the message
    (velocities None when the message has none); ``stamp_s``: the message's header stamp (same
    clock as ``now_s``); ``max_velocity`` / ``max_acceleration``: its safety filter's limits
    (bound its motion until the next reading).
    """

    positions: np.ndarray
    velocities: Optional[np.ndarray]
    stamp_s: float
    max_velocity: np.ndarray
    max_acceleration: np.ndarray


def velocity_bound(measured_velocity, max_velocity, max_acceleration, interval_s: float) -> np.ndarray:
    """Per joint: a bound on the other arm's mean speed over ``interval_s`` after its reading.

    Starting at ``|v|`` and accelerating at most ``a``, a joint covers at most
    ``|v| t + a t^2 / 2`` in ``t``, i.e. a mean speed of ``|v| + a t / 2``, and never more than
    ``max_velocity``: ``min(max_velocity, |measured_velocity| + max_acceleration * interval_s / 2)``.
    A missing or non-finite measured velocity gives ``max_velocity``.
    """
    vmax = np.asarray(max_velocity, dtype=float)
    if measured_velocity is None:
        return vmax.copy()
    v = np.abs(np.asarray(measured_velocity, dtype=float))
    if v.shape != vmax.shape or not np.all(np.isfinite(v)):
        return vmax.copy()
    return np.minimum(vmax, v + 0.5 * np.asarray(max_acceleration, dtype=float) * float(interval_s))


class CollisionGuard:
    """Collision check of one arm's setpoints (see the module docstring).

    Parameters
    ----------
    arm : str
        "left" or "right": the arm whose setpoints this guard checks.
    margins_m : mapping, optional
        Minimum distance per kind (:data:`GUARD_KINDS`); missing kinds use
        :data:`DEFAULT_MARGINS_M`. A single float sets the arm-arm margin.
    horizon_s : float
        How long a checked setpoint stands before the next check (one control period).
    max_other_age_s : float
        Older other-arm readings block (reason ``other_state_stale``).
    scene : CollisionScene, optional
        Prebuilt kinematic copy for this arm (tests); default built from the URDF and SRDF.

    Thread safety: one lock around each check; the counters are read under it.
    """

    def __init__(self, arm: str, margins_m=None, horizon_s: float = DEFAULT_HORIZON_S,
                 max_other_age_s: float = DEFAULT_MAX_OTHER_AGE_S,
                 scene: Optional[collision.CollisionScene] = None) -> None:
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        self.arm = arm
        self.other = next(side for side in ARMS if side != arm)
        margins = dict(DEFAULT_MARGINS_M)
        if isinstance(margins_m, (int, float)):
            margins["arm_arm"] = float(margins_m)
        elif margins_m is not None:
            unknown = set(margins_m) - set(GUARD_KINDS)
            if unknown:
                raise ValueError(f"unknown margin kind(s) {sorted(unknown)}; known: {GUARD_KINDS}")
            margins.update({k: float(v) for k, v in margins_m.items()})
        for kind, value in margins.items():
            if not (math.isfinite(value) and 0.0 <= value < _MAX_GENERATION_MARGIN_M):
                raise ValueError(f"margin {kind!r} must be in [0, {_MAX_GENERATION_MARGIN_M}) m, got {value!r}")
        for name, value in (("horizon_s", horizon_s), ("max_other_age_s", max_other_age_s)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        self.margins = margins
        self.horizon_s = float(horizon_s)
        self.max_other_age_s = float(max_other_age_s)
        self.scene = scene if scene is not None else collision.CollisionScene(arm)
        if self.scene.own_arm != arm:
            raise ValueError(f"scene was built for own_arm={self.scene.own_arm!r}, not {arm!r}")
        self.own_radii = self.scene.motion_radii(arm)
        self.other_radii = self.scene.motion_radii(self.other)
        index = {side: ARMS.index(side) + 1 for side in ARMS}
        side = self.scene.geom_side
        self._own_geoms = side == index[arm]
        self._other_geoms = side == index[self.other]
        self._fixed_geoms = side == 0
        links = self.scene.geom_link
        self._table_geoms = np.array([link == "table_link" for link in links])
        self._own_base_geoms = np.array([link == f"{arm}_base_link" for link in links])
        self._lock = threading.Lock()
        self.counters: Counter = Counter()
        self.checks = 0
        self.last_verdict: Optional[GuardVerdict] = None

    # ------------------------------------------------------------------ allowances
    def own_sweep(self, own_q7, own_from_q7) -> float:
        """Half of the farthest any point of this arm moves along the step ``own_from_q7 -> own_q7`` (m).

        Half: a point of the straight step is within half the sweep of one of its two ends, and
        both ends are checked (the previous one in the previous tick, with the same allowance
        when the speed is steady), so the clearance holds along the whole step.
        """
        if own_from_q7 is None:
            return 0.0
        delta = np.abs(np.asarray(own_q7, float) - np.asarray(own_from_q7, float))
        return 0.5 * float(self.own_radii @ delta[:6] + delta[6])

    def other_sweep(self, other_age_s: float, other_velocity_bound) -> float:
        """Farthest any point of the other arm moves within ``other_age_s + horizon_s`` (m)."""
        bound = np.broadcast_to(np.asarray(other_velocity_bound, dtype=float), (7,))
        interval = max(0.0, float(other_age_s)) + self.horizon_s
        return float((self.other_radii @ bound[:6] + bound[6]) * interval)

    # ------------------------------------------------------------------ checks
    def check(self, own_q7, other_q7, other_age_s: Optional[float], other_velocity_bound,
              own_from_q7=None, lookahead_s: float = 0.0) -> GuardVerdict:
        """May this arm be commanded to ``own_q7`` now?

        Parameters
        ----------
        own_q7 : array_like (7,)
            The setpoint about to be sent (joints 1-6 rad, joint7 m).
        other_q7 : array_like (7,) or None
            The other arm's last measured configuration (from /joint_states).
        other_age_s : float or None
            Age of that reading now (s). None = never received.
        other_velocity_bound : float or array_like (7,)
            Fastest the other arm may move per joint until this setpoint is superseded
            (rad/s, m/s); see :func:`velocity_bound`.
        own_from_q7 : array_like (7,), optional
            The command sent last tick (inflates by the step's sweep).
        lookahead_s : float
            How far in the future this setpoint is executed (a trajectory's later points): the
            other arm's allowance covers that much more motion.

        Returns
        -------
        GuardVerdict
            Also counted: ``checks``, and per blocked reason ``counters[reason]``.
        """
        with self._lock:
            verdict = self._check(own_q7, other_q7, other_age_s, other_velocity_bound, own_from_q7,
                                  max(0.0, float(lookahead_s)))
            self.checks += 1
            if not verdict.ok:
                self.counters[verdict.reason] += 1
            self.last_verdict = verdict
            return verdict

    def check_path(self, points, other_q7, other_age_s: Optional[float], other_velocity_bound,
                   own_from_q7=None) -> Tuple[int, GuardVerdict]:
        """Check consecutive setpoints (a trajectory message's points, ``horizon_s`` apart).

        Point k is checked with the other arm's allowance grown by k periods (``lookahead_s``) and
        the sweep from point k-1 (the first from ``own_from_q7``). Stops at the first blocked point.

        Returns
        -------
        (n_ok, verdict)
            How many leading points passed, and the verdict of the last point checked (the
            blocked one, or the last point).
        """
        rows = np.asarray(points, dtype=float).reshape(-1, 7)
        previous = own_from_q7
        verdict = GuardVerdict(True, "", math.inf, math.inf, None)
        for k, row in enumerate(rows):
            verdict = self.check(row, other_q7, other_age_s, other_velocity_bound, previous, k * self.horizon_s)
            if not verdict.ok:
                return k, verdict
            previous = row
        return len(rows), verdict

    def _check(self, own_q7, other_q7, other_age_s, other_velocity_bound, own_from_q7, lookahead_s) -> GuardVerdict:
        own = np.asarray(own_q7, dtype=float).reshape(-1)
        if own.shape != (7,) or not np.all(np.isfinite(own)):
            return GuardVerdict(False, "bad_input", -math.inf, -math.inf, None)
        other = None if other_q7 is None else np.asarray(other_q7, dtype=float).reshape(-1)
        fresh = (other is not None and other.shape == (7,) and np.all(np.isfinite(other))
                 and other_age_s is not None and math.isfinite(other_age_s)
                 and -self.max_other_age_s <= other_age_s <= self.max_other_age_s)
        if not fresh:
            return GuardVerdict(False, "other_state_stale", -math.inf, -math.inf, None)
        own_sweep = self.own_sweep(own, own_from_q7)
        other_sweep = self.other_sweep(abs(other_age_s) + lookahead_s, other_velocity_bound)
        scene, model = self.scene, self.scene.model
        scene.set_arm(self.arm, own)
        scene.set_arm(self.other, other)
        scene.update()
        # MuJoCo generates a contact when the distance is below max(margin_a, margin_b): give
        # each geom class the requirement of the pairs it is in (own-own: self, own-fixed:
        # table/body, own-other: arm-arm; arm_arm is the largest by construction below).
        # Self pairs: only the joints between the two links move them relative to each other,
        # a few mm per tick, so the step's whole-arm sweep is not added; fixed parts: this arm's
        # sweep; the other arm: both sweeps.
        need_self = self.margins["self"]
        need_table = self.margins["table"] + own_sweep
        need_body = self.margins["body"] + own_sweep
        need_arm = max(self.margins["arm_arm"] + own_sweep + other_sweep, need_self)
        margin = model.geom_margin
        margin[self._own_geoms] = need_self
        margin[self._fixed_geoms] = max(need_table, need_body, need_self)
        margin[self._other_geoms] = min(need_arm, _MAX_GENERATION_MARGIN_M)
        mujoco.mj_collision(model, scene.data)
        n = scene.data.ncon
        if n == 0:
            return GuardVerdict(True, "", math.inf, math.inf, None)
        contact = scene.data.contact
        g1, g2, dist = contact.geom1[:n], contact.geom2[:n], contact.dist[:n]
        involves_other = self._other_geoms[g1] | self._other_geoms[g2]
        involves_fixed = self._fixed_geoms[g1] | self._fixed_geoms[g2]
        involves_table = self._table_geoms[g1] | self._table_geoms[g2]
        own_base = self._own_base_geoms[g1] | self._own_base_geoms[g2]
        # This arm's own base is two joints from its upper arm: a self pair, not a fixed part.
        involves_fixed = involves_fixed & ~own_base
        need = np.where(involves_other, need_arm,
                        np.where(involves_table, need_table, np.where(involves_fixed, need_body, need_self)))
        clearance = dist - need
        i = int(np.argmin(clearance))
        links = scene.geom_link
        worst_pair = collision.pair(links[g1[i]], links[g2[i]])
        if clearance[i] >= 0.0:
            return GuardVerdict(True, "", float(clearance[i]), float(dist[i]), worst_pair)
        kind = ("arm_arm" if involves_other[i] else "table" if involves_table[i]
                else "body" if involves_fixed[i] else "self")
        return GuardVerdict(False, kind, float(clearance[i]), float(dist[i]), worst_pair)

    # ------------------------------------------------------------------ actor wiring
    def allowance_inputs(self, other: Optional[OtherArmState], now_s: float):
        """(other positions, age, velocity bound) for :meth:`check` from an :class:`OtherArmState`."""
        if other is None:
            return None, None, 0.0
        age = float(now_s) - float(other.stamp_s)
        bound = velocity_bound(other.velocities, other.max_velocity, other.max_acceleration,
                               max(0.0, age) + self.horizon_s)
        return other.positions, age, bound

    def check_next_command(self, safety_filter, candidate, measured, other: Optional[OtherArmState],
                           now_s: float, dt: float) -> Optional[GuardVerdict]:
        """Check the command ``safety_filter`` would send for ``candidate`` this tick, before it commits.

        Uses :meth:`SafetyFilter.preview` (the filter's rules rolled one tick forward without
        changing its state), so a blocked command is never committed: the caller then calls
        ``safety_filter.filter(..., estop=True, ...)`` for this tick, which holds the last
        command sent (checked in its own tick). Returns None when there is nothing to check
        (no candidate, or the filter has not started).
        """
        if candidate is None:
            return None
        planned = safety_filter.preview(np.asarray(candidate, dtype=float).reshape(1, -1), measured, dt)
        if len(planned) == 0:
            return None
        positions, age, bound = self.allowance_inputs(other, now_s)
        return self.check(planned[0], positions, age, bound, safety_filter.last_command)

    def check_trajectory_tail(self, points, other: Optional[OtherArmState], now_s: float) -> int:
        """Trajectory mode: how many leading points of the message (command first) may be sent.

        Point 0 is the command already checked by :meth:`check_next_command`; points 1.. are
        checked with the other arm's allowance grown by their time ahead. Publish
        ``points[:n]``; n >= 1 whenever point 0 was allowed.
        """
        rows = np.asarray(points, dtype=float).reshape(-1, 7)
        positions, age, bound = self.allowance_inputs(other, now_s)
        for k in range(1, len(rows)):
            if not self.check(rows[k], positions, age, bound, rows[k - 1], k * self.horizon_s).ok:
                return k
        return len(rows)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> Dict[str, object]:
        """Counters for /diagnostics and the run report (keys ``collision_guard.*``)."""
        with self._lock:
            values: Dict[str, object] = {"collision_guard.checks": self.checks}
            for reason in (*GUARD_KINDS, "other_state_stale", "bad_input"):
                values[f"collision_guard.blocked.{reason}"] = int(self.counters.get(reason, 0))
            last = self.last_verdict
            values["collision_guard.last_clearance_m"] = (
                "none" if last is None or not math.isfinite(last.min_clearance_m) else round(last.min_clearance_m, 4))
            values["collision_guard.last_pair"] = "none" if last is None or last.pair is None else "/".join(last.pair)
        return values
