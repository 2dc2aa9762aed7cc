"""Test-wide settings: DDS on loopback and a ROS domain of this run's own."""
import json
import os
import random
import subprocess
import sys

import pytest

# Set before any test calls rclpy.init(): the rmw reads these at init. Child processes
# (nodes started by integration tests) inherit them.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(5, 95)))
os.environ.setdefault("MUJOCO_GL", "egl")


# --------------------------------------------------------------------------- shared dry run
# One short dry run per test session, shared by the tests that read its run folder
# (test_dry_run.py checks the run itself, test_in_process_runner.py compares the in-process
# runner with it): a dry run costs about 20-60 s of wall time on these machines.
DRY_RUN_EPISODE_SIM_S = 8.0
DRY_RUN_WALL_LIMIT_S = 150


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory):
    """Run ``tools.dry_run`` (default task and seed, ``DRY_RUN_EPISODE_SIM_S`` episode) as `make dry-run`
    does; returns ``{folder, result, report, episode_sim_s}``."""
    from ros_harness import REPO, ros_env

    folder = str(tmp_path_factory.mktemp("dry_run") / "run")
    command = [sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--duration-s", str(DRY_RUN_EPISODE_SIM_S),
               "--out", folder]
    result = subprocess.run(command, cwd=REPO, env=ros_env(), capture_output=True, text=True,
                            timeout=DRY_RUN_WALL_LIMIT_S)
    print(result.stdout[-4000:])
    report_path = os.path.join(folder, "report.json")
    assert os.path.isfile(report_path), f"no report.json (exit {result.returncode}):\n{result.stdout[-3000:]}\n" \
                                        f"{result.stderr[-3000:]}"
    with open(report_path, "r", encoding="utf-8") as stream:
        report = json.load(stream)
    return {"folder": folder, "result": result, "report": report, "episode_sim_s": DRY_RUN_EPISODE_SIM_S}
