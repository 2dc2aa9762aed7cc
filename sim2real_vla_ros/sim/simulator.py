"""The ROS-free simulator core: physics stepping, joint state, commands, rendering, scoring.

:class:`Simulator` owns one MuJoCo model of the CobotMagic with one task's objects
(:mod:`sim2real_vla_ros.sim.scene`). The ROS node (:mod:`sim2real_vla_ros.sim.sim_node`)
only translates messages to and from these calls; tests and benchmarks use it directly.

Conventions: joint vectors for the whole robot follow ``robot.ALL_JOINT_NAMES`` (16 joints,
``left_joint1..8`` then ``right_joint1..8``); per-arm commands are 7 values (joints 1-6 rad +
joint7 finger m); object poses are in the robot base frame, which is the MuJoCo world frame
(the URDF root ``base_link`` is the world origin, the floor is z = 0). Simulated time only
moves forward: a reset restores the state of the episode start, not the clock, so nodes
running on ``/clock`` never see time jump back.

Not thread-safe; the node calls it from its single simulation thread (rendering needs the
OpenGL context of the thread that created the renderer).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Protocol, Sequence, Tuple, Union

import mujoco
import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.control.homing import REST_POSE

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.task.tasks import TaskSpec
from sim2real_vla_ros.sim import scene
from sim2real_vla_ros.sim.objects import object_model
from sim2real_vla_ros.sim.success import ObjectState, SceneSnapshot, make_monitor

# Success monitors sample the scene at 50 Hz of sim time: the shortest criterion (0.5 s of
# pouring) then spans 25 samples, and the cost stays far below the physics.
MONITOR_PERIOD_S = 0.02
RESET_ARMS = ("task_start", "keep")


class ArmController(Protocol):
    """What :meth:`Simulator.step` samples per arm (see sim.controllers)."""

    def command(self, now_s: float) -> Tuple[np.ndarray, np.ndarray]:
        """Desired (7 positions, 7 velocities) at sim time ``now_s``."""


class Simulator:
    """One task's scene in MuJoCo.

    Parameters
    ----------
    task : str or TaskSpec
        Task name from tasks.yaml (``UnknownTaskError`` if unknown) or a loaded task.
    seed : int, optional
        Seed of the first episode; default the task's seed (42). Every :meth:`reset` without
        a seed uses the next integer.
    camera_width, camera_height : int
        Image size of :meth:`render` (all three cameras).
    timestep : float
        Physics step in seconds (<= 0.002).
    shadows : bool
        Render shadows (about 5x slower on a CPU renderer).
    jitter : bool
        Apply the task's initial joint jitter (tasks.jittered_init); off gives Table 6 exactly.
    multisamples : int
        Anti-aliasing samples (0 = off, about 3x faster on a CPU renderer).
    reset_arms : {'task_start', 'keep'}
        Where :meth:`reset` puts the arms. 'task_start': at the task's start pose (Table 6,
        jittered), a teleport. 'keep': the first episode starts at the rest pose
        (core.control.homing.REST_POSE), later resets leave the arms where they are, at rest;
        a homing tool (go_to_start) then moves them to the start pose through the command path,
        as on the robot.
    """

    def __init__(
        self,
        task: Union[str, TaskSpec],
        seed: Optional[int] = None,
        camera_width: int = 320,
        camera_height: int = 240,
        timestep: float = scene.DEFAULT_TIMESTEP_S,
        shadows: bool = False,
        jitter: bool = True,
        multisamples: int = 0,
        reset_arms: str = "task_start",
    ) -> None:
        if reset_arms not in RESET_ARMS:
            raise ValueError(f"reset_arms must be one of {RESET_ARMS}, got {reset_arms!r}")
        self.reset_arms = reset_arms
        self.task: TaskSpec = tasks.get_task(task) if isinstance(task, str) else task
        if seed is not None and (isinstance(seed, bool) or int(seed) != seed or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.model, self.layout = scene.build_model(
            scene.object_kinds_of(self.task.objects), camera_width=camera_width,
            camera_height=camera_height, timestep=timestep, shadows=shadows, multisamples=multisamples,
        )
        self.data = mujoco.MjData(self.model)
        self.camera_width, self.camera_height = int(camera_width), int(camera_height)
        self.shadows = bool(shadows)
        self.jitter = bool(jitter)
        self._index_model()
        self._renderers: Dict[Tuple[int, int], mujoco.Renderer] = {}
        self._commands = {side: (np.zeros(robot.ARM_DOF), np.zeros(robot.ARM_DOF)) for side in robot.ARMS}
        self._monitor = make_monitor(self.task.success, self._object_models)
        self._monitor_every = max(1, int(round(MONITOR_PERIOD_S / self.model.opt.timestep)))
        self._steps_since_monitor = 0
        self.episode = 0
        self.seed: int = -1
        self.sampled_poses: Dict[str, Tuple[float, float, float]] = {}
        self.initial_arms: Dict[str, np.ndarray] = {}
        self._next_seed = int(self.task.seed if seed is None else seed)
        self.reset()

    # ------------------------------------------------------------------ set-up
    def _index_model(self) -> None:
        m = self.model
        joint_ids = [m.joint(name).id for name in robot.ALL_JOINT_NAMES]
        self._qpos_adr = np.array([m.jnt_qposadr[j] for j in joint_ids])
        self._dof_adr = np.array([m.jnt_dofadr[j] for j in joint_ids])
        self._arm_qpos = {side: self._qpos_adr[[robot.ALL_JOINT_NAMES.index(n) for n in robot.arm_joint_names(side)]]
                          for side in robot.ARMS}
        self._mimic_qpos = {side: m.jnt_qposadr[m.joint(robot.mimic_joint_name(side)).id] for side in robot.ARMS}
        self._actuators = {side: np.array([m.actuator(n).id for n in self.layout.actuator_names[side]])
                           for side in robot.ARMS}
        # ctrl = q + (kv / kp) * qdot turns the position servo into PD tracking with feed-forward.
        # A position actuator has gainprm[0] = kp and biasprm = (0, -kp, -kv).
        self._kv_over_kp = {side: -m.actuator_biasprm[ids, 2] / m.actuator_gainprm[ids, 0]
                            for side, ids in self._actuators.items()}
        self._object_body = {name: m.body(name).id for name in self.layout.object_kinds}
        self._object_qpos = {name: m.jnt_qposadr[m.joint(f"{name}_free").id] for name in self.layout.object_kinds}
        self._object_dof = {name: m.jnt_dofadr[m.joint(f"{name}_free").id] for name in self.layout.object_kinds}
        self._object_models = {name: object_model(kind) for name, kind in self.layout.object_kinds.items()}
        self._finger_bodies = {side: (m.body(f"{side}_link7").id, m.body(f"{side}_link8").id) for side in robot.ARMS}

    # ------------------------------------------------------------------- state
    @property
    def sim_time(self) -> float:
        """Simulated time in seconds since the simulator was created (monotonic across resets)."""
        return float(self.data.time)

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def camera_names(self) -> Tuple[str, ...]:
        return self.layout.camera_names

    @property
    def object_names(self) -> Tuple[str, ...]:
        return tuple(self.layout.object_kinds)

    @property
    def table_top_z(self) -> float:
        return self.layout.table_top_z

    def joint_positions(self) -> np.ndarray:
        """Positions of the 16 joints in ``robot.ALL_JOINT_NAMES`` order (rad / m)."""
        return self.data.qpos[self._qpos_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        """Velocities of the 16 joints in ``robot.ALL_JOINT_NAMES`` order."""
        return self.data.qvel[self._dof_adr].copy()

    def joint_efforts(self) -> np.ndarray:
        """Effort on each of the 16 joints: servo force plus the gravity load it carries.

        Gravity is compensated in the model as a separate passive force; a real motor carries
        that load, so it is added to the reported effort (joint8 is passive: its mimic share).
        """
        d = self.data
        return d.qfrc_actuator[self._dof_adr] + d.qfrc_gravcomp[self._dof_adr]

    def arm_positions(self, side: str) -> np.ndarray:
        """The 7-vector of one arm (joints 1-6 + joint7)."""
        return self.data.qpos[self._arm_qpos[side]].copy()

    def arm_command(self, side: str) -> Tuple[np.ndarray, np.ndarray]:
        """The (positions, velocities) currently commanded to one arm."""
        q, v = self._commands[side]
        return q.copy(), v.copy()

    def set_arm_positions(self, side: str, positions: Sequence[float]) -> None:
        """Teleport one arm to ``positions`` (7 values, clipped to the limits), at rest, commanded to stay.

        For tests and tools that need an arm somewhere other than the task's start pose; an
        episode's arms get there by :meth:`reset` or by the homing tool, not by teleporting.
        """
        q = robot.arm_limits(side).clip(positions)
        self.data.qpos[self._arm_qpos[side]] = q
        self.data.qpos[self._mimic_qpos[side]] = -q[-1]
        own = [i for i, name in enumerate(robot.ALL_JOINT_NAMES) if name.startswith(f"{side}_")]
        self.data.qvel[self._dof_adr[own]] = 0.0
        self.set_arm_command(side, q)
        mujoco.mj_forward(self.model, self.data)

    # ---------------------------------------------------------------- commands
    def set_arm_command(self, side: str, positions: Sequence[float], velocities: Optional[Sequence[float]] = None) -> None:
        """Command one arm's servos: desired 7 positions and (optional) velocities.

        Positions are clipped to the URDF limits; ValueError for a wrong length or NaN.
        """
        limits = robot.arm_limits(side)
        q = limits.clip(positions)
        v = np.zeros(robot.ARM_DOF) if velocities is None else np.asarray(velocities, dtype=float).reshape(-1)
        if v.shape != (robot.ARM_DOF,) or not np.all(np.isfinite(v)):
            raise ValueError(f"{side} arm velocities must be {robot.ARM_DOF} finite values, got {velocities!r}")
        self._commands[side] = (q, v)
        self.data.ctrl[self._actuators[side]] = q + self._kv_over_kp[side] * v

    def step(self, n: int = 1, controllers: Optional[Mapping[str, ArmController]] = None) -> None:
        """Advance ``n`` physics steps.

        Parameters
        ----------
        n : int
            Number of steps of :attr:`timestep`.
        controllers : mapping of side to controller, optional
            Sampled before every step (``command(sim_time) -> (q7, v7)``) to set that arm's
            command, as a ros2_control loop at the physics rate would; arms without a
            controller keep their last command.
        """
        m, d = self.model, self.data
        for _ in range(int(n)):
            if controllers:
                now = float(d.time)
                for side, controller in controllers.items():
                    q, v = controller.command(now)
                    self._commands[side] = (q, v)
                    d.ctrl[self._actuators[side]] = q + self._kv_over_kp[side] * v
            mujoco.mj_step(m, d)
            self._steps_since_monitor += 1
            if self._steps_since_monitor >= self._monitor_every:
                self._steps_since_monitor = 0
                self._monitor.update(self.snapshot())

    # ------------------------------------------------------------------- reset
    def reset(self, seed: Optional[int] = None) -> Dict[str, Tuple[float, float, float]]:
        """Start a new episode: resample the scene and put the arms at the task's start pose
        (``reset_arms='keep'``: at the rest pose for the first episode, where they are after).

        Parameters
        ----------
        seed : int, optional
            Episode seed; default: the next one (the first episode uses the constructor's).

        Returns
        -------
        dict of str to (x, y, yaw)
            The sampled object poses (base frame, yaw in rad).
        """
        seed = self._next_seed if seed is None else int(seed)
        rng = np.random.default_rng(seed)
        poses = tasks.sample_scene(self.task, rng)
        if self.jitter:
            left, right = tasks.jittered_init(self.task, rng)
        else:
            left, right = self.task.init_joints("left"), self.task.init_joints("right")
        if self.reset_arms == "keep":  # the rng draws stay the same: the scene does not depend on it
            left, right = ((REST_POSE["left"], REST_POSE["right"]) if self.episode == 0 else
                           (self.arm_positions("left"), self.arm_positions("right")))
        now = self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self.data.time = now  # the clock never goes back (see module docstring)
        for side, q in (("left", left), ("right", right)):
            q = robot.arm_limits(side).clip(q)
            self.data.qpos[self._arm_qpos[side]] = q
            self.data.qpos[self._mimic_qpos[side]] = -q[-1]
            self.set_arm_command(side, q)
            self.initial_arms[side] = q.copy()
        for spec in self.task.objects:
            x, y, yaw = poses[spec.name]
            z = self.table_top_z + scene.PLACEMENT_CLEARANCE_M
            if spec.on is not None:
                z += self._object_models[spec.on].height
            self.set_object_pose(spec.name, (x, y, z), _yaw_quat(yaw))
        mujoco.mj_forward(self.model, self.data)
        self.seed, self._next_seed = seed, seed + 1
        self.episode += 1
        self.sampled_poses = dict(poses)
        self._steps_since_monitor = 0
        self._monitor.reset(self.snapshot())
        return dict(poses)

    # ----------------------------------------------------------------- objects
    def set_object_pose(self, name: str, position: Sequence[float], quat: Sequence[float] = (1, 0, 0, 0)) -> None:
        """Teleport an object (base frame; quaternion w, x, y, z) and zero its velocity."""
        if name not in self._object_qpos:
            raise KeyError(f"no object {name!r}; objects: {list(self._object_qpos)}")
        q = np.asarray(quat, dtype=float)
        adr, dof = self._object_qpos[name], self._object_dof[name]
        self.data.qpos[adr:adr + 3] = np.asarray(position, dtype=float)
        self.data.qpos[adr + 3:adr + 7] = q / np.linalg.norm(q)
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_kinematics(self.model, self.data)

    def object_state(self, name: str) -> ObjectState:
        """Pose of an object's body (origin = the centre of its footprint)."""
        body = self._object_body[name]
        return ObjectState(self.data.xpos[body].copy(), self.data.xmat[body].reshape(3, 3).copy())

    def object_poses(self) -> Dict[str, Dict[str, float]]:
        """``{name: {x, y, z, yaw, tilt_deg}}`` of every object (base frame, yaw in rad)."""
        out = {}
        for name in self._object_body:
            state = self.object_state(name)
            out[name] = {"x": float(state.pos[0]), "y": float(state.pos[1]), "z": float(state.pos[2]),
                         "yaw": state.yaw, "tilt_deg": state.tilt_deg}
        return out

    def grasped_by(self) -> Dict[str, frozenset]:
        """Object name -> sides whose two finger pads both touch it now."""
        d = self.data
        touching: Dict[str, set] = {name: set() for name in self._object_body}
        if d.ncon:
            bodies = self.model.geom_bodyid[d.contact.geom[: d.ncon]]
            body_to_object = {b: n for n, b in self._object_body.items()}
            for side, fingers in self._finger_bodies.items():
                for finger in fingers:
                    for a, b in bodies[np.any(bodies == finger, axis=1)]:
                        other = b if a == finger else a
                        if other in body_to_object:
                            touching[body_to_object[other]].add((side, finger))
        result = {}
        for name, contacts in touching.items():
            result[name] = frozenset(side for side, fingers in self._finger_bodies.items()
                                     if all((side, f) in contacts for f in fingers))
        return result

    @property
    def object_models(self) -> Dict[str, object]:
        """Object name -> its :class:`~sim2real_vla_ros.sim.objects.ObjectModel` (sizes, sites, container)."""
        return self._object_models

    @property
    def start_objects(self) -> Mapping[str, ObjectState]:
        """Object states when the success monitor started this episode (now, before its first update)."""
        start = self._monitor.start
        return start.objects if start is not None else self.snapshot().objects

    def snapshot(self) -> SceneSnapshot:
        """Everything a success monitor needs, now."""
        return SceneSnapshot(
            time=self.sim_time,
            objects={name: self.object_state(name) for name in self._object_body},
            grasped_by=self.grasped_by(),
            table_top_z=self.table_top_z,
        )

    def task_status(self) -> Dict[str, object]:
        """Privileged task status: success, per-criterion values, object poses (JSON-ready)."""
        status = self._monitor.status()
        return {
            "task": self.task.name,
            "episode": self.episode,
            "seed": self.seed,
            "sim_time": round(self.sim_time, 4),
            "success": status["success"],
            "check": status["type"],
            "criteria": status["criteria"],
            "objects": {name: {k: round(v, 4) for k, v in pose.items()} for name, pose in self.object_poses().items()},
            "sampled": {name: {"x": round(p[0], 4), "y": round(p[1], 4), "yaw": round(p[2], 4)}
                        for name, p in self.sampled_poses.items()},
        }

    # --------------------------------------------------------------- rendering
    def render(self, camera: str, width: Optional[int] = None, height: Optional[int] = None) -> np.ndarray:
        """RGB image (uint8, height x width x 3) of a named camera.

        The size defaults to the configured one; another size must keep its aspect ratio
        (the cameras' vertical field of view was set for it).
        """
        if camera not in self.layout.camera_names:
            raise KeyError(f"no camera {camera!r}; cameras: {list(self.layout.camera_names)}")
        width = self.camera_width if width is None else int(width)
        height = self.camera_height if height is None else int(height)
        if abs(width * self.camera_height - height * self.camera_width) > max(width, height) * 0.01 * self.camera_height:
            raise ValueError(f"render size {width}x{height} must keep the configured aspect ratio "
                             f"{self.camera_width}x{self.camera_height}")
        renderer = self._renderer(width, height)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def camera_intrinsics(self, width: Optional[int] = None, height: Optional[int] = None) -> Dict[str, np.ndarray]:
        """Camera name -> 3x3 K at the given size (the model :meth:`render` uses)."""
        specs = robot.camera_specs(width or self.camera_width, height or self.camera_height)
        return {name: spec.intrinsics() for name, spec in specs.items()}

    def _renderer(self, width: int, height: int) -> mujoco.Renderer:
        key = (width, height)
        if key not in self._renderers:
            if width > self.model.vis.global_.offwidth or height > self.model.vis.global_.offheight:
                raise ValueError(f"render size {width}x{height} exceeds the offscreen buffer "
                                 f"{self.model.vis.global_.offwidth}x{self.model.vis.global_.offheight}")
            renderer = mujoco.Renderer(self.model, height=height, width=width)
            flags = renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.shadows)
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0  # planar reflections: a second pass, no benefit here
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._renderers[key] = renderer
        return self._renderers[key]

    def close(self) -> None:
        """Release the renderers' OpenGL contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])
