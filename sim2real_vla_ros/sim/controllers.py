"""Per-arm command sources the simulator samples every physics step (ROS-free).

Two kinds, matching the two hardware interfaces the stack can drive:

* :class:`TrajectoryArmController` - ros2_control's joint_trajectory_controller semantics
  (:class:`sim2real_vla_ros.sim.trajectory.TrajectoryFollower`), fed from
  ``/<side>_arm_controller/joint_trajectory``, and forward_command_controller's
  (:meth:`TrajectoryArmController.forward_command`, fed from
  ``/<side>_arm_position_controller/commands``): on the robot only one of the two is
  active per arm; the simulator takes both, and the newest command wins.
* :class:`DirectArmController` - the AgileX vendor interface: a stream of 7-value targets
  (``/master/joint_<side>``, gripper as total width). The Piper firmware moves to a target
  at a bounded speed rather than jumping; here the setpoint approaches the latest target at
  the URDF velocity limit of each joint.

Both return ``(positions, velocities)`` desired at a time, in the arm's 7-joint order
(joints 1-6 rad + joint7 finger m).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.sim.trajectory import Acceptance, TrajectoryFollower


FORWARD_REJECT_REASONS = ("wrong_length", "non_finite")
"""Why :meth:`TrajectoryArmController.forward_command` rejects a command."""


@dataclass(frozen=True)
class ForwardAcceptance:
    """Outcome of one forward (stream) command: accepted (maybe clipped) or rejected with a reason."""

    ok: bool
    code: str = ""  # one of FORWARD_REJECT_REASONS when rejected
    reason: str = ""
    clipped: tuple = ()  # names of the joints clipped into their limits


class TrajectoryArmController:
    """JTC-like trajectory execution for one arm, plus forward position commands.

    Parameters
    ----------
    side : str
        'left' or 'right'.
    interpolation : str
        'linear' or 'cubic' (see sim.trajectory).
    replacement : str
        'replace' (JTC as released, default) or 'splice' (ros2_controllers master).
    interpolate_from_desired_state : bool
        A replacing trajectory starts from the desired state instead of the measured one
        (JTC's ``interpolate_from_desired_state`` / Humble's ``open_loop_control``).
    """

    def __init__(self, side: str, interpolation: str = "linear", replacement: str = "replace",
                 interpolate_from_desired_state: bool = True) -> None:
        limits = robot.arm_limits(side)
        self.side = side
        self.limits = limits
        self.joint_names = list(limits.names)
        self.follower = TrajectoryFollower(self.joint_names, limits.lower, limits.upper, interpolation,
                                           replacement=replacement,
                                           anchor="desired" if interpolate_from_desired_state else "measured")
        self.forward_accepted_count = 0
        self.forward_clipped_count = 0
        self.forward_rejection_counts: Counter = Counter()

    def hold(self, positions: Sequence[float], now_s: float) -> None:
        """Drop any trajectory and hold ``positions`` (e.g. after a reset)."""
        self.follower.hold(positions, now_s)

    def accept(self, names, points, stamp_s: float, now_s: float, current_positions=None) -> Acceptance:
        """Validate and take a trajectory (never raises; see TrajectoryFollower.accept)."""
        return self.follower.accept(names, points, stamp_s, now_s, current_positions)

    def forward_command(self, values: Sequence[float], now_s: float) -> ForwardAcceptance:
        """Apply a forward_command_controller command: 7 positions in joint order, at once.

        As forward_command_controller does, the values become the position command with no
        interpolation (the arm's own dynamics limit how fast it gets there), replacing any
        trajectory in progress; a later trajectory starts from them. Unlike it, the simulated
        hardware clips values into the URDF limits (counted in :attr:`forward_clipped_count`).
        A command with the wrong length or a NaN / Inf is rejected (never raises), counted
        by reason in :attr:`forward_rejection_counts`, and the previous command stays.
        """
        q = np.asarray(values, dtype=float).reshape(-1)
        if q.shape != (robot.ARM_DOF,):
            joints = f"{self.joint_names[0]}..{self.joint_names[-1]}"
            return self._forward_reject("wrong_length", f"expected {robot.ARM_DOF} values ({joints}), got {q.size}")
        if not np.all(np.isfinite(q)):
            bad = [name for name, value in zip(self.joint_names, q) if not np.isfinite(value)]
            return self._forward_reject("non_finite", f"NaN or Inf for {bad}")
        clipped = self.limits.violations(q)
        if clipped:
            self.forward_clipped_count += 1
        self.follower.hold(self.limits.clip(q), now_s)
        self.forward_accepted_count += 1
        return ForwardAcceptance(ok=True, clipped=tuple(clipped))

    def _forward_reject(self, code: str, reason: str) -> ForwardAcceptance:
        self.forward_rejection_counts[code] += 1
        return ForwardAcceptance(ok=False, code=code, reason=reason)

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
