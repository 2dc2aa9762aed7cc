"""Unit tests of the validator gate (pure core, no rclpy)."""

import math

import pytest

from sim2real_vla_ros.core.task.validator_gate import (
    DECISION_IGNORED_INACTIVE,
    DECISION_IGNORED_STALE_OBS,
    DECISION_IGNORED_UNARMED,
    DECISION_NAN,
    DECISION_NEGATIVE,
    DECISION_POSITIVE,
    GateEvent,
    ValidatorGate,
)


def make_gate(**overrides):
    settings = dict(threshold=0.5, consecutive_required=3, min_dwell_s=1.0, step_timeout_s=10.0, max_retries=2)
    settings.update(overrides)
    return ValidatorGate(**settings)


def feed(gate, arm, probs, start_s, period_s=0.1):
    """Feed decisions at start_s, start_s + period_s, ...; return the time of the last one."""
    now = start_s
    for step, prob in enumerate(probs):
        now = start_s + step * period_s
        gate.update(arm, prob, now)
    return now


def test_opens_after_n_consecutive_positives_and_only_once():
    gate = make_gate(min_dwell_s=0.0)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    gate.update("left", 0.9, 0.1)
    gate.update("left", 0.7, 0.2)
    assert gate.poll(0.2) == GateEvent.NONE  # 2 of 3
    gate.update("left", 0.5, 0.3)  # threshold itself counts as positive
    assert gate.poll(0.3) == GateEvent.OPEN
    assert gate.poll(0.4) == GateEvent.NONE  # latched until the next affordance
    assert gate.counters["opens"] == 1


def test_a_negative_in_between_resets_the_run():
    gate = make_gate(min_dwell_s=0.0)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    feed(gate, "left", [0.9, 0.9, 0.2, 0.9, 0.9], start_s=0.1)
    assert gate.status(0.6).consecutive == {"left": 2}
    assert gate.poll(0.6) == GateEvent.NONE
    gate.update("left", 0.9, 0.7)
    assert gate.poll(0.7) == GateEvent.OPEN


def test_every_active_arm_must_reach_n():
    gate = make_gate(min_dwell_s=0.0)
    gate.reset_for_new_affordance(["left", "right"], now_s=0.0)
    feed(gate, "left", [0.9, 0.9, 0.9], start_s=0.1)
    feed(gate, "right", [0.9, 0.9], start_s=0.1)
    status = gate.status(0.4)
    assert status.achieved == {"left": True, "right": False}
    assert gate.poll(0.4) == GateEvent.NONE
    gate.update("right", 0.8, 0.5)
    assert gate.poll(0.5) == GateEvent.OPEN


def test_min_dwell_holds_the_gate_closed():
    gate = make_gate(min_dwell_s=1.0)
    gate.reset_for_new_affordance(["right"], now_s=5.0)
    feed(gate, "right", [0.9, 0.9, 0.9], start_s=5.1)
    assert gate.poll(5.5) == GateEvent.NONE  # achieved, but current for only 0.5 s
    assert gate.poll(5.99) == GateEvent.NONE
    assert gate.poll(6.0) == GateEvent.OPEN


def test_inactive_arm_is_ignored():
    gate = make_gate(min_dwell_s=0.0, consecutive_required=2)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    gate.update("left", 0.9, 0.1)
    gate.update("right", 0.0, 0.15)  # the idle arm's negative must not reset anything
    gate.update("left", 0.9, 0.2)
    assert gate.poll(0.2) == GateEvent.OPEN
    assert gate.counters["ignored_inactive"] == 1
    assert (0.15, "right", 0.0, DECISION_IGNORED_INACTIVE) in gate.decisions()


def test_nan_probability_is_negative_and_counted():
    gate = make_gate(min_dwell_s=0.0, consecutive_required=2)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    gate.update("left", 0.9, 0.1)
    assert gate.update("left", math.nan, 0.2) is False
    gate.update("left", 0.9, 0.3)
    assert gate.poll(0.3) == GateEvent.NONE  # the NaN broke the run
    assert gate.update("left", math.inf, 0.4) is False
    assert gate.counters["nan_probs"] == 2
    labels = [decision for _, _, _, decision in gate.decisions()]
    assert labels == [DECISION_POSITIVE, DECISION_NAN, DECISION_POSITIVE, DECISION_NAN]


def test_timeouts_ask_for_retries_then_abort():
    gate = make_gate(step_timeout_s=10.0, max_retries=2)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    assert gate.poll(9.9) == GateEvent.NONE
    assert gate.poll(10.0) == GateEvent.TIMEOUT_RETRY
    assert gate.retries == 1
    # The planner re-plans the same step: the gate keeps the retry count.
    gate.reset_for_new_affordance(["left"], now_s=10.5)
    assert gate.poll(20.4) == GateEvent.NONE
    assert gate.poll(20.5) == GateEvent.TIMEOUT_RETRY
    gate.reset_for_new_affordance(["left"], now_s=21.0)
    assert gate.poll(31.0) == GateEvent.ABORT
    assert gate.poll(100.0) == GateEvent.NONE
    assert gate.counters["timeouts"] == 3 and gate.counters["aborts"] == 1
    assert [event for _, event, _, _ in gate.events()] == ["timeout_retry", "timeout_retry", "abort"]


def test_timeout_clock_restarts_even_if_the_planner_never_replans():
    gate = make_gate(step_timeout_s=2.0, max_retries=1)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    assert gate.poll(2.0) == GateEvent.TIMEOUT_RETRY
    assert gate.poll(3.9) == GateEvent.NONE
    assert gate.poll(4.0) == GateEvent.ABORT


def test_open_resets_retries_for_the_next_step():
    gate = make_gate(step_timeout_s=2.0, max_retries=1, min_dwell_s=0.0, consecutive_required=1)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    assert gate.poll(2.0) == GateEvent.TIMEOUT_RETRY
    gate.reset_for_new_affordance(["left"], now_s=2.1)  # re-plan of step 0
    gate.update("left", 0.9, 2.2)
    assert gate.poll(2.2) == GateEvent.OPEN
    gate.reset_for_new_affordance(["left"], now_s=2.3)  # step 1: a fresh retry budget
    assert gate.status(2.3).affordance_index == 1
    assert gate.retries == 0
    assert gate.poll(4.3) == GateEvent.TIMEOUT_RETRY


def test_explicit_index_decides_between_replan_and_new_step():
    gate = make_gate(step_timeout_s=1.0, max_retries=3)
    gate.reset_for_new_affordance(["left"], now_s=0.0, affordance_index=4)
    assert gate.poll(1.0) == GateEvent.TIMEOUT_RETRY
    gate.reset_for_new_affordance(["left"], now_s=1.1, affordance_index=4)
    assert gate.retries == 1
    gate.reset_for_new_affordance(["left"], now_s=1.2, affordance_index=5)
    assert gate.retries == 0


def test_new_affordance_resets_runs_and_dwell():
    gate = make_gate(min_dwell_s=0.5, consecutive_required=2)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    feed(gate, "left", [0.9, 0.9], start_s=0.1)
    gate.reset_for_new_affordance(["left"], now_s=0.3)
    status = gate.status(0.4)
    assert status.consecutive == {"left": 0}
    assert status.dwell_s == pytest.approx(0.1)
    assert gate.poll(0.9) == GateEvent.NONE


def test_decisions_before_arming_and_on_stale_observations_are_ignored():
    gate = make_gate(min_dwell_s=0.0, consecutive_required=1)
    gate.update("left", 0.9, 0.0)
    assert gate.poll(0.0) == GateEvent.NONE
    gate.reset_for_new_affordance(["left"], now_s=1.0)
    assert gate.update("left", 0.9, 1.1, obs_stamp_s=0.95) is False  # observed before the affordance
    assert gate.poll(1.1) == GateEvent.NONE
    assert gate.update("left", 0.9, 1.2, obs_stamp_s=1.05) is True
    assert gate.poll(1.2) == GateEvent.OPEN
    labels = [decision for _, _, _, decision in gate.decisions()]
    assert labels == [DECISION_IGNORED_UNARMED, DECISION_IGNORED_STALE_OBS, DECISION_POSITIVE]


def test_decision_log_is_bounded():
    gate = make_gate(log_capacity=4)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    feed(gate, "left", [0.1, 0.2, 0.3, 0.4, 0.6, 0.7], start_s=0.0, period_s=1.0)
    log = gate.decisions()
    assert len(log) == 4
    assert log[0] == (2.0, "left", 0.3, DECISION_NEGATIVE)
    assert log[-1] == (5.0, "left", 0.7, DECISION_POSITIVE)
    assert gate.counters["updates"] == 6


def test_clear_disarms_and_forgets_the_step():
    gate = make_gate(step_timeout_s=1.0)
    gate.reset_for_new_affordance(["left"], now_s=0.0)
    assert gate.poll(1.0) == GateEvent.TIMEOUT_RETRY
    gate.clear()
    assert gate.poll(50.0) == GateEvent.NONE
    gate.reset_for_new_affordance(["left"], now_s=60.0)
    assert gate.retries == 0 and gate.status(60.0).affordance_index == 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="threshold"):
        ValidatorGate(threshold=0.0)
    with pytest.raises(ValueError, match="consecutive_required"):
        ValidatorGate(consecutive_required=0)
    with pytest.raises(ValueError, match="step_timeout_s"):
        ValidatorGate(step_timeout_s=math.nan)
    gate = make_gate()
    with pytest.raises(ValueError, match="at least one arm"):
        gate.reset_for_new_affordance([], now_s=0.0)
    with pytest.raises(ValueError, match="unknown arm 'middle'"):
        gate.update("middle", 0.5, 0.0)
    with pytest.raises(TypeError, match="prob for arm 'left'"):
        gate.update("left", None, 0.0)


def test_event_values_are_the_wire_names():
    assert [event.value for event in GateEvent] == ["none", "open", "timeout_retry", "abort"]
    assert GateEvent("open") is GateEvent.OPEN
