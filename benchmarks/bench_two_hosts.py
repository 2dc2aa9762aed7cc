"""Benchmark the split actor across two hosts (two network namespaces + veth, DDS over UDP between them, shared memory within each).

Needs root (``ip netns``); the main process only makes the namespaces and runs the robot side
(``--role robot``) inside the robot namespace, the GPU side is started from there. Two parts:

1. Control on the robot host at 50 Hz (actor_left, reference bundle, trajectory output) against
   the test suite's FakeWorld, with the inference **local** (the single-process actor node, in
   the robot namespace) or **remote** (actor_control in the robot namespace, actor_inference in
   the GPU namespace), and an artificial delay added to every inference (0/100/200/300 ms:
   ``inference_delay_s``, in the inference path of either). Per configuration: command rate
   (commands over the span of their stamps), p99 / max gap between command stamps, ticks
   without a fresh setpoint after the first chunk ("stalls", as in bench_async_actor), the
   observation-to-splice age p50 / p99 (the controller's own measure) and, remote, the
   request-to-chunk round trip.
2. Images across the link: a best-effort (sensor QoS) publisher on the robot host and a
   subscriber on the GPU host, rgb8 frames at 30 Hz for each size (the model's 128x96, 224x224,
   the simulator's 320x240, a real camera's 640x480): delivered fraction and latency.

Prints a table and writes benchmarks/results/bench_two_hosts.json.

Usage: sudo .venv/bin/python benchmarks/bench_two_hosts.py [--seconds 20] [--image-seconds 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "test"))  # the test harness's FakeWorld

RESULTS_FILE = os.path.join(HERE, "results", "bench_two_hosts.json")
DELAYS_S = (0.0, 0.1, 0.2, 0.3)
THRESHOLD_ROW_S = 0.8  # part "threshold": 300 ms with request_threshold_s raised to this
IMAGE_SIZES = ((128, 96), (224, 224), (320, 240), (640, 480))
IMAGE_RATE_HZ = 30.0
IMAGE_TOPIC = "/bench/image"
SPLIT_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}  # ros_env() would set LOCALHOST


# ----------------------------------------------------------------------------- GPU side: image sink


def image_sink(seconds: float) -> None:
    """Count images per size (frame_id ``<w>x<h>/<seq>``) for ``seconds`` after the first; print JSON."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from sim2real_vla_ros.nodes import common

    rclpy.init()
    node = rclpy.create_node("bench_image_sink")
    got: dict = {}

    def record(msg):
        size, _, seq = msg.header.frame_id.partition("/")
        now = node.get_clock().now().nanoseconds * 1e-9
        got.setdefault(size, {"seqs": set(), "latency_ms": []})
        got[size]["seqs"].add(int(seq))
        got[size]["latency_ms"].append((now - common.stamp_to_seconds(msg.header.stamp)) * 1e3)

    node.create_subscription(Image, IMAGE_TOPIC, record, common.SENSOR_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({size: {"received": len(v["seqs"]), "seqs": sorted(v["seqs"]),
                             "latency_p50_ms": float(np.percentile(v["latency_ms"], 50)),
                             "latency_p99_ms": float(np.percentile(v["latency_ms"], 99))}
                      for size, v in got.items()}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ----------------------------------------------------------------------------- robot side


def _diagnostics(probe, node_name: str, split: bool) -> dict:
    """Newest diagnostics of ``node_name`` from the split control node (``split``) or the actor node:
    both are called actor_left, and the previous round's last message may arrive late."""
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.hardware_id == node_name and ("split_inference" in values) == split:
                return values
    return {}


def _number(values: dict, key: str):
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def control_round(probe, hosts, mode: str, delay_s: float, seconds: float, threshold_s: float = 0.5) -> dict:
    """One configuration of part 1; returns its measurements."""
    from actor_world import BUNDLE, RATE_HZ, TOP_H, TOP_W, VLA_YAML, instruction
    from ros_harness import NodeProcess, wait_for
    from sim2real_vla_ros.nodes import common

    probe.clear("/vla/actor_left/chunk")
    probe.clear("/diagnostics")  # the previous round's node had the same name
    shared = {"arm": "left", "bundle_path": BUNDLE, "instruction": instruction(), "top_image_width": TOP_W,
              "top_image_height": TOP_H, "diagnostics_rate_hz": 2.0, "use_sim_time": True}
    processes = []
    if mode == "local":
        processes.append(NodeProcess("sim2real_vla_ros.nodes.actor", "actor_left", params_file=VLA_YAML,
                                     params={**shared, "control_rate_hz": RATE_HZ, "inference_delay_s": delay_s,
                                             "request_threshold_s": threshold_s}, env=SPLIT_ENV))
    else:
        processes.append(NodeProcess("sim2real_vla_ros.nodes.actor_inference", "actor_left_inference",
                                     params={**shared, "inference_delay_s": delay_s}, env=SPLIT_ENV,
                                     prefix=hosts.prefix("gpu")))
        processes.append(NodeProcess("sim2real_vla_ros.nodes.actor_control", "actor_left", params_file=VLA_YAML,
                                     params={**shared, "control_rate_hz": RATE_HZ, "request_threshold_s": threshold_s},
                                     env=SPLIT_ENV))
    topic = "/vla/actor_left/command"
    try:
        wait_for(lambda: len(probe.received("/vla/actor_left/chunk")) >= 2, 120.0, "two chunks", processes=processes)
        split = mode == "remote"
        wait_for(lambda: _diagnostics(probe, "actor_left", split).get("execution.ticks") not in (None, "none"), 30.0,
                 "diagnostics", processes=processes)
        before = _diagnostics(probe, "actor_left", split)
        probe.clear(topic)
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start >= seconds, seconds + 30.0, "the measurement window",
                 processes=processes, poll=0.2)
        stamps = np.array([common.stamp_to_seconds(m.header.stamp) for m in probe.received(topic)])
        after_time = time.monotonic()
        wait_for(lambda: probe.arrival["/diagnostics"] and probe.arrival["/diagnostics"][-1] > after_time + 0.6,
                 10.0, "fresh diagnostics", processes=processes)
        after = _diagnostics(probe, "actor_left", split)
    finally:
        for process in processes:
            process.stop()
    gaps = np.diff(stamps) * 1e3 if stamps.size > 1 else np.array([np.nan])
    stall = lambda values: _number(values, "execution.ticks_without_fresh_setpoint") or 0.0  # noqa: E731
    return {
        "mode": mode, "delay_ms": delay_s * 1e3, "request_threshold_s": threshold_s,
        "command_rate_hz": float((stamps.size - 1) / (stamps[-1] - stamps[0])) if stamps.size > 1 else None,
        "gap_p99_ms": float(np.percentile(gaps, 99)), "gap_max_ms": float(np.max(gaps)),
        "stalled_ticks": stall(after) - stall(before),
        "executed_ticks": (_number(after, "execution.ticks") or 0.0) - (_number(before, "execution.ticks") or 0.0),
        "observation_to_splice_p50_ms": _number(after, "observation_to_splice_p50_ms"),
        "observation_to_splice_p99_ms": _number(after, "observation_to_splice_p99_ms"),
        "request_to_chunk_p50_ms": _number(after, "request_to_chunk_p50_ms"),
        "request_to_chunk_p99_ms": _number(after, "request_to_chunk_p99_ms"),
        "inferences": _number(after, "inferences"),
    }


def udp_counters(hosts, host: str) -> dict:
    """The kernel's UDP counters in a host's namespace (/proc/net/snmp: InDatagrams, RcvbufErrors, ...)."""
    text = subprocess.run([*hosts.prefix(host), "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return {name: int(value) for name, value in zip(rows[0], rows[1])}


def image_rounds(probe, hosts, seconds: float) -> dict:
    """Part 2: publish each size at 30 Hz while the GPU-side sink counts."""
    from sensor_msgs.msg import Image  # noqa: F401
    from sim2real_vla_ros.nodes import common

    publisher = probe.node.create_publisher(Image, IMAGE_TOPIC, common.SENSOR_QOS)
    total = seconds * len(IMAGE_SIZES) + 6.0
    sink = subprocess.Popen([*hosts.prefix("gpu"), sys.executable, os.path.abspath(__file__), "--role", "image-sink",
                             "--image-seconds", str(total)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **SPLIT_ENV}, start_new_session=True)
    pause = __import__("threading").Event()
    wait_until = time.monotonic() + 20.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < wait_until:
        pause.wait(0.1)  # discovery of the sink across the link (bounded)
    sent = {}
    for width, height in IMAGE_SIZES:
        before = udp_counters(hosts, "gpu")
        frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        key = f"{width}x{height}"
        count = int(seconds * IMAGE_RATE_HZ)
        next_at = time.monotonic()
        for seq in range(count):
            message = common.numpy_to_image(frame, "rgb8", probe.node.get_clock().now().to_msg(), f"{key}/{seq}")
            publisher.publish(message)
            next_at += 1.0 / IMAGE_RATE_HZ
            pause.wait(max(0.0, next_at - time.monotonic()))
        pause.wait(0.5)  # let the last ones arrive before reading the counters
        after = udp_counters(hosts, "gpu")
        sent[key] = {"sent": count, "bytes": width * height * 3,
                     # Datagrams the GPU host's kernel dropped because the DDS socket's buffer was full.
                     "udp_receive_buffer_errors": after["RcvbufErrors"] - before["RcvbufErrors"],
                     "udp_datagrams_in": after["InDatagrams"] - before["InDatagrams"]}
    output, _ = sink.communicate(timeout=total + 30.0)
    received = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    probe.node.destroy_publisher(publisher)
    results = {}
    for key, values in sent.items():
        got = received.get(key, {"received": 0})
        results[key] = {**values, "received": got["received"], "delivered": got["received"] / values["sent"],
                        "mbit_s": values["bytes"] * IMAGE_RATE_HZ * 8 / 1e6,
                        "latency_p50_ms": got.get("latency_p50_ms"), "latency_p99_ms": got.get("latency_p99_ms")}
    return results


def robot_side(args) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from actor_world import FakeWorld
    from ros_harness import Probe, WallClock
    from sim2real_vla_ros.nodes import common
    from sim2real_vla_ros.tools.two_hosts import TwoHosts

    hosts = TwoHosts(args.tag, create=False)
    rclpy.init()
    probe = Probe("bench_probe", use_sim_time=False)
    probe.subscribe(JointState, "/vla/actor_left/command", common.COMMAND_QOS)
    probe.subscribe(JointTrajectory, "/vla/actor_left/chunk", common.COMMAND_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    world = FakeWorld(probe, arms=("left",))
    clock = WallClock(probe)  # the test hooks (inference_delay_s) need use_sim_time: /clock carries wall time
    report = {"control": [], "images": {}}
    try:
        for delay in (DELAYS_S if "control" in args.parts else ()):
            for mode in ("local", "remote"):
                row = control_round(probe, hosts, mode, delay, args.seconds)
                print(json.dumps(row), flush=True)
                report["control"].append(row)
        if "threshold" in args.parts:
            # The shipped request_threshold_s (0.5 s) leaves 0.3 s after the 0.2 s crossfade: a 300 ms
            # delay plus a remote p99 exceeds it; one more request earlier covers the tail.
            for mode in ("local", "remote"):
                row = control_round(probe, hosts, mode, 0.3, args.seconds, threshold_s=THRESHOLD_ROW_S)
                print(json.dumps(row), flush=True)
                report["control"].append(row)
        if "images" in args.parts:
            report["images"] = image_rounds(probe, hosts, args.image_seconds)
        with open(args.out, "w", encoding="utf-8") as stream:  # before the teardown, which has crashed once
            json.dump(report, stream)
    finally:
        clock.close()
        world.close()
        probe.shutdown()
        rclpy.shutdown()
    return 0


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per configuration (s)")
    parser.add_argument("--image-seconds", type=float, default=8.0, help="publishing time per image size (s)")
    parser.add_argument("--parts", default="control,threshold,images",
                        help="any of control, threshold, images (default: %(default)s)")
    parser.add_argument("--role", choices=("main", "robot", "image-sink"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "image-sink":
        image_sink(args.image_seconds)
        return 0
    if args.role == "robot":
        code = robot_side(args)
        sys.stdout.flush()
        os._exit(code)  # results are written; a C++ destructor at interpreter exit has aborted here once

    from bench_common import machine, write_results
    from sim2real_vla_ros.tools.two_hosts import TwoHosts, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"bench_two_hosts: skipped: {reason}")
        return 0
    tag = f"b{os.getpid() % 100000}"
    out = f"/tmp/bench_two_hosts_{tag}.json"
    with TwoHosts(tag) as hosts:
        env = hosts.environment(int(os.environ.get("ROS_DOMAIN_ID", "42")))
        code = subprocess.run([*hosts.prefix("robot"), sys.executable, os.path.abspath(__file__), "--role", "robot",
                               "--tag", tag, "--out", out, "--seconds", str(args.seconds),
                               "--image-seconds", str(args.image_seconds), "--parts", args.parts],
                              cwd=REPO, env=env).returncode
    if not os.path.exists(out):
        print(f"bench_two_hosts: the robot side failed ({code})")
        return 1
    if code != 0:
        print(f"bench_two_hosts: the robot side exited {code} after writing its results (teardown)")
    with open(out, encoding="utf-8") as stream:
        report = json.load(stream)
    os.remove(out)
    if os.path.exists(RESULTS_FILE):  # a partial run (--parts) keeps the other part's last results
        with open(RESULTS_FILE, encoding="utf-8") as stream:
            previous = json.load(stream)
        # Keep the last run's rows of the parts not run now.
        shipped = [row for row in previous.get("control", []) if row.get("request_threshold_s", 0.5) == 0.5]
        raised = [row for row in previous.get("control", []) if row.get("request_threshold_s", 0.5) != 0.5]
        report["control"] = ([] if "control" in args.parts else shipped) + report["control"] + \
            ([] if "threshold" in args.parts else raised)
        if "images" not in args.parts and previous.get("images"):
            report["images"] = previous["images"]
            args.image_seconds = previous.get("image_seconds", args.image_seconds)
    print(f"{'mode':11} {'delay':>6} {'rate Hz':>8} {'gap p99':>8} {'stalls':>7} {'obs->splice p50/p99 ms':>24} "
          f"{'request->chunk p50 ms':>22}")
    for row in report["control"]:
        mode = row["mode"] + ("" if row.get("request_threshold_s", 0.5) == 0.5 else f"@{row['request_threshold_s']:g}")
        print(f"{mode:11} {row['delay_ms']:6.0f} {row['command_rate_hz'] or 0:8.2f} {row['gap_p99_ms']:8.1f} "
              f"{row['stalled_ticks']:7.0f} {row['observation_to_splice_p50_ms'] or 0:11.0f} / "
              f"{row['observation_to_splice_p99_ms'] or 0:<10.0f} {row['request_to_chunk_p50_ms'] or 0:22.0f}")
    print(f"{'image':>9} {'bytes':>8} {'Mbit/s@30Hz':>11} {'delivered':>9} {'latency p50/p99 ms':>19} "
          f"{'UDP rcvbuf drops':>16}")
    for key, row in report["images"].items():
        print(f"{key:>9} {row['bytes']:8d} {row['mbit_s']:11.1f} {row['delivered']:9.3f} "
              f"{row['latency_p50_ms'] or 0:9.1f} / {row['latency_p99_ms'] or 0:<8.1f} "
              f"{row['udp_receive_buffer_errors']:16d}")
    write_results(RESULTS_FILE, {"benchmark": "bench_two_hosts", "seconds": args.seconds,
                                 "image_seconds": args.image_seconds,
                                 "machine": machine(load_average=os.getloadavg(),
                                                    link="veth pair between two network namespaces (own /dev/shm and machine-id each): UDP between hosts"),
                                 **report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
