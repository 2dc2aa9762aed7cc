"""Integration-test harness: real nodes in subprocesses, a probe node in the test process.

A small stand-in for launch_testing (not installable here): start executables the way a
launch file would (``python -m module --ros-args ...``), collect messages on a probe node
spun in a background thread, and wait for conditions with deadlines instead of sleeps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock as ClockMsg

from sim2real_vla_ros.graph import ros_param_value
from sim2real_vla_ros.tools.dry_run import kill_after_stack_dump

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ros_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for child nodes: loopback-only DDS, this run's domain, headless MuJoCo."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", os.environ["ROS_DOMAIN_ID"])
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def param_arg(name: str, value: Any) -> str:
    """One ``-p name:=value`` value, rendered exactly as the dry run and launch graph do."""
    return f"{name}:={ros_param_value(value)}"


class NodeProcess:
    """A node started as a child process; its output is kept for assertions and failure messages."""

    def __init__(self, module: str, name: str, params: Optional[Dict[str, Any]] = None,
                 params_file: Optional[str] = None, remaps: Sequence[Tuple[str, str]] = (),
                 env: Optional[Dict[str, str]] = None, prefix: Sequence[str] = ()):
        # ``prefix``: e.g. ``ip netns exec <ns>`` (another "host", test_two_hosts.py); it execs the node.
        cmd = [*prefix, sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        if params_file:
            cmd += ["--params-file", params_file]
        for key, value in (params or {}).items():
            cmd += ["-p", param_arg(key, value)]
        for src, dst in remaps:
            cmd += ["-r", f"{src}:={dst}"]
        self.name = name
        self.cmd = cmd
        self._lines: List[str] = []
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=ros_env(env), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=2.0)
        return code

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        killed = False
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = kill_after_stack_dump(self.proc)
                self.proc.wait(timeout=5.0)
                self._reader.join(timeout=2.0)
                print(f"{self.name} did not stop within {timeout} s on SIGINT; killed. Output:\n{self.output[-6000:]}")
        self._reader.join(timeout=2.0)
        record_shutdown(self.name, self.proc.returncode, killed, self.output)
        return self.proc.returncode


SHUTDOWN_LOG_ENV = "SIM2REAL_SHUTDOWN_LOG"
"""Environment variable naming a JSON-lines file where `record_shutdown` notes every node that
needed SIGKILL or the shutdown watchdog (benchmarks/stress_shutdown.py reads it): a passing test
does not show its captured output, so a stop that needed either would go unseen."""


def record_shutdown(name: str, code: Optional[int], killed: bool, output: str) -> None:
    """Append a record for a node stopped by SIGKILL or by its shutdown watchdog (if asked to)."""
    path = os.environ.get(SHUTDOWN_LOG_ENV)
    watchdog = [line for line in output.splitlines() if "shutdown not finished" in line]
    if not path or not (killed or watchdog):
        return
    dump = output[output.find("most recent call first") - 40:] if "most recent call first" in output else ""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps({"node": name, "exit_code": code, "killed": killed, "watchdog": watchdog,
                                 "stack_dump": dump[-4000:]}) + "\n")


class Probe:
    """A node in the test process that records messages per topic, spun in a background thread."""

    def __init__(self, name: str = "test_probe", use_sim_time: bool = True):
        self.node = Node(name, parameter_overrides=[
            Parameter("use_sim_time", Parameter.Type.BOOL, use_sim_time)])
        self.messages: Dict[str, List[Any]] = defaultdict(list)
        self.arrival: Dict[str, List[float]] = defaultdict(list)
        self._lock = threading.Lock()
        # Single-threaded, like the nodes: rclpy's MultiThreadedExecutor busy-waits holding the
        # GIL (see node_support.BackgroundWorker) and would starve the test thread.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def subscribe(self, msg_type, topic: str, qos) -> None:
        def record(msg, topic=topic):
            with self._lock:
                self.messages[topic].append(msg)
                self.arrival[topic].append(time.monotonic())
        self.node.create_subscription(msg_type, topic, record, qos)

    def received(self, topic: str) -> List[Any]:
        with self._lock:
            return list(self.messages[topic])

    def clear(self, topic: str) -> None:
        with self._lock:
            self.messages[topic].clear()
            self.arrival[topic].clear()

    def call(self, srv_type, name: str, request, timeout: float = 10.0, resend_after: float = 3.0,
             processes: Sequence["NodeProcess"] = ()):
        """Call a service and return its response; resend the request if no reply came.

        rmw_fastrtps's server waits only 100 ms for the client's response reader to be matched
        before it drops the response (rclpy warns "failed to send response (timeout)"); on a
        loaded machine discovery can take longer even though wait_for_service() already saw the
        server. So an unanswered request is sent again every ``resend_after`` seconds until
        ``timeout``: only for requests that are safe to repeat (every service the tests call is).
        """
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available within {timeout} s")
            deadline = time.monotonic() + timeout
            futures = []
            while True:
                futures.append(client.call_async(request))
                resend_at = min(time.monotonic() + resend_after, deadline)
                replied = wait_for(lambda: next((f for f in futures if f.done()), None)
                                   or time.monotonic() >= resend_at, timeout,
                                   f"reply from {name}", processes=processes)
                if replied is not True:
                    return replied.result()
                if time.monotonic() >= deadline:
                    details = "".join(f"\n--- {p.name} output ---\n{p.output[-3000:]}" for p in processes)
                    raise AssertionError(f"timed out after {timeout} s waiting for a reply from {name} "
                                         f"({len(futures)} requests sent){details}")
        finally:
            self.node.destroy_client(client)

    def shutdown(self) -> None:
        # The spin thread is joined first so the node (and with the last node, the DDS
        # participant) is destroyed here, never later on the spin thread: rclpy holds the GIL
        # through rcl_node_fini, and Fast DDS 3.2 can wait there forever for a discovery callback
        # that is itself blocked (seen once: the test process froze while a peer was exiting).
        # Callers stop their node processes before this for the same reason.
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


class WallClock:
    """/clock carrying the system time, published from the probe every ``period_s``.

    Lets nodes run with ``use_sim_time`` true (which test hooks such as the validator's
    ``scripted_probabilities`` require) while the probe, on the system clock, keeps stamping its
    messages in the same time base.
    """

    def __init__(self, probe: "Probe", period_s: float = 0.01):
        self._node = probe.node
        self._system = Clock(clock_type=ClockType.SYSTEM_TIME)
        self._publisher = self._node.create_publisher(ClockMsg, "/clock", 10)
        self._timer = self._node.create_timer(period_s, self._publish, clock=self._system)

    def _publish(self) -> None:
        self._publisher.publish(ClockMsg(clock=self._system.now().to_msg()))

    def close(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._publisher)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.02,
             processes: Sequence[NodeProcess] = ()) -> Any:
    """Return condition()'s first truthy value; raise AssertionError naming ``what`` at the deadline.

    Also fails early (with the child's output) if one of ``processes`` exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        for process in processes:
            if process.proc.poll() is not None:
                raise AssertionError(f"{process.name} exited ({process.proc.returncode}) while waiting for "
                                     f"{what}:\n{process.output[-3000:]}")
        if time.monotonic() > deadline:
            details = "".join(f"\n--- {p.name} output ---\n{p.output[-3000:]}" for p in processes)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{details}")
        event.wait(poll)  # a bounded poll interval of a deadline loop, not a fixed sleep
