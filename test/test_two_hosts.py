"""Two hosts over DDS: the split actor across two network namespaces joined by a veth pair.

Robot namespace: the control nodes (controller + safety filter) of both arms and a FakeWorld
standing in for the arm, the masked cameras and the planner's outputs; GPU namespace: both
arms' inference nodes. The scenario (two_host_scenario.py, run inside the robot namespace)
checks the normal path, a cut link (both arms hold within the staleness limit, no unsafe
command), a restored link (motion only after a fresh chunk) and the e-stop from either side.
The namespaces are removed whatever happens; skipped with the reason where not root.
"""
import json
import os
import subprocess
import sys

import pytest

from ros_harness import REPO
from sim2real_vla_ros.tools.two_hosts import TwoHosts, unavailable_reason

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(unavailable_reason() is not None, reason=f"two hosts: {unavailable_reason()}")]


def test_split_actor_across_two_hosts_holds_on_a_cut_link_and_resumes_on_a_fresh_chunk(tmp_path):
    tag = f"t{os.getpid() % 100000}"
    out = tmp_path / "two_hosts.json"
    domain = int(os.environ.get("ROS_DOMAIN_ID", "173"))
    try:
        with TwoHosts(tag) as hosts:
            completed = subprocess.run(
                [*hosts.prefix("robot"), sys.executable, os.path.join(REPO, "test", "two_host_scenario.py"),
                 "--tag", tag, "--out", str(out)],
                cwd=REPO, env=hosts.environment(domain, {"MUJOCO_GL": "egl"}), capture_output=True, text=True,
                timeout=480)
    finally:
        assert not TwoHosts.leftovers(tag), "the namespaces must be removed"
    results = json.loads(out.read_text()) if out.exists() else {"checks": {}}
    failed = {name: check["detail"] for name, check in results["checks"].items() if not check["ok"]}
    assert completed.returncode == 0 and not failed, \
        f"failed checks: {json.dumps(failed, indent=1)}\n--- scenario output ---\n{completed.stdout[-6000:]}" \
        f"\n{completed.stderr[-3000:]}"
    for name in ("normal_path", "cut_link_holds_both_arms", "restore_resumes_only_after_a_fresh_chunk",
                 "estop_from_robot_holds_both_arms", "estop_from_gpu_holds_both_arms", "whole_run_safe"):
        assert results["checks"].get(name, {}).get("ok"), f"check {name} did not run"
    print(json.dumps(results["measurements"], indent=1))
