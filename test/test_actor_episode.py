"""The shipped ActorController in a simulated-time episode (benchmarks/actor_episode.py; no rclpy)."""
import math

import numpy as np
import pytest

from benchmarks.actor_episode import LoopConfig, PolicyOutput, run_episode
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController
from sim2real_vla_ros.core.control.safety import SafetyLimits

CONTROL_DT = 0.02
CHUNK_DT = 0.02
CHUNK_STEPS = 50  # 1 s, as ALOHA: long enough for latency + crossfade overlap
SPEED = 0.4  # rad/s of joint 0 in every chunk
COMPUTE_S = 0.01
DELAY_S = 0.2
LATENCY_TICKS = math.ceil((COMPUTE_S + DELAY_S) / CONTROL_DT)
CROSSFADE_STEPS = 5
# Ask early enough that the old chunk still covers the whole crossfade after the new one lands
# (blending with a chunk that has run out would blend with a held point).
THRESHOLD_STEPS = LATENCY_TICKS + CROSSFADE_STEPS + 1


def limits() -> SafetyLimits:
    return SafetyLimits(lower=np.full(7, -3.0), upper=np.full(7, 3.0), max_velocity=2.0, max_acceleration=8.0,
                        max_deviation_from_measured=0.5, ramp_velocity=0.25)


def ramp_policy(calls: list):
    """A smooth model: chunks on one reference motion, joint 0 = SPEED * t from its observation on.

    It knows where the motion is at the observation time (as a policy that sees the arm moving
    would), so chunks spliced at the right time agree with each other.
    """
    def policy(state: np.ndarray, obs_stamp_s: float) -> PolicyOutput:
        calls.append(obs_stamp_s)
        chunk = np.repeat(state[None, :], CHUNK_STEPS, axis=0)
        chunk[:, 0] = SPEED * (obs_stamp_s + CHUNK_DT * np.arange(CHUNK_STEPS))
        return PolicyOutput(chunk, COMPUTE_S)
    return policy


def run(schedule: str, blend: str = "crossfade", calls: list | None = None, policy=None):
    config = ActorConfig(arm="left", control_rate_hz=1.0 / CONTROL_DT, output_mode="stream", blend=blend,
                         crossfade_s=CROSSFADE_STEPS * CHUNK_DT, chunk_interpolation="linear",
                         request_threshold_s=THRESHOLD_STEPS * CHUNK_DT, schedule=schedule)
    controller = ActorController(config, limits(), CHUNK_DT, keypoints_per_arm=1)
    policy = policy or ramp_policy([] if calls is None else calls)
    return run_episode(policy, controller, LoopConfig(extra_delay_s=DELAY_S, motion_s=3.0), np.zeros(7),
                       joint_indices=range(6))


def test_sync_holds_while_inference_runs():
    calls = []
    result = run("sync", calls=calls)
    assert result.finished
    # After every chunk but the last: the request tick plus the ticks until the result is there.
    # the request tick and the ones until the result is there: ceil(latency / control_dt).
    assert result.longest_stale_streak == LATENCY_TICKS
    assert result.ticks_without_fresh >= (result.inferences - 2) * LATENCY_TICKS
    # Each request waits for the previous chunk to run out: one chunk span plus latency apart.
    gaps = np.diff(calls)
    assert np.all(gaps >= (CHUNK_STEPS - 1) * CHUNK_DT + COMPUTE_S + DELAY_S - 1e-9)
    # The arm comes to rest at every seam: the sent commands stop moving while it holds.
    held = np.abs(np.diff(result.commands[:, 0])) < 1e-9
    assert held[int(result.first_chunk_s / CONTROL_DT):].sum() >= result.inferences - 2


@pytest.mark.parametrize("blend", ["none", "crossfade", "ensemble"])
def test_async_never_waits_for_inference(blend):
    result = run("async", blend)
    sync = run("sync")
    assert result.finished
    assert result.ticks_without_fresh == 0
    assert result.executor_counters["dropped:in_past"] == 0
    assert result.episode_time_s < sync.episode_time_s - (sync.inferences - 2) * DELAY_S
    # Chunks that agree splice seamlessly: once the arm has caught up with the first chunk (it
    # starts at rest, the first chunk arrives with 0.21 s of its motion already due), no seam
    # moves faster than the model.
    assert max(result.seam_velocity[2:]) <= SPEED + 1e-6
    assert len(result.seam_velocity) == result.executor_counters["accepted"] - 1


def test_same_inputs_give_the_same_episode():
    first, second = run("async"), run("async")
    np.testing.assert_array_equal(first.commands, second.commands)
    assert first.episode_time_s == second.episode_time_s


def test_failed_inference_is_counted_and_retried():
    calls = []

    def failing_then_ramp(state, obs_stamp_s):
        calls.append(obs_stamp_s)
        if len(calls) == 2:
            return PolicyOutput(None, COMPUTE_S, "fast_decode:wrong_length")
        return ramp_policy([])(state, obs_stamp_s)

    result = run("async", policy=failing_then_ramp)
    assert result.failed_inferences == 1
    assert result.finished
    assert result.ticks_without_fresh > 0  # the failure cost a stall, and it shows


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="schedule"):
        ActorConfig(arm="left", schedule="later")
    with pytest.raises(ValueError, match="extra_delay_s"):
        LoopConfig(extra_delay_s=-0.1, motion_s=1.0)


def jumping_policy():
    """The smooth model, but every other chunk is 0.2 rad off on joint 0: every seam jumps."""
    calls = []
    smooth = ramp_policy([])

    def policy(state: np.ndarray, obs_stamp_s: float) -> PolicyOutput:
        calls.append(obs_stamp_s)
        chunk = smooth(state, obs_stamp_s).chunk
        chunk[:, 0] += 0.2 * (len(calls) % 2)
        return PolicyOutput(chunk, COMPUTE_S)
    return policy


def test_seam_metrics_see_a_jump_and_the_crossfade_smooths_it():
    unblended = run("async", "none", policy=jumping_policy())
    blended = run("async", "crossfade", policy=jumping_policy())
    assert min(report.seam_jump[0] for report in unblended.splices[1:]) > 0.19
    assert unblended.seam_rate_limited_ticks > blended.seam_rate_limited_ticks
    assert unblended.rate_limited_ticks >= unblended.seam_rate_limited_ticks
    unblended_speed = [report.seam_velocity[0] for report in unblended.splices[1:]]
    blended_speed = [report.seam_velocity[0] for report in blended.splices[1:]]
    assert max(blended_speed) < 0.5 * max(unblended_speed)
    # Whatever the chunks do, the commands sent stay within the safety filter's limits.
    assert max(unblended.seam_acceleration) <= 8.0 + 1e-6
    assert max(unblended.seam_velocity) <= 2.0 + 1e-6
