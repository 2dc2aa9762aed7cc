"""Sub-goal success conditions of the data engine, checked on the simulator's privileged state.

Each condition is a small frozen dataclass with ``__call__(view) -> bool`` and a ``name``
("bottle lifted 0.08 m"), so an expert step says what it achieved and a failed episode says
which sub-goal failed. ``view`` is a :class:`WorldView`: object states, which grippers hold
what, the TCP poses and the object start poses; the tests build one from constructed poses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import FrozenSet, Mapping, Optional, Tuple

import numpy as np

from sim2real_vla_ros.sim.objects import ObjectModel
from sim2real_vla_ros.sim.success import ObjectState


@dataclass
class WorldView:
    """What a sub-goal condition sees (base frame, metres)."""

    objects: Mapping[str, ObjectState]
    start: Mapping[str, ObjectState]
    grasped_by: Mapping[str, FrozenSet[str]]
    tcp: Mapping[str, Tuple[np.ndarray, np.ndarray]]
    models: Mapping[str, ObjectModel]
    table_top_z: float

    def center(self, name: str) -> np.ndarray:
        return self.objects[name].to_world((0.0, 0.0, self.models[name].height / 2.0))

    def site(self, name: str, site: str) -> np.ndarray:
        return self.objects[name].to_world(self.models[name].sites[site])


def view_of(sim) -> WorldView:
    """A :class:`WorldView` of a :class:`~sim2real_vla_ros.sim.simulator.Simulator` now."""
    snap = sim.snapshot()
    tcp = {}
    for side in ("left", "right"):
        body = sim.model.body(f"{side}_tcp").id
        tcp[side] = (sim.data.xpos[body].copy(), sim.data.xmat[body].reshape(3, 3).copy())
    return WorldView(snap.objects, sim.start_objects, snap.grasped_by, tcp, sim.object_models, sim.table_top_z)


class Condition:
    name = "condition"

    def __call__(self, view: WorldView) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Grasped(Condition):
    """Both finger pads of ``side`` touch ``obj``."""

    obj: str
    side: str

    @property
    def name(self) -> str:
        return f"{self.obj} grasped by {self.side}"

    def __call__(self, view):
        return self.side in view.grasped_by.get(self.obj, frozenset())


@dataclass(frozen=True)
class Released(Condition):
    """No gripper touches ``obj`` with both pads."""

    obj: str

    @property
    def name(self) -> str:
        return f"{self.obj} released"

    def __call__(self, view):
        return not view.grasped_by.get(self.obj)


@dataclass(frozen=True)
class Lifted(Condition):
    """``obj`` is at least ``min_dz`` above its start height, held by ``side``."""

    obj: str
    min_dz: float
    side: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.obj} lifted {self.min_dz:.2f} m"

    def __call__(self, view):
        dz = float(view.objects[self.obj].pos[2] - view.start[self.obj].pos[2])
        held = self.side is None or self.side in view.grasped_by.get(self.obj, frozenset())
        return dz >= self.min_dz and held


@dataclass(frozen=True)
class Upright(Condition):
    """``obj`` tilts at most ``max_tilt_deg`` from vertical."""

    obj: str
    max_tilt_deg: float

    @property
    def name(self) -> str:
        return f"{self.obj} upright within {self.max_tilt_deg:.0f} deg"

    def __call__(self, view):
        return view.objects[self.obj].tilt_deg <= self.max_tilt_deg


@dataclass(frozen=True)
class SiteAbove(Condition):
    """A site of ``obj`` (e.g. the bottle's mouth) lies within ``radius`` (xy) of the
    ``target`` object's axis and at least ``min_height`` above the target's ``target_site``."""

    obj: str
    site: str
    target: str
    target_site: str
    radius: float
    min_height: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.obj} {self.site} above {self.target} (r {self.radius:.3f} m)"

    def __call__(self, view):
        point = view.site(self.obj, self.site)
        target = view.objects[self.target]
        ref_z = view.site(self.target, self.target_site)[2]
        return (math.dist(point[:2], target.pos[:2]) <= self.radius
                and point[2] - ref_z >= self.min_height)


@dataclass(frozen=True)
class Tilted(Condition):
    """``obj`` tilts at least ``min_tilt_deg`` from vertical."""

    obj: str
    min_tilt_deg: float

    @property
    def name(self) -> str:
        return f"{self.obj} tilted >= {self.min_tilt_deg:.0f} deg"

    def __call__(self, view):
        return view.objects[self.obj].tilt_deg >= self.min_tilt_deg


@dataclass(frozen=True)
class OnTable(Condition):
    """``obj`` rests on the table (origin within ``tol`` of the top, tilt below ``max_tilt``)."""

    obj: str
    tol: float = 0.01
    max_tilt_deg: float = 15.0

    @property
    def name(self) -> str:
        return f"{self.obj} on the table"

    def __call__(self, view):
        state = view.objects[self.obj]
        return abs(float(state.pos[2]) - view.table_top_z) <= self.tol and state.tilt_deg <= self.max_tilt_deg


@dataclass(frozen=True)
class NearXY(Condition):
    """``obj``'s centre within ``radius`` (xy) of ``point``."""

    obj: str
    point: Tuple[float, float]
    radius: float

    @property
    def name(self) -> str:
        return f"{self.obj} within {self.radius:.3f} m of ({self.point[0]:.3f}, {self.point[1]:.3f})"

    def __call__(self, view):
        return math.dist(view.center(self.obj)[:2], self.point) <= self.radius


@dataclass(frozen=True)
class Inside(Condition):
    """``obj``'s centre inside ``container``'s inner volume (xy footprint, up to ``slack`` above the rim)."""

    obj: str
    container: str
    slack: float = 0.05

    @property
    def name(self) -> str:
        return f"{self.obj} inside {self.container}"

    def __call__(self, view):
        volume = view.models[self.container].container
        local = view.objects[self.container].to_local(view.center(self.obj))
        if not volume.floor_z - 0.01 <= local[2] <= volume.rim_z + self.slack:
            return False
        return volume.contains(np.array([local[0], local[1], min(local[2], volume.rim_z)]))


@dataclass(frozen=True)
class AwayFrom(Condition):
    """``obj``'s origin is at least ``distance`` (xy) from ``other``'s (a lid lifted off its pan)."""

    obj: str
    other: str
    distance: float

    @property
    def name(self) -> str:
        return f"{self.obj} {self.distance:.2f} m away from {self.other}"

    def __call__(self, view):
        return math.dist(view.objects[self.obj].pos[:2], view.objects[self.other].pos[:2]) >= self.distance


@dataclass(frozen=True)
class All(Condition):
    parts: Tuple[Condition, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return " and ".join(p.name for p in self.parts)

    def __call__(self, view):
        return all(p(view) for p in self.parts)

    def failing(self, view) -> Tuple[str, ...]:
        return tuple(p.name for p in self.parts if not p(view))
