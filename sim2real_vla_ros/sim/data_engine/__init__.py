"""The paper's data engine in miniature, ROS-free and torch-free.

Action bank (:mod:`.actions`) -> key end-effector poses relative to objects -> IK on MuJoCo
Jacobians (:mod:`.ik`) -> smooth joint trajectories within the URDF limits
(:mod:`.trajectory`) -> sub-goal success conditions checked in simulation
(:mod:`.subgoals`) -> a scripted expert per task (:mod:`.expert`), with domain randomisation
(:mod:`.randomization`) seeded and recorded per episode.
"""
