"""Piper CAN protocol units and status codes, both ways (pure, ROS-free, no SDK import).

Every number here is taken from the installed vendor SDK (piper-sdk 0.6.2), never guessed:

* Joints: ``JointCtrl`` and ``GetArmJointMsgs`` carry int32 angles in 0.001 deg
  (``piper_interface_v2.py`` docstrings; the vendor demo ``demo/V2/piper_ctrl_joint.py``
  converts with ``factor = 57295.7795  # 1000*180/3.1415926``). Here: exact 180000 / pi.
* Gripper: ``GripperCtrl`` / ``GetArmGripperMsgs`` carry the *total* opening in 0.001 mm
  (the demo: ``0.05 m = 50 mm`` -> ``0.05 * 1000 * 1000``); the URDF models one finger
  (joint7 = width / 2), so the CAN value is ``2 * joint7 * 1e6``. Effort: 0..5000 for 0..5
  (the SDK says "N/m"; the arm's unit is unconfirmed, so the driver passes it through).
* Status frame 0x2A1 (``ArmMsgFeedbackStatus``): ``ctrl_mode``, ``arm_status`` (the codes of
  :data:`ARM_STATUS`), ``err_code`` bits 0-5 = joint 1-6 communication error, bits 8-13 =
  joint 1-6 angle over limit (``arm_feedback_status.py`` ``err_code`` setter).
* Driver status byte of the low-speed frames 0x261..0x266 and of the gripper frame 0x2A8
  (``arm_feedback_low_spd.py`` / ``arm_feedback_gripper.py``): bit 0 voltage low, 1 motor
  over-temperature, 2 over-current, 3 driver over-temperature, 4 collision protection
  (gripper: sensor), 5 driver error, 6 enabled, 7 stall protection (gripper: homed).
* Firmware: ``GetPiperFirmwareVersion`` returns the 8 characters starting at ``S-V`` of the
  0x4AF reply, e.g. ``S-V1.6-3``. The URDF's kinematics are the ones of firmware
  >= S-V1.6-3 (``dh_is_offset=1`` in the SDK; older firmware differs by ~10 mm at link6).
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

MDEG_PER_RAD = 180000.0 / math.pi
"""CAN joint unit (0.001 deg) per radian."""
UM_PER_M = 1e6
"""CAN gripper unit (0.001 mm) per metre."""
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

# --------------------------------------------------------------------------- control codes
CTRL_MODE_STANDBY = 0x00
CTRL_MODE_CAN = 0x01
"""MotionCtrl_2 ctrl_mode: 0x01 = CAN command control (the vendor demos' value)."""
MOVE_MODE_P, MOVE_MODE_J = 0x00, 0x01
"""MotionCtrl_2 move_mode: MOVE J (0x01) is the joint-space mode JointCtrl needs."""
MIT_MODE_POSITION_VELOCITY = 0x00
EMERGENCY_STOP, EMERGENCY_RESUME = 0x01, 0x02
"""MotionCtrl_1 emergency_stop byte: 0x01 quick stop, 0x02 resume (the SDK's ResetPiper sends
0x02: "the robot will immediately lose power ... clearing all errors")."""
MOTORS_ALL = 7
"""EnableArm / DisableArm motor_num: 7 = every motor."""
ENABLE_FLAG, DISABLE_FLAG = 0x02, 0x01
GRIPPER_DISABLE, GRIPPER_ENABLE, GRIPPER_DISABLE_CLEAR, GRIPPER_ENABLE_CLEAR = 0x00, 0x01, 0x02, 0x03
GRIPPER_EFFORT_MAX = 5000
"""GripperCtrl effort code for the maximum (5, 0.001 units)."""

ARM_STATUS = {
    0x00: "normal", 0x01: "emergency_stop", 0x02: "no_solution", 0x03: "singularity",
    0x04: "target_angle_over_limit", 0x05: "joint_communication_error", 0x06: "joint_brake_not_released",
    0x07: "collision", 0x08: "teach_overspeed", 0x09: "joint_status_error", 0x0A: "other_error",
    0x0B: "teach_record", 0x0C: "teach_execute", 0x0D: "teach_pause", 0x0E: "main_controller_overtemperature",
    0x0F: "release_resistor_overtemperature",
}
"""``arm_status`` of frame 0x2A1 (the SDK's GetArmStatus docstring)."""
ARM_STATUS_OK = 0x00
CTRL_MODES = {0x00: "standby", 0x01: "can_command", 0x02: "teach", 0x03: "ethernet", 0x04: "wifi",
              0x07: "offline_trajectory"}

FOC_BITS = ("voltage_too_low", "motor_overheating", "driver_overcurrent", "driver_overheating",
            "collision_protection", "driver_error", "enabled", "stall_protection")
"""Bits 0..7 of a joint driver's status byte (low-speed frames 0x261..0x266)."""
GRIPPER_BITS = ("voltage_too_low", "motor_overheating", "driver_overcurrent", "driver_overheating",
                "sensor_error", "driver_error", "enabled", "homed")
"""Bits 0..7 of the gripper's status byte (frame 0x2A8)."""
FOC_FAULT_BITS = tuple(name for name in FOC_BITS if name != "enabled")
GRIPPER_FAULT_BITS = ("voltage_too_low", "motor_overheating", "driver_overcurrent", "driver_overheating",
                      "sensor_error", "driver_error")

MIN_FIRMWARE = (1, 6, 3)
"""Oldest firmware whose kinematics the URDF models (S-V1.6-3)."""
_FIRMWARE = re.compile(r"S-V(\d+)\.(\d+)-(\d+)")


# --------------------------------------------------------------------------- joints
def rad_to_mdeg(q) -> np.ndarray:
    """Joint angles (rad) -> CAN units (int 0.001 deg), rounded; ValueError for NaN / Inf."""
    values = np.asarray(q, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"joint angles must be finite, got {values.tolist()}")
    out = np.rint(values * MDEG_PER_RAD).astype(np.int64)
    if np.any(out < INT32_MIN) or np.any(out > INT32_MAX):
        raise ValueError(f"joint angles do not fit the CAN int32: {values.tolist()}")
    return out


def mdeg_to_rad(mdeg) -> np.ndarray:
    """CAN joint units (0.001 deg) -> rad."""
    return np.asarray(mdeg, dtype=float) / MDEG_PER_RAD


# --------------------------------------------------------------------------- gripper
def finger_to_gripper_um(finger_m: float) -> int:
    """URDF joint7 (one finger, m) -> GripperCtrl opening (total width, int 0.001 mm)."""
    finger = float(finger_m)
    if not math.isfinite(finger):
        raise ValueError(f"finger position must be finite, got {finger_m!r}")
    return int(round(2.0 * finger * UM_PER_M))


def gripper_um_to_finger(width_um) -> float:
    """Gripper feedback (total width, 0.001 mm) -> URDF joint7 (one finger, m)."""
    return float(width_um) / UM_PER_M / 2.0


def gripper_effort_code(effort: float) -> int:
    """GripperCtrl effort 0..5 -> its CAN code 0..5000 (clamped)."""
    if not math.isfinite(effort):
        raise ValueError(f"gripper effort must be finite, got {effort!r}")
    return int(round(min(max(effort, 0.0), GRIPPER_EFFORT_MAX / 1000.0) * 1000.0))


def arm_to_can(q7: Sequence[float]) -> Tuple[List[int], int]:
    """The arm's 7-vector (joints 1-6 rad, joint7 finger m) -> (JointCtrl args, GripperCtrl width).

    No clamping here: the caller decides what is safe; this only converts (and refuses NaN).
    """
    vector = np.asarray(q7, dtype=float).reshape(-1)
    if vector.shape != (7,):
        raise ValueError(f"expected 7 values (joints 1-6 + finger), got {vector.size}")
    return [int(v) for v in rad_to_mdeg(vector[:6])], finger_to_gripper_um(vector[6])


def can_to_arm(joints_mdeg: Sequence[int], gripper_um: int) -> np.ndarray:
    """Joint feedback (0.001 deg x 6) and gripper feedback (0.001 mm) -> the arm's 7-vector."""
    joints = mdeg_to_rad(np.asarray(joints_mdeg, dtype=float).reshape(-1))
    if joints.shape != (6,):
        raise ValueError(f"expected 6 joint values, got {joints.size}")
    return np.append(joints, gripper_um_to_finger(gripper_um))


# --------------------------------------------------------------------------- status
def decode_err_code(err_code: int) -> Dict[str, List[int]]:
    """Frame 0x2A1 ``err_code`` -> joints (1-based) with a communication error / over limit."""
    code = int(err_code)
    return {"communication_error": [j + 1 for j in range(6) if code & (1 << j)],
            "angle_over_limit": [j + 1 for j in range(6) if code & (1 << (8 + j))]}


def encode_err_code(communication_error: Sequence[int] = (), angle_over_limit: Sequence[int] = ()) -> int:
    """Inverse of :func:`decode_err_code` (joints 1-based), for the emulator."""
    code = 0
    for joint in communication_error:
        code |= 1 << (int(joint) - 1)
    for joint in angle_over_limit:
        code |= 1 << (8 + int(joint) - 1)
    return code


def decode_bits(value: int, names: Sequence[str]) -> Dict[str, bool]:
    """A status byte -> {bit name: set?} (``names`` = FOC_BITS or GRIPPER_BITS)."""
    return {name: bool(int(value) & (1 << bit)) for bit, name in enumerate(names)}


def encode_bits(names: Sequence[str], **flags: bool) -> int:
    """{bit name: set?} -> a status byte; unknown names raise KeyError."""
    value = 0
    for name, on in flags.items():
        if on:
            value |= 1 << list(names).index(name)
    return value


def arm_status_name(code: int) -> str:
    return ARM_STATUS.get(int(code), f"unknown_0x{int(code):02X}")


# --------------------------------------------------------------------------- firmware
def parse_firmware(text) -> Optional[Tuple[int, int, int]]:
    """``S-V1.6-3`` -> (1, 6, 3); None when the text holds no version (e.g. the SDK's -0x4AF)."""
    if not isinstance(text, str):
        return None
    match = _FIRMWARE.search(text)
    return tuple(int(g) for g in match.groups()) if match else None


def firmware_has_current_kinematics(version: Tuple[int, int, int]) -> bool:
    """True when the firmware's kinematics are the URDF's (>= S-V1.6-3)."""
    return tuple(version) >= MIN_FIRMWARE


__all__ = [name for name in dir() if not name.startswith("_") and name not in (
    "annotations", "math", "re", "np", "Dict", "List", "Optional", "Sequence", "Tuple")]
