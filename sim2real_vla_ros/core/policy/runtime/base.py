"""One inference interface for every backend, and the tensor contract it enforces.

A model's contract is the list of its input and output tensors: name, dtype and shape,
where a shape entry is an int (a fixed size) or a string (a named dynamic axis, e.g.
``"B"`` or ``"S"``). Every backend checks its inputs against the contract before it calls
the runtime, so a wrong tensor fails with a :class:`ContractError` that names the tensor
instead of a runtime-specific crash deep inside a ROS callback.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

Dim = Union[int, str]

SUPPORTED_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")

#: Axis name used for a dynamic dimension that the model file leaves unnamed.
UNNAMED_AXIS = "?"


class RuntimeBackendError(RuntimeError):
    """A backend could not load or run a model."""


class ModelLoadError(RuntimeBackendError):
    """A model or engine file is missing, empty, truncated or corrupt."""


class BackendUnavailableError(RuntimeBackendError):
    """A library (onnxruntime provider, tensorrt, cuda-python) or a device is missing."""


class ProviderUnavailableError(BackendUnavailableError):
    """An ONNX Runtime execution provider that was asked for cannot be used."""


class ContractError(ValueError):
    """Tensors (given to a model, or found in a model file) do not match the contract."""


def format_shape(shape: Sequence[Dim]) -> str:
    """``(1, "S")`` -> ``"[1, S]"``: the form used in every message."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor of a model contract.

    Parameters
    ----------
    name : str
        Tensor name as in the model file.
    dtype : str
        A numpy dtype name from :data:`SUPPORTED_DTYPES`.
    shape : tuple of int or str
        Fixed sizes as ints (>= 0), dynamic axes as non-empty names.
    """

    name: str
    dtype: str
    shape: tuple

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"tensor '{self.name}': dtype '{self.dtype}' is not supported; "
                             f"use one of {list(SUPPORTED_DTYPES)}")
        if isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, Iterable):
            raise ValueError(f"tensor '{self.name}': shape must be a list, got {self.shape!r}")
        shape = tuple(self.shape)
        for dim in shape:
            is_int = isinstance(dim, (int, np.integer)) and not isinstance(dim, bool)
            if not ((is_int and dim >= 0) or (isinstance(dim, str) and dim)):
                raise ValueError(f"tensor '{self.name}': shape entries must be ints >= 0 or axis names, "
                                 f"got {dim!r} in {list(shape)}")
        object.__setattr__(self, "shape", tuple(int(d) if not isinstance(d, str) else d for d in shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dynamic_axes(self) -> tuple:
        """Names of the dynamic axes, in order."""
        return tuple(d for d in self.shape if isinstance(d, str))

    def describe(self) -> str:
        """``float32[1, 3, 96, 128]``."""
        return f"{self.dtype}{format_shape(self.shape)}"

    def concrete_shape(self, axis_sizes: Optional[Mapping[str, int]] = None, default: int = 1) -> tuple:
        """Shape with every dynamic axis replaced by its size (``default`` if not given)."""
        sizes = axis_sizes or {}
        return tuple(sizes.get(d, default) if isinstance(d, str) else d for d in self.shape)

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


def _specs_from_dict(data, what: str) -> Mapping[str, TensorSpec]:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{what} must be a non-empty mapping of tensor name -> {{dtype, shape}}")
    specs = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{what}.{name} must be a mapping with 'dtype' and 'shape'")
        unknown = sorted(set(entry) - {"dtype", "shape"})
        if unknown:
            raise ValueError(f"{what}.{name}: unknown field(s) {unknown}; only 'dtype' and 'shape' are allowed")
        for key in ("dtype", "shape"):
            if key not in entry:
                raise ValueError(f"{what}.{name}.{key} is missing")
        try:
            specs[str(name)] = TensorSpec(str(name), entry["dtype"], entry["shape"])
        except ValueError as exc:
            raise ValueError(f"{what}.{name}: {exc}") from None
    return MappingProxyType(specs)


@dataclass(frozen=True)
class ModelContract:
    """Inputs and outputs a model must have, keyed by tensor name."""

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "model") -> "ModelContract":
        """Build from ``{"inputs": {name: {dtype, shape}}, "outputs": {...}}``.

        Raises
        ------
        ValueError
            Naming the field (prefixed by ``where``) that is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping with 'inputs' and 'outputs'")
        for key in ("inputs", "outputs"):
            if key not in data:
                raise ValueError(f"{where}.{key} is missing")
        inputs = _specs_from_dict(data["inputs"], f"{where}.inputs")
        outputs = _specs_from_dict(data["outputs"], f"{where}.outputs")
        clash = sorted(set(inputs) & set(outputs))
        if clash:
            raise ValueError(f"{where}: tensor(s) {clash} are both inputs and outputs")
        return cls(inputs, outputs)

    def to_dict(self) -> dict:
        return {"inputs": {n: s.to_dict() for n, s in self.inputs.items()},
                "outputs": {n: s.to_dict() for n, s in self.outputs.items()}}

    def example_inputs(self, axis_sizes: Optional[Mapping[str, int]] = None, default: int = 1) -> dict:
        """Zero-filled inputs of the contract's shapes (dynamic axes from ``axis_sizes`` or ``default``)."""
        return {name: np.zeros(spec.concrete_shape(axis_sizes, default), dtype=spec.dtype)
                for name, spec in self.inputs.items()}

    def check_inputs(self, inputs: Mapping[str, np.ndarray], label: str) -> dict:
        """Check a feed against the contract; return the sizes bound to each dynamic axis.

        Raises
        ------
        ContractError
            On a missing or unexpected input, a non-array, a wrong dtype, rank or fixed
            size, or a dynamic axis bound to two different sizes; the message starts with
            ``label`` and names the tensor.
        """
        return check_arrays(self.inputs, inputs, label, "input")

    def check_outputs(self, outputs: Mapping[str, np.ndarray], label: str, axis_sizes: Optional[dict] = None) -> None:
        """Check what a runtime returned (same rules; outputs share the inputs' axis sizes)."""
        check_arrays(self.outputs, outputs, label, "output", axis_sizes)


def check_arrays(specs: Mapping[str, TensorSpec], arrays: Mapping[str, np.ndarray], label: str,
                 kind: str, axis_sizes: Optional[dict] = None) -> dict:
    """Check named arrays against specs; see :meth:`ModelContract.check_inputs`."""
    if not isinstance(arrays, Mapping):
        raise ContractError(f"{label}: {kind}s must be a dict of tensor name -> numpy array, got {type(arrays).__name__}")
    missing = [n for n in specs if n not in arrays]
    if missing:
        spec = specs[missing[0]]
        raise ContractError(f"{label}: missing {kind} '{spec.name}' ({spec.describe()}); "
                            f"the contract's {kind}s are {list(specs)}")
    extra = [n for n in arrays if n not in specs]
    if extra:
        raise ContractError(f"{label}: unexpected {kind} '{extra[0]}'; the contract's {kind}s are {list(specs)}")
    bound = dict(axis_sizes or {})
    where_bound = {}
    for name, spec in specs.items():
        arr = arrays[name]
        if not isinstance(arr, np.ndarray):
            raise ContractError(f"{label}: {kind} '{name}' must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(spec.dtype):
            raise ContractError(f"{label}: {kind} '{name}' has dtype {arr.dtype}, contract says {spec.dtype}")
        if arr.ndim != spec.rank:
            raise ContractError(f"{label}: {kind} '{name}' has rank {arr.ndim} (shape {list(arr.shape)}), "
                                f"contract says rank {spec.rank} {format_shape(spec.shape)}")
        for axis, (size, want) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(want, str):
                if want == UNNAMED_AXIS:
                    continue
                if want in bound and bound[want] != size:
                    other = where_bound.get(want, "the inputs")
                    raise ContractError(f"{label}: {kind} '{name}' dim {axis} (axis '{want}') is {size}, "
                                        f"but axis '{want}' is {bound[want]} in {other}")
                bound.setdefault(want, size)
                where_bound.setdefault(want, f"'{name}'")
            elif size != want:
                raise ContractError(f"{label}: {kind} '{name}' dim {axis} is {size} (shape {list(arr.shape)}), "
                                    f"contract says {want} {format_shape(spec.shape)}")
    return bound


def compare_model_io(label: str, contract: ModelContract, actual_inputs: Mapping[str, TensorSpec],
                     actual_outputs: Mapping[str, TensorSpec]) -> list:
    """Differences between what a model file declares and its contract, one message each.

    A fixed size in the contract may be dynamic in the model (the model accepts it), but a
    dynamic axis in the contract must be dynamic in the model (the pipeline will feed
    other sizes). Any dynamic axis name in the model matches any name in the contract.
    Outputs that the model has beyond the contract are allowed (they are not fetched).
    """
    problems = []
    for kind, want, have in (("input", contract.inputs, actual_inputs), ("output", contract.outputs, actual_outputs)):
        for name, spec in want.items():
            if name not in have:
                problems.append(f"{label}: model has no {kind} '{name}' (its {kind}s: {sorted(have)})")
                continue
            problems.extend(_compare_spec(label, kind, spec, have[name]))
    for name in actual_inputs:
        if name not in contract.inputs:
            problems.append(f"{label}: model input '{name}' is not in the contract "
                            f"(contract inputs: {sorted(contract.inputs)})")
    return problems


def _compare_spec(label: str, kind: str, want: TensorSpec, have: TensorSpec) -> list:
    if have.dtype != want.dtype:
        return [f"{label}: {kind} '{want.name}' has dtype {have.dtype}, contract says {want.dtype}"]
    if have.rank != want.rank:
        return [f"{label}: {kind} '{want.name}' has rank {have.rank} {format_shape(have.shape)}, "
                f"contract says rank {want.rank} {format_shape(want.shape)}"]
    problems = []
    for axis, (got, exp) in enumerate(zip(have.shape, want.shape)):
        if isinstance(exp, int) and isinstance(got, int) and got != exp:
            problems.append(f"{label}: {kind} '{want.name}' dim {axis} is {got} {format_shape(have.shape)}, "
                            f"contract says {exp} {format_shape(want.shape)}")
        elif isinstance(exp, str) and isinstance(got, int):
            problems.append(f"{label}: {kind} '{want.name}' dim {axis} is fixed to {got} {format_shape(have.shape)}, "
                            f"contract says dynamic axis '{exp}' {format_shape(want.shape)}")
    return problems


def raise_if_problems(problems: Sequence[str], error_type=ContractError) -> None:
    """Raise one error whose first line is the first problem and which lists the rest."""
    if problems:
        rest = "".join(f"\n  also: {p}" for p in problems[1:])
        raise error_type(problems[0] + rest)


class InferenceBackend(ABC):
    """A loaded model that maps named numpy inputs to named numpy outputs.

    Subclasses implement :meth:`_load` and :meth:`_run`; this class checks every feed and
    result against the contract and keeps a window of run latencies.

    Parameters
    ----------
    contract : ModelContract
        The tensors the model must take and return.
    label : str
        How messages name this model (usually its file name).
    latency_window : int
        Number of most recent runs that :meth:`latency_stats` summarises.
    """

    def __init__(self, contract: ModelContract, label: str, latency_window: int = 1000) -> None:
        self._contract = contract
        self.label = label
        self._latencies_s: deque = deque(maxlen=latency_window)
        self._total_runs = 0
        self._loaded = False
        self._load_lock = threading.Lock()

    @property
    def contract(self) -> ModelContract:
        return self._contract

    @property
    def input_specs(self) -> Mapping[str, TensorSpec]:
        return self._contract.inputs

    @property
    def output_specs(self) -> Mapping[str, TensorSpec]:
        return self._contract.outputs

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def load(self) -> "InferenceBackend":
        """Load the model and check its real inputs/outputs against the contract (idempotent).

        Returns
        -------
        InferenceBackend
            ``self``, so ``backend = OnnxRuntimeBackend(...).load()`` reads naturally.
        """
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict:
        """Run the model once.

        Parameters
        ----------
        inputs : dict of str -> numpy.ndarray
            Exactly the contract's inputs, with its dtypes and shapes (no implicit casts).

        Returns
        -------
        dict of str -> numpy.ndarray
            The contract's outputs.

        Raises
        ------
        ContractError
            If an input (checked before the runtime is called) or an output does not match.
        RuntimeBackendError
            If the model is not loaded or the runtime fails.
        """
        if not self._loaded:
            raise RuntimeBackendError(f"{self.label}: call load() before run()")
        axis_sizes = self._contract.check_inputs(inputs, self.label)
        start = time.perf_counter()
        outputs = self._run(inputs)
        self._latencies_s.append(time.perf_counter() - start)
        self._total_runs += 1
        self._contract.check_outputs(outputs, self.label, axis_sizes)
        return outputs

    def warmup(self, n: int = 3, inputs: Optional[Mapping[str, np.ndarray]] = None,
               axis_sizes: Optional[Mapping[str, int]] = None) -> None:
        """Run ``n`` times (zeros by default) so lazy allocations happen before real use.

        Warm-up runs are not counted in :meth:`latency_stats`.
        """
        feed = dict(inputs) if inputs is not None else self._contract.example_inputs(axis_sizes)
        self.load()
        for _ in range(max(0, int(n))):
            self.run(feed)
        self.reset_stats()

    def latency_stats(self) -> dict:
        """``{"p50_ms", "p99_ms", "mean_ms", "max_ms", "count", "total_runs"}`` over the window.

        ``count`` is the number of runs in the window; the times are NaN while it is 0.
        """
        samples = np.asarray(self._latencies_s, dtype=np.float64) * 1e3
        if samples.size == 0:
            nan = float("nan")
            return {"p50_ms": nan, "p99_ms": nan, "mean_ms": nan, "max_ms": nan, "count": 0,
                    "total_runs": self._total_runs}
        p50, p99 = np.percentile(samples, [50, 99])
        return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(samples.mean()),
                "max_ms": float(samples.max()), "count": int(samples.size), "total_runs": self._total_runs}

    def reset_stats(self) -> None:
        self._latencies_s.clear()
        self._total_runs = 0

    def close(self) -> None:
        """Release the runtime's resources; :meth:`load` may be called again afterwards."""
        with self._load_lock:
            if self._loaded:
                self._close()
                self._loaded = False

    def __enter__(self) -> "InferenceBackend":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None:
        """Create the runtime session; raise ModelLoadError / ContractError / BackendUnavailableError."""

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict:
        """Run the checked inputs; return the contract's outputs."""

    def _close(self) -> None:
        """Release resources (default: nothing to do)."""
