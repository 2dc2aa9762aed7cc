"""Native TensorRT engine backend (TensorRT 10/11 name-based tensor API, cuda-python buffers).

Load order matters: the sidecar metadata is read and compared with the running TensorRT
version and GPU (and the source ONNX and engine hashes) *before* the engine is
deserialised, so a stale engine fails with a rebuild command instead of a TensorRT crash.

``tensorrt`` and ``cuda-python`` are imported lazily: this module imports on machines
without a GPU, and only :meth:`TensorRTBackend.load` needs them.
"""
from __future__ import annotations

import os
import threading
from typing import Mapping, Optional

import numpy as np

from .base import (UNNAMED_AXIS, BackendUnavailableError, ContractError, InferenceBackend, ModelContract,
                   ModelLoadError, RuntimeBackendError, compare_model_io, format_shape, raise_if_problems)
from .engine_metadata import (EngineMetadata, RuntimeEnvironment, ShapeProfile, check_engine_metadata,
                              rebuild_command, sha256_bytes)
from .onnx_backend import _ActualSpec, check_model_file

_LOGGER = None


def import_tensorrt():
    """The ``tensorrt`` module, or BackendUnavailableError saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the tensorrt Python package is not installed ({exc}); install TensorRT for this machine's CUDA "
            "(pip install tensorrt, or JetPack's python3-libnvinfer on Jetson), or use backend='onnxruntime'") from exc
    return tensorrt


def import_cudart():
    """cuda-python's runtime API module (``cuda.bindings.runtime``; ``cuda.cudart`` on cuda-python < 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError as exc:
            raise BackendUnavailableError(
                f"cuda-python is not installed ({exc}); pip install cuda-python (matching the CUDA major "
                "version) to run TensorRT engines") from exc
    return cudart


def cuda_check(result, what: str):
    """Unpack a cuda-python call's ``(error, *values)`` tuple; raise on an error code."""
    cudart = import_cudart()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)
        name = name[1].decode() if isinstance(name, tuple) and isinstance(name[1], bytes) else str(err)
        raise RuntimeBackendError(f"CUDA call {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_device_properties(device: int = 0) -> tuple:
    """``(gpu_name, major, minor)`` of CUDA device ``device``.

    Raises
    ------
    BackendUnavailableError
        If cuda-python is missing or there is no such CUDA device.
    """
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise BackendUnavailableError(f"no CUDA device available (cudaGetDeviceCount returned {name}: no GPU, "
                                      "or the NVIDIA driver is missing or older than this CUDA)")
    if count == 0:
        raise BackendUnavailableError("no CUDA device available (cudaGetDeviceCount found 0 devices)")
    if not 0 <= device < count:
        raise BackendUnavailableError(f"CUDA device {device} does not exist; this machine has {count}")
    prop = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), int(prop.major), int(prop.minor)


def tensorrt_logger():
    """One process-wide TensorRT logger (TensorRT expects a single logger instance)."""
    global _LOGGER
    if _LOGGER is None:
        trt = import_tensorrt()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def engine_io_specs(engine) -> tuple:
    """Inputs and outputs a deserialised engine declares (dynamic dims as :data:`UNNAMED_AXIS`)."""
    trt = import_tensorrt()
    inputs, outputs = {}, {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dims = tuple(int(d) if d >= 0 else UNNAMED_AXIS for d in engine.get_tensor_shape(name))
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype)).name
        except TypeError:  # e.g. bfloat16 / fp8 have no numpy type
            dtype = str(trt_dtype)
        target = inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs
        target[name] = _ActualSpec(name, dtype, dims)
    return inputs, outputs


class TensorRTBackend(InferenceBackend):
    """Runs a serialised TensorRT engine (``.engine`` / ``.plan``) built by ``build_engine``.

    Parameters
    ----------
    engine_path : str
        The engine; ``<engine_path>.meta.json`` must sit next to it.
    contract : ModelContract
        Checked against the engine's tensors at load and against every feed.
    onnx_path : str, optional
        The ONNX the engine must have been built from (hash compared with the metadata).
    precision : {"fp32", "fp16"}, optional
        Precision the deployment expects; a different one in the metadata is refused.
    input_profiles : dict of str -> ShapeProfile, optional
        Shape profiles the deployment needs; different ones in the metadata are refused.
    device : int
        CUDA device index.
    verify_engine_hash : bool
        Compare the engine file's SHA-256 with the metadata (detects an engine replaced
        without its sidecar).
    label : str, optional
        How messages name the model (default: the engine's file name).
    """

    def __init__(self, engine_path: str, contract: ModelContract, *, onnx_path: Optional[str] = None,
                 precision: Optional[str] = None, input_profiles: Optional[Mapping[str, ShapeProfile]] = None,
                 device: int = 0, verify_engine_hash: bool = True, label: Optional[str] = None) -> None:
        super().__init__(contract, label or os.path.basename(engine_path))
        self.engine_path = engine_path
        self.onnx_path = onnx_path
        self.precision = precision
        self.input_profiles = dict(input_profiles) if input_profiles else None
        self.device = int(device)
        self.verify_engine_hash = verify_engine_hash
        self.metadata: Optional[EngineMetadata] = None
        self.environment: Optional[RuntimeEnvironment] = None
        self._runtime = self._engine = self._context = self._stream = None
        self._buffers: dict = {}  # tensor name -> (device pointer, capacity in bytes)
        self._run_lock = threading.Lock()  # an execution context is not re-entrant

    def _load(self) -> None:
        trt = import_tensorrt()
        cudart = import_cudart()
        check_model_file(self.engine_path, self.label)
        name, major, minor = cuda_device_properties(self.device)
        self.environment = RuntimeEnvironment(str(trt.__version__), name, f"{major}.{minor}")
        with open(self.engine_path, "rb") as handle:
            engine_bytes = handle.read()
        self.metadata = check_engine_metadata(
            self.engine_path, self.environment, onnx_path=self.onnx_path, precision=self.precision,
            engine_sha256=sha256_bytes(engine_bytes) if self.verify_engine_hash else None,
            input_profiles=self.input_profiles)
        cuda_check(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        runtime = trt.Runtime(tensorrt_logger())
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            command = rebuild_command(self.onnx_path or self.metadata.onnx_file, self.engine_path,
                                      self.metadata.precision, self.metadata.input_profiles)
            raise ModelLoadError(f"{self.label}: TensorRT could not deserialise the engine (see the TensorRT log "
                                 f"above); rebuild it with:\n  {command}")
        actual_inputs, actual_outputs = engine_io_specs(engine)
        raise_if_problems(compare_model_io(self.label, self.contract, actual_inputs, actual_outputs))
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeBackendError(f"{self.label}: could not create a TensorRT execution context "
                                      "(out of GPU memory?)")
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._runtime, self._engine, self._context = runtime, engine, context

    def _device_buffer(self, name: str, nbytes: int) -> int:
        cudart = import_cudart()
        # TensorRT wants a valid address even for an empty tensor, so never allocate 0 bytes.
        needed = max(int(nbytes), 256)
        pointer, capacity = self._buffers.get(name, (None, 0))
        if pointer is None or capacity < needed:
            if pointer is not None:
                cuda_check(cudart.cudaFree(pointer), "cudaFree")
            pointer = cuda_check(cudart.cudaMalloc(needed), f"cudaMalloc({needed}) for '{name}'")
            self._buffers[name] = (pointer, needed)
        return int(pointer)

    def _set_input(self, name: str, array: np.ndarray) -> None:
        cudart = import_cudart()
        if not self._context.set_input_shape(name, tuple(array.shape)):
            low, opt, high = (tuple(s) for s in self._engine.get_tensor_profile_shape(name, 0))
            raise ContractError(f"{self.label}: input '{name}' shape {list(array.shape)} is outside the engine's "
                                f"optimisation profile (min {format_shape(low)}, opt {format_shape(opt)}, "
                                f"max {format_shape(high)}); rebuild with a wider --shape")
        pointer = self._device_buffer(name, array.nbytes)
        if array.nbytes:
            cuda_check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                       f"cudaMemcpyAsync host->device '{name}'")
        self._context.set_tensor_address(name, pointer)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict:
        cudart = import_cudart()
        with self._run_lock:
            # Keep contiguous copies alive until the stream is synchronised.
            host_inputs = {name: np.ascontiguousarray(arr) for name, arr in inputs.items()}
            for name, array in host_inputs.items():
                self._set_input(name, array)
            outputs = {}
            for name, spec in self.contract.outputs.items():
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeBackendError(f"{self.label}: output '{name}' has a data-dependent shape {shape}, "
                                              "which this backend does not support")
                host = np.empty(shape, dtype=spec.dtype)
                self._context.set_tensor_address(name, self._device_buffer(name, host.nbytes))
                outputs[name] = host
            if not self._context.execute_async_v3(int(self._stream)):
                raise RuntimeBackendError(f"{self.label}: TensorRT execute_async_v3 failed (see the TensorRT log)")
            for name, host in outputs.items():
                if host.nbytes:
                    cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                               f"cudaMemcpyAsync device->host '{name}'")
            cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            del host_inputs
        return outputs

    def _close(self) -> None:
        cudart = import_cudart()
        for pointer, _capacity in self._buffers.values():
            cudart.cudaFree(pointer)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        # Context before engine before runtime: each needs the next one alive.
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None


__all__ = ["TensorRTBackend", "import_tensorrt", "import_cudart", "cuda_device_properties", "engine_io_specs",
           "cuda_check", "tensorrt_logger"]
