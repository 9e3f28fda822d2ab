# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

$(BIN)/beamline-ls: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/beamline-ls

setup: $(BIN)/beamline-ls

demo: setup
	$(BIN)/beamline-ls demo $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra --durations=15

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_volumetric.py
