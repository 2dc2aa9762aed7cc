"""Benchmark the async actor against a synchronous (openpi ActionChunkBroker) baseline.

One run, the same real model for both: the reference bundle's left-arm actor
(:class:`ActorPipeline`: encoder, greedy FAST token generation, FAST decode, unnormalise),
with an artificial inference delay of 100, 200 and 300 ms added to its measured compute time.
Both modes run the actor node's own control object, :class:`ActorController` (schedule, chunk
executor, safety filter), in simulated time (:func:`actor_episode.run_episode`, a deterministic
discrete-event simulation, no sleeps):

* control loop at 50 Hz; every command goes through :class:`SafetyFilter` with the left arm's
  URDF limits and the default safety configuration (the actor node's);
* ``sync``: infer when the chunk has run out, hold (no fresh setpoint) while inference runs,
  then execute the new chunk from its step 0 (``--sync-horizon`` steps, default all of it);
* ``async/<blend>``: the actor node's schedule: ask for the next chunk when at most
  ``--request-threshold-s`` of the current one is left (the node's ``request_threshold_s``),
  splice the result in with the measured time since its observation, blend the seam with
  ``none``, ``crossfade`` (``--crossfade-s``, the node's ``crossfade_s``) or ``ensemble``, with
  the chunk's steps interpolated linearly; ``async/crossfade+pchip`` interpolates them with
  monotone cubics instead (the node's ``chunk_interpolation``);
* robot: perfect tracking with a one-tick delay (the measured state at a tick is the command
  sent at the tick before), or a first-order lag with ``--tracking-tau``;
* observations: per seed, a masked ``cam_high`` and wrist image rendered once with the
  reference bundle's synthetic world, a fixed random affordance, a random start state; the
  joint state given to the model is the simulated one at the observation's tick.

Inference latency in simulated time = compute time + artificial delay. By default the compute
time is the median of a calibration phase (``--compute-time median``) so that the simulated
timeline does not depend on what else this shared machine is doing; every call's real compute
time is still measured and reported. ``--compute-time per-call`` uses each call's own time.

Metrics (medians over seeds; each seed is one episode per mode and delay):

* ticks without a fresh setpoint: from the first chunk's arrival to the end (the wait for
  the first chunk is the same for every mode), count and fraction of ticks;
* episode time: simulated seconds from the first observation until ``--chunks`` chunks'
  worth of fresh setpoints (``--chunks`` x 49 ticks = 0.98 s each for a 25-step chunk at
  25 Hz) have been executed, i.e. the same amount of policy motion in every mode;
* seam velocity / acceleration: the largest ``|v|`` (rad/s) and ``|a|`` (rad/s^2) over
  joints 1-6 of the commands actually sent, within the seam windows of
  :mod:`actor_episode` (the finger, in metres, is left out); the largest over
  all seams of the episode. The same over the whole episode for context, and the whole
  episode's RMS and 95th-percentile ``|a|`` (the maximum is the safety filter's limit in
  every mode; these show how hard the motion is in between).

Ratios are async / sync of the medians. Prints a table and writes
benchmarks/results/bench_async_actor.json with the machine description.

Usage: python benchmarks/bench_async_actor.py [--seeds 10] [--delays-ms 100 200 300]
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime

from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation, ActorPipeline
from sim2real_vla_ros.core.policy.bundle import load_bundle
from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController
from sim2real_vla_ros.core.policy.observation import apply_mask
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.core.control.safety import SafetyLimits
from sim2real_vla_ros.paths import share_path
from actor_episode import LoopConfig, LoopResult, PolicyOutput, run_episode
from bench_common import machine, write_results

ARM = "left"
REVOLUTE_JOINTS = tuple(range(6))  # joints 1-6 (rad); joint7 is the finger (m)
BLENDS = ("none", "crossfade", "ensemble")
MODES = ("sync", *(f"async/{blend}" for blend in BLENDS), "async/crossfade+pchip")
RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_async_actor.json")
_EPS = 1e-9


@dataclass(frozen=True)
class Scenario:
    """What one seed fixes: images, affordance, instruction and the arm's start state."""

    seed: int
    wrist_rgb: np.ndarray
    top_rgb: np.ndarray
    affordance: np.ndarray
    instruction: str
    initial_state: np.ndarray


def make_scenarios(bundle, limits: SafetyLimits, seeds: range) -> list[Scenario]:
    """Render each seed's images once with the reference bundle's synthetic world (masked convention)."""
    from training.make_reference_bundle import SyntheticWorld

    instructions = sorted(bundle.known_instructions)
    normalizer = bundle.normalizer(ARM)
    scenarios = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        world = SyntheticWorld(bundle.manifest.mask_classes, seed)
        top = world.render(rng, 2, robot=True)
        wrist = world.render(rng, 1, size_scale=2.2, robot=True)
        affordance = rng.uniform(0.05, 0.95, size=(bundle.manifest.keypoints_per_arm, 2))
        start = normalizer.unnormalize(rng.uniform(-0.85, 0.85, size=bundle.manifest.action.dim))
        scenarios.append(Scenario(
            seed=seed,
            wrist_rgb=apply_mask(wrist.image, wrist.labels),
            top_rgb=apply_mask(top.image, top.labels),
            affordance=affordance,
            instruction=instructions[seed % len(instructions)],
            initial_state=np.clip(start, limits.lower, limits.upper),
        ))
    return scenarios


class ModelPolicy:
    """The real actor pipeline as a :data:`actor_episode.Policy`.

    Parameters
    ----------
    pipeline : ActorPipeline
    scenario : Scenario
    compute_s : float or None
        Simulated compute time of every call; None: each call's measured wall time.
    """

    def __init__(self, pipeline: ActorPipeline, scenario: Scenario, compute_s: float | None) -> None:
        self.pipeline = pipeline
        self.scenario = scenario
        self.compute_s = compute_s
        self.measured_s: list[float] = []
        self.failures: dict[str, int] = {}

    def __call__(self, joint_state: np.ndarray, obs_stamp_s: float) -> PolicyOutput:
        scenario = self.scenario
        observation = ActorObservation(scenario.wrist_rgb, scenario.top_rgb, scenario.affordance, joint_state,
                                       scenario.instruction)
        started = time.perf_counter()
        result = self.pipeline.infer(observation)
        measured = time.perf_counter() - started
        self.measured_s.append(measured)
        compute = measured if self.compute_s is None else self.compute_s
        if not result.ok:
            key = result.failure.kind.value
            self.failures[key] = self.failures.get(key, 0) + 1
            return PolicyOutput(None, compute, result.failure.describe())
        return PolicyOutput(result.chunk, compute)


def calibrate(pipeline: ActorPipeline, scenarios: list[Scenario], calls: int) -> dict:
    """Wall time of ``calls`` inferences spread over the scenarios (after one warm-up each)."""
    for scenario in scenarios:
        ModelPolicy(pipeline, scenario, None)(scenario.initial_state, 0.0)
    samples = []
    for index in range(calls):
        scenario = scenarios[index % len(scenarios)]
        policy = ModelPolicy(pipeline, scenario, None)
        policy(scenario.initial_state, 0.0)
        samples.extend(policy.measured_s)
    return summarize_times(samples)


def summarize_times(samples: list[float]) -> dict:
    """Median / p90 / max / mean in ms."""
    array = np.asarray(samples) * 1e3
    return {
        "calls": int(array.size),
        "median_ms": float(np.median(array)),
        "p90_ms": float(np.percentile(array, 90)),
        "max_ms": float(array.max()),
        "mean_ms": float(array.mean()),
    }


def fresh_ticks_per_chunk(steps: int, chunk_dt: float, control_dt: float) -> int:
    """Control ticks from a chunk's step 0 to its last step inclusive (how long sync executes it)."""
    return int(math.floor((steps - 1) * chunk_dt / control_dt + _EPS)) + 1


def run_mode(mode: str, scenario: Scenario, pipeline: ActorPipeline, limits: SafetyLimits, args,
             delay_s: float, chunk_dt: float, compute_s: float | None) -> tuple[LoopResult, ModelPolicy]:
    """One episode of ``sync`` or ``async/<blend>[+<interpolation>]`` on a fresh ActorController."""
    schedule, _, blend = mode.partition("/")
    blend, _, interpolation = blend.partition("+")
    config = ActorConfig(arm=ARM, control_rate_hz=args.control_rate_hz, output_mode="stream", blend=blend or "none",
                         crossfade_s=args.crossfade_s, ensemble_decay=args.ensemble_decay,
                         chunk_interpolation=interpolation or "linear", request_threshold_s=args.request_threshold_s,
                         schedule=schedule, sync_horizon=args.sync_horizon)
    controller = ActorController(config, limits, chunk_dt, pipeline.bundle.manifest.keypoints_per_arm)
    world = LoopConfig(extra_delay_s=delay_s, motion_s=args.motion_s, tracking_time_constant_s=args.tracking_tau,
                       max_time_s=4.0 * args.motion_s + 10.0)
    policy = ModelPolicy(pipeline, scenario, compute_s)
    result = run_episode(policy, controller, world, scenario.initial_state, REVOLUTE_JOINTS)
    return result, policy


def episode_metrics(result: LoopResult) -> dict:
    """The per-episode numbers that get aggregated."""
    return {
        "finished": result.finished,
        "ticks": result.ticks,
        "stale_ticks": result.ticks_without_fresh,
        "stale_fraction": result.stale_fraction,
        "longest_stale_streak": result.longest_stale_streak,
        "episode_time_s": result.episode_time_s,
        "seam_max_velocity": max(result.seam_velocity, default=0.0),
        "seam_max_acceleration": max(result.seam_acceleration, default=0.0),
        "seam_median_velocity": float(np.median(result.seam_velocity)) if result.seam_velocity else 0.0,
        "seam_median_acceleration": float(np.median(result.seam_acceleration)) if result.seam_acceleration else 0.0,
        "episode_max_velocity": result.episode_max_velocity,
        "episode_max_acceleration": result.episode_max_acceleration,
        **_acceleration_spread(result),
        "rate_limited_ticks": result.rate_limited_ticks,
        "seam_rate_limited_ticks": result.seam_rate_limited_ticks,
        "executor_seam_max_jump": _executor_seam_max(result, "seam_jump"),
        "executor_seam_max_velocity": _executor_seam_max(result, "seam_velocity"),
        "executor_seam_max_acceleration": _executor_seam_max(result, "seam_acceleration"),
        "seams": len(result.seam_velocity),
        "inferences": result.inferences,
        "failed_inferences": result.failed_inferences,
        "path_length_rad": result.path_length,
        "chunks_dropped": sum(v for k, v in result.executor_counters.items() if k.startswith("dropped:")),
    }


def _acceleration_spread(result: LoopResult) -> dict:
    """RMS and p95 of |a| (rad/s^2, joints 1-6) of the sent commands after the first chunk."""
    after = result.times >= result.first_chunk_s
    commands, times = result.commands[after][:, list(REVOLUTE_JOINTS)], result.times[after]
    if len(times) < 3:
        return {"episode_rms_acceleration": 0.0, "episode_p95_acceleration": 0.0}
    dt = np.diff(times)
    velocity = np.diff(commands, axis=0) / dt[:, None]
    acceleration = np.abs(np.diff(velocity, axis=0) / dt[1:, None])
    return {"episode_rms_acceleration": float(np.sqrt(np.mean(acceleration ** 2))),
            "episode_p95_acceleration": float(np.percentile(acceleration, 95))}


def _executor_seam_max(result: LoopResult, field: str) -> float:
    """Largest pre-safety seam value over joints 1-6 the executor reported (its own blended output)."""
    values = [float(np.max(getattr(report, field)[list(REVOLUTE_JOINTS)])) for report in result.splices
              if getattr(report, field) is not None]
    return max(values, default=0.0)


AGGREGATED = ("stale_ticks", "stale_fraction", "longest_stale_streak", "episode_time_s", "seam_max_velocity",
              "seam_max_acceleration", "seam_median_velocity", "seam_median_acceleration", "episode_max_velocity",
              "episode_max_acceleration", "episode_rms_acceleration", "episode_p95_acceleration",
              "rate_limited_ticks", "seam_rate_limited_ticks", "executor_seam_max_jump",
              "executor_seam_max_velocity", "executor_seam_max_acceleration", "seams", "inferences",
              "failed_inferences", "path_length_rad", "chunks_dropped")
RATIO_KEYS = ("stale_ticks", "stale_fraction", "episode_time_s", "seam_max_velocity", "seam_max_acceleration",
              "seam_rate_limited_ticks", "executor_seam_max_jump", "executor_seam_max_velocity",
              "executor_seam_max_acceleration", "episode_max_velocity", "episode_max_acceleration",
              "episode_rms_acceleration", "episode_p95_acceleration", "rate_limited_ticks")
TABLE_RATIOS = ("stale_ticks", "episode_time_s", "seam_max_velocity", "seam_max_acceleration",
                "seam_rate_limited_ticks", "executor_seam_max_velocity", "executor_seam_max_acceleration",
                "episode_rms_acceleration", "rate_limited_ticks")


def aggregate(per_seed: list[dict]) -> dict:
    """Medians over seeds (and whether every episode finished)."""
    summary = {key: float(np.median([episode[key] for episode in per_seed])) for key in AGGREGATED}
    summary["all_finished"] = all(episode["finished"] for episode in per_seed)
    return summary


def ratios(async_summary: dict, sync_summary: dict) -> dict:
    """async / sync per metric (None where sync is 0)."""
    return {key: (async_summary[key] / sync_summary[key] if sync_summary[key] else None) for key in RATIO_KEYS}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="model bundle folder (default: the installed reference)")
    parser.add_argument("--seeds", type=int, default=10, help="scenarios (episodes per mode and delay)")
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[100.0, 200.0, 300.0],
                        help="artificial inference delays (ms)")
    parser.add_argument("--chunks", type=int, default=8, help="episode length in chunks' worth of fresh setpoints")
    parser.add_argument("--control-rate-hz", type=float, default=50.0)
    parser.add_argument("--request-threshold-s", type=float, default=0.5,
                        help="async: ask for a chunk when at most this much of the current one is left")
    parser.add_argument("--crossfade-s", type=float, default=0.2, help="async crossfade minimum length (s)")
    parser.add_argument("--ensemble-decay", type=float, default=0.01)
    parser.add_argument("--sync-horizon", type=int, default=None,
                        help="sync: steps executed per chunk (default: the whole chunk)")
    parser.add_argument("--tracking-tau", type=float, default=0.0,
                        help="robot first-order lag (s); 0 = perfect tracking with a one-tick delay")
    parser.add_argument("--compute-time", choices=("median", "per-call"), default="median",
                        help="simulated compute time: the calibration median, or each call's measured time")
    parser.add_argument("--calibration-calls", type=int, default=30)
    parser.add_argument("--output", default=RESULTS_FILE)
    return parser.parse_args(argv)


def print_table(report: dict) -> None:
    print(f"{'delay':>6} {'mode':<22}{'stale n':>8}{'stale %':>8}{'episode s':>10}{'seam v':>8}{'seam a':>8}"
          f"{'lim n':>6}{'ex.jump':>8}{'ex.v':>7}{'ex.a':>7}{'ep. v':>7}{'ep. a':>7}{'a rms':>7}{'a p95':>7}"
          f"{'ep.lim':>7}{'infer':>6}")
    for delay in report["results"]:
        for mode, entry in delay["modes"].items():
            s = entry["median"]
            print(f"{delay['delay_ms']:>5.0f}ms {mode:<22}{s['stale_ticks']:>8.0f}{100 * s['stale_fraction']:>8.1f}"
                  f"{s['episode_time_s']:>10.2f}{s['seam_max_velocity']:>8.3f}{s['seam_max_acceleration']:>8.2f}"
                  f"{s['seam_rate_limited_ticks']:>6.0f}{s['executor_seam_max_jump']:>8.3f}"
                  f"{s['executor_seam_max_velocity']:>7.2f}{s['executor_seam_max_acceleration']:>7.1f}"
                  f"{s['episode_max_velocity']:>7.3f}{s['episode_max_acceleration']:>7.2f}"
                  f"{s['episode_rms_acceleration']:>7.2f}{s['episode_p95_acceleration']:>7.2f}"
                  f"{s['rate_limited_ticks']:>7.0f}{s['inferences']:>6.0f}")
    print("ratios async / sync (of the medians):")
    print(f"{'delay':>6} {'mode':<22}" + "".join(f"{_short(key):>9}" for key in TABLE_RATIOS))
    for delay in report["results"]:
        for mode, ratio in delay["ratios_async_over_sync"].items():
            cells = "".join(f"{ratio[key]:>9.3f}" if ratio[key] is not None else f"{'n/a':>9}" for key in TABLE_RATIOS)
            print(f"{delay['delay_ms']:>5.0f}ms {mode:<22}{cells}")
    print("stale: ticks without a fresh setpoint; seam v / a: largest |v| rad/s, |a| rad/s^2 of the sent commands "
          "(joints 1-6) at seams; lim n: seam ticks the safety filter rate-limited; ex.*: ChunkExecutor's own seam "
          "(before the safety filter: jump rad, v, a); ep.: whole episode (a rms / p95: of |a|; ep.lim: ticks "
          "rate-limited); medians over seeds")


def _short(key: str) -> str:
    return {"stale_ticks": "stale", "episode_time_s": "episode", "seam_max_velocity": "seam v",
            "seam_max_acceleration": "seam a", "seam_rate_limited_ticks": "lim n",
            "executor_seam_max_velocity": "ex.v", "executor_seam_max_acceleration": "ex.a",
            "episode_rms_acceleration": "a rms", "rate_limited_ticks": "ep.lim"}[key]


def main(argv=None) -> None:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    bundle = load_bundle(args.bundle or share_path("models", "reference"), intra_op_threads=1, inter_op_threads=1)
    pipeline = ActorPipeline(bundle, ARM)
    limits = SafetyLimits.from_config(arm_limits(ARM))
    chunk_dt = 1.0 / bundle.manifest.action.control_rate_hz
    control_dt = 1.0 / args.control_rate_hz
    horizon = args.sync_horizon or bundle.manifest.action.chunk_length
    ticks_per_chunk = fresh_ticks_per_chunk(horizon, chunk_dt, control_dt)
    args.motion_s = args.chunks * ticks_per_chunk * control_dt
    scenarios = make_scenarios(bundle, limits, range(args.seeds))
    calibration = calibrate(pipeline, scenarios, args.calibration_calls)
    compute_s = calibration["median_ms"] / 1e3 if args.compute_time == "median" else None
    modes = list(MODES)
    results, all_measured, failures = [], [], {}
    for delay_ms in args.delays_ms:
        per_mode = {mode: [] for mode in modes}
        for scenario in scenarios:
            for mode in modes:
                result, policy = run_mode(mode, scenario, pipeline, limits, args, delay_ms / 1e3, chunk_dt, compute_s)
                per_mode[mode].append({"seed": scenario.seed, **episode_metrics(result)})
                all_measured.extend(policy.measured_s)
                for key, count in policy.failures.items():
                    failures[key] = failures.get(key, 0) + count
        summaries = {mode: {"median": aggregate(episodes), "episodes": episodes} for mode, episodes in per_mode.items()}
        results.append({
            "delay_ms": delay_ms,
            "modes": summaries,
            "ratios_async_over_sync": {mode: ratios(summaries[mode]["median"], summaries["sync"]["median"])
                                       for mode in modes[1:]},
        })
    report = {
        "benchmark": "async_actor_vs_sync",
        "definitions": {
            "sync": "openpi ActionChunkBroker: infer when the chunk has run out, hold while inferring, "
                    "execute the result from step 0 (no latency compensation)",
            "async": "actor node schedule: request at <= request_threshold_s left, splice with the measured "
                     "elapsed time, blend the seam (none / crossfade / ensemble); chunk steps interpolated "
                     "linearly, or with monotone cubics (+pchip)",
            "stale_ticks": "control ticks without a fresh setpoint, from the first chunk's arrival to the end",
            "episode_time_s": f"simulated time until {args.chunks} chunks' worth of fresh setpoints "
                              f"({args.chunks} x {ticks_per_chunk} ticks = {args.motion_s:.2f} s) were executed",
            "seam_max_velocity": "largest |v| (rad/s) over joints 1-6 of the sent commands in any seam window",
            "seam_max_acceleration": "largest |a| (rad/s^2), same windows",
            "seam_rate_limited_ticks": "ticks inside seam windows in which the safety filter cut velocity or "
                                       "acceleration (rate_limited_ticks: the whole episode)",
            "seam_window": "from 2 ticks before min(splice, previous chunk end) to 2 ticks after "
                           "max(blend end, splice + 0.2 s) (ensemble: also previous chunk end + 2 ticks)",
            "executor_seam_max_*": "ChunkExecutor's SpliceReport over joints 1-6: the unblended jump |new - old| (rad) "
                                   "and its blended output's |v|, |a| around the splice on the chunk grid, before the "
                                   "safety filter",
            "episode_max_*": "largest |v|, |a| of the sent commands over the whole episode after the first chunk",
            "episode_rms_acceleration / episode_p95_acceleration": "RMS / 95th percentile of |a| (rad/s^2) over "
                                                                  "joints 1-6 and ticks, same span",
            "robot": "perfect tracking, one-tick delay" if args.tracking_tau == 0 else
                     f"first-order lag, tau {args.tracking_tau} s",
            "aggregation": "median over seeds; ratios are async / sync of the medians",
        },
        "config": {
            "bundle": bundle.folder, "arm": ARM, "seeds": args.seeds, "delays_ms": args.delays_ms,
            "control_rate_hz": args.control_rate_hz, "chunk_length": bundle.manifest.action.chunk_length,
            "chunk_rate_hz": bundle.manifest.action.control_rate_hz, "sync_horizon": horizon,
            "request_threshold_s": args.request_threshold_s, "crossfade_s": args.crossfade_s,
            "ensemble_decay": args.ensemble_decay, "compute_time": args.compute_time,
            "simulated_compute_ms": None if compute_s is None else compute_s * 1e3,
            "safety_limits": {"max_velocity": limits.max_velocity.tolist(),
                              "max_acceleration": limits.max_acceleration.tolist()},
        },
        "model_compute": {"calibration": calibration, "during_run": summarize_times(all_measured),
                          "failures": failures},
        "results": results,
        "machine": machine(numpy=np.__version__, onnxruntime=onnxruntime.__version__,
                           note="shared 2-core CPU; simulated time, so only the model compute time depends on "
                                "the machine"),
        "wall_time_s": None,
    }
    bundle.close()
    report["wall_time_s"] = round(time.perf_counter() - wall_start, 1)
    print(f"actor '{ARM}' of {bundle.name}: compute median {calibration['median_ms']:.1f} ms "
          f"(p90 {calibration['p90_ms']:.1f}), run {report['model_compute']['during_run']['median_ms']:.1f} ms; "
          f"{args.seeds} seeds, episode = {args.motion_s:.2f} s of fresh setpoints; failures {failures}")
    print_table(report)
    write_results(args.output, report)
    print(f"in {report['wall_time_s']} s")


if __name__ == "__main__":
    main()
