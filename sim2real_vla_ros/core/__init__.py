"""ROS-free core: nothing in this package may import rclpy or ROS message types."""
