"""The launch adapter: :class:`.specs.NodeSpec` -> launch_ros ``Node`` arguments, and includes.

Only the launch files call these; ``launch`` and ``launch_ros`` are imported inside the
functions, on first use, so the rest of the package (the dry run, the tests) works where
they are not installed.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from sim2real_vla_ros.graph.specs import NodeSpec, share_file


def launch_node_kwargs(spec: NodeSpec, output: str = "screen") -> dict[str, Any]:
    """Keyword arguments for ``launch_ros.actions.Node(**kwargs)`` (imports launch_ros lazily).

    String parameter values are wrapped in ``ParameterValue(value, value_type=str)``: launch_ros
    would otherwise YAML-parse them (a URDF, or an instruction such as "1"), and lists of
    strings in ``value_type=List[str]``. The spec's namespace is passed as it is: a relative
    one (``robot1``) goes under a namespace an including launch file pushes
    (``PushROSNamespace``), an absolute one (``/robot1``) does not.
    """
    parameters: list[Any] = list(spec.parameter_files)
    if spec.parameters:
        parameters.append(_launch_parameter_values(spec.parameters))
    kwargs: dict[str, Any] = {
        "package": spec.package,
        "executable": spec.executable,
        "name": spec.name,
        "output": output,
        "parameters": parameters,
        "remappings": list(spec.remappings),
    }
    if spec.arguments:
        kwargs["arguments"] = list(spec.arguments)
    if spec.absolute_namespace:
        kwargs["namespace"] = spec.namespace
    return kwargs


def include_launch(file_name: str, arguments: Mapping[str, str]):
    """``IncludeLaunchDescription`` of one of this package's launch files (imports launch lazily)."""
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(os.path.join(share_file("launch"), file_name)),
                                    launch_arguments=dict(arguments).items())


def _launch_parameter_values(parameters: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, Mapping):
            result[key] = _launch_parameter_values(value)
        elif isinstance(value, str):
            result[key] = _string_parameter(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            result[key] = _string_parameter(list(value))
        else:
            result[key] = list(value) if isinstance(value, tuple) else value
    return result


def _string_parameter(value: Any) -> Any:
    """``ParameterValue`` typed str / List[str] (launch_ros imported only here, on first use)."""
    from typing import List

    from launch_ros.parameter_descriptions import ParameterValue

    return ParameterValue(value, value_type=List[str] if isinstance(value, list) else str)
