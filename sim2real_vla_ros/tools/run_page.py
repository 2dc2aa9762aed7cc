"""report.html of a dry run: what a person reads at a glance (no JavaScript, inline SVG plots).

Top: the world's verdict (the simulator's privileged check) beside the planner's claim, then the
run checks. Then the overlay video (the planner's affordance overlay: keypoints, chain index,
phase), per arm the commanded joints (``vla/actor_<arm>/command``) against the measured ones
(``/joint_states``) with every chunk arrival marked (the seams), the validator's probability per
arm with its gate events, latency histograms (camera frame -> masked image, observation ->
chunk arrival) and the event timeline (plan phases, affordance indices, validator events).
Written by the dry run next to report.json (:func:`write_run_page`); the data are the run's own
(``RunData``), the numbers the report's.
"""
from __future__ import annotations

import html
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core.robot import arm_joint_names

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
WIDTH, HEIGHT, MARGIN = 560, 150, 36


def _scale(values: Sequence[float], low: float, high: float, out_low: float, out_high: float) -> np.ndarray:
    span = (high - low) or 1.0
    return out_low + (np.asarray(values, float) - low) / span * (out_high - out_low)


def svg_plot(series: Sequence[Tuple[str, Sequence[float], Sequence[float], str, bool]], title: str,
             x_range: Tuple[float, float], marks: Sequence[float] = (), y_label: str = "",
             y_range: Optional[Tuple[float, float]] = None) -> str:
    """One small line plot: ``series`` = (label, xs, ys, colour, dashed); vertical ``marks``."""
    ys_all = [y for _l, xs, ys, _c, _d in series for x, y in zip(xs, ys)
              if math.isfinite(y) and x_range[0] <= x <= x_range[1]]
    if y_range is None:
        low, high = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
        pad = 0.05 * ((high - low) or 1.0)
        y_range = (low - pad, high + pad)
    x0, x1 = x_range
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{MARGIN}" y="12" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{MARGIN}" y="18" width="{WIDTH - MARGIN - 6}" height="{HEIGHT - 18}" fill="none" '
             'stroke="#999"/>']
    for mark in marks:
        x = float(_scale([mark], x0, x1, MARGIN, WIDTH - 6)[0])
        parts.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{HEIGHT}" stroke="#ddd"/>')
    for label, xs, ys, colour, dashed in series:
        if len(xs) < 2:
            continue
        inside = [(x, y) for x, y in zip(xs, ys) if x0 <= x <= x1 and math.isfinite(y)]  # clip to the frame
        if len(inside) < 2:
            continue
        px = _scale([x for x, _ in inside], x0, x1, MARGIN, WIDTH - 6)
        py = _scale(np.clip([y for _, y in inside], *y_range), y_range[0], y_range[1], HEIGHT, 18)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2"{dash} points="{points}">'
                     f'<title>{html.escape(label)}</title></polyline>')
    parts.append(f'<text x="2" y="{HEIGHT}" font-size="10">{y_range[0]:.2f}</text>'
                 f'<text x="2" y="28" font-size="10">{y_range[1]:.2f}</text>'
                 f'<text x="{MARGIN}" y="{HEIGHT + 14}" font-size="10">{x0:.1f} s</text>'
                 f'<text x="{WIDTH - 50}" y="{HEIGHT + 14}" font-size="10">{x1:.1f} s</text>'
                 f'<text x="{WIDTH // 2}" y="{HEIGHT + 14}" font-size="10">{html.escape(y_label)}</text></svg>')
    return "".join(parts)


def svg_histogram(values: Sequence[float], title: str, unit: str = "ms", bins: int = 20) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return f"<p>{html.escape(title)}: no samples</p>"
    counts, edges = np.histogram(values, bins=bins)
    top = max(counts.max(), 1)
    bar = (WIDTH - MARGIN - 6) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20}" role="img" '
             f'aria-label="{html.escape(title)}"><text x="{MARGIN}" y="12" font-size="12">{html.escape(title)} '
             f'(n={len(values)}, p50 {np.percentile(values, 50):.1f} {unit}, p99 {np.percentile(values, 99):.1f} '
             f'{unit})</text>']
    for i, count in enumerate(counts):
        h = (HEIGHT - 20) * count / top
        parts.append(f'<rect x="{MARGIN + i * bar:.1f}" y="{HEIGHT - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                     f'fill="#1f77b4"><title>{edges[i]:.1f}-{edges[i + 1]:.1f} {unit}: {count}</title></rect>')
    parts.append(f'<text x="{MARGIN}" y="{HEIGHT + 14}" font-size="10">{edges[0]:.1f} {unit}</text>'
                 f'<text x="{WIDTH - 70}" y="{HEIGHT + 14}" font-size="10">{edges[-1]:.1f} {unit}</text></svg>')
    return "".join(parts)


def _arm_series(records, names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(times [n], positions [n, len(names)]) of the records that carry every name."""
    times, rows = [], []
    for record in records:
        index = {name: i for i, name in enumerate(record.names)}
        if all(name in index for name in names):
            times.append(record.recv_sim_s)
            rows.append([record.positions[index[name]] for name in names])
    return np.asarray(times), np.asarray(rows).reshape(len(rows), len(names))


def joint_plots(data, arm: str, t0: float, x_range: Tuple[float, float]) -> List[str]:
    names = arm_joint_names(arm)
    commanded_t, commanded = _arm_series(data.commands.get(arm, []), names)
    measured_t, measured = _arm_series(data.measured, names)
    seams = [chunk.recv_sim_s - t0 for chunk in data.chunks.get(arm, [])]
    plots = []
    for j, name in enumerate(names):
        series = [(f"{name} measured", measured_t - t0, measured[:, j], COLOURS[j], False),
                  (f"{name} commanded", commanded_t - t0, commanded[:, j], "#000", True)]
        plots.append(svg_plot(series, f"actor_{arm}: {name} (commanded dashed, measured solid; grey = chunk "
                                      "arrivals)", x_range, seams, "sim time", None))
    return plots


def validator_plot(data, t0: float, x_range: Tuple[float, float]) -> str:
    series = []
    for slot, arm in enumerate(("left", "right")):
        points = [(t - t0, (state.get("arms") or {}).get(arm, {}).get("prob")) for t, state in data.task_states]
        points = [(t, p) for t, p in points if p is not None]
        if points:
            xs, ys = zip(*points)
            series.append((f"{arm} probability", xs, ys, COLOURS[slot], False))
    events = [t - t0 for t, _event in data.validator_events]
    return svg_plot(series, "validator probability per arm (grey = gate events)", x_range, events, "sim time",
                    (0.0, 1.0))


def timeline(data, t0: float) -> str:
    rows, last = [], None
    for t, state in data.plan_states:
        key = (state.get("phase"), state.get("index"))
        if key != last:
            rows.append((t - t0, "plan", f"phase {key[0]}, affordance index {key[1]}"))
            last = key
    for t, event in data.validator_events:
        rows.append((t - t0, "validator", f"{event.get('event')} at index {event.get('index')}"
                                          f" ({event.get('reason', '')})"))
    rows.sort(key=lambda row: row[0])
    cells = "".join(f"<tr><td>{t:.2f}</td><td>{html.escape(kind)}</td><td>{html.escape(text)}</td></tr>"
                    for t, kind, text in rows[:300])
    return f"<table><tr><th>sim s (from the instruction)</th><th>source</th><th>event</th></tr>{cells}</table>"


def _number(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def write_run_page(folder: str, report: Mapping, data) -> str:
    """Write ``folder/report.html``; returns its path."""
    run = report.get("run") or {}
    world = report.get("world") or {}
    verdict = report.get("verdict") or {}
    episode = data.episode
    t0 = episode.start_sim_s if math.isfinite(episode.start_sim_s) else 0.0
    t1 = episode.end_sim_s if math.isfinite(episode.end_sim_s) else t0 + 1.0
    x_range = (0.0, max(t1 - t0, 1e-3))
    colour = "#070" if world.get("task_completed") else "#a00"
    overlay = ((report.get("outputs") or {}).get("overlay") or {})
    video = f'<video src="{html.escape(os.path.basename(overlay["path"]))}" controls width="480"></video>' \
        if overlay.get("format") in ("webm", "mp4") and overlay.get("path") else \
        f"<p>no overlay video in this run ({html.escape(str(overlay.get('format', 'none')))})</p>"
    arms = [arm for arm in ("left", "right") if data.commands.get(arm)]
    joints = "".join(f"<h3>actor_{arm}</h3>" + "".join(joint_plots(data, arm, t0, x_range)) for arm in arms)
    masked = [1e3 * (record.recv_sim_s - record.stamp_s) for records in data.masked.values() for record in records]
    chunk_age = [1e3 * (chunk.recv_sim_s - chunk.stamp_s) for chunks in data.chunks.values() for chunk in chunks]
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in verdict.get("reasons", []))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Dry run {html.escape(str(run.get('task')))}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}.world{{font-size:20px;color:{colour}}}
.plots svg{{margin:2px}}</style></head><body>
<h1>Dry run: {html.escape(str(run.get('task')))} (seed {html.escape(str(run.get('seed')))})</h1>
<p class="world">{html.escape(world.get('line', 'world: unknown'))}</p>
<p>Run checks: <b>{html.escape(str(verdict.get('outcome')))}</b> (exit {verdict.get('exit_code')}); episode ended:
{html.escape(str(run.get('end_reason')))}; {x_range[1]:.1f} s sim, real-time factor
{_number(run.get('real_time_factor'))}.</p><ul>{reasons}</ul>
<h2>Overlay (planner: affordance keypoints, chain index, phase)</h2>{video}
<h2>Joints: commanded vs measured, chunk seams</h2><div class="plots">{joints or '<p>no commands</p>'}</div>
<h2>Validator</h2><div class="plots">{validator_plot(data, t0, x_range)}</div>
<h2>Latency</h2><div class="plots">{svg_histogram(masked, 'camera frame -> masked image (sim time)')}
{svg_histogram(chunk_age, 'observation -> chunk arrival (sim time)')}</div>
<h2>Event timeline</h2>{timeline(data, t0)}
</body></html>
"""
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(page)
    return path


def chromium_binary() -> Optional[str]:
    """The Chromium executable, if installed (Debian's ``chromium``)."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_headless(path: str, options: Sequence[str], timeout_s: float):
    """Headless Chromium on the local file ``path`` with ``options`` (completed process, text)."""
    import subprocess

    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    return subprocess.run([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           *options, "file://" + os.path.abspath(path)], capture_output=True, text=True,
                          timeout=timeout_s)


def video_plays_in_chromium(video: str, scratch_folder: str, timeout_s: float = 60.0) -> str:
    """Whether headless Chromium decodes ``video``: 'loaded WxH' or 'error <code> <message>'."""
    page = os.path.join(scratch_folder, "video_check.html")
    with open(page, "w", encoding="utf-8") as stream:
        stream.write(f"""<!DOCTYPE html><html><body><video id="v" src="file://{os.path.abspath(video)}" muted></video>
<div id="out">pending</div><script>
const v = document.getElementById('v'), out = document.getElementById('out');
v.addEventListener('loadeddata', () => {{ out.textContent = 'loaded ' + v.videoWidth + 'x' + v.videoHeight; }});
v.addEventListener('error', () => {{ out.textContent = 'error ' + v.error.code + ' ' + v.error.message; }});
</script></body></html>""")
    dom = _run_headless(page, ["--virtual-time-budget=5000", "--dump-dom"], timeout_s).stdout
    start = dom.find('<div id="out">')
    return dom[start + len('<div id="out">'):dom.find("</div>", start)] if start >= 0 else "no result"


def check_in_chromium(page: str, screenshot: str, timeout_s: float = 60.0) -> Dict[str, object]:
    """Load ``page`` in headless Chromium: its console errors and failed loads, the DOM's SVG
    and video elements, and how much of a screenshot is not blank (a page a person can read)."""
    import cv2

    logged = ["--enable-logging=stderr", "--v=0", "--window-size=1280,2400"]
    dom = _run_headless(page, [*logged, "--dump-dom"], timeout_s)
    shot = _run_headless(page, [*logged, f"--screenshot={os.path.abspath(screenshot)}"], timeout_s)
    log = dom.stderr + shot.stderr
    errors = [line for line in log.splitlines()
              if "CONSOLE" in line and ("Error" in line or "error" in line) or "ERR_FILE_NOT_FOUND" in line
              or "Uncaught" in line]
    image = cv2.imread(screenshot)
    non_white = float((image < 245).any(axis=2).mean()) if image is not None else 0.0
    return {"exit_codes": (dom.returncode, shot.returncode), "errors": errors, "svg": dom.stdout.count("<svg"),
            "video": dom.stdout.count("<video"), "non_white_fraction": non_white, "dom_chars": len(dom.stdout)}
