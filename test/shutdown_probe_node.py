"""A node for the shutdown tests (test_shutdown.py), started with ``python -m shutdown_probe_node``.

It has what the graph's nodes have (a publisher and a subscription on the same topic, a timer
that keeps its executor busy, a BackgroundWorker thread) and, for the watchdog tests only, a
way to make its destruction block: ``block_in_destroy:=gil`` blocks in a C call that keeps the
GIL (as the DDS participant deletion of issue 14 did), ``block_in_destroy:=python`` in a plain
Python wait. Either way ``common.run_node``'s watchdog must end the process with exit 0.
"""
import ctypes
import sys
import threading

from rclpy.node import Node
from std_msgs.msg import String

from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.node_support import BackgroundWorker

BLOCK_S = 60


class ShutdownProbeNode(Node):
    def __init__(self) -> None:
        super().__init__("shutdown_probe")
        self.block = common.declare(self, "block_in_destroy", "", "TEST ONLY: '' (no block), 'gil' or 'python'",
                                    lambda v: v in ("", "gil", "python"), "'', 'gil' or 'python'")
        self.received = 0
        self.worker = BackgroundWorker(f"{self.get_name()}_worker", lambda: None, print)
        self.publisher = self.create_publisher(String, "shutdown_probe/chatter", common.COMMAND_QOS)
        self.create_subscription(String, "shutdown_probe/chatter", self._on_message, common.COMMAND_QOS)
        self.create_timer(0.02, self._tick)
        self.get_logger().info("shutdown probe ready")

    def _tick(self) -> None:
        self.publisher.publish(String(data="tick"))
        self.worker.wake()

    def _on_message(self, msg: String) -> None:
        self.received += 1
        if self.received == 1:
            self.get_logger().info("shutdown probe hears itself")

    def destroy_node(self) -> None:
        self.worker.stop()
        if self.block == "gil":
            print("shutdown probe: blocking in a C call that holds the GIL", flush=True)
            ctypes.PyDLL(None).sleep(BLOCK_S)  # PyDLL: the GIL stays held, like rclpy's destroy call
        elif self.block == "python":
            print("shutdown probe: blocking in a Python wait", flush=True)
            threading.Event().wait(BLOCK_S)
        super().destroy_node()


if __name__ == "__main__":
    sys.exit(common.run_node(ShutdownProbeNode))
