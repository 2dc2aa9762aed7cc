"""The MoveIt 2 configuration (config/moveit/) checked against the URDF, the tasks and the sampling.

Pure tests (no MoveIt here: there are no MoveIt wheels on PyPI). They check what MoveIt would
check when it loads the files, plus what it would not: named states inside the URDF limits and
equal to tasks.yaml, the allowed-collision matrix consistent with a fresh sampling of the
same geometry, the controllers equal to config/controllers.yaml.
"""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control import collision
from sim2real_vla_ros.core.control.safety import DEFAULT_MAX_ACCELERATION
from sim2real_vla_ros.core.task.tasks import load_tasks
from sim2real_vla_ros.core.vocabulary import ARMS
from sim2real_vla_ros.paths import share_path
from sim2real_vla_ros.tools import moveit_config

REQUIRED_GROUPS = {"left_arm", "right_arm", "both_arms", "grippers"}


def moveit_file(name):
    return share_path("config", "moveit", name)


def load_yaml(name):
    with open(moveit_file(name), encoding="utf-8") as stream:
        return yaml.safe_load(stream)


@pytest.fixture(scope="module")
def urdf():
    root = ET.fromstring(robot.urdf_xml())
    links = {link.get("name"): link for link in root.findall("link")}
    joints = {joint.get("name"): joint for joint in root.findall("joint")}
    return links, joints


@pytest.fixture(scope="module")
def srdf():
    return ET.parse(collision.srdf_path()).getroot()


def chain_joints(joints, base, tip):
    """Movable joints from base down to tip (AssertionError when tip is not below base)."""
    child_to_joint = {joint.find("child").get("link"): joint for joint in joints.values()}
    out, link = [], tip
    while link != base:
        assert link in child_to_joint, f"{tip} is not below {base}"
        joint = child_to_joint[link]
        if joint.get("type") != "fixed":
            out.append(joint.get("name"))
        link = joint.find("parent").get("link")
    return out[::-1]


def group_joints(srdf, joints, name, seen=()):
    """Every joint of an SRDF group (chains, joints, links' parent joints, subgroups)."""
    groups = {group.get("name"): group for group in srdf.findall("group")}
    assert name in groups, f"group {name} is not defined"
    assert name not in seen, f"group {name} includes itself"
    group, out = groups[name], []
    child_to_joint = {joint.find("child").get("link"): name for name, joint in joints.items()}
    for element in group:
        if element.tag == "chain":
            out += chain_joints(joints, element.get("base_link"), element.get("tip_link"))
        elif element.tag == "joint":
            out.append(element.get("name"))
        elif element.tag == "link":
            out.append(child_to_joint[element.get("name")])
        elif element.tag == "group":
            out += group_joints(srdf, joints, element.get("name"), seen + (name,))
    return out


def test_groups_and_end_effectors_exist_in_the_urdf(srdf, urdf):
    links, joints = urdf
    names = {group.get("name") for group in srdf.findall("group")}
    assert REQUIRED_GROUPS <= names
    for group in srdf.findall("group"):
        for element in group:
            if element.tag == "chain":
                assert element.get("base_link") in links and element.get("tip_link") in links
            elif element.tag == "link":
                assert element.get("name") in links
            elif element.tag == "joint":
                assert element.get("name") in joints
            elif element.tag == "group":
                assert element.get("name") in names
        assert group_joints(srdf, joints, group.get("name"))
    for side in ARMS:
        assert group_joints(srdf, joints, f"{side}_arm") == robot.arm_joint_names(side)[:6]
    both = group_joints(srdf, joints, "both_arms")
    # every joint a trajectory controller owns, so MoveIt's goals are never partial
    assert set(robot.arm_joint_names("left") + robot.arm_joint_names("right")) <= set(both)
    for effector in srdf.findall("end_effector"):
        assert effector.get("parent_link") in links
        assert effector.get("group") in names and effector.get("parent_group") in names
        parent_links = chain_joints(joints, "base_link", effector.get("parent_link"))
        assert set(group_joints(srdf, joints, effector.get("parent_group"))) <= set(parent_links)
    virtual = srdf.find("virtual_joint")
    assert virtual.get("child_link") == robot.BASE_LINK


def test_named_states_are_within_limits_and_match_the_tasks(srdf, urdf):
    _links, joints = urdf
    states = {state.get("name"): state for state in srdf.findall("group_state")}
    tasks = load_tasks()
    assert {f"{name}_start" for name in tasks} | {"home", "open", "closed"} <= set(states)
    for name, state in states.items():
        members = set(group_joints(srdf, joints, state.get("group")))
        values = {joint.get("name"): float(joint.get("value")) for joint in state.findall("joint")}
        assert set(values) <= members, f"{name}: joints outside its group"
        limits = robot.joint_limits_from_urdf(robot.urdf_xml(), list(values))
        assert limits.contains(list(values.values())), f"{name}: {limits.violations(list(values.values()))}"
    for task_name, task in tasks.items():
        values = {joint.get("name"): float(joint.get("value")) for joint in states[f"{task_name}_start"]}
        for side in ARMS:
            expected = task.init_joints(side)
            got = [values[name] for name in robot.arm_joint_names(side)]
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_task_start_states_are_collision_free():
    scene = collision.CollisionScene(None)
    for task in load_tasks().values():
        assert not scene.in_collision(task.init_joints("left"), task.init_joints("right"), 0.0), task.name


def test_disabled_collisions_name_real_links_and_reasons(srdf, urdf):
    links, _joints = urdf
    with_geometry = {name for name, link in links.items() if link.find("collision") is not None}
    disabled = collision.load_disabled_pairs()
    assert disabled
    for (a, b), reason in disabled.items():
        assert a in with_geometry and b in with_geometry and a != b
        assert reason in collision.ACM_REASONS
    # the header's counts are the entries'
    counts = {reason: sum(1 for r in disabled.values() if r == reason) for reason in collision.ACM_REASONS}
    comment = open(collision.srdf_path(), encoding="utf-8").read()
    for reason, count in counts.items():
        assert f"{count} {reason}" in comment


def test_disabled_collisions_are_consistent_with_a_fresh_sampling():
    """Adjacent = the kinematic tree; Never pairs never collide and no enabled pair always
    collides in a fresh, independent sampling of the same geometry."""
    disabled = collision.load_disabled_pairs()
    fresh = collision.compute_acm(samples=3000, seed=12345)
    adjacent = {pair for pair, reason in disabled.items() if reason == "Adjacent"}
    assert adjacent == set(collision.link_groups().adjacent)
    never = [pair for pair, reason in disabled.items() if reason == "Never"]
    assert not [pair for pair in never if fresh.counts.get(pair, 0) > 0]
    for pair, count in fresh.counts.items():
        if pair not in disabled:
            assert count < collision.ALWAYS_FRACTION * fresh.samples
    default = {pair for pair, reason in disabled.items() if reason == "Default"}
    assert default == {pair for pair, reason in fresh.disabled.items() if reason == "Default"}


def test_srdf_is_what_the_generator_writes_for_the_committed_matrix():
    """Groups, states and effectors are regenerated from the URDF and tasks.yaml (the matrix
    part, which needs 20000 samples, is checked against a fresh sampling above)."""
    committed = open(collision.srdf_path(), encoding="utf-8").read()
    disabled = collision.load_disabled_pairs()
    links = collision.link_groups().all_links
    header = [line for line in committed.splitlines() if "random configurations" in line][0]
    samples = int(header.split("method, ")[1].split(" random")[0])
    acm = collision.AcmResult(disabled, {}, samples, collision.DEFAULT_ACM_SEED, tuple(sorted(links)))
    assert moveit_config.srdf_text(acm, load_tasks()) == committed


def test_kinematics_yaml_covers_the_arm_chains(srdf):
    kinematics = load_yaml("kinematics.yaml")
    chains = {group.get("name") for group in srdf.findall("group") if group.find("chain") is not None}
    assert set(kinematics) == chains == {"left_arm", "right_arm"}
    for values in kinematics.values():
        assert values["kinematics_solver"] == "kdl_kinematics_plugin/KDLKinematicsPlugin"
        assert 0 < values["kinematics_solver_timeout"] < 1


def test_joint_limits_yaml_matches_the_urdf_and_has_accelerations():
    limits = load_yaml("joint_limits.yaml")
    entries = limits["joint_limits"]
    planned = robot.arm_joint_names("left") + robot.arm_joint_names("right")
    assert set(entries) == set(planned)
    for side in ARMS:
        urdf_limits = robot.arm_limits(side)
        for index, name in enumerate(urdf_limits.names):
            entry = entries[name]
            assert entry["has_velocity_limits"] and entry["max_velocity"] == pytest.approx(urdf_limits.velocity[index])
            assert entry["has_acceleration_limits"]
            assert entry["max_acceleration"] == pytest.approx(DEFAULT_MAX_ACCELERATION[index])
    assert 0 < limits["default_velocity_scaling_factor"] <= 1
    assert 0 < limits["default_acceleration_scaling_factor"] <= 1


def test_moveit_controllers_map_to_the_trajectory_controllers(srdf, urdf):
    _links, joints = urdf
    moveit = load_yaml("moveit_controllers.yaml")
    manager = moveit["moveit_simple_controller_manager"]
    with open(share_path("config", "controllers.yaml"), encoding="utf-8") as stream:
        controllers = yaml.safe_load(stream)
    both = set(group_joints(srdf, joints, "both_arms"))
    for name in manager["controller_names"]:
        assert controllers["controller_manager"]["ros__parameters"][name]["type"] == \
            "joint_trajectory_controller/JointTrajectoryController"
        entry = manager[name]
        assert entry["type"] == "FollowJointTrajectory" and entry["action_ns"] == "follow_joint_trajectory"
        assert entry["joints"] == controllers[name]["ros__parameters"]["joints"]
        assert set(entry["joints"]) <= both
    assert sorted(manager["controller_names"]) == [f"{side}_arm_controller" for side in sorted(ARMS)]


def test_ompl_and_moveit_py_configuration(srdf):
    ompl = load_yaml("ompl_planning.yaml")
    groups = {group.get("name") for group in srdf.findall("group")}
    assert ompl["planning_plugins"] == ["ompl_interface/OMPLPlanner"]
    configured = [key for key, value in ompl.items() if isinstance(value, dict) and "default_planner_config" in value]
    assert set(configured) <= groups and "both_arms" in configured
    for group in configured:
        assert ompl[group]["default_planner_config"] in ompl["planner_configs"]
        assert set(ompl[group]["planner_configs"]) <= set(ompl["planner_configs"])
    moveit_py = load_yaml("moveit_py.yaml")
    assert moveit_py["planning_pipelines"]["pipeline_names"] == ["ompl"]
    assert moveit_py["plan_request_params"]["planner_id"] in ompl["planner_configs"]
    assert moveit_py["planning_scene_monitor_options"]["joint_state_topic"] == "/joint_states"
