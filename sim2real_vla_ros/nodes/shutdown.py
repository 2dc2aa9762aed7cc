"""A node process's shutdown: released in order, and bounded by a watchdog that cannot be blocked.

What hung (issue 14): the validator's main thread, in ``Node.destroy_node`` at
``self.__node.destroy_when_not_in_use()``, with no other Python thread alive. That call does
not wait for other users of the handle (rclpy ``Destroyable``: while the handle is in use it
only marks it and returns; the last user destroys it later). Blocking there means blocking in
the destruction itself: for the process's last node, ``rcl_node_fini`` -> ``rmw_destroy_node``
-> rmw_fastrtps's ``decrement_context_impl_ref_count``, which joins the discovery-info listener
thread and deletes the DDS participant (Fast DDS joins its event and transport threads; it
has open deadlocks on that path when peers leave at the same moment, eProsima/Fast-DDS#6502
and #6193, and a dry run stops all its nodes at once). pybind11 keeps the GIL over that call.

Order (`release_node`): the executor is shut down first, then the node is destroyed (each
node's ``destroy_node`` stops its own threads before rclpy destroys publishers, subscriptions,
timers and guard conditions, then the node handle), and last the context is shut down. The
executor first, because a ``spin_once`` that returned leaves rclpy's wait generator suspended
(``Executor._wait_for_ready_callbacks``); when it yielded a waitable (the QoS event handler
every publisher and subscription has) it sits inside the ``with`` block that holds the
entities' handles for its wait set, and rclpy then only marks those entities and frees them,
and with them the last reference to the node handle -- so the participant deletion -- when
the garbage collector gets to the generator, possibly after ``rclpy.shutdown``.
``Executor.shutdown`` drops the generator, so everything is released here, in this order.

Why the watchdog is native: while a C call keeps the GIL, no Python thread, signal handler or
timer runs again, so a watchdog written in Python waits forever beside it. `ShutdownWatchdog`
arms POSIX timers whose expiry runs C functions in threads of their own (glibc
``SIGEV_THREAD``): ``puts`` writes the line saying what was still held, ``faulthandler``'s own
thread writes every thread's stack, and ``_exit`` ends the process with its exit code. A Python
thread acts a little earlier, for the common case where the GIL is free (it can name the
threads still alive).

This module is the only place that ends a process that way: a stopped node exits 0 within
`SHUTDOWN_DEADLINE_S` plus about a second, never needing SIGKILL; the OS reclaims sockets,
shared memory and threads.
"""
from __future__ import annotations

import ctypes
import faulthandler
import os
import sys
import threading
import time
from typing import Optional

#: Seconds from the stop request to the Python watchdog; the native one follows `NATIVE_GRACE_S` later.
#: Below the 5 s the test harness and the 10 s the dry run give a node before SIGKILL.
SHUTDOWN_DEADLINE_S = 3.5
#: Extra seconds before the native timers act (the Python watchdog, if it can run, acts first).
NATIVE_GRACE_S = 0.5
#: The start of the line a watchdog writes when it acts (the dry run and the stress script look for it).
WATCHDOG_MARK = "shutdown not finished"
_MESSAGE_BYTES = 2048
#: Armed watchdogs, kept alive until cancelled: their native timers read the message buffer and
#: may fire after the code that armed them has returned (during the interpreter's finalisation).
_ARMED: list = []


class _NativeTimers:
    """POSIX timers that call libc functions in their own threads when they expire (glibc,
    ``SIGEV_THREAD``): they need neither the GIL nor a responsive main thread."""

    _CLOCK_MONOTONIC = 1
    _SIGEV_THREAD = 2

    class _Sigval(ctypes.Union):
        _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]

    class _Sigevent(ctypes.Structure):
        pass  # fields set below: struct sigevent of Linux (64 bytes)

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        pass

    _Sigevent._fields_ = [("sigev_value", _Sigval), ("sigev_signo", ctypes.c_int),
                          ("sigev_notify", ctypes.c_int), ("sigev_notify_function", ctypes.c_void_p),
                          ("sigev_notify_attributes", ctypes.c_void_p), ("_pad", ctypes.c_int * 8)]
    _Itimerspec._fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            libc.timer_create  # glibc >= 2.34 has it in libc itself
        except AttributeError:
            libc = ctypes.CDLL("librt.so.1", use_errno=True)
        self._libc = libc
        self._timer_create = libc.timer_create
        self._timer_settime = libc.timer_settime
        self._timer_delete = libc.timer_delete
        self._timer_delete.argtypes = [ctypes.c_void_p]
        # The C functions the timers call: each takes one word-sized argument (union sigval is
        # passed in the first integer register on x86-64 and aarch64).
        self.puts = ctypes.cast(ctypes.CDLL(None).puts, ctypes.c_void_p).value
        self.fflush = ctypes.cast(ctypes.CDLL(None).fflush, ctypes.c_void_p).value
        self.exit = ctypes.cast(ctypes.CDLL(None)._exit, ctypes.c_void_p).value
        self._timers = []

    def call_after(self, seconds: float, function: int, argument: int) -> None:
        """Call ``function(argument)`` in a new native thread ``seconds`` from now."""
        event = self._Sigevent()
        event.sigev_notify = self._SIGEV_THREAD
        event.sigev_notify_function = function
        event.sigev_value.sival_ptr = argument
        timer = ctypes.c_void_p()
        if self._timer_create(self._CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)) != 0:
            raise OSError(ctypes.get_errno(), "timer_create failed")
        self._timers.append(timer)
        spec = self._Itimerspec()
        whole = int(seconds)
        spec.it_value.tv_sec, spec.it_value.tv_nsec = whole, max(1, int((seconds - whole) * 1e9))
        if self._timer_settime(timer, 0, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timer_settime failed")

    def cancel(self) -> None:
        while self._timers:
            self._timer_delete(self._timers.pop())


class ShutdownWatchdog:
    """Ends the process with ``exit_code`` if a shutdown is not over ``deadline_s`` after `arm`.

    At the deadline a Python thread writes one line saying what was still held (the current
    `step` and the threads still alive), every thread's stack (faulthandler) and calls
    ``os._exit(exit_code)``. If that thread cannot run (a C call holding the GIL), native
    timers do the same ``NATIVE_GRACE_S`` later without the GIL: the line as last described by
    `step`, the stacks, ``_exit(exit_code)``. A process that ends first cancels nothing: its
    timers end with it. `cancel` is for in-process users that go on after a clean shutdown.

    Parameters
    ----------
    name : str
        Who is shutting down (the node's name), for the line.
    deadline_s : float
        Seconds from `arm` to the Python watchdog.
    exit_code : int
        The process's exit code in either case.
    """

    def __init__(self, name: str, deadline_s: float = SHUTDOWN_DEADLINE_S, exit_code: int = 0) -> None:
        self.name = name
        self.deadline_s = float(deadline_s)
        self.exit_code = int(exit_code)
        self._what = "starting the shutdown"
        self._armed_at: Optional[float] = None
        self._cancelled = threading.Event()
        self._message = ctypes.create_string_buffer(_MESSAGE_BYTES)
        self._native: Optional[_NativeTimers] = None
        self._thread: Optional[threading.Thread] = None

    # -------------------------------------------------------------- public
    def arm(self) -> "ShutdownWatchdog":
        """Start the deadline (once)."""
        if self._armed_at is not None:
            return self
        self._armed_at = time.monotonic()
        self._write_message()
        _ARMED.append(self)
        native_at = self.deadline_s + NATIVE_GRACE_S
        try:
            self._native = _NativeTimers()
            self._native.call_after(native_at, self._native.puts, ctypes.addressof(self._message))
            faulthandler.dump_traceback_later(native_at + 0.05, repeat=False, file=sys.__stderr__)
            self._native.call_after(native_at + 0.3, self._native.fflush, 0)  # fflush(NULL): all C streams
            self._native.call_after(native_at + 0.5, self._native.exit, self.exit_code)
        except (OSError, AttributeError) as exc:  # no glibc POSIX timers: faulthandler is the backstop (exit 1)
            self._native = None
            faulthandler.dump_traceback_later(native_at + 0.5, repeat=False, file=sys.__stderr__, exit=True)
            print(f"[WARN] [{self.name}]: shutdown watchdog without native timers ({exc})", file=sys.stderr,
                  flush=True)
        self._thread = threading.Thread(target=self._watch, name="shutdown_watchdog", daemon=True)
        self._thread.start()
        return self

    def step(self, what: str) -> None:
        """Say what the shutdown is releasing now (the line written if the deadline passes)."""
        self._what = what
        self._write_message()

    def cancel(self) -> None:
        """Stand down: the shutdown is over and the process goes on (in-process users only)."""
        self._cancelled.set()
        if self._native is not None:
            self._native.cancel()
        faulthandler.cancel_dump_traceback_later()
        if self in _ARMED:
            _ARMED.remove(self)

    # -------------------------------------------------------------- firing
    def line(self, what: str, after_s: float) -> str:
        """The one line written when the deadline passes."""
        return (f"[WARN] [{self.name}]: {WATCHDOG_MARK} {after_s:.1f} s after the stop request; still held: "
                f"{what}; exiting with {self.exit_code} (the OS reclaims the rest; thread stacks follow)")

    def _write_message(self) -> None:
        text = self.line(self._what, self.deadline_s + NATIVE_GRACE_S).replace("\n", " ")
        data = text.encode("utf-8", "replace")[:_MESSAGE_BYTES - 1]
        ctypes.memmove(self._message, data + b"\0", len(data) + 1)

    def _watch(self) -> None:
        if self._cancelled.wait(self.deadline_s):
            return
        others = [t.name for t in threading.enumerate()
                  if t is not threading.current_thread() and t is not threading.main_thread()]
        what = self._what + (f"; other threads alive: {', '.join(others)}" if others else "")
        try:
            print(self.line(what, self.deadline_s), file=sys.stderr, flush=True)
            faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
            sys.stdout.flush()
        finally:
            os._exit(self.exit_code)


def describe_node(node) -> str:
    """What destroying ``node`` releases: its entities and, for the process's last node, the participant."""
    counts = [(sum(1 for _ in getattr(node, kind)), kind.replace("guards", "guard conditions"))
              for kind in ("publishers", "subscriptions", "timers", "services", "clients", "guards")]
    entities = ", ".join(f"{n} {label if n > 1 else label[:-1]}" for n, label in counts if n)
    return (f"destroy_node of '{node.get_name()}' ({type(node).__name__}: its threads, {entities or 'no entities'}, "
            "then the node handle and with it the process's DDS participant)")


def release_node(node, executor, watchdog: ShutdownWatchdog, executor_timeout_s: float = 1.0) -> None:
    """Shut ``executor`` down, then destroy ``node``, saying each step to ``watchdog``.

    The executor first: it drops rclpy's suspended wait generator and the handles it holds
    (see the module docstring), so every entity of the node is really destroyed by
    ``destroy_node`` and not left to the garbage collector.
    """
    if executor is not None:
        watchdog.step(f"the executor of '{node.get_name()}' ({type(executor).__name__}.shutdown)")
        executor.shutdown(timeout_sec=executor_timeout_s)
    watchdog.step(describe_node(node))
    node.destroy_node()


__all__ = ["WATCHDOG_MARK", "SHUTDOWN_DEADLINE_S", "NATIVE_GRACE_S", "ShutdownWatchdog", "release_node", "describe_node"]
