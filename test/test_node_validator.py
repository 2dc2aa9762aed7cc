"""validator node as a real process, with the real planner: the gate sequence with a scripted validator,
the model path, stale inputs, and start-up failures.

A scripted validator (the ``scripted_probabilities`` test hook) only starts with ``use_sim_time``
true: those tests run the planner and the validator on a /clock that the probe publishes with
the system time (``WallClock``), so the probe's wall-time stamps stay comparable.
"""
import os
import shutil
import threading

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PolygonStamped
from rcl_interfaces.srv import ListParameters
from sensor_msgs.msg import Image, JointState
from sim2real_vla_interfaces.msg import PlanState, TaskState, ValidatorEvent
from sim2real_vla_interfaces.srv import StartTask

from model_factory import INSTRUCTIONS, make_constant_model, write_bundle
from ros_harness import REPO, NodeProcess, Probe, WallClock, wait_for
from sim2real_vla_ros import graph
from sim2real_vla_ros.core.policy.bundle import load_bundle
from sim2real_vla_ros.core.robot import arm_joint_names
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.task_messages import (plan_state_from_msg, plan_state_to_msg, task_state_from_msg,
                                                  validator_event_from_msg)
from sim2real_vla_ros.core.vocabulary import CAMERAS

pytestmark = pytest.mark.integration
VALIDATOR = "sim2real_vla_ros.nodes.validator"
PLANNER = "sim2real_vla_ros.nodes.planner"
VLA_YAML = f"{REPO}/config/vla.yaml"
KEYPOINTS = np.array([[[[0.25, 0.5], [0.75, 0.25]], [[0.5, 0.5], [0.6, 0.6]]]], np.float32)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bundle"))
    manifest = write_bundle(folder)
    entry = manifest["models"]["planner"]  # fixed planner: left arm active, never done
    pairs = {kind: {name: (spec["dtype"], tuple(spec["shape"])) for name, spec in entry[kind].items()}
             for kind in ("inputs", "outputs")}
    make_constant_model(os.path.join(folder, entry["file"]), pairs["inputs"], pairs["outputs"],
                        values={"keypoints": KEYPOINTS, "arm_active": np.array([[0.9, 0.2]], np.float32),
                                "done": np.array([0.0], np.float32)})
    return folder


class SyntheticInputs:
    """Masked camera images and joint states published from the probe at 10 Hz (a stand-in robot)."""

    def __init__(self, probe):
        node = probe.node
        self.images = {c: node.create_publisher(Image, f"/vla/masked/{c}", common.SENSOR_QOS) for c in CAMERAS}
        self.joints = node.create_publisher(JointState, "/joint_states", common.SENSOR_QOS)
        self.joint_states_on = threading.Event()
        self.joint_states_on.set()
        self.image = np.zeros((12, 16, 3), np.uint8)
        self.image[3:9, 4:12] = (200, 120, 40)
        self.names = arm_joint_names("left") + arm_joint_names("right")
        node.create_timer(0.1, lambda: self.publish(node))

    def publish(self, node):
        stamp = node.get_clock().now().to_msg()
        for camera, publisher in self.images.items():
            publisher.publish(common.numpy_to_image(self.image, "rgb8", stamp, f"{camera}_optical_frame"))
        if self.joint_states_on.is_set():
            msg = JointState(name=self.names, position=[0.1] * 6 + [0.02] + [-0.1] * 6 + [0.03])
            msg.header.stamp = stamp
            self.joints.publish(msg)


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("validator_probe", use_sim_time=False)
    probe.subscribe(PlanState, "/vla/plan_state", common.LATCHED_QOS)
    probe.subscribe(TaskState, "/vla/task_state", common.LATCHED_QOS)
    probe.subscribe(ValidatorEvent, "/vla/validator/event", common.COMMAND_QOS)
    probe.subscribe(PolygonStamped, "/vla/affordance/left", common.LATCHED_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    probe.inputs = SyntheticInputs(probe)
    probe.clock = WallClock(probe)
    yield probe
    probe.clock.close()
    probe.shutdown()
    rclpy.shutdown()


RECORD_OF = {"/vla/plan_state": plan_state_from_msg, "/vla/task_state": task_state_from_msg}


def last_record(probe, topic):
    """The newest message of a typed task topic as its record (core.task.records)."""
    messages = probe.received(topic)
    return RECORD_OF[topic](messages[-1]) if messages else None


def events(probe):
    return [validator_event_from_msg(m) for m in probe.received("/vla/validator/event")]


def validator_values(probe):
    for array in reversed(probe.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == "validator":
                return {kv.key: kv.value for kv in status.values}
    return {}


def start_graph(bundle_dir, probe, validator_params, planner_params=None):
    """The planner and a scripted validator, both on the probe's /clock (the hook needs use_sim_time)."""
    for topic in ("/vla/plan_state", "/vla/task_state", "/vla/validator/event", "/vla/affordance/left", "/diagnostics"):
        probe.clear(topic)
    planner = NodeProcess(PLANNER, "planner", params={
        "bundle_path": bundle_dir, "use_sim_time": True, "instruction": INSTRUCTIONS[0], "planner_rate_hz": 5.0, "image_width": 640,
        "image_height": 480, **(planner_params or {})})
    validator = NodeProcess(VALIDATOR, "validator", params_file=VLA_YAML, params={
        "bundle_path": bundle_dir, "use_sim_time": True, "validator_rate_hz": 10.0, "consecutive_required": 2, "min_dwell_s": 0.2,
        "diagnostics_rate_hz": 5.0, **validator_params})
    # Events are volatile: make sure the probe has discovered the validator's publisher (and
    # the planner's start service) before anything is started.
    wait_for(lambda: probe.node.count_publishers("/vla/validator/event") > 0, 20.0,
             "the validator's event publisher", processes=[planner, validator])
    return planner, validator


def stop_all(*processes):
    for process in processes:
        assert process.stop() in (0, -2), process.output


def test_scripted_positive_validator_opens_the_gate_and_the_planner_advances(bundle_dir, probe):
    planner, validator = start_graph(bundle_dir, probe, {"scripted_probabilities": "1.0"})
    nodes = [planner, validator]
    try:
        response = probe.call(StartTask, "/vla/start", StartTask.Request(), timeout=20.0)
        assert response.success, response.message
        wait_for(lambda: (s := last_record(probe, "/vla/plan_state")) and s["index"] >= 2, 30.0,
                 "the planner at affordance 2", processes=nodes)
        opened = [e for e in events(probe) if e["event"] == "open"]
        assert [e["index"] for e in opened[:2]] == [0, 1], events(probe)
        assert all(e["reason"] and e["seq"] for e in opened)
        task = last_record(probe, "/vla/task_state")
        assert task["decisions_count"] >= 4 and task["arms"]["right"]["prob"] is None, task
        wait_for(lambda: (p := probe.received("/vla/affordance/left")) and p[-1].polygon.points
                 and p[-1].polygon.points[0].z >= 2.0, 10.0, "left affordance #2", processes=nodes)
        assert "SCRIPTED" in wait_for(lambda: validator_values(probe).get("source"), 10.0, "validator diagnostics")
        spec = next(s for s in graph.vla_nodes(params_file=VLA_YAML) if s.name == "validator")
        expected = set(graph.expected_parameters(spec))
        names = set(probe.call(ListParameters, "/validator/list_parameters", ListParameters.Request(),
                               timeout=20.0).result.names)
        assert expected <= names, expected - names
    finally:
        stop_all(*nodes)


def test_scripted_negative_validator_replans_then_aborts_and_the_planner_holds(bundle_dir, probe):
    planner, validator = start_graph(bundle_dir, probe,
                                     {"scripted_probabilities": "0.0", "step_timeout_s": 1.0, "max_retries": 1},
                                     {"max_retries": 1})
    nodes = [planner, validator]
    try:
        assert probe.call(StartTask, "/vla/start", StartTask.Request(), timeout=20.0).success
        wait_for(lambda: any(e["event"] == "abort" for e in events(probe)), 30.0, "an abort event", processes=nodes)
        sequence = [(e["event"], e["index"]) for e in events(probe)]
        assert sequence == [("replan", 0), ("abort", 0)], sequence
        state = wait_for(lambda: (s := last_record(probe, "/vla/plan_state")) and s["phase"] == "aborted" and s, 10.0,
                         "planner aborted", processes=nodes)
        assert state["affordance"] is None and state["total_retries"] == 1
        # plan_state is published just before the affordances: wait for the empty polygon.
        wait_for(lambda: probe.received("/vla/affordance/left")[-1].polygon.points == [], 10.0,
                 "hold: an empty left affordance", processes=nodes)
        task = wait_for(lambda: (t := last_record(probe, "/vla/task_state")) and t["phase"] == "aborted" and t, 10.0,
                        "task_state aborted", processes=nodes)
        assert task["last_event"] == "abort" and not task["arms"]["left"]["achieved"]
    finally:
        stop_all(*nodes)


def test_model_probability_reaches_task_state_and_stale_joints_are_counted(bundle_dir, probe):
    with load_bundle(bundle_dir, load_fast_tokenizer=False) as bundle:
        model = bundle.model("validator")
        expected = float(model.run(model.contract.example_inputs())["achieved"][0])  # a constant model
    probe.clear("/vla/task_state")
    probe.clear("/diagnostics")
    validator = NodeProcess(VALIDATOR, "validator", params={"bundle_path": bundle_dir, "validator_rate_hz": 10.0,
                                                            "diagnostics_rate_hz": 5.0})
    plan = probe.node.create_publisher(PlanState, "/vla/plan_state", common.LATCHED_QOS)
    plan.publish(plan_state_to_msg({
        "stamp": 1.0, "phase": "running", "index": 0, "instruction": INSTRUCTIONS[0], "retries": 0,
        "total_retries": 0, "achieved_count": 0, "replan_requested": False, "image_size": [640, 480],
        "affordance": {"seq": 1, "index": 0, "obs_stamp": 1.0, "current_since": 1.0},
        "arms": {"left": {"active": True, "keypoints_norm": KEYPOINTS[0, 0].tolist()},
                 "right": {"active": False, "keypoints_norm": []}}}))
    try:
        task = wait_for(lambda: (t := last_record(probe, "/vla/task_state")) and t["arms"]["left"]["prob"] is not None
                        and t, 20.0, "a model decision in task_state", processes=[validator])
        assert task["arms"]["left"]["prob"] == pytest.approx(expected, abs=1e-6)
        assert task["arms"]["left"]["active"] and not task["arms"]["right"]["active"]
        def malformed_counted():  # NaN in the left arm: counted, the callback survives
            bad = JointState(name=probe.inputs.names, position=[float("nan")] + [0.0] * 13)
            bad.header.stamp = probe.node.get_clock().now().to_msg()
            probe.inputs.joints.publish(bad)
            return int(validator_values(probe).get("count.malformed_joint_states.left", 0)) > 0
        wait_for(malformed_counted, 10.0, "malformed joint states counted", poll=0.2, processes=[validator])
        probe.inputs.joint_states_on.clear()  # the arm's joint states go silent
        wait_for(lambda: int(validator_values(probe).get("count.stale_input.joint_state.left", 0)) > 0, 10.0,
                 "stale joint states counted in /diagnostics", processes=[validator])
        decisions = last_record(probe, "/vla/task_state")["decisions_count"]
        wait_for(lambda: int(validator_values(probe).get("count.stale_input.joint_state.left", 0)) > 3, 10.0,
                 "more stale ticks", processes=[validator])
        assert last_record(probe, "/vla/task_state")["decisions_count"] == decisions, "no decision on stale inputs"
    finally:
        probe.inputs.joint_states_on.set()
        probe.node.destroy_publisher(plan)
        stop_all(validator)


def test_missing_model_file_fails_at_startup(bundle_dir, tmp_path):
    broken = str(tmp_path / "broken_bundle")
    shutil.copytree(bundle_dir, broken)
    os.remove(os.path.join(broken, "validator.onnx"))
    process = NodeProcess(VALIDATOR, "validator_broken", params={"bundle_path": broken})
    assert process.wait_exit(timeout=30.0) == 1, process.output
    fatal = [line for line in process.output.splitlines() if line.startswith("[FATAL]")]
    assert len(fatal) == 1 and "validator.onnx" in fatal[0], process.output


def test_bad_scripted_probability_fails_at_startup(bundle_dir):
    process = NodeProcess(VALIDATOR, "validator_bad_param", params={"bundle_path": bundle_dir,
                                                                    "scripted_probabilities": "always"})
    assert process.wait_exit(timeout=30.0) == 1, process.output
    assert "[FATAL] command line -p: node /validator_bad_param: parameter 'scripted_probabilities' = 'always'" \
        in process.output


def test_a_scripted_validator_without_use_sim_time_is_refused_at_startup(bundle_dir):
    process = NodeProcess(VALIDATOR, "validator_scripted_on_wall_time", params={"bundle_path": bundle_dir,
                                                                                "scripted_probabilities": "1.0"})
    assert process.wait_exit(timeout=30.0) == 1, process.output
    fatal = [line for line in process.output.splitlines() if line.startswith("[FATAL]")]
    assert fatal == ["[FATAL] ValueError: parameter 'scripted_probabilities' = '1.0': a test / dry-run hook, "
                     "refused unless use_sim_time is true (never set it on a robot)"], process.output
    assert "Traceback" not in process.output
