"""Robot hardware: the Piper arm's CAN protocol units, a driver core on the vendor SDK, and an
emulated arm on python-can's virtual bus (no rclpy)."""
