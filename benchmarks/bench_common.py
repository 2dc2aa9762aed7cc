"""Helpers shared by the benchmark scripts (run as `python benchmarks/bench_*.py`)."""
import json
import os
import platform
import sys

# training/ (the reference-bundle generator, imported for its synthetic scenes) lives at the
# repository root, outside the installed package: a benchmark run as a script sees only
# benchmarks/ on its path.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)


def cpu_model() -> str:
    """The CPU's model name, for the results files' machine section."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**extra) -> dict:
    """The results files' machine section: CPU, platform, Python, plus ``extra`` (library
    versions, load averages, notes) given by each benchmark."""
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
            "python": sys.version.split()[0], **extra}


def write_results(path: str, report: dict) -> None:
    """Write a benchmark's results file (JSON, creating its folder) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2)
        stream.write("\n")
    print(f"wrote {path}")
