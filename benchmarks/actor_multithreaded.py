"""The actor node spun by rclpy's MultiThreadedExecutor: the comparison case of bench_actor_node.py.

The nodes spin a SingleThreadedExecutor and run inference in a worker thread; this runs the very
same node under ``MultiThreadedExecutor(num_threads=5)``, the executor the nodes used before, to
measure what that choice costs (rclpy's executor busy-waits holding the GIL while a callback
group is busy: ros2/rclpy#1223). Benchmark only; never launched by the package.
"""
import sys

from rclpy.executors import MultiThreadedExecutor

from sim2real_vla_ros.nodes import common
from sim2real_vla_ros.nodes.actor import ActorNode

if __name__ == "__main__":
    sys.exit(common.run_node(ActorNode, lambda: MultiThreadedExecutor(num_threads=5)))
