"""ONNX Runtime backend: CPU here, CUDA or TensorRT execution providers on a GPU machine.

Providers are used exactly as asked. Asking for one that this onnxruntime build does not
have, or that fails to initialise (ONNX Runtime would otherwise log a warning and quietly
run on the CPU), is an error: CPU is used as a fallback only when the caller lists it.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .base import (UNNAMED_AXIS, BackendUnavailableError, ContractError, InferenceBackend, ModelContract,
                   ModelLoadError, ProviderUnavailableError, RuntimeBackendError, TensorSpec, compare_model_io,
                   raise_if_problems)

#: ONNX Runtime's type strings -> numpy dtype names.
ORT_TYPE_TO_DTYPE = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

ProviderArg = Union[str, Tuple[str, Mapping]]
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # a hard dependency, but say so clearly if it is broken
        raise BackendUnavailableError(f"onnxruntime is not importable: {exc}") from exc
    return onnxruntime


def available_providers() -> list:
    """Execution providers this onnxruntime build offers, in ONNX Runtime's priority order."""
    return list(_ort().get_available_providers())


def split_providers(providers: Sequence[ProviderArg]) -> tuple:
    """``["CUDAExecutionProvider", ("TensorrtExecutionProvider", {...})]`` -> (names, options).

    Raises
    ------
    ProviderUnavailableError
        If the list is empty or malformed, or a provider is not available in this
        onnxruntime build; the message lists the available providers.
    """
    if isinstance(providers, str):
        providers = [providers]
    names, options = [], []
    for entry in providers or ():
        if isinstance(entry, str):
            name, opts = entry, {}
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) \
                and isinstance(entry[1], Mapping):
            name, opts = entry[0], dict(entry[1])
        else:
            raise ProviderUnavailableError(f"provider entries must be a name or (name, options dict), got {entry!r}")
        names.append(name)
        options.append(opts)  # onnxruntime's Python layer converts values to the strings its C API takes
    if not names:
        raise ProviderUnavailableError("no execution provider given; use e.g. ['CPUExecutionProvider']")
    have = available_providers()
    missing = [n for n in names if n not in have]
    if missing:
        raise ProviderUnavailableError(
            f"execution provider {missing[0]} is not available in this onnxruntime build; available: {have}. "
            "Install onnxruntime-gpu for CUDAExecutionProvider/TensorrtExecutionProvider, or add "
            "'CPUExecutionProvider' to the list to allow running on the CPU.")
    return names, options


def session_io_specs(session) -> tuple:
    """Inputs and outputs an ONNX Runtime session declares, as TensorSpecs.

    Unnamed dynamic dimensions become :data:`UNNAMED_AXIS`; a type outside
    :data:`ORT_TYPE_TO_DTYPE` is reported by its ONNX Runtime name.
    """
    def specs(args) -> dict:
        out = {}
        for arg in args:
            dims = tuple(d if isinstance(d, int) else (d if isinstance(d, str) and d else UNNAMED_AXIS)
                         for d in (arg.shape or ()))
            dtype = ORT_TYPE_TO_DTYPE.get(arg.type)
            out[arg.name] = _ActualSpec(arg.name, dtype or arg.type, dims)
        return out
    return specs(session.get_inputs()), specs(session.get_outputs())


class _ActualSpec(TensorSpec):
    """A TensorSpec for what a file declares: dtype may be any type name (reported, not rejected)."""

    def __post_init__(self) -> None:  # noqa: D105 - skip dtype validation, keep shape normalisation
        object.__setattr__(self, "shape", tuple(self.shape))


def clean_ort_message(exc: BaseException) -> str:
    """ONNX Runtime's ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model ...`` -> shorter text."""
    text = str(exc).strip()
    prefix = "[ONNXRuntimeError] :"
    if text.startswith(prefix):
        parts = [p.strip() for p in text[len(prefix):].split(" : ", 2)]
        text = ": ".join(parts[1:]) if len(parts) == 3 else text
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxRuntimeBackend(InferenceBackend):
    """Runs an ONNX model with ONNX Runtime.

    Parameters
    ----------
    path : str
        The ``.onnx`` file.
    contract : ModelContract
        Its tensors; checked against the file at :meth:`load` and against every feed.
    providers : sequence
        Execution providers in priority order, each a name or ``(name, options)``, e.g.
        ``[("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/var/cache/trt"}), "CUDAExecutionProvider"]``. Listing
        ``"CPUExecutionProvider"`` allows running on the CPU; without it, CPU is never used silently.
    intra_op_num_threads, inter_op_num_threads : int, optional
        Thread counts (None: ONNX Runtime's default).
    label : str, optional
        How messages name the model (default: the file name).
    """

    def __init__(self, path: str, contract: ModelContract, providers: Sequence[ProviderArg] = DEFAULT_PROVIDERS,
                 intra_op_num_threads: Optional[int] = None, inter_op_num_threads: Optional[int] = None,
                 label: Optional[str] = None) -> None:
        super().__init__(contract, label or os.path.basename(path))
        self.path = path
        self._providers = list(providers) if not isinstance(providers, str) else [providers]
        for name, value in (("intra_op_num_threads", intra_op_num_threads),
                            ("inter_op_num_threads", inter_op_num_threads)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an int >= 0 (0 = ONNX Runtime's default), got {value!r}")
        self.intra_op_num_threads = intra_op_num_threads
        self.inter_op_num_threads = inter_op_num_threads
        self._session = None
        self._output_names: list = []

    @property
    def active_providers(self) -> list:
        """Providers the loaded session really uses (empty before :meth:`load`)."""
        return list(self._session.get_providers()) if self._session is not None else []

    def _load(self) -> None:
        ort = _ort()
        check_model_file(self.path, self.label)
        names, options = split_providers(self._providers)
        session_options = ort.SessionOptions()
        if self.intra_op_num_threads is not None:
            session_options.intra_op_num_threads = self.intra_op_num_threads
        if self.inter_op_num_threads is not None:
            session_options.inter_op_num_threads = self.inter_op_num_threads
        try:
            session = ort.InferenceSession(self.path, session_options, providers=names, provider_options=options)
        except Exception as exc:  # ORT raises its own pybind exception types for every failure kind
            raise ModelLoadError(f"{self.label}: cannot load ONNX model: {clean_ort_message(exc)}") from exc
        active = session.get_providers()
        dropped = [n for n in names if n not in active]
        if dropped:
            raise ProviderUnavailableError(
                f"{self.label}: execution provider {dropped[0]} failed to initialise (session runs on {active}); "
                "check the CUDA/cuDNN/TensorRT libraries, or add 'CPUExecutionProvider' to allow the CPU")
        actual_inputs, actual_outputs = session_io_specs(session)
        raise_if_problems(compare_model_io(self.label, self.contract, actual_inputs, actual_outputs))
        self._session = session
        self._output_names = list(self.contract.outputs)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict:
        try:
            values = self._session.run(self._output_names, dict(inputs))
        except Exception as exc:
            raise RuntimeBackendError(f"{self.label}: onnxruntime run failed: {clean_ort_message(exc)}") from exc
        return dict(zip(self._output_names, values))

    def _close(self) -> None:
        self._session = None


def check_model_file(path: str, label: str) -> None:
    """Raise ModelLoadError if ``path`` is missing, not a file, or empty."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{label}: file not found: {path}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{label}: not a file: {path}")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"{label}: file is empty: {path}")


__all__ = ["OnnxRuntimeBackend", "available_providers", "split_providers", "session_io_specs",
           "check_model_file", "ORT_TYPE_TO_DTYPE", "DEFAULT_PROVIDERS", "ContractError"]
