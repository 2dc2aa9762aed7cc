"""nodes.shutdown and common.run_node's shutdown: ordered, and bounded by a watchdog that ends
the process with its exit code even when a C call holds the GIL (issue 14).

The watchdog ends its process, so every case that lets it fire runs in a child process.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from ros_harness import REPO, NodeProcess, wait_for
from sim2real_vla_ros.nodes import shutdown
from sim2real_vla_ros.nodes.shutdown import NATIVE_GRACE_S, SHUTDOWN_DEADLINE_S

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
PROBE_MODULE = "shutdown_probe_node"
STARTUP_TIMEOUT_S = 60.0
#: The longest a blocked shutdown may take: the native timers act within a second after the deadline.
BOUND_S = SHUTDOWN_DEADLINE_S + NATIVE_GRACE_S + 1.0
#: What the harness and the dry run wait before SIGKILL is 5 s and 10 s: the bound must be below both.
HARNESS_STOP_S = 5.0


# ----------------------------------------------------------------------------- order


class _Recorder:
    def __init__(self):
        self.calls = []


class _FakeExecutor:
    def __init__(self, log):
        self.log = log

    def shutdown(self, timeout_sec=None):
        self.log.calls.append("executor.shutdown")
        return True


class _FakeNode:
    publishers = subscriptions = timers = services = clients = guards = ()

    def __init__(self, log):
        self.log = log

    def get_name(self):
        return "fake"

    def destroy_node(self):
        self.log.calls.append("node.destroy_node")


class _FakeWatchdog:
    def __init__(self, log):
        self.log = log

    def step(self, what):
        self.log.calls.append(f"step: {what}")


def test_the_executor_is_shut_down_before_the_node_is_destroyed_and_each_step_is_said():
    log = _Recorder()
    shutdown.release_node(_FakeNode(log), _FakeExecutor(log), _FakeWatchdog(log))
    assert [call.split(":")[0] for call in log.calls] == ["step", "executor.shutdown", "step", "node.destroy_node"]
    assert "executor of 'fake'" in log.calls[0] and "destroy_node of 'fake'" in log.calls[2]
    assert "DDS participant" in log.calls[2]


def test_the_line_names_what_is_held_and_the_exit_code():
    watchdog = shutdown.ShutdownWatchdog("validator", deadline_s=2.0, exit_code=0)
    line = watchdog.line("destroy_node of 'validator'", 2.0)
    assert line.startswith("[WARN] [validator]: shutdown not finished 2.0 s after the stop request")
    assert "still held: destroy_node of 'validator'" in line and "exiting with 0" in line and "\n" not in line


# ----------------------------------------------------------------------------- the watchdog, in child processes

_BLOCKERS = {
    # A C call that keeps the GIL, as rclpy's destroy_when_not_in_use did: no Python thread can run.
    "gil": "import ctypes; ctypes.PyDLL(None).sleep(30)",
    # A plain Python wait (the GIL is free): the Python watchdog thread acts, and names the threads.
    "python": "import threading; threading.Thread(target=threading.Event().wait, name='holder', daemon=True)"
              ".start(); threading.Event().wait(30)",
}


def _run_blocked(blocker: str, exit_code: int, deadline_s: float = 0.5, cancel: bool = False):
    script = "\n".join([
        "from sim2real_vla_ros.nodes.shutdown import ShutdownWatchdog",
        f"watchdog = ShutdownWatchdog('blocked_test', deadline_s={deadline_s}, exit_code={exit_code}).arm()",
        "watchdog.step('the fake participant of blocked_test')",
        "watchdog.cancel()" if cancel else "",
        blocker,
        "print('still running', flush=True)",
        "raise SystemExit(7)",
    ])
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


@pytest.mark.parametrize("blocker", sorted(_BLOCKERS))
def test_a_blocked_shutdown_ends_with_its_exit_code_one_line_and_the_stacks(blocker):
    result, elapsed = _run_blocked(_BLOCKERS[blocker], exit_code=0)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert elapsed < 0.5 + NATIVE_GRACE_S + 5.0, f"took {elapsed:.1f} s"  # generous: a loaded machine
    lines = [line for line in output.splitlines() if "shutdown not finished" in line]
    assert len(lines) == 1 and "still held: the fake participant of blocked_test" in lines[0], output
    assert "still running" not in output
    assert "most recent call first" in output, "no stack dump"
    if blocker == "python":
        assert "other threads alive: holder" in lines[0]


def test_the_exit_code_is_the_one_given():
    result, _ = _run_blocked(_BLOCKERS["gil"], exit_code=3)
    assert result.returncode == 3, result.stdout + result.stderr


def test_a_cancelled_watchdog_stands_down():
    result, _ = _run_blocked("import threading; threading.Event().wait(1.5)", exit_code=0, deadline_s=0.2,
                             cancel=True)
    assert result.returncode == 7 and "still running" in result.stdout, result.stdout + result.stderr
    assert "shutdown not finished" not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- run_node, real nodes


def _probe(name: str, block: str = "") -> NodeProcess:
    params = {"block_in_destroy": block} if block else {}
    return NodeProcess(PROBE_MODULE, name, params, env={"PYTHONPATH": os.pathsep.join([TEST_DIR, REPO])})


@pytest.mark.integration
def test_a_node_stops_on_sigint_with_exit_0_every_time():
    """Stopped while its timer, subscription and worker are busy: a clean exit 0 each time,
    well before the watchdog's deadline (it never has to act)."""
    for attempt in range(5):
        process = _probe(f"shutdown_probe_{attempt}")
        try:
            wait_for(lambda: "hears itself" in process.output, STARTUP_TIMEOUT_S, "the probe's own messages",
                     processes=[process])
        finally:
            os.killpg(process.proc.pid, signal.SIGINT)
            code = process.wait_exit(timeout=HARNESS_STOP_S) if process.proc.poll() is None else process.proc.returncode
        assert code == 0, f"attempt {attempt}: exit {code}\n{process.output[-3000:]}"
        assert "shutdown not finished" not in process.output, process.output[-3000:]
        assert "Traceback" not in process.output


@pytest.mark.integration
@pytest.mark.parametrize("block", ["gil", "python"])
def test_a_node_whose_destruction_blocks_still_exits_0_within_the_deadline(block):
    process = _probe(f"shutdown_probe_blocked_{block}", block)
    try:
        wait_for(lambda: "shutdown probe ready" in process.output, STARTUP_TIMEOUT_S, "the probe to start",
                 processes=[process])
        os.killpg(process.proc.pid, signal.SIGINT)
        started = time.monotonic()
        wait_for(lambda: process.proc.poll() is not None, BOUND_S + 3.0, "the blocked probe to exit")
        elapsed = time.monotonic() - started
    finally:
        process.stop(timeout=1.0)
    assert process.proc.returncode == 0, process.output[-3000:]
    assert elapsed < HARNESS_STOP_S, f"{elapsed:.1f} s: the harness would have killed it"
    output = process.output
    lines = [line for line in output.splitlines() if "shutdown not finished" in line]
    assert len(lines) == 1, output[-3000:]
    assert f"still held: destroy_node of 'shutdown_probe_blocked_{block}' (ShutdownProbeNode" in lines[0]
    assert "in destroy_node" in output, "the stack dump shows where it blocked"


def test_the_watchdog_also_bounds_the_interpreter_s_finalisation():
    """Armed in a function that has returned (as run_node does), it still acts when the process
    then blocks in a C call at exit (atexit), and its line is intact."""
    script = "\n".join([
        "import atexit, ctypes, gc",
        "from sim2real_vla_ros.nodes.shutdown import ShutdownWatchdog",
        "def arm():",
        "    ShutdownWatchdog('finalising_test', deadline_s=0.5, exit_code=0).arm().step('the finalisation')",
        "arm()",
        "gc.collect()",
        "atexit.register(lambda: ctypes.PyDLL(None).sleep(30))",
        "raise SystemExit(7)",
    ])
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "still held: the finalisation" in output, output
