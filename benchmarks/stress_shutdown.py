"""Stress the nodes' shutdown (issue 14): back-to-back dry runs and fresh-clone `make test` runs.

Not part of `make test` or `make bench` (it takes tens of minutes). What it counts:

* dry runs (``python -m sim2real_vla_ros.tools.dry_run``, a short episode each): every node
  process the run stopped, its exit code, whether it needed SIGKILL (exit -9: the dry run
  asks for a SIGUSR1 stack dump first, and the dump in the node's log says where it hung),
  whether its shutdown watchdog had to end it (exit 0, but the line "shutdown not finished"
  and the stacks are in its log), and the dry run's own exit code;
* `make test` in a fresh clone of a committed branch (``git clone --branch``, its own .venv,
  as a new user would): green or not, the pytest summary line, and every node that needed
  SIGKILL or its watchdog, from the test harness's shutdown log (``SIM2REAL_SHUTDOWN_LOG``,
  test/ros_harness.py) and from the run folders the dry-run and live-graph tests leave under
  pytest's ``--basetemp``.

``--load-cores K`` keeps K extra busy-loop processes running meanwhile (the "machine
otherwise busy" condition); the load averages are recorded. Writes
benchmarks/results/stress_shutdown.json (bench_common.write_results).

Usage: python benchmarks/stress_shutdown.py [--dry-runs 20] [--make-tests 3] [--load-cores 1]
       [--branch issue14] [--episode-s 3]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

from bench_common import machine, write_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILE = os.path.join(REPO, "benchmarks", "results", "stress_shutdown.json")
DRY_RUN_LIMIT_S = 300
MAKE_TEST_LIMIT_S = 3600
WATCHDOG_MARK = "shutdown not finished"
DUMP_MARK = "most recent call first"


def _env(domain_id: int) -> dict:
    env = dict(os.environ)
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id),
                "PYTHONUNBUFFERED": "1"})
    env.setdefault("MUJOCO_GL", "egl")
    return env


def _stack_dump(text: str) -> str:
    """The last thread-stack dump in a node's output ('' if none), trimmed."""
    at = text.rfind(DUMP_MARK)
    if at < 0:
        return ""
    start = text.rfind("\n", 0, max(0, text.rfind("Thread 0x", 0, at), text.rfind("Current thread", 0, at)))
    return text[start + 1:][-4000:]


def scan_run_folder(folder: str) -> list:
    """Nodes of a dry-run-style run folder (report.json and/or logs) that needed SIGKILL or their watchdog."""
    found = []
    codes = {}
    report_path = os.path.join(folder, "report.json")
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as stream:
            codes = {name: entry.get("exit_code") for name, entry in json.load(stream).get("nodes", {}).items()}
    logs = glob.glob(os.path.join(folder, "logs", "*.log")) + glob.glob(os.path.join(folder, "*.log"))
    for path in sorted(logs):
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8", errors="replace") as stream:
            text = stream.read()
        watchdog = [line for line in text.splitlines() if WATCHDOG_MARK in line]
        # Without a report (the live-graph test's folder) a stack dump without a watchdog line is
        # the SIGUSR1 that kill_after_stack_dump sends before SIGKILL.
        killed = codes.get(name) == -9 if name in codes else bool(_stack_dump(text)) and not watchdog
        if killed or watchdog:
            found.append({"node": name, "folder": folder, "exit_code": codes.get(name), "killed": killed,
                          "watchdog": watchdog, "stack_dump": _stack_dump(text)})
    return found


def dry_runs(count: int, episode_s: float, workdir: str, progress=lambda part: None) -> dict:
    runs = []
    for index in range(count):
        folder = os.path.join(workdir, f"dry_run_{index:02d}")
        command = [sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--duration-s", str(episode_s),
                   "--out", folder]
        started = time.monotonic()
        try:
            result = subprocess.run(command, cwd=REPO, env=_env(random.SystemRandom().randint(5, 95)),
                                    capture_output=True, text=True, timeout=DRY_RUN_LIMIT_S)
            code, tail = result.returncode, (result.stdout + result.stderr)[-2000:]
        except subprocess.TimeoutExpired as exc:
            code, tail = "timeout", str(exc.stdout or "")[-2000:]
        problems = scan_run_folder(folder)
        nodes = 0
        if os.path.isfile(os.path.join(folder, "report.json")):
            with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
                nodes = len(json.load(stream).get("nodes", {}))
        runs.append({"index": index, "exit_code": code, "wall_s": round(time.monotonic() - started, 1),
                     "nodes_stopped": nodes, "problems": problems, **({"output_tail": tail} if code != 0 else {})})
        print(f"dry run {index + 1}/{count}: exit {code}, {nodes} nodes, "
              f"{sum(p['killed'] for p in problems)} killed, {sum(bool(p['watchdog']) for p in problems)} by watchdog, "
              f"{runs[-1]['wall_s']} s", flush=True)
        progress({"runs": runs, **_totals(runs)})
    return {"runs": runs, **_totals(runs)}


def make_tests(count: int, branch: str, workdir: str, progress=lambda part: None) -> dict:
    runs = []
    for index in range(count):
        clone = os.path.join(workdir, f"clone_{index}")
        subprocess.run(["git", "clone", "--quiet", "--branch", branch, REPO, clone], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True).stdout.strip()
        basetemp = os.path.join(workdir, f"pytest_{index}")
        shutdown_log = os.path.join(workdir, f"shutdown_log_{index}.jsonl")
        env = dict(os.environ, PYTEST_ADDOPTS=f"--basetemp={basetemp}", SIM2REAL_SHUTDOWN_LOG=shutdown_log)
        for key in ("ROS_DOMAIN_ID", "VIRTUAL_ENV", "AMENT_PREFIX_PATH"):
            env.pop(key, None)  # as a new user: make picks the domain, the clone's .venv is used
        started = time.monotonic()
        try:
            result = subprocess.run(["make", "test"], cwd=clone, env=env, capture_output=True, text=True,
                                    timeout=MAKE_TEST_LIMIT_S)
            code, output = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = "timeout", str(exc.stdout or "")
        summary = next((line.strip("= ") for line in reversed(output.splitlines())
                        if re.search(r"\d+ (passed|failed)", line)), "")
        failed = [line for line in output.splitlines() if line.startswith("FAILED ")]
        problems = []
        if os.path.isfile(shutdown_log):
            with open(shutdown_log, encoding="utf-8") as stream:
                problems += [json.loads(line) for line in stream if line.strip()]
        for report in glob.glob(os.path.join(basetemp, "**", "report.json"), recursive=True):
            problems += scan_run_folder(os.path.dirname(report))
        for folder in glob.glob(os.path.join(basetemp, "graph_live*")):
            problems += scan_run_folder(folder)
        runs.append({"index": index, "commit": commit, "exit_code": code, "green": code == 0, "summary": summary,
                     "failed_tests": failed, "wall_s": round(time.monotonic() - started, 1), "problems": problems})
        totals = _totals(runs[-1:])
        print(f"make test {index + 1}/{count} ({commit}): {'green' if code == 0 else 'RED'} - {summary}; "
              f"{totals['kills']} killed, {totals['watchdog_exits']} by watchdog (and "
              f"{totals['expected_watchdog_exits_of_test_shutdown']} of test_shutdown's blocked probes), "
              f"{runs[-1]['wall_s']} s", flush=True)
        progress({"runs": runs, "green": sum(run["green"] for run in runs), **_totals(runs)})
    return {"runs": runs, "green": sum(run["green"] for run in runs), **_totals(runs)}


#: Nodes of test_shutdown.py that block their own destruction on purpose: their watchdog exit is the test.
EXPECTED_WATCHDOG_PREFIX = "shutdown_probe_blocked"


def _totals(runs: list) -> dict:
    problems = [p for run in runs for p in run["problems"]]
    expected = [p for p in problems if p["node"].startswith(EXPECTED_WATCHDOG_PREFIX) and not p["killed"]]
    problems = [p for p in problems if p not in expected]
    return {"count": len(runs), "expected_watchdog_exits_of_test_shutdown": len(expected),
            "kills": sum(p["killed"] for p in problems),
            "killed_nodes": sorted({p["node"] for p in problems if p["killed"]}),
            "watchdog_exits": sum(bool(p["watchdog"]) and not p["killed"] for p in problems),
            "watchdog_nodes": sorted({p["node"] for p in problems if p["watchdog"]})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-runs", type=int, default=20, help="back-to-back dry runs (default: %(default)s)")
    parser.add_argument("--make-tests", type=int, default=3, help="fresh-clone make test runs (default: %(default)s)")
    parser.add_argument("--branch", default=None, help="branch to clone for make test (default: the current one)")
    parser.add_argument("--episode-s", type=float, default=3.0, help="sim seconds per dry run (default: %(default)s)")
    parser.add_argument("--load-cores", type=int, default=1, help="extra busy-loop processes (default: %(default)s)")
    parser.add_argument("--output", default=RESULTS_FILE)
    args = parser.parse_args(argv)
    branch = args.branch or subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=REPO,
                                           capture_output=True, text=True).stdout.strip()
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load_cores)]
    started = time.monotonic()
    report = {"benchmark": "stress_shutdown",
              "settings": {"dry_runs": args.dry_runs, "make_tests": args.make_tests, "branch": branch,
                           "episode_sim_s": args.episode_s, "extra_busy_processes": args.load_cores},
              "machine": machine(load_average_at_start=[round(v, 2) for v in os.getloadavg()]),
              "complete": False, "dry_runs": {}, "make_tests": {}}

    def progress(part: str):
        def save(results: dict) -> None:  # after every run: a long stress run interrupted keeps what it did
            report[part] = results
            report["machine"]["load_average_now"] = [round(v, 2) for v in os.getloadavg()]
            report["wall_s"] = round(time.monotonic() - started, 1)
            write_results(args.output, report)
        return save

    try:
        with tempfile.TemporaryDirectory(prefix="stress_shutdown_") as workdir:
            dry = dry_runs(args.dry_runs, args.episode_s, workdir, progress("dry_runs"))
            make = make_tests(args.make_tests, branch, workdir, progress("make_tests"))
    finally:
        for process in load:
            process.kill()
            process.wait()
    report.update({"complete": True, "dry_runs": dry, "make_tests": make})
    print(f"\ndry runs: {dry['count']}, nodes killed: {dry['kills']} {dry['killed_nodes']}, "
          f"watchdog exits: {dry['watchdog_exits']} {dry['watchdog_nodes']}")
    print(f"make test: {make['green']} of {make['count']} green, nodes killed: {make['kills']} "
          f"{make['killed_nodes']}, watchdog exits: {make['watchdog_exits']} {make['watchdog_nodes']}")
    write_results(args.output, report)
    return 0 if dry["kills"] == 0 and make["green"] == make["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
