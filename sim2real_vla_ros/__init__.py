"""sim2real_vla_ros: ROS 2 deployment stack for the Sim2Real-VLA policy on the AgileX CobotMagic."""
