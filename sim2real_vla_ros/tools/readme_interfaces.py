"""Render the interface reference (every .msg/.srv/.action of sim2real_vla_interfaces) into README.md.

One row per interface, generated from the definition files themselves and the graph contract:
its first comment line (what it is), where it travels (the topic, service or action name, or the
types that embed it), who publishes / serves it (``graph.expected_connections`` of the default
graph, ``graph.expected_services`` / ``expected_actions``) and at what rate (``RATES`` below, the
one hand-written column). The README section between ``<!-- interfaces:start -->`` and
``<!-- interfaces:end -->`` is replaced; ``test/test_readme_interfaces.py`` fails when it is not
current: then run ``python -m sim2real_vla_ros.tools.readme_interfaces`` (``--print`` only prints).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Tuple

from sim2real_vla_ros import graph
from sim2real_vla_ros.core import vocabulary as vocab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
PACKAGE = "sim2real_vla_interfaces"
INTERFACES = os.path.join(ROOT, PACKAGE)
START, END = "<!-- interfaces:start -->", "<!-- interfaces:end -->"
KINDS = ("msg", "srv", "action")

#: Relative topic / service / action name -> when it is sent (the nodes' own rates and QoS).
RATES = {
    vocab.PLAN_STATE: "on every change (latched: transient local, depth 1)",
    vocab.TASK_STATE: "on every change of what the gate sees, at most `validator_rate_hz` (latched)",
    vocab.VALIDATOR_EVENT: "one per gate event (reliable, depth 10)",
    "vla/actor_<arm>/status": "every `round(control_rate_hz / 10)`-th control tick (10 Hz at 50 Hz; reliable)",
    vocab.START_SERVICE: "on request",
    vocab.EXECUTE_TASK_ACTION: "feedback at `planner_rate_hz` while a goal runs",
}


def definitions() -> List[Tuple[str, str, str]]:
    """(kind, name, text) of every interface file, in kind then name order."""
    found = []
    for kind in KINDS:
        folder = os.path.join(INTERFACES, kind)
        for filename in sorted(os.listdir(folder)):
            name, extension = os.path.splitext(filename)
            if extension == f".{kind}":
                with open(os.path.join(folder, filename), encoding="utf-8") as stream:
                    found.append((kind, name, stream.read()))
    return found


def summary(text: str) -> str:
    """The definition's first comment sentence (its description), without the ``#``."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            if words:
                break
            continue
        words.append(line.lstrip("#").strip())
    paragraph = " ".join(words)
    match = re.match(r"(.+?[.])(\s|$)", paragraph)
    sentence = match.group(1) if match else paragraph
    return sentence.replace("|", "\\|")


def embedded_in(defs: List[Tuple[str, str, str]]) -> Dict[str, List[str]]:
    """Message name -> the interfaces that have a field of that type."""
    users: Dict[str, List[str]] = {}
    for kind, name, text in defs:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or "=" in line.split()[0:2][-1]:
                continue
            field_type = re.sub(r"\[.*\]$", "", line.split()[0])
            field_type = field_type.split("/")[-1]
            if any(field_type == other for _k, other, _t in defs if _k == "msg"):
                label = f"`{kind}/{name}`"
                if label not in users.setdefault(field_type, []):
                    users[field_type].append(label)
    return users


def _topic_label(topic: str) -> str:
    """``/vla/actor_left/status`` and its right twin as one ``/vla/actor_<arm>/status``."""
    for arm in vocab.ARMS:
        topic = topic.replace(f"_{arm}/", "_<arm>/")
    return topic


def render() -> str:
    """The reference table (Markdown, no trailing newline)."""
    defs = definitions()
    users = embedded_in(defs)
    connections = graph.expected_connections()
    by_type: Dict[str, Dict[str, set]] = {}
    for topic, ends in connections.items():
        short = ends.type_name.split("/")[-1] if ends.type_name.startswith(PACKAGE) else None
        if short is None:
            continue
        entry = by_type.setdefault(short, {})
        entry.setdefault(_topic_label(topic), set()).update(
            "actor_<arm>" if node.startswith("actor_") else node for node in ends.publishers)
    services = graph.expected_services()
    actions = graph.expected_actions()
    rows = ["| interface | where | sent by | when | what |", "|---|---|---|---|---|"]
    for kind, name, text in defs:
        where, sender, when = "", "", ""
        if kind == "msg" and name in by_type:
            topics = by_type[name]
            where = ", ".join(f"`{topic}`" for topic in sorted(topics))
            sender = ", ".join(sorted({f"`{node}`" for nodes in topics.values() for node in nodes}))
            when = "; ".join(RATES.get(topic.lstrip("/"), "") for topic in sorted(topics))
        elif kind == "srv":
            served = [(service, node) for service, node in services.items() if service.lstrip("/") in RATES
                      and name == "StartTask"]
            where = ", ".join(f"`{service}`" for service, _node in served)
            sender = ", ".join(sorted({f"`{node}`" for _service, node in served}))
            when = "; ".join(RATES[service.lstrip("/")] for service, _node in served)
        elif kind == "action":
            served = [(action, node) for action, node in actions.items() if name == "ExecuteTask"]
            where = ", ".join(f"`{action}`" for action, _node in served)
            sender = ", ".join(sorted({f"`{node}`" for _action, node in served}))
            when = "; ".join(RATES[action.lstrip("/")] for action, _node in served)
        if not where and name in users:
            where = "inside " + ", ".join(users[name])
        rows.append(f"| `{kind}/{name}` | {where} | {sender} | {when} | {summary(text)} |")
    return "\n".join(rows)


def current_section(path: str = README) -> str:
    """What README.md holds between the markers now."""
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def write(path: str = README) -> None:
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    start, end = text.index(START) + len(START), text.index(END)
    table = render()  # before the file is opened for writing: a failing render must not empty README.md
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text[:start] + "\n" + table + "\n" + text[end:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table instead of writing README.md")
    args = parser.parse_args(argv)
    if args.print:
        print(render())
    else:
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
