"""Build the reference model bundle: tiny models, trained briefly on MuJoCo simulator data.

    python -m training.make_reference_bundle --out models/reference

The bundle satisfies every contract of `BUNDLE_SCHEMA` / `models/README.md` so the whole
stack (masks, planner, validator, per-arm actor with FAST tokens, optional diffusion
expert) runs on a CPU without the paper's weights. The models are NOT task-competent:
they are tiny and trained for a couple of minutes on a CPU, and say so in
`models/reference/README.md`. What they do guarantee is well-formed output *on the
simulator's images*, so the dry run exercises the normal path: masks of the task objects,
keypoints inside the image for the arms the instruction uses, probabilities in [0, 1], and
actor token sequences that FAST-decode into small smooth joint motions.

Training data come from the simulator the dry run runs, as in the paper (sim-only data,
section 4.3); `sim_data_engine` has the details:

- Scenes: `Simulator.reset(seed)` of each of the six tasks (objects inside their Table 5
  ranges), both arms at random configurations near the task's initial pose. The three
  cameras are rendered at the dry run's 320x240 and resized to the bundle's 96x128 as the
  camera/mask node resizes them; true masks come from MuJoCo segmentation rendering
  (object geoms -> the object kind's class, robot/table/background -> 0). Every image input
  of every model is built by `model_input_images`, i.e. by the deployment code
  (`ImagePreprocessor`, `observation.apply_mask`, `observation.masked_model_input`): the
  mask model gets the plain camera image, all other models the masked one.
- Planner: per arm the task uses (instruction -> task -> arms), a pre-grasp and a grasp key
  pose at the arm's first object, turned into joint angles by IK and into P = 3 keypoints
  (TCP and finger tips) projected into `cam_high`. The chain it learns: no previous
  affordance -> pre-grasp; previous = pre-grasp -> grasp; previous = grasp -> done.
  arm_active = the arms the task uses; unused arms get their initial pose's keypoints.
- Actor: the target joint configuration q* of an affordance (a key pose's IK solution or a
  random nearby configuration; the affordance is q*'s projected keypoints); each chunk
  moves every joint from the current (normalised) state toward q* with a half-cosine
  ease-in/ease-out profile, by 0.04 to 0.3 normalised units per chunk. The decoder is trained
  with teacher forcing on the FAST ids of these chunks (BOS ... EOS); generation stops
  unless at least `--min-decode-rate` of held-out greedy outputs FAST-decode.
- Validator: `achieved` = the gripper keypoints of the current joint state lie within
  `ACHIEVED_KEYPOINT_DISTANCE` (image fractions, mean over the P keypoints) of the affordance.
- Action statistics: 1%/99% quantiles of the arm configurations of the training data
  (states and targets), which stay inside the Piper joint limits read from the URDF.
- Instructions: the six task instructions of `config/tasks.yaml`. The paper embeds them
  with T5-XXL, which cannot run here: each word gets a deterministic pseudo-embedding
  seeded by its SHA-256 (plus a small position code), L=16 words, E=32. They carry no
  language meaning beyond word identity (enough to tell the six tasks apart).

`SyntheticWorld` (coloured shapes, numpy only) is no longer training data: tests and
benchmarks use it as a cheap source of well-formed actor inputs (`random_actor_observation`).

torch is optional (`pip install .[export]`) and imported only by `main` (training and
export live in `reference_training` / `reference_models`); everything else here is numpy
and is reused by tests and benchmarks. The training is deterministic (fixed seeds,
`torch.use_deterministic_algorithms`, fixed thread count, MuJoCo rendering): on the same
machine with the same library versions every file reproduces byte for byte.
`generation.json` records the versions, losses, timings, quality metrics and the SHA-256 of
every file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# ----------------------------------------------------------------------------- layout
IMAGE_HEIGHT, IMAGE_WIDTH = 96, 128
KEYPOINTS = 3
CHAIN_LENGTH = 1
HISTORY = 1
ACTION_DIM = 7
CHUNK_LENGTH = 25
CONTROL_RATE_HZ = 25.0
INSTRUCTION_TOKENS, INSTRUCTION_DIM = 16, 32
CONTEXT_TOKENS = 23 + KEYPOINTS  # see reference_models.ActorEncoder
CONTEXT_DIM = 64
DECODER_LAYERS, DECODER_HEADS = 2, 4
FAST_SCALE, FAST_VOCAB = 10, 300
MAX_TOKENS = 32             # generation steps allowed per chunk, EOS included
MAX_POSITIONS = 64          # decoder position table (BOS + MAX_TOKENS fits)
MAX_EXPERT_TOKENS = 128
DIFFUSION_TRAIN_STEPS = 100
DIFFUSION_INFERENCE_TIMESTEPS = (99, 74, 49, 24)  # DDIM "trailing" spacing, K = 4
DENOISER_DCT_ROWS = 2       # the denoiser's clean-chunk estimate lives in these DCT rows
MAX_STEP_NORMALISED = 0.3   # largest per-chunk joint motion of the actor's chunks
MIN_STEP_NORMALISED = 0.04  # smallest (keeps the first DCT coefficient non-zero at scale 10)
FAST_FIT_RANGE = 1.25       # normalised values every FAST-encodable chunk stays within (coefficients stay ASCII)
ACHIEVED_THRESHOLD = 0.1    # SyntheticWorld's achieved rule: max |state - target| (normalised)
ACHIEVED_KEYPOINT_DISTANCE = 0.03  # validator label: mean keypoint distance (image fractions, ~8 px at 320x240)
CAMERA_WIDTH, CAMERA_HEIGHT = 320, 240  # the dry run's simulator camera size (sim_node default)
TYPICAL_TOKENS = 16         # TensorRT "opt" length of token inputs (sequences are ~12-16 ids)
MASK_BATCH = 3              # the camera/mask node runs its three cameras as one batch
OPSET = 17
DEFAULT_SEED = 1234
DEFAULT_MIN_DECODE_RATE = 0.95

IMAGE_SCALE = 255.0
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
CAMERAS = {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}

# Per-arm sampling box for the statistics, as fractions of each joint's range: the middle
# 70% for joints 1-6 (with joint1 shifted toward the arm's own side), all of the finger.
_STATS_MARGIN = 0.15
_FINGER_ENDPOINT_SHARE = 0.4  # grippers sit fully open or closed much of the time

MODEL_FILES = {
    "mask": "mask.onnx",
    "planner": "planner.onnx",
    "validator": "validator.onnx",
    "actor_encoder": "actor_encoder.onnx",
    "actor_decoder": "actor_decoder.onnx",
    "actor_decoder_kv": "actor_decoder_kv.onnx",
    "actor_decoder_expert": "actor_decoder_expert.onnx",
    "denoiser": "denoiser.onnx",
}
FAST_DIR = "fast_tokenizer"
INSTRUCTIONS_FILE = "instructions.npz"
MANIFEST_FILE = "bundle.yaml"
REPORT_FILE = "generation.json"


class BundleGenerationError(RuntimeError):
    """The generated models fail a quality check (e.g. too few decodable token sequences)."""


# ----------------------------------------------------------------------------- instructions
def pseudo_instruction_embedding(text: str, max_tokens: int = INSTRUCTION_TOKENS,
                                 dim: int = INSTRUCTION_DIM) -> np.ndarray:
    """Deterministic stand-in for a T5 instruction embedding: float32 [max_tokens, dim].

    Each lower-cased word gets a unit-variance vector drawn from a generator seeded by the
    word's SHA-256, plus a small sinusoidal position code; rows past the last word are zero
    (the models treat all-zero rows as padding). Texts longer than `max_tokens` words are
    truncated. Only word identity and order are encoded, no meaning.

    Parameters
    ----------
    text : str
        Instruction text.
    max_tokens, dim : int
        L and E of the bundle's instruction contract.

    Returns
    -------
    np.ndarray
        float32 array of shape (max_tokens, dim).
    """
    words = re.findall(r"[a-z0-9]+", text.lower())
    if not words:
        raise ValueError(f"instruction {text!r} has no words to embed")
    embedding = np.zeros((max_tokens, dim), dtype=np.float32)
    frequencies = 1.0 / (100.0 ** (np.arange(dim // 2) / max(dim // 2, 1)))
    for position, word in enumerate(words[:max_tokens]):
        seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(dim)
        code = np.concatenate([np.sin(position * frequencies), np.cos(position * frequencies)])
        embedding[position] = vector + 0.1 * code[:dim]
    return embedding


def default_tasks_file() -> str:
    """`config/tasks.yaml` of this source tree when present, else the installed one."""
    source = Path(__file__).resolve().parents[2] / "config" / "tasks.yaml"
    if source.is_file():
        return str(source)
    from sim2real_vla_ros.core.task.tasks import default_tasks_path

    return default_tasks_path()


def task_instructions_and_objects(tasks_file: str) -> tuple[list[str], list[str]]:
    """Instructions (file order) and object kinds (first-appearance order) of tasks.yaml."""
    from sim2real_vla_ros.core.task.tasks import load_tasks

    tasks = load_tasks(tasks_file)
    instructions = [task.instruction for task in tasks.values()]
    kinds: list[str] = []
    for task in tasks.values():
        for obj in task.objects:
            if obj.kind not in kinds:
                kinds.append(obj.kind)
    return instructions, kinds


# ----------------------------------------------------------------------------- synthetic world
def _palette(count: int) -> np.ndarray:
    """Saturated, evenly spaced hues (uint8 RGB) for `count` object classes."""
    colours = []
    for index in range(count):
        hue = index / count
        value = 0.95 if index % 2 == 0 else 0.7
        sector, fraction = int(hue * 6) % 6, hue * 6 - int(hue * 6)
        p, q, t = 0.1 * value, value * (1 - 0.9 * fraction), value * (1 - 0.9 * (1 - fraction))
        rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
        colours.append([int(round(c * 255)) for c in rgb])
    return np.array(colours, dtype=np.uint8)


#: Half-cosine ease-in/ease-out, 0 -> 1 over a chunk: exactly the first DCT-II basis vector
#: plus a constant, so a chunk has only two non-zero DCT rows and every FAST text shares one
#: layout (7 DC codes, 7 first-frequency codes, then a run of zeros). That regular layout is
#: what lets a tiny decoder learn decodable sequences in a minute.
CHUNK_PROFILE = 0.5 * (1 - np.cos(np.pi * (np.arange(CHUNK_LENGTH) + 0.5) / CHUNK_LENGTH))


def half_cosine_chunk(state: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Normalised (T, 7) chunk from ``state`` toward ``target`` (both normalised 7-vectors).

    Each joint moves by the remaining distance clipped to +-MAX_STEP_NORMALISED, and by at
    least MIN_STEP_NORMALISED (in the target's direction): a smaller step would round its
    first DCT coefficient to zero and change the token layout (see `CHUNK_PROFILE`).
    """
    state = np.asarray(state, dtype=float)
    step = np.clip(np.asarray(target, dtype=float) - state, -MAX_STEP_NORMALISED, MAX_STEP_NORMALISED)
    step = np.where(step < 0, -1.0, 1.0) * np.maximum(np.abs(step), MIN_STEP_NORMALISED)
    return state[None, :] + step[None, :] * CHUNK_PROFILE[:, None]


@dataclass
class Scene:
    """One rendered synthetic image with per-pixel labels and its object boxes (normalised)."""

    image: np.ndarray   # uint8 [H, W, 3]
    labels: np.ndarray  # uint8 [H, W]
    objects: list       # [(class_index, cx, cy, w, h)], cx/cy/w/h in [0, 1]


class SyntheticWorld:
    """Seeded generator of synthetic images, affordances and joint chunks (test inputs).

    Not training data any more (the bundle is trained on simulator renders, see
    `sim_data_engine`): tests and benchmarks use it for cheap, well-formed actor inputs.

    Parameters
    ----------
    mask_classes : list of str
        Class names; index 0 is background, "robot" (if present) is the dark gripper.
    seed : int
        Seeds the fixed target map `g` (not the samples: pass an rng to each sampler).
    """

    def __init__(self, mask_classes: Sequence[str], seed: int):
        self.mask_classes = list(mask_classes)
        self.object_classes = [i for i, name in enumerate(self.mask_classes) if i > 0 and name != "robot"]
        self.robot_class = self.mask_classes.index("robot") if "robot" in self.mask_classes else None
        palette = _palette(len(self.mask_classes) - 1)
        self.colours = np.concatenate([np.zeros((1, 3), np.uint8), palette])
        if self.robot_class is not None:
            self.colours[self.robot_class] = (35, 35, 40)
        rng = np.random.default_rng(seed)
        self.target_weights = rng.normal(0.0, 0.8, size=(ACTION_DIM, 2 * KEYPOINTS))
        self.target_bias = rng.normal(0.0, 0.2, size=ACTION_DIM)
        ys, xs = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH]
        self._grid_x = (xs + 0.5) / IMAGE_WIDTH
        self._grid_y = (ys + 0.5) / IMAGE_HEIGHT
        self.profile = CHUNK_PROFILE

    # -- images
    def render(self, rng: np.random.Generator, objects: int, size_scale: float = 1.0,
               robot: bool = False) -> Scene:
        """Render a scene with `objects` random objects (and optionally the gripper)."""
        base = rng.uniform(90, 200) * np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 0.95)])
        gradient = 1.0 + rng.uniform(-0.15, 0.15) * (self._grid_y - 0.5)
        image = base[None, None, :] * gradient[..., None] + rng.normal(0, 4, size=(IMAGE_HEIGHT, IMAGE_WIDTH, 3))
        labels = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
        boxes = []
        for _ in range(objects):
            klass = int(rng.choice(self.object_classes))
            w, h = rng.uniform(0.08, 0.22, size=2) * size_scale
            cx, cy = rng.uniform(w / 2 + 0.02, 1 - w / 2 - 0.02), rng.uniform(h / 2 + 0.15, 1 - h / 2 - 0.02)
            self._paint(rng, image, labels, klass, cx, cy, w, h, ellipse=bool(rng.integers(2)))
            boxes.append((klass, cx, cy, w, h))
        if robot and self.robot_class is not None:
            cx = rng.uniform(0.2, 0.8)
            self._paint(rng, image, labels, self.robot_class, cx, 0.93, rng.uniform(0.1, 0.25), 0.16, ellipse=False)
        return Scene(np.clip(image, 0, 255).astype(np.uint8), labels, boxes)

    def _paint(self, rng, image, labels, klass, cx, cy, w, h, ellipse: bool) -> None:
        dx, dy = (self._grid_x - cx) / (w / 2), (self._grid_y - cy) / (h / 2)
        inside = (dx**2 + dy**2 <= 1.0) if ellipse else ((np.abs(dx) <= 1) & (np.abs(dy) <= 1))
        colour = self.colours[klass].astype(float) + rng.normal(0, 8, size=3)
        shade = 1.0 - 0.15 * np.clip(dy, -1, 1)[inside, None]
        image[inside] = colour[None, :] * shade
        labels[inside] = klass

    # -- planner targets
    def planner_targets(self, scene: Scene) -> tuple[np.ndarray, np.ndarray, float]:
        """Keypoints [2,P,2], arm_active [2], done for a scene (see module docstring)."""
        keypoints = np.array([_home_keypoints(0.25), _home_keypoints(0.75)])
        active = np.zeros(2)
        if scene.objects:
            ordered = sorted(scene.objects, key=lambda box: box[1])
            picks = {0: ordered[0], 1: ordered[-1]} if len(ordered) > 1 else {int(ordered[0][1] >= 0.5): ordered[0]}
            for arm, (_, cx, cy, w, h) in picks.items():
                side = -1.0 if arm == 0 else 1.0
                keypoints[arm] = [(cx, cy), (cx, cy - h / 2), (cx + side * w / 2, cy)]
                active[arm] = 1.0
        return np.clip(keypoints, 0.0, 1.0), active, float(not scene.objects)

    # -- actor
    def joint_target(self, affordance: np.ndarray) -> np.ndarray:
        """The synthetic world's normalised joint target for affordances [..., P, 2]."""
        flat = affordance.reshape(*affordance.shape[:-2], 2 * KEYPOINTS) * 2 - 1
        return 0.8 * np.tanh(flat @ self.target_weights.T + self.target_bias)

    def chunk(self, state: np.ndarray, affordance: np.ndarray) -> np.ndarray:
        """Normalised (T, 7) `half_cosine_chunk` from `state` toward `joint_target(affordance)`."""
        return half_cosine_chunk(state, self.joint_target(affordance))

    def sample_actor_inputs(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Random affordances [N,P,2] in [0.05, 0.95] and normalised states [N,7]."""
        affordance = rng.uniform(0.05, 0.95, size=(count, KEYPOINTS, 2))
        state = rng.uniform(-0.85, 0.85, size=(count, ACTION_DIM))
        return affordance, state


def random_actor_observation(world: SyntheticWorld, rng: np.random.Generator, normalizer, instruction: str):
    """A synthetic actor observation in robot units and the chunk the synthetic world expects.

    Masked images (background exactly black, as the camera/mask node publishes), an
    affordance in [0.05, 0.95], a joint state whose normalised value is in [-0.85, 0.85].
    Used by tests and benchmarks to exercise the reference bundle (numpy only).

    Returns
    -------
    (ActorObservation, np.ndarray)
        The observation and the target (T, 7) chunk in robot units.
    """
    from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation
    from sim2real_vla_ros.core.policy.observation import apply_mask

    top = world.render(rng, int(rng.integers(1, 4)), robot=bool(rng.random() < 0.5))
    wrist = world.render(rng, int(rng.integers(0, 3)), size_scale=2.2, robot=True)
    affordance, state = world.sample_actor_inputs(rng, 1)
    observation = ActorObservation(
        wrist_rgb=apply_mask(wrist.image, wrist.labels), top_rgb=apply_mask(top.image, top.labels),
        affordance=affordance[0], joint_state=normalizer.unnormalize(state[0]), instruction=instruction)
    return observation, normalizer.unnormalize(world.chunk(state[0], affordance[0]))


# ----------------------------------------------------------------------------- model inputs
def image_section() -> dict:
    """The manifest's ``image`` section (preprocessing shared by every image input)."""
    return {"height": IMAGE_HEIGHT, "width": IMAGE_WIDTH, "channel_order": "rgb", "layout": "nchw",
            "scale": IMAGE_SCALE, "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)}


def image_preprocessor():
    """The deployment preprocessor of `image_section` (the one `load_bundle` builds from the manifest)."""
    from sim2real_vla_ros.core.policy.bundle import ImagePreprocessor

    section = image_section()
    return ImagePreprocessor(section["height"], section["width"], section["channel_order"], section["scale"],
                             tuple(section["mean"]), tuple(section["std"]))


def model_input_images(preprocessor, images: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Model inputs of rendered images, built exactly as the running graph builds them.

    Without `labels`: what the camera/mask node feeds the mask model (the bundle
    preprocessor applied to the camera image). With `labels`: the camera/mask node's masked
    image (`observation.apply_mask`: background exactly black, black object pixels lifted)
    turned into a model input by `observation.masked_model_input`, as the planner,
    validator and actor nodes (and `ActorPipeline` with ``images_masked=True``) do. Training
    uses this function for every image input, so train and deploy see the same bits.

    Parameters
    ----------
    preprocessor : callable
        `image_preprocessor()` (or a loaded bundle's ``image_preprocessor``).
    images : np.ndarray
        uint8 [N, H, W, 3] RGB images.
    labels : np.ndarray, optional
        uint8 [N, H, W] class ids (0 = background).

    Returns
    -------
    np.ndarray
        float32 [N, 3, height, width].
    """
    from sim2real_vla_ros.core.policy.observation import apply_mask, masked_model_input

    if labels is None:
        tensors = [preprocessor(image) for image in images]
    else:
        if len(labels) != len(images):
            raise ValueError(f"model_input_images: {len(images)} images but {len(labels)} label maps")
        tensors = [masked_model_input(preprocessor, apply_mask(image, label)) for image, label in zip(images, labels)]
    return np.concatenate(tensors, axis=0)


def _home_keypoints(x: float) -> list:
    """Where an idle arm's keypoints sit in the synthetic world (bottom of the image)."""
    return [(x, 0.85), (x, 0.8), (x + 0.03, 0.85)]


# ----------------------------------------------------------------------------- statistics
def synthetic_trajectories(limits, rng: np.random.Generator, side: str, segments: int = 400) -> np.ndarray:
    """Smooth random joint trajectories (robot units, 25 Hz) inside an arm's limits.

    Waypoints are drawn from the middle of each joint range (joint1 shifted toward the
    arm's own side), connected by minimum-jerk segments of 1-3 s; the finger is fully open
    or closed at `_FINGER_ENDPOINT_SHARE` of the waypoints.
    """
    lower, upper = np.asarray(limits.lower, float), np.asarray(limits.upper, float)
    span = upper - lower
    low, high = lower + _STATS_MARGIN * span, upper - _STATS_MARGIN * span
    shift = (-1 if side == "left" else 1) * 0.1 * span[0]
    low[0], high[0] = low[0] + shift, high[0] + shift
    low[6], high[6] = lower[6], upper[6]
    points = [rng.uniform(low, high)]
    pieces = []
    for _ in range(segments):
        target = rng.uniform(low, high)
        if rng.random() < _FINGER_ENDPOINT_SHARE:
            target[6] = lower[6] if rng.random() < 0.5 else upper[6]
        steps = int(rng.integers(25, 76))
        s = np.arange(1, steps + 1) / steps
        profile = 10 * s**3 - 15 * s**4 + 6 * s**5
        pieces.append(points[-1][None, :] + (target - points[-1])[None, :] * profile[:, None])
        points.append(target)
    return np.concatenate(pieces)


def quantile_stats(trajectory: np.ndarray) -> dict:
    """q01 / q99 per joint (rounded to 6 decimals, the precision written to the manifest)."""
    return {
        "q01": [round(float(v), 6) for v in np.quantile(trajectory, 0.01, axis=0)],
        "q99": [round(float(v), 6) for v in np.quantile(trajectory, 0.99, axis=0)],
    }


def fast_fitting_chunks(actor_chunks: Sequence[np.ndarray], normalised_trajectories: Sequence[np.ndarray],
                        rng: np.random.Generator) -> list:
    """Chunks the FAST tokenizer is fitted on (normalised units).

    The actor's own chunks, windows of smooth random trajectories, and constant chunks at
    +-FAST_FIT_RANGE, so any chunk inside that range encodes (held-out and dry-run states can
    lie a little outside the 1%..99% quantiles that map to [-1, 1]).
    """
    chunks = list(actor_chunks)
    for trajectory in normalised_trajectories:
        starts = rng.integers(0, trajectory.shape[0] - CHUNK_LENGTH, size=500)
        chunks.extend(np.clip(trajectory[i:i + CHUNK_LENGTH], -1.0, 1.0) for i in starts)
    chunks.extend(np.full((CHUNK_LENGTH, ACTION_DIM), value) for value in (-FAST_FIT_RANGE, FAST_FIT_RANGE))
    return chunks


def diffusion_alphas_cumprod(steps: int = DIFFUSION_TRAIN_STEPS) -> np.ndarray:
    """Cosine noise schedule (Nichol & Dhariwal 2021): cumulative alpha per training step."""
    s = 0.008
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)
    return np.cumprod(1 - betas)


# ----------------------------------------------------------------------------- manifest
def _tensor(dtype: str, *shape) -> dict:
    return {"dtype": dtype, "shape": list(shape)}


def model_contracts(num_classes: int, vocab: int) -> dict:
    """Contract (inputs/outputs) of every role, with the bundle's sizes filled in."""
    image = _tensor("float32", "batch", 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    context = _tensor("float32", "batch", CONTEXT_TOKENS, CONTEXT_DIM)
    tokens = _tensor("int64", "batch", "tokens")
    logits = _tensor("float32", "batch", vocab + 2)
    cache = _tensor("float32", DECODER_LAYERS, "batch", DECODER_HEADS, "past", CONTEXT_DIM // DECODER_HEADS)
    present = _tensor("float32", DECODER_LAYERS, "batch", DECODER_HEADS, "present", CONTEXT_DIM // DECODER_HEADS)
    keypoints = _tensor("float32", "batch", KEYPOINTS, 2)
    state = _tensor("float32", "batch", ACTION_DIM)
    instruction = _tensor("float32", "batch", INSTRUCTION_TOKENS, INSTRUCTION_DIM)
    return {
        "mask": {
            "inputs": {"image": image},
            "outputs": {"mask_logits": _tensor("float32", "batch", num_classes, IMAGE_HEIGHT, IMAGE_WIDTH)},
        },
        "planner": {
            "inputs": {
                "top_image": image,
                "instruction": instruction,
                "prev_affordance": _tensor("float32", "batch", CHAIN_LENGTH, 2, KEYPOINTS, 2),
                "prev_valid": _tensor("float32", "batch", CHAIN_LENGTH),
            },
            "outputs": {
                "keypoints": _tensor("float32", "batch", 2, KEYPOINTS, 2),
                "arm_active": _tensor("float32", "batch", 2),
                "done": _tensor("float32", "batch"),
            },
        },
        "validator": {
            "inputs": {"top_image": image, "wrist_image": image, "affordance": keypoints, "joint_state": state},
            "outputs": {"achieved": _tensor("float32", "batch")},
        },
        "actor_encoder": {
            "inputs": {"wrist_image": image, "top_image": image, "affordance": keypoints,
                       "joint_state": state, "instruction": instruction},
            "outputs": {"context": context},
        },
        "actor_decoder": {
            "inputs": {"context": context, "tokens": tokens},
            "outputs": {"logits": logits},
        },
        "actor_decoder_kv": {
            "inputs": {"context": context, "tokens": tokens, "past_key": cache, "past_value": cache},
            "outputs": {"logits": logits, "present_key": present, "present_value": present},
        },
        "actor_decoder_expert": {
            "inputs": {"context": context, "tokens": tokens, "expert_tokens": _tensor("int64", "batch", "expert")},
            "outputs": {"logits": logits},
        },
        "denoiser": {
            "inputs": {"noisy_actions": _tensor("float32", "batch", CHUNK_LENGTH, ACTION_DIM),
                       "timestep": _tensor("float32", "batch"), "context": context},
            "outputs": {"eps": _tensor("float32", "batch", CHUNK_LENGTH, ACTION_DIM)},
        },
    }


def dynamic_axis_ranges(role: str) -> dict:
    """``dynamic_axes`` ([min, opt, max] per named input axis) of a role: TensorRT profiles.

    The ranges are what the stack feeds: the camera/mask node batches 1 to 3 cameras
    (usually 3); every other model gets batch 1. An autoregressive decoder without a cache
    gets ``[BOS] + ids so far``, 1 to MAX_TOKENS tokens; the cache decoder gets one new token
    and a cache of 0 (first step) to MAX_TOKENS - 1 entries; ``expert_tokens`` holds up to
    MAX_EXPERT_TOKENS ids. ``present`` is an output axis and needs no range.
    """
    axes = {"batch": [1, MASK_BATCH, MASK_BATCH] if role == "mask" else [1, 1, 1]}
    if role in ("actor_decoder", "actor_decoder_expert"):
        axes["tokens"] = [1, TYPICAL_TOKENS, MAX_TOKENS]
    if role == "actor_decoder_kv":
        axes["tokens"] = [1, 1, 1]
        axes["past"] = [0, TYPICAL_TOKENS - 1, MAX_TOKENS - 1]
    if role == "actor_decoder_expert":
        axes["expert"] = [1, TYPICAL_TOKENS, MAX_EXPERT_TOKENS]
    return axes


def build_manifest(mask_classes: Sequence[str], normalization: dict, vocab: int, alphas: np.ndarray) -> dict:
    """The bundle.yaml content (plain Python, deterministic)."""
    contracts = model_contracts(len(mask_classes), vocab)
    token_options = {"vocab_size": vocab + 2, "bos_id": vocab, "eos_id": vocab + 1, "max_tokens": MAX_TOKENS}
    models = {}
    for role, file in MODEL_FILES.items():
        entry = {"file": file, **contracts[role], "dynamic_axes": dynamic_axis_ranges(role)}
        if role.startswith("actor_decoder"):
            entry.update({"mode": "autoregressive", **token_options})
            if role == "actor_decoder_expert":
                entry["max_expert_tokens"] = MAX_EXPERT_TOKENS
        if role == "denoiser":
            entry.update({
                "steps": len(DIFFUSION_INFERENCE_TIMESTEPS),
                "schedule": {
                    "kind": "ddim",
                    "prediction": "epsilon",
                    "train_steps": DIFFUSION_TRAIN_STEPS,
                    "timesteps": list(DIFFUSION_INFERENCE_TIMESTEPS),
                    "alphas_cumprod": [float(f"{alphas[t]:.9g}") for t in DIFFUSION_INFERENCE_TIMESTEPS],
                    "final_alpha_cumprod": 1.0,
                    "clip_sample": 1.0,
                },
                "noise_seed": 0,
            })
        models[role] = entry
    actor = {"encoder": "actor_encoder", "decoder": "actor_decoder", "denoiser": None}
    return {
        "format_version": 1,
        "name": "reference",
        "description": ("Tiny models trained briefly on MuJoCo simulator renders by "
                        "training.make_reference_bundle; well-formed outputs, NOT task-competent."),
        "image": image_section(),
        "cameras": dict(CAMERAS),
        "mask_classes": list(mask_classes),
        "keypoints_per_arm": KEYPOINTS,
        "chain_length": CHAIN_LENGTH,
        "history": HISTORY,
        "action": {
            "dim": ACTION_DIM,
            "chunk_length": CHUNK_LENGTH,
            "control_rate_hz": CONTROL_RATE_HZ,
            "normalization": {"kind": "quantile", **normalization},
        },
        "fast": {"tokenizer_dir": FAST_DIR},
        "instructions": {
            "embeddings": INSTRUCTIONS_FILE,
            "max_tokens": INSTRUCTION_TOKENS,
            "dim": INSTRUCTION_DIM,
            "text_encoder": None,
        },
        "models": models,
        "actors": {"left": dict(actor), "right": dict(actor)},
    }


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_file_hashes(folder: Path) -> dict:
    """SHA-256 of every generated file in a bundle folder (README and report excluded)."""
    names = [MANIFEST_FILE, INSTRUCTIONS_FILE, *MODEL_FILES.values()]
    names += [f"{FAST_DIR}/{name}" for name in sorted(os.listdir(folder / FAST_DIR))]
    return {name: sha256_file(folder / name) for name in names}


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/reference", help="bundle folder to write (created if needed)")
    parser.add_argument("--tasks", default=None, help="tasks.yaml with the instructions (default: config/tasks.yaml)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for reproducibility)")
    parser.add_argument("--min-decode-rate", type=float, default=DEFAULT_MIN_DECODE_RATE,
                        help="fail when greedy actor outputs FAST-decode less often than this")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `make_reference_bundle`; returns the process exit code."""
    args = parse_args(argv)
    try:
        import torch  # noqa: F401  (optional dependency, checked before any work)
    except ImportError:
        print("make_reference_bundle needs torch (an optional dependency): "
              "pip install torch==2.13.0 (or `pip install .[export]`)", file=sys.stderr)
        return 2
    from training import reference_training

    try:
        report = reference_training.generate(
            Path(args.out), tasks_file=args.tasks or default_tasks_file(), seed=args.seed,
            threads=args.threads, min_decode_rate=args.min_decode_rate)
    except BundleGenerationError as exc:
        print(f"make_reference_bundle: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report["metrics"], indent=2))
    return 0


def environment_versions() -> dict:
    """Library versions that determine the generated bytes."""
    import cv2
    import mujoco
    import onnx
    import tokenizers
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__, "tokenizers": tokenizers.__version__, "mujoco": mujoco.__version__,
            "opencv": cv2.__version__}


__all__ = [
    "BundleGenerationError", "CHUNK_PROFILE", "SyntheticWorld", "build_manifest", "half_cosine_chunk",
    "bundle_file_hashes", "default_tasks_file", "random_actor_observation", "diffusion_alphas_cumprod",
    "dynamic_axis_ranges", "image_preprocessor", "image_section", "main", "model_contracts", "model_input_images",
    "pseudo_instruction_embedding", "quantile_stats", "synthetic_trajectories", "task_instructions_and_objects",
]

if __name__ == "__main__":
    sys.exit(main())
