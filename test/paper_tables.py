"""The paper's tables as the tests transcribe them, independently of config/tasks.yaml.

Table 5: per task and object, the (x range, y range) in m and yaw range in deg of the initial
placement; objects assigned to tasks by Table 1.
"""
TABLE5 = {
    "pour_water_single": {"bottle": ((0.67, 0.83), (0.06, 0.22), (0, 0)),
                          "cup": ((0.67, 0.83), (-0.22, -0.06), (0, 0))},
    "pour_water_dual": {"bottle": ((0.67, 0.83), (0.06, 0.22), (0, 0)),
                        "cup": ((0.67, 0.83), (-0.22, -0.06), (0, 0))},
    "table_rearrangement": {"plate": ((0.575, 0.675), (-0.05, 0.05), (0, 0)),
                            "fork": ((0.35, 0.50), (0.11, 0.21), (-45, 45)),
                            "spoon": ((0.35, 0.50), (-0.21, -0.11), (-45, 45))},
    "items_handover_place": {"pen": ((0.52, 0.68), (0.035, 0.195), (-45, 45)),
                             "holder": ((0.5, 0.65), (-0.4, -0.2), (0, 0))},
    "basket_pick_place": {"milk_box": ((0.81, 0.93), (0.06, 0.22), (-15, 15)),
                          "basket": ((0.65, 0.85), (-0.2, 0.0), (-15, 15))},
    "pan_open_pick_place": {"pan": ((0.4, 0.6), (0.0, 0.2), (0, 0)),
                            "carrot": ((0.51, 0.71), (-0.3, -0.1), (-15, 15))},
}
