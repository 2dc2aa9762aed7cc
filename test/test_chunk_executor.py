"""Unit tests of the time-domain chunk executor (no rclpy)."""
import math

import numpy as np
import pytest

from sim2real_vla_ros.core.control.chunk_executor import (
    DROP_BAD_SHAPE,
    DROP_FUTURE_STAMP,
    DROP_IN_PAST,
    DROP_NON_FINITE,
    DROP_NOT_NEWER,
    ChunkExecutor,
    TickStats,
)
from sim2real_vla_ros.core.control.safety import SafetyFilter, SafetyLimits

DT = 0.02


def ramp_chunk(steps: int, start: float = 0.0, slope: float = 1.0) -> np.ndarray:
    """Joint0 = start + slope * k, other joints k / 100, so every step is distinguishable."""
    k = np.arange(steps, dtype=float)
    chunk = np.repeat((k / 100.0)[:, None], 7, axis=1)
    chunk[:, 0] = start + slope * k
    return chunk


def constant_chunk(steps: int, value: float) -> np.ndarray:
    chunk = np.zeros((steps, 7))
    chunk[:, 0] = value
    return chunk


def grid(executor: ChunkExecutor, start_s: float, steps: int) -> np.ndarray:
    return np.array([executor.setpoint(start_s + k * DT).positions for k in range(steps)])


def test_skips_the_steps_measured_since_the_observation():
    executor = ChunkExecutor(DT, blend="none")
    chunk = ramp_chunk(50)
    report = executor.submit(chunk, obs_stamp_s=1.0, now_s=1.1)  # observation 0.1 s old
    assert not report.dropped
    assert report.elapsed_s == pytest.approx(0.1)
    assert report.skipped_steps == 5
    assert report.remaining == 44  # steps 6..49 are still ahead
    setpoint = executor.setpoint(1.1)
    np.testing.assert_allclose(setpoint.positions, chunk[5])
    assert setpoint.fresh and setpoint.step_index == 5 and setpoint.chunk_id == report.chunk_id
    assert report.seam_jump is None  # the first chunk has nothing to splice onto


def test_setpoint_interpolates_in_time_between_steps():
    executor = ChunkExecutor(DT, blend="none")
    chunk = ramp_chunk(20)
    executor.submit(chunk, 0.0, 0.05)
    # A tick 5.5 steps after the observation (jitter) gets the point half-way, not a repeat.
    np.testing.assert_allclose(executor.setpoint(5.5 * DT).positions, 0.5 * (chunk[5] + chunk[6]))
    assert executor.setpoint(5.5 * DT).step_index == 5


def zigzag_chunk(steps: int) -> np.ndarray:
    """Smooth-ish motion with turning points, like a policy's chunk (joint j: a sine at its own rate)."""
    k = np.arange(steps, dtype=float)[:, None]
    return 0.3 * np.sin(0.25 * k * (1 + np.arange(7)) / 4.0)


def test_pchip_passes_through_the_steps_and_stays_between_neighbours():
    chunk = zigzag_chunk(12)
    executor = ChunkExecutor(DT, blend="none", interpolation="pchip")
    executor.submit(chunk, 0.0, 0.0)
    for k in range(11):
        np.testing.assert_allclose(executor.setpoint(k * DT).positions, chunk[k], atol=1e-12)
        between = executor.setpoint((k + 0.5) * DT).positions
        low, high = np.minimum(chunk[k], chunk[k + 1]), np.maximum(chunk[k], chunk[k + 1])
        assert np.all(between >= low - 1e-12) and np.all(between <= high + 1e-12), f"overshoot in step {k}"
    np.testing.assert_allclose(executor.setpoint(20 * DT).positions, chunk[-1])  # clamped after the end


def test_pchip_velocity_is_continuous_where_linear_steps():
    """A coarse chunk (25 Hz) sampled finely: linear's velocity jumps at each step, pchip's does not."""
    chunk = zigzag_chunk(12)
    fine = 0.0002  # s: much finer than the steps, so a C1 curve changes velocity little per sample
    jumps = {}
    for interpolation in ("linear", "pchip"):
        executor = ChunkExecutor(DT, blend="none", interpolation=interpolation)
        executor.submit(chunk, 0.0, 0.0)
        times = np.arange(1 * DT, 10 * DT, fine)
        velocity = np.diff(np.array([executor.setpoint(t).positions for t in times]), axis=0) / fine
        jumps[interpolation] = np.abs(np.diff(velocity, axis=0)).max()
    step_velocity_change = np.abs(np.diff(np.diff(chunk[1:11], axis=0), axis=0)).max() / DT
    assert jumps["linear"] == pytest.approx(step_velocity_change, rel=0.05)
    assert jumps["pchip"] < 0.1 * jumps["linear"]


def test_none_switches_at_once():
    executor = ChunkExecutor(DT, blend="none")
    executor.submit(constant_chunk(50, 0.0), 0.0, 0.0)
    report = executor.submit(constant_chunk(50, 1.0), 0.1, 0.2)
    assert report.blend_steps == 0
    assert report.seam_jump[0] == pytest.approx(1.0)
    assert report.seam_velocity[0] == pytest.approx(1.0 / DT)  # the jump in one tick
    np.testing.assert_allclose(grid(executor, 0.2, 3)[:, 0], [1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "shape, expected",
    [
        ("cosine", [0.0, 0.5 - 0.5 * math.cos(math.pi / 4), 0.5, 0.5 + 0.5 * math.cos(math.pi / 4), 1.0, 1.0]),
        ("linear", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ],
)
def test_crossfade_blends_from_old_to_new_over_n_steps(shape, expected):
    executor = ChunkExecutor(DT, blend="crossfade", crossfade_steps=4, crossfade_shape=shape)
    executor.submit(constant_chunk(50, 0.0), 0.0, 0.0)
    report = executor.submit(constant_chunk(50, 1.0), 0.1, 0.2)
    assert report.blend_steps == 4 and report.skipped_steps == 5
    assert report.seam_jump[0] == pytest.approx(1.0)  # what an unblended switch would have jumped
    np.testing.assert_allclose(grid(executor, 0.2, 6)[:, 0], expected, atol=1e-12)
    largest_step = max(np.diff(expected))
    assert report.seam_velocity[0] == pytest.approx(largest_step / DT)
    if shape == "cosine":
        # Largest change of per-tick velocity: (cos(pi/4) - 0.5) / dt^2.
        assert report.seam_acceleration[0] == pytest.approx((math.cos(math.pi / 4) - 0.5) / DT**2)


def test_crossfade_seam_is_continuous_with_moving_chunks():
    executor = ChunkExecutor(DT, blend="crossfade", crossfade_steps=8)
    old = ramp_chunk(50, 0.0, 0.01)
    executor.submit(old, 0.0, 0.0)
    new = ramp_chunk(50, 0.3, 0.01)  # same velocity; at 0.2 s: new step 5 = 0.35 vs old step 10 = 0.1
    before = executor.setpoint(0.2).positions
    report = executor.submit(new, 0.1, 0.2)
    np.testing.assert_allclose(executor.setpoint(0.2).positions, before)  # no jump at the seam
    assert report.seam_jump[0] == pytest.approx(0.25)
    # Per-tick change never exceeds the chunks' own 0.01 plus the largest cosine increment of
    # the jump: 0.5 (cos(a) - cos(b)) <= sin(pi / 16) for steps of pi / 8.
    outputs = grid(executor, 0.2 - 2 * DT, 14)[:, 0]
    bound = 0.01 + 0.25 * math.sin(math.pi / 16) + 1e-12
    assert np.max(np.abs(np.diff(outputs))) <= bound
    assert report.seam_velocity[0] <= bound / DT


def test_crossfade_lengthens_to_respect_velocity_and_acceleration():
    executor = ChunkExecutor(DT, blend="crossfade", crossfade_steps=4, max_velocity=2.0, max_acceleration=10.0)
    executor.submit(constant_chunk(100, 0.0), 0.0, 0.0)
    report = executor.submit(constant_chunk(100, 1.0), 0.1, 0.2)
    # pi J / (2 v) = 0.785 s -> 40 steps; pi sqrt(J / (2 a)) = 0.70 s -> 36 steps.
    assert report.blend_steps == 40
    assert report.seam_velocity[0] <= 2.0
    assert report.seam_acceleration[0] <= 10.0


def test_crossfade_during_a_crossfade_stays_continuous():
    executor = ChunkExecutor(DT, blend="crossfade", crossfade_steps=10)
    executor.submit(constant_chunk(60, 0.0), 0.0, 0.0)
    executor.submit(constant_chunk(60, 1.0), 0.1, 0.2)
    mid = executor.setpoint(0.3).positions.copy()
    assert 0.0 < mid[0] < 1.0
    report = executor.submit(constant_chunk(60, 2.0), 0.25, 0.3)
    np.testing.assert_allclose(executor.setpoint(0.3).positions, mid)
    np.testing.assert_allclose(report.seam_jump[0], 2.0 - mid[0])
    assert executor.setpoint(0.3 + 10 * DT).positions[0] == pytest.approx(2.0)


def test_ensemble_weights_follow_act():
    decay = 0.5
    executor = ChunkExecutor(DT, blend="ensemble", ensemble_decay=decay)
    executor.submit(constant_chunk(20, 0.0), 0.0, 0.0)  # covers 0 .. 0.38 s
    report = executor.submit(constant_chunk(50, 1.0), 0.1, 0.2)
    w1 = math.exp(-decay)  # i = 0 is the oldest chunk: weight 1; the newer one exp(-m)
    assert executor.setpoint(0.2).positions[0] == pytest.approx(w1 / (1 + w1))
    assert report.seam_jump[0] == pytest.approx(1.0)  # unblended jump, as for every mode
    assert report.seam_velocity[0] == pytest.approx(w1 / (1 + w1) / DT)  # the ensemble's actual step
    executor.submit(constant_chunk(50, 2.0), 0.2, 0.3)
    w2 = math.exp(-2 * decay)
    assert executor.setpoint(0.3).positions[0] == pytest.approx((w1 + 2 * w2) / (1 + w1 + w2))
    # After the oldest chunk ends (0.38 s) only the two newer ones cover the time step.
    assert executor.setpoint(0.4).positions[0] == pytest.approx((1 + 2 * w1) / (1 + w1))


def test_ensemble_act_default_decay_weighs_almost_equally():
    executor = ChunkExecutor(DT, blend="ensemble")  # m = 0.01
    executor.submit(constant_chunk(50, 0.0), 0.0, 0.0)
    executor.submit(constant_chunk(50, 1.0), 0.1, 0.2)
    assert executor.setpoint(0.2).positions[0] == pytest.approx(math.exp(-0.01) / (1 + math.exp(-0.01)))


def test_exhausted_chunk_holds_its_last_point_not_fresh():
    executor = ChunkExecutor(DT, blend="crossfade")
    chunk = ramp_chunk(10)
    executor.submit(chunk, 0.0, 0.05)
    last = executor.setpoint(9 * DT)
    assert last.fresh and last.step_index == 9
    for now in (0.19, 0.3, 10.0):
        setpoint = executor.setpoint(now)
        assert not setpoint.fresh and setpoint.step_index == 9
        np.testing.assert_array_equal(setpoint.positions, chunk[-1])
    assert executor.remaining_steps(0.3) == 0


def test_no_chunk_yet():
    executor = ChunkExecutor(DT)
    setpoint = executor.setpoint(1.0)
    assert setpoint.positions is None and not setpoint.fresh and setpoint.chunk_id is None
    assert executor.needs_new_chunk(1.0, 0)
    times, positions = executor.as_trajectory(1.0)
    assert times.shape == (0,) and positions.shape == (0, 7)


def test_needs_new_chunk_threshold():
    executor = ChunkExecutor(DT)
    executor.submit(ramp_chunk(50), 0.0, 0.0)
    assert executor.remaining_steps(0.0) == 49
    assert not executor.needs_new_chunk(38 * DT, threshold_steps=10)  # 11 left
    assert executor.needs_new_chunk(39 * DT, threshold_steps=10)  # 10 left
    with pytest.raises(ValueError, match="threshold_steps"):
        executor.needs_new_chunk(0.0, -1)


def test_dropped_chunks_change_nothing_and_are_counted():
    executor = ChunkExecutor(DT)
    chunk = ramp_chunk(10)
    past = executor.submit(chunk, 0.0, 9 * DT)  # its last step is now: nothing ahead
    assert past.dropped and past.reason == DROP_IN_PAST and "elapsed" in past.detail
    assert not executor.submit(chunk, 0.0, 8 * DT).dropped  # one step still ahead
    before = executor.setpoint(8 * DT).positions

    nan_chunk = ramp_chunk(10)
    nan_chunk[3, 2] = np.nan
    reports = {
        DROP_NON_FINITE: executor.submit(nan_chunk, 0.1, 0.15),
        DROP_BAD_SHAPE: executor.submit(np.zeros((10, 6)), 0.1, 0.15),
        DROP_NOT_NEWER: executor.submit(ramp_chunk(10), 0.0, 0.15),
        DROP_FUTURE_STAMP: executor.submit(ramp_chunk(10), 1.0, 0.15),
    }
    for reason, report in reports.items():
        assert report.dropped and report.reason == reason and report.detail
    np.testing.assert_array_equal(executor.setpoint(8 * DT).positions, before)
    counts = executor.counters()
    assert counts["accepted"] == 1 and counts[f"dropped:{DROP_IN_PAST}"] == 1
    assert all(counts[f"dropped:{reason}"] == 1 for reason in reports)
    assert len(executor.splices()) == 1


def test_clock_going_back_forgets_the_old_plan():
    executor = ChunkExecutor(DT, blend="crossfade")
    executor.submit(constant_chunk(50, 1.0), 100.0, 100.1)
    report = executor.submit(constant_chunk(50, 2.0), 0.0, 0.1)  # simulator reset: time restarts
    assert not report.dropped and report.seam_jump is None  # a fresh start, not a seam
    assert executor.setpoint(0.1).positions[0] == 2.0
    assert executor.counters()["clock_jumped_back"] == 1


def test_as_trajectory_times_are_relative_to_now_on_the_control_grid():
    executor = ChunkExecutor(DT, blend="none")
    chunk = ramp_chunk(10)  # steps at 0 .. 0.18 s
    executor.submit(chunk, 0.0, 0.1)
    times, positions = executor.as_trajectory(0.1)
    np.testing.assert_allclose(times, [0.02, 0.04, 0.06, 0.08])
    np.testing.assert_allclose(positions, chunk[6:10])
    times, positions = executor.as_trajectory(0.1, horizon=2, include_now=True)
    np.testing.assert_allclose(times, [0.0, 0.02])
    np.testing.assert_allclose(positions, chunk[5:7])
    # Off-grid now: points are the chunk interpolated at now + k dt.
    times, positions = executor.as_trajectory(0.11)
    np.testing.assert_allclose(times, [0.02, 0.04, 0.06])
    np.testing.assert_allclose(positions[0], 0.5 * (chunk[6] + chunk[7]))


def test_invalid_parameters_raise_clear_errors():
    for kwargs, message in [
        ({"dt": 0.0}, "dt"),
        ({"dt": DT, "blend": "average"}, "blend"),
        ({"dt": DT, "crossfade_steps": -1}, "crossfade_steps"),
        ({"dt": DT, "max_velocity": [1.0, -1.0, 1, 1, 1, 1, 1]}, "max_velocity"),
        ({"dt": DT, "crossfade_shape": "cubic"}, "crossfade_shape"),
        ({"dt": DT, "interpolation": "spline"}, "interpolation"),
    ]:
        with pytest.raises(ValueError, match=message):
            ChunkExecutor(**kwargs)


def test_tick_stats_jitter_and_ticks_without_fresh_setpoint():
    stats = TickStats(DT)
    for tick_s, fresh in [(0.0, True), (0.02, False), (0.041, False), (0.06, True), (0.08, False)]:
        stats.record(tick_s, fresh)
    summary = stats.summary()
    assert summary["ticks"] == 5 and summary["ticks_without_fresh_setpoint"] == 3
    assert summary["longest_stale_streak"] == 2
    assert summary["jitter_p50_ms"] == pytest.approx(0.5)
    assert summary["jitter_max_ms"] == pytest.approx(1.0)
    assert summary["mean_period_ms"] == pytest.approx(20.0)
    stats.record(0.0, True)  # the clock went back (a simulator reset)
    assert stats.summary()["clock_jumps"] == 1


def test_async_loop_with_delayed_inference_never_stalls_and_stays_safe():
    """50 Hz control with inference that takes 150 ms, started early by the threshold."""
    limits = SafetyLimits(
        lower=[-2.6, 0.0, -2.9, -1.7, -1.2, -2.0, 0.0],
        upper=[2.6, 3.1, 0.0, 1.7, 1.2, 2.0, 0.035],
        max_velocity=[3.0] * 6 + [0.5],
        max_acceleration=[10.0] * 6 + [1.0],
        max_deviation_from_measured=[0.5] * 6 + [0.02],
        ramp_velocity=[0.25] * 6 + [0.01],
        max_input_age_s={"cam_high": 0.5},
    )
    rng = np.random.default_rng(7)

    def policy(obs_time_s: float) -> np.ndarray:
        """A smooth reference plus a per-chunk bias: every seam has a real jump to blend."""
        times = obs_time_s + DT * np.arange(50)
        chunk = np.zeros((50, 7))
        chunk[:, 0] = 0.5 * np.sin(times)
        chunk[:, 1] = 1.0 + 0.3 * np.sin(0.7 * times)
        chunk[:, 2] = -1.0
        chunk[:, 6] = 0.01
        chunk[:, :2] += rng.normal(0.0, 0.1, 2)
        return chunk

    results = {}
    for blend in ("none", "crossfade"):
        executor = ChunkExecutor(
            DT, blend=blend, crossfade_steps=5,
            max_velocity=limits.max_velocity, max_acceleration=limits.max_acceleration,
        )
        safety, stats = SafetyFilter(limits), TickStats(DT)
        measured = policy(0.0)[0]
        in_flight = None  # (obs time, ready time)
        commands = []
        for tick in range(400):
            now = tick * DT
            if in_flight is not None and now >= in_flight[1]:
                executor.submit(policy(in_flight[0]), in_flight[0], now)
                in_flight = None
            if in_flight is None and executor.needs_new_chunk(now, threshold_steps=12):
                in_flight = (now, now + 0.15)
            setpoint = executor.setpoint(now)
            if setpoint.positions is not None:
                stats.record(now, setpoint.fresh)
            decision = safety.filter(setpoint.positions, measured, now, {"cam_high": now}, False, DT)
            commands.append(decision.command)
            measured = decision.command
        assert stats.summary()["ticks_without_fresh_setpoint"] == 0  # the async threshold kept up
        assert executor.counters()["accepted"] >= 10
        commands = np.array(commands)
        assert np.all(np.abs(np.diff(commands, axis=0)) / DT <= limits.max_velocity + 1e-6)
        assert np.all(np.abs(np.diff(commands, n=2, axis=0)) / DT**2 <= limits.max_acceleration + 1e-6)
        seams = [report.seam_velocity[0] for report in executor.splices() if report.seam_velocity is not None]
        results[blend] = max(seams)
    # Blending removes most of the unblended jump's velocity (which the safety filter would have to absorb).
    assert results["crossfade"] < 0.5 * results["none"]
