"""ActorController, the actor's ROS-free control object, driven directly (no rclpy)."""
import numpy as np
import pytest

from sim2real_vla_ros.core.control.actor_controller import ActorConfig, ActorController
from sim2real_vla_ros.core.control.safety import SafetyLimits

DT = 0.02
CHUNK_DT = 0.04
STEPS = 25
MAX_VELOCITY = 2.0
MAX_ACCELERATION = 8.0


def limits() -> SafetyLimits:
    return SafetyLimits(lower=np.full(7, -3.0), upper=np.full(7, 3.0), max_velocity=MAX_VELOCITY,
                        max_acceleration=MAX_ACCELERATION, max_deviation_from_measured=0.5, ramp_velocity=0.25,
                        max_input_age_s={"cam_high": 0.5, "wrist": 0.5, "joint_state": 0.1, "affordance": 30.0})


def controller(**overrides) -> ActorController:
    config = ActorConfig(**{"arm": "left", "output_mode": "stream", "request_threshold_s": 0.5, **overrides})
    return ActorController(config, limits(), CHUNK_DT, keypoints_per_arm=1)


class World:
    """Perfect tracking, fresh images every tick, one target; the policy is a joint-0 ramp."""

    def __init__(self, actor: ActorController, speed: float = 1.5) -> None:
        self.actor = actor
        self.speed = speed
        self.measured = np.zeros(7)
        self.now = 0.0
        self.outputs = []
        actor.on_plan("pour the water", (640, 480))
        actor.on_affordance(np.array([[320.0, 240.0]]), 0, 0.0)
        actor.on_joint_state(self.measured, -DT)  # the arm reports before the policy starts

    def chunk(self, snapshot) -> np.ndarray:
        chunk = np.repeat(snapshot.joints[None], STEPS, axis=0)
        chunk[:, 0] = snapshot.joints[0] + self.speed * CHUNK_DT * np.arange(STEPS)
        return chunk

    def step(self, infer=True):
        actor = self.actor
        actor.on_joint_state(self.measured, self.now)
        actor.on_image("cam_high", "top frame", self.now)
        actor.on_image("wrist", "wrist frame", self.now)
        output = actor.tick(self.now)
        self.outputs.append(output)
        if output.request_inference and infer:
            snapshot = actor.take_snapshot()
            if snapshot is not None:
                actor.submit_chunk(snapshot, self.chunk(snapshot), self.now)
            actor.inference_finished()
        if output.command is not None:
            self.measured = output.command.copy()
        self.now += DT
        return output

    def commands(self) -> np.ndarray:
        return np.stack([o.command for o in self.outputs if o.command is not None])


def test_a_target_and_an_instruction_start_inference_and_motion():
    world = World(controller())
    first = world.step()
    assert first.active and first.request_inference
    for _ in range(60):
        world.step()
    commands = world.commands()
    assert commands[-1, 0] > 0.5  # the arm follows the chunks
    velocity = np.diff(commands[:, 0]) / DT
    assert np.all(np.abs(velocity) <= MAX_VELOCITY + 1e-9)
    assert world.actor.diagnostics()["inferences"] >= 2


def test_idle_without_a_target_holds_and_never_asks():
    actor = controller()
    world = World(actor)
    actor.on_affordance(np.empty((0, 2)), None, 0.0)
    outputs = [world.step() for _ in range(10)]
    assert not any(o.request_inference or o.active for o in outputs)
    np.testing.assert_allclose(world.commands(), 0.0)


def test_estop_holds_from_the_next_tick_and_discards_a_late_chunk():
    world = World(controller())
    for _ in range(20):
        world.step()
    snapshot_before = world.actor.take_snapshot()  # an inference that started before the e-stop
    assert world.actor.set_estop(True)
    held = [world.step() for _ in range(30)]
    assert all(o.decision.held and not o.request_inference for o in held)
    assert world.actor.submit_chunk(snapshot_before, world.chunk(snapshot_before), world.now) is None
    assert world.actor.faults.snapshot()["chunk_discarded_inactive"] == 1
    speeds = np.abs(np.diff(world.commands()[-10:, 0]))
    assert np.all(speeds < 1e-9)  # at rest after the stop profile


def test_a_new_affordance_index_asks_for_a_chunk_at_once():
    world = World(controller())
    for _ in range(5):
        world.step()
    assert not world.step().request_inference  # the current chunk has plenty left
    world.actor.on_affordance(np.array([[100.0, 100.0]]), 1, world.now)
    assert world.step().request_inference


def test_clock_jump_back_clears_the_plan_and_is_counted():
    world = World(controller())
    for _ in range(20):
        world.step()
    world.now = 0.1  # a simulator restart
    world.step(infer=False)
    assert world.actor.faults.snapshot()["clock_jumped_back"] == 1
    assert world.actor.chunks.remaining_steps(world.now) == 0


def test_no_image_size_is_a_counted_failure_not_a_guess():
    actor = ActorController(ActorConfig(arm="left"), limits(), CHUNK_DT, keypoints_per_arm=1)
    world = World(actor)
    actor.on_plan("pour the water", None)
    world.step()
    assert actor.faults.snapshot()["no_image_size"] == 1
    assert world.actor.chunks.remaining_steps(world.now) == 0


def test_trajectory_points_start_at_the_command_and_end_at_rest():
    world = World(controller(output_mode="trajectory"))
    for _ in range(30):
        output = world.step()
    points = output.trajectory
    np.testing.assert_array_equal(points[0], output.command)
    assert np.allclose(points[-1], points[-2])  # the tail decelerates to rest
    steps = np.abs(np.diff(points, axis=0)) / DT
    assert np.all(steps <= MAX_VELOCITY + 1e-9)


def test_velocity_scale_applies_live_and_ramps_without_an_acceleration_jump():
    world = World(controller(), speed=1.9)
    for _ in range(40):
        world.step()
    moving = np.abs(np.diff(world.commands()[-2:, 0]))[0] / DT
    assert moving > 1.0  # cruising well above the scaled limit (0.4 rad/s)
    world.actor.set_velocity_scale(0.2)
    limits_seen = []
    for _ in range(40):
        world.step()
        limits_seen.append(world.actor.velocity_limit[0])
    assert limits_seen[-1] == pytest.approx(0.2 * MAX_VELOCITY)
    assert np.all(np.diff([MAX_VELOCITY] + limits_seen) >= -MAX_ACCELERATION * DT - 1e-9)
    commands = world.commands()[-42:, 0]
    velocity = np.diff(commands) / DT
    acceleration = np.diff(velocity) / DT
    assert np.all(np.abs(acceleration) <= MAX_ACCELERATION + 1e-6)
    assert abs(velocity[-1]) <= 0.2 * MAX_VELOCITY + 1e-9
    with pytest.raises(ValueError, match="velocity scale"):
        world.actor.set_velocity_scale(1.5)


def test_sync_schedule_asks_only_when_the_chunk_has_run_out():
    world = World(controller(schedule="sync"))
    requests = [world.step().request_inference for _ in range(120)]
    ticks = np.flatnonzero(requests)
    # One chunk lasts (STEPS - 1) * CHUNK_DT = 0.96 s = 48 ticks; the next request comes after it.
    assert np.all(np.diff(ticks) >= 48)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="output_mode"):
        ActorConfig(arm="left", output_mode="teleport")
    with pytest.raises(ValueError, match="arm"):
        ActorConfig(arm="middle")
