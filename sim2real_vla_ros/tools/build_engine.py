"""build_engine: ONNX -> TensorRT engine, with the metadata sidecar the runtime checks.

Build once per robot (per GPU model and TensorRT version), offline; the runtime never
rebuilds. Examples::

    # one model of a bundle: ONNX path, engine path and axis ranges come from bundle.yaml
    build_engine --bundle models/reference --role actor_decoder --precision fp16 \\
        --timing-cache ~/.cache/sim2real_vla_ros/timing.cache

    # any ONNX file: dynamic axes need a range (min:opt:max)
    build_engine --onnx planner.onnx --output planner.engine --axis B=1:1:3
    build_engine --onnx decoder.onnx --output decoder.engine --shape tokens=1x1:1x16:1x65

Writes ``<output>`` and ``<output>.meta.json`` (TensorRT version, GPU name and compute
capability, precision, input profiles, ONNX SHA-256, engine SHA-256, creation time).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Mapping, Optional

from sim2real_vla_ros.core.policy.runtime.base import BackendUnavailableError, RuntimeBackendError
from sim2real_vla_ros.core.policy.runtime.engine_metadata import (PRECISIONS, EngineMetadata, ShapeProfile, create_metadata,
                                                           current_environment, resolve_profiles, sha256_bytes,
                                                           write_metadata)

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_BUILD_FAILED = 0, 2, 3, 1


class EngineBuildError(RuntimeBackendError):
    """Parsing or building failed; the message carries TensorRT's reasons."""


def parse_dims(text: str) -> tuple:
    """``"1x3x96x128"`` -> ``(1, 3, 96, 128)``."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad shape {text!r}: use dims joined by 'x', e.g. 1x3x96x128") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"bad shape {text!r}: dims must be >= 0")
    return dims


def parse_shape_arg(text: str) -> tuple:
    """``"tokens=1x1:1x16:1x65"`` -> ``("tokens", ShapeProfile)``; ``NAME=SHAPE`` fixes all three."""
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise ValueError(f"bad --shape {text!r}: use NAME=MIN:OPT:MAX (each like 1x3x96x128) or NAME=SHAPE")
    parts = spec.split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise ValueError(f"bad --shape {text!r}: give one shape or three (min:opt:max)")
    try:
        return name, ShapeProfile(*(parse_dims(p) for p in parts))
    except ValueError as exc:
        raise ValueError(f"bad --shape {text!r}: {exc}") from None


def parse_axis_arg(text: str) -> tuple:
    """``"S=1:16:65"`` -> ``("S", (1, 16, 65))``; ``"B=2"`` fixes the axis to 2."""
    name, sep, spec = text.partition("=")
    try:
        values = tuple(int(v) for v in spec.split(":"))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if not sep or not name or len(values) != 3 or not 0 <= values[0] <= values[1] <= values[2]:
        raise ValueError(f"bad --axis {text!r}: use NAME=MIN:OPT:MAX with 0 <= MIN <= OPT <= MAX")
    return name, values


def onnx_input_shapes(onnx_path: str) -> dict:
    """Input name -> shape (dynamic axes as names) read with ONNX Runtime on the CPU."""
    import onnxruntime

    from sim2real_vla_ros.core.policy.runtime.onnx_backend import clean_ort_message

    try:
        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EngineBuildError(f"{os.path.basename(onnx_path)}: cannot load ONNX model: {clean_ort_message(exc)}") \
            from exc
    shapes = {}
    for arg in session.get_inputs():
        shapes[arg.name] = tuple(d if isinstance(d, int) else (d or f"{arg.name}_dim{i}")
                                 for i, d in enumerate(arg.shape))
    return shapes


def _has_fp16_tensors(network, trt) -> bool:
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for out in range(layer.num_outputs):
            if layer.get_output(out).dtype == trt.float16:
                return True
    return False


def build_engine(onnx_path: str, engine_path: str, *, profiles: Mapping[str, ShapeProfile], precision: str = "fp32",
                 timing_cache_path: Optional[str] = None, workspace_mib: Optional[int] = None, device: int = 0,
                 log: Callable[[str], None] = print) -> EngineMetadata:
    """Build and write a TensorRT engine and its metadata sidecar.

    Parameters
    ----------
    onnx_path, engine_path : str
        Source model and destination engine (``.engine`` / ``.plan``).
    profiles : dict of str -> ShapeProfile
        Optimisation profile of every network input (see ``resolve_profiles``).
    precision : {"fp32", "fp16"}
        TensorRT 10 enables FP16 kernels with ``BuilderFlag.FP16``. TensorRT 11 removed
        that flag (networks are strongly typed): the ONNX must already be in mixed
        precision (e.g. ``python -m modelopt.onnx.autocast``), which is checked.
    timing_cache_path : str, optional
        Loaded if it exists, written back after the build (makes rebuilds much faster).
    workspace_mib : int, optional
        Workspace memory-pool limit.
    device : int
        CUDA device to build for.

    Returns
    -------
    EngineMetadata
        What was written to ``<engine_path>.meta.json``.

    Raises
    ------
    BackendUnavailableError
        If tensorrt / cuda-python or a GPU is missing.
    EngineBuildError
        If parsing or building fails (with TensorRT's reasons).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    from sim2real_vla_ros.core.policy.runtime.tensorrt_backend import (cuda_check, import_cudart, import_tensorrt,
                                                                tensorrt_logger)

    trt = import_tensorrt()
    env = current_environment(device)
    cuda_check(import_cudart().cudaSetDevice(device), "cudaSetDevice")
    log(f"building {engine_path} from {onnx_path}: TensorRT {env.tensorrt_version}, {env.gpu_name} "
        f"(sm {env.compute_capability}), {precision}")
    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network()  # explicit batch (TRT 10) / strongly typed (TRT 11) by default
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{os.path.basename(onnx_path)}: TensorRT could not parse the ONNX model:\n  "
                               + "\n  ".join(errors or ["(no parser error reported)"]))
    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if precision == "fp16":
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        elif not _has_fp16_tensors(network, trt):
            raise EngineBuildError(
                f"TensorRT {env.tensorrt_version} builds strongly typed networks only (BuilderFlag.FP16 was removed "
                f"in 11.0) and {os.path.basename(onnx_path)} has no float16 tensors: convert it first, e.g. "
                f"`python -m modelopt.onnx.autocast --onnx_path {onnx_path} --output_path model_fp16.onnx`, "
                "and build that file with --precision fp16")
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [name for name in network_inputs if name not in profiles]
    if missing:
        raise EngineBuildError(f"no shape profile for network input(s) {missing}")
    profile = builder.create_optimization_profile()
    for name in network_inputs:
        entry = profiles[name]
        profile.set_shape(name, entry.min, entry.opt, entry.max)
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache_path:
        data = b""
        if os.path.isfile(timing_cache_path):
            with open(timing_cache_path, "rb") as handle:
                data = handle.read()
            log(f"using timing cache {timing_cache_path} ({len(data)} bytes)")
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {engine_path} (see the TensorRT log above)")
    engine_bytes = bytes(serialized)
    log(f"built in {time.monotonic() - start:.1f} s, {len(engine_bytes) / 2**20:.1f} MiB")
    os.makedirs(os.path.dirname(os.path.abspath(engine_path)), exist_ok=True)
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(engine_bytes)
    os.replace(tmp, engine_path)
    if cache is not None:
        with open(timing_cache_path, "wb") as handle:
            handle.write(bytes(config.get_timing_cache().serialize()))
    meta = create_metadata(env=env, precision=precision, input_profiles={n: profiles[n] for n in network_inputs},
                           onnx_path=onnx_path, engine_sha256=sha256_bytes(engine_bytes),
                           extra={"workspace_mib": workspace_mib, "timing_cache": bool(timing_cache_path)})
    log(f"wrote {engine_path} and {write_metadata(meta, engine_path)}")
    return meta


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_engine", description="Build a TensorRT engine from an ONNX model and write its metadata sidecar "
                                         "(<engine>.meta.json), which the runtime checks before loading.")
    source = parser.add_argument_group("source (one of)")
    source.add_argument("--onnx", help="ONNX model to build")
    source.add_argument("--bundle", help="bundle folder; with --role, takes the ONNX, engine path and axis ranges "
                                         "from bundle.yaml")
    source.add_argument("--role", help="model role in the bundle (e.g. planner, actor_decoder)")
    parser.add_argument("--output", help="engine file to write (default: the bundle's models.<role>.engine, or the "
                                         "ONNX path with .engine)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                        help="profile of one input, dims joined by x (e.g. tokens=1x1:1x16:1x65); repeatable")
    parser.add_argument("--axis", action="append", default=[], metavar="AXIS=MIN:OPT:MAX",
                        help="range of a named dynamic axis (e.g. S=1:16:65); repeatable")
    parser.add_argument("--timing-cache", help="timing cache file (read if present, written after the build)")
    parser.add_argument("--workspace-mib", type=int, help="workspace memory limit in MiB")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    return parser


def _resolve_source(args) -> tuple:
    """(onnx_path, engine_path, input shapes, axis ranges) from --onnx or --bundle/--role."""
    if args.bundle or args.role:
        if not (args.bundle and args.role) or args.onnx:
            raise ValueError("use either --onnx, or --bundle together with --role")
        from sim2real_vla_ros.core.policy.bundle import read_manifest

        manifest = read_manifest(args.bundle)
        if args.role not in manifest.models:
            raise ValueError(f"bundle has no model role '{args.role}'; roles: {sorted(manifest.models)}")
        entry = manifest.models[args.role]
        engine = args.output or entry.engine or os.path.splitext(entry.file)[0] + ".engine"
        shapes = {name: spec.shape for name, spec in entry.contract.inputs.items()}
        return entry.file, engine, shapes, dict(entry.dynamic_axes)
    if not args.onnx:
        raise ValueError("give --onnx MODEL.onnx, or --bundle DIR --role ROLE")
    if not os.path.isfile(args.onnx):
        raise ValueError(f"ONNX file not found: {args.onnx}")
    engine = args.output or os.path.splitext(args.onnx)[0] + ".engine"
    return args.onnx, engine, None, {}


def main(argv: Optional[list] = None) -> int:
    """Console entry point; returns the process exit code."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        onnx_path, engine_path, shapes, axis_ranges = _resolve_source(args)
        axis_ranges.update(dict(parse_axis_arg(a) for a in args.axis))
        explicit = dict(parse_shape_arg(s) for s in args.shape)
    except ValueError as exc:  # BundleError is a ValueError too
        parser.error(str(exc))
    try:
        # Shapes from a bundle manifest are checked before anything else, so a missing axis
        # range is reported even where TensorRT is absent; a bare ONNX file is only read
        # (possibly slowly) once tensorrt is known to be importable.
        profiles = resolve_profiles(shapes, axis_ranges, explicit) if shapes is not None else None
        from sim2real_vla_ros.core.policy.runtime.tensorrt_backend import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
        if profiles is None:
            profiles = resolve_profiles(onnx_input_shapes(onnx_path), axis_ranges, explicit)
        build_engine(onnx_path, engine_path, profiles=profiles, precision=args.precision,
                     timing_cache_path=args.timing_cache, workspace_mib=args.workspace_mib, device=args.device)
    except BackendUnavailableError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ValueError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeBackendError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
