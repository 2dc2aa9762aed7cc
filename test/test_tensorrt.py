"""TensorRT path: engine metadata and the mismatch check (pure, run everywhere), the
build_engine CLI without TensorRT, and, on a GPU machine, build + load + run compared
with ONNX Runtime on the CPU (marked ``gpu``; skipped with the reason elsewhere).
"""
import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_factory import affine_contract, make_affine_model, make_mask_model
from sim2real_vla_ros.core.policy.runtime import (BackendUnavailableError, ContractError, EngineMismatchError,
                                           ModelContract, OnnxRuntimeBackend, ShapeProfile, TensorRTBackend)
from sim2real_vla_ros.core.policy.runtime.engine_metadata import (EngineMetadata, RuntimeEnvironment, check_engine_metadata,
                                                           compare_metadata, create_metadata, metadata_path,
                                                           read_metadata, rebuild_command, resolve_profiles,
                                                           sha256_file, write_metadata)
from sim2real_vla_ros.tools import build_engine as build_engine_tool

REFERENCE_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "reference"
ORIN = RuntimeEnvironment("10.3.0.30", "Orin", "8.7")
PROFILES = {"x": ShapeProfile((1, 4), (2, 4), (8, 4))}


def tensorrt_available():
    return importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def built(tmp_path):
    """An ONNX file, a fake engine file and metadata written as build_engine would on ``ORIN``."""
    onnx_path, _, _ = make_affine_model(str(tmp_path / "affine.onnx"))
    engine_path = tmp_path / "affine.engine"
    engine_path.write_bytes(b"serialized engine bytes")
    meta = create_metadata(env=ORIN, precision="fp16", input_profiles=PROFILES, onnx_path=onnx_path,
                           engine_sha256=sha256_file(str(engine_path)))
    write_metadata(meta, str(engine_path))
    return onnx_path, str(engine_path), meta


# ------------------------------------------------------------------------------------------------ metadata (pure)

def test_metadata_round_trip(built):
    onnx_path, engine_path, meta = built
    assert metadata_path(engine_path) == engine_path + ".meta.json"
    loaded = read_metadata(engine_path)
    assert loaded == meta
    assert loaded.onnx_file == "affine.onnx" and loaded.onnx_sha256 == sha256_file(onnx_path)
    assert loaded.input_profiles["x"].to_cli() == "1x4:2x4:8x4"
    data = json.loads(Path(metadata_path(engine_path)).read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "input_profiles", "onnx_sha256",
                "created"):
        assert key in data


def test_compare_metadata_match(built):
    onnx_path, engine_path, meta = built
    assert compare_metadata(meta, ORIN, precision="fp16", onnx_sha256=sha256_file(onnx_path),
                            engine_sha256=sha256_file(engine_path), input_profiles=PROFILES) == []
    assert check_engine_metadata(engine_path, ORIN, onnx_path=onnx_path, precision="fp16") == meta


@pytest.mark.parametrize("env, kwargs, fragment", [
    (RuntimeEnvironment("10.7.0.23", "Orin", "8.7"), {}, "built with TensorRT 10.3.0.30, running TensorRT 10.7.0.23"),
    (RuntimeEnvironment("10.3.0.30", "NVIDIA GeForce RTX 4090", "8.9"), {},
     "built for compute capability 8.7 (Orin), this GPU is 8.9 (NVIDIA GeForce RTX 4090)"),
    (RuntimeEnvironment("10.3.0.30", "Orin NX", "8.7"), {}, "built on GPU 'Orin', this GPU is 'Orin NX'"),
    (ORIN, {"precision": "fp32"}, "built with precision fp16, deployment asks for fp32"),
    (ORIN, {"onnx_sha256": "0" * 64}, "built from a different ONNX file"),
    (ORIN, {"engine_sha256": "f" * 64}, "the engine file changed after its metadata was written"),
    (ORIN, {"input_profiles": {"x": ShapeProfile((1, 4), (1, 4), (16, 4))}},
     "input 'x' profile is 1x4:2x4:8x4, deployment needs 1x4:1x4:16x4"),
])
def test_compare_metadata_mismatch(built, env, kwargs, fragment):
    _, _, meta = built
    problems = compare_metadata(meta, env, **kwargs)
    assert len(problems) == 1 and fragment in problems[0]


def test_check_engine_metadata_refuses_with_rebuild_command(built):
    onnx_path, engine_path, _ = built
    newer = RuntimeEnvironment("10.7.0.23", "Orin", "8.7")
    with pytest.raises(EngineMismatchError) as info:
        check_engine_metadata(engine_path, newer, onnx_path=onnx_path)
    message = str(info.value)
    assert "affine.engine cannot be used on this machine" in message
    assert "running TensorRT 10.7.0.23" in message
    assert "not rebuilt automatically" in message
    assert f"build_engine --onnx {onnx_path} --output {engine_path} --precision fp16 --shape x=1x4:2x4:8x4" in message


def test_onnx_change_is_detected(built):
    onnx_path, engine_path, _ = built
    make_affine_model(onnx_path, seed=7)  # retrained weights, same file name
    with pytest.raises(EngineMismatchError, match="built from a different ONNX file"):
        check_engine_metadata(engine_path, ORIN, onnx_path=onnx_path)


def test_missing_or_corrupt_sidecar(built):
    onnx_path, engine_path, _ = built
    Path(metadata_path(engine_path)).write_text("{\"tensorrt_version\": 10")
    with pytest.raises(EngineMismatchError, match="unreadable engine metadata"):
        check_engine_metadata(engine_path, ORIN, onnx_path=onnx_path)
    os.remove(metadata_path(engine_path))
    with pytest.raises(EngineMismatchError) as info:
        check_engine_metadata(engine_path, ORIN, onnx_path=onnx_path)
    assert "metadata file" in str(info.value) and "is missing" in str(info.value)
    assert "build_engine --onnx" in str(info.value)


def test_metadata_field_errors():
    base = create_metadata(env=ORIN, precision="fp32", input_profiles=PROFILES, onnx_path="m.onnx",
                           onnx_sha256="a" * 64, engine_sha256="b" * 64).to_json_dict()
    broken = dict(base)
    del broken["gpu_name"]
    with pytest.raises(ValueError, match="field 'gpu_name' is missing"):
        EngineMetadata.from_json_dict(broken)
    broken = copy.deepcopy(base)
    broken["input_profiles"]["x"]["max"] = [0, 4]
    with pytest.raises(ValueError, match="input_profiles.x"):
        EngineMetadata.from_json_dict(broken)
    with pytest.raises(ValueError, match="precision"):
        EngineMetadata.from_json_dict({**base, "precision": "int8"})


def test_rebuild_command_quotes_paths():
    command = rebuild_command("my models/p.onnx", "out/p.engine", "fp32", PROFILES, timing_cache="t.cache")
    assert command == ("build_engine --onnx 'my models/p.onnx' --output out/p.engine --precision fp32 "
                       "--shape x=1x4:2x4:8x4 --timing-cache t.cache")


# ------------------------------------------------------------------------------------------------ profiles and CLI args

def test_resolve_profiles():
    shapes = {"image": ("B", 3, 8, 8), "tokens": (1, "S"), "state": (1, 7)}
    profiles = resolve_profiles(shapes, {"B": (1, 1, 3), "S": (1, 16, 65)})
    assert profiles["image"] == ShapeProfile((1, 3, 8, 8), (1, 3, 8, 8), (3, 3, 8, 8))
    assert profiles["tokens"] == ShapeProfile((1, 1), (1, 16), (1, 65))
    assert profiles["state"] == ShapeProfile((1, 7), (1, 7), (1, 7))
    explicit = {"tokens": ShapeProfile((1, 2), (1, 4), (1, 8))}
    assert resolve_profiles(shapes, {"B": (1, 1, 3)}, explicit)["tokens"] == explicit["tokens"]
    with pytest.raises(ValueError, match="dynamic axis 'S' and has no range: give --axis S=MIN:OPT:MAX"):
        resolve_profiles(shapes, {"B": (1, 1, 3)})
    with pytest.raises(ValueError, match="unknown input"):
        resolve_profiles(shapes, {"B": (1, 1, 3), "S": (1, 1, 1)}, {"nope": explicit["tokens"]})
    with pytest.raises(ValueError, match="dim 1 is fixed to 7"):
        resolve_profiles(shapes, {"B": (1, 1, 3), "S": (1, 1, 1)}, {"state": ShapeProfile((1, 6), (1, 7), (1, 7))})


def test_parse_cli_shapes():
    assert build_engine_tool.parse_shape_arg("tokens=1x1:1x16:1x65") == \
        ("tokens", ShapeProfile((1, 1), (1, 16), (1, 65)))
    assert build_engine_tool.parse_shape_arg("x=2x4")[1] == ShapeProfile((2, 4), (2, 4), (2, 4))
    assert build_engine_tool.parse_axis_arg("S=1:16:65") == ("S", (1, 16, 65))
    assert build_engine_tool.parse_axis_arg("B=3") == ("B", (3, 3, 3))
    for bad in ("tokens", "x=1x4:2x4", "x=1xa"):
        with pytest.raises(ValueError, match="bad --shape"):
            build_engine_tool.parse_shape_arg(bad)
    for bad in ("S", "S=4:2:8", "S=a"):
        with pytest.raises(ValueError, match="bad --axis"):
            build_engine_tool.parse_axis_arg(bad)


def test_cli_reports_missing_tensorrt(tmp_path, capsys):
    if tensorrt_available():
        pytest.skip("tensorrt is installed here; this checks the message on machines without it")
    onnx_path, _, _ = make_affine_model(str(tmp_path / "affine.onnx"))
    code = build_engine_tool.main(["--onnx", onnx_path, "--output", str(tmp_path / "a.engine"), "--axis", "B=1:1:4"])
    err = capsys.readouterr().err
    assert code == build_engine_tool.EXIT_UNAVAILABLE
    assert "build_engine: error: the tensorrt Python package is not installed" in err
    assert "Traceback" not in err
    assert not (tmp_path / "a.engine").exists() and not (tmp_path / "a.engine.meta.json").exists()


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        build_engine_tool.main(["--bundle", str(tmp_path)])
    assert info.value.code == 2 and "--bundle together with --role" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_engine_tool.main(["--onnx", str(tmp_path / "missing.onnx")])
    assert "ONNX file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_engine_tool.main(["--onnx", __file__, "--shape", "x"])
    assert "bad --shape" in capsys.readouterr().err


def test_tensorrt_backend_without_tensorrt(built):
    if tensorrt_available():
        pytest.skip("tensorrt is installed here")
    _, engine_path, _ = built
    backend = TensorRTBackend(engine_path, ModelContract.from_dict(affine_contract()))
    with pytest.raises(BackendUnavailableError, match="tensorrt Python package is not installed"):
        backend.load()
    assert not backend.is_loaded


# ------------------------------------------------------------------------------------------------ on a GPU

@pytest.fixture
def gpu():
    """Skip (with the reason) unless tensorrt, cuda-python and a CUDA device are present."""
    from sim2real_vla_ros.core.policy.runtime.tensorrt_backend import cuda_device_properties, import_tensorrt

    try:
        trt = import_tensorrt()
        name, major, minor = cuda_device_properties(0)
    except BackendUnavailableError as exc:
        reason = f"needs TensorRT and a CUDA GPU: {exc}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    print(f"TensorRT {trt.__version__} on {name} (sm {major}.{minor})")
    return trt


def ort_reference(onnx_path, contract, feed):
    return OnnxRuntimeBackend(onnx_path, contract).load().run(feed)


@pytest.mark.gpu
def test_build_load_run_engine_matches_onnxruntime(gpu, tmp_path):
    onnx_path, _, _ = make_affine_model(str(tmp_path / "affine.onnx"), in_dim=16, out_dim=8)
    engine_path = str(tmp_path / "affine.engine")
    cache = str(tmp_path / "timing.cache")
    code = build_engine_tool.main(["--onnx", onnx_path, "--output", engine_path, "--axis", "B=1:2:8",
                                   "--timing-cache", cache])
    assert code == 0 and os.path.isfile(engine_path) and os.path.isfile(cache)
    meta = read_metadata(engine_path)
    assert meta.tensorrt_version == gpu.__version__ and meta.precision == "fp32"
    assert meta.input_profiles["x"] == ShapeProfile((1, 16), (2, 16), (8, 16))
    contract = ModelContract.from_dict(affine_contract(16, 8))
    backend = TensorRTBackend(engine_path, contract, onnx_path=onnx_path, precision="fp32").load()
    for batch in (1, 3, 8):  # exercises set_input_shape and buffer growth
        feed = {"x": np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)}
        out = backend.run(feed)
        np.testing.assert_allclose(out["y"], ort_reference(onnx_path, contract, feed)["y"], rtol=1e-2, atol=1e-3)
    backend.warmup(2)
    for _ in range(10):
        backend.run({"x": np.ones((1, 16), np.float32)})
    stats = backend.latency_stats()
    print(f"TensorRT affine 1x16: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms")
    with pytest.raises(ContractError, match="outside the engine's optimisation profile"):
        backend.run({"x": np.ones((9, 16), np.float32)})
    backend.close()


@pytest.mark.gpu
def test_engine_mismatch_refused_before_deserialising(gpu, tmp_path):
    onnx_path, _, _ = make_affine_model(str(tmp_path / "affine.onnx"))
    engine_path = str(tmp_path / "affine.engine")
    assert build_engine_tool.main(["--onnx", onnx_path, "--output", engine_path, "--axis", "B=1:1:4"]) == 0
    data = json.loads(Path(metadata_path(engine_path)).read_text())
    data["tensorrt_version"] = "9.0.0.0"
    Path(metadata_path(engine_path)).write_text(json.dumps(data))
    backend = TensorRTBackend(engine_path, ModelContract.from_dict(affine_contract()), onnx_path=onnx_path)
    with pytest.raises(EngineMismatchError, match="built with TensorRT 9.0.0.0") as info:
        backend.load()
    assert "build_engine --onnx" in str(info.value)


@pytest.mark.gpu
def test_mask_engine_fp16(gpu, tmp_path):
    if not hasattr(gpu.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {gpu.__version__} has no BuilderFlag.FP16 (strong typing only): fp16 needs an "
                    "fp16 ONNX, which build_engine checks")
    onnx_path = make_mask_model(str(tmp_path / "mask.onnx"), classes=4, height=24, width=32)
    engine_path = str(tmp_path / "mask.engine")
    assert build_engine_tool.main(["--onnx", onnx_path, "--output", engine_path, "--precision", "fp16",
                                   "--axis", "B=1:3:3"]) == 0
    contract = ModelContract.from_dict({
        "inputs": {"image": {"dtype": "float32", "shape": ["B", 3, 24, 32]}},
        "outputs": {"mask_logits": {"dtype": "float32", "shape": ["B", 4, 24, 32]}}})
    backend = TensorRTBackend(engine_path, contract, onnx_path=onnx_path, precision="fp16").load()
    feed = {"image": np.random.default_rng(0).uniform(-1, 1, (3, 3, 24, 32)).astype(np.float32)}
    np.testing.assert_allclose(backend.run(feed)["mask_logits"],
                               ort_reference(onnx_path, contract, feed)["mask_logits"], rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_reference_bundle_on_tensorrt(gpu, tmp_path):
    """Every reference model built as an engine, loaded through the bundle, compared with ONNX Runtime."""
    import yaml

    from sim2real_vla_ros.core.policy.bundle import load_bundle, read_manifest

    assert (REFERENCE_BUNDLE / "bundle.yaml").is_file(), "models/reference/bundle.yaml is missing"
    folder = tmp_path / "reference"
    shutil.copytree(REFERENCE_BUNDLE, folder, ignore=shutil.ignore_patterns("*.engine", "*.meta.json"))
    manifest = yaml.safe_load((folder / "bundle.yaml").read_text())
    parsed = read_manifest(str(folder))
    for role, entry in parsed.models.items():
        dynamic = {a for spec in entry.contract.inputs.values() for a in spec.dynamic_axes}
        extra_axes = [f"{a}=1:1:4" for a in sorted(dynamic - set(entry.dynamic_axes))]
        args = ["--bundle", str(folder), "--role", role, "--output", str(folder / f"{role}.engine")]
        assert build_engine_tool.main(args + sum((["--axis", a] for a in extra_axes), [])) == 0, role
        manifest["models"][role]["engine"] = f"{role}.engine"
    (folder / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    trt_bundle = load_bundle(str(folder), backend="tensorrt")
    ort_bundle = load_bundle(str(folder))
    for role in trt_bundle.roles:
        entry = trt_bundle.model_entry(role)
        sizes = {a: opt for a, (_lo, opt, _hi) in entry.dynamic_axes.items()}
        feed = trt_bundle.model(role).contract.example_inputs(sizes)
        rng = np.random.default_rng(0)
        feed = {n: (rng.uniform(-1, 1, v.shape).astype(v.dtype) if v.dtype.kind == "f" else v) for n, v in feed.items()}
        got, want = trt_bundle.model(role).run(feed), ort_bundle.model(role).run(feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-2, atol=2e-2, err_msg=f"{role}.{name}")


def test_cli_checks_bundle_profiles_before_needing_tensorrt(tmp_path, capsys):
    """A bundle role without a range for a dynamic axis is a usage error even without TensorRT."""
    import shutil

    import yaml

    from sim2real_vla_ros.paths import share_path

    bundle = tmp_path / "bundle"
    shutil.copytree(share_path("models", "reference"), bundle)
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert manifest["models"]["mask"]["dynamic_axes"].pop("batch")
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    code = build_engine_tool.main(["--bundle", str(bundle), "--role", "mask"])
    err = capsys.readouterr().err
    assert code == build_engine_tool.EXIT_USAGE
    assert "batch" in err and "Traceback" not in err
