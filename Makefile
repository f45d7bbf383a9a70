# `make run` sets everything up and runs the demo (`codelift demo`); `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run collector check test bench bench-assignment bench-analysis bench-stats bench-gateway \
	bench-dashboard bench-feedback bench-lora bench-e2e bench-cli bench-hostile dashboard clean

$(BIN)/codelift: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,local]'
	@touch $@

install: $(BIN)/codelift

run: install
	$(BIN)/codelift demo

collector: install
	$(BIN)/codelift db upgrade
	$(BIN)/codelift collector

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/ingest.py

bench-assignment: install
	$(BIN)/python -m bench.assignment

bench-analysis: install
	$(BIN)/python -m bench.analysis

bench-stats: install
	$(BIN)/python -m bench.stats_calibration

bench-gateway: install
	$(BIN)/python bench/gateway.py

bench-dashboard: install
	$(BIN)/python -m bench.dashboard

dashboard: install
	$(BIN)/codelift dashboard

bench-feedback: install
	$(BIN)/python -m bench.feedback_tagging

bench-lora: install
	$(BIN)/python -m bench.lora

bench-e2e: install
	$(BIN)/python -m bench.e2e

bench-cli: install
	$(BIN)/python -m bench.cli_startup

bench-hostile: install
	$(BIN)/python -m bench.hostile_clients

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
