"""The dry run's JSON report, built from what the recorder saw (pure, ROS-free).

The recorder (``tools/recorder.py``) turns the run's messages into plain records
(:class:`RunData`: tuples of floats, strings and JSON payloads; no ROS types) and
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
- every safety event with its count (the actors' ``safety.*`` diagnostics, the other nodes'
  fault / drop counters, the simulator's rejected commands);
- the simulator's privileged task success (``/sim/task_status``);
- episode sim time, wall time and real-time factor.

Times named ``*_sim_s`` are simulated seconds (ROS time of the run), ``*_wall_s`` wall seconds.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

REPORT_SCHEMA = "vla_dry_run_report/1"
TERMINAL_PHASES = ("succeeded", "failed", "aborted")
#: Commands within this of a position limit count as inside (float round-off of clipped values).
LIMIT_TOLERANCE = 1e-6
#: Ticks before / time after a chunk's arrival that belong to its seam window.
SEAM_TICKS_BEFORE = 2
SEAM_WINDOW_S = 0.25
_P50_KEY = re.compile(r"^(?P<stage>.*?)[._]?p50_ms$")
# Diagnostics value prefixes that count events (faults, drops, holds) in each node, and the
# keys under them that are totals rather than events.
_EVENT_PREFIXES = ("safety.", "fault.", "count.", "dropped.", "rejected:", "executor.dropped", "inference.")
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
    """One arm's limits (URDF): names in the arm's order, position bounds, velocity limits."""

    names: Tuple[str, ...]
    lower: Tuple[float, ...]
    upper: Tuple[float, ...]
    velocity: Tuple[float, ...]


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


def control_section(data: RunData) -> dict:
    """Per actor: rate and tick jitter (sim time), freshness, limits, seams, chunks."""
    control_dt = 1.0 / data.control_rate_hz
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
            "tick_jitter_ms": _scaled(distribution(np.abs(intervals - control_dt)), 1e3),
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
            entry["seams"] = seam_section(commands, chunks, limits, control_dt)
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
    return {"actor_safety_events": actor_safety, "by_node": by_node, "totals": dict(sorted(totals.items())),
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


def checks_section(data: RunData, control: dict, affordances: dict) -> dict:
    """The normal path's evidence: every node ran, affordances, chunks, commands within limits."""
    task_arms = [arm for arm in data.task_arms if arm in control] or list(control)
    checks = {
        "all_nodes_ran": bool(data.nodes) and not any(node.died_during_run for node in data.nodes),
        "affordances_published": any(entry["with_keypoints"] > 0 for entry in affordances["published"].values()),
        "chunks_decoded": all(control[arm]["chunks_decoded"] > 0 for arm in task_arms) if task_arms else False,
        "commands_published": all(control[arm]["commands"] > 0 for arm in control) if control else False,
        "commands_within_limits": all(control[arm].get("limits", {}).get("within_limits", False) for arm in control)
        if control else False,
        "no_non_finite_commands": all(control[arm].get("limits", {}).get("non_finite", 1) == 0 for arm in control)
        if control else False,
    }
    driver = data.settings.get("robot_driver")
    if driver is not None:  # hardware-in-the-loop dry run: what reached the emulated arms' CAN frames
        arms = [driver.get(arm, {}) for arm in (data.task_arms or driver)]
        checks["robot_driver_frames_within_limits"] = bool(driver) and all(
            str(entry.get("emulator.out_of_limit_commands")) == "0" for entry in driver.values())
        checks["robot_driver_commanded_the_arms"] = bool(arms) and all(
            int(entry.get("emulator.joint_commands") or 0) > 0 for entry in arms)
        checks["robot_driver_never_held"] = bool(driver) and all(entry.get("holds", 1) == 0
                                                                 for entry in driver.values())
    checks["normal_path_ok"] = all(checks.values())
    return checks


def build_report(data: RunData) -> dict:
    """The report as a JSON-ready dict (see the module docstring for what each section holds)."""
    affordances = affordance_section(data)
    control = control_section(data)
    return {
        "schema": REPORT_SCHEMA,
        "run": run_section(data),
        "checks": checks_section(data, control, affordances),
        "nodes": {node.name: {"exit_code": node.exit_code, "died_during_run": node.died_during_run, "log": node.log}
                  for node in data.nodes},
        "affordances": affordances,
        "validator": validator_section(data),
        "latency": latency_section(data),
        "control": control,
        "safety": safety_section(data),
        "simulator": simulator_section(data),
        "messages": {"received": dict(sorted(data.message_counts.items())),
                     "recorded": dict(sorted(data.recorded_counts.items()))},
        "outputs": data.outputs,
    }


def summary_lines(report: Mapping[str, Any]) -> List[str]:
    """A short human summary of a report (what the dry run prints)."""
    run, checks = report["run"], report["checks"]

    def fmt(value: Any, spec: str = ".1f") -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [f"task {run['task']} (seed {run['seed']}): {run['end_reason']}; episode {fmt(run['episode_sim_s'])} s sim "
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
                     f"a fresh setpoint, within limits: {entry.get('limits', {}).get('within_limits')}, seam max |v| "
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
                 f"normal path ok: {checks['normal_path_ok']} {({k: v for k, v in checks.items() if not v}) or ''}")
    return lines


__all__ = ["REPORT_SCHEMA", "TERMINAL_PHASES", "JointCommand", "ChunkRecord", "AffordanceRecord", "DiagnosticRecord",
           "StampRecord", "JointLimitTable", "NodeRun", "Episode", "RunData", "distribution", "limit_check",
           "seam_section", "build_report", "summary_lines"]
