"""core.payloads: plan state / validator event / task state JSON, built from the real chain and gate."""
import json

import numpy as np
import pytest

from sim2real_vla_ros.core.task.affordance_chain import AffordanceChain
from sim2real_vla_ros.core.task.payloads import (parse_plan_state, parse_validator_event, plan_state_payload,
                                            task_state_payload, validator_event_payload)
from sim2real_vla_ros.core.task.validator_gate import GateEvent, ValidatorGate


def running_chain():
    chain = AffordanceChain(image_size=(16, 12), keypoints_per_arm=2)
    chain.start("pick up the cup", 0.0)
    request = chain.request_prediction(0.0)
    keypoints = np.array([[[4.0, 6.0], [12.0, 3.0]], [[8.0, 6.0], [9.0, 9.0]]])
    chain.on_prediction(request.request_id, keypoints, [0.9, 0.1], 0.0, 0.0, 0.1)
    return chain


def test_plan_state_round_trip_through_json():
    payload = plan_state_payload(running_chain().state, seq=7, stamp_s=1.5, task="cup", estop=False)
    view = parse_plan_state(json.loads(json.dumps(payload)), keypoints_per_arm=2)
    assert view.phase == "running" and view.index == 0 and view.seq == 7 and view.has_target
    assert view.active_arms == ("left",)
    np.testing.assert_allclose(view.keypoints_norm["left"], [[0.25, 0.5], [0.75, 0.25]])
    assert payload["arms"]["right"] == {"active": False, "keypoints_norm": []}


def test_plan_state_without_target_and_malformed_payloads():
    chain = running_chain()
    chain.stop("test", 1.0)
    view = parse_plan_state(plan_state_payload(chain.state, seq=7, stamp_s=2.0))
    assert view.seq is None and not view.has_target
    good = plan_state_payload(running_chain().state, seq=1, stamp_s=0.0)
    with pytest.raises(ValueError, match="schema"):
        parse_plan_state({**good, "schema": "other/1"})
    with pytest.raises(ValueError, match="phase"):
        parse_plan_state({**good, "phase": "dancing"})
    with pytest.raises(ValueError, match="has 2 points, the bundle uses 3"):
        parse_plan_state(good, keypoints_per_arm=3)
    broken = json.loads(json.dumps(good))
    broken["arms"]["left"]["keypoints_norm"] = [[0.1, float("nan")], [0.2, 0.2]]
    with pytest.raises(ValueError, match="non-finite"):
        parse_plan_state(broken)


def test_validator_events_use_the_wire_names_and_feed_the_chain():
    payload = validator_event_payload(GateEvent.TIMEOUT_RETRY, 0, 1, "slow", 3.0)
    assert payload["event"] == "replan"
    event, index, reason = parse_validator_event(json.loads(json.dumps(payload)))
    assert (event, index, reason) == (GateEvent.TIMEOUT_RETRY, 0, "slow")
    chain = running_chain()
    assert chain.on_gate_event(event, 3.0, index) and chain.state.replan_requested
    with pytest.raises(ValueError, match="not one of"):
        parse_validator_event({**payload, "event": "timeout_retry"})
    with pytest.raises(ValueError, match="not published"):
        validator_event_payload(GateEvent.NONE, 0, 0, "", 0.0)


def test_task_state_reflects_the_gate():
    gate = ValidatorGate(consecutive_required=2, min_dwell_s=0.0)
    plan = parse_plan_state(plan_state_payload(running_chain().state, seq=1, stamp_s=0.0))
    gate.reset_for_new_affordance(plan.active_arms, 0.0, plan.index)
    gate.update("left", 0.9, 0.1)
    payload = task_state_payload(plan, gate.status(0.1), {"left": 0.9}, "ok", 1, 0.1, "none")
    assert payload["arms"]["left"] == {"active": True, "achieved": False, "consecutive": 1, "prob": 0.9}
    assert payload["arms"]["right"]["active"] is False and payload["arms"]["right"]["prob"] is None
    assert payload["phase"] == "running" and payload["decisions_count"] == 1
