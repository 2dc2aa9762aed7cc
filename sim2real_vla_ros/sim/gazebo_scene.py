"""Task objects for Gazebo: the MuJoCo object models (``sim.objects``) as SDF, placed by tasks.yaml.

``sim_gazebo.launch.py`` spawns each object with ``ros_gz_sim create -string <sdf>`` at the pose
``core.tasks.sample_scene`` draws for the task and seed, so Gazebo and the MuJoCo simulator share
the task definitions, the sampling and the object shapes and masses. No ROS import.

An object is one SDF link whose origin is the centre of its footprint (as in ``sim.objects``);
each primitive part becomes one collision and one visual. The link's inertial is the exact
composite of its parts (mass shared by volume, as ``sim.objects.add_object`` does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional
from xml.sax.saxutils import escape

import numpy as np

from sim2real_vla_ros.core import robot

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.objects import OBJECT_FRICTION, ObjectModel, Part, object_model

SDF_VERSION = "1.9"  # Gazebo Garden and newer (capsule and ellipsoid shapes)
DROP_CLEARANCE_M = 0.001  # spawn this far above the support so nothing starts interpenetrating


@dataclass(frozen=True)
class PlacedObject:
    """One task object ready for ``ros_gz_sim create``: entity name, SDF and pose in the world."""

    name: str
    kind: str
    sdf: str
    position: tuple[float, float, float]
    yaw: float


# --------------------------------------------------------------------------- inertia


def _rotation(part: Part) -> np.ndarray:
    """Part orientation in the body frame: yaw about z, then pitch about y (as Part.quat)."""
    cy, sy = math.cos(part.yaw), math.sin(part.yaw)
    cp, sp = math.cos(part.pitch), math.sin(part.pitch)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    return rz @ ry


def _principal_inertia(part: Part, mass: float) -> np.ndarray:
    """Diagonal inertia of a solid primitive about its own centre (kg m^2), MuJoCo size convention."""
    s = part.size
    if part.shape == "box":
        a, b, c = s
        return mass / 3.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
    if part.shape == "cylinder":
        radius, half = s[0], s[1]
        side = mass * (3.0 * radius ** 2 + (2.0 * half) ** 2) / 12.0
        return np.array([side, side, mass * radius ** 2 / 2.0])
    if part.shape == "capsule":
        # A cylinder plus two hemispheres (mass by volume); each hemisphere's centre of mass
        # is 3r/8 beyond the cylinder's end, its own inertia there 83/320 m r^2 about a diameter.
        radius, half = s[0], s[1]
        cylinder_volume = math.pi * radius ** 2 * 2.0 * half
        sphere_volume = 4.0 / 3.0 * math.pi * radius ** 3
        m_cyl = mass * cylinder_volume / (cylinder_volume + sphere_volume)
        m_hemi = (mass - m_cyl) / 2.0
        side = (m_cyl * (3.0 * radius ** 2 + (2.0 * half) ** 2) / 12.0
                + 2.0 * (83.0 / 320.0 * m_hemi * radius ** 2 + m_hemi * (half + 3.0 * radius / 8.0) ** 2))
        axial = m_cyl * radius ** 2 / 2.0 + 2.0 * m_hemi * 0.4 * radius ** 2
        return np.array([side, side, axial])
    if part.shape == "sphere":
        return np.full(3, 0.4 * mass * s[0] ** 2)
    if part.shape == "ellipsoid":
        a, b, c = s
        return mass / 5.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
    raise ValueError(f"unknown part shape {part.shape!r}")


def composite_inertial(model: ObjectModel) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass (body frame) and 3x3 inertia about it of ``model``'s parts.

    Each part gets ``model.mass * volume / total volume``, like ``sim.objects.add_object``.
    """
    volumes = np.array([part.volume() for part in model.parts])
    masses = model.mass * volumes / volumes.sum()
    positions = np.array([part.pos for part in model.parts], dtype=float)
    com = (masses[:, None] * positions).sum(axis=0) / model.mass
    inertia = np.zeros((3, 3))
    for part, mass, position in zip(model.parts, masses, positions):
        rotation = _rotation(part)
        inertia += rotation @ np.diag(_principal_inertia(part, mass)) @ rotation.T
        offset = position - com
        inertia += mass * (offset @ offset * np.eye(3) - np.outer(offset, offset))
    return com, inertia


# --------------------------------------------------------------------------- SDF


def _geometry(part: Part) -> str:
    s = part.size
    if part.shape == "box":
        return f"<box><size>{2 * s[0]:.6g} {2 * s[1]:.6g} {2 * s[2]:.6g}</size></box>"
    if part.shape == "cylinder":
        return f"<cylinder><radius>{s[0]:.6g}</radius><length>{2 * s[1]:.6g}</length></cylinder>"
    if part.shape == "capsule":  # SDF length is the cylindrical part, like MuJoCo's 2 * half-length
        return f"<capsule><radius>{s[0]:.6g}</radius><length>{2 * s[1]:.6g}</length></capsule>"
    if part.shape == "sphere":
        return f"<sphere><radius>{s[0]:.6g}</radius></sphere>"
    if part.shape == "ellipsoid":
        return f"<ellipsoid><radii>{s[0]:.6g} {s[1]:.6g} {s[2]:.6g}</radii></ellipsoid>"
    raise ValueError(f"unknown part shape {part.shape!r}")


def _part_pose(part: Part) -> str:
    # SDF rpy is fixed-axis roll-pitch-yaw, R = Rz(yaw) Ry(pitch) Rx(roll): Part's yaw-then-pitch.
    x, y, z = part.pos
    return f"{x:.6g} {y:.6g} {z:.6g} 0 {part.pitch:.6g} {part.yaw:.6g}"


def object_sdf(model: ObjectModel, entity_name: Optional[str] = None) -> str:
    """SDF document of one free-standing object (one link, one collision + visual per part).

    Parameters
    ----------
    model : ObjectModel
        From ``sim.objects.object_model(kind)``.
    entity_name : str, optional
        Model name in Gazebo; default ``model.name``.
    """
    name = escape(entity_name or model.name)
    com, inertia = composite_inertial(model)
    mu = OBJECT_FRICTION[0]
    elements = []
    for index, part in enumerate(model.parts):
        r, g, b, a = part.rgba
        colour = f"{r:.3g} {g:.3g} {b:.3g} {a:.3g}"
        pose, geometry = _part_pose(part), _geometry(part)
        elements.append(
            f'<collision name="collision{index}"><pose>{pose}</pose><geometry>{geometry}</geometry>'
            f"<surface><friction><ode><mu>{mu:g}</mu><mu2>{mu:g}</mu2></ode></friction></surface>"
            "</collision>")
        elements.append(
            f'<visual name="visual{index}"><pose>{pose}</pose><geometry>{geometry}</geometry>'
            f"<material><ambient>{colour}</ambient><diffuse>{colour}</diffuse></material></visual>")
    inertial = (
        f"<inertial><pose>{com[0]:.6g} {com[1]:.6g} {com[2]:.6g} 0 0 0</pose>"
        f"<mass>{model.mass:.6g}</mass><inertia>"
        f"<ixx>{inertia[0, 0]:.6g}</ixx><ixy>{inertia[0, 1]:.6g}</ixy><ixz>{inertia[0, 2]:.6g}</ixz>"
        f"<iyy>{inertia[1, 1]:.6g}</iyy><iyz>{inertia[1, 2]:.6g}</iyz><izz>{inertia[2, 2]:.6g}</izz>"
        "</inertia></inertial>")
    return (f'<?xml version="1.0"?><sdf version="{SDF_VERSION}"><model name="{name}">'
            f'<link name="link">{inertial}{"".join(elements)}</link></model></sdf>')


# --------------------------------------------------------------------------- scene


def scene_objects(task: Optional[str] = None, seed: Optional[int] = None, *,
                  table_top_z: Optional[float] = None) -> list[PlacedObject]:
    """The task's objects with poses sampled by ``core.tasks.sample_scene``.

    Parameters
    ----------
    task : str, optional
        Task name in tasks.yaml; default its ``default_task``.
    seed : int, optional
        Sampling seed; default the task's seed (42). The generator is
        ``numpy.random.default_rng(seed)`` and the scene is its first draw.
    table_top_z : float, optional
        Height of the table top (m); default the URDF's (``robot.table_top()``).

    Raises
    ------
    UnknownTaskError
        A task name that is not in tasks.yaml (lists the valid ones).
    """
    spec = tasks.get_task(task or tasks.default_task_name())
    rng = np.random.default_rng(spec.seed if seed is None else int(seed))
    poses = tasks.sample_scene(spec, rng)
    table_z = robot.table_top().z if table_top_z is None else float(table_top_z)
    placed = []
    for obj in spec.objects:
        x, y, yaw = poses[obj.name]
        z = table_z + DROP_CLEARANCE_M
        if obj.on is not None:  # e.g. the lid: on its pan's rim
            z += object_model(spec.object(obj.on).kind).height
        model = object_model(obj.kind)
        placed.append(PlacedObject(obj.name, obj.kind, object_sdf(model, obj.name), (x, y, z), yaw))
    return placed
