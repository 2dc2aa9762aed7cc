"""Render every node's ``PARAMETERS`` as Markdown tables and write them into README.md.

The README section between ``<!-- parameters:start -->`` and ``<!-- parameters:end -->`` is
replaced, so the parameter reference there is always what the nodes declare (names, defaults,
checks, read-only / live, descriptions: each written once, in the node module's
``PARAMETERS``). ``test/test_readme_parameters.py`` fails when README.md is not current; then
run ``python -m sim2real_vla_ros.tools.readme_parameters`` (``--print`` only prints). The same
approach as ``benchmarks/readme_tables.py`` for the benchmark tables.

Importing a node module starts nothing (no ``rclpy.init``): only its ``PARAMETERS`` is read.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sim2real_vla_ros.nodes.common import Param

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
START, END = "<!-- parameters:start -->", "<!-- parameters:end -->"

#: (title, node names in the graph, module), in the order of the README's node table.
NODES: Tuple[Tuple[str, Tuple[str, ...], str], ...] = (
    ("sim_mujoco", ("sim_mujoco",), "sim2real_vla_ros.sim.sim_node"),
    ("camera_mask", ("camera_mask",), "sim2real_vla_ros.nodes.camera_mask"),
    ("planner", ("planner",), "sim2real_vla_ros.nodes.planner"),
    ("actor", ("actor_left", "actor_right"), "sim2real_vla_ros.nodes.actor"),
    ("actor_control", ("actor_left", "actor_right"), "sim2real_vla_ros.nodes.actor_control"),
    ("actor_inference", ("actor_left_inference", "actor_right_inference"), "sim2real_vla_ros.nodes.actor_inference"),
    ("validator", ("validator",), "sim2real_vla_ros.nodes.validator"),
    ("vendor_bridge", ("vendor_bridge",), "sim2real_vla_ros.nodes.vendor_bridge"),
    ("piper_driver", ("piper_driver",), "sim2real_vla_ros.nodes.piper_driver"),
    ("vla_lifecycle_manager", ("vla_lifecycle_manager",), "sim2real_vla_ros.tools.lifecycle_manager"),
)


def node_parameters() -> Dict[str, Optional[Tuple[Param, ...]]]:
    """Title -> the module's ``PARAMETERS``, or None for a module that has none yet."""
    found: Dict[str, Optional[Tuple[Param, ...]]] = {}
    for title, _names, module in NODES:
        params = getattr(importlib.import_module(module), "PARAMETERS", None)
        found[title] = tuple(params) if params is not None else None
    return found


def format_value(value: Any) -> str:
    """A default as it would be written in a ROS parameter file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


def run_time(param: Param) -> str:
    if param.test_hook:
        return "read-only; test hook (refused unless use_sim_time)"
    return "read-only" if param.read_only else "**live** (applied at run time)"


def _cell(text: str) -> str:
    """Text for one table cell: a pipe would split the cell, ``<arm>`` would be read as HTML and
    ``/puppet/*`` as emphasis."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*").replace("\n", " ")


def _table(params: Sequence[Param], nodes_of: Optional[Dict[int, List[str]]] = None) -> List[str]:
    header = ["parameter", "default", "valid values", "run time"] + (["nodes"] if nodes_of else []) + ["description"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for param in params:
        cells = [f"`{param.name}`", f"`{format_value(param.default)}`".replace("|", "\\|"),
                 _cell(param.requirement or "any"), run_time(param)]
        if nodes_of:
            cells.append(", ".join(nodes_of[id(param)]))
        cells.append(_cell(param.description))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(parameters: Optional[Dict[str, Optional[Tuple[Param, ...]]]] = None) -> str:
    """The README section: one table of the parameters several nodes share, one per node."""
    parameters = node_parameters() if parameters is None else parameters
    # A Param object that several nodes list (the same object, not an equal name) is shared.
    nodes_of: Dict[int, List[str]] = {}
    shared: Dict[int, Param] = {}
    for title, params in parameters.items():
        for param in params or ():
            nodes_of.setdefault(id(param), []).append(title)
    for params in parameters.values():
        for param in params or ():
            if len(nodes_of[id(param)]) > 1:
                shared.setdefault(id(param), param)
    parts = [textwrap.fill(
        "Generated from each node module's `PARAMETERS` by `make readme` (`python -m "
        "sim2real_vla_ros.tools.readme_parameters`; `test/test_readme_parameters.py` fails when this is stale). "
        "Read-only parameters are read once at start-up: `ros2 param set` refuses them (restart the node with the "
        "new value); a live one is checked like at start-up and applied at run time. A test hook left at its "
        "default is off; set to anything else it stops the node at start-up unless `use_sim_time` is true.",
        width=100, break_long_words=False, break_on_hyphens=False)]
    if shared:
        parts.append("\n".join(["**Shared by several nodes** (one definition, `nodes/node_support.py`):", "",
                                *_table(list(shared.values()), nodes_of)]))
    for title, names, module in NODES:
        params = parameters.get(title)
        heading = f"**{title}** (" + ", ".join(f"`{name}`" for name in names) + ")"
        if params is None:
            parts.append(f"{heading}: not declared as data yet; see the docstring of `{module.replace('.', '/')}.py`.")
            continue
        own = [param for param in params if id(param) not in shared]
        also = [param.name for param in params if id(param) in shared]
        lines = [f"{heading}:" + (f" also the shared {', '.join(f'`{n}`' for n in also)}." if also else ""), ""]
        parts.append("\n".join(lines + _table(own)))
    return "\n\n".join(parts)


def current_section(readme_path: str = README) -> str:
    """The text now between the markers of ``readme_path``."""
    with open(readme_path, encoding="utf-8") as handle:
        readme = handle.read()
    if START not in readme or END not in readme:
        raise ValueError(f"{readme_path} lacks the {START} / {END} markers")
    return readme.split(START, 1)[1].split(END, 1)[0].strip("\n")


def update_readme(text: str, readme_path: str = README) -> None:
    with open(readme_path, encoding="utf-8") as handle:
        readme = handle.read()
    if START not in readme or END not in readme:
        raise SystemExit(f"{readme_path} lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(readme_path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print instead of updating README.md")
    parser.add_argument("--readme", default=README, help="README to update (default: the repository's)")
    args = parser.parse_args(argv)
    text = render()
    if args.print:
        print(text)
    else:
        update_readme(text, args.readme)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
