# The two entry points the README opens with. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m mm_gmpo demo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check mm_gmpo data_prep eval tests bench
	$(PY) -m ruff format --check mm_gmpo data_prep eval tests bench
