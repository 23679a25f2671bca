# Every target creates or refreshes .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -q
MKDOCS := $(VENV)/bin/mkdocs
# The runnable examples: every docstring's (`Example:` sections) and every page's in docs/.
DOCTEST := $(PYTEST) --doctest-modules src/ntkit --doctest-glob="*.md" docs

# The suite runs one pytest process per test folder (a stage of the data path): each starts with fresh native state
# (XLA's compiled programs, thread pools of the numerical libraries), which a single process of ~1,000 tests did
# not survive reliably (a segfault inside XLA's compiler, seen twice late in the float32 run, never in a part).
SUITES := $(sort $(dir $(wildcard tests/*/__init__.py))) $(wildcard tests/test_*.py)
SMALL_SUITES := tests/solve/ tests/test_bad_inputs.py

.PHONY: demo test test-slow bench lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ntkit demo

# The suite runs twice: float32 (JAX_ENABLE_X64=0) and float64 (JAX_ENABLE_X64=1); so do the docstrings' examples
# (doctests); the pages' examples in docs/*.md run in float32. Then the documentation is built, warnings as errors,
# into a temporary folder.
# The larger folders run on two pytest-xdist workers (tests/nn 1.33x faster on 2 cores: 208 s against 277 s;
# compiling and tracing, most of a test's time, leave a core idle); the small ones are not worth a worker's start.
test: $(STAMP)
	for x64 in 0 1; do for suite in $(SUITES); do \
	  case " $(SMALL_SUITES) " in *" $$suite "*) workers="";; *) workers="-n 2";; esac; \
	  JAX_ENABLE_X64=$$x64 $(PYTEST) $$workers -m "not slow" --durations=8 $$suite || exit 1; done; done
	JAX_ENABLE_X64=0 $(DOCTEST) -n 2
	JAX_ENABLE_X64=1 $(PYTEST) -n 2 --doctest-modules src/ntkit
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(MKDOCS) build --strict --site-dir "$$tmp"

# (pytest exits 5 for a folder with no slow test)
test-slow: $(STAMP)
	for x64 in 0 1; do for suite in $(SUITES); do \
	  JAX_ENABLE_X64=$$x64 $(PYTEST) -m slow $$suite || [ $$? -eq 5 ] || exit 1; done; done

bench: $(STAMP)
	mkdir -p benchmarks/results
	for script in $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py)); do $(PY) $$script --out benchmarks/results || exit 1; done

# The documentation (docs/ and the docstrings, see mkdocs.yml) as a static site in site/; open site/index.html.
docs: $(STAMP)
	$(MKDOCS) build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
