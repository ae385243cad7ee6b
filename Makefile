# analytics-mcp: `make run` serves on 127.0.0.1:8000 with embedded Postgres and Redis; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-quick bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/analytics-mcp serve --transport http --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

test-quick: $(STAMP)  # the quick set: no slow or real-HTTP tests
	$(BIN)/python -m pytest -n auto -m "not slow and not http"

bench: $(STAMP)
	@for b in $(filter-out bench/__init__.py bench/common.py,$(wildcard bench/*.py)); do \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core analytics sessions warehouse mcp_server importers resources prompts

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .analytics-mcp .pytest_cache
