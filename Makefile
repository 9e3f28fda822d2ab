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
	@# CPU-only and IOC-free tests on every core (one BLAS thread each: numpy's own
	@# threads would make the workers wait on each other), then the rest in two
	@# processes, each with an IOC of its own on its own loopback ports and a whole
	@# module at a time (module fixtures share runs and servers), then the tests whose
	@# assertions are about load (marked alone) by themselves; all three always run
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	$(BIN)/python -m pytest -q -ra --durations=10 -m "compute or offline" -n auto --dist load; \
	first=$$?; \
	$(BIN)/python -m pytest -q -ra --durations=15 -m "not compute and not offline and not alone" -n 2 --dist loadfile; \
	second=$$?; \
	$(BIN)/python -m pytest -q -ra -m "alone"; \
	third=$$?; \
	test $$first -eq 0 -a $$second -eq 0 -a $$third -eq 0

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_volumetric.py
