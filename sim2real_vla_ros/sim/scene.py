"""Builds the MuJoCo model of the CobotMagic scene from the robot's own xacro (ROS-free).

The robot is the URDF that :func:`sim2real_vla_ros.core.robot.urdf_xml` produces (the same
xacro ros2_control, Gazebo and rviz use), loaded with ``mujoco.MjSpec.from_string``. MuJoCo's
URDF importer turns the joint8 ``<mimic>`` into a joint equality (joint8 = -joint7) and,
with ``fusestatic`` off, keeps every fixed link (camera optical frames, TCPs, the table) as a
body. This module then adds what a URDF cannot say: the floor and lights, position
actuators for joints 1-7 of each arm, the three cameras at the URDF optical frames, and the
task's objects (:mod:`sim2real_vla_ros.sim.objects`). No MJCF copy of the robot exists.
Every collision is on (arm-arm, self, table, objects) except the link pairs the SRDF's computed
matrix marks as touching by construction (:mod:`sim2real_vla_ros.core.control.collision`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import mujoco

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control import collision
from sim2real_vla_ros.sim import objects as sim_objects

DEFAULT_TIMESTEP_S = 0.002  # 500 Hz, the rate ros2_control runs the vendor's Piper controllers at
TABLE_BODY = "table_link"

# Contact bits (see objects.py): robot geoms collide with objects (bit 1), the environment
# (table, floor) and each other: arm-arm and self collision are on. Link pairs that touch by
# construction (the SRDF's Adjacent / Default / Always entries, computed by sampling in
# core/control/collision.py) are excluded; MuJoCo already skips parent-child bodies.
ROBOT_CONTYPE = 2
ROBOT_CONAFFINITY = 1 | 2
ENVIRONMENT_CONTYPE = 1
ENVIRONMENT_CONAFFINITY = 1 | 2
# URDF collision geoms go to group 3, hidden by MuJoCo's default render options; the URDF
# visual geoms (group 1, same primitives, with the URDF materials) are what cameras see.
COLLISION_GEOM_GROUP = 3

# Position servo gains per joint index 1..7 (N m/rad for joints 1-6, N/m for the finger) and
# reflected rotor inertia (armature). Gravity is compensated (body gravcomp), so the steady
# state error comes from contacts only; kv is set near critical damping of kp on the
# armature plus the link inertia it drives.
ARM_KP = (400.0, 400.0, 300.0, 80.0, 80.0, 40.0, 1000.0)
ARM_KV = (30.0, 30.0, 20.0, 4.0, 4.0, 2.0, 20.0)
ARM_ARMATURE = (0.1, 0.1, 0.08, 0.03, 0.03, 0.02, 0.05)

FINGER_FRICTION = (1.5, 0.02, 0.001)
FINGER_CONDIM = 4

# Small gap so objects are placed just above the table top and settle without interpenetration.
PLACEMENT_CLEARANCE_M = 0.001


@dataclass(frozen=True)
class SceneLayout:
    """Names and numbers of a built scene that the simulator needs."""

    table_top_z: float
    object_kinds: Dict[str, str]  # object name -> kind (object model)
    camera_names: Tuple[str, ...]
    actuator_names: Dict[str, Tuple[str, ...]]  # side -> 7 actuator names (joints 1..7)


def mujoco_urdf_text(**xacro_args) -> str:
    """The robot URDF with a ``<mujoco>`` compiler block MuJoCo's importer reads.

    ``discardvisual="false"`` keeps the URDF visual geoms (with colours) for rendering and
    ``fusestatic="false"`` keeps fixed links (optical frames, table) as named bodies.
    """
    text = robot.urdf_xml(ros2_control_plugin="none", **xacro_args)
    start = text.find("<robot")
    end = text.find(">", start)
    if start < 0 or end < 0:
        raise ValueError("robot.urdf_xml() returned text without a <robot> element")
    block = '<mujoco><compiler discardvisual="false" fusestatic="false" balanceinertia="true"/></mujoco>'
    return text[: end + 1] + block + text[end + 1:]


def _robot_bodies(spec: mujoco.MjSpec) -> list:
    return [b for b in spec.bodies if b.name not in ("world", TABLE_BODY)]


def _configure_geoms(spec: mujoco.MjSpec) -> None:
    """Contact classes, hidden collision geoms and finger friction for the imported robot."""
    for body in spec.bodies:
        if body.name == "world":
            continue
        is_table = body.name == TABLE_BODY
        is_finger = body.name.endswith(("_link7", "_link8"))
        for geom in body.geoms:
            if geom.contype == 0 and geom.conaffinity == 0:
                continue  # a visual geom: rendered, never collides
            geom.group = COLLISION_GEOM_GROUP
            if is_table:
                geom.contype, geom.conaffinity = ENVIRONMENT_CONTYPE, ENVIRONMENT_CONAFFINITY
            else:
                geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
            if is_finger:
                geom.friction = FINGER_FRICTION
                geom.condim = FINGER_CONDIM


def _exclude_touching_pairs(spec: mujoco.MjSpec) -> int:
    """Exclude the link pairs the SRDF disables as touching by construction (see core.collision)."""
    names = {body.name for body in spec.bodies}
    excluded = 0
    for a, b in sorted(collision.skipped_pairs_from_srdf()):
        if a in names and b in names:
            spec.add_exclude(bodyname1=a, bodyname2=b)
            excluded += 1
    return excluded


def _add_actuators(spec: mujoco.MjSpec, limits: Dict[str, robot.JointLimits]) -> Dict[str, Tuple[str, ...]]:
    """Position servos on joints 1-7 of each arm, with velocity feed-forward.

    The actuator is ``force = kp * ctrl - kp * q - kv * qdot``; the simulator sets
    ``ctrl = q_des + (kv / kp) * qdot_des`` so the force is ``kp * e + kv * de/dt`` and a moving
    setpoint is tracked without the lag of a pure position servo. ``ctrl`` therefore may leave
    the joint range slightly, so it is not range-limited here; the desired positions are
    clipped to the limits before (TrajectoryFollower / JointLimits.clip). Effort is limited
    to the URDF ``effort`` of each joint.
    """
    joints = {j.name: j for j in spec.joints}
    names = {}
    for side in robot.ARMS:
        side_limits = limits[side]
        actuator_names = []
        for index, joint_name in enumerate(side_limits.names):
            joints[joint_name].armature = ARM_ARMATURE[index]
            name = f"{joint_name}_position"
            actuator = spec.add_actuator(name=name, target=joint_name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            actuator.set_to_position(kp=ARM_KP[index], kv=ARM_KV[index])
            actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
            effort = float(side_limits.effort[index])
            actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            actuator.forcerange = [-effort, effort]
            actuator_names.append(name)
        names[side] = tuple(actuator_names)
    # The passive finger (joint8) follows joint7 through the imported mimic equality; give it
    # the driven finger's armature so the constraint couples two similar inertias, and make
    # the equality stiff (time constant 2 timesteps, MuJoCo's minimum) so the fingers stay
    # symmetric under grip force (the default 0.02 s let them drift ~5 mm apart).
    for side in robot.ARMS:
        joints[robot.mimic_joint_name(side)].armature = ARM_ARMATURE[-1]
    for equality in spec.equalities:
        equality.solref = [2.0 * spec.option.timestep, 1.0]
    return names


def _add_cameras(spec: mujoco.MjSpec, width: int, height: int) -> Tuple[str, ...]:
    """One MuJoCo camera per URDF camera, at its ``<name>_optical_frame`` body.

    ROS optical frames look along +z with y down; MuJoCo cameras look along -z with y up:
    the two differ by a half turn about x, quaternion (0, 1, 0, 0). The vertical field of
    view comes from the URDF camera model at this image size (robot.camera_specs), so the
    rendered image and the published camera_info share one pinhole model.
    """
    bodies = {b.name: b for b in spec.bodies}
    specs = robot.camera_specs(width, height)
    for name, camera_spec in specs.items():
        body = bodies.get(camera_spec.optical_frame)
        if body is None:
            raise KeyError(f"URDF has no body {camera_spec.optical_frame!r} for camera {name!r}")
        body.add_camera(name=name, pos=[0, 0, 0], quat=[0, 1, 0, 0], fovy=math.degrees(camera_spec.vfov_rad))
    return tuple(specs)


def _add_environment(spec: mujoco.MjSpec, shadows: bool) -> None:
    """Floor, lights and global visual settings."""
    spec.add_texture(
        name="floor_checker", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        width=256, height=256, rgb1=[0.42, 0.44, 0.46], rgb2=[0.36, 0.38, 0.40],
    )
    floor_material = spec.add_material(name="floor", texrepeat=[8, 8], reflectance=0.0)
    floor_material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "floor_checker"
    spec.worldbody.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[4, 4, 0.05], material="floor",
        contype=ENVIRONMENT_CONTYPE, conaffinity=ENVIRONMENT_CONAFFINITY,
    )
    # Room walls: a lab-like backdrop instead of black, cheap for the renderer, never touched.
    wall_rgba = [0.82, 0.80, 0.76, 1.0]
    for name, pos, size in (("wall_front", [2.2, 0, 1.5], [0.02, 3.0, 1.5]),
                            ("wall_back", [-1.6, 0, 1.5], [0.02, 3.0, 1.5]),
                            ("wall_left", [0.3, 3.0, 1.5], [1.9, 0.02, 1.5]),
                            ("wall_right", [0.3, -3.0, 1.5], [1.9, 0.02, 1.5])):
        spec.worldbody.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=pos, size=size, rgba=wall_rgba,
                                contype=0, conaffinity=0)
    spec.worldbody.add_light(
        name="ceiling", pos=[0.6, 0.0, 3.0], dir=[0, 0, -1], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
        diffuse=[0.6, 0.6, 0.6], specular=[0.1, 0.1, 0.1], castshadow=shadows,
    )
    spec.worldbody.add_light(
        name="front_fill", pos=[2.0, 0.0, 2.0], dir=[-0.7, 0, -0.7], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
        diffuse=[0.25, 0.25, 0.25], specular=[0, 0, 0], castshadow=False,
    )
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.2, 0.2, 0.2]


def build_spec(
    object_kinds: Dict[str, str],
    camera_width: int = 320,
    camera_height: int = 240,
    timestep: float = DEFAULT_TIMESTEP_S,
    shadows: bool = False,
    multisamples: int = 0,
) -> Tuple[mujoco.MjSpec, SceneLayout]:
    """The scene as an uncompiled ``MjSpec`` plus its :class:`SceneLayout`.

    Parameters
    ----------
    object_kinds : dict of str to str
        Objects to add, name -> kind (an :data:`objects.OBJECT_MODELS` key), e.g. from a
        task's ``ObjectSpec`` list. A body is named after the object.
    camera_width, camera_height : int
        Image size; sets the cameras' vertical field of view and the offscreen buffer.
    timestep : float
        Physics step (s); at most 0.002 (500 Hz).
    shadows : bool
        Let the ceiling light cast shadows (several times slower rendering on a CPU).
    multisamples : int
        Anti-aliasing samples of the offscreen buffer; 0 (off) renders about 3x faster on
        Mesa's CPU rasteriser (measured: 6 ms vs 15-20 ms per 320x240 image with 1-4).

    Raises
    ------
    ValueError
        A bad timestep or image size, or an unknown object kind.
    """
    if not (0.0 < timestep <= DEFAULT_TIMESTEP_S):
        raise ValueError(f"timestep must be in (0, {DEFAULT_TIMESTEP_S}] s (>= 500 Hz physics), got {timestep}")
    for label, value in (("camera_width", camera_width), ("camera_height", camera_height)):
        if int(value) != value or value <= 0:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    unknown = sorted(k for k in object_kinds.values() if k not in sim_objects.OBJECT_MODELS)
    if unknown:
        raise ValueError(f"unknown object kind(s) {unknown}; known: {sorted(sim_objects.OBJECT_MODELS)}")

    urdf_text = mujoco_urdf_text(camera_width=camera_width, camera_height=camera_height)
    spec = mujoco.MjSpec.from_string(urdf_text)
    spec.modelname = "cobot_magic_scene"
    spec.option.timestep = timestep
    # implicitfast integrates the servo damping implicitly (stable stiff servos at 2 ms);
    # elliptic cones with a high impratio are MuJoCo's recommendation for grasping.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.global_.offwidth = max(640, int(camera_width))
    spec.visual.global_.offheight = max(480, int(camera_height))
    if int(multisamples) != multisamples or not 0 <= multisamples <= 16:
        raise ValueError(f"multisamples must be an integer in [0, 16], got {multisamples!r}")
    spec.visual.quality.offsamples = int(multisamples)

    _configure_geoms(spec)
    _exclude_touching_pairs(spec)
    for body in _robot_bodies(spec):
        body.gravcomp = 1.0  # the arms' own weight is compensated, as the Piper firmware does
    limits = {side: robot.arm_limits(side) for side in robot.ARMS}
    actuator_names = _add_actuators(spec, limits)
    camera_names = _add_cameras(spec, int(camera_width), int(camera_height))
    _add_environment(spec, shadows)
    for name, kind in object_kinds.items():
        sim_objects.add_object(spec, sim_objects.object_model(kind), name=name)
    layout = SceneLayout(
        table_top_z=robot.table_top(urdf_text).z,
        object_kinds=dict(object_kinds),
        camera_names=camera_names,
        actuator_names=actuator_names,
    )
    return spec, layout


def build_model(object_kinds: Dict[str, str], **kwargs) -> Tuple[mujoco.MjModel, SceneLayout]:
    """Compile :func:`build_spec` into an ``MjModel`` (same arguments)."""
    spec, layout = build_spec(object_kinds, **kwargs)
    model = spec.compile()
    # Near/far clip planes are fractions of the model extent; 1 cm / 10 m keep the wrist
    # cameras' close-up view of the fingers unclipped (the URDF camera clip is 0.02 m).
    model.vis.map.znear = 0.01 / model.stat.extent
    model.vis.map.zfar = 10.0 / model.stat.extent
    return model, layout


def object_kinds_of(task_objects: Sequence) -> Dict[str, str]:
    """name -> kind for a task's ``ObjectSpec`` list (core.tasks)."""
    return {obj.name: obj.kind for obj in task_objects}
