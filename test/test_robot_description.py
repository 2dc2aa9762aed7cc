"""The CobotMagic description (urdf/*.xacro), config/controllers.yaml and core/robot.py.

Pure tests: no rclpy. The expected numbers are copied from the fact sheet
(../shared/facts/cobot_magic.md) on purpose, so the URDF is checked against an independent
source, and forward kinematics against the vendor's DH parameters.
"""
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import xacro
import yaml

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.paths import share_path

# joint -> (type, parent suffix, child suffix, xyz, rpy, lower, upper, velocity), fact sheet table.
FACT_SHEET_JOINTS = {
    "joint1": ("revolute", "base_link", "link1", (0, 0, 0.123), (0, 0, 0), -2.618, 2.618, 5),
    "joint2": ("revolute", "link1", "link2", (0, 0, 0), (1.5708, -0.1359, -3.1416), 0, 3.14, 5),
    "joint3": ("revolute", "link2", "link3", (0.28503, 0, 0), (0, 0, -1.7939), -2.967, 0, 5),
    "joint4": ("revolute", "link3", "link4", (-0.021984, -0.25075, 0), (1.5708, 0, 0), -1.745, 1.745, 5),
    "joint5": ("revolute", "link4", "link5", (0, 0, 0), (-1.5708, 0, 0), -1.22, 1.22, 5),
    "joint6": ("revolute", "link5", "link6", (8.8259e-5, -0.091, 0), (1.5708, 0, 0), -2.0944, 2.0944, 3),
    "joint7": ("prismatic", "gripper_base", "link7", (0, 0, 0.1358), (1.5708, 0, 0), 0, 0.035, 1),
    "joint8": ("prismatic", "gripper_base", "link8", (0, 0, 0.1358), (1.5708, 0, -3.1416), -0.035, 0, 1),
}
FACT_SHEET_AXES = {name: (0, 0, -1) if name == "joint8" else (0, 0, 1) for name in FACT_SHEET_JOINTS}
ARM_MOUNTS = {"left": (0.233, 0.300, 0.7775), "right": (0.233, -0.300, 0.7775)}
CAM_HIGH_EYE = np.array([0.354, 0.015, 1.452])
CAM_HIGH_TARGET = np.array([0.859, 0.0, 0.523])
PAPER_INIT = [-0.3, 0.3, 1.0, 1.0, -1.2, -1.2, 0, 0, 0.6, 0.6, 0, 0, 0.05, 0.05, 0.05, 0.05]

# Vendor SDK DH (mm -> m). Modified (Craig) convention: frame i is reached from frame i-1 by
# RotX(alpha[i]) TransX(a[i]) RotZ(theta_i + offset[i]) TransZ(d[i]).
DH_A = np.array([0, 0, 285.03, -21.98, 0, 0]) / 1000.0
DH_D = np.array([123, 0, 0, 250.75, 0, 91]) / 1000.0
DH_ALPHA = np.array([0, -np.pi / 2, 0, np.pi / 2, -np.pi / 2, np.pi / 2])
DH_THETA_OFFSET = np.radians([0, -172.22, -102.78, 0, 0, 0])

# Every parameter name of joint_trajectory_controller (ros2_controllers, Jazzy / Kilted
# generated parameter file) that a top-level key of our file may use.
JTC_PARAMETERS = {
    "joints", "command_joints", "command_interfaces", "state_interfaces", "speed_scaling",
    "allow_partial_joints_goal", "interpolate_from_desired_state",
    "allow_integration_in_goal_trajectories", "set_last_command_interface_value_as_state_on_activation",
    "action_monitor_rate", "interpolation_method", "allow_nonzero_velocity_at_trajectory_end",
    "cmd_timeout", "gains", "constraints", "open_loop_control",
}


@pytest.fixture(scope="module")
def urdf_text():
    return robot.urdf_xml()


@pytest.fixture(scope="module")
def urdf_root(urdf_text):
    return ET.fromstring(urdf_text)


def _joint(root, name):
    element = root.find(f"joint[@name='{name}']")
    assert element is not None, f"joint {name} missing"
    return element


def _floats(text):
    return tuple(float(v) for v in text.split())


def _rotation_angle_deg(rotation_a, rotation_b):
    cosine = (np.trace(rotation_a.T @ rotation_b) - 1.0) / 2.0
    return math.degrees(math.acos(np.clip(cosine, -1.0, 1.0)))


# ---------------------------------------------------------------------------- xacro arguments


@pytest.mark.parametrize("plugin", robot.ROS2_CONTROL_PLUGINS)
def test_xacro_processes_for_every_plugin(plugin):
    root = ET.fromstring(robot.urdf_xml(ros2_control_plugin=plugin))
    systems = root.findall("ros2_control")
    plugins = [system.findtext("hardware/plugin") for system in systems]
    commanded = [joint.get("name") for system in systems for joint in system.findall("joint")
                 if joint.find("command_interface") is not None]
    expected_commanded = robot.arm_joint_names("left") + robot.arm_joint_names("right")
    if plugin == "none":
        assert systems == []
        return
    if plugin != "hardware":  # the default hardware plugin uses CAN frame entries instead
        assert sorted(commanded) == sorted(expected_commanded)
    if plugin == "mock":
        assert plugins == ["mock_components/GenericSystem"]
    elif plugin == "gazebo":
        assert plugins == ["gz_ros2_control/GazeboSimSystem"]
        gz_plugin = root.find("gazebo/plugin[@name='gz_ros2_control::GazeboSimROS2ControlPlugin']")
        assert gz_plugin.get("filename") == "gz_ros2_control-system"
        assert gz_plugin.findtext("parameters") == share_path("config", "controllers.yaml")
        assert root.find("joint[@name='world_joint']/child").get("link") == "base_link"
    elif plugin == "hardware":
        assert plugins == ["socket_can_hardware_interface/SocketCanHardwareInterface"] * 2
        can = {system.get("name"): system.findtext("hardware/param[@name='can_interface']") for system in systems}
        assert can == {"left_arm": "can_left", "right_arm": "can_right"}
        # xiayip/can_hardware_interface: every entry is a Piper CAN frame of that arm.
        for system in systems:
            side = system.get("name").split("_")[0]
            frames = {int(joint.findtext("param[@name='can_address']")) for joint in system.findall("joint")}
            assert frames == {0x2A1, 0x2A5, 0x2A6, 0x2A7, 0x471, 0x151, 0x155, 0x156, 0x157}
            assert {joint.findtext("param[@name='prefix']") for joint in system.findall("joint")} == {f"{side}_"}


def test_hardware_plugin_and_can_interfaces_are_arguments():
    root = ET.fromstring(robot.urdf_xml(ros2_control_plugin="hardware", hardware_plugin="my_pkg/MyArm",
                                        can_interface_left="can0", can_interface_right="can1"))
    systems = {s.get("name"): s for s in root.findall("ros2_control")}
    assert {s.findtext("hardware/plugin") for s in systems.values()} == {"my_pkg/MyArm"}
    assert systems["left_arm"].findtext("hardware/param[@name='can_interface']") == "can0"
    assert systems["right_arm"].findtext("hardware/param[@name='can_interface']") == "can1"
    left_joints = [j.get("name") for j in systems["left_arm"].findall("joint")]
    assert left_joints == robot.arm_joint_names("left") + ["left_joint8"]


def test_mimic_joint_has_state_interfaces_only(urdf_root):
    for system in urdf_root.findall("ros2_control"):
        for joint in system.findall("joint"):
            if joint.get("name").endswith("joint8"):
                assert joint.find("command_interface") is None
                assert [s.get("name") for s in joint.findall("state_interface")] == ["position", "velocity"]
            else:
                assert [c.get("name") for c in joint.findall("command_interface")] == ["position"]
                assert [s.get("name") for s in joint.findall("state_interface")] == ["position", "velocity"]


@pytest.mark.parametrize("bad_args, words", [
    ({"ros2_control_plugin": "foo"}, ["ros2_control_plugin", "foo"]),
    ({"camera_widht": 320}, ["camera_widht"]),
    ({"camera_width": 0}, ["camera_width"]),
    ({"camera_rate": "fast"}, ["camera_rate"]),
    ({"camera_height": 240.5}, ["camera_height"]),
])
def test_bad_xacro_arguments_raise_value_error(bad_args, words):
    with pytest.raises(ValueError) as error:
        robot.urdf_xml(**bad_args)
    for word in words:
        assert word in str(error.value)


def test_xacro_itself_rejects_a_bad_plugin():
    # Launch files run xacro directly, without robot.py's checks.
    with pytest.raises(xacro.XacroException, match="ros2_control_plugin must be one of"):
        xacro.process_file(robot.xacro_path(), mappings={"ros2_control_plugin": "foo"})


# ---------------------------------------------------------------------------- joints


def test_joint_names_and_order_match_the_urdf(urdf_root):
    movable = [j.get("name") for j in urdf_root.findall("joint") if j.get("type") != "fixed"]
    assert movable == list(robot.ALL_JOINT_NAMES)
    assert len(robot.ALL_JOINT_NAMES) == 16
    assert robot.arm_joint_names("right") == [f"right_joint{i}" for i in range(1, 8)]
    with pytest.raises(ValueError, match="side"):
        robot.arm_joint_names("middle")


@pytest.mark.parametrize("side", robot.ARMS)
def test_joints_match_the_fact_sheet(urdf_root, urdf_text, side):
    for suffix, (kind, parent, child, xyz, rpy, lower, upper, velocity) in FACT_SHEET_JOINTS.items():
        joint = _joint(urdf_root, f"{side}_{suffix}")
        assert joint.get("type") == kind
        assert joint.find("parent").get("link") == f"{side}_{parent}"
        assert joint.find("child").get("link") == f"{side}_{child}"
        np.testing.assert_allclose(_floats(joint.find("origin").get("xyz")), xyz, atol=1e-9)
        np.testing.assert_allclose(_floats(joint.find("origin").get("rpy")), rpy, atol=1e-9)
        np.testing.assert_allclose(_floats(joint.find("axis").get("xyz")), FACT_SHEET_AXES[suffix])
        limits = robot.joint_limits_from_urdf(urdf_text, [f"{side}_{suffix}"])
        np.testing.assert_allclose([limits.lower[0], limits.upper[0], limits.velocity[0]],
                                   [lower, upper, velocity])
        assert limits.effort[0] > 0


@pytest.mark.parametrize("side", robot.ARMS)
def test_arm_is_mounted_as_cobot_magic_mounts_it(urdf_text, side):
    mount = robot.forward_kinematics(urdf_text, {}, f"{side}_base_link")
    np.testing.assert_allclose(mount[:3, 3], ARM_MOUNTS[side], atol=1e-9)
    np.testing.assert_allclose(mount[:3, :3], np.eye(3), atol=1e-9)


@pytest.mark.parametrize("side", robot.ARMS)
def test_finger_joint8_mimics_joint7(urdf_root, side):
    mimic = _joint(urdf_root, f"{side}_joint8").find("mimic")
    assert mimic.get("joint") == f"{side}_joint7"
    assert float(mimic.get("multiplier")) == -1.0
    assert float(mimic.get("offset", "0")) == 0.0


def test_fingers_open_symmetrically_about_the_tcp(urdf_text):
    opened = {f"left_joint{i}": 0.0 for i in range(1, 7)} | {"left_joint7": 0.03}
    tcp = robot.forward_kinematics(urdf_text, opened, "left_tcp")
    finger7 = robot.forward_kinematics(urdf_text, opened, "left_link7")[:3, 3]
    finger8 = robot.forward_kinematics(urdf_text, opened, "left_link8")[:3, 3]
    finger_axis = tcp[:3, 1]  # link6 y: the fingers travel along it
    assert np.dot(finger7 - tcp[:3, 3], finger_axis) == pytest.approx(-0.03, abs=1e-4)
    assert np.dot(finger8 - tcp[:3, 3], finger_axis) == pytest.approx(0.03, abs=1e-4)


def test_every_body_has_geometry_and_a_physical_inertia(urdf_root):
    frames_without_body = {"world"} | {l.get("name") for l in urdf_root.findall("link")
                                       if l.get("name").endswith(("_optical_frame", "_tcp"))}
    for link in urdf_root.findall("link"):
        name = link.get("name")
        if name in frames_without_body:
            assert link.find("inertial") is None and link.find("collision") is None
            continue
        assert link.find("visual") is not None and link.find("collision") is not None, name
        for shape in link.iter("geometry"):
            assert shape[0].tag in ("box", "cylinder"), f"{name}: primitive geometry only"
        assert float(link.find("inertial/mass").get("value")) > 0, name
        inertia = link.find("inertial/inertia")
        ixx, iyy, izz = (float(inertia.get(k)) for k in ("ixx", "iyy", "izz"))
        assert min(ixx, iyy, izz) > 0, name
        assert ixx + iyy >= izz and iyy + izz >= ixx and izz + ixx >= iyy, f"{name}: triangle inequality"


def test_vendor_masses(urdf_root):
    expected = {"base_link": 1.02, "link1": 0.71, "link2": 1.16, "link3": 0.5, "link4": 0.38,
                "link5": 0.383, "gripper_base": 0.45, "link7": 0.025, "link8": 0.025}
    for side in robot.ARMS:
        for link, mass in expected.items():
            element = urdf_root.find(f"link[@name='{side}_{link}']/inertial/mass")
            assert float(element.get("value")) == pytest.approx(mass)


# ---------------------------------------------------------------------------- kinematics vs DH


def _modified_dh_link6(q):
    pose = np.eye(4)
    for i in range(6):
        ca, sa = math.cos(DH_ALPHA[i]), math.sin(DH_ALPHA[i])
        ct, st = math.cos(q[i] + DH_THETA_OFFSET[i]), math.sin(q[i] + DH_THETA_OFFSET[i])
        # Craig: RotX(alpha) TransX(a) RotZ(theta) TransZ(d), multiplied out.
        pose = pose @ np.array([
            [ct, -st, 0, DH_A[i]],
            [st * ca, ct * ca, -sa, -sa * DH_D[i]],
            [st * sa, ct * sa, ca, ca * DH_D[i]],
            [0, 0, 0, 1],
        ])
    return pose


def _standard_dh_link6(q):
    pose = np.eye(4)
    for i in range(6):
        ca, sa = math.cos(DH_ALPHA[i]), math.sin(DH_ALPHA[i])
        ct, st = math.cos(q[i] + DH_THETA_OFFSET[i]), math.sin(q[i] + DH_THETA_OFFSET[i])
        pose = pose @ np.array([
            [ct, -st * ca, st * sa, DH_A[i] * ct],
            [st, ct * ca, -ct * sa, DH_A[i] * st],
            [0, sa, ca, DH_D[i]],
            [0, 0, 0, 1],
        ])
    return pose


@pytest.mark.parametrize("side", robot.ARMS)
def test_urdf_forward_kinematics_agrees_with_vendor_modified_dh(urdf_text, side):
    limits = robot.arm_limits(side)
    rng = np.random.default_rng(7)
    worst_mm, worst_deg, standard_best_mm = 0.0, 0.0, np.inf
    for _ in range(50):
        q = rng.uniform(limits.lower[:6], limits.upper[:6])
        positions = dict(zip(limits.names[:6], q))
        urdf_pose = robot.forward_kinematics(urdf_text, positions, f"{side}_link6", base=f"{side}_base_link")
        dh_pose = _modified_dh_link6(q)
        worst_mm = max(worst_mm, 1000 * np.linalg.norm(urdf_pose[:3, 3] - dh_pose[:3, 3]))
        worst_deg = max(worst_deg, _rotation_angle_deg(urdf_pose[:3, :3], dh_pose[:3, :3]))
        standard_best_mm = min(standard_best_mm,
                               1000 * np.linalg.norm(urdf_pose[:3, 3] - _standard_dh_link6(q)[:3, 3]))
    assert worst_mm < 1.0
    assert worst_deg < 0.05  # same link6 frame, not only the same origin
    # The SDK table is in the modified convention: read as standard DH it is far off.
    assert standard_best_mm > 50.0


def test_forward_kinematics_errors(urdf_text):
    with pytest.raises(KeyError, match="left_joint1"):
        robot.forward_kinematics(urdf_text, {}, "left_link6")
    with pytest.raises(KeyError, match="nowhere"):
        robot.forward_kinematics(urdf_text, {}, "nowhere")
    with pytest.raises(ValueError, match="ancestor"):
        robot.forward_kinematics(urdf_text, {}, "table_link", base="left_base_link")


def test_tcp_is_0143_along_link6_z(urdf_text):
    q = dict(zip(robot.arm_joint_names("right")[:6], [0.4, 1.2, -0.8, 0.3, -0.5, 1.0]))
    link6 = robot.forward_kinematics(urdf_text, q, "right_link6")
    tcp = robot.forward_kinematics(urdf_text, q, "right_tcp")
    np.testing.assert_allclose(tcp[:3, 3], link6[:3, 3] + 0.143 * link6[:3, 2], atol=1e-12)


# ---------------------------------------------------------------------------- cameras


@pytest.mark.parametrize("camera", robot.CAMERAS)
def test_camera_optical_frame_axes(urdf_text, camera):
    # Pose of the optical frame in the camera link frame.
    optical = robot.forward_kinematics(urdf_text, {}, f"{camera}_optical_frame", base=f"{camera}_link")
    np.testing.assert_allclose(optical[:3, 3], 0, atol=1e-12)
    x_axis, y_axis, z_axis = optical[:3, 0], optical[:3, 1], optical[:3, 2]
    np.testing.assert_allclose(z_axis, [1, 0, 0], atol=1e-9)  # optical z = link x (forward)
    np.testing.assert_allclose(x_axis, [0, -1, 0], atol=1e-9)  # optical x = -link y (right)
    np.testing.assert_allclose(y_axis, [0, 0, -1], atol=1e-9)  # optical y = -link z (down)


def test_cam_high_looks_at_the_documented_target(urdf_text):
    pose = robot.forward_kinematics(urdf_text, {}, "cam_high_optical_frame")
    np.testing.assert_allclose(pose[:3, 3], CAM_HIGH_EYE, atol=1e-9)
    wanted = (CAM_HIGH_TARGET - CAM_HIGH_EYE) / np.linalg.norm(CAM_HIGH_TARGET - CAM_HIGH_EYE)
    assert math.degrees(math.acos(np.clip(pose[:3, 2] @ wanted, -1, 1))) < 1.0
    assert abs(pose[2, 0]) < 1e-9  # no roll: image rows stay horizontal
    assert pose[2, 1] < 0  # image down (optical y) points down in the world


def _project(spec, camera_pose, point):
    in_camera = np.linalg.inv(camera_pose) @ np.append(point, 1.0)
    pixel = spec.intrinsics() @ in_camera[:3]
    return in_camera[2], pixel[:2] / pixel[2]


def test_cam_high_sees_the_whole_object_area(urdf_text):
    spec = robot.camera_specs()["cam_high"]
    pose = robot.forward_kinematics(urdf_text, {}, spec.optical_frame)
    z = robot.table_top(urdf_text).z
    for x in (0.35, 0.93):
        for y in (-0.4, 0.22):
            depth, (u, v) = _project(spec, pose, np.array([x, y, z]))
            assert depth > 0 and 0 <= u < spec.width and 0 <= v < spec.height, (x, y, u, v)


@pytest.mark.parametrize("side", robot.ARMS)
def test_wrist_camera_sees_the_finger_pads(urdf_text, side):
    spec = robot.camera_specs()[robot.WRIST_CAMERA[side]]
    q = dict(zip(robot.arm_joint_names(side), [0.3, 1.0, -1.2, 0.2, 0.6, -0.4, 0.035]))
    pose = robot.forward_kinematics(urdf_text, q, spec.optical_frame)
    for finger in ("link7", "link8"):
        finger_pose = robot.forward_kinematics(urdf_text, q, f"{side}_{finger}")
        pad_tip = finger_pose[:3, :3] @ np.array([0, 0.0072 + 0.025, 0.006]) + finger_pose[:3, 3]
        depth, (u, v) = _project(spec, pose, pad_tip)
        # In view, in the lower half of the image (the camera sits above the gripper).
        assert depth > 0 and 0 <= u < spec.width and spec.height / 2 < v < spec.height, (finger, u, v)


def test_camera_specs_follow_the_urdf_sensors():
    urdf_640 = robot.urdf_xml(camera_width=640, camera_height=480, camera_rate=30)
    specs = robot.camera_specs(urdf_text=urdf_640)
    assert set(specs) == set(robot.CAMERAS)
    high = specs["cam_high"]
    assert (high.width, high.height) == (640, 480)
    # cam_high keeps EmbodiChain's horizontal FOV: fx = 488.17 px at 960 px width.
    assert robot.camera_specs(960, 540)["cam_high"].focal_px == pytest.approx(488.17, rel=1e-6)
    k = high.intrinsics()
    assert k[0, 0] == k[1, 1] == pytest.approx(320 / math.tan(high.hfov_rad / 2))
    assert (k[0, 2], k[1, 2]) == (319.5, 239.5)
    assert math.degrees(specs["cam_left_wrist"].hfov_rad) == pytest.approx(69.4)
    root = ET.fromstring(urdf_640)
    for sensor in root.iter("sensor"):
        assert float(sensor.findtext("update_rate")) == 30.0
        assert sensor.findtext("topic") == f"{sensor.get('name')}/image_raw"
    with pytest.raises(ValueError, match="width"):
        robot.camera_specs(width=0)


# ---------------------------------------------------------------------------- table


def test_table_top_holds_the_paper_object_area(urdf_text):
    table = robot.table_top(urdf_text)
    assert table.x_min <= 0.35 and table.x_max >= 0.93 and table.y_min <= -0.4 and table.y_max >= 0.22
    assert table.z < ARM_MOUNTS["left"][2]
    # The arm bases (radius 5 cm) stand clear of the table edge.
    assert ARM_MOUNTS["left"][0] + 0.05 < table.x_min
    assert robot.table_top(robot.urdf_xml(table_top_z=0.72)).z == pytest.approx(0.72)


# ---------------------------------------------------------------------------- limits and units


def test_joint_limits_clip_and_contains():
    limits = robot.arm_limits("left")
    assert limits.names == tuple(robot.arm_joint_names("left"))
    inside = (limits.lower + limits.upper) / 2
    assert limits.contains(inside)
    outside = inside.copy()
    outside[2] = 0.5  # joint3 is limited to -2.967 .. 0
    assert not limits.contains(outside)
    assert limits.violations(outside) == ["left_joint3"]
    np.testing.assert_allclose(limits.clip(outside)[2], 0.0)
    with pytest.raises(ValueError, match="7 joint values"):
        limits.clip(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        limits.contains(np.full(7, np.nan))


def test_joint_limits_from_urdf_missing_joint(urdf_text):
    with pytest.raises(KeyError, match="left_joint9"):
        robot.joint_limits_from_urdf(urdf_text, ["left_joint1", "left_joint9"])
    with pytest.raises(ValueError, match="no position limits"):
        robot.joint_limits_from_urdf(urdf_text, ["left_base_joint"])


def test_gripper_width_conversions():
    assert robot.gripper_width_to_finger(0.07) == pytest.approx(0.035)
    assert robot.finger_to_gripper_width(0.02) == pytest.approx(0.04)
    widths = np.array([0.0, 0.01, 0.07])
    np.testing.assert_allclose(robot.finger_to_gripper_width(robot.gripper_width_to_finger(widths)), widths)
    with pytest.raises(ValueError, match="finite"):
        robot.gripper_width_to_finger(float("nan"))


def test_interleaved16_paper_example():
    left, right, clamped = robot.interleaved16_to_arms(PAPER_INIT)
    np.testing.assert_allclose(left, [-0.3, 1.0, -1.2, 0.0, 0.6, 0.0, 0.035])
    np.testing.assert_allclose(right, [0.3, 1.0, -1.2, 0.0, 0.6, 0.0, 0.035])
    assert clamped == ["left_joint7", "right_joint7"]


def test_interleaved16_rejects_bad_vectors():
    with pytest.raises(ValueError, match="16"):
        robot.interleaved16_to_arms(PAPER_INIT[:14])
    per_arm_reading = [-0.3, 1.0, 1.0, 0, 0.6, 0] * 2 + [0.02] * 4  # joint3 = +1.0 breaks the limit
    with pytest.raises(ValueError, match="outside the URDF limits"):
        robot.interleaved16_to_arms(per_arm_reading)


# ---------------------------------------------------------------------------- controllers.yaml


@pytest.fixture(scope="module")
def controllers():
    with open(share_path("config", "controllers.yaml"), encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def test_controller_manager_section(controllers):
    manager = controllers["controller_manager"]["ros__parameters"]
    assert manager["update_rate"] == 500
    assert manager["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"
    for side in robot.ARMS:
        assert manager[f"{side}_arm_controller"]["type"] == \
            "joint_trajectory_controller/JointTrajectoryController"


@pytest.mark.parametrize("side", robot.ARMS)
def test_arm_controller_parameters(controllers, side):
    params = controllers[f"{side}_arm_controller"]["ros__parameters"]
    assert set(params) <= JTC_PARAMETERS, f"unknown JTC parameters {set(params) - JTC_PARAMETERS}"
    assert params["joints"] == robot.arm_joint_names(side)
    assert params["command_interfaces"] == ["position"]
    assert params["state_interfaces"] == ["position", "velocity"]
    assert params["allow_partial_joints_goal"] is False
    assert params["interpolation_method"] == "splines"
    constraints = params["constraints"]
    # JTC ignores cmd_timeout unless it exceeds goal_time.
    assert params["cmd_timeout"] > constraints["goal_time"] > 0
    assert constraints["stopped_velocity_tolerance"] > 0
    assert set(constraints) - {"stopped_velocity_tolerance", "goal_time"} == set(robot.arm_joint_names(side))
    for joint in robot.arm_joint_names(side)[:6]:
        assert constraints[joint]["goal"] > 0 and constraints[joint]["trajectory"] > 0
