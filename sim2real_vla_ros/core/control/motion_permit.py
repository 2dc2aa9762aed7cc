"""When an arm may move at all: the e-stop latch, the start-after-release rule, the planner heartbeat.

:class:`MotionPermit` is ROS-free; each actor owns one (the e-stop is not owned by any single
process: every actor keeps its own latch, fed by the latched ``vla/estop`` topic from any
publisher and by its own ``~/set_estop`` service). :class:`ActorController` asks it at every
tick (``hold_reason(now_s)``); anything but None holds the arm, power staying on (IEC 60204-1
stop category 2): ``'estop'`` freezes the setpoint within the tick (safety.py rule 3), the
others make the arm idle, a controlled stop at the acceleration limit (rule 5).

Rules
-----
1. **Engage** (from any entry point) holds from the next tick and revokes the permission of
   the running task.
2. **Release** only clears the latch: the arm stays held until a task run that *started after
   the release* is running (``plan_state`` ``run_started`` >= the release time). A release
   alone never moves an arm.
3. **Start-up**: the permit comes up held, and a run whose first ``plan_state`` sample this
   process received was *written before the process started* (the latched sample a restarted
   actor gets; DDS source timestamp, ``written_before_start``) is never joined: a restarted
   actor waits for a new start. (Not "a run started before the first tick": on a loaded
   machine a freshly started actor's first tick can come after the planner started the run it
   was launched for.)
4. **Planner heartbeat**: no heartbeat received for ``heartbeat_timeout_s`` (receipt time on
   the actor's clock) holds (``planner_lost``); the hold ends when heartbeats return from the
   *same* planner process (a transient stall). Heartbeats from a *new* planner process (another
   boot id) revoke the permission, as a release does: its runs need a new start.

Times are the actor's control clock (sim time under ``use_sim_time``); ``run_started`` is the
planner's clock, the same clock in one ROS graph (``/clock``, or the system clock of one host;
across hosts it needs synchronised clocks, as the stamps of every topic do).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

HOLD_REASONS = ("estop", "awaiting_start", "no_planner_heartbeat", "planner_lost")


class MotionPermit:
    """E-stop latch + start-after-release + planner heartbeat (see the module docstring).

    Parameters
    ----------
    heartbeat_timeout_s : float or None
        Hold when the newest planner heartbeat is older than this; None: no heartbeat check (a
        driver without a planner process, e.g. the in-process runner).
    faults : object, optional
        ``count(reason)`` is told each engage, release, refusal and heartbeat loss.
    """

    def __init__(self, heartbeat_timeout_s: Optional[float] = 1.5, faults=None) -> None:
        if heartbeat_timeout_s is not None and not (math.isfinite(heartbeat_timeout_s) and heartbeat_timeout_s > 0):
            raise ValueError(f"heartbeat_timeout_s must be finite and > 0 or None, got {heartbeat_timeout_s!r}")
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.faults = faults
        self.engaged = False  # the e-stop latch (a plain attribute: atomic for the executor thread)
        self._released_pending = False  # a release whose time is the next tick's
        self._not_before_s: Optional[float] = None  # a run must start at or after this (the last release)
        self._predating_runs: set = set()  # run starts first seen in a sample older than this process
        self._seen_runs: set = set()
        self._running = False
        self._run_started_s: Optional[float] = None
        self._last_beat_s: Optional[float] = None
        self._planner_boot: Optional[str] = None
        self._lost = False
        self.last_reason: Optional[str] = "awaiting_start"
        self._last_now_s: Optional[float] = None
        self.counts: Dict[str, int] = {}

    # ------------------------------------------------------------------ inputs
    def engage(self) -> bool:
        """Latch the e-stop; returns whether it changed."""
        changed = not self.engaged
        self.engaged = True
        if changed:
            self._count("estop_engaged")
        return changed

    def release(self, now_s: Optional[float] = None) -> bool:
        """Clear the latch (no motion until a run started after ``now_s``; None = the next tick's time)."""
        changed = self.engaged
        self.engaged = False
        if changed:
            self._count("estop_released")
            self._revoke(now_s)
        return changed

    def set(self, engaged: bool, now_s: Optional[float] = None) -> bool:
        return self.engage() if engaged else self.release(now_s)

    def on_plan(self, running: bool, run_started_s: Optional[float], written_before_start: bool = False) -> None:
        """The planner's task: running or not, when its current run started (None: unknown), and
        whether this plan_state sample was written before this process started."""
        self._running = bool(running)
        ok = run_started_s is not None and isinstance(run_started_s, (int, float)) and math.isfinite(run_started_s)
        self._run_started_s = float(run_started_s) if ok else None
        if ok and written_before_start and self._run_started_s not in self._seen_runs:
            self._predating_runs.add(self._run_started_s)
            self._count("run_predates_start")
        if ok:
            self._seen_runs.add(self._run_started_s)

    def on_heartbeat(self, boot_id: str, now_s: float) -> None:
        """A planner heartbeat received at ``now_s`` (actor clock); ``boot_id`` names the planner process."""
        if self._planner_boot is not None and boot_id != self._planner_boot:
            self._count("planner_restarted")
            self._revoke(now_s)
        self._planner_boot = boot_id
        self._last_beat_s = now_s

    def require_new_run(self, now_s: Optional[float] = None) -> None:
        """Move only for a run that starts at or after ``now_s`` (default: the next tick's time).

        What a lifecycle activation does: an actor that was inactive never joins a run already
        going, as after an e-stop release.
        """
        self._revoke(now_s)

    def _revoke(self, now_s: Optional[float]) -> None:
        if now_s is None:
            self._released_pending = True
        else:
            self._not_before_s = float(now_s)

    # ------------------------------------------------------------------ decision
    def hold_reason(self, now_s: float) -> Optional[str]:
        """Why the arm must hold at ``now_s`` (one of ``HOLD_REASONS``), or None: it may move."""
        self._last_now_s = now_s
        if self._released_pending:
            self._released_pending = False
            self._not_before_s = now_s if self._not_before_s is None else max(self._not_before_s, now_s)
        reason = self._reason(now_s)
        if reason == "planner_lost" and not self._lost:
            self._count("planner_lost")
        self._lost = reason == "planner_lost"
        if reason == "awaiting_start" and self._running and self.last_reason != "awaiting_start":
            self._count("run_not_permitted")
        self.last_reason = reason
        return reason

    def _reason(self, now_s: float) -> Optional[str]:
        if self.engaged:
            return "estop"
        if self.heartbeat_timeout_s is not None:
            if self._last_beat_s is None:
                return "no_planner_heartbeat"
            if now_s - self._last_beat_s > self.heartbeat_timeout_s:
                return "planner_lost"
        started = self._run_started_s
        if not self._running or started is None or started in self._predating_runs or \
                (self._not_before_s is not None and started < self._not_before_s):
            return "awaiting_start"
        return None

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.faults is not None:
            self.faults.count(f"permit.{reason}")

    def diagnostics(self) -> Dict[str, Any]:
        return {"permit.hold_reason": self.last_reason or "none", "permit.estop_latched": self.engaged,
                "permit.not_before_s": "none" if self._not_before_s is None else self._not_before_s,
                "permit.run_started_s": "none" if self._run_started_s is None else self._run_started_s,
                "permit.planner_boot": self._planner_boot or "none",
                "permit.heartbeat_age_s": "none" if self._last_beat_s is None or self._last_now_s is None
                else self._last_now_s - self._last_beat_s,
                **{f"permit.count.{k}": v for k, v in self.counts.items()}}
