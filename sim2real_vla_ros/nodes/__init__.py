"""Thin rclpy nodes, one per executable; logic lives in sim2real_vla_ros.core."""
