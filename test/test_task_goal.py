"""core.task.task_goal: when an ExecuteTask goal ends and with which outcome, on a real chain."""
import numpy as np
import pytest
from sim2real_vla_interfaces.action import ExecuteTask

from sim2real_vla_ros.core.task import task_goal
from sim2real_vla_ros.core.task.affordance_chain import AffordanceChain
from sim2real_vla_ros.core.task.task_goal import GoalLimits, TaskGoal
from sim2real_vla_ros.core.task.validator_gate import GateEvent

KEYPOINTS = np.array([[[4.0, 6.0], [12.0, 3.0]], [[8.0, 6.0], [9.0, 9.0]]])


def test_outcomes_are_the_actions_constants():
    for name, value in task_goal.OUTCOME_NAMES.items():
        assert getattr(ExecuteTask.Result, f"OUTCOME_{value.upper()}") == name


def chain_at(index):
    """A running chain with affordance ``index`` current (the ones before it achieved)."""
    chain = AffordanceChain(image_size=(16, 12), keypoints_per_arm=2, max_steps=10)
    chain.start("pick up the cup", 0.0)
    for step in range(index + 1):
        request = chain.request_prediction(float(step))
        chain.on_prediction(request.request_id, KEYPOINTS, [0.9, 0.1], 0.0, float(step), float(step))
        if step < index:
            assert chain.on_gate_event(GateEvent.OPEN, float(step) + 0.5, step)
    return chain


def test_running_goal_has_no_verdict_until_its_limits():
    chain = chain_at(0)
    goal = TaskGoal(GoalLimits(timeout_s=5.0), started_s=0.0)
    assert goal.check(chain.state, 4.9) is None
    verdict = goal.check(chain.state, 5.0)
    assert verdict.outcome == task_goal.OUTCOME_TIMED_OUT and verdict.stop_chain and not verdict.success
    assert TaskGoal(GoalLimits(), 0.0).check(chain.state, 1e6) is None  # no timeout: runs on


def test_max_steps_fails_once_the_next_affordance_is_beyond_it():
    goal = TaskGoal(GoalLimits(max_steps=2), started_s=0.0)
    assert goal.check(chain_at(1).state, 1.0) is None
    verdict = goal.check(chain_at(2).state, 2.0)
    assert verdict.outcome == task_goal.OUTCOME_FAILED and verdict.stop_chain and "max_steps=2" in verdict.reason


def test_terminal_phases_cancel_and_supersession():
    goal = TaskGoal(GoalLimits(), started_s=0.0)
    chain = chain_at(1)
    chain.on_gate_event(GateEvent.OPEN, 3.0, 1)
    request = chain.request_prediction(3.5)
    chain.on_prediction(request.request_id, KEYPOINTS, [0.9, 0.1], 0.9, 3.5, 3.5)
    verdict = goal.check(chain.state, 4.0)
    assert verdict.outcome == task_goal.OUTCOME_SUCCEEDED and verdict.success and not verdict.stop_chain
    running = chain_at(0)
    verdict = goal.check(running.state, 1.0, cancel_requested=True)
    assert verdict.outcome == task_goal.OUTCOME_CANCELED and verdict.stop_chain
    running.abort("retries exhausted", 1.0)
    assert goal.check(running.state, 1.0).outcome == task_goal.OUTCOME_ABORTED
    stopped = chain_at(0)
    stopped.stop("vla/stop", 1.0)
    assert goal.check(stopped.state, 1.0).outcome == task_goal.OUTCOME_STOPPED
    goal.superseded = True
    assert goal.check(chain_at(0).state, 1.0).outcome == task_goal.OUTCOME_STOPPED


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="timeout_s"):
        GoalLimits(timeout_s=float("nan"))
    with pytest.raises(ValueError, match="max_steps"):
        GoalLimits(max_steps=-1)
