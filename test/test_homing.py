"""The fallback homing planner (core/control/homing.py): every task's start pose from random poses.

Pure tests (no rclpy). Planned paths are re-checked densely (every 5 mm of point motion, no
margin) with the same geometry; executions run in the MuJoCo simulator (arm-arm, self and
table collisions on) through each arm's safety filter and collision guard, and count contacts.
"""
import collections

import numpy as np
import pytest

from sim2real_vla_ros.core.control import collision, homing
from sim2real_vla_ros.core.task.tasks import get_task, load_tasks
from sim2real_vla_ros.core.vocabulary import ARMS
from sim_contacts import robot_contacts

DT = 0.02


@pytest.fixture(scope="module")
def planner():
    return homing.JointSpacePlanner(seed=0)


def random_clear_pose(planner, rng):
    while True:
        q = np.concatenate([collision.random_arm_configuration(side, rng) for side in ARMS])
        if planner.valid(q):
            return q


def densely_clear(planner, waypoints, resolution_m=0.005) -> float:
    """Smallest raw distance along the path, checked every `resolution_m` of point motion."""
    scene = planner.scene
    smallest = np.inf
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        steps = max(1, int(np.ceil(planner.radii @ np.abs(b - a) / resolution_m)))
        for k in range(steps + 1):
            q = a + (b - a) * k / steps
            distance, _pair = scene.min_distance(q[:7], q[7:], horizon_m=0.05)
            smallest = min(smallest, distance)
    return smallest


@pytest.mark.parametrize("task_name", list(load_tasks()))
def test_plans_reach_the_start_pose_from_random_poses_without_collision(planner, task_name):
    goal = homing.start_pose(get_task(task_name))
    rng = np.random.default_rng(list(load_tasks()).index(task_name))
    methods = collections.Counter()
    for _ in range(4):
        start = random_clear_pose(planner, rng)
        plan = planner.plan(start, goal, time_limit_s=30.0)
        methods[plan.method] += 1
        np.testing.assert_allclose(plan.waypoints[0], start)
        np.testing.assert_allclose(plan.waypoints[-1], goal)
        assert densely_clear(planner, plan.waypoints) > 0.0
    print(task_name, dict(methods))


def test_rrt_connect_finds_a_way_around(planner):
    """A start whose straight line to the goal collides is solved by the sampling planner."""
    goal = homing.start_pose(get_task("items_handover_place"))
    rng = np.random.default_rng(7)
    for _ in range(200):
        start = random_clear_pose(planner, rng)
        if not planner.edge_valid(start, goal):
            break
    else:
        pytest.fail("no start with a blocked straight line found")
    plan = planner.plan(start, goal, time_limit_s=30.0)
    assert plan.method == "rrt_connect" and len(plan.waypoints) > 2
    assert densely_clear(planner, plan.waypoints) > 0.0


def test_start_or_goal_in_collision_is_refused(planner):
    task = get_task("pour_water_single")
    through = task.init_joints("left")
    through[1], through[2] = 2.3, -0.9  # through the table
    goal = homing.start_pose(task)
    with pytest.raises(homing.HomingError, match="start"):
        planner.plan(np.concatenate([through, task.init_joints("right")]), goal)
    with pytest.raises(homing.HomingError, match="goal"):
        planner.plan(goal, np.concatenate([through, task.init_joints("right")]))


def test_time_parameterization_respects_the_limits_and_stays_on_the_path():
    velocity, acceleration = homing.homing_limits(0.3)
    waypoints = np.stack([np.zeros(14), np.full(14, 0.5), np.r_[np.full(7, 0.2), np.full(7, 0.6)]])
    samples = homing.time_parameterize(waypoints, DT, velocity, acceleration)
    np.testing.assert_allclose(samples[0], waypoints[0])
    np.testing.assert_allclose(samples[-1], waypoints[-1])
    speeds = np.abs(np.diff(samples, axis=0)) / DT
    accelerations = np.abs(np.diff(samples, n=2, axis=0)) / DT**2
    assert np.all(speeds <= velocity * 1.01 + 1e-9)
    # discrete second differences of a trapezoid stay within the limit up to one step's rounding
    assert np.all(accelerations <= acceleration * 1.5 + 1e-6)


def teleport(sim, q14):
    for index, side in enumerate(ARMS):
        sim.set_arm_positions(side, q14[7 * index: 7 * index + 7])




@pytest.mark.parametrize("task_name", list(load_tasks()))
def test_homing_executes_in_the_simulator_through_the_filter_and_guard(planner, task_name):
    from sim2real_vla_ros.sim.simulator import Simulator

    task = get_task(task_name)
    goal = homing.start_pose(task)
    rng = np.random.default_rng(100 + list(load_tasks()).index(task_name))
    start = random_clear_pose(planner, rng)
    plan = planner.plan(start, goal, time_limit_s=30.0)
    velocity, acceleration = homing.homing_limits()
    executor = homing.HomingExecutor(homing.time_parameterize(plan.waypoints, DT, velocity, acceleration), DT)
    sim = Simulator(task, jitter=False)
    try:
        teleport(sim, start)
        contacts = collections.Counter()
        for _tick in range(len(executor.trajectory) + int(3.0 / DT)):
            measured = {side: sim.arm_positions(side) for side in ARMS}
            if executor.done(measured):
                break
            velocities = dict(zip(ARMS, sim.joint_velocities().reshape(2, 8)[:, :7]))
            commands = executor.tick(sim.sim_time, measured, sim.sim_time, velocities)
            for side, command in commands.items():
                if command is not None:
                    sim.set_arm_command(side, command)
            for _ in range(10):
                sim.step(1)
                contacts.update(robot_contacts(sim, planner.scene.groups))
        measured = {side: sim.arm_positions(side) for side in ARMS}
        assert executor.done(measured), (np.concatenate([measured["left"], measured["right"]]) - goal).round(3)
        assert not contacts, dict(contacts)
        assert executor.blocked == {"left": 0, "right": 0}
    finally:
        sim.close()


def test_go_to_start_arguments_and_moveit_configuration():
    """The console script's arguments, and the MoveItPy parameter dictionary it would pass
    (the moveit_py path itself is not run here: moveit_py has no PyPI wheel)."""
    from sim2real_vla_ros.tools import go_to_start

    args = go_to_start.parse_args(["--task", "items_handover_place", "--backend", "fallback"])
    assert args.task == "items_handover_place" and args.backend == "fallback"
    with pytest.raises(SystemExit):
        go_to_start.parse_args(["--speed-scale", "0"])
    config = go_to_start.moveit_config_dict()
    assert "<robot" in config["robot_description"] and "both_arms" in config["robot_description_semantic"]
    assert set(config["robot_description_kinematics"]) == {"left_arm", "right_arm"}
    assert config["planning_pipelines"]["pipeline_names"] == ["ompl"]
    assert config["moveit_simple_controller_manager"]["controller_names"]
    assert "items_handover_place_start" in config["robot_description_semantic"]
    if not go_to_start.moveit_available():
        assert go_to_start.main(["--backend", "moveit"]) == 1
