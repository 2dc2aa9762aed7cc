"""config/tasks.yaml and core.tasks: the paper's six tasks, scene sampling, init joints."""
import copy
import dataclasses
import math

import numpy as np
import pytest
import yaml

from paper_tables import TABLE5
from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.task import tasks
from sim2real_vla_ros.core.task.tasks import (
    ObjectSpec,
    SceneSamplingError,
    TaskConfigError,
    UnknownTaskError,
)

# Written out from the paper (seed), independent of tasks.yaml:
# Table 2 step limits, Table 1 arm type, Table 5 (x range, y range, yaw range in degrees).
STEP_LIMITS = {
    "pour_water_single": 200, "pour_water_dual": 250, "table_rearrangement": 250,
    "items_handover_place": 400, "basket_pick_place": 400, "pan_open_pick_place": 550,
}
TABLE6_FIRST_ROW = [-0.3, 0.3, 1.0, 1.0, -1.2, -1.2, 0.0, 0.0, 0.6, 0.6, 0.0, 0.0, 0.05, 0.05, 0.05, 0.05]


@pytest.fixture(scope="module")
def all_tasks():
    return tasks.load_tasks()


@pytest.fixture()
def raw_document():
    with open(tasks.default_tasks_path(), encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def write_yaml(tmp_path, document):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------- content
def test_six_tasks_with_paper_step_limits_arms_and_seed(all_tasks):
    assert list(all_tasks) == list(STEP_LIMITS)
    for name, task in all_tasks.items():
        assert task.name == name
        assert task.step_limit == STEP_LIMITS[name]
        assert task.seed == 42 and task.jitter_m == pytest.approx(0.02)
        assert task.arms == (("left",) if name == "pour_water_single" else ("left", "right"))
        assert len(task.steps) >= 3 and all(isinstance(step, str) for step in task.steps)
        assert task.success["type"] in tasks.SUCCESS_TYPES
    assert tasks.default_task_name() == "pour_water_single"
    assert len(all_tasks["pour_water_dual"].steps) == 7  # Table 1 decomposition


def test_instructions_are_unique_and_map_back_to_their_task(all_tasks):
    instructions = [task.instruction for task in all_tasks.values()]
    assert len({text.lower() for text in instructions}) == len(instructions)
    for task in all_tasks.values():
        assert tasks.task_for_instruction(task.instruction) is tasks.get_task(task.name)
        shouted = "  " + task.instruction.upper().rstrip(".") + "!  "
        assert tasks.task_for_instruction(shouted).name == task.name
        assert tasks.task_for_instruction(task.name).name == task.name
    with pytest.raises(UnknownTaskError, match="no task matches") as info:
        tasks.task_for_instruction("juggle three oranges")
    assert all_tasks["pour_water_single"].instruction in str(info.value)


def test_objects_match_table5(all_tasks):
    for name, expected in TABLE5.items():
        task = all_tasks[name]
        free = {obj.name: obj for obj in task.objects if obj.on is None}
        assert set(free) == set(expected)
        for obj_name, (x_range, y_range, yaw_range) in expected.items():
            obj = free[obj_name]
            assert obj.kind in tasks.OBJECT_KINDS
            assert obj.x_range == pytest.approx(x_range)
            assert obj.y_range == pytest.approx(y_range)
            assert obj.yaw_range_deg == pytest.approx(yaw_range)
    lid = all_tasks["pan_open_pick_place"].object("lid")
    assert lid.kind == "lid" and lid.on == "pan"


def test_sample_scene_stays_inside_table5_ranges_for_200_seeds(all_tasks):
    for name, expected in TABLE5.items():
        task = all_tasks[name]
        for seed in range(200):
            scene = tasks.sample_scene(task, np.random.default_rng(seed))
            assert set(scene) == {obj.name for obj in task.objects}
            for obj_name, (x_range, y_range, yaw_range) in expected.items():
                x, y, yaw = scene[obj_name]
                assert x_range[0] <= x <= x_range[1] and y_range[0] <= y <= y_range[1]
                assert math.radians(yaw_range[0]) - 1e-12 <= yaw <= math.radians(yaw_range[1]) + 1e-12
            free = [o for o in task.objects if o.on is None]
            assert tasks.scene_problem(free, scene, tasks._default_table()) is None
        if name == "pan_open_pick_place":
            assert scene["lid"] == scene["pan"]


def test_sample_scene_is_reproducible_and_varies_with_the_seed(all_tasks):
    task = all_tasks["table_rearrangement"]
    first = tasks.sample_scene(task, np.random.default_rng(42))
    assert tasks.sample_scene(task, np.random.default_rng(42)) == first
    assert tasks.sample_scene(task, np.random.default_rng(43)) != first


def test_impossible_scene_raises_naming_task_and_objects(all_tasks):
    base = all_tasks["pour_water_single"]
    squeezed = dataclasses.replace(base, name="squeezed", objects=(
        ObjectSpec("bottle", "bottle", (0.7, 0.7), (0.0, 0.0), (0, 0)),
        ObjectSpec("cup", "cup", (0.7, 0.72), (0.0, 0.01), (0, 0)),
    ))
    with pytest.raises(SceneSamplingError, match=r"'squeezed'.*bottle and cup"):
        tasks.sample_scene(squeezed, np.random.default_rng(0))


# -------------------------------------------------------------------- init joints
def test_init_joints_are_the_converted_table6_rows_within_limits(all_tasks):
    pour = all_tasks["pour_water_single"]
    assert list(pour.init_source16) == TABLE6_FIRST_ROW
    # Interleaved reading, fingers 0.05 clamped to the 0.035 m joint7 limit.
    np.testing.assert_allclose(pour.init_joints("left"), [-0.3, 1.0, -1.2, 0.0, 0.6, 0.0, 0.035])
    np.testing.assert_allclose(pour.init_joints("right"), [0.3, 1.0, -1.2, 0.0, 0.6, 0.0, 0.035])
    for task in all_tasks.values():
        left, right, _ = robot.interleaved16_to_arms(task.init_source16)
        np.testing.assert_allclose(task.init_joints("left"), left)
        np.testing.assert_allclose(task.init_joints("right"), right)
        for side in ("left", "right"):
            assert robot.arm_limits(side).contains(task.init_joints(side))


def test_jittered_init_moves_the_tcp_within_the_jitter_box(all_tasks):
    task = all_tasks["table_rearrangement"]
    first = tasks.jittered_init(task, np.random.default_rng(7))
    second = tasks.jittered_init(task, np.random.default_rng(7))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    moved = []
    for seed in range(10):
        left, right = tasks.jittered_init(task, np.random.default_rng(seed))
        for side, q in (("left", left), ("right", right)):
            assert robot.arm_limits(side).contains(q)
            assert q[6] == task.init_joints(side)[6]  # gripper untouched
            delta = tasks.tcp_position(side, q) - tasks.tcp_position(side, task.init_joints(side))
            assert np.all(np.abs(delta) <= task.jitter_m + 1e-5)
            moved.append(np.linalg.norm(delta))
    assert max(moved) > 0.005


def test_zero_jitter_returns_the_table6_pose(all_tasks):
    task = dataclasses.replace(all_tasks["pour_water_dual"], jitter_m=0.0)
    left, right = tasks.jittered_init(task, np.random.default_rng(0))
    np.testing.assert_allclose(left, task.init_joints("left"))
    np.testing.assert_allclose(right, task.init_joints("right"))


# --------------------------------------------------------------- errors
def test_unknown_task_lists_valid_names(all_tasks):
    with pytest.raises(UnknownTaskError) as info:
        tasks.get_task("pour_juice")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "pour_juice" in message and all(name in message for name in all_tasks)


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda d: d["tasks"]["pour_water_dual"].pop("step_limit"), ["'pour_water_dual'", "'step_limit'", "missing"]),
        (lambda d: d["tasks"]["pour_water_single"]["objects"][0].update(x_range=[0.9, 0.7]),
         ["'pour_water_single'", "objects[bottle].x_range", "greater than"]),
        (lambda d: d["tasks"]["table_rearrangement"]["objects"][1].update(kind="knife"),
         ["'table_rearrangement'", "objects[fork].kind", "knife"]),
        (lambda d: d["tasks"]["basket_pick_place"]["objects"][0].pop("yaw_range_deg"),
         ["'basket_pick_place'", "objects[milk_box].yaw_range_deg"]),
        (lambda d: d["tasks"]["items_handover_place"].update(arms=["middle"]), ["'items_handover_place'", "'arms'"]),
        (lambda d: d["tasks"]["pan_open_pick_place"]["init_joints"].update(left=[0.0] * 7),
         ["'pan_open_pick_place'", "init_joints.left", "interleaved16_to_arms"]),
        (lambda d: d["tasks"]["pan_open_pick_place"]["init_joints"]["source_interleaved16"].__setitem__(4, 1.0),
         ["'pan_open_pick_place'", "init_joints.source_interleaved16"]),
        (lambda d: d["tasks"]["pour_water_single"]["success"].update(receiver="mug"),
         ["'pour_water_single'", "success.receiver", "mug"]),
        (lambda d: d["tasks"]["pour_water_single"]["success"].update(type="teleport"),
         ["'pour_water_single'", "success.type"]),
        (lambda d: d["tasks"]["pour_water_dual"].update(instruction=d["tasks"]["pour_water_single"]["instruction"]),
         ["'pour_water_dual'", "'instruction'", "pour_water_single"]),
        (lambda d: d["tasks"]["pour_water_single"].update(step_limit=-5), ["'pour_water_single'", "'step_limit'"]),
    ],
)
def test_malformed_tasks_yaml_names_task_and_field(tmp_path, raw_document, mutate, fragments):
    document = copy.deepcopy(raw_document)
    mutate(document)
    with pytest.raises(TaskConfigError) as info:
        tasks.load_tasks(write_yaml(tmp_path, document))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unreadable_or_empty_files_raise_config_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [unclosed", encoding="utf-8")
    with pytest.raises(TaskConfigError, match="cannot read"):
        tasks.load_tasks(str(broken))
    with pytest.raises(TaskConfigError, match="cannot read"):
        tasks.load_tasks(str(tmp_path / "absent.yaml"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("tasks: {}\n", encoding="utf-8")
    with pytest.raises(TaskConfigError, match="non-empty 'tasks'"):
        tasks.load_tasks(str(empty))
