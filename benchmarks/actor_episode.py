"""One actor episode in simulated time: the shipped ActorController against a policy callable.

The actor node's own control object (:class:`ActorController`: schedule, chunk executor,
safety filter) runs on a simulated clock against a policy, so the two ways of scheduling
inference can be compared without wall-clock sleeps or ROS. The schedule is the controller's
(``ActorConfig.schedule``); this module only simulates the world around it: the clock, the
policy's latency and the arm's tracking.

* ``'sync'``: openpi's ``ActionChunkBroker``: the controller asks for a chunk when the last one
  has run out; the robot gets no fresh setpoint while inference runs; the result is executed
  from its step 0 (re-stamped at the first tick after it arrived: no latency compensation).
* ``'async'``: the shipped actor: the controller asks as soon as at most ``request_threshold_s``
  of the newest chunk remains; the result is spliced in at the moment it becomes available
  with the *measured* time since its observation and blended at the seam; the loop never waits.

Time model
----------
The control loop ticks every ``dt`` (the controller's) at ``t_k = k dt``. A policy call made
at a tick observes the robot at that tick; the policy reports how long its computation took
(``PolicyOutput.compute_s``), and its result becomes available ``compute_s + extra_delay_s``
later. At most one inference is in flight (the controller's rule). ``'async'`` submits the
chunk at that exact time (between ticks, as the node's inference thread would); ``'sync'`` at
the first tick after it, which executes its step 0.

Robot model
-----------
The measured joint state follows the command sent at the previous tick, either exactly
(``tracking_time_constant_s = 0``: perfect tracking with a one-tick delay) or through a
first-order lag ``x += (1 - exp(-dt / tau)) (command - x)``. Camera inputs are fresh every tick.

Episode
-------
The episode ends when ``motion_s`` seconds of fresh setpoints have been executed (a tick whose
setpoint comes from a chunk that has not run out counts ``dt``), or at ``max_time_s``.

Seams
-----
Each accepted chunk after the first opens a seam window on the commands actually sent: from two
ticks before the earlier of (the splice, the end of the previous chunk) to two ticks after the
later of (the end of the blend, ``seam_settle_s`` after the splice), for ``'ensemble'`` also
two ticks after the previous chunk's end (where it stops contributing). The largest ``|v|`` and
``|a|`` of the sent commands inside the windows are the seam velocity and acceleration; ticks
in which the safety filter had to cut the velocity or acceleration are counted too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sim2real_vla_ros.core.control.actor_controller import ActorController
from sim2real_vla_ros.core.control.chunk_executor import ChunkExecutor, SpliceReport
from sim2real_vla_ros.core.control.safety import SafetyEventKind

_SEAM_MARGIN_TICKS = 2
_RATE_LIMIT_KINDS = frozenset(
    {SafetyEventKind.VELOCITY_LIMITED, SafetyEventKind.ACCELERATION_LIMITED, SafetyEventKind.LIMIT_BRAKING}
)
_TIME_EPS = 1e-9
_FRAME = "simulated frame"  # the policy renders its own scenario; the controller only needs a payload


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



Policy = Callable[[np.ndarray, float], PolicyOutput]
"""``policy(measured_joint_state, obs_stamp_s) -> PolicyOutput``."""


@dataclass(frozen=True)
class LoopConfig:
    """The simulated world around the controller in one episode.

    Parameters
    ----------
    extra_delay_s : float
        Artificial latency added to every inference (transport, a slower GPU...).
    motion_s : float
        Seconds of fresh setpoints that end the episode.
    tracking_time_constant_s : float
        0 for perfect tracking (one-tick delay), else the first-order lag of the arm.
    max_time_s : float
        The episode is cut here if ``motion_s`` was not reached (reported as not finished).
    seam_settle_s : float
        Minimum length of a seam window after the splice (see the module docstring).
    """

    extra_delay_s: float
    motion_s: float
    tracking_time_constant_s: float = 0.0
    max_time_s: float = 120.0
    seam_settle_s: float = 0.2

    def __post_init__(self) -> None:
        for name in ("extra_delay_s", "tracking_time_constant_s", "seam_settle_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LoopConfig: {name} must be finite and >= 0, got {value!r}")
        for name in ("motion_s", "max_time_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"LoopConfig: {name} must be finite and > 0, got {value!r}")


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

    snapshot: object
    chunk: np.ndarray | None
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


def run_episode(policy: Policy, controller: ActorController, config: LoopConfig, initial_state: Sequence[float],
                joint_indices: Sequence[int] | None = None) -> LoopResult:
    """Simulate one episode of the controller's control loop (see the module docstring).

    Parameters
    ----------
    policy : callable
        ``policy(measured_joint_state, obs_stamp_s) -> PolicyOutput``, called synchronously
        in simulated time (its real duration does not matter here).
    controller : ActorController
        A fresh controller; its config chooses the schedule, blend, control rate.
    config : LoopConfig
    initial_state : sequence of float
        The arm's measured joint state at time 0 (at rest).
    joint_indices : sequence of int, optional
        Joints the velocity / acceleration / path metrics cover (default: all).

    Raises
    ------
    ValueError
        ``initial_state`` does not match the controller's joint count.
    """
    measured = np.asarray(initial_state, dtype=float).copy()
    if measured.shape != (controller.chunks.num_joints,):
        raise ValueError(f"run_episode: initial_state has shape {measured.shape}, "
                         f"expected ({controller.chunks.num_joints},)")
    dt = controller.dt
    _start_task(controller)
    state = _State(measured=measured)
    stats = controller.execution_stats
    commands, times, limited = [], [], []
    end_s = math.nan
    fresh_needed = int(round(config.motion_s / dt))
    controller.on_joint_state(state.measured, -dt)  # the arm reports before the policy starts
    for tick in range(int(math.ceil(config.max_time_s / dt)) + 1):
        now = tick * dt
        _deliver(state, controller, config, now)
        controller.on_joint_state(state.measured, now)
        controller.on_image("cam_high", _FRAME, now)
        controller.on_image("wrist", _FRAME, now)
        output = controller.tick(now)
        commands.append(output.command)
        times.append(now)
        limited.append(any(event.kind in _RATE_LIMIT_KINDS for event in output.decision.reasons))
        if stats.ticks - stats.ticks_without_fresh >= fresh_needed:
            end_s = now
            break
        if output.request_inference:
            _request(state, policy, controller, config, now)
        state.measured = _track(state.measured, output.command, config, dt)
    return _result(state, controller, (commands, times, limited), end_s, dt, joint_indices)


def _start_task(controller: ActorController) -> None:
    """Give the controller a target and an instruction, as the planner would."""
    controller.on_plan("simulated task", (1, 1))
    controller.on_affordance(np.full((controller.keypoints_per_arm, 2), 0.5), 0, 0.0)


def _request(state: _State, policy: Policy, controller: ActorController, config: LoopConfig, now: float) -> None:
    snapshot = controller.take_snapshot()
    if snapshot is None:
        controller.inference_finished()
        return
    output = policy(snapshot.joints.copy(), snapshot.stamp_s)
    compute = float(output.compute_s)
    if not (math.isfinite(compute) and compute >= 0):
        raise ValueError(f"run_episode: policy returned compute_s={output.compute_s!r}; expected a finite value >= 0")
    state.inferences += 1
    state.compute_s.append(compute)
    state.pending = _Pending(snapshot, output.chunk, now + compute + config.extra_delay_s, output.fault)


def _deliver(state: _State, controller: ActorController, config: LoopConfig, now: float) -> None:
    """Hand a result that became available by ``now`` to the controller."""
    pending = state.pending
    if pending is None or pending.ready_s > now + _TIME_EPS:
        return
    state.pending = None
    sync = controller.config.schedule == "sync"
    # The broker blocks until the result is there, then executes step 0 at once; the async
    # actor splices it in the moment it is ready, stamped with its observation.
    splice_s, stamp = (now, now) if sync else (pending.ready_s, pending.snapshot.stamp_s)
    try:
        if pending.chunk is None:
            state.failed += 1
            controller.record_failure("inference_failure", pending.fault or "the policy returned no chunk")
            return
        report = controller.submit_chunk(pending.snapshot, pending.chunk, splice_s,
                                         execute_from_s=stamp if sync else None)
    finally:
        controller.inference_finished()
    if report is None:
        return
    if math.isnan(state.first_chunk_s):
        state.first_chunk_s = splice_s
    elif state.previous_chunk_end_s is not None:
        state.windows.append(_seam_window(report, splice_s, state.previous_chunk_end_s, controller.chunks,
                                          config, controller.dt))
    steps = len(pending.chunk) if not sync or controller.config.sync_horizon is None else \
        min(len(pending.chunk), controller.config.sync_horizon)
    state.previous_chunk_end_s = stamp + (steps - 1) * controller.chunks.dt


def _seam_window(report: SpliceReport, splice_s: float, previous_end_s: float, executor: ChunkExecutor,
                 config: LoopConfig, dt: float) -> _SeamWindow:
    margin = _SEAM_MARGIN_TICKS * dt
    end = splice_s + max(report.blend_steps * executor.dt, config.seam_settle_s) + margin
    if executor.blend == "ensemble":
        end = max(end, previous_end_s + margin)
    return _SeamWindow(min(splice_s, previous_end_s) - margin, end)


def _track(measured: np.ndarray, command: np.ndarray | None, config: LoopConfig, dt: float) -> np.ndarray:
    if command is None:
        return measured
    if config.tracking_time_constant_s == 0.0:
        return command.copy()
    gain = 1.0 - math.exp(-dt / config.tracking_time_constant_s)
    return measured + gain * (command - measured)


def _result(state: _State, controller: ActorController, trace: tuple[list, list, list], end_s: float, dt: float,
            joint_indices: Sequence[int] | None) -> LoopResult:
    executor, safety, stats = controller.chunks, controller.safety, controller.execution_stats
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
