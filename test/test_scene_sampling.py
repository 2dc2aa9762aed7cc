"""Scene sampling invariants: whole objects on the table, apart, clear of the robot.

The footprints sampling uses are checked against the simulator's geometry, and the sampled
scenes against physics: after reset and a short settle nothing is pushed up, tilted or
touching the robot.
"""
import math

import numpy as np
import pytest

from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.sim.objects import object_model

SEEDS = 300


def _geom_footprint_extent(kind):
    """Largest |x| and |y| of the object's geoms (body frame) from sim/objects.py's parts."""
    model = object_model(kind)
    xs, ys = [], []
    for part in model.parts:
        size = part.size
        if part.shape == "box":
            hx, hy = size[0], size[1]
        elif part.shape in ("cylinder", "sphere"):
            hx = hy = size[0]
        elif part.shape == "capsule":
            hx, hy = (size[1] + size[0], size[0]) if abs(part.pitch) > 0.1 else (size[0], size[0])
        else:  # ellipsoid
            hx, hy = size[0], size[1]
        c, s = abs(math.cos(part.yaw)), abs(math.sin(part.yaw))
        ex, ey = c * hx + s * hy, s * hx + c * hy
        xs += [part.pos[0] - ex, part.pos[0] + ex]
        ys += [part.pos[1] - ey, part.pos[1] + ey]
    return min(xs), max(xs), min(ys), max(ys)


@pytest.mark.parametrize("kind", [k for k in tasks.OBJECT_KINDS if k != "lid"])
def test_footprints_cover_the_simulated_geometry(kind):
    x0, x1, y0, y1 = _geom_footprint_extent(kind)
    shapes = tasks.footprint_polygons(kind, (0.0, 0.0, 0.0))
    lows = [s[1] - s[2] if s[0] == "disc" else s[1].min(axis=0) for s in shapes]
    highs = [s[1] + s[2] if s[0] == "disc" else s[1].max(axis=0) for s in shapes]
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    assert low[0] <= x0 + 1e-3 and high[0] >= x1 - 1e-3, (kind, low, high, (x0, x1))
    assert low[1] <= y0 + 1e-3 and high[1] >= y1 - 1e-3, (kind, low, high, (y0, y1))


@pytest.mark.parametrize("task_name", sorted(tasks.load_tasks()))
def test_sampled_scenes_keep_whole_objects_on_the_table_and_apart(task_name):
    task = tasks.get_task(task_name)
    table = tasks._default_table()
    free = [o for o in task.objects if o.on is None]
    for seed in range(SEEDS):
        scene = tasks.sample_scene(task, np.random.default_rng(seed))
        assert tasks.scene_problem(free, scene, table) is None
        for obj in free:
            for shape in tasks.footprint_polygons(obj.kind, scene[obj.name]):
                pts = [shape[1] - shape[2], shape[1] + shape[2]] if shape[0] == "disc" else list(shape[1])
                for p in pts:
                    assert table[0] + tasks.SCENE_EDGE_MARGIN_M - 1e-9 <= p[0] <= table[1] - tasks.SCENE_EDGE_MARGIN_M + 1e-9


def test_footprint_gap_geometry():
    rect = ("rect", np.array([[0.1, 0.01], [-0.1, 0.01], [-0.1, -0.01], [0.1, -0.01]]))
    disc = ("disc", np.array([0.0, 0.05]), 0.02)
    assert tasks._shape_gap(rect, disc) == pytest.approx(0.02)
    assert tasks._shape_gap(disc, ("disc", np.array([0.0, 0.1]), 0.02)) == pytest.approx(0.01)
    turned = ("rect", tasks.footprint_polygons("fork", (0.0, 0.05, math.pi / 2))[0][1])
    assert tasks._shape_gap(rect, turned) < 0  # a fork across another overlaps it


@pytest.mark.slow
def test_rearrangement_scenes_settle_without_touching_the_robot():
    """The issue's case: forks/spoons pushed up or resting on the robot base at reset."""
    from sim2real_vla_ros.sim.simulator import Simulator

    sim = Simulator("table_rearrangement", camera_width=64, camera_height=48)
    robot_bodies = {sim.model.body(n).id for n in ("base_link",)}
    for seed in range(20):
        sim.reset(seed)
        z0 = {n: sim.object_state(n).pos[2] for n in sim.object_names}
        sim.step(150)  # 0.3 s
        for name in sim.object_names:
            state = sim.object_state(name)
            assert state.pos[2] - z0[name] < 0.002, (seed, name)
            assert state.tilt_deg < 3.0, (seed, name)
        for i in range(sim.data.ncon):
            b1, b2 = (sim.model.geom_bodyid[g] for g in sim.data.contact.geom[i])
            assert not ({b1, b2} & robot_bodies), seed
