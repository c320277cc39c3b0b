# mfapr_ros — one-command environment. `make test` and `make demo` work on a fresh machine (Python 3.11, CPU).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# DDS never leaves this machine: every target runs with localhost-only discovery.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
# Bytecode is written on first import (empty = unset for Python, also where the shell sets it): pip installs with
# --no-compile (byte-compiling all of torch & co. took ~35 s of the install on one core) and the first process
# compiles only the ~2,800 modules the package imports (~7 s, once); every later process reads the .pyc files.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install test lint format demo bench paper-synthetic clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	bash scripts/ros_interfaces/build_interfaces.sh $(VENV)
	touch $@

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff check --fix .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The main job on a fresh machine: synthetic world → CPU training → live DDS replay → report (out/demo).
# DEMO_SCALE=tiny runs the same steps in about a minute (what the test suite runs).
demo: install
	$(VENV)/bin/mfapr demo --out out/demo $(if $(DEMO_SCALE),--scale $(DEMO_SCALE))

# Benchmarks print figures (they are not tests).
bench: install
	OMP_NUM_THREADS=1 $(PY) bench/sync.py
	$(PY) bench/decode.py
	$(PY) bench/data.py
	$(PY) bench/synth.py
	OMP_NUM_THREADS=1 $(PY) bench/models.py --size 64 --iters 5 --vit vit_small
	$(PY) bench/eval_bag.py
	OMP_NUM_THREADS=1 $(PY) bench/node.py

# The paper's experiments on the synthetic world at CPU scale; writes docs/results.md.
paper-synthetic: install
	$(PY) scripts/paper_synthetic.py

clean:
	rm -rf $(VENV) out build install log *.egg-info
