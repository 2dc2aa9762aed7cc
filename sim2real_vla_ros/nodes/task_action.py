"""The planner's ExecuteTask action server (``vla/execute_task``): one task to its end, with feedback.

The interface a behaviour tree or an operator script uses. A goal (re)starts the chain with
its instruction (as ``vla/start`` does; an empty instruction = the last one), and the goal's
verdict comes from :class:`~sim2real_vla_ros.core.task.task_goal.TaskGoal`: the chain's own
phase (the graph's judgement), the goal's timeout and step limit, or a cancel. Cancel = stop
and hold (as ``vla/stop``): the chain stops at once in the cancel callback, the result then
says how far it got. A newer goal ends the current one with ``OUTCOME_STOPPED``.

Feedback at the planner rate (node clock): phase, affordance index, retries, per arm the
target, the validator's view (``vla/task_state``) and the actor's progress
(``vla/actor_<arm>/status``: chunks spliced during the goal, held), and the last validator
decision (built from the newest TaskState: the validator publishes it whenever a decision
changes what it sees).

Threads: everything here runs on the node's SingleThreadedExecutor. The execute callback is a
coroutine that awaits a Future the goal timer completes, so feedback, cancels, services and the
e-stop are served while a goal runs (rclpy's MultiThreadedExecutor busy-waits holding the GIL,
see node_support.BackgroundWorker).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

from builtin_interfaces.msg import Duration
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future
from sim2real_vla_interfaces.action import ExecuteTask
from sim2real_vla_interfaces.msg import ActorStatus, ArmProgress, TaskState, ValidatorDecision, ValidatorEvent

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.task.affordance_chain import ChainPhase, ChainState
from sim2real_vla_ros.core.task.task_goal import OUTCOME_FAILED, GoalLimits, GoalVerdict, TaskGoal
from sim2real_vla_ros.core.vocabulary import ARMS
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.task_messages import PHASE_TO_MSG

SOURCE = "vla/execute_task"


def to_duration(seconds: float) -> Duration:
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class _Run:
    """The goal being executed: its handle, its supervision, the baseline of the actors' counters."""

    def __init__(self, handle, goal: TaskGoal, chunks_at_start: Dict[int, int]) -> None:
        self.handle = handle
        self.goal = goal
        self.chunks_at_start = chunks_at_start
        self.done = Future()


class ExecuteTaskServer:
    """ExecuteTask on a planner node (see the module docstring).

    Parameters
    ----------
    node : rclpy.node.Node
        The planner node (its clock, subscriptions, timer).
    start : callable
        ``start(instruction or None, source, task_name) -> (success, message)``: the node's start.
    stop : callable
        ``stop(reason)``: stop the chain and hold.
    snapshot : callable
        ``snapshot() -> ChainState``: the chain now (taken under the node's lock).
    rate_hz : float
        Feedback and supervision rate (node clock).
    """

    def __init__(self, node, start: Callable[[Optional[str], str, str], Tuple[bool, str]],
                 stop: Callable[[str], None], snapshot: Callable[[], ChainState], rate_hz: float) -> None:
        self.node = node
        self._start, self._stop, self._snapshot = start, stop, snapshot
        self._run: Optional[_Run] = None
        self._task_state: Optional[TaskState] = None
        self._actor_status: Dict[int, ActorStatus] = {}
        node.create_subscription(TaskState, vocab.TASK_STATE, self._on_task_state, common.LATCHED_QOS)
        for slot, arm in enumerate(ARMS):
            node.create_subscription(ActorStatus, vocab.actor_status_topic(arm),
                                     lambda msg, s=slot: self._actor_status.__setitem__(s, msg), common.COMMAND_QOS)
        self._server = ActionServer(node, ExecuteTask, vocab.EXECUTE_TASK_ACTION, execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=self._on_cancel)
        node.create_timer(1.0 / rate_hz, self._step)

    def destroy(self) -> None:
        self._server.destroy()

    # ------------------------------------------------------------------ inputs
    def _on_task_state(self, msg: TaskState) -> None:
        self._task_state = msg

    def _on_goal(self, goal) -> GoalResponse:
        """Accept every well-formed goal; a refused start aborts it with the reason (a result
        can say why, a rejection cannot)."""
        try:
            GoalLimits(float(goal.timeout_s), int(goal.max_steps))
        except ValueError as exc:
            self.node.get_logger().warning(f"{SOURCE}: goal rejected: {exc}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, handle) -> CancelResponse:
        run = self._run
        if run is not None and bytes(run.handle.goal_id.uuid) == bytes(handle.goal_id.uuid):
            # Stop and hold now; the next step reports the cancel with how far it got.
            self._stop(f"{SOURCE}: goal canceled")
        return CancelResponse.ACCEPT

    # ------------------------------------------------------------------ execution
    async def _execute(self, handle):
        goal = handle.request
        previous = self._run
        if previous is not None and not previous.done.done():
            previous.goal.superseded = True
            self._finish(previous, previous.goal.check(self._snapshot(), self._now()))
        limits = GoalLimits(float(goal.timeout_s), int(goal.max_steps))
        ok, message = self._start(goal.instruction or None, SOURCE, goal.task_name)
        now = self._now()
        run = _Run(handle, TaskGoal(limits, now),
                   {slot: status.chunks_spliced for slot, status in self._actor_status.items()})
        if not ok:
            self._finish(run, GoalVerdict(OUTCOME_FAILED, False, f"start refused: {message}", False))
        else:
            self.node.get_logger().info(f"{SOURCE}: {message}")
            self._run = run
        return await run.done

    def _now(self) -> float:
        return common.now_seconds(self.node)

    def _step(self) -> None:
        """At the planner rate: end the goal if its verdict is in, else send feedback."""
        run = self._run
        if run is None or run.done.done():
            return
        state, now = self._snapshot(), self._now()
        verdict = run.goal.check(state, now, run.handle.is_cancel_requested)
        if verdict is None:
            run.handle.publish_feedback(self._feedback(run, state, now))
        else:
            self._finish(run, verdict)

    def _finish(self, run: _Run, verdict: GoalVerdict) -> None:
        if verdict.stop_chain and self._snapshot().phase == ChainPhase.RUNNING:
            self._stop(f"{SOURCE}: {verdict.reason}")
        state, now = self._snapshot(), self._now()
        result = ExecuteTask.Result(success=verdict.success, outcome=verdict.outcome,
                                    phase=PHASE_TO_MSG[state.phase.value], reason=verdict.reason,
                                    steps=state.achieved_count, retries=state.total_retries,
                                    duration=to_duration(run.goal.elapsed_s(now)))
        handle = run.handle
        if verdict.outcome == ExecuteTask.Result.OUTCOME_CANCELED and handle.is_cancel_requested:
            handle.canceled()
        elif verdict.success:
            handle.succeed()
        else:
            handle.abort()
        if self._run is run:
            self._run = None
        self.node.get_logger().info(f"{SOURCE}: goal ended ({verdict.reason})")
        run.done.set_result(result)

    # ------------------------------------------------------------------ feedback
    def _feedback(self, run: _Run, state: ChainState, now: float) -> ExecuteTask.Feedback:
        feedback = ExecuteTask.Feedback(phase=PHASE_TO_MSG[state.phase.value], affordance_index=state.index,
                                        retries=state.retries, elapsed=to_duration(run.goal.elapsed_s(now)))
        task = self._task_state
        validated = task is not None and state.current is not None and task.index == state.index
        arms = []
        for slot, _arm in enumerate(ARMS):
            active = state.current is not None and bool(state.current.arm_active[slot])
            progress = ArmProgress(arm=slot, active=active, achieved=False, probability=math.nan)
            if validated:
                progress.achieved = bool(task.arms[slot].achieved)
                progress.probability = float(task.arms[slot].probability)
            status = self._actor_status.get(slot)
            if status is not None:
                start = run.chunks_at_start.get(slot, 0)
                progress.chunks_spliced = max(0, status.chunks_spliced - start)
                progress.held = bool(status.held)
            arms.append(progress)
        feedback.arms = arms
        if task is not None:
            feedback.last_decision = ValidatorDecision(header=task.header, index=task.index, seq=task.seq,
                                                       arms=list(task.arms), gate=task.gate,
                                                       event=ValidatorEvent.EVENT_NONE, reason=task.last_reason)
        return feedback


__all__ = ["ExecuteTaskServer", "SOURCE", "to_duration"]
