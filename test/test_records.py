"""core.task.records (plan state / validator event / task state, built from the real chain and gate) and
their typed messages (nodes.task_messages): every record survives the round trip through its message."""
import math

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sim2real_vla_interfaces.msg import ArmValidation, PlanState, TaskState, ValidatorEvent

from sim2real_vla_ros.core.task.affordance_chain import AffordanceChain
from sim2real_vla_ros.core.task.records import (parse_plan_state, parse_validator_event, plan_state_record,
                                                task_state_record, validator_event_record)
from sim2real_vla_ros.core.task.validator_gate import GateEvent, ValidatorGate
from sim2real_vla_ros.nodes import task_messages


def running_chain():
    chain = AffordanceChain(image_size=(16, 12), keypoints_per_arm=2)
    chain.start("pick up the cup", 0.0)
    request = chain.request_prediction(0.0)
    keypoints = np.array([[[4.0, 6.0], [12.0, 3.0]], [[8.0, 6.0], [9.0, 9.0]]])
    chain.on_prediction(request.request_id, keypoints, [0.9, 0.1], 0.0, 0.0, 0.1)
    return chain


def over_the_wire(msg):
    """What a subscriber receives: the message serialized to CDR and back."""
    return deserialize_message(serialize_message(msg), type(msg))


def test_plan_state_record_parses_to_the_validator_view():
    record = plan_state_record(running_chain().state, seq=7, stamp_s=1.5, task="cup", estop=False)
    view = parse_plan_state(record, keypoints_per_arm=2)
    assert view.phase == "running" and view.index == 0 and view.seq == 7 and view.has_target
    assert view.active_arms == ("left",)
    np.testing.assert_allclose(view.keypoints_norm["left"], [[0.25, 0.5], [0.75, 0.25]])
    assert record["arms"]["right"] == {"active": False, "keypoints_norm": []}
    assert "schema" not in record


def test_plan_state_round_trips_through_its_message():
    record = plan_state_record(running_chain().state, seq=7, stamp_s=1.5, task="cup", estop=True,
                               last_error="nope", image_size=(640, 480))
    msg = over_the_wire(task_messages.plan_state_to_msg(record, fallback_size=(16, 12)))
    assert msg.phase == PlanState.PHASE_RUNNING and msg.has_affordance and msg.task == "cup" and msg.estop
    left = msg.affordances[0]
    assert (left.arm, left.active, left.seq, left.index) == (0, True, 7, 0)
    assert (left.image_width, left.image_height) == (640, 480)  # native, not the fallback
    np.testing.assert_allclose([[p.x, p.y] for p in left.keypoints], [[160, 240], [480, 120]], atol=1e-3)
    assert not msg.affordances[1].active and list(msg.affordances[1].keypoints) == []
    back = task_messages.plan_state_from_msg(msg)
    for key in record:
        if key not in ("arms", "affordance", "stamp"):
            assert back[key] == record[key], key
    assert back["stamp"] == pytest.approx(1.5)
    assert back["affordance"]["seq"] == 7 and back["affordance"]["index"] == 0
    assert back["affordance"]["current_since"] == pytest.approx(record["affordance"]["current_since"])
    np.testing.assert_allclose(back["arms"]["left"]["keypoints_norm"], record["arms"]["left"]["keypoints_norm"],
                               atol=1e-6)
    assert back["arms"]["right"] == {"active": False, "keypoints_norm": []}


def test_plan_state_without_native_size_uses_the_fallback_frame_and_without_target_has_no_seq():
    record = plan_state_record(running_chain().state, seq=1, stamp_s=0.0)
    msg = task_messages.plan_state_to_msg(record, fallback_size=(16, 12))
    assert (msg.affordances[0].image_width, msg.affordances[0].image_height) == (16, 12)
    view = parse_plan_state(task_messages.plan_state_from_msg(msg), keypoints_per_arm=2)
    np.testing.assert_allclose(view.keypoints_norm["left"], [[0.25, 0.5], [0.75, 0.25]], atol=1e-6)
    with pytest.raises(ValueError, match="image size"):
        task_messages.plan_state_to_msg(record)
    chain = running_chain()
    chain.stop("test", 1.0)
    stopped = task_messages.plan_state_from_msg(task_messages.plan_state_to_msg(
        plan_state_record(chain.state, seq=7, stamp_s=2.0)))
    view = parse_plan_state(stopped)
    assert view.seq is None and not view.has_target and view.phase == "idle" and stopped["affordance"] is None


def test_malformed_plan_states_are_refused_with_the_field():
    good = plan_state_record(running_chain().state, seq=1, stamp_s=0.0)
    with pytest.raises(ValueError, match="phase"):
        parse_plan_state({**good, "phase": "dancing"})
    with pytest.raises(ValueError, match="has 2 points, the bundle uses 3"):
        parse_plan_state(good, keypoints_per_arm=3)
    msg = task_messages.plan_state_to_msg(good, fallback_size=(16, 12))
    msg.affordances[0].keypoints[0].y = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        parse_plan_state(task_messages.plan_state_from_msg(msg))
    msg = task_messages.plan_state_to_msg(good, fallback_size=(16, 12))
    msg.phase = 42
    with pytest.raises(ValueError, match="phase"):
        task_messages.plan_state_from_msg(msg)
    msg = task_messages.plan_state_to_msg(good, fallback_size=(16, 12))
    msg.affordances[0].image_width = 0
    with pytest.raises(ValueError, match="image size"):
        task_messages.plan_state_from_msg(msg)


def test_validator_events_round_trip_and_feed_the_chain():
    record = validator_event_record(GateEvent.TIMEOUT_RETRY, 0, 1, "slow", 3.0, seq=4)
    assert record["event"] == "replan"
    msg = over_the_wire(task_messages.validator_event_to_msg(record))
    assert (msg.event, msg.index, msg.seq, msg.retries) == (ValidatorEvent.EVENT_REPLAN, 0, 4, 1)
    back = task_messages.validator_event_from_msg(msg)
    assert back == {**record, "stamp": pytest.approx(3.0)}
    event, index, reason = parse_validator_event(back)
    assert (event, index, reason) == (GateEvent.TIMEOUT_RETRY, 0, "slow")
    chain = running_chain()
    assert chain.on_gate_event(event, 3.0, index) and chain.state.replan_requested
    unknown = task_messages.validator_event_to_msg(validator_event_record(GateEvent.OPEN, None, 0, "", 0.0))
    assert unknown.index == ValidatorEvent.INDEX_NONE and task_messages.validator_event_from_msg(unknown)["index"] is None
    unknown.event = 9
    with pytest.raises(ValueError, match="not one of"):
        parse_validator_event(task_messages.validator_event_from_msg(unknown))
    with pytest.raises(ValueError, match="not published"):
        validator_event_record(GateEvent.NONE, 0, 0, "", 0.0)


def test_task_state_reflects_the_gate_and_round_trips():
    gate = ValidatorGate(consecutive_required=2, min_dwell_s=0.0)
    plan = parse_plan_state(plan_state_record(running_chain().state, seq=1, stamp_s=0.0))
    gate.reset_for_new_affordance(plan.active_arms, 0.0, plan.index)
    gate.update("left", 0.9, 0.1)
    record = task_state_record(plan, gate.status(0.1), {"left": 0.9}, "ok", 1, 0.1, "none",
                               consecutive_required=2, decisions={"left": gate.decisions()[-1][3]})
    assert record["arms"]["left"] == {"active": True, "achieved": False, "consecutive": 1, "prob": 0.9,
                                      "decision": "positive"}
    assert record["arms"]["right"]["active"] is False and record["arms"]["right"]["prob"] is None
    assert record["phase"] == "running" and record["decisions_count"] == 1
    msg = over_the_wire(task_messages.task_state_to_msg(record))
    assert isinstance(msg, TaskState) and msg.arms[0].decision == ArmValidation.DECISION_POSITIVE
    assert math.isnan(msg.arms[1].probability) and msg.gate.consecutive_required == 2 and msg.seq == 1
    back = task_messages.task_state_from_msg(msg)
    assert back["arms"]["left"]["prob"] == pytest.approx(0.9)
    back["arms"]["left"]["prob"] = 0.9
    assert back == {**record, "stamp": pytest.approx(0.1), "dwell_s": pytest.approx(record["dwell_s"])}
