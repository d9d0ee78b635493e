# mammo-mlops developer commands. `make demo` and `make test` install first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo stop test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e ".[cpu,dev]"
	touch $(STAMP)

demo: install
	$(BIN)/python -m mammo_pipeline.orchestration.demo

stop:
	-@test -x $(BIN)/python && $(BIN)/python -m mammo_pipeline.orchestration.demo --stop

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not distributed" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check mammo_pipeline serving dags tests benchmarks
	$(BIN)/ruff format --check mammo_pipeline serving dags tests benchmarks

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
