# Every target creates or refreshes .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -q

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ntkit demo

# The suite runs twice: float32 (JAX_ENABLE_X64=0) and float64 (JAX_ENABLE_X64=1).
test: $(STAMP)
	JAX_ENABLE_X64=0 $(PYTEST) -m "not slow"
	JAX_ENABLE_X64=1 $(PYTEST) -m "not slow"

test-slow: $(STAMP)
	JAX_ENABLE_X64=0 $(PYTEST) -m slow
	JAX_ENABLE_X64=1 $(PYTEST) -m slow

bench: $(STAMP)
	mkdir -p benchmarks/results
	for script in benchmarks/*.py; do $(PY) $$script --out benchmarks/results || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
