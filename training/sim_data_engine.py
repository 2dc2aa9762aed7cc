"""Simulator data engine of the reference bundle: MuJoCo renders, true masks, key poses, keypoints.

The paper trains Sim2Real-VLA on simulator data only (section 4.3): scenes sampled from each
task's layout ranges, object masks known from the simulator, key end-effector poses turned
into joint angles by inverse kinematics, and the key poses projected into the camera image
as affordance keypoints. This module does the same, at reference-bundle scale, with the
project's own MuJoCo scene (:class:`sim2real_vla_ros.sim.simulator.Simulator`, the simulator
the dry run runs), so the reference models see at training time exactly the images they see
in the dry run. numpy + mujoco only (no torch): tests can import it.

One sample (:class:`SimSample`) of a task is:

- **Scene**: ``Simulator.reset(seed)`` samples the objects inside the task's Table 5 ranges
  and the jittered initial arm pose; then each arm is moved to a random configuration near
  that pose (:data:`ARM_NOISE_RAD`, joints kept :data:`LIMIT_MARGIN` inside their limits,
  finger anywhere in 0 .. 0.035 m); in :data:`APPROACH_SHARE` of the scenes an arm the task
  uses is moved on from there a random fraction of the way to one of its key poses (below).
  Arms are placed kinematically (``qpos`` + ``mj_forward``, no physics), so objects stay
  where the scene put them.
- **Images**: the three cameras rendered at the simulator's camera size (the dry run's
  320x240), resized to the model size with ``observation.resize_rgb`` (cv2.INTER_AREA, what
  the camera/mask node does).
- **Masks**: MuJoCo segmentation rendering (``Renderer.enable_segmentation_rendering``, one
  geom id per pixel) at the model size; a geom of an object body gets the class of the
  object's kind in the bundle's ``mask_classes``, everything else (robot, table, floor,
  walls) is 0 = background.
- **Key poses** (planner targets) per arm the task uses: the arm's *first object*
  (:data:`FIRST_OBJECT`), a **pre-grasp** tool-centre-point (TCP) position
  :data:`PRE_GRASP_HEIGHT_M` above the object's top with the gripper open, and a **grasp**
  position at half the object's height with the gripper closed. Position-only
  damped-least-squares IK (MuJoCo Jacobians, from the arm's initial pose) gives the joint
  angles; the affordance is that configuration's gripper keypoints (below), so every
  planner target is a pose the arm can take. A closed gripper's finger-tip keypoints
  coincide with its TCP keypoint: the planner can tell a grasp affordance from a pre-grasp
  one by the keypoints alone, which is what its ``done`` output relies on.
- **Gripper keypoints** of an arm configuration, P = 3, in the ``cam_high`` image as
  fractions of its width and height (the bundle's convention): the TCP, and the two finger
  tips (TCP +- half the gripper opening along the finger joint's axis), the finger tips
  ordered left to right in the image. Projection uses the URDF camera model
  (``Simulator.camera_intrinsics``) at the ``cam_high_optical_frame`` body pose, so a
  projected point lands on the pixel the renderer draws it at (``test_sim_data_engine``).

The chain of affordances the planner is taught (kept short and explicit): step 0 (no
previous affordance) -> pre-grasp (open fingers); step 1 (previous = the pre-grasp) ->
grasp (closed fingers); step 2 (previous = the grasp) -> ``done``. Arms the task does not
use are inactive; their keypoints are the gripper keypoints of the task's initial pose (a
"stay" target).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import mujoco
import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.policy.observation import resize_rgb
from sim2real_vla_ros.core.task.tasks import TaskSpec
from sim2real_vla_ros.sim.objects import object_model
from sim2real_vla_ros.sim.simulator import Simulator
from sim2real_vla_ros.core.vocabulary import ARMS

TOP_CAMERA = "cam_high"
KEYPOINTS = 3
# Random arm configuration around the (jittered) initial pose: uniform +- this per joint 1-6.
ARM_NOISE_RAD = np.array([0.3, 0.3, 0.3, 0.4, 0.3, 0.5])
# Sampled joints stay this fraction of each joint's range inside its limits (keeps the action
# statistics, and chunks a little beyond them, inside the URDF limits).
LIMIT_MARGIN = 0.03
PRE_GRASP_HEIGHT_M = 0.12
# Share of the scenes in which each arm the task uses is somewhere on its way to a key pose
# (a random point between a random configuration and the pre-grasp or grasp IK solution),
# so the data cover the configurations an arm passes through while it executes the chain.
APPROACH_SHARE = 0.5
IK_ITERATIONS = 30
IK_DAMPING = 1e-3
IK_TOLERANCE_M = 1e-3

# The object each arm handles first, per task (tasks.yaml `steps`; the arm on whose side the
# object starts). The hand-over task's right arm first meets the pen in the air; a scene has
# no object there, so its first key pose is taken above the holder, where it ends.
FIRST_OBJECT: Dict[str, Dict[str, str]] = {
    "pour_water_single": {"left": "bottle"},
    "pour_water_dual": {"left": "bottle", "right": "cup"},
    "table_rearrangement": {"left": "fork", "right": "spoon"},
    "items_handover_place": {"left": "pen", "right": "holder"},
    "basket_pick_place": {"left": "milk_box", "right": "basket"},
    "pan_open_pick_place": {"left": "lid", "right": "carrot"},
}


class DataEngineError(RuntimeError):
    """The tasks and the data engine disagree (unknown task, object or arm)."""


@dataclass
class SimSample:
    """One rendered simulator scene with everything the reference models are trained on.

    Attributes
    ----------
    task : str
        Task name.
    instruction : str
        The task's instruction.
    images : dict of str to np.ndarray
        Camera name -> uint8 [H, W, 3] RGB at the model size (resized as the camera/mask node does).
    labels : dict of str to np.ndarray
        Camera name -> uint8 [H, W] true class ids (0 = background).
    joints : np.ndarray
        [2, 7] arm configurations (left, right): joints 1-6 (rad) + joint7 (m).
    active : np.ndarray
        [2] 1.0 for the arms the task uses.
    pre_grasp_joints, grasp_joints : np.ndarray
        [2, 7] IK configurations of the two key poses (the initial pose for inactive arms).
    pre_grasp_keypoints, grasp_keypoints : np.ndarray
        [2, P, 2] their gripper keypoints in ``cam_high`` (image fractions).
    ik_residual_m : np.ndarray
        [2, 2] distance (m) between the (pre-grasp, grasp) TCP position asked for and the
        one the IK configuration reaches (0 for inactive arms).
    """

    task: str
    instruction: str
    images: Dict[str, np.ndarray]
    labels: Dict[str, np.ndarray]
    joints: np.ndarray
    active: np.ndarray
    pre_grasp_joints: np.ndarray
    grasp_joints: np.ndarray
    pre_grasp_keypoints: np.ndarray
    grasp_keypoints: np.ndarray
    ik_residual_m: np.ndarray


class TaskScene:
    """One task's :class:`Simulator` plus segmentation, kinematics and projection helpers.

    Parameters
    ----------
    task : TaskSpec
        The task (from ``core.tasks.load_tasks``).
    mask_classes : sequence of str
        The bundle's classes; every object kind of the task must be one of them.
    model_size : (width, height)
        Model image size; labels are rendered at it, images resized to it.
    camera_size : (width, height)
        Render size of the cameras (the dry run's simulator size).
    """

    def __init__(self, task: TaskSpec, mask_classes: Sequence[str], model_size: Tuple[int, int],
                 camera_size: Tuple[int, int] = (320, 240)):
        if task.name not in FIRST_OBJECT:
            raise DataEngineError(f"no first objects for task {task.name!r} in sim_data_engine.FIRST_OBJECT")
        names = {obj.name for obj in task.objects}
        for arm, name in FIRST_OBJECT[task.name].items():
            if name not in names or arm not in task.arms:
                raise DataEngineError(f"FIRST_OBJECT[{task.name!r}][{arm!r}] = {name!r}: the task's objects are "
                                      f"{sorted(names)}, its arms {list(task.arms)}")
        self.task = task
        self.model_size = (int(model_size[0]), int(model_size[1]))
        self.sim = Simulator(task, camera_width=int(camera_size[0]), camera_height=int(camera_size[1]))
        self.model, self.data = self.sim.model, self.sim.data
        self.geom_class = self._geom_classes(list(mask_classes))
        self._segmenter = mujoco.Renderer(self.model, height=self.model_size[1], width=self.model_size[0])
        self._segmenter.enable_segmentation_rendering()
        self._scratch = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos = {side: np.array([m.joint(n).qposadr[0] for n in robot.arm_joint_names(side)])
                          for side in ARMS}
        self._arm_dof = {side: np.array([m.joint(n).dofadr[0] for n in robot.arm_joint_names(side)])
                         for side in ARMS}
        self._mimic_qpos = {side: m.joint(robot.mimic_joint_name(side)).qposadr[0] for side in ARMS}
        self._finger_joint = {side: m.joint(robot.arm_joint_names(side)[-1]).id for side in ARMS}
        self._tcp = {side: m.body(f"{side}_tcp").id for side in ARMS}
        self._limits = {side: robot.arm_limits(side) for side in ARMS}
        self.intrinsics = self.sim.camera_intrinsics()[TOP_CAMERA]
        self.camera_size = (self.sim.camera_width, self.sim.camera_height)
        optical = m.body(f"{TOP_CAMERA}_optical_frame").id
        self._camera_rotation = self.data.xmat[optical].reshape(3, 3).copy()  # fixed on the mast
        self._camera_position = self.data.xpos[optical].copy()

    def _geom_classes(self, mask_classes: list) -> np.ndarray:
        """Class id of every geom: the kind of the object body it belongs to, else 0."""
        kinds = {obj.name: obj.kind for obj in self.task.objects}
        missing = sorted(set(kinds.values()) - set(mask_classes))
        if missing:
            raise DataEngineError(f"task {self.task.name}: object kinds {missing} are not in mask_classes")
        classes = np.zeros(self.model.ngeom, dtype=np.uint8)
        for geom in range(self.model.ngeom):
            body = self.model.body(int(self.model.geom_bodyid[geom])).name
            if body in kinds:
                classes[geom] = mask_classes.index(kinds[body])
        return classes

    # ------------------------------------------------------------------ scene
    def reset(self, seed: int) -> None:
        """New scene (objects and jittered initial arms) from the task's sampler."""
        self.sim.reset(seed)

    def initial_joints(self, side: str) -> np.ndarray:
        """The episode's (jittered) initial 7-vector of an arm."""
        return self.sim.initial_arms[side].copy()

    def sampling_bounds(self, side: str) -> Tuple[np.ndarray, np.ndarray]:
        """Joint bounds of sampled configurations: LIMIT_MARGIN inside the limits (finger: full range)."""
        limits = self._limits[side]
        lower, upper = np.asarray(limits.lower, float).copy(), np.asarray(limits.upper, float).copy()
        margin = LIMIT_MARGIN * (upper - lower)
        lower[:6] += margin[:6]
        upper[:6] -= margin[:6]
        return lower, upper

    def random_configuration(self, side: str, rng: np.random.Generator) -> np.ndarray:
        """A configuration near the initial pose: uniform joint noise, random finger opening."""
        lower, upper = self.sampling_bounds(side)
        q = self.initial_joints(side)
        q[:6] += rng.uniform(-ARM_NOISE_RAD, ARM_NOISE_RAD)
        q[6] = rng.uniform(lower[6], upper[6])
        return np.clip(q, lower, upper)

    def set_arms(self, joints: np.ndarray) -> None:
        """Place both arms ([2, 7]) kinematically and hold them there (servo command = position)."""
        for index, side in enumerate(ARMS):
            q = np.asarray(joints[index], dtype=float)
            self.data.qpos[self._arm_qpos[side]] = q
            self.data.qpos[self._mimic_qpos[side]] = -q[6]  # joint8 mirrors joint7 (URDF mimic)
            self.data.qvel[self._arm_dof[side]] = 0.0
            self.sim.set_arm_command(side, q)
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ images
    def render(self, camera: str) -> Tuple[np.ndarray, np.ndarray]:
        """(RGB at the model size, true labels at the model size) of one camera, now."""
        rgb = resize_rgb(self.sim.render(camera), *self.model_size)
        self._segmenter.update_scene(self.data, camera=camera)
        segmentation = self._segmenter.render()
        geoms, types = segmentation[..., 0], segmentation[..., 1]
        is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (geoms >= 0)
        labels = np.where(is_geom, self.geom_class[np.clip(geoms, 0, None)], 0).astype(np.uint8)
        return rgb, labels

    # ------------------------------------------------------------------ geometry
    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [N, 3] -> ``cam_high`` pixel coordinates [N, 2] at the camera size.

        Pixel centres are integers (OpenCV convention, principal point (w-1)/2, (h-1)/2).
        """
        optical = (np.asarray(points, float) - self._camera_position) @ self._camera_rotation
        K = self.intrinsics
        depth = np.maximum(optical[:, 2], 1e-6)
        return np.stack([K[0, 0] * optical[:, 0] / depth + K[0, 2], K[1, 1] * optical[:, 1] / depth + K[1, 2]], 1)

    def normalised(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates -> image fractions (x / width, y / height), the bundle's keypoints."""
        return np.asarray(pixels, float) / np.array(self.camera_size, float)

    def _kinematics(self, side: str, q7: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(TCP position, finger joint axis) in the world for one arm's configuration."""
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        scratch.qpos[self._arm_qpos[side]] = q7
        scratch.qpos[self._mimic_qpos[side]] = -q7[6]
        mujoco.mj_kinematics(self.model, scratch)
        return scratch.xpos[self._tcp[side]].copy(), scratch.xaxis[self._finger_joint[side]].copy()

    def tcp_position(self, side: str, q7: np.ndarray) -> np.ndarray:
        """World (= robot base) position of an arm's TCP for a configuration."""
        return self._kinematics(side, np.asarray(q7, float))[0]

    def gripper_keypoints(self, side: str, q7: np.ndarray) -> np.ndarray:
        """[P, 2] keypoints (image fractions) of an arm configuration: TCP, then finger tips left to right."""
        tcp, axis = self._kinematics(side, np.asarray(q7, float))
        half_width = robot.finger_to_gripper_width(float(q7[6])) / 2.0
        points = np.stack([tcp, tcp + half_width * axis, tcp - half_width * axis])
        keypoints = self.normalised(self.project(points))
        if keypoints[1, 0] > keypoints[2, 0]:
            keypoints[[1, 2]] = keypoints[[2, 1]]
        return keypoints

    def solve_tcp(self, side: str, target: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Joints 1-6 from ``start`` that bring the TCP to ``target`` (position-only damped least squares).

        Joints stay inside :meth:`sampling_bounds`; an unreachable target gives the closest
        configuration found. The finger keeps ``start``'s value.
        """
        lower, upper = self.sampling_bounds(side)
        q = np.asarray(start, float).copy()
        scratch = self._scratch
        jacobian = np.zeros((3, self.model.nv))
        dofs = self._arm_dof[side][:6]
        for _ in range(IK_ITERATIONS):
            tcp, _axis = self._kinematics(side, q)
            error = np.asarray(target, float) - tcp
            if np.linalg.norm(error) < IK_TOLERANCE_M:
                break
            mujoco.mj_comPos(self.model, scratch)
            mujoco.mj_jacBody(self.model, scratch, jacobian, None, self._tcp[side])
            J = jacobian[:, dofs]
            step = J.T @ np.linalg.solve(J @ J.T + IK_DAMPING * np.eye(3), error)
            q[:6] = np.clip(q[:6] + step, lower[:6], upper[:6])
        return q

    def key_positions(self, side: str) -> Tuple[np.ndarray, np.ndarray]:
        """(pre-grasp, grasp) TCP positions for the arm's first object, from its pose now."""
        name = FIRST_OBJECT[self.task.name][side]
        kind = next(obj.kind for obj in self.task.objects if obj.name == name)
        state = self.sim.object_state(name)
        height = object_model(kind).height
        up = state.rot[:, 2]
        grasp = state.pos + up * (height / 2.0)
        pre_grasp = state.pos + up * height + np.array([0.0, 0.0, PRE_GRASP_HEIGHT_M])
        return pre_grasp, grasp

    # ------------------------------------------------------------------ sample
    def key_poses(self) -> dict:
        """Key poses of the scene now: per arm the pre-grasp and grasp IK configurations and keypoints.

        Returns
        -------
        dict
            ``active`` [2], ``pre_grasp_joints`` / ``grasp_joints`` [2, 7],
            ``pre_grasp_keypoints`` / ``grasp_keypoints`` [2, P, 2], ``ik_residual_m`` [2, 2].
            Arms the task does not use get the initial pose (a "stay" target).
        """
        joints = {"pre_grasp": np.zeros((2, 7)), "grasp": np.zeros((2, 7))}
        active, residual = np.zeros(2), np.zeros((2, 2))
        for index, side in enumerate(ARMS):
            start = self.initial_joints(side)
            start[6] = self._limits[side].upper[6]  # gripper open on the way to a grasp
            if side in FIRST_OBJECT[self.task.name]:
                active[index] = 1.0
                pre_grasp, grasp = self.key_positions(side)
                joints["pre_grasp"][index] = self.solve_tcp(side, pre_grasp, start)
                joints["grasp"][index] = self.solve_tcp(side, grasp, joints["pre_grasp"][index])
                joints["grasp"][index, 6] = self._limits[side].lower[6]  # the gripper closes on the object
                for column, (name, target) in enumerate((("pre_grasp", pre_grasp), ("grasp", grasp))):
                    residual[index, column] = np.linalg.norm(self._kinematics(side, joints[name][index])[0] - target)
            else:
                joints["pre_grasp"][index] = joints["grasp"][index] = self.initial_joints(side)
        result = {"active": active, "ik_residual_m": residual}
        for name, q in joints.items():
            result[f"{name}_joints"] = q
            result[f"{name}_keypoints"] = np.stack([self.gripper_keypoints(side, q[i]) for i, side in enumerate(ARMS)])
        return result

    def sample(self, seed: int, rng: np.random.Generator, cameras: Sequence[str]) -> SimSample:
        """Render one scene (see the module docstring) with the given cameras."""
        self.reset(seed)
        joints = np.stack([self.random_configuration(side, rng) for side in ARMS])
        keys = self.key_poses()
        for index, side in enumerate(ARMS):
            if keys["active"][index] and rng.random() < APPROACH_SHARE:
                key = keys["pre_grasp_joints" if rng.random() < 0.7 else "grasp_joints"][index]
                fraction = rng.uniform(0.0, 1.0)
                joints[index, :6] += fraction * (key[:6] - joints[index, :6])
        self.set_arms(joints)
        images, labels = {}, {}
        for camera in cameras:
            images[camera], labels[camera] = self.render(camera)
        return SimSample(self.task.name, self.task.instruction, images, labels, joints, keys["active"],
                         keys["pre_grasp_joints"], keys["grasp_joints"], keys["pre_grasp_keypoints"],
                         keys["grasp_keypoints"], keys["ik_residual_m"])

    def close(self) -> None:
        """Release the OpenGL contexts."""
        self._segmenter.close()
        self.sim.close()


def configuration_offsets(rng: np.random.Generator, count: int, scale: float) -> np.ndarray:
    """[count, 7] uniform joint offsets: +- scale * ARM_NOISE_RAD on joints 1-6, 0 on the finger."""
    offsets = np.zeros((count, 7))
    offsets[:, :6] = rng.uniform(-1.0, 1.0, size=(count, 6)) * ARM_NOISE_RAD * scale
    return offsets


class SimDataEngine:
    """One :class:`TaskScene` per task; samples scenes of all tasks in turn.

    Parameters
    ----------
    tasks : mapping of str to TaskSpec
        Tasks to sample (``core.tasks.load_tasks``), in the order they are cycled.
    mask_classes, model_size, camera_size
        See :class:`TaskScene`.
    """

    def __init__(self, tasks: Mapping[str, TaskSpec], mask_classes: Sequence[str], model_size: Tuple[int, int],
                 camera_size: Tuple[int, int] = (320, 240)):
        self.scenes = {name: TaskScene(task, mask_classes, model_size, camera_size) for name, task in tasks.items()}

    def samples(self, count: int, rng: np.random.Generator, cameras: Sequence[str] = robot.CAMERAS,
                first_seed: int = 0, tasks: Optional[Sequence[str]] = None) -> list:
        """``count`` samples, tasks in turn, scene seeds ``first_seed``, ``first_seed + 1``, ..."""
        names = list(tasks or self.scenes)
        return [self.scenes[names[i % len(names)]].sample(first_seed + i, rng, cameras) for i in range(count)]

    def close(self) -> None:
        for scene in self.scenes.values():
            scene.close()


__all__ = ["ARMS", "FIRST_OBJECT", "KEYPOINTS", "DataEngineError", "SimDataEngine", "SimSample", "TaskScene",
           "configuration_offsets"]
