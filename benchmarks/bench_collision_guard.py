"""Cost of the collision guard per call, and of the actor's 50 Hz tick with and without it.

What is measured (wall time, this machine, one thread)
------------------------------------------------------
* ``check``: one :meth:`CollisionGuard.check` (pose the kinematic copy, MuJoCo collision with
  the inflated margins, classify) in three situations: ``far`` (each task's start pose, the
  arms 0.4 m apart), ``near`` (the hand-over collision course 1-6 cm before the guard stops it:
  the most contacts inside the margins), ``blocked`` (a setpoint through the table).
* ``check_path``: the trajectory mode's message (the command + ``trajectory_horizon_steps`` = 5
  future points, as the actor publishes them) checked point by point, on the hand-over course.
* ``tick``: :meth:`ActorController.tick` of the shipped actor (trajectory mode, async schedule,
  crossfade, pchip) driven by a scripted policy (minimum-jerk chunks toward random targets, no
  model: the model runs in the inference thread, not in the tick) for ``--ticks`` ticks,
  ``before`` = the tick alone, ``after`` = the tick plus the guard on every point it sends
  (``check_path`` of command + tail), the wiring proposed for the actor.

Writes benchmarks/results/collision_guard.json; prints p50 / p99 in microseconds, wall clock
and thread CPU time (on a shared, loaded machine the wall p99 is mostly descheduling).

    python benchmarks/bench_collision_guard.py [--calls 3000] [--ticks 3000]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import bench_common  # noqa: F401  (puts the repository root on sys.path)
from actor_episode import LoopConfig, PolicyOutput, run_episode
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController, build_limits
from sim2real_vla_ros.core.control.collision import CollisionScene
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard
from sim2real_vla_ros.core.task.tasks import get_task, load_tasks

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "collision_guard.json")
ARM = "left"
CHUNK_STEPS = 25
CHUNK_DT = 0.04  # 25 Hz action chunks (AgileX's RDT rate), 1 s long


def percentiles(wall_s, cpu_s) -> dict:
    """Wall-clock and thread-CPU percentiles (us). On a loaded shared machine the wall p99 is
    mostly time the thread was not scheduled; the CPU time is the work itself."""
    wall, cpu = np.asarray(wall_s) * 1e6, np.asarray(cpu_s) * 1e6
    return {"p50_us": round(float(np.percentile(wall, 50)), 1), "p99_us": round(float(np.percentile(wall, 99)), 1),
            "cpu_p50_us": round(float(np.percentile(cpu, 50)), 1),
            "cpu_p99_us": round(float(np.percentile(cpu, 99)), 1),
            "mean_us": round(float(wall.mean()), 1), "max_us": round(float(wall.max()), 1), "n": int(wall.size)}


def timed(function, arguments, calls: int) -> dict:
    wall, cpu = [], []
    for index in range(calls):
        args = arguments[index % len(arguments)]
        start, start_cpu = time.perf_counter(), time.thread_time()
        function(*args)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return percentiles(wall, cpu)


def handover_course(points: int = 200):
    task = get_task("items_handover_place")
    left, right = task.init_joints("left"), task.init_joints("right")
    goal_left, goal_right = left.copy(), right.copy()
    goal_left[:3], goal_right[:3] = (-1.1, 1.9, -1.2), (1.1, 1.9, -1.2)
    s = np.linspace(0.0, 1.0, points)[:, None]
    return left + s * (goal_left - left), right + s * (goal_right - right)


def bench_checks(calls: int) -> dict:
    guard = CollisionGuard(ARM)
    far = [(task.init_joints("left"), task.init_joints("right"), 0.02, 0.5) for task in load_tasks().values()]
    lefts, rights = handover_course()
    scene = CollisionScene(None)
    near = []
    for left, right in zip(lefts, rights):
        slack, _pair, _kind = scene.clearance(left, right, {"self": -1.0, "table": -1.0, "body": -1.0}, 0.2)
        if 0.02 <= slack <= 0.08:
            near.append((left, right, 0.02, 0.1))
    task = get_task("pour_water_single")
    through = task.init_joints("left")
    through[1], through[2] = 2.3, -0.9
    blocked = [(through, task.init_joints("right"), 0.02, 0.5)]
    paths = [(np.stack([lefts[min(i + k, len(lefts) - 1)] for k in range(6)]), rights[i], 0.02, 0.5)
             for i in range(0, len(lefts) - 6, 5)]
    return {
        "check_far": timed(guard.check, far, calls),
        "check_near": timed(guard.check, near or far, calls),
        "check_blocked": timed(guard.check, blocked, calls),
        "check_path_6_points": timed(guard.check_path, paths, max(1, calls // 3)),
        "near_poses": len(near),
    }


class ScriptedPolicy:
    """Minimum-jerk chunks toward random targets near the start pose (no model)."""

    def __init__(self, start: np.ndarray, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.start = start
        limits = robot.arm_limits(ARM)
        self.lower, self.upper = limits.lower, limits.upper

    def __call__(self, joint_state: np.ndarray, obs_stamp_s: float) -> PolicyOutput:
        target = np.clip(self.start + self.rng.uniform(-0.3, 0.3, 7) * np.r_[np.ones(6), 0.05],
                         self.lower, self.upper)
        s = np.arange(CHUNK_STEPS)[:, None] / (CHUNK_STEPS - 1)
        profile = 10 * s**3 - 15 * s**4 + 6 * s**5
        return PolicyOutput(joint_state[None] + (target - joint_state)[None] * profile, compute_s=0.15)


def bench_ticks(ticks: int) -> dict:
    task = get_task("items_handover_place")
    start, other = task.init_joints(ARM), task.init_joints("right")
    limits = build_limits(robot.arm_limits(ARM), {}, {"cam_high": 0.5, "wrist": 0.5, "joint_state": 0.1,
                                                       "affordance": 30.0})
    guard = CollisionGuard(ARM)
    results = {}
    for label in ("before", "after"):
        config = ActorConfig(arm=ARM, output_mode="trajectory", blend="crossfade", chunk_interpolation="pchip")
        controller = ActorController(config, limits, CHUNK_DT, 3)
        samples, cpu, blocked = [], [], [0]
        tick = controller.tick
        last_sent = [None]

        def timed_tick(now_s: float, tick=tick, label=label):
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            output = tick(now_s)
            if label == "after" and output.decision.command is not None:
                points = output.trajectory if output.trajectory is not None else output.decision.command[None]
                n_ok, _verdict = guard.check_path(points, other, 0.02, 0.5, last_sent[0])
                if n_ok == 0:
                    blocked[0] += 1
                else:
                    last_sent[0] = points[0]
            cpu.append(time.thread_time() - begin_cpu)
            samples.append(time.perf_counter() - begin)
            return output

        controller.tick = timed_tick
        world = LoopConfig(extra_delay_s=0.0, motion_s=ticks * config.dt, max_time_s=ticks * config.dt * 3)
        run_episode(ScriptedPolicy(start), controller, world, start)
        results[label] = {**percentiles(samples, cpu), "guard_blocked_ticks": blocked[0]}
    for key in ("p50_us", "p99_us", "cpu_p50_us", "cpu_p99_us"):
        results[f"added_{key}"] = round(results["after"][key] - results["before"][key], 1)
    results["budget_us"] = 1e6 / 50.0
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--ticks", type=int, default=3000)
    args = parser.parse_args(argv)
    import mujoco

    report = {
        "benchmark": "collision_guard",
        "machine": bench_common.machine(mujoco=mujoco.__version__, load_average=list(os.getloadavg())),
        "checks": bench_checks(args.calls),
        "actor_tick": bench_ticks(args.ticks),
    }
    for name, values in report["checks"].items():
        if isinstance(values, dict):
            print(f"{name:22s} wall p50 {values['p50_us']:8.1f} p99 {values['p99_us']:8.1f} us | "
                  f"cpu p50 {values['cpu_p50_us']:8.1f} p99 {values['cpu_p99_us']:8.1f} us")
    for label in ("before", "after"):
        values = report["actor_tick"][label]
        print(f"actor tick {label:11s} wall p50 {values['p50_us']:8.1f} p99 {values['p99_us']:8.1f} us | "
              f"cpu p50 {values['cpu_p50_us']:8.1f} p99 {values['cpu_p99_us']:8.1f} us")
    bench_common.write_results(RESULTS, report)


if __name__ == "__main__":
    main()
