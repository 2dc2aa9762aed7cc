"""CobotMagic robot model: joint naming, limits, gripper units, cameras and kinematics.

The single source of robot facts for the whole stack. Everything numeric (limits, camera
fields of view, frame poses) is read from the processed xacro `urdf/cobot_magic.urdf.xacro`,
never written a second time here. No rclpy: nodes and the simulator import this module.

Conventions
-----------
- Joints are `<side>_joint1..8` for side in ARMS; joint7 is the driven finger (m, one
  finger), joint8 mirrors it (URDF mimic, multiplier -1).
- The per-arm vector used everywhere else has 7 values: joints 1-6 (rad) + joint7 (m).
- The vendor interface carries the gripper as the total opening width: width = 2 * joint7.
"""
from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

# Re-exported: robot.ARMS, robot.CAMERAS and robot.WRIST_CAMERA read naturally where a module uses robot.*.
from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS, WRIST_CAMERA  # noqa: F401

JOINTS_PER_ARM = 8  # 6 revolute + 2 finger joints in the URDF
ARM_DOF = 7  # joints 1-6 + the driven finger joint7
ALL_JOINT_NAMES = tuple(f"{side}_joint{i}" for side in ARMS for i in range(1, JOINTS_PER_ARM + 1))
BASE_LINK = "base_link"

ROS2_CONTROL_PLUGINS = ("mock", "gazebo", "hardware", "none")
XACRO_ARGS = (
    "ros2_control_plugin",
    "hardware_plugin",
    "can_interface_left",
    "can_interface_right",
    "controllers_file",
    "camera_width",
    "camera_height",
    "camera_rate",
    "table_top_z",
)
_POSITIVE_INT_ARGS = ("camera_width", "camera_height")
_POSITIVE_FLOAT_ARGS = ("camera_rate", "table_top_z")


def _check_side(side: str) -> str:
    if side not in ARMS:
        raise ValueError(f"side must be one of {ARMS}, got {side!r}")
    return side


def arm_joint_names(side: str) -> list[str]:
    """Names of the 7 per-arm command joints (joints 1-6 + the driven finger joint7).

    Parameters
    ----------
    side : str
        "left" or "right".

    Returns
    -------
    list[str]
        `[<side>_joint1, ..., <side>_joint7]`.
    """
    _check_side(side)
    return [f"{side}_joint{i}" for i in range(1, ARM_DOF + 1)]


def mimic_joint_name(side: str) -> str:
    """Name of the passive finger joint (joint8) that mirrors joint7."""
    return f"{_check_side(side)}_joint8"


# --------------------------------------------------------------------------- URDF text


def xacro_path() -> str:
    """Installed path of the CobotMagic xacro (through the ament index)."""
    from sim2real_vla_ros.paths import share_path

    return share_path("urdf", "cobot_magic.urdf.xacro")


def _validated_xacro_mappings(xacro_args: Mapping[str, object]) -> dict[str, str]:
    unknown = sorted(set(xacro_args) - set(XACRO_ARGS))
    if unknown:
        raise ValueError(f"unknown xacro argument(s) {unknown}; known: {list(XACRO_ARGS)}")
    plugin = xacro_args.get("ros2_control_plugin", "mock")
    if plugin not in ROS2_CONTROL_PLUGINS:
        raise ValueError(
            f"ros2_control_plugin must be one of {ROS2_CONTROL_PLUGINS}, got {plugin!r}")
    for name in _POSITIVE_INT_ARGS + _POSITIVE_FLOAT_ARGS:
        if name not in xacro_args:
            continue
        value = xacro_args[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"xacro argument {name} must be a number, got {value!r}") from None
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"xacro argument {name} must be positive, got {value!r}")
        if name in _POSITIVE_INT_ARGS and number != int(number):
            raise ValueError(f"xacro argument {name} must be an integer, got {value!r}")
    return {name: str(value) for name, value in xacro_args.items()}


@functools.lru_cache(maxsize=16)
def _process_xacro(mapping_items: tuple[tuple[str, str], ...]) -> str:
    import xacro

    try:
        document = xacro.process_file(xacro_path(), mappings=dict(mapping_items))
    except xacro.XacroException as error:
        raise ValueError(f"cobot_magic.urdf.xacro failed to process: {error}") from error
    return document.toxml()


def urdf_xml(**xacro_args) -> str:
    """The CobotMagic URDF: the installed xacro processed with the given arguments.

    Parameters
    ----------
    **xacro_args
        Any of XACRO_ARGS, e.g. `ros2_control_plugin="gazebo"`, `camera_width=640`.

    Returns
    -------
    str
        URDF XML text (results are cached per argument set).

    Raises
    ------
    ValueError
        An unknown argument name, a ros2_control_plugin outside ROS2_CONTROL_PLUGINS, a
        non-positive camera size/rate, or any error xacro reports.
    """
    mappings = _validated_xacro_mappings(xacro_args)
    return _process_xacro(tuple(sorted(mappings.items())))


# --------------------------------------------------------------------------- joint limits


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Position / velocity / effort limits of an ordered list of joints (URDF units)."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def _as_vector(self, q) -> np.ndarray:
        vector = np.asarray(q, dtype=float)
        if vector.shape != (len(self.names),):
            raise ValueError(
                f"expected {len(self.names)} joint values for {list(self.names)}, "
                f"got shape {vector.shape}")
        if not np.all(np.isfinite(vector)):
            raise ValueError(f"joint values must be finite, got {vector.tolist()}")
        return vector

    def clip(self, q) -> np.ndarray:
        """`q` clipped into [lower, upper] (ValueError for a wrong length or NaN / inf)."""
        return np.clip(self._as_vector(q), self.lower, self.upper)

    def contains(self, q, tolerance: float = 0.0) -> bool:
        """True when every value of `q` lies within [lower - tolerance, upper + tolerance]."""
        vector = self._as_vector(q)
        return not self.violations(vector, tolerance)

    def violations(self, q, tolerance: float = 0.0) -> list[str]:
        """Names of the joints whose value in `q` lies outside the limits."""
        vector = self._as_vector(q)
        outside = (vector < self.lower - tolerance) | (vector > self.upper + tolerance)
        return [name for name, bad in zip(self.names, outside) if bad]


def _joint_elements(urdf_text: str) -> dict[str, ET.Element]:
    root = ET.fromstring(urdf_text)
    return {joint.get("name"): joint for joint in root.findall("joint")}


def joint_limits_from_urdf(urdf_text: str, names: Sequence[str]) -> JointLimits:
    """Limits of the named joints, in the given order, read from URDF text.

    Raises
    ------
    KeyError
        A name that is not a joint of the URDF.
    ValueError
        A joint without a `<limit>` with lower / upper (fixed or continuous joints).
    """
    joints = _joint_elements(urdf_text)
    rows = []
    for name in names:
        if name not in joints:
            raise KeyError(f"joint {name!r} is not in the URDF")
        limit = joints[name].find("limit")
        if limit is None or limit.get("lower") is None or limit.get("upper") is None:
            raise ValueError(f"joint {name!r} has no position limits in the URDF")
        rows.append([float(limit.get(key, "nan")) for key in ("lower", "upper", "velocity", "effort")])
    table = np.array(rows, dtype=float).reshape(len(rows), 4)
    return JointLimits(tuple(names), *(table[:, column].copy() for column in range(4)))


@functools.lru_cache(maxsize=2)
def arm_limits(side: str) -> JointLimits:
    """Limits of `arm_joint_names(side)` from the default URDF (cached)."""
    return joint_limits_from_urdf(urdf_xml(), arm_joint_names(side))


# --------------------------------------------------------------------------- gripper units


def gripper_width_to_finger(width_m):
    """Vendor total gripper opening (m) -> URDF joint7 (one finger, m): width / 2."""
    width = np.asarray(width_m, dtype=float)
    if not np.all(np.isfinite(width)):
        raise ValueError(f"gripper width must be finite, got {width_m!r}")
    return width / 2.0


def finger_to_gripper_width(joint7):
    """URDF joint7 (one finger, m) -> vendor total gripper opening (m): 2 * joint7."""
    finger = np.asarray(joint7, dtype=float)
    if not np.all(np.isfinite(finger)):
        raise ValueError(f"finger position must be finite, got {joint7!r}")
    return finger * 2.0


# --------------------------------------------------------------------------- paper init vectors


def interleaved16_to_arms(vec16) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Convert a paper Table 6 initial joint vector into the two per-arm 7-vectors.

    The 16 values are interleaved per joint, [L1, R1, L2, R2, ..., L6, R6], followed by the
    four finger joints [L7, L8, R7, R8] (EmbodiChain's parse order, see the fact sheet).
    L8 / R8 belong to the simulator's gripper model and are not used: in our URDF joint8 is
    the mimic of joint7. The fingers come from a wider gripper (e.g. 0.05 m) and are clamped
    into the URDF joint7 range; joints 1-6 outside their limits mean a misread row and raise.

    Parameters
    ----------
    vec16 : sequence of 16 float

    Returns
    -------
    left7, right7 : np.ndarray
        Joints 1-6 (rad) + joint7 (m) of each arm.
    clamped : list[str]
        Names of the finger joints whose value was clamped.

    Raises
    ------
    ValueError
        Wrong length, non-finite values, or a joint 1-6 outside its URDF limits.
    """
    vector = np.asarray(vec16, dtype=float)
    if vector.shape != (16,):
        raise ValueError(f"expected 16 interleaved joint values, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"interleaved joint vector must be finite, got {vector.tolist()}")
    fingers = {"left": vector[12], "right": vector[14]}
    arms, clamped = [], []
    for column, side in enumerate(ARMS):
        limits = arm_limits(side)
        arm = np.append(vector[column:12:2], fingers[side])
        outside = [name for name in limits.violations(arm) if not name.endswith("joint7")]
        if outside:
            raise ValueError(
                f"interleaved init vector puts {outside} outside the URDF limits: {arm.tolist()}")
        if not limits.contains(arm):
            clamped.append(limits.names[-1])
        arms.append(limits.clip(arm))
    return arms[0], arms[1], clamped


# --------------------------------------------------------------------------- kinematics


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    skew = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * skew + (1 - c) * skew @ skew


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()])


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str
    parent: str
    origin: np.ndarray  # 4x4
    axis: np.ndarray
    mimic: tuple[str, float, float] | None  # (joint, multiplier, offset)


@functools.lru_cache(maxsize=8)
def _kinematic_tree(urdf_text: str) -> dict[str, _Joint]:
    """child link -> the joint that moves it."""
    tree = {}
    for joint in ET.fromstring(urdf_text).findall("joint"):
        origin = joint.find("origin")
        transform = np.eye(4)
        if origin is not None:
            transform[:3, :3] = _rpy_matrix(*_floats(origin.get("rpy"), "0 0 0"))
            transform[:3, 3] = _floats(origin.get("xyz"), "0 0 0")
        axis_element = joint.find("axis")
        axis = _floats(axis_element.get("xyz") if axis_element is not None else None, "1 0 0")
        mimic = joint.find("mimic")
        mimic_spec = None
        if mimic is not None:
            mimic_spec = (mimic.get("joint"), float(mimic.get("multiplier", "1")),
                          float(mimic.get("offset", "0")))
        tree[joint.find("child").get("link")] = _Joint(
            joint.get("name"), joint.get("type"), joint.find("parent").get("link"), transform,
            axis / np.linalg.norm(axis), mimic_spec)
    return tree


def _joint_value(joint: _Joint, joint_positions: Mapping[str, float]) -> float | None:
    """Position of a movable joint, following mimic joints; None when it is not given."""
    if joint.name in joint_positions:
        return float(joint_positions[joint.name])
    if joint.mimic is not None and joint.mimic[0] in joint_positions:
        source, multiplier, offset = joint.mimic
        return multiplier * float(joint_positions[source]) + offset
    return None


def _chain(tree: Mapping[str, _Joint], link: str, base: str) -> list[_Joint]:
    """Joints from `base` down to `link`, in order."""
    if link != base and link not in tree:
        raise KeyError(f"link {link!r} is not a child link of the URDF")
    chain, current = [], link
    while current != base:
        if current not in tree:
            raise ValueError(f"{base!r} is not an ancestor of {link!r}")
        chain.append(tree[current])
        current = tree[current].parent
    return chain[::-1]


def forward_kinematics(urdf_text: str, joint_positions: Mapping[str, float], link: str,
                       base: str = BASE_LINK) -> np.ndarray:
    """Pose of `link` in `base` (4x4 homogeneous) for the given joint positions.

    Walks the URDF chain from `base` down to `link`. Every movable joint on that chain needs a
    value in `joint_positions` (mimic joints follow their source joint); others are ignored.

    Raises
    ------
    KeyError
        `link` unknown, or movable joints on the chain without a position (all are named).
    ValueError
        `base` is not an ancestor of `link`.
    """
    chain = _chain(_kinematic_tree(urdf_text), link, base)
    values = {joint.name: _joint_value(joint, joint_positions)
              for joint in chain if joint.kind != "fixed"}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise KeyError(f"forward kinematics to {link!r} needs positions for joints {missing}")
    pose = np.eye(4)
    for joint in chain:
        motion = np.eye(4)
        if joint.kind in ("revolute", "continuous"):
            motion[:3, :3] = _axis_angle_matrix(joint.axis, values[joint.name])
        elif joint.kind == "prismatic":
            motion[:3, 3] = joint.axis * values[joint.name]
        elif joint.kind != "fixed":
            raise ValueError(f"joint {joint.name!r} of type {joint.kind!r} is not supported")
        pose = pose @ joint.origin @ motion
    return pose


# --------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class CameraSpec:
    """Pinhole model of one camera (square pixels, principal point at the image centre)."""

    name: str
    optical_frame: str
    hfov_rad: float
    width: int
    height: int

    @property
    def focal_px(self) -> float:
        """fx = fy in pixels, from the horizontal field of view."""
        return (self.width / 2.0) / math.tan(self.hfov_rad / 2.0)

    @property
    def vfov_rad(self) -> float:
        """Vertical field of view implied by hfov, the aspect ratio and square pixels."""
        return 2.0 * math.atan((self.height / 2.0) / self.focal_px)

    def intrinsics(self) -> np.ndarray:
        """3x3 K; principal point at the centre in OpenCV pixel-centre convention ((w-1)/2)."""
        f = self.focal_px
        cx, cy = (self.width - 1) / 2.0, (self.height - 1) / 2.0
        return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def camera_specs(width: int | None = None, height: int | None = None,
                 urdf_text: str | None = None) -> dict[str, CameraSpec]:
    """Camera models for CAMERAS, read from the URDF's camera sensors.

    Parameters
    ----------
    width, height : int, optional
        Image size in pixels; defaults to the size in the URDF (xacro camera_width/height).
    urdf_text : str, optional
        URDF to read; defaults to `urdf_xml()`.
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and (int(value) != value or value <= 0):
            raise ValueError(f"camera {name} must be a positive integer, got {value!r}")
    root = ET.fromstring(urdf_text if urdf_text is not None else urdf_xml())
    sensors = {sensor.get("name"): sensor for sensor in root.iter("sensor")
               if sensor.get("type") == "camera"}
    specs = {}
    for name in CAMERAS:
        if name not in sensors:
            raise KeyError(f"camera sensor {name!r} is not in the URDF")
        camera = sensors[name].find("camera")
        specs[name] = CameraSpec(
            name=name,
            optical_frame=f"{name}_optical_frame",
            hfov_rad=float(camera.findtext("horizontal_fov")),
            width=int(width if width is not None else camera.findtext("image/width")),
            height=int(height if height is not None else camera.findtext("image/height")),
        )
    return specs


# --------------------------------------------------------------------------- table


@dataclass(frozen=True)
class TableTop:
    """The table's top surface in base_link (m)."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    z: float


def table_top(urdf_text: str | None = None) -> TableTop:
    """Extent and height of the table top (the first collision box of `table_link`)."""
    text = urdf_text if urdf_text is not None else urdf_xml()
    root = ET.fromstring(text)
    link = root.find("link[@name='table_link']")
    if link is None:
        raise KeyError("link 'table_link' is not in the URDF")
    collision = link.find("collision")
    size = _floats(collision.find("geometry/box").get("size"), "0 0 0")
    center = forward_kinematics(text, {}, "table_link")[:3, 3] + _floats(
        collision.find("origin").get("xyz"), "0 0 0")
    low, high = center - size / 2, center + size / 2
    return TableTop(float(low[0]), float(high[0]), float(low[1]), float(high[1]), float(high[2]))
