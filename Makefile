# mfapr_ros — one-command environment. `make test` and `make demo` work on a fresh machine (Python 3.11, CPU).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# DDS never leaves this machine: every target runs with localhost-only discovery.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test lint format demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	touch $@

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff check --fix .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out build install log *.egg-info
