"""Sidecar metadata of a TensorRT engine, and the check that refuses a stale engine.

A serialised engine only runs on the TensorRT version and the GPU model it was built for,
with the precision, shape profiles and ONNX it was built from. ``build_engine`` writes
``<engine>.meta.json`` next to the engine; at start-up :func:`check_engine_metadata`
compares it with the running TensorRT and GPU and, on any difference, raises
:class:`EngineMismatchError` with the exact ``build_engine`` command that rebuilds it.
Nothing here ever rebuilds silently (an engine build can take an hour on a Jetson).

Everything except :func:`current_environment` is pure and runs without a GPU.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

from .base import BackendUnavailableError, RuntimeBackendError

METADATA_SUFFIX = ".meta.json"
METADATA_FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16")


class EngineMismatchError(RuntimeBackendError):
    """The engine does not fit this machine or its source; the message says how to rebuild it."""


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation-profile entry: min, opt and max shapes of an input."""

    min: tuple
    opt: tuple
    max: tuple

    def __post_init__(self) -> None:
        shapes = [tuple(int(d) for d in s) for s in (self.min, self.opt, self.max)]
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"profile shapes must have the same rank, got {shapes}")
        for lo, mid, hi in zip(*shapes):
            if not (0 <= lo <= mid <= hi):
                raise ValueError(f"profile needs 0 <= min <= opt <= max in every dim, got {shapes}")
        for name, shape in zip(("min", "opt", "max"), shapes):
            object.__setattr__(self, name, shape)

    def to_cli(self) -> str:
        """``1x1:1x16:1x65`` (the ``--shape NAME=...`` form of build_engine)."""
        return ":".join("x".join(str(d) for d in s) for s in (self.min, self.opt, self.max))

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class RuntimeEnvironment:
    """What an engine is tied to on the machine that runs it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" for Orin, "9.0" for H100


@dataclass(frozen=True)
class EngineMetadata:
    """Contents of ``<engine>.meta.json``."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_profiles: Mapping[str, ShapeProfile]
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    created: str
    format_version: int = METADATA_FORMAT_VERSION
    builder: str = "sim2real_vla_ros build_engine"
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "input_profiles", MappingProxyType(dict(self.input_profiles)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def environment(self) -> RuntimeEnvironment:
        return RuntimeEnvironment(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def to_json_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "builder": self.builder,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "input_profiles": {n: p.to_dict() for n, p in self.input_profiles.items()},
            "onnx_file": self.onnx_file,
            "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "created": self.created,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping) -> "EngineMetadata":
        """Parse the sidecar's JSON object; a missing or malformed field raises ValueError naming it."""
        if not isinstance(data, Mapping):
            raise ValueError("metadata must be a JSON object")
        required = ("tensorrt_version", "gpu_name", "compute_capability", "precision", "input_profiles",
                    "onnx_file", "onnx_sha256", "engine_sha256", "created")
        for key in required:
            if key not in data:
                raise ValueError(f"field '{key}' is missing")
        for key in required:
            if key != "input_profiles" and not isinstance(data[key], str):
                raise ValueError(f"field '{key}' must be a string, got {data[key]!r}")
        version = data.get("format_version", METADATA_FORMAT_VERSION)
        if version != METADATA_FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not supported (expected {METADATA_FORMAT_VERSION})")
        profiles_raw = data["input_profiles"]
        if not isinstance(profiles_raw, Mapping):
            raise ValueError("field 'input_profiles' must be an object of input name -> {min, opt, max}")
        profiles = {}
        for name, entry in profiles_raw.items():
            try:
                profiles[name] = ShapeProfile(entry["min"], entry["opt"], entry["max"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"field 'input_profiles.{name}' is malformed: {exc}") from None
        return cls(tensorrt_version=data["tensorrt_version"], gpu_name=data["gpu_name"],
                   compute_capability=data["compute_capability"], precision=data["precision"],
                   input_profiles=profiles, onnx_file=data["onnx_file"], onnx_sha256=data["onnx_sha256"],
                   engine_sha256=data["engine_sha256"], created=data["created"],
                   builder=str(data.get("builder", "")), extra=dict(data.get("extra") or {}))


def metadata_path(engine_path: str) -> str:
    """``planner.engine`` -> ``planner.engine.meta.json``."""
    return str(engine_path) + METADATA_SUFFIX


def sha256_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (engines can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def create_metadata(*, env: RuntimeEnvironment, precision: str, input_profiles: Mapping[str, ShapeProfile],
                    onnx_path: str, engine_sha256: str, onnx_sha256: Optional[str] = None,
                    created: Optional[str] = None, extra: Optional[Mapping] = None) -> EngineMetadata:
    """Metadata of an engine just built on ``env`` from ``onnx_path``."""
    return EngineMetadata(
        tensorrt_version=env.tensorrt_version, gpu_name=env.gpu_name, compute_capability=env.compute_capability,
        precision=precision, input_profiles=dict(input_profiles), onnx_file=os.path.basename(onnx_path),
        onnx_sha256=onnx_sha256 or sha256_file(onnx_path), engine_sha256=engine_sha256,
        created=created or utc_now_iso(), extra=dict(extra or {}))


def write_metadata(meta: EngineMetadata, engine_path: str) -> str:
    """Write ``<engine>.meta.json`` (atomically: a crash never leaves half a file); return its path."""
    path = metadata_path(engine_path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(meta.to_json_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_metadata(engine_path: str, rebuild_hint: str = "") -> EngineMetadata:
    """Read the sidecar of ``engine_path``.

    Raises
    ------
    EngineMismatchError
        If the sidecar is missing or unreadable: an engine whose origin is unknown is not
        run. ``rebuild_hint`` (a command) is appended to the message.
    """
    path = metadata_path(engine_path)
    hint = f"\nRebuild it with:\n  {rebuild_hint}" if rebuild_hint else ""
    if not os.path.isfile(path):
        raise EngineMismatchError(f"{os.path.basename(engine_path)}: metadata file {path} is missing, so the "
                                  f"engine's TensorRT version, GPU and source are unknown; refusing to load it.{hint}")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
        return EngineMetadata.from_json_dict(data)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise EngineMismatchError(f"{os.path.basename(path)}: unreadable engine metadata ({exc}); "
                                  f"refusing to load the engine.{hint}") from None


def compare_metadata(meta: EngineMetadata, env: RuntimeEnvironment, *, precision: Optional[str] = None,
                     onnx_sha256: Optional[str] = None, engine_sha256: Optional[str] = None,
                     input_profiles: Optional[Mapping[str, ShapeProfile]] = None) -> list:
    """Everything that makes the engine unusable here, one message each (empty list: usable).

    Parameters
    ----------
    meta : EngineMetadata
        From the engine's sidecar.
    env : RuntimeEnvironment
        The running TensorRT and GPU.
    precision, onnx_sha256, engine_sha256, input_profiles : optional
        What the deployment expects; each given one must match.

    Notes
    -----
    The TensorRT version must match exactly: TensorRT's serialised engines are tied to
    major, minor, patch and build. The GPU must be the same model and compute
    capability (engines are built for one device type unless built hardware-compatible,
    which build_engine does not do).
    """
    problems = []
    if meta.tensorrt_version != env.tensorrt_version:
        problems.append(f"built with TensorRT {meta.tensorrt_version}, running TensorRT {env.tensorrt_version}")
    if meta.compute_capability != env.compute_capability:
        problems.append(f"built for compute capability {meta.compute_capability} ({meta.gpu_name}), "
                        f"this GPU is {env.compute_capability} ({env.gpu_name})")
    elif meta.gpu_name != env.gpu_name:
        problems.append(f"built on GPU '{meta.gpu_name}', this GPU is '{env.gpu_name}'")
    if precision is not None and meta.precision != precision:
        problems.append(f"built with precision {meta.precision}, deployment asks for {precision}")
    if onnx_sha256 is not None and meta.onnx_sha256 != onnx_sha256:
        problems.append(f"built from a different ONNX file (sha256 {meta.onnx_sha256[:12]}..., "
                        f"the current {meta.onnx_file} is {onnx_sha256[:12]}...)")
    if engine_sha256 is not None and meta.engine_sha256 != engine_sha256:
        problems.append(f"the engine file changed after its metadata was written (sha256 {engine_sha256[:12]}..., "
                        f"metadata says {meta.engine_sha256[:12]}...)")
    if input_profiles is not None:
        for name, want in input_profiles.items():
            have = meta.input_profiles.get(name)
            if have is None or have != want:
                got = have.to_cli() if have is not None else "no profile"
                problems.append(f"input '{name}' profile is {got}, deployment needs {want.to_cli()}")
    return problems


def rebuild_command(onnx_path: str, engine_path: str, precision: str = "fp32",
                    input_profiles: Optional[Mapping[str, ShapeProfile]] = None,
                    timing_cache: Optional[str] = None) -> str:
    """The ``build_engine`` command line that (re)builds this engine."""
    parts = ["build_engine", "--onnx", str(onnx_path), "--output", str(engine_path), "--precision", precision]
    for name, profile in sorted((input_profiles or {}).items()):
        parts += ["--shape", f"{name}={profile.to_cli()}"]
    if timing_cache:
        parts += ["--timing-cache", str(timing_cache)]
    return " ".join(shlex.quote(p) for p in parts)


def check_engine_metadata(engine_path: str, env: RuntimeEnvironment, *, onnx_path: Optional[str] = None,
                          precision: Optional[str] = None, engine_sha256: Optional[str] = None,
                          input_profiles: Optional[Mapping[str, ShapeProfile]] = None) -> EngineMetadata:
    """Read the sidecar and compare it with this machine and the expected source.

    Parameters
    ----------
    engine_path : str
        The engine; its sidecar is ``<engine_path>.meta.json``.
    env : RuntimeEnvironment
        See :func:`current_environment`.
    onnx_path : str, optional
        The ONNX the engine must have been built from (its SHA-256 is compared).
    precision, engine_sha256, input_profiles : optional
        See :func:`compare_metadata`.

    Returns
    -------
    EngineMetadata
        The sidecar, when everything matches.

    Raises
    ------
    EngineMismatchError
        Listing every mismatch and the command that rebuilds the engine.
    """
    default_onnx = onnx_path or os.path.splitext(str(engine_path))[0] + ".onnx"
    meta = read_metadata(engine_path, rebuild_command(default_onnx, engine_path, precision or "fp32",
                                                      input_profiles))
    onnx_sha = None
    if onnx_path is not None:
        if not os.path.isfile(onnx_path):
            raise EngineMismatchError(f"{os.path.basename(engine_path)}: source ONNX {onnx_path} not found, "
                                      "so the engine cannot be checked against it")
        onnx_sha = sha256_file(onnx_path)
    problems = compare_metadata(meta, env, precision=precision, onnx_sha256=onnx_sha, engine_sha256=engine_sha256,
                                input_profiles=input_profiles)
    if problems:
        source = onnx_path or os.path.join(os.path.dirname(str(engine_path)), meta.onnx_file)
        command = rebuild_command(source, engine_path, precision or meta.precision,
                                  input_profiles or meta.input_profiles)
        listing = "".join(f"\n  - {p}" for p in problems)
        raise EngineMismatchError(
            f"{os.path.basename(engine_path)} cannot be used on this machine:{listing}\n"
            f"It is not rebuilt automatically (a build can take a long time). Rebuild it on this machine with:\n"
            f"  {command}")
    return meta


def current_environment(device: int = 0) -> RuntimeEnvironment:
    """TensorRT version and GPU of this machine (needs ``tensorrt`` and ``cuda-python``).

    Raises
    ------
    BackendUnavailableError
        If either library or a CUDA device is missing.
    """
    from .tensorrt_backend import cuda_device_properties, import_tensorrt

    trt = import_tensorrt()
    name, major, minor = cuda_device_properties(device)
    return RuntimeEnvironment(tensorrt_version=str(trt.__version__), gpu_name=name,
                              compute_capability=f"{major}.{minor}")




def resolve_profiles(input_shapes: Mapping[str, Sequence], axis_ranges: Optional[Mapping[str, Sequence[int]]] = None,
                     explicit: Optional[Mapping[str, ShapeProfile]] = None) -> dict:
    """Optimisation profiles for every input, from its shape, axis ranges and explicit profiles.

    Parameters
    ----------
    input_shapes : dict of str -> sequence of int or str
        Each input's shape; strings are dynamic axes (as in a contract or an ONNX file).
    axis_ranges : dict of str -> (min, opt, max), optional
        Range of each named dynamic axis (``--axis S=1:16:65`` or a manifest's ``dynamic_axes``).
    explicit : dict of str -> ShapeProfile, optional
        Whole-input profiles (``--shape tokens=1x1:1x16:1x65``); they win over axis ranges.

    Returns
    -------
    dict of str -> ShapeProfile
        Fixed dims give ``min == opt == max``.

    Raises
    ------
    ValueError
        If a dynamic axis has no range, an explicit profile names an unknown input, or it
        contradicts a fixed dimension; the message says which flag fixes it.
    """
    axis_ranges = dict(axis_ranges or {})
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(input_shapes))
    if unknown:
        raise ValueError(f"--shape given for unknown input(s) {unknown}; the model's inputs are {sorted(input_shapes)}")
    profiles = {}
    for name, shape in input_shapes.items():
        shape = tuple(shape)
        if name in explicit:
            profile = explicit[name]
            if len(profile.min) != len(shape):
                raise ValueError(f"--shape {name}: rank {len(profile.min)} but the input has rank {len(shape)} {list(shape)}")
            for axis, dim in enumerate(shape):
                if isinstance(dim, int) and not (profile.min[axis] == profile.opt[axis] == profile.max[axis] == dim):
                    raise ValueError(f"--shape {name}: dim {axis} is fixed to {dim} in the model, profile says "
                                     f"{profile.min[axis]}:{profile.opt[axis]}:{profile.max[axis]}")
            profiles[name] = profile
            continue
        low, opt, high = [], [], []
        for axis, dim in enumerate(shape):
            if isinstance(dim, str):
                if dim not in axis_ranges:
                    raise ValueError(f"input '{name}' dim {axis} is the dynamic axis '{dim}' and has no range: give "
                                     f"--axis {dim}=MIN:OPT:MAX (or --shape {name}=...), or dynamic_axes in the "
                                     f"bundle manifest")
                a, b, c = (int(v) for v in axis_ranges[dim])
            else:
                a = b = c = int(dim)
            low.append(a), opt.append(b), high.append(c)
        try:
            profiles[name] = ShapeProfile(tuple(low), tuple(opt), tuple(high))
        except ValueError as exc:
            raise ValueError(f"input '{name}': {exc}") from None
    return profiles


__all__ = ["EngineMismatchError", "EngineMetadata", "ShapeProfile", "RuntimeEnvironment", "metadata_path",
           "sha256_file", "create_metadata", "write_metadata", "read_metadata", "compare_metadata",
           "rebuild_command", "check_engine_metadata", "current_environment", "resolve_profiles",
           "BackendUnavailableError"]
