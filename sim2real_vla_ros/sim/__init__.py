"""MuJoCo dry-run simulator of the CobotMagic and its ROS 2 bridge."""
