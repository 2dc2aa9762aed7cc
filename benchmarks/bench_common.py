"""Helpers shared by the benchmark scripts (run as `python benchmarks/bench_*.py`)."""
import os
import platform
import sys


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
