"""sim2real_vla_interfaces: built by `make setup`, usable across processes, recordable in MCAP.

Integration part: a peer process (test/interface_peer.py) publishes a fully populated instance of
every message type and serves StartTask and a stand-in ExecuteTask action; the test process
receives each message with every field equal, calls the service, and runs the action to its
result and through an acknowledged cancel.

Unit part (no DDS): the enum constants agree with the core's vocabularies, and the MCAP
``ros2msg`` schema of each type, built by tools/ros2_msgdef from the installed .msg files,
decodes a recorded message back with mcap_ros2.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from typing import Dict, Optional

import pytest

from interface_samples import (PACKAGE, ament_prefix_includes_venv, differences, installed_message_names,
                               message_class, sample)
from ros_harness import NodeProcess, Probe, param_arg, ros_env, wait_for

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interface_peer.py")
PREFIX = "iface_test"
EXPECTED_MESSAGES = {"ActorStatus", "Affordance", "ArmProgress", "ArmValidation", "GateState", "Keypoint",
                     "PlanState", "TaskState", "ValidatorDecision", "ValidatorEvent"}


class ScriptProcess(NodeProcess):
    """A NodeProcess started from a script path: ``python -m test.x`` would find the stdlib's ``test``."""

    def __init__(self, script: str, name: str, params: Optional[Dict[str, object]] = None) -> None:
        cmd = [sys.executable, script, "--ros-args", "-r", f"__node:={name}"]
        for key, value in (params or {}).items():
            cmd += ["-p", param_arg(key, value)]
        self.name = name
        self.cmd = cmd
        self._lines = []
        self.proc = subprocess.Popen(cmd, cwd=os.path.dirname(PEER), env=ros_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


# ----------------------------------------------------------------------------- unit: no DDS
def test_package_is_installed_with_every_message_type():
    assert set(installed_message_names()) == EXPECTED_MESSAGES


def test_enum_constants_match_the_core_vocabularies():
    from sim2real_vla_interfaces.msg import (ActorStatus, Affordance, ArmProgress, ArmValidation, PlanState,
                                             ValidatorEvent)

    from sim2real_vla_ros.core.control.safety import SafetyEventKind
    from sim2real_vla_ros.core.task import validator_gate
    from sim2real_vla_ros.core.task.affordance_chain import ChainPhase
    from sim2real_vla_ros.core.task.records import EVENT_WIRE_NAMES
    from sim2real_vla_ros.core.vocabulary import ARMS

    for msg_type in (Affordance, ArmValidation, ActorStatus, ArmProgress):
        assert [getattr(msg_type, f"ARM_{arm.upper()}") for arm in ARMS] == list(range(len(ARMS))), msg_type
    phases = {phase.name: getattr(PlanState, f"PHASE_{phase.name}") for phase in ChainPhase}
    assert sorted(phases.values()) == list(range(len(ChainPhase)))
    wire = {name.upper(): getattr(ValidatorEvent, f"EVENT_{name.upper()}") for name in EVENT_WIRE_NAMES.values()}
    assert len(set(wire.values())) == len(wire) and ValidatorEvent.EVENT_NONE not in wire.values()
    decisions = [value for name, value in vars(validator_gate).items() if name.startswith("DECISION_")]
    for label in decisions:
        assert hasattr(ArmValidation, f"DECISION_{label.upper()}"), label
    assert {getattr(ActorStatus, f"REASON_{kind.name}") for kind in SafetyEventKind} == \
        {kind.value for kind in SafetyEventKind}
    assert max(len(kind.value) for kind in SafetyEventKind) <= 32  # ActorStatus.safety_reasons: string<=32


def test_outside_strings_and_arrays_are_bounded():
    """The bounds are declared; rclpy checks them only with check_fields, serialization only for arrays.

    Measured with rclpy 9.1.2 / Fast DDS: an over-long *bounded string* still serializes and
    deserializes (so a receiving node must check the length itself), an over-long *bounded
    sequence* fails to serialize (the publish raises).
    """
    from rclpy.serialization import serialize_message
    from rosidl_parser.definition import BoundedSequence, BoundedString

    from sim2real_vla_interfaces.action import ExecuteTask
    from sim2real_vla_interfaces.msg import ActorStatus, Affordance, Keypoint, PlanState
    from sim2real_vla_interfaces.srv import StartTask

    def bound(msg_type, field_name):
        slot = msg_type.SLOT_TYPES[list(msg_type.get_fields_and_field_types()).index(field_name)]
        return slot.maximum_size if isinstance(slot, (BoundedString, BoundedSequence)) else None

    assert bound(StartTask.Request, "instruction") == bound(ExecuteTask.Goal, "instruction") == 512
    assert bound(PlanState, "instruction") == 512
    assert bound(StartTask.Request, "task_name") == bound(ExecuteTask.Goal, "task_name") == 64
    assert bound(Affordance, "keypoints") == 32 and bound(ActorStatus, "safety_reasons") == 16
    StartTask.Request(instruction="x" * 512, check_fields=True)
    with pytest.raises(AssertionError):
        StartTask.Request(instruction="x" * 513, check_fields=True)
    serialize_message(Affordance(keypoints=[Keypoint()] * 32))
    with pytest.raises(Exception, match="serialize"):
        serialize_message(Affordance(keypoints=[Keypoint()] * 33))


@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_mcap_schema_from_installed_msg_decodes_a_recorded_message(name):
    from mcap.reader import make_reader
    from mcap.writer import Writer
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import serialize_message

    from sim2real_vla_ros.tools import ros2_msgdef
    from sim2real_vla_ros.tools.recorder import read_installed_definition

    ament_prefix_includes_venv()  # read_installed_definition looks the package up in the ament index
    full = f"{PACKAGE}/msg/{name}"
    schema_text = ros2_msgdef.concatenated_definition(full, read_installed_definition)
    original = sample(message_class(name), seed=3)
    stream = io.BytesIO()
    writer = Writer(stream)
    writer.start(profile="ros2", library="test_interfaces")
    schema_id = writer.register_schema(full, "ros2msg", schema_text.encode("utf-8"))
    channel_id = writer.register_channel(f"/{name}", "cdr", schema_id)
    writer.add_message(channel_id, log_time=1, publish_time=1, data=serialize_message(original), sequence=0)
    writer.finish()
    stream.seek(0)
    reader = make_reader(stream, decoder_factories=[DecoderFactory()])
    decoded = [message for _schema, _channel, _record, message in reader.iter_decoded_messages()]
    assert len(decoded) == 1
    assert _decoded_differences(original, decoded[0]) == []


def _decoded_differences(expected, decoded, path: str = "") -> list:
    """Like interface_samples.differences, for mcap_ros2's dynamic classes (same field names)."""
    if hasattr(expected, "get_fields_and_field_types"):
        found = []
        for field_name in expected.get_fields_and_field_types():
            if not hasattr(decoded, field_name):
                found.append(f"{path}.{field_name}: missing after decoding")
                continue
            found += _decoded_differences(getattr(expected, field_name), getattr(decoded, field_name),
                                          f"{path}.{field_name}")
        return found
    if isinstance(expected, (list, tuple)) or type(expected).__name__ == "array":
        if len(expected) != len(decoded):
            return [f"{path}: length {len(expected)} != {len(decoded)}"]
        found = []
        for index, (left, right) in enumerate(zip(expected, decoded)):
            found += _decoded_differences(left, right, f"{path}[{index}]")
        return found
    return [] if expected == decoded else [f"{path}: {expected!r} != {decoded!r}"]


# ----------------------------------------------------------------------------- integration: two processes
@pytest.fixture(scope="module")
def peer_and_probe():
    import rclpy

    from sim2real_vla_ros.nodes.common import LATCHED_QOS

    rclpy.init()
    peer = ScriptProcess(PEER, "interface_peer", params={"prefix": PREFIX, "feedback_period_s": 0.1})
    probe = Probe("interface_probe", use_sim_time=False)
    try:
        for name in sorted(EXPECTED_MESSAGES):
            probe.subscribe(message_class(name), f"{PREFIX}/msg/{name}", LATCHED_QOS)
        yield peer, probe
    finally:
        code = peer.stop()
        probe.shutdown()
        rclpy.try_shutdown()
        assert code == 0, f"interface_peer exited with {code}:\n{peer.output[-3000:]}"


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_message_published_in_another_process_arrives_with_every_field_equal(peer_and_probe, name):
    peer, probe = peer_and_probe
    received = wait_for(lambda: probe.received(f"{PREFIX}/msg/{name}"), 30.0, f"{name} from interface_peer",
                        processes=[peer])
    expected = sample(message_class(name))
    assert differences(expected, received[-1]) == []
    assert received[-1] == expected


@pytest.mark.integration
def test_start_task_service_round_trip(peer_and_probe):
    from sim2real_vla_interfaces.srv import StartTask

    peer, probe = peer_and_probe
    instruction = "Pour the water from the bottle into the cup."
    response = probe.call(StartTask, f"{PREFIX}/start", StartTask.Request(instruction=instruction,
                                                                          task_name="pour_water"),
                          timeout=30.0, processes=[peer])
    assert response.success
    assert response.message == f"started {instruction!r} task 'pour_water'"
    refused = probe.call(StartTask, f"{PREFIX}/start", StartTask.Request(), timeout=30.0, processes=[peer])
    assert not refused.success and "empty instruction" in refused.message


@pytest.mark.integration
def test_execute_task_action_feedback_result_and_cancel(peer_and_probe):
    from action_msgs.msg import GoalStatus
    from action_msgs.srv import CancelGoal
    from rclpy.action import ActionClient

    from sim2real_vla_interfaces.action import ExecuteTask
    from sim2real_vla_interfaces.msg import PlanState, ValidatorDecision

    peer, probe = peer_and_probe
    client = ActionClient(probe.node, ExecuteTask, f"{PREFIX}/execute_task")
    try:
        assert client.wait_for_server(timeout_sec=30.0), f"no ExecuteTask server:\n{peer.output[-3000:]}"

        # A goal that runs to its result, with feedback on the way.
        feedback = []
        goal = ExecuteTask.Goal(instruction="Pour the water from the bottle into the cup.", task_name="pour_water",
                                timeout_s=60.0, max_steps=4)
        sent = client.send_goal_async(goal, feedback_callback=lambda message: feedback.append(message.feedback))
        handle = wait_for(lambda: sent.done() and sent.result(), 30.0, "goal response", processes=[peer])
        assert handle.accepted
        result_future = handle.get_result_async()
        outcome = wait_for(lambda: result_future.done() and result_future.result(), 30.0, "goal result",
                           processes=[peer])
        assert outcome.status == GoalStatus.STATUS_SUCCEEDED
        result = outcome.result
        assert result.success and result.outcome == ExecuteTask.Result.OUTCOME_SUCCEEDED
        assert result.phase == PlanState.PHASE_SUCCEEDED and result.steps == 4
        assert result.reason == f"done: {goal.instruction}"
        # Feedback is a topic: the first one may go out before discovery matched it (not here so far).
        indices = [message.affordance_index for message in feedback]
        assert len(indices) >= 2 and indices == sorted(set(indices)) and set(indices) <= set(range(4)), indices
        assert all(message.phase == PlanState.PHASE_RUNNING for message in feedback)
        assert differences(sample(ValidatorDecision, seed=indices[-1]), feedback[-1].last_decision) == []

        # An empty instruction is rejected.
        rejected = client.send_goal_async(ExecuteTask.Goal())
        assert not wait_for(lambda: rejected.done() and rejected.result(), 30.0, "rejection",
                            processes=[peer]).accepted

        # Cancel: acknowledged, the goal ends canceled (the real server stops and holds).
        feedback.clear()
        sent = client.send_goal_async(ExecuteTask.Goal(instruction="hold until canceled", max_steps=0),
                                      feedback_callback=lambda message: feedback.append(message.feedback))
        handle = wait_for(lambda: sent.done() and sent.result(), 30.0, "goal response", processes=[peer])
        assert handle.accepted
        wait_for(lambda: len(feedback) >= 2, 30.0, "feedback before the cancel", processes=[peer])
        cancel_future = handle.cancel_goal_async()
        cancel = wait_for(lambda: cancel_future.done() and cancel_future.result(), 30.0, "cancel response",
                          processes=[peer])
        assert cancel.return_code == CancelGoal.Response.ERROR_NONE
        assert [bytes(info.goal_id.uuid) for info in cancel.goals_canceling] == [bytes(handle.goal_id.uuid)]
        result_future = handle.get_result_async()
        outcome = wait_for(lambda: result_future.done() and result_future.result(), 30.0, "canceled result",
                           processes=[peer])
        assert outcome.status == GoalStatus.STATUS_CANCELED
        assert outcome.result.outcome == ExecuteTask.Result.OUTCOME_CANCELED
        assert outcome.result.phase == PlanState.PHASE_IDLE and not outcome.result.success
    finally:
        client.destroy()
