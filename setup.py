"""ament_python package: builds with `colcon build` on a full ROS 2 install and with
`pip install .` into a venv that holds the ROS 2 core wheels (see README)."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sim2real_vla_ros"


def share_tree(folder):
    """(install dir, files) pairs mirroring `folder` under share/<package>/."""
    pairs = []
    for root, _dirs, files in os.walk(folder):
        paths = [os.path.join(root, f) for f in files if not f.endswith(".pyc")]
        if paths:
            pairs.append((os.path.join("share", PACKAGE, root), paths))
    return pairs


setup(
    name=PACKAGE,
    version="0.1.0",
    # training/ (torch) is not part of the installed package: `make bundle` runs it from the repo.
    packages=find_packages(exclude=["test", "test.*", "training", "training.*", "benchmarks", "benchmarks.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *share_tree("launch"),
        *share_tree("config"),
        *share_tree("urdf"),
        *share_tree("models"),
    ],
    # The ROS 2 packages come from the ROS install (package.xml) or, in a venv, from
    # requirements.txt's PyPI wheels; only pure-Python needs are listed here.
    install_requires=["setuptools", "numpy", "scipy", "PyYAML", "onnxruntime", "tokenizers", "mujoco",
                      "piper-sdk", "python-can"],
    extras_require={
        "gpu": ["onnxruntime-gpu", "tensorrt"],
        "export": ["torch==2.13.0", "onnx"],
        "test": ["pytest", "pytest-timeout"],
    },
    zip_safe=True,
    maintainer="sim2real_vla_ros maintainers",
    maintainer_email="maintainers@sim2real-vla-ros.invalid",
    description="ROS 2 deployment stack for Sim2Real-VLA on the AgileX CobotMagic",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "sim_mujoco = sim2real_vla_ros.sim.sim_node:main",
            "camera_mask = sim2real_vla_ros.nodes.camera_mask:main",
            "planner = sim2real_vla_ros.nodes.planner:main",
            "actor = sim2real_vla_ros.nodes.actor:main",
            "actor_control = sim2real_vla_ros.nodes.actor_control:main",
            "actor_inference = sim2real_vla_ros.nodes.actor_inference:main",
            "validator = sim2real_vla_ros.nodes.validator:main",
            "vendor_bridge = sim2real_vla_ros.nodes.vendor_bridge:main",
            "piper_driver = sim2real_vla_ros.nodes.piper_driver:main",
            "build_engine = sim2real_vla_ros.tools.build_engine:main",
            "dry_run = sim2real_vla_ros.tools.dry_run:main",
            "go_to_start = sim2real_vla_ros.tools.go_to_start:main",
            "vla_lifecycle_manager = sim2real_vla_ros.tools.lifecycle_manager:main",
        ],
    },
)
