"""Inference backends behind one interface (:class:`InferenceBackend`).

- :class:`OnnxRuntimeBackend`: ONNX Runtime with configurable execution providers.
- :class:`TensorRTBackend`: serialised TensorRT engines, refused on a version/GPU mismatch.

``tensorrt`` and ``cuda-python`` are imported only when a TensorRT engine is loaded.
"""
from .base import (BackendUnavailableError, ContractError, InferenceBackend, ModelContract, ModelLoadError,
                   ProviderUnavailableError, RuntimeBackendError, TensorSpec, compare_model_io)
from .engine_metadata import EngineMetadata, EngineMismatchError, RuntimeEnvironment, ShapeProfile
from .onnx_backend import OnnxRuntimeBackend, available_providers
from .tensorrt_backend import TensorRTBackend

__all__ = [
    "InferenceBackend", "ModelContract", "TensorSpec", "compare_model_io",
    "OnnxRuntimeBackend", "available_providers", "TensorRTBackend",
    "EngineMetadata", "EngineMismatchError", "RuntimeEnvironment", "ShapeProfile",
    "RuntimeBackendError", "ModelLoadError", "BackendUnavailableError", "ProviderUnavailableError",
    "ContractError",
]
