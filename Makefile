# AxiomID payments — the front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PACKAGES := -e shared -e services/gateway -e services/payments -e services/verifier \
            -e services/amadeus-proxy -e services/notifier -e '.[dev]'
PYPROJECTS := pyproject.toml shared/pyproject.toml $(wildcard services/*/pyproject.toml) constraints.txt
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run demo test test-fast lint fmt bench clean
.PHONY: backup restore migrate migrate-down

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): $(PYPROJECTS)
	@test -n "$(PYTHON)" && command -v "$(PYTHON)" >/dev/null || { \
		echo "no Python found: looked for $(if $(PYTHON),PYTHON=$(PYTHON),python3.11 and python3 on PATH)" \
		     "(install Python 3.11 or set PYTHON=/path/to/python3.11)"; exit 1; }
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "Python 3.11 is required, $(PYTHON) is not (set PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; "$(PYTHON)" -m venv $(VENV); }
	@echo "installing the packages into $(VENV) (the first time takes a minute or two)"
	@$(PY) -m pip install --quiet --upgrade pip
	@# One line per package as it is installed: the first run is long, and must not look stuck.
	@$(PY) -m pip install -c constraints.txt $(PACKAGES) 2>&1 \
		| grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed|ERROR)' \
		| cut -c1-150; test $${PIPESTATUS[0]} -eq 0
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install every package (done by the other targets too)

run: $(STAMP) ## start the whole stack locally (reuses NATS/Redis when they answer); Ctrl-C stops it
	@bash deploy/scripts/ensure-redis.sh
	$(PY) -m deploy.local.stack run

demo: $(STAMP) ## with `make run` up: pay one order with a sandbox wallet, print the status timeline
	$(PY) -m deploy.local.stack demo

test: $(STAMP) ## run every test tier CI runs (unit, connected, e2e, browser, slow)
	bash deploy/scripts/ensure-promtool.sh
	bash deploy/scripts/ensure-redis.sh
	bash deploy/scripts/ensure-chromium.sh
	bash deploy/scripts/ensure-js-clients.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (and the offline deploy/ checks)
	bash deploy/scripts/ensure-promtool.sh
	$(PY) -m pytest -m "not connected and not e2e and not browser and not slow" $(PYTEST_ARGS)

DEPTRY_PACKAGES := . shared $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml))

lint: $(STAMP) ## ruff format --check, ruff check, mypy --strict, deptry (each package declares its imports)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@for pkg in $(DEPTRY_PACKAGES); do \
		echo "deptry $$pkg"; (cd $$pkg && NO_COLOR=1 $(CURDIR)/$(VENV)/bin/deptry .) || exit 1; \
	done

fmt: $(STAMP) ## apply ruff format and the safe ruff fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP) ## benchmarks, each beside a baseline measured in the same run (var/bench.json)
	$(PY) -m tests.bench

DB ?= all
backup: $(STAMP) ## online backup of the payments and bookings DBs to var/backups/<time>/ [DB=payments|bookings]
	$(PY) -m deploy.local.dbtool backup --db $(DB)

restore: $(STAMP) ## restore BACKUP=<dir> (stop the stack first; FORCE=1 skips the in-use check) [DB=...]
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=var/backups/<time> [DB=payments|bookings] [FORCE=1]"; exit 2; }
	$(PY) -m deploy.local.dbtool restore "$(BACKUP)" --db $(DB) $(if $(FORCE),--force)

migrate: $(STAMP) ## apply pending migrations to both DBs [DB=payments|bookings]
	$(PY) -m deploy.local.dbtool migrate --db $(DB)

migrate-down: $(STAMP) ## revert migrations, backup first [DB=...] [TARGET=N, default one step] [ALLOW_DATA_LOSS=1]
	$(PY) -m deploy.local.dbtool migrate-down --db $(DB) $(if $(TARGET),--target $(TARGET)) \
		$(if $(ALLOW_DATA_LOSS),--allow-data-loss)

clean: ## remove the virtual environment and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
