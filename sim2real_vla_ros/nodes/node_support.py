"""Pieces the model-running nodes share: the bundle parameters and fault accounting.

- `BUNDLE_PARAMETERS` / `load_node_bundle`: every node that runs a model declares the same
  three parameters (``bundle_path``, ``inference_backend``, ``intra_op_threads``; part of its
  ``PARAMETERS``) and loads the bundle the same way, so a missing or broken model file stops
  the node at start-up with one ``BundleError`` naming the file (``common.run_node`` prints it).
  `DIAGNOSTICS_RATE` is the ``diagnostics_rate_hz`` parameter every node declares.
- `FaultLog`: counts faults by reason for /diagnostics and logs each reason at most once
  per period (rclpy's own throttling is keyed by call site, so one helper logging many
  reasons would hide all but the first), and `FaultLog.guard` wraps a callback so that an
  unexpected exception is counted and logged instead of killing the executor thread.
- `BackgroundWorker`: the thread a node's model inference runs in, beside the node's
  single-threaded executor (why not a MultiThreadedExecutor: see the class).
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional

from rclpy.node import Node

from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.core.vocabulary import BACKENDS


def default_bundle_path() -> str:
    """The installed reference bundle (``share/sim2real_vla_ros/models/reference``)."""
    from sim2real_vla_ros.paths import share_path

    return share_path("models", "reference")


#: The parameters of every node that runs a model (part of each such node's ``PARAMETERS``).
BUNDLE_PARAMETERS = (
    common.Param("bundle_path", "", "Model bundle folder (holds bundle.yaml); '' = the installed models/reference"),
    common.Param("inference_backend", "onnxruntime",
                 "Inference runtime: onnxruntime (CPU/GPU) or tensorrt (the bundle's prebuilt engines)",
                 lambda v: v in BACKENDS, f"one of {list(BACKENDS)}"),
    common.Param("intra_op_threads", 1, "ONNX Runtime threads per model; 0 = runtime default (all cores). 1 keeps "
                 "several nodes on a small CPU from competing for cores", lambda v: v >= 0, ">= 0"),
)

#: ``diagnostics_rate_hz``, declared by every node that publishes /diagnostics.
DIAGNOSTICS_RATE = common.Param("diagnostics_rate_hz", 1.0, "/diagnostics publication rate (Hz)",
                                lambda v: 0.0 < v <= 50.0, "in (0, 50]")


def bundle_settings(values: Mapping[str, Any]) -> dict:
    """The bundle parameters' values (from ``declare_parameters``) as ``load_node_bundle`` takes them."""
    return {"bundle_path": values["bundle_path"] or default_bundle_path(), "backend": values["inference_backend"],
            "intra_op_threads": values["intra_op_threads"]}


def declare_bundle_parameters(node: Node) -> dict:
    """Declare :data:`BUNDLE_PARAMETERS`; return their values as ``load_node_bundle`` takes them."""
    return bundle_settings(common.declare_parameters(node, BUNDLE_PARAMETERS))


def load_node_bundle(node: Node, values: Optional[Mapping[str, Any]] = None, load_fast_tokenizer: bool = False):
    """Load the node's model bundle (every model checked against its contract).

    Parameters
    ----------
    node : Node
    values : Mapping, optional
        The node's declared parameter values, :data:`BUNDLE_PARAMETERS` among them (a node
        whose ``PARAMETERS`` include them). None: declare them here.
    load_fast_tokenizer : bool

    Raises
    ------
    BundleError
        Missing/corrupt file or contract mismatch; the message names the file or tensor.
    """
    from sim2real_vla_ros.core.policy.bundle import load_bundle

    settings = declare_bundle_parameters(node) if values is None else bundle_settings(values)
    threads = settings["intra_op_threads"] or None
    bundle = load_bundle(settings["bundle_path"], backend=settings["backend"], intra_op_threads=threads,
                         inter_op_threads=1 if threads else None, load_fast_tokenizer=load_fast_tokenizer)
    node.get_logger().info(f"loaded bundle '{bundle.name}' from {bundle.folder} ({settings['backend']})")
    return bundle


class FaultLog:
    """Faults counted by reason, each reason logged at most once per ``period_s``.

    Parameters
    ----------
    node : Node
        Whose logger is used.
    period_s : float
        Minimum wall time between two log lines of the same reason.
    """

    def __init__(self, node: Node, period_s: float = 5.0) -> None:
        self._logger = node.get_logger()
        self.counters = common.Counters()
        self._period_s = float(period_s)
        self._last_logged: Dict[str, float] = {}
        self._reported: Dict[str, int] = {}

    def fault(self, reason: str, message: str) -> None:
        """Count one fault of ``reason`` and log ``message`` unless logged recently."""
        self.counters.add(reason)
        now = time.monotonic()
        if now - self._last_logged.get(reason, -1e9) >= self._period_s:
            suppressed = self.counters.get(reason) - self._reported.get(reason, 0) - 1
            extra = f" ({suppressed} more since the last report)" if suppressed > 0 else ""
            self._logger.warning(f"{reason}: {message}{extra}")
            self._last_logged[reason] = now
            self._reported[reason] = self.counters.get(reason)

    def count(self, reason: str) -> None:
        """Count an expected, non-fault event (no log line)."""
        self.counters.add(reason)

    def get(self, reason: str) -> int:
        return self.counters.get(reason)

    def snapshot(self) -> Dict[str, int]:
        return dict(self.counters.values)

    def guard(self, callback: Callable, reason: str) -> Callable:
        """Wrap a callback: an exception is counted under ``reason`` and logged, never raised."""

        @functools.wraps(callback)
        def guarded(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # a callback must never take the executor down
                self.fault(reason, f"{type(exc).__name__}: {exc}")
                return None

        return guarded


class LevelTracker:
    """Diagnostics level from cumulative counts: what grew since the previous report.

    Counters never reset (they are totals for the whole run), so the level must look at
    their growth: ERROR (2) if an error count grew, WARN (1) if a warning count grew, else OK (0).
    """

    def __init__(self) -> None:
        self._previous = (0, 0)

    def level(self, errors_total: int, warnings_total: int) -> int:
        errors = errors_total - self._previous[0]
        warnings = warnings_total - self._previous[1]
        self._previous = (errors_total, warnings_total)
        return 2 if errors > 0 else 1 if warnings > 0 else 0


class BackgroundWorker:
    """Runs ``job`` in a dedicated thread each time it is woken, one run at a time.

    Why not a callback group under rclpy's MultiThreadedExecutor: its Python wait loop spins
    without blocking, holding the GIL, whenever a ready entity's mutually exclusive group is
    busy (ros2/rclpy#1223). Measured on this project's 2-core machines, the actor's 50 Hz
    control timer then missed whole stretches of ticks (gaps of 300-1800 ms, 9-24 Hz instead
    of 50) and the planner answered services late. So every node spins a
    SingleThreadedExecutor, whose callbacks are all short, and hands long work (model
    inference, whose ONNX Runtime / TensorRT calls release the GIL) to this worker.

    ``wake()`` never blocks: wakes that arrive while a run is in progress coalesce into one
    more run. An exception from ``job`` goes to ``on_error`` and the worker keeps serving.
    """

    def __init__(self, name: str, job: Callable[[], None], on_error: Callable[[Exception], None]) -> None:
        self._job = job
        self._on_error = on_error
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.runs = 0
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for one run of the job (soon after the current one, if it is running)."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop after the run in progress; returns whether the thread ended within ``timeout_s``."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self._job()
            except Exception as exc:  # the worker outlives a failed run
                self._on_error(exc)
            self.runs += 1
