# Two set-up commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint install install-test system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

# PostgreSQL (catalog tests), Java + JDBC drivers (Spark tests): installed from Debian when missing.
system-deps:
	@bash scripts/system-deps.sh

demo: install
	$(BIN)/icebergdo --home lakehouse demo

# The layer contract (pyproject [tool.importlinter]), ruff and mypy: seconds, before any test.
lint: install-test
	$(BIN)/lint-imports
	$(BIN)/ruff check icebergdo tests bench
	$(BIN)/mypy

test: install-test system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache
