"""Configuration errors are one clear line naming file, node and parameter, exit 1, before any
node starts: graph.config_check, the dry run's check and run_node's start-up check."""
import subprocess
import sys

import pytest
import yaml

from ros_harness import REPO
from sim2real_vla_ros import graph
from sim2real_vla_ros.graph.config_check import check_command_line, check_spec
from sim2real_vla_ros.nodes import actor, planner
from sim2real_vla_ros.tools import dry_run

VLA_YAML = f"{REPO}/config/vla.yaml"


def edited(tmp_path, node, **values):
    document = yaml.safe_load(open(VLA_YAML, encoding="utf-8"))
    key = next(k for k in document if k.endswith(node))
    for name, value in values.items():
        if value is None:
            document[key]["ros__parameters"].pop(name.split(":")[0], None)
        else:
            document[key]["ros__parameters"][name] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_the_shipped_graphs_have_no_problems():
    for argv in ([], ["--output-mode", "stream"], ["--output-mode", "vendor"], ["--robot", "emulated-can"],
                 ["--arms", "left", "--task", "pour_water_single"]):
        options = dry_run.parse_args(argv)
        assert dry_run.config_problems(dry_run.graph_specs(options), options) == [], argv


@pytest.mark.parametrize("values, expected", [
    ({"control_rate": 50.0}, "unknown parameter 'control_rate' (did you mean 'control_rate_hz'?)"),
    ({"control_rate_hz": 0.0}, "parameter 'control_rate_hz' = 0.0: must be in (0, 1000]"),
    ({"control_rate_hz": float("nan")}, "parameter 'control_rate_hz' = nan: must be a finite number"),
    ({"control_rate_hz": "fast"}, "parameter 'control_rate_hz' = 'fast': must be a number"),
    ({"collision_guard": 1}, "parameter 'collision_guard' = 1: must be of type bool"),
    ({"trajectory_horizon_steps": 2.5}, "parameter 'trajectory_horizon_steps' = 2.5: must be of type int"),
])
def test_each_problem_is_one_line_naming_file_node_and_parameter(tmp_path, values, expected):
    path = edited(tmp_path, "actor_left", **values)
    spec = next(s for s in graph.vla_nodes(params_file=path) if s.name == "actor_left")
    problems = check_spec(spec)
    assert problems == [f"{path} [/**/actor_left]: node /actor_left: {expected}"]


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("/**/planner:\n  ros__parameters: [\n    planner_rate_hz: 2.0\n")
    spec = next(s for s in graph.vla_nodes(params_file=VLA_YAML) if s.name == "planner")
    spec = spec.__class__(**{**spec.__dict__, "parameter_files": (str(path),)})
    (problem,) = check_spec(spec)
    assert problem.startswith(f"{path}: not valid YAML: ") and "line" in problem and "\n" not in problem


def test_command_line_check_reads_params_files_and_p_values(tmp_path):
    path = edited(tmp_path, "planner", planner_rate=2.0)
    argv = ["x", "--ros-args", "-r", "__node:=planner", "--params-file", path, "-p", "chain_length:=99"]
    problems = check_command_line(argv, planner.PARAMETERS, "planner")
    assert sorted(problems) == sorted([f"{path} [/**/planner]: node /planner: unknown parameter 'planner_rate' "
                                       "(did you mean 'planner_rate_hz'?)",
                                       "command line -p: node /planner: parameter 'chain_length' = 99: must be in "
                                       "[1, 16]"])
    # Another node's section does not apply; the actor's required arm may come from elsewhere.
    assert check_command_line(["x", "--ros-args", "-r", "__node:=actor_left", "--params-file", VLA_YAML],
                              actor.PARAMETERS, "actor") == []


def run(args, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_a_node_with_a_broken_params_file_exits_1_with_one_line_and_no_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**/planner:\n  ros__parameters: [\n")
    typo = edited(tmp_path, "planner", planner_rate=2.0)
    for path, expected in ((str(broken), "not valid YAML"), (typo, "unknown parameter 'planner_rate'")):
        result = run(["-m", "sim2real_vla_ros.nodes.planner", "--ros-args", "-r", "__node:=planner",
                      "--params-file", path])
        output = result.stdout + result.stderr
        fatal = [line for line in output.splitlines() if line.startswith("[FATAL]")]
        assert result.returncode == 1 and len(fatal) == 1 and expected in fatal[0] and path in fatal[0], output
        assert "Traceback" not in output


def test_rcl_refusing_the_command_line_is_one_line_exit_1():
    result = run(["-m", "sim2real_vla_ros.nodes.planner", "--ros-args", "--params-file", "/nonexistent/p.yaml"])
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert any(line.startswith("[FATAL]") and "/nonexistent/p.yaml" in line for line in output.splitlines()), output


@pytest.mark.parametrize("values, expected", [
    ({"control_rate_hz": 0.0}, "'control_rate_hz' = 0.0"),
    ({"control_rate_hz": float("nan")}, "'control_rate_hz' = nan"),
    ({"control_rate": 50.0}, "unknown parameter 'control_rate'"),
    ({"output_mode": "stream"}, "output_mode 'stream' would be overridden by --output-mode trajectory"),
])
def test_the_dry_run_refuses_a_bad_params_file_before_starting_anything(tmp_path, values, expected):
    path = edited(tmp_path, "actor_left", **values)
    out = tmp_path / "run"
    result = run(["-m", "sim2real_vla_ros.tools.dry_run", "--params-file", path, "--out", str(out)])
    fatal = [line for line in result.stderr.splitlines() if line.startswith("[FATAL]")]
    assert result.returncode == 1 and len(fatal) == 1 and expected in fatal[0] and path in fatal[0], result.stderr
    assert "node /actor_left" in fatal[0] and "Traceback" not in result.stdout + result.stderr
    report = yaml.safe_load((out / "report.json").read_text())  # complete, valid JSON
    assert report["verdict"]["exit_code"] == 1 and not report["nodes"]


def test_dry_run_argparse_errors_exit_1_not_2():
    result = run(["-m", "sim2real_vla_ros.tools.dry_run", "--no-such-option"])
    assert result.returncode == 1 and "bad argument" in result.stderr and "Traceback" not in result.stderr
    result = run(["-m", "sim2real_vla_ros.tools.dry_run", "--duration-s", "abc"])
    assert result.returncode == 1, result.stderr
