"""Benchmark the actor node's control loop on wall time: command rate, tick gaps, CPU.

Each round runs ``actor_left`` (reference bundle, trajectory output, 50 Hz) for ``--seconds``
against the test suite's FakeWorld (test/actor_world.py: masked images at 20 Hz, an
alternating affordance, joint states at 100 Hz echoing the commands), in two configurations
measured side by side, rounds alternating:

* single - the node as shipped: a SingleThreadedExecutor for the short callbacks and the
  inference in its own thread (nodes/node_support.BackgroundWorker);
* multi  - the same node spun by rclpy's MultiThreadedExecutor(5) (benchmarks/
  actor_multithreaded.py), which busy-waits holding the GIL whenever a ready entity's
  callback group is busy (ros2/rclpy#1223).

Per configuration: the median over rounds of the command rate (commands received over the span
of their stamps), the p99 and max gap between consecutive command stamps, gaps over 100 ms, the actor
process's CPU use (cores) and the inference latency (the node's /diagnostics). Prints a table
and writes benchmarks/results/bench_actor_node.json.

Usage: python benchmarks/bench_actor_node.py [--seconds 15] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test"))  # the test harness's FakeWorld

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from actor_world import RATE_HZ, FakeWorld, start_actor  # noqa: E402
from bench_common import machine, write_results  # noqa: E402
from ros_harness import Probe, wait_for  # noqa: E402
from sim2real_vla_ros.nodes import common  # noqa: E402

RESULTS_FILE = os.path.join(HERE, "results", "bench_actor_node.json")
MODULES = {"single": "sim2real_vla_ros.nodes.actor", "multi": "benchmarks.actor_multithreaded"}
COMMANDS = "/vla/actor_left/command"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def newest_diagnostics(probe: Probe) -> dict:
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == "actor_left":
                return {kv.key: kv.value for kv in status.values}
    return {}


def one_round(probe: Probe, configuration: str, seconds: float) -> dict:
    process = start_actor("left", module=MODULES[configuration])
    try:
        wait_for(lambda: len(probe.received(COMMANDS)) > 25, 60.0, "the actor's first commands", processes=[process])
        probe.clear(COMMANDS)
        probe.clear("/diagnostics")
        cpu_start, wall_start = cpu_seconds(process.proc.pid), time.monotonic()
        wait_for(lambda: time.monotonic() - wall_start >= seconds, seconds + 5.0, "the measuring window",
                 poll=0.1, processes=[process])
        cpu = (cpu_seconds(process.proc.pid) - cpu_start) / (time.monotonic() - wall_start)
        stamps = np.array([common.stamp_to_seconds(m.header.stamp) for m in probe.received(COMMANDS)])
        diagnostics = newest_diagnostics(probe)
    finally:
        process.stop()
    gaps_ms = np.diff(stamps) * 1e3
    span_s = stamps[-1] - stamps[0]
    return {"configuration": configuration, "commands": int(stamps.size), "span_s": float(span_s),
            "rate_hz": (stamps.size - 1) / span_s,
            "gap_p50_ms": float(np.median(gaps_ms)), "gap_p99_ms": float(np.percentile(gaps_ms, 99)),
            "gap_max_ms": float(gaps_ms.max()), "gaps_over_100ms": int((gaps_ms > 100).sum()),
            "cpu_cores": cpu,
            "inference_p50_ms": float(diagnostics.get("latency.total.p50_ms", "nan")),
            "inference_p99_ms": float(diagnostics.get("latency.total.p99_ms", "nan"))}


def summarise(rounds: list) -> dict:
    keys = ("rate_hz", "gap_p50_ms", "gap_p99_ms", "gap_max_ms", "gaps_over_100ms", "cpu_cores",
            "inference_p50_ms", "inference_p99_ms")
    return {configuration: {key: float(np.median([r[key] for r in rounds if r["configuration"] == configuration]))
                            for key in keys}
            for configuration in MODULES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring window per round (wall s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 90 + 5))
    rclpy.init()
    probe = Probe("bench_actor_probe", use_sim_time=False)
    probe.subscribe(JointState, COMMANDS, common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    world = FakeWorld(probe, arms=("left",))
    rounds = []
    load_before = os.getloadavg()
    try:
        for index in range(args.rounds):
            for configuration in MODULES:
                result = one_round(probe, configuration, args.seconds)
                rounds.append(result)
                print(f"round {index + 1} {configuration:6s}: {result['rate_hz']:5.1f} Hz, gap p99 "
                      f"{result['gap_p99_ms']:6.1f} ms, max {result['gap_max_ms']:6.1f} ms, "
                      f"{result['cpu_cores']:.2f} cores", flush=True)
    finally:
        world.close()
        probe.shutdown()
        rclpy.shutdown()
    summary = summarise(rounds)
    print(f"\nactor_left at {RATE_HZ:.0f} Hz, medians of {args.rounds} rounds x {args.seconds:.0f} s:")
    print("executor | rate (Hz) | gap p99 (ms) | gap max (ms) | gaps > 100 ms | CPU (cores) | inference p50/p99 (ms)")
    for configuration, row in summary.items():
        print(f"{configuration:8s} | {row['rate_hz']:9.1f} | {row['gap_p99_ms']:12.1f} | {row['gap_max_ms']:12.1f} | "
              f"{row['gaps_over_100ms']:13.0f} | {row['cpu_cores']:11.2f} | "
              f"{row['inference_p50_ms']:.1f} / {row['inference_p99_ms']:.1f}")
    result = {"benchmark": "actor node control loop on wall time",
              "settings": {"seconds": args.seconds, "rounds": args.rounds, "control_rate_hz": RATE_HZ,
                           "configurations": {"single": "SingleThreadedExecutor + inference worker thread (shipped)",
                                              "multi": "same node under rclpy MultiThreadedExecutor(5)"}},
              "summary": summary, "rounds": rounds,
              "machine": machine(load_average_before=[round(v, 2) for v in load_before],
                                 note="shared 2-core machine; both configurations alternate in one run")}
    write_results(RESULTS_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
