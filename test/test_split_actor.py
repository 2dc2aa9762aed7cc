"""The split actor without ROS: RemoteInference's protocol, and an ActorController driven over a
simulated link (latency, a cut, a restore) the way actor_control drives it; the graph's split layout."""
import dataclasses

import numpy as np
import pytest

from sim2real_vla_ros import graph
from sim2real_vla_ros.core.control.split_actor import (INFERENCE_PARAMETER_NAMES, RemoteInference, failure_reason,
                                                       format_request_id, parse_request_id)
from sim2real_vla_ros.core.vocabulary import actor_inferred_chunk_topic, actor_request_topic
from test_actor_controller import CHUNK_DT, DT, MAX_ACCELERATION, MAX_VELOCITY, STEPS, controller

HORIZON_S = STEPS * CHUNK_DT


def remote(**overrides) -> RemoteInference:
    values = {"request_timeout_s": 1.0, "max_chunk_age_s": HORIZON_S, **overrides}
    return RemoteInference("left", CHUNK_DT, 7, **values)


def test_request_ids_round_trip_and_bad_ones_are_refused():
    assert parse_request_id(format_request_id("right", 4, 17)) == ("right", 4, 17)
    assert parse_request_id("left/2/3/failed:no_observation") == ("left", 2, 3)
    assert failure_reason("left/2/3/failed:no_observation") == "no_observation"
    assert failure_reason("left/2/3") is None
    for bad in ("", "left/2", "middle/1/2", "left/x/2"):
        with pytest.raises(ValueError):
            parse_request_id(bad)


def test_only_the_answer_to_the_request_in_flight_fresh_and_for_its_target_is_accepted():
    link = remote()
    chunk = np.zeros((STEPS, 7))
    frame = link.request(target_index=3, target_seq=1, observation_s=10.0, now_s=10.0)
    verdict = link.on_chunk(frame, 10.0, chunk, CHUNK_DT, now_s=10.2)
    assert verdict.accept and verdict.finished and verdict.age_s == pytest.approx(0.2)
    # The same answer again (a duplicate after a reconnect) is not in flight any more.
    assert not link.on_chunk(frame, 10.0, chunk, CHUNK_DT, now_s=10.3).finished
    frame = link.request(3, 1, 11.0, 11.0)
    assert link.on_chunk(frame, 11.0 - HORIZON_S - 0.01, chunk, CHUNK_DT, 11.0).reason == "chunk_dropped.too_old"
    frame = link.request(3, 1, 12.0, 12.0)
    assert link.on_chunk(frame.replace("/3/", "/4/"), 12.0, chunk, CHUNK_DT, 12.1).reason == \
        "chunk_dropped.another_target"
    frame = link.request(3, 1, 13.0, 13.0)
    assert link.on_chunk(frame, 13.5, chunk, CHUNK_DT, 13.1).reason == "chunk_dropped.stamped_in_the_future"
    frame = link.request(3, 1, 14.0, 14.0)
    assert link.on_chunk(frame, 14.0, chunk, 0.02, 14.1).reason.startswith("malformed_chunk")
    frame = link.request(3, 1, 15.0, 15.0)
    failed = link.on_chunk(frame + "/failed:inference_error", 15.0, np.zeros((0, 7)), None, 15.1)
    assert failed.finished and not failed.accept and failed.reason == "inference_remote_failure.inference_error"


def test_a_request_times_out_once_and_its_late_answer_is_refused():
    link = remote(request_timeout_s=0.5)
    frame = link.request(0, 1, 1.0, 1.0)
    assert not link.timed_out(1.4)
    assert link.timed_out(1.6) and not link.timed_out(1.7)
    assert link.on_chunk(frame, 1.0, np.zeros((STEPS, 7)), CHUNK_DT, 1.8).reason == "unrequested_chunk"
    link.request(0, 1, 50.0, 50.0)
    assert link.timed_out(2.0), "a clock that went back (simulator restart) must not leave a request in flight forever"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RemoteInference("middle", CHUNK_DT, 7, 1.0, 1.0)
    with pytest.raises(ValueError):
        RemoteInference("left", CHUNK_DT, 7, 0.0, 1.0)


class SplitWorld:
    """An ActorController driven as actor_control drives it, the model behind a simulated link.

    Requests and chunks take ``latency_s`` each way plus ``compute_s`` of inference; while
    ``link_up`` is False both are lost. The arm tracks perfectly; images are fresh every tick.
    """

    def __init__(self, latency_s=0.01, compute_s=0.15, speed=0.8):
        self.actor = controller()
        self.remote = remote()
        self.latency_s, self.compute_s, self.speed = latency_s, compute_s, speed
        self.link_up = True
        self.now = 0.0
        self.measured = np.zeros(7)
        self.in_transit = []  # (arrival time, frame_id, observation stamp, chunk)
        self.snapshot = None
        self.commands, self.accepted_at = [], []
        self.actor.on_plan("pour the water", (640, 480))
        self.actor.on_affordance(np.array([[320.0, 240.0]]), 0, 0.0)
        self.actor.on_joint_state(self.measured, -DT)

    def _chunk(self, joints):
        chunk = np.repeat(np.asarray(joints)[None], STEPS, axis=0)
        chunk[:, 0] = joints[0] + self.speed * CHUNK_DT * np.arange(STEPS)
        return chunk

    def step(self):
        actor, now = self.actor, self.now
        actor.on_joint_state(self.measured, now)
        actor.on_image("cam_high", "header", now)
        actor.on_image("wrist", "header", now)
        if self.remote.timed_out(now):
            actor.inference_finished()
        for item in [item for item in self.in_transit if item[0] <= now]:
            self.in_transit.remove(item)
            _, frame, stamp, chunk = item
            verdict = self.remote.on_chunk(frame, stamp, chunk, CHUNK_DT, now)
            if verdict.finished:
                if verdict.accept and actor.submit_chunk(dataclasses.replace(self.snapshot, stamp_s=stamp),
                                                         verdict.chunk, now) is not None:
                    self.accepted_at.append((now, stamp))
                actor.inference_finished()
        output = actor.tick(now)
        if output.request_inference:
            self.snapshot = actor.take_snapshot()
            frame = self.remote.request(self.snapshot.target.index, self.snapshot.target.seq, self.snapshot.stamp_s, now)
            if self.link_up:  # the inference side sees the observation as of the request, answers later
                self.in_transit.append((now + 2 * self.latency_s + self.compute_s, frame, now,
                                        self._chunk(self.measured)))
        if not self.link_up:
            self.in_transit.clear()
        if output.command is not None:
            self.commands.append((now, output.command.copy()))
            self.measured = output.command.copy()
        self.now = round(now + DT, 9)

    def run(self, seconds):
        for _ in range(int(round(seconds / DT))):
            self.step()

    def positions(self, start=-np.inf, end=np.inf):
        return np.array([c for t, c in self.commands if start <= t < end])


def test_a_cut_link_holds_within_the_chunk_horizon_and_a_restored_one_resumes_only_on_a_fresh_chunk():
    world = SplitWorld()
    world.run(3.0)
    assert len(world.accepted_at) >= 3
    moving = world.positions(2.0, 3.0)
    assert np.ptp(moving[:, 0]) > 0.2
    cut_at = world.now
    world.link_up = False
    world.run(4.0)
    # The last chunk (observation <= cut_at) runs out by cut_at + horizon; then the filter decelerates.
    stop_time = MAX_VELOCITY / MAX_ACCELERATION
    held = world.positions(cut_at + HORIZON_S + stop_time + 0.1)
    assert np.ptp(held, axis=0).max() < 1e-9, "the arm must hold once the last chunk has run out"
    restore_at = world.now
    world.link_up = True
    world.run(2.0)
    fresh = [t for t, stamp in world.accepted_at if t >= restore_at]
    assert fresh, "a fresh chunk must be spliced after the link is back"
    before_fresh = world.positions(restore_at, fresh[0])
    assert np.ptp(np.vstack([held[-1:], before_fresh]), axis=0).max() < 1e-9, "nothing moves before a fresh chunk"
    assert np.ptp(world.positions(fresh[0])[:, 0]) > 0.05, "motion resumes after it"
    everything = world.positions()
    velocity = np.diff(everything, axis=0) / DT
    assert np.all(np.abs(velocity) <= MAX_VELOCITY + 1e-9)
    assert np.all(np.abs(np.diff(velocity, axis=0) / DT) <= MAX_ACCELERATION + 1e-6)


def test_latency_up_to_the_threshold_is_hidden_by_the_splice():
    for compute_s in (0.1, 0.2, 0.3):
        world = SplitWorld(compute_s=compute_s, speed=0.3)  # stays inside the +-3 rad limits
        world.run(6.0)
        stats = world.actor.execution_stats.summary()
        # Every executed tick after the first chunk had a fresh setpoint: the remote latency is
        # inside the request threshold (0.5 s), so the next chunk is always spliced in time.
        assert stats["ticks_without_fresh_setpoint"] == 0, f"{compute_s} s: {stats}"
        assert np.all(np.abs(np.diff(world.positions(1.0)[:, 0])) > 0.0), f"{compute_s} s: the arm stalled"


# --------------------------------------------------------------------------- graph


def test_split_graph_keeps_the_actor_name_on_the_robot_host_and_puts_the_models_on_the_gpu_host():
    specs = graph.vla_nodes(split_inference=True)
    hosts = {spec.name: graph.host_of(spec) for spec in specs}
    assert hosts == {"camera_mask": "robot", "planner": "gpu", "validator": "gpu", "actor_left": "robot",
                     "actor_right": "robot", "actor_left_inference": "gpu", "actor_right_inference": "gpu"}
    assert graph.host_of(specs[0], mask_host="gpu") == "gpu"
    by_name = {spec.name: spec for spec in specs}
    assert by_name["actor_left"].executable == "actor_control"
    inference = by_name["actor_left_inference"]
    assert inference.executable == "actor_inference" and set(inference.parameters) <= set(INFERENCE_PARAMETER_NAMES)
    assert inference.parameters["arm"] == "left"
    # The default graph is unchanged: one actor process per arm.
    assert [s.executable for s in graph.vla_nodes()].count("actor") == 2


def test_split_contract_connects_requests_and_chunks_and_every_subscription_has_a_publisher():
    connections = graph.expected_connections(split_inference=True)
    for arm in graph.ARMS:
        request = connections["/" + actor_request_topic(arm)]
        chunk = connections["/" + actor_inferred_chunk_topic(arm)]
        assert request.publishers == {f"actor_{arm}"} and request.subscribers == {f"actor_{arm}_inference"}
        assert chunk.publishers == {f"actor_{arm}_inference"} and chunk.subscribers == {f"actor_{arm}"}
    names = {spec.name for spec in graph.vla_nodes(split_inference=True)} | {graph.SIM_NODE}
    for topic, ends in connections.items():
        assert ends.publishers <= names and ends.subscribers <= names, topic
        if ends.subscribers and topic not in graph.EXTERNAL_INPUTS:
            assert ends.publishers, f"{topic} has subscribers but no publisher"
