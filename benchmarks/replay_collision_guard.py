"""The collision guard in shadow mode over a dry run's recording: would it have stopped anything?

For every trajectory message an actor sent (``<arm>_arm_controller/joint_trajectory``: this
tick's command and its safe tail), the guard of that arm checks every point against the other
arm's latest ``joint_states`` reading before it (age from the header stamps, velocity bound from
its measured velocity), as the actor would once the guard is wired in. ``command_blocked``: the
tick's command itself failed (the arm would have held); *false* when the blocking pair's raw
distance is positive (only margins and motion allowances made it fail). ``tail_truncated``: only
later points failed (their allowance for the other arm grows with how far ahead they are), so
the message would have been shortened, the arm not stopped.

    python benchmarks/replay_collision_guard.py runs/<run>/run.mcap [--json out.json]
"""
from __future__ import annotations

import argparse
import bisect
import collections
import json
import sys

import numpy as np

import bench_common  # noqa: F401
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard, velocity_bound
from sim2real_vla_ros.core.control.safety import DEFAULT_MAX_ACCELERATION
from sim2real_vla_ros.core.vocabulary import ARMS


def read(path: str):
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    states, commands = [], {arm: [] for arm in ARMS}
    with open(path, "rb") as stream:
        for _schema, channel, message in make_reader(stream).iter_messages():
            topic = channel.topic.lstrip("/")
            if topic == "joint_states":
                msg = deserialize_message(message.data, JointState)
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                states.append((stamp, msg))
            for arm in ARMS:
                if topic == f"vla/actor_{arm}/command":
                    msg = deserialize_message(message.data, JointState)
                    commands[arm].append(("stamp", msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                                          np.array(msg.position)))
                elif topic == f"{arm}_arm_controller/joint_trajectory":
                    msg = deserialize_message(message.data, JointTrajectory)
                    commands[arm].append(("points", None, np.array([p.positions for p in msg.points])))
    states.sort(key=lambda item: item[0])
    return states, commands


def arm_state(msg, arm):
    index = {name: i for i, name in enumerate(msg.name)}
    names = robot.arm_joint_names(arm)
    positions = np.array([msg.position[index[n]] for n in names])
    velocities = (np.array([msg.velocity[index[n]] for n in names])
                  if len(msg.velocity) == len(msg.name) else None)
    return positions, velocities


def replay(path: str) -> dict:
    states, commands = read(path)
    stamps = [stamp for stamp, _msg in states]
    guards = {arm: CollisionGuard(arm) for arm in ARMS}
    result = {}
    for arm in ARMS:
        other = next(a for a in ARMS if a != arm)
        counts = collections.Counter()
        last_stamp, previous = None, None
        clearances = []
        for kind, stamp, values in commands[arm]:
            if kind == "stamp":
                last_stamp = stamp
                continue
            if last_stamp is None:
                continue
            i = bisect.bisect_right(stamps, last_stamp) - 1
            if i < 0:
                counts["no_joint_state"] += 1
                continue
            other_q, other_v = arm_state(states[i][1], other)
            age = last_stamp - states[i][0]
            bound = velocity_bound(other_v, robot.arm_limits(other).velocity, DEFAULT_MAX_ACCELERATION,
                                   age + guards[arm].horizon_s)
            n_ok, verdict = guards[arm].check_path(values, other_q, age, bound, previous)
            counts["messages"] += 1
            counts["points"] += len(values)
            if np.isfinite(verdict.min_clearance_m):
                clearances.append(verdict.min_clearance_m)
            if n_ok == 0:  # the command itself: the arm would have held
                counts[f"command_blocked.{verdict.reason}"] += 1
                counts["command_blocked.false" if verdict.distance_m > 0 else "command_blocked.true"] += 1
            elif n_ok < len(values):  # only future points: the message would have been shortened
                counts[f"tail_truncated.{verdict.reason}"] += 1
                counts[f"tail_points_dropped"] += len(values) - n_ok
            previous = values[0]
        result[arm] = {**dict(counts), "closest_clearance_m": min(clearances) if clearances else None}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mcap")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = replay(args.mcap)
    print(json.dumps(result, indent=1))
    if args.json:
        bench_common.write_results(args.json, {"recording": args.mcap, "guard_replay": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
