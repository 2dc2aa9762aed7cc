"""In-process closed loop: the simulator and the VLA graph's logic in one process, no DDS.

:class:`InProcessRunner` runs one episode of a task with the MuJoCo :class:`Simulator` and
the ROS-free cores of every node of the graph -- :class:`CameraMasker` and
:class:`FramePairer` (camera_mask), :class:`PlannerCore` (planner), :class:`ValidatorCore`
(validator) and one :class:`ActorController` + :class:`ActorPipeline` per arm (actor) -- the
same objects the nodes drive, so the runner takes the same decisions the nodes would, in
simulated time and as fast as the CPU allows. This is what an evaluation of many episodes
uses; the ROS dry run (``tools/dry_run.py``) stays the end-to-end proof of the graph.

Settings come from the files the dry run uses, never copied numbers: the VLA nodes'
parameters from ``config/vla.yaml`` (or ``--params-file``) plus the dry run's overrides
(``tools.dry_run.graph_specs``), the simulator's from the sim node's own parameter
declarations with the dry run's overrides applied (:func:`simulator_settings`).

The loop (one sim clock, everything on the physics grid; at equal times in this order):

1. ``/joint_states`` at ``joint_state_rate_hz`` -> actors and validator;
2. the three cameras at their ``<camera>.rate_hz``, rendered at ``camera_width`` x
   ``camera_height`` -> pairer -> mask model -> masked images to planner, validator, actors;
3. the planner at ``planner_rate_hz`` (prediction, then what it publishes: plan_state and
   affordances go to the actors and the validator as their payloads would);
4. the validator at ``validator_rate_hz`` (an event goes to the planner, whose publication
   follows at once, as the event callback does in the node);
5. each actor at ``control_rate_hz``: the tick's command goes to the simulator's controller
   the way the sim node applies the output mode (``trajectory``: the message's points through
   :class:`TrajectoryArmController.accept` with stamp 0 = start now; ``stream``:
   :meth:`forward_command`; ``vendor``: the /master round trip into :class:`DirectArmController`);
   an inference it asks for runs at once on the snapshot;
6. physics (:meth:`Simulator.step` with the controllers sampled every step) to the next event.

Latency model: by default every model runs in zero sim time (synchronous). Two options model
the graph's latencies where they change decisions: ``camera_latency_s`` delays the masked
images (stamped at capture) reaching the planner, validator and actors, as camera_mask's
processing and DDS do (the dry run reports it as ``latency.measured_sim_ms.camera_to_masked``,
40-100 ms p50 on a loaded 2-core machine); ``inference_latency_s`` delays each actor chunk's
splice (the splice compensates the delay, as in the node). The image age matters: an active
arm asks for its next chunk when the current one -- which starts at its observation's
stamp -- has ``request_threshold_s`` left, so older images mean slightly more chunks per
second. The planner's and validator's model runs take a few ms of wall time, negligible
against their periods, and are not modelled.

Success is the simulator's privileged ``task_status()['success']``, reported apart from the
planner's own verdict (phase ``succeeded`` = the planner's done probability).

CLI: ``python -m sim2real_vla_ros.sim.in_process --task T --seed S --duration-s D
--output-mode M --out summary.json`` prints and writes a small JSON summary.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.actor_controller import (ActorController, FaultCounter,
                                                            observation_of)
from sim2real_vla_ros.core.control import homing
from sim2real_vla_ros.core.control.collision_guard import CollisionGuard
from sim2real_vla_ros.core.control.actor_io import actor_plan_inputs, arm_state_from_joint_state
from sim2real_vla_ros.core.control.vendor import urdf_to_vendor, vendor_to_arm
from sim2real_vla_ros.core.perception.camera_pairing import FramePairer
from sim2real_vla_ros.core.perception.masking import CameraMasker
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.task.evaluation import planner_end_reason
from sim2real_vla_ros.core.task.records import parse_plan_state, parse_validator_event
from sim2real_vla_ros.core.task.planner_logic import PlannerConfig, PlannerCore
from sim2real_vla_ros.core.task.validator_logic import ValidatorConfig, ValidatorCore, parse_scripted_probability
from sim2real_vla_ros.core.vocabulary import CAMERAS, TOP_CAMERA, WRIST_CAMERA
from sim2real_vla_ros.tools.dry_run import DEFAULT_DURATION_S, add_episode_arguments

SUMMARY_SCHEMA = "vla_in_process_summary/1"
TERMINAL_PHASES = ("succeeded", "failed", "aborted")
# Commands within this of a limit count as inside (float round-off of clipped values), as in run_report.
LIMIT_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------- settings


@dataclass
class RunnerOptions:
    """One episode's choices; the rest comes from the parameter files (see the module docstring).

    ``seed`` None = the task's seed; ``max_steps`` None = the task's step limit (policy chunks
    of the task's arms, as the dry run counts them); the instruction is given at the first
    planner tick at or after ``start_s`` at which masked images have reached the nodes (the
    dry run sends it once masked images of every camera flow); the episode's sim time, like
    the dry run's, counts from there.
    """

    task: str
    seed: Optional[int] = None
    duration_s: float = DEFAULT_DURATION_S
    max_steps: Optional[int] = None
    output_mode: str = "trajectory"
    bundle: str = ""
    params_file: str = ""
    arms: Sequence[str] = graph.ARMS
    inference_latency_s: float = 0.0
    camera_latency_s: float = 0.0
    start_s: float = 0.0


@dataclass(frozen=True)
class Settings:
    """Every parameter the runner uses: the simulator's and each VLA node's (flattened names)."""

    simulator: SimpleNamespace
    nodes: Mapping[str, Mapping[str, Any]]
    bundle_path: str


def simulator_settings(spec: graph.NodeSpec) -> SimpleNamespace:
    """The sim node's settings for ``spec``: its declared defaults and checks (``sim_node.PARAMETERS``,
    ``sim_node.sim_settings``) applied to the spec's values, so no number is copied here."""
    from sim2real_vla_ros.sim.sim_node import PARAMETERS, sim_settings

    given = graph.expected_parameters(spec)
    return sim_settings({param.name: param.validate(given.get(param.name, param.default)) for param in PARAMETERS})


def resolve_settings(options: RunnerOptions) -> Settings:
    """The dry run's node specs for these options (``tools.dry_run.graph_specs``) and their values."""
    from sim2real_vla_ros.tools import dry_run

    dry_options = dry_run.Options(task=options.task, seed=options.seed, duration_s=options.duration_s,
                                  max_steps=options.max_steps, bundle=options.bundle,
                                  params_file=options.params_file, output_mode=options.output_mode,
                                  arms=graph.parse_arms(options.arms))
    dry_run.validate(dry_options)
    options.max_steps = dry_options.max_steps
    specs = {spec.name: spec for spec in dry_run.graph_specs(dry_options)}
    simulator = simulator_settings(specs.pop(graph.SIM_NODE))
    nodes = {name: graph.expected_parameters(spec) for name, spec in specs.items()}
    bundle_path = options.bundle
    if not bundle_path:
        from sim2real_vla_ros.paths import share_path

        bundle_path = share_path("models", "reference")
    return Settings(simulator, nodes, bundle_path)


def _pick(values: Mapping[str, Any], names: Mapping[str, str]) -> Dict[str, Any]:
    """Keyword arguments from the parameters present in ``values`` (field -> parameter name)."""
    return {field_name: values[name] for field_name, name in names.items() if name in values}


def planner_config(values: Mapping[str, Any]) -> PlannerConfig:
    return PlannerConfig(**_pick(values, {
        "rate_hz": "planner_rate_hz", "chain_length": "chain_length", "max_retries": "max_retries",
        "max_steps": "max_steps", "done_threshold": "done_threshold", "backstop_timeout_s": "backstop_timeout_s",
        "max_image_age_s": "max_input_age_s.cam_high"}))


def validator_config(values: Mapping[str, Any]) -> ValidatorConfig:
    kwargs = _pick(values, {
        "threshold": "threshold", "consecutive_required": "consecutive_required", "min_dwell_s": "min_dwell_s",
        "step_timeout_s": "step_timeout_s", "max_retries": "max_retries",
        "max_top_age_s": "max_input_age_s.cam_high", "max_wrist_age_s": "max_input_age_s.wrist",
        "max_joint_age_s": "max_input_age_s.joint_state"})
    return ValidatorConfig(scripted=parse_scripted_probability(str(values.get("scripted_probabilities", "model"))),
                           **kwargs)


def actor_values(arm: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """The actor node's parameter values for ``arm``: its declared defaults and checks
    (``nodes.actor.PARAMETERS``) applied to the spec's values, as the node reads them."""
    from sim2real_vla_ros.nodes.actor import PARAMETERS

    values = {param.name: param.validate(given.get(param.name, param.default)) for param in PARAMETERS
              if param.name != "arm"}
    return {**values, "arm": arm}


def build_actor(arm: str, given: Mapping[str, Any], bundle, faults: FaultCounter) -> ActorController:
    """The controller the actor node builds for these parameter values (same functions)."""
    from sim2real_vla_ros.nodes.actor import actor_config, safety_limits

    values = actor_values(arm, given)
    config = actor_config(values)
    other = next(side for side in robot.ARMS if side != arm)
    guard = CollisionGuard(arm, horizon_s=config.dt) if values["collision_guard"] else None
    return ActorController(config, safety_limits(values), 1.0 / bundle.manifest.action.control_rate_hz,
                           bundle.manifest.keypoints_per_arm, faults, urdf_limits=robot.arm_limits(arm), guard=guard,
                           other_limits=safety_limits({**values, "arm": other}))


# ----------------------------------------------------------------------------- results


@dataclass
class ArmRecord:
    """What one actor did: every command sent (slot time, 7 values), chunks and inferences.

    ``chunk_stamps`` holds the observation stamp of every accepted chunk (the header stamp
    of the actor node's ``vla/actor_<arm>/chunk`` message).
    """

    slots: List[float] = field(default_factory=list)
    commands: List[np.ndarray] = field(default_factory=list)
    chunk_stamps: List[float] = field(default_factory=list)
    inferences: int = 0

    @property
    def chunks(self) -> int:
        return len(self.chunk_stamps)

    def command_matrix(self) -> Tuple[np.ndarray, np.ndarray]:
        """(N,) slot times and (N, 7) commands."""
        return np.asarray(self.slots, dtype=np.float64), np.asarray(self.commands, dtype=np.float64).reshape(-1, 7)


@dataclass
class EpisodeResult:
    """The episode's JSON summary and the per-arm command records (for checks)."""

    summary: Dict[str, Any]
    arms: Dict[str, ArmRecord]


def limit_check(slots: np.ndarray, commands: np.ndarray, arm: str) -> Dict[str, Any]:
    """Commands against the URDF position limits, and their tick-to-tick velocity against its velocity limits.

    The velocity of a command is its change from the previous one over the slot interval
    (what a controller executing each command on receipt would be asked for).
    """
    limits = robot.arm_limits(arm)
    finite = np.all(np.isfinite(commands), axis=1)
    outside = (commands < limits.lower - LIMIT_TOLERANCE) | (commands > limits.upper + LIMIT_TOLERANCE)
    velocity_ratio = None
    if commands.shape[0] >= 2:
        intervals = np.diff(slots)
        steps = np.abs(np.diff(commands, axis=0))
        valid = intervals > 1e-9
        velocity = steps[valid] / intervals[valid, None]
        velocity_ratio = float(np.max(velocity / np.asarray(limits.velocity))) if velocity.size else 0.0
    return {"checked": int(commands.shape[0]), "non_finite": int((~finite).sum()),
            "outside_position_limits": int(outside[finite].any(axis=1).sum()),
            "max_velocity_limit_ratio": velocity_ratio,
            "within_limits": bool(commands.shape[0] > 0 and finite.all() and not outside[finite].any()
                                  and (velocity_ratio is None or velocity_ratio <= 1.0 + LIMIT_TOLERANCE))}


# ----------------------------------------------------------------------------- the runner


class _Schedule:
    """An action every ``period_steps`` physics steps from step 0 (the sim node's sim-time grid)."""

    def __init__(self, name: str, rate_hz: float, dt: float, action: Callable[[float], None]) -> None:
        # A rate off the physics grid runs at the nearest whole number of steps (the sim node's
        # schedules, sampled once per step, round the same way).
        self.period_steps = max(1, int(round(1.0 / (float(rate_hz) * dt))))
        self.name, self.action = name, action

    def due(self, step: int) -> bool:
        return step % self.period_steps == 0

    def steps_to_next(self, step: int) -> int:
        return self.period_steps - step % self.period_steps


class InProcessRunner:
    """One episode, simulator + the graph's logic in one process (see the module docstring)."""

    def __init__(self, options: RunnerOptions, settings: Optional[Settings] = None) -> None:
        from sim2real_vla_ros.core.policy.bundle import load_bundle
        from sim2real_vla_ros.core.policy.actor_pipeline import ActorPipeline
        from sim2real_vla_ros.sim.controllers import DirectArmController, TrajectoryArmController
        from sim2real_vla_ros.sim.simulator import Simulator

        self.options = options
        self.settings = settings or resolve_settings(options)
        self.task = tasks.get_task(options.task)
        if options.max_steps is None:
            options.max_steps = self.task.step_limit
        self.arms = graph.parse_arms(options.arms)
        sim = self.settings.simulator
        nodes = self.settings.nodes
        for name in ("inference_latency_s", "camera_latency_s"):
            value = getattr(options, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        self.sim = Simulator(self.task, seed=sim.seed_param, camera_width=sim.camera_width,
                             camera_height=sim.camera_height, timestep=1.0 / sim.physics_rate_hz,
                             shadows=sim.shadows, jitter=sim.jitter, multisamples=sim.multisamples,
                             reset_arms=sim.reset_arms)
        if sim.command_interface == "ros2_control":
            self.controllers = {arm: TrajectoryArmController(arm, sim.interpolation, sim.trajectory_replacement,
                                                             sim.interpolate_from_desired_state)
                                for arm in robot.ARMS}
        else:
            self.controllers = {arm: DirectArmController(arm) for arm in robot.ARMS}
        for arm, controller in self.controllers.items():
            controller.hold(self.sim.initial_arms[arm], self.sim.sim_time)
        # reset_arms keep (the dry run's setting when it homes): go_to_start's fallback, in process.
        self.homing = home_arms(self.sim, self.controllers) if sim.reset_arms == "keep" else None
        # One bundle serves every role (the nodes each load their own; the models are the same).
        threads = {nodes[name].get("intra_op_threads", 1) for name in nodes} - {0}
        intra = max(threads) if threads else None
        self.bundle = load_bundle(self.settings.bundle_path, backend=nodes[graph.PLANNER_NODE].get(
            "inference_backend", "onnxruntime"), intra_op_threads=intra, inter_op_threads=1 if intra else None,
            load_fast_tokenizer=True)
        self.faults = {name: FaultCounter() for name in (graph.CAMERA_MASK_NODE, graph.PLANNER_NODE,
                                                         graph.VALIDATOR_NODE)}
        self.sim_faults = {arm: FaultCounter() for arm in robot.ARMS}  # commands the controllers rejected
        mask_values = nodes[graph.CAMERA_MASK_NODE]
        self.pairer = FramePairer(CAMERAS, mask_values.get("max_skew_s", 0.05),
                                  mask_values.get("max_input_age_s.camera", 0.5))
        self.masker = CameraMasker(self.bundle)
        self.planner = PlannerCore(self.bundle, planner_config(nodes[graph.PLANNER_NODE]),
                                   self.faults[graph.PLANNER_NODE], task_name=_task_name)
        planner_values = nodes[graph.PLANNER_NODE]
        configured = (planner_values.get("image_width", 0), planner_values.get("image_height", 0))
        # The planner's pixel frame: its parameters, else cam_high's camera_info (the render size).
        self.native_size = configured if configured[0] else (self.sim.camera_width, self.sim.camera_height)
        self.validator = ValidatorCore(self.bundle, validator_config(nodes[graph.VALIDATOR_NODE]),
                                       self.faults[graph.VALIDATOR_NODE])
        self.actors: Dict[str, ActorController] = {}
        self.pipelines = {}
        self.actor_faults: Dict[str, FaultCounter] = {}
        for arm in self.arms:
            values = nodes[graph.actor_node_name(arm)]
            self.actor_faults[arm] = FaultCounter()
            self.actors[arm] = build_actor(arm, values, self.bundle, self.actor_faults[arm])
            self.pipelines[arm] = ActorPipeline(self.bundle, arm, relaxed_decode=bool(values.get("relaxed_decode",
                                                                                                  False)))
        self.records = {arm: ArmRecord() for arm in self.arms}
        self._pending_chunks: List[tuple] = []  # (due_s, arm, snapshot, result)
        self._pending_masked: List[tuple] = []  # (due_s, {camera: (masked image, stamp)})
        self._plan_states: List[Tuple[float, dict]] = []
        self._events: List[Tuple[float, dict]] = []
        self._affordances: List[Dict[str, Any]] = []
        self._masked_sets = 0
        self._masked_delivered = 0
        self._success_at_any_time = False
        self._started = False
        self._started_s: Optional[float] = None

    # ------------------------------------------------------------------ graph steps
    def _joint_states(self, now: float) -> None:
        names, positions = robot.ALL_JOINT_NAMES, self.sim.joint_positions()
        velocities = self.sim.joint_velocities()
        for arm, actor in self.actors.items():
            actor.on_joint_state(arm_state_from_joint_state(names, positions, arm), now, now)
            other = next(side for side in robot.ARMS if side != arm)
            actor.on_other_arm(arm_state_from_joint_state(names, positions, other),
                               arm_state_from_joint_state(names, velocities, other), now)
        for arm in robot.ARMS:
            self.validator.on_joint_state(arm, arm_state_from_joint_state(names, positions, arm), now)

    def _cameras(self, now: float) -> None:
        for camera in CAMERAS:
            self.pairer.add(camera, now, self.sim.render(camera))
        frame_set = self.pairer.newest_set(now)
        if frame_set is None:
            return
        try:
            results = self.masker.process([frame_set.frame(name) for name in CAMERAS])
        except Exception as exc:  # as the node: count, publish nothing for this set
            self.faults[graph.CAMERA_MASK_NODE].fault("mask_model_error", f"{type(exc).__name__}: {exc}")
            return
        self._masked_sets += 1
        stamps = frame_set.stamps_s
        masked = {name: (result.masked, stamps[name]) for name, result in zip(CAMERAS, results)}
        if self.options.camera_latency_s > 0.0:
            self._pending_masked.append((now + self.options.camera_latency_s, masked))
        else:
            self._deliver_masked(masked)

    def _deliver_due_masked(self, now: float) -> None:
        while self._pending_masked and self._pending_masked[0][0] <= now + 1e-9:
            self._deliver_masked(self._pending_masked.pop(0)[1])

    def _deliver_masked(self, masked: Mapping[str, tuple]) -> None:
        """The masked images reach their subscribers (as /vla/masked/<camera> would)."""
        self._masked_delivered += 1
        self.planner.on_masked_image(*masked[TOP_CAMERA])
        for camera, (image, stamp) in masked.items():
            self.validator.on_image(camera, image, stamp)
        for arm, actor in self.actors.items():
            actor.on_image("cam_high", *masked[TOP_CAMERA])
            actor.on_image("wrist", *masked[WRIST_CAMERA[arm]])

    def _planner(self, now: float) -> None:
        # As the dry run: the instruction goes out once masked images of every camera flow.
        if not self._started and now >= self.options.start_s - 1e-9 and self._masked_delivered:
            self._started = True  # /vla/instruction: the node starts the task on receipt
            self._started_s = now
            ok, message = self.planner.start(self.task.instruction, now, "/vla/instruction")
            if not ok:
                raise RuntimeError(f"the planner refused the task: {message}")
            self._publish_planner(now)
        job = self.planner.prepare(now)
        self._publish_planner(now)
        if job is None:
            return
        outputs = self.planner.predict(job)
        if outputs is not None:
            self.planner.on_outputs(job, outputs, now)
            self._publish_planner(now)

    def _publish_planner(self, now: float) -> None:
        publication = self.planner.publication(now, self.native_size)
        if publication.affordances is not None:
            for arm, target in publication.affordances.items():
                if target.pixels.shape[0]:
                    self._affordances.append({"sim_s": now, "arm": arm, "index": target.index,
                                              "seq": self.planner.seq})
                if arm in self.actors:
                    self.actors[arm].on_affordance(target.pixels, target.index if target.pixels.shape[0] else None,
                                                   target.stamp_s)
        if publication.plan_state is not None:
            # A copy, as each subscriber gets its own message; the nodes send the same record as a
            # PlanState (nodes/task_messages, round trip tested) and parse it back the same way.
            payload = copy.deepcopy(publication.plan_state)
            self._plan_states.append((now, payload))
            self.validator.on_plan(parse_plan_state(payload, self.bundle.manifest.keypoints_per_arm))
            for actor in self.actors.values():
                actor.on_plan(*actor_plan_inputs(payload, self.bundle.instruction_embedding)[:2])

    def _validator(self, now: float) -> None:
        decided = self.validator.tick(now)
        if decided.event_record is not None:
            payload = copy.deepcopy(decided.event_record)
            self._events.append((now, payload))
            event, index, _reason = parse_validator_event(payload)
            self.planner.on_gate_event(event, index, now)
            self._publish_planner(now)

    def _actors(self, now: float) -> None:
        self._apply_due_chunks(now)
        for arm, actor in self.actors.items():
            output = actor.tick(now)
            if output.command is not None:
                self._send(arm, output, now)
            if output.request_inference:
                self._infer(arm, now)

    def _send(self, arm: str, output, now: float) -> None:
        record = self.records[arm]
        record.slots.append(output.slot_s)
        record.commands.append(np.array(output.command, dtype=np.float64))
        controller = self.controllers[arm]
        mode = self.actors[arm].config.output_mode
        if mode == "trajectory":
            from sim2real_vla_ros.sim.trajectory import TrajectoryPoint

            dt = self.actors[arm].dt
            points = [TrajectoryPoint(list(map(float, q)), (k + 1) * dt) for k, q in enumerate(output.trajectory)]
            # header.stamp 0: start on receipt (the actor never future-stamps).
            result = controller.accept(list(robot.arm_joint_names(arm)), points, 0.0, now,
                                       self.sim.arm_positions(arm))
            if not result.ok:
                self.sim_faults[arm].fault(f"rejected:{result.code.value}", result.reason)
        elif mode == "stream":
            result = controller.forward_command(np.asarray(output.command, dtype=float), now)
            if not result.ok:
                self.sim_faults[arm].fault(f"rejected:{result.code}", result.reason)
        else:
            names, positions = urdf_to_vendor(arm, output.command)
            controller.set_target(vendor_to_arm(names, positions), now)

    def _infer(self, arm: str, now: float) -> None:
        actor = self.actors[arm]
        snapshot = actor.take_snapshot()
        if snapshot is None:
            actor.inference_finished()
            return
        self.records[arm].inferences += 1
        try:
            result = self.pipelines[arm].infer(observation_of(snapshot))
        except (ValueError, TypeError) as exc:  # as the node: hold, counted
            actor.record_failure("inference_error", f"{type(exc).__name__}: {exc}")
            actor.inference_finished()
            return
        if self.options.inference_latency_s > 0.0:
            self._pending_chunks.append((now + self.options.inference_latency_s, arm, snapshot, result))
            return
        self._apply_chunk(arm, snapshot, result, now)

    def _apply_due_chunks(self, now: float) -> None:
        due = [item for item in self._pending_chunks if item[0] <= now + 1e-9]
        self._pending_chunks = [item for item in self._pending_chunks if item[0] > now + 1e-9]
        for _due, arm, snapshot, result in due:
            self._apply_chunk(arm, snapshot, result, now)

    def _apply_chunk(self, arm: str, snapshot, result, now: float) -> None:
        actor = self.actors[arm]
        try:
            if actor.apply_result(snapshot, result, now) is not None:
                self.records[arm].chunk_stamps.append(snapshot.stamp_s)
        finally:
            actor.inference_finished()

    # ------------------------------------------------------------------ the loop
    def run(self) -> EpisodeResult:
        """Run the episode to its end (task over, duration or step limit); returns the result."""
        sim_settings, nodes = self.settings.simulator, self.settings.nodes
        dt = self.sim.timestep
        schedules = [_Schedule("joint_states", sim_settings.joint_state_rate_hz, dt, self._joint_states)]
        if sim_settings.enable_cameras:
            rates = set(sim_settings.camera_rates.values())
            if len(rates) != 1:
                raise ValueError(f"per-camera rates {sim_settings.camera_rates}: the runner renders the three "
                                 "cameras together (camera_mask pairs them)")
            schedules.append(_Schedule("cameras", rates.pop(), dt, self._cameras))
        schedules += [
            _Schedule("planner", planner_config(nodes[graph.PLANNER_NODE]).rate_hz, dt, self._planner),
            _Schedule("validator", nodes[graph.VALIDATOR_NODE].get("validator_rate_hz", 5.0), dt, self._validator),
            _Schedule("actors", next(iter(self.actors.values())).config.control_rate_hz, dt, self._actors),
        ]
        start_sim, wall_start, cpu_start = self.sim.sim_time, time.monotonic(), time.process_time()
        step, end_reason = 0, ""
        while True:
            now = self.sim.sim_time
            self._deliver_due_masked(now)
            for schedule in schedules:
                if schedule.due(step):
                    schedule.action(now)
            self._success_at_any_time = self._success_at_any_time or bool(self.sim.task_status()["success"])
            end_reason = self._end_reason(now - start_sim)
            if end_reason:
                break
            steps = min(schedule.steps_to_next(step) for schedule in schedules)
            if self._pending_masked:
                steps = min(steps, max(1, math.ceil((self._pending_masked[0][0] - now) / dt - 1e-6)))
            self.sim.step(steps, self.controllers)
            step += steps
        wall, cpu = time.monotonic() - wall_start, time.process_time() - cpu_start
        return EpisodeResult(self._summary(end_reason, self.sim.sim_time - start_sim, wall, cpu), self.records)

    def _end_reason(self, elapsed_s: float) -> str:
        if not self._started:
            # No masked image ever reached the planner (cameras off, every set failed): give up.
            limit = self.options.start_s + self.options.duration_s
            return f"task never started within {limit:g} s sim" if elapsed_s >= limit - 1e-9 else ""
        phase = self.planner.chain.phase.value
        if phase in TERMINAL_PHASES:
            return planner_end_reason(phase)
        if self.sim.sim_time - self._started_s >= self.options.duration_s - 1e-9:
            return f"duration limit ({self.options.duration_s:g} s sim)"
        task_arms = [arm for arm in self.task.arms if arm in self.records]
        if task_arms and min(self.records[arm].chunks for arm in task_arms) >= self.options.max_steps:
            return f"step limit ({self.options.max_steps} chunks)"
        return ""

    def _summary(self, end_reason: str, sim_s: float, wall_s: float, cpu_s: float) -> Dict[str, Any]:
        status = self.sim.task_status()
        state = self.planner.chain.state
        control = {}
        for arm, record in self.records.items():
            actor = self.actors[arm]
            slots, commands = record.command_matrix()
            control[arm] = {"chunks": record.chunks, "inferences": record.inferences, "commands": len(record.slots),
                            "limits": limit_check(slots, commands, arm),
                            "safety": actor.safety.counters.as_dict(), "faults": self.actor_faults[arm].snapshot()}
        return {
            "schema": SUMMARY_SCHEMA, "task": self.task.name, "seed": self.sim.seed,
            "instruction": self.task.instruction,
            "output_mode": self.options.output_mode, "arms": list(self.arms),
            "inference_latency_s": self.options.inference_latency_s,
            "camera_latency_s": self.options.camera_latency_s,
            "end_reason": end_reason, "total_sim_s": sim_s,
            "episode_sim_s": None if self._started_s is None else self.sim.sim_time - self._started_s,
            "task_started_sim_s": self._started_s,
            # On a shared machine the process's CPU time is the steadier measure of the loop's cost.
            "wall_s": wall_s, "cpu_s": cpu_s, "sim_s_per_wall_s": sim_s / wall_s if wall_s > 0 else None,
            "sim_s_per_cpu_s": sim_s / cpu_s if cpu_s > 0 else None,
            "planner": {"final_phase": state.phase.value, "done": state.phase.value == "succeeded",
                        "achieved_count": state.achieved_count, "reason": state.last_reason,
                        "affordance_indices": affordance_indices(
                            (p.get("index"), (p.get("affordance") or {}).get("seq")) for _t, p in self._plan_states),
                        "affordances": self._affordances, "faults": self.faults[graph.PLANNER_NODE].snapshot()},
            "validator": {"decisions": self.validator.decisions,
                          "events": [{"sim_s": t, "event": p["event"], "index": p["index"]} for t, p in self._events],
                          "faults": self.faults[graph.VALIDATOR_NODE].snapshot()},
            "camera_mask": {"sets": self._masked_sets, "faults": self.faults[graph.CAMERA_MASK_NODE].snapshot()},
            "simulator": {"task_success": bool(status["success"]), "success_at_any_time": self._success_at_any_time,
                          "criteria": status["criteria"],
                          "rejected_commands": {arm: faults.snapshot() for arm, faults in self.sim_faults.items()}},
            "control": control,
            "homing": self.homing,
        }


def home_arms(sim, controllers: Mapping[str, Any], speed_scale: float = homing.DEFAULT_SPEED_SCALE,
              timeout_s: float = 60.0) -> Dict[str, Any]:
    """Move both arms of ``sim`` (a :class:`Simulator`) to the task's start pose the way
    ``go_to_start --backend fallback`` does.

    The same planner (collision-checked straight line or RRT-Connect from where the arms are)
    and the same executor (each arm's collision guard and safety filter at 50 Hz), with its
    commands going to the simulator's controllers instead of the joint_trajectory_controllers'
    topics and the physics stepped in between: what an evaluation runs between episodes.

    Raises
    ------
    homing.HomingError
        No plan, or the start pose not reached within ``timeout_s`` of sim time.
    """
    dt = 1.0 / homing.CONTROL_RATE_HZ
    start = np.concatenate([sim.arm_positions(arm) for arm in robot.ARMS])
    plan = homing.JointSpacePlanner().plan(start, homing.start_pose(sim.task))
    velocity, acceleration = homing.homing_limits(speed_scale)
    executor = homing.HomingExecutor(homing.time_parameterize(plan.waypoints, dt, velocity, acceleration), dt)
    steps = max(1, int(round(dt / sim.timestep)))
    began = sim.sim_time
    while True:
        measured = {arm: sim.arm_positions(arm) for arm in robot.ARMS}
        if executor.done(measured):
            break
        if sim.sim_time - began > timeout_s:
            raise homing.HomingError(f"start pose not reached within {timeout_s:g} s of sim time")
        for arm, command in executor.tick(sim.sim_time, measured, sim.sim_time).items():
            if command is None:
                continue
            controller = controllers[arm]
            if hasattr(controller, "forward_command"):
                controller.forward_command(command, sim.sim_time)
            else:
                controller.set_target(command, sim.sim_time)
        sim.step(steps, controllers)
    return {"method": plan.method, "waypoints": len(plan.waypoints), "duration_s": round(sim.sim_time - began, 3),
            "guard_stops": dict(executor.blocked), "planning_time_s": round(plan.planning_time_s, 3)}


def affordance_indices(current: Iterable[Tuple[Any, Any]]) -> List[int]:
    """The index of each new current affordance, in order (a re-plan repeats its index).

    ``current`` holds the ``(index, affordance seq)`` of successive plan-state records
    (``/vla/plan_state``) (seq None = no current affordance), so the dry run's report (its affordance
    history has both fields) gives the comparable sequence.
    """
    indices, last_seq = [], None
    for index, seq in current:
        if seq is not None and seq != last_seq:
            indices.append(int(index))
            last_seq = seq
    return indices


def _task_name(instruction: str) -> Optional[str]:
    try:
        return tasks.task_for_instruction(instruction).name
    except (tasks.UnknownTaskError, tasks.TaskConfigError):
        return None


def run_episode(options: RunnerOptions) -> EpisodeResult:
    """Build a runner for ``options`` and run its episode."""
    runner = InProcessRunner(options)
    try:
        return runner.run()
    finally:
        runner.sim.close()


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[RunnerOptions, Optional[str]]:
    parser = argparse.ArgumentParser(
        prog="in_process", description="One episode of a task: the MuJoCo simulator and the VLA graph's logic "
                                       "in one process (no ROS), as fast as the CPU allows; prints a JSON summary.")
    add_episode_arguments(parser)
    parser.add_argument("--output-mode", choices=graph.OUTPUT_MODES, default="trajectory",
                        help="actor output, applied as the sim node applies it (default: %(default)s)")
    parser.add_argument("--bundle", default="", help="model bundle folder (default: the installed models/reference)")
    parser.add_argument("--params-file", default="", help="VLA node parameter file (default: config/vla.yaml)")
    parser.add_argument("--arms", default="left,right", help="arms that get an actor (default: %(default)s)")
    parser.add_argument("--inference-latency-s", type=float, default=0.0,
                        help="sim time an actor chunk takes to arrive (default: %(default)s = synchronous)")
    parser.add_argument("--camera-latency-s", type=float, default=0.0,
                        help="sim time from a camera frame to its masked image reaching the nodes "
                             "(default: %(default)s = synchronous)")
    parser.add_argument("--start-s", type=float, default=0.0,
                        help="sim time at which the instruction is given (default: %(default)s)")
    parser.add_argument("--out", default=None, help="also write the summary to this JSON file")
    args = parser.parse_args(argv)
    options = RunnerOptions(task=args.task, seed=args.seed, duration_s=args.duration_s, max_steps=args.max_steps,
                            output_mode=args.output_mode, bundle=args.bundle, params_file=args.params_file,
                            arms=graph.parse_arms(args.arms), inference_latency_s=args.inference_latency_s,
                            camera_latency_s=args.camera_latency_s,
                            start_s=args.start_s)
    return options, args.out


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        options, out = parse_args(argv)
        result = run_episode(options)
    except (ValueError, KeyError) as exc:
        print(f"in_process: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result.summary, indent=2, allow_nan=False, default=_json_default)
    if out:
        with open(out, "w", encoding="utf-8") as stream:
            stream.write(text + "\n")
    print(text)
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
