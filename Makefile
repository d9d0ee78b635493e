# mammo-mlops developer commands. `make demo` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs on TEST_WORKERS pytest-xdist workers, each test module whole on one worker
# (its module-scoped servers and stores made once, the end-to-end runs in order), the longest
# modules first (tests/conftest.py). TEST_WORKERS=0 runs in this process, one test at a time.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

.PHONY: install demo stop test test-fast lint bench clean

# The Data Docs' CSS/JS from the npm registry, at the versions GX references (pinned in
# docs-assets/package-lock.json), copied next to the docs so that they render without internet.
DOCS_ASSETS := docs-assets/node_modules/.package-lock.json

install: $(STAMP) $(DOCS_ASSETS)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e ".[cpu,dev]"
	touch $(STAMP)

$(DOCS_ASSETS): docs-assets/package.json docs-assets/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found (Node.js 18+ is required for the offline Data Docs assets)"; exit 1; }
	cd docs-assets && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(BIN)/python -m mammo_pipeline.orchestration.demo

stop:
	-@test -x $(BIN)/python && $(BIN)/python -m mammo_pipeline.orchestration.demo --stop

test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not distributed" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check mammo_pipeline serving dags tests benchmarks
	$(BIN)/ruff format --check mammo_pipeline serving dags tests benchmarks

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
