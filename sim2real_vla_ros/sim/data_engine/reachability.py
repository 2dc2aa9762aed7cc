"""Reachability of sampled scenes: can the arms reach the key grasps of a task's expert?

Used by the tests over many seeds (every sampled pose must be reachable). Pure IK on the
simulator's model from the scene as reset; no physics is stepped. The checks are the
experts' own grasp searches (:mod:`.scripts`), so they agree with what the expert does.
"""
from __future__ import annotations

from typing import Dict

from sim2real_vla_ros.sim.data_engine import scripts
from sim2real_vla_ros.sim.data_engine.expert import Expert, StepFailed


def _ok(check) -> bool:
    try:
        check()
        return True
    except StepFailed:
        return False


def basket_scene_reachable(sim) -> Dict[str, bool]:
    """For a reset ``basket_pick_place`` simulator: the left arm's side grasp and lift of the
    milk box, and the right arm's grasp and lift of the basket's carry bar (at the point along
    the bar the expert takes from where the box stands)."""
    ex = Expert(sim)
    return {
        "milk_box": _ok(lambda: scripts._box_grasp(ex, "left", "milk_box")),
        "basket": _ok(lambda: scripts._basket_handle_grasp(ex, "right", "basket", "milk_box")),
    }
