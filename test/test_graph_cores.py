"""The nodes' ROS-free cores (planner, validator, camera/mask) without rclpy, on the reference bundle.

The node tests (test_node_planner / _validator / _camera_mask) drive the same cores through
real processes; these check their decisions directly and fast.
"""
import numpy as np
import pytest

from sim2real_vla_ros.core.control.actor_controller import FaultCounter
from sim2real_vla_ros.core.perception.masking import CameraMasker
from sim2real_vla_ros.core.policy.bundle import load_bundle
from sim2real_vla_ros.core.task.affordance_chain import ChainPhase, PredictionOutcome
from sim2real_vla_ros.core.task.records import parse_plan_state, parse_validator_event
from sim2real_vla_ros.core.task.planner_logic import PlannerConfig, PlannerCore
from sim2real_vla_ros.core.task.tasks import default_task_name, get_task
from sim2real_vla_ros.core.task.validator_gate import GateEvent
from sim2real_vla_ros.core.task.validator_logic import ValidatorConfig, ValidatorCore, parse_scripted_probability
from sim2real_vla_ros.paths import share_path

NATIVE = (320, 240)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(share_path("models", "reference"), intra_op_threads=1, inter_op_threads=1,
                       load_fast_tokenizer=False)


@pytest.fixture(scope="module")
def masked(bundle):
    """A masked cam_high and wrist image as camera_mask makes them, from a synthetic frame."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (NATIVE[1], NATIVE[0], 3), dtype=np.uint8)
    results = CameraMasker(bundle).process([frame, frame, frame])
    return [r.masked for r in results]


def test_camera_masker_makes_model_size_masks_with_black_background(bundle, masked):
    masker = CameraMasker(bundle)
    frames = [np.full((NATIVE[1], NATIVE[0], 3), value, np.uint8) for value in (0, 128, 255)]
    results = masker.process(frames)
    width, height = masker.model_size
    for result in results:
        assert result.mask.shape == (height, width) and result.masked.shape == (height, width, 3)
        background = result.mask == 0
        assert np.all(result.masked[background] == 0) and not np.any(np.all(result.masked[~background] == 0, -1))


def test_planner_core_predicts_publishes_once_and_advances_on_open(bundle, masked):
    faults = FaultCounter()
    core = PlannerCore(bundle, PlannerConfig(), faults)
    instruction = get_task(default_task_name()).instruction
    assert core.prepare(0.0) is None  # not started
    ok, message = core.start(instruction, 0.0, "test")
    assert ok and "started" in message
    assert core.prepare(0.0) is None and faults.snapshot()["no_image"] == 1
    core.on_masked_image(masked[0], 0.0)
    assert core.prepare(2.0) is None and faults.snapshot()["stale_image"] == 1  # older than max_image_age_s
    job = core.prepare(0.1)
    assert job is not None and job.request.index == 0
    outputs = core.predict(job)
    assert core.on_outputs(job, outputs, 0.1) == PredictionOutcome.ACCEPTED and core.seq == 1
    first = core.publication(0.1, NATIVE)
    plan = parse_plan_state(first.plan_state)
    assert plan.has_target and plan.index == 0 and first.plan_state["image_size"] == list(NATIVE)
    active = [arm for arm, target in first.affordances.items() if target.pixels.shape[0]]
    assert active == list(plan.active_arms) and all(first.affordances[a].index == 0 for a in active)
    again = core.publication(0.2, NATIVE)
    assert again.plan_state is None and again.affordances is None  # unchanged: nothing to publish
    assert core.on_gate_event(GateEvent.OPEN, 0, 0.3) and core.chain.state.index == 1
    assert not core.on_gate_event(GateEvent.OPEN, 0, 0.3)  # a late duplicate does not advance twice
    assert faults.snapshot()["gate_event_ignored"] == 1
    idle = core.publication(0.3, NATIVE)
    assert all(target.pixels.shape[0] == 0 for target in idle.affordances.values())


def test_planner_core_refuses_and_stops(bundle):
    faults = FaultCounter()
    core = PlannerCore(bundle, PlannerConfig(), faults)
    assert core.start("not an instruction of this bundle", 0.0, "test")[0] is False
    assert core.last_error and faults.snapshot()["start_refused"] == 1
    assert core.set_estop(True, "test", 0.0)
    assert core.start(get_task(default_task_name()).instruction, 0.0, "test") == \
        (False, core.last_error)
    assert "e-stop" in core.last_error
    assert core.set_estop(False, "test", 0.0)
    assert core.start(get_task(default_task_name()).instruction, 0.0, "test")[0]
    core.set_estop(True, "test", 0.5)
    assert core.chain.phase == ChainPhase.IDLE


def test_planner_core_holds_affordances_without_a_native_size(bundle, masked):
    faults = FaultCounter()
    core = PlannerCore(bundle, PlannerConfig(), faults)
    core.start(get_task(default_task_name()).instruction, 0.0, "test")
    core.on_masked_image(masked[0], 0.0)
    job = core.prepare(0.0)
    core.on_outputs(job, core.predict(job), 0.0)
    assert core.publication(0.0, None).affordances is None and faults.snapshot()["no_image_size"] == 1
    assert core.publication(0.1, NATIVE).affordances is not None  # offered again once the size is known


def _plan_for(arms=("left",), seq=1, index=0):
    payload = {"phase": "running", "index": index,
               "affordance": {"seq": seq, "index": index},
               "arms": {arm: {"active": arm in arms, "keypoints_norm": [[0.5, 0.5]] * 4 if arm in arms else []}
                        for arm in ("left", "right")}}
    return payload


def test_validator_core_opens_after_dwell_and_consecutive_positives(bundle, masked):
    faults = FaultCounter()
    config = ValidatorConfig(scripted=1.0)
    core = ValidatorCore(bundle, config, faults)
    keypoints = bundle.manifest.keypoints_per_arm
    payload = _plan_for()
    payload["arms"]["left"]["keypoints_norm"] = [[0.5, 0.5]] * keypoints
    core.on_plan(parse_plan_state(payload, keypoints))
    events = []
    for step in range(10):
        now = 0.2 * step
        for camera, image in zip(("cam_high", "cam_left_wrist", "cam_right_wrist"), masked):
            core.on_image(camera, image, now)
        core.on_joint_state("left", np.zeros(7), now)
        decided = core.tick(now)
        if decided.event_record is not None:
            events.append((now, parse_validator_event(decided.event_record)))
    assert len(events) == 1
    when, (event, index, _reason) = events[0]
    # 3 positives at 0.0, 0.2, 0.4 (N = 3) and the 0.5 s dwell: the gate opens at the 0.6 s tick.
    assert event == GateEvent.OPEN and index == 0 and when == pytest.approx(0.6)
    assert core.decisions == 10 and core.events_sent == 1


def test_validator_core_counts_missing_and_stale_inputs(bundle, masked):
    faults = FaultCounter()
    core = ValidatorCore(bundle, ValidatorConfig(scripted=1.0), faults)
    keypoints = bundle.manifest.keypoints_per_arm
    payload = _plan_for()
    payload["arms"]["left"]["keypoints_norm"] = [[0.5, 0.5]] * keypoints
    core.on_plan(parse_plan_state(payload, keypoints))
    core.tick(0.0)
    assert faults.snapshot()["missing_input.cam_high"] == 1
    for camera, image in zip(("cam_high", "cam_left_wrist", "cam_right_wrist"), masked):
        core.on_image(camera, image, 0.0)
    core.on_joint_state("left", np.zeros(7), 0.0)
    core.tick(5.0)
    assert faults.snapshot()["stale_input.cam_high"] == 1 and core.decisions == 0
    assert parse_scripted_probability("model") is None and parse_scripted_probability("0.25") == 0.25
    with pytest.raises(ValueError):
        parse_scripted_probability("2")
