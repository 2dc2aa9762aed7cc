"""The reference bundle's simulator data engine: true masks, projection, key poses, determinism.

Renders a handful of MuJoCo scenes (EGL, as the simulator tests do); no torch needed.
"""
import numpy as np
import pytest

from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS
from sim2real_vla_ros.core.task.tasks import load_tasks
from sim2real_vla_ros.sim.objects import object_model
from training import make_reference_bundle as generator
from training.sim_data_engine import FIRST_OBJECT, DataEngineError, SimDataEngine, TaskScene

MODEL_SIZE = (generator.IMAGE_WIDTH, generator.IMAGE_HEIGHT)


@pytest.fixture(scope="module")
def mask_classes():
    _instructions, kinds = generator.task_instructions_and_objects(generator.default_tasks_file())
    return ["background", *kinds]


@pytest.fixture(scope="module")
def engine(mask_classes):
    built = SimDataEngine(load_tasks(), mask_classes, MODEL_SIZE)
    yield built
    built.close()


def test_every_task_has_first_objects_for_exactly_its_arms():
    for name, task in load_tasks().items():
        assert set(FIRST_OBJECT[name]) == set(task.arms), name
        assert set(FIRST_OBJECT[name].values()) <= {obj.name for obj in task.objects}, name


def test_a_class_missing_from_mask_classes_is_refused():
    with pytest.raises(DataEngineError, match="not in mask_classes"):
        TaskScene(load_tasks()["pour_water_single"], ["background", "cup"], MODEL_SIZE)


def test_sample_has_images_true_masks_and_key_poses(engine, mask_classes):
    rng = np.random.default_rng(0)
    for sample in engine.samples(6, rng, first_seed=500):
        task = load_tasks()[sample.task]
        allowed = {0} | {mask_classes.index(obj.kind) for obj in task.objects}
        for camera in CAMERAS:
            assert sample.images[camera].shape == (MODEL_SIZE[1], MODEL_SIZE[0], 3)
            assert sample.images[camera].dtype == np.uint8
            assert set(np.unique(sample.labels[camera])) <= allowed, (sample.task, camera)
        assert set(np.unique(sample.labels["cam_high"])) - {0}, f"{sample.task}: no object visible in cam_high"
        np.testing.assert_array_equal(sample.active, [float(arm in task.arms) for arm in ARMS])
        assert np.all(sample.ik_residual_m < 0.002), sample.ik_residual_m
        for keypoints in (sample.pre_grasp_keypoints, sample.grasp_keypoints):
            assert keypoints.shape == (2, 3, 2) and np.all((keypoints > 0) & (keypoints < 1))
            assert np.all(keypoints[:, 1, 0] <= keypoints[:, 2, 0])  # finger tips left to right


def test_projected_object_centres_land_on_their_own_pixels(engine, mask_classes):
    """The keypoint projection and the renderer agree: an object's centre projects onto that object."""
    hits, total = 0, 0
    for name, scene in engine.scenes.items():
        for seed in (42, 43):
            scene.reset(seed)
            _rgb, labels = scene.render("cam_high")
            for obj in scene.task.objects:
                state = scene.sim.object_state(obj.name)
                centre = state.pos + state.rot[:, 2] * object_model(obj.kind).height / 2.0
                x, y = scene.normalised(scene.project(centre[None]))[0] * np.array(MODEL_SIZE)
                column, row = int(np.floor(x)), int(np.floor(y))
                window = labels[max(0, row - 1):row + 2, max(0, column - 1):column + 2]
                hits += mask_classes.index(obj.kind) in window
                total += 1
    assert hits >= 0.9 * total, f"only {hits}/{total} projected object centres land on their object"


def test_the_tcp_keypoint_matches_the_rendered_gripper(engine):
    """The TCP projects between the two finger pads the renderer draws (checked on the geometry)."""
    scene = engine.scenes["pour_water_single"]
    scene.reset(42)
    for side in ARMS:
        q = scene.initial_joints(side)
        keypoints = scene.gripper_keypoints(side, q)
        assert np.all((keypoints > 0) & (keypoints < 1))
        # The TCP keypoint is the midpoint of the finger-tip keypoints' 3D points, so its
        # projection lies between theirs (up to perspective).
        assert keypoints[1, 0] - 0.01 <= keypoints[0, 0] <= keypoints[2, 0] + 0.01


def test_samples_are_deterministic(mask_classes):
    tasks = {"pour_water_single": load_tasks()["pour_water_single"]}
    results = []
    for _ in range(2):
        engine = SimDataEngine(tasks, mask_classes, MODEL_SIZE)
        try:
            results.append(engine.samples(2, np.random.default_rng(3), first_seed=7))
        finally:
            engine.close()
    for first, second in zip(*results):
        np.testing.assert_array_equal(first.joints, second.joints)
        np.testing.assert_array_equal(first.pre_grasp_keypoints, second.pre_grasp_keypoints)
        for camera in CAMERAS:
            np.testing.assert_array_equal(first.images[camera], second.images[camera])
            np.testing.assert_array_equal(first.labels[camera], second.labels[camera])
