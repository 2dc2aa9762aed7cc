"""The whole graph under a namespace: the MuJoCo simulator + every VLA node in /robot1.

The dry run's own specs (``dry_run.graph_specs`` with ``namespace``, as ``dry_run --namespace
robot1`` starts them) run as processes; a probe node in the *root* namespace looks at the
graph from outside and checks that

- every topic and service of ``graph.expected_connections(..., namespace='robot1')`` /
  ``expected_services`` exists under /robot1 with its publishers and subscribers, every
  graph node runs in /robot1, and none of the graph's relative topics is left at the root;
- /clock and /diagnostics stay global (published by the namespaced nodes at the root name);
- data flows end to end once the instruction is published on /robot1/vla/instruction: each
  task arm's actor decodes chunks from the masked images and publishes moving commands on
  /robot1/<arm>_arm_controller/joint_trajectory, which the namespaced simulator accepts.

config/vla.yaml's parameters reaching the namespaced nodes is checked without processes in
test_graph (rcl parses the same ros-args).
"""
import json
import os
import sys

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from ros_harness import Probe, ros_env, wait_for
from sim2real_vla_ros import graph
from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.tools import dry_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMESPACE = "robot1"
STARTUP_TIMEOUT_S = 90.0
FLOW_TIMEOUT_S = 60.0
GLOBAL_TOPICS = (vocab.CLOCK, vocab.DIAGNOSTICS)


class NamespacedGraph:
    def __init__(self, options, specs, children, probe):
        self.options = options
        self.specs = specs
        self.children = children
        self.probe = probe
        self.connections = graph.expected_connections(arms=options.arms, output_mode=options.output_mode,
                                                      namespace=NAMESPACE)
        self.services = graph.expected_services(namespace=NAMESPACE)

    def check_alive(self):
        for child in self.children:
            assert child.alive(), f"{child.name} exited with {child.proc.returncode}:\n{child.tail(30)}"

    def missing(self):
        self.check_alive()
        return dry_run.missing_graph_ends(self.probe.node, self.connections, self.services)

    def manager_phase(self):
        phases = [kv.value for array in self.probe.received(vocab.DIAGNOSTICS) for status in array.status
                  if status.hardware_id == graph.LIFECYCLE_MANAGER_NODE for kv in status.values if kv.key == "phase"]
        return phases[-1] if phases else None

    def publishers_and_services_up(self):
        missing = self.missing()
        return not missing["publishers"] and not missing["services"]


@pytest.fixture(scope="module")
def namespaced(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("graph_namespace"))
    options = dry_run.Options(task=tasks.default_task_name(), output_mode="trajectory", namespace=NAMESPACE)
    dry_run.validate(options)
    specs = dry_run.graph_specs(options)
    env = ros_env()
    children = []
    rclpy.init()
    probe = Probe("namespace_probe", use_sim_time=True)  # root namespace: it sees the graph from outside
    try:
        for spec in specs:
            command = graph.to_command(spec, sys.executable, overrides_dir=folder)
            children.append(dry_run.ChildProcess(spec, command, env, os.path.join(folder, f"{spec.name}.log")))
        for arm in options.arms:
            probe.subscribe(JointTrajectory, absolute(vocab.actor_chunk_topic(arm)), common.COMMAND_QOS)
            probe.subscribe(JointTrajectory, absolute(vocab.arm_command_topic(arm, "trajectory")), common.COMMAND_QOS)
            probe.subscribe(JointState, absolute(vocab.actor_command_topic(arm)), common.COMMAND_QOS)
        probe.subscribe(String, absolute(vocab.SIM_TASK_STATUS), common.LATCHED_QOS)
        probe.subscribe(DiagnosticArray, vocab.DIAGNOSTICS, common.COMMAND_QOS)
        live = NamespacedGraph(options, specs, children, probe)
        wait_for(live.publishers_and_services_up, STARTUP_TIMEOUT_S,
                 f"every expected publisher and service under /{NAMESPACE}")
        # vla_lifecycle_manager (in the namespace too) homes the arms, then activates the nodes.
        wait_for(lambda: live.manager_phase() in ("active", "failed"), STARTUP_TIMEOUT_S,
                 f"/{NAMESPACE}/vla_lifecycle_manager: configured, homed, active")
        assert live.manager_phase() == "active"
        yield live
    finally:
        dry_run.stop_all(children)
        probe.shutdown()
        rclpy.shutdown()


def absolute(name: str) -> str:
    return vocab.absolute(name, NAMESPACE)


def test_every_expected_topic_and_service_is_under_the_namespace(namespaced):
    node = namespaced.probe.node
    relative = {topic for topic in namespaced.connections if topic not in GLOBAL_TOPICS}
    assert relative and all(topic.startswith(f"/{NAMESPACE}/") for topic in relative)
    assert all(name.startswith(f"/{NAMESPACE}/") for name in namespaced.services)
    # Subscriptions may be matched a little after the publishers.
    wait_for(lambda: namespaced.missing() == {"publishers": {}, "subscribers": {}, "services": []}, 20.0,
             "every expected subscriber too")
    running = set(node.get_node_names_and_namespaces())
    for spec in namespaced.specs:
        assert (spec.name, f"/{NAMESPACE}") in running, f"{spec.name} is not running in /{NAMESPACE}: {running}"
    for topic in namespaced.connections:
        for info in node.get_publishers_info_by_topic(topic) + node.get_subscriptions_info_by_topic(topic):
            if info.node_name in {spec.name for spec in namespaced.specs}:
                assert info.node_namespace == f"/{NAMESPACE}", (topic, info.node_name, info.node_namespace)
    # Nothing of the graph is left at the root names.
    root = graph.expected_connections(arms=namespaced.options.arms, output_mode=namespaced.options.output_mode)
    leftover = [topic for topic in root if topic not in GLOBAL_TOPICS
                and (node.get_publishers_info_by_topic(topic) or node.get_subscriptions_info_by_topic(topic))]
    assert not leftover, f"graph topics at the root: {leftover}"
    offered = {name for name, _types in node.get_service_names_and_types()}
    assert not offered & set(graph.expected_services()), "graph services at the root"


def test_clock_and_diagnostics_stay_global(namespaced):
    node = namespaced.probe.node
    names = {name for name, _types in node.get_topic_names_and_types()}
    for topic in GLOBAL_TOPICS:
        assert topic in names and f"/{NAMESPACE}{topic}" not in names, topic
    clock = {(i.node_name, i.node_namespace) for i in node.get_publishers_info_by_topic(vocab.CLOCK)}
    assert clock == {(graph.SIM_NODE, f"/{NAMESPACE}")}
    diagnostics = {(i.node_name, i.node_namespace) for i in node.get_publishers_info_by_topic(vocab.DIAGNOSTICS)}
    expected = {(name, f"/{NAMESPACE}") for name in namespaced.connections[vocab.DIAGNOSTICS].publishers}
    assert expected <= diagnostics
    # The probe follows /clock from the root: sim time advances.
    assert wait_for(lambda: node.get_clock().now().nanoseconds > 0, 20.0, "sim time from /clock")


def test_data_flows_end_to_end_under_the_namespace(namespaced):
    probe = namespaced.probe
    task = tasks.get_task(namespaced.options.task)
    publisher = probe.node.create_publisher(String, absolute(vocab.INSTRUCTION), common.LATCHED_QOS)
    publisher.publish(String(data=task.instruction))

    def moving(arm):
        points = [p.positions for m in probe.received(absolute(vocab.arm_command_topic(arm, "trajectory")))
                  for p in m.points]
        return len(points) >= 10 and np.ptp(np.asarray(points), axis=0).max() > 1e-6

    def flowing():
        namespaced.check_alive()
        return all(probe.received(absolute(vocab.actor_chunk_topic(arm))) and moving(arm) for arm in task.arms)

    wait_for(flowing, FLOW_TIMEOUT_S, f"decoded chunks and moving commands of {task.arms} under /{NAMESPACE}")
    for arm in namespaced.options.arms:  # an arm without a target only holds: its commands may come later
        wait_for(lambda arm=arm: namespaced.check_alive() or probe.received(absolute(vocab.actor_command_topic(arm))),
                 30.0, f"a command from actor_{arm} under /{NAMESPACE}")

    # The simulator, in the same namespace, takes those commands.
    def accepted():
        statuses = probe.received(absolute(vocab.SIM_TASK_STATUS))
        counters = json.loads(statuses[-1].data).get("counters", {}) if statuses else {}
        return all(counters.get(f"accepted:{absolute(vocab.arm_command_topic(arm, 'trajectory'))}", 0) > 0
                   for arm in task.arms)

    wait_for(accepted, 30.0, "the simulator to accept the actors' trajectories")
