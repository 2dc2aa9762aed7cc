"""joint_trajectory_controller semantics of sim.trajectory.TrajectoryFollower (no ROS).

Most tests below pin master's splicing rule set (``replacement="splice"``, out-of-limit points
rejected), the behaviour this class modelled first; the ``released_`` tests pin the default,
JTC as released (replacement, future stamps, measured / desired anchor, no limit check)."""
import math

import numpy as np
import pytest

from sim2real_vla_ros.sim.trajectory import (
    Acceptance,
    RejectReason,
    TrajectoryFollower,
    TrajectoryPoint,
)

NAMES = ["j_a", "j_b"]
LOWER = [-2.0, -1.0]
UPPER = [2.0, 1.0]


def follower(interpolation="linear", hold=(0.0, 0.0), hold_time=0.0):
    f = TrajectoryFollower(NAMES, LOWER, UPPER, interpolation=interpolation, replacement="splice",
                           reject_out_of_limits=True)
    if hold is not None:
        f.hold(hold, now_s=hold_time)
    return f


def pt(positions, t, velocities=None):
    return TrajectoryPoint(positions, t, velocities)


# ---------------------------------------------------------------- interpolation
def test_linear_interpolation_matches_hand_computed_values():
    f = follower()
    result = f.accept(NAMES, [pt([1.0, -0.5], 1.0), pt([0.0, 0.5], 3.0)], stamp_s=0.0, now_s=1.0)
    assert result.ok and result.start_time == 1.0 and result.skipped_points == 0
    # From the held state (0, 0) at t=1 to (1, -0.5) at t=2: halfway at 1.5.
    q, v = f.sample(1.5)
    np.testing.assert_allclose(q, [0.5, -0.25])
    np.testing.assert_allclose(v, [1.0, -0.5])
    # (1, -0.5) at t=2 to (0, 0.5) at t=4: a quarter of the way at 2.5.
    np.testing.assert_allclose(f.setpoint(2.5), [0.75, -0.25])
    np.testing.assert_allclose(f.sample(2.5)[1], [-0.5, 0.5])
    # Points reached exactly, then the last one held with zero velocity.
    np.testing.assert_allclose(f.setpoint(2.0), [1.0, -0.5])
    q_end, v_end = f.sample(10.0)
    np.testing.assert_allclose(q_end, [0.0, 0.5])
    np.testing.assert_allclose(v_end, [0.0, 0.0])
    assert not f.finished(3.9) and f.finished(4.0) and f.active


def test_cubic_passes_through_points_with_given_velocities():
    f = follower("cubic")
    points = [pt([1.0, 0.5], 1.0, [0.5, -0.2]), pt([1.5, 0.0], 2.0, [0.0, 0.0])]
    assert f.accept(NAMES, points, stamp_s=0.0, now_s=0.0)
    for t, point in ((1.0, points[0]), (2.0, points[1])):
        q, v = f.sample(t)
        np.testing.assert_allclose(q, point.positions, atol=1e-12)
        np.testing.assert_allclose(v, point.velocities, atol=1e-12)
    # Hand-computed Hermite value, first segment (q0=0, v0=0 -> q1=1, v1=0.5, h=1) at s=0.5:
    # h01(0.5) * 1 + h11(0.5) * 0.5 = 0.5 + (-0.125) * 0.5 = 0.4375.
    assert f.setpoint(0.5)[0] == pytest.approx(0.4375)
    # Its derivative there: d01(0.5) * 1 + d11(0.5) * 0.5 = 1.5 - 0.25 * 0.5.
    assert f.sample(0.5)[1][0] == pytest.approx(1.375)


def test_cubic_estimated_velocities_do_not_overshoot_waypoints():
    f = follower("cubic")
    values = [0.0, 1.0, 1.05, 0.2, 0.25]
    points = [pt([v, -v / 2], 0.5 * (k + 1)) for k, v in enumerate(values)]
    assert f.accept(NAMES, points, stamp_s=0.0, now_s=0.0)
    samples = np.array([f.setpoint(t) for t in np.linspace(0.0, 3.0, 601)])
    assert samples[:, 0].max() <= 1.05 + 1e-12 and samples[:, 0].min() >= -1e-12
    # Passes through every waypoint; interior velocities nonzero except at the local extremum.
    for k, v in enumerate(values):
        assert f.setpoint(0.5 * (k + 1))[0] == pytest.approx(v)
    assert f.sample(1.0)[1][0] > 0.0  # monotone rise through point 1
    assert f.sample(1.5)[1][0] == 0.0  # local maximum at point 2
    assert f.clipped_samples == 0


# ----------------------------------------------------------------- replacement
def test_replacement_keeps_the_executed_part_and_switches_at_the_new_start():
    f = follower()
    assert f.accept(NAMES, [pt([2.0, 0.0], 2.0)], stamp_s=0.0, now_s=0.0)
    np.testing.assert_allclose(f.setpoint(1.0), [1.0, 0.0])
    # New trajectory at t=1 starting now: from the desired 1.0 back to 0.0 at t=2.
    result = f.accept(NAMES, [pt([0.0, 0.0], 1.0)], stamp_s=0.0, now_s=1.0)
    assert result.ok and result.start_time == 1.0
    np.testing.assert_allclose(f.setpoint(0.5), [0.5, 0.0])  # executed part unchanged
    np.testing.assert_allclose(f.setpoint(1.5), [0.5, 0.0])  # new part: 1.0 -> 0.0
    np.testing.assert_allclose(f.setpoint(3.0), [0.0, 0.0])


def test_future_start_replacement_keeps_old_trajectory_until_the_stamp():
    f = follower()
    assert f.accept(NAMES, [pt([1.0, 0.0], 1.0), pt([2.0, 0.0], 2.0)], stamp_s=0.0, now_s=0.0)
    result = f.accept(NAMES, [pt([0.5, 0.0], 1.0)], stamp_s=1.5, now_s=0.5)
    assert result.ok and result.start_time == 1.5
    np.testing.assert_allclose(f.setpoint(1.0), [1.0, 0.0])  # old trajectory still running
    np.testing.assert_allclose(f.setpoint(1.5), [1.5, 0.0])  # spliced at the old desired state
    np.testing.assert_allclose(f.setpoint(2.0), [1.0, 0.0])  # halfway 1.5 -> 0.5
    np.testing.assert_allclose(f.setpoint(2.5), [0.5, 0.0])


def test_cubic_splice_is_continuous_in_position_and_velocity():
    f = follower("cubic")
    assert f.accept(NAMES, [pt([1.0, 0.3], 1.0), pt([1.8, 0.6], 2.0)], stamp_s=0.0, now_s=0.0)
    before_q, before_v = f.sample(1.3)
    assert f.accept(NAMES, [pt([0.0, 0.0], 1.0)], stamp_s=0.0, now_s=1.3)
    after_q, after_v = f.sample(1.3)
    np.testing.assert_allclose(after_q, before_q, atol=1e-12)
    np.testing.assert_allclose(after_v, before_v, atol=1e-12)


def test_future_stamp_holds_the_current_desired_state_until_the_stamp():
    f = follower(hold=(0.3, -0.2))
    assert f.accept(NAMES, [pt([1.0, 0.0], 1.0)], stamp_s=5.0, now_s=1.0)
    for t in (1.0, 3.0, 5.0):
        np.testing.assert_allclose(f.setpoint(t), [0.3, -0.2])
    assert not f.finished(5.0)
    np.testing.assert_allclose(f.setpoint(5.5), [0.65, -0.1])
    np.testing.assert_allclose(f.setpoint(6.0), [1.0, 0.0])
    assert f.finished(6.0)


def test_stale_points_are_skipped_and_all_stale_is_rejected():
    f = follower()
    # Stamp 8, now 10: the point at t=9 is past, the one at t=11 is kept.
    result = f.accept(NAMES, [pt([0.2, 0.0], 1.0), pt([0.4, 0.0], 3.0)], stamp_s=8.0, now_s=10.0)
    assert result.ok and result.skipped_points == 1 and result.start_time == 10.0
    np.testing.assert_allclose(f.setpoint(10.5), [0.2, 0.0])  # 0 at t=10 -> 0.4 at t=11
    np.testing.assert_allclose(f.setpoint(11.0), [0.4, 0.0])
    stale = f.accept(NAMES, [pt([1.0, 0.0], 1.0)], stamp_s=5.0, now_s=12.0)
    assert not stale.ok and stale.code is RejectReason.ALL_POINTS_IN_PAST
    np.testing.assert_allclose(f.setpoint(12.0), [0.4, 0.0])  # current trajectory unchanged


def test_point_at_time_zero_with_stamp_zero_is_a_step():
    f = follower()
    assert f.accept(NAMES, [pt([0.7, 0.1], 0.0), pt([0.9, 0.1], 1.0)], stamp_s=0.0, now_s=2.0)
    np.testing.assert_allclose(f.setpoint(2.0), [0.7, 0.1])
    np.testing.assert_allclose(f.setpoint(2.5), [0.8, 0.1])


def test_reordered_joint_names_are_mapped_to_controller_order():
    f = follower()
    assert f.accept(["j_b", "j_a"], [pt([0.2, -1.5], 1.0, [0.0, 0.0])], stamp_s=0.0, now_s=0.0)
    np.testing.assert_allclose(f.setpoint(1.0), [-1.5, 0.2])
    # Out-of-limit check also applies in controller order (j_b is limited to +-1).
    bad = f.accept(["j_b", "j_a"], [pt([1.5, 0.0], 1.0)], stamp_s=0.0, now_s=1.0)
    assert bad.code is RejectReason.OUT_OF_LIMITS and "'j_b'" in bad.reason


def test_mapping_points_and_first_trajectory_from_current_positions():
    f = TrajectoryFollower(NAMES, LOWER, UPPER)
    assert not f.has_state
    with pytest.raises(RuntimeError, match="hold"):
        f.setpoint(0.0)
    no_state = f.accept(NAMES, [{"positions": [1.0, 0.0], "time_from_start": 1.0}], 0.0, 0.0)
    assert no_state.code is RejectReason.NO_CURRENT_STATE
    ok = f.accept(NAMES, [{"positions": [1.0, 0.0], "time_from_start": 1.0}], 0.0, 0.0, current_positions=[0.5, 0.0])
    assert ok.ok
    np.testing.assert_allclose(f.setpoint(0.5), [0.75, 0.0])


def test_hold_discards_the_trajectory():
    f = follower()
    assert f.accept(NAMES, [pt([1.0, 0.0], 1.0)], 0.0, 0.0) and f.active
    f.hold([0.1, 0.2], now_s=0.5)
    assert not f.active and f.finished(0.5)
    np.testing.assert_allclose(f.setpoint(0.8), [0.1, 0.2])
    with pytest.raises(ValueError):
        f.hold([math.nan, 0.0])


def test_streaming_keeps_the_knot_list_short():
    f = follower()
    for k in range(500):
        now = 0.1 * k
        chunk = [pt([0.5 * math.sin(now + 0.02 * i), 0.0], 0.02 * (i + 1)) for i in range(25)]
        assert f.accept(NAMES, chunk, stamp_s=0.0, now_s=now)
        f.setpoint(now + 0.05)
    assert f.knot_count <= 30
    assert f.accepted_count == 500


# ------------------------------------------------------------------ rejections
@pytest.mark.parametrize(
    "names, points, stamp, code, fragment",
    [
        (["j_a", "j_b", "j_c"], [pt([0, 0, 0], 1.0)], 0.0, RejectReason.UNKNOWN_JOINT, "j_c"),
        (["j_a"], [pt([0.0], 1.0)], 0.0, RejectReason.MISSING_JOINT, "j_b"),
        (["j_a", "j_a"], [pt([0, 0], 1.0)], 0.0, RejectReason.DUPLICATE_JOINT, "j_a"),
        (NAMES, [pt([0.0, math.nan], 1.0)], 0.0, RejectReason.NON_FINITE, "point 0"),
        (NAMES, [pt([0.0, 0.0], 1.0, [math.inf, 0.0])], 0.0, RejectReason.NON_FINITE, "point 0"),
        (NAMES, [pt([0.0, 0.0], math.nan)], 0.0, RejectReason.NON_FINITE, "point 0"),
        (NAMES, [pt([0, 0], 1.0), pt([0.1, 0], 1.0)], 0.0, RejectReason.TIME_NOT_INCREASING, "point 1"),
        (NAMES, [pt([0, 0], 2.0), pt([0.1, 0], 1.0)], 0.0, RejectReason.TIME_NOT_INCREASING, "point 1"),
        (NAMES, [pt([0, 0], -0.5)], 0.0, RejectReason.TIME_NOT_INCREASING, "negative"),
        (NAMES, [pt([2.5, 0.0], 1.0)], 0.0, RejectReason.OUT_OF_LIMITS, "'j_a'"),
        (NAMES, [pt([0.0, -1.01], 1.0)], 0.0, RejectReason.OUT_OF_LIMITS, "'j_b'"),
        (NAMES, [], 0.0, RejectReason.EMPTY_POINTS, "no points"),
        (NAMES, [pt([0.0], 1.0)], 0.0, RejectReason.SIZE_MISMATCH, "expected 2"),
        (NAMES, [pt([0, 0], 1.0, [0.0])], 0.0, RejectReason.SIZE_MISMATCH, "velocities"),
        (NAMES, [pt([0, 0], 1.0)], -1.0, RejectReason.BAD_STAMP, "stamp"),
        (NAMES, [pt([0, 0], 1.0)], math.nan, RejectReason.BAD_STAMP, "stamp"),
    ],
)
def test_rejections_give_a_reason_count_it_and_keep_the_current_state(names, points, stamp, code, fragment):
    f = follower()
    assert f.accept(NAMES, [pt([0.5, 0.5], 1.0)], stamp_s=0.0, now_s=0.0)
    result = f.accept(names, points, stamp_s=stamp, now_s=0.5)
    assert isinstance(result, Acceptance) and not result.ok and not bool(result)
    assert result.code is code
    assert result.reason.startswith(code.value) and fragment in result.reason
    assert f.rejection_counts[code] == 1 and f.accepted_count == 1
    np.testing.assert_allclose(f.setpoint(1.0), [0.5, 0.5])  # unchanged


def test_malformed_containers_are_rejected_not_raised():
    f = follower()
    result = f.accept(NAMES, [pt("not numbers", 1.0)], stamp_s=0.0, now_s=0.0)
    assert not result.ok and result.code is RejectReason.SIZE_MISMATCH
    result = f.accept(NAMES, [object()], stamp_s=0.0, now_s=0.0)
    assert not result.ok


def test_constructor_validates_its_configuration():
    with pytest.raises(ValueError, match="interpolation"):
        TrajectoryFollower(NAMES, LOWER, UPPER, interpolation="quintic")
    with pytest.raises(ValueError, match="2 values"):
        TrajectoryFollower(NAMES, [0.0], UPPER)
    with pytest.raises(ValueError, match="unique"):
        TrajectoryFollower(["a", "a"], LOWER, UPPER)
    with pytest.raises(ValueError, match="replacement"):
        TrajectoryFollower(NAMES, LOWER, UPPER, replacement="blend")
    with pytest.raises(ValueError, match="anchor"):
        TrajectoryFollower(NAMES, LOWER, UPPER, anchor="commanded")


# ------------------------------------------------------- JTC as released (default)
def released(anchor="measured", hold=(0.0, 0.0), hold_time=0.0, interpolation="linear"):
    f = TrajectoryFollower(NAMES, LOWER, UPPER, interpolation=interpolation, anchor=anchor)
    f.hold(hold, now_s=hold_time)
    return f


def test_released_new_trajectory_replaces_the_old_one_from_the_measured_state():
    f = released()
    assert f.replacement == "replace" and f.anchor == "measured" and not f.reject_out_of_limits
    assert f.accept(NAMES, [pt([2.0, 0.0], 2.0)], stamp_s=0.0, now_s=0.0)
    # At t=1 the desired state is 1.0 but the arm lags at 0.8: the new trajectory starts there.
    result = f.accept(NAMES, [pt([0.0, 0.0], 1.0)], stamp_s=0.0, now_s=1.0, current_positions=[0.8, 0.0])
    assert result.ok and result.start_time == 1.0
    np.testing.assert_allclose(f.setpoint(1.0), [0.8, 0.0])  # a step back from the desired 1.0
    np.testing.assert_allclose(f.setpoint(1.5), [0.4, 0.0])
    assert f.knot_count == 2  # nothing of the old trajectory is kept


def test_released_interpolate_from_desired_state_starts_from_the_desired_state():
    f = released(anchor="desired")
    assert f.accept(NAMES, [pt([2.0, 0.0], 2.0)], stamp_s=0.0, now_s=0.0)
    assert f.accept(NAMES, [pt([0.0, 0.0], 1.0)], stamp_s=0.0, now_s=1.0, current_positions=[0.8, 0.0])
    np.testing.assert_allclose(f.setpoint(1.0), [1.0, 0.0])  # continuous with the old command
    np.testing.assert_allclose(f.setpoint(1.5), [0.5, 0.0])


def test_released_future_stamp_starts_interpolating_at_once():
    f = released(hold=(0.3, -0.2), hold_time=1.0)
    result = f.accept(NAMES, [pt([1.0, 0.0], 1.0)], stamp_s=5.0, now_s=1.0, current_positions=[0.3, -0.2])
    assert result.ok
    # From (0.3, -0.2) at t=1 (now) to (1, 0) at t=6: already moving before the stamp.
    np.testing.assert_allclose(f.setpoint(3.5), [0.65, -0.1])
    np.testing.assert_allclose(f.setpoint(6.0), [1.0, 0.0])


def test_released_past_points_are_jumped_onto_and_a_trajectory_ending_in_the_past_is_rejected():
    f = released()
    result = f.accept(NAMES, [pt([0.2, 0.0], 1.0), pt([0.4, 0.0], 3.0)], stamp_s=8.0, now_s=10.0,
                      current_positions=[0.0, 0.0])
    assert result.ok and result.skipped_points == 1
    np.testing.assert_allclose(f.setpoint(10.0), [0.3, 0.0])  # mid-way at once, as JTC samples it
    stale = f.accept(NAMES, [pt([1.0, 0.0], 1.0)], stamp_s=5.0, now_s=12.0)
    assert not stale.ok and stale.code is RejectReason.ALL_POINTS_IN_PAST and "ends in the past" in stale.reason
    np.testing.assert_allclose(f.setpoint(11.0), [0.4, 0.0])  # the current one continues


def test_released_out_of_limit_points_are_accepted_and_samples_clipped():
    f = released()
    result = f.accept(NAMES, [pt([2.5, 0.0], 1.0)], stamp_s=0.0, now_s=0.0, current_positions=[0.0, 0.0])
    assert result.ok and f.out_of_limit_points == 1
    np.testing.assert_allclose(f.setpoint(1.0), [2.0, 0.0])
    assert f.clipped_samples >= 1
    strict = TrajectoryFollower(NAMES, LOWER, UPPER, reject_out_of_limits=True)
    strict.hold([0.0, 0.0])
    assert strict.accept(NAMES, [pt([2.5, 0.0], 1.0)], 0.0, 0.0).code is RejectReason.OUT_OF_LIMITS


def test_released_step_at_time_zero_and_streaming_stays_short():
    f = released()
    assert f.accept(NAMES, [pt([0.7, 0.1], 0.0), pt([0.9, 0.1], 1.0)], stamp_s=0.0, now_s=2.0,
                    current_positions=[0.0, 0.0])
    np.testing.assert_allclose(f.setpoint(2.0), [0.7, 0.1])
    for k in range(200):
        assert f.accept(NAMES, [pt([0.01 * k, 0.0], 0.02)], stamp_s=0.0, now_s=3.0 + 0.02 * k)
    assert f.knot_count == 2


def test_the_simulators_default_anchor_is_what_controllers_yaml_sets_on_the_real_jtc():
    import os

    import yaml

    from sim2real_vla_ros.core import robot
    from sim2real_vla_ros.sim.controllers import TrajectoryArmController

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "controllers.yaml")
    with open(path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    for arm in robot.ARMS:
        params = config[f"{arm}_arm_controller"]["ros__parameters"]
        assert params["interpolate_from_desired_state"] is True
        follower = TrajectoryArmController(arm).follower
        assert follower.anchor == "desired" and follower.replacement == "replace"
