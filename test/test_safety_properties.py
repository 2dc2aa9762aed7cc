"""Property-based tests of the command invariants (hypothesis), over randomized sequences of
readings, faults, setpoints, e-stops, clock jumps and restarts, in every output mode.

The consumer is wired the way the actor controller is (core/control/joint_reading.py's module
docstring): each /joint_states sample goes through ``arm_state_from_joint_state`` and a
:class:`ValidatedJointState`; each tick's filter decision is reported back with
``commanded``; a clock jump back resets the validator's time. The arm follows every command
with a tick of lag unless it is blocked.

Invariants asserted on every consecutive pair (and triple) of commands sent by one filter,
with the filter's own tolerances (``INVARIANT_RELATIVE_TOLERANCE``, ``..._ABSOLUTE_...``):

* finite and inside the position limits;
* ``|q[k] - q[k-1]| <= max_velocity dt``;
* ``|q[k] - 2 q[k-1] + q[k-2]| <= max_acceleration dt^2``, except an e-stop freeze
  (``q[k] == q[k-1]`` in a tick that has the e-stop);
* a hold is a hold: a held tick's velocity lies between 0 and the previous one, per joint
  (it decelerates from the current command; it never moves toward a reading);
* the last-line check never fires (the rules themselves never produce a violation).

Per output mode, what goes out: ``stream`` the command; ``vendor`` the command as the vendor
message (gripper width) converted back; ``trajectory`` the command and its tail through
``safe_trajectory_tail`` (all points checked as consecutive commands, ending at rest), plus a
:meth:`SafetyFilter.preview` of arbitrary (NaN, out-of-limit, jumping) rows.

Restarts: *warm* (a new filter :meth:`SafetyFilter.seed`-ed from the old one's last command and
velocity: the invariants run on across it) and *cold* (a new process: new validator and filter,
the arm at rest where its controller left it, the validator given the controller's reference).
A cold start trusts its first confirmed readings: when they are truthful its first command is
within one step of the arm; when a self-consistent forged stream was already present it is
within the tracking allowance of it, never further (the validator's documented limit).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim2real_vla_ros.core.control.actor_io import arm_state_from_joint_state, safe_trajectory_tail
from sim2real_vla_ros.core.control.joint_reading import JointReadingValidator, ValidatedJointState
from sim2real_vla_ros.core.control.safety import (INVARIANT_ABSOLUTE_TOLERANCE, INVARIANT_RELATIVE_TOLERANCE,
                                                  SafetyEventKind, SafetyFilter, SafetyLimits)
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor, vendor_to_arm
from sim2real_vla_ros.core.robot import arm_limits

DT = 0.02
READING_DT = 0.005
HORIZON = 5
URDF = arm_limits("left")
LIMITS = SafetyLimits.from_config(URDF)
HOME = np.array([0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.01])
SCALE = 1.0 + INVARIANT_RELATIVE_TOLERANCE
SLACK = INVARIANT_ABSOLUTE_TOLERANCE
NOISE = 1e-4

# Mostly the normal case (the arm moves), with every fault mixed in.
READINGS = ("good",) * 30 + ("drop", "nan", "huge", "offset", "swapped", "reversed", "random", "stamp_back",
                             "stamp_future")
CANDIDATES = ("track",) * 30 + ("random", "nan", "out_of_limits", "jump", "none", "fault", "wrong_size")
EVENTS = (None,) * 60 + ("estop", "estop_release", "estop_release", "estop_release", "clock_back", "clock_forward", "warm_restart",
                         "cold_restart", "stale_camera", "sustain_offset", "sustain_swapped", "end_sustained",
                         "end_sustained", "block", "unblock", "unblock")

TICK = st.fixed_dictionaries({
    "readings": st.lists(st.sampled_from(READINGS), min_size=1, max_size=3),
    "candidate": st.sampled_from(CANDIDATES),
    "event": st.sampled_from(EVENTS),
})
SCENARIO = st.lists(TICK, min_size=20, max_size=90)


class Harness:
    """A consumer (validator + filter) driving a simulated arm; checks every command it sends."""

    def __init__(self, mode: str, seed: int, validated: bool = True) -> None:
        self.mode = mode
        self.validated = validated
        self.rng = np.random.default_rng(seed)
        self.now = 100.0
        self.last_tick = self.now
        self.arm = HOME.copy()         # where the arm is at the last tick
        self.arm_before = HOME.copy()  # and a tick before: readings between them interpolate
        self.other_arm = np.clip(HOME + self.rng.uniform(-0.8, 0.8, 7), URDF.lower, URDF.upper)
        self.goal = HOME.copy()
        self.speed = 0.04  # rad per tick toward the goal
        self.estop = False
        self.blocked = False
        self.sustained = None
        self.stale_camera = 0
        self.sent = 0
        self.tail = np.empty((0, 7))
        self.last_accepted_truthful = True  # whether the last accepted reading was the arm's real position
        self._new_consumer()

    # -------------------------------------------------------------- set-up
    def _new_consumer(self, reference=None) -> None:
        self.safety = SafetyFilter(LIMITS)
        self.state = ValidatedJointState(JointReadingValidator.from_limits(URDF, LIMITS)) if self.validated \
            else RawJointState()
        if reference is not None:
            self.state.commanded(reference, self.now)  # the arm controller's current reference
        self.history = []       # commands of this filter instance (the first: its start, at rest)
        self.cold_start = None  # (rest position) until the new filter's first command

    # -------------------------------------------------------------- one tick
    def tick(self, spec: dict) -> None:
        self._event(spec["event"])
        self.now += DT
        if self.now < self.last_tick - DT and self.validated:
            self.state.validator.reset_time()  # what the actor does when its clock jumps back
        self.last_tick = self.now
        count = len(spec["readings"])
        for index, kind in enumerate(spec["readings"]):
            self._reading(kind, (index + 1) / count)
        measured, stamp = self.state.latest
        stamps = {name: self.now - 0.01 for name in LIMITS.max_input_age_s}
        stamps["joint_state"] = stamp
        if self.stale_camera:
            stamps["cam_high"] = self.now - 5.0
            self.stale_camera -= 1
        candidate, fault = self._candidate(spec["candidate"])
        decision = self.safety.filter(candidate, measured, self.now, stamps, self.estop, DT, candidate_fault=fault)
        if decision.command is None:
            assert not self.history, "a filter that sent commands never stops sending"
            return
        self._check_decision(decision, measured)
        self.state.commanded(decision.command, self.now)
        self.arm_before = self.arm
        if not self.blocked:
            self.arm = decision.command.copy()
        self.other_arm = np.clip(self.other_arm + self.rng.normal(0.0, 0.005, 7) * [1] * 6 + [0],
                                 URDF.lower, URDF.upper)
        assert self.safety.counters.count_kind(SafetyEventKind.INVARIANT_VIOLATION) == 0, \
            self.safety.counters.as_dict()

    def _event(self, event) -> None:
        if event in ("estop", "estop_release"):
            self.estop = event == "estop"
        elif event == "clock_back":
            self.now -= self.rng.uniform(1.0, 50.0)
        elif event == "clock_forward":
            self.now += self.rng.uniform(1.0, 50.0)
        elif event == "stale_camera":
            self.stale_camera = 10
        elif event in ("sustain_offset", "sustain_swapped"):
            self.sustained = event.split("_", 1)[1]
            self.offset_joint = int(self.rng.integers(6))
        elif event == "end_sustained":
            self.sustained = None
        elif event in ("block", "unblock"):
            self.blocked = event == "block"
        elif event == "warm_restart" and self.safety.last_command is not None:
            old = self.safety
            self.safety = SafetyFilter(LIMITS)
            self.safety.seed(old.last_command, old.last_velocity)
        elif event == "cold_restart" and self.history:
            # The process stops: its arm controller brings the arm to rest (stream and vendor hold
            # the last command; a trajectory runs out its tail), and time passes.
            rest = self.history[-1] if self.mode != "trajectory" or not len(self.tail) else self.tail[-1]
            if not self.blocked:
                self.arm = rest.copy()
            self.arm_before = self.arm
            self.now += self.rng.uniform(0.5, 3.0)
            self._new_consumer(reference=rest)
            self.cold_start = rest

    # -------------------------------------------------------------- inputs
    def _reading(self, kind: str, fraction: float) -> None:
        """A /joint_states sample stamped ``fraction`` of the way through the last tick."""
        if kind == "drop":
            return
        position = self.arm_before + fraction * (self.arm - self.arm_before)  # moving between ticks
        truth = position + self.rng.normal(0.0, NOISE, 7) * np.r_[[1.0] * 6, 0.1]
        left, stamp, swap, reverse = truth.copy(), self.now - DT * (1.0 - fraction), False, False
        if kind == "good" and self.sustained == "offset":
            left[self.offset_joint] += 0.6  # a forged, self-consistent stream
        elif kind == "good" and self.sustained == "swapped":
            swap = True
        elif kind == "nan":
            left[self.rng.integers(7)] = np.nan
        elif kind == "huge":
            left[self.rng.integers(7)] = self.rng.choice([1e6, -1e6])
        elif kind == "offset":
            left[self.rng.integers(6)] += self.rng.choice([0.6, -0.6])
        elif kind in ("swapped", "reversed"):
            swap, reverse = kind == "swapped", kind == "reversed"
        elif kind == "random":
            left = self.rng.uniform(URDF.lower, URDF.upper)
        elif kind == "stamp_back":
            stamp = self.now - self.rng.uniform(0.2, 5.0)
        elif kind == "stamp_future":
            stamp = self.now + self.rng.uniform(0.2, 5.0)
        left_names = [f"left_joint{i}" for i in range(1, 8)]
        right_names = [f"right_joint{i}" for i in range(1, 8)]
        if swap:
            left_names, right_names = right_names, left_names
        if reverse:
            left_names = left_names[::-1]
        try:
            positions = arm_state_from_joint_state(left_names + right_names, list(left) + list(self.other_arm), "left")
        except ValueError as exc:
            self.state.malformed(str(exc))
            return
        verdict = self.state.update(positions, stamp, self.now)
        if verdict.accepted:
            self.last_accepted_truthful = bool(np.all(np.abs(positions - position) < 10 * NOISE))

    def _candidate(self, kind: str):
        base = self.history[-1] if self.history else self.arm
        if kind == "track":
            if self.rng.random() < 0.05:
                self.goal = self.rng.uniform(URDF.lower, URDF.upper)
                self.speed = self.rng.uniform(0.01, 0.12)
            # Up to 6 rad/s: faster than the 5 rad/s limit, so the velocity limit binds too.
            return base + np.clip(self.goal - base, -self.speed, self.speed), None
        if kind == "random":
            return self.rng.uniform(URDF.lower, URDF.upper), None
        if kind == "nan":
            candidate = base.copy()
            candidate[self.rng.integers(7)] = self.rng.choice([np.nan, np.inf, -np.inf])
            return candidate, None
        if kind == "out_of_limits":
            return base + self.rng.choice([-1.0, 1.0], 7) * self.rng.choice([1.0, 1e6]), None
        if kind == "jump":
            return base + self.rng.uniform(-1.5, 1.5, 7), None
        if kind == "fault":
            return None, "fast_decode:invalid_id"
        if kind == "wrong_size":
            return np.zeros(6), None
        return None, None

    # -------------------------------------------------------------- checks
    def _check_decision(self, decision, measured) -> None:
        command = decision.command
        if not self.history:
            # The filter's start (at rest) precedes its first command.
            start = command - decision.velocity * DT
            self.history = [start, start]
            if self.cold_start is not None and self.validated:
                self._check_cold_start(start)
        freeze = decision.has(SafetyEventKind.ESTOP)
        sent = command
        if self.mode == "vendor":
            names, positions = urdf_to_vendor("left", command)
            sent = vendor_to_arm(names, positions)
            np.testing.assert_array_equal(sent, command)
        check_step(self.history[-2], self.history[-1], sent, freeze, "command")
        if decision.held and not freeze:
            previous = self.history[-1] - self.history[-2]
            step = sent - self.history[-1]
            # Decelerating from the current command: between rest and the previous velocity.
            assert np.all(step * np.sign(previous) >= -SLACK), "a hold moved backwards (toward a reading?)"
            assert np.all(np.abs(step) <= np.abs(previous) * SCALE + SLACK), "a hold accelerated"
        self.history = [self.history[-1], sent]
        self.sent += 1
        self.tail = np.empty((0, 7))
        if self.mode == "trajectory":
            self._check_trajectory(decision, measured)

    def _check_cold_start(self, start) -> None:
        """A new process starts where its confirmed readings say the arm is."""
        rest = self.cold_start
        if self.last_accepted_truthful:
            assert np.all(np.abs(start - self.arm) <= 10 * NOISE + SLACK)
        else:
            assert self.sustained is not None, "an isolated bad reading seeded a restarted filter"
            allowance = LIMITS.max_tracking_error + self.state.validator.noise
            assert np.all(np.abs(start - rest) <= allowance + SLACK)
        self.cold_start = None

    def _check_trajectory(self, decision, measured) -> None:
        future = None
        if not decision.held:
            future = decision.command + np.cumsum(self.rng.normal(0.0, 0.03, (HORIZON, 7)), axis=0)
            if self.rng.random() < 0.2:
                future[self.rng.integers(HORIZON), self.rng.integers(7)] = np.nan
        self.tail = safe_trajectory_tail(self.safety, future, measured, DT)
        points = [self.history[0], self.history[1], *self.tail]
        for before, previous, point in zip(points, points[1:], points[2:]):
            check_step(before, previous, point, False, "trajectory point")
        if len(self.tail):
            ends = np.vstack([decision.command[None], self.tail])[-2:]
            # safe_trajectory_tail's own rest criterion (1e-12: round-off of the braking profile).
            np.testing.assert_allclose(ends[0], ends[1], rtol=0, atol=1e-12, err_msg="does not end at rest")
        # Any rows at all (NaN, out of the limits, jumps): the preview obeys the same limits.
        rows = self.rng.uniform(URDF.lower - 1.0, URDF.upper + 1.0, (8, 7))
        rows[self.rng.random((8, 7)) < 0.05] = np.nan
        rollout = self.safety.preview(rows, measured, DT)
        points = [self.history[0], self.history[1], *rollout]
        for before, previous, point in zip(points, points[1:], points[2:]):
            check_step(before, previous, point, False, "preview point")


class RawJointState:
    """The consumer without a validator (how the actor stored readings before issue 10): every
    parsed reading is believed. The filter alone must keep the invariants then, too."""

    def __init__(self) -> None:
        self.latest = (None, None)

    def update(self, positions, stamp_s, now_s=None):
        self.latest = (np.asarray(positions, dtype=float).copy(), stamp_s)
        return type("Verdict", (), {"accepted": True})()

    def malformed(self, detail=""):
        pass

    def commanded(self, command, stamp_s):
        pass


def check_step(before, previous, command, freeze, what) -> None:
    """The invariants of one command given the two before it (module docstring)."""
    assert np.all(np.isfinite(command)), f"{what}: non-finite {command}"
    assert np.all(command >= LIMITS.lower - SLACK) and np.all(command <= LIMITS.upper + SLACK), \
        f"{what}: outside the limits {command}"
    step = command - previous
    assert np.all(np.abs(step) <= LIMITS.max_velocity * DT * SCALE + SLACK), \
        f"{what}: velocity {np.abs(step) / DT} > {LIMITS.max_velocity}"
    if freeze and not step.any():
        return  # the e-stop freeze: the one documented exception to the acceleration limit
    jerk = step - (previous - before)
    assert np.all(np.abs(jerk) <= LIMITS.max_acceleration * DT * DT * SCALE + SLACK), \
        f"{what}: acceleration {np.abs(jerk) / DT ** 2} > {LIMITS.max_acceleration}"


PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("mode", ["stream", "vendor", "trajectory"])
@PROPERTY_SETTINGS
@given(scenario=SCENARIO, seed=st.integers(0, 2**32 - 1), validated=st.booleans())
def test_commands_obey_the_limits_through_faults_holds_estops_clock_jumps_and_restarts(mode, scenario, seed,
                                                                                        validated):
    """``validated=False`` feeds every parsed reading straight to the filter (no validator):
    the filter alone keeps the invariants; the validator only decides what is believed."""
    harness = Harness(mode, seed, validated)
    for spec in scenario:
        harness.tick(spec)
