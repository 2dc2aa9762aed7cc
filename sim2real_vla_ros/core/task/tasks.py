"""The paper's six manipulation tasks: loading ``config/tasks.yaml``, scene sampling, init joints.

ROS-free. The simulator uses :func:`get_task`, :func:`sample_scene` and :func:`jittered_init`
on every ``/sim/reset``; nodes that receive an instruction use :func:`task_for_instruction`.

Conventions: object poses are ``(x, y, yaw)`` in the robot base frame (metres, radians);
per-arm joint vectors are 7 values, joints 1-6 (rad) + joint7 (one finger, m), as in
:mod:`sim2real_vla_ros.core.robot`.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import yaml
from sim2real_vla_ros.core.vocabulary import ARMS

OBJECT_KINDS = (
    "bottle", "cup", "plate", "fork", "spoon", "pen", "holder", "milk_box", "basket", "pan", "lid", "carrot",
)
SUCCESS_TYPES = ("pour", "pour_dual", "beside", "inside", "basket", "pan")
# Keys of a `success` section whose value must name one of the task's objects.
SUCCESS_OBJECT_KEYS = ("pourer", "receiver", "reference", "item", "container", "pan", "lid")
TASK_FIELDS = ("title", "instruction", "arms", "steps", "step_limit", "objects", "init_joints", "success")

# Footprint of each kind on the table, in the object's frame (x along its long axis, origin at
# the centre of its footprint; sim/objects.py builds the same shapes): ("disc", cx, cy, r) or
# ("rect", cx, cy, half_x, half_y). Sampling keeps whole footprints on the table, clear of the
# robot and of each other (test_tasks checks these against the simulator's geometry).
KIND_FOOTPRINT = {
    "bottle": (("disc", 0.0, 0.0, 0.030),),
    "cup": (("disc", 0.0, 0.0, 0.031),),
    "plate": (("disc", 0.0, 0.0, 0.100),),
    "fork": (("rect", 0.0, 0.0, 0.090, 0.012),),
    "spoon": (("rect", 0.0, 0.0, 0.090, 0.020),),
    "pen": (("rect", 0.0, 0.0, 0.072, 0.0056),),
    "holder": (("rect", 0.0, 0.0, 0.040, 0.040),),
    "milk_box": (("rect", 0.0, 0.0, 0.028, 0.0205),),
    "basket": (("rect", 0.0, 0.0, 0.116, 0.086),),
    "pan": (("disc", 0.0, 0.0, 0.100), ("rect", 0.155, 0.0, 0.060, 0.012)),
    "lid": (),
    "carrot": (("rect", -0.011, 0.0, 0.071, 0.015),),
}
# Gap kept between footprints, and between a footprint and the table's edges. The table's near
# edge (x_min) is 1 cm in front of the robot body, so an object inside it is clear of the robot.
SCENE_OBJECT_GAP_M = 0.01
SCENE_EDGE_MARGIN_M = 0.01
SCENE_MAX_ATTEMPTS = 1000
JITTER_IK_ITERATIONS = 8


class TaskConfigError(ValueError):
    """tasks.yaml is malformed; the message names the task and the field."""


class UnknownTaskError(KeyError):
    """A task name or instruction that is not in tasks.yaml; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its argument
        return str(self.args[0]) if self.args else ""


class SceneSamplingError(RuntimeError):
    """No collision-free object placement found within the attempt budget."""


@dataclass(frozen=True)
class ObjectSpec:
    """One table-top object and its sampling ranges (Table 5).

    ``on`` names another object this one rests on (same x, y, yaw; e.g. the pan's lid; key
    ``rests_on`` in the YAML); such an object has no ranges of its own (they are copied from
    the supporting object).
    """

    name: str
    kind: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    yaw_range_deg: tuple[float, float]
    on: Optional[str] = None


@dataclass(frozen=True, eq=False)  # eq=False: identity hash, `success` is a dict
class TaskSpec:
    """A task from tasks.yaml. Joint vectors are per-arm 7-vectors (joints 1-6 + joint7)."""

    name: str
    instruction: str
    arms: tuple[str, ...]
    steps: tuple[str, ...]
    objects: tuple[ObjectSpec, ...]
    init_left: tuple[float, ...]
    init_right: tuple[float, ...]
    step_limit: int
    seed: int
    jitter_m: float
    success: Mapping[str, Any]
    title: str = ""
    init_source16: tuple[float, ...] = field(default=(), repr=False)

    def object(self, name: str) -> ObjectSpec:
        """The object called ``name`` (KeyError naming the task's objects otherwise)."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"task {self.name!r} has no object {name!r}; objects: {[o.name for o in self.objects]}")

    def init_joints(self, side: str) -> np.ndarray:
        """Un-jittered initial 7-vector of arm ``side`` ('left' or 'right')."""
        if side not in ARMS:
            raise ValueError(f"side must be one of {ARMS}, got {side!r}")
        return np.array(self.init_left if side == "left" else self.init_right, dtype=float)


# ------------------------------------------------------------------------------- loading
def default_tasks_path() -> str:
    """Installed ``config/tasks.yaml`` (through the ament index)."""
    from sim2real_vla_ros.paths import share_path

    return share_path("config", "tasks.yaml")


_CACHE: dict[str, dict[str, TaskSpec]] = {}


def load_tasks(path: Optional[str] = None) -> dict[str, TaskSpec]:
    """Load and validate tasks.yaml.

    Parameters
    ----------
    path : str, optional
        YAML file; default :func:`default_tasks_path`.

    Returns
    -------
    dict of str to TaskSpec
        Tasks by name, in file order.

    Raises
    ------
    TaskConfigError
        The file is unreadable or a field is missing/invalid; the message names task and field.
    """
    path = path or default_tasks_path()
    try:
        with open(path, "r", encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise TaskConfigError(f"cannot read tasks file {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("tasks"), dict) or not document["tasks"]:
        raise TaskConfigError(f"{path}: top level must be a mapping with a non-empty 'tasks' mapping")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise TaskConfigError(f"{path}: 'defaults' must be a mapping")
    tasks = {name: _parse_task(str(name), body, defaults) for name, body in document["tasks"].items()}
    _check_unique_instructions(tasks)
    default = document.get("default_task")
    if default is not None and default not in tasks:
        raise TaskConfigError(f"{path}: default_task {default!r} is not one of the tasks {list(tasks)}")
    return tasks


def default_task_name(path: Optional[str] = None) -> str:
    """``default_task`` from tasks.yaml (the first task when the key is absent)."""
    path = path or default_tasks_path()
    with open(path, "r", encoding="utf-8") as stream:
        document = yaml.safe_load(stream) or {}
    return document.get("default_task") or next(iter(load_tasks(path)))


def get_task(name: str, path: Optional[str] = None) -> TaskSpec:
    """Task called ``name``; raises :class:`UnknownTaskError` listing the valid names."""
    tasks = _cached_tasks(path)
    if name not in tasks:
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(tasks)}")
    return tasks[name]


def task_for_instruction(text: str, path: Optional[str] = None) -> TaskSpec:
    """Task whose instruction (or name, or title) matches ``text``.

    Matching ignores case, surrounding/duplicated whitespace and trailing punctuation; there is
    no fuzzy matching, so an unmatched text raises :class:`UnknownTaskError` listing the
    instructions rather than silently picking a task.
    """
    wanted = _normalize(text)
    tasks = _cached_tasks(path)
    for task in tasks.values():
        if wanted in (_normalize(task.instruction), _normalize(task.name), _normalize(task.title)):
            return task
    listing = "; ".join(f"{t.name}: {t.instruction!r}" for t in tasks.values())
    raise UnknownTaskError(f"no task matches instruction {text!r}; known: {listing}")


def _cached_tasks(path: Optional[str]) -> dict[str, TaskSpec]:
    key = path or default_tasks_path()
    if key not in _CACHE:
        _CACHE[key] = load_tasks(key)
    return _CACHE[key]


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(".!?").strip().lower()


# ------------------------------------------------------------------------------- parsing
def _fail(task: str, field_name: str, problem: str) -> TaskConfigError:
    return TaskConfigError(f"task {task!r}, field {field_name!r}: {problem}")


def _parse_task(name: str, body: Any, defaults: Mapping) -> TaskSpec:
    if not isinstance(body, dict):
        raise _fail(name, "(task)", "must be a mapping")
    for key in TASK_FIELDS:
        if key not in body:
            raise _fail(name, key, "missing")
    instruction = body["instruction"]
    if not isinstance(instruction, str) or not instruction.strip():
        raise _fail(name, "instruction", "must be a non-empty string")
    arms = _parse_arms(name, body["arms"])
    steps = body["steps"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise _fail(name, "steps", "must be a non-empty list of step names")
    step_limit = body["step_limit"]
    if isinstance(step_limit, bool) or not isinstance(step_limit, int) or step_limit <= 0:
        raise _fail(name, "step_limit", f"must be a positive integer, got {step_limit!r}")
    seed = body.get("seed", defaults.get("seed", 42))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(name, "seed", f"must be a non-negative integer, got {seed!r}")
    jitter = body.get("jitter_m", defaults.get("jitter_m", 0.02))
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0.0 <= jitter <= 0.1:
        raise _fail(name, "jitter_m", f"must be a number in [0, 0.1] m, got {jitter!r}")
    objects = _parse_objects(name, body["objects"])
    init_left, init_right, source16 = _parse_init_joints(name, body["init_joints"])
    success = _parse_success(name, body["success"], {o.name for o in objects})
    title = body["title"]
    if not isinstance(title, str):
        raise _fail(name, "title", "must be a string")
    return TaskSpec(
        name=name, instruction=instruction.strip(), arms=arms, steps=tuple(s.strip() for s in steps),
        objects=objects, init_left=init_left, init_right=init_right, step_limit=step_limit,
        seed=seed, jitter_m=float(jitter), success=success, title=title, init_source16=source16,
    )


def _parse_arms(task: str, arms: Any) -> tuple[str, ...]:
    if not isinstance(arms, list) or not arms or len(set(arms)) != len(arms) or not set(arms) <= set(ARMS):
        raise _fail(task, "arms", f"must be a non-empty list of distinct values from {ARMS}, got {arms!r}")
    return tuple(arms)


def _parse_range(task: str, field_name: str, value: Any, limit: float) -> tuple[float, float]:
    ok = (
        isinstance(value, list) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise _fail(task, field_name, f"must be a [low, high] pair of numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise _fail(task, field_name, f"low {low} is greater than high {high}")
    if abs(low) > limit or abs(high) > limit:
        raise _fail(task, field_name, f"values must lie within +-{limit}, got {value!r}")
    return low, high


def _parse_objects(task: str, objects: Any) -> tuple[ObjectSpec, ...]:
    if not isinstance(objects, list) or not objects:
        raise _fail(task, "objects", "must be a non-empty list")
    specs: list[ObjectSpec] = []
    for index, obj in enumerate(objects):
        where = f"objects[{index}]"
        if not isinstance(obj, dict):
            raise _fail(task, where, "must be a mapping")
        name, kind = obj.get("name"), obj.get("kind")
        if not isinstance(name, str) or not name:
            raise _fail(task, f"{where}.name", "missing or not a string")
        where = f"objects[{name}]"
        if kind not in OBJECT_KINDS:
            raise _fail(task, f"{where}.kind", f"{kind!r} is not one of {OBJECT_KINDS}")
        if any(s.name == name for s in specs):
            raise _fail(task, f"{where}.name", "duplicate object name")
        support = obj.get("rests_on")  # not "on": YAML 1.1 reads a bare `on` key as True
        if support is not None:
            base = next((s for s in specs if s.name == support), None)
            if base is None or base.on is not None:
                raise _fail(task, f"{where}.rests_on", f"{support!r} must be an earlier object that rests on the table")
            specs.append(ObjectSpec(name, kind, base.x_range, base.y_range, base.yaw_range_deg, on=support))
            continue
        for key in ("x_range", "y_range", "yaw_range_deg"):
            if key not in obj:
                raise _fail(task, f"{where}.{key}", "missing")
        specs.append(ObjectSpec(
            name=name, kind=kind,
            x_range=_parse_range(task, f"{where}.x_range", obj["x_range"], 2.0),
            y_range=_parse_range(task, f"{where}.y_range", obj["y_range"], 2.0),
            yaw_range_deg=_parse_range(task, f"{where}.yaw_range_deg", obj["yaw_range_deg"], 180.0),
        ))
    return tuple(specs)


def _parse_init_joints(task: str, init: Any) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Check left/right against robot.interleaved16_to_arms(source) and the arm limits."""
    from sim2real_vla_ros.core import robot

    if not isinstance(init, dict):
        raise _fail(task, "init_joints", "must be a mapping with source_interleaved16, left, right")
    vectors = {}
    for key, size in (("source_interleaved16", 16), ("left", 7), ("right", 7)):
        value = init.get(key)
        if not isinstance(value, list) or len(value) != size or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            raise _fail(task, f"init_joints.{key}", f"must be a list of {size} finite numbers, got {value!r}")
        vectors[key] = np.asarray(value, dtype=float)
    try:
        left7, right7, _clamped = robot.interleaved16_to_arms(vectors["source_interleaved16"])
    except ValueError as exc:
        raise _fail(task, "init_joints.source_interleaved16", str(exc)) from exc
    for side, converted in (("left", left7), ("right", right7)):
        if not np.allclose(vectors[side], converted, atol=1e-9):
            raise _fail(
                task, f"init_joints.{side}",
                f"{vectors[side].tolist()} differs from interleaved16_to_arms(source) = {np.asarray(converted).tolist()}",
            )
        limits = robot.arm_limits(side)
        outside = (vectors[side] < limits.lower) | (vectors[side] > limits.upper)
        if np.any(outside):
            raise _fail(task, f"init_joints.{side}", f"joint index {int(np.argmax(outside))} outside the arm limits")
    return (tuple(vectors["left"].tolist()), tuple(vectors["right"].tolist()),
            tuple(vectors["source_interleaved16"].tolist()))


def _parse_success(task: str, success: Any, object_names: set) -> dict:
    if not isinstance(success, dict):
        raise _fail(task, "success", "must be a mapping")
    if success.get("type") not in SUCCESS_TYPES:
        raise _fail(task, "success.type", f"{success.get('type')!r} is not one of {SUCCESS_TYPES}")
    for key in SUCCESS_OBJECT_KEYS:
        if key in success and success[key] not in object_names:
            raise _fail(task, f"success.{key}", f"{success[key]!r} is not an object of this task")
    for index, placement in enumerate(success.get("placements", []) or []):
        if not isinstance(placement, dict) or placement.get("object") not in object_names:
            raise _fail(task, f"success.placements[{index}].object", "must name an object of this task")
        if placement.get("side") not in ARMS:
            raise _fail(task, f"success.placements[{index}].side", f"must be one of {ARMS}")
    for key, value in success.items():
        if key.endswith(("_m", "_deg", "_s")) and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise _fail(task, f"success.{key}", f"must be a non-negative number, got {value!r}")
    return dict(success)


def _check_unique_instructions(tasks: Mapping[str, TaskSpec]) -> None:
    seen: dict[str, str] = {}
    for task in tasks.values():
        key = _normalize(task.instruction)
        if key in seen:
            raise _fail(task.name, "instruction", f"same instruction as task {seen[key]!r}")
        seen[key] = task.name


# ------------------------------------------------------------------------------- sampling
def sample_scene(task: TaskSpec, rng: np.random.Generator,
                 table: Optional[tuple[float, float, float, float]] = None) -> dict[str, tuple[float, float, float]]:
    """Sample every object's ``(x, y, yaw_rad)`` uniformly inside its Table 5 ranges.

    A scene is kept only when every object's whole footprint (:data:`KIND_FOOTPRINT`) lies on
    the table top at least :data:`SCENE_EDGE_MARGIN_M` inside its edges (which also keeps it
    clear of the robot body, 1 cm behind the table's near edge) and at least
    :data:`SCENE_OBJECT_GAP_M` from every other object's footprint; otherwise the whole scene
    is resampled, up to :data:`SCENE_MAX_ATTEMPTS` times, so the result is uniform over the
    valid part of the ranges. Objects with ``on`` copy their support's pose.

    Parameters
    ----------
    table : (x_min, x_max, y_min, y_max), optional
        The table top (default: the URDF's, robot.table_top()).

    Raises
    ------
    SceneSamplingError
        When no valid scene is found; names the task and what kept failing.
    """
    if table is None:
        table = _default_table()
    free = [o for o in task.objects if o.on is None]
    last_problem = ""
    for _ in range(SCENE_MAX_ATTEMPTS):
        poses = {
            o.name: (
                float(rng.uniform(*o.x_range)),
                float(rng.uniform(*o.y_range)),
                math.radians(float(rng.uniform(*o.yaw_range_deg))),
            )
            for o in free
        }
        problem = scene_problem(free, poses, table)
        if problem is None:
            for obj in task.objects:
                if obj.on is not None:
                    poses[obj.name] = poses[obj.on]
            return {o.name: poses[o.name] for o in task.objects}
        last_problem = problem
    raise SceneSamplingError(
        f"task {task.name!r}: no valid scene in {SCENE_MAX_ATTEMPTS} attempts ({last_problem}; check the ranges)"
    )


@functools.lru_cache(maxsize=1)
def _default_table() -> tuple[float, float, float, float]:
    from sim2real_vla_ros.core import robot

    top = robot.table_top()
    return (top.x_min, top.x_max, top.y_min, top.y_max)


def footprint_polygons(kind: str, pose: tuple) -> list:
    """The kind's footprint shapes placed at ``pose`` (x, y, yaw): ("disc", centre, r) or
    ("rect", 4x2 corners)."""
    x, y, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    out = []
    for shape in KIND_FOOTPRINT[kind]:
        centre = np.array([x, y]) + rot @ np.array(shape[1:3])
        if shape[0] == "disc":
            out.append(("disc", centre, shape[3]))
        else:
            hx, hy = shape[3], shape[4]
            local = np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]])
            out.append(("rect", centre + local @ rot.T))
    return out


def _extent(shape) -> tuple[np.ndarray, np.ndarray]:
    if shape[0] == "disc":
        return shape[1] - shape[2], shape[1] + shape[2]
    return shape[1].min(axis=0), shape[1].max(axis=0)


def _shape_gap(a, b) -> float:
    """Separation between two footprint shapes (negative or zero when they overlap)."""
    if a[0] == "disc" and b[0] == "disc":
        return float(np.linalg.norm(a[1] - b[1])) - a[2] - b[2]
    if a[0] == "disc":
        a, b = b, a
    if b[0] == "disc":
        return _point_polygon_distance(b[1], a[1]) - b[2]
    return _rect_rect_gap(a[1], b[1])


def _point_polygon_distance(point: np.ndarray, corners: np.ndarray) -> float:
    """Distance from a point to a convex polygon (0 inside)."""
    inside = True
    best = math.inf
    for i in range(len(corners)):
        p, q = corners[i], corners[(i + 1) % len(corners)]
        edge = q - p
        t = float(np.clip((point - p) @ edge / (edge @ edge), 0.0, 1.0))
        best = min(best, float(np.linalg.norm(point - (p + t * edge))))
        if edge[0] * (point - p)[1] - edge[1] * (point - p)[0] < 0:
            inside = False
    return 0.0 if inside else best


def _rect_rect_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest separation over the rectangles' edge normals (separating axis test)."""
    gap = -math.inf
    for corners in (a, b):
        for i in range(2):
            edge = corners[i + 1] - corners[i]
            axis = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            pa, pb = a @ axis, b @ axis
            gap = max(gap, float(max(pb.min() - pa.max(), pa.min() - pb.max())))
    return gap


def scene_problem(objects: list, poses: Mapping[str, tuple], table: tuple) -> Optional[str]:
    """None when every footprint is on the table (with the edge margin) and apart; else why not."""
    x_min, x_max, y_min, y_max = table
    placed = {o.name: footprint_polygons(o.kind, poses[o.name]) for o in objects}
    for name, shapes in placed.items():
        for shape in shapes:
            low, high = _extent(shape)
            if (low[0] < x_min + SCENE_EDGE_MARGIN_M or high[0] > x_max - SCENE_EDGE_MARGIN_M
                    or low[1] < y_min + SCENE_EDGE_MARGIN_M or high[1] > y_max - SCENE_EDGE_MARGIN_M):
                return f"{name} off the table or against the robot"
    names = list(placed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if any(_shape_gap(sa, sb) < SCENE_OBJECT_GAP_M for sa in placed[a] for sb in placed[b]):
                return f"{a} and {b} overlap"
    return None


def jittered_init(task: TaskSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Initial (left7, right7) joints with the paper's end-effector jitter.

    The paper moves the initial end-effector position by ``U(-jitter_m, jitter_m)`` in x, y
    and z (appendix A.8). We do the same in joint space: for each arm, sample that offset,
    then move joints 1-6 by damped least squares on the tool-centre-point position Jacobian
    (a few Gauss-Newton steps on the URDF kinematics, robot.forward_kinematics) so the TCP lands on the offset
    target; the wrist orientation changes only by the minimum-norm amount, the gripper is not
    jittered, and the result is clipped to the arm limits (so near a limit the TCP offset can
    come out a little smaller than sampled). Both arms are jittered (also in
    single-arm tasks: the idle arm is in view too). ``jitter_m == 0`` returns the Table 6 pose.

    Returns
    -------
    tuple of np.ndarray
        ``(left7, right7)``.
    """
    from sim2real_vla_ros.core import robot

    result = []
    for side in ARMS:
        q0 = task.init_joints(side)
        offset = rng.uniform(-task.jitter_m, task.jitter_m, size=3)
        q = q0.copy()
        if task.jitter_m > 0.0:
            q[:6] = _solve_tcp_offset(side, q0, offset)
        result.append(robot.arm_limits(side).clip(q))
    return result[0], result[1]


def tcp_position(side: str, q7) -> np.ndarray:
    """Tool-centre-point (``<side>_tcp`` link) position in ``base_link`` for a 7-vector."""
    from sim2real_vla_ros.core import robot

    positions = dict(zip(robot.arm_joint_names(side), np.asarray(q7, dtype=float).tolist()))
    return robot.forward_kinematics(robot.urdf_xml(), positions, f"{side}_tcp")[:3, 3]


def _solve_tcp_offset(side: str, q7: np.ndarray, offset: np.ndarray, damping: float = 1e-3) -> np.ndarray:
    """Joints 1-6 near ``q7[:6]`` whose TCP is at ``tcp(q7) + offset`` (damped least squares)."""
    target = tcp_position(side, q7) + offset
    q = np.asarray(q7, dtype=float).copy()
    step = 1e-6
    for _ in range(JITTER_IK_ITERATIONS):
        base = tcp_position(side, q)
        error = target - base
        if np.linalg.norm(error) < 1e-6:
            break
        jacobian = np.empty((3, 6))
        for j in range(6):
            nudged = q.copy()
            nudged[j] += step
            jacobian[:, j] = (tcp_position(side, nudged) - base) / step
        q[:6] += jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping**2 * np.eye(3), error)
    return q[:6]
