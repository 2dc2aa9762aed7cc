"""Test-wide settings: DDS on loopback and a ROS domain of this run's own."""
import os
import random

# Set before any test calls rclpy.init(): the rmw reads these at init. Child processes
# (nodes started by integration tests) inherit them.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(5, 95)))
os.environ.setdefault("MUJOCO_GL", "egl")
