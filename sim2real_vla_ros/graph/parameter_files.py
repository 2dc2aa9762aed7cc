"""ROS parameter files as rcl reads them: which sections apply to a node, and their values.

A parameter file maps node names to ``{ros__parameters: {...}}`` sections. rcl applies a
section to a node when its key matches the node's *fully qualified* name: ``planner`` is
read as ``/planner`` and applies only to a planner in the root namespace; ``/**/planner``
applies to a planner in any namespace (``/**`` is zero or more namespace tokens, ``/*``
exactly one); ``/**`` applies to every node. Every matching section applies, in file order,
later ones winning (checked against rcl in test_graph). So a graph that must also run under a
namespace keys its sections ``/**/<node>``, as config/vla.yaml does.

Pure Python (PyYAML only).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
"""A (dotted) ROS parameter name."""

_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"


def flatten(parameters: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter mapping -> {dotted name: value} (``{"a": {"b": 1}}`` is ``a.b``)."""
    flat: dict[str, Any] = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def fully_qualified(node_name: str) -> str:
    """``planner`` -> ``/planner``; an already qualified ``/robot1/planner`` is kept."""
    return node_name if node_name.startswith("/") else "/" + node_name


def section_applies(key: str, node_full_name: str) -> bool:
    """Whether rcl applies the section ``key`` of a parameter file to the node ``node_full_name``.

    >>> section_applies("planner", "/robot1/planner"), section_applies("/**/planner", "/robot1/planner")
    (False, True)
    """
    pattern = ""
    for part in re.split(r"(/\*\*|/\*)", fully_qualified(key)):
        if part == "/**":
            pattern += f"(?:/{_TOKEN})*"
        elif part == "/*":
            pattern += f"/{_TOKEN}"
        else:
            pattern += re.escape(part)
    return re.fullmatch(pattern, fully_qualified(node_full_name)) is not None


def read_sections(params_file: str) -> dict[str, dict[str, Any]]:
    """Section key -> its flattened ``ros__parameters``, in file order.

    Raises
    ------
    ValueError
        The file is not a ROS parameter file (mapping of node -> {ros__parameters: mapping}).
    """
    import yaml

    with open(params_file, "r", encoding="utf-8") as stream:
        document = yaml.safe_load(stream) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{params_file}: top level must map node names to sections")
    sections: dict[str, dict[str, Any]] = {}
    for key, section in document.items():
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ValueError(f"{params_file}: section {key!r} must hold a 'ros__parameters' mapping")
        sections[str(key)] = flatten(section["ros__parameters"])
    return sections


def load_node_section(params_file: str, node_name: str) -> dict[str, Any]:
    """The parameters ``params_file`` gives the node: every section that applies, in file order.

    Parameters
    ----------
    node_name : str
        The node's fully qualified name (``/robot1/planner``); a bare name (``planner``) is a
        node in the root namespace.
    """
    merged: dict[str, Any] = {}
    for key, values in read_sections(params_file).items():
        if section_applies(key, node_name):
            merged.update(values)
    return merged


def sections_missing_the_node(params_file: str, node_full_name: str) -> list[str]:
    """Keys of sections meant for this node (same base name) that rcl will not apply to it.

    E.g. a section ``planner`` when the planner runs as ``/robot1/planner``.
    """
    base = fully_qualified(node_full_name).rsplit("/", 1)[1]
    return [key for key in read_sections(params_file)
            if key.rstrip("/").rsplit("/", 1)[-1] == base and not section_applies(key, node_full_name)]
