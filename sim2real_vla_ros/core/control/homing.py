"""Collision-checked joint-space planner that moves both arms to a task's start pose (ROS-free).

The fallback of the ``go_to_start`` tool where moveit_py is not installed (it is not on these
machines: there are no MoveIt wheels on PyPI). Same geometry as everything else: the URDF's
collision primitives, the SRDF's matrix (:class:`core.collision.CollisionScene`), both arms and
the table; the task's objects are not in it (homing runs between episodes, before the scene is
reset).

Method, and why it is enough here
---------------------------------
1. **Straight line** in the 14-dimensional joint space (both arms, fingers included) from the
   start to the goal, if it is clear.
2. Otherwise **RRT-Connect** (Kuffner & LaValle 2000, OMPL's default planner, the one the MoveIt
   configuration uses) in the same space, then random **shortcutting**.

Every edge is checked at configurations so close that no point of either arm moves more than
``resolution_m`` between two checks (the bound is :meth:`CollisionScene.motion_radii`: joint i
turning by dq moves no point further than radius_i * dq). Every check requires the margin of
the pair's kind (:data:`DEFAULT_MARGINS_M`); a pair's distance changes by at most the
displacement of its two links, so between two checks the clearance stays above
``margin - resolution_m / 2``: with the defaults (2 cm resolution; 6 cm between the arms,
2 cm to the table and the robot body) at least 1 cm everywhere along the path, not just at
the samples. Self pairs (3 mm margin) are only guaranteed at the samples: their relative
motion comes from the few joints between the two links.

Timing: each segment is a synchronised trapezoidal profile (all 14 joints start and stop
together, at rest at every waypoint), so the executed path is exactly the checked straight
segments. Velocity and acceleration are a fraction (``speed_scale``) of the safety filter's
limits, so the filter passes the samples unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control import collision
from sim2real_vla_ros.core.control import safety
from sim2real_vla_ros.core.vocabulary import ARMS

DEFAULT_MARGINS_M = {"arm_arm": 0.06, "table": 0.02, "body": 0.02, "self": 0.003}
"""Clearance per pair kind (core.collision.PAIR_KINDS). Between the arms the plan keeps room
for the collision guard's own allowances while both arms move (its 2 cm margin plus how far
each arm can move within a tick and a joint-state age), so the guard that checks every
executed sample does not stop a planned path. Self pairs get 3 mm: the forearm and the
wrist-pitch link primitives sit 8 mm apart in every configuration (link4's housing is between
them), so a larger self margin would forbid every pose."""
DEFAULT_RESOLUTION_M = 0.02
CONTROL_RATE_HZ = 50.0  # the executor's tick, the actors' control rate
DEFAULT_SPEED_SCALE = 0.2
DEFAULT_PLANNING_TIME_S = 10.0
RRT_STEP = 0.4  # joint-space extension step (rad, max norm over joints)


class HomingError(RuntimeError):
    """No collision-free plan (the message says why: start or goal in collision, time out)."""


@dataclass
class HomingPlan:
    """A planned path: waypoints [k, 14] (left 7, right 7) and how it was found."""

    waypoints: np.ndarray
    method: str  # "already_there" | "straight" | "rrt_connect"
    checks: int
    planning_time_s: float
    min_clearance_m: float = math.inf

    def left(self) -> np.ndarray:
        return self.waypoints[:, :7]

    def right(self) -> np.ndarray:
        return self.waypoints[:, 7:]


@dataclass
class JointSpacePlanner:
    """See the module docstring.

    Parameters
    ----------
    scene : CollisionScene, optional
        Both arms checked (``own_arm=None``); default built from the URDF and SRDF.
    margins_m : dict
        Required clearance per pair kind at each check.
    resolution_m : float
        The largest point motion between checks.
    seed : int
        Seed of the sampling planner (plans are reproducible).
    """

    scene: Optional[collision.CollisionScene] = None
    margins_m: dict = field(default_factory=lambda: dict(DEFAULT_MARGINS_M))
    resolution_m: float = DEFAULT_RESOLUTION_M
    seed: int = 0
    checks: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.scene is None:
            self.scene = collision.CollisionScene(None)
        if self.scene.own_arm is not None:
            raise ValueError("JointSpacePlanner needs a CollisionScene built with own_arm=None")
        self._need = self.scene.required(self.margins_m)
        if not (np.all(self._need >= 0) and self.resolution_m > 0):
            raise ValueError(f"margins must be >= 0 and resolution_m > 0, got {self.margins_m}, {self.resolution_m}")
        self.radii = np.concatenate([np.append(self.scene.motion_radii(side), 1.0) for side in ARMS])
        limits = [robot.arm_limits(side) for side in ARMS]
        self.lower = np.concatenate([l.lower for l in limits])
        self.upper = np.concatenate([l.upper for l in limits])

    # ------------------------------------------------------------------ checks
    def clearance(self, q14) -> Tuple[float, Optional[Tuple[str, str]], str]:
        """(distance - margin of its kind, pair, kind) of the tightest checked pair (inf if none near)."""
        q = np.asarray(q14, float)
        return self.scene.clearance(q[:7], q[7:], self.margins_m, horizon_m=0.05)

    def valid(self, q14) -> bool:
        self.checks += 1
        q = np.asarray(q14, float)
        return not self.scene.in_collision(q[:7], q[7:], self.margins_m)

    def edge_valid(self, a, b) -> bool:
        """Every configuration on the straight segment a -> b at the check resolution is clear."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        sweep = float(self.radii @ np.abs(b - a))
        steps = max(1, int(math.ceil(sweep / self.resolution_m)))
        # Bisection order finds a collision in the middle of a long edge early.
        for k in _bisection_order(steps):
            if not self.valid(a + (b - a) * (k / steps)):
                return False
        return True

    # ------------------------------------------------------------------ planning
    def plan(self, start14, goal14, time_limit_s: float = DEFAULT_PLANNING_TIME_S) -> HomingPlan:
        """A collision-free path from ``start14`` to ``goal14`` (see the module docstring).

        Raises
        ------
        HomingError
            Start or goal closer than its margins to a collision, or no path within ``time_limit_s``.
        """
        t0 = time.perf_counter()
        self.checks = 0
        start = np.clip(np.asarray(start14, float), self.lower, self.upper)
        goal = np.asarray(goal14, float)
        if goal.shape != (14,) or np.any(goal < self.lower - 1e-9) or np.any(goal > self.upper + 1e-9):
            raise HomingError(f"goal must be 14 values inside the joint limits, got {goal.tolist()}")
        for label, q in (("start", start), ("goal", goal)):
            if not self.valid(q):
                slack, where, kind = self.clearance(q)
                raise HomingError(f"{label} configuration is closer than its {kind} margin to a collision "
                                  f"({where}, {slack:.4f} m short)")
        if np.max(np.abs(goal - start)) < 1e-6:
            return HomingPlan(np.stack([start, goal]), "already_there", self.checks, time.perf_counter() - t0)
        if self.edge_valid(start, goal):
            return HomingPlan(np.stack([start, goal]), "straight", self.checks, time.perf_counter() - t0)
        rng = np.random.default_rng(self.seed)
        path = self._rrt_connect(start, goal, rng, t0 + time_limit_s)
        path = self._shortcut(path, rng, t0 + time_limit_s)
        return HomingPlan(np.stack(path), "rrt_connect", self.checks, time.perf_counter() - t0)

    def _steer(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        delta = b - a
        largest = float(np.max(np.abs(delta[_REVOLUTE])))
        if largest <= RRT_STEP:
            return b.copy()
        return a + delta * (RRT_STEP / largest)

    def _rrt_connect(self, start, goal, rng, deadline) -> List[np.ndarray]:
        trees = (([start], [-1]), ([goal], [-1]))  # tree 0 grows from the start, tree 1 from the goal
        grow = 0
        while time.perf_counter() < deadline:
            sample = rng.uniform(self.lower, self.upper)
            nodes, parents = trees[grow]
            other_nodes, other_parents = trees[1 - grow]
            new = self._extend(nodes, parents, sample)
            if new is not None:
                # connect: extend the other tree toward the new node until blocked or joined
                target = nodes[new]
                while True:
                    reached = self._extend(other_nodes, other_parents, target)
                    if reached is None:
                        break
                    if np.max(np.abs(other_nodes[reached] - target)) < 1e-9:
                        at_start, at_goal = (new, reached) if grow == 0 else (reached, new)
                        forward = _trace(*trees[0], at_start)[::-1]
                        backward = _trace(*trees[1], at_goal)
                        return forward + backward[1:]
            grow = 1 - grow
        raise HomingError("no collision-free path found within the planning time")

    def _extend(self, tree: List[np.ndarray], parent: List[int], sample: np.ndarray) -> Optional[int]:
        nodes = np.stack(tree)
        nearest = int(np.argmin(np.abs(nodes - sample)[:, _REVOLUTE].max(axis=1)))
        new = self._steer(tree[nearest], sample)
        if not self.edge_valid(tree[nearest], new):
            return None
        tree.append(new)
        parent.append(nearest)
        return len(tree) - 1

    def _shortcut(self, path: List[np.ndarray], rng, deadline, attempts: int = 100) -> List[np.ndarray]:
        path = list(path)
        for _ in range(attempts):
            if len(path) < 3 or time.perf_counter() > deadline:
                break
            i, j = sorted(rng.choice(len(path), size=2, replace=False))
            if j - i < 2:
                continue
            if self.edge_valid(path[i], path[j]):
                path = path[: i + 1] + path[j:]
        return path


_REVOLUTE = np.r_[0:6, 7:13]


def _trace(tree: List[np.ndarray], parent: List[int], index: int) -> List[np.ndarray]:
    """Nodes from ``index`` back to the tree's root."""
    out = []
    while index != -1:
        out.append(tree[index])
        index = parent[index]
    return out


def _bisection_order(steps: int) -> List[int]:
    """1 .. steps in an order that halves the unchecked intervals first."""
    order, seen = [steps], {steps, 0}
    queue = [(0, steps)]
    while queue:
        lo, hi = queue.pop(0)
        mid = (lo + hi) // 2
        if mid in seen:
            continue
        seen.add(mid)
        order.append(mid)
        queue += [(lo, mid), (mid, hi)]
    return order


# --------------------------------------------------------------------------- timing


def homing_limits(speed_scale: float = DEFAULT_SPEED_SCALE) -> Tuple[np.ndarray, np.ndarray]:
    """(velocity [14], acceleration [14]) for homing: ``speed_scale`` of the safety filter's limits."""
    if not (0.0 < speed_scale <= 1.0):
        raise ValueError(f"speed_scale must be in (0, 1], got {speed_scale}")
    velocity = np.concatenate([robot.arm_limits(side).velocity for side in ARMS]) * speed_scale
    acceleration = np.tile(np.asarray(safety.DEFAULT_MAX_ACCELERATION, float), 2) * speed_scale
    return velocity, acceleration


def time_parameterize(waypoints, dt: float, velocity, acceleration) -> np.ndarray:
    """Positions [n, 14] every ``dt``: synchronised trapezoidal profiles, at rest at each waypoint.

    Each segment's duration is set by its slowest joint; all joints follow the same normalised
    profile, so every sample lies on the straight segment that was checked.
    """
    points = np.asarray(waypoints, float)
    velocity, acceleration = np.asarray(velocity, float), np.asarray(acceleration, float)
    samples = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        delta = np.abs(b - a)
        if np.max(delta) < 1e-12:
            continue
        # time for each joint with a trapezoid (or triangle) at its own limits; slowest wins.
        duration = 0.0
        for d, v, acc in zip(delta, velocity, acceleration):
            if d <= 0:
                continue
            t = 2 * math.sqrt(d / acc) if d < v * v / acc else d / v + v / acc
            duration = max(duration, t)
        steps = max(1, int(math.ceil(duration / dt)))
        duration = steps * dt
        # normalised trapezoid with the same shape for all joints: s(t) in [0, 1]
        for k in range(1, steps + 1):
            samples.append(a + (b - a) * _trapezoid(k * dt / duration))
    return np.stack(samples)


def _trapezoid(u: float, ramp: float = 0.25) -> float:
    """Normalised position 0..1 at normalised time u with ``ramp`` of the time accelerating."""
    u = min(max(u, 0.0), 1.0)
    peak = 1.0 / (1.0 - ramp)  # velocity plateau so the area is 1
    if u < ramp:
        return 0.5 * peak / ramp * u * u
    if u > 1.0 - ramp:
        r = 1.0 - u
        return 1.0 - 0.5 * peak / ramp * r * r
    return 0.5 * peak * ramp + peak * (u - ramp)


REST_POSE = {"left": np.array([0.8, 1.2, -1.5, 0.0, 0.3, 0.0, 0.0]),
             "right": np.array([-0.8, 1.2, -1.5, 0.0, 0.3, 0.0, 0.0])}
"""Where the simulator puts the arms before the first episode when homing is used (its
``reset_arms: keep``): folded, each arm turned 0.8 rad outward, gripper closed, clear of the
base, the table and the other arm by the planner's margins. (The Piper's zero pose rests link2
within the 2 cm body margin of the base: the fallback planner refuses to start there; move the
arms up by hand, or use the MoveIt backend, whose start-state check has no margin.)"""


def rest_pose() -> np.ndarray:
    """:data:`REST_POSE` as 14 values (left 7, right 7)."""
    return np.concatenate([REST_POSE[side] for side in ARMS])


def start_pose(task) -> np.ndarray:
    """A task's Table 6 start pose as 14 values (left 7, right 7)."""
    return np.concatenate([task.init_joints(side) for side in ARMS])


# --------------------------------------------------------------------------- execution


class HomingExecutor:
    """Sends a timed homing trajectory through each arm's safety filter and collision guard.

    The same command path as the actors: every tick each arm's next sample is checked by its
    :class:`CollisionGuard` against the other arm's measured state (a blocked sample is not sent:
    the filter decelerates the arm to a hold, reason ``collision_guard:<kind>``), then passed
    through its :class:`SafetyFilter` (limits, velocity, acceleration, tracking error), and the
    filter's command is what the caller sends. ROS-free: the caller supplies time and state.

    Parameters
    ----------
    trajectory : np.ndarray [n, 14]
        From :func:`time_parameterize` (left 7, right 7), ``dt`` apart.
    dt : float
        Control period (s), the trajectory's spacing.
    guards : mapping side -> CollisionGuard, optional
        Default: one per arm with its default margins.
    goal_tolerance : float
        Done when every joint is within this of the last sample (rad; m for the finger x 0.1).
    """

    def __init__(self, trajectory, dt: float, guards=None, goal_tolerance: float = 0.02) -> None:
        from sim2real_vla_ros.core.control.collision_guard import CollisionGuard

        self.trajectory = np.asarray(trajectory, float).reshape(-1, 14)
        if self.trajectory.shape[0] < 1:
            raise ValueError("trajectory is empty")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be > 0, got {dt}")
        self.dt = float(dt)
        self.goal_tolerance = float(goal_tolerance)
        self.filters = {side: safety.SafetyFilter(safety.SafetyLimits.from_config(
            robot.arm_limits(side), {"max_input_age_s": {"joint_state": 0.1}})) for side in ARMS}
        self.guards = dict(guards) if guards is not None else {side: CollisionGuard(side) for side in ARMS}
        self.index = 0
        self.sent = {side: None for side in ARMS}
        self.blocked = {side: 0 for side in ARMS}

    @property
    def goal(self) -> np.ndarray:
        return self.trajectory[-1]

    def done(self, measured: dict) -> bool:
        """The trajectory is over and both arms are at its end (within the tolerance)."""
        if self.index < len(self.trajectory):
            return False
        error = np.abs(np.concatenate([measured["left"], measured["right"]]) - self.goal)
        error[[6, 13]] *= 10.0
        return bool(np.all(error <= self.goal_tolerance))

    def tick(self, now_s: float, measured: dict, measured_stamp_s: float, velocities: Optional[dict] = None) -> dict:
        """Commands {side: 7 values or None} for this tick.

        ``measured``: {side: 7 measured positions}; ``velocities``: {side: 7 measured velocities}
        (optional, tightens the guard's allowance for the other arm).
        """
        row = self.trajectory[min(self.index, len(self.trajectory) - 1)]
        commands, held = {}, False
        for index, side in enumerate(ARMS):
            other = ARMS[1 - index]
            candidate = row[7 * index: 7 * index + 7]
            fault = None
            guard = self.guards[side]
            vmax = robot.arm_limits(other).velocity
            bound = vmax if velocities is None else _velocity_bound(velocities.get(other), vmax,
                                                                    self.filters[other].limits.max_acceleration,
                                                                    now_s - measured_stamp_s + guard.horizon_s)
            verdict = guard.check(candidate, measured[other], now_s - measured_stamp_s, bound, self.sent[side])
            if not verdict.ok:
                self.blocked[side] += 1
                held = True
                candidate, fault = None, f"collision_guard:{verdict.reason}"
            decision = self.filters[side].filter(candidate, measured[side], now_s, {"joint_state": measured_stamp_s},
                                                 False, self.dt, candidate_fault=fault)
            commands[side] = decision.command
            if decision.command is not None:
                self.sent[side] = decision.command
        if not held:  # a blocked arm pauses the whole trajectory (both arms stay on the checked path)
            self.index += 1
        return commands


def _velocity_bound(velocity, vmax, amax, interval):
    from sim2real_vla_ros.core.control.collision_guard import velocity_bound

    return velocity_bound(velocity, vmax, amax, max(0.0, interval))
