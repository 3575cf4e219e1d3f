# Two set-up commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test venv system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

# PostgreSQL (catalog tests), Java + JDBC drivers (Spark tests): installed from Debian when missing.
system-deps:
	@bash scripts/system-deps.sh

demo: venv
	$(BIN)/icebergdo --home lakehouse demo

test: venv system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) lakehouse .pytest_cache
