# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Each creates .venv on first use and installs what it needs. torch is pinned to the CPU build
# that our machines carry (2.13.0); on a CUDA machine pip picks the matching CUDA wheel instead.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
SHARED ?= ../shared/data
BUDGET ?= quick

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,tensorboard]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/reproduce.py --budget $(BUDGET) --data-dir $(SHARED)

# Two xdist workers with one torch thread each: oversubscribed OpenMP threads slow small CPU ops ~30x.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -q -rs --durations=25 tests

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
