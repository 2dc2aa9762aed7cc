"""Helpers shared by the benchmark scripts (run as `python benchmarks/bench_*.py`)."""
import platform


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
