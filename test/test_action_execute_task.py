"""ExecuteTask across processes: the real planner (the action server) and a scripted validator, an
rclpy ActionClient in the test process. Goal -> feedback -> success as judged by the graph; cancel =
stop and hold; the validator's abort, a timeout and a refused start end the goal with their outcome.

The planner models are constants (test/model_factory): left arm active, ``done`` either 0.9 (the
task succeeds once one affordance is validated) or 0 (it never does). The validator's
``scripted_probabilities`` hook decides the gate (1.0: opens; 0.0: re-plans, then aborts).
"""
import math
import os

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from action_msgs.srv import CancelGoal
from geometry_msgs.msg import PolygonStamped
from rclpy.action import ActionClient
from sim2real_vla_interfaces.action import ExecuteTask
from sim2real_vla_interfaces.msg import PlanState, TaskState, ValidatorEvent

from model_factory import INSTRUCTIONS, make_constant_model, write_bundle
from ros_harness import Probe, WallClock, wait_for
from sim2real_vla_ros.nodes import common
from test_node_validator import KEYPOINTS, SyntheticInputs, start_graph, stop_all

pytestmark = pytest.mark.integration
ACTION = "/vla/execute_task"


def write_planner_bundle(folder, done):
    manifest = write_bundle(folder)
    entry = manifest["models"]["planner"]
    pairs = {kind: {name: (spec["dtype"], tuple(spec["shape"])) for name, spec in entry[kind].items()}
             for kind in ("inputs", "outputs")}
    make_constant_model(os.path.join(folder, entry["file"]), pairs["inputs"], pairs["outputs"],
                        values={"keypoints": KEYPOINTS, "arm_active": np.array([[0.9, 0.2]], np.float32),
                                "done": np.array([done], np.float32)})
    return folder


@pytest.fixture(scope="module")
def done_bundle(tmp_path_factory):
    return write_planner_bundle(str(tmp_path_factory.mktemp("done_bundle")), 0.9)


@pytest.fixture(scope="module")
def never_done_bundle(tmp_path_factory):
    return write_planner_bundle(str(tmp_path_factory.mktemp("never_done_bundle")), 0.0)


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("execute_task_probe", use_sim_time=False)
    probe.subscribe(PlanState, "/vla/plan_state", common.LATCHED_QOS)
    probe.subscribe(TaskState, "/vla/task_state", common.LATCHED_QOS)
    probe.subscribe(ValidatorEvent, "/vla/validator/event", common.COMMAND_QOS)
    probe.subscribe(PolygonStamped, "/vla/affordance/left", common.LATCHED_QOS)
    probe.inputs = SyntheticInputs(probe)
    probe.clock = WallClock(probe)
    probe.client = ActionClient(probe.node, ExecuteTask, ACTION)
    yield probe
    probe.client.destroy()
    probe.clock.close()
    probe.shutdown()
    rclpy.shutdown()


class Goal:
    """One goal sent from the probe: its handle, the feedback it got, its result."""

    def __init__(self, probe, nodes, goal):
        self.probe, self.nodes, self.feedback = probe, nodes, []
        assert probe.client.wait_for_server(timeout_sec=30.0), "no ExecuteTask server"
        sent = probe.client.send_goal_async(goal, feedback_callback=lambda m: self.feedback.append(m.feedback))
        self.handle = wait_for(lambda: sent.done() and sent.result(), 30.0, "the goal response", processes=nodes)
        assert self.handle.accepted
        self._result = self.handle.get_result_async()

    def result(self, timeout=60.0):
        return wait_for(lambda: self._result.done() and self._result.result(), timeout, "the goal's result",
                        processes=self.nodes)

    def cancel(self):
        future = self.handle.cancel_goal_async()
        return wait_for(lambda: future.done() and future.result(), 30.0, "the cancel response",
                        processes=self.nodes)


def test_goal_feedback_and_success_as_judged_by_the_graph(done_bundle, probe):
    planner, validator = start_graph(done_bundle, probe, {"scripted_probabilities": "1.0"})
    nodes = [planner, validator]
    try:
        goal = Goal(probe, nodes, ExecuteTask.Goal(instruction=INSTRUCTIONS[0], timeout_s=120.0))
        outcome = goal.result()
        assert outcome.status == GoalStatus.STATUS_SUCCEEDED, outcome.result
        result = outcome.result
        assert result.success and result.outcome == ExecuteTask.Result.OUTCOME_SUCCEEDED
        assert result.phase == PlanState.PHASE_SUCCEEDED and result.steps >= 1 and "succeeded" in result.reason
        assert result.duration.sec > 0 or result.duration.nanosec > 0
        # Feedback at the planner rate (5 Hz) while it ran: the left arm's target, the validator's view.
        assert goal.feedback, "no feedback"
        assert all(f.phase == PlanState.PHASE_RUNNING for f in goal.feedback)
        assert any(f.arms[0].active and not f.arms[1].active for f in goal.feedback)
        # The validator's view (the gate may open before a feedback carried a decision: 2 decisions
        # at 10 Hz): every probability seen is the scripted one, NaN before the first decision.
        seen = [p for f in goal.feedback for p in (f.arms[0].probability, f.last_decision.arms[0].probability)]
        assert all(p == pytest.approx(1.0) for p in seen if not math.isnan(p)), seen
        assert all(math.isnan(f.arms[1].probability) for f in goal.feedback)  # right arm: no target
    finally:
        stop_all(*nodes)


def test_cancel_stops_and_holds_then_a_timeout_and_a_refused_start(never_done_bundle, probe):
    planner, validator = start_graph(never_done_bundle, probe,
                                     {"scripted_probabilities": "0.0", "step_timeout_s": 600.0})
    nodes = [planner, validator]
    try:
        goal = Goal(probe, nodes, ExecuteTask.Goal(instruction=INSTRUCTIONS[0]))
        wait_for(lambda: len(goal.feedback) >= 2 and goal.feedback[-1].arms[0].active, 30.0,
                 "feedback with a target", processes=nodes)
        cancel = goal.cancel()
        assert cancel.return_code == CancelGoal.Response.ERROR_NONE
        outcome = goal.result()
        assert outcome.status == GoalStatus.STATUS_CANCELED
        result = outcome.result
        assert result.outcome == ExecuteTask.Result.OUTCOME_CANCELED and not result.success
        assert result.phase == PlanState.PHASE_IDLE
        # Stop and hold: the planner is idle with no target, the arm's polygon empty.
        wait_for(lambda: (s := probe.received("/vla/plan_state")) and s[-1].phase == PlanState.PHASE_IDLE
                 and not s[-1].has_affordance, 10.0, "plan_state idle", processes=nodes)
        wait_for(lambda: probe.received("/vla/affordance/left")[-1].polygon.points == [], 10.0,
                 "an empty left polygon", processes=nodes)

        timed = Goal(probe, nodes, ExecuteTask.Goal(instruction=INSTRUCTIONS[0], timeout_s=1.0))
        outcome = timed.result()
        assert outcome.status == GoalStatus.STATUS_ABORTED
        assert outcome.result.outcome == ExecuteTask.Result.OUTCOME_TIMED_OUT
        assert outcome.result.phase == PlanState.PHASE_IDLE and "timed out" in outcome.result.reason

        refused = Goal(probe, nodes, ExecuteTask.Goal(instruction="juggle three eggs"))
        outcome = refused.result()
        assert outcome.status == GoalStatus.STATUS_ABORTED
        assert outcome.result.outcome == ExecuteTask.Result.OUTCOME_FAILED
        assert "start refused" in outcome.result.reason and "juggle" in outcome.result.reason
    finally:
        stop_all(*nodes)


def test_validator_abort_aborts_the_goal_and_a_newer_goal_stops_the_older(never_done_bundle, probe):
    planner, validator = start_graph(never_done_bundle, probe,
                                     {"scripted_probabilities": "0.0", "step_timeout_s": 1.0, "max_retries": 1},
                                     {"max_retries": 1})
    nodes = [planner, validator]
    try:
        first = Goal(probe, nodes, ExecuteTask.Goal(instruction=INSTRUCTIONS[0]))
        wait_for(lambda: first.feedback, 30.0, "feedback of the first goal", processes=nodes)
        second = Goal(probe, nodes, ExecuteTask.Goal(instruction=INSTRUCTIONS[0]))
        outcome = first.result()
        assert outcome.status == GoalStatus.STATUS_ABORTED
        assert outcome.result.outcome == ExecuteTask.Result.OUTCOME_STOPPED and "newer goal" in outcome.result.reason

        outcome = second.result()
        assert outcome.status == GoalStatus.STATUS_ABORTED
        result = outcome.result
        assert result.outcome == ExecuteTask.Result.OUTCOME_ABORTED and result.phase == PlanState.PHASE_ABORTED
        assert result.retries == 1 and not result.success
    finally:
        stop_all(*nodes)
