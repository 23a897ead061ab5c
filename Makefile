# Common tasks. `make setup` once, then the others use .venv.
PYTHON ?= .venv/bin/python

.PHONY: setup demo test test-fast lint format bench

setup:
	./scripts/setup.sh --dev

demo:
	.venv/bin/hiper-gym train

test:
	$(PYTHON) -m pytest -n 2

test-fast:
	$(PYTHON) -m pytest -n 2 -m "not slow and not browser"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench:
	$(PYTHON) benchmarks/hae_speed.py
	$(PYTHON) benchmarks/alfworld_step.py
	$(PYTHON) benchmarks/webshop_step.py
	$(PYTHON) benchmarks/iteration_time.py
