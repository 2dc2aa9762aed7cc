"""Parameters as data: every node module's ``PARAMETERS`` is well-formed, matches config/vla.yaml,
and README.md's parameter tables are what ``tools/readme_parameters.py`` renders from them now.

No node is started (no ``rclpy.init``): only the modules' ``PARAMETERS`` tuples are read.
"""
import importlib

import pytest

from ros_harness import REPO
from sim2real_vla_ros import graph
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.tools import readme_parameters

VLA_YAML = f"{REPO}/config/vla.yaml"
# The test / dry-run hooks, by node: refused at start-up unless use_sim_time is true.
TEST_HOOKS = {"validator": {"scripted_probabilities"}, "actor": {"fault_injection", "inference_delay_s"},
              "actor_inference": {"fault_injection", "inference_delay_s"}, "planner": {"autostart"}}
MODULES = {title: module for title, _names, module in readme_parameters.NODES}


def declared(title):
    params = readme_parameters.node_parameters()[title]
    if params is None:
        pytest.skip(f"{MODULES[title]} has no PARAMETERS yet (declared with common.declare; the README shows a "
                    "pointer to its docstring until it is converted)")
    return params


def test_readme_parameter_tables_are_current():
    expected = readme_parameters.render()
    assert readme_parameters.current_section() == expected, (
        "README.md's parameter tables are out of date: run `.venv/bin/python -m "
        "sim2real_vla_ros.tools.readme_parameters`")


@pytest.mark.parametrize("title", list(MODULES))
def test_parameters_are_well_formed_and_their_defaults_pass_their_checks(title):
    params = declared(title)
    assert all(isinstance(param, Param) for param in params)
    names = [param.name for param in params]
    assert len(names) == len(set(names)), f"{title}: a parameter is listed twice"
    for param in params:
        assert param.description.strip(), f"{title}.{param.name} has no description"
        assert param.check is None or param.requirement, f"{title}.{param.name}: a check needs its requirement text"
        if not param.required:
            param.validate(param.default)  # a default that fails its own check would stop the node
        assert not (param.test_hook and not param.read_only), f"{title}.{param.name}: a test hook must be read-only"
    hooks = {param.name for param in params if param.test_hook}
    assert hooks == TEST_HOOKS.get(title, set()), f"{title}: test hooks {hooks}"


@pytest.mark.parametrize("title", [t for t, names, _ in readme_parameters.NODES
                                   if set(names) & {s.name for s in graph.vla_nodes(params_file=VLA_YAML)}])
def test_vla_yaml_sets_only_declared_parameters_and_no_test_hook(title):
    params = {param.name: param for param in declared(title)}
    names = next(names for t, names, _ in readme_parameters.NODES if t == title)
    for node_name in names:
        section = graph.load_node_section(VLA_YAML, node_name)
        unknown = sorted(set(section) - set(params))
        assert not unknown, f"config/vla.yaml {node_name} sets parameters its node does not declare: {unknown}"
        hooks = sorted(name for name in section if params[name].test_hook)
        assert not hooks, f"config/vla.yaml {node_name} sets test hooks {hooks}: pass them explicitly instead"
        for name, value in section.items():
            params[name].validate(value)


@pytest.mark.parametrize("title", list(MODULES))
def test_node_docstrings_leave_parameters_to_the_parameters_tuple(title):
    declared(title)
    docstring = importlib.import_module(MODULES[title]).__doc__
    assert "Parameters\n---" not in docstring and "PARAMETERS" in docstring, \
        f"{MODULES[title]}: describe parameters once, in PARAMETERS (the README table is generated from it)"


def test_render_marks_live_and_test_hook_parameters_and_escapes_markdown():
    live = Param("speed", 1.0, "a | b for /master/joint_<arm>", read_only=False)
    hook = Param("fault", "", "hook", test_hook=True)
    shared = Param("shared", 1, "in two nodes")
    text = readme_parameters.render({"sim_mujoco": (live, shared), "camera_mask": (hook, shared)})
    assert "| `speed` | `1.0` | any | **live** (applied at run time) | a \\| b for /master/joint_&lt;arm> |" in text
    assert "test hook (refused unless use_sim_time)" in text
    assert "| `shared` | `1` | any | read-only | sim_mujoco, camera_mask | in two nodes |" in text
    assert "**planner** (`planner`): not declared as data yet" in text
