"""MotionPermit and its use in ActorController: the e-stop latch, start after release, the
planner heartbeat, and the affordance index check (ROS-free, no rclpy)."""
import math

import numpy as np
import pytest

from sim2real_vla_ros.core.bounded_text import MAX_ECHO_CHARS, bounded
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController, affordance_problem
from sim2real_vla_ros.core.control.motion_permit import MotionPermit

from test_actor_controller import CHUNK_DT, DT, World, limits

TIMEOUT = 1.5


def running_permit(now=0.0):
    """A permit that came up at ``now``, got a heartbeat and a run started after it."""
    permit = MotionPermit(TIMEOUT)
    assert permit.hold_reason(now) == "no_planner_heartbeat"
    permit.on_heartbeat("boot-a", now)
    permit.on_plan(True, now + 0.1)
    assert permit.hold_reason(now + 0.2) is None
    return permit


def test_comes_up_held_and_does_not_resume_a_run_started_before_it():
    permit = MotionPermit(TIMEOUT)
    permit.on_heartbeat("boot-a", 10.0)
    assert permit.hold_reason(10.0) == "awaiting_start"  # no run yet
    permit.on_plan(True, 5.0, written_before_start=True)  # the latched sample of a run going on before
    assert permit.hold_reason(10.0) == "awaiting_start"
    permit.on_plan(True, 5.0)  # a newer sample of that run (index change): still not joined
    permit.on_heartbeat("boot-a", 10.5)
    assert permit.hold_reason(10.5) == "awaiting_start"
    permit.on_plan(True, 11.0)  # a new start
    assert permit.hold_reason(11.1) is None
    assert permit.counts["run_predates_start"] == 1


def test_a_run_started_while_the_actor_was_coming_up_is_joined():
    """A fresh graph: the planner may start the run before a loaded actor's first tick."""
    permit = MotionPermit(TIMEOUT)
    permit.on_heartbeat("boot-a", 1.3)
    permit.on_plan(True, 0.77)  # written after this process started
    assert permit.hold_reason(1.35) is None


def test_engage_holds_and_a_release_alone_never_moves():
    permit = running_permit()
    assert permit.engage()
    assert permit.hold_reason(0.3) == "estop"
    assert permit.release(0.4)
    permit.on_heartbeat("boot-a", 0.5)
    assert permit.hold_reason(0.5) == "awaiting_start"  # same run (started 0.1): no motion
    permit.on_plan(True, 0.45)
    assert permit.hold_reason(0.6) is None  # a run started after the release
    assert permit.counts == {"estop_engaged": 1, "estop_released": 1, "run_not_permitted": 1}


def test_release_without_a_time_takes_the_next_tick():
    permit = running_permit()
    permit.engage()
    permit.release()
    permit.on_heartbeat("boot-a", 1.0)
    assert permit.hold_reason(1.0) == "awaiting_start"
    permit.on_plan(True, 0.9)
    assert permit.hold_reason(1.1) == "awaiting_start"


def test_planner_lost_holds_after_the_timeout_and_same_process_resumes():
    permit = running_permit()
    assert permit.hold_reason(TIMEOUT) is None  # last heartbeat at 0
    assert permit.hold_reason(TIMEOUT + DT) == "planner_lost"
    assert permit.hold_reason(3.0) == "planner_lost"
    assert permit.counts["planner_lost"] == 1
    permit.on_heartbeat("boot-a", 3.1)  # the same planner process (a stall): its run goes on
    assert permit.hold_reason(3.1) is None


def test_a_restarted_planner_needs_a_new_start():
    permit = running_permit()
    permit.on_heartbeat("boot-b", 5.0)  # another planner process
    permit.on_plan(True, 0.1)  # even a stale plan_state of the old run
    assert permit.hold_reason(5.0) == "awaiting_start"
    permit.on_plan(True, 5.5)
    assert permit.hold_reason(5.6) is None
    assert permit.counts["planner_restarted"] == 1


def test_not_running_or_unknown_run_start_holds():
    permit = running_permit()
    permit.on_plan(False, 0.1)
    assert permit.hold_reason(0.3) == "awaiting_start"
    permit.on_plan(True, None)
    assert permit.hold_reason(0.3) == "awaiting_start"
    permit.on_plan(True, float("nan"))
    assert permit.hold_reason(0.3) == "awaiting_start"


def test_bad_timeout_is_refused():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            MotionPermit(bad)


def permitted_world():
    permit = MotionPermit(TIMEOUT)
    actor = ActorController(ActorConfig(arm="left", output_mode="stream"), limits(), CHUNK_DT, keypoints_per_arm=1,
                            permit=permit)
    world = World(actor)
    permit.on_heartbeat("boot-a", 0.0)
    world.step()  # first tick: the permit's "came up" time
    permit.on_plan(True, world.now)
    return world, permit


def beat_and_step(world, permit, ticks):
    for _ in range(ticks):
        permit.on_heartbeat("boot-a", world.now)
        world.step()


def moved(world, ticks):
    commands = np.array([o.command for o in world.outputs[-ticks:]])
    return float(np.ptp(commands[:, 0]))


def test_controller_moves_only_with_the_permit_and_holds_within_one_tick():
    world, permit = permitted_world()
    beat_and_step(world, permit, 40)
    assert world.outputs[-1].active and moved(world, 20) > 0.1
    world.actor.set_estop(True, world.now)
    output = world.step()
    assert not output.active and output.decision.held
    assert world.actor.hold_reason == "estop"
    world.actor.set_estop(False, world.now)
    beat_and_step(world, permit, 60)
    assert not world.outputs[-1].active and moved(world, 10) < 1e-9  # released, same run: at rest
    assert world.actor.hold_reason == "awaiting_start"
    permit.on_plan(True, world.now)  # a fresh start
    beat_and_step(world, permit, 40)
    assert world.outputs[-1].active and moved(world, 20) > 0.1


def test_controller_holds_when_the_planner_heartbeat_stops():
    world, permit = permitted_world()
    beat_and_step(world, permit, 40)
    last_beat = world.now - DT
    while world.now - last_beat <= TIMEOUT:
        assert world.step().active
    held = world.step()
    assert not held.active and world.actor.hold_reason == "planner_lost"
    assert world.actor.diagnostics()["permit.count.planner_lost"] == 1


@pytest.mark.parametrize("index", [float("nan"), float("inf"), 1e30, -1.0, 2.5, None, "3"])
def test_an_affordance_index_that_is_no_chain_index_is_no_target(index):
    assert affordance_problem(np.array([[1.0, 2.0]]), index) is not None
    world, permit = permitted_world()
    world.actor.on_affordance(np.array([[320.0, 240.0]]), index, world.now)
    assert world.actor.target() is None
    assert world.actor.faults.snapshot()["malformed_affordance"] == 1
    beat_and_step(world, permit, 3)
    assert not world.outputs[-1].active


def test_valid_affordance_indices():
    for index in (0, 3.0, 1000):
        assert affordance_problem(np.array([[1.0, 2.0]]), index) is None
    assert affordance_problem(np.array([[math.nan, 2.0]]), 1) is not None


def test_bounded_text():
    assert bounded("abc") == "abc"
    long = "x" * (MAX_ECHO_CHARS + 100)
    cut = bounded(long)
    assert cut.startswith("x" * MAX_ECHO_CHARS) and "100 more characters cut" in cut and len(cut) < MAX_ECHO_CHARS + 50
