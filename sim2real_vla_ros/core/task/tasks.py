"""The paper's six manipulation tasks: loading ``config/tasks.yaml``, scene sampling, init joints.

ROS-free. The simulator uses :func:`get_task`, :func:`sample_scene` and :func:`jittered_init`
on every ``/sim/reset``; nodes that receive an instruction use :func:`task_for_instruction`.

Conventions: object poses are ``(x, y, yaw)`` in the robot base frame (metres, radians);
per-arm joint vectors are 7 values, joints 1-6 (rad) + joint7 (one finger, m), as in
:mod:`sim2real_vla_ros.core.robot`.
"""
from __future__ import annotations

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

# Footprint radius (m) of each kind for the non-overlap check when sampling a scene: a
# conservative disc around the object's centre, not its exact shape (thin fork/spoon/pen/carrot
# get a small disc since they may lie next to a plate rim; a lid sits on its pan and is not checked).
KIND_CLEARANCE_M = {
    "bottle": 0.035, "cup": 0.04, "plate": 0.09, "fork": 0.02, "spoon": 0.02, "pen": 0.01,
    "holder": 0.045, "milk_box": 0.04, "basket": 0.10, "pan": 0.12, "lid": 0.0, "carrot": 0.02,
}
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
def sample_scene(task: TaskSpec, rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
    """Sample every object's ``(x, y, yaw_rad)`` uniformly inside its Table 5 ranges.

    Objects that would overlap (footprint discs from :data:`KIND_CLEARANCE_M`) are resampled
    as a whole scene, up to :data:`SCENE_MAX_ATTEMPTS` times; the result is therefore uniform
    over the collision-free part of the ranges. Objects with ``on`` copy their support's pose.

    Raises
    ------
    SceneSamplingError
        When no collision-free scene is found; names the task and the pair that kept colliding.
    """
    free = [o for o in task.objects if o.on is None]
    last_collision = ("", "")
    for _ in range(SCENE_MAX_ATTEMPTS):
        poses = {
            o.name: (
                float(rng.uniform(*o.x_range)),
                float(rng.uniform(*o.y_range)),
                math.radians(float(rng.uniform(*o.yaw_range_deg))),
            )
            for o in free
        }
        collision = _first_collision(free, poses)
        if collision is None:
            for obj in task.objects:
                if obj.on is not None:
                    poses[obj.name] = poses[obj.on]
            return {o.name: poses[o.name] for o in task.objects}
        last_collision = collision
    raise SceneSamplingError(
        f"task {task.name!r}: no collision-free scene in {SCENE_MAX_ATTEMPTS} attempts "
        f"({last_collision[0]} and {last_collision[1]} keep overlapping; check their ranges)"
    )


def _first_collision(objects: list, poses: Mapping[str, tuple]) -> Optional[tuple[str, str]]:
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            gap = math.dist(poses[a.name][:2], poses[b.name][:2])
            if gap < KIND_CLEARANCE_M[a.kind] + KIND_CLEARANCE_M[b.kind]:
                return a.name, b.name
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
