"""Unit tests of the joint-reading validator (core/control/joint_reading.py); no rclpy.

The scenarios are the fault campaign's (issue 10): one 1e6 sample, an isolated bad sample
among good ones, a sustained plausible +0.6 rad offset, an arm's names swapped with the other
arm's or reversed, stamps that go back; and the normal case that must never be rejected.
"""
import numpy as np
import pytest

from sim2real_vla_ros.core.control.actor_io import arm_state_from_joint_state
from sim2real_vla_ros.core.control.joint_reading import (REJECTION_REASONS, JointReadingValidator,
                                                         ValidatedJointState, validator_diagnostics)
from sim2real_vla_ros.core.control.safety import SafetyEventKind, SafetyFilter, SafetyLimits

DT = 0.02            # control tick (s)
READING_DT = 0.005   # /joint_states at 200 Hz
LOWER = np.array([-2.618, 0.0, -2.967, -1.745, -1.22, -2.0944, 0.0])
UPPER = np.array([2.618, 3.14, 0.0, 1.745, 1.22, 2.0944, 0.035])
VELOCITY = np.array([5.0] * 5 + [3.0, 1.0])
HOME = np.array([0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.01])
OTHER_ARM = np.array([0.4, 1.6, -1.5, 0.3, -0.2, 0.5, 0.03])  # the right arm, somewhere else
AGES = {"cam_high": 0.5, "wrist": 0.5, "joint_state": 0.1, "affordance": 30.0}


def make_validator(**overrides) -> JointReadingValidator:
    return JointReadingValidator(LOWER, UPPER, VELOCITY, **overrides)


def confirmed(validator=None, at=HOME, stamp=0.0) -> JointReadingValidator:
    """A validator that has accepted ``at`` (two agreeing readings)."""
    validator = validator or make_validator()
    assert validator.check(at, stamp - READING_DT).reason == "unconfirmed"
    assert validator.check(at, stamp).accepted
    return validator


def joint_state(left, right, swap=False, reverse=False):
    """A /joint_states message's names and positions for both arms (optionally corrupted)."""
    left_names = [f"left_joint{i}" for i in range(1, 8)]
    right_names = [f"right_joint{i}" for i in range(1, 8)]
    if swap:
        left_names, right_names = right_names, left_names
    if reverse:
        left_names = left_names[::-1]
    return left_names + right_names, list(left) + list(right)


def test_the_first_reading_is_only_accepted_once_a_second_agrees():
    validator = make_validator()
    first = validator.check(HOME, 0.0)
    assert not first.accepted and first.reason == "unconfirmed" and first.positions is None
    second = validator.check(HOME + 1e-4, READING_DT)
    assert second.accepted
    np.testing.assert_array_equal(second.positions, HOME + 1e-4)
    assert validator.last_accepted[1] == READING_DT
    assert make_validator(confirmations=1).check(HOME, 0.0).accepted


def test_an_isolated_bad_first_sample_never_becomes_the_reference():
    validator = make_validator()
    assert validator.check(OTHER_ARM, 0.0).reason == "unconfirmed"
    assert validator.check(HOME, 0.005).reason == "unconfirmed"  # disagrees with the bad one
    assert validator.check(HOME, 0.010).accepted
    np.testing.assert_array_equal(validator.last_accepted[0], HOME)


def test_one_1e6_sample_among_good_ones_is_rejected_and_the_good_ones_go_on():
    validator = confirmed()
    for k in range(1, 20):
        reading = HOME.copy()
        if k == 7:
            reading[0] = 1e6  # the campaign's left_joint1 = 1e6
        verdict = validator.check(reading, k * READING_DT)
        assert verdict.accepted == (k != 7)
    assert validator.rejected("outside_limits") == 1
    assert validator.rejected() == 1 + validator.rejected("unconfirmed")  # the start-up one
    assert "outside_limits (joint1)" in validator.counters()["last_rejection"]


def test_an_isolated_plausible_sample_is_rejected_for_its_speed():
    validator = confirmed()
    jumped = HOME + np.array([0.3, 0, 0, 0, 0, 0, 0])  # within the limits and the tracking allowance
    verdict = validator.check(jumped, READING_DT)
    assert verdict.reason == "implausible_speed" and verdict.joints == (0,)
    assert validator.check(HOME, 2 * READING_DT).accepted


def test_a_sustained_offset_is_never_accepted_while_the_arm_is_commanded_elsewhere():
    validator = confirmed()
    offset = HOME + np.array([0.6, 0, 0, 0, 0, 0, 0])  # the campaign's sustained +0.6 rad offset
    reasons = set()
    for k in range(1, 200):
        stamp = k * READING_DT
        if k % 4 == 0:
            validator.commanded(HOME, stamp)  # the arm is being held at HOME
        verdict = validator.check(offset, stamp)
        assert not verdict.accepted
        reasons.add(verdict.reason)
    # First too fast for the arm, then (no recent reference) agreeing with itself but not with the commands.
    assert reasons == {"implausible_speed", "unconfirmed", "inconsistent_with_command"}


def test_swapped_and_reversed_names_are_rejected():
    validator = confirmed()
    validator.commanded(HOME, 0.0)
    stamp = READING_DT
    for corruption in ({"swap": True}, {"reverse": True}):
        names, positions = joint_state(HOME, OTHER_ARM, **corruption)
        reading = arm_state_from_joint_state(names, positions, "left")
        verdict = validator.check(reading, stamp)
        assert not verdict.accepted and verdict.reason in ("implausible_speed", "outside_limits"), verdict
        stamp += READING_DT
    names, positions = joint_state(HOME, OTHER_ARM)
    assert validator.check(arm_state_from_joint_state(names, positions, "left"), stamp).accepted


def test_stamps_that_go_back_are_rejected_until_the_consumer_resets_the_time():
    validator = confirmed(stamp=100.0)
    assert validator.check(HOME, 100.005).accepted
    assert validator.check(HOME, 99.0).reason == "stamp_went_back"
    assert validator.check(HOME, 100.005).accepted  # a duplicate stamp is fine
    validator.reset_time()  # the consumer saw its clock jump back (a restarted /clock)
    assert validator.check(HOME, 1.0).reason == "unconfirmed"
    assert validator.check(HOME, 1.005).accepted


def test_future_stamps_non_finite_wrong_size_and_malformed_messages_are_counted():
    validator = confirmed(stamp=10.0)
    assert validator.check(HOME, 10.5, now_s=10.01).reason == "stamp_in_future"
    assert validator.check(HOME, 10.02, now_s=10.01).accepted  # within max_stamp_lead_s
    nan = HOME.copy()
    nan[3] = np.nan
    verdict = validator.check(nan, 10.03)
    assert verdict.reason == "non_finite" and verdict.joints == (3,)
    assert validator.check(HOME[:6], 10.03).reason == "wrong_size"
    assert validator.check(HOME, float("nan")).reason == "stamp_not_finite"
    with pytest.raises(ValueError, match="non-finite"):
        arm_state_from_joint_state(*joint_state(nan, HOME), "left")
    assert validator.reject_malformed("non-finite values for ['left_joint4']").reason == "malformed"
    counters = validator.counters()
    assert counters["accepted"] == 2 and counters["rejected:malformed"] == 1
    assert counters["rejected:unconfirmed"] == 1 and counters["rejected:stamp_in_future"] == 1
    assert set(key.split(":", 1)[1] for key in counters if key.startswith("rejected:")) <= set(REJECTION_REASONS)
    assert validator_diagnostics(validator)["joint_reading.rejected:non_finite"] == 1


def test_an_arm_following_its_commands_fast_is_never_rejected():
    rng = np.random.default_rng(3)
    validator = make_validator()
    amplitude = np.array([1.0, 0.6, -0.5, 0.4, 0.4, 0.8, 0.01])
    omega = 4.0  # peak joint speed 4 rad/s (joint 1), close to the 5 rad/s limit
    commanded = lambda t: HOME + amplitude * (1.0 - np.cos(omega * t))  # noqa: E731
    accepted = 0
    for k in range(1, 800):
        stamp = k * READING_DT
        if k % 4 == 0:
            validator.commanded(commanded(stamp), stamp)
        # The arm lags its command by 30 ms, readings carry encoder noise.
        reading = commanded(max(stamp - 0.03, 0.0)) + rng.normal(0.0, 1e-3, 7) * np.array([1] * 6 + [0.1])
        verdict = validator.check(reading, stamp)
        assert verdict.accepted or (k == 1 and verdict.reason == "unconfirmed"), (k, verdict)
        accepted += verdict.accepted
    assert accepted == 798


def test_from_limits_takes_the_urdf_and_the_filter_allowances():
    from sim2real_vla_ros.core.robot import arm_limits

    urdf = arm_limits("left")
    safety = SafetyLimits.from_config(urdf, {"max_tracking_error": 0.2})
    validator = JointReadingValidator.from_limits(urdf, safety)
    np.testing.assert_array_equal(validator.upper, urdf.upper)
    np.testing.assert_allclose(validator.max_tracking_error, 0.2)
    assert validator.tracking_lag_s == pytest.approx(0.1) and validator.reacquire_after_s == pytest.approx(0.1)
    assert validator.joint_names[0] == "left_joint1"
    with pytest.raises(ValueError, match="speed_factor"):
        make_validator(speed_factor=0.5)
    with pytest.raises(ValueError, match="confirmations"):
        make_validator(confirmations=0)
    with pytest.raises(ValueError, match="required for a 2-joint"):
        JointReadingValidator([0, 0], [1, 1], [1, 1])


def run_consumer(readings_of, ticks=60, start=HOME):
    """The reference consumer: 4 readings per control tick through ValidatedJointState into a filter."""
    limits = SafetyLimits(LOWER, UPPER, VELOCITY, 10.0, (0.5,) * 6 + (0.02,), (0.25,) * 6 + (0.01,),
                          max_input_age_s=AGES)
    safety = SafetyFilter(limits)
    state = ValidatedJointState(JointReadingValidator(LOWER, UPPER, VELOCITY))
    target = start + np.array([0.5, 0, 0, 0, 0, 0, 0])
    decisions, arm = [], start.copy()
    for tick in range(ticks):
        now = tick * DT
        for k in range(4):
            stamp = now - DT + (k + 1) * READING_DT
            state.update(readings_of(tick, k, arm), stamp, now)
        measured, stamp = state.latest
        stamps = {name: now for name in AGES}
        stamps["joint_state"] = stamp
        decision = safety.filter(target, measured, now, stamps, False, DT)
        decisions.append(decision)
        if decision.command is not None:
            state.commanded(decision.command, now)
            arm = decision.command  # an arm that follows with a tick of lag
    return decisions, state


def test_a_stream_of_rejected_readings_stops_the_arm_through_the_stale_input_hold():
    offset = np.array([0.6, 0, 0, 0, 0, 0, 0])

    def forged_from_tick_20(tick, k, arm):
        return arm + offset if tick >= 20 else arm  # an intruder takes over /joint_states

    decisions, state = run_consumer(forged_from_tick_20)
    assert not any(d.held for d in decisions[2:20])  # moving normally toward the target
    stale = [t for t, d in enumerate(decisions) if any(e.key == "stale_input:joint_state" for e in d.reasons)]
    assert stale and stale[0] <= 20 + int(round(AGES["joint_state"] / DT)) + 1
    assert stale == list(range(stale[0], len(decisions)))  # and stays stopped
    commands = np.array([d.command for d in decisions if d.command is not None])
    velocity = np.diff(commands, axis=0) / DT
    assert np.all(np.abs(velocity) <= VELOCITY + 1e-9)
    assert np.all(np.abs(np.diff(velocity, axis=0)) <= 10.0 * DT + 1e-9)  # decelerates, no jump
    np.testing.assert_allclose(velocity[-5:], 0.0, atol=1e-12)  # at rest
    assert state.validator.rejected() >= 4 * 39
    assert not any(d.has(SafetyEventKind.TRACKING_ERROR) for d in decisions)  # never believed


def test_single_bad_samples_among_good_ones_do_not_disturb_the_motion():
    def one_bad_in_ten(tick, k, arm):
        if (4 * tick + k) % 10 == 3:
            return np.where(np.arange(7) == 0, 1e6, arm) if tick % 2 else arm + np.r_[[0.3] * 6, 0.0]
        return arm

    decisions, state = run_consumer(one_bad_in_ten)
    assert not any(d.held for d in decisions[2:])
    assert state.validator.rejected("outside_limits") > 0 and state.validator.rejected("implausible_speed") > 0
