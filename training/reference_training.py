"""Training, ONNX export and quality checks of the reference bundle (needs torch).

Called by `make_reference_bundle.main`; see that module for the bundle layout and
`sim_data_engine` for the simulator data every model is trained on. Everything is seeded;
each model trains for a fixed number of steps.
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

from sim2real_vla_ros.core.policy.fast import FastTokenizer
from sim2real_vla_ros.core.policy.normalization import ActionNormalizer
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.core.task.tasks import load_tasks
from training import make_reference_bundle as spec
from training import reference_models as rm
from training import sim_data_engine as engine_module
from training.make_reference_bundle import BundleGenerationError

# Training budget (steps) per model; the whole run (rendering included) takes about 2.5 minutes on
# 2 idle CPU cores, 3 when the cores are shared.
STEPS = {"mask": 500, "planner": 1200, "validator": 3000, "actor": 1600, "denoiser": 3000}
# Cross-entropy weight of every object class against background (objects cover ~2.5% of the
# pixels; unweighted, the small mask CNN learns to call nearly everything background).
MASK_OBJECT_WEIGHT = 10.0
VALIDATOR_HIDDEN = 256
SCENES_PER_TASK = 100           # rendered simulator scenes per task (three cameras each)
HELD_OUT_SCENES_PER_TASK = 10   # of those, kept out of training for the quality metrics
SCENE_SEED_OFFSET = 100_000     # scene seeds far from the tasks' own (42..): the dry run's scenes stay unseen
ACTOR_TRAIN_SAMPLES = 12000
HELD_OUT_SAMPLES = 200
VALIDATOR_TRAIN_SAMPLES = 12000
VALIDATOR_HELD_OUT_SAMPLES = 1000
EXPERT_CHECK_SAMPLES = 60
MIN_EXPERT_DECODE_RATE = 0.9
PREVIOUS_AFFORDANCE_NOISE = 0.015  # image fractions: the planner's own keypoints come back as prev_affordance
# The dry run's start scenes: each task's seed and the next ones, arms at the jittered initial pose.
DEPLOYMENT_CHECK_SEEDS = 5
MIN_DEPLOYMENT_ACCURACY = 0.9   # start scenes whose arm_active set and done (< 0.5) are both right
# Validator targets q* (see `target_configurations`), as shares of the samples.
VALIDATOR_TARGET_MIX = {"key": 0.25, "near": 0.45, "local": 0.3}
# Actor targets (see `actor_target_configurations`): share aimed at the scene's key poses.
ACTOR_KEY_SHARE = 0.5
ACTOR_KEY_NOISE_M = 0.02     # uniform +- offset of a key-pose TCP target
ACTOR_LOCAL_REACH_M = 0.12   # uniform +- offset of a TCP target around the current TCP


def _log(message: str) -> None:
    print(f"[make_reference_bundle] {message}", flush=True)


# ----------------------------------------------------------------------------- data
class SimPools:
    """Simulator renders (`sim_data_engine.SimSample`) as arrays shared by every model's data.

    Model inputs are built by the deployment code (`spec.model_input_images`): the mask model
    gets `plain_inputs` of the raw images (computed per batch), the planner, validator and
    actor the masked inputs ``top_masked`` [N, 3, H, W] and ``wrist_masked`` [N, 2, 3, H, W]
    (arm order left, right), i.e. what their nodes feed them.

    Parameters
    ----------
    samples : list of SimSample
        Rendered with all three cameras.
    instructions : sequence of str
        Instruction texts; ``instruction_index`` points into it.
    """

    def __init__(self, samples: Sequence, instructions: Sequence[str]):
        self.preprocessor = spec.image_preprocessor()
        wrists = [spec.CAMERAS["left_wrist"], spec.CAMERAS["right_wrist"]]
        self.tasks = [s.task for s in samples]
        self.instruction_index = np.array([list(instructions).index(s.instruction) for s in samples])
        self.top_raw = np.stack([s.images[spec.CAMERAS["top"]] for s in samples])
        self.top_labels = np.stack([s.labels[spec.CAMERAS["top"]] for s in samples])
        self.wrist_raw = np.stack([[s.images[c] for c in wrists] for s in samples])
        self.wrist_labels = np.stack([[s.labels[c] for c in wrists] for s in samples])
        self.top_masked = spec.model_input_images(self.preprocessor, self.top_raw, self.top_labels)
        flat = spec.model_input_images(self.preprocessor, self.wrist_raw.reshape(-1, *self.wrist_raw.shape[2:]),
                                       self.wrist_labels.reshape(-1, *self.wrist_labels.shape[2:]))
        self.wrist_masked = flat.reshape(len(samples), 2, *flat.shape[1:])
        for name in ("joints", "active", "pre_grasp_joints", "grasp_joints", "pre_grasp_keypoints",
                     "grasp_keypoints", "ik_residual_m"):
            setattr(self, name, np.stack([getattr(s, name) for s in samples]))

    def __len__(self) -> int:
        return len(self.tasks)

    def plain_inputs(self, images: np.ndarray) -> np.ndarray:
        """Mask-model inputs of raw images [N, H, W, 3] (what the camera/mask node feeds it)."""
        return spec.model_input_images(self.preprocessor, images)

    def camera_images(self, rows: np.ndarray, cameras: np.ndarray) -> tuple:
        """(raw images, labels) of scene ``rows`` and camera ``cameras`` (0 top, 1 left wrist, 2 right wrist)."""
        images = np.where((cameras == 0)[:, None, None, None], self.top_raw[rows],
                          self.wrist_raw[rows, np.clip(cameras - 1, 0, 1)])
        labels = np.where((cameras == 0)[:, None, None], self.top_labels[rows],
                          self.wrist_labels[rows, np.clip(cameras - 1, 0, 1)])
        return images, labels


def split_rows(pools: SimPools) -> tuple:
    """(training rows, held-out rows): the last HELD_OUT_SCENES_PER_TASK scenes of every task are held out."""
    held = []
    for task in dict.fromkeys(pools.tasks):
        rows = [i for i, name in enumerate(pools.tasks) if name == task]
        held += rows[-HELD_OUT_SCENES_PER_TASK:]
    held = np.array(sorted(held))
    return np.setdiff1d(np.arange(len(pools)), held), held


def target_configurations(kinematics, pools: SimPools, rows: np.ndarray, arms: np.ndarray, kinds: Sequence[str],
                          rng: np.random.Generator) -> np.ndarray:
    """Target joint configurations q* [N, 7] (robot units) for scene ``rows`` and arm indices ``arms``.

    ``key``: the arm's pre-grasp (70%) or grasp IK configuration of the scene, joints moved by
    up to 0.1 of the sampling noise, its gripper as in the key pose; ``near``: the current configuration moved
    by up to 0.03 of the noise (finger +-2 mm); ``local``: the current configuration moved by
    up to 0.6 of the noise, random finger. All inside the sampling bounds.
    """
    count = len(rows)
    state = pools.joints[rows, arms]
    target = np.empty((count, 7))
    for row, kind in enumerate(kinds):
        side = engine_module.ARMS[arms[row]]
        lower, upper = kinematics.sampling_bounds(side)
        if kind == "key":  # with the key pose's gripper (open for pre-grasp, closed for grasp)
            key = pools.pre_grasp_joints if rng.random() < 0.7 else pools.grasp_joints
            q = key[rows[row], arms[row]] + engine_module.configuration_offsets(rng, 1, 0.1)[0]
        elif kind == "near":
            q = state[row] + engine_module.configuration_offsets(rng, 1, 0.03)[0]
            q[6] += rng.uniform(-0.002, 0.002)
        else:
            q = state[row] + engine_module.configuration_offsets(rng, 1, 0.6)[0]
            q[6] = rng.uniform(lower[6], upper[6])
        target[row] = np.clip(q, lower, upper)
    return target


def _target_kinds(rng: np.random.Generator, count: int, mix: dict) -> list:
    names = list(mix)
    return list(rng.choice(names, size=count, p=np.array([mix[n] for n in names]) / sum(mix.values())))


def actor_target_configurations(kinematics, pools: SimPools, rows: np.ndarray, arms: np.ndarray,
                                rng: np.random.Generator) -> np.ndarray:
    """Actor targets q* [N, 7]: IK from the current configuration to a TCP target.

    The TCP target is the scene's pre-grasp (70%, gripper open) or grasp (gripper closed) key
    position of the arm, moved by up to ACTOR_KEY_NOISE_M (ACTOR_KEY_SHARE of the samples),
    else the current TCP moved by up to ACTOR_LOCAL_REACH_M (gripper open). Solving from the
    current configuration (minimum-norm damped least squares) makes q* a function of the
    state and the target, and the target is visible in the affordance (TCP keypoint; depth
    from the open fingers' spread, or for a closed gripper the grasp height), so the actor
    can learn the mapping instead of averaging over configurations with the same keypoints.
    """
    targets = np.empty((len(rows), 7))
    for row, (scene, arm) in enumerate(zip(rows, arms)):
        side = engine_module.ARMS[arm]
        state = pools.joints[scene, arm]
        upper = kinematics.sampling_bounds(side)[1]
        finger = upper[6]
        if rng.random() < ACTOR_KEY_SHARE:
            key = (pools.pre_grasp_joints if rng.random() < 0.7 else pools.grasp_joints)[scene, arm]
            tcp = kinematics.tcp_position(side, key) + rng.uniform(-ACTOR_KEY_NOISE_M, ACTOR_KEY_NOISE_M, 3)
            finger = key[6]
        else:
            tcp = kinematics.tcp_position(side, state) + rng.uniform(-ACTOR_LOCAL_REACH_M, ACTOR_LOCAL_REACH_M, 3)
        targets[row] = kinematics.solve_tcp(side, tcp, state)
        targets[row, 6] = finger
    return targets


class PairData:
    """(scene, arm, current configuration, target configuration, affordance) samples.

    Shared by the actor and the validator data: the affordance is the target's gripper
    keypoints in ``cam_high`` (`TaskScene.gripper_keypoints`). ``mix`` None: actor targets
    (`actor_target_configurations`), else validator targets (`target_configurations`).
    """

    def __init__(self, kinematics, pools: SimPools, rows: np.ndarray, count: int, mix: dict | None,
                 rng: np.random.Generator):
        self.pools = pools
        self.scene_index = rows[rng.integers(0, len(rows), size=count)]
        self.arm_index = rng.integers(0, 2, size=count)
        self.state_raw = pools.joints[self.scene_index, self.arm_index]
        if mix is None:
            self.target_raw = actor_target_configurations(kinematics, pools, self.scene_index, self.arm_index, rng)
        else:
            self.target_raw = target_configurations(kinematics, pools, self.scene_index, self.arm_index,
                                                    _target_kinds(rng, count, mix), rng)
        sides = [engine_module.ARMS[a] for a in self.arm_index]
        self.affordance = np.stack([kinematics.gripper_keypoints(side, q) for side, q in zip(sides, self.target_raw)])
        self.current_keypoints = np.stack([kinematics.gripper_keypoints(side, q)
                                           for side, q in zip(sides, self.state_raw)])
        self.instruction_index = pools.instruction_index[self.scene_index]

    def normalised(self, normalizers: dict, raw: np.ndarray) -> np.ndarray:
        return np.stack([normalizers[engine_module.ARMS[a]].normalize(q) for a, q in zip(self.arm_index, raw)])


class ActorData:
    """Actor samples: inputs, half-cosine chunks, FAST token targets and perturbed expert tokens."""

    def __init__(self, pairs: PairData, normalizers: dict, instructions: np.ndarray, rng: np.random.Generator):
        self.pairs = pairs
        self.pools = pairs.pools
        self.instructions = instructions
        self.scene_index, self.arm_index = pairs.scene_index, pairs.arm_index
        self.instruction_index = pairs.instruction_index
        self.affordance = pairs.affordance
        # Clipped to the range the FAST tokenizer is fitted on (only configurations far outside
        # the training quantiles are affected).
        limit = spec.FAST_FIT_RANGE
        self.state = np.clip(pairs.normalised(normalizers, pairs.state_raw), -limit, limit)
        self.target = np.clip(pairs.normalised(normalizers, pairs.target_raw), -limit, limit)
        self.chunks = np.stack([spec.half_cosine_chunk(s, t) for s, t in zip(self.state, self.target)])
        self.tokens: list = []
        self.expert: list = []
        self._rng = rng

    def tokenize(self, fast: FastTokenizer) -> None:
        """FAST ids of every chunk, and of a smooth imperfect proposal of it (expert tokens)."""
        self.tokens = [fast.encode(c) for c in self.chunks]
        self.expert = [fast.encode(_perturbed_chunk(c, self._rng, spec.CHUNK_PROFILE)) for c in self.chunks]

    def wrist_rows(self, index) -> np.ndarray:
        """Rows of ``pools.wrist_masked`` flattened to [N * 2, ...] (scene * 2 + arm)."""
        return self.scene_index[index] * 2 + self.arm_index[index]

    def encoder_inputs(self, index) -> list:
        arrays = [self.pools.wrist_masked[self.scene_index[index], self.arm_index[index]],
                  self.pools.top_masked[self.scene_index[index]],
                  self.affordance[index].astype(np.float32), self.state[index].astype(np.float32),
                  self.instructions[self.instruction_index[index]]]
        return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def action_statistics(pools: SimPools, rows: np.ndarray, pairs: Sequence[PairData]) -> dict:
    """Per-arm 1%/99% quantiles of every configuration of the training data (states, key poses, targets)."""
    normalization = {}
    for index, side in enumerate(engine_module.ARMS):
        configurations = [pools.joints[rows, index], pools.pre_grasp_joints[rows, index],
                          pools.grasp_joints[rows, index]]
        for data in pairs:
            mine = data.arm_index == index
            configurations += [data.state_raw[mine], data.target_raw[mine]]
        normalization[side] = spec.quantile_stats(np.concatenate(configurations))
    return normalization


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


def train_mask(pools: SimPools, rows: np.ndarray, held: np.ndarray, num_classes: int, rng: np.random.Generator):
    """Train the mask CNN on the three cameras of the training scenes (true segmentation labels)."""
    model = rm.MaskNet(num_classes)
    weight = torch.full((num_classes,), MASK_OBJECT_WEIGHT)
    weight[0] = 1.0

    def step(_):
        scenes = rows[rng.integers(0, len(rows), size=12)]
        images, labels = pools.camera_images(scenes, rng.integers(0, 3, size=12))
        return F.cross_entropy(model(torch.from_numpy(pools.plain_inputs(images))),
                               torch.from_numpy(labels.astype(np.int64)), weight=weight)

    stats = _fit(model.parameters(), STEPS["mask"], 1e-2, step)
    stats.update(mask_metrics(model, pools, held, num_classes))
    return model.eval(), stats


def mask_metrics(model, pools: SimPools, rows: np.ndarray, num_classes: int) -> dict:
    """Pixel accuracy, object-vs-background IoU and mean IoU of the object classes on all cameras of ``rows``."""
    predicted, truth = [], []
    with torch.no_grad():
        for camera in range(3):
            images, labels = pools.camera_images(rows, np.full(len(rows), camera))
            predicted.append(model(torch.from_numpy(pools.plain_inputs(images))).argmax(1).numpy())
            truth.append(labels)
    return segmentation_scores(np.concatenate(predicted), np.concatenate(truth), num_classes)


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """Pixel accuracy, foreground IoU and mean IoU over the object classes present in ``truth``."""
    ious = []
    for klass in range(1, num_classes):
        union = np.sum((predicted == klass) | (truth == klass))
        if np.any(truth == klass):
            ious.append(np.sum((predicted == klass) & (truth == klass)) / union)
    found, objects = predicted > 0, truth > 0
    return {
        "pixel_accuracy_held_out": float(np.mean(predicted == truth)),
        "foreground_iou_held_out": float(np.sum(found & objects) / max(1, np.sum(found | objects))),
        "object_class_mean_iou_held_out": float(np.mean(ious)) if ious else None,
    }


def planner_batch(pools: SimPools, rows: np.ndarray, stages: np.ndarray, instructions: np.ndarray,
                  rng: np.random.Generator | None) -> tuple:
    """Planner inputs and targets for scene ``rows`` at chain ``stages`` (see `sim_data_engine`).

    Stage 0: no previous affordance -> pre-grasp keypoints, done 0; stage 1: previous =
    pre-grasp -> grasp, done 0; stage 2: previous = grasp -> grasp, done 1. The previous
    affordance gets Gaussian noise (the planner's own imperfect keypoints come back) unless
    ``rng`` is None.
    """
    pre, grasp = pools.pre_grasp_keypoints[rows], pools.grasp_keypoints[rows]
    previous = np.where((stages == 1)[:, None, None, None], pre, grasp)
    if rng is not None:
        previous = previous + rng.normal(0, PREVIOUS_AFFORDANCE_NOISE, size=previous.shape)
    valid = (stages > 0).astype(np.float32)[:, None]
    previous = (np.clip(previous, 0, 1)[:, None] * valid[:, :, None, None, None]).astype(np.float32)
    inputs = [pools.top_masked[rows], instructions[pools.instruction_index[rows]], previous, valid]
    targets = (np.where((stages == 0)[:, None, None, None], pre, grasp).astype(np.float32),
               pools.active[rows].astype(np.float32), (stages == 2).astype(np.float32))
    return [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs], [torch.from_numpy(x) for x in targets]


def train_planner(pools: SimPools, rows: np.ndarray, held: np.ndarray, instructions: np.ndarray,
                  rng: np.random.Generator):
    model = rm.Planner(spec.KEYPOINTS, spec.CHAIN_LENGTH, spec.INSTRUCTION_DIM)

    def step(_):
        scenes = rows[rng.integers(0, len(rows), size=32)]
        inputs, (keypoints, active, done) = planner_batch(pools, scenes, rng.integers(0, 3, size=32),
                                                          instructions, rng)
        kp, arm, finished = model(*inputs)
        return (F.mse_loss(kp, keypoints) * 20 + F.binary_cross_entropy(arm, active)
                + F.binary_cross_entropy(finished, done))

    stats = _fit(model.parameters(), STEPS["planner"], 3e-3, step)
    stats.update(planner_metrics(model, pools, held, instructions))
    return model.eval(), stats


def keypoint_error_px(predicted: np.ndarray, target: np.ndarray, active: np.ndarray) -> float:
    """Mean distance (pixels of the 320x240 cam_high image) between keypoints [N, 2, P, 2] of active arms."""
    scale = np.array([spec.CAMERA_WIDTH, spec.CAMERA_HEIGHT], float)
    distance = np.linalg.norm((predicted - target) * scale, axis=-1).mean(axis=-1)  # [N, 2]
    return float(distance[active > 0.5].mean())


def planner_metrics(model, pools: SimPools, rows: np.ndarray, instructions: np.ndarray) -> dict:
    """Held-out planner quality at each chain stage (true masks; noiseless previous affordance)."""
    metrics = {}
    with torch.no_grad():
        for stage in range(3):
            inputs, (keypoints, active, done) = planner_batch(pools, rows, np.full(len(rows), stage), instructions,
                                                              None)
            kp, arm, finished = (t.numpy() for t in model(*inputs))
            metrics[f"stage{stage}"] = {
                "arm_active_accuracy": float(np.mean((arm > 0.5) == (active.numpy() > 0.5))),
                "arm_sets_correct": float(np.mean(np.all((arm > 0.5) == (active.numpy() > 0.5), axis=1))),
                "keypoint_error_px": keypoint_error_px(kp, keypoints.numpy(), active.numpy()),
                "done_accuracy": float(np.mean((finished > 0.5) == (done.numpy() > 0.5))),
            }
    return {"held_out": metrics}


class ValidatorData:
    """Validator samples: masked images, affordance, normalised state, achieved label.

    ``achieved`` = the gripper keypoints of the current configuration lie within
    ACHIEVED_KEYPOINT_DISTANCE (mean over the P keypoints, image fractions) of the affordance.
    """

    def __init__(self, pairs: PairData, normalizers: dict):
        self.pairs = pairs
        distance = np.linalg.norm(pairs.current_keypoints - pairs.affordance, axis=-1).mean(axis=-1)
        self.achieved = (distance < spec.ACHIEVED_KEYPOINT_DISTANCE).astype(np.float32)
        self.state = pairs.normalised(normalizers, pairs.state_raw).astype(np.float32)

    def batch(self, index, top_features: torch.Tensor, wrist_features: torch.Tensor) -> tuple:
        """(from_features inputs, achieved) of samples ``index``; features per scene / per scene * 2 + arm."""
        pairs = self.pairs
        inputs = [top_features[torch.from_numpy(pairs.scene_index[index])],
                  wrist_features[torch.from_numpy(pairs.scene_index[index] * 2 + pairs.arm_index[index])],
                  torch.from_numpy(pairs.affordance[index].astype(np.float32)), torch.from_numpy(self.state[index])]
        return inputs, torch.from_numpy(self.achieved[index])


def _pooled_features(function, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([function(torch.from_numpy(images[i:i + 256])) for i in range(0, len(images), 256)])


def train_validator(data: ValidatorData, held: ValidatorData, rng: np.random.Generator):
    """Train the validator's MLP; its image stem stays at its seeded random initialisation.

    ``achieved`` depends on the joint state and the affordance only (the robot is masked
    out of the images), so, as for the actor, the image features are computed once per
    pooled render; this buys the many steps the MLP needs to learn the projected kinematics.
    """
    model = rm.Validator(spec.KEYPOINTS, hidden=VALIDATOR_HIDDEN)
    model.stem.requires_grad_(False)
    pools = data.pairs.pools
    top = _pooled_features(model.features, pools.top_masked)
    wrist = _pooled_features(model.features, pools.wrist_masked.reshape(-1, *pools.wrist_masked.shape[2:]))

    def step(_):
        inputs, achieved = data.batch(rng.integers(0, len(data.achieved), size=256), top, wrist)
        return F.binary_cross_entropy(model.from_features(*inputs), achieved)

    stats = _fit([p for p in model.parameters() if p.requires_grad], STEPS["validator"], 3e-3, step)
    with torch.no_grad():
        inputs, achieved = held.batch(np.arange(len(held.achieved)), top, wrist)
        predicted = model.from_features(*inputs).numpy() > 0.5
    truth = achieved.numpy() > 0.5
    stats.update({"accuracy_held_out": float(np.mean(predicted == truth)),
                  "true_positive_rate_held_out": float(np.mean(predicted[truth])) if truth.any() else None,
                  "true_negative_rate_held_out": float(np.mean(~predicted[~truth])) if (~truth).any() else None,
                  "achieved_share_train": float(np.mean(data.achieved))})
    return model.eval(), stats


def train_actor(data: ActorData, vocab: int, rng: np.random.Generator, steps: int | None = None):
    """Train encoder + decoder with teacher forcing on FAST token sequences (with BOS/EOS).

    The image stems stay at their seeded random initialisation: the chunk is determined by
    the affordance and the state, so the image features are computed once per pooled render
    instead of on every step (this is what keeps the training near a minute).
    """
    encoder = rm.ActorEncoder(spec.KEYPOINTS, spec.INSTRUCTION_DIM, spec.CONTEXT_DIM)
    decoder = rm.ActorDecoder(vocab, spec.CONTEXT_DIM, spec.DECODER_LAYERS, spec.DECODER_HEADS,
                              max_positions=spec.MAX_POSITIONS, max_expert_tokens=spec.MAX_EXPERT_TOKENS)
    for stem in (encoder.wrist_stem, encoder.top_stem):
        stem.requires_grad_(False)
    wrists = data.pools.wrist_masked.reshape(-1, *data.pools.wrist_masked.shape[2:])
    with torch.no_grad():
        wrist_cells = torch.cat([encoder.cells(encoder.wrist_stem, torch.from_numpy(wrists[i:i + 256]))
                                 for i in range(0, len(wrists), 256)])
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
            wrist_cells[torch.from_numpy(data.wrist_rows(index))], top_cells[torch.from_numpy(data.scene_index[index])],
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
    from sim2real_vla_ros.core.policy.bundle import expected_profiles

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

    Images are the renders masked with their true masks, as the camera/mask node publishes
    them (background exactly black).
    """
    from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation
    from sim2real_vla_ros.core.policy.observation import apply_mask

    pools = held.pools
    samples = []
    for row in range(len(held.tokens)):
        scene, arm_index = held.scene_index[row], held.arm_index[row]
        arm = engine_module.ARMS[arm_index]
        normalizer = normalizers[arm]
        observation = ActorObservation(
            wrist_rgb=apply_mask(pools.wrist_raw[scene, arm_index], pools.wrist_labels[scene, arm_index]),
            top_rgb=apply_mask(pools.top_raw[scene], pools.top_labels[scene]),
            affordance=held.affordance[row], joint_state=normalizer.unnormalize(held.state[row]),
            instruction=instructions[held.instruction_index[row]])
        samples.append((arm, observation, normalizer.unnormalize(held.chunks[row])))
    return samples


def deployment_check(bundle, engine) -> dict:
    """The exported mask model and planner on the dry run's start scenes, through the deployment chain.

    For each task and seeds ``task.seed .. task.seed + DEPLOYMENT_CHECK_SEEDS - 1`` (the
    simulator's first episodes): ``cam_high`` with the arms at the jittered initial pose,
    the mask model's own mask (not the true one), the masked image as the planner node
    builds it, and the first planner call (no previous affordance). Scores the arm_active
    set against the task's arms, done < 0.5, the keypoint error against the pre-grasp key
    pose, and the mask against the true labels.
    """
    from sim2real_vla_ros.core.policy.observation import apply_mask, logits_to_mask, masked_model_input

    planner, mask_model = bundle.model("planner"), bundle.model("mask")
    rows, per_task = [], {}
    predicted_masks, true_masks = [], []
    for name, scene in engine.scenes.items():
        correct = []
        for offset in range(DEPLOYMENT_CHECK_SEEDS):
            scene.reset(scene.task.seed + offset)
            keys = scene.key_poses()
            rgb, labels = scene.render(spec.CAMERAS["top"])
            predicted = logits_to_mask(mask_model.run({"image": bundle.preprocess_image(rgb)})["mask_logits"])[0]
            predicted_masks.append(predicted)
            true_masks.append(labels)
            top = masked_model_input(bundle.image_preprocessor, apply_mask(rgb, predicted))
            out = planner.run({
                "top_image": top, "instruction": bundle.instruction_embedding(scene.task.instruction)[None],
                "prev_affordance": np.zeros((1, spec.CHAIN_LENGTH, 2, spec.KEYPOINTS, 2), np.float32),
                "prev_valid": np.zeros((1, spec.CHAIN_LENGTH), np.float32)})
            active_ok = bool(np.all((out["arm_active"][0] >= 0.5) == (keys["active"] > 0.5)))
            done_ok = bool(out["done"][0] < 0.5)
            rows.append({"active_ok": active_ok, "done_ok": done_ok,
                         "keypoint_error_px": keypoint_error_px(out["keypoints"], keys["pre_grasp_keypoints"][None],
                                                                keys["active"][None])})
            correct.append(active_ok and done_ok)
        per_task[name] = float(np.mean(correct))
    scores = segmentation_scores(np.stack(predicted_masks), np.stack(true_masks), len(bundle.manifest.mask_classes))
    return {
        "scenes": len(rows),
        "arm_sets_correct": float(np.mean([r["active_ok"] for r in rows])),
        "done_below_threshold": float(np.mean([r["done_ok"] for r in rows])),
        "accuracy": float(np.mean([r["active_ok"] and r["done_ok"] for r in rows])),
        "accuracy_per_task": per_task,
        "keypoint_error_px_mean": float(np.mean([r["keypoint_error_px"] for r in rows])),
        "mask": {key.replace("_held_out", ""): value for key, value in scores.items()},
    }


def pipeline_quality(bundle, samples: Sequence, roles: dict | None = None) -> tuple:
    """Run ActorPipeline over samples; (metrics, token sequences) with the decode rate."""
    from sim2real_vla_ros.core.policy.actor_pipeline import ActorPipeline

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
    """Load the staged bundle with the project's loader; check the actor and the planner on the dry run's scenes.

    Raises
    ------
    BundleGenerationError
        Too few decodable outputs, the cache decoder disagreeing with the plain one, or the
        planner getting the active arms / done wrong on too many of the tasks' start scenes.
    """
    from sim2real_vla_ros.core.policy.bundle import load_bundle

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
        engine = make_engine(prepared["tasks_file"], prepared["mask_classes"])
        try:
            metrics["deployment_check"] = deployment_check(bundle, engine)
        finally:
            engine.close()
        _log(f"planner on the tasks' start scenes (predicted masks): {metrics['deployment_check']}")
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
    deployment = metrics["deployment_check"]
    if deployment["accuracy"] < MIN_DEPLOYMENT_ACCURACY:
        raise BundleGenerationError(f"the planner gets arm_active or done wrong on {1 - deployment['accuracy']:.0%} of "
                                    f"the tasks' start scenes (allowed {1 - MIN_DEPLOYMENT_ACCURACY:.0%}): "
                                    f"{deployment['accuracy_per_task']}")


# ----------------------------------------------------------------------------- files
def save_npz_deterministic(path: Path, arrays: dict) -> None:
    """Like np.savez, but with fixed zip timestamps and key order (so bytes reproduce)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as stream:
                np.lib.format.write_array(stream, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def _write_manifest(path: Path, manifest: dict) -> None:
    header = ("# Reference bundle: tiny models trained briefly on MuJoCo simulator renders. NOT task-competent.\n"
              "# Generated by: python -m training.make_reference_bundle --out models/reference\n"
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
    """Instructions, simulator renders, action statistics, FAST tokenizer and training data."""
    instructions_text, kinds = spec.task_instructions_and_objects(tasks_file)
    mask_classes = ["background", *kinds]
    embeddings = {text: spec.pseudo_instruction_embedding(text) for text in instructions_text}
    instruction_array = np.stack([embeddings[t] for t in instructions_text])

    start = time.perf_counter()
    engine = make_engine(tasks_file, mask_classes)
    try:
        samples = engine.samples(SCENES_PER_TASK * len(engine.scenes), rng, first_seed=SCENE_SEED_OFFSET)
        pools = SimPools(samples, instructions_text)
        del samples
        rows, held_rows = split_rows(pools)
        render_seconds = time.perf_counter() - start
        _log(f"rendered {len(pools)} simulator scenes x 3 cameras in {render_seconds:.1f} s "
             f"(largest IK residual {pools.ik_residual_m.max() * 1000:.1f} mm)")
        kinematics = next(iter(engine.scenes.values()))  # the robot is the same in every task's scene
        actor_pairs = PairData(kinematics, pools, rows, ACTOR_TRAIN_SAMPLES, None, rng)
        held_pairs = PairData(kinematics, pools, held_rows, HELD_OUT_SAMPLES, None, rng)
        validator_pairs = PairData(kinematics, pools, rows, VALIDATOR_TRAIN_SAMPLES, VALIDATOR_TARGET_MIX, rng)
        validator_held_pairs = PairData(kinematics, pools, held_rows, VALIDATOR_HELD_OUT_SAMPLES,
                                        VALIDATOR_TARGET_MIX, rng)
    finally:
        engine.close()  # the renderers' OpenGL buffers (~1 GB) are not needed while training
    normalization = action_statistics(pools, rows, [actor_pairs, validator_pairs])
    normalizers = {side: ActionNormalizer.quantile(stats["q01"], stats["q99"]) for side, stats in normalization.items()}
    data = ActorData(actor_pairs, normalizers, instruction_array, rng)
    held = ActorData(held_pairs, normalizers, instruction_array, rng)

    # FAST tokenizer on normalised chunks: the actor's own, plus windows of smooth random
    # trajectories inside the joint limits and constant chunks at the range ends (coverage).
    normalised_trajectories = [normalizers[side].normalize(spec.synthetic_trajectories(arm_limits(side), rng, side))
                               for side in engine_module.ARMS]
    fast = FastTokenizer.fit(spec.fast_fitting_chunks(data.chunks[:3000], normalised_trajectories, rng),
                             scale=spec.FAST_SCALE, vocab_size=spec.FAST_VOCAB, time_horizon=spec.CHUNK_LENGTH,
                             action_dim=spec.ACTION_DIM, cover_all_bytes=True)
    _log(f"FAST tokenizer: {fast}")
    data.tokenize(fast)
    held.tokenize(fast)
    lengths = [len(t) for t in data.tokens]
    expert_lengths = [len(t) for t in data.expert]
    if max(lengths) + 1 > spec.MAX_TOKENS or max(expert_lengths) > spec.MAX_EXPERT_TOKENS:
        raise BundleGenerationError(f"token sequences too long: max {max(lengths)} (+EOS) > {spec.MAX_TOKENS} "
                                    f"or expert {max(expert_lengths)} > {spec.MAX_EXPERT_TOKENS}")
    _log(f"actor token sequences: {min(lengths)}..{max(lengths)} ids (mean {np.mean(lengths):.1f})")
    return {"mask_classes": mask_classes, "embeddings": embeddings, "instruction_array": instruction_array,
            "normalization": normalization, "fast": fast, "tasks_file": tasks_file, "pools": pools, "rows": rows,
            "held_rows": held_rows, "data": data, "held": held,
            "validator": ValidatorData(validator_pairs, normalizers),
            "validator_held": ValidatorData(validator_held_pairs, normalizers),
            "render_seconds": render_seconds,
            "ik_residual_max_m": float(pools.ik_residual_m.max())}


def generate(out: Path, tasks_file: str, seed: int, threads: int, min_decode_rate: float) -> dict:
    """Render, train, export, check and write the reference bundle into `out`; returns the report.

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
    return _train_and_write(out, prepared, seed, threads, min_decode_rate, rng, start)


def make_engine(tasks_file: str, mask_classes: Sequence[str]):
    """The simulator data engine for every task of ``tasks_file`` at the bundle's and the dry run's image sizes."""
    return engine_module.SimDataEngine(load_tasks(tasks_file), mask_classes, (spec.IMAGE_WIDTH, spec.IMAGE_HEIGHT),
                                       (spec.CAMERA_WIDTH, spec.CAMERA_HEIGHT))


def _train_and_write(out: Path, prepared: dict, seed: int, threads: int, min_decode_rate: float,
                     rng: np.random.Generator, start: float) -> dict:
    fast, pools, data, held = (prepared[k] for k in ("fast", "pools", "data", "held"))
    rows, held_rows = prepared["rows"], prepared["held_rows"]
    vocab = fast.bpe_vocab_size
    lengths = [len(t) for t in data.tokens]
    metrics: dict = {
        "data": {"scenes": len(pools), "held_out_scenes": len(held_rows), "tasks": sorted(set(pools.tasks)),
                 "ik_residual_max_m": round(prepared["ik_residual_max_m"], 5),
                 "actor_samples": len(data.tokens), "validator_samples": len(prepared["validator"].achieved)},
        "token_length": {"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
    }
    timing: dict = {"render_sim": prepared["render_seconds"]}
    mask_model, metrics["mask"] = train_mask(pools, rows, held_rows, len(prepared["mask_classes"]), rng)
    _log(f"mask: {metrics['mask']}")
    planner, metrics["planner"] = train_planner(pools, rows, held_rows, prepared["instruction_array"], rng)
    _log(f"planner: {metrics['planner']}")
    validator, metrics["validator"] = train_validator(prepared["validator"], prepared["validator_held"], rng)
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
            "generator": "training.make_reference_bundle",
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
