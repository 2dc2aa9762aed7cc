"""Demonstration dataset: the expert's episode recorded with its labels, written in LeRobot's
v3.0 layout and read back (numeric features exact, video frames within codec loss)."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim2real_vla_ros.core.policy.bundle import read_manifest
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.nodes.node_support import default_bundle_path
from training import lerobot_format
from training.demonstrations import _scene, record_episode, use_rendering_camera

TASK = "table_rearrangement"
FPS = 5.0  # a fifth of the bundle's rate: the same episode with fewer renders, so the test stays short


@pytest.fixture(scope="module")
def episode():
    scene, randomizer, _fps = _scene(TASK, default_bundle_path())
    return record_episode(scene, randomizer, 1, FPS)


def test_the_rendering_camera_projects_like_the_optical_frame_without_jitter():
    scene, _randomizer, _fps = _scene(TASK, default_bundle_path())
    scene.reset(3)  # the simulator's own reset: no domain randomisation applied
    optical = scene.gripper_keypoints("left", scene.initial_joints("left"))
    use_rendering_camera(scene)
    np.testing.assert_allclose(scene.gripper_keypoints("left", scene.initial_joints("left")), optical, atol=1e-6)


def test_an_episode_carries_images_masks_actions_and_both_labels(episode):
    manifest = read_manifest(default_bundle_path())
    frames, n = episode.frames, episode.length
    assert episode.success and n > 50
    assert frames["observation.images.cam_high"].shape == (n, manifest.image.height, manifest.image.width, 3)
    kinds = {manifest.mask_classes.index(obj.kind) for obj in tasks.get_task(TASK).objects}
    assert kinds <= set(np.unique(frames["observation.masks.cam_high"]))  # every object is seen by cam_high
    assert frames["observation.state"].shape == frames["action"].shape == (n, 14)
    steps = frames["subgoal.index"]
    assert np.all(np.diff(steps) >= 0) and steps.max() == len(episode.subgoals) - 1
    assert frames["subgoal.achieved"].any() and not frames["subgoal.achieved"].all()
    keypoints = frames["affordance.keypoints"]
    assert keypoints.shape == (n, 2, manifest.keypoints_per_arm, 2) and np.all((keypoints > 0) & (keypoints < 1))
    # The fork is the left arm's, the spoon the right's: each arm is active in its own steps.
    active = frames["affordance.active"]
    assert active[:, 0].any() and active[:, 1].any()
    fork_steps = [i for i, name in enumerate(episode.subgoals) if "fork" in name]
    assert active[np.isin(steps, fork_steps), 0].all()
    assert episode.randomization["seed"] == 1 and "light_scale" in json.dumps(episode.randomization)


def test_the_dataset_round_trips_in_the_v3_layout(episode, tmp_path):
    info = lerobot_format.write_dataset(str(tmp_path), [episode, episode], FPS, robot_type="agilex_cobot_magic")
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2
    assert info["total_frames"] == 2 * episode.length
    assert info["features"]["observation.images.cam_high"]["dtype"] == "video"
    assert info["features"]["observation.masks.cam_high"] == {"dtype": "uint8", "shape": [96, 128], "names": None}
    tasks_table = pq.read_table(tmp_path / "meta" / "tasks.parquet")
    assert tasks_table.column("__index_level_0__").to_pylist() == [tasks.get_task(TASK).instruction]
    back = lerobot_format.read_dataset(str(tmp_path))
    assert [e["meta"]["episode_index"] for e in back] == [0, 1] and back[1]["meta"]["dataset_from_index"] == episode.length
    for restored in back:
        assert restored["meta"]["seed"] == 1 and restored["meta"]["subgoals"] == episode.subgoals
        for key, values in episode.frames.items():
            if key.startswith("observation.images."):
                error = np.abs(restored["frames"][key].astype(int) - values.astype(int)).mean()
                assert restored["frames"][key].shape == values.shape and error < 8.0, (key, error)
            else:
                np.testing.assert_array_equal(restored["frames"][key], values, err_msg=key)
        assert np.array_equal(restored["frames"]["frame_index"], np.arange(episode.length))
    stats = json.loads((tmp_path / "meta" / "stats.json").read_text())
    assert stats["action"]["count"] == [2 * episode.length] and len(stats["action"]["mean"]) == 14


def _lerobot_missing() -> bool:
    try:
        import lerobot.datasets.lerobot_dataset  # noqa: F401
    except Exception:
        return True
    return False


@pytest.mark.skipif(_lerobot_missing(), reason="lerobot is not installed here (0.5+ needs Python 3.12; 0.4.4 brings "
                                               "CUDA torch, 8.3 GB): checked once in a scratch venv, see the README")
def test_lerobot_loads_the_dataset_with_action_chunks(episode, tmp_path):  # pragma: no cover - needs lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    lerobot_format.write_dataset(str(tmp_path), [episode], FPS)
    dataset = LeRobotDataset("local/demos", root=str(tmp_path), video_backend="pyav",
                             delta_timestamps={"action": [i / FPS for i in range(5)]})
    item = dataset[10]
    assert tuple(item["action"].shape) == (5, 14)
    np.testing.assert_allclose(item["action"].numpy(), episode.frames["action"][10:15], atol=1e-6)
    assert tuple(item["observation.masks.cam_high"].shape) == episode.frames["observation.masks.cam_high"].shape[1:]
