"""The AgileX vendor joint layout and the URDF joints, both ways (pure, ROS-free).

Without a ros2_control plugin the AgileX driver carries one arm per sensor_msgs/JointState:
state on ``/puppet/joint_<side>``, commands on ``/master/joint_<side>``, names
``joint0..joint6``. ``joint0..joint5`` are the URDF ``<side>_joint1..6`` (rad); ``joint6`` is
the gripper's *total* opening width (m). The URDF models the gripper as two fingers:
``<side>_joint7`` = width / 2 (driven) and ``<side>_joint8`` = -width / 2 (its mimic).

* :func:`vendor_to_arm`: a vendor message's positions -> the arm's 7-vector (joints 1-6 +
  the driven finger), the vector every other module uses.
* :func:`vendor_to_urdf`: one vendor arm message -> the arm's 8 URDF joints (JointState fields).
* :func:`urdf_to_vendor`: a 7-vector command -> the vendor names and positions.
* :class:`VendorStateMerger`: both arms' vendor state -> one 16-joint ``/joint_states``,
  only while both arms report, with every malformed or stale message counted
  (the logic of the ``vendor_bridge`` node).

Vendor messages may name their joints in any order, or leave the names empty (positional,
as some vendor tools publish). A message with the wrong length, unknown or repeated names,
or a non-finite value raises :class:`VendorMessageError` (a ValueError) whose ``reason`` is a
short code for counting.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core.robot import (ARM_DOF, arm_joint_names, finger_to_gripper_width, gripper_width_to_finger, mimic_joint_name)
from sim2real_vla_ros.core.vocabulary import ARMS

VENDOR_JOINT_NAMES = tuple(f"joint{i}" for i in range(ARM_DOF))
"""Vendor joint names of one arm; ``joint6`` is the total gripper width (m)."""

MALFORMED_REASONS = ("wrong_length", "unknown_names", "non_finite")
"""The ``VendorMessageError.reason`` codes."""


class VendorMessageError(ValueError):
    """A vendor JointState that cannot be converted; ``reason`` is one of MALFORMED_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_side(side: str) -> None:
    if side not in ARMS:
        raise ValueError(f"side must be one of {ARMS}, got {side!r}")


def _vendor_order(names: Sequence[str], count: int) -> List[int]:
    """Indices that put a message's values into joint0..joint6 order (identity for empty names)."""
    names = [str(name) for name in names]
    if not names:
        return list(range(ARM_DOF))
    if len(names) != count or count != ARM_DOF:
        raise VendorMessageError("wrong_length", f"expected {ARM_DOF} joint names and positions (joint0..joint6), "
                                                 f"got {len(names)} names and {count} positions")
    if sorted(names) != sorted(VENDOR_JOINT_NAMES):
        unknown = sorted(set(names) - set(VENDOR_JOINT_NAMES))
        repeated = sorted({name for name in names if names.count(name) > 1})
        detail = f"unknown {unknown}" if unknown else f"repeated {repeated}"
        raise VendorMessageError("unknown_names",
                                 f"joint names must be {list(VENDOR_JOINT_NAMES)} in any order, got {names} ({detail})")
    return [names.index(name) for name in VENDOR_JOINT_NAMES]


def _ordered_values(values: Sequence[float], order: List[int], what: str) -> np.ndarray:
    try:
        array = np.asarray(list(values), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise VendorMessageError("non_finite", f"{what} are not numbers ({exc})") from None
    if array.shape != (ARM_DOF,):
        raise VendorMessageError("wrong_length",
                                 f"expected {ARM_DOF} {what} (joint0..joint6), got {array.size}")
    ordered = array[order]
    if not np.all(np.isfinite(ordered)):
        bad = [name for name, value in zip(VENDOR_JOINT_NAMES, ordered) if not math.isfinite(value)]
        raise VendorMessageError("non_finite", f"{what} of {bad} are NaN or Inf: {ordered.tolist()}")
    return ordered


def vendor_to_arm(names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
    """A vendor message's positions -> the arm's 7-vector (joints 1-6 rad, joint7 finger m).

    Parameters
    ----------
    names : sequence of str
        ``joint0..joint6`` in any order, or empty (then ``positions`` are in that order).
    positions : sequence of 7 float
        The 7th (``joint6``) is the total gripper width.

    Raises
    ------
    VendorMessageError
        Wrong length, unknown / repeated names, or NaN / Inf (the message says which).
    """
    values = _ordered_values(positions, _vendor_order(names, len(positions)), "positions")
    values[-1] = gripper_width_to_finger(values[-1])
    return values


def vendor_to_urdf(side: str, names: Sequence[str], positions: Sequence[float],
                   velocities: Sequence[float] = ()) -> Dict[str, list]:
    """One vendor arm message -> the arm's 8 URDF joints, as JointState fields.

    Parameters
    ----------
    side : str
        'left' or 'right' (which URDF names to use).
    names, positions : see :func:`vendor_to_arm`.
    velocities : sequence of float
        Empty, or 7 values in the same order as ``positions`` (the 7th: the width's rate, m/s).

    Returns
    -------
    dict
        ``{"name": [<side>_joint1..8], "position": [8 float], "velocity": [8 float] or []}``:
        joint7 = width / 2, joint8 = -width / 2 (and the same for the velocities).

    Raises
    ------
    VendorMessageError
        Malformed names, positions or velocities (``reason`` says which kind).
    ValueError
        ``side`` is not 'left' or 'right'.
    """
    _check_side(side)
    order = _vendor_order(names, len(positions))
    position = _ordered_values(positions, order, "positions")
    velocity = _ordered_values(velocities, order, "velocities") if len(velocities) else None
    return {
        "name": [*arm_joint_names(side), mimic_joint_name(side)],
        "position": _with_fingers(position),
        "velocity": [] if velocity is None else _with_fingers(velocity),
    }


def _with_fingers(vendor_values: np.ndarray) -> list:
    finger = float(gripper_width_to_finger(vendor_values[-1]))
    return [float(v) for v in vendor_values[:-1]] + [finger, -finger]


def urdf_to_vendor(side: str, q7: Sequence[float]) -> Tuple[List[str], List[float]]:
    """The arm's 7-vector (joints 1-6 rad, joint7 finger m) -> vendor names and positions.

    Parameters
    ----------
    side : str
        'left' or 'right' (checked; the vendor names are the same for both arms, the
        topic tells them apart).
    q7 : sequence of 7 float

    Returns
    -------
    names : list of str
        ``joint0..joint6``.
    positions : list of float
        Joints 1-6, then the total gripper width = 2 * joint7.

    Raises
    ------
    ValueError
        Wrong length or a NaN / Inf value (nothing non-finite is ever sent to the arm).
    """
    _check_side(side)
    vector = np.asarray(q7, dtype=np.float64).reshape(-1)
    if vector.shape != (ARM_DOF,):
        raise ValueError(f"{side} arm command must have {ARM_DOF} values (joints 1-7), got {vector.size}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{side} arm command has NaN or Inf: {vector.tolist()}")
    positions = [float(v) for v in vector[:-1]] + [float(finger_to_gripper_width(vector[-1]))]
    return list(VENDOR_JOINT_NAMES), positions


# ----------------------------------------------------------------------------- merging both arms
@dataclass(frozen=True)
class _ArmReading:
    state: Dict[str, list]
    stamp_s: float
    received_s: float


@dataclass(frozen=True)
class MergedJointState:
    """One ``/joint_states`` message: both arms, URDF names, stamped with the newest source stamp."""

    stamp_s: float
    name: List[str]
    position: List[float]
    velocity: List[float]  # empty unless both arms reported velocities


class VendorStateMerger:
    """Both arms' vendor state -> one 16-joint joint state, only while both arms report.

    Each arm's newest valid reading is kept. :meth:`offer` converts a message and returns the
    merged state when every arm has reported within ``max_age_s`` (measured on the caller's
    clock at arrival, so a driver whose stamps come from another clock is judged by when
    its messages arrive), else None. The merged stamp is the newest of the two source
    stamps; a zero (unset) source stamp is replaced by its arrival time.

    Counters (:attr:`counters`, totals for the run): ``received.<side>``, ``malformed.<side>``
    and ``malformed.<side>.<reason>``, ``stale.<side>`` (a merge withheld because that arm was
    silent longer than ``max_age_s`` or never reported), ``published``.

    Parameters
    ----------
    max_age_s : float
        Longest silence of an arm before the merged state is withheld (> 0).
    """

    def __init__(self, max_age_s: float) -> None:
        if not (math.isfinite(max_age_s) and max_age_s > 0.0):
            raise ValueError(f"max_age_s must be a positive number of seconds, got {max_age_s!r}")
        self.max_age_s = float(max_age_s)
        self.counters: Counter = Counter()
        self.last_malformed: Dict[str, str] = {}
        self._readings: Dict[str, _ArmReading] = {}

    def offer(self, side: str, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
              stamp_s: float, now_s: float) -> Optional[MergedJointState]:
        """Take one arm's vendor message; return the merged state to publish, or None.

        Never raises on message content: a malformed message is counted (``malformed.<side>``,
        with its reason kept in :attr:`last_malformed`) and the arm's previous reading stays.

        Parameters
        ----------
        side : str
            The arm the message came from ('left' / 'right'; anything else is a ValueError).
        names, positions, velocities : the JointState fields.
        stamp_s : float
            The message's header stamp (s); 0 = unset.
        now_s : float
            Arrival time on the caller's clock (s).
        """
        _check_side(side)
        try:
            state = vendor_to_urdf(side, names, positions, velocities)
        except VendorMessageError as exc:
            self.counters[f"malformed.{side}"] += 1
            self.counters[f"malformed.{side}.{exc.reason}"] += 1
            self.last_malformed[side] = str(exc)
            return None
        stamp = float(stamp_s) if math.isfinite(stamp_s) and stamp_s > 0.0 else float(now_s)
        self._readings[side] = _ArmReading(state, stamp, float(now_s))
        self.counters[f"received.{side}"] += 1
        stale = self.stale_sides(now_s)
        if stale:
            for silent in stale:
                self.counters[f"stale.{silent}"] += 1
            return None
        self.counters["published"] += 1
        return self._merge()

    def stale_sides(self, now_s: float) -> List[str]:
        """Arms that never reported or whose newest reading arrived more than ``max_age_s`` ago."""
        return [side for side in ARMS
                if side not in self._readings or now_s - self._readings[side].received_s > self.max_age_s]

    def ages(self, now_s: float) -> Dict[str, Optional[float]]:
        """Seconds since each arm's newest valid reading arrived (None: never)."""
        return {side: (now_s - self._readings[side].received_s) if side in self._readings else None
                for side in ARMS}

    def _merge(self) -> MergedJointState:
        readings = [self._readings[side] for side in ARMS]
        name = [n for reading in readings for n in reading.state["name"]]
        position = [p for reading in readings for p in reading.state["position"]]
        with_velocity = all(reading.state["velocity"] for reading in readings)
        velocity = [v for reading in readings for v in reading.state["velocity"]] if with_velocity else []
        return MergedJointState(max(reading.stamp_s for reading in readings), name, position, velocity)


__all__ = ["MALFORMED_REASONS", "MergedJointState", "VENDOR_JOINT_NAMES", "VendorMessageError",
           "VendorStateMerger", "urdf_to_vendor", "vendor_to_arm", "vendor_to_urdf"]
