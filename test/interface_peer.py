"""The other process of test_interfaces.py: publishes every sim2real_vla_interfaces message and
serves StartTask and a stand-in ExecuteTask action (the real server comes with the planner).

Run as ``python test/interface_peer.py --ros-args -r __node:=interface_peer -p prefix:=...``.

- ``<prefix>/msg/<Type>``: `interface_samples.sample(<Type>)`, latched (transient local, depth 1),
  published once, so a subscriber that joins later still receives it.
- ``<prefix>/start`` (StartTask): success for a non-empty instruction; the message echoes the
  request's fields, so the test sees that they crossed.
- ``<prefix>/execute_task`` (ExecuteTask): rejects an empty instruction. Otherwise sends one
  feedback every ``feedback_period_s`` with ``affordance_index`` 0, 1, ..., and succeeds after
  ``goal.max_steps`` of them; ``max_steps`` 0 runs until canceled. Cancel is accepted: the
  result then has OUTCOME_CANCELED and phase idle (what "stop and hold" reports).

The execute callback is a coroutine that awaits timer-completed futures, so one
SingleThreadedExecutor serves feedback, cancel requests and results concurrently (rclpy's
MultiThreadedExecutor busy-waits holding the GIL, see node_support.BackgroundWorker).
"""
from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # interface_samples beside this file

import rclpy  # noqa: E402
from builtin_interfaces.msg import Duration  # noqa: E402
from rclpy.action import ActionServer, CancelResponse, GoalResponse  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.task import Future  # noqa: E402

from interface_samples import installed_message_names, message_class, sample  # noqa: E402
from sim2real_vla_interfaces.action import ExecuteTask  # noqa: E402
from sim2real_vla_interfaces.msg import ArmProgress, PlanState, ValidatorDecision  # noqa: E402
from sim2real_vla_interfaces.srv import StartTask  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class InterfacePeer(Node):
    def __init__(self) -> None:
        super().__init__("interface_peer")
        prefix = self.declare_parameter("prefix", "iface_test").value
        self.feedback_period_s = self.declare_parameter("feedback_period_s", 0.1).value
        self._sample_publishers = []
        for name in installed_message_names():
            publisher = self.create_publisher(message_class(name), f"{prefix}/msg/{name}", LATCHED)
            publisher.publish(sample(message_class(name)))
            self._sample_publishers.append(publisher)
        self.create_service(StartTask, f"{prefix}/start", self._on_start)
        self._action = ActionServer(self, ExecuteTask, f"{prefix}/execute_task", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda _goal: CancelResponse.ACCEPT)
        self.get_logger().info(f"ready: {len(self._sample_publishers)} message types under {prefix}/msg")

    def _on_start(self, request, response):
        response.success = bool(request.instruction)
        response.message = (f"started {request.instruction!r} task {request.task_name!r}" if response.success
                            else "refused: empty instruction")
        return response

    def _on_goal(self, goal) -> GoalResponse:
        return GoalResponse.ACCEPT if goal.instruction else GoalResponse.REJECT

    async def _sleep(self, seconds: float) -> None:
        done = Future()
        timer = self.create_timer(seconds, lambda: None if done.done() else done.set_result(True))
        try:
            await done
        finally:
            self.destroy_timer(timer)

    async def _execute(self, goal_handle):
        goal = goal_handle.request
        started = time.monotonic()
        step = 0
        while goal.max_steps == 0 or step < goal.max_steps:
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return self._result(ExecuteTask.Result.OUTCOME_CANCELED, PlanState.PHASE_IDLE,
                                    "canceled: stopped, arms hold", step, started)
            feedback = ExecuteTask.Feedback(phase=PlanState.PHASE_RUNNING, affordance_index=step, retries=0,
                                            elapsed=_duration(time.monotonic() - started))
            for arm in (ArmProgress.ARM_LEFT, ArmProgress.ARM_RIGHT):
                feedback.arms[arm] = ArmProgress(arm=arm, active=True, achieved=False, probability=math.nan,
                                                 chunks_spliced=step, held=False)
            feedback.last_decision = sample(ValidatorDecision, seed=step)
            goal_handle.publish_feedback(feedback)
            step += 1
            await self._sleep(self.feedback_period_s)
        goal_handle.succeed()
        return self._result(ExecuteTask.Result.OUTCOME_SUCCEEDED, PlanState.PHASE_SUCCEEDED,
                            f"done: {goal.instruction}", step, started, success=True)

    @staticmethod
    def _result(outcome: int, phase: int, reason: str, steps: int, started: float, success: bool = False):
        return ExecuteTask.Result(success=success, outcome=outcome, phase=phase, reason=reason, steps=steps,
                                  retries=0, duration=_duration(time.monotonic() - started))


def main() -> int:
    rclpy.init(args=sys.argv)
    executor = SingleThreadedExecutor()
    node = None
    try:
        node = InterfacePeer()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Executor before node before rclpy: a still-spinning executor thread at exit aborts the process.
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
