"""`make dry-run`: the MuJoCo simulator and the whole VLA graph for one episode of a task.

What it does
------------
1. Starts every process of the graph -- ``graph.simulator_nodes('mujoco', ...)`` and
   ``graph.vla_nodes(...)``, the same definition the launch files use -- as child processes
   (``graph.to_command``), each with its log in ``<run>/logs/<node>.log``, DDS on loopback
   (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and a ROS domain of the run's own.
2. Waits until the graph is connected: every topic of ``graph.expected_connections()`` has
   its publishers, every service of ``graph.expected_services()`` exists, and masked images
   flow. An expected *subscriber* that never appears is reported (``graph.missing``), not fatal.
3. Starts the task: publishes the task's instruction on ``/vla/instruction`` (latched) and
   waits for the planner's ``/vla/plan_state`` to say ``running``.
4. Runs one episode until the task succeeds / fails / aborts (``/vla/plan_state`` or
   ``/vla/task_state``), ``--duration-s`` of sim time pass, or the active arms have executed
   ``--max-steps`` policy steps (one step = one decoded action chunk; default: the task's
   step limit from tasks.yaml).
5. Stops every process (SIGINT, SIGKILL after a timeout) and writes the run folder:
   ``report.json`` (``core.run_report``), ``overlay.webm`` (VP8; or PNG frames), ``run.mcap``.

Exit status (``run_report.verdict``, printed with every reason and stored in report.json's
``verdict`` and ``checks.failed``): 0 for a completed run that shows the normal path working
(affordances published, chunks decoded, commands sent; the task itself need not succeed: the
reference models are not task-competent); 3 when any command sent was outside the position
limits, not finite, or faster / more accelerated than the limits allow (``run_report.rate_check``);
2 for a completed run where the normal path's evidence is missing; 1 for an infrastructure
failure (a node died or never connected, the task never started, sim time stalled, a bad
argument, or the run's own checks could not be computed). report.json is written in every case.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from sim2real_vla_ros.core.task.evaluation import planner_end_reason
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros import graph
from sim2real_vla_ros.tools import run_report
from sim2real_vla_ros.core.vocabulary import CAMERAS
from sim2real_vla_ros.nodes.shutdown import WATCHDOG_MARK, ShutdownWatchdog, release_node
from sim2real_vla_ros.tools.run_report import JointLimitTable, NodeRun, RunData

RECORDER_NODE = "dry_run_recorder"
# Measured on this 2-core machine with the whole graph running: at a real-time factor of 1.0 the
# simulator keeps up but the actors reach about 47 of their 50 Hz in sim time (p99 tick jitter
# 30 ms); at 0.5 they hold 50.0 Hz (p99 jitter 10 ms), and an episode of the default task takes
# about 50 s of wall time. ``--real-time-factor 1`` is fine on a machine with more cores.
DEFAULT_DURATION_S = 45.0
DEFAULT_REAL_TIME_FACTOR = 0.5
IMAGE_RECORD_RATE_HZ = 2.0
STOP_TIMEOUT_S = 10.0
STACK_DUMP_WAIT_S = 1.0  # for a node that did not stop to write its threads' stacks to its log
SUBSCRIBER_GRACE_S = 10.0
STALL_TIMEOUT_S = 30.0
POLL_S = 0.1
ROBOTS = ("sim", "emulated-can")
"""--robot: who executes the commands (the simulator, or piper_driver on emulated CAN arms)."""


class DryRunError(RuntimeError):
    """Infrastructure failure: the message says what failed (and where its log is)."""


# ----------------------------------------------------------------------------- options


@dataclass
class Options:
    task: str
    seed: Optional[int] = None
    duration_s: float = DEFAULT_DURATION_S
    max_steps: Optional[int] = None
    out: Optional[str] = None
    real_time_factor: float = DEFAULT_REAL_TIME_FACTOR
    bundle: str = ""
    params_file: str = ""
    domain_id: Optional[int] = None
    output_mode: str = "trajectory"
    arms: Sequence[str] = graph.ARMS
    connect_timeout_s: float = 120.0
    start_timeout_s: float = 60.0
    image_record_rate_hz: float = IMAGE_RECORD_RATE_HZ
    quiet: bool = False
    extra_sim_parameters: Dict[str, object] = field(default_factory=dict)
    namespace: str = ""
    # Per-node parameter overrides ({node name: {parameter: value}}), applied after config/vla.yaml:
    # how a run passes test hooks (e.g. the validator's scripted_probabilities) explicitly.
    node_parameters: Dict[str, Dict[str, object]] = field(default_factory=dict)
    robot: str = "sim"
    # Each actor as a control node (robot side) and an inference node (the model) exchanging
    # requests and stamped chunks over DDS (graph.split_actor_nodes).
    split_inference: bool = False
    # Two hosts on this machine (root): the robot side in one network namespace, the GPU side
    # (host_of == 'gpu') in another, DDS between them over a veth pair (tools.two_hosts).
    two_hosts: bool = False
    two_hosts_tag: str = ""  # set inside the robot namespace: the namespaces' tag (internal)
    # The VLA nodes start unconfigured and vla_lifecycle_manager configures them, homes the arms
    # from the simulator's rest pose with go_to_start, then activates them (homes()).
    go_to_start: bool = True


def add_episode_arguments(parser: argparse.ArgumentParser) -> None:
    """--task, --seed, --duration-s, --max-steps: what one episode is (the dry run and the in-process runner)."""
    from sim2real_vla_ros.core.task import tasks

    parser.add_argument("--task", default=tasks.default_task_name(), help="task in config/tasks.yaml "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="scene seed (default: the task's, tasks.yaml)")
    parser.add_argument("--duration-s", type=float, default=DEFAULT_DURATION_S,
                        help="episode length limit in sim seconds (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="episode limit in policy steps (decoded chunks of the task's arms); default: the "
                             "task's step limit")


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    parser = _ArgumentParser(
        prog="dry_run", description="MuJoCo simulator + the full VLA graph for one episode; writes report.json, "
                                    "report.html, overlay.webm and run.mcap into a run folder.")
    add_episode_arguments(parser)
    parser.add_argument("--out", default=None, help="run folder (default: runs/<UTC timestamp>)")
    parser.add_argument("--real-time-factor", type=float, default=DEFAULT_REAL_TIME_FACTOR,
                        help="simulator's sim seconds per wall second; 0 = as fast as possible "
                             "(default: %(default)s)")
    parser.add_argument("--bundle", default="", help="model bundle folder (default: the installed models/reference)")
    parser.add_argument("--params-file", default="",
                        help="VLA node parameter file (default: the installed config/vla.yaml)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID, else a random one in 5..95)")
    parser.add_argument("--output-mode", choices=graph.OUTPUT_MODES, default="trajectory",
                        help="actor output; the simulator takes the matching command interface "
                             "(default: %(default)s)")
    parser.add_argument("--arms", default="left,right", help="arms that get an actor (default: %(default)s)")
    parser.add_argument("--robot", choices=ROBOTS, default="sim",
                        help="sim: the simulator executes the commands; emulated-can: hardware in the loop, the "
                             "piper_driver node drives emulated Piper arms over the SDK's CAN frames and the "
                             "simulator follows their joints (default: %(default)s)")
    parser.add_argument("--split-inference", action="store_true",
                        help="run each actor split: actor_<arm> (actor_control: control loop and safety filter) and "
                             "actor_<arm>_inference (the model), exchanging requests and stamped chunks over DDS, as "
                             "on a robot host + GPU host (README: two hosts)")
    parser.add_argument("--two-hosts", action="store_true",
                        help="with --split-inference implied: run the robot side (simulator, camera_mask, actors' "
                             "control) and the GPU side (planner, validator, actors' inference) in two network "
                             "namespaces joined by a veth pair, DDS over UDP between them (needs root)")
    parser.add_argument("--inside-two-hosts", default="", help=argparse.SUPPRESS)
    parser.add_argument("--connect-timeout-s", type=float, default=120.0,
                        help="wall seconds for the graph to connect (default: %(default)s)")
    parser.add_argument("--namespace", default="",
                        help="run the simulator, the VLA nodes and the recorder in this ROS namespace, e.g. robot1 "
                             "(/clock and /diagnostics stay global; default: the root)")
    parser.add_argument("--no-go-to-start", dest="go_to_start", action="store_false",
                        help="teleport the arms to the task's start pose at the simulator's reset instead of starting "
                             "them at the rest pose and homing them with go_to_start (through vla_lifecycle_manager, "
                             "between configuring and activating the VLA nodes; the default with --robot sim and a "
                             "trajectory or stream output mode)")
    parser.add_argument("--param", action="append", default=[], metavar="NODE.NAME:=VALUE",
                        help="a parameter override for one node, value as in --ros-args -p (a YAML scalar), e.g. "
                             "validator.scripted_probabilities:='\"1.0\"' (test hooks are accepted: every node "
                             "runs with use_sim_time); repeatable")
    args = parser.parse_args(argv)
    options = Options(task=args.task, seed=args.seed, duration_s=args.duration_s, max_steps=args.max_steps,
                      out=args.out, real_time_factor=args.real_time_factor, bundle=args.bundle,
                      params_file=args.params_file,
                      domain_id=args.domain_id, output_mode=args.output_mode, arms=graph.parse_arms(args.arms),
                      connect_timeout_s=args.connect_timeout_s, namespace=args.namespace,
                      node_parameters=parse_node_parameters(args.param), robot=args.robot,
                      split_inference=args.split_inference or args.two_hosts or bool(args.inside_two_hosts),
                      two_hosts=args.two_hosts or bool(args.inside_two_hosts), two_hosts_tag=args.inside_two_hosts,
                      go_to_start=args.go_to_start)
    validate(options)
    return options


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a bad argument, which this tool documents as "completed without the
    normal path": raise instead, so that main() exits 1 (a bad argument) with one line."""

    def error(self, message: str):
        raise ValueError(message)


def config_problems(specs: Sequence[graph.NodeSpec], options: Options) -> List[str]:
    """One line per problem of the nodes' parameter files and overrides (unknown or misspelled
    names, wrong types, out-of-range values, NaN, YAML errors: graph.config_check), and a params
    file whose actor output_mode the run would override with --output-mode."""
    from sim2real_vla_ros.graph.config_check import check_spec, read_file_values

    problems: List[str] = []
    seen = set()
    for spec in specs:
        for problem in check_spec(spec):
            if problem not in seen:  # a YAML error of a shared file: once
                seen.add(problem)
                problems.append(problem)
        # The installed config/vla.yaml's output_mode is the default that --output-mode replaces
        # (as the launch argument does); a file the user gave must not be overridden silently.
        if options.params_file and spec.name in {graph.actor_node_name(arm) for arm in options.arms}:
            for path in spec.parameter_files:
                value, where = read_file_values(path, spec.full_name)[0].get("output_mode", (None, ""))
                if value is not None and value != options.output_mode:
                    problems.append(f"{where}: node {spec.full_name}: output_mode '{value}' would be overridden by "
                                    f"--output-mode {options.output_mode} (the simulator's command interface follows "
                                    f"--output-mode): pass --output-mode {value} or remove it from the file")
    return problems


def parse_node_parameters(items: Sequence[str]) -> Dict[str, Dict[str, object]]:
    """``['validator.scripted_probabilities:="1.0"', ...]`` -> ``{'validator': {'scripted_probabilities': '1.0'}}``.

    The value is read as ``--ros-args -p`` reads it (a YAML scalar or flow list): quote a string
    that looks like a number.
    """
    import yaml

    parsed: Dict[str, Dict[str, object]] = {}
    for item in items:
        target, separator, text = item.partition(":=")
        node, dot, name = target.partition(".")
        if not separator or not dot or not node or not name:
            raise ValueError(f"--param {item!r}: expected NODE.NAME:=VALUE, e.g. validator.threshold:=0.6")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--param {item!r}: the value is not a YAML scalar ({exc})") from None
        parsed.setdefault(node, {})[name] = value
    return parsed


def validate(options: Options) -> None:
    """Check the options before anything starts (ValueError naming the bad one)."""
    from sim2real_vla_ros.core.task import tasks

    task = tasks.get_task(options.task)  # UnknownTaskError (a KeyError) lists the tasks
    if not (math.isfinite(options.duration_s) and options.duration_s > 0):
        raise ValueError(f"--duration-s must be a positive number of sim seconds, got {options.duration_s!r}")
    if options.max_steps is None:
        options.max_steps = task.step_limit
    if options.max_steps <= 0:
        raise ValueError(f"--max-steps must be positive, got {options.max_steps}")
    if not (math.isfinite(options.real_time_factor) and options.real_time_factor >= 0):
        raise ValueError(f"--real-time-factor must be >= 0, got {options.real_time_factor!r}")
    if options.domain_id is not None and not 0 <= options.domain_id <= 101:
        raise ValueError(f"--domain-id must be in 0..101, got {options.domain_id}")
    if options.bundle and not os.path.isfile(os.path.join(options.bundle, "bundle.yaml")):
        raise ValueError(f"--bundle {options.bundle!r} is not a model bundle folder (no bundle.yaml)")
    missing_arms = [arm for arm in task.arms if arm not in options.arms]
    if options.params_file and not os.path.isfile(options.params_file):
        raise ValueError(f"--params-file {options.params_file!r} does not exist")
    if missing_arms:
        raise ValueError(f"task {task.name} uses arms {list(task.arms)}; --arms lacks {missing_arms}")
    graph.absolute_namespace(options.namespace)  # ValueError for an invalid --namespace
    nodes = {graph.SIM_NODE, graph.CAMERA_MASK_NODE, graph.PLANNER_NODE, graph.VALIDATOR_NODE,
             *(graph.actor_node_name(arm) for arm in options.arms)}
    if options.split_inference:
        nodes.update(graph.actor_inference_node_name(arm) for arm in options.arms)
    if options.robot == "emulated-can":
        nodes.add(graph.PIPER_DRIVER_NODE)
    unknown = sorted(set(options.node_parameters) - nodes)
    if unknown:
        raise ValueError(f"--param names nodes {unknown} that this run does not start (it starts {sorted(nodes)})")
    if options.robot not in ROBOTS:
        raise ValueError(f"--robot must be one of {ROBOTS}, got {options.robot!r}")
    if options.robot == "emulated-can" and options.output_mode == "vendor":
        raise ValueError("--robot emulated-can takes --output-mode trajectory or stream (piper_driver has no "
                         "vendor topics)")


# ----------------------------------------------------------------------------- processes


class ChildProcess:
    """One node of the graph as a child process (own process group), output to a log file."""

    def __init__(self, spec: graph.NodeSpec, command: List[str], env: Dict[str, str], log_path: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self._log.write("$ " + " ".join(command) + "\n")
        self._log.flush()
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.died_during_run = False
        self.killed = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.alive():
            self.killed = kill_after_stack_dump(self.proc)

    def close(self) -> None:
        self._log.close()

    @property
    def output(self) -> str:
        """Everything the child wrote so far (its log file)."""
        return self.tail(lines=None)

    def tail(self, lines: Optional[int] = 15) -> str:
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as stream:
                return "".join(stream.readlines()[-lines:] if lines else stream.readlines())
        except OSError:
            return ""


def kill_after_stack_dump(proc: subprocess.Popen, dump_wait_s: float = STACK_DUMP_WAIT_S) -> bool:
    """SIGKILL a node's process group that did not stop, after asking it (SIGUSR1, which
    ``nodes.common.run_node`` registers) to write every thread's stack to its output.
    Returns whether the kill was needed (False if it exited meanwhile)."""
    os.kill(proc.pid, signal.SIGUSR1)
    try:
        proc.wait(timeout=dump_wait_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return True


def stop_all(children: Sequence[ChildProcess], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT every child at once, wait up to ``timeout_s`` in total, then SIGKILL the rest."""
    for child in children:
        child.interrupt()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.proc.wait(timeout=5.0)
    for child in children:
        child.close()


def child_environment(domain_id: int, two_hosts: bool = False) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id),
                "PYTHONUNBUFFERED": "1"})
    if two_hosts:  # inside our own namespaces only (tools.two_hosts): discovery over the veth
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    env.setdefault("MUJOCO_GL", "egl")
    return env


def choose_domain_id(requested: Optional[int]) -> int:
    if requested is not None:
        return requested
    if os.environ.get("ROS_DOMAIN_ID", "").strip().isdigit():
        return int(os.environ["ROS_DOMAIN_ID"])
    return random.SystemRandom().randint(5, 95)


# ----------------------------------------------------------------------------- graph


def homes(options: Options) -> bool:
    """Whether this run homes the arms with go_to_start: it publishes to the joint_trajectory
    controllers' topics, which the simulator reads with its ros2_control interface (trajectory
    and stream output modes), not with the vendor one nor when it follows piper_driver."""
    return options.go_to_start and options.robot == "sim" and options.output_mode != "vendor"


def graph_specs(options: Options) -> List[graph.NodeSpec]:
    """The simulator and the VLA nodes of this run (the graph package's single definition); with
    ``--robot emulated-can`` also piper_driver with emulated arms, which the simulator follows;
    with homing (:func:`homes`) the lifecycle manager, and the simulator keeps the arms at rest."""
    interface = graph.command_interface_for(options.output_mode)
    extra = dict(options.extra_sim_parameters)
    if options.robot == "emulated-can":
        extra["follow_joint_states"] = True
    if homes(options):
        extra.setdefault("reset_arms", "keep")
    specs = graph.simulator_nodes("mujoco", task=options.task, seed=options.seed,
                                  real_time_factor=float(options.real_time_factor), command_interface=interface,
                                  extra_parameters=extra or None, namespace=options.namespace)
    if options.robot == "emulated-can":
        specs.append(emulated_piper_driver(options))
    specs += graph.vla_nodes(bundle_path=options.bundle, params_file=options.params_file or None, arms=options.arms,
                             output_mode=options.output_mode, namespace=options.namespace,
                             split_inference=options.split_inference, lifecycle_manager=homes(options),
                             go_to_start_task=options.task if homes(options) else None)
    # The run's overlay video is drawn on the native cam_high image (camera resolution), unless a
    # --param says otherwise.
    specs = [dataclasses.replace(spec, parameters={**spec.parameters, "overlay_source": "raw"})
             if spec.name == graph.PLANNER_NODE else spec for spec in specs]
    specs = [dataclasses.replace(spec, parameters={**spec.parameters, **options.node_parameters[spec.name]})
             if spec.name in options.node_parameters else spec for spec in specs]
    not_here = [spec.name for spec in specs if not spec.runs_here]
    if not_here:
        raise DryRunError(f"graph nodes that cannot run here: {not_here}")
    return specs


def emulated_piper_driver(options: Options) -> graph.NodeSpec:
    """piper_driver with an emulated arm per port (python-can virtual bus, inside its process),
    starting at the task's initial joints. Feedback thresholds are loose: a loaded 2-core machine
    runs the emulators below their nominal rate (the node's defaults are the real arm's); measured
    here, the joint feedback fell to 2 Hz while the other nodes loaded their models, so the arms
    are enabled by the runner (``~/enable``, as an operator would) once the graph is up."""
    from sim2real_vla_ros.core.task import tasks

    task = tasks.get_task(options.task)
    return graph.piper_driver_node(
        can_left="dry_run_left", can_right="dry_run_right", use_sim_time=True, emulate=True, bustype="virtual",
        judge_can=False, rate_hz=100.0, emulator_rate_hz=100.0, speed_rate=100, feedback_timeout_s=1.0,
        min_feedback_rate_hz=5.0, diagnostics_rate_hz=5.0, enable_on_start=False, namespace=options.namespace,
        **{f"emulator_initial_{arm}": [float(v) for v in task.init_joints(arm)] for arm in graph.ARMS})


def missing_graph_ends(node, connections: Dict[str, graph.TopicEnds], services: Dict[str, str]) -> dict:
    """What the live graph still lacks: publishers, subscribers and services, by topic."""
    missing = {"publishers": {}, "subscribers": {}, "services": []}
    for topic, ends in connections.items():
        publishers = {info.node_name for info in node.get_publishers_info_by_topic(topic)}
        subscribers = {info.node_name for info in node.get_subscriptions_info_by_topic(topic)}
        if ends.publishers - publishers:
            missing["publishers"][topic] = sorted(ends.publishers - publishers)
        if ends.subscribers - subscribers:
            missing["subscribers"][topic] = sorted(ends.subscribers - subscribers)
    offered = {name for name, _types in node.get_service_names_and_types()}
    missing["services"] = sorted(set(services) - offered)
    return missing


def record_plans(options: Options) -> list:
    """The topics recorded into run.mcap and/or read for the report."""
    from sim2real_vla_ros.tools.recorder import LATCHED, RELIABLE, SENSOR, TopicPlan

    image_rate = options.image_record_rate_hz
    plans = [
        TopicPlan(vocab.CLOCK, "rosgraph_msgs/msg/Clock", RELIABLE, max_rate_hz=10.0),
        TopicPlan(vocab.JOINT_STATES, "sensor_msgs/msg/JointState", RELIABLE, max_rate_hz=50.0,
                  extract="joint_states"),
        TopicPlan(vocab.SIM_TASK_STATUS, "std_msgs/msg/String", LATCHED, extract="sim_status"),
        TopicPlan(vocab.INSTRUCTION, "std_msgs/msg/String", LATCHED),
        TopicPlan(vocab.PLAN_STATE, "sim2real_vla_interfaces/msg/PlanState", LATCHED, extract="plan_state"),
        TopicPlan(vocab.TASK_STATE, "sim2real_vla_interfaces/msg/TaskState", LATCHED, extract="task_state"),
        TopicPlan(vocab.VALIDATOR_EVENT, "sim2real_vla_interfaces/msg/ValidatorEvent", RELIABLE,
                  extract="validator_event"),
        TopicPlan(vocab.ESTOP, "std_msgs/msg/Bool", LATCHED),
        TopicPlan(vocab.AFFORDANCE_MARKERS, "visualization_msgs/msg/MarkerArray", RELIABLE),
        TopicPlan(vocab.AFFORDANCE_OVERLAY, "sensor_msgs/msg/Image", SENSOR, max_rate_hz=image_rate,
                  extract="overlay"),
        TopicPlan(vocab.DIAGNOSTICS, "diagnostic_msgs/msg/DiagnosticArray", RELIABLE, extract="diagnostics"),
    ]
    for camera in CAMERAS:
        plans.append(TopicPlan(vocab.masked_topic(camera), "sensor_msgs/msg/Image", SENSOR, max_rate_hz=image_rate,
                               extract="masked", camera=camera))
        plans.append(TopicPlan(vocab.mask_topic(camera), "sensor_msgs/msg/Image", SENSOR, max_rate_hz=image_rate / 2))
    for arm in graph.ARMS:
        plans.append(TopicPlan(vocab.affordance_topic(arm), "geometry_msgs/msg/PolygonStamped", LATCHED,
                               extract="affordance", arm=arm))
        # The raw wrist views go into the overlay video's panel only (max_rate_hz 0: not in run.mcap).
        plans.append(TopicPlan(vocab.camera_image_topic(vocab.WRIST_CAMERA[arm]), "sensor_msgs/msg/Image", SENSOR,
                               max_rate_hz=0, extract="wrist_image", arm=arm))
    for arm in options.arms:
        plans.append(TopicPlan(vocab.actor_chunk_topic(arm), "trajectory_msgs/msg/JointTrajectory", RELIABLE,
                               extract="chunk", arm=arm))
        plans.append(TopicPlan(vocab.actor_command_topic(arm), "sensor_msgs/msg/JointState", RELIABLE,
                               extract="command", arm=arm))
        topic = graph.arm_command_topic(arm, options.output_mode)
        if options.output_mode == "vendor":
            plans.append(TopicPlan(topic, "sensor_msgs/msg/JointState", RELIABLE, extract="vendor_command", arm=arm))
        elif options.output_mode == "stream":
            plans.append(TopicPlan(topic, "std_msgs/msg/Float64MultiArray", RELIABLE, extract="stream_command",
                                   arm=arm))
        else:
            plans.append(TopicPlan(topic, "trajectory_msgs/msg/JointTrajectory", RELIABLE, extract="trajectory",
                                   arm=arm))
    return plans


# ----------------------------------------------------------------------------- the run


class DryRun:
    """One dry run: processes, recorder, episode, report."""

    def __init__(self, options: Options) -> None:
        from sim2real_vla_ros.core.task import tasks

        self.options = options
        self.task = tasks.get_task(options.task)
        self.domain_id = choose_domain_id(options.domain_id)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.folder = os.path.abspath(options.out or os.path.join("runs", stamp))
        os.makedirs(os.path.join(self.folder, "logs"), exist_ok=True)
        self.children: List[ChildProcess] = []
        self.data = RunData()
        self.failure = ""
        self._shutdown_requested = False
        self._recorder_ros = None  # (node, context) of the recorder until release_recorder()

    def log(self, text: str) -> None:
        if not self.options.quiet:
            print(f"[dry_run] {text}", flush=True)

    # -------------------------------------------------------------- set-up
    def _fill_static(self, specs: List[graph.NodeSpec]) -> None:
        from sim2real_vla_ros.core import robot

        data = self.data
        data.task, data.instruction = self.task.name, self.task.instruction
        data.seed = self.options.seed
        data.task_arms, data.actor_arms = tuple(self.task.arms), tuple(self.options.arms)
        by_name = {spec.name: spec for spec in specs}
        actor = by_name[graph.actor_node_name(self.options.arms[0])]
        data.control_rate_hz = float(graph.expected_parameters(actor).get("control_rate_hz", 50.0))
        data.planner_rate_hz = float(graph.expected_parameters(by_name[graph.PLANNER_NODE]).get("planner_rate_hz", 2.0))
        for arm in self.options.arms:
            limits = robot.arm_limits(arm)
            # The acceleration limit the arm's safety filter enforces (its parameter, else its default).
            acceleration = graph.expected_parameters(by_name[graph.actor_node_name(arm)]).get("max_acceleration", ())
            data.joint_limits[arm] = JointLimitTable(tuple(limits.names), tuple(map(float, limits.lower)),
                                                     tuple(map(float, limits.upper)),
                                                     tuple(map(float, limits.velocity)),
                                                     tuple(map(float, acceleration)))
        data.settings = {"ros_domain_id": self.domain_id,
                         "bundle": self.options.bundle or "(installed models/reference)",
                         "params_file": self.options.params_file or graph.default_params_file(),
                         "robot": self.options.robot,
                         "real_time_factor_setting": self.options.real_time_factor,
                         "duration_limit_sim_s": self.options.duration_s, "max_steps": self.options.max_steps,
                         "output_mode": self.options.output_mode, "folder": self.folder,
                         "split_inference": self.options.split_inference,
                         "two_hosts": self.options.two_hosts,
                         "namespace": graph.absolute_namespace(self.options.namespace) or "/"}

    def _start_processes(self, specs: List[graph.NodeSpec]) -> None:
        env = child_environment(self.domain_id, two_hosts=bool(self.options.two_hosts_tag))
        gpu_prefix: List[str] = []
        if self.options.two_hosts_tag:
            from sim2real_vla_ros.tools.two_hosts import TwoHosts

            gpu_prefix = TwoHosts(self.options.two_hosts_tag, create=False).prefix("gpu")
        for spec in specs:
            command = graph.to_command(spec, sys.executable, overrides_dir=os.path.join(self.folder, "params"))
            if gpu_prefix and graph.host_of(spec) == "gpu":
                command = [*gpu_prefix, *command]
            log_path = os.path.join(self.folder, "logs", f"{spec.name}.log")
            self.children.append(ChildProcess(spec, command, env, log_path))
        self.log(f"started {len(self.children)} processes (ROS_DOMAIN_ID={self.domain_id}): "
                 f"{', '.join(child.name for child in self.children)}")

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive() and not self._shutdown_requested:
                child.died_during_run = True
                raise DryRunError(f"node {child.name} exited with {child.proc.returncode} during the run "
                                  f"(log {child.log_path}):\n{child.tail()}")

    def _wait(self, condition, timeout_s: float, what: str):
        """Poll ``condition`` until truthy; DryRunError at the deadline or when a node dies."""
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()
        while True:
            value = condition()
            if value:
                return value
            self._check_children()
            if time.monotonic() > deadline:
                raise DryRunError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            pause.wait(POLL_S)  # a bounded poll of a deadline loop (the recorder spins in its own thread)

    # -------------------------------------------------------------- phases
    def _wait_connected(self, node) -> dict:
        driver = graph.PIPER_DRIVER_NODE if self.options.robot == "emulated-can" else None
        connections = graph.expected_connections(arms=self.options.arms, output_mode=self.options.output_mode,
                                                 namespace=self.options.namespace, robot_driver=driver,
                                                 split_inference=self.options.split_inference)
        services = graph.expected_services(namespace=self.options.namespace, arms=self.options.arms)
        state = {"missing": None, "publishers_ok_at": None}

        def connected() -> bool:
            missing = missing_graph_ends(node, connections, services)
            state["missing"] = missing
            if missing["publishers"] or missing["services"]:
                return False
            now = time.monotonic()
            state["publishers_ok_at"] = state["publishers_ok_at"] or now
            return not missing["subscribers"] or now - state["publishers_ok_at"] > SUBSCRIBER_GRACE_S

        try:
            self._wait(connected, self.options.connect_timeout_s, "the graph to connect")
        except DryRunError as exc:
            if "timed out" in str(exc):
                raise DryRunError(f"{exc}; still missing: {json.dumps(state['missing'])}") from None
            raise
        return state["missing"]

    def _active_arm_chunks(self, recorder) -> int:
        with recorder.lock:
            return min(len(self.data.chunks.get(arm, [])) for arm in self.task.arms)

    def _latest_phase(self, recorder) -> str:
        with recorder.lock:
            plan = self.data.plan_states[-1][1].get("phase") if self.data.plan_states else ""
            task = self.data.task_states[-1][1].get("phase") if self.data.task_states else ""
        for phase in (plan, task):
            if phase in run_report.TERMINAL_PHASES:
                return phase
        return plan or ""

    def _run_episode(self, node, recorder) -> None:
        from std_msgs.msg import String

        from sim2real_vla_ros.nodes.common import LATCHED_QOS

        sim_now = lambda: node.get_clock().now().nanoseconds * 1e-9  # noqa: E731 (sim time, /clock)
        if homes(self.options):
            self._wait_managed_nodes_active()
        self._wait(lambda: all(self.data.masked.get(c) for c in CAMERAS) and self.data.sim_status
                   and sim_now() > 0, self.options.start_timeout_s,
                   "masked images of every camera, the task status and /clock")
        if self.options.robot == "emulated-can":
            self._enable_driver(node)
        publisher = node.create_publisher(String, vocab.INSTRUCTION, LATCHED_QOS)
        episode = self.data.episode
        episode.start_sim_s, episode.start_wall_s = sim_now(), time.monotonic()
        with recorder.lock:
            plan_states_before = len(self.data.plan_states)
        publisher.publish(String(data=self.task.instruction))
        self.log(f"instruction sent at sim {episode.start_sim_s:.2f} s: {self.task.instruction!r}")

        def started() -> bool:
            with recorder.lock:
                new = self.data.plan_states[plan_states_before:]
            return any(payload.get("phase") in ("running", *run_report.TERMINAL_PHASES) for _, payload in new)

        self._wait(started, self.options.start_timeout_s, "the planner to start the task (/vla/plan_state running)")
        last_sim, last_progress = sim_now(), time.monotonic()
        pause = threading.Event()
        while True:
            self._check_children()
            now_sim = sim_now()
            phase = self._latest_phase(recorder)
            if phase in run_report.TERMINAL_PHASES:
                episode.end_reason = planner_end_reason(phase)
                break
            if now_sim - episode.start_sim_s >= self.options.duration_s:
                episode.end_reason = f"duration limit ({self.options.duration_s:g} s sim)"
                break
            if self._active_arm_chunks(recorder) >= self.options.max_steps:
                episode.end_reason = f"step limit ({self.options.max_steps} chunks)"
                break
            if now_sim > last_sim:
                last_sim, last_progress = now_sim, time.monotonic()
            elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                raise DryRunError(f"sim time stalled at {now_sim:.2f} s for {STALL_TIMEOUT_S:.0f} s wall")
            pause.wait(POLL_S)
        episode.end_sim_s, episode.end_wall_s = sim_now(), time.monotonic()
        self.log(f"episode ended: {episode.end_reason} after {episode.end_sim_s - episode.start_sim_s:.1f} s sim / "
                 f"{episode.end_wall_s - episode.start_wall_s:.1f} s wall")

    def _manager_status(self) -> Optional[dict]:
        """vla_lifecycle_manager's newest /diagnostics values (phase, error, homing.*)."""
        for record in reversed(list(self.data.diagnostics)):
            if record.node == graph.LIFECYCLE_MANAGER_NODE:
                return dict(record.values)
        return None

    def _wait_managed_nodes_active(self) -> None:
        """Until vla_lifecycle_manager has configured the nodes, homed the arms and activated them."""
        def settled() -> bool:
            status = self._manager_status() or {}
            if status.get("phase") == "failed":
                raise DryRunError(f"vla_lifecycle_manager: {status.get('error')}")
            return status.get("phase") == "active"

        self._wait(settled, self.options.connect_timeout_s, "vla_lifecycle_manager: nodes configured, arms homed "
                   "(go_to_start), nodes active")
        status = self._manager_status() or {}
        self.data.settings["homing"] = {key[len("homing."):]: value for key, value in status.items()
                                        if key.startswith("homing.")}
        self.log(f"nodes active after homing: {status.get('homing.summary', '')}")

    def _driver_states(self) -> Dict[str, dict]:
        """piper_driver's newest diagnostics per arm (hardware_id piper_<arm>)."""
        latest: Dict[str, dict] = {}
        for record in list(self.data.diagnostics):
            if record.node.startswith("piper_") and record.node[len("piper_"):] in graph.ARMS:
                latest[record.node[len("piper_"):]] = dict(record.values)
        return latest

    def _enable_driver(self, node) -> None:
        """Call piper_driver's ~/enable until both arms run (a refusal names its reason)."""
        from std_srvs.srv import Trigger

        client = node.create_client(Trigger, vocab.absolute(f"{graph.PIPER_DRIVER_NODE}/enable", self.options.namespace))
        state = {"future": None, "message": "no reply yet"}

        def enabled() -> bool:
            states = self._driver_states()
            if all(states.get(arm, {}).get("state") == "running" for arm in graph.ARMS):
                return True
            future = state["future"]
            if future is not None and future.done() and future.result() is not None:
                state["message"] = future.result().message
                if future.result().success and not any(entry.get("state") == "hold" for entry in states.values()):
                    return False  # accepted: wait for the diagnostics to show both arms running
            if (future is None or future.done()) and client.service_is_ready():
                state["future"] = client.call_async(Trigger.Request())  # first call, or again after a refusal
            return False

        try:
            self._wait(enabled, self.options.start_timeout_s, "piper_driver's arms enabled (~/enable)")
        except DryRunError as exc:
            raise DryRunError(f"{exc}; last answer: {state['message']}") from None
        finally:
            node.destroy_client(client)
        self.log("piper_driver: both emulated arms enabled")

    def _driver_summary(self) -> Dict[str, dict]:
        """What reached the emulated arms, per arm, from piper_driver's last diagnostics."""
        summary = {}
        for arm, values in self._driver_states().items():
            summary[arm] = {key: values.get(key) for key in (
                "state", "hold_reasons", "emulator.out_of_limit_commands", "emulator.joint_commands",
                "count.commands", "feedback_rate_hz")}
            summary[arm]["holds"] = sum(int(v) for k, v in values.items() if k.startswith("count.hold."))
        return summary

    # -------------------------------------------------------------- main
    def run(self, release: bool = True) -> dict:
        """Run everything; returns the report (``report['run']['failure']`` set on infrastructure failure).

        ``release=False`` leaves the recorder node for `release_recorder` (``main`` prints the
        summary first).
        """
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter

        from sim2real_vla_ros.tools.recorder import Recorder

        wall_start = time.monotonic()
        # This process joins the run's domain too (the recorder); set before rclpy.init reads it.
        os.environ.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(self.domain_id)})
        if self.options.two_hosts_tag:  # the recorder is on the robot host: it must see the GPU side too
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
        try:
            specs = graph_specs(self.options)
            # Every parameter file and override is checked before any process starts.
            problems = config_problems(specs, self.options)
            if problems:
                for problem in problems:
                    print(f"[FATAL] {problem}", file=sys.stderr, flush=True)
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DryRunError(f"configuration: {problems[0]}{more}")
            self._fill_static(specs)
        except (DryRunError, ValueError) as exc:
            self.failure = str(exc)
            self.log(f"FAILED: {self.failure}")
            self.data.episode.total_wall_s = time.monotonic() - wall_start
            return self._finish()
        planner = next(spec for spec in specs if spec.name == graph.PLANNER_NODE)
        overlay_fps = float(graph.expected_parameters(planner).get("overlay_rate_hz", 5.0))
        context = rclpy.Context()
        rclpy.init(context=context)
        # In the graph's namespace: the recorded topics and the instruction resolve where the graph's do.
        node = Node(RECORDER_NODE, context=context, namespace=graph.absolute_namespace(self.options.namespace),
                    parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        executor = SingleThreadedExecutor(context=context)
        recorder = None
        spinner = threading.Thread(target=executor.spin, name="recorder", daemon=True)
        try:
            recorder = Recorder(node, self.folder, record_plans(self.options), self.data, overlay_fps=overlay_fps)
            executor.add_node(node)
            spinner.start()
            self._start_processes(specs)
            missing = self._wait_connected(node)
            self.data.episode.graph_connected_wall_s = time.monotonic() - wall_start
            self.data.settings["graph_missing"] = missing
            if missing["subscribers"]:
                self.log(f"WARNING: expected subscriptions missing: {missing['subscribers']}")
            self.log(f"graph connected after {self.data.episode.graph_connected_wall_s:.1f} s wall")
            self._run_episode(node, recorder)
        except DryRunError as exc:
            self.failure = str(exc)
        except KeyboardInterrupt:
            self.failure = "interrupted (Ctrl-C)"
        except Exception as exc:  # anything else is an infrastructure failure too: stop the nodes, report it
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            if self.failure:
                self.log(f"FAILED: {self.failure}")
            for child in self.children:  # nothing has been asked to stop yet: an exited node died
                child.died_during_run = child.died_during_run or not child.alive()
            self._shutdown_requested = True
            stop_all(self.children)
            # The recorder's own shutdown, in the order of nodes.shutdown: its executor (and the
            # spinning thread) first, then the recording; the node and the context last, after
            # report.json is written (release_recorder).
            executor.shutdown(timeout_sec=2.0)
            if spinner.is_alive():
                spinner.join(timeout=5.0)
            if recorder is not None:
                recorder.close()
        self.data.episode.total_wall_s = time.monotonic() - wall_start
        report = self._finish()
        self._recorder_ros = (node, context)
        if release:
            self.release_recorder(exit_code(report), bounded_exit=False)
        return report

    def release_recorder(self, code: int, bounded_exit: bool = True) -> None:
        """Destroy the recorder node and shut its context down, under a shutdown watchdog.

        Called once report.json is written, so that nothing of the run is lost if destroying the
        node hangs in DDS (issue 14): the watchdog then ends this process with ``code``. With
        ``bounded_exit`` (``main``: the process ends with the run) it stays armed until the
        process has exited; otherwise it stands down once the recorder is released.
        """
        if self._recorder_ros is None:
            return
        node, context = self._recorder_ros
        self._recorder_ros = None
        watchdog = ShutdownWatchdog(RECORDER_NODE, exit_code=code).arm()
        release_node(node, None, watchdog)  # its executor was shut down before recorder.close()
        watchdog.step("the recorder's context shutdown (rclpy.shutdown)")
        context.try_shutdown()
        if not bounded_exit:
            watchdog.cancel()

    def _finish(self) -> dict:
        data = self.data
        data.nodes = [NodeRun(child.name, child.proc.returncode, child.died_during_run,
                              os.path.relpath(child.log_path, self.folder)) for child in self.children]
        if data.seed is None and data.sim_status:
            data.seed = data.sim_status[-1][1].get("seed")
        data.settings["failure"] = self.failure
        if self.options.robot == "emulated-can":
            data.settings["robot_driver"] = self._driver_summary()
        data.settings["clean_shutdown"] = all(not child.killed and child.proc.returncode == 0
                                              for child in self.children)
        # Exit 0 but ended by its shutdown watchdog (nodes.shutdown): a hang that was bounded, not a clean stop.
        data.settings["shutdown_watchdog_nodes"] = [child.name for child in self.children
                                                    if WATCHDOG_MARK in child.output]
        if not data.episode.end_reason:
            data.episode.end_reason = "infrastructure failure"
        report = run_report.build_report(data)  # never raises: a failed section is in report['errors']
        run_report.write_report(os.path.join(self.folder, "report.json"), report)  # always valid JSON
        try:
            from sim2real_vla_ros.tools.run_page import write_run_page

            write_run_page(self.folder, report, data)
        except Exception as exc:  # the page is a view of report.json: never the run's failure
            self.log(f"report.html not written: {type(exc).__name__}: {exc}")
        return report


def exit_code(report: dict) -> int:
    """0: completed with the normal path shown within every limit; 3: a command violated a limit;
    2: completed without the normal path; 1: infrastructure failure (``run_report.verdict``)."""
    return run_report.verdict(report)["exit_code"]


def run_on_two_hosts(options: Options, argv: List[str]) -> int:
    """``--two-hosts``: make the two namespaces, run this dry run again inside the robot one (its
    GPU-side children are started in the other), and remove the namespaces whatever happens."""
    from sim2real_vla_ros.tools.two_hosts import TwoHosts, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"dry run: --two-hosts: {reason}", file=sys.stderr)
        return 1
    domain_id = choose_domain_id(options.domain_id)
    out = os.path.abspath(options.out or os.path.join(
        "runs", _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")))
    argv = [arg for arg in argv if arg != "--two-hosts"]
    if options.out is None:
        argv += ["--out", out]
    with TwoHosts(f"d{os.getpid() % 100000}") as hosts:
        print(f"[dry_run] two hosts: robot namespace {hosts.namespaces['robot']} ({hosts.veth['robot']}), "
              f"GPU namespace {hosts.namespaces['gpu']} ({hosts.veth['gpu']}), DDS over UDP on the veth", flush=True)
        # The domain travels in the environment (ROS_DOMAIN_ID), which the inner run reads.
        command = [*hosts.prefix("robot"), sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", *argv,
                   "--inside-two-hosts", hosts.tag]
        try:
            return subprocess.run(command, env=hosts.environment(domain_id)).returncode
        except KeyboardInterrupt:
            return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        options = parse_args(argv)
    except (ValueError, KeyError) as exc:
        print(f"dry run: bad argument: {exc}", file=sys.stderr)
        return 1
    if options.two_hosts and not options.two_hosts_tag:
        return run_on_two_hosts(options, list(sys.argv[1:] if argv is None else argv))
    dry_run = DryRun(options)
    report = dry_run.run(release=False)
    if dry_run.failure.startswith("configuration:"):
        # The [FATAL] lines said it; the empty run's checks would only repeat it as noise.
        print(f"dry run: configuration error, no node started (exit 1); {dry_run.folder}/report.json", file=sys.stderr)
        dry_run.release_recorder(1)
        return 1
    for line in run_report.summary_lines(report):
        print(line)
    verdict = run_report.verdict(report)
    overlay = ((report.get("outputs") or {}).get("overlay") or {}).get("path") or "no overlay"
    print(f"dry run {verdict['outcome']}: {dry_run.folder}/report.json, report.html, run.mcap, {overlay}")
    for reason in verdict["reasons"]:
        print(f"dry run: {reason}", file=sys.stderr)
    sys.stdout.flush()
    dry_run.release_recorder(verdict["exit_code"])
    return verdict["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
