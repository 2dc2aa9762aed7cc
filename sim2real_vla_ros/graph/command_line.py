"""Command-line rendering: a :class:`.specs.NodeSpec` as the ``python -m ... --ros-args`` that starts it.

The dry run and the test harness start this package's nodes without ``ros2 launch``, with
exactly the ros-args launch_ros would give them (node name, namespace, parameter files,
overrides, remappings). rcl parses what is rendered here (checked in test_graph by handing it
to rcl itself).

Pure Python: no rclpy.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

from sim2real_vla_ros.graph.parameter_files import flatten
from sim2real_vla_ros.graph.specs import NodeSpec

# Longest value passed inline as `-p name:=value`; longer ones (a URDF) go into a file.
_MAX_INLINE_VALUE = 2048


def ros_param_value(value: Any) -> str:
    """Render a parameter value for ``-p name:=value`` (rcl parses it as a YAML scalar / flow list).

    Strings are always double-quoted so that '42', 'true' or '' stay strings; bools are
    true/false; floats keep a decimal point or exponent so they stay doubles.

    Raises
    ------
    ValueError
        NaN/inf, an empty or mixed-type list, or an unsupported type.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter value must be finite, got {value!r}")
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list has no ROS parameter type; put it in a params file")
        if all(isinstance(v, bool) for v in value) or all(isinstance(v, str) for v in value):
            items = list(value)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            items = list(value)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            items = [float(v) for v in value]  # rcl needs one type: ints among floats become doubles
        else:
            raise ValueError(f"list parameter values must share one type, got {value!r}")
        return "[" + ", ".join(ros_param_value(v) for v in items) + "]"
    raise ValueError(f"unsupported parameter value type {type(value).__name__}: {value!r}")


def to_command(spec: NodeSpec, python: str, overrides_dir: Optional[str] = None) -> list[str]:
    """Command line starting ``spec`` here, the way ``ros2 run`` + launch_ros would.

    ``python -m <module>`` (each node module ends with ``if __name__ == "__main__": main()``,
    the console script's entry point), then ``spec.arguments`` and ``--ros-args -r
    __node:=<name> [-r __ns:=<ns>] --params-file <file>... -p <name>:=<value>...
    -r <from>:=<to>...``.

    Parameters
    ----------
    spec : NodeSpec
        Must be one of this package's Python nodes (``spec.runs_here``).
    python : str
        Interpreter, e.g. ``sys.executable``.
    overrides_dir : str, optional
        Where to write the overrides as a params file (section keyed by the node's fully
        qualified name) when a value is too long for the command line (a URDF); without it
        such a value raises ValueError.
    """
    if not spec.runs_here:
        raise ValueError(f"{spec.name}: {spec.package}/{spec.executable} is not a Python node "
                         "of this package and cannot be started here")
    command = [python, "-m", spec.module, *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.absolute_namespace:
        command += ["-r", f"__ns:={spec.absolute_namespace}"]
    for path in spec.parameter_files:
        command += ["--params-file", path]
    flat = flatten(spec.parameters)
    rendered = {name: ros_param_value(value) for name, value in flat.items()}
    if any(len(text) > _MAX_INLINE_VALUE for text in rendered.values()):
        if overrides_dir is None:
            raise ValueError(f"{spec.name}: a parameter value is too long for the command line; "
                             "pass overrides_dir")
        command += ["--params-file", _write_overrides(spec, overrides_dir)]
    else:
        for name, text in rendered.items():
            command += ["-p", f"{name}:={text}"]
    for source, target in spec.remappings:
        command += ["-r", f"{source}:={target}"]
    return command


def _write_overrides(spec: NodeSpec, directory: str) -> str:
    import yaml

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{spec.name}.overrides.yaml")
    document = {spec.full_name: {"ros__parameters": _plain(spec.parameters)}}
    with open(path, "w", encoding="utf-8") as stream:
        yaml.safe_dump(document, stream, default_flow_style=False, sort_keys=False)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value
