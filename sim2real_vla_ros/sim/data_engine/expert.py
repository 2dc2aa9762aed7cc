"""A scripted expert per task, composed from the action bank, driving the simulator's public API.

The expert reads privileged object poses, builds each step's key poses from the action bank
(:mod:`.actions`), solves IK on MuJoCo Jacobians (:mod:`.ik`) along straight Cartesian
lines, times the joint path with a minimum-jerk law within the expert's velocity and
acceleration limits (:mod:`.trajectory`), and sends one joint command per arm per control
step (``Simulator.set_arm_command`` at :data:`CONTROL_HZ`, then ``Simulator.step``). Objects
are never teleported. After each step its sub-goal condition (:mod:`.subgoals`) is checked;
the first one that fails ends the episode and is reported.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.sim.data_engine import actions as ab
from sim2real_vla_ros.sim.data_engine import subgoals as sg
from sim2real_vla_ros.sim.data_engine.ik import ArmIK, rotation_error
from sim2real_vla_ros.sim.data_engine.trajectory import JointPath, plan

CONTROL_HZ = 100.0
LINEAR_STEP_M = 0.01
LINEAR_STEP_RAD = 0.06
GLOBAL_IK_SEEDS = 10


class StepFailed(RuntimeError):
    def __init__(self, subgoal: str, detail: str = "") -> None:
        super().__init__(f"{subgoal}: {detail}" if detail else subgoal)
        self.subgoal = subgoal


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    control_steps: int
    sim_time_s: float
    failed_subgoal: Optional[str]
    subgoals: List[str] = field(default_factory=list)
    status: Dict[str, object] = field(default_factory=dict)
    wall_s: float = 0.0
    limit_violations: int = 0


class Expert:
    """Executes action-bank steps on a :class:`~sim2real_vla_ros.sim.simulator.Simulator`."""

    def __init__(self, sim, record: Optional[Callable] = None) -> None:
        self.sim = sim
        self.ik = {side: ArmIK(sim.model, side) for side in robot.ARMS}
        self.substeps = max(1, int(round(1.0 / (CONTROL_HZ * sim.timestep))))
        self.dt = self.substeps * sim.timestep
        self.control_steps = 0
        self.record = record
        self.achieved: List[str] = []
        self.limits = {side: robot.arm_limits(side) for side in robot.ARMS}
        self.limit_violations = 0
        self.log: List[tuple] = []

    # ---------------------------------------------------------------- state
    def view(self) -> sg.WorldView:
        return sg.view_of(self.sim)

    def tcp(self, side: str):
        return self.view().tcp[side]

    def q(self, side: str) -> np.ndarray:
        return self.sim.arm_command(side)[0]

    # ------------------------------------------------------------------ IK
    def solve_path(self, side: str, q_start: np.ndarray, poses: Sequence[ab.KeyPose]) -> List[np.ndarray]:
        """Joint waypoint segments (each n x 7, stop to stop) through ``poses`` from ``q_start``.

        A new segment starts at every key pose that does not ``blend``; StepFailed if a pose
        is unreachable or a straight line needs a configuration jump.
        """
        ik = self.ik[side]
        q = np.asarray(q_start, dtype=float).copy()
        p_prev, r_prev = ik.fk(q[:6])
        finger_prev = q[6]
        segments: List[List[np.ndarray]] = []
        out = [q.copy()]
        for pose in poses:
            if not pose.blend and len(out) > 1:
                segments.append(out)
                out = [q.copy()]
            if pose.linear:
                dist = float(np.linalg.norm(pose.position - p_prev))
                ang = float(np.linalg.norm(rotation_error(r_prev, pose.rotation)))
                n = max(1, int(math.ceil(max(dist / LINEAR_STEP_M, ang / LINEAR_STEP_RAD))))
            else:
                n = 1
            for i in range(1, n + 1):
                s = i / n
                if pose.linear:
                    p = (1 - s) * p_prev + s * pose.position
                    r = _slerp(r_prev, pose.rotation, s)
                else:
                    p, r = pose.position, pose.rotation
                start = q if pose.linear or pose.seed is None else np.asarray(pose.seed, dtype=float)
                res = ik.solve(p, r, start, pos_tol=2e-4, rot_tol=0.004)
                if not res.ok:
                    res = self._restart(ik, p, r, q)
                if not res.ok and not pose.linear:
                    # A joint-space move may go to another configuration: search globally.
                    res = self._global(ik, p, r, q)
                if not res.ok:
                    raise StepFailed("ik", f"{side} TCP {np.round(p, 3).tolist()} unreachable "
                                           f"(error {res.position_error:.3f} m, {res.orientation_error:.2f} rad)")
                if pose.linear and np.max(np.abs(res.q - q[:6])) > 0.5:
                    raise StepFailed("ik", f"{side} configuration jump on a straight line")
                finger = (1 - s) * finger_prev + s * pose.finger
                q = np.concatenate([res.q, [finger]])
                out.append(q.copy())
            p_prev, r_prev, finger_prev = pose.position, pose.rotation, pose.finger
        segments.append(out)
        return [np.array(seg) for seg in segments]

    def _restart(self, ik: ArmIK, p, r, q):
        best = None
        rng = np.random.default_rng(0)
        for _ in range(6):
            seed = q[:6] + rng.normal(0, 0.4, 6)
            res = ik.solve(p, r, seed, iterations=300)
            if res.ok and (best is None or np.linalg.norm(res.q - q[:6]) < np.linalg.norm(best.q - q[:6])):
                best = res
        return best if best is not None else ik.solve(p, r, q)

    def _global(self, ik: ArmIK, p, r, q, tries: int = GLOBAL_IK_SEEDS):
        """IK from seeds spread over the joint box (deterministic), the solution nearest ``q``;
        joint 6 also tried half a turn round (a flipped gripper grips the same)."""
        rng = np.random.default_rng(1)
        best = None
        seeds = [np.concatenate([q[:5], [q[5] + d]]) for d in (math.pi, -math.pi)]
        seeds += [rng.uniform(ik.lower, ik.upper) for _ in range(tries)]
        for seed in seeds:
            res = ik.solve(p, r, np.clip(seed, ik.lower, ik.upper), iterations=300)
            if res.ok and (best is None or np.linalg.norm(res.q - q[:6]) < np.linalg.norm(best.q - q[:6])):
                best = res
                if np.linalg.norm(res.q - q[:6]) < 1.0:
                    break
        return best if best is not None else ik.solve(p, r, q)

    def seed_back(self, side: str, poses: Sequence[ab.KeyPose]):
        """A configuration for ``poses[0]`` from which the straight lines through the rest of
        ``poses`` are reachable, found by solving the last pose globally and tracing the
        chain backwards; None if none."""
        ik = self.ik[side]
        end = poses[-1]
        res = self._global(ik, end.position, end.rotation, self.q(side))
        if not res.ok:
            return None
        back = [ab.KeyPose(k.position, k.rotation, k.finger, linear=True, blend=True) for k in reversed(poses[:-1])]
        try:
            seg = self.solve_path(side, np.concatenate([res.q, [end.finger]]), back)
        except StepFailed:
            return None
        return seg[-1][-1][:6]

    def feasible(self, side: str, poses: Sequence[ab.KeyPose], q_start=None) -> bool:
        try:
            self.solve_path(side, self.q(side) if q_start is None else q_start, poses)
            return True
        except StepFailed:
            return False

    def choose(self, side: str, candidates: Sequence[np.ndarray], build: Callable[[np.ndarray], List[ab.KeyPose]]):
        """The first rotation whose key poses are all reachable (StepFailed if none)."""
        q0 = self.q(side)
        for rotation in candidates:
            poses = build(rotation)
            try:
                self.solve_path(side, q0, poses)
                return rotation
            except StepFailed:
                continue
        raise StepFailed("ik", f"{side}: no reachable grasp among {len(candidates)} orientations")

    # ------------------------------------------------------------ execution
    def run_step(self, step: ab.Step) -> None:
        paths: Dict[str, JointPath] = {}
        for side, poses in step.poses.items():
            try:
                segments = self.solve_path(side, self.q(side), poses)
            except StepFailed as exc:
                raise StepFailed(f"{step.action} (ik)", str(exc)) from None
            planned = [plan(seg, self.dt, speed=step.speed) for seg in segments]
            paths[side] = JointPath(np.concatenate([p.q for p in planned]),
                                    np.concatenate([p.qd for p in planned]), self.dt)
        n = max((len(p.q) for p in paths.values()), default=0)
        self.log.append((step.action, n))
        for i in range(n):
            for side, path in paths.items():
                k = min(i, len(path.q) - 1)
                qd = path.qd[k] if i < len(path.q) else np.zeros(robot.ARM_DOF)
                self._command(side, path.q[k], qd)
            self._advance()
        for _ in range(int(round(step.settle_s / self.dt))):
            self._advance()
        if step.condition is not None:
            view = self.view()
            if not step.condition(view):
                failing = step.condition.failing(view) if isinstance(step.condition, sg.All) else (step.condition.name,)
                raise StepFailed(step.action, "; ".join(failing))
            self.achieved.append(step.condition.name)

    def hold(self, seconds: float, condition: Optional[sg.Condition] = None, action: str = "hold") -> None:
        for _ in range(int(round(seconds / self.dt))):
            self._advance()
            if condition is not None and not condition(self.view()):
                raise StepFailed(action, condition.name)

    def _command(self, side: str, q, qd) -> None:
        if self.limits[side].violations(q, 1e-9):
            self.limit_violations += 1
        self.sim.set_arm_command(side, q, qd)

    def _advance(self) -> None:
        if self.record is not None:
            self.record(self)
        self.sim.step(self.substeps)
        self.control_steps += 1


def _slerp(r0: np.ndarray, r1: np.ndarray, s: float) -> np.ndarray:
    vel = rotation_error(r0, r1)
    angle = float(np.linalg.norm(vel))
    if angle < 1e-9:
        return r1.copy()
    return ab.axis_rotation(vel / angle, angle * s) @ r0


def run_expert_episode(sim, seed: int, record: Optional[Callable] = None) -> EpisodeResult:
    """Reset ``sim`` to ``seed``, run the task's scripted expert, read the privileged success."""
    from sim2real_vla_ros.sim.data_engine.scripts import SCRIPTS

    sim.reset(seed)
    start_time, wall = sim.sim_time, time.time()
    expert = Expert(sim, record=record)
    failed = None
    script = SCRIPTS.get(sim.task.name)
    if script is None:
        failed = "no expert script"
    else:
        try:
            script(expert)
        except StepFailed as exc:
            # IK failures carry coordinates: group them by the step, not the message.
            failed = exc.subgoal if exc.subgoal.endswith("(ik)") else str(exc)
    status = sim.task_status()
    if failed is None and not status["success"]:
        failed = "task check: " + ", ".join(k for k, v in status["criteria"].items() if v is False)
    return EpisodeResult(sim.task.name, seed, bool(status["success"]), expert.control_steps,
                         sim.sim_time - start_time, failed, list(expert.achieved), status,
                         time.time() - wall, expert.limit_violations)
