"""Scripted experts of the data engine (sim/data_engine): the three newer tasks' experts
succeed on seeded episodes by the simulator's own privileged check, within the joint limits;
the basket's carry bar is graspable and every sampled basket scene is reachable."""
from __future__ import annotations

import numpy as np
import pytest

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim import objects
from sim2real_vla_ros.sim.data_engine import actions as ab
from sim2real_vla_ros.sim.data_engine.expert import run_expert_episode
from sim2real_vla_ros.sim.data_engine.reachability import basket_scene_reachable
from sim2real_vla_ros.sim.data_engine.scripts import SCRIPTS
from sim2real_vla_ros.sim.simulator import Simulator


@pytest.fixture(scope="module")
def sims():
    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = Simulator(task, camera_width=64, camera_height=48)
        return cache[task]

    return get


def test_every_task_has_an_expert():
    assert set(SCRIPTS) == set(tasks.load_tasks())


@pytest.mark.slow
@pytest.mark.parametrize("task,seed", [("items_handover_place", 1), ("basket_pick_place", 2), ("pan_open_pick_place", 3)])
def test_new_experts_succeed_on_a_seeded_episode(sims, task, seed):
    result = run_expert_episode(sims(task), seed)
    assert result.success, (result.failed_subgoal, result.status)
    assert result.failed_subgoal is None
    assert result.limit_violations == 0


def test_basket_carry_bar_fits_the_gripper_and_keeps_clear_of_the_item():
    model = objects.object_model("basket")
    bar = next(p for p in model.parts if p.shape == "box" and p.size[0] > 0.1 and p.pos[2] > model.height)
    half_y, half_z = bar.size[1], bar.size[2]
    # Fits between the open fingers (joint7 0.035 m per finger) with room on each side, and is
    # wide enough that the closed servo presses hard (1000 N/m times half the width).
    assert 2 * half_y < 2 * ab.OPEN - 0.02
    assert 1000.0 * half_y >= 12.0
    assert half_z >= 0.01
    # Within the basket's outline (its scene-sampling footprint) ...
    assert abs(bar.pos[1]) + half_y <= model.container.half_extents[1]
    assert bar.size[0] <= tasks.KIND_FOOTPRINT["basket"][0][3] + 1e-9
    # ... and the item's part of the basket (+y of the bar) holds the milk box with a gap.
    box = objects.object_model("milk_box")
    box_half_diag = float(np.hypot(box.parts[0].size[0], box.parts[0].size[1]))
    free = model.container.half_extents[1] - (bar.pos[1] + half_y)
    assert free >= 2 * box_half_diag
    assert model.sites["handle"] == pytest.approx((0.0, bar.pos[1], bar.pos[2]))


@pytest.mark.slow
def test_sampled_basket_scenes_are_reachable(sims):
    sim = sims("basket_pick_place")
    for seed in range(16):
        sim.reset(seed)
        assert basket_scene_reachable(sim) == {"milk_box": True, "basket": True}, seed
