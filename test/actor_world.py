"""A stand-in world for one actor node: what camera_mask, the planner and the arm would send.

Masked images at the model resolution, an affordance that switches target every
``TARGET_PERIOD_S`` (so the policy keeps the arm moving), and ``/joint_states`` that echo the
actor's own commands (perfect tracking) unless the arm is in ``blocked`` (it stays put). It also
plays the planner's part in the e-stop protocol: a 4 Hz heartbeat (``planner_alive``) and a
running plan_state whose ``run_started`` is renewed (a new start, as an operator's /vla/start)
whenever an actor reports ``hold_reason: awaiting_start`` and ``auto_start`` is set. Used by test_node_actor.py and
benchmarks/bench_actor_node.py.
"""
import numpy as np
from geometry_msgs.msg import Point32, PolygonStamped
from sensor_msgs.msg import Image, JointState
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Bool, Header

from ros_harness import NodeProcess, REPO
from sim2real_vla_ros.core.policy.bundle import load_instruction_embeddings, read_manifest
from sim2real_vla_ros.core.robot import ALL_JOINT_NAMES
from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.paths import share_path
from sim2real_vla_ros.core.vocabulary import WRIST_CAMERA
from sim2real_vla_interfaces.msg import Affordance, PlanState
from sim2real_vla_ros.nodes.task_messages import to_time

MODULE = "sim2real_vla_ros.nodes.actor"
VLA_YAML = f"{REPO}/config/vla.yaml"

BUNDLE = share_path("models", "reference")
TOP_W, TOP_H = 320, 240  # cam_high native size the affordance pixels refer to
RATE_HZ = 50.0
TICK_S = 1.0 / RATE_HZ
TARGET_PERIOD_S = 1.5
START = {"left": [0.0, 1.0, -1.0, 0.0, 0.3, 0.0, 0.02], "right": [0.0, 1.0, -1.0, 0.0, -0.3, 0.0, 0.02]}
# Two targets in the cam_high image, alternated so the policy keeps the arm moving.
TARGETS = [[(90.0, 120.0), (110.0, 120.0), (90.0, 140.0)], [(230.0, 110.0), (250.0, 110.0), (230.0, 130.0)]]


def instruction():
    manifest = read_manifest(BUNDLE)
    return sorted(load_instruction_embeddings(manifest))[0]


class FakeWorld:
    """Masked images, an alternating affordance and joint states that follow the actor's commands."""

    def __init__(self, probe, arms=("left", "right")):
        self.node = probe.node
        manifest = read_manifest(BUNDLE)
        height, width = manifest.image.height, manifest.image.width
        self.image = np.zeros((height, width, 3), np.uint8)  # background exactly black (masked convention)
        self.image[height // 3: height // 2, width // 3: width // 2] = (200, 60, 40)
        cameras = ["cam_high"] + [WRIST_CAMERA[arm] for arm in arms]
        self.image_pubs = {c: self.node.create_publisher(Image, f"/vla/masked/{c}", common.SENSOR_QOS) for c in cameras}
        self.silenced = set()
        self.blocked = set()  # arms that stop following their commands (an obstacle, a collision)
        self.last_image_s = {}
        self.positions = {arm: np.array(START[arm]) for arm in ("left", "right")}
        self.joint_pub = self.node.create_publisher(JointState, "/joint_states", common.COMMAND_QOS)
        self.affordance_pubs = {arm: self.node.create_publisher(PolygonStamped, f"/vla/affordance/{arm}",
                                                                common.LATCHED_QOS) for arm in arms}
        self.estop_pub = self.node.create_publisher(Bool, "/vla/estop", common.LATCHED_QOS)
        for arm in arms:
            self.node.create_subscription(JointState, f"/vla/actor_{arm}/command",
                                          lambda msg, arm=arm: self._follow(arm, msg), common.COMMAND_QOS)
        self.index = 0
        self._publish_affordances()
        self.planner_alive = True
        self.auto_start = True
        self.runs_started = 0
        self._last_start_s = -1e9
        self.plan_pub = self.node.create_publisher(PlanState, "/vla/plan_state", common.LATCHED_QOS)
        self.heartbeat_pub = self.node.create_publisher(Header, "/vla/planner/heartbeat", common.HEARTBEAT_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, common.COMMAND_QOS)
        self.timers = [self.node.create_timer(0.05, self._publish_images),
                       self.node.create_timer(0.01, self._publish_joint_states),
                       self.node.create_timer(TARGET_PERIOD_S, self._next_target),
                       self.node.create_timer(0.25, self._heartbeat)]

    def start_run(self):
        """A new task run (what /vla/start does): plan_state running, run_started = now."""
        self._last_start_s = self.now()
        self.runs_started += 1
        state = PlanState(phase=PlanState.PHASE_RUNNING, index=self.index, instruction=instruction(),
                          has_run=True, run_started=to_time(self._last_start_s), estop=False)
        state.header.stamp = self.node.get_clock().now().to_msg()
        state.affordances = [Affordance(arm=slot, index=self.index, image_width=TOP_W, image_height=TOP_H)
                             for slot in (Affordance.ARM_LEFT, Affordance.ARM_RIGHT)]
        self.plan_pub.publish(state)

    def _heartbeat(self):
        if self.planner_alive:
            beat = Header(frame_id="fake-planner")
            beat.stamp = self.node.get_clock().now().to_msg()
            self.heartbeat_pub.publish(beat)

    def _on_diagnostics(self, array):
        if not self.auto_start or self.now() - self._last_start_s < 1.0:
            return
        for status in array.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("hold_reason") == "awaiting_start" and not values.get("permit.estop_latched") == "True":
                self.start_run()
                return

    def now(self):
        return common.now_seconds(self.node)

    def _follow(self, arm, msg):
        if arm not in self.blocked:
            self.positions[arm] = np.asarray(msg.position, dtype=float)

    def _publish_images(self):
        stamp_s = self.now()
        for camera, publisher in self.image_pubs.items():
            if camera not in self.silenced:
                publisher.publish(common.numpy_to_image(self.image, "rgb8", common.seconds_to_stamp(stamp_s),
                                                        f"{camera}_optical_frame"))
                self.last_image_s[camera] = stamp_s

    def _publish_joint_states(self):
        message = JointState(name=list(ALL_JOINT_NAMES))
        values = []
        for arm in ("left", "right"):
            seven = self.positions[arm]
            values += [float(v) for v in seven] + [-float(seven[6])]  # joint8 mimics joint7
        message.position = values
        message.header.stamp = self.node.get_clock().now().to_msg()
        self.joint_pub.publish(message)

    def _publish_affordances(self):
        for publisher in self.affordance_pubs.values():
            message = PolygonStamped()
            message.header.stamp = self.node.get_clock().now().to_msg()
            message.header.frame_id = "cam_high_optical_frame"
            message.polygon.points = [Point32(x=x, y=y, z=float(self.index))
                                      for x, y in TARGETS[self.index % len(TARGETS)]]
            publisher.publish(message)

    def _next_target(self):
        self.index += 1
        self._publish_affordances()

    def set_estop(self, engaged):
        self.estop_pub.publish(Bool(data=engaged))

    def close(self):
        for timer in self.timers:
            self.node.destroy_timer(timer)


def start_actor(arm, module=MODULE, **params):
    """The actor node for ``arm`` as a child process, fed by a FakeWorld (wall time)."""
    values = {"arm": arm, "bundle_path": BUNDLE, "instruction": instruction(), "top_image_width": TOP_W,
              "top_image_height": TOP_H, "control_rate_hz": RATE_HZ, "diagnostics_rate_hz": 5.0, **params}
    return NodeProcess(module, f"actor_{arm}", params_file=VLA_YAML, params=values)
