"""Closed-loop evaluation: a Table-2-style success table per task, beside the paper's numbers.

    python -m sim2real_vla_ros.tools.evaluate --task all --episodes 50 --mode expert
    python -m sim2real_vla_ros.tools.evaluate --task pour_water_single --episodes 10 --mode in-process
    python -m sim2real_vla_ros.tools.evaluate --task pour_water_single --episodes 10 --mode ros
    make evaluate EVAL_ARGS="--task all --episodes 50 --mode in-process"

Modes
-----
``expert``      the data engine's scripted expert (``sim.data_engine``; no models): privileged
                object poses, IK, one joint command per arm per 10 ms. An upper bound of what the
                simulator lets a controller do; each episode starts where the data engine puts
                it (the task's start pose with its domain-randomised initial joint jitter).
``in-process``  the bundle in the in-process runner (``sim.in_process``): the nodes' ROS-free
                cores and the actors' ``ActorController``, the dry run's settings, sim time as
                fast as the CPU allows; the arms are homed to the start pose
                (``in_process.home_arms``, go_to_start's planner and executor) from where the
                simulator's reset left them.
``ros``         the bundle through the full ROS graph: one ``dry_run`` per episode (its own
                processes, DDS, homing with go_to_start through vla_lifecycle_manager); each
                episode's run folder (report.json, overlay video, run.mcap) is kept.

Every episode is seed ``first_seed + i``. An episode ends at the planner's terminal phase (its
"done" is reported as the model's claim), at the task's step limit (Table 2's numbers in
brackets, policy steps = chunks of each task arm) or at step_limit x the chunk period of sim
time. **Success is always the simulator's privileged check** (``task_status()['success']``,
config/tasks.yaml); a model's "done" never counts, and the table shows how often the model
claimed done while the world disagreed.

Writes ``<out>/evaluation.json`` (every episode, every task's row), ``<out>/evaluation.md`` (the
table) and ``<out>/report.html`` (the table and, in ros mode, each episode's overlay video).
Episodes run in ``--workers`` processes (episodes are independent; ros mode runs one at a time).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.task.evaluation import EpisodeOutcome, TaskSummary, summarise, table_markdown

MODES = ("expert", "in-process", "ros")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="all", help="'all' or comma-separated task names of config/tasks.yaml")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first episode (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES, default="expert")
    parser.add_argument("--bundle", default="", help="model bundle folder (bundle modes; default: the installed one)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel episodes (expert and in-process modes; default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/eval_<mode>_<UTC time>)")
    parser.add_argument("--real-time-factor", type=float, default=1.0, help="ros mode: the dry run's real-time factor")
    args = parser.parse_args(argv)
    names = list(tasks.load_tasks()) if args.task == "all" else [name.strip() for name in args.task.split(",") if name.strip()]
    for name in names:
        tasks.get_task(name)  # UnknownTaskError names the known tasks
    if args.episodes < 1 or args.workers < 1:
        parser.error("--episodes and --workers must be >= 1")
    args.tasks = names
    args.out = args.out or os.path.join(
        "runs", f"eval_{args.mode}_{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}")
    return args


def chunk_period_s(bundle: str = "") -> float:
    """Seconds of one policy step: the bundle's chunk_length / control_rate_hz."""
    from sim2real_vla_ros.core.policy.bundle import read_manifest
    from sim2real_vla_ros.nodes.node_support import default_bundle_path

    action = read_manifest(bundle or default_bundle_path()).action
    return action.chunk_length / action.control_rate_hz


# --------------------------------------------------------------------------- one episode per mode

_SIMULATORS: Dict[str, object] = {}


def expert_episode(task: str, seed: int, period_s: float) -> EpisodeOutcome:
    from sim2real_vla_ros.sim.data_engine.expert import run_expert_episode
    from sim2real_vla_ros.sim.simulator import Simulator

    if task not in _SIMULATORS:  # one simulator per task per worker process: building it costs ~1 s
        _SIMULATORS[task] = Simulator(task, camera_width=64, camera_height=48)
    result = run_expert_episode(_SIMULATORS[task], seed)
    return EpisodeOutcome(task, seed, bool(result.success), result.sim_time_s / period_s,
                          end_reason="expert finished" if result.success else "expert failed",
                          sim_time_s=result.sim_time_s, wall_s=result.wall_s, detail=result.failed_subgoal or "",
                          limit_violations=result.limit_violations)


def in_process_episode(task: str, seed: int, period_s: float, bundle: str = "") -> EpisodeOutcome:
    from sim2real_vla_ros.sim.in_process import RunnerOptions, run_episode

    spec = tasks.get_task(task)
    started = time.monotonic()
    summary = run_episode(RunnerOptions(task=task, seed=seed, max_steps=spec.step_limit,
                                        duration_s=spec.step_limit * period_s, bundle=bundle)).summary
    task_arms = [arm for arm in spec.arms if arm in summary["control"]]
    steps = min(summary["control"][arm]["chunks"] for arm in task_arms) if task_arms else 0
    violations = sum(0 if control["limits"]["within_limits"] or not control["limits"]["checked"] else 1
                     for control in summary["control"].values())
    return EpisodeOutcome(task, seed, bool(summary["simulator"]["task_success"]), float(steps),
                          end_reason=summary["end_reason"], model_claimed_done=bool(summary["planner"]["done"]),
                          sim_time_s=summary["episode_sim_s"] or 0.0, wall_s=time.monotonic() - started,
                          limit_violations=violations)


def ros_episode(task: str, seed: int, period_s: float, folder: str, bundle: str = "",
                real_time_factor: float = 1.0) -> EpisodeOutcome:
    spec = tasks.get_task(task)
    run_folder = os.path.join(folder, "ros", f"{task}_seed{seed}")
    command = [sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--task", task, "--seed", str(seed),
               "--max-steps", str(spec.step_limit), "--duration-s", f"{spec.step_limit * period_s:g}",
               "--real-time-factor", f"{real_time_factor:g}", "--out", run_folder]
    if bundle:
        command += ["--bundle", bundle]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        with open(os.path.join(run_folder, "report.json"), encoding="utf-8") as stream:
            report = json.load(stream)
    except (OSError, ValueError):
        return EpisodeOutcome(task, seed, False, float(spec.step_limit), end_reason="dry run failed",
                              wall_s=time.monotonic() - started,
                              detail=f"exit {result.returncode}: {(result.stderr or result.stdout)[-300:]}")
    run = report.get("run", {})
    task_arms = [arm for arm in spec.arms if arm in report.get("control", {})]
    steps = min(report["control"][arm].get("chunks_decoded") or 0 for arm in task_arms) if task_arms else 0
    within = (report.get("checks") or {}).get("commands_within_limits", False)
    return EpisodeOutcome(task, seed, bool((report.get("simulator") or {}).get("task_success")), float(steps),
                          end_reason=run.get("end_reason", ""),
                          model_claimed_done=(report.get("affordances") or {}).get("final_phase") == "succeeded",
                          sim_time_s=run.get("episode_sim_s") or 0.0, wall_s=time.monotonic() - started,
                          detail=os.path.relpath(run_folder, folder), limit_violations=0 if within else 1)


def _run_one(job: tuple) -> EpisodeOutcome:
    mode, task, seed, period_s, bundle = job
    if mode == "expert":
        return expert_episode(task, seed, period_s)
    return in_process_episode(task, seed, period_s, bundle)


# --------------------------------------------------------------------------- the evaluation


def evaluate(args: argparse.Namespace, progress=print) -> dict:
    os.makedirs(args.out, exist_ok=True)
    period_s = chunk_period_s(args.bundle)
    jobs = [(args.mode, task, args.first_seed + i, period_s, args.bundle)
            for task in args.tasks for i in range(args.episodes)]
    outcomes: List[EpisodeOutcome] = []
    started = time.monotonic()

    def record(outcome: EpisodeOutcome) -> None:
        outcomes.append(outcome)
        done = sum(1 for o in outcomes if o.task == outcome.task)
        wins = sum(1 for o in outcomes if o.task == outcome.task and o.success)
        progress(f"[evaluate] {outcome.task} seed {outcome.seed}: {'success' if outcome.success else 'failure'} "
                 f"({outcome.detail or outcome.end_reason}); {wins}/{done} of {args.episodes}; "
                 f"{len(outcomes)}/{len(jobs)} episodes, {time.monotonic() - started:.0f} s")

    if args.mode == "ros":
        for _mode, task, seed, _period, bundle in jobs:
            record(ros_episode(task, seed, period_s, args.out, bundle, args.real_time_factor))
    elif args.workers == 1:
        for job in jobs:
            record(_run_one(job))
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for outcome in pool.map(_run_one, jobs):
                record(outcome)
    summaries = [summarise(task, outcomes, tasks.get_task(task).step_limit) for task in args.tasks]
    result = {
        "schema": "vla_evaluation/1", "mode": args.mode, "episodes_per_task": args.episodes,
        "first_seed": args.first_seed, "bundle": args.bundle or "installed reference", "chunk_period_s": period_s,
        "wall_s": round(time.monotonic() - started, 1), "machine": _machine(),
        "tasks": {row.task: row.as_dict() for row in summaries},
        "episodes": [outcome.as_dict() for outcome in outcomes],
    }
    write_outputs(args.out, result, summaries, outcomes)
    return result


def _machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def write_outputs(folder: str, result: dict, summaries: Sequence[TaskSummary],
                  outcomes: Sequence[EpisodeOutcome]) -> None:
    with open(os.path.join(folder, "evaluation.json"), "w", encoding="utf-8") as stream:
        json.dump(result, stream, indent=1)
    lines = table_markdown(result["mode"], summaries)
    with open(os.path.join(folder, "evaluation.md"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "report.html"), "w", encoding="utf-8") as stream:
        stream.write(report_html(result, summaries, outcomes, folder))


def report_html(result: dict, summaries: Sequence[TaskSummary], outcomes: Sequence[EpisodeOutcome],
                folder: str) -> str:
    """A page a person reads at a glance: the table beside the paper, then every episode."""
    def cell(text) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    rows = []
    for row in summaries:
        paper = row.paper or {}
        ours = paper.get("sim2real_vla")
        baseline = paper.get("best_baseline")
        rate = row.successes / row.episodes if row.episodes else 0.0
        bar = f'<div class="bar"><div style="width:{100 * rate:.0f}%"></div></div>'
        rows.append("<tr>" + cell(f"{row.task} ({row.step_limit})") + f"<td>{row.successes}/{row.episodes} {bar}</td>"
                    + cell(f"{row.interval95[0]:.2f}-{row.interval95[1]:.2f}") + cell(f"{row.mean_steps:.1f}")
                    + cell(f"{row.claimed_done} / {row.claimed_but_failed}")
                    + cell(f"{ours[0]}/{ours[1]}" if ours else "n/a") + cell(paper.get("steps", "n/a"))
                    + cell(f"{baseline[1]}/50 {baseline[0]}" if baseline else "n/a") + "</tr>")
    episodes = []
    for outcome in outcomes:
        media = ""
        run_folder = os.path.join(folder, outcome.detail) if result["mode"] == "ros" else ""
        videos = [name for name in ("overlay.webm", "overlay.mp4") if run_folder and
                  os.path.exists(os.path.join(run_folder, name))]
        if videos:
            link = html.escape(os.path.join(outcome.detail, "report.html"))
            media = (f'<video src="{html.escape(os.path.join(outcome.detail, videos[0]))}" controls width="320">'
                     f'</video><br><a href="{link}">run page</a>')
        episodes.append("<tr>" + cell(outcome.task) + cell(outcome.seed)
                        + f'<td class="{"ok" if outcome.success else "fail"}">'
                          f'{"success" if outcome.success else "failure"}</td>'
                        + cell(f"{outcome.steps:.1f}") + cell(outcome.end_reason)
                        + cell("" if outcome.model_claimed_done is None else outcome.model_claimed_done)
                        + cell(outcome.detail) + f"<td>{media}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation: {html.escape(result['mode'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;font-size:14px}}.bar{{background:#eee;width:100px;height:8px;display:inline-block}}
.bar div{{background:#2a7;height:8px}}.ok{{color:#070}}.fail{{color:#a00}}</style></head>
<body><h1>Closed-loop evaluation, mode {html.escape(result['mode'])}</h1>
<p>{result['episodes_per_task']} episodes per task from seed {result['first_seed']}; bundle
{html.escape(str(result['bundle']))}; {html.escape(result['machine'])}; {result['wall_s']} s wall. Success is the
simulator's privileged check; the model's own "done" is shown as a claim.</p>
<table><tr><th>task (step limit)</th><th>successes</th><th>95 % interval</th><th>mean steps</th>
<th>model claimed done / of which failed</th><th>paper Sim2Real-VLA (Sim.)</th><th>paper steps</th>
<th>best baseline (Sim.)</th></tr>{''.join(rows)}</table>
<h2>Episodes</h2><table><tr><th>task</th><th>seed</th><th>simulator</th><th>steps</th><th>end</th>
<th>model claimed done</th><th>detail</th><th>video</th></tr>{''.join(episodes)}</table></body></html>
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse_args(argv)
    except tasks.UnknownTaskError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    result = evaluate(args)
    summaries = [TaskSummary(**{**row, "interval95": tuple(row["interval95"])}) for row in result["tasks"].values()]
    print("\n".join(table_markdown(args.mode, summaries)))
    print(f"[evaluate] {args.out}/evaluation.json, evaluation.md, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
