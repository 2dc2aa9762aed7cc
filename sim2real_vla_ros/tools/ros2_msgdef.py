"""ROS 2 message definitions as MCAP ``ros2msg`` schema text (pure, ROS-free).

An MCAP file of the ``ros2`` profile stores, for each message type, its ``.msg`` definition
followed by the definition of every message type it uses (recursively), each introduced by a
line of 80 ``=`` and a ``MSG: <package>/<Type>`` line. That is what rosbag2's MCAP storage
writes and what ``mcap_ros2`` (and Foxglove) parse. The ``.msg`` text itself comes from the
installed interface packages (``share/<package>/msg/<Type>.msg``); the caller passes a reader
so this module never touches ROS or the file system.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List

PRIMITIVE_TYPES = frozenset({
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "string", "wstring",
})
SEPARATOR = "=" * 80
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/msg)?/[A-Za-z][A-Za-z0-9_]*$")
_BOUND = re.compile(r"<=\d+$")
_ARRAY = re.compile(r"\[[^\]]*\]$")

#: Reads the ``.msg`` text of ``'package/Type'``; raises KeyError / OSError when unknown.
DefinitionReader = Callable[[str], str]


class MessageDefinitionError(ValueError):
    """A type name or ``.msg`` text that cannot be turned into a schema (the message names it)."""


def short_type_name(type_name: str) -> str:
    """``'sensor_msgs/msg/Image'`` or ``'sensor_msgs/Image'`` -> ``'sensor_msgs/Image'``.

    Raises
    ------
    MessageDefinitionError
        Not of the form ``package/Type`` or ``package/msg/Type``.
    """
    if not isinstance(type_name, str) or not _TYPE_NAME.match(type_name):
        raise MessageDefinitionError(f"not a ROS 2 message type name: {type_name!r} "
                                     "(expected 'package/msg/Type' or 'package/Type')")
    parts = type_name.split("/")
    return f"{parts[0]}/{parts[-1]}"


def full_type_name(type_name: str) -> str:
    """``'sensor_msgs/Image'`` -> ``'sensor_msgs/msg/Image'`` (the MCAP schema name rosbag2 uses)."""
    package, message = short_type_name(type_name).split("/")
    return f"{package}/msg/{message}"


def referenced_types(package: str, msg_text: str) -> List[str]:
    """Non-primitive field types of a ``.msg`` text, as ``'package/Type'``, in order of first use.

    Comments, blank lines and constants (``TYPE NAME=value``) are skipped; array suffixes
    (``[]``, ``[3]``, ``[<=5]``) and string bounds (``string<=10``) are removed; a type without
    a package is in ``package`` (``Header`` alone means ``std_msgs/Header``, as in rosidl).

    Raises
    ------
    MessageDefinitionError
        A line that has a type but no field name.
    """
    found: List[str] = []
    for number, raw_line in enumerate(msg_text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            raise MessageDefinitionError(f"{package}: line {number} {raw_line.strip()!r} has no field name")
        field_type, rest = parts
        if "=" in rest.split(None, 1)[0]:
            continue  # a constant: always a primitive type
        base = _BOUND.sub("", _ARRAY.sub("", field_type))
        if base in PRIMITIVE_TYPES:
            continue
        if "/" in base:
            name = short_type_name(base)
        elif base == "Header":
            name = "std_msgs/Header"
        else:
            name = f"{package}/{base}"
        if name not in found:
            found.append(name)
    return found


def concatenated_definition(type_name: str, read_definition: DefinitionReader) -> str:
    """The ``ros2msg`` schema text of ``type_name``: its definition, then every dependency once.

    Dependencies are listed depth-first in order of first use, each as ``SEPARATOR``,
    ``MSG: package/Type`` and its ``.msg`` text.

    Parameters
    ----------
    type_name : str
        ``'package/msg/Type'`` or ``'package/Type'``.
    read_definition : callable
        ``'package/Type'`` -> ``.msg`` text.

    Raises
    ------
    MessageDefinitionError
        A type whose definition cannot be read, or malformed text.
    """
    root = short_type_name(type_name)
    texts: Dict[str, str] = {}
    order: List[str] = []

    def visit(name: str) -> None:
        if name in texts:
            return
        try:
            text = read_definition(name)
        except (KeyError, OSError) as exc:
            raise MessageDefinitionError(f"no message definition for {name!r} (needed by {root}): {exc}") from None
        texts[name] = text
        order.append(name)
        for dependency in referenced_types(name.split("/")[0], text):
            visit(dependency)

    visit(root)
    sections = [texts[root].rstrip("\n")]
    for name in order[1:]:
        sections.append(f"{SEPARATOR}\nMSG: {name}\n{texts[name].rstrip(chr(10))}")
    return "\n".join(sections) + "\n"


__all__ = ["PRIMITIVE_TYPES", "SEPARATOR", "MessageDefinitionError", "short_type_name", "full_type_name",
           "referenced_types", "concatenated_definition"]
