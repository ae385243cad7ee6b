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
	@# The console's browser tests drive Debian's Chromium (never `playwright install`'s download).
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; \
	elif [ ! -x /usr/bin/chromium ]; then echo "no apt-get: install Chromium at /usr/bin/chromium for the browser tests"; fi
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/analytics-mcp serve --transport http --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

test-quick: $(STAMP)  # the quick set: no slow or real-HTTP tests
	$(BIN)/python -m pytest -n auto -m "not slow and not http"

bench: $(STAMP)
	@for b in $(filter-out bench/__init__.py bench/common.py bench/proxy.py,$(wildcard bench/*.py)); do \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core analytics sessions warehouse mcp_server importers resources prompts console

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .analytics-mcp .pytest_cache
