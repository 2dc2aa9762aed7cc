"""camera_mask node as a real process: paired frames -> masks and masked images; skew drops; faults."""
import os
import shutil

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import ListParameters
from sensor_msgs.msg import Image

from model_factory import write_bundle
from ros_harness import REPO, NodeProcess, Probe, wait_for
from sim2real_vla_ros import graph
from sim2real_vla_ros.core.policy.bundle import load_bundle
from sim2real_vla_ros.core.policy.observation import logits_to_mask, resize_rgb
from sim2real_vla_ros.core.vocabulary import CAMERAS
from sim2real_vla_ros.nodes import common

pytestmark = pytest.mark.integration
MODULE = "sim2real_vla_ros.nodes.camera_mask"
VLA_YAML = f"{REPO}/config/vla.yaml"
NATIVE = (24, 32)  # camera frames (h, w); the test bundle's model resolution is 12x16


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bundle"))
    write_bundle(folder)
    return folder


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    probe = Probe("camera_mask_probe", use_sim_time=False)
    for camera in CAMERAS:
        probe.subscribe(Image, f"/vla/mask/{camera}", common.SENSOR_QOS)
        probe.subscribe(Image, f"/vla/masked/{camera}", common.SENSOR_QOS)
    probe.subscribe(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
    yield probe
    probe.shutdown()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def cameras(probe):
    return Cameras(probe)


@pytest.fixture(scope="module")
def node(bundle_dir, probe):
    process = NodeProcess(MODULE, "camera_mask", params_file=VLA_YAML, params={
        "bundle_path": bundle_dir, "max_skew_s": 0.04, "max_input_age_s.camera": 5.0, "diagnostics_rate_hz": 5.0})
    yield process
    assert process.stop() in (0, -2), process.output


class Cameras:
    """The three camera topics, published from the probe with strictly increasing stamps.

    Camera frames are best effort: the tests publish until the node's answer shows up instead
    of trusting that one message arrives.
    """

    def __init__(self, probe):
        self.node = probe.node
        self.publishers = {c: self.node.create_publisher(Image, f"/{c}/image_raw", common.SENSOR_QOS)
                           for c in CAMERAS}
        self.last_s = 0.0

    def next_stamp_s(self):
        self.last_s = max(common.now_seconds(self.node), self.last_s + 0.01)
        return self.last_s

    def publish(self, images, stamps_s):
        for camera, publisher in self.publishers.items():
            self.last_s = max(self.last_s, stamps_s[camera])
            stamp = common.seconds_to_stamp(stamps_s[camera])
            publisher.publish(common.numpy_to_image(images[camera], "rgb8", stamp, f"{camera}_optical_frame"))

    def publish_set(self, images, skew_s=0.0):
        """One set at a fresh stamp; cam_right_wrist lags the others by ``skew_s``. Returns the stamps."""
        base = self.next_stamp_s()
        stamps = {c: base + skew_s for c in CAMERAS}
        stamps["cam_right_wrist"] = base
        self.publish(images, stamps)
        return {c: common.seconds_to_stamp(t) for c, t in stamps.items()}


def frames(seed):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (*NATIVE, 3), dtype=np.uint8) for c in CAMERAS}


def publish_until_answered(cameras, probe, node, images, skew_s=0.0):
    """Publish sets until one comes back as a masked cam_right_wrist; return that set's stamps."""
    published = []

    def answered():
        published.append(cameras.publish_set(images, skew_s))
        done = {_ns(m.header.stamp) for m in probe.received("/vla/masked/cam_right_wrist")}
        return next((stamps for stamps in published if _ns(stamps["cam_right_wrist"]) in done), None)
    return wait_for(answered, 30.0, "a published camera set answered", poll=0.2, processes=[node])


def _ns(stamp):
    return stamp.sec * 10**9 + stamp.nanosec


def latest_diagnostics(probe):
    arrays = probe.received("/diagnostics")
    for array in reversed(arrays):
        for status in array.status:
            if status.hardware_id == "camera_mask":
                return {kv.key: kv.value for kv in status.values}
    return None


def wait_for_outputs_with_stamps(probe, stamps, node):
    def all_published():
        return all(any(m.header.stamp == stamps[camera] for m in probe.received(f"/vla/{kind}/{camera}"))
                   for camera in CAMERAS for kind in ("mask", "masked"))
    wait_for(all_published, 20.0, "masks and masked images of the published set", processes=[node])


def test_paired_frames_give_correct_masks_and_masked_images(node, probe, cameras, bundle_dir):
    images = frames(0)
    stamps = publish_until_answered(cameras, probe, node, images)
    wait_for_outputs_with_stamps(probe, stamps, node)
    bundle = load_bundle(bundle_dir, load_fast_tokenizer=False)
    for camera in CAMERAS:
        mask_msg = next(m for m in probe.received(f"/vla/mask/{camera}") if m.header.stamp == stamps[camera])
        masked_msg = next(m for m in probe.received(f"/vla/masked/{camera}") if m.header.stamp == stamps[camera])
        assert mask_msg.encoding == "mono8" and masked_msg.encoding == "rgb8"
        assert (mask_msg.height, mask_msg.width) == (12, 16) == (masked_msg.height, masked_msg.width)
        assert mask_msg.header.frame_id == f"{camera}_optical_frame" == masked_msg.header.frame_id
        resized = resize_rgb(images[camera], 16, 12)
        logits = bundle.model("mask").run({"image": bundle.preprocess_image(resized)})["mask_logits"]
        expected = logits_to_mask(logits)[0]
        mask = common.image_to_numpy(mask_msg, "mono8")
        assert np.array_equal(mask, expected)
        masked = common.image_to_numpy(masked_msg, "rgb8")
        assert not masked[mask == 0].any(), "background must be exactly black"
        foreground = mask != 0
        assert foreground.any() and masked[foreground].any(axis=1).all(), "object pixels are never pure black"
        kept = foreground & resized.any(axis=2)
        assert np.array_equal(masked[kept], resized[kept])
    bundle.close()


def test_over_skew_frames_are_dropped_and_counted(node, probe, cameras):
    wait_for(lambda: latest_diagnostics(probe), 20.0, "camera_mask diagnostics", processes=[node])
    skew_before = int(latest_diagnostics(probe)["dropped.skew"])
    images = frames(1)
    lagging = []

    def skew_counted():
        # cam_right_wrist lags the other two by 0.3 s: far beyond max_skew_s = 0.04.
        lagging.append(cameras.publish_set(images, skew_s=0.3))
        return int(latest_diagnostics(probe)["dropped.skew"]) > skew_before
    wait_for(skew_counted, 20.0, "a skew drop in /diagnostics", poll=0.2, processes=[node])
    answered = {_ns(m.header.stamp) for m in probe.received("/vla/masked/cam_high")}
    assert not any(_ns(stamps["cam_high"]) in answered for stamps in lagging), "an over-skew set was published"
    # The node keeps working: the next consistent set (right wrist 0.02 s behind) is published.
    publish_until_answered(cameras, probe, node, images, skew_s=0.02)
    diagnostics = latest_diagnostics(probe)
    assert "rate_hz.cam_high" in diagnostics and "processing_p99_ms" in diagnostics


def test_malformed_image_is_counted_not_fatal(node, probe, cameras):
    def malformed_counted():
        bad = common.numpy_to_image(np.zeros((*NATIVE, 3), np.uint8), "rgb8",
                                    common.seconds_to_stamp(cameras.next_stamp_s()), "cam_high_optical_frame")
        bad.data = bytes(10)  # data length does not match step * height
        cameras.publishers["cam_high"].publish(bad)
        return int((latest_diagnostics(probe) or {}).get("fault.malformed_image.cam_high", 0)) >= 1
    wait_for(malformed_counted, 20.0, "the malformed frame counted in /diagnostics", poll=0.2, processes=[node])
    publish_until_answered(cameras, probe, node, frames(2))


def test_declares_every_parameter_of_its_vla_yaml_section(node, probe):
    spec = next(s for s in graph.vla_nodes(params_file=VLA_YAML) if s.name == "camera_mask")
    expected = set(graph.expected_parameters(spec))
    response = probe.call(ListParameters, "/camera_mask/list_parameters", ListParameters.Request(), timeout=20.0)
    assert expected <= set(response.result.names), expected - set(response.result.names)


def test_missing_model_file_fails_at_startup(bundle_dir, tmp_path):
    broken = str(tmp_path / "broken_bundle")
    shutil.copytree(bundle_dir, broken)
    os.remove(os.path.join(broken, "mask.onnx"))
    process = NodeProcess(MODULE, "camera_mask_broken", params={"bundle_path": broken})
    code = process.wait_exit(timeout=30.0)
    assert code == 1, process.output
    fatal = [line for line in process.output.splitlines() if line.startswith("[FATAL]")]
    assert len(fatal) == 1 and "mask.onnx" in fatal[0], process.output
    assert "Traceback" not in process.output
