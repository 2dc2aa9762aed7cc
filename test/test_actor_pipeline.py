"""ActorPipeline end to end on the committed reference bundle, and every failure path.

The reference bundle (models/reference) gives the normal path: encoder -> greedy FAST
tokens -> decode -> unnormalise, with and without a key/value cache, with the diffusion
expert. Failure paths use tiny ONNX models built here with onnx.helper (scripted next-token
logits, one-shot outputs, oracle/NaN denoisers) added as extra roles to a copy of the bundle,
so they also go through the project's bundle loader and contract checks. No torch needed.
"""
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from sim2real_vla_ros.core.policy.actor_pipeline import (ActorConfigError, ActorFailureKind, ActorInputError, ActorObservation,
                                                  ActorPipeline, DdimSchedule, ddim_sample)
from sim2real_vla_ros.core.policy.bundle import UnknownInstructionError, load_bundle
from sim2real_vla_ros.core.policy.fast import DecodeFailure, FastEncodeError
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.paths import share_path
from sim2real_vla_ros.core.vocabulary import ARMS
from training.make_reference_bundle import SyntheticWorld, diffusion_alphas_cumprod, random_actor_observation

KV_ROLES = {"encoder": "actor_encoder", "decoder": "actor_decoder_kv"}
EXPERT_ROLES = {"encoder": "actor_encoder", "decoder": "actor_decoder_expert", "denoiser": "denoiser"}
OPSET = 17


@pytest.fixture(scope="module")
def reference_dir() -> str:
    return share_path("models", "reference")


@pytest.fixture(scope="module")
def bundle(reference_dir):
    loaded = load_bundle(reference_dir, intra_op_threads=1, inter_op_threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def world(bundle) -> SyntheticWorld:
    return SyntheticWorld(list(bundle.manifest.mask_classes), seed=7)


def observations(bundle, world, arm: str, count: int, seed: int) -> list:
    """`count` synthetic (observation, target chunk) pairs for `arm`, instructions cycled."""
    rng = np.random.default_rng(seed)
    instructions = bundle.known_instructions
    return [random_actor_observation(world, rng, bundle.normalizer(arm), instructions[i % len(instructions)])
            for i in range(count)]


# ---------------------------------------------------------------------------------------------- normal path
@pytest.mark.parametrize("arm", ARMS)
def test_reference_bundle_end_to_end(bundle, world, arm):
    pipeline = ActorPipeline(bundle, arm)
    limits = arm_limits(arm)
    inside = 0
    samples = observations(bundle, world, arm, 8, seed=1)
    for observation, _target in samples:
        result = pipeline.infer(observation)
        assert result.ok, result.failure.describe()
        assert result.chunk.shape == (bundle.manifest.action.chunk_length, 7)
        assert result.chunk.dtype == np.float64 and np.all(np.isfinite(result.chunk))
        inside += all(limits.contains(step, tolerance=1e-3) for step in result.chunk)
        timings = result.timings
        for stage in ("preprocess", "encoder", "token_generation", "decode", "unnormalise"):
            assert getattr(timings, stage) is not None and getattr(timings, stage) >= 0.0, stage
        assert timings.denoiser is None
        stages = timings.preprocess + timings.encoder + timings.token_generation + timings.decode + timings.unnormalise
        assert timings.total >= stages
        assert timings.n_tokens == len(result.tokens) > 0
        assert timings.n_model_calls == timings.n_tokens + 1  # one step per token plus the EOS step
        np.testing.assert_allclose(bundle.normalizer(arm).unnormalize(result.normalized_chunk), result.chunk)
    assert inside >= len(samples) - 1, f"only {inside}/{len(samples)} chunks inside the joint limits"
    assert pipeline.outcome_counts() == {"ok": len(samples)}


def test_chunk_is_a_small_motion_from_the_current_state(bundle, world):
    """The reference actor was trained to move at most 0.3 normalised units per chunk."""
    pipeline = ActorPipeline(bundle, "left")
    normalizer = bundle.normalizer("left")
    for observation, target in observations(bundle, world, "left", 6, seed=2):
        result = pipeline.infer(observation)
        assert result.ok, result.failure.describe()
        chunk = normalizer.normalize(result.chunk)
        start = normalizer.normalize(observation.joint_state)
        assert np.max(np.abs(chunk[0] - start)) < 0.5
        assert np.max(np.abs(np.diff(chunk, axis=0))) < 0.1  # smooth: no step jumps within the chunk
        assert np.mean(np.abs(chunk - normalizer.normalize(target))) < 0.2


def test_inference_is_deterministic_and_pixel_affordances_match(bundle, world):
    pipeline = ActorPipeline(bundle, "right")
    (observation, _), = observations(bundle, world, "right", 1, seed=3)
    first, second = pipeline.infer(observation), pipeline.infer(observation)
    assert first.tokens == second.tokens
    np.testing.assert_array_equal(first.chunk, second.chunk)
    height, width = observation.top_rgb.shape[:2]
    in_pixels = ActorObservation(observation.wrist_rgb, observation.top_rgb,
                                 observation.affordance * np.array([width, height]), observation.joint_state,
                                 observation.instruction, affordance_units="pixels")
    assert pipeline.infer(in_pixels).tokens == first.tokens


def test_kv_cache_decoder_gives_the_same_tokens(bundle, world):
    """actor_decoder_kv holds the same weights as actor_decoder, stepping with a cache."""
    plain = ActorPipeline(bundle, "left")
    cached = ActorPipeline(bundle, "left", roles=KV_ROLES)
    assert cached.uses_cache and not plain.uses_cache
    for observation, _ in observations(bundle, world, "left", 6, seed=4):
        with_cache, without = cached.infer(observation), plain.infer(observation)
        assert with_cache.ok and without.ok
        assert with_cache.tokens == without.tokens
        np.testing.assert_array_equal(with_cache.chunk, without.chunk)


def test_diffusion_expert_path(bundle, world):
    pipeline = ActorPipeline(bundle, "left", roles=EXPERT_ROLES)
    steps = bundle.model_entry("denoiser").steps
    decoded = 0
    samples = observations(bundle, world, "left", 6, seed=5)
    for observation, _ in samples:
        result = pipeline.infer(observation)
        assert result.expert_tokens and all(isinstance(i, int) for i in result.expert_tokens)
        assert result.timings.denoiser is not None
        decoded += result.ok
        if result.ok:
            assert result.timings.n_model_calls == steps + result.timings.n_tokens + 1
    assert decoded >= len(samples) - 1


def test_ddim_recovers_the_clean_chunk_of_an_exact_denoiser():
    """With eps consistent with a known x0, every DDIM step returns that x0 (clipped)."""
    alphas = diffusion_alphas_cumprod()
    schedule = DdimSchedule((99, 74, 49, 24), tuple(float(alphas[t]) for t in (99, 74, 49, 24)))
    clean = np.linspace(-0.5, 0.5, 25 * 7, dtype=np.float32).reshape(1, 25, 7)

    def exact(x, timestep):
        a = alphas[int(timestep[0])]
        return (x - np.sqrt(a) * clean) / np.sqrt(1 - a)

    result = ddim_sample(exact, schedule, np.random.default_rng(0).standard_normal((1, 25, 7)))
    np.testing.assert_allclose(result, clean, atol=1e-4)


# ---------------------------------------------------------------------------------------------- caller errors
def test_malformed_observations_raise_clear_errors(bundle, world):
    pipeline = ActorPipeline(bundle, "left")
    (good, _), = observations(bundle, world, "left", 1, seed=6)

    def changed(**fields):
        values = {name: getattr(good, name) for name in good.__dataclass_fields__}
        values.update(fields)
        return ActorObservation(**values)

    cases = [
        (changed(joint_state=np.zeros(6)), "joint_state"),
        (changed(joint_state=np.full(7, np.nan)), "joint_state"),
        (changed(affordance=np.zeros((2, 2))), "affordance"),
        (changed(affordance=np.full((3, 2), np.inf)), "affordance"),
        (changed(affordance_units="metres"), "affordance_units"),
        (changed(top_rgb=good.top_rgb.astype(np.float32)), "top_rgb"),
        (changed(wrist_rgb=good.wrist_rgb[:, :, 0]), "wrist_rgb"),
        (changed(instruction="Juggle three cups."), "instruction.*Juggle"),
    ]
    for observation, name in cases:
        with pytest.raises(ActorInputError, match=name) as raised:
            pipeline.infer(observation)
        assert isinstance(raised.value, ValueError)  # what the actor node catches
    assert isinstance(raised.value.__cause__, UnknownInstructionError)
    with pytest.raises(TypeError, match="ActorObservation"):
        pipeline.infer({"joint_state": good.joint_state})
    assert pipeline.outcome_counts() == {}


def test_pipeline_configuration_errors(bundle):
    limit = bundle.model_entry("actor_decoder").tokens.max_tokens
    with pytest.raises(ActorConfigError, match="max_tokens"):
        ActorPipeline(bundle, "left", max_tokens=limit + 1)
    with pytest.raises(ActorConfigError, match="expert_tokens"):
        ActorPipeline(bundle, "left", roles={"encoder": "actor_encoder", "decoder": "actor_decoder",
                                            "denoiser": "denoiser"})
    with pytest.raises(ActorConfigError, match="no denoiser"):
        ActorPipeline(bundle, "left", roles={"encoder": "actor_encoder", "decoder": "actor_decoder_expert"})
    with pytest.raises(ActorConfigError, match="token ids"):
        ActorPipeline(bundle, "left", roles={"encoder": "actor_encoder", "decoder": "planner"})
    with pytest.raises(ActorConfigError, match="schedule"):
        DdimSchedule.from_options(4, {"kind": "ddim", "timesteps": [3, 2, 1], "alphas_cumprod": [0.1, 0.5, 0.9]})


def test_too_few_generation_steps_is_a_typed_no_eos_failure(bundle, world):
    """The reference sequences are >= 11 ids long: 3 steps cannot reach EOS."""
    pipeline = ActorPipeline(bundle, "left", max_tokens=3)
    (observation, _), = observations(bundle, world, "left", 1, seed=8)
    result = pipeline.infer(observation)
    assert result.chunk is None and result.failure.kind is ActorFailureKind.NO_EOS
    assert len(result.tokens) == 3
    assert result.timings.token_generation is not None and result.timings.decode is None
    assert pipeline.outcome_counts() == {"no_eos": 1}


# ---------------------------------------------------------------------------------------------- tiny models
def _value_info(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def scripted_step_decoder(path: Path, rows: np.ndarray, context_shape, expert: bool = False) -> None:
    """Step model whose logits at step i (i = tokens fed - 1) are rows[min(i, last)]."""
    inputs = [_value_info("context", TensorProto.FLOAT, context_shape),
              _value_info("tokens", TensorProto.INT64, ["batch", "tokens"])]
    if expert:
        inputs.append(_value_info("expert_tokens", TensorProto.INT64, ["batch", "expert"]))
    nodes = [
        helper.make_node("Shape", ["tokens"], ["length"], start=1, end=2),
        helper.make_node("Sub", ["length", "one"], ["step"]),
        helper.make_node("Min", ["step", "last"], ["row"]),
        helper.make_node("Gather", ["table", "row"], ["logits"], axis=0),
    ]
    initializers = [numpy_helper.from_array(rows.astype(np.float32), "table"),
                    numpy_helper.from_array(np.array([1], np.int64), "one"),
                    numpy_helper.from_array(np.array([len(rows) - 1], np.int64), "last")]
    graph = helper.make_graph(nodes, "scripted_decoder", inputs,
                              [_value_info("logits", TensorProto.FLOAT, [1, rows.shape[1]])], initializers)
    _save(graph, path)


def one_shot_decoder(path: Path, tokens: np.ndarray, context_shape) -> None:
    """One-shot model that always outputs `tokens` ([1, N] int64)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["fixed"], ["tokens"])], "one_shot_decoder",
        [_value_info("context", TensorProto.FLOAT, context_shape)],
        [_value_info("tokens", TensorProto.INT64, list(tokens.shape))],
        [numpy_helper.from_array(tokens.astype(np.int64), "fixed")])
    _save(graph, path)


def oracle_denoiser(path: Path, clean: np.ndarray, alphas: np.ndarray, context_shape, nan: bool = False) -> None:
    """eps = (x - sqrt(a_t) clean) / sqrt(1 - a_t): DDIM then returns `clean` (or NaN eps)."""
    chunk_shape = ["batch", clean.shape[0], clean.shape[1]]
    nodes = [
        helper.make_node("Cast", ["timestep"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["sqrt_alpha", "index"], ["sa"]),
        helper.make_node("Gather", ["sqrt_one_minus", "index"], ["sb"]),
        helper.make_node("Unsqueeze", ["sa", "axes"], ["sa3"]),
        helper.make_node("Unsqueeze", ["sb", "axes"], ["sb3"]),
        helper.make_node("Mul", ["sa3", "clean"], ["scaled"]),
        helper.make_node("Sub", ["noisy_actions", "scaled"], ["residual"]),
        helper.make_node("Div", ["residual", "sb3"], ["exact"]),
        helper.make_node("Add", ["exact", "offset"], ["eps"]),
    ]
    initializers = [
        numpy_helper.from_array(np.sqrt(alphas).astype(np.float32), "sqrt_alpha"),
        numpy_helper.from_array(np.sqrt(1 - alphas).astype(np.float32), "sqrt_one_minus"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
        numpy_helper.from_array(clean[None].astype(np.float32), "clean"),
        numpy_helper.from_array(np.array(np.nan if nan else 0.0, np.float32), "offset"),
    ]
    graph = helper.make_graph(
        nodes, "oracle_denoiser",
        [_value_info("noisy_actions", TensorProto.FLOAT, chunk_shape), _value_info("timestep", TensorProto.FLOAT,
                                                                                   ["batch"]),
         _value_info("context", TensorProto.FLOAT, context_shape)],
        [_value_info("eps", TensorProto.FLOAT, chunk_shape)], initializers)
    _save(graph, path)


def one_hot_rows(ids, width: int) -> np.ndarray:
    rows = np.zeros((len(ids), width), np.float32)
    rows[np.arange(len(ids)), ids] = 10.0
    return rows


@pytest.fixture(scope="module")
def test_bundle(reference_dir, tmp_path_factory):
    """A copy of the reference bundle with extra decoder/denoiser roles built from tiny ONNX graphs."""
    folder = tmp_path_factory.mktemp("actor_failures") / "bundle"
    shutil.copytree(reference_dir, folder)
    with open(folder / "bundle.yaml", encoding="utf-8") as stream:
        manifest = yaml.safe_load(stream)
    reference = load_bundle(str(folder))
    fast = reference.fast_tokenizer()
    reference.close()
    decoder = manifest["models"]["actor_decoder"]
    vocab, bos, eos = decoder["vocab_size"], decoder["bos_id"], decoder["eos_id"]
    context_spec = decoder["inputs"]["context"]
    context_shape = context_spec["shape"]
    logits_spec = {"dtype": "float32", "shape": [1, vocab]}
    tokens_spec = {"dtype": "int64", "shape": ["batch", "tokens"]}
    token_options = {k: decoder[k] for k in ("vocab_size", "bos_id", "eos_id", "max_tokens")}
    # A chunk whose scaled DCT coefficients are exact integers (the decode of real ids), so
    # re-encoding it after the float32 DDIM round trip cannot flip a rounding.
    valid_ids = fast.encode(np.linspace(-0.3, 0.2, 25)[:, None] * np.linspace(0.5, 1.0, 7)[None, :])
    chunk = fast.decode(valid_ids).chunk
    filler = fast.tokenizer.encode(chr(-fast.min_token)).ids[0]  # one ASCII character: a zero coefficient
    models = manifest["models"]

    def step_role(name, ids_or_rows, expert=False):
        rows = ids_or_rows if isinstance(ids_or_rows, np.ndarray) else one_hot_rows(ids_or_rows, vocab)
        scripted_step_decoder(folder / f"{name}.onnx", rows, context_shape, expert)
        inputs = {"context": context_spec, "tokens": tokens_spec}
        if expert:
            inputs["expert_tokens"] = {"dtype": "int64", "shape": ["batch", "expert"]}
        models[name] = {"file": f"{name}.onnx", "inputs": inputs, "outputs": {"logits": logits_spec},
                        **token_options, **({"max_expert_tokens": 128} if expert else {})}

    step_role("never_eos", [filler])
    step_role("wrong_length", [filler, eos])
    step_role("emits_bos", [filler, bos, eos])
    step_role("nan_logits", np.full((1, vocab), np.nan, np.float32))
    step_role("valid_script", [*valid_ids, eos])
    step_role("expert_script", [*valid_ids, eos], expert=True)
    for name, ids in (("one_shot_valid", [bos, *valid_ids, eos, 0, 0]), ("one_shot_garbage", [filler] * 3)):
        one_shot_decoder(folder / f"{name}.onnx", np.array([ids]), context_shape)
        models[name] = {"file": f"{name}.onnx", "inputs": {"context": context_spec},
                        "outputs": {"tokens": {"dtype": "int64", "shape": [1, len(ids)]}},
                        "mode": "one_shot", **token_options}

    alphas = diffusion_alphas_cumprod()
    denoiser = manifest["models"]["denoiser"]
    rng = np.random.default_rng(0)
    # Inside [-1, 1] every DCT coefficient is >= -5 (Cauchy-Schwarz), i.e. >= min_token at scale
    # 10: clipping makes proposals always encodable. The unencodable case therefore turns the
    # clip off and proposes a chunk at -2 (DC coefficient -10, code below min_token).
    below_min = np.full((25, 7), -2.0)
    long_chunk = rng.choice([-0.6, 0.6], size=(25, 7))
    cleans = {"oracle_smooth": chunk, "oracle_unencodable": below_min, "oracle_long": long_chunk,
              "oracle_nan": chunk}
    for name, clean in cleans.items():
        oracle_denoiser(folder / f"{name}.onnx", clean, alphas, context_shape, nan=name == "oracle_nan")
        models[name] = {key: denoiser[key] for key in ("inputs", "outputs", "steps", "schedule", "noise_seed")}
        models[name]["file"] = f"{name}.onnx"
    models["oracle_unencodable"]["schedule"] = {**denoiser["schedule"], "clip_sample": None}
    with open(folder / "bundle.yaml", "w", encoding="utf-8") as stream:
        yaml.safe_dump(manifest, stream, sort_keys=False)
    loaded = load_bundle(str(folder), intra_op_threads=1, inter_op_threads=1)
    loaded.script = {"valid_ids": tuple(valid_ids), "chunk": chunk, "long_chunk": long_chunk, "filler": filler}
    yield loaded
    loaded.close()


def _run(bundle, world, decoder, denoiser=None, **options):
    pipeline = ActorPipeline(bundle, "left", roles={"encoder": "actor_encoder", "decoder": decoder,
                                                   "denoiser": denoiser}, **options)
    (observation, _), = observations(bundle, world, "left", 1, seed=9)
    return pipeline, pipeline.infer(observation)


def test_decoder_that_never_emits_eos(test_bundle, world):
    pipeline, result = _run(test_bundle, world, "never_eos")
    assert result.chunk is None and result.failure.kind is ActorFailureKind.NO_EOS
    assert result.tokens == (test_bundle.script["filler"],) * pipeline.max_tokens
    assert pipeline.outcome_counts() == {"no_eos": 1}


@pytest.mark.parametrize("decoder, fast_failure", [("wrong_length", DecodeFailure.WRONG_LENGTH),
                                                   ("emits_bos", DecodeFailure.INVALID_ID),
                                                   ("one_shot_garbage", DecodeFailure.WRONG_LENGTH)])
def test_tokens_that_do_not_decode_are_typed_failures(test_bundle, world, decoder, fast_failure):
    pipeline, result = _run(test_bundle, world, decoder)
    assert result.chunk is None and result.normalized_chunk is None
    assert result.failure.kind is ActorFailureKind.DECODE_FAILED
    assert result.failure.fast_failure is fast_failure
    assert result.tokens and result.timings.decode is not None and result.timings.unnormalise is None
    assert pipeline.outcome_counts() == {f"decode_failed/{fast_failure.value}": 1}


def test_relaxed_decoding_is_opt_in_and_counted(test_bundle, world):
    pipeline, result = _run(test_bundle, world, "wrong_length", relaxed_decode=True)
    assert result.ok and result.relaxed_used and result.chunk.shape == (25, 7)
    assert pipeline.outcome_counts() == {"ok": 1, "relaxed_used": 1}


def test_nan_logits_are_a_typed_failure(test_bundle, world):
    pipeline, result = _run(test_bundle, world, "nan_logits")
    assert result.chunk is None and result.failure.kind is ActorFailureKind.NON_FINITE_LOGITS
    assert result.tokens == ()
    assert pipeline.outcome_counts() == {"non_finite_logits": 1}


def test_scripted_and_one_shot_decoders_decode_exactly(test_bundle, world):
    """A known valid FAST sequence, produced step by step or in one shot, decodes to its chunk."""
    script = test_bundle.script
    normalizer = test_bundle.normalizer("left")
    for decoder in ("valid_script", "one_shot_valid"):
        pipeline, result = _run(test_bundle, world, decoder)
        assert result.ok, result.failure.describe()
        assert result.tokens == script["valid_ids"]  # BOS dropped, cut at EOS (padding after it ignored)
        np.testing.assert_allclose(result.normalized_chunk, script["chunk"], atol=1e-9)
        np.testing.assert_allclose(result.chunk, normalizer.unnormalize(result.normalized_chunk))
    assert pipeline.mode == "one_shot" and result.timings.n_model_calls == 1


def test_diffusion_stage_feeds_the_proposal_as_expert_tokens(test_bundle, world):
    _, result = _run(test_bundle, world, "expert_script", "oracle_smooth")
    assert result.ok
    fast = test_bundle.fast_tokenizer()
    assert result.expert_tokens == tuple(fast.encode(test_bundle.script["chunk"]))
    assert result.timings.n_model_calls == test_bundle.model_entry("oracle_smooth").steps + len(result.tokens) + 1


@pytest.mark.parametrize("denoiser, kind", [("oracle_nan", ActorFailureKind.DENOISER_NON_FINITE),
                                            ("oracle_unencodable", ActorFailureKind.EXPERT_ENCODE_FAILED),
                                            ("oracle_long", ActorFailureKind.EXPERT_TOO_LONG)])
def test_diffusion_failures_are_typed(test_bundle, world, denoiser, kind):
    fast = test_bundle.fast_tokenizer()
    if denoiser == "oracle_long":  # premise: the chunk encodes, but longer than the decoder accepts
        assert len(fast.encode(test_bundle.script["long_chunk"])) > 128
    if denoiser == "oracle_unencodable":
        with pytest.raises(FastEncodeError):
            fast.encode(np.full((25, 7), -2.0))
    pipeline, result = _run(test_bundle, world, "expert_script", denoiser)
    assert result.chunk is None and result.failure.kind is kind
    assert result.timings.denoiser is not None and result.timings.token_generation is None
    assert pipeline.outcome_counts() == {kind.value: 1}
