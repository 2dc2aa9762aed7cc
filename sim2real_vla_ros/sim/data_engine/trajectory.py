"""Smooth joint trajectories within the URDF limits (the data engine's trajectory planner).

A motion is a polyline of 7-vectors (joints 1-6 + joint7 finger) traversed with a
minimum-jerk (quintic) time law s(t): zero velocity and acceleration at both ends. The
duration is the smallest that keeps every joint inside the expert's velocity and
acceleration limits, which are below the URDF's (5 rad/s, 3 rad/s joint6, 1 m/s finger)
and below the actor safety filter's 8 rad/s^2; :func:`check_limits` re-checks the sampled
result by finite differences, and the duration grows until it passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim2real_vla_ros.core import robot

# Expert limits per joint index 1..7 (rad/s, rad/s^2; finger m/s, m/s^2).
MAX_VELOCITY = np.array([1.2, 1.2, 1.2, 1.5, 1.5, 1.5, 0.06])
MAX_ACCELERATION = np.array([4.0, 4.0, 4.0, 5.0, 5.0, 5.0, 0.3])
MIN_DURATION_S = 0.1
# Peak |ds/dt| and |d2s/dt2| of the quintic s = 10u^3 - 15u^4 + 6u^5 on u in [0, 1].
_PEAK_V = 1.875
_PEAK_A = 5.7735


def _min_jerk(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.clip(u, 0.0, 1.0)
    s = u ** 3 * (10 - 15 * u + 6 * u ** 2)
    ds = 30 * u ** 2 * (1 - u) ** 2
    return s, ds


@dataclass
class JointPath:
    """Sampled trajectory: ``q`` (n x 7) and ``qd`` (n x 7) every ``dt`` seconds."""

    q: np.ndarray
    qd: np.ndarray
    dt: float

    @property
    def duration(self) -> float:
        return (len(self.q) - 1) * self.dt


def plan(waypoints, dt: float, max_velocity=MAX_VELOCITY, max_acceleration=MAX_ACCELERATION,
         speed: float = 1.0) -> JointPath:
    """Time a polyline of 7-vectors with a minimum-jerk law, sampled every ``dt``.

    The path parameter is the per-piece largest joint travel relative to its velocity limit,
    so a piece that moves only the finger and one that moves the shoulder are both paced
    by the joint that limits them. ``speed`` < 1 slows the whole motion down.
    """
    points = np.asarray(waypoints, dtype=float)
    if points.ndim != 2 or points.shape[1] != robot.ARM_DOF or len(points) < 1:
        raise ValueError(f"waypoints must be (n, {robot.ARM_DOF}), got {points.shape}")
    vmax = np.asarray(max_velocity, dtype=float) * speed
    amax = np.asarray(max_acceleration, dtype=float) * speed ** 2
    if len(points) == 1:
        return JointPath(points.copy(), np.zeros_like(points), dt)
    steps = np.diff(points, axis=0)
    weights = np.max(np.abs(steps) / vmax, axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    total = float(cumulative[-1])
    if total <= 1e-9:
        return JointPath(points[[0, -1]].copy(), np.zeros((2, points.shape[1])), dt)
    # Each joint's total excursion bounds the duration through the quintic's peak rates.
    travel = np.sum(np.abs(steps), axis=0)
    duration = max(MIN_DURATION_S, _PEAK_V * total, float(np.max(np.sqrt(_PEAK_A * travel / amax))))
    for _ in range(20):
        path = _sample(points, cumulative, duration, dt)
        if check_limits(path, vmax * 1.001, amax * 1.05) is None:
            return path
        duration *= 1.15
    return path


def _sample(points: np.ndarray, cumulative: np.ndarray, duration: float, dt: float) -> JointPath:
    n = max(2, int(np.ceil(duration / dt)) + 1)
    t = np.arange(n) * dt
    s, ds = _min_jerk(t / duration)
    arc = s * cumulative[-1]
    q = np.empty((n, points.shape[1]))
    for j in range(points.shape[1]):
        q[:, j] = np.interp(arc, cumulative, points[:, j])
    q[-1] = points[-1]
    qd = np.gradient(q, dt, axis=0)
    qd[0] = qd[-1] = 0.0
    return JointPath(q, qd, dt)


def check_limits(path: JointPath, max_velocity, max_acceleration):
    """None when the sampled path keeps the limits; else (kind, joint index, value)."""
    if len(path.q) < 3:
        return None
    v = np.diff(path.q, axis=0) / path.dt
    a = np.diff(v, axis=0) / path.dt
    vpeak, apeak = np.max(np.abs(v), axis=0), np.max(np.abs(a), axis=0)
    bad_v = np.nonzero(vpeak > max_velocity)[0]
    if len(bad_v):
        return ("velocity", int(bad_v[0]), float(vpeak[bad_v[0]]))
    bad_a = np.nonzero(apeak > max_acceleration)[0]
    if len(bad_a):
        return ("acceleration", int(bad_a[0]), float(apeak[bad_a[0]]))
    return None
