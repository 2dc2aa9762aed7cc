# The two README commands: `make dry-run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
SHARE := $(VENV)/share/sim2real_vla_ros

# DDS stays on loopback on these machines; each make invocation picks its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 90 + 5 )))
export AMENT_PREFIX_PATH := $(abspath $(VENV))$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH),)
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: setup test dry-run bench readme bundle clean

setup: $(STAMP)

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

test: setup
	$(PY) -m pytest test

# ROBOT=emulated-can: hardware in the loop (piper_driver on emulated Piper arms over CAN frames).
dry-run: setup
	$(PY) -m sim2real_vla_ros.tools.dry_run $(if $(ROBOT),--robot $(ROBOT))

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
	$(PY) benchmarks/readme_tables.py

# README's parameter tables, from each node module's PARAMETERS (a test fails when they are stale).
readme: setup
	$(PY) -m sim2real_vla_ros.tools.readme_parameters

# Regenerates the committed reference bundle (needs torch: the CPU wheel on these machines).
bundle: setup
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m training.make_reference_bundle --out models/reference

clean:
	rm -rf $(VENV) build install log *.egg-info
