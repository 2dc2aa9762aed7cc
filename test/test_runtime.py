"""InferenceBackend contract checks and the ONNX Runtime backend (CPU)."""
import numpy as np
import pytest

from model_factory import affine_contract, make_affine_model, make_constant_model
from sim2real_vla_ros.core.policy.runtime import (ContractError, InferenceBackend, ModelContract, ModelLoadError,
                                           OnnxRuntimeBackend, ProviderUnavailableError, RuntimeBackendError,
                                           TensorSpec, available_providers, compare_model_io)


@pytest.fixture(scope="module")
def affine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("affine") / "affine.onnx")
    _, weight, bias = make_affine_model(path, in_dim=4, out_dim=3)
    return path, weight, bias


@pytest.fixture
def backend(affine):
    path, _, _ = affine
    return OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()), intra_op_num_threads=1).load()


# ------------------------------------------------------------------------------------------------ contract types

def test_tensor_spec_validation():
    spec = TensorSpec("tokens", "int64", [1, "S"])
    assert spec.shape == (1, "S") and spec.rank == 2 and spec.dynamic_axes == ("S",)
    assert spec.describe() == "int64[1, S]"
    assert spec.concrete_shape({"S": 7}) == (1, 7)
    with pytest.raises(ValueError, match="dtype 'float128'"):
        TensorSpec("x", "float128", [1])
    with pytest.raises(ValueError, match="ints >= 0 or axis names"):
        TensorSpec("x", "float32", [1, -1])
    with pytest.raises(ValueError, match="shape must be a list"):
        TensorSpec("x", "float32", "1x3")


@pytest.mark.parametrize("data, fragment", [
    ({"inputs": {"x": {"dtype": "float32", "shape": [1]}}}, "planner.outputs is missing"),
    ({"inputs": {}, "outputs": {"y": {"dtype": "float32", "shape": [1]}}}, "planner.inputs must be a non-empty"),
    ({"inputs": {"x": {"dtype": "float32"}}, "outputs": {"y": {"dtype": "float32", "shape": [1]}}},
     "planner.inputs.x.shape is missing"),
    ({"inputs": {"x": {"dtype": "float32", "shape": [1], "layout": "nc"}},
      "outputs": {"y": {"dtype": "float32", "shape": [1]}}}, "unknown field(s) ['layout']"),
    ({"inputs": {"x": {"dtype": "float32", "shape": [1]}}, "outputs": {"x": {"dtype": "float32", "shape": [1]}}},
     "both inputs and outputs"),
])
def test_contract_from_dict_errors_name_the_field(data, fragment):
    with pytest.raises(ValueError) as info:
        ModelContract.from_dict(data, where="planner")
    assert fragment in str(info.value)


def spec_map(**specs):
    return {name: TensorSpec(name, dtype, shape) for name, (dtype, shape) in specs.items()}


def test_compare_model_io_reports_each_mismatch():
    contract = ModelContract(spec_map(x=("float32", ["B", 4]), t=("int64", [1, "S"])),
                             spec_map(y=("float32", ["B", 3]), z=("float32", [1])))
    ok = compare_model_io("m.onnx", contract, spec_map(x=("float32", ["batch", 4]), t=("int64", [1, "?"])),
                          spec_map(y=("float32", ["batch", 3]), z=("float32", [1]), extra=("float32", [2])))
    assert ok == []
    # A fixed size in the contract may be dynamic in the model.
    relaxed = ModelContract(spec_map(x=("float32", [2, 4])), spec_map(y=("float32", [2, 3])))
    assert compare_model_io("m.onnx", relaxed, spec_map(x=("float32", ["B", 4])), spec_map(y=("float32", ["B", 3]))) == []
    problems = compare_model_io(
        "m.onnx", contract,
        spec_map(x=("float64", ["B", 4]), t=("int64", [1, 8]), w=("float32", [1])),
        spec_map(y=("float32", ["B", 3, 1])))
    text = "\n".join(problems)
    assert "m.onnx: input 'x' has dtype float64, contract says float32" in text
    assert "m.onnx: input 't' dim 1 is fixed to 8 [1, 8], contract says dynamic axis 'S'" in text
    assert "m.onnx: output 'y' has rank 3" in text
    assert "m.onnx: model has no output 'z'" in text
    assert "m.onnx: model input 'w' is not in the contract" in text


# ------------------------------------------------------------------------------------------------ ONNX Runtime

def test_run_matches_numpy(affine, backend):
    _, weight, bias = affine
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = backend.run({"x": x})
    assert set(out) == {"y"}
    np.testing.assert_allclose(out["y"], x @ weight + bias, rtol=1e-5, atol=1e-6)
    assert backend.active_providers == ["CPUExecutionProvider"]
    assert backend.input_specs["x"].shape == ("B", 4)
    assert backend.output_specs["y"].dtype == "float32"


@pytest.mark.parametrize("feed, fragment", [
    ({}, "affine.onnx: missing input 'x' (float32[B, 4])"),
    ({"x": np.zeros((1, 4), np.float32), "z": np.zeros(1, np.float32)}, "unexpected input 'z'"),
    ({"x": np.zeros((1, 4), np.float64)}, "input 'x' has dtype float64, contract says float32"),
    ({"x": np.zeros((4,), np.float32)}, "input 'x' has rank 1 (shape [4]), contract says rank 2 [B, 4]"),
    ({"x": np.zeros((1, 5), np.float32)}, "input 'x' dim 1 is 5 (shape [1, 5]), contract says 4"),
    ({"x": [[0.0] * 4]}, "input 'x' must be a numpy array, got list"),
])
def test_inputs_checked_before_runtime(backend, feed, fragment):
    with pytest.raises(ContractError) as info:
        backend.run(feed)
    assert fragment in str(info.value)
    assert backend.latency_stats()["total_runs"] == 0  # the runtime was never called


def test_dynamic_axis_must_agree_across_tensors(tmp_path):
    path = str(tmp_path / "pair.onnx")
    pair = {"a": ("float32", ("B", 2)), "b": ("float32", ("B", 2))}
    make_constant_model(path, pair, {"y": ("float32", (1,))})
    contract = ModelContract(spec_map(**pair), spec_map(y=("float32", [1])))
    model = OnnxRuntimeBackend(path, contract).load()
    model.run({"a": np.zeros((3, 2), np.float32), "b": np.zeros((3, 2), np.float32)})
    with pytest.raises(ContractError, match="input 'b' dim 0 \\(axis 'B'\\) is 2, but axis 'B' is 3 in 'a'"):
        model.run({"a": np.zeros((3, 2), np.float32), "b": np.zeros((2, 2), np.float32)})


def test_run_before_load(affine):
    path, _, _ = affine
    model = OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()))
    with pytest.raises(RuntimeBackendError, match="call load\\(\\) before run\\(\\)"):
        model.run({"x": np.zeros((1, 4), np.float32)})


def test_latency_stats_and_warmup(backend):
    stats = backend.latency_stats()
    assert stats["count"] == 0 and np.isnan(stats["p50_ms"])
    backend.warmup(3)
    assert backend.latency_stats()["count"] == 0  # warm-up runs are not counted
    for _ in range(20):
        backend.run({"x": np.ones((2, 4), np.float32)})
    stats = backend.latency_stats()
    assert stats["count"] == 20 and stats["total_runs"] == 20
    assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    backend.reset_stats()
    assert backend.latency_stats()["count"] == 0


def test_latency_window_keeps_most_recent(affine):
    path, _, _ = affine
    with OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract())) as model:
        model._latencies_s = type(model._latencies_s)(maxlen=5)
        for _ in range(8):
            model.run({"x": np.ones((1, 4), np.float32)})
        assert model.latency_stats()["count"] == 5 and model.latency_stats()["total_runs"] == 8
    assert not model.is_loaded


def test_unavailable_provider_lists_available_ones(affine):
    path, _, _ = affine
    model = OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()),
                               providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    if "TensorrtExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime build has the TensorRT provider")
    with pytest.raises(ProviderUnavailableError) as info:
        model.load()
    message = str(info.value)
    assert "TensorrtExecutionProvider is not available" in message
    assert str(available_providers()) in message
    assert "add 'CPUExecutionProvider'" in message  # no silent CPU fallback


def test_provider_with_options_and_explicit_cpu(affine):
    path, weight, bias = affine
    model = OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()),
                               providers=[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})],
                               intra_op_num_threads=1, inter_op_num_threads=1).load()
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], x @ weight + bias, rtol=1e-5)


@pytest.mark.parametrize("providers, fragment", [([], "no execution provider given"),
                                                 ([("CPUExecutionProvider", "fast")], "(name, options dict)")])
def test_malformed_provider_list(affine, providers, fragment):
    path, _, _ = affine
    with pytest.raises(ProviderUnavailableError) as info:
        OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()), providers=providers).load()
    assert fragment in str(info.value)


def test_bad_thread_count(affine):
    path, _, _ = affine
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract()), intra_op_num_threads=-2)


@pytest.mark.parametrize("content, fragment", [(None, "file not found"), (b"", "file is empty"),
                                               (b"\x08\x07garbage", "cannot load ONNX model")])
def test_bad_model_files(tmp_path, content, fragment):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        OnnxRuntimeBackend(str(path), ModelContract.from_dict(affine_contract())).load()
    assert str(info.value).startswith("m.onnx: ") and fragment in str(info.value)


def test_model_contract_mismatch_at_load(affine):
    path, _, _ = affine
    with pytest.raises(ContractError, match="affine.onnx: input 'x' dim 1 is 4 \\[B, 4\\], contract says 5"):
        OnnxRuntimeBackend(path, ModelContract.from_dict(affine_contract(in_dim=5))).load()


def test_outputs_are_checked_too():
    """The base class checks what a runtime returns (here a backend that returns a wrong shape)."""

    class WrongShape(InferenceBackend):
        def _load(self):
            pass

        def _run(self, inputs):
            return {"y": np.zeros((len(inputs["x"]) + 1, 3), np.float32)}

    model = WrongShape(ModelContract.from_dict(affine_contract()), "wrong").load()
    with pytest.raises(ContractError, match="wrong: output 'y' dim 0 \\(axis 'B'\\) is 3, but axis 'B' is 2"):
        model.run({"x": np.zeros((2, 4), np.float32)})
