"""A test helper: the physics contacts between the robot's own bodies, by kind."""
import collections


def robot_contacts(sim, groups) -> collections.Counter:
    """Physics contacts now, by kind: arm_arm, self, table (objects and the floor not counted)."""
    m, d = sim.model, sim.data
    side_of = {}
    for side, links in groups.arm.items():
        for link in links:
            side_of[m.body(link).id] = side
    table = m.body("table_link").id
    out = collections.Counter()
    for contact in d.contact[: d.ncon]:
        b1, b2 = m.geom_bodyid[contact.geom1], m.geom_bodyid[contact.geom2]
        s1, s2 = side_of.get(b1), side_of.get(b2)
        if s1 and s2:
            out["arm_arm" if s1 != s2 else "self"] += 1
        elif (s1 or s2) and table in (b1, b2):
            out["table"] += 1
    return out
