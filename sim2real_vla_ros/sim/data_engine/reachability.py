"""Reachability of sampled scenes: can the arms reach the key grasp poses of a task?

Used by the tests over many seeds (every sampled pose must be reachable) and by the expert
scripts. Pure IK on the simulator's model; no physics is stepped.
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from sim2real_vla_ros.sim.data_engine import actions as ab
from sim2real_vla_ros.sim.data_engine.expert import Expert, StepFailed

BASKET_LIFT_M = 0.08


def handle_grasp_candidates(side: str, handle_point: np.ndarray, basket_yaw: float) -> List[np.ndarray]:
    """Grasps from above across a basket handle bar (the bar runs along the basket's x)."""
    return ab.top_grasp_candidates(side, handle_point, basket_yaw, pitches_deg=(90, 75, 60, 50))


def basket_handle_poses(ex: Expert) -> Dict[str, tuple]:
    """Per arm: (rotation, grasp point) of a reachable handle grasp that can also lift
    the basket by BASKET_LIFT_M; StepFailed naming the arm if there is none."""
    view = ex.view()
    basket = view.objects["basket"]
    out = {}
    for side, site in (("left", "handle_left"), ("right", "handle_right")):
        point = view.site("basket", site)
        ok = None
        for rotation in handle_grasp_candidates(side, point, basket.yaw):
            poses = ab.approach(side, "basket", point, rotation, standoff=0.06) + ab.lift(point, rotation, BASKET_LIFT_M)
            if ex.feasible(side, poses):
                ok = (rotation, point)
                break
        if ok is None:
            raise StepFailed(f"reach basket {site} (ik)", f"{side} arm cannot grasp and lift it")
        out[side] = ok
    return out
