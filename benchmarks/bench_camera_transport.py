"""Camera frames at the robot's sizes from a separate process into camera_mask: delivered
fraction and latency per QoS / transport configuration.

Each round starts the camera_mask node (reference bundle, wall time) and
benchmarks/camera_publisher.py as two processes; the publisher sends the three cameras at
``--rate`` Hz for ``--seconds`` (640x480 and 1280x720 rgb8 by default: the robot's cameras).
Measured from camera_mask's own /diagnostics (its frame pairer counts every frame its
callback received):

* delivered fraction per camera = frames received by camera_mask / frames sent;
* receive rate (Hz) = received / the publisher's sending time;
* end-to-end latency p50 / p99 (ms) = frame stamp -> masked set published (transport +
  conversion + pairing + the mask model), camera_mask's ``end_to_end`` window.

Configurations (``--configs``):

* ``sensor``: the graph's default, best effort keep-last 5 both ends (qos_profile_sensor_data);
* ``reliable_2``: reliable keep-last 2 on both ends (camera_mask through its QoS override
  parameters);
* ``sensor_shm``: best effort, with a Fast DDS profile (config/fastdds_camera_shm.xml)
  whose shared-memory segment holds several full frames (the default segment is 0.5 MB, less
  than one 640x480 rgb8 frame);
* ``reliable_shm``: both;
* ``sensor_shm_publisher_only`` / ``sensor_shm_subscriber_only``: the profile in one process only
  (which side needs it).

Prints a table and writes benchmarks/results/camera_transport.json. Not a test: the numbers
depend on the machine (state its load); test_camera_frames checks only that frames arrive.

Usage: python benchmarks/bench_camera_transport.py [--seconds 10] [--sizes 640x480,1280x720]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test"))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from bench_common import machine, write_results  # noqa: E402
from ros_harness import NodeProcess, Probe, wait_for  # noqa: E402
from sim2real_vla_ros.nodes import common  # noqa: E402
from sim2real_vla_ros.paths import share_path  # noqa: E402

RESULTS_FILE = os.path.join(HERE, "results", "camera_transport.json")
SHM_PROFILE = os.path.join(os.path.dirname(HERE), "config", "fastdds_camera_shm.xml")
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
CONFIGS = {
    "sensor": {"reliability": "best_effort", "depth": 5, "shm": False},
    "reliable_2": {"reliability": "reliable", "depth": 2, "shm": False},
    "sensor_shm": {"reliability": "best_effort", "depth": 5, "shm": True},
    "reliable_shm": {"reliability": "reliable", "depth": 2, "shm": True},
    # Which side needs the profile (the camera drivers are the user's; camera_mask is ours):
    "sensor_shm_publisher_only": {"reliability": "best_effort", "depth": 5, "shm": "publisher"},
    "sensor_shm_subscriber_only": {"reliability": "best_effort", "depth": 5, "shm": "subscriber"},
}
DEFAULT_CONFIGS = ("sensor", "reliable_2", "sensor_shm", "reliable_shm")


def qos_parameters(config: dict) -> dict:
    if config["reliability"] == "best_effort" and config["depth"] == 5:
        return {}
    values = {}
    for camera in CAMERAS:
        prefix = f"qos_overrides./{camera}/image_raw.subscription"
        values[f"{prefix}.reliability"] = config["reliability"]
        values[f"{prefix}.depth"] = config["depth"]
    return values


def newest(probe: Probe) -> dict:
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == "camera_mask":
                return {kv.key: kv.value for kv in status.values}
    return {}


def run_round(probe: Probe, name: str, width: int, height: int, rate: float, seconds: float) -> dict:
    config = CONFIGS[name]
    probe.clear("/diagnostics")  # the previous round's camera_mask had the same name
    env_before = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if config["shm"] in (True, "subscriber"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = SHM_PROFILE
    try:
        node = NodeProcess("sim2real_vla_ros.nodes.camera_mask", "camera_mask",
                           params={"bundle_path": share_path("models", "reference"), "diagnostics_rate_hz": 2.0,
                                   "max_input_age_s.camera": 0.5, **qos_parameters(config)})
        env = dict(os.environ)
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        if config["shm"] in (True, "publisher"):
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = SHM_PROFILE
        elif env_before is not None:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = env_before
        publisher = subprocess.Popen([sys.executable, os.path.join(HERE, "camera_publisher.py"), "--width", str(width),
                                      "--height", str(height), "--rate", str(rate), "--seconds", str(seconds),
                                      "--reliability", config["reliability"], "--depth", str(config["depth"])],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    finally:
        if env_before is None:
            os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        else:
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = env_before
    try:
        output, _ = publisher.communicate(timeout=seconds + 120.0)
        sent = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
        time.sleep(1.5)  # a diagnostics report after the last frame
        values = wait_for(lambda: newest(probe) or None, 10.0, "camera_mask diagnostics", processes=[node])
        time.sleep(1.0)
        values = newest(probe)
    finally:
        node.stop()
    received = {c: int(values.get(f"received.{c}", 0)) for c in CAMERAS}
    fraction = {c: received[c] / max(1, sent["sent"][c]) for c in CAMERAS}
    result = {"config": name, **config, "width": width, "height": height, "rate_hz": rate,
              "frame_bytes": width * height * 3, "sent": sent["sent"], "received": received,
              "delivered_fraction": fraction, "delivered_fraction_min": min(fraction.values()),
              "receive_rate_hz": {c: received[c] / sent["seconds"] for c in CAMERAS},
              "publisher_rate_hz": sent["publish_rate_hz"], "publisher_late_periods": sent["late_periods"],
              "sets_published": int(values.get("sets_published", 0)),
              "end_to_end_p50_ms": _float(values.get("end_to_end_p50_ms")),
              "end_to_end_p99_ms": _float(values.get("end_to_end_p99_ms")),
              "processing_p50_ms": _float(values.get("processing_p50_ms")),
              "dropped": {k[len("dropped."):]: int(v) for k, v in values.items() if k.startswith("dropped.")}}
    print(f"{name:13s} {width}x{height}: delivered {result['delivered_fraction_min']:.3f} (min of 3 cameras), "
          f"{result['receive_rate_hz']['cam_high']:.1f} Hz received of {rate:g}, end-to-end p50/p99 "
          f"{result['end_to_end_p50_ms']}/{result['end_to_end_p99_ms']} ms, sets {result['sets_published']}",
          flush=True)
    return result


def _float(value):
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {list(CONFIGS)}")
    parser.add_argument("--out", default=RESULTS_FILE)
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    rclpy.init()
    probe = Probe("camera_bench_probe", use_sim_time=False)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    results = []
    load_before = os.getloadavg()
    try:
        for width, height in sizes:
            for name in args.configs.split(","):
                results.append(run_round(probe, name, width, height, args.rate, args.seconds))
    finally:
        probe.shutdown()
        rclpy.shutdown()
    write_results(args.out, {"benchmark": "camera_transport", "seconds_per_round": args.seconds,
                             "machine": machine(load_before=load_before, load_after=os.getloadavg(),
                                                rmw=os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")),
                             "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
