"""vendor_bridge node: the AgileX vendor arm state as one ``/joint_states`` with URDF names.

On the real CobotMagic without a ros2_control plugin, the AgileX driver publishes each arm
on its own topic with vendor names (``joint0..joint6``, the 7th value = total gripper width
in m). The actors, the validator and robot_state_publisher read ``/joint_states`` with the
URDF names ``<side>_joint1..8``; this node relays one into the other (logic in
``core.vendor``): joint1-6 = joint0..5, joint7 = width / 2, joint8 = -width / 2.

A merged message is published on every valid arm message, but only while *both* arms have
reported within ``max_age_s`` (one silent arm would otherwise leave its joints frozen at an
old value while looking fresh). Its stamp is the newer of the two source stamps, so a
consumer's staleness check sees the age of the older information at most ``max_age_s``
behind. Malformed messages (wrong length, unknown or repeated names, NaN/Inf) are dropped
and counted; the arm's previous reading stays in use until it ages out.

Run as ``vendor_bridge`` (console script), e.g. ``ros2 run sim2real_vla_ros vendor_bridge``.
Parameters: ``PARAMETERS`` below (the README's table is generated from it).

Subscriptions
-------------
/puppet/joint_left, /puppet/joint_right : sensor_msgs/JointState (sensor-data QoS: newest only)
    One arm each, names joint0..joint6 in any order (or empty = that order), position[6] =
    total gripper width (m); velocity empty or 7 values. Effort is not relayed (the
    gripper's vendor effort has no URDF finger equivalent).

Publications
------------
/joint_states : sensor_msgs/JointState (reliable, depth 10)
    16 joints ``left_joint1..8, right_joint1..8``; position always, velocity when both arms
    report one, no effort.
/diagnostics : diagnostic_msgs/DiagnosticArray
    Per arm: messages received, malformed (total and by reason, with the last reason),
    merges withheld because the arm was stale, age of its newest reading; merged messages
    published. WARN while an arm is stale or withheld merges grew, ERROR when malformed
    messages arrived since the last report.
"""
from __future__ import annotations

import math
import sys

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.vocabulary import ARMS
from sim2real_vla_ros.core.control.vendor import MALFORMED_REASONS, VendorStateMerger
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.node_support import DIAGNOSTICS_RATE, FaultLog, LevelTracker

NODE_NAME = "vendor_bridge"

PARAMETERS = (
    Param("max_age_s", 0.1, "Withhold /joint_states while an arm's newest valid message arrived longer ago than "
          "this (s, node clock). The driver publishes at 200 Hz; the actors' max_input_age_s.joint_state is 0.1 s",
          lambda v: math.isfinite(v) and 0.0 < v <= 10.0, "in (0, 10]"),
    DIAGNOSTICS_RATE,
)


class VendorBridgeNode(Node):
    """Relays /puppet/joint_left|right into one URDF-named /joint_states."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        values = common.declare_parameters(self, PARAMETERS)
        max_age_s, diagnostics_rate_hz = values["max_age_s"], values["diagnostics_rate_hz"]
        self.merger = VendorStateMerger(max_age_s)
        self.faults = FaultLog(self)
        self._levels = LevelTracker()
        self.joint_state_pub = self.create_publisher(JointState, vocab.JOINT_STATES, common.COMMAND_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        for side in ARMS:
            callback = self.faults.guard(lambda msg, s=side: self._on_arm_state(s, msg), "callback_error")
            self.create_subscription(JointState, vocab.vendor_state_topic(side), callback, common.SENSOR_QOS)
        self.create_timer(1.0 / diagnostics_rate_hz, self.faults.guard(self._publish_diagnostics, "callback_error"))
        self.get_logger().info(f"relaying /puppet/joint_left|right -> /joint_states (URDF names) while both "
                               f"arms report within {max_age_s:g} s")

    def _on_arm_state(self, side: str, msg: JointState) -> None:
        now = common.now_seconds(self)
        malformed_before = self.merger.counters[f"malformed.{side}"]
        merged = self.merger.offer(side, msg.name, msg.position, msg.velocity,
                                   common.stamp_to_seconds(msg.header.stamp), now)
        if merged is not None:
            out = JointState(name=merged.name, position=merged.position, velocity=merged.velocity)
            out.header.stamp = common.seconds_to_stamp(merged.stamp_s)
            self.joint_state_pub.publish(out)
        elif self.merger.counters[f"malformed.{side}"] > malformed_before:
            self.faults.fault(f"malformed.{side}", f"dropped /puppet/joint_{side}: {self.merger.last_malformed[side]}")
        else:
            stale = self.merger.stale_sides(now)
            self.faults.fault("stale", f"withholding /joint_states: no valid state from {stale} within "
                                       f"{self.merger.max_age_s:g} s")

    def _publish_diagnostics(self) -> None:
        now = common.now_seconds(self)
        counters = self.merger.counters
        ages = self.merger.ages(now)
        stale = self.merger.stale_sides(now)
        values = {"max_age_s": self.merger.max_age_s, "published": counters["published"],
                  "stale_now": ",".join(stale) or "none"}
        for side in ARMS:
            values[f"{side}.received"] = counters[f"received.{side}"]
            values[f"{side}.malformed"] = counters[f"malformed.{side}"]
            for reason in MALFORMED_REASONS:
                values[f"{side}.malformed.{reason}"] = counters[f"malformed.{side}.{reason}"]
            values[f"{side}.last_malformed"] = self.merger.last_malformed.get(side, "none")
            values[f"{side}.stale_withheld"] = counters[f"stale.{side}"]
            values[f"{side}.age_s"] = "never" if ages[side] is None else ages[side]
        values["callback_errors"] = self.faults.get("callback_error")
        errors = sum(counters[f"malformed.{side}"] for side in ARMS) + self.faults.get("callback_error")
        warnings = sum(counters[f"stale.{side}"] for side in ARMS)
        level = self._levels.level(errors, warnings)
        if stale and level == 0:
            level = 1  # with both arms silent nothing is withheld (no message arrives): warn anyway
        if level == 2:
            message = "malformed vendor messages dropped"
        elif stale:
            message = f"not relaying: no valid state from {stale} within {self.merger.max_age_s:g} s"
        else:
            message = "relaying both arms" + (" (merges were withheld since the last report)" if level else "")
        status = common.diagnostic_status(f"{self.get_name()}: vendor joint state relay", self.get_name(), level,
                                          message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def main(args=None) -> int:
    return common.run_node(VendorBridgeNode)


if __name__ == "__main__":
    sys.exit(main())
