"""Training, ONNX export and quality checks of the reference bundle (needs torch).

Called by `make_reference_bundle.main`; see that module for the synthetic world and the
bundle layout. Everything is seeded; each model trains for a fixed number of steps.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from torch.nn import functional as F

from sim2real_vla_ros.core.fast import FastTokenizer
from sim2real_vla_ros.core.normalization import ActionNormalizer
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.tools import make_reference_bundle as spec
from sim2real_vla_ros.tools import reference_models as rm
from sim2real_vla_ros.tools.make_reference_bundle import BundleGenerationError, SyntheticWorld

# Training budget (steps) per model; the whole run takes about 1.5 minutes on 2 idle CPU cores.
STEPS = {"mask": 150, "planner": 300, "validator": 300, "actor": 1200, "denoiser": 3000}
ACTOR_TRAIN_SAMPLES = 8000
HELD_OUT_SAMPLES = 200
EXPERT_CHECK_SAMPLES = 60
MIN_EXPERT_DECODE_RATE = 0.9


def _log(message: str) -> None:
    print(f"[make_reference_bundle] {message}", flush=True)


# ----------------------------------------------------------------------------- data
class Pools:
    """Pre-rendered image pools shared by the mask, planner, validator and actor data.

    Model inputs are built by the deployment code (`spec.model_input_images`): ``top`` and
    ``wrist`` are what the camera/mask node feeds the mask model; ``top_masked`` and
    ``wrist_masked`` what the planner, validator and actor nodes feed their models (the
    node's masked image through `observation.masked_model_input`).
    """

    def __init__(self, world: SyntheticWorld, rng: np.random.Generator, top_count: int = 768,
                 wrist_count: int = 256):
        preprocessor = spec.image_preprocessor()
        counts = rng.choice([0, 1, 2, 3], p=[0.1, 0.3, 0.3, 0.3], size=top_count)
        self.top_scenes = [world.render(rng, int(n), robot=bool(rng.random() < 0.5)) for n in counts]
        self.top_raw = np.stack([s.image for s in self.top_scenes])
        self.top_labels = np.stack([s.labels for s in self.top_scenes])
        self.top = spec.model_input_images(preprocessor, self.top_raw)
        self.top_masked = spec.model_input_images(preprocessor, self.top_raw, self.top_labels)
        wrist = [world.render(rng, int(rng.integers(0, 3)), size_scale=2.2, robot=True) for _ in range(wrist_count)]
        self.wrist_raw = np.stack([s.image for s in wrist])
        self.wrist_labels = np.stack([s.labels for s in wrist])
        self.wrist = spec.model_input_images(preprocessor, self.wrist_raw)
        self.wrist_masked = spec.model_input_images(preprocessor, self.wrist_raw, self.wrist_labels)


def _tokens_batch(sequences: Sequence[Sequence[int]], bos: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher forcing: inputs [BOS, ids..] and targets [ids.., EOS], padded (-100 ignored)."""
    length = max(len(s) for s in sequences) + 1
    inputs = np.full((len(sequences), length), eos, dtype=np.int64)
    targets = np.full((len(sequences), length), -100, dtype=np.int64)
    for row, ids in enumerate(sequences):
        inputs[row, 0] = bos
        inputs[row, 1:len(ids) + 1] = ids
        targets[row, :len(ids)] = ids
        targets[row, len(ids)] = eos
    return inputs, targets


def _expert_batch(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    length = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), length), dtype=np.int64)
    padding = np.ones((len(sequences), length), dtype=bool)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
        padding[row, :len(seq)] = False
    return ids, padding


def _perturbed_chunk(chunk: np.ndarray, rng: np.random.Generator, profile: np.ndarray) -> np.ndarray:
    """A smooth, imperfect proposal of `chunk`: what the diffusion expert is trained to give."""
    offset = rng.normal(0, 0.03, size=chunk.shape[1])
    drift = rng.normal(0, 0.05, size=chunk.shape[1])
    return np.clip(chunk + offset[None] + drift[None] * profile[:, None], -1.0, 1.0)


# ----------------------------------------------------------------------------- training
def _fit(parameters, steps: int, lr: float, loss_of_step: Callable[[int], torch.Tensor]) -> dict:
    """AdamW with warm-up + cosine decay; returns the mean loss of the last 20 steps and time."""
    parameters = list(parameters)
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        loss = loss_of_step(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return {"final_loss": float(np.mean(losses[-20:])), "seconds": time.perf_counter() - start, "steps": steps}


def train_mask(world: SyntheticWorld, pools: Pools, rng: np.random.Generator) -> tuple:
    images = np.concatenate([pools.top[:320], pools.wrist[:160]])
    labels = np.concatenate([pools.top_labels[:320], pools.wrist_labels[:160]]).astype(np.int64)
    model = rm.MaskNet(len(world.mask_classes))

    def step(_):
        index = rng.integers(0, len(images), size=8)
        return F.cross_entropy(model(torch.from_numpy(images[index])), torch.from_numpy(labels[index]))

    stats = _fit(model.parameters(), STEPS["mask"], 1e-2, step)
    with torch.no_grad():
        predicted = model(torch.from_numpy(pools.top[-64:])).argmax(1).numpy()
    stats["pixel_accuracy_held_out"] = float(np.mean(predicted == pools.top_labels[-64:]))
    return model.eval(), stats


def train_planner(world: SyntheticWorld, pools: Pools, instructions: np.ndarray, rng: np.random.Generator):
    targets = [world.planner_targets(scene) for scene in pools.top_scenes]
    keypoints = np.stack([t[0] for t in targets]).astype(np.float32)
    active = np.stack([t[1] for t in targets]).astype(np.float32)
    done = np.array([t[2] for t in targets], dtype=np.float32)
    model = rm.Planner(spec.KEYPOINTS, spec.CHAIN_LENGTH, spec.INSTRUCTION_DIM)
    train = len(keypoints) - 64

    def batch(index):
        count = len(index)
        valid = (rng.random((count, spec.CHAIN_LENGTH)) < 0.5).astype(np.float32)
        previous = keypoints[index][:, None] + rng.normal(0, 0.03, size=(count, spec.CHAIN_LENGTH, 2, spec.KEYPOINTS, 2))
        previous = np.clip(previous, 0, 1).astype(np.float32) * valid[:, :, None, None, None]
        instruction = instructions[rng.integers(0, len(instructions), size=count)]
        return [torch.from_numpy(x) for x in (pools.top_masked[index], instruction, previous, valid)]

    def step(_):
        index = rng.integers(0, train, size=32)
        kp, arm, finished = model(*batch(index))
        return (F.mse_loss(kp, torch.from_numpy(keypoints[index])) * 10
                + F.binary_cross_entropy(arm, torch.from_numpy(active[index]))
                + F.binary_cross_entropy(finished, torch.from_numpy(done[index])))

    stats = _fit(model.parameters(), STEPS["planner"], 3e-3, step)
    with torch.no_grad():
        held = np.arange(train, len(keypoints))
        kp, _, _ = model(*batch(held))
    stats["keypoint_mae_held_out"] = float(np.mean(np.abs(kp.numpy() - keypoints[held])))
    return model.eval(), stats


def _validator_batch(world: SyntheticWorld, pools: Pools, rng: np.random.Generator, count: int):
    affordance, state = world.sample_actor_inputs(rng, count)
    target = world.joint_target(affordance)
    near = rng.random(count) < 0.5
    state[near] = target[near] + rng.normal(0, 0.06, size=(int(near.sum()), spec.ACTION_DIM))
    achieved = (np.max(np.abs(state - target), axis=1) < spec.ACHIEVED_THRESHOLD).astype(np.float32)
    tops = pools.top_masked[rng.integers(0, len(pools.top_masked), size=count)]
    wrists = pools.wrist_masked[rng.integers(0, len(pools.wrist_masked), size=count)]
    inputs = [tops, wrists, affordance.astype(np.float32), state.astype(np.float32)]
    return [torch.from_numpy(x) for x in inputs], torch.from_numpy(achieved)


def train_validator(world: SyntheticWorld, pools: Pools, rng: np.random.Generator):
    model = rm.Validator(spec.KEYPOINTS)

    def step(_):
        inputs, achieved = _validator_batch(world, pools, rng, 64)
        return F.binary_cross_entropy(model(*inputs), achieved)

    stats = _fit(model.parameters(), STEPS["validator"], 3e-3, step)
    with torch.no_grad():
        inputs, achieved = _validator_batch(world, pools, rng, 256)
        predicted = model(*inputs).numpy() > 0.5
    stats["accuracy_held_out"] = float(np.mean(predicted == (achieved.numpy() > 0.5)))
    return model.eval(), stats


class ActorData:
    """Synthetic actor samples: inputs, FAST token targets and perturbed expert tokens."""

    def __init__(self, world: SyntheticWorld, pools: Pools, fast: FastTokenizer, instructions: np.ndarray,
                 rng: np.random.Generator, count: int):
        self.affordance, self.state = world.sample_actor_inputs(rng, count)
        self.chunks = np.stack([world.chunk(s, a) for s, a in zip(self.state, self.affordance)])
        self.tokens = [fast.encode(c) for c in self.chunks]
        self.expert = [fast.encode(_perturbed_chunk(c, rng, world.profile)) for c in self.chunks]
        self.top_index = rng.integers(0, len(pools.top_masked), size=count)
        self.wrist_index = rng.integers(0, len(pools.wrist_masked), size=count)
        self.instruction_index = rng.integers(0, len(instructions), size=count)
        self.pools = pools
        self.instructions = instructions

    def encoder_inputs(self, index) -> list:
        arrays = [self.pools.wrist_masked[self.wrist_index[index]], self.pools.top_masked[self.top_index[index]],
                  self.affordance[index].astype(np.float32), self.state[index].astype(np.float32),
                  self.instructions[self.instruction_index[index]]]
        return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def train_actor(data: ActorData, vocab: int, rng: np.random.Generator, steps: int | None = None):
    """Train encoder + decoder with teacher forcing on FAST token sequences (with BOS/EOS).

    The image stems stay at their seeded random initialisation: in the synthetic world the
    images carry no information about the chunk, so their features are computed once per
    pooled image instead of on every step (this is what keeps the training near a minute).
    """
    encoder = rm.ActorEncoder(spec.KEYPOINTS, spec.INSTRUCTION_DIM, spec.CONTEXT_DIM)
    decoder = rm.ActorDecoder(vocab, spec.CONTEXT_DIM, spec.DECODER_LAYERS, spec.DECODER_HEADS,
                              max_positions=spec.MAX_POSITIONS, max_expert_tokens=spec.MAX_EXPERT_TOKENS)
    for stem in (encoder.wrist_stem, encoder.top_stem):
        stem.requires_grad_(False)
    with torch.no_grad():
        wrist_cells = encoder.cells(encoder.wrist_stem, torch.from_numpy(data.pools.wrist_masked))
        top_cells = torch.cat([encoder.cells(encoder.top_stem, torch.from_numpy(data.pools.top_masked[i:i + 256]))
                               for i in range(0, len(data.pools.top_masked), 256)])
    affordance = torch.from_numpy(data.affordance.astype(np.float32))
    state = torch.from_numpy(data.state.astype(np.float32))
    instructions = torch.from_numpy(data.instructions)

    def step(step_index):
        index = rng.integers(0, len(data.tokens), size=64)
        inputs, targets = _tokens_batch([data.tokens[i] for i in index], vocab, vocab + 1)
        rows = torch.from_numpy(index)
        context = encoder.from_cells(
            wrist_cells[torch.from_numpy(data.wrist_index[index])], top_cells[torch.from_numpy(data.top_index[index])],
            affordance[rows], state[rows], instructions[torch.from_numpy(data.instruction_index[index])])
        # Every other step conditions on expert tokens, so one set of weights serves the
        # plain decoder and the diffusion-expert decoder.
        if step_index % 2:
            expert, padding = _expert_batch([data.expert[i] for i in index])
            logits = decoder(context, torch.from_numpy(inputs), torch.from_numpy(expert), torch.from_numpy(padding))
        else:
            logits = decoder(context, torch.from_numpy(inputs))
        return F.cross_entropy(logits.reshape(-1, vocab + 2), torch.from_numpy(targets).reshape(-1), ignore_index=-100)

    parameters = [p for p in list(encoder.parameters()) + list(decoder.parameters()) if p.requires_grad]
    stats = _fit(parameters, steps or STEPS["actor"], 3e-3, step)
    return encoder.eval(), decoder.eval(), stats


def train_denoiser(data: ActorData, encoder, alphas: np.ndarray, rng: np.random.Generator):
    with torch.no_grad():
        contexts = torch.cat([encoder(*data.encoder_inputs(np.arange(i, min(i + 512, len(data.tokens)))))
                              for i in range(0, len(data.tokens), 512)])
    chunks = torch.from_numpy(data.chunks.astype(np.float32))
    alphas_t = torch.from_numpy(alphas.astype(np.float32))
    model = rm.Denoiser(spec.CHUNK_LENGTH, spec.ACTION_DIM, alphas, spec.DENOISER_DCT_ROWS, spec.CONTEXT_DIM)

    def step(_):
        index = torch.from_numpy(rng.integers(0, len(chunks), size=128))
        t = torch.from_numpy(rng.integers(0, len(alphas), size=128))
        noise = torch.from_numpy(rng.standard_normal((128, spec.CHUNK_LENGTH, spec.ACTION_DIM)).astype(np.float32))
        a = alphas_t[t][:, None, None]
        noisy = a.sqrt() * chunks[index] + (1 - a).sqrt() * noise
        # x0 ("sample") objective: better conditioned than eps at the noisy end of the cosine
        # schedule; the exported graph still outputs eps (see reference_models.Denoiser).
        return F.mse_loss(model.predict_clean(noisy, t.to(torch.float32), contexts[index]), chunks[index])

    stats = _fit(model.parameters(), STEPS["denoiser"], 2e-3, step)
    return model.eval(), stats


# ----------------------------------------------------------------------------- export
def _dynamic_axes(contract: dict) -> dict:
    axes = {}
    for group in ("inputs", "outputs"):
        for name, tensor in contract[group].items():
            named = {i: d for i, d in enumerate(tensor["shape"]) if isinstance(d, str)}
            if named:
                axes[name] = named
    return axes


def export_onnx(module, example: tuple, path: Path, contract: dict) -> None:
    """Export with the legacy (TorchScript) exporter, opset 17, names/axes from the contract."""
    module.eval()
    # The dynamo exporter (torch's default) needs onnxscript, which the project does not
    # install; the TorchScript exporter is deprecated but produces these small graphs fine.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, example, str(path),
            input_names=list(contract["inputs"]), output_names=list(contract["outputs"]),
            dynamic_axes=_dynamic_axes(contract), opset_version=spec.OPSET, dynamo=False,
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_export(session: ort.InferenceSession, module, example: tuple, names: Sequence[str]) -> float:
    """Largest |torch - onnxruntime| over every output on the example inputs."""
    with torch.no_grad():
        expected = module(*example)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {name: t.numpy() for name, t in zip(names, example)})
    error = max(float(np.max(np.abs(e.numpy() - g))) for e, g in zip(expected, got))
    if error > 1e-3:
        raise BundleGenerationError(f"ONNX export of {session._model_path} differs from torch by {error:g}")
    return error


# ----------------------------------------------------------------------------- checks
def check_cache_variant(plain: ort.InferenceSession, cached: ort.InferenceSession, context: np.ndarray,
                        sequence: Sequence[int], bos: int) -> float:
    """Largest logit difference between stepping with the cache and re-running the prefix."""
    layers, heads, head_dim = spec.DECODER_LAYERS, spec.DECODER_HEADS, spec.CONTEXT_DIM // spec.DECODER_HEADS
    past_key = np.zeros((layers, 1, heads, 0, head_dim), np.float32)
    past_value = past_key.copy()
    prefix = []
    worst = 0.0
    for token in [bos, *sequence]:
        prefix.append(token)
        logits, past_key, past_value = cached.run(None, {
            "context": context, "tokens": np.array([[token]], np.int64), "past_key": past_key, "past_value": past_value})
        reference = plain.run(None, {"context": context, "tokens": np.array([prefix], np.int64)})[0]
        worst = max(worst, float(np.max(np.abs(reference - logits))))
    return worst


def check_dynamic_axis_ranges(bundle) -> dict:
    """Every role's TensorRT profile resolves from the manifest, and the model runs at both ends.

    `build_engine --bundle DIR --role ROLE` takes its profiles from ``dynamic_axes``; a
    missing range would need ``--axis`` flags, a range the model cannot run would only show
    on the robot. Returns ``{role: {axis: [min, opt, max]}}``.

    Raises
    ------
    BundleGenerationError
        A dynamic input axis without a range, or a model failing at a range end.
    """
    from sim2real_vla_ros.core.bundle import expected_profiles

    ranges = {}
    for role in bundle.roles:
        entry = bundle.model_entry(role)
        if expected_profiles(entry) is None:
            raise BundleGenerationError(f"models.{role}: a dynamic input axis has no dynamic_axes range "
                                        f"(has {dict(entry.dynamic_axes)})")
        for end in (0, 2):
            sizes = {axis: values[end] for axis, values in entry.dynamic_axes.items()}
            outputs = bundle.model(role).run(entry.contract.example_inputs(sizes))
            if not all(np.all(np.isfinite(value)) for value in outputs.values()):
                raise BundleGenerationError(f"models.{role}: non-finite output at dynamic axis sizes {sizes}")
        ranges[role] = {axis: list(values) for axis, values in entry.dynamic_axes.items()}
    return ranges


def held_out_observations(held: ActorData, normalizers: dict, instructions: Sequence[str]) -> list:
    """(arm, ActorObservation, target chunk in robot units) for the held-out samples.

    Images follow the masked-image convention (background exactly black); arms alternate.
    """
    from sim2real_vla_ros.core.actor_pipeline import ActorObservation
    from sim2real_vla_ros.core.observation import apply_mask

    pools = held.pools
    samples = []
    for row in range(len(held.tokens)):
        arm = ("left", "right")[row % 2]
        normalizer = normalizers[arm]
        top, wrist = held.top_index[row], held.wrist_index[row]
        observation = ActorObservation(
            wrist_rgb=apply_mask(pools.wrist_raw[wrist], pools.wrist_labels[wrist]),
            top_rgb=apply_mask(pools.top_raw[top], pools.top_labels[top]),
            affordance=held.affordance[row], joint_state=normalizer.unnormalize(held.state[row]),
            instruction=instructions[held.instruction_index[row]])
        samples.append((arm, observation, normalizer.unnormalize(held.chunks[row])))
    return samples


def pipeline_quality(bundle, samples: Sequence, roles: dict | None = None) -> tuple:
    """Run ActorPipeline over samples; (metrics, token sequences) with the decode rate."""
    from sim2real_vla_ros.core.actor_pipeline import ActorPipeline

    pipelines = {arm: ActorPipeline(bundle, arm, roles=roles) for arm in ("left", "right")}
    failures: dict = {}
    errors, jumps, sequences = [], [], []
    for arm, observation, target in samples:
        result = pipelines[arm].infer(observation)
        sequences.append(result.tokens)
        if not result.ok:
            key = result.failure.kind.value + (f"/{result.failure.fast_failure.value}"
                                               if result.failure.fast_failure else "")
            failures[key] = failures.get(key, 0) + 1
            continue
        normalizer = bundle.normalizer(arm)
        errors.append(float(np.mean(np.abs(normalizer.normalize(result.chunk) - normalizer.normalize(target)))))
        jumps.append(float(np.max(np.abs(normalizer.normalize(result.chunk[0])
                                         - normalizer.normalize(observation.joint_state)))))
    metrics = {
        "samples": len(samples),
        "decode_rate": (len(samples) - sum(failures.values())) / len(samples),
        "failures": failures,
        "mean_abs_error_normalised": float(np.mean(errors)) if errors else None,
        "first_step_jump_normalised_p50": float(np.median(jumps)) if jumps else None,
        "first_step_jump_normalised_max": float(np.max(jumps)) if jumps else None,
    }
    return metrics, sequences


def quality_checks(folder: Path, sessions: dict, held: ActorData, prepared: dict, vocab: int, metrics: dict,
                   min_decode_rate: float) -> None:
    """Load the staged bundle with the project's loader and check the actor end to end.

    Raises
    ------
    BundleGenerationError
        Too few decodable outputs, or the cache decoder disagreeing with the plain one.
    """
    from sim2real_vla_ros.core.bundle import load_bundle

    feeds = dict(zip(contracts_names("actor_encoder"), [t.numpy() for t in held.encoder_inputs(np.arange(5))]))
    context = sessions["actor_encoder"].run(None, feeds)[0]
    metrics["kv_cache_max_logit_diff"] = max(
        check_cache_variant(sessions["actor_decoder"], sessions["actor_decoder_kv"], context[i:i + 1],
                            held.tokens[i], vocab) for i in range(len(context)))
    if metrics["kv_cache_max_logit_diff"] > 1e-3:
        raise BundleGenerationError(f"cache decoder disagrees with the plain decoder by "
                                    f"{metrics['kv_cache_max_logit_diff']:g}")
    bundle = load_bundle(str(folder), intra_op_threads=1, inter_op_threads=1)
    try:
        check_dynamic_axis_ranges(bundle)
        normalizers = {arm: bundle.normalizer(arm) for arm in ("left", "right")}
        samples = held_out_observations(held, normalizers, list(prepared["embeddings"]))
        plain, plain_tokens = pipeline_quality(bundle, samples)
        metrics["held_out_plain"] = plain
        _log(f"held-out actor pipeline (plain decoder): {plain}")
        subset = samples[:20]
        _, cached_tokens = pipeline_quality(bundle, subset, {"encoder": "actor_encoder", "decoder": "actor_decoder_kv"})
        metrics["kv_cache_same_tokens"] = cached_tokens == plain_tokens[:20]
        expert, _ = pipeline_quality(bundle, samples[:EXPERT_CHECK_SAMPLES], {
            "encoder": "actor_encoder", "decoder": "actor_decoder_expert", "denoiser": "denoiser"})
        metrics["held_out_expert"] = expert
        _log(f"held-out actor pipeline (diffusion expert + expert decoder): {expert}")
    finally:
        bundle.close()
    if not metrics["kv_cache_same_tokens"]:
        raise BundleGenerationError("the cache decoder generated different tokens than the plain decoder")
    if plain["decode_rate"] < min_decode_rate:
        raise BundleGenerationError(f"only {plain['decode_rate']:.1%} of held-out actor outputs FAST-decode "
                                    f"(need {min_decode_rate:.0%}); failures {plain['failures']}")
    if expert["decode_rate"] < MIN_EXPERT_DECODE_RATE:
        raise BundleGenerationError(f"only {expert['decode_rate']:.1%} of diffusion-expert actor outputs "
                                    f"FAST-decode (need {MIN_EXPERT_DECODE_RATE:.0%}); failures {expert['failures']}")


# ----------------------------------------------------------------------------- files
def save_npz_deterministic(path: Path, arrays: dict) -> None:
    """Like np.savez, but with fixed zip timestamps and key order (so bytes reproduce)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as stream:
                np.lib.format.write_array(stream, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def _write_manifest(path: Path, manifest: dict) -> None:
    header = ("# Reference bundle: tiny models trained briefly on synthetic data. NOT task-competent.\n"
              "# Generated by: python -m sim2real_vla_ros.tools.make_reference_bundle --out models/reference\n"
              "# Do not edit by hand; regenerate instead. Contract documentation: models/README.md\n")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(header)
        yaml.dump(manifest, stream, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=None, width=120,
                  allow_unicode=True)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared sub-dicts out in full: anchors/aliases would make the manifest hard to read."""

    def ignore_aliases(self, data) -> bool:
        return True


# ----------------------------------------------------------------------------- pipeline
def prepare(tasks_file: str, seed: int, rng: np.random.Generator) -> dict:
    """Instructions, synthetic world, action statistics, FAST tokenizer and training data."""
    instructions_text, kinds = spec.task_instructions_and_objects(tasks_file)
    mask_classes = ["background", "robot", *kinds]
    world = SyntheticWorld(mask_classes, seed)
    embeddings = {text: spec.pseudo_instruction_embedding(text) for text in instructions_text}
    instruction_array = np.stack([embeddings[t] for t in instructions_text])

    # Action statistics per arm, and the FAST tokenizer on normalised chunks.
    normalization, normalised_trajectories = {}, []
    for side in ("left", "right"):
        trajectory = spec.synthetic_trajectories(arm_limits(side), rng, side)
        normalization[side] = spec.quantile_stats(trajectory)
        normaliser = ActionNormalizer.quantile(normalization[side]["q01"], normalization[side]["q99"])
        normalised_trajectories.append(normaliser.normalize(trajectory))
    fast = FastTokenizer.fit(spec.fast_fitting_chunks(world, normalised_trajectories, rng), scale=spec.FAST_SCALE,
                             vocab_size=spec.FAST_VOCAB, time_horizon=spec.CHUNK_LENGTH, action_dim=spec.ACTION_DIM,
                             cover_all_bytes=True)
    _log(f"FAST tokenizer: {fast}")
    pools = Pools(world, rng)
    data = ActorData(world, pools, fast, instruction_array, rng, ACTOR_TRAIN_SAMPLES)
    held = ActorData(world, pools, fast, instruction_array, rng, HELD_OUT_SAMPLES)
    lengths = [len(t) for t in data.tokens]
    expert_lengths = [len(t) for t in data.expert]
    if max(lengths) + 1 > spec.MAX_TOKENS or max(expert_lengths) > spec.MAX_EXPERT_TOKENS:
        raise BundleGenerationError(f"token sequences too long: max {max(lengths)} (+EOS) > {spec.MAX_TOKENS} "
                                    f"or expert {max(expert_lengths)} > {spec.MAX_EXPERT_TOKENS}")
    _log(f"actor token sequences: {min(lengths)}..{max(lengths)} ids (mean {np.mean(lengths):.1f})")
    return {"mask_classes": mask_classes, "world": world, "embeddings": embeddings,
            "instruction_array": instruction_array, "normalization": normalization, "fast": fast,
            "pools": pools, "data": data, "held": held}


def generate(out: Path, tasks_file: str, seed: int, threads: int, min_decode_rate: float) -> dict:
    """Train, export, check and write the reference bundle into `out`; returns the report.

    Files are written to a staging folder first and copied into `out` only when every check
    passes, so a failed run leaves the existing bundle untouched. Files in `out` that this
    tool does not generate (README.md) are kept.
    """
    start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    prepared = prepare(tasks_file, seed, rng)
    world, fast, pools, data, held = (prepared[k] for k in ("world", "fast", "pools", "data", "held"))
    vocab = fast.bpe_vocab_size
    lengths = [len(t) for t in data.tokens]
    metrics: dict = {"token_length": {"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))}}
    timing: dict = {}
    mask_model, metrics["mask"] = train_mask(world, pools, rng)
    _log(f"mask: {metrics['mask']}")
    planner, metrics["planner"] = train_planner(world, pools, prepared["instruction_array"], rng)
    _log(f"planner: {metrics['planner']}")
    validator, metrics["validator"] = train_validator(world, pools, rng)
    _log(f"validator: {metrics['validator']}")
    encoder, decoder, metrics["actor"] = train_actor(data, vocab, rng)
    _log(f"actor: {metrics['actor']}")
    alphas = spec.diffusion_alphas_cumprod()
    denoiser, metrics["denoiser"] = train_denoiser(data, encoder, alphas, rng)
    _log(f"denoiser: {metrics['denoiser']}")
    for name in ("mask", "planner", "validator", "actor", "denoiser"):
        timing[f"train_{name}"] = metrics[name].pop("seconds")

    manifest = spec.build_manifest(prepared["mask_classes"], prepared["normalization"], vocab, alphas)
    contracts = {role: {"inputs": entry["inputs"], "outputs": entry["outputs"]}
                 for role, entry in manifest["models"].items()}
    with tempfile.TemporaryDirectory(prefix="reference_bundle_") as staging_name:
        staging = Path(staging_name)
        sessions = _export_all(staging, contracts, metrics, mask_model, planner, validator, encoder, decoder,
                               denoiser, held)
        fast.save(staging / spec.FAST_DIR)
        save_npz_deterministic(staging / spec.INSTRUCTIONS_FILE, prepared["embeddings"])
        _write_manifest(staging / spec.MANIFEST_FILE, manifest)
        quality_checks(staging, sessions, held, prepared, vocab, metrics, min_decode_rate)
        hashes = spec.bundle_file_hashes(staging)
        timing["total"] = time.perf_counter() - start
        report = {
            "generator": "sim2real_vla_ros.tools.make_reference_bundle",
            "seed": seed, "threads": threads, "versions": spec.environment_versions(),
            "files": hashes, "metrics": metrics, "timing_s": {k: round(v, 2) for k, v in timing.items()},
            "size_bytes": sum((staging / name).stat().st_size for name in hashes),
        }
        with open(staging / spec.REPORT_FILE, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=2, sort_keys=True)
            stream.write("\n")
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / spec.FAST_DIR, ignore_errors=True)
        for item in staging.iterdir():
            if item.is_dir():
                shutil.copytree(item, out / item.name)
            else:
                shutil.copyfile(item, out / item.name)
    _log(f"wrote {out} ({report['size_bytes'] / 1e6:.2f} MB) in {timing['total']:.1f} s")
    return report


def _export_all(folder: Path, contracts: dict, metrics: dict, mask_model, planner, validator, encoder, decoder,
                denoiser, held: ActorData) -> dict:
    files = spec.MODEL_FILES
    index = np.arange(2)
    enc_in = tuple(held.encoder_inputs(index))
    with torch.no_grad():
        context = encoder(*enc_in)
    tokens = torch.tensor([[decoder.vocab_size, 5, 9], [decoder.vocab_size, 7, 3]], dtype=torch.int64)
    expert = torch.tensor([[4, 8, 15, 16, 23], [42, 4, 8, 15, 16]], dtype=torch.int64)
    cache_shape = (spec.DECODER_LAYERS, 2, spec.DECODER_HEADS, 3, spec.CONTEXT_DIM // spec.DECODER_HEADS)
    past = (torch.randn(cache_shape) * 0.1, torch.randn(cache_shape) * 0.1)
    previous = torch.rand(2, spec.CHAIN_LENGTH, 2, spec.KEYPOINTS, 2)
    examples = {
        "mask": (mask_model, (enc_in[1],)),
        "planner": (planner, (enc_in[1], enc_in[4], previous, torch.ones(2, spec.CHAIN_LENGTH))),
        "validator": (validator, (enc_in[1], enc_in[0], enc_in[2], enc_in[3])),
        "actor_encoder": (encoder, enc_in),
        "actor_decoder": (rm.DecoderStep(decoder), (context, tokens)),
        "actor_decoder_kv": (rm.DecoderStepWithCache(decoder), (context, tokens[:, 1:], *past)),
        "actor_decoder_expert": (rm.DecoderStepWithExpert(decoder), (context, tokens, expert)),
        "denoiser": (denoiser, (torch.randn(2, spec.CHUNK_LENGTH, spec.ACTION_DIM), torch.tensor([99.0, 24.0]), context)),
    }
    sessions, errors = {}, {}
    for role, (module, example) in examples.items():
        path = folder / files[role]
        export_onnx(module, example, path, contracts[role])
        sessions[role] = _session(path)
        errors[role] = _check_export(sessions[role], module, example, list(contracts[role]["inputs"]))
    metrics["export_max_abs_error"] = {k: float(f"{v:.3g}") for k, v in errors.items()}
    return sessions


def contracts_names(role: str) -> list:
    """Input names of a role in contract order (the export order)."""
    return list(spec.model_contracts(1, 1)[role]["inputs"])
