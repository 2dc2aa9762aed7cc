"""A stand-in for the robot's three camera drivers, as its own process (bench_camera_transport.py).

Publishes rgb8 frames of ``--width`` x ``--height`` on /cam_high/image_raw,
/cam_left_wrist/image_raw and /cam_right_wrist/image_raw at ``--rate`` Hz for ``--seconds``,
stamped with the system time (the camera_mask node under test runs on wall time), with the
given reliability / history depth. Prints one JSON line: frames sent per camera and the
publish timing. Frames are prepared once (a moving bar per frame index) so the publisher's
own cost is the message copy, as a driver's would be.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reliability", choices=("best_effort", "reliable"), default="best_effort")
    parser.add_argument("--depth", type=int, default=5)
    args = parser.parse_args(argv)
    rclpy.init()
    node = Node("camera_publisher")
    qos = QoSProfile(depth=args.depth, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE if args.reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT)
    publishers = {c: node.create_publisher(Image, f"/{c}/image_raw", qos) for c in CAMERAS}
    frames = []
    for k in range(8):
        frame = np.full((args.height, args.width, 3), 40, np.uint8)
        x = (k * args.width) // 8
        frame[args.height // 4: args.height // 2, x: x + args.width // 8] = (200, 60, 40)
        frames.append(frame.tobytes())
    # Wait for the subscriber (camera_mask) to match, as a driver running before it would have.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and any(p.get_subscription_count() == 0 for p in publishers.values()):
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = {c: 0 for c in CAMERAS}
    late = 0
    period = 1.0 / args.rate
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < args.seconds:
        due = start + k * period
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > period:
            late += 1
        stamp = node.get_clock().now().to_msg()
        for camera, publisher in publishers.items():
            msg = Image(height=args.height, width=args.width, encoding="rgb8", is_bigendian=0, step=args.width * 3)
            msg.header.stamp = stamp
            msg.header.frame_id = f"{camera}_optical_frame"
            msg.data = frames[k % len(frames)]
            publisher.publish(msg)
            sent[camera] += 1
        k += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": elapsed, "publish_rate_hz": k / elapsed, "late_periods": late}),
          flush=True)
    time.sleep(1.0)  # let the last frames drain before the publisher goes away
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
