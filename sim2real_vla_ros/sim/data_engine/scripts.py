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
CARRY_OPTIONS_M = (0.12, 0.08, 0.05, 0.03)  # object base above the table while carrying, tried in order


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
    """Carry an upright object over ``target_xy``, lower it onto the table, release, retreat.

    The carry height is the highest of CARRY_OPTIONS_M (object base above the table) from
    which the straight raise, the transfer and the straight descent are all reachable: after
    a pour the arm may be stretched so far that it cannot lift the bottle 12 cm straight up.
    """
    view = ex.view()
    p, r = view.tcp[side]
    base_offset = p - view.objects[obj].pos          # TCP relative to the object's base
    down = np.array([target_xy[0], target_xy[1], view.table_top_z + clearance + base_offset[2]])
    chosen = None
    for carry in CARRY_OPTIONS_M:
        carry_z = max(p[2], view.table_top_z + carry + base_offset[2])
        raise_pose = ab.move_to([p[0], p[1], carry_z], r, linear=True)
        try:
            q_up = ex.solve_path(side, ex.q(side), raise_pose)[-1][-1]
        except StepFailed:
            continue
        above = np.array([down[0], down[1], carry_z])
        line = _seeded_line(ex, side, ab.move_to(above, r) + ab.place(down, r), q_start=q_up)
        if line is not None:
            chosen = (raise_pose, line)
            break
    if chosen is None:
        raise StepFailed(f"move {obj} back (ik)", "no reachable carry height")
    raise_pose, line = chosen
    ex.run_step(Step(f"raise {obj}", {side: raise_pose}, speed=0.6))
    ex.run_step(Step(f"move {obj} back", {side: line[:1]}, speed=0.6))
    ex.run_step(Step(f"place {obj}", {side: line[1:]},
                     sg.All((sg.OnTable(obj, 0.01, 15.0),)), speed=0.4, settle_s=0.2))
    ex.run_step(Step(f"release {obj}", {side: ab.release(down, r)}, sg.Released(obj), settle_s=0.2))
    ex.run_step(Step(f"retreat from {obj}", {side: _reachable_retreat(ex, side, down, r)},
                     sg.All((sg.Released(obj), sg.OnTable(obj, 0.02, 15.0),
                             sg.NearXY(obj, tuple(target_xy), 0.05)))))


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
    chosen = _pour_search(ex, side, r0, mouth_local, cup.pos, end)
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


def _pour_search(ex, side, r0, mouth_local, cup_pos, end, seeded: bool = True):
    """The first reachable pour (see :func:`_pour_pose`) over the options of transfer height
    and tilt angle; first with IK from the current configuration only, then (``seeded``)
    with configurations traced back from the tilt's end."""
    options = [(up, angle_deg) for angle_deg in (POUR_TILT_DEG, POUR_TILT_DEG - 8.0) for up in (TRANSFER_UP_M, 0.04)]
    for use_seed in ((False, True) if seeded else (False,)):
        for up, angle_deg in options:
            chosen = _pour_pose(ex, side, r0, mouth_local, cup_pos, end, math.radians(angle_deg), up, use_seed)
            if chosen:
                return chosen
    return None


def _pour_pose(ex, side, r0, mouth_local, cup_pos, end, angle, transfer_up, seeded=False):
    """The first reachable (grasp turn, tilt side) for a pour: (r, axis, pre_tcp, move, tilt, angle)."""
    # Tilting about the approach axis is a wrist roll (joint 6), the cheapest motion: the
    # mouth tips sideways (d perpendicular to the approach), on whichever side is reachable.
    for turn in sorted(range(-90, 91, 15), key=abs):
        r = ab.axis_rotation([0, 0, 1], math.radians(turn)) @ r0
        a = ab.horizontal(r[:, 2])
        side_dir = np.cross([0.0, 0.0, 1.0], a)
        # Prefer the body on the arm's side of the cup (the top tips away from the arm).
        away = ab.horizontal(cup_pos - ab.ARM_BASE[side])
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
            chain = _seeded_line(ex, side, move + tilt) if seeded else (
                move + tilt if ex.feasible(side, move + tilt) else None)
            if chain is not None:
                return r, axis, pre_tcp, chain[:2], chain[2:], angle
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
# Further receiving positions (cup x, y) tried when the left arm cannot pour over the first.
CUP_RECEIVE_XY = ((0.70, -0.06), (0.66, -0.05), (0.62, -0.04), (0.72, -0.03))


def _receiving_position(ex: Expert, cup_start) -> np.ndarray:
    """Where the right arm holds the cup out: the first of CUP_RECEIVE_XY (cup x, y) that the
    right arm reaches on a straight line and over which the left arm can pour; else the first
    the right arm reaches (the pour search then reports the failure)."""
    view = ex.view()
    p, r = view.tcp["right"]
    cup = view.objects["cup"]
    p_l, r_l = view.tcp["left"]
    mouth_local = r_l.T @ (view.site("bottle", "mouth") - p_l)
    rim_dz = view.site("cup", "rim")[2] - cup.pos[2]
    reachable = []
    for x, y in [(cup_start[0], max(cup_start[1], CUP_RECEIVE_Y_M))] + list(CUP_RECEIVE_XY):
        target = p + np.array([x - cup.pos[0], y - cup.pos[1], 0.0])
        if not ex.feasible("right", ab.move_to(target, r, linear=True)):
            continue
        reachable.append(target)
        cup_pos = np.array([x, y, cup.pos[2]])
        end = np.array([x, y, cup.pos[2] + rim_dz + MOUTH_ABOVE_RIM_M])
        if _pour_search(ex, "left", r_l, mouth_local, cup_pos, end, seeded=False) is not None:
            return target
    if not reachable:
        raise StepFailed("move cup to receiving position (ik)", "no reachable receiving position")
    return reachable[0]


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
    target = _receiving_position(ex, cup_start)
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


def _pick_flat(ex: Expert, side: str, obj: str, along_offset: float, target_xy=None, yaw_options=(),
               pitches_deg=(90, 75, 60, 50, 40)) -> float:
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

    try:
        rotation = ex.choose(side, ab.top_grasp_candidates(side, point, yaw, pitches_deg), build)
    except StepFailed as exc:
        raise StepFailed(f"grasp {obj} (ik)", str(exc)) from None
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


PEN_GRIP_OFFSET_M = 0.038            # each hand holds the pen this far from its centre
HANDOVER_PEN_ABOVE_TABLE_M = (0.12, 0.10)   # pen centre above the table during the hand-over
# Hand-over points (pen centre x, y) between the arms, tried in order.
HANDOVER_XY = ((0.45, 0.0), (0.50, 0.0), (0.40, 0.0), (0.45, 0.03), (0.45, -0.03), (0.55, 0.0))
HANDOVER_TURNS_DEG = (0, 15, -15, 30, -30)
HANDOVER_TURNS_WIDE_DEG = (0, 30, -30, 60, -60, 90, -90)
HOLDER_PEN_CENTRE_ABOVE_TABLE_M = 0.09    # pen centre when lowered into the holder (its end 1.5 cm above the floor)
HOLDER_ENTRY_ABOVE_M = 0.08               # the pen is lowered in from this much higher


def items_handover_place(ex: Expert) -> None:
    """Left picks the pen at its end nearer the left arm (the gripper tipped toward the free
    end), holds it out between the arms with the free end toward the right arm; the right
    takes the free end, tipped toward the left; the left lets go and backs off; the right
    turns the pen upright (the left's end down) over the holder and lowers it in."""
    view = ex.view()
    pen = view.objects["pen"]
    outward = ab.horizontal(pen.pos - ab.ARM_BASE["left"])
    inner_sign = -1.0 if float(pen.rot[:, 0] @ outward) >= 0 else 1.0
    # Pitched grasps first: a vertical approach cannot be held out high between the arms.
    # The end nearer the arm first (the gripper then tips toward the free end); else the other.
    turns = HANDOVER_TURNS_DEG
    try:
        _pick_flat(ex, "left", "pen", along_offset=inner_sign * PEN_GRIP_OFFSET_M,
                   pitches_deg=(60, 75, 50, 40, 30, 90))
    except StepFailed as exc:
        if not exc.subgoal.endswith("(ik)"):
            raise
        inner_sign = -inner_sign
        turns = HANDOVER_TURNS_WIDE_DEG
        _pick_flat(ex, "left", "pen", along_offset=inner_sign * PEN_GRIP_OFFSET_M,
                   pitches_deg=(60, 75, 50, 40, 30, 90))
    view = ex.view()
    p, r = view.tcp["left"]
    centre = view.center("pen")
    grip_local = r.T @ (p - centre)
    free_dir = -inner_sign * view.objects["pen"].rot[:, 0]      # from the left's grip to the free end
    free_yaw = math.atan2(free_dir[1], free_dir[0])
    chosen = None
    for (x, y, z) in [(x, y, z) for z in HANDOVER_PEN_ABOVE_TABLE_M for (x, y) in HANDOVER_XY]:
        target = np.array([x, y, view.table_top_z + z])
        for turn_deg in turns:
            # Free end toward the right arm (-y), turned by turn_deg.
            want = -math.pi / 2 + math.radians(turn_deg)
            rz = ab.axis_rotation([0, 0, 1], want - free_yaw)
            left_r = rz @ r
            left_p = target + rz @ (p - centre)
            left_pose = ab.move_to(left_p, left_r)
            if not ex.feasible("left", left_pose):
                continue
            pen_dir = rz @ free_dir                                   # toward the free end
            free_end = target + PEN_GRIP_OFFSET_M * ab.horizontal(pen_dir)
            pen_yaw = math.atan2(pen_dir[1], pen_dir[0])
            for rotation in ab.top_grasp_candidates("right", free_end, pen_yaw, pitches_deg=(45, 35, 60, 75)):
                right = ab.approach("right", "pen", free_end, rotation, standoff=0.06)
                if ex.feasible("right", right):
                    chosen = (left_pose, rotation)
                    break
            if chosen:
                break
        if chosen:
            break
    if chosen is None:
        raise StepFailed("hold pen out for the hand-over (ik)", "no reachable hand-over pose")
    left_pose, rotation = chosen
    ex.run_step(Step("hold pen out for the hand-over", {"left": left_pose},
                     sg.All((sg.Grasped("pen", "left"), sg.Lifted("pen", 0.08, "left"))), speed=0.6))
    # Where the free end really is now (the pen may have slipped a little in the grip).
    view = ex.view()
    centre = view.center("pen")
    axis = view.objects["pen"].rot[:, 0]
    p_left, r_left = view.tcp["left"]
    if float(axis @ (p_left - centre)) > 0:
        axis = -axis                                                  # toward the free end
    free_end = centre + PEN_GRIP_OFFSET_M * axis
    ex.run_step(Step("approach pen (hand-over)", {"right": ab.approach("right", "pen", free_end, rotation, standoff=0.06)}))
    ex.run_step(Step("grasp pen (hand-over)", {"right": ab.grasp(free_end, rotation)},
                     sg.All((sg.Grasped("pen", "right"), sg.Grasped("pen", "left"))), settle_s=0.3))
    ex.run_step(Step("left releases pen", {"left": ab.release(p_left, r_left)}, settle_s=0.2))
    ex.run_step(Step("left retreats", {"left": _reachable_retreat(ex, "left", p_left, r_left)},
                     sg.All((sg.Grasped("pen", "right"), sg.Lifted("pen", 0.06, "right")))))
    _insert_pen(ex, "right", "pen", "holder")


def _reachable_retreat(ex: Expert, side: str, p, r, up_first: bool = False):
    """The first reachable way to back the open gripper off an object: along the approach and
    up, straight back, straight up, or toward the arm's base (``up_first``: straight up first)."""
    a = r[:, 2]
    to_base = ab.horizontal(ab.ARM_BASE[side] - p)
    offsets = [-0.06 * a + [0, 0, 0.04], -0.06 * a, np.array([0, 0, 0.06]), 0.06 * to_base + [0, 0, 0.03],
               -0.03 * a, np.array([0, 0, 0.03])]
    if up_first:
        offsets = [np.array([0, 0, 0.08]), np.array([0, 0, 0.05])] + offsets
    for offset in offsets:
        poses = [ab.KeyPose(np.asarray(p) + offset, r, ab.OPEN)]
        if ex.feasible(side, poses):
            return poses
    raise StepFailed(f"{side} retreats (ik)", "no reachable retreat")


def _go_home(ex: Expert, side: str, q_home) -> None:
    """Joint move back to ``q_home`` (the arm's start), fingers open: out of the other arm's way.
    (Within IK's margin off the joint limits: a jittered start may lie just inside them.)"""
    ik = ex.ik[side]
    q_home = np.clip(np.asarray(q_home)[:6], ik.lower, ik.upper)
    p, r = ik.fk(q_home)
    ex.run_step(Step(f"{side} arm back", {side: [ab.KeyPose(p, r, ab.OPEN, linear=False, seed=np.asarray(q_home)[:6])]},
                     speed=0.8))


def _seeded_line(ex: Expert, side: str, poses, q_start=None):
    """``poses`` = [joint move to A, then straight lines through the rest]: reachable as is, or
    with A's configuration traced back from the last pose (IK for A alone may pick a
    configuration that runs into a joint limit on the lines); None if neither."""
    if ex.feasible(side, poses, q_start=q_start):
        return list(poses)
    seed = ex.seed_back(side, poses)
    if seed is None:
        return None
    first = ab.KeyPose(poses[0].position, poses[0].rotation, poses[0].finger, linear=False, seed=seed)
    out = [first] + list(poses[1:])
    return out if ex.feasible(side, out, q_start=q_start) else None


def _insert_pen(ex: Expert, side: str, pen: str, holder: str) -> None:
    """Turn the held pen upright (long end down) over the holder, lower it in, release."""
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
            continue   # the long end must point down
        for turn in sorted(range(-180, 180, 15), key=abs):
            r_new = ab.axis_rotation([0, 0, 1], math.radians(turn)) @ r_up
            down = target_centre - r_new @ centre_local
            above = down + [0, 0, HOLDER_ENTRY_ABOVE_M]
            poses = _seeded_line(ex, side, ab.move_to(above, r_new) + ab.place(down, r_new))
            if poses is not None:
                chosen = (poses, down, r_new)
                break
        if chosen:
            break
    if chosen is None:
        raise StepFailed(f"move {pen} over {holder} (ik)", "no reachable insertion pose")
    poses, down, r_new = chosen
    ex.run_step(Step(f"move {pen} over {holder}", {side: poses[:1]},
                     sg.All((sg.Grasped(pen, side), sg.NearXY(pen, tuple(hold[:2]), 0.02))), speed=0.5))
    ex.run_step(Step(f"lower {pen} into {holder}", {side: poses[1:]}, speed=0.4))
    ex.run_step(Step(f"release {pen}", {side: ab.release(down, r_new)}, settle_s=0.5))
    ex.run_step(Step(f"retreat from {holder}", {side: _reachable_retreat(ex, side, down, r_new, up_first=True)},
                     sg.All((sg.Released(pen), sg.Inside(pen, holder)))))


# Milk box side grasp above its base (box 0.12 m tall): high, so the gripper stays above the
# basket rim when the box stands on the basket floor.
BOX_GRASP_HEIGHT_M = 0.098
BOX_LIFT_M = 0.12
BOX_OVER_RIM_M = 0.025         # box base above the basket rim while carried over it
BOX_DROP_ABOVE_FLOOR_M = 0.006 # box base above the basket floor when released
# Basket-frame spots for the box (clear of the handle blocks), tried nearest the arm first.
# In the wider +y part beside the carry bar (the right hand takes the bar from -y).
BASKET_SPOTS = tuple((x, 0.05) for x in (-0.07, -0.045, -0.02, 0.0, 0.02, 0.045, 0.07))
BAR_GRIP_ABOVE_CENTRE_M = 0.006
BAR_APPROACH_OPEN_M = 0.025   # finger opening (joint7) toward the bar: 1 cm clear of it, not wide into the box
BASKET_LIFT_M = 0.11
BASKET_LIFT_CHECK_M = 0.06    # the task needs 0.05 at the basket's base; the load tilts it a little


def _box_grasp(ex: Expert, side: str, obj: str):
    """(point, rotation) of a reachable side grasp of an upright box across one pair of its
    faces (approach along a face normal, nearest the direction from the arm) that can also
    lift it; StepFailed if none."""
    view = ex.view()
    state = view.objects[obj]
    point = state.pos + np.array([0, 0, BOX_GRASP_HEIGHT_M])
    radial = ab.horizontal(point - ab.ARM_BASE[side])
    dirs = [sign * ab.horizontal(state.rot[:, k]) for k in (0, 1) for sign in (1.0, -1.0)]
    dirs = sorted((d for d in dirs if float(d @ radial) > 0.2), key=lambda d: -float(d @ radial))
    candidates = []
    for pitch in (0.0, 15.0, 30.0):
        for d in dirs:
            p = math.radians(pitch)
            approach = np.array([d[0] * math.cos(p), d[1] * math.cos(p), -math.sin(p)])
            candidates.append(ab.frame(approach, np.cross([0, 0, 1], d)))

    def build(rotation):
        return ab.approach(side, obj, point, rotation) + ab.lift(point, rotation, BOX_LIFT_M, finger=ab.OPEN)

    try:
        return point, ex.choose(side, candidates, build)
    except StepFailed as exc:
        raise StepFailed(f"grasp {obj} (ik)", str(exc)) from None


def _pick_box(ex: Expert, side: str, obj: str) -> None:
    """Side grasp of an upright box (:func:`_box_grasp`), then lift."""
    point, rotation = _box_grasp(ex, side, obj)
    ex.run_step(Step(f"approach {obj}", {side: ab.approach(side, obj, point, rotation)}))
    ex.run_step(Step(f"grasp {obj}", {side: ab.grasp(point, rotation)}, sg.Grasped(obj, side), settle_s=0.3))
    ex.run_step(Step(f"lift {obj}", {side: ab.lift(point, rotation, BOX_LIFT_M)},
                     sg.All((sg.Lifted(obj, 0.6 * BOX_LIFT_M, side), sg.Upright(obj, 20.0))), speed=0.6))


def _box_into_basket(ex: Expert, side: str, obj: str, basket: str) -> None:
    """Carry the held box over a free spot of the basket, lower it in, release, back off up."""
    view = ex.view()
    p, r = view.tcp[side]
    base_offset = p - view.objects[obj].pos                   # TCP relative to the box base
    b = view.objects[basket]
    model = ex.sim.object_models[basket]
    rim_z = view.table_top_z + model.sites["rim"][2]
    floor_z = view.table_top_z + model.container.floor_z
    spots = sorted(BASKET_SPOTS, key=lambda xy: float(np.linalg.norm(
        b.to_world((xy[0], xy[1], 0.0))[:2] - ab.ARM_BASE[side][:2])))
    chosen = None
    for xy in spots:
        base = b.to_world((xy[0], xy[1], 0.0))
        for turn in (0, 15, -15, 30, -30):
            rz = ab.axis_rotation([0, 0, 1], math.radians(turn))
            r_new = rz @ r
            off = rz @ base_offset
            over = np.array([base[0], base[1], rim_z + BOX_OVER_RIM_M]) + off
            down = np.array([base[0], base[1], floor_z + BOX_DROP_ABOVE_FLOOR_M]) + off
            poses = _seeded_line(ex, side, ab.move_to(over, r_new) + ab.place(down, r_new))
            if poses is not None:
                chosen = (poses, down, r_new)
                break
        if chosen:
            break
    if chosen is None:
        raise StepFailed(f"move {obj} over {basket} (ik)", "no reachable spot in the basket")
    poses, down, r_new = chosen
    # Up first (the box clears the basket wall), then across.
    ex.run_step(Step(f"raise {obj}", {side: ab.move_to([p[0], p[1], max(p[2], poses[0].position[2])], r, linear=True)},
                     speed=0.6))
    ex.run_step(Step(f"move {obj} over {basket}", {side: poses[:1]},
                     sg.All((sg.Grasped(obj, side), sg.Upright(obj, 20.0))), speed=0.6))
    ex.run_step(Step(f"lower {obj} into {basket}", {side: poses[1:]}, speed=0.4))
    ex.run_step(Step(f"release {obj}", {side: ab.release(down, r_new)}, sg.Released(obj), settle_s=0.3))
    ex.run_step(Step(f"retreat from {obj}", {side: _reachable_retreat(ex, side, down, r_new, up_first=True)},
                     sg.All((sg.Released(obj), sg.Inside(obj, basket, slack=0.0)))))


def handle_grasp_candidates(side: str, point, basket_yaw: float):
    """Grasps from above across the basket's carry bar (along the basket's x), either finger
    order (the wrist may be at either end of joint 6's range)."""
    out = []
    for r in ab.top_grasp_candidates(side, point, basket_yaw, pitches_deg=(60, 45, 75, 30, 90)):
        out += [r, r @ np.diag([-1.0, -1.0, 1.0])]
    return out


def _basket_handle_grasp(ex: Expert, side: str, basket: str, item: str):
    """(bar point, rotation, approach poses) of a reachable grasp of the carry bar that can also
    lift it. The bar is taken above the centre of mass of basket and item (along the bar), so
    the basket hangs level."""
    view = ex.view()
    b = view.objects[basket]
    m_b, m_i = ex.sim.object_models[basket].mass, ex.sim.object_models[item].mass
    item_x = float(b.to_local(view.objects[item].pos)[0])
    along = float(np.clip(item_x * m_i / (m_b + m_i), -0.05, 0.05))
    # A little above the bar's centre: on a shallow approach along the bar the gripper's palm,
    # behind the pads, would otherwise sit on the bar.
    point = b.to_world(np.array(ex.sim.object_models[basket].sites["handle"]) + [along, 0.0, BAR_GRIP_ABOVE_CENTRE_M])
    for rotation in handle_grasp_candidates(side, point, view.objects[basket].yaw):
        poses = [ab.KeyPose(k.position, k.rotation, BAR_APPROACH_OPEN_M, linear=k.linear)
                 for k in ab.approach(side, basket, point, rotation, standoff=0.06)]
        poses = _seeded_line(ex, side, poses)
        if poses is None:
            continue
        try:
            segs = ex.solve_path(side, ex.q(side), poses)
            ex.solve_path(side, segs[-1][-1], ab.lift(point, rotation, BASKET_LIFT_M, finger=ab.OPEN))
        except StepFailed:
            continue
        return point, rotation, poses
    raise StepFailed(f"grasp {basket} (ik)", f"{side} arm cannot grasp and lift its handle")


def _lift_basket(ex: Expert, side: str, basket: str, item: str) -> None:
    """Grasp the basket by ``side``'s handle, lift it, hold it up, put it down where it was."""
    point, rotation, poses = _basket_handle_grasp(ex, side, basket, item)
    ex.run_step(Step(f"approach {basket} bar", {side: poses}))
    ex.run_step(Step(f"grasp {basket}", {side: ab.grasp(point, rotation)}, sg.Grasped(basket, side), settle_s=0.3))
    carrying = sg.All((sg.Lifted(basket, BASKET_LIFT_CHECK_M, side), sg.Upright(basket, 20.0),
                       sg.Inside(item, basket, slack=0.0)))
    ex.run_step(Step(f"lift {basket}", {side: ab.lift(point, rotation, BASKET_LIFT_M)}, carrying, speed=0.4))
    ex.hold(0.5, carrying, action=f"hold {basket} up")
    down = point + [0, 0, 0.003]
    # Still held (a little tilted under its load): on the table within the task's tolerance.
    ex.run_step(Step(f"put {basket} down", {side: ab.place(down, rotation)},
                     sg.All((sg.OnTable(basket, 0.02, 20.0), sg.Inside(item, basket, slack=0.0))),
                     speed=0.4, settle_s=0.2))
    ex.run_step(Step(f"release {basket}", {side: ab.release(down, rotation)}, sg.Released(basket), settle_s=0.2))
    ex.run_step(Step(f"retreat from {basket}", {side: _reachable_retreat(ex, side, down, rotation, up_first=True)},
                     sg.All((sg.Released(basket), sg.OnTable(basket, 0.01, 5.0)))))


def basket_pick_place(ex: Expert) -> None:
    """Left: milk box into the basket; right: lift the basket by its carry bar and put it down."""
    home = ex.q("left").copy()
    _pick_box(ex, "left", "milk_box")
    _box_into_basket(ex, "left", "milk_box", "basket")
    _go_home(ex, "left", home)
    _lift_basket(ex, "right", "basket", "milk_box")


LID_LIFT_M = 0.05                 # straight up off the pan rim first
LID_ASIDE_M = (0.16, 0.13)        # then this far aside (the task needs 0.08) ...
LID_ASIDE_UP_M = (0.02, 0.0)      # ... and this much higher, held there
# Away from the right arm's way to the pan (never toward -y; toward -x only as a last resort).
LID_ASIDE_DIRS = ((0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (1.0, 0.3), (-0.5, 1.0), (1.0, 0.0))
LID_CLOSED_RADIUS_M = 0.02        # the task's lid_closed_radius_m
CARROT_OVER_RIM_M = 0.03          # carrot bottom above the pan rim while carried over it
CARROT_DROP_ABOVE_FLOOR_M = 0.008 # carrot bottom above the pan floor when released
CARROT_TOWARD_ARM_M = 0.02        # carrot centre this far from the pan axis, toward the right arm


def _lid_aside_move(ex: Expert, side: str, q_start, up, rotation):
    """The first reachable straight move holding the lid aside from ``up`` (lid lifted)."""
    for dist in LID_ASIDE_M:
        for rise in LID_ASIDE_UP_M:
            for dx, dy in LID_ASIDE_DIRS:
                d = np.array([dx, dy, 0.0]) / math.hypot(dx, dy)
                move = [ab.KeyPose(up + dist * d + [0, 0, rise], rotation, ab.CLOSED, linear=True)]
                if ex.feasible(side, move, q_start=q_start):
                    return move
    return None


def _knob_grasp(ex: Expert, side: str, lid: str):
    """(TCP point, rotation, approach poses, aside move) of a reachable top grasp of the lid's
    knob (pads just clear of the lid's disc) from which the lid can be lifted and held aside."""
    view = ex.view()
    state = view.objects[lid]
    disc_top = state.pos[2] + 0.006
    radial = ab.horizontal(state.pos - ab.ARM_BASE[side])
    radial_yaw = math.atan2(radial[1], radial[0])
    candidates = []
    for dyaw in (0, 30, -30, 60, -60, 90, -90):
        for r in ab.top_grasp_candidates(side, state.pos, radial_yaw + math.radians(dyaw) + math.pi / 2,
                                         pitches_deg=(45, 60, 75, 90)):
            candidates += [r, r @ np.diag([-1.0, -1.0, 1.0])]
    for rotation in candidates:
        point = np.array([state.pos[0], state.pos[1], _flat_grasp_height(disc_top, rotation)])
        poses = _seeded_line(ex, side, ab.approach(side, lid, point, rotation, standoff=0.05))
        if poses is None:
            continue
        try:
            segs = ex.solve_path(side, ex.q(side), poses)
            lifted = ex.solve_path(side, segs[-1][-1], ab.lift(point, rotation, LID_LIFT_M, finger=ab.OPEN))
        except StepFailed:
            continue
        aside = _lid_aside_move(ex, side, lifted[-1][-1], point + [0, 0, LID_LIFT_M], rotation)
        if aside is not None:
            return point, rotation, poses, aside
    raise StepFailed(f"grasp {lid} (ik)", f"{side} arm cannot grasp, lift and hold aside the lid")


def _open_lid(ex: Expert, side: str, lid: str, pan: str):
    """Grasp the knob, lift the lid off the pan, hold it aside in the air."""
    point, rotation, poses, aside = _knob_grasp(ex, side, lid)
    ex.run_step(Step(f"approach {lid} knob", {side: poses}))
    ex.run_step(Step(f"grasp {lid}", {side: ab.grasp(point, rotation)}, sg.Grasped(lid, side), settle_s=0.3))
    ex.run_step(Step(f"lift {lid}", {side: ab.lift(point, rotation, LID_LIFT_M)},
                     sg.Lifted(lid, 0.6 * LID_LIFT_M, side), speed=0.5))
    ex.run_step(Step(f"open {lid}", {side: aside},
                     sg.All((sg.Grasped(lid, side), sg.AwayFrom(lid, pan, 0.1))), speed=0.5))


def _carrot_into_pan(ex: Expert, side: str, item: str, pan: str) -> None:
    """Carry the held item over the pan, lower it in, release, back off."""
    view = ex.view()
    p, r = view.tcp[side]
    centre = view.center(item)
    centre_local = r.T @ (centre - p)
    pan_state = view.objects[pan]
    model = ex.sim.object_models[pan]
    rim_z = view.table_top_z + model.sites["rim"][2]
    floor_z = view.table_top_z + model.container.floor_z
    half_h = ex.sim.object_models[item].height / 2
    toward = ab.horizontal(ab.ARM_BASE[side] - pan_state.pos)
    target_xy = pan_state.pos[:2] + CARROT_TOWARD_ARM_M * toward[:2]
    chosen = None
    for turn in (0, 20, -20, 40, -40, 60, -60, 90, -90):
        rz = ab.axis_rotation([0, 0, 1], math.radians(turn))
        r_new = rz @ r
        over_c = np.array([target_xy[0], target_xy[1], rim_z + CARROT_OVER_RIM_M + half_h])
        down_c = np.array([target_xy[0], target_xy[1], floor_z + CARROT_DROP_ABOVE_FLOOR_M + half_h])
        poses = _seeded_line(ex, side, ab.move_to(over_c - r_new @ centre_local, r_new)
                             + ab.place(down_c - r_new @ centre_local, r_new))
        if poses is not None:
            chosen = (poses, r_new)
            break
    if chosen is None:
        raise StepFailed(f"move {item} over {pan} (ik)", "no reachable pose over the pan")
    poses, r_new = chosen
    ex.run_step(Step(f"move {item} over {pan}", {side: poses[:1]}, sg.Grasped(item, side), speed=0.6))
    ex.run_step(Step(f"lower {item} into {pan}", {side: poses[1:]}, speed=0.4))
    down = poses[-1].position
    ex.run_step(Step(f"release {item}", {side: ab.release(down, r_new)}, sg.Released(item), settle_s=0.3))
    ex.run_step(Step(f"retreat from {pan}", {side: _reachable_retreat(ex, side, down, r_new, up_first=True)},
                     sg.All((sg.Released(item), sg.Inside(item, pan, slack=0.0),
                             sg.NearXY(item, tuple(pan_state.pos[:2]), 0.07)))))


def _close_lid(ex: Expert, side: str, lid: str, pan: str) -> None:
    """Bring the held lid back over the pan (where it was taken from), lower it on, release."""
    view = ex.view()
    p, r = view.tcp[side]
    offset = p - view.objects[lid].pos           # TCP relative to the lid's base now
    pan_state = view.objects[pan]
    rim = view.site(pan, "rim")
    down = np.array([pan_state.pos[0], pan_state.pos[1], rim[2] + 0.002]) + offset
    move = None
    # The lid may have slid down a little in the grip (the TCP then has to be higher than
    # when it was taken off): lower approach heights, and a joint move (both ends high above
    # everything) to a configuration from which it can go straight down.
    for dz in (LID_LIFT_M, 0.035, 0.025):
        above = down + [0, 0, dz]
        if ex.feasible(side, [ab.KeyPose(above, r, ab.CLOSED, linear=True)]):
            move = [ab.KeyPose(above, r, ab.CLOSED, linear=True)]
            break
        line = _seeded_line(ex, side, ab.move_to(above, r) + ab.place(down, r))
        if line is not None:
            move = line[:1]
            break
    if move is None:
        raise StepFailed(f"move {lid} over {pan} (ik)", "no reachable pose over the pan")
    ex.run_step(Step(f"move {lid} over {pan}", {side: move},
                     sg.All((sg.Grasped(lid, side), sg.NearXY(lid, tuple(pan_state.pos[:2]), 0.01))), speed=0.5))
    ex.run_step(Step(f"lower {lid} onto {pan}", {side: ab.place(down, r)}, speed=0.3, settle_s=0.2))
    ex.run_step(Step(f"release {lid}", {side: ab.release(down, r)}, sg.Released(lid), settle_s=0.3))
    ex.run_step(Step(f"retreat from {lid}", {side: _reachable_retreat(ex, side, down, r, up_first=True)},
                     sg.All((sg.Released(lid), sg.NearXY(lid, tuple(pan_state.pos[:2]), LID_CLOSED_RADIUS_M)))))


def pan_open_pick_place(ex: Expert) -> None:
    """Left: lid off the pan and held aside; right: carrot into the pan, then back home;
    left: lid back on."""
    home_right = ex.q("right").copy()
    _open_lid(ex, "left", "lid", "pan")
    # Pitched grasps first: a vertical approach cannot reach over the pan's rim.
    _pick_flat(ex, "right", "carrot", along_offset=0.0, pitches_deg=(60, 45, 75, 30, 90))
    _carrot_into_pan(ex, "right", "carrot", "pan")
    _go_home(ex, "right", home_right)
    _close_lid(ex, "left", "lid", "pan")


SCRIPTS: Dict[str, Callable[[Expert], None]] = {
    "pour_water_single": pour_water_single,
    "pour_water_dual": pour_water_dual,
    "table_rearrangement": table_rearrangement,
    "items_handover_place": items_handover_place,
    "basket_pick_place": basket_pick_place,
    "pan_open_pick_place": pan_open_pick_place,
}
