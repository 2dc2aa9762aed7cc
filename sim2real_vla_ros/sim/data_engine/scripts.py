"""Per-task expert scripts: each composes action-bank steps with their sub-goal conditions.

A script is a function ``(expert) -> None`` that runs steps on ``expert`` and raises
:class:`~.expert.StepFailed` naming the sub-goal that was not reached. Key poses are
computed from the privileged scene when each step starts.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

from sim2real_vla_ros.sim.data_engine import actions as ab
from sim2real_vla_ros.sim.data_engine import subgoals as sg
from sim2real_vla_ros.sim.data_engine.actions import Step
from sim2real_vla_ros.sim.data_engine.expert import Expert, StepFailed

LIFT_M = 0.15
POUR_TILT_DEG = 80.0
POUR_HOLD_S = 2.0
POUR_MIN_TILT_DEG = 62.0  # the sub-goal: the task's 60 deg with a margin
MOUTH_ABOVE_RIM_M = 0.06
PRE_POUR_BACK_M = 0.09
PRE_POUR_UP_M = 0.06
TRANSFER_UP_M = 0.10
CARRY_CLEARANCE_M = 0.12  # object base above the table while carrying


def _pick_upright(ex: Expert, side: str, obj: str, grasp_height: float, inset: float = -0.006,
                  lift_m: float = LIFT_M, label: str = "") -> None:
    """Approach, grasp and lift an upright object (bottle, cup) from its side."""
    view = ex.view()
    state = view.objects[obj]
    point = state.pos + np.array([0, 0, grasp_height])
    candidates = ab.side_grasp_candidates(side, point)

    def build(rotation):
        gp = point + inset * rotation[:, 2]
        return ab.approach(side, obj, gp, rotation) + ab.lift(gp, rotation, lift_m, finger=ab.OPEN)

    rotation = ex.choose(side, candidates, build)
    gp = point + inset * rotation[:, 2]
    ex.run_step(Step(f"approach {obj}", {side: ab.approach(side, obj, gp, rotation)}))
    ex.run_step(Step(f"grasp {obj}", {side: ab.grasp(gp, rotation)}, sg.Grasped(obj, side), settle_s=0.3))
    ex.run_step(Step(f"lift {obj}", {side: ab.lift(gp, rotation, lift_m)},
                     sg.All((sg.Lifted(obj, 0.8 * lift_m, side), sg.Upright(obj, 20.0))), speed=0.6))


def _return_upright(ex: Expert, side: str, obj: str, target_xy, clearance: float = 0.004) -> None:
    """Carry an upright object over ``target_xy``, lower it onto the table, release, retreat."""
    view = ex.view()
    p, r = view.tcp[side]
    base_offset = p - view.objects[obj].pos          # TCP relative to the object's base
    above = np.array([target_xy[0], target_xy[1], view.objects[obj].pos[2]]) + base_offset
    upright = _level(r)
    carry_z = max(p[2], view.table_top_z + CARRY_CLEARANCE_M + base_offset[2])
    above[2] = carry_z
    ex.run_step(Step(f"raise {obj}", {side: ab.move_to([p[0], p[1], carry_z], r, linear=True)}, speed=0.6))
    ex.run_step(Step(f"move {obj} back", {side: ab.move_to(above, upright)}, speed=0.6))
    down = above.copy()
    down[2] = view.table_top_z + clearance + base_offset[2]
    ex.run_step(Step(f"place {obj}", {side: ab.place(down, upright)},
                     sg.All((sg.OnTable(obj, 0.01, 15.0),)), speed=0.4, settle_s=0.2))
    ex.run_step(Step(f"release {obj}", {side: ab.release(down, upright)}, sg.Released(obj), settle_s=0.2))
    ex.run_step(Step(f"retreat from {obj}", {side: ab.retreat(down, upright)},
                     sg.All((sg.Released(obj), sg.OnTable(obj, 0.02, 15.0),
                             sg.NearXY(obj, tuple(target_xy), 0.05)))))


def _level(rotation: np.ndarray) -> np.ndarray:
    """The rotation with its approach axis made horizontal-preserving: keeps the grasp as is
    (used to carry upright objects upright)."""
    return rotation


def _pour(ex: Expert, side: str, pourer: str, receiver: str, radius: float, hold_s: float = POUR_HOLD_S,
          extra: tuple = ()) -> None:
    """Bring the held pourer's mouth over the receiver and tilt it about the mouth, hold, untilt.

    The grasp may turn about the pourer's own axis (a bottle is round) to keep the wrist
    reachable: the first reachable (turn, tilt side) pair is used.
    """
    view = ex.view()
    p, r0 = view.tcp[side]
    mouth_local = r0.T @ (view.site(pourer, "mouth") - p)
    cup = view.objects[receiver]
    rim = view.site(receiver, "rim")
    end = np.array([cup.pos[0], cup.pos[1], rim[2] + MOUTH_ABOVE_RIM_M])
    chosen = None
    options = [(up, angle_deg) for angle_deg in (POUR_TILT_DEG, POUR_TILT_DEG - 8.0) for up in (TRANSFER_UP_M, 0.04)]
    for up, angle_deg in options:
        chosen = _pour_pose(ex, side, r0, mouth_local, cup, end, math.radians(angle_deg), up)
        if chosen:
            break
    if chosen is None:
        raise StepFailed(f"move {pourer} over {receiver} (ik)", "no reachable pouring pose")
    r, axis, pre_tcp, move, tilt, angle = chosen
    ex.run_step(Step(f"move {pourer} over {receiver}", {side: move}, speed=0.6))
    above = sg.SiteAbove(pourer, "mouth", receiver, "rim", radius, 0.0)
    pouring = sg.All((above, sg.Tilted(pourer, POUR_MIN_TILT_DEG)) + tuple(extra))
    ex.run_step(Step(f"tilt {pourer} over {receiver}", {side: tilt}, pouring, speed=0.5))
    ex.hold(hold_s, pouring, action=f"pour {pourer}")
    ex.achieved.append(f"{pourer} poured into {receiver} for {hold_s:.1f} s")
    back = ab.tilt_about_point(tilt[-1].position, tilt[-1].rotation, mouth_local, end, pre_tcp + r @ mouth_local, axis, -angle, n=16)
    ex.run_step(Step(f"untilt {pourer}", {side: back}, sg.Upright(pourer, 20.0), speed=0.5))


def _pour_pose(ex, side, r0, mouth_local, cup, end, angle, transfer_up):
    """The first reachable (grasp turn, tilt side) for a pour: (r, axis, pre_tcp, move, tilt, angle)."""
    # Tilting about the approach axis is a wrist roll (joint 6), the cheapest motion: the
    # mouth tips sideways (d perpendicular to the approach), on whichever side is reachable.
    for turn in sorted(range(-90, 91, 15), key=abs):
        r = ab.axis_rotation([0, 0, 1], math.radians(turn)) @ r0
        a = ab.horizontal(r[:, 2])
        side_dir = np.cross([0.0, 0.0, 1.0], a)
        # Prefer the body on the arm's side of the cup (the top tips away from the arm).
        away = ab.horizontal(cup.pos - ab.ARM_BASE[side])
        for sign in ((1.0, -1.0) if float(side_dir @ away) >= 0 else (-1.0, 1.0)):
            d = sign * side_dir
            axis = np.cross([0.0, 0.0, 1.0], d)
            # Upright beside the cup on the arm's side, mouth above the rim: the tilt then
            # swings the mouth over the cup while the bottom swings away from it.
            pre_mouth = end - PRE_POUR_BACK_M * d + np.array([0, 0, PRE_POUR_UP_M])
            pre_tcp = pre_mouth - r @ mouth_local
            # Come down onto the pre-pour pose from above, so the transfer never sweeps the
            # bottle through the cup.
            move = ab.move_to(pre_tcp + [0, 0, transfer_up], r) + ab.place(pre_tcp, r)
            tilt = ab.tilt_about_point(pre_tcp, r, mouth_local, pre_mouth, end, axis, angle, n=16)
            if ex.feasible(side, move + tilt):
                return r, axis, pre_tcp, move, tilt, angle
    return None


def pour_water_single(ex: Expert) -> None:
    side = "left"
    start = ex.view().objects["bottle"].pos.copy()
    radius = ex.sim.object_models["cup"].container.radius
    _pick_upright(ex, side, "bottle", grasp_height=0.10)
    _pour(ex, side, "bottle", "cup", radius)
    _return_upright(ex, side, "bottle", start[:2])


CUP_HOLD_LIFT_M = 0.08
CUP_RECEIVE_Y_M = -0.06   # the cup is brought toward the middle, nearer the pouring arm


def pour_water_dual(ex: Expert) -> None:
    """Right arm lifts the cup and holds it out; left arm pours into it; both put back."""
    view = ex.view()
    bottle_start = view.objects["bottle"].pos.copy()
    cup_start = view.objects["cup"].pos.copy()
    radius = ex.sim.object_models["cup"].container.radius
    _pick_upright(ex, "left", "bottle", grasp_height=0.10)
    _pick_upright(ex, "right", "cup", grasp_height=0.05, lift_m=CUP_HOLD_LIFT_M)
    view = ex.view()
    p, r = view.tcp["right"]
    target = p + np.array([0.0, max(0.0, CUP_RECEIVE_Y_M - cup_start[1]), 0.0])
    ex.run_step(Step("move cup to receiving position", {"right": ab.move_to(target, r, linear=True)},
                     sg.All((sg.Lifted("cup", 0.04, "right"), sg.Upright("cup", 10.0))), speed=0.6))
    held = (sg.Lifted("cup", 0.035, "right"), sg.Upright("cup", 25.0))
    _pour(ex, "left", "bottle", "cup", radius, extra=held)
    _return_upright(ex, "right", "cup", cup_start[:2])
    _return_upright(ex, "left", "bottle", bottle_start[:2])


PAD_HALF_LENGTH_M = 0.025     # finger pad half-length along the approach (URDF)
PAD_HALF_THICKNESS_M = 0.01   # finger pad half-width along link6 x
PAD_TABLE_GAP_M = 0.002
FLAT_LIFT_M = 0.08


def _flat_grasp_height(table_z: float, rotation: np.ndarray) -> float:
    """TCP height that puts the lowest point of the pads PAD_TABLE_GAP_M above the table."""
    a, x = rotation[:, 2], rotation[:, 0]
    return table_z + PAD_TABLE_GAP_M + PAD_HALF_LENGTH_M * abs(a[2]) + PAD_HALF_THICKNESS_M * abs(x[2])


def _flat_place_poses(ex: Expert, obj: str, rotation, grasp_point, centre, target_xy, target_yaw, obj_yaw):
    """Key poses (above, down) that put the object's centre on ``target_xy`` with ``target_yaw``,
    given the TCP ``rotation`` / ``grasp_point`` it is (or will be) held with."""
    view = ex.view()
    centre_local = rotation.T @ (centre - grasp_point)
    dyaw = math.atan2(math.sin(target_yaw - obj_yaw), math.cos(target_yaw - obj_yaw))
    r_new = ab.axis_rotation([0, 0, 1], dyaw) @ rotation
    centre_target = np.array([target_xy[0], target_xy[1],
                              view.table_top_z + ex.sim.object_models[obj].height / 2 + 0.004])
    down = centre_target - r_new @ centre_local
    return ab.move_to(down + [0, 0, FLAT_LIFT_M], r_new) + ab.place(down, r_new)


def _pick_flat(ex: Expert, side: str, obj: str, along_offset: float, target_xy=None, yaw_options=()) -> float:
    """Grasp a lying object (fork, spoon, pen, carrot) from above across its long axis, lift it.

    With ``target_xy`` the grasp orientation is chosen so that placing it there (with one of
    ``yaw_options``) is reachable too: the held object keeps the approach pitch. Returns the
    chosen target yaw (or the object's yaw).
    """
    view = ex.view()
    state = view.objects[obj]
    yaw = state.yaw
    axis = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    point = state.pos + along_offset * axis
    centre = view.center(obj)
    chosen_yaw = [yaw]

    def grasp_point(rotation):
        return np.array([point[0], point[1], _flat_grasp_height(view.table_top_z, rotation)])

    def build(rotation):
        gp = grasp_point(rotation)
        poses = ab.approach(side, obj, gp, rotation, standoff=0.06) + ab.lift(gp, rotation, FLAT_LIFT_M, finger=ab.OPEN)
        if target_xy is None:
            return poses
        q0 = ex.q(side)
        try:
            segs = ex.solve_path(side, q0, poses)
        except StepFailed:
            return poses
        for target_yaw in yaw_options:
            place = _flat_place_poses(ex, obj, rotation, gp, centre, target_xy, target_yaw, yaw)
            if ex.feasible(side, place, q_start=segs[-1][-1]):
                chosen_yaw[0] = target_yaw
                return poses
        return poses + [ab.KeyPose(np.array([9.0, 9.0, 9.0]), rotation, ab.OPEN)]  # unreachable marker

    rotation = ex.choose(side, ab.top_grasp_candidates(side, point, yaw), build)
    if target_xy is not None:
        build(rotation)  # sets chosen_yaw for the chosen rotation
    gp = grasp_point(rotation)
    ex.run_step(Step(f"approach {obj}", {side: ab.approach(side, obj, gp, rotation, standoff=0.06)}))
    ex.run_step(Step(f"grasp {obj}", {side: ab.grasp(gp, rotation)}, sg.Grasped(obj, side), settle_s=0.3))
    ex.run_step(Step(f"lift {obj}", {side: ab.lift(gp, rotation, FLAT_LIFT_M)},
                     sg.Lifted(obj, 0.6 * FLAT_LIFT_M, side), speed=0.6))
    return chosen_yaw[0]


def _place_flat(ex: Expert, side: str, obj: str, target_xy, yaw_options, condition) -> None:
    """Carry the held object so its centre lands on ``target_xy`` with one of ``yaw_options``,
    lower it onto the table, release and retreat."""
    view = ex.view()
    p, r = view.tcp[side]
    state = view.objects[obj]
    centre_local = r.T @ (view.center(obj) - p)
    obj_yaw_in_tcp = state.yaw
    height_above = p[2] - view.center(obj)[2]
    chosen = None
    for target_yaw in yaw_options:
        dyaw = math.atan2(math.sin(target_yaw - obj_yaw_in_tcp), math.cos(target_yaw - obj_yaw_in_tcp))
        r_new = ab.axis_rotation([0, 0, 1], dyaw) @ r
        centre_target = np.array([target_xy[0], target_xy[1],
                                  view.table_top_z + ex.sim.object_models[obj].height / 2 + 0.004])
        down = centre_target - r_new @ centre_local
        up = down + [0, 0, FLAT_LIFT_M]
        poses = ab.move_to(up, r_new) + ab.place(down, r_new)
        if ex.feasible(side, poses):
            chosen = (up, down, r_new)
            break
    if chosen is None:
        raise StepFailed(f"move {obj} to its place (ik)", "no reachable placing pose")
    up, down, r_new = chosen
    ex.run_step(Step(f"move {obj} to its place", {side: ab.move_to(up, r_new)}, speed=0.7))
    ex.run_step(Step(f"lower {obj}", {side: ab.place(down, r_new)}, speed=0.5))
    ex.run_step(Step(f"release {obj}", {side: ab.release(down, r_new)}, sg.Released(obj), settle_s=0.3))
    ex.run_step(Step(f"retreat from {obj}", {side: [ab.KeyPose(down + [0, 0, 0.08], r_new, ab.OPEN)]},
                     condition))


REARRANGE_LATERAL_M = 0.165   # fork / spoon centre from the plate centre (task: 0.12 .. 0.22)


def table_rearrangement(ex: Expert) -> None:
    """Left arm: fork to the left (+y) of the plate; right arm: spoon to its right."""
    for side, obj, sign in (("left", "fork", 1.0), ("right", "spoon", -1.0)):
        plate = ex.view().objects["plate"].pos
        target = (plate[0], plate[1] + sign * REARRANGE_LATERAL_M)
        # Laid along x (parallel to the plate's side, as a table is set), either way round.
        yaw = _pick_flat(ex, side, obj, along_offset=-0.03, target_xy=target, yaw_options=(0.0, math.pi))
        done = sg.All((sg.Released(obj), sg.NearXY(obj, target, 0.03), sg.OnTable(obj, 0.004, 5.0)))
        _place_flat(ex, side, obj, target, (yaw,), done)


# Hand-over points in the air between the arms, tried in order.
HANDOVER_POINTS = [np.array([x, y, 0.76 + z]) for z in (0.18, 0.14, 0.22) for x in (0.45, 0.52, 0.40)
                   for y in (0.0, 0.04, -0.04)]
PEN_GRIP_OFFSET_M = 0.038                            # each hand holds the pen this far from its centre
HOLDER_PEN_CENTRE_ABOVE_TABLE_M = 0.095               # pen centre when standing in the holder


def items_handover_place(ex: Expert) -> None:
    """Left picks the pen near one end, holds it out; right takes the other end; left lets go;
    right turns it upright over the holder and lowers it in."""
    view = ex.view()
    pen = view.objects["pen"]
    _pick_flat(ex, "left", "pen", along_offset=PEN_GRIP_OFFSET_M)
    # Hold it out at a hand-over point, pen level, where the right hand can take the free end:
    # the first (point, turn about vertical) where both arms' poses are reachable.
    view = ex.view()
    p, r = view.tcp["left"]
    centre = view.center("pen")
    axis0 = view.objects["pen"].rot[:, 0]
    yaw0 = view.objects["pen"].yaw
    chosen = None
    for point in HANDOVER_POINTS:
        for turn in sorted(range(-180, 180, 15), key=abs):
            rz = ab.axis_rotation([0, 0, 1], math.radians(turn))
            if (rz @ axis0)[1] < 0.5:
                continue  # the left hand's end must point to +y so the hands do not cross
            left_pose = ab.move_to(point + rz @ (p - centre), rz @ r)
            if not ex.feasible("left", left_pose):
                continue
            free_end = point - PEN_GRIP_OFFSET_M * (rz @ axis0)
            for rotation in ab.top_grasp_candidates("right", free_end, yaw0 + math.radians(turn),
                                                    pitches_deg=(90, 75, 60, 45)):
                right = ab.approach("right", "pen", free_end, rotation, standoff=0.06)
                if ex.feasible("right", right):
                    chosen = (left_pose, right, rotation, free_end)
                    break
            if chosen:
                break
        if chosen:
            break
    if chosen is None:
        raise StepFailed("hold pen out for the hand-over (ik)", "no reachable hand-over pose")
    left_pose, right_approach, rotation, free_end = chosen
    ex.run_step(Step("hold pen out for the hand-over", {"left": left_pose},
                     sg.All((sg.Grasped("pen", "left"), sg.Lifted("pen", 0.1, "left"))), speed=0.6))
    view = ex.view()
    free_end = view.center("pen") - PEN_GRIP_OFFSET_M * view.objects["pen"].rot[:, 0]

    def build(rotation):
        return ab.approach("right", "pen", free_end, rotation, standoff=0.06)

    ex.run_step(Step("approach pen (hand-over)", {"right": build(rotation)}))
    ex.run_step(Step("grasp pen (hand-over)", {"right": ab.grasp(free_end, rotation)},
                     sg.All((sg.Grasped("pen", "right"), sg.Grasped("pen", "left"))), settle_s=0.3))
    p_left, r_left = ex.view().tcp["left"]
    ex.run_step(Step("left releases pen", {"left": ab.release(p_left, r_left)}, settle_s=0.2))
    ex.run_step(Step("left retreats", {"left": [ab.KeyPose(p_left + [0, 0.06, 0.06], r_left, ab.OPEN)]},
                     sg.All((sg.Grasped("pen", "right"), sg.Lifted("pen", 0.1, "right")))))
    _insert_pen(ex, "right", "pen", "holder")


def _insert_pen(ex: Expert, side: str, pen: str, holder: str) -> None:
    """Turn the held pen upright (free end down) over the holder, lower it in, release."""
    view = ex.view()
    p, r = view.tcp[side]
    centre = view.center(pen)
    centre_local = r.T @ (centre - p)
    hold = view.objects[holder].pos
    target_centre = np.array([hold[0], hold[1], view.table_top_z + HOLDER_PEN_CENTRE_ABOVE_TABLE_M])
    chosen = None
    for angle in (math.pi / 2, -math.pi / 2):
        r_up = ab.axis_rotation(r[:, 1], angle) @ r   # pitch about the finger axis
        if (r_up @ centre_local)[2] > -0.02:
            continue   # the free end must point down
        for turn in sorted(range(-90, 91, 30), key=abs):
            r_new = ab.axis_rotation([0, 0, 1], math.radians(turn)) @ r_up
            down = target_centre - r_new @ centre_local
            above = down + [0, 0, 0.12]
            poses = ab.move_to(above, r_new) + ab.place(down, r_new)
            if ex.feasible(side, poses):
                chosen = (above, down, r_new)
                break
        if chosen:
            break
    if chosen is None:
        raise StepFailed(f"move {pen} over {holder} (ik)", "no reachable insertion pose")
    above, down, r_new = chosen
    ex.run_step(Step(f"move {pen} over {holder}", {side: ab.move_to(above, r_new)},
                     sg.All((sg.Grasped(pen, side), sg.NearXY(pen, tuple(hold[:2]), 0.02))), speed=0.5))
    ex.run_step(Step(f"lower {pen} into {holder}", {side: ab.place(down, r_new)}, speed=0.4))
    ex.run_step(Step(f"release {pen}", {side: ab.release(down, r_new)}, settle_s=0.5))
    ex.run_step(Step(f"retreat from {holder}", {side: [ab.KeyPose(down + [0, 0, 0.1], r_new, ab.OPEN)]},
                     sg.All((sg.Released(pen), sg.Inside(pen, holder)))))


SCRIPTS: Dict[str, Callable[[Expert], None]] = {
    "pour_water_single": pour_water_single,
    "pour_water_dual": pour_water_dual,
    "table_rearrangement": table_rearrangement,
    "items_handover_place": items_handover_place,
}
