"""The committed reference bundle (models/reference): loads, runs, well-formed outputs.

The models are not task-competent (see models/reference/README.md), but their outputs must
be well-formed on the simulator's images so the dry run exercises the normal path: object
masks, the task's arms active with keypoints inside the image, probabilities in [0, 1],
actor tokens that FAST-decode. Simulator frames come from the generator's own data engine
(MuJoCo, EGL). Regenerating the bundle needs torch (an optional dependency) and about three
minutes: that test is marked slow and skips without torch.
"""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sim2real_vla_ros.core.policy.actor_pipeline import ActorObservation, ActorPipeline
from sim2real_vla_ros.core.policy.bundle import expected_profiles, load_bundle
from sim2real_vla_ros.core.policy.observation import apply_mask, logits_to_mask, masked_model_input
from sim2real_vla_ros.core.policy.runtime.engine_metadata import resolve_profiles
from sim2real_vla_ros.core.robot import arm_limits
from sim2real_vla_ros.core.task.tasks import default_task_name, load_tasks
from sim2real_vla_ros.paths import share_path
from sim2real_vla_ros.tools import build_engine
from training import make_reference_bundle as generator
from training.sim_data_engine import SimDataEngine
from sim2real_vla_ros.core.vocabulary import ARMS

MAX_BUNDLE_BYTES = 20 * 1024 * 1024
# Files whose bytes depend only on numpy / tokenizers (not on floating-point training).
NUMERIC_INDEPENDENT = ("bundle.yaml", "instructions.npz", "fast_tokenizer/")


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(share_path("models", "reference"))


@pytest.fixture(scope="module")
def bundle(folder):
    loaded = load_bundle(str(folder), intra_op_threads=1, inter_op_threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def world(bundle):
    return generator.SyntheticWorld(list(bundle.manifest.mask_classes), seed=11)


@pytest.fixture(scope="module")
def sim_engine(bundle):
    """The generator's simulator data engine for all six tasks, at the dry run's camera size."""
    engine = SimDataEngine(load_tasks(), list(bundle.manifest.mask_classes),
                           (generator.IMAGE_WIDTH, generator.IMAGE_HEIGHT),
                           (generator.CAMERA_WIDTH, generator.CAMERA_HEIGHT))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def report(folder) -> dict:
    with open(folder / generator.REPORT_FILE, encoding="utf-8") as stream:
        return json.load(stream)


def test_every_model_runs_with_the_contract_shapes(bundle):
    sizes = {"batch": 1, "tokens": 3, "past": 2, "expert": 4}
    for role in bundle.roles:
        contract = bundle.model_entry(role).contract
        outputs = bundle.model(role).run(contract.example_inputs(sizes))
        assert set(outputs) == set(contract.outputs), role
        for name, value in outputs.items():
            spec = contract.outputs[name]
            expected = spec.concrete_shape({**sizes, "present": sizes["past"] + sizes["tokens"]})
            assert value.shape == expected, (role, name, value.shape)
            assert value.dtype == np.dtype(spec.dtype) and np.all(np.isfinite(value)), (role, name)


def test_models_accept_a_batch(bundle):
    """Every contract has a dynamic batch axis; the mask model runs the three cameras at once."""
    for role in bundle.roles:
        assert all(spec.shape[0] == "batch" or name.startswith(("past_", "present_"))
                   for name, spec in bundle.model_entry(role).contract.inputs.items()), role
    logits = bundle.model("mask").run({"image": np.zeros((3, 3, 96, 128), np.float32)})["mask_logits"]
    assert logits.shape == (3, len(bundle.manifest.mask_classes), 96, 128)


def _predicted_mask(bundle, rgb):
    return logits_to_mask(bundle.model("mask").run({"image": bundle.preprocess_image(rgb)})["mask_logits"])[0]


def test_mask_segments_simulator_frames(bundle, sim_engine):
    """On the dry run's first scenes (all three cameras), the mask model finds the task objects."""
    scene = sim_engine.scenes[default_task_name()]
    predicted, truth = [], []
    for seed in (42, 43, 44):
        scene.reset(seed)
        for camera in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
            rgb, labels = scene.render(camera)
            predicted.append(_predicted_mask(bundle, rgb))
            truth.append(labels)
    predicted, truth = np.stack(predicted), np.stack(truth)
    assert predicted.max() < len(bundle.manifest.mask_classes)
    objects, found = truth > 0, predicted > 0
    recall = np.sum(found & objects) / np.sum(objects)
    iou = np.sum(found & objects) / np.sum(found | objects)
    # An all-background mask scores 0 on both; the synthetic-only bundle scored 0 here. The
    # objects are small (~1% of the pixels), so a blob a pixel too wide already costs IoU.
    assert recall > 0.7, f"only {recall:.1%} of the object pixels found on simulator frames"
    assert iou > 0.35, f"object-vs-background IoU {iou:.3f} on simulator frames (recall {recall:.1%})"
    assert np.mean(predicted == truth) > 0.95


def test_planner_activates_the_task_arms_on_the_dry_run_scenes(bundle, sim_engine):
    """Each task's first scene, masked with the model's own mask: first affordance for exactly the task's arms."""
    planner = bundle.model("planner")
    points = bundle.manifest.keypoints_per_arm
    for name, scene in sim_engine.scenes.items():
        scene.reset(scene.task.seed)
        rgb, _labels = scene.render("cam_high")
        top = masked_model_input(bundle.image_preprocessor, apply_mask(rgb, _predicted_mask(bundle, rgb)))
        out = planner.run({"top_image": top, "instruction": bundle.instruction_embedding(scene.task.instruction)[None],
                           "prev_affordance": np.zeros((1, 1, 2, points, 2), np.float32),
                           "prev_valid": np.zeros((1, 1), np.float32)})
        active = [arm for arm, probability in zip(ARMS, out["arm_active"][0]) if probability >= 0.5]
        assert active == list(scene.task.arms), (name, out["arm_active"][0])
        assert out["done"][0] < 0.5, (name, out["done"][0])
        assert np.all((out["keypoints"] > 0) & (out["keypoints"] < 1)), name


def test_planner_and_validator_outputs_are_in_range(bundle, world):
    rng = np.random.default_rng(1)
    planner, validator = bundle.model("planner"), bundle.model("validator")
    points = bundle.manifest.keypoints_per_arm
    for index in range(10):
        scene = world.render(rng, int(rng.integers(0, 4)))
        top = masked_model_input(bundle.image_preprocessor, apply_mask(scene.image, scene.labels))
        instruction = bundle.instruction_embedding(bundle.known_instructions[index % 6])[None]
        previous = rng.uniform(0, 1, size=(1, 1, 2, points, 2)).astype(np.float32)
        out = planner.run({"top_image": top, "instruction": instruction, "prev_affordance": previous,
                           "prev_valid": np.array([[index % 2]], np.float32)})
        for name in ("keypoints", "arm_active", "done"):
            assert np.all((out[name] >= 0) & (out[name] <= 1)), name
        achieved = validator.run({"top_image": top, "wrist_image": top, "affordance": out["keypoints"][:, 0],
                                  "joint_state": rng.uniform(-1, 1, size=(1, 7)).astype(np.float32)})["achieved"]
        assert achieved.shape == (1,) and 0.0 <= achieved[0] <= 1.0


def test_actor_decodes_on_random_synthetic_observations(bundle, world):
    rng = np.random.default_rng(2)
    decoded = 0
    for index in range(20):
        arm = ("left", "right")[index % 2]
        observation, _ = generator.random_actor_observation(
            world, rng, bundle.normalizer(arm), bundle.known_instructions[index % 6])
        result = ActorPipeline(bundle, arm).infer(observation)
        decoded += result.ok
    assert decoded / 20 >= 0.9, f"only {decoded}/20 actor outputs decoded"


class _RecordingModel:
    """Wraps a loaded model and keeps the last feed (to see exactly what the pipeline sends)."""

    def __init__(self, model):
        self.model, self.feeds = model, None

    def run(self, feeds):
        self.feeds = {name: value.copy() for name, value in feeds.items()}
        return self.model.run(feeds)


def _sample_scenes(world):
    rng = np.random.default_rng(3)
    top = world.render(rng, 3, robot=True)
    wrist = world.render(rng, 2, size_scale=2.2, robot=True)
    for scene in (top, wrist):  # a pure-black object pixel: apply_mask lifts it to (1, 1, 1)
        rows, cols = np.nonzero(scene.labels)
        scene.image[rows[0], cols[0]] = 0
    return top, wrist


def test_training_image_inputs_equal_the_deployed_graphs(bundle, world):
    """The generator builds every model's image inputs exactly (bit for bit) as the running graph."""
    top, wrist = _sample_scenes(world)
    preprocess = generator.image_preprocessor()
    assert preprocess(top.image).tobytes() == bundle.image_preprocessor(top.image).tobytes()
    # mask model: the camera/mask node feeds bundle.preprocess_image of the camera frame
    training_mask_input = generator.model_input_images(preprocess, top.image[None])
    assert training_mask_input.tobytes() == bundle.preprocess_image(top.image).tobytes()
    # actor: what ActorPipeline (images_masked=True, the actor node's path) sends to the encoder
    training = generator.model_input_images(preprocess, np.stack([wrist.image, top.image]),
                                            np.stack([wrist.labels, top.labels]))
    pipeline = ActorPipeline(bundle, "left")
    pipeline.encoder = recorder = _RecordingModel(pipeline.encoder)
    observation = ActorObservation(
        wrist_rgb=apply_mask(wrist.image, wrist.labels), top_rgb=apply_mask(top.image, top.labels),
        affordance=np.full((3, 2), 0.5), joint_state=bundle.normalizer("left").unnormalize(np.zeros(7)),
        instruction=bundle.known_instructions[0])
    pipeline.infer(observation)
    assert recorder.feeds["wrist_image"].tobytes() == training[0:1].tobytes()
    assert recorder.feeds["top_image"].tobytes() == training[1:2].tobytes()
    # planner and validator nodes: masked_model_input(bundle.image_preprocessor, masked image)
    for index, scene in enumerate((wrist, top)):
        deployed = masked_model_input(bundle.image_preprocessor, apply_mask(scene.image, scene.labels))
        assert deployed.tobytes() == training[index:index + 1].tobytes()
    assert np.all(training[1][:, top.labels == 0] == 0) and np.all(training[1][:, top.labels > 0] != 0)


def test_training_pools_are_built_with_the_deployment_pipeline(bundle, sim_engine):
    pytest.importorskip("torch", reason="the training module needs torch (optional: pip install torch==2.13.0)")
    from training.reference_training import SimPools

    samples = sim_engine.samples(3, np.random.default_rng(4), first_seed=900)
    pools = SimPools(samples, bundle.known_instructions)
    for index in range(3):
        masked = apply_mask(pools.top_raw[index], pools.top_labels[index])
        deployed = masked_model_input(bundle.image_preprocessor, masked)
        assert pools.top_masked[index:index + 1].tobytes() == deployed.tobytes()
        assert pools.plain_inputs(pools.top_raw[index:index + 1]).tobytes() == \
            bundle.preprocess_image(pools.top_raw[index]).tobytes()
        for arm in range(2):
            raw, labels = pools.wrist_raw[index, arm], pools.wrist_labels[index, arm]
            deployed = masked_model_input(bundle.image_preprocessor, apply_mask(raw, labels))
            assert pools.wrist_masked[index, arm:arm + 1].tobytes() == deployed.tobytes()
        assert bundle.known_instructions[pools.instruction_index[index]] == samples[index].instruction


def test_every_role_has_tensorrt_profile_ranges(folder, bundle):
    """build_engine --bundle DIR --role ROLE needs no --axis flags, and the ranges cover what the stack feeds."""
    for role in bundle.roles:
        entry = bundle.model_entry(role)
        args = build_engine.make_parser().parse_args(["--bundle", str(folder), "--role", role])
        _onnx, _engine, shapes, ranges = build_engine._resolve_source(args)
        profiles = resolve_profiles(shapes, ranges)
        assert set(profiles) == set(entry.contract.inputs) and expected_profiles(entry) == profiles, role
        assert entry.dynamic_axes["batch"] == ((1, 3, 3) if role == "mask" else (1, 1, 1)), role
    plain, cached = bundle.model_entry("actor_decoder"), bundle.model_entry("actor_decoder_kv")
    expert = bundle.model_entry("actor_decoder_expert")
    assert plain.dynamic_axes["tokens"][2] == expert.dynamic_axes["tokens"][2] == plain.tokens.max_tokens
    assert cached.dynamic_axes["tokens"] == (1, 1, 1)
    assert cached.dynamic_axes["past"][0] == 0 and cached.dynamic_axes["past"][2] == cached.tokens.max_tokens - 1
    assert expert.dynamic_axes["expert"][2] == expert.options["max_expert_tokens"]


def test_instructions_match_tasks_yaml(bundle):
    tasks = load_tasks()
    assert set(bundle.known_instructions) == {task.instruction for task in tasks.values()}
    for text in bundle.known_instructions:
        np.testing.assert_array_equal(bundle.instruction_embedding(text), generator.pseudo_instruction_embedding(text))


def test_mask_classes_cover_every_task_object(bundle):
    kinds = {obj.kind for task in load_tasks().values() for obj in task.objects}
    assert bundle.manifest.mask_classes[0] == "background"
    assert kinds <= set(bundle.manifest.mask_classes)


def test_action_statistics_lie_inside_the_joint_limits(bundle):
    for arm in ("left", "right"):
        limits, stats = arm_limits(arm), bundle.normalizer(arm).stats
        assert np.all(stats["q01"] >= limits.lower) and np.all(stats["q99"] <= limits.upper), arm
        assert np.all(stats["q99"] - stats["q01"] > 0.1 * (limits.upper - limits.lower)), arm


def test_fast_tokenizer_settings(bundle):
    fast = bundle.fast_tokenizer()
    assert (fast.scale, fast.time_horizon, fast.action_dim) == (10, bundle.manifest.action.chunk_length, 7)
    assert fast.covers_all_bytes
    decoder = bundle.model_entry("actor_decoder").tokens
    assert decoder.fast_vocab_size == fast.bpe_vocab_size


def test_files_match_the_generation_report_and_size(folder, report):
    """generation.json lists every generated file's SHA-256: the committed files are those."""
    total = 0
    for name, digest in report["files"].items():
        path = folder / name
        total += path.stat().st_size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
    assert total == report["size_bytes"] and total < MAX_BUNDLE_BYTES
    assert report["metrics"]["held_out_plain"]["decode_rate"] >= 0.95
    assert report["metrics"]["kv_cache_same_tokens"] is True


def test_readme_says_the_models_are_not_task_competent(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "NOT task-competent" in text and "pseudo-" in text and "synthetic" in text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_regenerating_reproduces_the_bundle(folder, report, tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (optional: pip install torch==2.13.0); cannot regenerate the bundle")
    out = tmp_path / "reference"
    assert generator.main(["--out", str(out), "--seed", str(report["seed"]), "--threads", str(report["threads"])]) == 0
    with open(out / generator.REPORT_FILE, encoding="utf-8") as stream:
        regenerated = json.load(stream)
    assert (out / "bundle.yaml").read_text() == (folder / "bundle.yaml").read_text()
    same, different = [], []
    for name, digest in report["files"].items():
        (same if regenerated["files"][name] == digest else different).append(name)
    assert not [n for n in different if n.startswith(NUMERIC_INDEPENDENT)], different
    if different:
        # Training is deterministic per machine; another CPU's floating point can change model bytes.
        same_machine = regenerated["versions"] == report["versions"]
        print(f"regenerated ONNX files differ in bytes: {different} (same library versions: {same_machine})")
    assert regenerated["metrics"]["held_out_plain"]["decode_rate"] >= 0.95

