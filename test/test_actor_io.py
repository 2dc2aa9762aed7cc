"""Unit tests of the actor node's pure logic (core/control/actor_io.py); no rclpy."""
import numpy as np
import pytest

from sim2real_vla_ros.core.control.vendor import VENDOR_JOINT_NAMES, urdf_to_vendor

from sim2real_vla_ros.core.control.actor_io import (AffordanceError, InferenceRequest, UndecodableTokensDecoder,
                                            affordance_keypoints, arm_state_from_joint_state, inference_due,
                                            inject_nan, safe_trajectory_tail, stop_steps_bound)
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.core.control.safety import SafetyFilter, SafetyLimits

DT = 0.02


def test_arm_state_from_urdf_names_ignores_other_joints():
    names = [f"right_joint{i}" for i in range(1, 9)] + [f"left_joint{i}" for i in range(1, 9)]
    positions = list(range(8)) + [10 + i for i in range(8)]
    state = arm_state_from_joint_state(names, positions, "left")
    np.testing.assert_array_equal(state, [10, 11, 12, 13, 14, 15, 16])


def test_arm_state_from_vendor_layout_halves_the_gripper_width():
    names = [f"joint{i}" for i in range(7)]
    state = arm_state_from_joint_state(names, [0.1, 0.2, -0.3, 0, 0, 0, 0.06], "right")
    np.testing.assert_allclose(state, [0.1, 0.2, -0.3, 0, 0, 0, 0.03])


@pytest.mark.parametrize("names, positions, match", [
    (["left_joint1"], [0.0], "lacks"),
    ([f"left_joint{i}" for i in range(1, 8)], [0.0] * 6, "names but"),
    ([f"left_joint{i}" for i in range(1, 8)], [0.0] * 6 + [float("nan")], "non-finite.*left_joint7"),
])
def test_arm_state_rejects_bad_joint_states(names, positions, match):
    with pytest.raises(ValueError, match=match):
        arm_state_from_joint_state(names, positions, "left")


def test_affordance_keypoints_normalises_and_empty_means_idle():
    assert affordance_keypoints([], 320, 240, 3) is None
    keypoints = affordance_keypoints([(0, 0), (160, 120), (320, 240)], 320, 240, 3)
    np.testing.assert_allclose(keypoints, [[0, 0], [0.5, 0.5], [1, 1]])


@pytest.mark.parametrize("points, match", [
    ([(1, 1), (2, 2)], "2 keypoints, the bundle expects 3"),
    ([(1, 1), (2, 2), (float("nan"), 3)], "non-finite"),
    ([(1, 1), (2, 2), (400, 3)], "outside"),
])
def test_affordance_keypoints_rejects_malformed_targets(points, match):
    with pytest.raises(AffordanceError, match=match):
        affordance_keypoints(points, 320, 240, 3)


def test_vendor_command_sends_the_total_gripper_width():
    names, positions = urdf_to_vendor("left", np.array([0.1, 0, 0, 0, 0, 0, 0.02]))
    assert names == list(VENDOR_JOINT_NAMES)
    assert positions == pytest.approx([0.1, 0, 0, 0, 0, 0, 0.04])


def _moving_filter():
    """A left-arm filter that has tracked a ramp for a while (moving at ~0.5 rad/s on joint 1)."""
    limits = SafetyLimits.from_config(arm_limits("left"))
    safety = SafetyFilter(limits)
    start = np.array([0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.02])
    stamps = {name: 0.0 for name in limits.max_input_age_s}
    for k in range(30):
        candidate = start + np.array([0.5 * k * DT, 0, 0, 0, 0, 0, 0])
        decision = safety.filter(candidate, candidate, 0.0, stamps, False, DT)
    return safety, limits, decision.command


def _check_profile(points, first, limits):
    profile = np.vstack([first[None], points])
    assert np.all(profile >= limits.lower - 1e-12) and np.all(profile <= limits.upper + 1e-12)
    velocity = np.diff(profile, axis=0) / DT
    assert np.all(np.abs(velocity) <= limits.max_velocity + 1e-9)
    acceleration = np.diff(velocity, axis=0) / DT
    assert np.all(np.abs(acceleration) <= limits.max_acceleration + 1e-6)
    return velocity


def test_trajectory_tail_follows_the_future_then_stops_within_limits():
    safety, limits, command = _moving_filter()
    future = np.stack([command + np.array([0.5 * k * DT, 0, 0, 0, 0, 0, 0]) for k in range(1, 6)])
    tail = safe_trajectory_tail(safety, future, command, DT)
    np.testing.assert_allclose(tail[:5], future, atol=1e-9)  # a feasible future passes unchanged
    velocity = _check_profile(tail, command, limits)
    np.testing.assert_allclose(velocity[-1], 0.0, atol=1e-12)  # ends at rest
    assert np.any(np.abs(velocity[5:]) > 0)  # ... after braking, not with a step


def test_trajectory_tail_while_holding_is_a_deceleration_and_does_not_change_the_filter():
    safety, limits, command = _moving_filter()
    before = safety.last_command
    tail = safe_trajectory_tail(safety, None, command, DT)
    _check_profile(tail, command, limits)
    np.testing.assert_allclose(np.diff(np.vstack([tail[-2:]]), axis=0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(safety.last_command, before)


def test_trajectory_tail_is_empty_at_rest():
    limits = SafetyLimits.from_config(arm_limits("left"))
    safety = SafetyFilter(limits)
    rest = np.array([0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.02])
    safety.filter(None, rest, 0.0, {}, True, DT)  # e-stop at rest
    assert safe_trajectory_tail(safety, None, rest, DT).shape == (0, 7)


def test_stop_steps_bound_covers_the_worst_case():
    max_velocity, max_acceleration = np.array([5.0]), np.array([8.0])
    assert stop_steps_bound(np.array([5.0]), max_velocity, max_acceleration, DT, 10) == 33
    assert stop_steps_bound(None, max_velocity, max_acceleration, DT, 0) == 1


@pytest.mark.parametrize("changes, expected", [
    ({}, True),
    ({"active": False}, False),
    ({"in_flight": True}, False),
    ({"newest_observation_s": None}, False),
    ({"newest_observation_s": 1.0}, False),  # not newer than the last one used
    ({"needs_chunk": False}, False),
    ({"needs_chunk": False, "target_changed": True}, True),
    ({"last_inferred_observation_s": None}, True),
])
def test_inference_due(changes, expected):
    request = dict(active=True, in_flight=False, needs_chunk=True, target_changed=False,
                   newest_observation_s=2.0, last_inferred_observation_s=1.0)
    request.update(changes)
    assert inference_due(InferenceRequest(**request)) is expected


def test_inject_nan_corrupts_a_copy():
    chunk = np.zeros((25, 7))
    corrupted = inject_nan(chunk)
    assert np.isnan(corrupted).any() and np.isinf(corrupted).any()
    assert np.all(np.isfinite(chunk))


class _ConstantDecoder:
    """Next-token logits that always favour id 5 (a normal FAST id); BOS = 10, EOS = 11."""

    input_specs = {"tokens": None}

    def run(self, feeds):
        logits = np.zeros((1, 12), np.float32)
        logits[0, 5] = 3.0
        return {"logits": logits}


def _greedy(decoder, bos=10, eos=11, limit=8, cache=False):
    sequence = [bos]
    for _ in range(limit):
        if cache:  # one new token per call; the cache grows by one position each step
            feeds = {"tokens": np.array([[sequence[-1]]], np.int64),
                     "past_key": np.zeros((2, 1, 4, len(sequence) - 1, 8), np.float32)}
        else:
            feeds = {"tokens": np.array([sequence], np.int64)}
        token = int(np.argmax(decoder.run(feeds)["logits"][0]))
        if token == eos:
            return sequence[1:]
        sequence.append(token)
    return None


@pytest.mark.parametrize("cache", [False, True])
def test_undecodable_decoder_emits_bos_inside_the_sequence_then_eos(cache):
    decoder = UndecodableTokensDecoder(_ConstantDecoder(), bos_id=10, eos_id=11)
    assert _greedy(decoder, cache=cache) == [5, 10]  # BOS (not a FAST id) -> invalid_id on decode
    assert _greedy(decoder, cache=cache) == [5, 10]  # resets at each new generation
    assert decoder.input_specs == {"tokens": None}  # everything else is the wrapped backend's


def test_undecodable_decoder_can_be_switched_off_per_inference():
    decoder = UndecodableTokensDecoder(_ConstantDecoder(), bos_id=10, eos_id=11, enabled=lambda: False)
    assert _greedy(decoder) is None  # the wrapped model's own behaviour (never EOS here)


def test_actor_plan_inputs_takes_instruction_and_image_size_and_drops_unknown_instructions():
    from sim2real_vla_ros.core.control.actor_io import actor_plan_inputs
    def embedding(text):
        if text != "pour the water":
            raise LookupError(f"unknown instruction {text!r}")

    payload = {"instruction": "pour the water", "image_size": [640, 480]}
    assert actor_plan_inputs(payload, embedding) == ("pour the water", (640, 480), None)
    instruction, size, problem = actor_plan_inputs({**payload, "instruction": "dance", "image_size": [0, 1]},
                                                   embedding)
    assert (instruction, size) == ("", None) and "dance" in problem
    with pytest.raises(ValueError, match="mapping"):
        actor_plan_inputs("not a plan", embedding)
