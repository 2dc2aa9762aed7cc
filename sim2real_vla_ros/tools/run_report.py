"""The dry run's JSON report, built from what the recorder saw (pure, ROS-free).

The recorder (``tools/recorder.py``) turns the run's messages into plain records
(:class:`RunData`: tuples of floats, strings and the plain records of ``core.task.records``,
which the recorder gets from the typed messages through ``nodes.task_messages``; no ROS types) and
:func:`build_report` computes everything the report says from them:

- affordance advances (from ``/vla/plan_state``) and what the planner published per arm;
- validator decisions and gate events (``/vla/task_state``, ``/vla/validator/event``);
- per-stage latency p50/p99: as the nodes report them in ``/diagnostics`` (their own
  compute windows) and as measured here from header stamps (sim time: observation stamp to
  the moment the recorder saw the result);
- per actor: command rate and tick jitter in sim time (command stamps), ticks without a fresh
  setpoint (derived from the chunks, and as the actor counted them), joint-limit and
  non-finite checks of every command actually sent, seam continuity (joint velocity and
  acceleration of the sent commands around each chunk arrival, against the rest);
- every safety event with its count (the actors' ``safety.*`` and ``collision_guard.blocked.*``
  diagnostics, the other nodes' fault / drop counters, the simulator's rejected commands);
- the simulator's privileged task success (``/sim/task_status``);
- episode sim time, wall time and real-time factor;
- the run's checks and its verdict (:func:`verdict`): the exit status of the dry run and every
  reason for it. A command beyond a position, velocity or acceleration limit, a node that
  died, or a check that could not be computed fails the run.

:func:`build_report` never raises: a section that cannot be computed (a zero or NaN
``control_rate_hz``, malformed records, a bug) is recorded under ``errors`` with what is
known elsewhere, and the checks it feeds count as not computed. :func:`write_report` always
writes valid JSON (non-finite numbers become null).

Times named ``*_sim_s`` are simulated seconds (ROS time of the run), ``*_wall_s`` wall seconds.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core.task.evaluation import world_verdict

REPORT_SCHEMA = "vla_dry_run_report/1"
TERMINAL_PHASES = ("succeeded", "failed", "aborted")
#: Commands within this of a position limit count as inside (float round-off of clipped values).
LIMIT_TOLERANCE = 1e-6
#: Relative slack of the velocity and acceleration verdict. The safety filter meets its limits
#: to 1e-6 (its last-line check); 0.1 % leaves room for anything the transport does to a float
#: and still fails a real violation (the fault campaign's were 6x to 30x).
RATE_TOLERANCE = 1e-3
#: Absolute slack of the same verdict (rad or m per tick).
RATE_ABSOLUTE_TOLERANCE = 1e-9
#: Ticks before / time after a chunk's arrival that belong to its seam window.
SEAM_TICKS_BEFORE = 2
SEAM_WINDOW_S = 0.25
_P50_KEY = re.compile(r"^(?P<stage>.*?)[._]?p50_ms$")
# Diagnostics value prefixes that count events (faults, drops, holds) in each node, and the
# keys under them that are totals rather than events.
_EVENT_PREFIXES = ("safety.", "fault.", "count.", "dropped.", "rejected:", "executor.dropped", "inference.",
                   "joint_reading.rejected:", "collision_guard.blocked.")
_NOT_EVENTS = ("safety.ticks", "inference.ok")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class JointCommand:
    """One command an actor sent (``/vla/actor_<arm>/command``), or one controller point."""

    recv_sim_s: float
    stamp_s: float
    names: Tuple[str, ...]
    positions: Tuple[float, ...]


@dataclass(frozen=True)
class ChunkRecord:
    """A decoded action chunk (``/vla/actor_<arm>/chunk``): stamped with its observation time."""

    recv_sim_s: float
    stamp_s: float
    names: Tuple[str, ...]
    positions: Tuple[Tuple[float, ...], ...]   # (T, n)
    times_s: Tuple[float, ...]                 # time_from_start of each point

    @property
    def horizon_s(self) -> float:
        return self.times_s[-1] if self.times_s else 0.0


@dataclass(frozen=True)
class AffordanceRecord:
    """A ``/vla/affordance/<arm>`` polygon: empty = arm idle."""

    recv_sim_s: float
    stamp_s: float
    num_points: int
    index: Optional[int]   # the polygon's z (affordance index); None when empty


@dataclass(frozen=True)
class DiagnosticRecord:
    """One DiagnosticStatus (``hardware_id`` is the node name in this stack)."""

    recv_sim_s: float
    node: str
    name: str
    level: int
    message: str
    values: Mapping[str, str]


@dataclass(frozen=True)
class StampRecord:
    """When a stamped message (a masked image) was seen, and its header stamp."""

    recv_sim_s: float
    stamp_s: float


@dataclass(frozen=True)
class JointLimitTable:
    """One arm's limits: names in the arm's order, position bounds and velocity limits (URDF), and
    the acceleration limits its safety filter enforces (empty: the filter's defaults)."""

    names: Tuple[str, ...]
    lower: Tuple[float, ...]
    upper: Tuple[float, ...]
    velocity: Tuple[float, ...]
    acceleration: Tuple[float, ...] = ()


@dataclass(frozen=True)
class NodeRun:
    """What happened to one child process."""

    name: str
    exit_code: Optional[int]
    died_during_run: bool
    log: str = ""


@dataclass
class Episode:
    """Where the episode starts and ends, in both clocks, and why it ended."""

    start_sim_s: float = math.nan
    end_sim_s: float = math.nan
    start_wall_s: float = math.nan
    end_wall_s: float = math.nan
    end_reason: str = ""
    total_wall_s: float = math.nan      # the whole run: start-up, episode and shutdown
    graph_connected_wall_s: float = math.nan  # from the first process start to a connected graph


@dataclass
class RunData:
    """Everything :func:`build_report` needs; filled by the recorder (lists are appended in arrival order)."""

    task: str = ""
    seed: Optional[int] = None
    instruction: str = ""
    task_arms: Tuple[str, ...] = ()
    actor_arms: Tuple[str, ...] = ()
    control_rate_hz: float = 50.0
    planner_rate_hz: float = 2.0
    joint_limits: Dict[str, JointLimitTable] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    episode: Episode = field(default_factory=Episode)
    nodes: List[NodeRun] = field(default_factory=list)
    plan_states: List[Tuple[float, dict]] = field(default_factory=list)
    task_states: List[Tuple[float, dict]] = field(default_factory=list)
    validator_events: List[Tuple[float, dict]] = field(default_factory=list)
    sim_status: List[Tuple[float, dict]] = field(default_factory=list)
    affordances: Dict[str, List[AffordanceRecord]] = field(default_factory=dict)
    chunks: Dict[str, List[ChunkRecord]] = field(default_factory=dict)
    commands: Dict[str, List[JointCommand]] = field(default_factory=dict)
    controller_points: Dict[str, List[JointCommand]] = field(default_factory=dict)
    measured: List[JointCommand] = field(default_factory=list)  # /joint_states (the page's plots)
    diagnostics: List[DiagnosticRecord] = field(default_factory=list)
    masked: Dict[str, List[StampRecord]] = field(default_factory=dict)
    message_counts: Dict[str, int] = field(default_factory=dict)
    recorded_counts: Dict[str, int] = field(default_factory=dict)
    outputs: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- small helpers


def distribution(values: Iterable[float]) -> Dict[str, Optional[float]]:
    """``{n, p50, p99, max, mean}`` of the finite values (None entries when there are none)."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    p50, p99 = np.percentile(array, [50, 99])
    return {"n": int(array.size), "p50": float(p50), "p99": float(p99), "max": float(array.max()),
            "mean": float(array.mean())}


def _scaled(stats: Dict[str, Optional[float]], factor: float) -> Dict[str, Optional[float]]:
    return {k: (v * factor if isinstance(v, float) else v) for k, v in stats.items()}


def _in_episode(recv_sim_s: float, episode: Episode) -> bool:
    start = episode.start_sim_s if math.isfinite(episode.start_sim_s) else -math.inf
    end = episode.end_sim_s if math.isfinite(episode.end_sim_s) else math.inf
    return start <= recv_sim_s <= end


def _number(text: Any) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _latest_values_by_node(diagnostics: Sequence[DiagnosticRecord]) -> Dict[str, Dict[str, str]]:
    """Node -> the values of its last DiagnosticStatus (counters are cumulative totals)."""
    latest: Dict[str, Dict[str, str]] = {}
    for record in diagnostics:
        latest[record.node] = dict(record.values)
    return latest


# ----------------------------------------------------------------------------- sections


def affordance_section(data: RunData) -> dict:
    """Affordance advances, re-plans and the chain's phase history (``/vla/plan_state``)."""
    history = []
    advances = replans = 0
    previous: Optional[Tuple[Any, Any, Any]] = None
    last_current: Optional[Tuple[Any, Any]] = None  # (index, seq) of the last current affordance
    for recv, payload in sorted(data.plan_states, key=lambda item: item[0]):
        affordance = payload.get("affordance") or {}
        key = (payload.get("phase"), payload.get("index"), affordance.get("seq"))
        if key == previous:
            continue
        # A new affordance (seq) after another one (possibly with 'predicting' states between):
        # a higher index is an advance, the same index a re-plan.
        if key[2] is not None and last_current is not None and key[2] != last_current[1]:
            if isinstance(key[1], int) and isinstance(last_current[0], int) and key[1] > last_current[0]:
                advances += 1
            elif key[1] == last_current[0]:
                replans += 1
        if key[2] is not None:
            last_current = (key[1], key[2])
        history.append({"sim_s": recv, "phase": key[0], "index": key[1], "seq": key[2],
                        "reason": payload.get("reason", "")})
        previous = key
    published = {}
    for arm, records in sorted(data.affordances.items()):
        active = [r for r in records if r.num_points > 0]
        published[arm] = {"messages": len(records), "with_keypoints": len(active),
                          "indices": sorted({r.index for r in active if r.index is not None})}
    last = data.plan_states[-1][1] if data.plan_states else {}
    return {"advances": advances, "replans": replans, "published": published,
            "final_phase": last.get("phase"), "final_index": last.get("index"),
            "achieved_count": last.get("achieved_count"), "history": history}


def validator_section(data: RunData) -> dict:
    """Decisions and gate events of the validator."""
    counts: Dict[str, int] = {}
    log = []
    for recv, payload in data.validator_events:
        name = str(payload.get("event"))
        counts[name] = counts.get(name, 0) + 1
        log.append({"sim_s": recv, "event": name, "index": payload.get("index"),
                    "reason": payload.get("reason", "")})
    decisions = max((int(p.get("decisions_count") or 0) for _, p in data.task_states), default=0)
    last = data.task_states[-1][1] if data.task_states else {}
    probs = {arm: entry.get("prob") for arm, entry in (last.get("arms") or {}).items()
             if isinstance(entry, Mapping)}
    return {"decisions": decisions, "events": counts, "event_log": log,
            "final_phase": last.get("phase"), "last_reason": last.get("last_reason"), "last_probabilities": probs}


def latency_section(data: RunData) -> dict:
    """Per-stage latency: the nodes' own p50/p99 (``/diagnostics``) and stamp-to-receipt in sim time."""
    reported: Dict[str, dict] = {}
    for node, values in sorted(_latest_values_by_node(data.diagnostics).items()):
        for key, text in values.items():
            match = _P50_KEY.match(key)
            if not match or "jitter" in key:  # tick jitter is reported under control, not as a latency
                continue
            p99_key = key[: -len("p50_ms")] + "p99_ms"
            stage = match.group("stage") or "total"
            reported[f"{node}.{stage}"] = {"p50_ms": _number(text), "p99_ms": _number(values.get(p99_key))}
    measured: Dict[str, dict] = {}
    for camera, records in sorted(data.masked.items()):
        ages = [r.recv_sim_s - r.stamp_s for r in records if _in_episode(r.recv_sim_s, data.episode)]
        measured[f"camera_to_masked.{camera}"] = _scaled(distribution(ages), 1e3)
    for arm, records in sorted(data.affordances.items()):
        ages = [r.recv_sim_s - r.stamp_s for r in records
                if r.num_points > 0 and _in_episode(r.recv_sim_s, data.episode)]
        measured[f"observation_to_affordance.{arm}"] = _scaled(distribution(ages), 1e3)
    for arm, records in sorted(data.chunks.items()):
        ages = [r.recv_sim_s - r.stamp_s for r in records if _in_episode(r.recv_sim_s, data.episode)]
        measured[f"observation_to_chunk.{arm}"] = _scaled(distribution(ages), 1e3)
    return {"reported_by_nodes_ms": reported,
            "measured_sim_ms": measured,
            "note": "reported: each node's own compute window (wall ms); measured: header stamp to the moment "
                    "the recorder received the message, in sim time (ms)"}


def _arm_matrix(commands: Sequence[JointCommand], limits: JointLimitTable) -> np.ndarray:
    """(N, n) positions in the limits' joint order (by name; positional when names are absent)."""
    rows = []
    for command in commands:
        values = np.asarray(command.positions, dtype=np.float64)
        if command.names and set(limits.names) <= set(command.names):
            index = [command.names.index(name) for name in limits.names]
            values = values[index]
        elif values.size != len(limits.names):
            values = np.full(len(limits.names), np.nan)
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(limits.names))


def limit_check(commands: Sequence[JointCommand], limits: JointLimitTable) -> dict:
    """Non-finite values and position-limit violations of every command."""
    matrix = _arm_matrix(commands, limits)
    finite_rows = np.all(np.isfinite(matrix), axis=1)
    lower = np.asarray(limits.lower) - LIMIT_TOLERANCE
    upper = np.asarray(limits.upper) + LIMIT_TOLERANCE
    outside = (matrix < lower) | (matrix > upper)
    outside &= finite_rows[:, None]
    per_joint = {name: int(count) for name, count in zip(limits.names, outside.sum(axis=0)) if count}
    return {"checked": int(matrix.shape[0]), "non_finite": int((~finite_rows).sum()),
            "outside_limits": int(outside.any(axis=1).sum()), "outside_by_joint": per_joint,
            "within_limits": bool(matrix.shape[0] > 0 and finite_rows.all() and not outside.any())}


def _acceleration_limits(limits: JointLimitTable) -> Tuple[np.ndarray, str]:
    if limits.acceleration:
        return np.asarray(limits.acceleration, dtype=np.float64), "actor max_acceleration"
    from sim2real_vla_ros.core.control.safety import DEFAULT_MAX_ACCELERATION

    if len(DEFAULT_MAX_ACCELERATION) != len(limits.names):
        raise ValueError(f"no acceleration limits for {len(limits.names)} joints")
    return np.asarray(DEFAULT_MAX_ACCELERATION, dtype=np.float64), "safety filter default max_acceleration"


def rate_check(commands: Sequence[JointCommand], limits: JointLimitTable, control_dt: float) -> dict:
    """Velocity and acceleration of every command sent, against the limits, for the verdict.

    The elapsed time of a step is the number of control ticks between the two command stamps
    (``max(1, round(interval / control_dt))``): the safety filter limits each tick's step, so a
    late tick is not a fast one, and a command the recorder missed does not double a step.
    Velocity ``|q[k] - q[k-1]| / (ticks * control_dt)`` is checked against the URDF limit;
    acceleration ``|q[k+1] - 2 q[k] + q[k-1]| / control_dt^2`` only over consecutive ticks,
    against the filter's acceleration limit, except the filter's documented stop profile: an
    e-stop freeze (``q[k+1] == q[k]`` exactly), counted as ``stop_freezes``. A step is over a
    limit when it exceeds ``limit * (1 + RATE_TOLERANCE) + RATE_ABSOLUTE_TOLERANCE``.
    """
    if not (isinstance(control_dt, (int, float)) and math.isfinite(control_dt) and control_dt > 0):
        raise ValueError(f"control period must be a positive number of seconds, got {control_dt!r}")
    matrix = _arm_matrix(commands, limits)
    stamps = np.asarray([c.stamp_s for c in commands], dtype=np.float64)
    keep = np.all(np.isfinite(matrix), axis=1) & np.isfinite(stamps)  # non-finite ones: limit_check
    matrix, stamps = matrix[keep], stamps[keep]
    velocity_limit = np.asarray(limits.velocity, dtype=np.float64)
    acceleration_limit, source = _acceleration_limits(limits)
    result: Dict[str, Any] = {
        "checked_steps": 0, "velocity_ratio_max": None, "velocity_violations": 0, "velocity_violations_by_joint": {},
        "worst_velocity": None, "acceleration_checked": 0, "acceleration_ratio_max": None,
        "acceleration_violations": 0, "acceleration_violations_by_joint": {}, "worst_acceleration": None,
        "acceleration_skipped_gaps": 0, "stop_freezes": 0, "tolerance": RATE_TOLERANCE,
        "acceleration_limit": acceleration_limit.tolist(), "acceleration_limit_source": source,
        "within_velocity_limit": True, "within_acceleration_limit": True,
    }
    if matrix.shape[0] < 2:
        return result
    scale = 1.0 + RATE_TOLERANCE
    ticks = np.maximum(1.0, np.rint(np.diff(stamps) / control_dt))
    steps = np.diff(matrix, axis=0)
    allowed_step = velocity_limit * ticks[:, None] * control_dt
    with np.errstate(divide="ignore", invalid="ignore"):
        velocity_ratio = np.where(velocity_limit > 0, np.abs(steps) / allowed_step, 0.0)
    over = np.abs(steps) > allowed_step * scale + RATE_ABSOLUTE_TOLERANCE
    result.update(checked_steps=int(steps.shape[0]), velocity_ratio_max=float(velocity_ratio.max()),
                  velocity_violations=int(over.any(axis=1).sum()),
                  velocity_violations_by_joint={name: int(n) for name, n in zip(limits.names, over.sum(axis=0)) if n},
                  within_velocity_limit=not over.any())
    if over.any():
        row, joint = np.unravel_index(np.argmax(np.where(over, velocity_ratio, -1.0)), over.shape)
        result["worst_velocity"] = {"stamp_s": float(stamps[row + 1]), "joint": limits.names[joint],
                                    "ratio": float(velocity_ratio[row, joint])}
    if steps.shape[0] < 2:
        return result
    consecutive = (ticks[:-1] == 1.0) & (ticks[1:] == 1.0)
    jerk = np.abs(steps[1:] - steps[:-1])
    allowed_jerk = acceleration_limit * control_dt ** 2
    acceleration_ratio = np.where(consecutive[:, None], jerk / allowed_jerk, 0.0)
    jerk_over = consecutive[:, None] & (jerk > allowed_jerk * scale + RATE_ABSOLUTE_TOLERANCE)
    freeze = ~np.any(steps[1:] != 0.0, axis=1)
    frozen = jerk_over.any(axis=1) & freeze
    jerk_over &= ~freeze[:, None]
    result.update(acceleration_checked=int(consecutive.sum()), acceleration_skipped_gaps=int((~consecutive).sum()),
                  acceleration_ratio_max=float(np.where(freeze[:, None], 0.0, acceleration_ratio).max()),
                  acceleration_violations=int(jerk_over.any(axis=1).sum()),
                  acceleration_violations_by_joint={name: int(n) for name, n in zip(limits.names, jerk_over.sum(axis=0))
                                                    if n},
                  stop_freezes=int(frozen.sum()), within_acceleration_limit=not jerk_over.any())
    if jerk_over.any():
        row, joint = np.unravel_index(np.argmax(np.where(jerk_over, acceleration_ratio, -1.0)), jerk_over.shape)
        result["worst_acceleration"] = {"stamp_s": float(stamps[row + 1]), "joint": limits.names[joint],
                                        "ratio": float(acceleration_ratio[row, joint])}
    return result


def _fresh_flags(stamps: np.ndarray, chunks: Sequence[ChunkRecord]) -> np.ndarray:
    """Whether a decoded chunk that had arrived by each tick still covered it (derived freshness)."""
    if not chunks:
        return np.zeros(stamps.size, dtype=bool)
    arrival = np.asarray([c.recv_sim_s for c in chunks])
    ends = np.asarray([c.stamp_s + c.horizon_s for c in chunks])
    order = np.argsort(arrival)
    arrival, ends = arrival[order], np.maximum.accumulate(ends[order])
    position = np.searchsorted(arrival, stamps, side="right") - 1
    covered = np.zeros(stamps.size, dtype=bool)
    has_chunk = position >= 0
    covered[has_chunk] = ends[position[has_chunk]] >= stamps[has_chunk]
    return covered


def seam_section(commands: Sequence[JointCommand], chunks: Sequence[ChunkRecord], limits: JointLimitTable,
                 control_dt: float) -> dict:
    """Joint velocity / acceleration of the commands sent around chunk arrivals vs elsewhere.

    Per tick: ``|q[k+1] - q[k]| / control_dt`` is the velocity and the change of that over a
    tick the acceleration (the safety filter limits both per nominal tick; under CPU load the
    timer's actual intervals vary, see the tick jitter). A seam window runs from
    ``SEAM_TICKS_BEFORE`` ticks before a chunk's arrival (every chunk after the first) to
    ``SEAM_WINDOW_S`` after it. ``velocity_limit_ratio_max`` compares the per-tick velocity with
    the URDF limits; ``velocity_limit_ratio_max_by_stamps`` divides by the actual stamp intervals
    instead (what a stream-mode controller executing each command on receipt would see).
    """
    matrix = _arm_matrix(commands, limits)
    stamps = np.asarray([c.stamp_s for c in commands], dtype=np.float64)
    result: Dict[str, Any] = {"seams": max(0, len(chunks) - 1), "max_velocity_seam": None,
                              "max_velocity_elsewhere": None, "max_acceleration_seam": None,
                              "max_acceleration_elsewhere": None, "max_step_seam": None, "max_step_elsewhere": None,
                              "velocity_limit_ratio_max": None, "velocity_limit_ratio_max_by_stamps": None,
                              "units": "rad/s, rad/s^2 and rad per tick (joint 7: m), over the commands actually sent"}
    finite = np.all(np.isfinite(matrix), axis=1)
    matrix, stamps = matrix[finite], stamps[finite]
    if matrix.shape[0] < 3:
        return result
    steps = np.abs(np.diff(matrix, axis=0))
    velocity = steps / control_dt
    acceleration = np.abs(np.diff(np.diff(matrix, axis=0), axis=0)) / control_dt ** 2
    step_time, acceleration_time = stamps[1:], stamps[1:-1]
    arrivals = sorted(c.recv_sim_s for c in chunks)[1:]

    def in_seam(times: np.ndarray) -> np.ndarray:
        mask = np.zeros(times.size, dtype=bool)
        for arrival in arrivals:
            mask |= (times >= arrival - SEAM_TICKS_BEFORE * control_dt) & (times <= arrival + SEAM_WINDOW_S)
        return mask

    def peak(values: np.ndarray, mask: np.ndarray) -> Optional[float]:
        chosen = values[mask]
        return float(chosen.max()) if chosen.size else None

    seam_steps, seam_acceleration = in_seam(step_time), in_seam(acceleration_time)
    limit = np.where(np.asarray(limits.velocity, dtype=np.float64) > 0, limits.velocity, np.inf)
    intervals = np.diff(stamps)
    by_stamps = steps[intervals > 1e-9] / intervals[intervals > 1e-9, None]
    result.update({
        "seams": len(arrivals),
        "max_velocity_seam": peak(velocity, seam_steps), "max_velocity_elsewhere": peak(velocity, ~seam_steps),
        "max_acceleration_seam": peak(acceleration, seam_acceleration),
        "max_acceleration_elsewhere": peak(acceleration, ~seam_acceleration),
        "max_step_seam": peak(steps, seam_steps), "max_step_elsewhere": peak(steps, ~seam_steps),
        "velocity_limit_ratio_max": float((velocity / limit).max()),
        "velocity_limit_ratio_max_by_stamps": float((by_stamps / limit).max()) if by_stamps.size else None,
    })
    return result


def control_period(rate_hz: Any) -> Optional[float]:
    """``1 / rate_hz`` for a positive finite rate, else None (the rate-dependent checks cannot run)."""
    if isinstance(rate_hz, (int, float)) and not isinstance(rate_hz, bool) and math.isfinite(rate_hz) and rate_hz > 0:
        return 1.0 / float(rate_hz)
    return None


def control_section(data: RunData) -> dict:
    """Per actor: rate and tick jitter (sim time), freshness, limits, velocity / acceleration, seams, chunks.

    With an unusable ``control_rate_hz`` (0, NaN) everything that needs the control period is
    ``{'error': ...}`` or None, and the rest is still reported.
    """
    control_dt = control_period(data.control_rate_hz)
    no_period = f"control_rate_hz must be a positive number, got {data.control_rate_hz!r}"
    latest = _latest_values_by_node(data.diagnostics)
    section = {}
    for arm in data.actor_arms:
        limits = data.joint_limits.get(arm)
        commands = [c for c in data.commands.get(arm, []) if _in_episode(c.recv_sim_s, data.episode)]
        chunks = [c for c in data.chunks.get(arm, []) if _in_episode(c.recv_sim_s, data.episode)]
        stamps = np.asarray([c.stamp_s for c in commands], dtype=np.float64)
        intervals = np.diff(stamps) if stamps.size > 1 else np.zeros(0)
        span = float(stamps[-1] - stamps[0]) if stamps.size > 1 else 0.0
        fresh = _fresh_flags(stamps, chunks)
        entry: Dict[str, Any] = {
            "commands": int(stamps.size),
            "rate_hz_sim": (stamps.size - 1) / span if span > 0 else None,
            "nominal_rate_hz": data.control_rate_hz,
            "period_ms": _scaled(distribution(intervals), 1e3),
            "tick_jitter_ms": _scaled(distribution(np.abs(intervals - control_dt) if control_dt else []), 1e3),
            "chunks_decoded": len(chunks),
            "chunk_horizon_s": distribution(c.horizon_s for c in chunks),
            "ticks_without_fresh_setpoint_derived": int((~fresh).sum()),
        }
        actor_values = latest.get(f"actor_{arm}", {})
        # The actor's own counts (whole run): every tick ('tick.'), ticks that had a chunk ('execution.').
        for prefix, name in (("tick.", "reported_all_ticks"), ("execution.", "reported_ticks_with_a_chunk")):
            entry[name] = {key[len(prefix):]: _number(value) for key, value in actor_values.items()
                           if key.startswith(prefix)}
        if limits is not None:
            entry["limits"] = limit_check(commands, limits)
            controller = [c for c in data.controller_points.get(arm, []) if _in_episode(c.recv_sim_s, data.episode)]
            entry["controller_points"] = limit_check(controller, limits)
            try:
                entry["rates"] = rate_check(commands, limits, control_dt) if control_dt else {"error": no_period}
            except Exception as exc:  # reported, and the verdict says the check could not be computed
                entry["rates"] = {"error": f"{type(exc).__name__}: {exc}"}
            entry["seams"] = seam_section(commands, chunks, limits, control_dt) if control_dt else {"error": no_period}
            entry["seams"]["reported_by_actor"] = {key[len("seam."):]: _number(value)
                                                   for key, value in actor_values.items() if key.startswith("seam.")}
        entry["diagnostics"] = actor_values
        section[arm] = entry
    return section


def safety_section(data: RunData) -> dict:
    """Every counted event: the actors' safety-filter events, every node's fault / drop / outcome
    counters (last cumulative totals), and the simulator's rejected commands."""
    by_node: Dict[str, Dict[str, int]] = {}
    for node, values in sorted(_latest_values_by_node(data.diagnostics).items()):
        events = {}
        for key, text in values.items():
            if key.startswith(_EVENT_PREFIXES) and key not in _NOT_EVENTS:
                number = _number(text)
                if number is not None and number != 0:
                    events[key] = int(number)
        by_node[node] = dict(sorted(events.items()))
    status = data.sim_status[-1][1] if data.sim_status else {}
    counters = status.get("counters") or {}
    by_node["sim_mujoco"] = {k: int(v) for k, v in sorted(counters.items()) if k.startswith("rejected:")}
    totals: Dict[str, int] = {}
    for events in by_node.values():
        for key, count in events.items():
            totals[key] = totals.get(key, 0) + count
    actor_safety = {node[len("actor_"):]: {key[len("safety."):]: count for key, count in events.items()
                                           if key.startswith("safety.")}
                    for node, events in by_node.items() if node.startswith("actor_")}
    guard_prefix = "collision_guard.blocked."
    actor_guard = {node[len("actor_"):]: {key[len(guard_prefix):]: count for key, count in events.items()
                                          if key.startswith(guard_prefix)}
                   for node, events in by_node.items() if node.startswith("actor_")}
    return {"actor_safety_events": actor_safety, "by_node": by_node, "totals": dict(sorted(totals.items())),
            "actor_collision_guard_stops": actor_guard,
            "actor_collision_guard_stop_total": sum(sum(events.values()) for events in actor_guard.values()),
            "actor_safety_event_total": sum(count for events in actor_safety.values() for key, count in events.items()
                                            if key != "held_ticks")}


def simulator_section(data: RunData) -> dict:
    """The simulator's privileged task check at the end of the episode (and whether it ever passed)."""
    in_episode = [(recv, p) for recv, p in data.sim_status if _in_episode(recv, data.episode)]
    statuses = in_episode or data.sim_status
    if not statuses:
        return {"task_success": None, "received": 0}
    last = statuses[-1][1]
    return {"task_success": bool(last.get("success")), "success_at_any_time": any(bool(p.get("success"))
                                                                                   for _, p in statuses),
            "task": last.get("task"), "episode": last.get("episode"), "seed": last.get("seed"),
            "criteria": last.get("criteria"), "command_counters": last.get("counters"),
            "real_time_factor_measured": last.get("real_time_factor_measured"), "received": len(data.sim_status)}


def run_section(data: RunData) -> dict:
    episode = data.episode
    sim_s = episode.end_sim_s - episode.start_sim_s
    wall_s = episode.end_wall_s - episode.start_wall_s
    return {"task": data.task, "seed": data.seed, "instruction": data.instruction,
            "task_arms": list(data.task_arms), "actor_arms": list(data.actor_arms),
            "episode_sim_s": sim_s if math.isfinite(sim_s) else None,
            "episode_wall_s": wall_s if math.isfinite(wall_s) else None,
            "real_time_factor": sim_s / wall_s if math.isfinite(sim_s) and wall_s > 0 else None,
            "total_wall_s": episode.total_wall_s if math.isfinite(episode.total_wall_s) else None,
            "graph_connected_after_wall_s": (episode.graph_connected_wall_s
                                             if math.isfinite(episode.graph_connected_wall_s) else None),
            "end_reason": episode.end_reason, **data.settings}


#: Checks whose failure means a command broke a limit (exit status 3), and the infrastructure
#: ones (exit status 1); every other failed check means the normal path was not shown (2).
SAFETY_CHECKS = ("commands_within_limits", "no_non_finite_commands", "commands_within_velocity_limit",
                 "commands_within_acceleration_limit")
INFRASTRUCTURE_CHECKS = ("all_nodes_ran", "checks_computed")


def _rates_computed(entry: Mapping[str, Any]) -> bool:
    rates = entry.get("rates")
    return isinstance(rates, Mapping) and "error" not in rates


def checks_section(data: RunData, control: Optional[dict], affordances: Optional[dict],
                   errors: Optional[Mapping[str, str]] = None) -> dict:
    """The run's evidence: every node ran, affordances, chunks, commands within the position,
    velocity and acceleration limits, and whether all of it could be computed.

    ``failed`` maps each failed check to why (the verdict's reasons).
    """
    errors = dict(errors or {})
    control = control if isinstance(control, dict) else {}
    published = (affordances or {}).get("published") or {}
    task_arms = [arm for arm in data.task_arms if arm in control] or list(control)
    died = [node for node in data.nodes if node.died_during_run]
    arms = list(control)

    def every(predicate) -> bool:
        return bool(arms) and all(predicate(control[arm]) for arm in arms)

    checks = {
        "all_nodes_ran": bool(data.nodes) and not died,
        "affordances_published": any(entry.get("with_keypoints", 0) > 0 for entry in published.values()),
        "chunks_decoded": all(control[arm]["chunks_decoded"] > 0 for arm in task_arms) if task_arms else False,
        "commands_published": every(lambda entry: entry["commands"] > 0),
        "commands_within_limits": every(lambda entry: entry.get("limits", {}).get("within_limits", False)),
        "no_non_finite_commands": every(lambda entry: entry.get("limits", {}).get("non_finite", 1) == 0),
        "commands_within_velocity_limit": every(lambda entry: _rates_computed(entry)
                                                and entry["rates"]["within_velocity_limit"]),
        "commands_within_acceleration_limit": every(lambda entry: _rates_computed(entry)
                                                    and entry["rates"]["within_acceleration_limit"]),
    }
    driver = data.settings.get("robot_driver")
    if driver is not None:  # hardware-in-the-loop dry run: what reached the emulated arms' CAN frames
        driven = [driver.get(arm, {}) for arm in (data.task_arms or driver)]
        checks["robot_driver_frames_within_limits"] = bool(driver) and all(
            str(entry.get("emulator.out_of_limit_commands")) == "0" for entry in driver.values())
        checks["robot_driver_commanded_the_arms"] = bool(driven) and all(
            int(entry.get("emulator.joint_commands") or 0) > 0 for entry in driven)
        checks["robot_driver_never_held"] = bool(driver) and all(entry.get("holds", 1) == 0
                                                                 for entry in driver.values())
    not_computed = [f"{name}: {message}" for name, message in errors.items()]
    not_computed += [f"actor_{arm}: no joint limits for its arm" for arm in data.actor_arms
                     if arm in control and "limits" not in control[arm]]
    not_computed += [f"actor_{arm} velocity/acceleration: {control[arm]['rates']['error']}" for arm in arms
                     if isinstance(control[arm].get("rates"), Mapping) and "error" in control[arm]["rates"]]
    if not arms:
        not_computed.append("no actor arms to check")
    checks["checks_computed"] = not not_computed
    checks["normal_path_ok"] = all(checks.values())
    checks["failed"] = _failure_reasons(checks, control, died, not_computed, driver)
    return checks


def _failure_reasons(checks: Mapping[str, bool], control: Mapping[str, dict], died: Sequence[NodeRun],
                     not_computed: Sequence[str], driver_summary: Optional[Mapping[str, dict]] = None
                     ) -> Dict[str, str]:
    """Why each failed check failed, in words (numbers included)."""
    reasons: Dict[str, str] = {}
    driver_summary = driver_summary or {}
    for name, ok in checks.items():
        if ok or name == "normal_path_ok":
            continue
        if name == "all_nodes_ran":
            reasons[name] = "; ".join(f"node {node.name} died during the run (exit code {node.exit_code}, log "
                                      f"{node.log or 'n/a'})" for node in died) or "no node ran"
        elif name == "checks_computed":
            reasons[name] = "could not compute: " + "; ".join(not_computed)
        elif name in ("commands_within_limits", "no_non_finite_commands"):
            parts = []
            for arm, entry in control.items():
                limits = entry.get("limits")
                if limits is None:
                    parts.append(f"actor_{arm}: not checked")
                elif name == "commands_within_limits" and not limits.get("within_limits", False):
                    parts.append(f"actor_{arm}: {limits.get('outside_limits')} of {limits.get('checked')} commands "
                                 f"outside the position limits {limits.get('outside_by_joint') or ''}".rstrip())
                elif name == "no_non_finite_commands" and limits.get("non_finite"):
                    parts.append(f"actor_{arm}: {limits['non_finite']} commands with NaN/Inf")
            reasons[name] = "; ".join(parts) or "no actor commands to check"
        elif name in ("commands_within_velocity_limit", "commands_within_acceleration_limit"):
            kind = "velocity" if "velocity" in name else "acceleration"
            parts = []
            for arm, entry in control.items():
                rates = entry.get("rates")
                if not _rates_computed(entry):
                    parts.append(f"actor_{arm}: not computed ({(rates or {}).get('error', 'no limits')})")
                    continue
                worst = rates.get(f"worst_{kind}")
                if worst:
                    limit = "URDF velocity limit" if kind == "velocity" else "acceleration limit"
                    parts.append(f"actor_{arm}: {rates[f'{kind}_violations']} steps over the {limit}, worst "
                                 f"{worst['ratio']:.2f}x on {worst['joint']} at {worst['stamp_s']:.3f} s "
                                 f"(tolerance {RATE_TOLERANCE:g})")
            reasons[name] = "; ".join(parts) or "no actor commands to check"
        elif name.startswith("robot_driver_"):
            reasons[name] = "piper_driver per arm: " + "; ".join(
                f"{arm}: state {entry.get('state')}, holds {entry.get('holds')} ({entry.get('hold_reasons')}), "
                f"JointCtrl frames {entry.get('emulator.joint_commands')}, out of limits "
                f"{entry.get('emulator.out_of_limit_commands')}" for arm, entry in driver_summary.items())
        else:
            reasons[name] = "not shown"
    return reasons


def verdict(report: Mapping[str, Any]) -> dict:
    """The dry run's exit status and every reason for it, from a report (missing parts fail).

    Returns
    -------
    dict
        ``exit_code``: 0 the run completed and showed the normal path within every limit;
        1 infrastructure failure (the run failed, a node died, or the checks could not be
        computed); 3 a command violated a position, velocity or acceleration limit or was not
        finite; 2 completed without showing the normal path. The most severe wins, in that
        order (1, 3, 2). ``outcome``: a word for it; ``reasons``: why, one line each.
    """
    try:
        run = report.get("run") or {}
        checks = report.get("checks") or {}
        failed = checks.get("failed") if isinstance(checks.get("failed"), Mapping) else {}
        reasons = []
        if run.get("failure"):
            reasons.append(f"infrastructure failure: {run['failure']}")
        if report.get("errors") and checks.get("checks_computed") is not False:
            reasons.append(f"report errors: {report['errors']}")
        known = [name for name in (*INFRASTRUCTURE_CHECKS, *SAFETY_CHECKS, "affordances_published", "chunks_decoded",
                                   "commands_published")]
        missing = [name for name in known if not isinstance(checks.get(name), bool)]
        if missing:
            reasons.append(f"checks missing from the report: {missing}")
        infrastructure = bool(run.get("failure") or report.get("errors") or missing) or \
            any(checks.get(name) is False for name in INFRASTRUCTURE_CHECKS)
        # A frame outside the limits at the (emulated) arm is as unsafe as an actor command outside them.
        safety = any(checks.get(name) is False for name in (*SAFETY_CHECKS, "robot_driver_frames_within_limits"))
        for name in (*INFRASTRUCTURE_CHECKS, *SAFETY_CHECKS):
            if checks.get(name) is False:
                reasons.append(f"{name}: {failed.get(name, 'failed')}")
        others = [name for name, ok in checks.items() if ok is False and name not in INFRASTRUCTURE_CHECKS
                  and name not in SAFETY_CHECKS and name != "normal_path_ok"]
        if others:
            reasons.append("normal path not shown: " + ", ".join(f"{name} ({failed.get(name, 'failed')})"
                                                                 for name in others))
        if infrastructure:
            code, outcome = 1, "FAILED"
        elif safety:
            code, outcome = 3, "UNSAFE: a command violated a limit"
        elif others or checks.get("normal_path_ok") is not True:
            code, outcome = 2, "COMPLETED, but the normal path was not shown"
        else:
            code, outcome = 0, "OK"
        return {"exit_code": code, "outcome": outcome, "reasons": reasons}
    except Exception as exc:  # a report this function cannot read is a failed run, never a pass
        return {"exit_code": 1, "outcome": "FAILED", "reasons": [f"verdict not computable: {type(exc).__name__}: {exc}"]}


def build_report(data: RunData) -> dict:
    """The report as a JSON-ready dict (see the module docstring for what each section holds).

    Never raises: a section that fails is ``None`` in the report, its error is in ``errors``
    (section name -> message), the checks count as not computed and the verdict fails.
    """
    errors: Dict[str, str] = {}

    def section(name: str, compute, fallback: Any = None) -> Any:
        try:
            return compute()
        except Exception as exc:  # recorded: the report says what it could not compute, and why
            errors[name] = f"{type(exc).__name__}: {exc}"
            return fallback

    report: Dict[str, Any] = {"schema": REPORT_SCHEMA}
    report["run"] = section("run", lambda: run_section(data), {
        "task": getattr(data, "task", None), "failure": (getattr(data, "settings", None) or {}).get("failure")})
    affordances = section("affordances", lambda: affordance_section(data))
    control = section("control", lambda: control_section(data))
    report["nodes"] = section("nodes", lambda: {node.name: {"exit_code": node.exit_code,
                                                            "died_during_run": node.died_during_run, "log": node.log}
                                                for node in data.nodes})
    report["affordances"] = affordances
    report["validator"] = section("validator", lambda: validator_section(data))
    report["latency"] = section("latency", lambda: latency_section(data))
    report["control"] = control
    report["safety"] = section("safety", lambda: safety_section(data))
    report["simulator"] = section("simulator", lambda: simulator_section(data))
    # The top line: the world's verdict (the simulator's privileged check), the planner's "done"
    # beside it as the model's claim, and whether they disagree.
    report["world"] = section("world", lambda: world_verdict((report["simulator"] or {}).get("task_success"),
                                                             (affordances or {}).get("final_phase")))
    report["messages"] = section("messages", lambda: {"received": dict(sorted(data.message_counts.items())),
                                                      "recorded": dict(sorted(data.recorded_counts.items()))})
    report["outputs"] = section("outputs", lambda: dict(data.outputs))
    checks_fallback = {"checks_computed": False, "normal_path_ok": False}
    report["checks"] = section("checks", lambda: checks_section(data, control, affordances, dict(errors)),
                               checks_fallback)
    if "checks" in errors:
        checks_fallback["failed"] = {"checks_computed": f"could not compute: {errors['checks']}"}
    report["errors"] = errors
    report["verdict"] = verdict(report)
    return report


def to_json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None, numpy values as Python ones, tuples as lists and
    anything else JSON cannot hold as its ``str``: ``json.dumps(..., allow_nan=False)`` then succeeds."""
    if isinstance(value, Mapping):
        return {str(key): to_json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def report_json(report: Mapping[str, Any]) -> str:
    """The report as JSON text: always valid (see :func:`to_json_ready`); a report that cannot
    be converted at all becomes its schema, an ``errors`` entry and a failed verdict."""
    try:
        return json.dumps(to_json_ready(report), indent=2, allow_nan=False)
    except Exception as exc:  # the last resort still writes what failed
        message = f"{type(exc).__name__}: {exc}"
        return json.dumps({"schema": REPORT_SCHEMA, "errors": {"report_json": message},
                           "checks": {"checks_computed": False, "normal_path_ok": False},
                           "verdict": {"exit_code": 1, "outcome": "FAILED",
                                       "reasons": [f"report not serialisable: {message}"]}}, indent=2)


def write_report(path: str, report: Mapping[str, Any]) -> None:
    """Write ``report.json`` (valid JSON whatever the report holds)."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(report_json(report))
        stream.write("\n")


def summary_lines(report: Mapping[str, Any]) -> List[str]:
    """A short human summary of a report (what the dry run prints); never raises."""
    try:
        lines = _summary_lines(report)
    except Exception as exc:  # a partial report (a section failed): say so, print the verdict anyway
        lines = [f"summary not available ({type(exc).__name__}: {exc}); see report.json"]
    result = report.get("verdict") or verdict(report)
    lines.append(f"verdict: {result['outcome']} (exit {result['exit_code']})")
    lines.extend(f"  - {reason}" for reason in result["reasons"])
    return lines


def _summary_lines(report: Mapping[str, Any]) -> List[str]:
    run, checks = report["run"], report["checks"]

    def fmt(value: Any, spec: str = ".1f") -> str:
        return "n/a" if value is None else format(value, spec)

    world = report.get("world") or {}
    lines = [f"task {run['task']} (seed {run['seed']}): {world.get('line', 'world: unknown')}",
             f"episode ended: {run['end_reason']}; episode {fmt(run['episode_sim_s'])} s sim "
             f"in {fmt(run['episode_wall_s'])} s wall (real-time factor {fmt(run['real_time_factor'], '.2f')}), "
             f"total {fmt(run['total_wall_s'])} s wall",
             f"affordances: {report['affordances']['advances']} advances, {report['affordances']['replans']} re-plans, "
             f"final phase {report['affordances']['final_phase']}; validator: {report['validator']['decisions']} "
             f"decisions, events {report['validator']['events']}"]
    for arm, entry in report["control"].items():
        jitter = entry["tick_jitter_ms"]
        seams = entry.get("seams", {})
        lines.append(f"actor_{arm}: {entry['chunks_decoded']} chunks, {entry['commands']} commands at "
                     f"{fmt(entry['rate_hz_sim'])} Hz sim (jitter p50 {fmt(jitter['p50'], '.2f')} / p99 "
                     f"{fmt(jitter['p99'], '.2f')} ms), {entry['ticks_without_fresh_setpoint_derived']} ticks without "
                     f"a fresh setpoint, within limits: {entry.get('limits', {}).get('within_limits')}, max |v| / "
                     f"URDF limit {fmt((entry.get('rates') or {}).get('velocity_ratio_max'), '.2f')}, seam max |v| "
                     f"{fmt(seams.get('max_velocity_seam'), '.3f')} vs elsewhere "
                     f"{fmt(seams.get('max_velocity_elsewhere'), '.3f')}")
    by_node: Dict[str, List[str]] = {}
    for stage, stats in report["latency"]["reported_by_nodes_ms"].items():
        if stats["p50_ms"] is None:
            continue  # a stage that never ran (e.g. an idle arm's inference)
        node, _, name = stage.partition(".")
        by_node.setdefault(node, []).append(f"{name} {fmt(stats['p50_ms'])}/{fmt(stats['p99_ms'])}")
    for node, stages in by_node.items():
        lines.append(f"latency p50/p99 ms {node}: " + ", ".join(stages))
    for arm, events in report["safety"]["actor_safety_events"].items():
        lines.append(f"actor_{arm} safety events: {events or 'none'}")
    others = {key: count for key, count in report["safety"]["totals"].items() if not key.startswith("safety.")}
    lines.append(f"other counted events: {others or 'none'}")
    lines.append(f"simulator task success: {report['simulator'].get('task_success')}; "
                 f"normal path ok: {checks['normal_path_ok']}")
    return lines


__all__ = ["REPORT_SCHEMA", "TERMINAL_PHASES", "JointCommand", "ChunkRecord", "AffordanceRecord", "DiagnosticRecord",
           "StampRecord", "JointLimitTable", "NodeRun", "Episode", "RunData", "distribution", "limit_check",
           "rate_check", "seam_section", "build_report", "verdict", "to_json_ready", "report_json", "write_report",
           "summary_lines", "RATE_TOLERANCE", "SAFETY_CHECKS", "INFRASTRUCTURE_CHECKS"]
