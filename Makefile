# Two commands on a fresh machine:
#   make demo   -> set up .venv and run the main job on the embedded synthetic line
#   make test   -> set up .venv (and the system packages the tests need) and run lint, types and tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test lint typecheck pytest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

# PostgreSQL and Chromium from Debian's packages for the database and browser tests.
system-deps:
	@bash deploy/scripts/system-deps.sh

demo: setup
	$(VENV)/bin/inspection demo

lint: setup
	$(VENV)/bin/ruff check inspection tests migrations
	$(VENV)/bin/ruff format --check inspection tests migrations

typecheck: setup
	$(VENV)/bin/mypy inspection

pytest: setup system-deps
	$(PY) -m pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
