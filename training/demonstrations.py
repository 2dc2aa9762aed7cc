"""Demonstrations from the data engine's scripted expert, recorded at the bundle's rate.

    python -m training.demonstrations --task all --episodes 20 --out datasets/demos [--workers 2]

Each episode: :class:`DomainRandomizer` draws the appearance from the episode's seed, the scripted
expert (``sim.data_engine``) runs the task, and every ``CONTROL_HZ / fps``-th control step (the
bundle's ``action.control_rate_hz``, 25 Hz for the reference bundle) a frame is kept with

- ``observation.images.<camera>``: the three cameras at the bundle's image size (rendered at the
  dry run's 320x240 and resized as camera_mask does), uint8 RGB;
- ``observation.masks.<camera>``: the true class ids at that size (MuJoCo segmentation, the
  bundle's ``mask_classes``);
- ``observation.state``: both arms' joints (left 7, right 7; joint7 = finger, m);
- ``action``: the joint command the expert sent at that step (14); a chunk is the next
  ``chunk_length`` actions (the loader forms it, as LeRobot's ``delta_timestamps`` do);
- ``affordance.keypoints`` [2, P, 2] and ``affordance.active`` [2]: the current step's key pose
  (the arm configuration where the step's motion ends, the paper's "key poses at the end of
  each atomic task") as gripper keypoints projected into ``cam_high`` with the camera's actual
  (randomised) pose, in image fractions: the planner's label;
- ``subgoal.index`` / ``subgoal.achieved``: the action-bank step the frame belongs to and
  whether its sub-goal holds (the step's motion is over and its success condition passed,
  checked in simulation): the validator's label.

Episodes whose privileged task check fails are dropped unless ``--keep-failed`` (their failing
sub-goal is logged); each kept episode records its seed, domain-randomisation record and
sub-goal names. The dataset is written in LeRobot's v3.0 layout (:mod:`training.lerobot_format`).
Generation uses ``--workers`` processes (episodes are independent) and prints progress.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from sim2real_vla_ros.core.policy.bundle import read_manifest
from sim2real_vla_ros.core.task import tasks as task_config
from sim2real_vla_ros.core.vocabulary import ARMS, CAMERAS, TOP_CAMERA
from sim2real_vla_ros.sim.data_engine import expert as expert_module
from sim2real_vla_ros.sim.data_engine.randomization import DomainRandomizer
from training.sim_data_engine import TaskScene

MOVING_RAD = 1e-3  # an arm whose joints change more than this during a step is active in it


@dataclass
class DemoEpisode:
    """One recorded episode: per-frame arrays (first axis = frame) and what describes it."""

    task: str
    instruction: str
    seed: int
    success: bool
    failed_subgoal: Optional[str]
    frames: Dict[str, np.ndarray]
    subgoals: List[str]
    randomization: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(len(self.frames["observation.state"]))


class _Recorder:
    """The expert's per-control-step hook: keeps every ``every``-th step's frame, and every step's
    command, so the key pose of each step (its last commanded configuration) is known afterwards."""

    def __init__(self, scene: TaskScene, every: int) -> None:
        self.scene, self.every = scene, int(every)
        self.commands: List[np.ndarray] = []       # every control step: [2, 7] commanded joints
        self.step_of_control: List[int] = []       # every control step: its action-bank step index
        self.motion_of_control: List[bool] = []    # every control step: inside the step's motion
        self.frames: Dict[str, list] = {key: [] for key in self.keys()}
        self.frame_controls: List[int] = []        # control-step index of each kept frame
        self.log: list = []                         # the expert's (action, motion steps) per step
        self._step_started = 0                      # control-step index where the current step began

    @staticmethod
    def keys() -> List[str]:
        return ([f"observation.images.{camera}" for camera in CAMERAS]
                + [f"observation.masks.{camera}" for camera in CAMERAS] + ["observation.state", "action"])

    def __call__(self, expert) -> None:
        self.log = expert.log
        sim = self.scene.sim
        index = len(self.commands)
        step = len(expert.log) - 1
        if not self.step_of_control or self.step_of_control[-1] != step:
            self._step_started = index  # steps only advance: the first control step of this one
        started = self._step_started
        motion_steps = expert.log[step][1] if step >= 0 else 0
        self.commands.append(np.stack([sim.arm_command(side)[0] for side in ARMS]))
        self.step_of_control.append(step)
        self.motion_of_control.append(step >= 0 and index - started < motion_steps)
        if index % self.every:
            return
        self.frame_controls.append(index)
        for camera in CAMERAS:
            rgb, labels = self.scene.render(camera)
            self.frames[f"observation.images.{camera}"].append(rgb)
            self.frames[f"observation.masks.{camera}"].append(labels)
        self.frames["observation.state"].append(np.concatenate([sim.arm_positions(side) for side in ARMS]))
        self.frames["action"].append(self.commands[-1].reshape(-1))


def use_rendering_camera(scene: TaskScene) -> None:
    """Project with ``cam_high``'s actual pose (domain randomisation moves the MuJoCo camera, not
    the URDF's optical frame body): optical axes = camera axes with y and z flipped."""
    camera = scene.model.camera(TOP_CAMERA).id
    scene._camera_position = scene.data.cam_xpos[camera].copy()
    scene._camera_rotation = scene.data.cam_xmat[camera].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])


def record_episode(scene: TaskScene, randomizer: DomainRandomizer, seed: int, fps: float) -> DemoEpisode:
    """Run the expert on ``seed`` with randomised appearance and return the recorded frames."""
    every = max(1, int(round(expert_module.CONTROL_HZ / fps)))
    record = randomizer.reset(seed)  # the scene, the initial joints and the appearance, from the seed
    use_rendering_camera(scene)
    recorder = _Recorder(scene, every)
    result = expert_module.run_expert_episode(scene.sim, seed, record=recorder)  # same seed: same scene
    frames = {key: np.asarray(values) for key, values in recorder.frames.items()}
    frames["observation.state"] = frames["observation.state"].astype(np.float32)
    frames["action"] = frames["action"].astype(np.float32)
    frames.update(_labels(scene, recorder, result))
    return DemoEpisode(scene.task.name, scene.task.instruction, int(seed), bool(result.success), result.failed_subgoal,
                       frames, [action for action, _steps in recorder.log], record)


def _labels(scene: TaskScene, recorder: _Recorder, result) -> Dict[str, np.ndarray]:
    """Affordance and sub-goal labels of every kept frame (needs the whole episode's commands)."""
    commands = np.asarray(recorder.commands)
    steps = np.asarray(recorder.step_of_control)
    motion = np.asarray(recorder.motion_of_control)
    failed_step = None
    if not result.success and steps.size:
        failed_step = int(steps.max())  # the expert stops inside the step that failed
    key_poses: Dict[int, np.ndarray] = {}
    active: Dict[int, np.ndarray] = {}
    for step in np.unique(steps):
        controls = np.flatnonzero(steps == step)
        moving = controls[motion[controls]] if motion[controls].any() else controls
        key_poses[int(step)] = commands[moving[-1]]
        span = commands[controls]
        active[int(step)] = np.abs(span.max(axis=0) - span.min(axis=0)).max(axis=1) > MOVING_RAD
    keypoints, arm_active, index, achieved = [], [], [], []
    for control in recorder.frame_controls:
        step = int(steps[control])
        pose = key_poses[step]
        keypoints.append(np.stack([scene.gripper_keypoints(side, pose[i]) for i, side in enumerate(ARMS)]))
        arm_active.append(active[step])
        index.append(step)
        done = failed_step is None or step < failed_step
        achieved.append(bool(step >= 0 and not motion[control] and done))
    return {"affordance.keypoints": np.asarray(keypoints, np.float32),
            "affordance.active": np.asarray(arm_active, bool),
            "subgoal.index": np.asarray(index, np.int64), "subgoal.achieved": np.asarray(achieved, bool)}


# --------------------------------------------------------------------------- generation

_SCENES: Dict[str, tuple] = {}


def _scene(task: str, bundle_folder: str) -> tuple:
    if task not in _SCENES:
        manifest = read_manifest(bundle_folder)
        scene = TaskScene(task_config.get_task(task), manifest.mask_classes, (manifest.image.width,
                                                                              manifest.image.height))
        _SCENES[task] = (scene, DomainRandomizer(scene.sim), manifest.action.control_rate_hz)
    return _SCENES[task]


def _job(job: tuple) -> DemoEpisode:
    task, seed, bundle_folder = job
    scene, randomizer, fps = _scene(task, bundle_folder)
    return record_episode(scene, randomizer, seed, fps)


def generate(task_names: Sequence[str], episodes: int, first_seed: int, bundle_folder: str, workers: int,
             keep_failed: bool = False, progress=print) -> List[DemoEpisode]:
    jobs = [(task, first_seed + i, bundle_folder) for task in task_names for i in range(episodes)]
    kept: List[DemoEpisode] = []
    started = time.monotonic()

    def take(episode: DemoEpisode, done: int) -> None:
        if episode.success or keep_failed:
            kept.append(episode)
        progress(f"[demonstrations] {episode.task} seed {episode.seed}: "
                 f"{'ok' if episode.success else f'FAILED at {episode.failed_subgoal}'}, {episode.length} frames; "
                 f"{done}/{len(jobs)} episodes, {len(kept)} kept, {time.monotonic() - started:.0f} s")

    if workers <= 1:
        for done, job in enumerate(jobs, 1):
            take(_job(job), done)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, episode in enumerate(pool.map(_job, jobs), 1):
                take(episode, done)
    return kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    from sim2real_vla_ros.nodes.node_support import default_bundle_path
    from training import lerobot_format

    parser = argparse.ArgumentParser(prog="demonstrations", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="all")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task (before dropping failures)")
    parser.add_argument("--first-seed", type=int, default=1000, help="seeds apart from the evaluation's 0..49")
    parser.add_argument("--bundle", default="", help="bundle whose image size, classes and rate the data take")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-failed", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    names = list(task_config.load_tasks()) if args.task == "all" else args.task.split(",")
    bundle_folder = args.bundle or default_bundle_path()
    episodes = generate(names, args.episodes, args.first_seed, bundle_folder, args.workers, args.keep_failed)
    manifest = read_manifest(bundle_folder)
    lerobot_format.write_dataset(args.out, episodes, fps=manifest.action.control_rate_hz,
                                 robot_type="agilex_cobot_magic")
    print(f"[demonstrations] {len(episodes)} episodes, {sum(e.length for e in episodes)} frames -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
