# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first, from
# the lock (requirements-dev.lock): the same versions on every machine and every day.
# `make lock` refreshes the lock; `make test-latest` runs the checks against the newest releases.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
LOCK := requirements-dev.lock
STAMP = $(VENV)/.installed
LATEST := .venv-latest
UV = $(BIN)/uv
# pytest workers: two per core. Most tests wait on other processes, sockets and databases
# rather than compute (the suite uses under one core's time with one worker per core), so
# four workers on a 2-core machine finish in about two thirds of the time two take.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * (os.cpu_count() or 1))')
# `make lock UPGRADE=` keeps the pins it can and only resolves what pyproject.toml changed
UPGRADE ?= --upgrade
# tests run in a random order (pytest-randomly); `make test SEED=N` replays one, and
# `make test RANDOM_ORDER='-p no:randomly'` runs them in file order
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
RANDOM_ORDER ?= --randomly-seed=$(SEED)
# Python caches the bytecode of what it imports (as any pip-installed package has it): where
# PYTHONDONTWRITEBYTECODE is set, every process the tests, the demo and the benchmarks start
# would compile each module it imports from source again, which more than doubles the CLI's
# start-up. Caching on first import costs nothing up front, unlike compiling the whole venv.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-latest lint typecheck pytest bench clean venv lock

venv: $(STAMP)

# Re-installs whenever pyproject.toml, the lock or this recipe changes. uv installs in seconds
# what pip takes a minute or more for; pip only brings uv itself, at the version the lock names.
$(STAMP): pyproject.toml $(LOCK) $(UV) Makefile
	$(UV) pip install --quiet --python $(BIN)/python -c $(LOCK) -e '.[dev]'
	@touch $(STAMP)

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) uv

# The lock pins every package of the dev extra (which includes every other extra) for
# Python 3.11+ on any platform. pyproject.toml keeps ranges: the library's users get those.
# It needs only uv, so it works when a new dependency no longer fits the old lock.
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		$(UPGRADE) --quiet --custom-compile-command 'make lock' -o $(LOCK)

# The demo needs only the package and its "agents" extra (langchain), not the test and
# notebook tools, so a fresh clone's `make demo` installs that much (pinned by the lock).
DEMO_STAMP := $(VENV)/.demo-installed

$(DEMO_STAMP): pyproject.toml $(LOCK) $(UV)
	$(UV) pip install --quiet --python $(BIN)/python -c $(LOCK) -e '.[agents]'
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/loopgate-lc demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check loopgate_lc tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict loopgate_lc

pytest: $(STAMP)
	@echo "pytest: random order, seed $(SEED) (make test SEED=$(SEED) replays it)"
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadgroup --durations=15 $(RANDOM_ORDER) \
		$(PYTEST_ARGS)

# ruff and mypy run beside pytest: its workers mostly wait, so the checks cost no wall time
test: $(STAMP)
	@$(MAKE) --no-print-directory -j3 --output-sync=line lint typecheck pytest

# The same checks in a separate venv with the newest releases the ranges in pyproject.toml
# allow, ignoring the lock: an upstream change shows up here first, apart from `make test`.
# When those releases are exactly the locked ones there is nothing new to test and it says so
# (FORCE=1 runs the suite regardless); otherwise it lists what is newer, then runs the suite.
test-latest:
	@test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade uv
	$(LATEST)/bin/uv pip install --quiet --python $(LATEST)/bin/python --upgrade -e '.[dev]'
	@$(LATEST)/bin/python -c "from importlib.metadata import version as v; print('test-latest: testing against', ', '.join(f'{p} {v(p)}' for p in ('langgraph', 'langchain-core', 'langchain', 'pydantic', 'python-telegram-bot', 'httpx')))"
	@if [ -z "$(FORCE)" ] && $(LATEST)/bin/python .ci/newer_than_lock.py $(LOCK); then \
		echo "test-latest: the newest releases are the locked versions, which make test runs;" \
		     "nothing new to test (make test-latest FORCE=1 runs the suite anyway)"; \
	else \
		$(MAKE) --no-print-directory VENV=$(LATEST) STAMP= test; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(LATEST) .mypy_cache .ruff_cache .pytest_cache
