"""Domain randomisation from the paper's feature table, seeded and recorded per episode.

Features (Sim2Real-VLA appendix / DexSim): lighting (intensity, direction, colour), object,
table and background colours and textures, camera pose jitter, object pose ranges and initial
joint jitter. The last two are the task sampling's own (``tasks.sample_scene`` over Table 5,
``tasks.jittered_init`` +-2 cm): :meth:`DomainRandomizer.sample` records the sampled values
with the rest so one JSON record reproduces an episode's appearance.

:meth:`DomainRandomizer.apply` edits the compiled model's visual fields only (light, rgba,
texture choice, camera pose): physics is untouched. It always starts from the defaults
captured at construction, so episodes do not accumulate changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import mujoco
import numpy as np


@dataclass(frozen=True)
class RandomizationRanges:
    """Ranges of each feature (uniform)."""

    light_scale: tuple = (0.5, 1.5)          # diffuse intensity factor of every light
    light_tint: float = 0.15                 # per-channel colour change of the lights
    light_dir_jitter: float = 0.3            # added to each light direction component (then normalised)
    ambient: tuple = (0.15, 0.5)             # headlight ambient
    object_hue_jitter: float = 0.25          # per-channel rgb change of each object geom colour
    table_rgb: tuple = ((0.35, 0.25, 0.15), (0.9, 0.8, 0.7))
    background_rgb: tuple = ((0.3, 0.3, 0.3), (0.95, 0.95, 0.95))
    floor_textures: tuple = ("checker", "flat")
    camera_pos_jitter_m: float = 0.01        # per axis
    camera_rot_jitter_rad: float = 0.03      # per axis (small-angle rotation)


class DomainRandomizer:
    """Samples and applies the visual randomisation of one simulator.

    Parameters
    ----------
    sim : Simulator
        Its ``model`` is edited in place by :meth:`apply`.
    ranges : RandomizationRanges
    """

    def __init__(self, sim, ranges: Optional[RandomizationRanges] = None) -> None:
        self.sim = sim
        self.ranges = ranges or RandomizationRanges()
        m = sim.model
        self._defaults = {
            "light_diffuse": m.light_diffuse.copy(), "light_dir": m.light_dir.copy(),
            "geom_rgba": m.geom_rgba.copy(), "cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(),
            "mat_rgba": m.mat_rgba.copy(), "ambient": m.vis.headlight.ambient.copy(),
        }
        body_of = m.geom_bodyid
        names = [m.body(b).name for b in body_of]
        self.object_geoms: Dict[str, List[int]] = {
            obj: [g for g in range(m.ngeom) if names[g] == obj] for obj in sim.object_names}
        self.table_geoms = [g for g in range(m.ngeom) if names[g] == "table_link"]
        self.wall_geoms = [m.geom(n).id for n in ("wall_front", "wall_back", "wall_left", "wall_right")]
        self.floor_geom = m.geom("floor").id
        self.floor_material = m.geom_matid[self.floor_geom]

    def sample(self, rng: np.random.Generator) -> Dict[str, object]:
        """One episode's parameters, JSON-ready."""
        r, m = self.ranges, self.sim.model
        return {
            "light_scale": [float(rng.uniform(*r.light_scale)) for _ in range(m.nlight)],
            "light_tint": rng.uniform(-r.light_tint, r.light_tint, (m.nlight, 3)).round(4).tolist(),
            "light_dir_jitter": rng.uniform(-r.light_dir_jitter, r.light_dir_jitter, (m.nlight, 3)).round(4).tolist(),
            "ambient": float(rng.uniform(*r.ambient)),
            "object_rgb_delta": {obj: rng.uniform(-r.object_hue_jitter, r.object_hue_jitter, 3).round(4).tolist()
                                 for obj in self.object_geoms},
            "table_rgb": rng.uniform(*r.table_rgb).round(4).tolist(),
            "background_rgb": rng.uniform(*r.background_rgb).round(4).tolist(),
            "floor_texture": str(rng.choice(r.floor_textures)),
            "camera_pos_delta": {c: rng.uniform(-r.camera_pos_jitter_m, r.camera_pos_jitter_m, 3).round(5).tolist()
                                 for c in self.sim.camera_names},
            "camera_rot_delta": {c: rng.uniform(-r.camera_rot_jitter_rad, r.camera_rot_jitter_rad, 3).round(5).tolist()
                                 for c in self.sim.camera_names},
        }

    def apply(self, params: Dict[str, object]) -> None:
        m, d = self.sim.model, self._defaults
        m.light_diffuse[:] = d["light_diffuse"]
        m.light_dir[:] = d["light_dir"]
        m.geom_rgba[:] = d["geom_rgba"]
        m.cam_pos[:] = d["cam_pos"]
        m.cam_quat[:] = d["cam_quat"]
        m.mat_rgba[:] = d["mat_rgba"]
        for i in range(m.nlight):
            m.light_diffuse[i] = np.clip(d["light_diffuse"][i] * params["light_scale"][i] + params["light_tint"][i], 0, 1)
            direction = d["light_dir"][i] + np.asarray(params["light_dir_jitter"][i])
            m.light_dir[i] = direction / np.linalg.norm(direction)
        m.vis.headlight.ambient[:] = params["ambient"]
        for obj, geoms in self.object_geoms.items():
            delta = np.asarray(params["object_rgb_delta"][obj])
            for g in geoms:
                m.geom_rgba[g, :3] = np.clip(d["geom_rgba"][g, :3] + delta, 0, 1)
        for g in self.table_geoms:
            m.geom_rgba[g, :3] = params["table_rgb"]
        for g in self.wall_geoms:
            m.geom_rgba[g, :3] = params["background_rgb"]
        if self.floor_material >= 0:
            # "flat": the checker texture washed out by the material colour; "checker": as built.
            m.mat_rgba[self.floor_material] = d["mat_rgba"][self.floor_material] if params["floor_texture"] == "checker" \
                else np.array([*np.asarray(params["background_rgb"]) * 0.6, 1.0])
        for i, cam in enumerate(self.sim.camera_names):
            cid = m.camera(cam).id
            m.cam_pos[cid] = d["cam_pos"][cid] + np.asarray(params["camera_pos_delta"][cam])
            delta_q = np.zeros(4)
            mujoco.mju_axisAngle2Quat(delta_q, _unit(params["camera_rot_delta"][cam]),
                                      float(np.linalg.norm(params["camera_rot_delta"][cam])))
            out = np.zeros(4)
            mujoco.mju_mulQuat(out, d["cam_quat"][cid], delta_q)
            m.cam_quat[cid] = out
        # Camera and light world poses are computed by the kinematics pass: refresh them now.
        mujoco.mj_forward(m, self.sim.data)

    def reset(self, seed: int) -> Dict[str, object]:
        """Reset the simulator to episode ``seed`` and apply randomisation from the same seed.

        Returns the record: the sampled visual parameters plus the scene sampling's object
        poses and initial joints (so the record alone describes the episode).
        """
        poses = self.sim.reset(seed)
        params = self.sample(np.random.default_rng([int(seed), 0xD0A1]))
        self.apply(params)
        params["seed"] = int(seed)
        params["object_poses"] = {k: [round(float(v), 5) for v in p] for k, p in poses.items()}
        params["initial_joints"] = {side: [round(float(v), 5) for v in q] for side, q in self.sim.initial_arms.items()}
        return params


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.array([1.0, 0.0, 0.0])
