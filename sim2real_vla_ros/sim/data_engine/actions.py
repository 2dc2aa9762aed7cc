"""The action bank: atomic actions as key end-effector poses defined relative to objects.

Each action is a function ``(ctx, ...) -> Step``: it reads the privileged scene *when the step
starts* (so a lift is relative to where the grasp really ended up) and returns per-arm key
poses plus the sub-goal condition the step must reach. The expert (:mod:`.expert`) turns key
poses into joint trajectories (IK per Cartesian waypoint, minimum-jerk timing) and checks the
condition in simulation after the step.

Frames: TCP rotation matrices in the base frame; columns (x, y, z) with z the approach
direction and y the finger travel direction (see :mod:`.ik`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from sim2real_vla_ros.sim.data_engine import subgoals as sg

OPEN = 0.035      # joint7, fully open (m)
CLOSED = 0.0      # joint7 command when gripping: the servo presses with its force limit
ARM_BASE = {"left": np.array([0.233, 0.300, 0.7775]), "right": np.array([0.233, -0.300, 0.7775])}


@dataclass
class KeyPose:
    """A TCP target. ``linear``: reach it on a straight Cartesian line from the previous pose
    (approach, lift, place, tilt); otherwise a joint-space move (transfer)."""

    position: np.ndarray
    rotation: np.ndarray
    finger: float
    linear: bool = True
    # Continue the previous key pose's segment without stopping (a curved path such as a tilt
    # about the bottle mouth is a chain of blended key poses); otherwise the arm stops here.
    blend: bool = False
    # For a joint-space move: IK starts from this joint configuration (joints 1-6) instead of
    # the current one, e.g. one traced back from where a following straight line must end.
    seed: Optional[np.ndarray] = None


@dataclass
class Step:
    """One atomic action instance for one or two arms, then the sub-goal condition."""

    action: str
    poses: Dict[str, List[KeyPose]]
    condition: Optional[sg.Condition] = None
    settle_s: float = 0.0
    speed: float = 1.0
    # Rotation candidates were tried in order; alternatives for the first pose (None: fixed).
    alternatives: Optional[Dict[str, List[List[KeyPose]]]] = None


def frame(approach, fingers) -> np.ndarray:
    """TCP rotation with +z along ``approach`` and +y along ``fingers`` (orthogonalised)."""
    z = np.asarray(approach, dtype=float)
    z = z / np.linalg.norm(z)
    y = np.asarray(fingers, dtype=float)
    y = y - z * float(y @ z)
    y = y / np.linalg.norm(y)
    return np.column_stack([np.cross(y, z), y, z])


def axis_rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def horizontal(v) -> np.ndarray:
    v = np.array([v[0], v[1], 0.0], dtype=float)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- grasps
def side_grasp_candidates(side: str, point: np.ndarray, pitches_deg=(0, 10, 20, 30, -10),
                          yaw_offsets_deg=(0, 15, -15, 30, -30)) -> List[np.ndarray]:
    """Rotations for a horizontal-ish grasp of an upright object at ``point``: approach from the
    arm's shoulder toward the object (turned by a yaw offset), pitched down by ``pitch``,
    fingers horizontal."""
    base_dir = horizontal(point - ARM_BASE[side])
    out = []
    for yaw in yaw_offsets_deg:
        d = axis_rotation([0, 0, 1], math.radians(yaw)) @ base_dir
        for pitch in pitches_deg:
            p = math.radians(pitch)
            approach = np.array([d[0] * math.cos(p), d[1] * math.cos(p), -math.sin(p)])
            fingers = np.cross([0, 0, 1], d)
            out.append(frame(approach, fingers))
    return out


def top_grasp_candidates(side: str, point: np.ndarray, long_axis_yaw: float,
                         pitches_deg=(90, 75, 60, 50, 40)) -> List[np.ndarray]:
    """Rotations for a grasp from above of a lying object whose long axis has ``long_axis_yaw``:
    fingers across the long axis, the approach tipped forward (away from the arm) by 90 - pitch."""
    across = np.array([-math.sin(long_axis_yaw), math.cos(long_axis_yaw), 0.0])
    along = np.array([math.cos(long_axis_yaw), math.sin(long_axis_yaw), 0.0])
    outward = horizontal(point - ARM_BASE[side])
    tip = along if float(along @ outward) >= 0 else -along
    out = []
    for pitch in pitches_deg:
        p = math.radians(pitch)
        approach = np.array([tip[0] * math.cos(p), tip[1] * math.cos(p), -math.sin(p)])
        out.append(frame(approach, across))
    return out


# ---------------------------------------------------------------------- atomic actions
def approach(side: str, obj: str, grasp_point: np.ndarray, rotation: np.ndarray,
             standoff: float = 0.08) -> List[KeyPose]:
    """Pre-grasp ``standoff`` back along the approach (joint move), then straight in, open."""
    a = rotation[:, 2]
    return [KeyPose(grasp_point - standoff * a, rotation, OPEN, linear=False),
            KeyPose(grasp_point, rotation, OPEN, linear=True)]


def grasp(position, rotation) -> List[KeyPose]:
    """Close the fingers where the TCP is."""
    return [KeyPose(np.asarray(position), rotation, CLOSED, linear=True)]


def release(position, rotation) -> List[KeyPose]:
    return [KeyPose(np.asarray(position), rotation, OPEN, linear=True)]


def lift(position, rotation, dz: float, finger: float = CLOSED) -> List[KeyPose]:
    return [KeyPose(np.asarray(position) + [0, 0, dz], rotation, finger, linear=True)]


def retreat(position, rotation, distance: float = 0.08, up: float = 0.04) -> List[KeyPose]:
    """Back out along the approach and up a little, fingers open."""
    back = np.asarray(position) - distance * rotation[:, 2] + [0, 0, up]
    return [KeyPose(back, rotation, OPEN, linear=True)]


def move_to(position, rotation, finger: float = CLOSED, linear: bool = False) -> List[KeyPose]:
    return [KeyPose(np.asarray(position), rotation, finger, linear=linear)]


def tilt_about_point(tcp_p, tcp_r, pivot_local, pivot_start, pivot_end, axis, angle: float,
                     n: int = 12, finger: float = CLOSED) -> List[KeyPose]:
    """Rotate the held object by ``angle`` about ``axis`` while a point of it (``pivot_local``,
    in the TCP frame: e.g. the bottle mouth) moves from ``pivot_start`` to ``pivot_end``."""
    poses = []
    for i in range(1, n + 1):
        s = i / n
        r = axis_rotation(axis, angle * s) @ tcp_r
        pivot = (1 - s) * np.asarray(pivot_start) + s * np.asarray(pivot_end)
        poses.append(KeyPose(pivot - r @ pivot_local, r, finger, linear=True, blend=i > 1))
    return poses


def place(position, rotation, finger: float = CLOSED) -> List[KeyPose]:
    """Lower straight down to ``position`` (then the expert releases)."""
    return [KeyPose(np.asarray(position), rotation, finger, linear=True)]


ACTION_BANK = {
    "approach": approach, "grasp": grasp, "lift": lift, "move_over": move_to, "tilt": tilt_about_point,
    "place": place, "release": release, "retreat": retreat,
}
