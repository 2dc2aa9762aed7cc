"""Unit tests of the pure safety filter (no rclpy)."""
from types import SimpleNamespace

import numpy as np
import pytest

from sim2real_vla_ros.core.control.safety import (
    SafetyEventKind,
    SafetyFilter,
    SafetyLimits,
    check_input_ages,
    ramp_toward,
)

DT = 0.02
# Piper-like limits (joints 1-6 rad, finger m), written here so the tests do not depend on robot.py.
LOWER = np.array([-2.618, 0.0, -2.967, -1.745, -1.22, -2.0944, 0.0])
UPPER = np.array([2.618, 3.14, 0.0, 1.745, 1.22, 2.0944, 0.035])
VMAX = np.array([3.0] * 6 + [0.5])
AMAX = np.array([10.0] * 6 + [1.0])
HOME = np.array([0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.01])
AGES = {"cam_high": 0.5, "wrist": 0.5, "joint_state": 0.1, "affordance": 2.0}
EPS = 1e-9


def make_limits(max_deviation=(0.5,) * 6 + (0.02,), ramp_velocity=(0.25,) * 6 + (0.01,)) -> SafetyLimits:
    return SafetyLimits(
        lower=LOWER,
        upper=UPPER,
        max_velocity=VMAX,
        max_acceleration=AMAX,
        max_deviation_from_measured=max_deviation,
        ramp_velocity=ramp_velocity,
        max_input_age_s=AGES,
    )


def fresh_stamps(now_s: float) -> dict:
    return {name: now_s for name in AGES}


def started_filter(limits: SafetyLimits | None = None, start=HOME) -> SafetyFilter:
    """A filter that has sent one command: the start position, at rest."""
    safety = SafetyFilter(limits or make_limits())
    decision = safety.filter(start, start, 0.0, fresh_stamps(0.0), False, DT)
    np.testing.assert_array_equal(decision.command, start)
    return safety


def assert_within_limits(commands: np.ndarray, limits: SafetyLimits, check_acceleration=True) -> None:
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= limits.lower - EPS) and np.all(commands <= limits.upper + EPS)
    velocity = np.diff(commands, axis=0) / DT
    assert np.all(np.abs(velocity) <= limits.max_velocity + 1e-6), np.abs(velocity).max(axis=0)
    if check_acceleration:
        acceleration = np.diff(velocity, axis=0) / DT
        assert np.all(np.abs(acceleration) <= limits.max_acceleration + 1e-6), np.abs(acceleration).max(axis=0)


def test_first_tick_starts_from_measured_state_and_nothing_before_it():
    safety = SafetyFilter(make_limits())
    far = HOME + 0.3
    before = safety.filter(far, None, 0.0, fresh_stamps(0.0), False, DT)
    assert before.command is None and before.held
    assert before.has(SafetyEventKind.NO_MEASURED_STATE)

    first = safety.filter(far, HOME, 0.02, fresh_stamps(0.02), False, DT)
    # Starts at the measured state at rest, and then moves toward the candidate within the
    # acceleration limit: one tick from rest can move at most a * dt^2.
    assert np.all(np.abs(first.command - HOME) <= AMAX * DT * DT + EPS)
    assert np.all(np.sign(first.command - HOME)[:6] >= 0)


def test_first_tick_clips_a_measured_state_outside_the_limits():
    measured = HOME.copy()
    measured[2] = 0.01  # joint3 a hair above its upper limit 0
    decision = SafetyFilter(make_limits()).filter(None, measured, 0.0, fresh_stamps(0.0), False, DT)
    assert decision.command[2] == 0.0
    assert any(event.kind is SafetyEventKind.POSITION_CLIPPED and event.joints == (2,) for event in decision.reasons)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_candidate_holds_at_last_command(bad_value):
    safety = started_filter()
    candidate = HOME.copy()
    candidate[3] = bad_value
    decision = safety.filter(candidate, HOME, 0.02, fresh_stamps(0.02), False, DT)
    assert decision.held
    np.testing.assert_array_equal(decision.command, HOME)
    event = next(event for event in decision.reasons if event.kind is SafetyEventKind.NON_FINITE_CANDIDATE)
    assert event.joints == (3,)
    assert safety.counters["non_finite_candidate"] == 1
    assert safety.counters.held_ticks == 1


def test_wrong_size_candidate_holds_with_a_reason():
    safety = started_filter()
    decision = safety.filter(np.zeros(6), HOME, 0.02, fresh_stamps(0.02), False, DT)
    assert decision.held and decision.has(SafetyEventKind.BAD_CANDIDATE_SHAPE)
    np.testing.assert_array_equal(decision.command, HOME)


def test_out_of_limit_candidate_is_clipped_and_counted():
    limits = make_limits()
    start = HOME.copy()
    start[4] = 1.2  # joint5 near its upper limit 1.22
    safety = started_filter(limits, start)
    candidate = start.copy()
    candidate[4] = 1.5  # beyond the limit, but within max deviation of the measured state
    commands = [start]
    for tick in range(1, 30):
        decision = safety.filter(candidate, start, tick * DT, fresh_stamps(tick * DT), False, DT)
        assert decision.clipped_joints == (4,)
        commands.append(decision.command)
    commands = np.array(commands)
    assert commands[-1, 4] == pytest.approx(UPPER[4])
    assert_within_limits(commands, limits)
    assert safety.counters["position_clipped"] == 29


def test_big_step_respects_velocity_and_acceleration_and_arrives_without_overshoot():
    # Deviation rule out of the way (huge threshold): this test is about rate limits.
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    target = HOME + np.array([2.0, 1.5, -1.0, -1.2, 0.6, 2.0, 0.02])
    target = np.clip(target, LOWER, UPPER)
    commands = [HOME]
    for tick in range(1, 150):
        commands.append(safety.filter(target, commands[-1], tick * DT, fresh_stamps(tick * DT), False, DT).command)
    commands = np.array(commands)
    assert_within_limits(commands, limits)
    np.testing.assert_allclose(commands[-1], target, atol=1e-9)
    # No overshoot: every joint moves monotonically toward its target.
    progress = (commands - HOME) * np.sign(target - HOME)
    assert np.all(np.diff(progress, axis=0) >= -EPS)
    # Fast joints really reach max velocity (the limit is used, not just respected).
    assert np.max(np.abs(np.diff(commands[:, 0])) / DT) == pytest.approx(VMAX[0])
    assert safety.counters["velocity_limited"] > 0 and safety.counters["acceleration_limited"] > 0


def test_feasible_moving_candidate_passes_through_unchanged():
    safety = started_filter(make_limits(max_deviation=100.0, ramp_velocity=0.25))
    times = np.arange(1, 120) * DT
    errors = []
    for now in times:
        # Starts at rest (zero velocity and acceleration at t = 0), then smooth motion within limits.
        candidate = HOME + np.array([0.4, 0.3, -0.2, 0.1, 0.1, 0.2, 0.005]) * (1.0 - np.cos(2.0 * now))
        decision = safety.filter(candidate, candidate, now, fresh_stamps(now), False, DT)
        errors.append(np.max(np.abs(decision.command - candidate)))
        assert not decision.held
    assert max(errors) < 1e-12


def test_deviation_from_measured_ramps_slowly_along_a_straight_line():
    limits = make_limits()
    safety = started_filter(limits)
    goal = HOME + np.array([1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0])  # 1.0 rad > 0.5 rad deviation
    commands = [HOME]
    for tick in range(1, 60):
        now = tick * DT
        decision = safety.filter(goal, HOME, now, fresh_stamps(now), False, DT)  # arm not following
        assert decision.has(SafetyEventKind.DEVIATION_RAMP)
        commands.append(decision.command)
    commands = np.array(commands)
    assert_within_limits(commands, limits)
    steps = np.abs(np.diff(commands, axis=0))
    assert np.all(steps[:, 0] <= limits.ramp_velocity[0] * DT + EPS)
    # At ramp speed (after accelerating) it heads straight for the goal: each step is parallel
    # to (goal - command), so the joints do not bend the path.
    assert steps[-1, 0] == pytest.approx(limits.ramp_velocity[0] * DT)
    for before, after in zip(commands[5:-1], commands[6:]):
        direction = (goal - before)[:2]
        step = (after - before)[:2]
        assert abs(direction[0] * step[1] - direction[1] * step[0]) < 1e-12
    assert safety.counters["deviation_ramp"] == 59


def test_ramp_toward_scales_all_joints_by_the_slowest():
    step = ramp_toward(np.zeros(2), np.array([1.0, 0.1]), np.array([0.5, 0.01]), 1.0)
    # joint1 needs 10 s at 0.01 rad/s, joint0 needs 2 s: joint1 sets the pace (10 %).
    np.testing.assert_allclose(step, [0.1, 0.01])
    np.testing.assert_allclose(ramp_toward(np.zeros(2), np.array([0.001, 0.0]), np.ones(2), 1.0), [0.001, 0.0])


@pytest.mark.parametrize("stale_input", sorted(AGES))
def test_each_stale_input_holds_with_its_name(stale_input):
    safety = started_filter()
    now = 10.0
    stamps = fresh_stamps(now)
    stamps[stale_input] = now - AGES[stale_input] - 0.01
    decision = safety.filter(HOME + 0.01, HOME, now, stamps, False, DT)
    assert decision.held
    np.testing.assert_array_equal(decision.command, HOME)
    assert [event.key for event in decision.reasons] == [f"stale_input:{stale_input}"]
    assert safety.counters[f"stale_input:{stale_input}"] == 1
    assert safety.counters.count_kind(SafetyEventKind.STALE_INPUT) == 1


def test_input_ages_missing_future_and_fresh():
    now = 5.0
    stamps = {"cam_high": now - 0.49, "wrist": None, "joint_state": now + 0.5, "extra": 0.0}
    events = check_input_ages(now, stamps, AGES)
    # wrist never received, joint_state from the future beyond its age, affordance missing;
    # cam_high is fresh and 'extra' has no limit.
    assert [event.detail for event in events] == ["affordance", "joint_state", "wrist"]
    assert check_input_ages(now, fresh_stamps(now), AGES) == ()


def test_hold_while_moving_decelerates_within_the_acceleration_limit():
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    target = HOME + np.array([2.0, 1.5, 0, 0, 0, 0, 0])
    commands, now = [HOME], 0.0
    for _ in range(15):  # get up to speed
        now += DT
        commands.append(safety.filter(target, commands[-1], now, fresh_stamps(now), False, DT).command)
    assert np.abs(safety.last_velocity[0]) > 2.0
    moving_from = commands[-1].copy()
    stale = fresh_stamps(now)
    stale["cam_high"] = -100.0
    for _ in range(40):
        now += DT
        decision = safety.filter(target, commands[-1], now, stale, False, DT)
        assert decision.held
        commands.append(decision.command)
    commands = np.array(commands)
    assert_within_limits(commands, limits)
    np.testing.assert_allclose(safety.last_velocity, 0.0, atol=1e-12)  # came to a stop
    # It stopped within the braking distance v^2 / (2a) (+ one tick), short of the target.
    velocity_at_hold = (commands[15] - commands[14]) / DT
    braking = velocity_at_hold**2 / (2 * AMAX) + np.abs(velocity_at_hold) * DT
    assert np.all(np.abs(commands[-1] - moving_from) <= braking + EPS)
    assert np.all(np.abs(commands[-1] - target)[:2] > 0.3)


def test_estop_holds_within_one_tick_and_release_resumes_smoothly():
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    target = HOME + np.array([2.0, 0, 0, 0, 0, 0, 0])
    commands, now = [HOME], 0.0
    for _ in range(20):
        now += DT
        commands.append(safety.filter(target, commands[-1], now, fresh_stamps(now), False, DT).command)
    moving_at = commands[-1].copy()
    assert np.abs(safety.last_velocity[0]) > 1.0

    for _ in range(10):  # e-stop: the very first tick already holds the last sent setpoint
        now += DT
        decision = safety.filter(target, commands[-1], now, fresh_stamps(now), True, DT)
        assert decision.held and decision.has(SafetyEventKind.ESTOP)
        np.testing.assert_array_equal(decision.command, moving_at)
        commands.append(decision.command)
    assert safety.counters["estop"] == 10

    released = [commands[-1]]
    for _ in range(120):
        now += DT
        released.append(safety.filter(target, released[-1], now, fresh_stamps(now), False, DT).command)
    released = np.array(released)
    assert_within_limits(released, limits)  # from rest again: velocity and acceleration limited
    np.testing.assert_allclose(released[-1], target, atol=1e-9)


def test_decode_failure_holds_from_the_last_valid_command_never_zeros():
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    target = HOME + np.array([0.0, 1.0, 0, 0, 0, 0, 0])
    commands, now = [HOME], 0.0
    for _ in range(15):
        now += DT
        commands.append(safety.filter(target, commands[-1], now, fresh_stamps(now), False, DT).command)
    for _ in range(30):
        now += DT
        decision = safety.filter(
            None, commands[-1], now, fresh_stamps(now), False, DT, candidate_fault="fast_decode:wrong_length"
        )
        assert decision.held
        assert [event.key for event in decision.reasons] == ["candidate_fault:fast_decode:wrong_length"]
        commands.append(decision.command)
    commands = np.array(commands)
    assert_within_limits(commands, limits)
    assert np.all(np.abs(commands[15:, 1]) > 0.5)  # nowhere near zero: held, not zeroed
    assert safety.counters["candidate_fault:fast_decode:wrong_length"] == 30


def test_moving_toward_a_limit_brakes_before_it():
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    beyond = HOME.copy()
    beyond[0] = 10.0  # clipped to 2.618, approached at full speed: must brake in time
    commands, now = [HOME], 0.0
    for _ in range(120):
        now += DT
        commands.append(safety.filter(beyond, commands[-1], now, fresh_stamps(now), False, DT).command)
    commands = np.array(commands)
    assert_within_limits(commands, limits)
    assert commands[-1, 0] == pytest.approx(UPPER[0])


def test_never_unsafe_for_random_adversarial_inputs():
    rng = np.random.default_rng(1234)
    limits = make_limits()
    safety = SafetyFilter(limits)
    commands, estop_engaged_ticks = [], []
    estop = False
    measured = HOME.copy()
    now = 0.0
    for tick in range(1000):
        now += DT
        kind = rng.integers(6)
        if kind == 0:
            candidate = rng.normal(0.0, 1e6, 7)
        elif kind == 1:
            candidate = rng.uniform(LOWER - 1, UPPER + 1)
            candidate[rng.random(7) < 0.3] = rng.choice([np.nan, np.inf, -np.inf])
        elif kind == 2:
            candidate = None
        elif kind == 3:
            candidate = rng.uniform(LOWER, UPPER)
        else:
            candidate = (commands[-1] if commands else HOME) + rng.normal(0, 0.05, 7)
        stamps = {name: now - rng.exponential(AGES[name] * 0.6) for name in AGES}
        if rng.random() < 0.05:
            stamps.pop(rng.choice(sorted(AGES)))
        was_estop, estop = estop, (rng.random() < 0.1) if not estop else (rng.random() < 0.7)
        measured_in = None if rng.random() < 0.02 else measured + rng.normal(0, 0.01, 7)
        fault = "fast_decode:invalid_id" if candidate is None and rng.random() < 0.5 else None
        decision = safety.filter(candidate, measured_in, now, stamps, estop, DT, candidate_fault=fault)
        if decision.command is None:
            assert not commands  # only before any measured state was ever seen
            continue
        commands.append(decision.command)
        if estop and not was_estop:
            estop_engaged_ticks.append(len(commands) - 1)
        measured = decision.command  # an arm that follows perfectly
    commands = np.array(commands)
    assert_within_limits(commands, limits, check_acceleration=False)
    acceleration = np.abs(np.diff(commands, n=2, axis=0)) / DT**2
    over = np.flatnonzero(np.any(acceleration > limits.max_acceleration + 1e-6, axis=1)) + 2
    # The only ticks allowed to exceed the acceleration limit are e-stop engagements.
    assert set(over.tolist()) <= set(estop_engaged_ticks)
    assert safety.counters.ticks == 1000
    assert safety.counters.count_kind(SafetyEventKind.NON_FINITE_CANDIDATE) > 50


def test_preview_obeys_the_same_limits_without_changing_state():
    limits = make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    before = safety.last_command
    future = np.repeat((HOME + np.array([1.5, 0, 0, 0, 0, 0, 0.05]))[None], 60, axis=0)
    future[30, 2] = np.nan  # an invalid point: the rest decelerates to a stop
    rollout = safety.preview(future, HOME, DT)
    assert rollout.shape == (60, 7)
    assert_within_limits(np.vstack([HOME, HOME, rollout]), limits)
    assert np.all(np.diff(rollout[31:, 0]) >= 0) and np.diff(rollout[-2:, 0])[0] == pytest.approx(0.0)
    np.testing.assert_array_equal(safety.last_command, before)
    held = safety.preview(None, HOME, DT, steps=5)
    np.testing.assert_array_equal(held, np.repeat(HOME[None], 5, axis=0))


def test_from_config_with_robot_limits_and_clear_errors():
    names = [f"left_joint{i}" for i in range(1, 8)]
    robot = SimpleNamespace(names=names, lower=LOWER, upper=UPPER, velocity=[5, 5, 5, 5, 5, 3, 1])
    config = {"velocity_scale": 0.5, "position_margin": 0.001, "max_input_age_s": {"cam_high": 0.3}}
    limits = SafetyLimits.from_config(robot, config)
    np.testing.assert_allclose(limits.max_velocity, [2.5] * 5 + [1.5, 0.5])
    np.testing.assert_allclose(limits.lower, LOWER + 0.001)
    assert limits.joint_names[0] == "left_joint1" and dict(limits.max_input_age_s) == {"cam_high": 0.3}
    assert np.all(limits.ramp_velocity <= limits.max_velocity)
    with pytest.raises(ValueError, match="unknown keys"):
        SafetyLimits.from_config(robot, {"max_speed": 1})
    with pytest.raises(ValueError, match="velocity_scale"):
        SafetyLimits.from_config(robot, {"velocity_scale": 2})
    with pytest.raises(ValueError, match="max_input_age_s"):
        SafetyLimits.from_config(robot, {"max_input_age_s": {"cam_high": -1}})
    with pytest.raises(ValueError, match="ramp_velocity must not exceed"):
        make_limits(ramp_velocity=5.0)
    with pytest.raises(ValueError, match="lower must be < upper"):
        SafetyLimits(UPPER, LOWER, VMAX, AMAX, 0.5, 0.1)
    with pytest.raises(ValueError, match="dt must be"):
        SafetyFilter(make_limits()).filter(HOME, HOME, 0.0, {}, False, 0.0)


def test_counters_snapshot_and_reset():
    safety = started_filter()
    safety.filter(None, HOME, 0.02, {}, True, DT)
    snapshot = safety.counters.as_dict()
    assert snapshot["ticks"] == 2 and snapshot["held_ticks"] == 1 and snapshot["estop"] == 1
    assert snapshot["stale_input:cam_high"] == 1 and snapshot["no_candidate"] == 1
    safety.reset()
    assert safety.last_command is None
    restarted = safety.filter(None, HOME + 0.01, 0.04, fresh_stamps(0.04), False, DT)
    np.testing.assert_allclose(restarted.command, np.clip(HOME + 0.01, LOWER, UPPER))


def run_against(safety, candidates, measured_of, stamps_of=fresh_stamps):
    """Feed candidates tick by tick; ``measured_of(tick, last_command)`` gives the reading."""
    decisions, last = [], safety.last_command
    for tick, candidate in enumerate(candidates, start=1):
        now = tick * DT
        decision = safety.filter(candidate, measured_of(tick, last), now, stamps_of(now), False, DT)
        decisions.append(decision)
        last = decision.command
    return decisions


def test_a_blocked_arm_is_stopped_from_the_current_command_never_stepped_to_the_reading():
    limits = make_limits()
    safety = started_filter(limits)
    # The policy drives joint 1 at 1 rad/s toward 1.5 rad away; the arm is stuck at HOME.
    candidates = [HOME + np.array([min(1.0 * tick * DT, 1.5), 0, 0, 0, 0, 0, 0]) for tick in range(1, 200)]
    decisions = run_against(safety, candidates, lambda tick, last: HOME)
    stops = [i for i, d in enumerate(decisions) if d.has(SafetyEventKind.TRACKING_ERROR)]
    assert stops, "the blocked arm was never detected"
    assert stops == list(range(stops[0], len(decisions))), "the hold must last while the arm is blocked"
    commands = np.array([HOME] + [d.command for d in decisions])
    assert_within_limits(commands, limits)  # velocity and acceleration too: no step back to HOME
    for index in stops:
        decision = decisions[index]
        assert decision.held
        assert [e.joints for e in decision.reasons if e.kind is SafetyEventKind.TRACKING_ERROR] == [(0,)]
    velocity = np.array([d.velocity[0] for d in decisions])
    held = velocity[stops[0]:]
    assert np.all(np.diff(np.abs(held)) <= 1e-12) and held[-1] == 0.0  # decelerates to rest, stays there
    lead = commands[1:, 0] - HOME[0]
    # Never further ahead of the arm than the allowance (0.35 rad + v * 0.1 s), one tick and the
    # braking distance v^2 / (2 a) at the speed the hold began.
    speed = abs(velocity[stops[0] - 1])
    assert lead.max() <= 0.35 + speed * AGES["joint_state"] + speed * DT + speed**2 / (2 * AMAX[0]) + EPS
    assert np.all(np.diff(lead[stops[0]:]) >= -EPS), "a hold never moves back toward a reading"
    assert safety.counters["tracking_error"] == len(stops)


def test_an_implausible_reading_is_set_aside_and_never_commanded():
    moving = started_filter(make_limits())
    reading = HOME.copy()
    reading[0] = 1e6  # one corrupt sample (the fault campaign's left_joint1 = 1e6)
    decision = moving.filter(HOME, reading, 0.02, fresh_stamps(0.02), False, DT)
    assert decision.held and decision.has(SafetyEventKind.IMPLAUSIBLE_MEASURED_STATE)
    np.testing.assert_array_equal(decision.command, HOME)
    assert moving.counters["implausible_measured_state"] == 1
    # Never seeds a first command either (it used to be clipped to the limit and sent).
    assert SafetyFilter(make_limits()).filter(HOME, reading, 0.0, fresh_stamps(0.0), False, DT).command is None


def test_a_plausible_but_wrong_reading_holds_within_the_limits():
    limits = make_limits()
    safety = started_filter(limits)
    offset = HOME + np.array([0.6, 0, 0, 0, 0, 0, 0])  # the campaign's sustained +0.6 rad offset
    commands = [HOME]
    for tick in range(1, 40):
        decision = safety.filter(HOME, offset, tick * DT, fresh_stamps(tick * DT), False, DT)
        assert decision.held and decision.has(SafetyEventKind.TRACKING_ERROR)
        commands.append(decision.command)
    np.testing.assert_array_equal(np.array(commands), np.repeat(HOME[None], 40, axis=0))  # at rest: stays


def test_an_arm_that_follows_with_a_tick_of_lag_is_never_held_for_tracking():
    limits = make_limits(max_deviation=100.0)
    safety = started_filter(limits)
    times = np.arange(1, 200) * DT
    candidates = [HOME + np.array([1.0, 0.6, -0.5, 0.4, 0.4, 0.8, 0.01]) * (1.0 - np.cos(2.0 * t)) for t in times]
    decisions = run_against(safety, candidates, lambda tick, last: last)  # reads the previous command
    assert not any(d.has(SafetyEventKind.TRACKING_ERROR) for d in decisions)
    assert max(np.abs(d.velocity[0]) for d in decisions) > 1.5  # it did move fast


def test_a_stale_joint_reading_never_triggers_a_tracking_jump():
    limits = make_limits(max_deviation=100.0)
    safety = started_filter(limits)
    candidates = [HOME + np.array([min(1.0 * tick * DT, 1.5), 0, 0, 0, 0, 0, 0]) for tick in range(1, 100)]

    def stale_after_half_a_second(now):
        stamps = fresh_stamps(now)
        stamps["joint_state"] = min(now, 0.5)  # the reading stops updating at 0.5 s
        return stamps

    frozen = {}

    def reading(tick, last):
        # Follows the commands until 0.5 s, then keeps reporting the value it had then.
        return frozen.setdefault("value", last) if tick * DT > 0.5 else last

    decisions = run_against(safety, candidates, reading, stale_after_half_a_second)
    assert not any(d.has(SafetyEventKind.TRACKING_ERROR) for d in decisions)
    assert any(d.has(SafetyEventKind.STALE_INPUT) for d in decisions)
    assert_within_limits(np.array([HOME] + [d.command for d in decisions]), limits)  # decelerates, no jump


def test_a_grasp_blocking_the_fingers_is_not_a_tracking_error():
    safety = started_filter(make_limits())
    closing = [HOME.copy() for _ in range(100)]
    for candidate in closing:
        candidate[6] = 0.0  # close the fingers fully
    grasped = HOME.copy()
    grasped[6] = 0.008  # the object keeps them open
    decisions = run_against(safety, closing, lambda tick, last: grasped)
    assert not any(d.has(SafetyEventKind.TRACKING_ERROR) for d in decisions)
    assert decisions[-1].command[6] == pytest.approx(0.0)


def test_tracking_error_limit_is_configurable_and_required_for_other_limbs():
    robot = SimpleNamespace(names=(), lower=LOWER, upper=UPPER, velocity=VMAX)
    np.testing.assert_allclose(SafetyLimits.from_config(robot).max_tracking_error, [0.35] * 6 + [1.0])
    np.testing.assert_allclose(SafetyLimits.from_config(robot, {"max_tracking_error": 0.1}).max_tracking_error,
                               [0.1] * 7)
    with pytest.raises(ValueError, match="max_tracking_error must be > 0"):
        SafetyLimits.from_config(robot, {"max_tracking_error": 0.0})
    with pytest.raises(ValueError, match="max_tracking_error is required for a 2-joint limb"):
        SafetyLimits([0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.1, 0.1])


# ----------------------------------------------------------------------------- last-line check


def moving_filter(limits=None):
    """A filter whose command moves joint 1 at speed (about 2 rad/s after 15 ticks)."""
    limits = limits or make_limits(max_deviation=100.0, ramp_velocity=0.25)
    safety = started_filter(limits)
    target = HOME + np.array([2.0, 0, 0, 0, 0, 0, 0])
    now = 0.0
    for _ in range(15):
        now += DT
        safety.filter(target, safety.last_command, now, fresh_stamps(now), False, DT)
    assert abs(safety.last_velocity[0]) > 1.5
    return safety, target, now


@pytest.mark.parametrize("broken, what", [
    (lambda position: position + 0.5, "velocity"),                       # a jump
    (lambda position: np.full_like(position, np.nan), "non_finite"),
    (lambda position: np.where(np.arange(7) == 2, 0.01, position), "position"),  # joint3 above its 0 limit
])
def test_a_command_that_breaks_an_invariant_is_not_sent_but_counted(monkeypatch, broken, what):
    from sim2real_vla_ros.core.control import safety as module

    safety, target, now = moving_filter()
    previous, previous_velocity = safety.last_command, safety.last_velocity
    real_step = module.rate_limited_step

    def buggy(position, velocity, goal, *args, **kwargs):
        command, command_velocity, events = real_step(position, velocity, goal, *args, **kwargs)
        return (broken(command) if goal is not None else command), command_velocity, events

    monkeypatch.setattr(module, "rate_limited_step", buggy)
    decision = safety.filter(target, previous, now + DT, fresh_stamps(now + DT), False, DT)
    assert decision.held and any(e.key == f"invariant_violation:{what}" for e in decision.reasons)
    # The controlled stop was sent instead: within every limit, decelerating.
    assert_within_limits(np.array([previous - previous_velocity * DT, previous, decision.command]), safety.limits)
    assert abs(decision.velocity[0]) < abs(previous_velocity[0])
    assert safety.counters[f"invariant_violation:{what}"] == 1


def test_command_violations_names_each_broken_limit_and_exempts_only_a_freeze():
    from sim2real_vla_ros.core.control.safety import command_violations

    limits = make_limits()
    velocity = np.zeros(7)
    velocity[0] = 2.0
    fine = HOME + velocity * DT
    assert command_violations(HOME, velocity, fine, limits, DT) == ()
    too_fast = HOME.copy()
    too_fast[1] += VMAX[1] * DT * 1.01
    assert [(e.detail, e.joints) for e in command_violations(HOME, np.zeros(7), too_fast, limits, DT)] == [
        ("velocity", (1,)), ("acceleration", (1,))]
    # Stopping in one tick from 2 rad/s is 100 rad/s^2: a violation, unless it is a freeze.
    assert [e.detail for e in command_violations(HOME, velocity, HOME, limits, DT)] == ["acceleration"]
    assert command_violations(HOME, velocity, HOME, limits, DT, freeze_allowed=True) == ()
    nearly = HOME + 1e-6
    assert command_violations(HOME, velocity, nearly, limits, DT, freeze_allowed=True) != ()
    # The stated tolerance: 1e-6 relative + 1e-9 absolute, not more.
    edge = HOME.copy()
    edge[0] += VMAX[0] * DT * (1 + 1e-7)
    assert command_violations(HOME, np.full(7, 0.0) + (edge - HOME) / DT, edge, limits, DT) == ()
    edge[0] = HOME[0] + VMAX[0] * DT * (1 + 1e-5)
    assert [e.detail for e in command_violations(HOME, (edge - HOME) / DT, edge, limits, DT)] == ["velocity"]


def test_seed_continues_from_a_known_command_within_the_limits():
    old, target, now = moving_filter()
    restarted = SafetyFilter(old.limits)
    restarted.seed(old.last_command, old.last_velocity)
    commands = [old.last_command - old.last_velocity * DT, old.last_command]
    for _ in range(40):
        now += DT
        commands.append(restarted.filter(target, commands[-1], now, fresh_stamps(now), False, DT).command)
    assert_within_limits(np.array(commands), old.limits)
    with pytest.raises(ValueError, match="finite"):
        restarted.seed(np.full(7, np.nan))
    with pytest.raises(ValueError, match="velocity"):
        restarted.seed(HOME, np.zeros(3))


def test_preview_replaces_a_violating_rollout_by_the_controlled_stop(monkeypatch):
    from sim2real_vla_ros.core.control import safety as module

    safety, target, _ = moving_filter()
    real_step = module.rate_limited_step
    calls = {"n": 0}

    def buggy(position, velocity, goal, *args, **kwargs):
        command, command_velocity, events = real_step(position, velocity, goal, *args, **kwargs)
        calls["n"] += 1
        if goal is not None and calls["n"] == 4:
            command = command + 0.3  # the fourth point jumps
        return command, command_velocity, events

    monkeypatch.setattr(module, "rate_limited_step", buggy)
    rollout = safety.preview(np.repeat(target[None], 20, axis=0), safety.last_command, DT)
    start = safety.last_command
    assert_within_limits(np.vstack([start - safety.last_velocity * DT, start, rollout]), safety.limits)
    assert safety.counters["invariant_violation:velocity"] == 1
    np.testing.assert_allclose(np.diff(rollout[-3:], axis=0), 0.0, atol=1e-12)  # came to rest
