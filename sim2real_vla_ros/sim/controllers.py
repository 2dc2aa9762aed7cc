"""Per-arm command sources the simulator samples every physics step (ROS-free).

Two kinds, matching the two hardware interfaces the stack can drive:

* :class:`TrajectoryArmController` - ros2_control's joint_trajectory_controller semantics
  (:class:`sim2real_vla_ros.core.trajectory.TrajectoryFollower`), fed from
  ``/<side>_arm_controller/joint_trajectory``.
* :class:`DirectArmController` - the AgileX vendor interface: a stream of 7-value targets
  (``/master/joint_<side>``, gripper as total width). The Piper firmware moves to a target
  at a bounded speed rather than jumping; here the setpoint approaches the latest target at
  the URDF velocity limit of each joint.

Both return ``(positions, velocities)`` desired at a time, in the arm's 7-joint order
(joints 1-6 rad + joint7 finger m).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.trajectory import Acceptance, TrajectoryFollower


class TrajectoryArmController:
    """JTC-like trajectory execution for one arm.

    Parameters
    ----------
    side : str
        'left' or 'right'.
    interpolation : str
        'linear' or 'cubic' (see core.trajectory).
    """

    def __init__(self, side: str, interpolation: str = "linear") -> None:
        limits = robot.arm_limits(side)
        self.side = side
        self.joint_names = list(limits.names)
        self.follower = TrajectoryFollower(self.joint_names, limits.lower, limits.upper, interpolation)

    def hold(self, positions: Sequence[float], now_s: float) -> None:
        """Drop any trajectory and hold ``positions`` (e.g. after a reset)."""
        self.follower.hold(positions, now_s)

    def accept(self, names, points, stamp_s: float, now_s: float, current_positions=None) -> Acceptance:
        """Validate and splice a trajectory (never raises; see TrajectoryFollower.accept)."""
        return self.follower.accept(names, points, stamp_s, now_s, current_positions)

    def command(self, now_s: float) -> Tuple[np.ndarray, np.ndarray]:
        """Desired (positions, velocities) at ``now_s``."""
        return self.follower.sample(now_s)

    @property
    def rejection_counts(self):
        return self.follower.rejection_counts

    @property
    def accepted_count(self) -> int:
        return self.follower.accepted_count


class DirectArmController:
    """Vendor-style position targets, approached at the joints' velocity limits.

    Targets outside the joint limits are clipped (and counted), as the Piper SDK clamps
    commands to its limits; a target with the wrong length or NaN raises ``ValueError``
    and leaves the previous target in place.
    """

    def __init__(self, side: str) -> None:
        self.side = side
        self.limits = robot.arm_limits(side)
        self.joint_names = list(self.limits.names)
        self._setpoint: Optional[np.ndarray] = None
        self._target: Optional[np.ndarray] = None
        self._last_time = 0.0
        self.accepted_count = 0
        self.clipped_count = 0

    def hold(self, positions: Sequence[float], now_s: float) -> None:
        q = self.limits.clip(positions)
        self._setpoint, self._target, self._last_time = q.copy(), q.copy(), float(now_s)

    def set_target(self, positions: Sequence[float], now_s: float) -> None:
        """New 7-value target (joints 1-6 rad, joint7 finger m); ValueError if malformed."""
        q = np.asarray(positions, dtype=float).reshape(-1)
        clipped = self.limits.clip(q)  # raises ValueError for a wrong length / NaN / inf
        if np.any(clipped != q):
            self.clipped_count += 1
        if self._setpoint is None:
            self._setpoint, self._last_time = clipped.copy(), float(now_s)
        self._target = clipped
        self.accepted_count += 1

    def command(self, now_s: float) -> Tuple[np.ndarray, np.ndarray]:
        if self._setpoint is None:
            raise RuntimeError(f"DirectArmController({self.side}) has no state: call hold() first")
        dt = max(0.0, float(now_s) - self._last_time)
        self._last_time = float(now_s)
        max_step = self.limits.velocity * dt
        step = np.clip(self._target - self._setpoint, -max_step, max_step)
        self._setpoint = self._setpoint + step
        velocity = step / dt if dt > 0.0 else np.zeros_like(step)
        return self._setpoint.copy(), velocity
