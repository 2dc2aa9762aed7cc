"""An emulated Piper arm on a python-can bus: answers the frames the vendor SDK sends with the
frames the SDK parses (test and dry-run code; no rclpy).

Built from the installed SDK (piper-sdk 0.6.2), not from guesses:

* CAN ids: ``piper_msgs/msg_v2/can_id.py`` (``CanIDPiper``).
* Commands it reads: 0x151 MotionCtrl_2, 0x155..0x157 JointCtrl and 0x159 GripperCtrl are
  decoded with the SDK's own ``C_PiperParserV2.DecodeMessage`` (the SDK decodes them for its
  master-arm mode); 0x150 MotionCtrl_1 (byte 0 = emergency stop 0x01 / resume 0x02), 0x471
  motor enable (byte 0 motor 1..7, byte 1 0x02 enable / 0x01 disable) and 0x4AF firmware
  query (byte 0 = 0x01) by the byte layout of the SDK's ``EncodeMessage`` /
  ``SearchPiperFirmwareVersion``.
* Frames it sends, packed with the SDK parser's own big-endian helpers (``ConvertToList_*``)
  in the layout ``DecodeMessage`` reads: 0x2A1 status (ctrl_mode, arm_status, mode_feed,
  teach, motion_status, trajectory_num, err_code int16), 0x2A5..0x2A7 joint angles (two
  int32 0.001 deg each), 0x2A8 gripper (int32 0.001 mm width, int16 effort, status byte),
  0x261..0x266 low-speed driver info (voltage, temperatures, status byte with the enable
  bit 6, current), 0x4AF firmware text (the SDK looks for ``S-V`` and keeps 8 characters).

Behaviour modelled (everything else is listed in :data:`NOT_MODELLED`):

* Motors start disabled, in standby (ctrl_mode 0x00); 0x471 enables / disables them; the
  gripper is enabled by GripperCtrl code 0x01 / 0x03.
* JointCtrl targets are followed only in CAN control mode (0x151 ctrl_mode 0x01, MOVE J),
  with every motor enabled, no emergency stop and no fault: each joint moves towards its
  target at its URDF velocity limit scaled by the 0x151 speed rate (percent). Targets are
  clamped into the URDF limits and every out-of-limit target is counted
  (:attr:`PiperEmulator.out_of_limit_commands`), so tests can assert nothing unsafe was sent.
* Emergency stop (0x150 byte 0 = 0x01) freezes the joints and reports arm_status 0x01;
  resume (0x02) clears it and disables every motor, as the SDK documents for ResetPiper.
* Faults (:meth:`PiperEmulator.inject`): dropped feedback frames (probability), a stuck
  joint, an ``err_code`` / ``arm_status`` value, a collision on one joint (driver status bit
  4 + arm_status 0x07), and bus loss (nothing sent, nothing received).
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from typing import Deque, Dict, List, Optional, Sequence

import can
import numpy as np
from piper_sdk.piper_msgs.msg_v2 import CanIDPiper, PiperMessage
from piper_sdk.protocol.protocol_v2 import C_PiperParserV2

from sim2real_vla_ros.core.hardware import piper_units as units

ID = CanIDPiper
NOT_MODELLED = (
    "end-pose feedback (0x2A2..0x2A4) and high-speed motor feedback (0x251..0x256: speed, current)",
    "MOVE P / L / C / M / CPV and MIT mode: only MOVE J joint targets move the joints",
    "the firmware's own trajectory planner: joints move at constant speed, no acceleration limit",
    "gravity, load, brakes, power loss after ResetPiper (the joints freeze instead of falling)",
    "parameter queries and settings (0x472..0x47E, 0x477 0x48x feedback), master/slave config (0x470)",
    "the real frame timing and bus arbitration; feedback rates are the configured ones",
    "teach mode, drag teaching, offline trajectories, the light control",
    "the gripper's force and contact: it always reaches its target; effort is recorded, not applied",
    "what the real firmware does with an out-of-limit target (here: clamped and counted) and how it "
    "reports it (arm_status 0x04 / err_code bits are only set by fault injection)",
    "how long the real arm takes to enable, and whether it needs EnableArm repeated",
    "CAN error frames, bus-off, bitrate mismatch, socketcan itself (the bus is python-can's virtual one)",
    "the low-speed driver-info rate (50 Hz here; the enable bits arrive with it) is assumed, not measured",
)


class PiperEmulator:
    """One emulated Piper arm on a python-can channel.

    Parameters
    ----------
    channel : str
        python-can channel (the SDK's ``can_name``), e.g. ``"piper_left"``.
    bustype : str
        python-can interface, ``"virtual"`` (in-process) by default.
    lower, upper, velocity : sequence of 7 float
        Joint limits (joints 1-6 rad, joint7 finger m) and velocity limits (rad/s, m/s): the
        URDF's, from :func:`sim2real_vla_ros.core.robot.arm_limits`.
    initial : sequence of 7 float, optional
        Start positions (default: joints at 0 clipped into the limits, gripper closed).
    feedback_rate_hz : float
        Rate of the status, joint and gripper frames (the arm sends them at 200 Hz).
    low_speed_rate_hz : float
        Rate of the driver info frames carrying the enable bits (assumed; not measured).
    firmware : str
        Text answered to the firmware query, e.g. ``"S-V1.6-3"``.
    seed : int
        Seed of the frame-drop draws.
    """

    def __init__(self, channel: str, lower: Sequence[float], upper: Sequence[float],
                 velocity: Sequence[float], *, bustype: str = "virtual", initial: Optional[Sequence[float]] = None,
                 feedback_rate_hz: float = 200.0, low_speed_rate_hz: float = 50.0,
                 firmware: str = "S-V1.6-3", seed: int = 0) -> None:
        self.channel = channel
        self.lower = np.asarray(lower, dtype=float).reshape(7)
        self.upper = np.asarray(upper, dtype=float).reshape(7)
        self.velocity = np.asarray(velocity, dtype=float).reshape(7)
        start = np.zeros(7) if initial is None else np.asarray(initial, dtype=float).reshape(7)
        self.positions = np.clip(start, self.lower, self.upper)
        self.target = self.positions.copy()
        self.feedback_period_s = 1.0 / float(feedback_rate_hz)
        self.low_speed_period_s = 1.0 / float(low_speed_rate_hz)
        self.firmware = firmware
        self._parser = C_PiperParserV2()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._bus = can.Bus(channel=channel, interface=bustype)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # arm state
        self.joint_enabled = [False] * 6
        self.gripper_enabled = False
        self.ctrl_mode = units.CTRL_MODE_STANDBY
        self.move_mode = units.MOVE_MODE_P
        self.speed_rate = 0
        self.estopped = False
        self.gripper_effort = 0
        # faults
        self.drop_rate = 0.0
        self.stuck_joint: Optional[int] = None  # 1-based
        self.err_code = 0
        self.fault_status = units.ARM_STATUS_OK
        self.collision_joint: Optional[int] = None  # 1-based
        self.bus_lost = False
        # records for tests
        self.received: Counter = Counter()
        self.sent: Counter = Counter()
        self.dropped = 0
        self.out_of_limit_commands = 0
        self.ignored_joint_commands = 0
        self.joint_commands: Deque[List[int]] = deque(maxlen=1000)  # the newest raw JointCtrl values (0.001 deg)
        self.joint_command_count = 0  # every complete JointCtrl (three frames) received
        self.gripper_commands: Deque[tuple] = deque(maxlen=1000)  # raw (width 0.001 mm, effort, code)
        self.estop_commands = 0
        self._pending_joint_ctrl: Dict[int, int] = {}
        self._firmware_due: Optional[float] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "PiperEmulator":
        self._thread = threading.Thread(target=self._run, name=f"piper_emulator_{self.channel}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._bus.shutdown()

    def __enter__(self) -> "PiperEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults
    def inject(self, *, drop_rate: Optional[float] = None, stuck_joint: Optional[int] = None,
               err_code: Optional[int] = None, arm_status: Optional[int] = None,
               collision_joint: Optional[int] = None, bus_lost: Optional[bool] = None) -> None:
        """Turn faults on (arguments left None are unchanged). Joints are 1-based."""
        with self._lock:
            if drop_rate is not None:
                if not 0.0 <= drop_rate <= 1.0:
                    raise ValueError(f"drop_rate must be in [0, 1], got {drop_rate}")
                self.drop_rate = float(drop_rate)
            if stuck_joint is not None:
                self.stuck_joint = int(stuck_joint) if stuck_joint else None
            if err_code is not None:
                self.err_code = int(err_code)
            if arm_status is not None:
                self.fault_status = int(arm_status)
            if collision_joint is not None:
                self.collision_joint = int(collision_joint) if collision_joint else None
            if bus_lost is not None:
                self.bus_lost = bool(bus_lost)

    def clear_faults(self) -> None:
        """Every fault off (the arm's own emergency stop and enable state stay as they are)."""
        with self._lock:
            self.drop_rate, self.stuck_joint, self.err_code = 0.0, None, 0
            self.fault_status, self.collision_joint, self.bus_lost = units.ARM_STATUS_OK, None, False

    # ------------------------------------------------------------------ state
    @property
    def arm_status(self) -> int:
        if self.estopped:
            return 0x01
        if self.collision_joint:
            return 0x07
        return self.fault_status

    def snapshot(self) -> np.ndarray:
        """Current positions (joints 1-6 rad, finger m)."""
        with self._lock:
            return self.positions.copy()

    def set_positions(self, q7: Sequence[float]) -> None:
        """Place the arm (e.g. before a test); the target follows."""
        with self._lock:
            self.positions = np.clip(np.asarray(q7, dtype=float).reshape(7), self.lower, self.upper)
            self.target = self.positions.copy()

    def _can_move(self) -> bool:
        return (all(self.joint_enabled) and not self.estopped and self.ctrl_mode == units.CTRL_MODE_CAN
                and self.move_mode == units.MOVE_MODE_J and self.arm_status == units.ARM_STATUS_OK
                and self.err_code == 0)

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        next_feedback = time.monotonic()
        next_low_speed = next_feedback
        last_step = next_feedback
        while not self._stop.is_set():
            timeout = max(0.0, next_feedback - time.monotonic())
            try:
                frame = self._bus.recv(timeout=timeout)
            except can.CanError:
                return  # bus shut down
            if frame is not None:
                with self._lock:
                    self._on_frame(frame)
                continue
            now = time.monotonic()
            with self._lock:
                self._step(now - last_step)
                last_step = now
                frames = self._feedback_frames()
                if now >= next_low_speed:
                    frames += self._low_speed_frames()
                    next_low_speed += self.low_speed_period_s
                    if next_low_speed < now:
                        next_low_speed = now + self.low_speed_period_s
                if self._firmware_due is not None and now >= self._firmware_due:
                    frames += self._firmware_frames()
                    self._firmware_due = None
                lost, drop_rate = self.bus_lost, self.drop_rate
            if not lost:
                for arbitration_id, data in frames:
                    if drop_rate and arbitration_id != ID.ARM_FIRMWARE_READ.value and self._random.random() < drop_rate:
                        self.dropped += 1
                        continue
                    self._send(arbitration_id, data)
            next_feedback += self.feedback_period_s
            if next_feedback < now:  # fell behind (a loaded machine): do not burst to catch up
                next_feedback = now + self.feedback_period_s

    def _send(self, arbitration_id: int, data: List[int]) -> None:
        try:
            self._bus.send(can.Message(arbitration_id=arbitration_id, data=bytes(data), is_extended_id=False))
            self.sent[arbitration_id] += 1
        except can.CanError:
            pass

    # ------------------------------------------------------------------ receive
    def _on_frame(self, frame: can.Message) -> None:
        if self.bus_lost:
            self.received["lost"] += 1
            return
        can_id = frame.arbitration_id
        data = bytes(frame.data)
        self.received[can_id] += 1
        if can_id == ID.ARM_MOTION_CTRL_1.value:
            if data[0] == units.EMERGENCY_STOP:
                self.estopped = True
                self.estop_commands += 1
                self.target = self.positions.copy()
            elif data[0] == units.EMERGENCY_RESUME:
                self.estopped = False
                self.joint_enabled = [False] * 6
                self.gripper_enabled = False
                self.ctrl_mode = units.CTRL_MODE_STANDBY
                self.target = self.positions.copy()
        elif can_id == ID.ARM_MOTOR_ENABLE_DISABLE_CONFIG.value:
            motor, flag = data[0], data[1]
            motors = range(6) if motor in (units.MOTORS_ALL, 0xFF) else ([motor - 1] if 1 <= motor <= 6 else [])
            for index in motors:
                self.joint_enabled[index] = flag == units.ENABLE_FLAG
            if motor in (units.MOTORS_ALL, 0xFF) and flag == units.DISABLE_FLAG:
                self.gripper_enabled = False
            if flag == units.ENABLE_FLAG:
                self.target[:6] = self.positions[:6]  # a freshly enabled motor holds where it is
        elif can_id == ID.ARM_FIRMWARE_READ.value and data[:1] == b"\x01":
            self._firmware_due = time.monotonic() + 0.02  # the SDK clears its buffer after sending
        elif can_id in (ID.ARM_MOTION_CTRL_2.value, ID.ARM_JOINT_CTRL_12.value, ID.ARM_JOINT_CTRL_34.value,
                        ID.ARM_JOINT_CTRL_56.value, ID.ARM_GRIPPER_CTRL.value):
            msg = PiperMessage()
            self._parser.DecodeMessage(frame, msg)
            self._on_decoded(can_id, msg)

    def _on_decoded(self, can_id: int, msg: PiperMessage) -> None:
        if can_id == ID.ARM_MOTION_CTRL_2.value:
            self.ctrl_mode = msg.arm_motion_ctrl_2.ctrl_mode
            self.move_mode = msg.arm_motion_ctrl_2.move_mode
            self.speed_rate = min(100, msg.arm_motion_ctrl_2.move_spd_rate_ctrl)
            return
        if can_id == ID.ARM_GRIPPER_CTRL.value:
            ctrl = msg.arm_gripper_ctrl
            self.gripper_commands.append((ctrl.grippers_angle, ctrl.grippers_effort, ctrl.status_code))
            if ctrl.status_code in (units.GRIPPER_ENABLE, units.GRIPPER_ENABLE_CLEAR):
                self.gripper_enabled = True
            elif ctrl.status_code in (units.GRIPPER_DISABLE, units.GRIPPER_DISABLE_CLEAR):
                self.gripper_enabled = False
            finger = units.gripper_um_to_finger(ctrl.grippers_angle)
            if not self.lower[6] - 1e-6 <= finger <= self.upper[6] + 1e-6:
                self.out_of_limit_commands += 1
            if self.gripper_enabled and not self.estopped:
                self.target[6] = float(np.clip(finger, self.lower[6], self.upper[6]))
                self.gripper_effort = ctrl.grippers_effort
            return
        # JointCtrl: three frames, two joints each; a target is complete once 0x157 arrives.
        ctrl = msg.arm_joint_ctrl
        if can_id == ID.ARM_JOINT_CTRL_12.value:
            self._pending_joint_ctrl = {1: ctrl.joint_1, 2: ctrl.joint_2}
        elif can_id == ID.ARM_JOINT_CTRL_34.value:
            self._pending_joint_ctrl.update({3: ctrl.joint_3, 4: ctrl.joint_4})
        else:
            self._pending_joint_ctrl.update({5: ctrl.joint_5, 6: ctrl.joint_6})
            if len(self._pending_joint_ctrl) == 6:
                raw = [self._pending_joint_ctrl[j] for j in range(1, 7)]
                self.joint_commands.append(raw)
                self.joint_command_count += 1
                target = units.mdeg_to_rad(raw)
                if np.any(target < self.lower[:6] - 1e-4) or np.any(target > self.upper[:6] + 1e-4):
                    self.out_of_limit_commands += 1
                if self._can_move():
                    self.target[:6] = np.clip(target, self.lower[:6], self.upper[:6])
                else:
                    self.ignored_joint_commands += 1
            self._pending_joint_ctrl = {}

    # ------------------------------------------------------------------ dynamics
    def _step(self, dt: float) -> None:
        if self.estopped or self.collision_joint:
            self.target = self.positions.copy()
            return
        scale = np.ones(7)
        scale[:6] = max(self.speed_rate, 0) / 100.0
        step = self.velocity * scale * max(dt, 0.0)
        moved = self.positions + np.clip(self.target - self.positions, -step, step)
        if self.stuck_joint:
            moved[self.stuck_joint - 1] = self.positions[self.stuck_joint - 1]
        if not self.gripper_enabled:
            moved[6] = self.positions[6]
        for index in range(6):
            if not self.joint_enabled[index]:
                moved[index] = self.positions[index]
        self.positions = np.clip(moved, self.lower, self.upper)

    # ------------------------------------------------------------------ send
    def _feedback_frames(self) -> List[tuple]:
        p = self._parser
        mdeg = [int(v) for v in units.rad_to_mdeg(self.positions[:6])]
        width = units.finger_to_gripper_um(self.positions[6])
        moving = bool(np.any(np.abs(self.target - self.positions) > 1e-6))
        status = (p.ConvertToList_8bit(self.ctrl_mode, False) + p.ConvertToList_8bit(self.arm_status, False)
                  + p.ConvertToList_8bit(self.move_mode, False) + [0x00]
                  + p.ConvertToList_8bit(1 if moving else 0, False) + [0x00]
                  + p.ConvertToList_16bit(self.err_code & 0xFFFF, False))
        gripper_status = units.encode_bits(units.GRIPPER_BITS, enabled=self.gripper_enabled, homed=True)
        effort = self.gripper_effort if self.gripper_enabled else 0
        return [
            (ID.ARM_STATUS_FEEDBACK.value, status),
            (ID.ARM_JOINT_FEEDBACK_12.value, p.ConvertToList_32bit(mdeg[0]) + p.ConvertToList_32bit(mdeg[1])),
            (ID.ARM_JOINT_FEEDBACK_34.value, p.ConvertToList_32bit(mdeg[2]) + p.ConvertToList_32bit(mdeg[3])),
            (ID.ARM_JOINT_FEEDBACK_56.value, p.ConvertToList_32bit(mdeg[4]) + p.ConvertToList_32bit(mdeg[5])),
            (ID.ARM_GRIPPER_FEEDBACK.value, p.ConvertToList_32bit(width) + p.ConvertToList_16bit(effort)
             + p.ConvertToList_8bit(gripper_status, False) + [0x00]),
        ]

    def _low_speed_frames(self) -> List[tuple]:
        p = self._parser
        frames = []
        for index in range(6):
            status = units.encode_bits(units.FOC_BITS, enabled=self.joint_enabled[index],
                                       collision_protection=self.collision_joint == index + 1)
            data = (p.ConvertToList_16bit(240, False)  # 24.0 V
                    + p.ConvertToList_16bit(35) + p.ConvertToList_8bit(30) + p.ConvertToList_8bit(status, False)
                    + p.ConvertToList_16bit(500, False))
            frames.append((ID.ARM_INFO_LOW_SPD_FEEDBACK_1.value + index, data))
        return frames

    def _firmware_frames(self) -> List[tuple]:
        text = self.firmware.encode("ascii")
        text += b"\x00" * (-len(text) % 8)
        return [(ID.ARM_FIRMWARE_READ.value, list(text[i:i + 8])) for i in range(0, len(text), 8)]


def emulator_for_side(channel: str, side: str = "left", **kwargs) -> PiperEmulator:
    """An emulator with the URDF limits of ``side`` (both Piper arms have the same)."""
    from sim2real_vla_ros.core import robot

    limits = robot.arm_limits(side)
    return PiperEmulator(channel, limits.lower, limits.upper, limits.velocity, **kwargs)


__all__ = ["NOT_MODELLED", "PiperEmulator", "emulator_for_side"]
