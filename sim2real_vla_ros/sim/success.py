"""Privileged success checks for the six tasks, used to score dry runs (ROS-free).

The simulator knows every object's pose and which gripper touches what; a policy does not.
Each task's ``success`` section of config/tasks.yaml selects a monitor class by ``type`` and
gives its thresholds. A monitor is fed :class:`SceneSnapshot` s during the episode
(:meth:`SuccessMonitor.update`) because some criteria are about history (the bottle *was*
tilted over the cup for half a second, the lid *was* opened, the pen *was* handed over);
:meth:`SuccessMonitor.status` then reports the per-criterion values and ``success``.

All positions are in the robot base frame (= the MuJoCo world frame, metres).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, FrozenSet, Mapping, Optional

import numpy as np

from sim2real_vla_ros.sim.objects import ObjectModel

# Height slack above a container's rim within which an item still counts as "in" it (an item
# leaning on the rim, or a tall milk box standing in the basket). Not a tasks.yaml parameter
# because it only guards against counting an item held high above the container.
INSIDE_HEIGHT_SLACK_M = 0.05


@dataclass(frozen=True)
class ObjectState:
    """Pose of one object: body origin ``pos`` and rotation matrix ``rot`` (body -> base)."""

    pos: np.ndarray
    rot: np.ndarray

    @property
    def tilt_deg(self) -> float:
        """Angle between the object's up axis (body +z) and the world vertical."""
        return math.degrees(math.acos(float(np.clip(self.rot[2, 2], -1.0, 1.0))))

    @property
    def yaw(self) -> float:
        """Heading of the body +x axis about the world z axis (rad)."""
        return math.atan2(float(self.rot[1, 0]), float(self.rot[0, 0]))

    def to_world(self, local) -> np.ndarray:
        """A body-frame point in the base frame."""
        return self.pos + self.rot @ np.asarray(local, dtype=float)

    def to_local(self, world) -> np.ndarray:
        """A base-frame point in the body frame."""
        return self.rot.T @ (np.asarray(world, dtype=float) - self.pos)


@dataclass(frozen=True)
class SceneSnapshot:
    """What a monitor sees at one instant.

    ``grasped_by`` maps an object name to the arm sides whose two fingers both touch it.
    """

    time: float
    objects: Mapping[str, ObjectState]
    grasped_by: Mapping[str, FrozenSet[str]]
    table_top_z: float


class SuccessMonitor:
    """Base class: history-keeping success check of one task.

    Parameters
    ----------
    params : mapping
        The task's ``success`` section (tasks.yaml).
    models : mapping of str to ObjectModel
        Object name -> its geometry (heights, container volumes, sites).
    """

    #: tasks.yaml ``type`` handled by the subclass
    type_name = ""

    def __init__(self, params: Mapping, models: Mapping[str, ObjectModel]) -> None:
        self.params = dict(params)
        self.models = dict(models)
        self.start: Optional[SceneSnapshot] = None
        self.last: Optional[SceneSnapshot] = None

    # -- helpers shared by the subclasses
    def _param(self, key: str):
        if key not in self.params:
            raise KeyError(f"success section of type {self.type_name!r} needs parameter {key!r}")
        return self.params[key]

    def center(self, snap: SceneSnapshot, name: str) -> np.ndarray:
        """Geometric centre of an object (half its upright height up its own z axis)."""
        return snap.objects[name].to_world((0.0, 0.0, self.models[name].height / 2.0))

    def site(self, snap: SceneSnapshot, name: str, site: str) -> np.ndarray:
        return snap.objects[name].to_world(self.models[name].sites[site])

    def resting_on_table(self, snap: SceneSnapshot, name: str, tolerance: float) -> bool:
        """Upright-independent: the object's origin (its base) is within ``tolerance`` of the table."""
        return abs(float(snap.objects[name].pos[2]) - snap.table_top_z) <= tolerance

    @staticmethod
    def released(snap: SceneSnapshot, names) -> bool:
        return all(not snap.grasped_by.get(n) for n in names)

    def inside(self, snap: SceneSnapshot, item: str, container: str, margin: float = 0.0) -> bool:
        """The item's centre is within the container's inner volume (plus the rim slack)."""
        volume = self.models[container].container
        if volume is None:
            raise ValueError(f"object {container!r} is not a container")
        local = snap.objects[container].to_local(self.center(snap, item))
        if not volume.floor_z - 0.01 <= local[2] <= volume.rim_z + INSIDE_HEIGHT_SLACK_M:
            return False
        lowered = np.array([local[0], local[1], min(local[2], volume.rim_z)])
        return volume.contains(lowered, margin)

    # -- the interface
    def reset(self, snap: SceneSnapshot) -> None:
        """Start a new episode from ``snap`` (object start poses are remembered)."""
        self.start = snap
        self.last = snap
        self._reset_history(snap)
        self._observe(snap, dt=0.0)

    def update(self, snap: SceneSnapshot) -> None:
        """Feed the next snapshot (at a later time than the previous one)."""
        if self.start is None:
            self.reset(snap)
            return
        dt = max(0.0, snap.time - self.last.time)
        self.last = snap
        self._observe(snap, dt)

    def status(self) -> Dict[str, object]:
        """``{'type', 'success', 'criteria': {name: value}}`` for the latest snapshot."""
        if self.last is None:
            raise RuntimeError("SuccessMonitor.status() before reset()")
        criteria = self._criteria(self.last)
        return {"type": self.type_name, "success": bool(criteria.pop("success")), "criteria": _jsonable(criteria)}

    # -- per task
    def _reset_history(self, snap: SceneSnapshot) -> None:
        raise NotImplementedError

    def _observe(self, snap: SceneSnapshot, dt: float) -> None:
        raise NotImplementedError

    def _criteria(self, snap: SceneSnapshot) -> Dict[str, object]:
        raise NotImplementedError


class PourMonitor(SuccessMonitor):
    """Bottle tilted with its mouth over the cup long enough, then standing back near its start.

    Pouring counts while the pourer's axis is at least ``tilt_min_deg`` from vertical, its
    ``mouth`` site is above the receiver's rim and within ``over_receiver_radius_m`` (xy) of
    the receiver's axis (tasks.yaml sets it to the cup's inner radius: the mouth is over the
    opening). ``poured`` needs one *uninterrupted* pouring interval of
    ``pour_min_duration_s``: brief passes (a tilt in and straight back out, or a mouth
    sweeping across the cup) do not add up. ``pour_time_s`` reports the longest interval.
    """

    type_name = "pour"

    def _reset_history(self, snap):
        self.pour_time_s = 0.0
        self.current_pour_s = 0.0
        self.max_tilt_deg = 0.0

    def _pouring_now(self, snap) -> bool:
        pourer, receiver = self._param("pourer"), self._param("receiver")
        mouth = self.site(snap, pourer, "mouth")
        cup = snap.objects[receiver]
        rim_z = self.site(snap, receiver, "rim")[2]
        over = math.dist(mouth[:2], cup.pos[:2]) <= self._param("over_receiver_radius_m") and mouth[2] > rim_z
        return bool(over and snap.objects[pourer].tilt_deg >= self._param("tilt_min_deg"))

    def _observe(self, snap, dt):
        self.max_tilt_deg = max(self.max_tilt_deg, snap.objects[self._param("pourer")].tilt_deg)
        if dt > 0.0 and self._pouring_now(snap):
            self.current_pour_s += dt
            self.pour_time_s = max(self.pour_time_s, self.current_pour_s)
        elif dt > 0.0:
            self.current_pour_s = 0.0

    def _returned(self, snap, name) -> Dict[str, object]:
        state, start = snap.objects[name], self.start.objects[name]
        upright = state.tilt_deg <= self._param("upright_max_tilt_deg")
        on_table = self.resting_on_table(snap, name, self._param("rest_height_tol_m"))
        offset = math.dist(state.pos[:2], start.pos[:2])
        near_start = offset <= self._param("return_radius_m")
        return {
            f"{name}_tilt_deg": state.tilt_deg,
            f"{name}_on_table": on_table,
            f"{name}_offset_from_start_m": offset,
            f"{name}_returned": bool(upright and on_table and near_start),
        }

    def _criteria(self, snap):
        pourer, receiver = self._param("pourer"), self._param("receiver")
        poured = self.pour_time_s >= self._param("pour_min_duration_s")
        out: Dict[str, object] = {"pour_time_s": self.pour_time_s, "max_tilt_deg": self.max_tilt_deg,
                                  "poured": poured, "pouring_now": self._pouring_now(snap)}
        out.update(self._returned(snap, pourer))
        released = self.released(snap, [pourer, receiver]) or not self.params.get("released", True)
        out["released"] = released
        out["success"] = poured and out[f"{pourer}_returned"] and released
        return out


class DualPourMonitor(PourMonitor):
    """Pour with the cup held up (lifted, roughly upright) by the other arm; both returned."""

    type_name = "pour_dual"

    def _reset_history(self, snap):
        super()._reset_history(snap)
        self.max_receiver_lift_m = 0.0

    def _receiver_lift(self, snap) -> float:
        name = self._param("receiver")
        return float(snap.objects[name].pos[2] - self.start.objects[name].pos[2])

    def _pouring_now(self, snap) -> bool:
        receiver = snap.objects[self._param("receiver")]
        held_up = self._receiver_lift(snap) >= self._param("receiver_min_lift_m")
        upright = receiver.tilt_deg <= self._param("receiver_max_tilt_deg")
        return bool(held_up and upright and super()._pouring_now(snap))

    def _observe(self, snap, dt):
        super()._observe(snap, dt)
        self.max_receiver_lift_m = max(self.max_receiver_lift_m, self._receiver_lift(snap))

    def _criteria(self, snap):
        out = super()._criteria(snap)
        receiver = self._param("receiver")
        out["max_receiver_lift_m"] = self.max_receiver_lift_m
        out.update(self._returned(snap, receiver))
        out["success"] = bool(out["success"] and out[f"{receiver}_returned"])
        return out


class BesideMonitor(SuccessMonitor):
    """Each object lies flat on the table on its side (left = +y) of the reference, level with it.

    ``lateral_min_m`` is measured from the object's centre, so tasks.yaml sets it to the
    plate's radius plus the object's largest half-width (nothing of it on the plate);
    ``rest_height_tol_m`` and ``max_tilt_deg`` (optional) keep an object propped on the rim
    from counting as lying on the table.
    """

    type_name = "beside"

    def _reset_history(self, snap):
        pass

    def _observe(self, snap, dt):
        pass

    def _criteria(self, snap):
        reference = snap.objects[self._param("reference")]
        out: Dict[str, object] = {}
        placed_all = True
        names = [self._param("reference")]
        for placement in self._param("placements"):
            name, side = placement["object"], placement["side"]
            names.append(name)
            center = self.center(snap, name)
            lateral = float(center[1] - reference.pos[1]) * (1.0 if side == "left" else -1.0)
            along = abs(float(center[0] - reference.pos[0]))
            on_table = self.resting_on_table(snap, name, self._param("rest_height_tol_m"))
            if "max_tilt_deg" in self.params:
                on_table = on_table and snap.objects[name].tilt_deg <= self.params["max_tilt_deg"]
            placed = (self._param("lateral_min_m") <= lateral <= self._param("lateral_max_m")
                      and along <= self._param("along_tol_m") and on_table)
            out.update({f"{name}_lateral_m": lateral, f"{name}_along_m": along,
                        f"{name}_on_table": on_table, f"{name}_placed": bool(placed)})
            placed_all = placed_all and placed
        released = self.released(snap, names) or not self.params.get("released", True)
        out["released"] = released
        out["success"] = bool(placed_all and released)
        return out


class InsideMonitor(SuccessMonitor):
    """Item in the container; optionally it was held by the left gripper and then the right."""

    type_name = "inside"

    def _reset_history(self, snap):
        self.held_left_at: Optional[float] = None
        self.handed_over_at: Optional[float] = None

    def _observe(self, snap, dt):
        holders = snap.grasped_by.get(self._param("item"), frozenset())
        if "left" in holders and self.held_left_at is None:
            self.held_left_at = snap.time
        if "right" in holders and self.held_left_at is not None and self.handed_over_at is None:
            self.handed_over_at = snap.time

    def _criteria(self, snap):
        item, container = self._param("item"), self._param("container")
        center = self.center(snap, item)
        holder = snap.objects[container]
        radial = math.dist(center[:2], holder.pos[:2])
        rim_z = self.site(snap, container, "rim")[2]
        inside = (radial <= self._param("radius_m")
                  and center[2] - rim_z <= self._param("max_height_above_rim_m")
                  and self.inside(snap, item, container))
        handover_ok = self.handed_over_at is not None or not self.params.get("require_handover", False)
        released = self.released(snap, [item, container]) or not self.params.get("released", True)
        return {
            "item_radial_m": radial, "item_above_rim_m": float(center[2] - rim_z), "inside": bool(inside),
            "held_left": self.held_left_at is not None, "handed_over": self.handed_over_at is not None,
            "released": released, "success": bool(inside and handover_ok and released),
        }


class BasketMonitor(SuccessMonitor):
    """Item in the basket, the basket lifted at some point and standing on the table again."""

    type_name = "basket"

    def _reset_history(self, snap):
        self.max_container_lift_m = 0.0

    def _observe(self, snap, dt):
        name = self._param("container")
        lift = float(snap.objects[name].pos[2] - self.start.objects[name].pos[2])
        self.max_container_lift_m = max(self.max_container_lift_m, lift)

    def _criteria(self, snap):
        item, container = self._param("item"), self._param("container")
        inside = self.inside(snap, item, container, self._param("inside_margin_m"))
        lifted = self.max_container_lift_m >= self._param("container_min_lift_m")
        on_table = self.resting_on_table(snap, container, self._param("rest_height_tol_m"))
        released = self.released(snap, [item, container]) or not self.params.get("released", True)
        return {
            "inside": bool(inside), "max_container_lift_m": self.max_container_lift_m, "lifted": lifted,
            "container_on_table": on_table, "released": released,
            "success": bool(inside and lifted and on_table and released),
        }


class PanMonitor(SuccessMonitor):
    """Lid opened at some point, the item in the pan, and the lid back on the pan at the end."""

    type_name = "pan"

    def _reset_history(self, snap):
        self.max_lid_offset_m = 0.0

    def _lid_offset(self, snap) -> float:
        return math.dist(snap.objects[self._param("lid")].pos[:2], snap.objects[self._param("pan")].pos[:2])

    def _observe(self, snap, dt):
        self.max_lid_offset_m = max(self.max_lid_offset_m, self._lid_offset(snap))

    def _criteria(self, snap):
        pan, lid, item = self._param("pan"), self._param("lid"), self._param("item")
        opened = self.max_lid_offset_m >= self._param("lid_open_min_m")
        item_radial = math.dist(self.center(snap, item)[:2], snap.objects[pan].pos[:2])
        item_inside = item_radial <= self._param("item_radius_m") and self.inside(snap, item, pan)
        lid_state = snap.objects[lid]
        rim_z = self.site(snap, pan, "rim")[2]
        lid_height_error = float(lid_state.pos[2] - rim_z)
        closed = (self._lid_offset(snap) <= self._param("lid_closed_radius_m")
                  and lid_state.tilt_deg <= self._param("lid_max_tilt_deg")
                  and abs(lid_height_error) <= self._param("lid_rest_height_tol_m"))
        released = self.released(snap, [pan, lid, item]) or not self.params.get("released", True)
        return {
            "max_lid_offset_m": self.max_lid_offset_m, "lid_opened": opened, "item_radial_m": item_radial,
            "item_inside": bool(item_inside), "lid_offset_m": self._lid_offset(snap),
            "lid_tilt_deg": lid_state.tilt_deg, "lid_height_error_m": lid_height_error, "lid_closed": bool(closed),
            "released": released, "success": bool(opened and item_inside and closed and released),
        }


MONITOR_TYPES = {cls.type_name: cls for cls in (PourMonitor, DualPourMonitor, BesideMonitor, InsideMonitor,
                                                BasketMonitor, PanMonitor)}


def make_monitor(success_params: Mapping, models: Mapping[str, ObjectModel]) -> SuccessMonitor:
    """The monitor for a task's ``success`` section (ValueError for an unknown ``type``)."""
    kind = success_params.get("type")
    if kind not in MONITOR_TYPES:
        raise ValueError(f"unknown success type {kind!r}; known: {sorted(MONITOR_TYPES)}")
    return MONITOR_TYPES[kind](success_params, models)


def _jsonable(values: Mapping[str, object]) -> Dict[str, object]:
    """Plain Python floats/bools (numpy scalars do not serialise to JSON), rounded to 0.1 mm/deg."""
    out: Dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, float, np.floating, np.integer)):
            out[key] = round(float(value), 4)
        else:
            out[key] = value
    return out
