"""The collision guard (core/control/collision_guard.py): stops before contact, no false stops.

Pure tests (no rclpy). The simulator tests drive the MuJoCo scene (arm-arm, self and table
collisions on) at the actors' 50 Hz, with the guard in front of every command and the other
arm's state read from the simulator each tick, as /joint_states would give it.
"""
import collections

import numpy as np
import pytest

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control import collision
from sim2real_vla_ros.core.control.collision_guard import (DEFAULT_MARGINS_M, CollisionGuard, GuardVerdict,
                                                           velocity_bound)
from sim2real_vla_ros.core.control.safety import DEFAULT_MAX_ACCELERATION
from sim2real_vla_ros.core.task.tasks import get_task, load_tasks
from sim2real_vla_ros.core.vocabulary import ARMS
from sim_contacts import robot_contacts

DT = 0.02
PHYSICS_STEPS = 10  # 2 ms physics: one 50 Hz tick
AMAX = np.asarray(DEFAULT_MAX_ACCELERATION, float)
VMAX = {side: robot.arm_limits(side).velocity for side in ARMS}
OTHER = {"left": "right", "right": "left"}


@pytest.fixture(scope="module")
def guards():
    return {side: CollisionGuard(side) for side in ARMS}


@pytest.fixture(scope="module")
def both_arms_scene():
    return collision.CollisionScene(None)


def handover_collision_course():
    """Both arms of the hand-over task swung toward each other until the grippers overlap 6 cm."""
    task = get_task("items_handover_place")
    left, right = task.init_joints("left"), task.init_joints("right")
    goal_left, goal_right = left.copy(), right.copy()
    goal_left[:3] = (-1.1, 1.9, -1.2)
    goal_right[:3] = (1.1, 1.9, -1.2)
    return task, (left, right), (goal_left, goal_right)


def arm_arm_distance(scene, left, right) -> float:
    slack, _pair, _kind = scene.clearance(left, right, {"self": -1.0, "table": -1.0, "body": -1.0}, horizon_m=0.5)
    return slack


def drive(sim, goals, guards, seconds, speed=0.6):
    """Move both arms straight toward `goals` at `speed` rad/s (slowest joint sets the pace),
    through the guards (a blocked setpoint is not sent: the arm holds its last command)."""
    from sim2real_vla_ros.sim.simulator import Simulator  # noqa: F401  (type only)

    commands = {side: sim.arm_positions(side) for side in ARMS}
    blocked = collections.Counter()
    trace = []
    for _ in range(int(seconds / DT)):
        positions = {side: sim.arm_positions(side) for side in ARMS}
        velocities = sim.joint_velocities().reshape(2, 8)[:, :7]
        for index, side in enumerate(ARMS):
            delta = goals[index] - commands[side]
            largest = np.max(np.abs(delta[:6]))
            step = delta if largest <= speed * DT else delta * (speed * DT / largest)
            candidate = commands[side] + step
            feed_forward = step / DT  # the trajectory controller's velocity, as in the sim node
            if guards is not None:
                other = OTHER[side]
                bound = velocity_bound(velocities[1 - index], VMAX[other], AMAX, DT + guards[side].horizon_s)
                verdict = guards[side].check(candidate, positions[other], DT, bound, commands[side])
                if not verdict.ok:
                    blocked[verdict.reason] += 1
                    candidate, feed_forward = commands[side], np.zeros(7)
            commands[side] = candidate
            sim.set_arm_command(side, commands[side], feed_forward)
        sim.step(PHYSICS_STEPS)
        trace.append({side: sim.arm_positions(side) for side in ARMS})
    return blocked, trace


@pytest.fixture(scope="module")
def handover_sim():
    from sim2real_vla_ros.sim.simulator import Simulator

    sim = Simulator("items_handover_place", jitter=False)
    yield sim
    sim.close()


def test_guard_stops_two_arms_driven_into_each_other_before_contact(handover_sim, guards, both_arms_scene):
    task, start, goals = handover_collision_course()
    assert arm_arm_distance(both_arms_scene, *goals) < -0.03  # the goal really overlaps
    sim = handover_sim
    sim.reset()
    blocked, trace = drive(sim, goals, guards, seconds=5.0)
    distances = [arm_arm_distance(both_arms_scene, state["left"], state["right"]) for state in trace]
    contacts = robot_contacts(sim, both_arms_scene.groups)
    assert blocked["arm_arm"] > 0
    assert min(distances) > 0.0, f"arms came to {min(distances):.4f} m"
    assert min(distances) > DEFAULT_MARGINS_M["arm_arm"] / 2
    assert contacts["arm_arm"] == 0


def test_without_the_guard_the_same_motion_collides(handover_sim, both_arms_scene):
    """Control for the test above: the scenario is a real collision in the simulator."""
    _task, _start, goals = handover_collision_course()
    sim = handover_sim
    sim.reset()
    _blocked, trace = drive(sim, goals, None, seconds=5.0)
    distances = [arm_arm_distance(both_arms_scene, state["left"], state["right"]) for state in trace]
    assert min(distances) < 0.0


def table_piercing_pose():
    """The pour task's left arm reaching down through the table top in front of it."""
    task = get_task("pour_water_single")
    left = task.init_joints("left")
    left[1], left[2] = 2.3, -0.9
    return task, left


def test_setpoint_through_the_table_is_held(guards, both_arms_scene):
    task, left = table_piercing_pose()
    right = task.init_joints("right")
    slack, pair, kind = both_arms_scene.clearance(left, right, 0.0, horizon_m=0.3)
    assert kind == "table" and slack < -0.02  # the pose really is through the table
    verdict = guards["left"].check(left, right, 0.0, 0.0)
    assert not verdict.ok and verdict.reason == "table" and "table_link" in verdict.pair


def test_arm_driven_into_the_table_stops_above_it():
    from sim2real_vla_ros.sim.simulator import Simulator

    task, target = table_piercing_pose()
    guards = {side: CollisionGuard(side) for side in ARMS}
    sim = Simulator(task, jitter=False)
    try:
        blocked, _trace = drive(sim, (target, task.init_joints("right")), guards, seconds=4.0)
        assert blocked["table"] > 0
        assert robot_contacts(sim, guards["left"].scene.groups)["table"] == 0
    finally:
        sim.close()


def test_stale_or_missing_other_arm_blocks(guards):
    task = get_task("pour_water_dual")
    left, right = task.init_joints("left"), task.init_joints("right")
    assert guards["left"].check(left, right, 0.0, 0.5).ok
    assert guards["left"].check(left, None, 0.0, 0.5).reason == "other_state_stale"
    assert guards["left"].check(left, right, None, 0.5).reason == "other_state_stale"
    assert guards["left"].check(left, right, 0.5, 0.5).reason == "other_state_stale"
    assert guards["left"].check(np.full(7, np.nan), right, 0.0, 0.5).reason == "bad_input"


def test_other_arm_allowance_grows_with_age_and_speed(guards, both_arms_scene):
    """A pose 4 cm from the other arm passes when it is known to be still, not when it may move."""
    _task, start, goals = handover_collision_course()
    fractions = np.linspace(0, 1, 101)
    for fraction in fractions:
        left = start[0] + fraction * (goals[0] - start[0])
        right = start[1] + fraction * (goals[1] - start[1])
        if arm_arm_distance(both_arms_scene, left, right) < 0.04:
            break
    guard = guards["left"]
    assert guard.check(left, right, 0.0, 0.0).ok
    assert not guard.check(left, right, 0.09, 1.0).ok
    sweep = guard.other_sweep(0.08, 1.0)
    assert sweep == pytest.approx((guard.other_radii.sum() + 1.0) * (0.08 + guard.horizon_s))


def test_velocity_bound_is_mean_speed_under_the_acceleration_limit():
    bound = velocity_bound([0.2] * 7, [5.0] * 7, [8.0] * 7, 0.05)
    assert bound == pytest.approx([0.2 + 0.5 * 8.0 * 0.05] * 7)
    assert velocity_bound(None, [5.0] * 7, [8.0] * 7, 0.05) == pytest.approx([5.0] * 7)
    assert velocity_bound([4.9] * 7, [5.0] * 7, [8.0] * 7, 0.05) == pytest.approx([5.0] * 7)


def test_motion_radii_bound_the_actual_point_motion(both_arms_scene):
    """Joint i turning by dq moves no geom centre further than radius_i * dq (random poses)."""
    scene = both_arms_scene
    radii = scene.motion_radii("left")
    rng = np.random.default_rng(0)
    own = scene.geom_side == 1
    right = get_task("pour_water_single").init_joints("right")
    for _ in range(50):
        q = collision.random_arm_configuration("left", rng)
        scene.pose(q, right)
        before = scene.data.geom_xpos[own].copy()
        joint = int(rng.integers(6))
        dq = 0.05
        q2 = q.copy()
        q2[joint] += dq
        scene.pose(q2, right)
        moved = np.linalg.norm(scene.data.geom_xpos[own] - before, axis=1).max()
        assert moved <= radii[joint] * dq + 1e-9


def test_check_path_stops_at_the_first_blocked_point(guards):
    task, through = table_piercing_pose()
    left, right = task.init_joints("left"), task.init_joints("right")
    points = np.stack([left + k / 10 * (through - left) for k in range(11)])
    n_ok, verdict = guards["left"].check_path(points, right, 0.0, 0.0)
    assert 0 < n_ok < 11 and not verdict.ok and verdict.reason == "table"


def test_counters_and_diagnostics():
    guard = CollisionGuard("right")
    task = get_task("pour_water_dual")
    left, right = task.init_joints("left"), task.init_joints("right")
    guard.check(right, left, 0.0, 0.0)
    guard.check(right, None, 0.0, 0.0)
    values = guard.diagnostics()
    assert values["collision_guard.checks"] == 2
    assert values["collision_guard.blocked.other_state_stale"] == 1
    assert values["collision_guard.blocked.arm_arm"] == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        CollisionGuard("middle")
    with pytest.raises(ValueError):
        CollisionGuard("left", {"elbow": 0.1})
    with pytest.raises(ValueError):
        CollisionGuard("left", -0.01)


# ------------------------------------------------------------------ no false stops

def _minimum_jerk(a, b, steps):
    s = np.arange(1, steps + 1) / steps
    return a[None] + (b - a)[None] * (10 * s**3 - 15 * s**4 + 6 * s**5)[:, None, None]


@pytest.fixture(scope="module")
def mask_classes():
    from training import make_reference_bundle as generator

    _instructions, kinds = generator.task_instructions_and_objects(generator.default_tasks_file())
    return ["background", *kinds]


@pytest.mark.parametrize("task_name", list(load_tasks()))
def test_no_false_stops_on_the_expert_and_the_reference_data(task_name, mask_classes, guards):
    """The data engine's expert (start -> pre-grasp -> grasp, both arms at once, 50 Hz) and the
    configurations the reference models were trained on (sim_data_engine's sampling).

    A *false* stop blocks a setpoint whose geometry is clear (raw distance > 0): only margins
    and motion allowances made it fail. Stops where the expert's setpoint itself puts a finger
    into the table (its IK ignores the finger length) are true stops, counted apart.
    """
    from training import make_reference_bundle as generator
    from training import sim_data_engine as engine

    scene = engine.TaskScene(load_tasks()[task_name], mask_classes, (generator.IMAGE_WIDTH, generator.IMAGE_HEIGHT))
    stops = collections.Counter()
    rng = np.random.default_rng(0)
    try:
        for seed in range(3):
            scene.reset(seed)
            keys = scene.key_poses()
            start = np.stack([scene.initial_joints(side) for side in ARMS])
            path = np.concatenate([start[None], _minimum_jerk(start, keys["pre_grasp_joints"], 100),
                                   _minimum_jerk(keys["pre_grasp_joints"], keys["grasp_joints"], 50)])
            for k in range(1, len(path)):
                for index, side in enumerate(ARMS):
                    other = 1 - index
                    velocity = (path[k - 1, other] - path[max(k - 2, 0), other]) / DT
                    bound = velocity_bound(velocity, VMAX[OTHER[side]], AMAX, DT + guards[side].horizon_s)
                    verdict = guards[side].check(path[k, index], path[k - 1, other], DT, bound, path[k - 1, index])
                    _count(stops, "expert", verdict)
        for seed in range(20):
            scene.reset(100 + seed)
            joints = np.stack([scene.random_configuration(side, rng) for side in ARMS])
            keys = scene.key_poses()
            for index in range(2):
                if keys["active"][index] and rng.random() < engine.APPROACH_SHARE:
                    key = keys["pre_grasp_joints" if rng.random() < 0.7 else "grasp_joints"][index]
                    joints[index, :6] += rng.uniform() * (key[:6] - joints[index, :6])
            for index, side in enumerate(ARMS):
                verdict = guards[side].check(joints[index], joints[1 - index], DT, 0.5)
                _count(stops, "reference", verdict)
    finally:
        scene.close()
    print(task_name, dict(stops))
    assert stops["expert.false"] == 0 and stops["reference.false"] == 0, dict(stops)


def _count(stops, source, verdict: GuardVerdict) -> None:
    stops[f"{source}.checks"] += 1
    if not verdict.ok:
        stops[f"{source}.{'false' if verdict.distance_m > 0 else 'true'}"] += 1
        stops[f"{source}.{verdict.reason}"] += 1


def test_actor_wiring_blocks_before_the_filter_commits_and_holds_the_last_command(guards):
    """The proposed per-tick wiring: check the filter's preview, hold with estop=True when blocked."""
    from sim2real_vla_ros.core.control.collision_guard import OtherArmState
    from sim2real_vla_ros.core.control.safety import SafetyFilter, SafetyLimits

    _task, start, goals = handover_collision_course()
    limits = SafetyLimits.from_config(robot.arm_limits("left"), {"max_input_age_s": {"joint_state": 0.1}})
    safety = SafetyFilter(limits)
    other = OtherArmState(goals[1], np.zeros(7), 0.0, robot.arm_limits("right").velocity, AMAX)
    measured = start[0].copy()
    sent = []
    for tick in range(400):
        now = tick * DT
        other = OtherArmState(goals[1], np.zeros(7), now, other.max_velocity, other.max_acceleration)
        verdict = guards["left"].check_next_command(safety, goals[0], measured, other, now, DT)
        blocked = verdict is not None and not verdict.ok
        decision = safety.filter(goals[0], measured, now, {"joint_state": now}, blocked, DT)
        if blocked:
            np.testing.assert_allclose(decision.command, sent[-1])  # held the last sent command
            break
        sent.append(decision.command)
        measured = decision.command  # perfect tracking
    else:
        pytest.fail("the guard never blocked")
    scene = collision.CollisionScene(None)
    assert arm_arm_distance(scene, sent[-1], goals[1]) >= DEFAULT_MARGINS_M["arm_arm"] - 1e-9
    tail = np.stack([sent[-1] + k * (goals[0] - sent[-1]) / 5 for k in range(6)])
    n = guards["left"].check_trajectory_tail(tail, other, now)
    assert 1 <= n < 6
