"""Unit tests of the chain-of-affordances state machine (pure core, no rclpy)."""

import json
import math

import numpy as np
import pytest

from sim2real_vla_ros.core.task.affordance_chain import (
    AffordanceChain,
    ChainPhase,
    ChainStateError,
    PredictionOutcome,
    denormalise_keypoints,
    normalise_keypoints,
)
from sim2real_vla_ros.core.task.validator_gate import GateEvent

IMAGE_SIZE = (640, 480)
LEFT_ONLY = (True, False)
BOTH = (True, True)


def keypoints(left_fractions, right_fractions=(0.5, 0.5)):
    """(2, 3, 2) pixel keypoints: arm k's points sit at the given (x, y) image fractions times 1, 2, 3 / 4."""
    rows = []
    for fx, fy in (left_fractions, right_fractions):
        rows.append([[fx * 640 * s / 4, fy * 480 * s / 4] for s in (1, 2, 3)])
    return np.array(rows, dtype=np.float64)


def with_point(points, arm_slot, point_id, xy):
    changed = points.copy()
    changed[arm_slot, point_id] = xy
    return changed


def make_chain(**overrides):
    settings = dict(image_size=IMAGE_SIZE, keypoints_per_arm=3, history_length=1, max_retries=2, max_steps=5)
    settings.update(overrides)
    return AffordanceChain(**settings)


def predict(chain, now_s, points, active=LEFT_ONLY, done_prob=0.0):
    assert chain.needs_prediction(now_s)
    request = chain.request_prediction(now_s)
    outcome = chain.on_prediction(request.request_id, points, active, done_prob, obs_stamp_s=now_s - 0.05, now_s=now_s)
    return request, outcome


def test_happy_path_three_affordances_then_done():
    chain = make_chain()
    chain.start("pour the water", now_s=0.0)
    assert chain.phase == ChainPhase.RUNNING
    plans = [keypoints((0.4, 0.4)), keypoints((0.8, 0.4)), keypoints((0.8, 0.8))]
    now = 0.0
    for step, points in enumerate(plans):
        now += 0.5
        request, outcome = predict(chain, now, points)
        assert outcome == PredictionOutcome.ACCEPTED
        assert request.index == step and not request.replan
        assert not chain.needs_prediction(now)  # current affordance being executed
        state = chain.state
        assert state.index == step and state.arm_active == LEFT_ONLY
        np.testing.assert_array_equal(state.current.arm_keypoints_px("left"), points[0])
        np.testing.assert_array_equal(state.current.arm_keypoints_px("right"), points[1])  # idle, kept
        assert state.current.obs_stamp_s == pytest.approx(now - 0.05)
        now += 2.0
        assert chain.on_gate_event(GateEvent.OPEN, now, affordance_index=step)
        assert chain.state.achieved_count == step + 1
    now += 0.5
    _, outcome = predict(chain, now, keypoints((0.1, 0.1)), done_prob=0.95)
    assert outcome == PredictionOutcome.SUCCEEDED
    state = chain.state
    assert state.phase == ChainPhase.SUCCEEDED and state.achieved_count == 3 and state.current is None
    assert "after 3 affordances" in state.last_reason
    assert not chain.needs_prediction(now + 1.0)
    assert [affordance.index for affordance in chain.history] == [0, 1, 2]
    assert chain.counters["gate_opens"] == 3 and chain.counters["predictions_accepted"] == 3
    json.dumps(state.as_dict())  # the task-state payload must serialise


def test_k1_conditioning_is_the_last_achieved_affordance():
    chain = make_chain(history_length=1)
    chain.start("pour", 0.0)
    request, _ = predict(chain, 0.1, keypoints((0.4, 0.8)), active=BOTH)
    assert request.prev_affordance.shape == (1, 2, 3, 2) and request.prev_affordance.dtype == np.float32
    np.testing.assert_array_equal(request.prev_affordance, np.zeros((1, 2, 3, 2), np.float32))
    assert request.prev_valid.dtype == np.float32
    np.testing.assert_array_equal(request.prev_valid, [0.0])
    chain.on_gate_open(1.0)
    request = chain.request_prediction(1.1)
    # Left points at (0.4, 0.8) * (1, 2, 3) / 4, right at (0.5, 0.5) * (1, 2, 3) / 4, as fractions.
    expected = np.array(
        [[[[0.1, 0.2], [0.2, 0.4], [0.3, 0.6]], [[0.125, 0.125], [0.25, 0.25], [0.375, 0.375]]]], np.float32
    )
    np.testing.assert_allclose(request.prev_affordance, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(request.prev_valid, [1.0])


def test_k2_conditioning_is_padded_at_the_front_and_slides():
    chain = make_chain(history_length=2)
    chain.start("pour", 0.0)
    firsts = [(0.4, 0.4), (0.8, 0.4), (0.8, 0.8)]
    for step, fractions in enumerate(firsts):
        predict(chain, step + 0.1, keypoints(fractions))
        chain.on_gate_open(step + 0.5)
    # Two of three achieved are in the window: steps 1 and 2, oldest first; the idle right arm's
    # predicted points (0.5, 0.5) * (1, 2, 3) / 4 are part of the conditioning.
    prev, valid = chain.previous_affordances()
    assert prev.shape == (2, 2, 3, 2)
    np.testing.assert_allclose(prev[0, 0], [[0.2, 0.1], [0.4, 0.2], [0.6, 0.3]], atol=1e-7)
    np.testing.assert_allclose(prev[1, 0], [[0.2, 0.2], [0.4, 0.4], [0.6, 0.6]], atol=1e-7)
    np.testing.assert_allclose(prev[:, 1], [[[0.125, 0.125], [0.25, 0.25], [0.375, 0.375]]] * 2, atol=1e-7)
    np.testing.assert_array_equal(valid, [1.0, 1.0])

    chain = make_chain(history_length=2)
    chain.start("pour", 0.0)
    predict(chain, 0.1, keypoints((0.4, 0.4)))
    chain.on_gate_open(0.5)
    prev, valid = chain.previous_affordances()
    np.testing.assert_array_equal(prev[0], np.zeros((2, 3, 2)))
    np.testing.assert_allclose(prev[1, 0], [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], atol=1e-7)
    np.testing.assert_array_equal(valid, [0.0, 1.0])


def test_timeouts_replan_the_same_step_then_abort():
    chain = make_chain(max_retries=2)
    chain.start("pour", 0.0)
    predict(chain, 0.1, keypoints((0.4, 0.4)))
    for retry in (1, 2):
        assert chain.on_gate_event("timeout_retry", 10.0 * retry, affordance_index=0)
        state = chain.state
        assert state.phase == ChainPhase.RUNNING and state.retries == retry and state.replan_requested
        assert state.current is not None  # the old target stays published until replaced
        request, outcome = predict(chain, 10.0 * retry + 0.1, keypoints((0.5, 0.5)))
        assert request.replan and request.index == 0 and outcome == PredictionOutcome.ACCEPTED
        assert "re-planned affordance 0" in chain.state.last_reason
    assert chain.on_timeout(30.0, affordance_index=0)
    state = chain.state
    assert state.phase == ChainPhase.ABORTED and state.current is None
    assert "after 2 retries" in state.last_reason
    assert not chain.needs_prediction(31.0)
    assert state.total_retries == 3


def test_validator_abort_event_aborts_and_retries_reset_on_advance():
    chain = make_chain(max_retries=1)
    chain.start("pour", 0.0)
    predict(chain, 0.1, keypoints((0.4, 0.4)))
    chain.on_timeout(5.0)
    predict(chain, 5.1, keypoints((0.4, 0.4)))
    chain.on_gate_open(6.0)
    assert chain.state.retries == 0 and chain.state.total_retries == 1
    predict(chain, 6.1, keypoints((0.4, 0.4)))
    assert chain.on_gate_event(GateEvent.ABORT, 9.0, affordance_index=1)
    assert chain.phase == ChainPhase.ABORTED
    assert chain.state.last_reason.startswith("aborted: validator gave up on affordance 1")


def test_stop_goes_idle_and_makes_in_flight_predictions_stale():
    chain = make_chain()
    chain.start("pour", 0.0)
    request = chain.request_prediction(0.1)
    chain.stop("operator request", 0.2)
    assert chain.phase == ChainPhase.IDLE and chain.state.last_reason == "stopped: operator request"
    outcome = chain.on_prediction(request.request_id, keypoints((0.4, 0.4)), LEFT_ONLY, 0.0, 0.1, 0.3)
    assert outcome == PredictionOutcome.IGNORED_STALE
    assert chain.counters["predictions_ignored_stale"] == 1
    assert not chain.needs_prediction(0.4)
    chain.start("stack the cups", 1.0)  # a new task after stop
    assert chain.state.instruction == "stack the cups" and chain.state.index == 0


def test_start_while_running_and_bad_instruction_raise():
    chain = make_chain()
    chain.start("pour", 0.0)
    with pytest.raises(ChainStateError, match="already running"):
        chain.start("other", 1.0)
    with pytest.raises(ValueError, match="instruction"):
        make_chain().start("   ", 0.0)
    with pytest.raises(ChainStateError, match="not running"):
        make_chain().request_prediction(0.0)


def test_prediction_for_a_superseded_request_is_ignored():
    chain = make_chain()
    chain.start("pour", 0.0)
    predict(chain, 0.1, keypoints((0.4, 0.4)))
    late = chain.request_prediction(0.5)  # e.g. an in-time refresh still in flight ...
    chain.on_gate_open(0.6)  # ... when the gate opens
    outcome = chain.on_prediction(late.request_id, keypoints((0.9, 0.9)), LEFT_ONLY, 0.0, 0.5, 0.7)
    assert outcome == PredictionOutcome.IGNORED_STALE
    assert chain.current is None and chain.state.index == 1
    first = chain.request_prediction(0.8)
    second = chain.request_prediction(0.9)
    assert chain.on_prediction(first.request_id, keypoints((0.4, 0.4)), LEFT_ONLY, 0.0, 0.8, 1.0) == (
        PredictionOutcome.IGNORED_STALE
    )
    assert chain.on_prediction(second.request_id, keypoints((0.4, 0.4)), LEFT_ONLY, 0.0, 0.9, 1.0) == (
        PredictionOutcome.ACCEPTED
    )


@pytest.mark.parametrize(
    "points, active, done_prob, reason",
    [
        (np.where(np.eye(2, 3, dtype=bool)[:, :, None], np.nan, keypoints((0.4, 0.4))), BOTH, 0.0, "NaN/Inf"),
        (with_point(keypoints((0.4, 0.4)), 1, 1, (160.0, 740.0)), BOTH, 0.0, "right keypoint 1 (160.0, 740.0) outside"),
        (with_point(keypoints((0.4, 0.4)), 0, 2, (-0.5, 10.0)), BOTH, 0.0, "left keypoint 2 (-0.5, 10.0) outside"),
        (keypoints((0.4, 0.4))[:, :2], BOTH, 0.0, "shape (2, 2, 2)"),
        (keypoints((0.4, 0.4)), (False, False), 0.0, "no arm is active"),
        (keypoints((0.4, 0.4)), BOTH, math.nan, "done_prob is not finite"),
        (keypoints((0.4, 0.4)), BOTH, 1.5, "done_prob 1.5 outside"),
        (keypoints((0.4, 0.4)), (True, False, True), 0.0, "arm_active must be 2 booleans or probabilities"),
        (keypoints((0.4, 0.4)), (0.2, 0.49), 0.0, "no arm is active"),
        (keypoints((0.4, 0.4)), (np.nan, 0.9), 0.0, "arm_active contains NaN/Inf"),
    ],
)
def test_invalid_predictions_are_rejected_and_requested_again(points, active, done_prob, reason):
    chain = make_chain()
    chain.start("pour", 0.0)
    request = chain.request_prediction(0.1)
    outcome = chain.on_prediction(request.request_id, points, active, done_prob, 0.1, 0.2)
    assert outcome == PredictionOutcome.REJECTED
    assert reason in chain.state.last_reason
    assert chain.current is None and chain.counters["predictions_rejected"] == 1
    assert chain.needs_prediction(0.3)


def test_inactive_arm_keypoints_are_not_checked_but_kept_for_conditioning():
    chain = make_chain()
    chain.start("pour", 0.0)
    points = keypoints((0.4, 0.4))
    points[1] = [[100.0, 470.0], [-30.0, 475.0], [700.0, 490.0]]  # idle arm parked off the bottom
    _, outcome = predict(chain, 0.1, points, active=LEFT_ONLY)
    assert outcome == PredictionOutcome.ACCEPTED
    np.testing.assert_array_equal(chain.current.keypoints_px[1], [[100, 470], [0, 475], [639, 479]])
    assert chain.current.active_arms == ("left",)
    chain.on_gate_open(1.0)
    prev, _ = chain.previous_affordances()
    np.testing.assert_allclose(prev[0, 1], [[100 / 640, 470 / 480], [0, 475 / 480], [639 / 640, 479 / 480]], atol=1e-7)
    points[1] = np.nan  # non-finite idle-arm points are stored as zeros
    _, outcome = predict(chain, 1.1, points, active=LEFT_ONLY)
    assert outcome == PredictionOutcome.ACCEPTED
    np.testing.assert_array_equal(chain.current.keypoints_px[1], np.zeros((3, 2)))
    with pytest.raises(ValueError):
        chain.current.keypoints_px[0, 0, 0] = 1.0  # read-only: nobody edits a published target


def test_arm_active_probabilities_use_the_threshold():
    chain = make_chain(arm_active_threshold=0.6)
    chain.start("pour", 0.0)
    _, outcome = predict(chain, 0.1, keypoints((0.4, 0.4)), active=np.array([0.59, 0.6], np.float32))
    assert outcome == PredictionOutcome.ACCEPTED
    assert chain.current.arm_active == (False, True)


def test_edge_tolerance_clips_near_points_and_rejects_far_ones():
    chain = make_chain(edge_tolerance_px=2.0)
    chain.start("pour", 0.0)
    points = keypoints((0.4, 0.4))
    points[0, 0] = (641.0, -2.0)
    _, outcome = predict(chain, 0.1, points)
    assert outcome == PredictionOutcome.ACCEPTED
    np.testing.assert_array_equal(chain.current.keypoints_px[0, 0], [639.0, 0.0])
    chain.on_gate_open(1.0)
    points[0, 0] = (642.5, 10.0)
    _, outcome = predict(chain, 1.1, points)
    assert outcome == PredictionOutcome.REJECTED


def test_too_many_invalid_predictions_in_a_row_fail_the_task():
    chain = make_chain(max_consecutive_invalid=3)
    chain.start("pour", 0.0)
    bad = np.full((2, 3, 2), np.nan)
    outcomes = [predict(chain, 0.1 * attempt, bad, active=BOTH)[1] for attempt in range(1, 4)]
    assert outcomes == [PredictionOutcome.REJECTED, PredictionOutcome.REJECTED, PredictionOutcome.FAILED]
    assert chain.phase == ChainPhase.FAILED and "3 invalid predictions in a row" in chain.state.last_reason


def test_done_before_any_achieved_step_is_not_success():
    chain = make_chain()
    chain.start("pour", 0.0)
    _, outcome = predict(chain, 0.1, keypoints((0.4, 0.4)), done_prob=0.99)
    assert outcome == PredictionOutcome.ACCEPTED
    assert chain.counters["done_ignored_before_first_step"] == 1


def test_done_threshold_is_strict_and_configurable():
    chain = make_chain(done_threshold=0.8)
    chain.start("pour", 0.0)
    predict(chain, 0.1, keypoints((0.4, 0.4)))
    chain.on_gate_open(0.5)
    _, outcome = predict(chain, 0.6, keypoints((0.4, 0.4)), done_prob=0.8)
    assert outcome == PredictionOutcome.ACCEPTED
    chain.on_gate_open(1.0)
    _, outcome = predict(chain, 1.1, keypoints((0.4, 0.4)), done_prob=0.81)
    assert outcome == PredictionOutcome.SUCCEEDED


def test_max_steps_bounds_the_chain():
    chain = make_chain(max_steps=2)
    chain.start("pour", 0.0)
    for step in range(2):
        predict(chain, step + 0.1, keypoints((0.4, 0.4)))
        chain.on_gate_open(step + 0.5)
    _, outcome = predict(chain, 2.1, keypoints((0.4, 0.4)), done_prob=0.1)
    assert outcome == PredictionOutcome.FAILED
    assert chain.state.phase == ChainPhase.FAILED and "max_steps=2" in chain.state.last_reason


def test_gate_events_for_another_index_or_phase_are_ignored():
    chain = make_chain()
    assert not chain.on_gate_open(0.0)  # idle
    chain.start("pour", 0.0)
    assert not chain.on_gate_open(0.1)  # nothing current yet
    predict(chain, 0.2, keypoints((0.4, 0.4)))
    assert not chain.on_gate_event("open", 0.3, affordance_index=7)
    assert not chain.on_gate_event(GateEvent.NONE, 0.3)
    assert chain.state.index == 0 and chain.counters["gate_events_ignored"] == 3
    with pytest.raises(ValueError):
        chain.on_gate_event("achieved", 0.4)  # not a gate event name


def test_lost_request_is_asked_again_after_request_timeout():
    chain = make_chain(request_timeout_s=5.0)
    chain.start("pour", 0.0)
    lost = chain.request_prediction(0.0)
    assert not chain.needs_prediction(5.0)
    assert chain.needs_prediction(5.1)
    assert chain.counters["request_timeouts"] == 1
    outcome = chain.on_prediction(lost.request_id, keypoints((0.4, 0.4)), LEFT_ONLY, 0.0, 0.0, 5.2)
    assert outcome == PredictionOutcome.IGNORED_STALE


def test_planner_backstop_replans_when_the_validator_is_silent():
    chain = make_chain(step_timeout_s=30.0)
    chain.start("pour", 0.0)
    predict(chain, 1.0, keypoints((0.4, 0.4)))
    assert not chain.needs_prediction(30.9)
    assert chain.needs_prediction(31.0)
    assert chain.state.replan_requested and chain.state.retries == 1
    assert chain.counters["step_backstop_timeouts"] == 1


def test_normalisation_round_trip_and_config_errors():
    pixels = np.array([[64.0, 48.0], [639.0, 479.0]])
    np.testing.assert_allclose(normalise_keypoints(pixels, IMAGE_SIZE), [[0.1, 0.1], [639 / 640, 479 / 480]])
    np.testing.assert_allclose(denormalise_keypoints(normalise_keypoints(pixels, IMAGE_SIZE), IMAGE_SIZE), pixels)
    with pytest.raises(ValueError, match="history_length"):
        make_chain(history_length=0)
    with pytest.raises(ValueError, match="done_threshold"):
        make_chain(done_threshold=1.0)
    with pytest.raises(ValueError, match="image_size"):
        make_chain(image_size=(0, 480))


def run_planner_and_validator(chain, gate, validator_prob, done_after, end_s, period_s=0.1):
    """Drive chain + gate as the planner and validator nodes would, exchanging only event values."""
    now = 0.0
    chain.start("pour the water", now)
    achieved_at = []
    current_stamp = None
    while now < end_s and chain.phase == ChainPhase.RUNNING:
        if chain.needs_prediction(now):
            request = chain.request_prediction(now)
            done = 0.9 if request.index >= done_after else 0.0
            chain.on_prediction(request.request_id, keypoints((0.4, 0.4)), LEFT_ONLY, done, now, now)
        current = chain.current
        if current is not None and current.current_since_s != current_stamp:
            current_stamp = current.current_since_s  # the validator sees a new target message
            gate.reset_for_new_affordance(current.active_arms, now)
        if current is not None:
            for arm in current.active_arms:
                gate.update(arm, validator_prob(now - current.current_since_s), now)
        event = gate.poll(now)
        if event != GateEvent.NONE and chain.on_gate_event(event.value, now) and event == GateEvent.OPEN:
            achieved_at.append(round(now, 3))
        now = round(now + period_s, 6)
    return achieved_at


def test_chain_and_gate_complete_a_three_step_task_together():
    from sim2real_vla_ros.core.task.validator_gate import ValidatorGate

    chain = make_chain()
    gate = ValidatorGate(consecutive_required=3, min_dwell_s=0.5, step_timeout_s=5.0, max_retries=2)
    achieved_at = run_planner_and_validator(chain, gate, lambda dwell: 0.9 if dwell > 0.95 else 0.1, 3, 30.0)
    # Each step: positives from dwell 1.0 s, the third at 1.2 s (dwell 0.5 s long past); the
    # next affordance is predicted on the following 0.1 s tick: 0 -> 1.2, 1.3 -> 2.5, 2.6 -> 3.8.
    assert achieved_at == [1.2, 2.5, 3.8]
    assert chain.phase == ChainPhase.SUCCEEDED and chain.state.achieved_count == 3


def test_validator_that_never_succeeds_retries_then_aborts_the_chain():
    from sim2real_vla_ros.core.task.validator_gate import ValidatorGate

    chain = make_chain(max_retries=2)
    gate = ValidatorGate(consecutive_required=3, min_dwell_s=0.5, step_timeout_s=5.0, max_retries=2)
    achieved_at = run_planner_and_validator(chain, gate, lambda dwell: 0.1, 3, 60.0)
    assert achieved_at == []
    assert chain.phase == ChainPhase.ABORTED
    assert chain.state.total_retries == 2  # two re-plans, then the gate's ABORT
    assert chain.counters["timeouts"] == 2 and gate.counters["aborts"] == 1
