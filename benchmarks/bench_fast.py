"""Benchmark the FAST codec: decode and encode time for one 50x7 chunk.

Fits a tokenizer (vocab 1024, scale 10) on synthetic smooth trajectories, then times
`FastTokenizer.decode` and `FastTokenizer.encode` of held-out chunks, plus the decode's
stages (BPE decode to text, inverse DCT). Prints a table and writes
benchmarks/results/bench_fast.json with the machine description.

Usage: python benchmarks/bench_fast.py [--runs 5000]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy
import scipy.fft
import tokenizers

from sim2real_vla_ros.core.policy.fast import FastTokenizer
from bench_common import machine, write_results

HORIZON, ACTION_DIM = 50, 7
RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_fast.json")


def smooth_chunks(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Linear trend plus three slow sinusoids per joint, mapped into a random part of [-1, 1]."""
    t = np.linspace(0.0, 1.0, HORIZON)[:, None]
    chunks = []
    for _ in range(count):
        x = rng.uniform(-1, 1, ACTION_DIM) * t
        for _ in range(3):
            x = x + rng.uniform(0, 1, ACTION_DIM) * np.sin(
                2 * np.pi * rng.uniform(0.1, 1.5, ACTION_DIM) * t + rng.uniform(0, 2 * np.pi, ACTION_DIM)
            )
        unit = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
        low, high = np.sort(rng.uniform(-1, 1, (2, ACTION_DIM)), axis=0)
        chunks.append(low + (high - low) * unit)
    return chunks


def time_calls(function, arguments: list, runs: int) -> dict[str, float]:
    """Per-call wall time in microseconds (median, p99, mean, min) cycling over `arguments`."""
    for argument in arguments[:50]:  # warm-up: caches, lazy imports
        function(argument)
    samples = np.empty(runs)
    for index in range(runs):
        argument = arguments[index % len(arguments)]
        start = time.perf_counter_ns()
        function(argument)
        samples[index] = time.perf_counter_ns() - start
    samples /= 1e3
    return {
        "median_us": float(np.median(samples)),
        "p99_us": float(np.percentile(samples, 99)),
        "mean_us": float(samples.mean()),
        "min_us": float(samples.min()),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="timed calls per measurement (>= 2000)")
    parser.add_argument("--fit-chunks", type=int, default=2000, help="synthetic chunks to fit on")
    args = parser.parse_args()
    if args.runs < 2000:
        parser.error("--runs must be >= 2000 for a meaningful p99")

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    fast = FastTokenizer.fit(
        smooth_chunks(rng, args.fit_chunks), scale=10, vocab_size=1024,
        time_horizon=HORIZON, action_dim=ACTION_DIM, cover_all_bytes=True,
    )
    fit_s = time.perf_counter() - start

    chunks = smooth_chunks(np.random.default_rng(1), 200)
    id_lists = [fast.encode(chunk) for chunk in chunks]
    results = [fast.decode(ids) for ids in id_lists]
    assert all(result.ok for result in results), "a held-out chunk failed to decode"
    max_error = max(float(np.abs(r.chunk - c).max()) for r, c in zip(results, chunks))
    coefficients = [
        (fast.decode_to_coefficients(ids) / fast.scale).reshape(HORIZON, ACTION_DIM) for ids in id_lists
    ]

    timings = {
        "decode": time_calls(fast.decode, id_lists, args.runs),
        "decode_relaxed": time_calls(lambda ids: fast.decode(ids, relaxed=True), id_lists, args.runs),
        "encode": time_calls(fast.encode, chunks, args.runs),
        "stage_bpe_decode_text": time_calls(fast.tokenizer.decode, id_lists, args.runs),
        "stage_idct": time_calls(lambda c: scipy.fft.idct(c, axis=0, norm="ortho"), coefficients, args.runs),
    }
    report = {
        "benchmark": "fast_codec",
        "chunk_shape": [HORIZON, ACTION_DIM],
        "tokenizer": {
            "scale": fast.scale, "vocab_size": fast.vocab_size, "min_token": fast.min_token,
            "bpe_vocab_size": fast.bpe_vocab_size, "fit_chunks": args.fit_chunks, "fit_s": round(fit_s, 3),
        },
        "tokens_per_chunk": {
            "mean": float(np.mean([len(ids) for ids in id_lists])),
            "min": min(map(len, id_lists)), "max": max(map(len, id_lists)),
        },
        "round_trip_max_abs_error": max_error,
        "timings": timings,
        "target": "decode median well under 1000 us",
        "machine": machine(numpy=np.__version__, scipy=scipy.__version__, tokenizers=tokenizers.__version__),
        "note": "shared machine: other processes may inflate p99",
    }

    print(f"FAST codec, (50, 7) chunk, vocab 1024, scale 10, fit on {args.fit_chunks} chunks in {fit_s:.2f} s")
    print(f"tokens per chunk: {report['tokens_per_chunk']}, round-trip max |error| {max_error:.4f}")
    print(f"{'measurement':<24}{'median us':>12}{'p99 us':>12}{'mean us':>12}")
    for name, stats in timings.items():
        print(f"{name:<24}{stats['median_us']:>12.1f}{stats['p99_us']:>12.1f}{stats['mean_us']:>12.1f}")
    write_results(RESULTS_FILE, report)


if __name__ == "__main__":
    main()
