"""Populated instances of every sim2real_vla_interfaces type, the same in every process.

`populate` fills each field of a message (recursively) from a counter, so two processes that
call ``sample(Type)`` build equal instances without exchanging anything: every field differs
from its default (booleans are all true), bounded sequences are filled to their bound and bounded strings to their
length, so a field that is lost, truncated or reordered on the way shows up as a difference.
Floating values are exact in float32 (a counter plus a half), so equality is exact.

`differences` compares two messages field by field and names each difference (rclpy's ``==``
only says that something differs). Neither needs ``rclpy.init``.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, List

from rosidl_parser.definition import (AbstractNestedType, AbstractString, AbstractWString, Array, BasicType,
                                      BoundedSequence, BoundedString, NamespacedType)

PACKAGE = "sim2real_vla_interfaces"
UNBOUNDED_SEQUENCE_LENGTH = 3
UNBOUNDED_STRING_LENGTH = 40

_INTEGER_TYPES = {"byte", "char", "octet", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_FLOAT_TYPES = {"float", "double", "long double"}


def ament_prefix_includes_venv() -> None:
    """Put ``sys.prefix`` on AMENT_PREFIX_PATH, as ``sim2real_vla_ros.paths.share_dir`` does.

    `make setup` installs the package into the venv prefix, which only the Makefile's targets
    put on AMENT_PREFIX_PATH; a pytest started directly would not find its share folder.
    """
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes + [sys.prefix])


def installed_message_names() -> List[str]:
    """Message type names of the package's installed ``share/<package>/msg/*.msg`` (sorted)."""
    from ament_index_python.packages import get_package_share_directory

    ament_prefix_includes_venv()
    folder = os.path.join(get_package_share_directory(PACKAGE), "msg")
    return sorted(name[:-len(".msg")] for name in os.listdir(folder) if name.endswith(".msg"))


def message_class(name: str, package: str = PACKAGE):
    return getattr(importlib.import_module(f"{package}.msg"), name)


class _Counter:
    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


def sample(msg_type, seed: int = 0):
    """A fully populated instance of ``msg_type``; equal for equal ``(msg_type, seed)``."""
    return populate(msg_type(), _Counter(seed * 1000))


def populate(message, counter: _Counter):
    for field_name, slot_type in zip(message.get_fields_and_field_types(), message.SLOT_TYPES):
        setattr(message, field_name, _value(slot_type, getattr(message, field_name), counter))
    return message


def _value(slot_type, current: Any, counter: _Counter) -> Any:
    if isinstance(slot_type, AbstractNestedType):
        if isinstance(slot_type, Array):
            length = slot_type.size
        elif isinstance(slot_type, BoundedSequence):
            length = slot_type.maximum_size
        else:
            length = UNBOUNDED_SEQUENCE_LENGTH
        return [_value(slot_type.value_type, None, counter) for _ in range(length)]
    if isinstance(slot_type, NamespacedType):
        module = importlib.import_module(".".join(slot_type.namespaces))
        return populate(getattr(module, slot_type.name)(), counter)
    if isinstance(slot_type, (AbstractString, AbstractWString)):
        length = slot_type.maximum_size if isinstance(slot_type, BoundedString) else UNBOUNDED_STRING_LENGTH
        stem = f"s{counter.next()}-"
        return (stem * (length // len(stem) + 1))[:length]
    if isinstance(slot_type, BasicType):
        number = counter.next()
        if slot_type.typename == "boolean":
            return True  # the only value that differs from the default
        if slot_type.typename in _FLOAT_TYPES:
            return number + 0.5
        if slot_type.typename in ("byte", "octet"):
            return bytes([number % 256])
        if slot_type.typename in _INTEGER_TYPES:
            return number % 97 + 1  # fits every integer type, never the default 0, differs between seeds
    raise TypeError(f"interface_samples: no sample value for slot type {slot_type!r}")


def differences(expected, actual, path: str = "") -> List[str]:
    """Every field where ``actual`` differs from ``expected``, as ``'path: expected != actual'``."""
    if hasattr(expected, "get_fields_and_field_types"):
        if type(actual) is not type(expected):
            return [f"{path or '.'}: type {type(expected).__name__} != {type(actual).__name__}"]
        found = []
        for field_name in expected.get_fields_and_field_types():
            found += differences(getattr(expected, field_name), getattr(actual, field_name),
                                 f"{path}.{field_name}" if path else field_name)
        return found
    if isinstance(expected, (list, tuple)) or hasattr(expected, "__array__") or type(expected).__name__ == "array":
        expected_items, actual_items = list(expected), list(actual)
        if len(expected_items) != len(actual_items):
            return [f"{path}: length {len(expected_items)} != {len(actual_items)}"]
        found = []
        for index, (left, right) in enumerate(zip(expected_items, actual_items)):
            found += differences(left, right, f"{path}[{index}]")
        return found
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


__all__ = ["PACKAGE", "ament_prefix_includes_venv", "installed_message_names", "message_class", "sample", "populate", "differences"]
