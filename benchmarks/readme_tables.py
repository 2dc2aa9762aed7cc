"""Render benchmarks/results/*.json as Markdown and write it into README.md.

The README section between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is
replaced, so the numbers quoted there are always the ones in the results files.
`make bench` runs every benchmark and then this script; `--print` only prints.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(name):
    path = os.path.join(RESULTS, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _machine(data):
    machine = data.get("machine", {})
    return f"{machine.get('cpu_count', '?')}-core {machine.get('cpu_model', 'CPU')}"


def fast_section(data):
    timings = data["timings"]
    rows = [f"| {name} | {t['median_us']:.0f} | {t['p99_us']:.0f} |" for name, t in timings.items()
            if not name.startswith("stage_")]
    return "\n".join([
        f"**FAST codec** (`bench_fast.py`, {data['chunk_shape'][0]}x{data['chunk_shape'][1]} chunk, "
        f"vocab {data['tokenizer']['vocab_size']}, {_machine(data)}):", "",
        "| operation | median (µs) | p99 (µs) |", "|---|---|---|", *rows])


def models_section(data):
    rows = [f"| {role} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} |" for role, t in data["models"].items()]
    fast = data["fast_decode"]
    rows.append(f"| FAST decode | {fast['p50_ms']:.3f} | {fast['p99_ms']:.3f} |")
    stages = ("preprocess", "encoder", "denoiser", "token_generation", "decode", "unnormalise", "total")
    cycle_rows = []
    for variant, cycle in data["actor_cycle"].items():
        cells = [f"{cycle['stages'][s]['median_ms']:.2f}" if s in cycle["stages"] else "–" for s in stages]
        cycle_rows.append(f"| {variant} | " + " | ".join(cells) + f" | {cycle['decoded']}/{cycle['cycles']} |")
    return "\n".join([
        f"**Reference bundle on ONNX Runtime CPU** (`bench_models.py`, 1 thread, {_machine(data)}):", "",
        "| model | p50 (ms) | p99 (ms) |", "|---|---|---|", *rows, "",
        "Actor cycle, median ms per stage:", "",
        "| variant | " + " | ".join(stages) + " | decoded |",
        "|---" * (len(stages) + 2) + "|", *cycle_rows])


def sim_section(data):
    results = data["results"]
    rows = [f"| {name.replace('_', ' ')} | {r['rtf_median']:.1f} |" for name, r in results.items()]
    settings = data["settings"]
    return "\n".join([
        f"**MuJoCo simulator real-time factor** (`bench_sim.py`, {settings['physics_rate_hz']} Hz physics, "
        f"cameras {settings['image']} at {settings['camera_rate_hz']} Hz, {_machine(data)}):", "",
        "| configuration | real-time factor (median) |", "|---|---|", *rows])


def async_section(data):
    rows = []
    for result in data["results"]:
        sync = result["modes"]["sync"]["median"]
        for mode in ("async/crossfade", "async/crossfade+pchip", "async/none", "async/ensemble"):
            med = result["modes"][mode]["median"]
            ratio = result["ratios_async_over_sync"][mode]
            rows.append(
                f"| {result['delay_ms']:.0f} | {mode} | {sync['stale_ticks']:.0f} → {med['stale_ticks']:.0f} | "
                f"{sync['episode_time_s']:.2f} → {med['episode_time_s']:.2f} ({ratio['episode_time_s']:.2f}) | "
                f"{sync['seam_max_velocity']:.2f} → {med['seam_max_velocity']:.2f} "
                f"({ratio['seam_max_velocity']:.2f}) | "
                f"{sync['seam_max_acceleration']:.1f} → {med['seam_max_acceleration']:.1f} | "
                f"{sync['episode_rms_acceleration']:.2f} → {med['episode_rms_acceleration']:.2f} |")
    return "\n".join([
        f"**Async actor vs synchronous chunk broker** (`bench_async_actor.py`, {data['config']['seeds']} seeds, "
        f"medians, simulated time with the real model, {_machine(data)}). "
        "Columns read sync → async (ratio async/sync):", "",
        "| delay (ms) | async mode | ticks without fresh setpoint | episode time (s) | "
        "seam max velocity (rad/s) | seam max acceleration (rad/s²) | RMS acceleration (rad/s²) |",
        "|---|---|---|---|---|---|---|", *rows, *_acceleration_note(data),
        "", "`+pchip`: chunk steps interpolated with monotone cubics (the actor's default "
        "`chunk_interpolation`) instead of linearly; RMS acceleration is over the whole episode."])


def _acceleration_note(data):
    """Say so when every mode's seam acceleration is just the safety filter's limit."""
    limit = min(data["config"]["safety_limits"]["max_acceleration"][:6])
    seams = [mode["median"]["seam_max_acceleration"] for result in data["results"]
             for mode in result["modes"].values()]
    if all(abs(value - limit) < 1e-6 * limit for value in seams):
        return ["", f"Every mode's seam acceleration equals the safety filter's {limit:g} rad/s² limit: the "
                "reference model's consecutive chunks disagree, and the filter, not the blend, bounds the seam "
                "(see executor_seam_* in the results file for the blend before the filter)."]
    return []


def actor_node_section(data):
    settings = data["settings"]
    rows = [f"| {name} ({settings['configurations'][name].split(' (')[0]}) | {r['rate_hz']:.1f} | "
            f"{r['gap_p99_ms']:.0f} | {r['gap_max_ms']:.0f} | {r['cpu_cores']:.2f} | "
            f"{r['inference_p50_ms']:.1f} / {r['inference_p99_ms']:.0f} |" for name, r in data["summary"].items()]
    return "\n".join([
        f"**Actor node control loop on wall time** (`bench_actor_node.py`, {settings['control_rate_hz']:.0f} Hz, "
        f"medians of {settings['rounds']} rounds x {settings['seconds']:.0f} s per executor, alternating, "
        f"{_machine(data)}):", "",
        "| executor | command rate (Hz) | gap p99 (ms) | gap max (ms) | CPU (cores) | inference p50 / p99 (ms) |",
        "|---|---|---|---|---|---|", *rows])


def two_hosts_section(data):
    def ms(value):
        return "–" if value is None else f"{value:.0f}"

    def mode(row):
        threshold = row.get("request_threshold_s", 0.5)
        return row["mode"] + ("" if threshold == 0.5 else f", request_threshold_s {threshold:g}")

    control = [f"| {mode(r)} | {r['delay_ms']:.0f} | {r['command_rate_hz']:.1f} | {r['gap_p99_ms']:.0f} | "
               f"{r['stalled_ticks']:.0f} / {r['executed_ticks']:.0f} | {ms(r['observation_to_splice_p50_ms'])} / "
               f"{ms(r['observation_to_splice_p99_ms'])} | {ms(r['request_to_chunk_p50_ms'])} / "
               f"{ms(r['request_to_chunk_p99_ms'])} |" for r in data["control"]]
    images = [f"| {size} | {r['bytes']:,} | {r['mbit_s']:.1f} | {r['delivered']:.3f} | "
              f"{r['latency_p50_ms'] or 0:.1f} / {r['latency_p99_ms'] or 0:.1f} | {r['udp_receive_buffer_errors']} |"
              for size, r in data["images"].items()]
    load = data["machine"].get("load_average", [None])[0]
    return "\n".join([
        f"**Split actor across two hosts** (`bench_two_hosts.py`: two network namespaces joined by a veth, DDS over "
        f"UDP between them; actor_left at 50 Hz on the robot side, inference local or remote, an artificial delay "
        f"added to each inference; {data['seconds']:.0f} s per row; {_machine(data)}, load average "
        f"{load if load is None else round(load, 1)}):", "",
        "| inference (request_threshold_s 0.5 unless said) | added delay (ms) | command rate (Hz) | gap p99 (ms) | stalled / executed ticks | "
        "observation→splice p50 / p99 (ms) | request→chunk p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|", *control, "",
        f"Images across the link (rgb8, best effort, 30 Hz, {data['image_seconds']:.0f} s per size):", "",
        "| size | bytes | Mbit/s | delivered | latency p50 / p99 (ms) | UDP receive-buffer drops (GPU host) |",
        "|---|---|---|---|---|---|", *images])


def safety_section(data):
    after, before = data["results_us"]["after"], data["results_us"]["before"]
    rows = [f"| `{name}` | {before[name]['p50_us']:.1f} | {after[name]['p50_us']:.1f} |"
            if name in before else f"| `{name}` (new) | - | {after[name]['p50_us']:.1f} |"
            for name in ("filter", "trajectory_tail", "reading_check", "commanded")]
    return "\n".join([
        f"**Safety checks per call** (`bench_safety.py`: before = commit {data.get('baseline_commit', '?')}, after = the "
        f"last-line invariant check and the joint-reading validator, interleaved in one process, p50 in us, "
        f"{_machine(data)}):", "",
        "| call | before p50 (us) | after p50 (us) |", "|---|---|---|", *rows, "",
        f"Added per 50 Hz tick: {data['added_us']['per_tick_p50_us']:.0f} us at p50 (4 readings a tick) of the 20 ms budget."])


def collision_guard_section(data):
    checks, tick = data["checks"], data["actor_tick"]
    rows = [f"| {name.replace('_', ' ')} | {r['cpu_p50_us']:.0f} | {r['cpu_p99_us']:.0f} |"
            for name, r in checks.items() if isinstance(r, dict)]
    return "\n".join([
        f"**Collision guard** (`bench_collision_guard.py`, thread CPU time per call, {_machine(data)}):", "",
        "| call | CPU p50 (us) | CPU p99 (us) |", "|---|---|---|", *rows,
        f"| actor tick before / after the guard | {tick['before']['cpu_p50_us']:.0f} / {tick['after']['cpu_p50_us']:.0f} "
        f"| {tick['before']['cpu_p99_us']:.0f} / {tick['after']['cpu_p99_us']:.0f} |"])


SECTIONS = (("bench_sim", sim_section), ("bench_fast", fast_section), ("bench_models", models_section),
            ("bench_async_actor", async_section), ("bench_actor_node", actor_node_section),
            ("bench_two_hosts", two_hosts_section), ("safety", safety_section),
            ("collision_guard", collision_guard_section))


def render() -> str:
    parts = []
    for name, section in SECTIONS:
        data = _load(name)
        parts.append(section(data) if data else f"*{name}: no results yet (run `make bench`).*")
    return "\n\n".join(parts)


def update_readme(text: str) -> None:
    with open(README) as handle:
        readme = handle.read()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(README, "w") as handle:
        handle.write(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print instead of updating README.md")
    args = parser.parse_args(argv)
    text = render()
    if args.print:
        print(text)
    else:
        update_readme(text)
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
