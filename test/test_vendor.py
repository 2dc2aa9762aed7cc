"""core.vendor: the AgileX vendor joint layout <-> URDF joints, and the two-arm merge (no rclpy)."""
import math

import numpy as np
import pytest

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.vendor import (VENDOR_JOINT_NAMES, VendorMessageError, VendorStateMerger,
                                                  urdf_to_vendor, vendor_to_arm, vendor_to_urdf)

ARM7 = np.array([0.1, 1.2, -0.9, 0.05, 0.4, -0.3, 0.021])  # joints 1-6 rad, joint7 finger m
VENDOR_POSITIONS = [0.1, 1.2, -0.9, 0.05, 0.4, -0.3, 0.042]  # the same arm, gripper as total width
VENDOR_VELOCITIES = [0.5, -0.5, 0.25, 0.0, 1.0, -1.0, 0.01]


@pytest.mark.parametrize("side", robot.ARMS)
def test_urdf_to_vendor_and_back_round_trips(side):
    names, positions = urdf_to_vendor(side, ARM7)
    assert names == [f"joint{i}" for i in range(7)]
    assert positions == pytest.approx(VENDOR_POSITIONS)  # total width = 2 x one finger
    np.testing.assert_allclose(vendor_to_arm(names, positions), ARM7)
    state = vendor_to_urdf(side, names, positions)
    assert state["name"] == [f"{side}_joint{i}" for i in range(1, 9)]
    assert state["position"] == pytest.approx([*ARM7, -ARM7[-1]])  # joint8 mirrors joint7
    assert state["velocity"] == []
    back_names, back = urdf_to_vendor(side, state["position"][:7])
    assert back_names == names and back == pytest.approx(positions)


def test_vendor_to_urdf_converts_velocities_like_positions():
    state = vendor_to_urdf("right", VENDOR_JOINT_NAMES, VENDOR_POSITIONS, VENDOR_VELOCITIES)
    assert state["velocity"] == pytest.approx([0.5, -0.5, 0.25, 0.0, 1.0, -1.0, 0.005, -0.005])


def test_names_in_any_order_or_empty_are_accepted():
    shuffled = [6, 0, 3, 1, 5, 2, 4]
    names = [f"joint{i}" for i in shuffled]
    positions = [VENDOR_POSITIONS[i] for i in shuffled]
    velocities = [VENDOR_VELOCITIES[i] for i in shuffled]
    reordered = vendor_to_urdf("left", names, positions, velocities)
    in_order = vendor_to_urdf("left", VENDOR_JOINT_NAMES, VENDOR_POSITIONS, VENDOR_VELOCITIES)
    assert reordered == in_order
    assert vendor_to_urdf("left", [], VENDOR_POSITIONS) == vendor_to_urdf("left", VENDOR_JOINT_NAMES, VENDOR_POSITIONS)
    np.testing.assert_allclose(vendor_to_arm([], VENDOR_POSITIONS), ARM7)


@pytest.mark.parametrize("names,positions,velocities,reason,words", [
    ([], [0.0] * 6, (), "wrong_length", "expected 7 positions"),
    ([], [0.0] * 8, (), "wrong_length", "expected 7 positions"),
    (VENDOR_JOINT_NAMES[:6], [0.0] * 6, (), "wrong_length", "got 6 names and 6 positions"),
    (VENDOR_JOINT_NAMES, [0.0] * 6, (), "wrong_length", "got 7 names and 6 positions"),
    (VENDOR_JOINT_NAMES, VENDOR_POSITIONS, [0.0] * 6, "wrong_length", "expected 7 velocities"),
    ([f"left_joint{i}" for i in range(1, 8)], VENDOR_POSITIONS, (), "unknown_names", "unknown ['left_joint1'"),
    (["joint0"] * 2 + list(VENDOR_JOINT_NAMES[2:]), VENDOR_POSITIONS, (), "unknown_names", "repeated ['joint0']"),
    (VENDOR_JOINT_NAMES, [0.0, math.nan, 0, 0, 0, 0, 0.04], (), "non_finite", "positions of ['joint1']"),
    (VENDOR_JOINT_NAMES, [0.0, 0, 0, 0, 0, 0, math.inf], (), "non_finite", "positions of ['joint6']"),
    (VENDOR_JOINT_NAMES, VENDOR_POSITIONS, [0, 0, 0, 0, 0, 0, math.nan], "non_finite", "velocities of ['joint6']"),
    (VENDOR_JOINT_NAMES, [0, 0, 0, "x", 0, 0, 0], (), "non_finite", "positions are not numbers"),
])
def test_malformed_vendor_messages_raise_one_clear_error(names, positions, velocities, reason, words):
    with pytest.raises(VendorMessageError, match=words.replace("[", r"\[").replace("]", r"\]")) as info:
        vendor_to_urdf("left", names, positions, velocities)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_urdf_to_vendor_never_sends_a_bad_command():
    with pytest.raises(ValueError, match="7 values"):
        urdf_to_vendor("left", ARM7[:6])
    with pytest.raises(ValueError, match="NaN or Inf"):
        urdf_to_vendor("left", [*ARM7[:6], math.nan])
    with pytest.raises(ValueError, match="side"):
        urdf_to_vendor("middle", ARM7)
    with pytest.raises(ValueError, match="side"):
        vendor_to_urdf("middle", [], VENDOR_POSITIONS)


# ----------------------------------------------------------------------------- merging both arms
def _offer(merger, side, now, stamp=None, positions=VENDOR_POSITIONS, velocities=VENDOR_VELOCITIES, names=None):
    return merger.offer(side, VENDOR_JOINT_NAMES if names is None else names, positions, velocities,
                        now if stamp is None else stamp, now)


def test_merger_publishes_only_when_both_arms_are_fresh():
    merger = VendorStateMerger(max_age_s=0.1)
    assert _offer(merger, "left", 10.0) is None  # right never reported
    assert merger.counters["stale.right"] == 1 and merger.stale_sides(10.0) == ["right"]
    merged = _offer(merger, "right", 10.05, positions=[0.0] * 6 + [0.06])
    assert merged is not None
    assert merged.name == list(robot.ALL_JOINT_NAMES)
    assert merged.position[:8] == pytest.approx([*ARM7, -ARM7[-1]])
    assert merged.position[8:] == pytest.approx([0.0] * 6 + [0.03, -0.03])
    assert len(merged.velocity) == 16
    assert merged.stamp_s == pytest.approx(10.05)  # the newest source stamp
    # The left arm goes silent: nothing more is published, and each withheld merge is counted.
    assert _offer(merger, "right", 10.2) is None
    assert _offer(merger, "right", 10.21) is None
    assert merger.counters["stale.left"] == 2 and merger.counters["published"] == 1
    assert merger.ages(10.21)["left"] == pytest.approx(0.21)
    # It reports again: relaying resumes.
    assert _offer(merger, "left", 10.25) is not None
    assert merger.counters["received.left"] == 2 and merger.counters["received.right"] == 3


def test_merger_stamp_is_the_newest_source_stamp_and_fills_unset_ones():
    merger = VendorStateMerger(max_age_s=1.0)
    _offer(merger, "left", now=5.0, stamp=4.98)
    assert _offer(merger, "right", now=5.01, stamp=4.95).stamp_s == pytest.approx(4.98)
    assert _offer(merger, "right", now=5.02, stamp=0.0).stamp_s == pytest.approx(5.02)  # unset -> arrival


def test_merger_counts_malformed_messages_and_keeps_the_last_good_reading():
    merger = VendorStateMerger(max_age_s=0.5)
    _offer(merger, "left", 1.0)
    good = _offer(merger, "right", 1.0)
    assert _offer(merger, "left", 1.1, positions=[0.0] * 6) is None
    assert _offer(merger, "left", 1.1, positions=[math.nan] * 7) is None
    assert _offer(merger, "left", 1.1, names=["a"] * 7) is None
    assert merger.counters["malformed.left"] == 3
    assert {reason: merger.counters[f"malformed.left.{reason}"] for reason in
            ("wrong_length", "non_finite", "unknown_names")} == {"wrong_length": 1, "non_finite": 1,
                                                                 "unknown_names": 1}
    assert "joint names must be" in merger.last_malformed["left"]
    after = _offer(merger, "right", 1.2)
    assert after.position == good.position  # the left arm's last valid reading is still used


def test_merger_leaves_out_velocity_unless_both_arms_report_it():
    merger = VendorStateMerger(max_age_s=1.0)
    _offer(merger, "left", 1.0, velocities=())
    merged = _offer(merger, "right", 1.0)
    assert merged.velocity == [] and len(merged.position) == 16


@pytest.mark.parametrize("age", [0.0, -1.0, math.nan, math.inf])
def test_merger_rejects_a_bad_max_age(age):
    with pytest.raises(ValueError, match="max_age_s"):
        VendorStateMerger(age)
