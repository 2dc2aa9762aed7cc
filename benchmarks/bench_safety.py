"""Benchmark the per-tick cost of the issue-10 safety additions, before vs after, in one run.

*Before* is ``core/control/safety.py`` as of commit ``BASELINE_COMMIT`` (loaded from git into
its own module), *after* the working tree's. Both filters are driven through the same ticks
of a moving arm (a smooth setpoint within the limits, the measured state one tick behind,
fresh inputs), in alternating blocks so that the shared machine's load hits both alike.
Times, per call in microseconds (p50 / p99 / mean):

- ``filter``: ``SafetyFilter.filter`` (after: + the last-line invariant check);
- ``trajectory_tail``: ``safe_trajectory_tail`` (the trajectory mode's preview; after: + the
  vectorised check of the rollout);
- ``reading_check`` / ``commanded`` (after only, new): ``JointReadingValidator.check`` per
  /joint_states sample and ``commanded`` per tick.

Writes benchmarks/results/safety.json with the machine description.

Usage: python benchmarks/bench_safety.py [--ticks 20000]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from sim2real_vla_ros.core.control import safety as after
from sim2real_vla_ros.core.control.actor_io import safe_trajectory_tail
from sim2real_vla_ros.core.control.joint_reading import JointReadingValidator
from sim2real_vla_ros.core.robot import arm_limits
from bench_common import machine, write_results

BASELINE_COMMIT = "95aa1dd"  # main before issue 10's safety changes
RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "safety.json")
DT = 0.02
HORIZON = 5
BLOCK = 500  # ticks per alternating block
READINGS_PER_TICK = 4  # /joint_states at 200 Hz against a 50 Hz control tick


def load_baseline():
    """The safety module as of BASELINE_COMMIT, or None when git cannot provide it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:sim2real_vla_ros/core/control/safety.py"],
                                cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"baseline unavailable: {error}", file=sys.stderr)
        return None
    with tempfile.NamedTemporaryFile("w", suffix="_safety_before.py", delete=False) as stream:
        stream.write(source)
    spec = importlib.util.spec_from_file_location("safety_before", stream.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules["safety_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    os.unlink(stream.name)
    return module


def setpoints(limits, ticks: int) -> np.ndarray:
    """A smooth motion through the workspace within the velocity and acceleration limits."""
    middle = (limits.lower + limits.upper) / 2.0
    amplitude = 0.3 * (limits.upper - limits.lower) / 2.0
    t = np.arange(ticks + HORIZON + 1)[:, None] * DT
    return middle + amplitude * np.sin(0.8 * t + np.arange(limits.num_joints))


class Driver:
    """One filter (of either module) ticking through the setpoints."""

    def __init__(self, module, urdf, path: np.ndarray) -> None:
        self.limits = module.SafetyLimits.from_config(urdf)
        self.filter = module.SafetyFilter(self.limits)
        self.path = path
        self.tick = 0
        self.measured = path[0]
        self.filter.filter(path[0], path[0], 0.0, self._stamps(0.0), False, DT)

    def _stamps(self, now: float) -> dict:
        return {name: now for name in self.limits.max_input_age_s}

    def arguments(self):
        self.tick += 1
        now = self.tick * DT
        return (self.path[self.tick], self.measured, now, self._stamps(now), False, DT)

    def after_tick(self, decision) -> None:
        self.measured = decision.command  # the arm follows with a tick of lag


def stats(samples_ns: list) -> dict:
    samples = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(samples, 50)), "p99_us": float(np.percentile(samples, 99)),
            "mean_us": float(samples.mean()), "calls": int(samples.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20000, help="timed ticks per implementation (>= 2000)")
    args = parser.parse_args()
    if args.ticks < 2000:
        parser.error("--ticks must be >= 2000 for a meaningful p99")
    urdf = arm_limits("left")
    path = setpoints(after.SafetyLimits.from_config(urdf), args.ticks + BLOCK)
    before = load_baseline()
    drivers = {"after": Driver(after, urdf, path)}
    if before is not None:
        drivers["before"] = Driver(before, urdf, path)
    timings = {name: {"filter": [], "trajectory_tail": []} for name in drivers}
    validator = JointReadingValidator.from_limits(urdf, drivers["after"].limits)
    validator_times = {"reading_check": [], "commanded": []}
    rng = np.random.default_rng(0)
    clock = time.perf_counter_ns

    for _ in range(args.ticks // BLOCK):
        for name, driver in drivers.items():  # alternate: the machine's load hits both alike
            for _ in range(BLOCK):
                call = driver.arguments()
                start = clock()
                decision = driver.filter.filter(*call)
                timings[name]["filter"].append(clock() - start)
                future = driver.path[driver.tick + 1:driver.tick + 1 + HORIZON]
                start = clock()
                safe_trajectory_tail(driver.filter, future, driver.measured, DT)
                timings[name]["trajectory_tail"].append(clock() - start)
                driver.after_tick(decision)
                if name != "after":
                    continue
                now = call[2]
                for k in range(READINGS_PER_TICK):
                    reading = driver.measured + rng.normal(0.0, 1e-4, 7)
                    stamp = now - DT + (k + 1) * DT / READINGS_PER_TICK
                    start = clock()
                    validator.check(reading, stamp, now)
                    validator_times["reading_check"].append(clock() - start)
                start = clock()
                validator.commanded(decision.command, now)
                validator_times["commanded"].append(clock() - start)

    results = {name: {what: stats(samples) for what, samples in entry.items()} for name, entry in timings.items()}
    results["after"].update({what: stats(samples) for what, samples in validator_times.items()})
    counters = validator.counters()
    added = None
    if "before" in results:
        added = {
            "filter_p50_us": results["after"]["filter"]["p50_us"] - results["before"]["filter"]["p50_us"],
            "trajectory_tail_p50_us": results["after"]["trajectory_tail"]["p50_us"]
            - results["before"]["trajectory_tail"]["p50_us"],
            "per_tick_p50_us": (results["after"]["filter"]["p50_us"] - results["before"]["filter"]["p50_us"])
            + READINGS_PER_TICK * results["after"]["reading_check"]["p50_us"]
            + results["after"]["commanded"]["p50_us"],
        }
    report = {
        "benchmark": "safety_per_tick_cost",
        "baseline_commit": BASELINE_COMMIT if before is not None else None,
        "settings": {"ticks": args.ticks, "block": BLOCK, "dt_s": DT, "trajectory_horizon_steps": HORIZON,
                     "readings_per_tick": READINGS_PER_TICK},
        "results_us": results,
        "added_us": added,
        "validator_counters": counters,
        "machine": machine(numpy=np.__version__, load_average=list(os.getloadavg())),
        "note": "shared machine: other processes inflate p99; before and after ran interleaved in one process",
    }
    print(f"safety filter per-tick cost, {args.ticks} ticks each, blocks of {BLOCK} alternating")
    print(f"{'measurement':<34}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    for name, entry in results.items():
        for what, values in entry.items():
            print(f"{name + ' ' + what:<34}{values['p50_us']:>10.1f}{values['p99_us']:>10.1f}{values['mean_us']:>10.1f}")
    if added:
        print(f"added per tick (p50): filter {added['filter_p50_us']:+.1f} us, + {READINGS_PER_TICK} reading checks "
              f"and commanded = {added['per_tick_p50_us']:+.1f} us; trajectory tail "
              f"{added['trajectory_tail_p50_us']:+.1f} us")
    print(f"validator: {counters}")
    write_results(RESULTS_FILE, report)


if __name__ == "__main__":
    main()
