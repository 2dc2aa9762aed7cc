"""Benchmark the reference bundle on this CPU: per-model latency, FAST decode, the actor cycle.

For models/reference (ONNX Runtime, CPU provider):

* per-model latency, p50 / p99 over ``--runs`` calls after warm-up, with realistic inputs
  (camera-sized images, a 25-step chunk, decoder prefixes of the typical generated length);
* FAST decode of the actor's typical token sequences (one (25, 7) chunk per call);
* the whole actor cycle (:class:`ActorPipeline.infer`) split into stages (preprocess,
  encoder, denoiser, token generation, decode, unnormalise, total; median over
  ``--cycles`` >= 50 synthetic observations) for the plain decoder, the key/value-cache
  decoder and the diffusion-expert path.

Prints a table and writes benchmarks/results/bench_models.json with the machine description.
Numbers on the shared 2-core development machine are noisy; the medians are what to compare.

Usage: python benchmarks/bench_models.py [--runs 200] [--cycles 60] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime

from sim2real_vla_ros.core.policy.actor_pipeline import ActorPipeline
from sim2real_vla_ros.core.policy.bundle import load_bundle
from sim2real_vla_ros.paths import share_path
from bench_common import cpu_model, machine, write_results  # first: puts the repo root (training/) on the path
from training.make_reference_bundle import SyntheticWorld, random_actor_observation

RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_models.json")
VARIANTS = {
    "plain": None,
    "kv_cache": {"encoder": "actor_encoder", "decoder": "actor_decoder_kv"},
    "diffusion_expert": {"encoder": "actor_encoder", "decoder": "actor_decoder_expert", "denoiser": "denoiser"},
}
STAGES = ("preprocess", "encoder", "denoiser", "token_generation", "decode", "unnormalise", "total")


def percentiles_ms(seconds) -> dict:
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": round(float(np.percentile(values, 50)), 4), "p99_ms": round(float(np.percentile(values, 99)), 4),
            "runs": int(values.size)}


def time_calls(call, runs: int, warmup: int = 5) -> list:
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations


def model_inputs(bundle, role: str, observation, typical_tokens: int) -> dict:
    """Realistic inputs per role: images of the observation, typical token / cache lengths."""
    entry = bundle.model_entry(role)
    top = bundle.preprocess_image(observation.top_rgb)
    sizes = {"batch": 1, "tokens": typical_tokens, "past": typical_tokens, "expert": typical_tokens}
    inputs = entry.contract.example_inputs(sizes)
    if role == "mask":
        # The camera node runs the three cameras as one batch.
        inputs["image"] = np.concatenate([top, top, top])
    for name in ("top_image", "wrist_image"):
        if name in inputs:
            inputs[name] = top
    if "instruction" in inputs:
        inputs["instruction"] = bundle.instruction_embedding(observation.instruction)[None]
    if "tokens" in inputs and entry.uses_kv_cache:
        inputs["tokens"] = inputs["tokens"][:, :1]  # one new token after a cache of typical length
    if "noisy_actions" in inputs:
        inputs["noisy_actions"] = np.random.default_rng(0).standard_normal(inputs["noisy_actions"].shape
                                                                           ).astype(np.float32)
        inputs["timestep"] = np.array([49.0], np.float32)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the installed models/reference)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per model and for FAST decode")
    parser.add_argument("--cycles", type=int, default=60, help="actor cycles per variant (>= 50)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model")
    args = parser.parse_args()
    if args.cycles < 50:
        parser.error("--cycles must be >= 50")
    folder = args.bundle or share_path("models", "reference")
    bundle = load_bundle(folder, intra_op_threads=args.threads, inter_op_threads=1)
    bundle_name = bundle.name
    world = SyntheticWorld(list(bundle.manifest.mask_classes), seed=3)
    rng = np.random.default_rng(3)
    instructions = bundle.known_instructions
    samples = [random_actor_observation(world, rng, bundle.normalizer("left"), instructions[i % len(instructions)])[0]
               for i in range(args.cycles)]

    # Actor cycles first: they also give the typical generated length for the model timings.
    cycles, sequences = {}, []
    for variant, roles in VARIANTS.items():
        pipeline = ActorPipeline(bundle, "left", roles=roles)
        for observation in samples[:3]:
            pipeline.infer(observation)  # warm-up
        results = [pipeline.infer(observation) for observation in samples]
        if variant == "plain":
            sequences = [r.tokens for r in results if r.ok]
        stages = {}
        for stage in STAGES:
            values = [getattr(r.timings, stage) for r in results if getattr(r.timings, stage) is not None]
            if values:
                stages[stage] = {"median_ms": round(float(np.median(values)) * 1e3, 4),
                                 "p99_ms": round(float(np.percentile(values, 99)) * 1e3, 4)}
        cycles[variant] = {
            "cycles": len(results),
            "decoded": sum(r.ok for r in results),
            "median_tokens": float(np.median([r.timings.n_tokens for r in results])),
            "median_model_calls": float(np.median([r.timings.n_model_calls for r in results])),
            "stages": stages,
        }
    typical = int(np.median([len(s) for s in sequences])) if sequences else 12

    models = {}
    for role in bundle.roles:
        backend = bundle.model(role)
        inputs = model_inputs(bundle, role, samples[0], typical)
        models[role] = percentiles_ms(time_calls(lambda: backend.run(inputs), args.runs))

    fast = bundle.fast_tokenizer()
    chunk_shape = (bundle.manifest.action.chunk_length, bundle.manifest.action.dim)
    cursor = iter(range(10 ** 9))
    decode_durations = time_calls(lambda: fast.decode(sequences[next(cursor) % len(sequences)], *chunk_shape),
                                  args.runs * 5)
    fast_decode = percentiles_ms(decode_durations)
    fast_decode["chunk_shape"] = list(chunk_shape)
    fast_decode["median_tokens"] = typical
    bundle.close()

    print(f"bundle {folder} on {cpu_model()} ({os.cpu_count()} cores), ONNX Runtime {onnxruntime.__version__}, "
          f"{args.threads} intra-op thread(s)")
    print(f"\n{'model':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for role, stats in models.items():
        print(f"{role:<22}{stats['p50_ms']:>10.3f}{stats['p99_ms']:>10.3f}")
    print(f"{'FAST decode (25x7)':<22}{fast_decode['p50_ms']:>10.3f}{fast_decode['p99_ms']:>10.3f}")
    print(f"\nactor cycle, median ms over {args.cycles} synthetic observations (left arm)")
    widths = {stage: max(10, len(stage) + 2) for stage in STAGES}
    print(f"{'variant':<18}" + "".join(f"{s:>{widths[s]}}" for s in STAGES) + f"{'tokens':>8}{'decoded':>9}")
    for variant, result in cycles.items():
        cells = "".join(f"{result['stages'][s]['median_ms']:>{widths[s]}.3f}" if s in result["stages"]
                        else f"{'-':>{widths[s]}}" for s in STAGES)
        print(f"{variant:<18}{cells}{result['median_tokens']:>8.0f}{result['decoded']:>5}/{result['cycles']}")

    report = {
        "bundle": bundle_name,
        "models": models,
        "fast_decode": fast_decode,
        "actor_cycle": cycles,
        "settings": {"runs": args.runs, "cycles": args.cycles, "intra_op_threads": args.threads},
        "machine": machine(numpy=np.__version__, onnxruntime=onnxruntime.__version__,
                           load_average_1_5_15min_at_end=[round(v, 2) for v in os.getloadavg()],
                           note="shared 2-core development machine: other processes may run concurrently"),
    }
    print()
    write_results(RESULTS_FILE, report)


if __name__ == "__main__":
    main()
