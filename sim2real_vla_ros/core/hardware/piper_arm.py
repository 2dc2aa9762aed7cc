"""The Piper arm through the vendor SDK, and the per-arm safety state machine (no rclpy).

* :class:`PiperArm`: one arm on ``piper_sdk.C_PiperInterface_V2`` (piper-sdk 0.6.2): connect,
  read the firmware version, the vendor's enable step, feedback in URDF units, one command
  (MotionCtrl_2 + JointCtrl + GripperCtrl, as the vendor's ``demo/V2/piper_ctrl_joint.py``
  sends every cycle), emergency stop. Units: :mod:`piper_units`.
* :class:`ArmSupervisor`: what the driver does with one arm each control tick. States:

  ``disabled`` -> (enable requested) -> ``enabling`` -> (all six motors report enabled)
  -> ``running`` -> (any fault) -> ``hold``; any state -> (e-stop) -> ``estop``.
  ``hold`` and ``estop`` are left only by an explicit :meth:`ArmSupervisor.request_enable`
  (so a bus that comes back, or an e-stop released, never resumes motion by itself), which
  is refused while the e-stop is engaged or a fault is still present.

  Faults (each one holds the arm and is kept in :attr:`ArmSupervisor.hold_reasons`):
  joint feedback older than ``feedback_timeout_s`` (CAN silence), joint feedback rate below
  ``min_feedback_rate_hz`` (dropped frames), ``arm_status`` not normal, ``err_code`` bits
  (joint communication error, angle over limit), a joint driver's fault bits (collision
  protection, stall, over-current, ...), the gripper's fault bits, motors reported disabled
  while running, and a joint that stays more than ``tracking_tolerance_rad`` from its command
  for ``tracking_timeout_s`` (a stuck joint).

  Entering ``hold`` with fresh feedback sends the measured position once (the arm stops
  where it is) and then nothing more; with stale feedback nothing is sent at all.
"""
from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core.hardware import piper_units as units

STATES = ("disabled", "enabling", "running", "hold", "estop")
_CLEARED_BY_RESUME = ("arm_status:emergency_stop",)


class FirmwareError(RuntimeError):
    """The arm's firmware cannot be read or implies kinematics the URDF does not model."""


@dataclass(frozen=True)
class PiperArmConfig:
    """Settings of one arm (see the piper_driver node's parameters for their meaning)."""

    side: str
    can_port: str
    bustype: str = "socketcan"
    judge_can: bool = True
    speed_rate: int = 30
    gripper_effort: float = 1.0
    feedback_timeout_s: float = 0.05
    min_feedback_rate_hz: float = 100.0
    rate_window_s: float = 0.5
    tracking_tolerance_rad: float = 0.3
    tracking_timeout_s: float = 1.0
    enable_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.speed_rate) <= 100:
            raise ValueError(f"speed_rate must be a percentage in [1, 100], got {self.speed_rate}")
        if not 0.0 <= self.gripper_effort <= 5.0:
            raise ValueError(f"gripper_effort must be in [0, 5], got {self.gripper_effort}")
        for name in ("feedback_timeout_s", "rate_window_s", "tracking_tolerance_rad", "tracking_timeout_s",
                     "enable_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.min_feedback_rate_hz) and self.min_feedback_rate_hz >= 0.0):
            raise ValueError(f"min_feedback_rate_hz must be >= 0, got {self.min_feedback_rate_hz}")


@dataclass
class ArmReading:
    """One read of an arm's feedback (URDF units), as the SDK holds it."""

    positions: np.ndarray  # joints 1-6 rad, joint7 finger m
    joint_stamp: float  # wall time (s) of the newest joint frame; 0 = none yet
    age_s: float  # wall seconds since that frame (inf = none)
    ctrl_mode: int
    arm_status: int
    err_code: int
    driver_status: List[int]  # status byte of joint drivers 1..6 (low-speed frames)
    driver_stamp: float  # wall time (s) of the newest low-speed (driver status) frame
    gripper_status: int
    enabled: List[bool]
    can_fps: float
    joint_rate_hz: float = 0.0  # the SDK's frames/s of the joint feedback (mean of 0x2A5..0x2A7)
    firmware: Optional[str] = None

    @property
    def fresh(self) -> bool:
        return math.isfinite(self.age_s)


class PiperArm:
    """One Piper arm through the vendor SDK.

    Parameters
    ----------
    config : PiperArmConfig
    sdk_class : callable, optional
        ``C_PiperInterface_V2`` (default) or a stand-in with the same methods.
    wall_clock : callable
        Wall time in seconds (the SDK stamps frames with python-can's ``time.time()``).
    """

    def __init__(self, config: PiperArmConfig, sdk_class=None, wall_clock: Callable[[], float] = time.time) -> None:
        if sdk_class is None:
            from piper_sdk import C_PiperInterface_V2 as sdk_class
        self.config = config
        self._sdk_class = sdk_class
        self._wall = wall_clock
        self.sdk = None
        self.firmware: Optional[str] = None
        self.commands_sent = 0

    def connect(self) -> None:
        """Open the CAN port and start the SDK's reader thread (no frame is sent)."""
        port = self.config.can_port
        self.sdk = self._sdk_class(can_name=port, judge_flag=False, can_auto_init=False)
        # CreateCanBus's judge_flag checks (socketcan only) that the port exists, is up and runs
        # at 1 Mbit/s, raising a clear error otherwise.
        self.sdk.CreateCanBus(port, bustype=self.config.bustype,
                              judge_flag=self.config.judge_can and self.config.bustype == "socketcan")
        self.sdk.ConnectPort(can_init=False, piper_init=False, start_thread=True)

    def close(self) -> None:
        if self.sdk is not None:
            self.sdk.DisconnectPort()

    # ------------------------------------------------------------------ firmware
    def query_firmware(self, timeout_s: float, wait: Callable[[float], None] = time.sleep) -> Optional[str]:
        """Ask for the firmware version (0x4AF) until it is answered or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sdk.SearchPiperFirmwareVersion()
            resend_at = min(deadline, time.monotonic() + 0.3)
            while time.monotonic() < resend_at:
                version = self.sdk.GetPiperFirmwareVersion()
                if isinstance(version, str):
                    self.firmware = version
                    return version
                wait(0.01)
        return None

    def check_firmware(self, timeout_s: float) -> str:
        """The firmware version, or FirmwareError when unreadable or older than S-V1.6-3."""
        version = self.query_firmware(timeout_s)
        side, port = self.config.side, self.config.can_port
        if version is None:
            raise FirmwareError(f"{side} arm on {port}: no answer to the firmware version query within "
                                f"{timeout_s:g} s (is the arm powered, is {port} the right port, is the bus up?)")
        parsed = units.parse_firmware(version)
        if parsed is None:
            raise FirmwareError(f"{side} arm on {port}: unreadable firmware version {version!r}")
        if not units.firmware_has_current_kinematics(parsed):
            minimum = "S-V{}.{}-{}".format(*units.MIN_FIRMWARE)
            raise FirmwareError(
                f"{side} arm on {port}: firmware {version} is older than {minimum}; its kinematics differ from "
                f"the URDF's by about 10 mm at link6 and this stack has no sourced model of them. Update the arm's "
                f"firmware (AgileX upgrade tool) before running the driver.")
        return version

    # ------------------------------------------------------------------ enable / stop
    def enable_step(self) -> bool:
        """One step of the vendor's enable loop (``while not piper.EnablePiper(): sleep(0.01)``):
        sends EnableArm(7) and returns whether all six motors already report enabled."""
        return bool(self.sdk.EnablePiper())

    def start_control(self, gripper_width_um: int) -> None:
        """After enabling: CAN control, MOVE J, the speed rate; gripper enabled where it is."""
        self.sdk.MotionCtrl_2(units.CTRL_MODE_CAN, units.MOVE_MODE_J, int(self.config.speed_rate),
                              units.MIT_MODE_POSITION_VELOCITY)
        self.sdk.GripperCtrl(int(gripper_width_um), units.gripper_effort_code(self.config.gripper_effort),
                             units.GRIPPER_ENABLE, 0)

    def estop(self) -> None:
        """The SDK's EmergencyStop(0x01) (MotionCtrl_1, CAN id 0x150)."""
        self.sdk.EmergencyStop(units.EMERGENCY_STOP)

    def resume(self) -> None:
        """EmergencyStop(0x02): clears the e-stop and errors; the SDK documents that the arm loses
        power (it must be enabled again), so this is sent only on an explicit re-enable."""
        self.sdk.EmergencyStop(units.EMERGENCY_RESUME)

    # ------------------------------------------------------------------ feedback / command
    def read(self) -> ArmReading:
        sdk = self.sdk
        joints = sdk.GetArmJointMsgs()
        gripper = sdk.GetArmGripperMsgs()
        status = sdk.GetArmStatus().arm_status
        low = sdk.GetArmLowSpdInfoMsgs()
        state = joints.joint_state
        raw = [state.joint_1, state.joint_2, state.joint_3, state.joint_4, state.joint_5, state.joint_6]
        positions = units.can_to_arm(raw, gripper.gripper_state.grippers_angle)
        stamp = float(joints.time_stamp or 0.0)
        age = self._wall() - stamp if stamp > 0.0 else math.inf
        motors = [low.motor_1, low.motor_2, low.motor_3, low.motor_4, low.motor_5, low.motor_6]
        driver_status = [int(m.foc_status_code) for m in motors]
        return ArmReading(positions=positions, joint_stamp=stamp, age_s=max(age, 0.0), ctrl_mode=int(status.ctrl_mode),
                          driver_stamp=float(low.time_stamp or 0.0),
                          arm_status=int(status.arm_status), err_code=int(status.err_code), driver_status=driver_status,
                          gripper_status=int(gripper.gripper_state.status_code),
                          enabled=[bool(code & (1 << units.FOC_BITS.index("enabled"))) for code in driver_status],
                          can_fps=float(sdk.GetCanFps()), joint_rate_hz=float(joints.Hz or 0.0),
                          firmware=self.firmware)

    def send(self, q7: Sequence[float]) -> None:
        """Send one position command (already checked by the caller): joints + gripper."""
        joints, width = units.arm_to_can(q7)
        sdk = self.sdk
        sdk.MotionCtrl_2(units.CTRL_MODE_CAN, units.MOVE_MODE_J, int(self.config.speed_rate),
                         units.MIT_MODE_POSITION_VELOCITY)
        sdk.JointCtrl(*joints)
        sdk.GripperCtrl(width, units.gripper_effort_code(self.config.gripper_effort), units.GRIPPER_ENABLE, 0)
        self.commands_sent += 1


class _RateEstimate:
    """The SDK's joint feedback rate (frames/s per joint frame, counted by the SDK over 0.1 s),
    averaged over a window so that one short stall does not read as dropped frames."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: Deque[Tuple[float, float]] = deque()
        self._since: Optional[float] = None

    def update(self, rate_hz: float, now: float) -> Optional[float]:
        """The mean rate over the window (None until a full window has been observed)."""
        if self._since is None:
            self._since = now
        self._samples.append((now, float(rate_hz)))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        if now - self._since < self.window_s or not self._samples:
            return None
        return sum(rate for _, rate in self._samples) / len(self._samples)

    def reset(self, now: float) -> None:
        self._samples.clear()
        self._since = now


class ArmSupervisor:
    """One arm's state machine, fault checks and the command it sends each tick.

    Parameters
    ----------
    arm : PiperArm
        Connected arm.
    controller
        The arm's command source, a :class:`sim2real_vla_ros.sim.controllers.TrajectoryArmController`
        (joint_trajectory_controller and forward_command_controller semantics).
    lower, upper : sequence of 7 float
        URDF position limits; the last line before a command leaves clips into them.
    clock : callable
        Monotonic seconds, for the fault timers.
    """

    def __init__(self, arm: PiperArm, controller, lower: Sequence[float], upper: Sequence[float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.arm = arm
        self.config = arm.config
        self.controller = controller
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        self._clock = clock
        self.state = "disabled"
        self.hold_reasons: List[str] = []
        self.estop_engaged = False
        self.counters: Counter = Counter()
        self.reading: Optional[ArmReading] = None
        self.last_command: Optional[np.ndarray] = None
        self.feedback_rate_hz: Optional[float] = None
        self._rate = _RateEstimate(self.config.rate_window_s)
        self._enable_deadline = 0.0
        self._tracking_since: Optional[float] = None
        self._gripper_override: Optional[float] = None
        self._enable_requested_wall = 0.0

    # ------------------------------------------------------------------ requests
    def request_enable(self) -> Tuple[bool, str]:
        """Start the enable sequence (also the only way out of ``hold`` and ``estop``)."""
        if self.estop_engaged:
            return False, f"{self.config.side}: e-stop engaged; release it first"
        if self.state in ("running", "enabling"):
            return True, f"{self.config.side}: already {self.state}"
        reading = self.arm.read()
        faults = [fault for fault in self._faults(reading, self._clock(), check_tracking=False, check_enabled=False)
                  if fault not in _CLEARED_BY_RESUME]
        if faults:
            return False, f"{self.config.side}: cannot enable while {', '.join(faults)}"
        if reading.arm_status == 0x01:
            # Only the arm's own e-stop is cleared this way: the SDK documents that 0x02 also cuts
            # the motors' power, so it is never sent to an arm that is merely holding.
            self.arm.resume()
        self.state = "enabling"
        self.hold_reasons = []
        self._enable_deadline = self._clock() + self.config.enable_timeout_s
        # Only a driver status reported after this moment counts as "enabled" (the SDK keeps the
        # last status it saw, which may predate a resume that cut the motors).
        self._enable_requested_wall = reading.joint_stamp if reading.fresh else 0.0
        self._rate.reset(self._clock())
        self.counters["enable_requests"] += 1
        return True, f"{self.config.side}: enabling"

    def engage_estop(self) -> None:
        """EmergencyStop(0x01) now, whatever the state; latched until released and re-enabled."""
        if self.arm.sdk is not None:
            self.arm.estop()
        if not self.estop_engaged:
            self.counters["estops"] += 1
        self.estop_engaged = True
        self.state = "estop"

    def release_estop(self) -> None:
        """Allow a later :meth:`request_enable`; sends nothing and does not move."""
        self.estop_engaged = False

    def set_gripper(self, finger_m: float) -> bool:
        """A gripper-only target (finger m) until the next arm command; False if not finite."""
        if not math.isfinite(finger_m):
            return False
        self._gripper_override = float(finger_m)
        return True

    def clear_gripper_override(self) -> None:
        self._gripper_override = None

    # ------------------------------------------------------------------ tick
    def tick(self, now_s: float) -> ArmReading:
        """Read feedback, check faults, advance the state machine and send this tick's command.

        ``now_s`` is the controllers' time base (the node clock: trajectory stamps use it).
        """
        mono = self._clock()
        reading = self.arm.read()
        self.reading = reading
        self.feedback_rate_hz = self._rate.update(reading.joint_rate_hz, mono)
        if self.estop_engaged:
            self.state = "estop"
            return reading
        if self.state == "enabling":
            self._enable_tick(reading, now_s, mono)
        elif self.state == "running":
            faults = self._faults(reading, mono)
            if faults:
                self._hold(reading, faults, now_s)
            else:
                self._send(now_s)
        return reading

    def _enable_tick(self, reading: ArmReading, now_s: float, mono: float) -> None:
        # The resume sent with the request clears the arm's own e-stop status a frame later.
        faults = [fault for fault in self._faults(reading, mono, check_tracking=False, check_enabled=False)
                  if fault not in _CLEARED_BY_RESUME]
        if faults:
            self._hold(reading, faults, now_s, send=False)
            return
        all_enabled = self.arm.enable_step()
        if all_enabled and reading.driver_stamp > self._enable_requested_wall and reading.arm_status != 0x01:
            self.arm.start_control(units.finger_to_gripper_um(reading.positions[6]))
            self.controller.hold(np.clip(reading.positions, self.lower, self.upper), now_s)
            self._gripper_override = None
            self._tracking_since = None
            self.last_command = None
            self.state = "running"
            self.counters["enabled"] += 1
        elif mono > self._enable_deadline:
            self._hold(reading, [f"enable_timeout ({self.config.enable_timeout_s:g} s)"], now_s, send=False)

    def _send(self, now_s: float) -> None:
        desired = np.asarray(self.controller.command(now_s)[0], dtype=float)
        if self._gripper_override is not None:
            desired = desired.copy()
            desired[6] = self._gripper_override
        if not np.all(np.isfinite(desired)):
            self.counters["non_finite_commands"] += 1
            return
        command = np.clip(desired, self.lower, self.upper)  # the last line before the CAN frames
        if np.any(command != desired):
            self.counters["clipped_commands"] += 1
        self.arm.send(command)
        self.last_command = command
        self.counters["commands"] += 1

    def _hold(self, reading: ArmReading, reasons: List[str], now_s: float, send: bool = True) -> None:
        was = self.state
        self.state = "hold"
        self.hold_reasons = list(reasons)
        for reason in reasons:
            self.counters[f"hold.{reason.split(' ')[0].split(':')[0]}"] += 1
        if send and was == "running" and reading.fresh and reading.age_s <= self.config.feedback_timeout_s:
            measured = np.clip(reading.positions, self.lower, self.upper)
            self.arm.send(measured)  # stop where it is, once
            self.last_command = measured
        if reading.fresh:
            self.controller.hold(np.clip(reading.positions, self.lower, self.upper), now_s)

    # ------------------------------------------------------------------ faults
    def _faults(self, reading: ArmReading, mono: float, check_tracking: bool = True,
                check_enabled: bool = True) -> List[str]:
        config = self.config
        faults = []
        if not reading.fresh:
            return ["no_feedback (no joint frame received yet)"]
        if reading.age_s > config.feedback_timeout_s:
            faults.append(f"can_silent (joint feedback {reading.age_s:.3f} s old > {config.feedback_timeout_s:g} s)")
            return faults  # everything else is stale too
        rate = self.feedback_rate_hz
        if rate is not None and rate < config.min_feedback_rate_hz:
            faults.append(f"feedback_rate_low ({rate:.0f} Hz < {config.min_feedback_rate_hz:g} Hz)")
        if reading.arm_status != units.ARM_STATUS_OK:
            faults.append(f"arm_status:{units.arm_status_name(reading.arm_status)}")
        errors = units.decode_err_code(reading.err_code)
        if errors["communication_error"]:
            faults.append(f"joint_communication_error:{errors['communication_error']}")
        if errors["angle_over_limit"]:
            faults.append(f"joint_over_limit:{errors['angle_over_limit']}")
        for joint, code in enumerate(reading.driver_status, start=1):
            bits = [name for name, on in units.decode_bits(code, units.FOC_BITS).items()
                    if on and name in units.FOC_FAULT_BITS]
            if bits:
                faults.append(f"joint{joint}_driver:{'+'.join(bits)}")
        gripper_bits = [name for name, on in units.decode_bits(reading.gripper_status, units.GRIPPER_BITS).items()
                        if on and name in units.GRIPPER_FAULT_BITS]
        if gripper_bits:
            faults.append(f"gripper_driver:{'+'.join(gripper_bits)}")
        if check_enabled and not all(reading.enabled):
            off = [j + 1 for j, on in enumerate(reading.enabled) if not on]
            faults.append(f"motors_disabled:{off}")
        if check_tracking and self.last_command is not None:
            error = np.abs(self.last_command[:6] - reading.positions[:6])
            if np.any(error > config.tracking_tolerance_rad):
                if self._tracking_since is None:
                    self._tracking_since = mono
                elif mono - self._tracking_since > config.tracking_timeout_s:
                    joints = [int(j) + 1 for j in np.flatnonzero(error > config.tracking_tolerance_rad)]
                    faults.append(f"tracking_error:joint{joints} (> {config.tracking_tolerance_rad:g} rad for "
                                  f"{config.tracking_timeout_s:g} s)")
            else:
                self._tracking_since = None
        return faults

    def current_faults(self) -> List[str]:
        """Faults present in the newest reading (not the tracking or enable checks)."""
        if self.reading is None:
            return ["no_feedback"]
        return self._faults(self.reading, self._clock(), check_tracking=False, check_enabled=False)

    def diagnostics(self) -> Dict[str, object]:
        """Key/values for /diagnostics."""
        reading = self.reading
        values: Dict[str, object] = {"state": self.state, "hold_reasons": "; ".join(self.hold_reasons) or "none",
                                     "estop_engaged": self.estop_engaged, "can_port": self.config.can_port,
                                     "firmware": self.arm.firmware or "unknown",
                                     "feedback_rate_hz": "n/a" if self.feedback_rate_hz is None
                                     else round(self.feedback_rate_hz, 1)}
        if reading is not None:
            errors = units.decode_err_code(reading.err_code)
            values.update({
                "feedback_age_s": reading.age_s if reading.fresh else "never",
                "can_frame_rate_hz": reading.can_fps,
                "arm_status": units.arm_status_name(reading.arm_status),
                "ctrl_mode": units.CTRL_MODES.get(reading.ctrl_mode, reading.ctrl_mode),
                "err_code": f"0x{reading.err_code:04X}",
                "joint_communication_error": errors["communication_error"],
                "joint_over_limit": errors["angle_over_limit"],
                "collision_protection": [j + 1 for j, code in enumerate(reading.driver_status)
                                         if units.decode_bits(code, units.FOC_BITS)["collision_protection"]],
                "motors_enabled": reading.enabled,
                "gripper_status": f"0x{reading.gripper_status:02X}",
                "positions": [round(float(v), 5) for v in reading.positions],
            })
        values.update({f"count.{key}": value for key, value in sorted(self.counters.items())})
        return values


__all__ = ["ArmReading", "ArmSupervisor", "FirmwareError", "PiperArm", "PiperArmConfig", "STATES"]
