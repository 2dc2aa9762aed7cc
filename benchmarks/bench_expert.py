"""Scripted-expert benchmark: success rate per task over seeded episodes.

    .venv/bin/python benchmarks/bench_expert.py --episodes 50 --tasks all [--workers 2]

Each episode resets the simulator with seed ``i`` (scene sampling + initial joint jitter),
runs the task's expert (sim.data_engine.scripts) and reads the simulator's privileged success
check. Writes benchmarks/results/expert.json: successes/episodes, 95 % Wilson interval, mean
control steps (100 Hz) and sim seconds, and which sub-goal each failed episode stopped at.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import platform
import sys
import time

from sim2real_vla_ros.core.task.evaluation import wilson_interval

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "expert.json")

_SIMS = {}


def run_episode(args):
    task, seed = args
    from sim2real_vla_ros.sim.data_engine.expert import run_expert_episode
    from sim2real_vla_ros.sim.simulator import Simulator

    if task not in _SIMS:
        _SIMS[task] = Simulator(task, camera_width=64, camera_height=48)
    result = run_expert_episode(_SIMS[task], seed)
    return {"task": task, "seed": seed, "success": result.success, "control_steps": result.control_steps,
            "sim_time_s": round(result.sim_time_s, 3), "failed_subgoal": result.failed_subgoal,
            "wall_s": round(result.wall_s, 2), "limit_violations": result.limit_violations}


def main(argv=None) -> int:
    from sim2real_vla_ros.core.task import tasks as task_lib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--tasks", default="all", help="comma-separated task names or 'all'")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    names = sorted(task_lib.load_tasks()) if args.tasks == "all" else args.tasks.split(",")
    jobs = [(t, args.first_seed + i) for t in names for i in range(args.episodes)]
    start = time.time()
    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_episode, jobs):
            rows.append(row)
            done = sum(1 for r in rows if r["task"] == row["task"])
            ok = sum(1 for r in rows if r["task"] == row["task"] and r["success"])
            print(f"[{len(rows)}/{len(jobs)} {time.time() - start:6.0f}s] {row['task']} seed {row['seed']}: "
                  f"{'ok ' if row['success'] else 'FAIL'} {row['failed_subgoal'] or ''} ({ok}/{done})", flush=True)
    summary = {}
    for name in names:
        mine = [r for r in rows if r["task"] == name]
        wins = sum(r["success"] for r in mine)
        failures = collections.Counter(r["failed_subgoal"] or "final check" for r in mine if not r["success"])
        summary[name] = {
            "successes": wins, "episodes": len(mine), "rate": round(wins / max(1, len(mine)), 4),
            "wilson95": wilson_interval(wins, len(mine)),
            "mean_control_steps": round(sum(r["control_steps"] for r in mine) / max(1, len(mine)), 1),
            "mean_sim_time_s": round(sum(r["sim_time_s"] for r in mine) / max(1, len(mine)), 2),
            "failures_by_subgoal": dict(failures),
            "failed_seeds": sorted(r["seed"] for r in mine if not r["success"]),
            "limit_violations": sum(r["limit_violations"] for r in mine),
        }
    out = {"episodes_per_task": args.episodes, "first_seed": args.first_seed, "control_hz": 100,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), {args.workers} workers",
           "wall_s": round(time.time() - start, 1), "tasks": summary}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: (v["successes"], v["episodes"], v["wilson95"], v["mean_control_steps"]) for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
