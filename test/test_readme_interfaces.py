"""README.md's interface reference is what tools/readme_interfaces.py renders from the .msg/.srv/.action
files and the graph contract now, and it names every interface and every typed topic of the graph."""
import os

from sim2real_vla_ros import graph
from sim2real_vla_ros.tools import readme_interfaces


def test_readme_interface_reference_is_current():
    assert readme_interfaces.current_section() == readme_interfaces.render(), (
        "README.md's interface reference is out of date: run `.venv/bin/python -m "
        "sim2real_vla_ros.tools.readme_interfaces`")


def test_every_interface_file_and_every_typed_topic_has_a_row():
    table = readme_interfaces.render()
    for kind in readme_interfaces.KINDS:
        folder = os.path.join(readme_interfaces.INTERFACES, kind)
        for filename in os.listdir(folder):
            name = os.path.splitext(filename)[0]
            assert f"| `{kind}/{name}` |" in table, filename
    for topic, ends in graph.expected_connections().items():
        if ends.type_name.startswith(readme_interfaces.PACKAGE):
            assert f"`{readme_interfaces._topic_label(topic)}`" in table, topic
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1] and cells[4], f"a row without where / what: {line}"
        if cells[1].startswith("`/"):
            assert cells[2] and cells[3], f"a topic, service or action without sender or rate: {line}"
