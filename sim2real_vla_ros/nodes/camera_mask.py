"""camera_mask node: pairs the three cameras, runs the mask model, publishes masks and masked images.

Only the newest frame per camera is kept (no backlog): while the model runs, newer frames
replace older ones, and the next set is formed from the newest frames only. Parameters:
``PARAMETERS`` below (the README's table is generated from it).

Subscriptions
-------------
/cam_high/image_raw, /cam_left_wrist/image_raw, /cam_right_wrist/image_raw : sensor_msgs/Image
    rgb8 / bgr8 camera frames (sensor-data QoS). Reliability, history and depth can be
    overridden per topic at start-up with ROS 2's QoS override parameters, e.g.
    ``qos_overrides./cam_high/image_raw.subscription.reliability: reliable`` (README, "Camera
    frames": what the robot's camera drivers need).

Publications
------------
/vla/mask/<camera> : sensor_msgs/Image mono8
    Per-pixel class (argmax of the mask model; 0 = background) at the model resolution.
/vla/masked/<camera> : sensor_msgs/Image rgb8
    The frame resized to the model resolution with background pixels exactly (0, 0, 0) and
    object pixels never exactly black (see ``core.observation``). Both images carry the
    source frame's header; the three cameras of a set are published together.
/diagnostics : diagnostic_msgs/DiagnosticArray
    Sets processed, drops by reason, per-camera rate, processing and end-to-end latency.
"""
from __future__ import annotations

import sys
import threading


from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from sim2real_vla_ros.core import vocabulary as vocab
from sim2real_vla_ros.core.perception.camera_pairing import FramePairer, RateMeter
from sim2real_vla_ros.core.perception.masking import CameraMasker
from sim2real_vla_ros.core.policy.observation import LatencyWindow
from sim2real_vla_ros.core.vocabulary import CAMERAS
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.common import Param
from sim2real_vla_ros.nodes.lifecycle import LIFECYCLE_AUTOSTART, ManagedNode
from sim2real_vla_ros.nodes.node_support import (BUNDLE_PARAMETERS, DIAGNOSTICS_RATE, FaultLog,
                                                 LevelTracker, load_node_bundle)

PARAMETERS = (
    *BUNDLE_PARAMETERS,
    Param("max_skew_s", 0.05, "Largest stamp difference between the three cameras of a set (s); frames that "
          "cannot pair are dropped and counted", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    Param("max_input_age_s.camera", 0.5, "Frames older than this when a set is formed are dropped as stale (s)",
          lambda v: 0.0 < v <= 10.0, "in (0, 10]"),
    DIAGNOSTICS_RATE,
    LIFECYCLE_AUTOSTART,
)


class CameraMaskNode(ManagedNode):
    """Newest-only camera pairing + batched mask inference; a managed node (nodes.lifecycle).

    configure loads the bundle and the masker and subscribes (frames are paired from then
    on); activate starts the inference thread (masks are lifecycle publishers); deactivate
    stops it; cleanup releases the model.
    """

    def __init__(self) -> None:
        super().__init__("camera_mask")
        self._values = values = common.declare_parameters(self, PARAMETERS)
        self.max_skew_s = values["max_skew_s"]
        self.max_age_s = values["max_input_age_s.camera"]
        self.faults = FaultLog(self)
        self.pairer = FramePairer(CAMERAS, self.max_skew_s, self.max_age_s)
        self.rates = {name: RateMeter(window_s=2.0) for name in CAMERAS}
        self.processing = LatencyWindow()
        self.end_to_end = LatencyWindow()
        self._lock = threading.Lock()  # pairer and rate meters: touched by image and inference threads
        self._sets_published = 0
        self._levels = LevelTracker()
        self.bundle = self.masker = None
        self.start_lifecycle(values["lifecycle_autostart"], values["diagnostics_rate_hz"], self.faults)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        self.bundle = load_node_bundle(self, self._values)
        self._check_bundle_cameras()
        image = self.bundle.manifest.image
        self.model_size = (image.width, image.height)
        self.n_classes = len(self.bundle.manifest.mask_classes)
        self.masker = CameraMasker(self.bundle)  # the mask step itself (shared with the in-process runner)
        self.batched = self.masker.batched
        for name in CAMERAS:
            on_image = self.faults.guard(lambda msg, n=name: self._on_image(n, msg), "image_callback_error")
            self.create_subscription(Image, vocab.camera_image_topic(name), on_image, common.SENSOR_QOS,
                                     qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.mask_pubs = {n: self.create_lifecycle_publisher(Image, vocab.mask_topic(n), common.SENSOR_QOS)
                          for n in CAMERAS}
        self.masked_pubs = {n: self.create_lifecycle_publisher(Image, vocab.masked_topic(n), common.SENSOR_QOS)
                            for n in CAMERAS}
        self.get_logger().info(f"camera_mask ready: {self.n_classes} classes at {self.model_size[0]}x"
                               f"{self.model_size[1]}, {'batched' if self.batched else 'per-camera'} inference, "
                               f"max_skew_s={self.max_skew_s}")

    def activate(self) -> None:
        # Image callbacks only convert and store (fast); the model runs in its own thread
        # (BackgroundWorker) so a slow inference never delays frame intake, and frames that
        # arrive meanwhile simply replace older ones in the pairer.
        self.start_worker("inference", self._process_newest_set, "inference_callback_error")

    def release(self) -> None:
        self.bundle = self.masker = None

    def _check_bundle_cameras(self) -> None:
        cameras = self.bundle.manifest.cameras
        named = (cameras.top, cameras.left_wrist, cameras.right_wrist)
        if named != CAMERAS:
            raise ValueError(f"bundle '{self.bundle.name}' names its cameras {list(named)}, but this robot's cameras "
                             f"are {list(CAMERAS)}; remap the camera topics instead of renaming cameras")

    # ------------------------------------------------------------------ intake
    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = common.image_to_numpy(msg, "rgb8")
        except common.ImageMessageError as exc:
            self.faults.fault(f"malformed_image.{camera}", str(exc))
            return
        stamp_s = common.stamp_to_seconds(msg.header.stamp)
        with self._lock:
            self.rates[camera].add(stamp_s)
            kept = self.pairer.add(camera, stamp_s, (msg.header, rgb))
        if kept:
            self.wake_worker()

    # ------------------------------------------------------------------ inference
    def _process_newest_set(self) -> None:
        with self._lock:
            frame_set = self.pairer.newest_set(common.now_seconds(self))
        if frame_set is None:
            return
        start = common.monotonic()
        headers = {name: frame_set.frame(name)[0] for name in CAMERAS}
        try:
            results = self.masker.process([frame_set.frame(name)[1] for name in CAMERAS])
        except Exception as exc:  # model/contract failure: count, publish nothing for this set
            self.faults.fault("mask_model_error", f"{type(exc).__name__}: {exc}")
            return
        for name, result in zip(CAMERAS, results):
            header = headers[name]
            mask_msg = common.numpy_to_image(result.mask, "mono8")
            mask_msg.header = header
            masked_msg = common.numpy_to_image(result.masked, "rgb8")
            masked_msg.header = header
            self.mask_pubs[name].publish(mask_msg)
            self.masked_pubs[name].publish(masked_msg)
        self._sets_published += 1
        self.processing.add((common.monotonic() - start) * 1e3)
        self.end_to_end.add((common.now_seconds(self) - frame_set.oldest_stamp_s) * 1e3)

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        now = common.now_seconds(self)
        with self._lock:
            stats = self.pairer.stats()
            rates = {f"rate_hz.{name}": meter.rate_hz(now) for name, meter in self.rates.items()}
        faults = self.faults.snapshot()
        values = {"sets_published": self._sets_published, "sets_formed": stats["sets_emitted"],
                  **{f"dropped.{reason}": count for reason, count in stats["dropped"].items()},
                  **{f"received.{name}": count for name, count in stats["received"].items()},
                  **{f"overwritten.{name}": count for name, count in stats["overwritten"].items()}, **rates,
                  "last_skew_s": stats["last_skew_s"] if stats["last_skew_s"] is not None else "none",
                  "last_reason": stats["last_reason"], "missing_cameras": ",".join(stats["missing_cameras"]),
                  **{f"processing_{k}": v for k, v in self.processing.stats().items()},
                  **{f"end_to_end_{k}": v for k, v in self.end_to_end.stats().items()},
                  **{f"fault.{k}": v for k, v in faults.items()}, **self.lifecycle_values()}
        errors = sum(v for k, v in faults.items() if "error" in k)
        warnings = sum(faults.values()) + sum(stats["dropped"].values())
        level = self._levels.level(errors, warnings)
        message = ["ok", "frames dropped or malformed since the last report", "mask model errors"][level]
        status = common.diagnostic_status(f"{self.get_name()}: camera pairing and masks", self.get_name(), level,
                                          message, values)
        self.diagnostics_pub.publish(common.diagnostic_array(self, [status]))


def main(args=None) -> int:
    # Frame intake and diagnostics on the executor's thread, mask inference in its own.
    return common.run_node(CameraMaskNode)


if __name__ == "__main__":
    sys.exit(main())
