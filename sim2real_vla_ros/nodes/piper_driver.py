"""piper_driver node: both Piper arms of the CobotMagic on ROS 2 through the vendor SDK.

One process drives both arms over their CAN ports with the official Python SDK
(piper-sdk 0.6.2): no ROS 1, no vendor ROS node, no ros2_control plugin. Everything that
decides (the enable sequence, unit conversion, fault checks, holds, the e-stop) lives in
:mod:`sim2real_vla_ros.core.hardware.piper_arm`; the commands follow the released
joint_trajectory_controller / forward_command_controller semantics of
:class:`sim2real_vla_ros.sim.controllers.TrajectoryArmController` (the simulator's). This node
only translates messages.

Run as ``piper_driver`` (console script), e.g.
``ros2 run sim2real_vla_ros piper_driver --ros-args -p can_left:=can_left -p can_right:=can_right``.
With ``-p emulate:=true -p bustype:=virtual`` it starts an emulated arm per port in this
process (python-can's virtual bus is in-process): the hardware-in-the-loop path of tests and
dry runs, identical up to the CAN frames.

Start-up: open both ports, read each arm's firmware version (refuse to start, exit 1, when it
is unreadable or older than S-V1.6-3: the URDF models the newer kinematics), then, with
``enable_on_start``, the vendor's enable sequence (EnableArm until all six motors report
enabled, then MotionCtrl_2 CAN/MOVE J/speed rate and the gripper enabled where it is). The arm
then holds where it is until a command arrives.

Subscriptions
-------------
<arm>_arm_controller/joint_trajectory : trajectory_msgs/JointTrajectory
    joint_trajectory_controller semantics as released (a new trajectory replaces the old one;
    stamp 0 = now; a future stamp starts interpolating at once; it starts from the desired
    state with ``interpolate_from_desired_state``, else from the measured one).
<arm>_arm_position_controller/commands : std_msgs/Float64MultiArray
    forward_command_controller semantics: 7 values (joints 1-6 rad, joint7 finger m), applied
    at once (the firmware moves there at ``speed_rate`` percent of its maximum speed).
~/<arm>/gripper : std_msgs/Float64
    Gripper-only target: the finger (joint7, m; total opening = 2 x finger) until the next arm
    command.
vla/estop : std_msgs/Bool (latched)
    true: EmergencyStop on both arms at once (within the callback). false: released, but the
    arms stay stopped until ``~/enable`` is called.
~/emulator/fault : std_msgs/String (JSON; only with ``emulate``)
    ``{"arm": "left", "drop_rate": 0.9, "stuck_joint": 2, "err_code": 4, "arm_status": 5,
    "collision_joint": 3, "bus_lost": true}`` or ``{"arm": "left", "clear": true}``.

Publications
------------
joint_states : sensor_msgs/JointState
    The driven arms' URDF joints (``<arm>_joint1..8``; joint7 = width / 2, joint8 = -joint7),
    every tick while every driven arm's feedback is fresh; withheld (and counted) otherwise.
~/enabled : std_msgs/Bool (latched)
    true once every driven arm is running; false on any hold or e-stop.
/diagnostics : diagnostic_msgs/DiagnosticArray
    Per arm: state, hold reasons, arm status, error code (joint communication error, joint over
    limit), collision protection, motors enabled, feedback age and rate, CAN frame rate,
    firmware, counters. ERROR while an arm holds or is e-stopped.

Services
--------
~/enable : std_srvs/Trigger
    (Re-)enable every driven arm: the only way out of a hold or an e-stop. Refused while the
    e-stop is engaged or a fault is still present.
~/estop : std_srvs/SetBool
    true: EmergencyStop now; false: release (no motion until ``~/enable``).

Its parameters are ``PARAMETERS`` below (README's table is generated from them).
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable, Dict, List

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.hardware.piper_arm import ArmSupervisor, PiperArm, PiperArmConfig
from sim2real_vla_ros.core.vocabulary import ARMS
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.node_support import FaultLog
from sim2real_vla_ros.sim.controllers import TrajectoryArmController
from sim2real_vla_ros.sim.trajectory import TrajectoryPoint

NODE_NAME = "piper_driver"
BUSTYPES = ("socketcan", "virtual", "slcan", "pcan", "kvaser")
_FAULT_KEYS = ("drop_rate", "stuck_joint", "err_code", "arm_status", "collision_joint", "bus_lost")


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0.0


def _in(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and low <= v <= high


PARAMETERS = (
    Param("arms", "left,right", "Arms to drive, comma-separated (one arm first: 'left')",
          lambda v: bool(v) and all(a.strip() in ARMS for a in v.split(",")), f"a subset of {list(ARMS)}"),
    *(Param(f"can_{arm}", f"can_{arm}", f"CAN port of the {arm} arm (the SDK's can_name; the SDK's "
            "can_activate.sh gives each USB-CAN adapter its name)", lambda v: bool(v), "non-empty") for arm in ARMS),
    Param("bustype", "socketcan", "python-can interface of the ports (virtual: emulated arms)",
          lambda v: v in BUSTYPES, f"one of {list(BUSTYPES)}"),
    Param("judge_can", True, "socketcan only: check at start that each port exists, is up and runs at 1 Mbit/s "
          "(the SDK's judge_flag)"),
    Param("speed_rate", 30, "MotionCtrl_2 speed rate: percent of the arm's maximum joint speed the firmware "
          "moves to each target at", lambda v: 1 <= v <= 100, "an integer in [1, 100]"),
    Param("gripper_effort", 1.0, "GripperCtrl effort, 0..5 (SDK code 0..5000)", _in(0.0, 5.0), "in [0, 5]"),
    Param("rate_hz", 200.0, "Control and /joint_states rate (Hz); the arm's feedback rate is 200 Hz",
          _in(1.0, 1000.0), "in [1, 1000]"),
    Param("feedback_timeout_s", 0.05, "Hold an arm whose joint feedback is older than this (CAN silence), s",
          _positive, "> 0"),
    Param("min_feedback_rate_hz", 100.0, "Hold an arm whose joint feedback rate (the SDK's frame counter, "
          "averaged over 0.5 s) falls below this (dropped frames), Hz; 0 = no check", _in(0.0, 1e6), ">= 0"),
    Param("tracking_tolerance_rad", 0.3, "Hold when a joint stays further than this from its command (rad) for "
          "tracking_timeout_s: a stuck or blocked joint", _positive, "> 0"),
    Param("tracking_timeout_s", 1.0, "See tracking_tolerance_rad (s)", _positive, "> 0"),
    Param("enable_timeout_s", 5.0, "Hold when the motors do not all report enabled within this (s)",
          _positive, "> 0"),
    Param("firmware_timeout_s", 2.0, "Refuse to start when an arm does not answer the firmware query within "
          "this (s)", _positive, "> 0"),
    Param("interpolate_from_desired_state", True, "A new trajectory starts from the desired state (as "
          "config/controllers.yaml sets joint_trajectory_controller) instead of the measured one"),
    Param("enable_on_start", True, "Run the enable sequence at start-up (the arms then hold where they are)"),
    Param("diagnostics_rate_hz", 1.0, "/diagnostics rate (Hz)", _in(1e-3, 100.0), "in (0, 100]"),
    Param("emulate", False, "Start an emulated arm per port in this process (tests and the hardware-in-the-loop "
          "dry run; needs bustype virtual, so it never touches a real bus)"),
    Param("emulator_rate_hz", 200.0, "Feedback rate of the emulated arms (Hz)", _in(1.0, 1000.0), "in [1, 1000]"),
    *(Param(f"emulator_initial_{arm}", [0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0],
            f"Start joints of the emulated {arm} arm (joints 1-6 rad, finger m)",
            lambda v: len(v) == 7 and all(math.isfinite(x) for x in v), "7 finite numbers") for arm in ARMS),
    Param("emulator_firmware", "S-V1.6-3", "Firmware version the emulated arms report (tests of the firmware "
          "check)", lambda v: bool(v), "non-empty"),
)


class PiperDriverNode(Node):
    """Messages in -> one ArmSupervisor per arm (the SDK) -> /joint_states and /diagnostics out."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        p = self._declare_parameters()
        self.faults = FaultLog(self)
        self.emulators: Dict[str, object] = {}
        self.supervisors: Dict[str, ArmSupervisor] = {}
        self.arms = p["arms"]
        try:
            self._start_arms(p)
        except Exception:
            self._close()
            raise
        guard = self.faults.guard
        self.joint_state_pub = self.create_publisher(JointState, vocab.JOINT_STATES, common.COMMAND_QOS)
        self.enabled_pub = self.create_publisher(Bool, "~/enabled", common.LATCHED_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        self.create_subscription(Bool, vocab.ESTOP, guard(self._on_estop, "callback_error"), common.LATCHED_QOS)
        for arm in self.arms:
            self.create_subscription(JointTrajectory, vocab.arm_command_topic(arm, "trajectory"),
                                     guard(lambda msg, a=arm: self._on_trajectory(a, msg), "callback_error"),
                                     common.COMMAND_QOS)
            self.create_subscription(Float64MultiArray, vocab.arm_command_topic(arm, "stream"),
                                     guard(lambda msg, a=arm: self._on_stream(a, msg), "callback_error"),
                                     common.COMMAND_QOS)
            self.create_subscription(Float64, f"~/{arm}/gripper",
                                     guard(lambda msg, a=arm: self._on_gripper(a, msg), "callback_error"),
                                     common.COMMAND_QOS)
        if self.emulators:
            self.create_subscription(String, "~/emulator/fault", guard(self._on_fault, "callback_error"),
                                     common.COMMAND_QOS)
        self.create_service(Trigger, "~/enable", self._handle_enable)
        self.create_service(SetBool, "~/estop", self._handle_estop)
        self._all_running = None
        self.create_timer(1.0 / p["rate_hz"], guard(self._tick, "tick_error"))
        self.create_timer(1.0 / p["diagnostics_rate_hz"], guard(self._publish_diagnostics, "callback_error"))
        self._publish_enabled(False)
        if p["enable_on_start"]:
            self._enable_all("start-up")

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> dict:
        values = common.declare_parameters(self, PARAMETERS)
        if values["emulate"] and values["bustype"] != "virtual":
            raise ValueError("parameter 'emulate' = True: needs bustype 'virtual' (the emulator never talks to "
                             "a real bus)")
        p = dict(values)
        p["arms"] = tuple(a for a in ARMS if a in {s.strip() for s in values["arms"].split(",")})
        p["ports"] = {arm: values[f"can_{arm}"] for arm in ARMS}
        return p

    def _start_arms(self, p: dict) -> None:
        if p["emulate"]:
            from sim2real_vla_ros.core.hardware.piper_emulator import emulator_for_side

            for arm in self.arms:
                self.emulators[arm] = emulator_for_side(
                    p["ports"][arm], arm, feedback_rate_hz=p["emulator_rate_hz"], firmware=p["emulator_firmware"],
                    initial=list(p[f"emulator_initial_{arm}"])).start()
        for arm in self.arms:
            config = PiperArmConfig(side=arm, can_port=p["ports"][arm], bustype=p["bustype"],
                                    judge_can=p["judge_can"], speed_rate=p["speed_rate"],
                                    gripper_effort=p["gripper_effort"], feedback_timeout_s=p["feedback_timeout_s"],
                                    min_feedback_rate_hz=p["min_feedback_rate_hz"],
                                    tracking_tolerance_rad=p["tracking_tolerance_rad"],
                                    tracking_timeout_s=p["tracking_timeout_s"], enable_timeout_s=p["enable_timeout_s"])
            piper = PiperArm(config)
            piper.connect()
            limits = robot.arm_limits(arm)
            self.supervisors[arm] = ArmSupervisor(
                piper, TrajectoryArmController(arm, interpolate_from_desired_state=p["interpolate_from_desired_state"]),
                limits.lower, limits.upper)
        for arm, supervisor in self.supervisors.items():
            version = supervisor.arm.check_firmware(p["firmware_timeout_s"])  # FirmwareError: exit 1
            self.get_logger().info(f"{arm} arm on {p['ports'][arm]} ({p['bustype']}): firmware {version}")

    # ------------------------------------------------------------------ inputs
    def _on_trajectory(self, arm: str, msg: JointTrajectory) -> None:
        supervisor = self.supervisors[arm]
        points = [TrajectoryPoint(list(pt.positions), pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec,
                                  list(pt.velocities) or None) for pt in msg.points]
        measured = supervisor.reading.positions if supervisor.reading is not None and supervisor.reading.fresh else None
        result = supervisor.controller.accept(list(msg.joint_names), points, common.stamp_to_seconds(msg.header.stamp),
                                              common.now_seconds(self), measured)
        if result.ok:
            supervisor.clear_gripper_override()
            self.faults.count(f"{arm}.trajectories")
        else:
            self.faults.fault(f"{arm}.trajectory_rejected", result.reason)

    def _on_stream(self, arm: str, msg: Float64MultiArray) -> None:
        supervisor = self.supervisors[arm]
        result = supervisor.controller.forward_command(list(msg.data), common.now_seconds(self))
        if result.ok:
            supervisor.clear_gripper_override()
            self.faults.count(f"{arm}.stream_commands")
            if result.clipped:
                self.faults.count(f"{arm}.stream_clipped")
        else:
            self.faults.fault(f"{arm}.stream_rejected", result.reason)

    def _on_gripper(self, arm: str, msg: Float64) -> None:
        if not self.supervisors[arm].set_gripper(float(msg.data)):
            self.faults.fault(f"{arm}.gripper_rejected", f"gripper target {msg.data} is not finite")

    def _on_estop(self, msg: Bool) -> None:
        self._apply_estop(bool(msg.data), vocab.ESTOP)

    def _apply_estop(self, engaged: bool, source: str) -> None:
        for supervisor in self.supervisors.values():
            if engaged:
                supervisor.engage_estop()  # the SDK's EmergencyStop, sent from this callback
            else:
                supervisor.release_estop()
        if engaged:
            self.get_logger().warning(f"e-stop engaged ({source}): EmergencyStop sent to {list(self.supervisors)}")
        else:
            self.get_logger().info(f"e-stop released ({source}); arms stay stopped until ~/enable is called")

    def _on_fault(self, msg: String) -> None:
        payload = common.parse_json_message(msg, required=("arm",))
        emulator = self.emulators.get(payload["arm"])
        if emulator is None:
            raise ValueError(f"no emulated arm {payload['arm']!r}")
        if payload.get("clear"):
            emulator.clear_faults()
        else:
            emulator.inject(**{key: payload[key] for key in _FAULT_KEYS if key in payload})
        self.get_logger().warning(f"emulator fault on {payload['arm']}: {json.dumps(payload, sort_keys=True)}")

    def _handle_enable(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._enable_all("~/enable")
        return response

    def _handle_estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._apply_estop(bool(request.data), "~/estop")
        response.success, response.message = True, "e-stop engaged" if request.data else "e-stop released"
        return response

    def _enable_all(self, source: str):
        results = [supervisor.request_enable() for supervisor in self.supervisors.values()]
        message = "; ".join(text for _, text in results)
        ok = all(done for done, _ in results)
        if ok:  # two call sites: rclpy refuses a severity change at one call site
            self.get_logger().info(f"enable ({source}): {message}")
        else:
            self.get_logger().error(f"enable refused ({source}): {message}")
        return ok, message

    # ------------------------------------------------------------------ tick
    def _tick(self) -> None:
        now = common.now_seconds(self)
        names: List[str] = []
        positions: List[float] = []
        fresh = True
        for arm, supervisor in self.supervisors.items():
            before = supervisor.state
            reading = supervisor.tick(now)
            if supervisor.state != before:
                self._log_transition(arm, before, supervisor)
            if not reading.fresh or reading.age_s > supervisor.config.feedback_timeout_s:
                fresh = False
                continue
            finger = float(reading.positions[6])
            names += robot.arm_joint_names(arm) + [robot.mimic_joint_name(arm)]
            positions += [float(v) for v in reading.positions] + [-finger]
        if fresh:
            msg = JointState(name=names, position=positions)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.joint_state_pub.publish(msg)
        else:
            self.faults.count("joint_states_withheld")
        running = all(s.state == "running" for s in self.supervisors.values())
        if running != self._all_running:
            self._publish_enabled(running)

    def _log_transition(self, arm: str, before: str, supervisor: ArmSupervisor) -> None:
        state = supervisor.state
        if state == "running":
            self.get_logger().info(f"{arm} arm enabled and running (was {before})")
        elif state == "hold":
            self.get_logger().error(f"{arm} arm holds: {'; '.join(supervisor.hold_reasons)} "
                                    f"(call ~/enable once the cause is gone)")
        else:
            self.get_logger().warning(f"{arm} arm: {before} -> {state}")

    def _publish_enabled(self, running: bool) -> None:
        self._all_running = running
        self.enabled_pub.publish(Bool(data=running))

    def _publish_diagnostics(self) -> None:
        statuses = []
        for arm, supervisor in self.supervisors.items():
            values = supervisor.diagnostics()
            emulator = self.emulators.get(arm)
            if emulator is not None:  # what reached the emulated arm, for tests and the HIL dry run
                values.update({"emulated": True, "emulator.out_of_limit_commands": emulator.out_of_limit_commands,
                               "emulator.joint_commands": emulator.joint_command_count,
                               "emulator.estop_commands": emulator.estop_commands,
                               "emulator.dropped_frames": emulator.dropped})
            level = 0 if supervisor.state == "running" else 2 if supervisor.state in ("hold", "estop") else 1
            message = {"running": "running", "hold": f"holding: {values['hold_reasons']}",
                       "estop": "e-stop engaged" if supervisor.estop_engaged else "stopped by e-stop; call ~/enable",
                       "enabling": "enabling", "disabled": "disabled; call ~/enable"}[supervisor.state]
            statuses.append(common.diagnostic_status(f"{self.get_name()}: {arm} arm", f"piper_{arm}", level,
                                                     message, values))
        counters = self.faults.snapshot()
        statuses.append(common.diagnostic_status(f"{self.get_name()}: commands", self.get_name(),
                                                 1 if any("rejected" in k or "error" in k for k in counters) else 0,
                                                 "command inputs", counters))
        self.diagnostics_pub.publish(common.diagnostic_array(self, statuses))

    # ------------------------------------------------------------------ shutdown
    def _close(self) -> None:
        # The arms are left as they are (enabled, holding their last target): disabling them
        # would drop them. Only the ports and the emulators are closed.
        for supervisor in self.supervisors.values():
            supervisor.arm.close()
        for emulator in self.emulators.values():
            emulator.stop()

    def destroy_node(self):
        self._close()
        return super().destroy_node()


def main(args=None) -> int:
    return common.run_node(PiperDriverNode)


if __name__ == "__main__":
    sys.exit(main())
