"""The split actor's request/chunk protocol and the control side's bookkeeping (pure, ROS-free).

With ``split_inference`` the actor runs as two processes, possibly on two hosts: the control
node (robot host) runs the :class:`~.actor_controller.ActorController` -- schedule, chunk
executor, safety filter -- and the inference node (GPU host) runs the model. Where the
single-process actor hands a snapshot to its worker thread, the control node publishes a
request and later receives a chunk; :class:`RemoteInference` decides what to do with each:

* one request in flight per arm (the controller's own ``in_flight`` flag); a request not
  answered within ``request_timeout_s`` is given up (the controller may ask again);
* a chunk is accepted only if it answers the request in flight (same id), was computed for
  the target the arm still has, and its observation is at most ``max_chunk_age_s`` old on
  arrival (the splice needs it to overlap the present; an old one after a cut link is
  worthless). The controller's executor then splices it by that measured age.

When chunks stop coming (a cut link, a dead GPU host) nothing is spliced: the executor runs to
the end of the last chunk -- at most one chunk horizon after its observation -- and the
safety filter then decelerates the arm to a hold. That horizon is the staleness limit; the
control node never moves the arm on a plan older than that.

Wire format (standard messages): the request is a ``std_msgs/Header`` whose ``stamp`` is the
newest observation the control node wants used and ``frame_id`` ``<arm>/<target index>/<id>``;
the chunk a ``trajectory_msgs/JointTrajectory`` with ``header.stamp`` = the observation it was
computed from, the same ``frame_id`` (the target index the inference side used), points
``chunk_dt`` apart; no points and ``/failed:<reason>`` appended = a failed inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from sim2real_vla_ros.core.vocabulary import ARMS

INFERENCE_PARAMETER_NAMES = ("arm", "bundle_path", "inference_backend", "intra_op_threads", "top_image_width",
                             "top_image_height", "instruction", "relaxed_decode", "fault_injection",
                             "fault_injection_period", "inference_delay_s", "diagnostics_rate_hz", "use_sim_time")
"""The actor's parameters that the inference node takes (the model and its inputs); the rest are the
control node's. The graph copies these from the actor's parameter section to the inference node."""

MODEL_ONLY_PARAMETER_NAMES = ("relaxed_decode", "fault_injection", "fault_injection_period", "inference_delay_s")
"""Actor parameters the control node does not declare (they act on the model)."""

FUTURE_TOLERANCE_S = 0.05
"""A chunk stamped later than this after the control clock's now is refused (unsynchronised hosts)."""


@dataclass(frozen=True)
class ChunkRequest:
    """A request as the inference side holds it."""

    observation_s: float  # the newest observation the control side wants used
    target_index: int
    request_id: int
    received_s: float


def format_request_id(arm: str, target_index: int, request_id: int) -> str:
    """``left/3/17``: the frame_id of a request and of the chunk that answers it."""
    return f"{arm}/{int(target_index)}/{int(request_id)}"


def parse_request_id(frame_id: str) -> Tuple[str, int, int]:
    """(arm, target index, request id) of a request's or chunk's frame_id (a failure suffix is ignored).

    Raises
    ------
    ValueError
        Not ``<arm>/<int>/<int>[/failed:<reason>]``.
    """
    parts = frame_id.split("/")
    if len(parts) < 3 or parts[0] not in ARMS:
        raise ValueError(f"frame_id {frame_id!r} is not '<arm>/<target index>/<request id>'")
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"frame_id {frame_id!r}: target index and request id must be integers") from None


def failure_reason(frame_id: str) -> Optional[str]:
    """The reason of a failed-inference chunk's frame_id, else None."""
    _, _, tail = frame_id.partition("/failed:")
    return tail or None


@dataclass(frozen=True)
class Pending:
    request_id: int
    target_index: int
    target_seq: int
    observation_s: float
    sent_s: float


@dataclass(frozen=True)
class ChunkVerdict:
    """What to do with a received chunk: ``accept`` it (splice ``chunk`` stamped ``observation_s``),
    or not (``reason`` says why); ``finished`` says whether the request in flight is over."""

    accept: bool
    finished: bool
    reason: str = ""
    chunk: Optional[np.ndarray] = None
    observation_s: float = math.nan
    age_s: float = math.nan
    round_trip_s: float = math.nan


class RemoteInference:
    """The control node's side of the split: one request in flight, timeouts, chunk acceptance.

    Parameters
    ----------
    arm : str
    chunk_dt : float
        Spacing of a chunk's steps (s); a chunk with another spacing is refused.
    num_joints : int
    request_timeout_s : float
        A request unanswered this long is given up.
    max_chunk_age_s : float
        A chunk whose observation is older than this on arrival is refused.
    """

    def __init__(self, arm: str, chunk_dt: float, num_joints: int, request_timeout_s: float,
                 max_chunk_age_s: float) -> None:
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        for name, value in (("request_timeout_s", request_timeout_s), ("max_chunk_age_s", max_chunk_age_s),
                            ("chunk_dt", chunk_dt)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RemoteInference: {name} must be finite and > 0, got {value!r}")
        self.arm = arm
        self.chunk_dt = float(chunk_dt)
        self.num_joints = int(num_joints)
        self.request_timeout_s = float(request_timeout_s)
        self.max_chunk_age_s = float(max_chunk_age_s)
        self.pending: Optional[Pending] = None
        self.last_chunk_s: Optional[float] = None  # control clock of the last accepted chunk
        self._next_id = 0

    def request(self, target_index: int, target_seq: int, observation_s: float, now_s: float) -> str:
        """Start a request; returns its frame_id (the message's stamp is ``observation_s``)."""
        self._next_id += 1
        self.pending = Pending(self._next_id, int(target_index), int(target_seq), float(observation_s), float(now_s))
        return format_request_id(self.arm, target_index, self._next_id)

    def timed_out(self, now_s: float) -> bool:
        """True (once) when the request in flight has waited longer than ``request_timeout_s``, or
        the clock went back since it was sent (a restarted simulator: it would never time out)."""
        if self.pending is None:
            return False
        elapsed = now_s - self.pending.sent_s
        if -FUTURE_TOLERANCE_S <= elapsed <= self.request_timeout_s:
            return False
        self.pending = None
        return True

    def cancel(self) -> None:
        """Forget the request in flight (e-stop, idle, clock jump): its answer will be refused."""
        self.pending = None

    def on_chunk(self, frame_id: str, observation_s: float, positions, step_s: Optional[float],
                 now_s: float) -> ChunkVerdict:
        """Judge a received chunk (``positions`` (T, J) rows; ``step_s`` their spacing, None for one row)."""
        try:
            arm, target_index, request_id = parse_request_id(frame_id)
        except ValueError as exc:
            return ChunkVerdict(False, False, f"malformed_chunk: {exc}")
        pending = self.pending
        if arm != self.arm or pending is None or request_id != pending.request_id:
            # An answer to a request given up (timeout, cut link) or of another run: never late-spliced.
            return ChunkVerdict(False, False, "unrequested_chunk")
        self.pending = None
        round_trip = now_s - pending.sent_s
        failure = failure_reason(frame_id)
        if failure is not None:
            return ChunkVerdict(False, True, f"inference_remote_failure.{failure}", round_trip_s=round_trip)
        age = now_s - observation_s
        if not math.isfinite(age) or age > self.max_chunk_age_s:
            return ChunkVerdict(False, True, "chunk_dropped.too_old", age_s=age, round_trip_s=round_trip)
        if age < -FUTURE_TOLERANCE_S:
            # The hosts' clocks disagree (no chrony/PTP) or the clock jumped back: the measured age
            # would be a lie, and the splice with it.
            return ChunkVerdict(False, True, "chunk_dropped.stamped_in_the_future", age_s=age, round_trip_s=round_trip)
        if target_index != pending.target_index:
            return ChunkVerdict(False, True, "chunk_dropped.another_target", age_s=age, round_trip_s=round_trip)
        chunk = np.asarray(positions, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != self.num_joints:
            return ChunkVerdict(False, True, f"malformed_chunk: shape {chunk.shape}", age_s=age, round_trip_s=round_trip)
        if chunk.shape[0] > 1 and (step_s is None or abs(step_s - self.chunk_dt) > 1e-6):
            return ChunkVerdict(False, True, f"malformed_chunk: step {step_s} s, expected {self.chunk_dt} s",
                                age_s=age, round_trip_s=round_trip)
        # Non-finite values are the executor's to refuse (counted there, like the local actor's).
        return ChunkVerdict(True, True, "", chunk, float(observation_s), age, round_trip)

    def accepted(self, now_s: float) -> None:
        self.last_chunk_s = float(now_s)
