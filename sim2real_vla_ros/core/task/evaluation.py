"""Table-2-style evaluation arithmetic (ROS-free): success intervals, steps, the paper's numbers.

The paper (Sim2Real-VLA, Table 2) reports per task successes/runs in simulation ("Sim.") with a
95 % interval and the mean number of steps, "for unsuccessful trials ... the predefined maximum
step limit as an upper bound". :func:`summarise` does the same for a list of
:class:`EpisodeOutcome`; :data:`PAPER_TABLE2` holds the paper's Sim. column for Sim2Real-VLA
and the best baseline per task, so a table can show them side by side.

A step is one policy step: one action chunk executed by each arm the task uses (what the dry
run's and the in-process runner's step limit count). The scripted expert executes no chunks;
its steps are its episode time divided by the bundle's chunk period (chunk_length /
control_rate_hz), the same time scale.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# Table 2, Sim. column: (successes, runs) and mean steps, for Sim2Real-VLA; the best baseline
# by Sim. successes (name, successes). Transcribed from the paper's Table 2.
PAPER_TABLE2: Dict[str, dict] = {
    "pour_water_single": {"sim2real_vla": (46, 50), "steps": 174.60, "best_baseline": ("pi0 (FwS)", 38)},
    "pour_water_dual": {"sim2real_vla": (47, 50), "steps": 195.15, "best_baseline": ("pi0-FAST (FwS)", 30)},
    "table_rearrangement": {"sim2real_vla": (44, 50), "steps": 197.05, "best_baseline": ("pi0-FAST (FwS)", 23)},
    "items_handover_place": {"sim2real_vla": (31, 50), "steps": 370.20, "best_baseline": ("GR00T N1.5 (FwS)", 18)},
    "basket_pick_place": {"sim2real_vla": (29, 50), "steps": 364.15, "best_baseline": ("pi0 (FwS)", 15)},
    "pan_open_pick_place": {"sim2real_vla": (30, 50), "steps": 525.35, "best_baseline": ("GR00T N1.5 (FwS)", 17)},
}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """95 % Wilson score interval of a success rate (sound at 0/n and n/n, unlike the normal one)."""
    if n <= 0:
        return (0.0, 0.0)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


@dataclass
class EpisodeOutcome:
    """One evaluated episode. ``success`` is the simulator's privileged check, never a model's claim."""

    task: str
    seed: int
    success: bool
    steps: float
    end_reason: str = ""
    model_claimed_done: Optional[bool] = None  # the planner's "done" (bundle modes); None for the expert
    sim_time_s: float = 0.0
    wall_s: float = 0.0
    detail: str = ""  # why it failed (expert: the failing sub-goal), or where its run folder is
    limit_violations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaskSummary:
    task: str
    episodes: int
    successes: int
    rate: float
    interval95: Tuple[float, float]
    mean_steps: float  # failures counted at the step limit (the paper's convention)
    step_limit: int
    claimed_done: int  # episodes whose model claimed done
    claimed_but_failed: int  # ... of which the simulator says the task was not done
    limit_violations: int
    failures: Dict[str, int] = field(default_factory=dict)
    paper: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def counted_steps(outcome: EpisodeOutcome, step_limit: int) -> float:
    """Steps as Table 2 counts them: a failure counts the step limit; a success at most it."""
    return float(min(outcome.steps, step_limit)) if outcome.success else float(step_limit)


def summarise(task: str, outcomes: Sequence[EpisodeOutcome], step_limit: int) -> TaskSummary:
    """Table 2's row for ``task`` from its episodes."""
    outcomes = [o for o in outcomes if o.task == task]
    n = len(outcomes)
    successes = sum(1 for o in outcomes if o.success)
    failures: Dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.success:
            key = outcome.detail or outcome.end_reason or "unknown"
            failures[key] = failures.get(key, 0) + 1
    claimed = [o for o in outcomes if o.model_claimed_done]
    return TaskSummary(
        task=task, episodes=n, successes=successes, rate=round(successes / n, 4) if n else 0.0,
        interval95=wilson_interval(successes, n),
        mean_steps=round(sum(counted_steps(o, step_limit) for o in outcomes) / n, 2) if n else float("nan"),
        step_limit=int(step_limit), claimed_done=len(claimed),
        claimed_but_failed=sum(1 for o in claimed if not o.success),
        limit_violations=sum(o.limit_violations for o in outcomes), failures=failures,
        paper=PAPER_TABLE2.get(task, {}))


def table_markdown(mode: str, summaries: Sequence[TaskSummary]) -> List[str]:
    """Markdown rows: ours beside the paper's Sim. column."""
    lines = [f"| task (step limit) | {mode}: successes | 95 % interval | mean steps | model claimed done / "
             "of which failed | paper Sim2Real-VLA (Sim.) | paper steps | best baseline (Sim.) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summaries:
        paper = row.paper or {}
        ours = paper.get("sim2real_vla")
        baseline = paper.get("best_baseline")
        low, high = row.interval95
        lines.append(
            f"| {row.task} ({row.step_limit}) | {row.successes}/{row.episodes} | {low:.2f}-{high:.2f} | "
            f"{row.mean_steps:.1f} | {row.claimed_done} / {row.claimed_but_failed} | "
            f"{f'{ours[0]}/{ours[1]}' if ours else 'n/a'} | {paper.get('steps', 'n/a')} | "
            f"{f'{baseline[1]}/50 {baseline[0]}' if baseline else 'n/a'} |")
    return lines


def planner_end_reason(phase: str) -> str:
    """How an episode that the planner ended is reported: its phase is the model's claim."""
    if phase == "succeeded":
        return "planner claimed done (phase succeeded)"
    return f"planner ended the task (phase {phase})"


def world_verdict(task_success: Optional[bool], planner_phase: Optional[str]) -> dict:
    """The episode's top line: the world's verdict (the simulator's privileged check) first, the
    planner's "done" as a claim beside it, and whether they disagree."""
    claimed = planner_phase == "succeeded"
    completed = bool(task_success)
    if task_success is None:
        line = "world: unknown (no simulator status)"
    else:
        line = f"world: task {'COMPLETED' if completed else 'NOT completed'} (simulator's check)"
    line += f"; planner {'claimed done' if claimed else f'did not claim done (phase {planner_phase or None})'}"
    agree = task_success is None or claimed == completed
    if not agree:
        line += ": DISAGREEMENT"
    return {"task_completed": None if task_success is None else completed, "planner_claimed_done": claimed,
            "agree": agree, "line": line}
