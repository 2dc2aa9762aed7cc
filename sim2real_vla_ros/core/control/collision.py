"""Collision geometry of the CobotMagic and its allowed-collision matrix (ROS-free).

One geometry everywhere: the URDF's ``<collision>`` primitives (``urdf/*.xacro``), loaded into
MuJoCo with ``MjSpec.from_string`` exactly as the simulator loads them. This module offers

* :func:`link_groups` -- which links move with which arm and which are fixed (the robot body,
  the arm bases, the camera mast, ``cam_high``, the table);
* :func:`compute_acm` -- the allowed-collision matrix by the MoveIt Setup Assistant's method:
  sample many random configurations of both arms and classify every link pair as
  ``Adjacent`` (rigidly or directly jointed), ``Default`` (colliding in the default, all-zero
  state), ``Always`` (colliding in at least :data:`ALWAYS_FRACTION` of the samples) or
  ``Never`` (no collision in any sample);
* :func:`load_disabled_pairs` -- the pairs the committed SRDF disables, with their reasons;
* :class:`CollisionScene` -- a kinematic copy (no physics) of robot + table used for
  distance queries by the collision guard and the homing planner.

Which disabled pairs our own checks skip: ``Adjacent``, ``Default`` and ``Always`` pairs
(touching by construction, so a check could only ever fail). ``Never`` pairs stay checked:
MoveIt disables them to save narrow-phase work, but a random sample set can miss a rare
configuration, and in MuJoCo a far pair costs nothing (its bounding boxes are pruned in the
broad phase; measured in benchmarks/bench_collision_guard.py). See :data:`SKIPPED_REASONS`.

Joint vectors are per arm: joints 1-6 (rad) + joint7 (one finger, m); joint8 mirrors joint7.
"""
from __future__ import annotations

import functools
import itertools
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Mapping, Optional, Tuple

import mujoco
import numpy as np

from sim2real_vla_ros.core import robot
from sim2real_vla_ros.core.vocabulary import ARMS

ALWAYS_FRACTION = 0.95
"""The Setup Assistant's default: a pair colliding in >= 95 % of the samples is 'Always'."""
DEFAULT_ACM_SAMPLES = 20000
"""Samples behind the committed matrix (the Setup Assistant's default density is 10000)."""
DEFAULT_ACM_SEED = 0
ACM_REASONS = ("Adjacent", "Default", "Always", "Never")
PAIR_KINDS = ("self", "arm_arm", "table", "body")
"""Kinds of checked pairs: one arm with itself, the two arms, an arm with the table, an arm
with the other fixed parts (robot body, arm bases, camera mast, cam_high)."""
SKIPPED_REASONS = frozenset({"Adjacent", "Default", "Always"})
"""Disabled pairs that :class:`CollisionScene` does not check (see the module docstring)."""
FINGER_PAIRS = frozenset((f"{side}_link7", f"{side}_link8") for side in ARMS)
"""Never checked by :class:`CollisionScene` either: the two fingers of a gripper are one
mechanism (joint8 mimics joint7) whose pads close to 2 mm of each other by design; the SRDF
keeps the Setup Assistant's verdict for them ('Never')."""

Pair = Tuple[str, str]

# Contact classes of the kinematic copy (MuJoCo collides a pair when
# contype_a & conaffinity_b or contype_b & conaffinity_a).
_OWN, _OTHER, _FIXED = 1, 2, 4


def pair(a: str, b: str) -> Pair:
    """A link pair in canonical (sorted) order."""
    return (a, b) if a <= b else (b, a)


def mujoco_urdf_text(urdf_text: Optional[str] = None) -> str:
    """The URDF with the ``<mujoco>`` compiler block that keeps fixed links as named bodies.

    Visual geoms are discarded: only the ``<collision>`` primitives are loaded.
    """
    text = urdf_text if urdf_text is not None else robot.urdf_xml(ros2_control_plugin="none")
    start = text.find("<robot")
    end = text.find(">", start)
    if start < 0 or end < 0:
        raise ValueError("URDF text without a <robot> element")
    block = '<mujoco><compiler discardvisual="true" fusestatic="false"/></mujoco>'
    return text[: end + 1] + block + text[end + 1:]


# --------------------------------------------------------------------------- link groups


@dataclass(frozen=True)
class LinkGroups:
    """Links with collision geometry, by what moves them.

    ``arm[side]``: links moved by that arm's joints (link1 .. fingers, the wrist camera).
    ``fixed``: links fixed to the robot base (robot body, arm bases, camera mast, cam_high, table).
    ``adjacent``: pairs that are parent and child, or rigidly connected through fixed joints
    and links without geometry (the Setup Assistant's 'Adjacent').
    """

    arm: Mapping[str, Tuple[str, ...]]
    fixed: Tuple[str, ...]
    adjacent: FrozenSet[Pair]

    @property
    def all_links(self) -> Tuple[str, ...]:
        return tuple(itertools.chain(self.fixed, *self.arm.values()))

    def side_of(self, link: str) -> Optional[str]:
        for side, links in self.arm.items():
            if link in links:
                return side
        return None


@functools.lru_cache(maxsize=4)
def link_groups(urdf_text: Optional[str] = None) -> LinkGroups:
    """Classify the URDF's links with collision geometry (see :class:`LinkGroups`)."""
    text = urdf_text if urdf_text is not None else robot.urdf_xml(ros2_control_plugin="none")
    root = ET.fromstring(text)
    has_geometry = {link.get("name") for link in root.findall("link") if link.find("collision") is not None}
    parent_of: Dict[str, Tuple[str, str]] = {}  # child link -> (parent link, joint type)
    for joint in root.findall("joint"):
        parent_of[joint.find("child").get("link")] = (joint.find("parent").get("link"), joint.get("type"))

    def moving_side(link: str) -> Optional[str]:
        current = link
        while current in parent_of:
            parent, kind = parent_of[current]
            if kind != "fixed":
                # joint names carry the side; the link's first movable joint decides.
                for side in ARMS:
                    if current.startswith(f"{side}_") or parent.startswith(f"{side}_"):
                        return side
                raise ValueError(f"movable joint above {link!r} belongs to no arm")
            current = parent
        return None

    arm: Dict[str, list] = {side: [] for side in ARMS}
    fixed = []
    for link in sorted(has_geometry):
        side = moving_side(link)
        (arm[side] if side else fixed).append(link)

    # Rigid bodies: links joined by fixed joints (through links with or without geometry) never
    # move relative to each other. Adjacent = same rigid body, or rigid bodies joined by one
    # movable joint.
    def rigid_root(link: str) -> str:
        current = link
        while current in parent_of and parent_of[current][1] == "fixed":
            current = parent_of[current][0]
        return current

    jointed = {frozenset((rigid_root(child), rigid_root(parent)))
               for child, (parent, kind) in parent_of.items() if kind != "fixed"}
    adjacent = set()
    for a, b in itertools.combinations(sorted(has_geometry), 2):
        ra, rb = rigid_root(a), rigid_root(b)
        if ra == rb or frozenset((ra, rb)) in jointed:
            adjacent.add(pair(a, b))
    return LinkGroups({side: tuple(links) for side, links in arm.items()}, tuple(fixed), frozenset(adjacent))


# --------------------------------------------------------------------------- kinematic copy


class CollisionScene:
    """Robot + table collision geometry in MuJoCo, posed kinematically (no physics).

    Parameters
    ----------
    own_arm : str or None
        None: every non-skipped pair is checked (ACM sampling, the homing planner). A side:
        the guard's view, where only pairs involving that arm are generated (own-own,
        own-other arm, own-fixed); the other arm's self pairs and its contacts with the table
        are the other arm's guard's business.
    skipped_pairs : iterable of pairs, optional
        Link pairs never checked; default :func:`skipped_pairs` (the SRDF's Adjacent /
        Default / Always entries). Pass ``()`` to check every pair except MuJoCo's own
        parent-child filter (what the ACM sampling needs).
    urdf_text : str, optional
        Default: the package URDF.
    """

    def __init__(self, own_arm: Optional[str] = None, skipped_pairs: Optional[Iterable[Pair]] = None,
                 urdf_text: Optional[str] = None, check_fingers: bool = False) -> None:
        if own_arm is not None and own_arm not in ARMS:
            raise ValueError(f"own_arm must be None or one of {ARMS}, got {own_arm!r}")
        self.own_arm = own_arm
        self.groups = link_groups(urdf_text)
        if skipped_pairs is None:
            skipped_pairs = skipped_pairs_from_srdf()
        self.skipped = frozenset(pair(*p) for p in skipped_pairs)
        if not check_fingers:
            self.skipped |= FINGER_PAIRS
        spec = mujoco.MjSpec.from_string(mujoco_urdf_text(urdf_text))
        spec.modelname = "cobot_magic_collision"
        self._configure(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qpos = {side: np.array([m.jnt_qposadr[m.joint(n).id] for n in robot.arm_joint_names(side)])
                      for side in ARMS}
        self._mimic = {side: int(m.jnt_qposadr[m.joint(robot.mimic_joint_name(side)).id]) for side in ARMS}
        self.body_names = tuple(m.body(i).name for i in range(m.nbody))
        self.geom_body = m.geom_bodyid.copy()
        # per geom: 0 fixed, 1 left, 2 right (index into ARMS + 1)
        side_index = {link: ARMS.index(side) + 1 for side, links in self.groups.arm.items() for link in links}
        self.geom_side = np.array([side_index.get(self.body_names[b], 0) for b in self.geom_body])
        self.geom_link = tuple(self.body_names[b] for b in self.geom_body)
        self._table_geom = np.array([link == "table_link" for link in self.geom_link])

    def _configure(self, spec: mujoco.MjSpec) -> None:
        arm_links = {link: side for side, links in self.groups.arm.items() for link in links}
        for body in spec.bodies:
            side = arm_links.get(body.name)
            for geom in body.geoms:
                geom.margin = 0.0
                geom.gap = 0.0
                if self.own_arm is None:
                    geom.contype, geom.conaffinity = _OWN, _OWN
                elif side == self.own_arm:
                    geom.contype, geom.conaffinity = _OWN, _OWN | _OTHER | _FIXED
                elif side is not None:
                    geom.contype, geom.conaffinity = _OTHER, 0
                else:
                    geom.contype, geom.conaffinity = _FIXED, 0
        names = {body.name for body in spec.bodies}
        for a, b in sorted(self.skipped):
            if a in names and b in names:
                spec.add_exclude(bodyname1=a, bodyname2=b)

    def set_arm(self, side: str, q7) -> None:
        """Pose one arm (7 values; joint8 follows joint7). Call :meth:`update` afterwards."""
        q = np.asarray(q7, dtype=float)
        self.data.qpos[self._qpos[side]] = q
        self.data.qpos[self._mimic[side]] = -q[6]

    def update(self) -> None:
        """Forward kinematics of the posed arms."""
        mujoco.mj_kinematics(self.model, self.data)

    def contacts(self, margin_m: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geom pairs closer than ``margin_m`` now: (geom1 [n], geom2 [n], signed distance [n]).

        Negative distances are penetrations. Call after :meth:`set_arm` / :meth:`update`.
        """
        self.model.geom_margin[:] = margin_m
        mujoco.mj_collision(self.model, self.data)
        n = self.data.ncon
        contact = self.data.contact
        return contact.geom1[:n].copy(), contact.geom2[:n].copy(), contact.dist[:n].copy()

    def colliding_pairs(self, margin_m: float = 0.0) -> FrozenSet[Pair]:
        """Link pairs closer than ``margin_m`` (0: in contact) in the current pose."""
        g1, g2, dist = self.contacts(margin_m)
        names = self.geom_link
        return frozenset(pair(names[a], names[b]) for a, b, d in zip(g1, g2, dist) if d < margin_m)

    def pose(self, left7, right7) -> None:
        """Pose both arms and run forward kinematics."""
        self.set_arm("left", left7)
        self.set_arm("right", right7)
        self.update()

    def pair_kinds(self, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """Kind of each geom pair as an index into :data:`PAIR_KINDS` (self, arm_arm, table, body)."""
        s1, s2 = self.geom_side[g1], self.geom_side[g2]
        table = self._table_geom[g1] | self._table_geom[g2]
        fixed = (s1 == 0) | (s2 == 0)
        return np.where(~fixed & (s1 == s2), 0, np.where(~fixed, 1, np.where(table, 2, 3)))

    def required(self, margins) -> np.ndarray:
        """Margins [4] per kind from a float (all kinds) or a mapping kind -> m (missing: 0)."""
        if isinstance(margins, Mapping):
            unknown = set(margins) - set(PAIR_KINDS)
            if unknown:
                raise ValueError(f"unknown pair kind(s) {sorted(unknown)}; known: {PAIR_KINDS}")
            return np.array([float(margins.get(kind, 0.0)) for kind in PAIR_KINDS])
        return np.full(len(PAIR_KINDS), float(margins))

    def clearance(self, left7, right7, margins=0.0, horizon_m: float = 0.1) -> Tuple[float, Optional[Pair], str]:
        """Smallest (distance - required margin of its kind) over checked pairs, that pair and its kind.

        Pairs further than their margin plus ``horizon_m`` are not measured: (inf, None, '').
        """
        need = self.required(margins)
        self.pose(left7, right7)
        g1, g2, dist = self.contacts(float(need.max()) + horizon_m)
        if dist.size == 0:
            return math.inf, None, ""
        kinds = self.pair_kinds(g1, g2)
        slack = dist - need[kinds]
        i = int(np.argmin(slack))
        return float(slack[i]), pair(self.geom_link[g1[i]], self.geom_link[g2[i]]), PAIR_KINDS[kinds[i]]

    def min_distance(self, left7, right7, horizon_m: float = 0.1) -> Tuple[float, Optional[Pair]]:
        """Smallest signed distance between checked link pairs, and that pair.

        Pairs further than ``horizon_m`` are not measured: (inf, None) when none is closer.
        """
        self.pose(left7, right7)
        g1, g2, dist = self.contacts(horizon_m)
        if dist.size == 0:
            return math.inf, None
        i = int(np.argmin(dist))
        return float(dist[i]), pair(self.geom_link[g1[i]], self.geom_link[g2[i]])

    def in_collision(self, left7, right7, margins=0.0) -> bool:
        """True when any checked pair is closer than its margin (a float, or per kind)."""
        need = self.required(margins)
        self.pose(left7, right7)
        g1, g2, dist = self.contacts(float(need.max()))
        if dist.size == 0:
            return False
        return bool(np.any(dist < need[self.pair_kinds(g1, g2)]))

    def motion_radii(self, side: str) -> np.ndarray:
        """Per joint 1-6 of an arm: an upper bound (m) on how far any point of the arm's
        geometry lies from that joint's axis, in any configuration.

        A joint turning by ``dq`` moves no point further than ``radius * |dq|``, so the sum over
        joints bounds how far the arm's surface moves (used to inflate distances for motion
        between readings). Bound by the triangle inequality along the chain: the joint's origin
        to each downstream body origin (sum of the body offsets) plus the geom's offset and
        bounding-sphere radius. Configuration-independent, so it holds for every pose.
        """
        m = self.model
        radii = np.zeros(6)
        for index, name in enumerate(robot.arm_joint_names(side)[:6]):
            joint_body = int(m.jnt_bodyid[m.joint(name).id])
            for geom in range(m.ngeom):
                body = int(m.geom_bodyid[geom])
                reach, current = 0.0, body
                while current != joint_body and current != 0:
                    reach += float(np.linalg.norm(m.body_pos[current]))
                    current = int(m.body_parentid[current])
                if current != joint_body:
                    continue  # not downstream of this joint
                reach += float(np.linalg.norm(m.geom_pos[geom])) + float(m.geom_rbound[geom])
                radii[index] = max(radii[index], reach)
        return radii


# --------------------------------------------------------------------------- ACM


@dataclass(frozen=True)
class AcmResult:
    """The computed matrix: reason per disabled pair, and the sampling behind it."""

    disabled: Mapping[Pair, str]
    counts: Mapping[Pair, int]  # collisions per checked pair over the samples
    samples: int
    seed: int
    links: Tuple[str, ...]

    def summary(self) -> Dict[str, int]:
        out = {reason: 0 for reason in ACM_REASONS}
        for reason in self.disabled.values():
            out[reason] += 1
        out["pairs"] = len(self.links) * (len(self.links) - 1) // 2
        out["checked"] = out["pairs"] - len(self.disabled)
        return out


def random_arm_configuration(side: str, rng: np.random.Generator) -> np.ndarray:
    """Uniform in the URDF joint limits (joints 1-6 and the finger)."""
    limits = robot.arm_limits(side)
    return rng.uniform(limits.lower, limits.upper)


def compute_acm(samples: int = DEFAULT_ACM_SAMPLES, seed: int = DEFAULT_ACM_SEED,
                urdf_text: Optional[str] = None, always_fraction: float = ALWAYS_FRACTION) -> AcmResult:
    """The allowed-collision matrix by the MoveIt Setup Assistant's method (see the module docstring).

    Both arms are sampled uniformly within their URDF limits, independently, ``samples`` times.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    groups = link_groups(urdf_text)
    scene = CollisionScene(None, skipped_pairs=(), urdf_text=urdf_text, check_fingers=True)
    links = groups.all_links
    disabled: Dict[Pair, str] = {p: "Adjacent" for p in groups.adjacent}
    scene.pose(np.zeros(7), np.zeros(7))
    for p in scene.colliding_pairs():
        disabled.setdefault(p, "Default")
    rng = np.random.default_rng(seed)
    counts: Dict[Pair, int] = {}
    for _ in range(samples):
        scene.pose(random_arm_configuration("left", rng), random_arm_configuration("right", rng))
        for p in scene.colliding_pairs():
            counts[p] = counts.get(p, 0) + 1
    for a, b in itertools.combinations(sorted(links), 2):
        p = pair(a, b)
        if p in disabled:
            continue
        hits = counts.get(p, 0)
        if hits == 0:
            disabled[p] = "Never"
        elif hits >= always_fraction * samples:
            disabled[p] = "Always"
    return AcmResult(disabled, counts, samples, seed, tuple(sorted(links)))


# --------------------------------------------------------------------------- SRDF


def srdf_path() -> str:
    """Installed path of the CobotMagic SRDF (through the ament index)."""
    from sim2real_vla_ros.paths import share_path

    return share_path("config", "moveit", "cobot_magic.srdf")


@functools.lru_cache(maxsize=4)
def load_disabled_pairs(path: Optional[str] = None) -> Dict[Pair, str]:
    """``{(link1, link2): reason}`` of the SRDF's ``<disable_collisions>`` entries."""
    root = ET.parse(path or srdf_path()).getroot()
    return {pair(e.get("link1"), e.get("link2")): e.get("reason", "")
            for e in root.findall("disable_collisions")}


def skipped_pairs_from_srdf(path: Optional[str] = None) -> FrozenSet[Pair]:
    """The SRDF's disabled pairs whose reason is in :data:`SKIPPED_REASONS`."""
    return frozenset(p for p, reason in load_disabled_pairs(path).items() if reason in SKIPPED_REASONS)
