"""Pair the newest frames of several cameras by stamp, and measure camera rates.

`FramePairer` is a small substitute for ``message_filters.ApproximateTimeSynchronizer``:
message_filters is not installable from PyPI (it ships with a ROS distribution only), and
the camera/mask node needs different semantics anyway. It keeps only the newest frame per
camera (no backlog: a slow consumer always works on the present, never on a queue of old
frames), returns a set only when every camera has a frame it has not handed out before,
and drops and counts whatever cannot form a consistent set:

* a frame whose stamp is not newer than that camera's previous one (out of order or
  duplicate),
* a frame so much older than another camera's newest frame that it can never pair with it
  (skew; the camera it came from is reported as lagging),
* a frame older than ``max_age_s`` when the consumer asks (stale).

All times are seconds on one clock (ROS time or sim time), always passed in by the caller;
nothing here reads a clock, so it runs the same under ``use_sim_time`` and in unit tests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# Why the last call to FramePairer.newest_set returned what it did (see FramePairer.last_reason).
REASON_OK = "ok"
REASON_INCOMPLETE = "incomplete"  # some camera has no unconsumed frame yet
REASON_SKEW = "skew"  # lagging frames dropped this call
REASON_STALE = "stale"  # frames older than max_age dropped this call

# Keys of the drop counters in FramePairer.stats()["dropped"].
DROP_SKEW = "skew"
DROP_STALE = "stale"
DROP_OUT_OF_ORDER = "out_of_order"
DROP_DUPLICATE = "duplicate"
DROP_INVALID_STAMP = "invalid_stamp"
DROP_REASONS = (DROP_SKEW, DROP_STALE, DROP_OUT_OF_ORDER, DROP_DUPLICATE, DROP_INVALID_STAMP)


@dataclass(frozen=True)
class StampedFrame:
    """One camera frame with the stamp of its capture.

    Attributes
    ----------
    camera : str
        Camera name, one of the pairer's ``camera_names``.
    stamp_s : float
        Capture stamp in seconds (the image header stamp).
    frame : Any
        The payload (an image array, a message); the pairer never looks inside.
    """

    camera: str
    stamp_s: float
    frame: Any


@dataclass(frozen=True)
class FrameSet:
    """A mutually consistent set of frames, one per camera, handed out once.

    Attributes
    ----------
    set_id : int
        Sequence number of the set, from 1, counting emitted sets only.
    frames : Mapping[str, StampedFrame]
        Camera name -> frame, in the pairer's camera order.
    """

    set_id: int
    frames: Mapping[str, StampedFrame]

    @property
    def stamps_s(self) -> dict[str, float]:
        """Camera name -> capture stamp (s)."""
        return {name: item.stamp_s for name, item in self.frames.items()}

    @property
    def oldest_stamp_s(self) -> float:
        """Stamp of the oldest frame; the conservative stamp for age checks downstream."""
        return min(item.stamp_s for item in self.frames.values())

    @property
    def newest_stamp_s(self) -> float:
        """Stamp of the newest frame in the set."""
        return max(item.stamp_s for item in self.frames.values())

    @property
    def skew_s(self) -> float:
        """Largest stamp difference within the set (s)."""
        return self.newest_stamp_s - self.oldest_stamp_s

    def frame(self, camera: str) -> Any:
        """Return the payload of ``camera``'s frame."""
        return self.frames[camera].frame


class FramePairer:
    """Newest-only approximate-time pairing of several cameras.

    Parameters
    ----------
    camera_names : Sequence[str]
        Cameras that make up a set, e.g. ``("cam_high", "cam_left_wrist", "cam_right_wrist")``.
    max_skew_s : float
        Largest allowed difference between the stamps of a set (s), >= 0.
    max_age_s : float
        A frame older than this (``now_s - stamp_s``) when a set is requested is dropped as stale.

    Raises
    ------
    ValueError
        Empty or duplicate camera names, negative skew, non-positive age.
    """

    def __init__(self, camera_names: Sequence[str], max_skew_s: float, max_age_s: float) -> None:
        names = tuple(camera_names)
        if not names:
            raise ValueError("FramePairer: camera_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"FramePairer: duplicate camera names in {names}")
        if not (math.isfinite(max_skew_s) and max_skew_s >= 0.0):
            raise ValueError(f"FramePairer: max_skew_s must be finite and >= 0, got {max_skew_s}")
        if not (math.isfinite(max_age_s) and max_age_s > 0.0):
            raise ValueError(f"FramePairer: max_age_s must be finite and > 0, got {max_age_s}")
        self.camera_names = names
        self.max_skew_s = float(max_skew_s)
        self.max_age_s = float(max_age_s)
        # The newest frame not yet handed out, per camera (None = nothing pending).
        self._pending: dict[str, StampedFrame | None] = {name: None for name in names}
        # Newest stamp ever accepted per camera, for the out-of-order check.
        self._last_stamp: dict[str, float | None] = {name: None for name in names}
        self._received = {name: 0 for name in names}
        self._overwritten = {name: 0 for name in names}
        self._dropped = {reason: 0 for reason in DROP_REASONS}
        self._dropped_by_camera = {name: {reason: 0 for reason in DROP_REASONS} for name in names}
        self._sets_emitted = 0
        self.last_reason = REASON_INCOMPLETE
        self.last_skew_s: float | None = None
        self.lagging_cameras: tuple[str, ...] = ()
        self.missing_cameras: tuple[str, ...] = names

    def add(self, camera: str, stamp_s: float, frame: Any) -> bool:
        """Offer a frame; it replaces that camera's pending frame if it is newer.

        Parameters
        ----------
        camera : str
            One of ``camera_names``.
        stamp_s : float
            Capture stamp (s).
        frame : Any
            Payload, returned untouched in the set.

        Returns
        -------
        bool
            True if kept; False if dropped (non-finite stamp, duplicate or out-of-order stamp),
            counted in ``stats()["dropped"]``.

        Raises
        ------
        ValueError
            ``camera`` is not one of ``camera_names`` (a wiring error, not a data error).
        """
        if camera not in self._pending:
            raise ValueError(f"FramePairer: unknown camera {camera!r}; expected one of {self.camera_names}")
        self._received[camera] += 1
        if not math.isfinite(stamp_s):
            self._count_drop(camera, DROP_INVALID_STAMP)
            return False
        last = self._last_stamp[camera]
        if last is not None and stamp_s == last:
            self._count_drop(camera, DROP_DUPLICATE)
            return False
        if last is not None and stamp_s < last:
            self._count_drop(camera, DROP_OUT_OF_ORDER)
            return False
        if self._pending[camera] is not None:
            # Newest-only: the consumer never saw this one and never will (no backlog).
            self._overwritten[camera] += 1
        self._pending[camera] = StampedFrame(camera, float(stamp_s), frame)
        self._last_stamp[camera] = float(stamp_s)
        return True

    def newest_set(self, now_s: float) -> FrameSet | None:
        """Hand out the newest consistent set once, or None with ``last_reason`` saying why.

        Drops (and counts) pending frames older than ``max_age_s`` and frames that lag the
        newest pending frame by more than ``max_skew_s`` (no future frame of the leading
        camera can be older, so they could never pair).

        Parameters
        ----------
        now_s : float
            Current time on the stamps' clock (s).

        Returns
        -------
        FrameSet or None
            A set whose frames are all unconsumed, mutually within ``max_skew_s`` and younger
            than ``max_age_s``; its frames are then marked consumed.
        """
        dropped_stale = self._drop_stale(now_s)
        self.missing_cameras = tuple(name for name, item in self._pending.items() if item is None)
        if self.missing_cameras:
            self.last_reason = REASON_STALE if dropped_stale else REASON_INCOMPLETE
            return None
        pending = [item for item in self._pending.values() if item is not None]
        newest = max(item.stamp_s for item in pending)
        oldest = min(item.stamp_s for item in pending)
        self.last_skew_s = newest - oldest
        if self.last_skew_s > self.max_skew_s:
            self.lagging_cameras = self._drop_lagging(newest)
            self.missing_cameras = self.lagging_cameras
            self.last_reason = REASON_SKEW
            return None
        self._sets_emitted += 1
        frame_set = FrameSet(self._sets_emitted, {item.camera: item for item in pending})
        self._pending = {name: None for name in self.camera_names}
        self.lagging_cameras = ()
        self.last_reason = REASON_OK
        return frame_set

    def reset(self) -> None:
        """Forget pending frames and stamp history (e.g. after a sim-time jump back); keep counters."""
        self._pending = {name: None for name in self.camera_names}
        self._last_stamp = {name: None for name in self.camera_names}
        self.missing_cameras = self.camera_names
        self.last_reason = REASON_INCOMPLETE

    def stats(self) -> dict[str, Any]:
        """Diagnostics snapshot (plain, JSON-serialisable values).

        Returns
        -------
        dict
            ``received`` and ``overwritten`` (camera -> count), ``sets_emitted``, ``dropped``
            (reason -> count), ``dropped_by_camera`` (camera -> reason -> count),
            ``last_skew_s`` (None before the first complete candidate), ``last_reason``,
            ``lagging_cameras`` and ``missing_cameras`` (lists).
        """
        return {
            "received": dict(self._received),
            "overwritten": dict(self._overwritten),
            "sets_emitted": self._sets_emitted,
            "dropped": dict(self._dropped),
            "dropped_by_camera": {name: dict(counts) for name, counts in self._dropped_by_camera.items()},
            "last_skew_s": self.last_skew_s,
            "last_reason": self.last_reason,
            "lagging_cameras": list(self.lagging_cameras),
            "missing_cameras": list(self.missing_cameras),
        }

    def _drop_stale(self, now_s: float) -> bool:
        dropped = False
        for name, item in self._pending.items():
            if item is not None and now_s - item.stamp_s > self.max_age_s:
                self._pending[name] = None
                self._count_drop(name, DROP_STALE)
                dropped = True
        return dropped

    def _drop_lagging(self, newest_stamp_s: float) -> tuple[str, ...]:
        lagging = []
        for name, item in self._pending.items():
            if item is not None and newest_stamp_s - item.stamp_s > self.max_skew_s:
                self._pending[name] = None
                self._count_drop(name, DROP_SKEW)
                lagging.append(name)
        return tuple(lagging)

    def _count_drop(self, camera: str, reason: str) -> None:
        self._dropped[reason] += 1
        self._dropped_by_camera[camera][reason] += 1


class RateMeter:
    """Message rate over a sliding window of stamps, for camera-rate diagnostics.

    Parameters
    ----------
    window_s : float
        Length of the window (s); it should span several periods of the expected rate.
    max_samples : int
        Upper bound on stored stamps, so a flood of messages cannot grow memory.

    Notes
    -----
    The rate is ``(n - 1) / (last - first)`` over the ``n`` stamps inside
    ``[now_s - window_s, now_s]``: the mean inter-arrival rate, without the +-1 frame
    quantisation of counting frames per window. Fewer than two stamps in the window gives
    0.0, so a silent source reads 0 Hz within one window.
    """

    def __init__(self, window_s: float = 2.0, max_samples: int = 1000) -> None:
        if not (math.isfinite(window_s) and window_s > 0.0):
            raise ValueError(f"RateMeter: window_s must be finite and > 0, got {window_s}")
        if max_samples < 2:
            raise ValueError(f"RateMeter: max_samples must be >= 2, got {max_samples}")
        self.window_s = float(window_s)
        self._stamps: deque[float] = deque(maxlen=int(max_samples))
        self.rejected = 0  # non-finite or not-newer stamps
        self._newest_s: float | None = None  # kept apart: pruning empties the window

    def add(self, stamp_s: float) -> bool:
        """Record one message stamp; non-finite or not-newer stamps are rejected and counted."""
        if not math.isfinite(stamp_s) or (self._newest_s is not None and stamp_s <= self._newest_s):
            self.rejected += 1
            return False
        self._stamps.append(float(stamp_s))
        self._newest_s = float(stamp_s)
        return True

    def rate_hz(self, now_s: float) -> float:
        """Mean rate (Hz) of the stamps within the window ending at ``now_s``."""
        self._prune(now_s)
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span

    def max_gap_s(self, now_s: float) -> float | None:
        """Largest interval between consecutive stamps in the window, None with fewer than two."""
        self._prune(now_s)
        if len(self._stamps) < 2:
            return None
        stamps = list(self._stamps)
        return max(later - earlier for earlier, later in zip(stamps, stamps[1:]))

    def age_s(self, now_s: float) -> float | None:
        """Time since the newest stamp (s), None if nothing was ever recorded."""
        return None if self._newest_s is None else now_s - self._newest_s

    def _prune(self, now_s: float) -> None:
        while self._stamps and self._stamps[0] < now_s - self.window_s:
            self._stamps.popleft()
