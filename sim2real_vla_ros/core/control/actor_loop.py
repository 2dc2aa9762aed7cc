"""A deterministic simulation of one actor's control loop in simulated time (pure, ROS-free).

It runs the same pieces the actor node runs, :class:`ChunkExecutor` and :class:`SafetyFilter`,
against a policy callable, on a simulated clock, so the two ways of scheduling inference can be
compared without wall-clock sleeps or ROS:

* ``'sync'``: openpi's ``ActionChunkBroker``. When the chunk has run out, the loop takes an
  observation and infers; the robot gets no fresh setpoint while inference runs (the executor
  holds the chunk's last point, the safety filter brings the arm to rest); the result is then
  executed from its step 0 (no latency compensation), ``action_horizon`` steps of it.
* ``'async'``: our actor. Inference is requested as soon as at most ``threshold_steps`` of the
  newest chunk remain; the result is spliced in at the moment it becomes available with the
  *measured* time since its observation (elapsed steps skipped) and blended at the seam
  (the executor's ``blend``); the loop never waits.

Time model
----------
The control loop ticks every ``control_dt`` at ``t_k = k control_dt``. A policy call made at a
tick observes the robot at that tick; the policy reports how long its computation took
(``PolicyOutput.compute_s``, measured by the caller or fixed), and its result becomes available
``compute_s + extra_delay_s`` later. At most one inference is in flight. In ``'async'`` the
chunk is submitted at that exact time (between ticks, as the inference callback would); in
``'sync'`` at the first tick after it, which executes its step 0.

Robot model
-----------
The measured joint state follows the command sent at the previous tick, either exactly
(``tracking_time_constant_s = 0``: perfect tracking with a one-tick delay) or through a
first-order lag ``x += (1 - exp(-dt / tau)) (command - x)``.

Episode
-------
The episode ends when ``motion_s`` seconds of fresh setpoints have been executed (a tick whose
setpoint comes from a chunk that has not run out counts ``control_dt``), or at ``max_time_s``.
That is a fixed amount of policy motion, e.g. 8 chunks of 1 s; the episode time is how long the
loop needed for it, waits included.

Seams
-----
Each accepted chunk after the first opens a seam window on the commands actually sent: from two
ticks before the earlier of (the splice, the end of the previous chunk) to two ticks after the
later of (the end of the blend, ``seam_settle_s`` after the splice), for ``'ensemble'`` also
two ticks after the previous chunk's end (where it stops contributing). The settle time gives
every schedule the same time after a splice for the safety filter to absorb a jump: without
it an unblended seam would be judged only by its first two ticks. The largest ``|v|`` and
``|a|`` of the sent commands (finite differences over the control grid) inside the windows
are the seam velocity and acceleration; ticks in which the safety filter had to cut the
velocity or acceleration are counted too (``rate_limited``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sim2real_vla_ros.core.control.actor_io import InferenceRequest, inference_due
from sim2real_vla_ros.core.control.chunk_executor import ChunkExecutor, SpliceReport, TickStats
from sim2real_vla_ros.core.control.safety import SafetyEventKind, SafetyFilter

SCHEDULES = ("sync", "async")
_SEAM_MARGIN_TICKS = 2
_RATE_LIMIT_KINDS = frozenset(
    {SafetyEventKind.VELOCITY_LIMITED, SafetyEventKind.ACCELERATION_LIMITED, SafetyEventKind.LIMIT_BRAKING}
)
_TIME_EPS = 1e-9


@dataclass(frozen=True)
class PolicyOutput:
    """What a policy call returns.

    Attributes
    ----------
    chunk : np.ndarray or None
        (T, n) joint positions, step k for ``obs_stamp + k chunk_dt``; None when inference failed.
    compute_s : float
        Simulated seconds the computation took (>= 0).
    fault : str
        Why ``chunk`` is None (e.g. ``'fast_decode:wrong_length'``); empty otherwise.
    """

    chunk: np.ndarray | None
    compute_s: float
    fault: str = ""


Policy = Callable[[np.ndarray, float], PolicyOutput]
"""``policy(measured_joint_state, obs_stamp_s) -> PolicyOutput``."""


@dataclass(frozen=True)
class LoopConfig:
    """How one simulated episode is scheduled.

    Parameters
    ----------
    schedule : {'sync', 'async'}
    extra_delay_s : float
        Artificial latency added to every inference (transport, a slower GPU...).
    motion_s : float
        Seconds of fresh setpoints that end the episode.
    control_dt : float
        Control period (0.02 s = 50 Hz).
    threshold_steps : int
        ``'async'``: request inference when at most this many chunk steps remain.
    action_horizon : int or None
        ``'sync'``: chunk steps executed before inferring again (None: the whole chunk).
    tracking_time_constant_s : float
        0 for perfect tracking (one-tick delay), else the first-order lag of the arm.
    max_time_s : float
        The episode is cut here if ``motion_s`` was not reached (reported as not finished).
    seam_settle_s : float
        Minimum length of a seam window after the splice (see the module docstring).
    """

    schedule: str
    extra_delay_s: float
    motion_s: float
    control_dt: float = 0.02
    threshold_steps: int = 0
    action_horizon: int | None = None
    tracking_time_constant_s: float = 0.0
    max_time_s: float = 120.0
    seam_settle_s: float = 0.2

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"LoopConfig: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("extra_delay_s", "tracking_time_constant_s", "seam_settle_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LoopConfig: {name} must be finite and >= 0, got {value!r}")
        for name in ("motion_s", "control_dt", "max_time_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"LoopConfig: {name} must be finite and > 0, got {value!r}")
        if int(self.threshold_steps) != self.threshold_steps or self.threshold_steps < 0:
            raise ValueError(f"LoopConfig: threshold_steps must be an integer >= 0, got {self.threshold_steps!r}")
        if self.action_horizon is not None and (
            int(self.action_horizon) != self.action_horizon or self.action_horizon < 1
        ):
            raise ValueError(f"LoopConfig: action_horizon must be an integer >= 1 or None, got {self.action_horizon!r}")


@dataclass
class LoopResult:
    """Everything measured in one simulated episode.

    Attributes
    ----------
    finished : bool
        ``motion_s`` was reached before ``max_time_s``.
    episode_time_s : float
        Simulated time from the first observation to the end of the episode.
    ticks, ticks_without_fresh, longest_stale_streak : int
        Control ticks from the first chunk's arrival on (the wait for the very first chunk is
        the same for every schedule and is left out), and those without a fresh setpoint.
    first_chunk_s : float
        When the first chunk arrived.
    inferences, failed_inferences : int
        Policy calls made, and those that returned no chunk.
    executor_counters, safety_counters : dict
        ``ChunkExecutor.counters()`` and ``SafetyFilter.counters.as_dict()``.
    seam_velocity, seam_acceleration : list of float
        Per seam, the largest ``|v|`` / ``|a|`` over ``joint_indices`` of the sent commands.
    episode_max_velocity, episode_max_acceleration : float
        The same over the whole episode (after the first chunk).
    rate_limited_ticks, seam_rate_limited_ticks : int
        Ticks (after the first chunk; inside any seam window) in which the safety filter cut
        the velocity or acceleration of the setpoint.
    splices : list of SpliceReport
        The executor's reports (pre-safety seam jump / velocity / acceleration).
    compute_s : list of float
        ``compute_s`` of each policy call.
    commands, times : np.ndarray
        (K, n) commands sent and their tick times.
    path_length : float
        Sum over ticks of ``|delta command|`` over ``joint_indices`` (how much the arm moved).
    """

    finished: bool
    episode_time_s: float
    ticks: int
    ticks_without_fresh: int
    longest_stale_streak: int
    first_chunk_s: float
    inferences: int
    failed_inferences: int
    executor_counters: dict
    safety_counters: dict
    seam_velocity: list[float]
    seam_acceleration: list[float]
    episode_max_velocity: float
    episode_max_acceleration: float
    rate_limited_ticks: int
    seam_rate_limited_ticks: int
    splices: list[SpliceReport]
    compute_s: list[float]
    commands: np.ndarray
    times: np.ndarray
    path_length: float

    @property
    def stale_fraction(self) -> float:
        """``ticks_without_fresh / ticks`` (0 when no tick was counted)."""
        return self.ticks_without_fresh / self.ticks if self.ticks else 0.0


@dataclass
class _Pending:
    """One inference in flight."""

    chunk: np.ndarray | None
    obs_stamp_s: float
    ready_s: float
    fault: str


@dataclass
class _SeamWindow:
    start_s: float
    end_s: float


@dataclass
class _State:
    measured: np.ndarray
    pending: _Pending | None = None
    previous_chunk_end_s: float | None = None
    inferences: int = 0
    failed: int = 0
    first_chunk_s: float = math.nan
    compute_s: list = field(default_factory=list)
    windows: list = field(default_factory=list)


def run_episode(
    policy: Policy,
    executor: ChunkExecutor,
    safety: SafetyFilter,
    config: LoopConfig,
    initial_state: Sequence[float],
    joint_indices: Sequence[int] | None = None,
) -> LoopResult:
    """Simulate one episode of the control loop (see the module docstring).

    Parameters
    ----------
    policy : callable
        ``policy(measured_joint_state, obs_stamp_s) -> PolicyOutput``; it is called
        synchronously in simulated time, so its real duration does not matter here.
    executor : ChunkExecutor
        A fresh executor; its ``dt`` is the chunk step spacing (may differ from
        ``config.control_dt``: setpoints are interpolated in time). Use ``blend='none'`` for
        ``'sync'`` (each chunk starts after the robot has held, there is nothing to blend).
    safety : SafetyFilter
        A fresh filter; every command goes through it.
    config : LoopConfig
    initial_state : sequence of float
        The arm's measured joint state at time 0 (at rest).
    joint_indices : sequence of int, optional
        Joints the velocity / acceleration / path metrics cover (default: all), e.g. the six
        revolute joints of a Piper arm (the gripper finger is in metres).

    Returns
    -------
    LoopResult

    Raises
    ------
    ValueError
        ``initial_state`` does not match the executor's joint count.
    """
    measured = np.asarray(initial_state, dtype=float).copy()
    if measured.shape != (executor.num_joints,):
        raise ValueError(f"run_episode: initial_state has shape {measured.shape}, expected ({executor.num_joints},)")
    dt = config.control_dt
    stamps_names = tuple(safety.limits.max_input_age_s)
    state = _State(measured=measured)
    stats = TickStats(dt)
    commands, times, limited = [], [], []
    fresh_ticks = 0
    end_s = math.nan
    max_ticks = int(math.ceil(config.max_time_s / dt))
    for tick in range(max_ticks + 1):
        now = tick * dt
        _deliver(state, executor, config, now)
        setpoint = executor.setpoint(now)
        # Simulated inputs are always fresh: this benchmark is about scheduling, not staleness.
        decision = safety.filter(setpoint.positions, state.measured, now, {name: now for name in stamps_names},
                                 False, dt)
        commands.append(decision.command)
        times.append(now)
        limited.append(any(event.kind in _RATE_LIMIT_KINDS for event in decision.reasons))
        if not math.isnan(state.first_chunk_s):
            stats.record(now, setpoint.fresh)
            fresh_ticks += int(setpoint.fresh)
        if fresh_ticks * dt >= config.motion_s - _TIME_EPS:
            end_s = now
            break
        if state.pending is None and _wants_inference(executor, config, setpoint.fresh, now):
            _request(state, policy, config, now)
        state.measured = _track(state.measured, decision.command, config)
    return _result(state, executor, safety, stats, (commands, times, limited), end_s, dt, joint_indices)


def _wants_inference(executor: ChunkExecutor, config: LoopConfig, fresh: bool, now: float) -> bool:
    if config.schedule == "sync":
        return not fresh  # the chunk ran out (or there is none yet): the broker infers now
    # The actor node's own rule; the simulated cameras give a new observation every tick.
    request = InferenceRequest(active=True, in_flight=False,
                               needs_chunk=executor.needs_new_chunk(now, config.threshold_steps),
                               target_changed=False, newest_observation_s=now, last_inferred_observation_s=None)
    return inference_due(request)


def _request(state: _State, policy: Policy, config: LoopConfig, now: float) -> None:
    output = policy(state.measured.copy(), now)
    compute = float(output.compute_s)
    if not (math.isfinite(compute) and compute >= 0):
        raise ValueError(f"run_episode: policy returned compute_s={output.compute_s!r}; expected a finite value >= 0")
    state.inferences += 1
    state.compute_s.append(compute)
    chunk = output.chunk
    if chunk is not None and config.schedule == "sync" and config.action_horizon is not None:
        chunk = np.asarray(chunk)[: config.action_horizon]
    state.pending = _Pending(chunk, now, now + compute + config.extra_delay_s, output.fault)


def _deliver(state: _State, executor: ChunkExecutor, config: LoopConfig, now: float) -> None:
    """Hand a result that became available by ``now`` to the executor."""
    pending = state.pending
    if pending is None or pending.ready_s > now + _TIME_EPS:
        return
    state.pending = None
    if pending.chunk is None:
        state.failed += 1
        return
    if config.schedule == "sync":
        # The broker blocks until the result is there, then executes step 0 at once.
        stamp, splice_s = now, now
    else:
        stamp, splice_s = pending.obs_stamp_s, pending.ready_s
    report = executor.submit(pending.chunk, stamp, splice_s)
    if report.dropped:
        return
    if math.isnan(state.first_chunk_s):
        state.first_chunk_s = splice_s
    elif state.previous_chunk_end_s is not None:
        state.windows.append(_seam_window(report, splice_s, state.previous_chunk_end_s, executor, config))
    state.previous_chunk_end_s = stamp + (len(pending.chunk) - 1) * executor.dt


def _seam_window(
    report: SpliceReport, splice_s: float, previous_end_s: float, executor: ChunkExecutor, config: LoopConfig
) -> _SeamWindow:
    margin = _SEAM_MARGIN_TICKS * config.control_dt
    end = splice_s + max(report.blend_steps * executor.dt, config.seam_settle_s) + margin
    if executor.blend == "ensemble":
        end = max(end, previous_end_s + margin)
    return _SeamWindow(min(splice_s, previous_end_s) - margin, end)


def _track(measured: np.ndarray, command: np.ndarray | None, config: LoopConfig) -> np.ndarray:
    if command is None:
        return measured
    if config.tracking_time_constant_s == 0.0:
        return command.copy()
    gain = 1.0 - math.exp(-config.control_dt / config.tracking_time_constant_s)
    return measured + gain * (command - measured)


def _result(
    state: _State,
    executor: ChunkExecutor,
    safety: SafetyFilter,
    stats: TickStats,
    trace: tuple[list, list, list],
    end_s: float,
    dt: float,
    joint_indices: Sequence[int] | None,
) -> LoopResult:
    commands, times, limited = trace
    command_array = np.stack(commands)
    time_array = np.asarray(times)
    limited_array = np.asarray(limited, dtype=bool)
    columns = slice(None) if joint_indices is None else list(joint_indices)
    selected = command_array[:, columns]
    velocity = np.zeros_like(selected)
    velocity[1:] = np.diff(selected, axis=0) / dt
    acceleration = np.zeros_like(selected)
    acceleration[2:] = np.diff(velocity[1:], axis=0) / dt
    speed = np.max(np.abs(velocity), axis=1)
    accel = np.max(np.abs(acceleration), axis=1)
    seam_v, seam_a = [], []
    in_any_window = np.zeros(time_array.shape, dtype=bool)
    for window in state.windows:
        inside = (time_array >= window.start_s - _TIME_EPS) & (time_array <= window.end_s + _TIME_EPS)
        in_any_window |= inside
        if inside.any():
            seam_v.append(float(speed[inside].max()))
            seam_a.append(float(accel[inside].max()))
    after_first = time_array >= state.first_chunk_s - _TIME_EPS if not math.isnan(state.first_chunk_s) else None
    counted = after_first if after_first is not None else np.zeros(time_array.shape, dtype=bool)
    finished = not math.isnan(end_s)
    return LoopResult(
        finished=finished,
        episode_time_s=float(end_s if finished else time_array[-1]),
        ticks=stats.ticks,
        ticks_without_fresh=stats.ticks_without_fresh,
        longest_stale_streak=stats.longest_stale_streak,
        first_chunk_s=state.first_chunk_s,
        inferences=state.inferences,
        failed_inferences=state.failed,
        executor_counters=executor.counters(),
        safety_counters=safety.counters.as_dict(),
        seam_velocity=seam_v,
        seam_acceleration=seam_a,
        episode_max_velocity=float(speed[after_first].max()) if after_first is not None else 0.0,
        episode_max_acceleration=float(accel[after_first].max()) if after_first is not None else 0.0,
        rate_limited_ticks=int(np.count_nonzero(limited_array & counted)),
        seam_rate_limited_ticks=int(np.count_nonzero(limited_array & in_any_window)),
        splices=executor.splices(),
        compute_s=list(state.compute_s),
        commands=command_array,
        times=time_array,
        path_length=float(np.abs(np.diff(selected, axis=0)).sum()),
    )
