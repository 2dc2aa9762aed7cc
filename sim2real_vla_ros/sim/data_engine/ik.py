"""Inverse kinematics of one Piper arm on the simulator's own MuJoCo model.

Damped least squares on the MuJoCo Jacobian of the ``<side>_tcp`` body (position and
orientation), iterated on a private ``MjData`` so the simulation is never touched. mink
(MuJoCo differential IK) would do the same with a QP; the problem here is six joints, one
frame and box joint limits, which a clamped DLS solves in a few milliseconds, so no extra
dependency is added (see the README of this package).

Orientation targets are rotation matrices of the TCP frame in the base frame. The TCP frame
is link6's: +z is the approach direction (from the wrist to the finger tips), +y the finger
travel direction (the fingers close along y).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mujoco
import numpy as np

from sim2real_vla_ros.core import robot

# A solution is accepted within these residuals (iteration stops earlier at the tolerances).
ACCEPT_POSITION_M = 2e-3
ACCEPT_ROTATION_RAD = 0.03


@dataclass
class IKResult:
    """A solution: joints 1-6, residual position (m) and orientation (rad) errors, success flag."""

    q: np.ndarray
    position_error: float
    orientation_error: float
    ok: bool


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle vector (base frame) that rotates ``current`` onto ``target``."""
    delta = target @ current.T
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, delta.reshape(-1))
    if quat[0] < 0:
        quat = -quat
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class ArmIK:
    """IK for one arm on a kinematic copy of the scene.

    Parameters
    ----------
    model : mujoco.MjModel
        The simulator's model (``Simulator.model``).
    side : str
        ``left`` or ``right``.
    """

    def __init__(self, model: mujoco.MjModel, side: str) -> None:
        self.model = model
        self.side = side
        self.data = mujoco.MjData(model)
        names = robot.arm_joint_names(side)[:6]
        joint_ids = [model.joint(n).id for n in names]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in joint_ids])
        limits = robot.arm_limits(side)
        # A small margin keeps solutions off the hard stops the servos would hit.
        self.lower = limits.lower[:6] + 0.02
        self.upper = limits.upper[:6] - 0.02
        self.body = model.body(f"{side}_tcp").id
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def fk(self, q6) -> tuple[np.ndarray, np.ndarray]:
        """TCP (position, rotation matrix) for joints 1-6."""
        self.data.qpos[self.qpos_adr] = q6
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.xpos[self.body].copy(), self.data.xmat[self.body].reshape(3, 3).copy()

    def solve(self, position, rotation: Optional[np.ndarray], q_start, *, iterations: int = 200,
              damping: float = 0.02, rot_weight: float = 0.3, pos_tol: float = 1e-3,
              rot_tol: float = 0.02, max_step: float = 0.2) -> IKResult:
        """Joints 1-6 near ``q_start`` putting the TCP at ``position`` with ``rotation``.

        ``rotation`` None solves position only. Each iteration is a damped least-squares step
        on the stacked (position, weighted orientation) error, clamped to the joint limits.
        """
        target_p = np.asarray(position, dtype=float)
        q = np.clip(np.asarray(q_start, dtype=float)[:6].copy(), self.lower, self.upper)
        perr = rerr = np.inf
        for _ in range(iterations):
            p, r = self.fk(q)
            ep = target_p - p
            perr = float(np.linalg.norm(ep))
            if rotation is None:
                er = np.zeros(3)
                rerr = 0.0
            else:
                er = rotation_error(r, rotation)
                rerr = float(np.linalg.norm(er))
            if perr < pos_tol and rerr < rot_tol:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacBody(self.model, self.data, self._jacp, self._jacr, self.body)
            jp = self._jacp[:, self.dof_adr]
            if rotation is None:
                jac, err = jp, ep
            else:
                jac = np.vstack([jp, rot_weight * self._jacr[:, self.dof_adr]])
                err = np.concatenate([ep, rot_weight * er])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping ** 2 * np.eye(len(err)), err)
            norm = np.linalg.norm(dq)
            if norm > max_step:
                dq *= max_step / norm
            q = np.clip(q + dq, self.lower, self.upper)
        return IKResult(q, perr, rerr, bool(perr < ACCEPT_POSITION_M and rerr < ACCEPT_ROTATION_RAD))
