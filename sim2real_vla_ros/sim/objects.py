"""Table-top objects of the six tasks, as MuJoCo primitive shapes (ROS-free).

Every object is one free body whose origin is the centre of its footprint on the table, so
placing it upright at ``(x, y, yaw)`` is ``pos = (x, y, table_top)``. The body's +z axis is
the object's "up" (a bottle's mouth is on +z). Long objects (fork, spoon, pen, carrot) lie
along their body +x axis, so the yaw sampled from tasks.yaml turns their handle.

Sizes and masses are household values chosen so every item the paper grasps fits the Piper
gripper (0.07 m maximum opening): bottle 0.06 m across, cup 0.062 m, milk box 0.055 m, lid
knob 0.024 m. Open containers (cup, holder, basket, pan) are built from a bottom plate and
wall boxes, so items can really fall inside; :class:`Container` records the inner volume the
success checks use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import mujoco
import numpy as np

Vec3 = Tuple[float, float, float]
RGBA = Tuple[float, float, float, float]

# Contact bits (MuJoCo collides a pair when contype_a & conaffinity_b or contype_b & conaffinity_a).
# Objects collide with everything: the table/floor, each other and the robot.
OBJECT_CONTYPE = 1
OBJECT_CONAFFINITY = 1 | 2

# Graspable objects need torsional friction (condim 4) or they spin out of a two-finger grip.
OBJECT_FRICTION = (1.0, 0.01, 0.0005)
OBJECT_CONDIM = 4


@dataclass(frozen=True)
class Part:
    """One primitive geom of an object, in the object's body frame.

    ``size`` follows MuJoCo's convention: box half-extents; cylinder/capsule (radius,
    half-length); sphere (radius,); ellipsoid semi-axes. ``yaw`` and ``pitch`` (rad) turn
    the geom about body z then the geom's y (pitch = pi/2 lays a cylinder along x).
    """

    shape: str
    size: Tuple[float, ...]
    pos: Vec3 = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    rgba: RGBA = (0.8, 0.8, 0.8, 1.0)

    def volume(self) -> float:
        """Geometric volume in m^3 (used to share the object's mass among its parts)."""
        s = self.size
        if self.shape == "box":
            return 8.0 * s[0] * s[1] * s[2]
        if self.shape == "cylinder":
            return math.pi * s[0] ** 2 * 2.0 * s[1]
        if self.shape == "capsule":
            return math.pi * s[0] ** 2 * 2.0 * s[1] + 4.0 / 3.0 * math.pi * s[0] ** 3
        if self.shape == "sphere":
            return 4.0 / 3.0 * math.pi * s[0] ** 3
        if self.shape == "ellipsoid":
            return 4.0 / 3.0 * math.pi * s[0] * s[1] * s[2]
        raise ValueError(f"unknown part shape {self.shape!r}")

    def quat(self) -> np.ndarray:
        """Orientation (w, x, y, z) of the geom in the body frame: yaw about z, then pitch about y."""
        qz = np.array([math.cos(self.yaw / 2), 0.0, 0.0, math.sin(self.yaw / 2)])
        qy = np.array([math.cos(self.pitch / 2), 0.0, math.sin(self.pitch / 2), 0.0])
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, qz, qy)
        return out


@dataclass(frozen=True)
class Container:
    """Inner volume of an open container, in its body frame (for privileged 'inside' checks).

    ``shape`` is 'box' (``half_extents`` x, y) or 'cylinder' (``radius``); the volume spans
    ``floor_z`` .. ``rim_z`` above the body origin.
    """

    shape: str
    floor_z: float
    rim_z: float
    half_extents: Tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0

    def contains(self, point_local: np.ndarray, margin: float = 0.0) -> bool:
        """True when ``point_local`` (body frame) is within the inner volume, shrunk by ``margin``."""
        x, y, z = (float(v) for v in point_local)
        if not (self.floor_z - margin <= z <= self.rim_z + margin):
            return False
        if self.shape == "box":
            return abs(x) <= self.half_extents[0] - margin and abs(y) <= self.half_extents[1] - margin
        return math.hypot(x, y) <= self.radius - margin


@dataclass(frozen=True)
class ObjectModel:
    """A task object: its parts, total mass and the named points success checks use.

    ``sites`` are body-frame points, e.g. the bottle's ``mouth``; ``height`` is the object's
    upright height (the lid rests at the pan's ``rim`` site, for instance).
    """

    name: str
    parts: Tuple[Part, ...]
    mass: float
    height: float
    sites: Dict[str, Vec3] = field(default_factory=dict)
    container: Optional[Container] = None


def _open_box(inner_x: float, inner_y: float, height: float, wall: float, rgba: RGBA) -> Tuple[Part, ...]:
    """Bottom plate plus four walls; inner size inner_x by inner_y (full extents, m)."""
    hx, hy, hw = inner_x / 2, inner_y / 2, wall / 2
    bottom = Part("box", (hx + wall, hy + wall, hw), (0, 0, hw), rgba=rgba)
    wall_h = (height - wall) / 2
    zc = wall + wall_h
    return (
        bottom,
        Part("box", (hw, hy + wall, wall_h), (hx + hw, 0, zc), rgba=rgba),
        Part("box", (hw, hy + wall, wall_h), (-hx - hw, 0, zc), rgba=rgba),
        Part("box", (hx, hw, wall_h), (0, hy + hw, zc), rgba=rgba),
        Part("box", (hx, hw, wall_h), (0, -hy - hw, zc), rgba=rgba),
    )


def _open_cylinder(outer_r: float, height: float, wall: float, segments: int, rgba: RGBA) -> Tuple[Part, ...]:
    """Bottom disc plus a ring of ``segments`` wall boxes approximating a cylindrical wall."""
    bottom = Part("cylinder", (outer_r, wall / 2), (0, 0, wall / 2), rgba=rgba)
    r_mid = outer_r - wall / 2
    # Half tangential length so neighbouring segments meet at the wall's outer face.
    half_len = outer_r * math.tan(math.pi / segments)
    wall_h = (height - wall) / 2
    walls = tuple(
        Part(
            "box",
            (wall / 2, half_len, wall_h),
            (r_mid * math.cos(a), r_mid * math.sin(a), wall + wall_h),
            yaw=a,
            rgba=rgba,
        )
        for a in (2 * math.pi * k / segments for k in range(segments))
    )
    return (bottom,) + walls


def _bottle() -> ObjectModel:
    rgba = (0.25, 0.55, 0.9, 1.0)
    body_h, neck_h = 0.17, 0.03
    return ObjectModel(
        "bottle",
        (
            Part("cylinder", (0.03, body_h / 2), (0, 0, body_h / 2), rgba=rgba),
            Part("cylinder", (0.013, neck_h / 2), (0, 0, body_h + neck_h / 2), rgba=(0.9, 0.9, 0.95, 1.0)),
        ),
        mass=0.3,
        height=body_h + neck_h,
        sites={"mouth": (0.0, 0.0, body_h + neck_h)},
    )


def _cup() -> ObjectModel:
    outer_r, height, wall = 0.031, 0.09, 0.004
    return ObjectModel(
        "cup",
        _open_cylinder(outer_r, height, wall, 12, (0.95, 0.95, 0.92, 1.0)),
        mass=0.12,
        height=height,
        sites={"rim": (0.0, 0.0, height)},
        container=Container("cylinder", floor_z=wall, rim_z=height, radius=outer_r - wall),
    )


def _plate() -> ObjectModel:
    return ObjectModel(
        "plate",
        (
            Part("cylinder", (0.1, 0.006), (0, 0, 0.006), rgba=(0.97, 0.97, 0.97, 1.0)),
            Part("cylinder", (0.06, 0.002), (0, 0, 0.014), rgba=(0.93, 0.93, 0.9, 1.0)),
        ),
        mass=0.35,
        height=0.016,
    )


def _fork() -> ObjectModel:
    steel = (0.75, 0.75, 0.78, 1.0)
    # 18 cm long along +x, centred on the origin: handle on -x, tines toward +x.
    tines = tuple(Part("box", (0.013, 0.0015, 0.002), (0.077, y, 0.003), rgba=steel)
                  for y in (-0.009, -0.003, 0.003, 0.009))
    return ObjectModel(
        "fork",
        (
            Part("box", (0.065, 0.008, 0.003), (-0.025, 0, 0.003), rgba=steel),
            Part("box", (0.012, 0.012, 0.002), (0.052, 0, 0.003), rgba=steel),
        )
        + tines,
        mass=0.05,
        height=0.006,
    )


def _spoon() -> ObjectModel:
    steel = (0.78, 0.78, 0.8, 1.0)
    # 18 cm long along +x, centred on the origin: handle on -x, bowl toward +x.
    return ObjectModel(
        "spoon",
        (
            Part("box", (0.06, 0.008, 0.003), (-0.03, 0, 0.003), rgba=steel),
            Part("ellipsoid", (0.03, 0.02, 0.006), (0.06, 0, 0.006), rgba=steel),
        ),
        mass=0.045,
        height=0.012,
    )


def _pen() -> ObjectModel:
    return ObjectModel(
        "pen",
        # A square barrel (real pens are hexagonal for the same reason): a round one rolls away.
        (
            Part("box", (0.07, 0.0055, 0.0055), (0, 0, 0.0055), rgba=(0.1, 0.2, 0.7, 1.0)),
            Part("box", (0.015, 0.0056, 0.0056), (0.057, 0, 0.0055), rgba=(0.05, 0.05, 0.05, 1.0)),
        ),
        mass=0.02,
        height=0.011,
    )


def _holder() -> ObjectModel:
    inner, height, wall = 0.07, 0.1, 0.005
    return ObjectModel(
        "holder",
        _open_box(inner, inner, height, wall, (0.3, 0.3, 0.33, 1.0)),
        mass=0.15,
        height=height,
        sites={"rim": (0.0, 0.0, height)},
        container=Container("box", floor_z=wall, rim_z=height, half_extents=(inner / 2, inner / 2)),
    )


def _milk_box() -> ObjectModel:
    return ObjectModel(
        "milk_box",
        (
            Part("box", (0.0275, 0.02, 0.06), (0, 0, 0.06), rgba=(0.95, 0.95, 0.95, 1.0)),
            Part("box", (0.028, 0.0205, 0.02), (0, 0, 0.05), rgba=(0.2, 0.45, 0.85, 1.0)),
        ),
        mass=0.25,
        height=0.12,
    )


BASKET_BAR_HALF = (0.015, 0.015)  # carry bar cross-section half-extents (y, z)
BASKET_BAR_Y_M = -0.035          # bar axis off the middle, toward the basket's -y side
BASKET_BAR_ABOVE_RIM_M = 0.025   # bar centre above the rim


def _basket() -> ObjectModel:
    """Open box with a carry bar along its long axis (x), on two posts on the short walls,
    as carry baskets have.

    The 6 mm walls alone give a Piper finger pair too little to hold: the servo presses with
    1000 N/m times half the opening it is kept from closing (3 N on a wall), and a basket held
    at one side pivots about the grip and swings its load out (a 40 mm block handle on one
    rim still tilted it 14 deg with the milk box inside). The bar is 30 mm square (15 N of grip; a lower one lets the basket tilt in the pads)
    and runs 3.5 cm off the middle toward -y, near the centre of mass of the basket and an item
    standing in the wider +y part, so one arm (from -y) lifts the basket nearly level by it,
    with the gripper clear of the item (site ``handle`` at the bar's middle). It stays inside
    the basket's outline, the footprint ``tasks.KIND_FOOTPRINT`` gives.
    """
    inner_x, inner_y, height, wall = 0.22, 0.16, 0.08, 0.006
    rgba = (0.6, 0.42, 0.22, 1.0)
    hy, hz = BASKET_BAR_HALF
    bar_z = height + BASKET_BAR_ABOVE_RIM_M
    post_h = (bar_z - hz - height) / 2 + 0.002     # rim to bar, overlapping both a little
    bar = Part("box", (inner_x / 2 + wall, hy, hz), (0.0, BASKET_BAR_Y_M, bar_z), rgba=rgba)
    posts = tuple(Part("box", (wall / 2, hy, post_h),
                       (sign * (inner_x / 2 + wall / 2), BASKET_BAR_Y_M, height + post_h - 0.002), rgba=rgba)
                  for sign in (1, -1))
    return ObjectModel(
        "basket",
        _open_box(inner_x, inner_y, height, wall, rgba) + (bar,) + posts,
        mass=0.3,
        height=height,
        sites={"rim": (0.0, 0.0, height), "handle": (0.0, BASKET_BAR_Y_M, bar_z)},
        container=Container("box", floor_z=wall, rim_z=height, half_extents=(inner_x / 2, inner_y / 2)),
    )


def _pan() -> ObjectModel:
    outer_r, height, wall = 0.1, 0.07, 0.006
    dark = (0.15, 0.15, 0.17, 1.0)
    handle = Part("box", (0.06, 0.012, 0.008), (outer_r + 0.055, 0.0, height - 0.015), rgba=dark)
    return ObjectModel(
        "pan",
        _open_cylinder(outer_r, height, wall, 16, dark) + (handle,),
        mass=0.6,
        height=height,
        sites={"rim": (0.0, 0.0, height)},
        container=Container("cylinder", floor_z=wall, rim_z=height, radius=outer_r - wall),
    )


def _lid() -> ObjectModel:
    return ObjectModel(
        "lid",
        (
            Part("cylinder", (0.106, 0.003), (0, 0, 0.003), rgba=(0.55, 0.57, 0.6, 1.0)),
            Part("cylinder", (0.012, 0.015), (0, 0, 0.021), rgba=(0.1, 0.1, 0.1, 1.0)),
            Part("cylinder", (0.016, 0.004), (0, 0, 0.038), rgba=(0.1, 0.1, 0.1, 1.0)),
        ),
        mass=0.15,
        height=0.042,
    )


def _carrot() -> ObjectModel:
    return ObjectModel(
        "carrot",
        (
            Part("capsule", (0.015, 0.045), (0, 0, 0.015), pitch=math.pi / 2, rgba=(0.95, 0.45, 0.08, 1.0)),
            Part("cylinder", (0.006, 0.012), (-0.07, 0, 0.015), pitch=math.pi / 2, rgba=(0.2, 0.6, 0.15, 1.0)),
        ),
        mass=0.05,
        height=0.03,
    )


OBJECT_MODELS: Dict[str, ObjectModel] = {
    m.name: m
    for m in (
        _bottle(), _cup(), _plate(), _fork(), _spoon(), _pen(), _holder(),
        _milk_box(), _basket(), _pan(), _lid(), _carrot(),
    )
}


def object_model(name: str) -> ObjectModel:
    """The :class:`ObjectModel` called ``name``; KeyError naming the known objects otherwise."""
    try:
        return OBJECT_MODELS[name]
    except KeyError:
        raise KeyError(f"no object model {name!r}; known objects: {sorted(OBJECT_MODELS)}") from None


def add_object(spec: mujoco.MjSpec, model: ObjectModel, name: Optional[str] = None) -> mujoco.MjsBody:
    """Add ``model`` to ``spec`` as a free body named ``name`` (default ``model.name``).

    The free joint is ``<name>_free``, geoms ``<name>_geom<i>``.

    The object's mass is shared among its parts in proportion to their volume, so thin
    walls and solid parts of one object get the same density. Sites are named
    ``<name>_<site>``.
    """
    name = name or model.name
    body = spec.worldbody.add_body(name=name)
    body.add_freejoint(name=f"{name}_free")
    total_volume = sum(p.volume() for p in model.parts)
    shape_types = {
        "box": mujoco.mjtGeom.mjGEOM_BOX,
        "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
        "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
        "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
        "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
    }
    for index, part in enumerate(model.parts):
        size = np.zeros(3)
        size[: len(part.size)] = part.size
        body.add_geom(
            name=f"{name}_geom{index}",
            type=shape_types[part.shape],
            size=size,
            pos=part.pos,
            quat=part.quat(),
            rgba=part.rgba,
            mass=model.mass * part.volume() / total_volume,
            friction=OBJECT_FRICTION,
            condim=OBJECT_CONDIM,
            contype=OBJECT_CONTYPE,
            conaffinity=OBJECT_CONAFFINITY,
        )
    for site_name, pos in model.sites.items():
        body.add_site(name=f"{name}_{site_name}", pos=pos, size=[0.004, 0, 0], group=4)
    return body
