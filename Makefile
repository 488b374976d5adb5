# Two commands do everything on a fresh clone:
#   make run   — virtualenv, install, migrate, demo data, web server + worker on :8000
#   make test  — virtualenv, install, lint, types, migrations check, the whole suite
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
# Django 6 needs Python >= 3.12: take the first interpreter on this machine that is new enough.
PYTHON ?= $(shell for c in python3.13 python3.12 python3 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null); do \
	$$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v $$c; break; }; done)
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= var
# The development settings `make run` writes into DATA_DIR/dev.env (target dev-env). The
# settings read that file when it exists, so every `manage.py` command run in this checkout
# afterwards runs as the server does, with nothing to export; the environment's own
# variables win. Production never has the file (a production host never runs `make run`).
DEV_ENVIRONMENT := DEBUG=true EARNINGS_HOLD_SECONDS=60

.PHONY: help venv dev-env run migrate demo test lint typecheck migrations-check test-postgres test-sqlite checks-and-sqlite agents

help:
	@echo "make run    set up and serve the app with a worker on http://$(HOST):$(PORT)"
	@echo "make test   set up and run lint, type checks, migrations check and the whole suite"

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 is required (e.g. apt-get install python3.12, or pyenv install 3.12)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,agents]'
	@touch $@

venv: $(BIN)/.installed

migrate: venv
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demo

dev-env:
	@mkdir -p $(DATA_DIR)
	@{ echo "# Development settings, written by \`make run\` on every start and read by manage.py."; \
	   echo "# Never copy this file to a production host. Set your own variables in the environment."; \
	   for setting in $(DEV_ENVIRONMENT); do echo "$$setting"; done; } > $(DATA_DIR)/dev.env

# The development setup (generated keys, the dev funding provider), set-up steps included:
# the development settings are written before anything reads the settings.
ifneq ($(filter run,$(MAKECMDGOALS)),)
migrate: | dev-env
endif
# `supervise` restarts the worker whenever it dies. Ctrl-C or SIGTERM stops both: the
# supervisor stops its cluster in order (within its grace period) and the shell waits for it;
# if either process ends, the other is stopped too.
run: dev-env demo
	@echo "Development settings: $(DATA_DIR)/dev.env (every manage.py command here reads it)."
	@echo "Serving on http://$(HOST):$(PORT) (admin: /admin/, demo login: demo / demo-password). Ctrl-C stops both."
	@trap 'trap "" INT TERM; trap - EXIT; kill 0; wait' INT TERM EXIT; \
	$(BIN)/python manage.py supervise & \
	$(BIN)/python manage.py runserver $(HOST):$(PORT) & \
	wait -n

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy .

migrations-check: venv
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

# Both passes run their tests in parallel processes (pytest-xdist), each with a test database
# of its own; the browser tests stay together on one of them (tests/conftest.py). Much of the
# PostgreSQL pass waits on real worker processes, so it runs more processes than cores.
XDIST := --dist loadgroup --no-loadscope-reorder
PG_TEST_PROCESSES ?= 3
SQLITE_TEST_PROCESSES ?= 2
# pytest keeps the test modules (and its plugins) it rewrites as bytecode: a shell that
# forbids bytecode would have every test process rewrite and compile them all again.
PYTEST_ENV := PYTHONDONTWRITEBYTECODE=

# The whole suite on a throwaway PostgreSQL cluster (started and removed here), browser
# tests included: they drive the system Chromium, installed here when missing…
test-postgres: venv
	sh tests/browser/ensure_chromium.sh
	$(PYTEST_ENV) $(BIN)/python tests/pgcluster.py -- $(BIN)/pytest -q $(XDIST) -n $(PG_TEST_PROCESSES) --durations=15

# …and the fast part of it again on the embedded default (SQLite).
test-sqlite: venv
	$(PYTEST_ENV) SQLITE_TEST_PATH= $(BIN)/pytest -q $(XDIST) -n $(SQLITE_TEST_PROCESSES) -m "not postgres and not slow and not browser"

# The PostgreSQL pass spends much of its time waiting on real worker processes and a
# browser, so the type checks, the migrations check and the SQLite pass run beside it (two
# jobs). The PostgreSQL pass prints as it goes; the other job's output is kept in a file and
# printed whole when it ends, so the two never mix.
test: lint
	$(MAKE) --no-print-directory -j2 test-postgres checks-and-sqlite

checks-and-sqlite:
	@log=$$(mktemp); status=0; \
	$(MAKE) --no-print-directory typecheck migrations-check test-sqlite > $$log 2>&1 || status=$$?; \
	cat $$log; rm -f $$log; exit $$status

agents: venv
	$(BIN)/python agents/build.py

# Figures, not tests: the sandbox alone, then payment channels, webhook and quote latency,
# the cost of one statement, and end to end, each on a throwaway PostgreSQL cluster. e2e.py
# comes last: it ends with the SPEC §16 and §20 figures (settlement beside the reference,
# end to end, batch submission).
.PHONY: bench
bench: venv
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python tests/pgcluster.py -- $(BIN)/python benchmarks/channels.py
	$(BIN)/python tests/pgcluster.py -- $(BIN)/python benchmarks/webhooks.py
	$(BIN)/python tests/pgcluster.py -- $(BIN)/python benchmarks/statements.py
	$(BIN)/python tests/pgcluster.py -- $(BIN)/python benchmarks/hosts.py
	$(BIN)/python tests/pgcluster.py -- $(BIN)/python benchmarks/e2e.py
