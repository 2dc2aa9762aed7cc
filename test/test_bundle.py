"""Bundle loading and validation: one clear BundleError per bad file, field or tensor.

Each test starts from a complete valid tiny bundle (test/model_factory.py), breaks one
thing, and checks that the error names it.
"""
import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_factory import (INSTRUCTIONS, SIZES, make_text_encoder, write_bundle,
                           write_manifest, write_model_for)
from sim2real_vla_ros.core.policy.bundle import (Bundle, BundleError, ImageFormatError, ImagePreprocessor,
                                          UnknownInstructionError, load_bundle, read_manifest)
from sim2real_vla_ros.core.policy.normalization import ActionNormalizer
from sim2real_vla_ros.core.policy.runtime import OnnxRuntimeBackend

REFERENCE_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "reference"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle_template")
    manifest = write_bundle(str(folder))
    return folder, manifest


@pytest.fixture
def bundle_dir(template, tmp_path):
    """A fresh copy of the valid bundle and its manifest dict."""
    source, manifest = template
    folder = tmp_path / "bundle"
    shutil.copytree(source, folder)
    return folder, copy.deepcopy(manifest)


def expect_error(folder, *fragments, **kwargs):
    with pytest.raises(BundleError) as info:
        load_bundle(str(folder), **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------------------ the valid bundle

def test_valid_bundle_loads_and_every_model_runs(bundle_dir):
    folder, manifest = bundle_dir
    with load_bundle(str(folder)) as bundle:
        assert isinstance(bundle, Bundle)
        assert set(bundle.roles) == set(manifest["models"])
        for role in bundle.roles:
            backend = bundle.model(role)
            assert isinstance(backend, OnnxRuntimeBackend)
            outputs = backend.run(backend.contract.example_inputs())
            assert set(outputs) == set(manifest["models"][role]["outputs"])
        assert bundle.model("planner").latency_stats()["count"] == 1
        roles = bundle.actor_roles("left")
        assert (roles.encoder, roles.decoder, roles.denoiser) == ("actor_encoder", "actor_decoder", None)
        entry = bundle.model_entry("actor_decoder")
        assert entry.tokens.bos_id == entry.tokens.vocab_size - 2 and entry.tokens.max_tokens == 16
        assert entry.dynamic_axes["S"] == (1, 8, 17)
        assert bundle.manifest.cameras.top == "cam_high"
        assert bundle.fast_tokenizer().time_horizon == SIZES["T"]


def test_mask_model_batches_three_cameras(bundle_dir):
    folder, _ = bundle_dir
    bundle = load_bundle(str(folder))
    images = np.zeros((3, 3, SIZES["height"], SIZES["width"]), np.float32)
    logits = bundle.model("mask").run({"image": images})["mask_logits"]
    assert logits.shape == (3, SIZES["classes"], SIZES["height"], SIZES["width"])


def test_read_manifest_parses_without_loading_models(bundle_dir):
    folder, _ = bundle_dir
    os.remove(folder / "planner.onnx")  # read_manifest must not touch model files
    manifest = read_manifest(str(folder))
    assert manifest.models["planner"].kind == "planner"
    assert manifest.models["actor_decoder"].kind == "actor_decoder"
    assert manifest.action.chunk_length == SIZES["T"]


# ------------------------------------------------------------------------------------------------ bad files

def test_missing_model_file(bundle_dir):
    folder, _ = bundle_dir
    os.remove(folder / "planner.onnx")
    expect_error(folder, "planner.onnx: file not found", "models.planner.file")


def test_empty_model_file(bundle_dir):
    folder, _ = bundle_dir
    (folder / "planner.onnx").write_bytes(b"")
    expect_error(folder, "planner.onnx: file is empty")


def test_truncated_model_file(bundle_dir):
    folder, _ = bundle_dir
    data = (folder / "validator.onnx").read_bytes()
    (folder / "validator.onnx").write_bytes(data[: len(data) // 2])
    message = expect_error(folder, "validator.onnx: cannot load ONNX model")
    assert "Traceback" not in message and "[ONNXRuntimeError]" not in message


def test_garbage_model_file(bundle_dir):
    folder, _ = bundle_dir
    (folder / "mask.onnx").write_bytes(os.urandom(64) + b"\xff" * 100)
    expect_error(folder, "mask.onnx: cannot load ONNX model")


def test_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="no bundle.yaml found"):
        load_bundle(str(tmp_path))


def test_invalid_yaml(bundle_dir):
    folder, _ = bundle_dir
    (folder / "bundle.yaml").write_text("models: [unclosed\n")
    expect_error(folder, "bundle.yaml: not valid YAML")


def test_missing_fast_tokenizer(bundle_dir):
    folder, _ = bundle_dir
    os.remove(folder / "fast_tokenizer" / "tokenizer.json")
    expect_error(folder, "fast_tokenizer: no tokenizer.json")


def test_corrupt_fast_tokenizer(bundle_dir):
    folder, _ = bundle_dir
    (folder / "fast_tokenizer" / "tokenizer.json").write_text("{not json")
    expect_error(folder, "fast_tokenizer: cannot load the FAST tokenizer")


def test_fast_tokenizer_needs_room_in_decoder_vocabulary(bundle_dir):
    folder, manifest = bundle_dir
    decoder = manifest["models"]["actor_decoder"]
    small = 40
    decoder.update(vocab_size=small, bos_id=small - 2, eos_id=small - 1)
    decoder["outputs"]["logits"]["shape"] = [1, small]
    write_model_for(str(folder / "actor_decoder.onnx"), "actor_decoder", decoder)
    write_manifest(str(folder), manifest)
    expect_error(folder, "models.actor_decoder: vocab_size 40 leaves room for 38 FAST ids")


# ------------------------------------------------------------------------------------------------ model vs contract

def test_wrong_output_dtype(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["planner"])
    contract["outputs"]["keypoints"]["dtype"] = "float64"
    write_model_for(str(folder / "planner.onnx"), "planner", contract)
    expect_error(folder, "planner.onnx: output 'keypoints' has dtype float64, contract says float32")


def test_model_missing_input_tensor(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["planner"])
    del contract["inputs"]["prev_valid"]
    write_model_for(str(folder / "planner.onnx"), "planner", contract)
    expect_error(folder, "planner.onnx: model has no input 'prev_valid'")


def test_model_with_extra_input(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["validator"])
    contract["inputs"]["depth"] = {"dtype": "float32", "shape": [1, 1]}
    write_model_for(str(folder / "validator.onnx"), "validator", contract)
    expect_error(folder, "validator.onnx: model input 'depth' is not in the contract")


def test_wrong_static_dim(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["planner"])
    contract["inputs"]["top_image"]["shape"] = [1, 3, SIZES["height"], SIZES["width"] + 2]
    write_model_for(str(folder / "planner.onnx"), "planner", contract)
    expect_error(folder, f"planner.onnx: input 'top_image' dim 3 is {SIZES['width'] + 2}",
                 f"contract says {SIZES['width']}")


def test_dynamic_axis_exported_as_fixed(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["actor_decoder"])
    contract["inputs"]["tokens"]["shape"] = [1, 8]
    write_model_for(str(folder / "actor_decoder.onnx"), "actor_decoder", contract)
    expect_error(folder, "actor_decoder.onnx: input 'tokens' dim 1 is fixed to 8", "dynamic axis 'S'")


def test_wrong_rank(bundle_dir):
    folder, manifest = bundle_dir
    contract = copy.deepcopy(manifest["models"]["validator"])
    contract["outputs"]["achieved"]["shape"] = [1, 1]
    write_model_for(str(folder / "validator.onnx"), "validator", contract)
    expect_error(folder, "validator.onnx: output 'achieved' has rank 2")


# ------------------------------------------------------------------------------------------------ manifest fields

def rewrite(folder, manifest, edit):
    edit(manifest)
    write_manifest(str(folder), manifest)


@pytest.mark.parametrize("edit, fragments", [
    (lambda m: m["action"].update(chunk_length="five"), ["action.chunk_length must be an integer"]),
    (lambda m: m["image"].pop("height"), ["image.height is missing"]),
    (lambda m: m["image"].update(channel_order="rgba"), ["image.channel_order must be 'rgb' or 'bgr'"]),
    (lambda m: m["image"].update(std=[0.5, 0.0, 0.5]), ["image.std[1] must be > 0"]),
    (lambda m: m.update(chunk_lenght=5), ["unknown field(s) ['chunk_lenght']"]),
    (lambda m: m.update(format_version=2), ["format_version is 2"]),
    (lambda m: m["action"].update(dim=6), ["action.dim must be 7"]),
    (lambda m: m["action"]["normalization"]["left"].update(q99=[1.0] * 6), ["action.normalization.left.q99",
                                                                            "list of 7 numbers, got 6"]),
    (lambda m: m["action"]["normalization"].update(kind="minmax"), ["action.normalization.kind"]),
    (lambda m: m["actors"]["left"].update(decoder="actor_decodr"), ["actors.left.decoder", "'actor_decodr'"]),
    (lambda m: m["models"].pop("validator"), ["has no 'validator' model"]),
    (lambda m: m["models"]["planner"]["outputs"]["keypoints"].update(dtype="float128"), ["dtype 'float128'"]),
    (lambda m: m["models"]["planner"]["inputs"]["top_image"].update(shape=[1, 3, -1, 16]), ["top_image"]),
    (lambda m: m["models"]["actor_decoder"].update(bos_id=0), ["bos_id", "BOS = V"]),
    (lambda m: m["models"]["planner"].update(steps=3), ["models.planner.steps is only for a denoiser"]),
    (lambda m: m["instructions"].update(text_encoder="clip"), ["instructions.text_tokenizer is missing"]),
])
def test_bad_manifest_field(bundle_dir, edit, fragments):
    folder, manifest = bundle_dir
    rewrite(folder, manifest, edit)
    expect_error(folder, "bundle.yaml", *fragments)


def test_q99_not_above_q01(bundle_dir):
    folder, manifest = bundle_dir

    def edit(m):
        m["action"]["normalization"]["right"]["q99"][2] = m["action"]["normalization"]["right"]["q01"][2]
    rewrite(folder, manifest, edit)
    expect_error(folder, "action.normalization.right", "q99 must be > q01", "dimension 2")


def test_role_interface_missing_tensor_in_manifest(bundle_dir):
    folder, manifest = bundle_dir
    rewrite(folder, manifest, lambda m: m["models"]["planner"]["outputs"].pop("done"))
    expect_error(folder, "models.planner has no output 'done', which the planner interface requires")


def test_role_interface_wrong_keypoint_count(bundle_dir):
    folder, manifest = bundle_dir
    rewrite(folder, manifest, lambda m: m.update(keypoints_per_arm=SIZES["points"] + 1))
    expect_error(folder, "models.planner", "'prev_affordance' must be float32[1, 1, 2, 3, 2]")


def test_role_interface_unexpected_input(bundle_dir):
    folder, manifest = bundle_dir
    rewrite(folder, manifest,
            lambda m: m["models"]["planner"]["inputs"].update(depth={"dtype": "float32", "shape": [1, 1]}))
    expect_error(folder, "models.planner: input 'depth' is not part of the planner interface")


def test_logits_must_cover_vocabulary(bundle_dir):
    folder, manifest = bundle_dir
    rewrite(folder, manifest, lambda m: m["models"]["actor_decoder"]["outputs"]["logits"].update(shape=[1, 10]))
    expect_error(folder, "models.actor_decoder", "output 'logits' must be float32[1, ")


def test_denoiser_requires_expert_tokens(bundle_dir):
    folder, manifest = bundle_dir
    chunk = {"dtype": "float32", "shape": [1, SIZES["T"], 7]}
    manifest["models"]["denoiser"] = {
        "file": "denoiser.onnx", "steps": 4,
        "inputs": {"noisy_actions": chunk, "timestep": {"dtype": "float32", "shape": [1]},
                   "context": {"dtype": "float32", "shape": [1, SIZES["M"], SIZES["D"]]}},
        "outputs": {"eps": chunk}}
    manifest["actors"]["left"]["denoiser"] = "denoiser"
    write_model_for(str(folder / "denoiser.onnx"), "denoiser", manifest["models"]["denoiser"])
    write_manifest(str(folder), manifest)
    expect_error(folder, "actors.left", "no 'expert_tokens' input")
    # With expert_tokens on the decoder both arms must use a denoiser.
    manifest["models"]["actor_decoder"]["inputs"]["expert_tokens"] = {"dtype": "int64", "shape": [1, "X"]}
    manifest["actors"]["right"]["denoiser"] = "denoiser"
    write_model_for(str(folder / "actor_decoder.onnx"), "actor_decoder", manifest["models"]["actor_decoder"])
    write_manifest(str(folder), manifest)
    bundle = load_bundle(str(folder))
    assert bundle.actor_roles("right").denoiser == "denoiser"
    assert bundle.model_entry("denoiser").steps == 4
    assert bundle.model_entry("actor_decoder").uses_expert_tokens


def test_decoder_variants_and_options(bundle_dir):
    """Decoders no actor uses are still checked (kind from their fields); options reach the pipeline."""
    folder, manifest = bundle_dir
    decoder = manifest["models"]["actor_decoder"]
    cache = {"dtype": "float32", "shape": [2, "batch", 2, "past", 4]}
    present = {"dtype": "float32", "shape": [2, "batch", 2, "present", 4]}
    kv = copy.deepcopy(decoder)
    kv.update(file="actor_decoder_kv.onnx", mode="autoregressive")
    kv["inputs"].update(past_key=cache, past_value=cache)
    kv["outputs"].update(present_key=present, present_value=present)
    one_shot = {key: copy.deepcopy(decoder[key]) for key in ("vocab_size", "bos_id", "eos_id", "max_tokens")}
    one_shot.update(file="actor_decoder_once.onnx", mode="one_shot", max_expert_tokens=32,
                    inputs={"context": decoder["inputs"]["context"],
                            "expert_tokens": {"dtype": "int64", "shape": [1, "X"]}},
                    outputs={"tokens": {"dtype": "int64", "shape": [1, 16]}})
    manifest["models"].update(actor_decoder_kv=kv, actor_decoder_once=one_shot)
    for role in ("actor_decoder_kv", "actor_decoder_once"):
        write_model_for(str(folder / manifest["models"][role]["file"]), role, manifest["models"][role])
    write_manifest(str(folder), manifest)
    bundle = load_bundle(str(folder))
    kv_entry, once_entry = bundle.model_entry("actor_decoder_kv"), bundle.model_entry("actor_decoder_once")
    assert kv_entry.kind == "actor_decoder" and kv_entry.uses_kv_cache and kv_entry.mode == "autoregressive"
    assert once_entry.mode == "one_shot" and once_entry.options["max_expert_tokens"] == 32
    assert once_entry.uses_expert_tokens and once_entry.tokens.eos_id == decoder["eos_id"]
    # A one-shot decoder must output the token sequence, not logits.
    manifest["models"]["actor_decoder_once"]["outputs"] = {"logits": decoder["outputs"]["logits"]}
    write_manifest(str(folder), manifest)
    expect_error(folder, "models.actor_decoder_once has no output 'tokens'")
    manifest["models"]["actor_decoder_once"]["mode"] = "beam"
    write_manifest(str(folder), manifest)
    expect_error(folder, "models.actor_decoder_once.mode must be one of ['autoregressive', 'one_shot']")


def test_kv_cache_needs_all_four_tensors(bundle_dir):
    folder, manifest = bundle_dir
    cache = {"dtype": "float32", "shape": [2, 1, 2, "S_past", 4]}
    rewrite(folder, manifest, lambda m: m["models"]["actor_decoder"]["inputs"].update(past_key=cache))
    expect_error(folder, "models.actor_decoder", "a key/value cache needs all of")


def test_tensorrt_backend_needs_engine_paths(bundle_dir):
    folder, _ = bundle_dir
    expect_error(folder, "models.mask.engine is not set", "build_engine --bundle", backend="tensorrt")


def test_unknown_backend(bundle_dir):
    folder, _ = bundle_dir
    expect_error(folder, "backend must be one of", backend="tflite")


def test_unavailable_provider_is_a_bundle_error(bundle_dir):
    folder, _ = bundle_dir
    expect_error(folder, "CUDAExecutionProvider is not available", "CPUExecutionProvider",
                 providers=["CUDAExecutionProvider"])


# ------------------------------------------------------------------------------------------------ instructions

def test_instruction_embedding_lookup(bundle_dir):
    folder, _ = bundle_dir
    bundle = load_bundle(str(folder))
    stored = np.load(folder / "instructions.npz")
    embedding = bundle.instruction_embedding(INSTRUCTIONS[0])
    assert embedding.dtype == np.float32 and embedding.shape == (SIZES["L"], SIZES["E"])
    np.testing.assert_array_equal(embedding, stored[INSTRUCTIONS[0]])
    np.testing.assert_array_equal(bundle.instruction_embedding("  pick up   the cup\n"), embedding)
    assert not embedding.flags.writeable
    assert set(bundle.known_instructions) == set(INSTRUCTIONS)


def test_unknown_instruction_lists_known_ones(bundle_dir):
    folder, _ = bundle_dir
    bundle = load_bundle(str(folder))
    with pytest.raises(UnknownInstructionError) as info:
        bundle.instruction_embedding("fold the towel")
    assert info.value.known == bundle.known_instructions
    assert "fold the towel" in str(info.value)
    for known in INSTRUCTIONS:
        assert known in str(info.value)


def test_instruction_embedding_wrong_shape(bundle_dir):
    folder, _ = bundle_dir
    np.savez(folder / "instructions.npz", **{"pick up the cup": np.zeros((SIZES["L"] + 1, SIZES["E"]), np.float32)})
    expect_error(folder, "instructions.npz: instruction 'pick up the cup' has shape [5, 6], expected [4, 6]")


def test_instruction_embeddings_corrupt(bundle_dir):
    folder, _ = bundle_dir
    (folder / "instructions.npz").write_bytes(b"PK\x03\x04 broken zip")
    expect_error(folder, "instructions.npz: cannot read instruction embeddings")


def test_text_encoder_computes_unknown_instructions(bundle_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder, manifest = bundle_dir
    words = ["[PAD]", "fold", "the", "towel", "pick", "up", "cup"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[PAD]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "text_tokenizer.json"))
    make_text_encoder(str(folder / "text_encoder.onnx"), len(words), SIZES["L"], SIZES["E"])
    ids = {"dtype": "int64", "shape": [1, SIZES["L"]]}
    manifest["models"]["text_encoder"] = {
        "file": "text_encoder.onnx", "inputs": {"input_ids": ids, "attention_mask": ids},
        "outputs": {"embedding": {"dtype": "float32", "shape": [1, SIZES["L"], SIZES["E"]]}}}
    manifest["instructions"].update(text_encoder="text_encoder", text_tokenizer="text_tokenizer.json")
    write_manifest(str(folder), manifest)
    bundle = load_bundle(str(folder))
    embedding = bundle.instruction_embedding("fold the towel")
    assert embedding.shape == (SIZES["L"], SIZES["E"])
    assert np.all(embedding[3] == 0) and np.any(embedding[:3] != 0)  # 3 words, padding zeroed
    assert bundle.instruction_embedding("fold the towel") is embedding  # computed once
    # A stored instruction is still taken from the npz.
    np.testing.assert_array_equal(bundle.instruction_embedding(INSTRUCTIONS[0]),
                                  np.load(folder / "instructions.npz")[INSTRUCTIONS[0]])


# ------------------------------------------------------------------------------------------------ images

def test_image_preprocessor_resizes_and_normalises():
    pre = ImagePreprocessor(height=4, width=6, channel_order="rgb", scale=255.0, mean=(0.5, 0.5, 0.5),
                            std=(0.25, 0.5, 1.0))
    image = np.zeros((8, 12, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51
    out = pre(image)
    assert out.shape == (1, 3, 4, 6) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[0, 0], (1.0 - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], (0.0 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[0, 2], (0.2 - 0.5) / 1.0, rtol=1e-6)


def test_image_preprocessor_bgr_and_area_resize():
    import cv2

    pre_rgb = ImagePreprocessor(height=3, width=5, channel_order="rgb", scale=1.0)
    pre_bgr = ImagePreprocessor(height=3, width=5, channel_order="bgr", scale=1.0)
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    expected = cv2.resize(image, (5, 3), interpolation=cv2.INTER_AREA).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(pre_rgb(image)[0], expected)
    np.testing.assert_array_equal(pre_bgr(image)[0], expected[::-1])


@pytest.mark.parametrize("bad", [np.zeros((4, 6, 3), np.float32), np.zeros((4, 6), np.uint8),
                                 np.zeros((4, 6, 4), np.uint8), np.zeros((0, 6, 3), np.uint8), [[1, 2, 3]]])
def test_image_preprocessor_rejects_bad_images(bad):
    pre = ImagePreprocessor(height=4, width=6)
    with pytest.raises(ImageFormatError, match="uint8"):
        pre(bad)


def test_bundle_preprocess_image(bundle_dir):
    folder, _ = bundle_dir
    bundle = load_bundle(str(folder))
    out = bundle.preprocess_image(np.full((48, 64, 3), 255, np.uint8))
    assert out.shape == (1, 3, SIZES["height"], SIZES["width"])
    np.testing.assert_allclose(out, 1.0)  # (1 - 0.5) / 0.5
    bundle.model("planner").run({"top_image": out, "instruction": bundle.instruction_embedding(INSTRUCTIONS[0])[None],
                                 "prev_affordance": np.zeros((1, 1, 2, SIZES["points"], 2), np.float32),
                                 "prev_valid": np.zeros((1, 1), np.float32)})


# ------------------------------------------------------------------------------------------------ normalisation

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantile_normalizer_round_trip(dtype):
    rng = np.random.default_rng(0)
    q01, q99 = -rng.uniform(0.5, 2, 7), rng.uniform(0.5, 2, 7)
    norm = ActionNormalizer.quantile(q01, q99)
    x = rng.uniform(-2, 2, (25, 7)).astype(dtype)
    y = norm.normalize(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, (x - q01) / (q99 - q01 + 1e-6) * 2 - 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize(y), x, atol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(norm.normalize(q01), -1, atol=1e-6)
    np.testing.assert_allclose(norm.normalize(q99), 1, atol=1e-5)


def test_mean_std_normalizer_round_trip():
    norm = ActionNormalizer.mean_std(mean=np.arange(7.0), std=np.full(7, 2.0))
    x = np.random.default_rng(1).standard_normal((3, 5, 7))
    np.testing.assert_allclose(norm.normalize(x), (x - np.arange(7.0)) / 2.0)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(x)), x, atol=1e-12)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(kind="quantile", stats={"q01": [0.0] * 7, "q99": [1.0] * 6}), "different lengths"),
    (dict(kind="quantile", stats={"q01": [0.0] * 7, "q99": [0.0] * 7}), "q99 must be > q01"),
    (dict(kind="mean_std", stats={"mean": [0.0] * 7, "std": [1.0] * 6 + [-1.0]}), "std must be > 0"),
    (dict(kind="mean_std", stats={"mean": [float("nan")] * 7, "std": [1.0] * 7}), "non-finite"),
    (dict(kind="minmax", stats={}), "unknown"),
    (dict(kind="quantile", stats={"q01": [0.0] * 7}), "missing ['q99']"),
])
def test_normalizer_rejects_bad_stats(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        ActionNormalizer(**kwargs)
    assert fragment in str(info.value)


def test_normalizer_is_immutable_and_checks_shape():
    norm = ActionNormalizer.quantile([0.0] * 7, [1.0] * 7)
    with pytest.raises(ValueError):
        norm.stats["q01"][0] = 5.0
    with pytest.raises(TypeError):
        norm.stats["q01"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 7\)"):
        norm.normalize(np.zeros(6))


def test_bundle_normalizer_per_arm(bundle_dir):
    folder, manifest = bundle_dir
    bundle = load_bundle(str(folder))
    norm = bundle.normalizer("left")
    np.testing.assert_allclose(norm.stats["q99"], manifest["action"]["normalization"]["left"]["q99"])
    with pytest.raises(BundleError, match="unknown arm"):
        bundle.normalizer("middle")


# ------------------------------------------------------------------------------------------------ reference bundle

def test_reference_bundle_loads_and_runs_each_model():
    """The committed reference bundle (models/reference/, written by make_reference_bundle)."""
    assert (REFERENCE_BUNDLE / "bundle.yaml").is_file(), \
        f"{REFERENCE_BUNDLE}/bundle.yaml is missing: run `make_reference_bundle` (or `make setup`)"
    with load_bundle(str(REFERENCE_BUNDLE), intra_op_threads=1) as bundle:
        for role in bundle.roles:
            backend = bundle.model(role)
            entry = bundle.model_entry(role)
            axis_sizes = {axis: opt for axis, (_lo, opt, _hi) in entry.dynamic_axes.items()}
            outputs = backend.run(backend.contract.example_inputs(axis_sizes))
            for name, value in outputs.items():
                assert np.all(np.isfinite(value)), f"{role}: output {name} is not finite"
        for text in bundle.known_instructions:
            assert bundle.instruction_embedding(text).shape == (bundle.manifest.instructions.max_tokens,
                                                                bundle.manifest.instructions.dim)
        assert bundle.fast_tokenizer() is not None
