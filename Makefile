# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Each creates .venv on first use and installs what it needs, at the versions of requirements/lock.txt
# (the known-good set CI tests; `make lock` refreshes it). torch is pinned to the CPU build
# that our machines carry (2.13.0); on a CUDA machine pip picks the matching CUDA wheel instead.
#
# Compatibility (README, "Supported versions"): `make test-newest` / `make test-lowest` build .venv-newest /
# .venv-lowest afresh, with the newest releases our ranges allow / exactly the floors pyproject.toml declares,
# and run the COMPAT_TESTS there. .ci/run runs `make test`, then both.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
SHARED ?= ../shared/data
BUDGET ?= quick
LOCK   := requirements/lock.txt

# model, generation, contract, PEFT, Auto-class, remote-code, Trainer (both stages) and warnings-as-errors tests: the part that breaks when a dependency moves
COMPAT_TESTS ?= tests/hf_gpt1/test_modeling_gpt1.py tests/hf_gpt1/test_generation_cache.py \
	tests/hf_gpt1/test_model_contract.py tests/hf_gpt1/test_peft_integration.py \
	tests/hf_gpt1/test_auto_classes.py tests/hf_gpt1/test_finetuning.py tests/test_warnings.py \
	tests/hf_gpt1/test_cpu_speed.py tests/hf_gpt1/test_pretraining_run.py
# printed before the compatibility tests run, so the log shows what was tested
COMPAT_PKGS := torch transformers accelerate peft datasets huggingface_hub tokenizers safetensors
COMPAT_PYTEST_ARGS := -n 2 --dist loadgroup -q -rs $(COMPAT_TESTS)

.PHONY: demo test test-fast lint bench lock test-newest test-lowest clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev,tensorboard]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/reproduce.py --budget $(BUDGET) --data-dir $(SHARED)

# Two xdist workers with one torch thread each: oversubscribed OpenMP threads slow small CPU ops ~30x.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -q -rs --durations=25 tests

# ruff lints and checks formatting, mypy type-checks the public API's documented use (config in pyproject.toml);
# the layering contract is tests/test_layering.py.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py --quick

# Re-resolve requirements/lock.txt to today's newest releases within pyproject.toml's ranges (in a throwaway venv);
# review the diff, run `make test`, commit both.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet "$(TORCH)"
	.venv-lock/bin/python -m pip install --quiet "$(TORCH)" -e ".[dev,tensorboard]"
	mkdir -p $(dir $(LOCK))
	{ echo "# Known-good versions that \`make test\`/\`make demo\` install (pip -c). Resolved by \`make lock\` on"; \
	  echo "# Python $$(.venv-lock/bin/python -c 'import platform; print(platform.python_version(), platform.machine())'), $$(date -u +%Y-%m-%d); do not edit by hand."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^#' | sed -E 's/^(torch==[^+]*)\+.*/\1/'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

# Newest: every dependency, torch included, at the newest release the ranges allow: what a fresh `pip install hf-gpt1`
# gets. For Linux that torch is PyPI's CUDA build (about 3 GB with its nvidia-* wheels; it runs on the CPU). Our CI
# machines cap torch in a machine-wide pip constraint (/etc/xdg/pip) to keep that download out of other installs;
# NEWEST_PIP_ENV lifts it for this stage only (`make test-newest NEWEST_PIP_ENV=` keeps it).
NEWEST_PIP_ENV ?= PIP_CONSTRAINT=/dev/null
test-newest:
	rm -rf .venv-newest
	$(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST_PIP_ENV) .venv-newest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"
	.venv-newest/bin/python .ci/versions.py newest $(COMPAT_PKGS)
	OMP_NUM_THREADS=1 .venv-newest/bin/python -m pytest $(COMPAT_PYTEST_ARGS)

# Lowest: each declared dependency (and dev tool) at exactly its floor; what they need in turn resolves freely.
test-lowest:
	rm -rf .venv-lowest
	$(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet "$(TORCH)"
	.venv-lowest/bin/python .ci/lowest_constraints.py --extras dev > .venv-lowest/constraints.txt
	.venv-lowest/bin/python -m pip install --quiet -c .venv-lowest/constraints.txt "$(TORCH)" -e ".[dev]"
	.venv-lowest/bin/python .ci/versions.py lowest $(COMPAT_PKGS)
	OMP_NUM_THREADS=1 .venv-lowest/bin/python -m pytest $(COMPAT_PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-newest .venv-lowest .venv-lock build *.egg-info
