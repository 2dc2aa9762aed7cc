"""Record a run: an MCAP file of its topics, the overlay video, and the records the report needs.

:class:`Recorder` subscribes (on a node of the caller's, usually with ``use_sim_time``) to
the topics of a :class:`TopicPlan` list with *serialized* subscriptions: the CDR bytes rclpy
receives are written to the MCAP file as they are (no re-encoding), with the ``ros2msg``
schema built from the installed ``.msg`` definitions (:mod:`core.ros2_msgdef`), so the file
opens in Foxglove and reads back with ``mcap_ros2``. Topics are recorded at most at their
plan's rate (images at a reduced rate); the small messages the report needs are deserialized
and turned into the plain records of :class:`core.run_report.RunData`.

The overlay images (``/vla/affordance_overlay``) go to ``overlay.webm`` (VP8) through
``cv2.VideoWriter``; where no MP4 codec is available they are written as numbered PNG frames
instead, and the report says which (never silently nothing).
"""
from __future__ import annotations

import importlib
import json
import math
import os
import struct
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional

import numpy as np

from sim2real_vla_ros.tools import ros2_msgdef
from sim2real_vla_ros.tools.run_report import (AffordanceRecord, ChunkRecord, DiagnosticRecord, JointCommand,
                                              RunData, StampRecord)

# QoS roles (nodes.common): images best effort, latched state transient local, the rest reliable.
SENSOR, RELIABLE, LATCHED = "sensor", "reliable", "latched"
MCAP_PROFILE = "ros2"
SCHEMA_ENCODING = "ros2msg"
MESSAGE_ENCODING = "cdr"


@dataclass(frozen=True)
class TopicPlan:
    """One topic to record.

    Attributes
    ----------
    topic : str
    type_name : str
        ``package/msg/Type``.
    qos : str
        ``'sensor'``, ``'reliable'`` or ``'latched'`` (must be compatible with the publisher).
    max_rate_hz : float or None
        Most messages per *wall* second written to the MCAP file (None: every message,
        0: none, the topic is only used for the report).
    extract : str
        Which record the report takes from it ('' = none); see ``Recorder._extractors``.
    arm, camera : str
        The arm / camera the topic belongs to, for per-arm / per-camera records.
    """

    topic: str
    type_name: str
    qos: str = RELIABLE
    max_rate_hz: Optional[float] = None
    extract: str = ""
    arm: str = ""
    camera: str = ""


def message_class(type_name: str):
    """The Python class of ``package/msg/Type`` (imports ``package.msg``)."""
    package, message = ros2_msgdef.short_type_name(type_name).split("/")
    module = importlib.import_module(f"{package}.msg")
    return getattr(module, message)


def read_installed_definition(short_name: str) -> str:
    """``.msg`` text of ``package/Type`` from the package's installed share folder (ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    package, message = short_name.split("/")
    try:
        share = get_package_share_directory(package)
    except PackageNotFoundError as exc:
        raise KeyError(f"interface package {package!r} is not installed ({exc})") from None
    with open(os.path.join(share, "msg", f"{message}.msg"), "r", encoding="utf-8") as stream:
        return stream.read()


def cdr_header_stamp(data: bytes) -> float:
    """Header stamp (s) of a serialized message whose first field is ``std_msgs/Header``.

    CDR: a 4-byte encapsulation header (byte 1 = 1 for little endian), then
    ``builtin_interfaces/Time`` = int32 sec, uint32 nanosec.

    Raises
    ------
    ValueError
        Fewer than 12 bytes.
    """
    if len(data) < 12:
        raise ValueError(f"serialized message of {len(data)} bytes has no header stamp")
    order = "<" if data[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", data, 4)
    return sec + 1e-9 * nanosec


def _stamp_s(stamp) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


class OverlayVideo:
    """Overlay frames to ``overlay.webm`` (VP8: browsers play it, so report.html shows it), else
    ``overlay.mp4`` (``mp4v``, which browsers do not play), else PNG frames if no writer opens."""

    CANDIDATES = (("overlay.webm", "VP80", "webm"), ("overlay.mp4", "mp4v", "mp4"))

    def __init__(self, folder: str, fps: float) -> None:
        self.folder = folder
        self.fps = float(fps)
        self.frames = 0
        self.skipped = 0
        self.format = ""
        self.reason = ""
        self.path = ""
        self._writer = None
        self._size = None

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        bgr = np.ascontiguousarray(rgb[..., ::-1])
        size = (bgr.shape[1], bgr.shape[0])
        if self._size is None:
            self._open(size)
        if size != self._size:
            self.skipped += 1  # the overlay's size is fixed per run; a different one is not mixed in
            return
        if self._writer is not None:
            self._writer.write(bgr)
        else:
            cv2.imwrite(os.path.join(self.path, f"frame_{self.frames:05d}.png"), bgr)
        self.frames += 1

    def _open(self, size) -> None:
        import cv2

        self._size = size
        for name, fourcc, video_format in self.CANDIDATES:
            path = os.path.join(self.folder, name)
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
            if writer.isOpened():
                self._writer, self.format, self.path = writer, video_format, path
                return
            writer.release()
            if os.path.exists(path):
                os.remove(path)
        self.format, self.reason = "png", "cv2.VideoWriter could open neither a VP8 nor an mp4v writer"
        self.path = os.path.join(self.folder, "overlay_frames")
        os.makedirs(self.path, exist_ok=True)

    def close(self) -> dict:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0 and self.format in ("webm", "mp4") and os.path.exists(self.path):
            os.remove(self.path)
        return {"path": self.path if self.frames else "", "format": self.format or "none", "frames": self.frames,
                "skipped_other_size": self.skipped, "fps": self.fps, **({"reason": self.reason} if self.reason else {})}


class Recorder:
    """Subscribe to a plan of topics on ``node``; write MCAP + overlay; fill ``data``.

    Parameters
    ----------
    node : rclpy.node.Node
        Its clock stamps the receipt times (sim time when it has ``use_sim_time``).
    folder : str
        Run folder: ``run.mcap`` and the overlay go there.
    plans : list of TopicPlan
    data : RunData
        Records are appended to it (under :attr:`lock`).
    overlay_fps : float
        Frame rate written into the overlay video (the planner's overlay rate, sim time).
    """

    def __init__(self, node, folder: str, plans: List[TopicPlan], data: RunData, overlay_fps: float = 5.0) -> None:
        from mcap.writer import CompressionType, Writer

        self.node = node
        self.data = data
        self.lock = threading.Lock()
        self.mcap_path = os.path.join(folder, "run.mcap")
        self._stream = open(self.mcap_path, "wb")
        self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
        self._writer.start(profile=MCAP_PROFILE, library="sim2real_vla_ros recorder")
        self._schemas: Dict[str, int] = {}
        self._channels: Dict[str, int] = {}
        self._last_written: Dict[str, float] = {}
        self._sequence: Dict[str, int] = {}
        self._closed = False
        self.overlay = OverlayVideo(folder, overlay_fps)
        # arm -> (serialized message, type) of the newest raw wrist frame: decoded only when an
        # overlay frame uses it (5 Hz), not at each camera frame.
        self.latest_wrist: Dict[str, tuple] = {}
        self.extract_errors: Dict[str, int] = {}
        self._subscriptions = []
        for plan in plans:
            self._add(plan)

    # ------------------------------------------------------------------ setup
    def _qos(self, role: str):
        from sim2real_vla_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

        return {SENSOR: SENSOR_QOS, RELIABLE: COMMAND_QOS, LATCHED: LATCHED_QOS}[role]

    def _add(self, plan: TopicPlan) -> None:
        msg_type = message_class(plan.type_name)
        # The vocabulary's names are relative: the file, the counts and the report name the
        # topic the node resolved (/joint_states, or /robot1/joint_states in a namespace).
        plan = replace(plan, topic=self.node.resolve_topic_name(plan.topic))
        if plan.max_rate_hz != 0:
            full = ros2_msgdef.full_type_name(plan.type_name)
            if full not in self._schemas:
                text = ros2_msgdef.concatenated_definition(full, read_installed_definition)
                self._schemas[full] = self._writer.register_schema(full, SCHEMA_ENCODING, text.encode("utf-8"))
            # The channel carries the resolved name (/joint_states), as ros2 bag writes it: the plan's
            # topics are relative where a namespace applies (core.vocabulary).
            self._channels[plan.topic] = self._writer.register_channel(self.node.resolve_topic_name(plan.topic),
                                                                       MESSAGE_ENCODING,
                                                                       self._schemas[full])
        callback = self._callback(plan, msg_type)
        self._subscriptions.append(self.node.create_subscription(msg_type, plan.topic, callback, self._qos(plan.qos),
                                                                 raw=True))

    def _callback(self, plan: TopicPlan, msg_type) -> Callable[[bytes], None]:
        extractor = self._extractors().get(plan.extract)
        if plan.extract and extractor is None:
            raise ValueError(f"TopicPlan {plan.topic}: unknown extract {plan.extract!r}")
        period = 1.0 / plan.max_rate_hz if plan.max_rate_hz else 0.0

        def on_message(data: bytes) -> None:
            if self._closed:
                return
            recv_sim_s = self.node.get_clock().now().nanoseconds * 1e-9
            wall_ns = time.time_ns()
            with self.lock:
                self.data.message_counts[plan.topic] = self.data.message_counts.get(plan.topic, 0) + 1
                since_written = wall_ns * 1e-9 - self._last_written.get(plan.topic, -math.inf)
                if plan.topic in self._channels and since_written >= period:
                    self._write(plan.topic, data, wall_ns)
            if extractor is not None:
                try:
                    extractor(plan, data, msg_type, recv_sim_s)
                except Exception as exc:  # a malformed message is counted, never kills the executor
                    with self.lock:
                        key = f"{plan.topic}: {type(exc).__name__}: {exc}"[:200]
                        self.extract_errors[key] = self.extract_errors.get(key, 0) + 1

        return on_message

    def _write(self, topic: str, data: bytes, wall_ns: int) -> None:
        sequence = self._sequence.get(topic, 0)
        self._writer.add_message(self._channels[topic], log_time=wall_ns, data=bytes(data), publish_time=wall_ns,
                                 sequence=sequence)
        self._sequence[topic] = sequence + 1
        self._last_written[topic] = wall_ns * 1e-9
        self.data.recorded_counts[topic] = self.data.recorded_counts.get(topic, 0) + 1

    # ------------------------------------------------------------------ extraction
    def _extractors(self) -> Dict[str, Callable]:
        return {"plan_state": self._typed_into("plan_states", "plan_state_from_msg"),
                "task_state": self._typed_into("task_states", "task_state_from_msg"),
                "validator_event": self._typed_into("validator_events", "validator_event_from_msg"),
                "sim_status": self._json_into("sim_status"),
                "masked": self._masked, "affordance": self._affordance, "chunk": self._chunk,
                "command": self._command, "trajectory": self._trajectory, "vendor_command": self._vendor_command,
                "stream_command": self._stream_command, "joint_states": self._joint_states,
                "wrist_image": self._wrist_image,
                "diagnostics": self._diagnostics, "overlay": self._overlay}

    @staticmethod
    def _deserialize(data: bytes, msg_type):
        from rclpy.serialization import deserialize_message

        return deserialize_message(bytes(data), msg_type)

    def _typed_into(self, attribute: str, converter: str) -> Callable:
        """A typed task message (PlanState, TaskState, ValidatorEvent) as the record the report reads."""
        from sim2real_vla_ros.nodes import task_messages

        to_record = getattr(task_messages, converter)

        def extract(plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
            record = to_record(self._deserialize(data, msg_type))
            with self.lock:
                getattr(self.data, attribute).append((recv, record))
        return extract

    def _json_into(self, attribute: str) -> Callable:
        """The simulator's privileged /sim/task_status (still JSON in std_msgs/String)."""
        def extract(plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
            payload = json.loads(self._deserialize(data, msg_type).data)
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
            with self.lock:
                getattr(self.data, attribute).append((recv, payload))
        return extract

    def _masked(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        record = StampRecord(recv, cdr_header_stamp(data))
        with self.lock:
            self.data.masked.setdefault(plan.camera, []).append(record)

    def _affordance(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        points = msg.polygon.points
        index = int(round(points[0].z)) if points else None
        record = AffordanceRecord(recv, _stamp_s(msg.header.stamp), len(points), index)
        with self.lock:
            self.data.affordances.setdefault(plan.arm, []).append(record)

    def _chunk(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        record = ChunkRecord(recv, _stamp_s(msg.header.stamp), tuple(msg.joint_names),
                             tuple(tuple(float(v) for v in p.positions) for p in msg.points),
                             tuple(p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in msg.points))
        with self.lock:
            self.data.chunks.setdefault(plan.arm, []).append(record)

    def _joint_states(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        record = JointCommand(recv, _stamp_s(msg.header.stamp), tuple(msg.name), tuple(float(v) for v in msg.position))
        with self.lock:
            self.data.measured.append(record)

    def _command(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        record = JointCommand(recv, _stamp_s(msg.header.stamp), tuple(msg.name), tuple(float(v) for v in msg.position))
        with self.lock:
            self.data.commands.setdefault(plan.arm, []).append(record)

    def _trajectory(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        stamp = _stamp_s(msg.header.stamp)
        records = [JointCommand(recv, stamp + p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec,
                                tuple(msg.joint_names), tuple(float(v) for v in p.positions)) for p in msg.points]
        with self.lock:
            self.data.controller_points.setdefault(plan.arm, []).extend(records)

    def _vendor_command(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        """``/master/joint_<arm>``: joint0..5 in rad and the gripper as total width; joint7 = width / 2."""
        from sim2real_vla_ros.core import robot

        msg = self._deserialize(data, msg_type)
        values = [float(v) for v in msg.position]
        if len(values) == robot.ARM_DOF:
            values[-1] = float(robot.gripper_width_to_finger(values[-1]))
        record = JointCommand(recv, _stamp_s(msg.header.stamp), tuple(robot.arm_joint_names(plan.arm)), tuple(values))
        with self.lock:
            self.data.controller_points.setdefault(plan.arm, []).append(record)

    def _stream_command(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        """``/<arm>_arm_position_controller/commands``: joints 1-7 in the arm's order, no stamp (receipt time)."""
        from sim2real_vla_ros.core import robot

        msg = self._deserialize(data, msg_type)
        record = JointCommand(recv, recv, tuple(robot.arm_joint_names(plan.arm)), tuple(float(v) for v in msg.data))
        with self.lock:
            self.data.controller_points.setdefault(plan.arm, []).append(record)

    def _diagnostics(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        msg = self._deserialize(data, msg_type)
        records = [DiagnosticRecord(recv, status.hardware_id or status.name, status.name,
                                    int.from_bytes(status.level, "little") if isinstance(status.level, bytes)
                                    else int(status.level), status.message,
                                    {kv.key: kv.value for kv in status.values}) for status in msg.status]
        with self.lock:
            self.data.diagnostics.extend(records)

    def _wrist_image(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        """The newest raw frame of a wrist camera, for the overlay video's panel (not stored)."""
        with self.lock:
            self.latest_wrist[plan.arm] = (bytes(data), msg_type)

    def _overlay(self, plan: TopicPlan, data: bytes, msg_type, recv: float) -> None:
        """The planner's overlay, composed with both wrist views and the validator's probabilities."""
        from sim2real_vla_ros.core.perception.overlay import compose_panel
        from sim2real_vla_ros.nodes.common import image_to_numpy

        rgb = image_to_numpy(self._deserialize(data, msg_type), "rgb8")
        with self.lock:
            latest = dict(self.latest_wrist)
            state = self.data.task_states[-1][1] if self.data.task_states else {}
            plan_state = self.data.plan_states[-1][1] if self.data.plan_states else {}
        wrists = {arm: image_to_numpy(self._deserialize(data, kind), "rgb8") for arm, (data, kind) in latest.items()}
        probabilities = {arm: (entry or {}).get("prob") for arm, entry in (state.get("arms") or {}).items()}
        caption = f"t {recv:.1f} s  phase {plan_state.get('phase', '?')}  affordance #{plan_state.get('index', '?')}"
        frame = compose_panel(rgb, wrists, probabilities, caption)
        with self.lock:
            self.overlay.add(frame)

    # ------------------------------------------------------------------ end
    def close(self) -> dict:
        """Stop recording, finish the MCAP file and the overlay; returns what was written."""
        with self.lock:
            if self._closed:
                return self.data.outputs
            self._closed = True
            for subscription in self._subscriptions:
                self.node.destroy_subscription(subscription)
            self._writer.finish()
            self._stream.close()
            overlay = self.overlay.close()
        self.data.outputs.update({"mcap": {"path": self.mcap_path, "bytes": os.path.getsize(self.mcap_path),
                                           "topics": len(self._channels)},
                                  "overlay": overlay,
                                  "extract_errors": dict(self.extract_errors)})
        return self.data.outputs


__all__ = ["TopicPlan", "Recorder", "OverlayVideo", "message_class", "read_installed_definition",
           "cdr_header_stamp", "SENSOR", "RELIABLE", "LATCHED"]
