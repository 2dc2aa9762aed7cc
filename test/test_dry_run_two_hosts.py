"""The dry run with ``--two-hosts``: simulator, camera_mask and the actors' control halves in a robot
network namespace, planner, validator and the actors' inference halves in a GPU namespace, DDS
over UDP on a veth pair between them; one short episode. Skipped with the reason where not root.
"""
import json
import os
import subprocess
import sys

import pytest

from ros_harness import REPO, ros_env
from sim2real_vla_ros.tools.two_hosts import TwoHosts, unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(unavailable_reason() is not None, reason=f"two hosts: {unavailable_reason()}")]


def test_dry_run_on_two_hosts_takes_the_normal_path_and_removes_the_namespaces(tmp_path):
    folder = str(tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-m", "sim2real_vla_ros.tools.dry_run", "--two-hosts",
                                "--duration-s", "8", "--out", folder], cwd=REPO, env=ros_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()  # its `with TwoHosts` cannot run then: remove what it made here
            process.wait()
            TwoHosts.remove(f"d{process.pid % 100000}")
    assert not TwoHosts.leftovers(f"d{process.pid % 100000}"), "the namespaces must be removed"
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
        report = json.load(stream)
    assert process.returncode == 0, output[-5000:]
    assert "two hosts: robot namespace" in output
    assert report["run"]["two_hosts"] is True and report["run"]["split_inference"] is True
    assert {"actor_left_inference", "actor_right_inference", "actor_left", "planner"} <= set(report["nodes"])
    assert report["verdict"]["exit_code"] == 0
