# The two README commands: `make dry-run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
SHARE := $(VENV)/share/sim2real_vla_ros
IFACE := sim2real_vla_interfaces
IFACE_BUILD := build/$(IFACE)
IFACE_STAMP := $(VENV)/.interfaces-stamp
IFACE_SOURCES := $(IFACE)/package.xml $(IFACE)/CMakeLists.txt $(sort $(wildcard $(IFACE)/msg/*.msg $(IFACE)/srv/*.srv $(IFACE)/action/*.action))
JOBS ?= 2

# DDS stays on loopback on these machines; each make invocation picks its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 90 + 5 )))
export AMENT_PREFIX_PATH := $(abspath $(VENV))$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH),)
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: setup test dry-run bench readme bundle evaluate demonstrations clean

setup: $(STAMP) $(IFACE_STAMP)

# The package is installed editable, and its share directory is linked into the venv
# the way `colcon build --symlink-install` does, so edits to launch/config/urdf/models
# are seen without a reinstall. A plain `pip install .` copies them (setup.py data_files).
$(STAMP): requirements.txt requirements-dev.txt setup.py package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	mkdir -p $(SHARE) $(VENV)/share/ament_index/resource_index/packages
	for d in launch config urdf models; do ln -sfn $(abspath $$d) $(SHARE)/$$d; done
	ln -sfn $(abspath package.xml) $(SHARE)/package.xml
	touch $(VENV)/share/ament_index/resource_index/packages/sim2real_vla_ros
	touch $(STAMP)

# The interface package (msg/srv/action) is an ordinary ament_cmake package, configured against
# the ROS 2 wheels in the venv and installed into the venv prefix: its Python module lands in
# site-packages, its libraries in .venv/lib, its share/ and ament index entry in .venv/share, so
# rclpy uses the types with no sourcing. Rebuilt when its sources or the ROS wheels it builds
# against change (requirements*.txt), not on every edit of setup.py (order-only on the venv).
# Python3_EXECUTABLE: else CMake may pick a Python without the venv's NumPy or of another ABI.
$(IFACE_STAMP): requirements.txt requirements-interfaces.txt $(IFACE_SOURCES) | $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-interfaces.txt
	CMAKE_PREFIX_PATH=$(abspath $(VENV)) cmake -S $(IFACE) -B $(IFACE_BUILD) -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF \
		--log-level=WARNING
	cmake --build $(IFACE_BUILD) --parallel $(JOBS)
	cmake --install $(IFACE_BUILD) > /dev/null
	touch $@

test: setup
	$(PY) -m pytest test

# ROBOT=emulated-can: hardware in the loop (piper_driver on emulated Piper arms over CAN frames).
dry-run: setup
	$(PY) -m sim2real_vla_ros.tools.dry_run $(if $(ROBOT),--robot $(ROBOT))

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
	$(PY) benchmarks/readme_tables.py

# README's parameter tables (each node module's PARAMETERS) and interface reference (the .msg/.srv/.action
# files and graph.contract); a test fails when either is stale.
readme: setup
	$(PY) -m sim2real_vla_ros.tools.readme_parameters
	$(PY) -m sim2real_vla_ros.tools.readme_interfaces

# Closed-loop evaluation, Table-2 style (tools/evaluate.py), e.g. EVAL_ARGS="--task all --episodes 50 --mode in-process".
EVAL_ARGS ?= --task all --episodes 50 --mode expert
evaluate: setup
	$(PY) -m sim2real_vla_ros.tools.evaluate $(EVAL_ARGS)

# Demonstrations of the scripted expert with labels (training/demonstrations.py), LeRobot v3.0 layout.
DEMO_ARGS ?= --task all --episodes 20 --out datasets/demos
demonstrations: setup
	$(PY) -m training.demonstrations $(DEMO_ARGS)

# Regenerates the committed reference bundle (needs torch: the CPU wheel on these machines).
bundle: setup
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m training.make_reference_bundle --out models/reference

clean:
	rm -rf $(VENV) build install log *.egg-info
