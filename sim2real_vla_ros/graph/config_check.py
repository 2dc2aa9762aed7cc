"""Check a node's parameters -- files and overrides -- against its ``PARAMETERS`` before it starts.

Every node module of this package has a ``PARAMETERS`` tuple of :class:`~sim2real_vla_ros.nodes.common.Param`.
rcl applies a parameter file's sections silently: a misspelled name (``control_rate:``) is
stored as an undeclared parameter that no code reads, a YAML syntax error is an RCLError
traceback from ``rclpy.init``, NaN passes a type check. These functions read the files as rcl
does (:mod:`.parameter_files`) and return one line per problem, naming the file, the node and
the parameter, so that the dry run and ``run_node`` stop with exit 1 before anything moves.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sim2real_vla_ros.graph.parameter_files import flatten, read_sections, section_applies

BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")
"""Parameters rclpy declares on every node."""
BUILTIN_PREFIXES = ("qos_overrides.",)


def module_parameters(module: str) -> Optional[Sequence[Any]]:
    """The ``PARAMETERS`` tuple of a node module, None if it has none."""
    return getattr(importlib.import_module(module), "PARAMETERS", None)


def read_file_values(path: str, node_full_name: str) -> Tuple[Dict[str, Tuple[Any, str]], List[str]]:
    """({name: (value, where)}, problems) for what ``path`` gives the node, as rcl applies it."""
    import yaml

    try:
        sections = read_sections(path)
    except FileNotFoundError:
        return {}, [f"{path}: parameter file does not exist"]
    except yaml.YAMLError as exc:
        return {}, [f"{path}: not valid YAML: {yaml_problem(exc)}"]
    except (OSError, ValueError) as exc:
        return {}, [f"{path}: {str(exc).replace(path + ': ', '')}"]
    values: Dict[str, Tuple[Any, str]] = {}
    for key, section in sections.items():
        if section_applies(key, node_full_name):
            for name, value in section.items():
                values[name] = (value, f"{path} [{key}]")
    return values, []


def yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: what and where (line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def check_values(values: Mapping[str, Tuple[Any, str]], params: Sequence[Any], node_full_name: str) -> List[str]:
    """Problems of ``values`` ({name: (value, where)}) against the node's ``PARAMETERS``."""
    by_name = {param.name: param for param in params}
    problems = []
    for name, (value, where) in values.items():
        if name in BUILTIN_PARAMETERS or name.startswith(BUILTIN_PREFIXES):
            continue
        param = by_name.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{where}: node {node_full_name}: unknown parameter '{name}'{hint}")
            continue
        problem = _type_problem(param, value)
        if problem is None:
            try:
                param.validate(value)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            problems.append(f"{where}: node {node_full_name}: {problem}")
    for param in params:
        if param.required and param.name not in values:
            problems.append(f"node {node_full_name}: parameter '{param.name}' is required ({param.requirement})")
    return problems


def _type_problem(param, value) -> Optional[str]:
    default = param.default
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = True  # floats: Param.validate checks
    if ok:
        return None
    return f"parameter '{param.name}' = {value!r}: must be of type {type(default).__name__}"


def check_spec(spec) -> List[str]:
    """Problems of a :class:`~sim2real_vla_ros.graph.specs.NodeSpec`'s files and overrides; [] for a
    node without ``PARAMETERS`` (not this package's)."""
    if not spec.module:
        return []
    params = module_parameters(spec.module)
    if params is None:
        return []
    values: Dict[str, Tuple[Any, str]] = {}
    problems: List[str] = []
    for path in spec.parameter_files:
        found, file_problems = read_file_values(path, spec.full_name)
        values.update(found)
        problems += file_problems
    for name, value in flatten(spec.parameters).items():
        values[name] = (value, "override")
    return problems + check_values(values, params, spec.full_name)


def command_line_files(argv: Sequence[str]) -> Tuple[List[str], Dict[str, Any], str, str]:
    """(params files, -p values, node name, namespace) from ``--ros-args`` of a command line.

    Only what rcl reads from ``--ros-args`` up to ``--`` or the next ``--ros-args``-less part;
    ``-p`` values are read as YAML scalars, as rcl does.
    """
    import yaml

    files: List[str] = []
    values: Dict[str, Any] = {}
    name, namespace = "", ""
    inside = False
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--ros-args":
            inside = True
        elif item == "--":
            inside = False
        elif inside and item == "--params-file" and i + 1 < len(items):
            files.append(items[i + 1])
            i += 1
        elif inside and item in ("-p", "--param") and i + 1 < len(items):
            key, _, text = items[i + 1].partition(":=")
            try:
                values[key] = yaml.safe_load(text)
            except yaml.YAMLError:
                values[key] = text
            i += 1
        elif inside and item in ("-r", "--remap") and i + 1 < len(items):
            source, _, target = items[i + 1].partition(":=")
            if source == "__node" or source.endswith(":__node"):
                name = target
            elif source == "__ns" or source.endswith(":__ns"):
                namespace = target
            i += 1
        i += 1
    return files, values, name, namespace


def check_command_line(argv: Sequence[str], params: Sequence[Any], default_name: str) -> List[str]:
    """Problems of the parameters a node started with ``argv`` would get (its files and ``-p``)."""
    files, overrides, name, namespace = command_line_files(argv)
    namespace = namespace.rstrip("/")
    if namespace and not namespace.startswith("/"):
        namespace = "/" + namespace
    full_name = f"{namespace}/{name or default_name}"
    values: Dict[str, Tuple[Any, str]] = {}
    problems: List[str] = []
    for path in files:
        found, file_problems = read_file_values(path, full_name)
        values.update(found)
        problems += file_problems
    for key, value in overrides.items():
        values[key] = (value, "command line -p")
    if not files and not overrides:
        return []
    # A required parameter may come from a source this does not read (a launch file's
    # parameter_overrides): only names and values are checked here.
    return problems + [p for p in check_values(values, [_not_required(q) for q in params], full_name)]


def _not_required(param):
    import dataclasses

    return dataclasses.replace(param, required=False) if param.required else param
