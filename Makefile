# `make quickstart` and `make test` each set up everything first (scripts/setup.sh).
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup test test-fast quickstart lint bench

setup:
	bash scripts/setup.sh

test: setup
	VENV=$(VENV) bash scripts/docker.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup
	VENV=$(VENV) bash scripts/docker.sh
	$(BIN)/python -m pytest -q -m "not slow"

quickstart: setup
	$(BIN)/agentgym quickstart

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
