# notebook-mlops — every target bootstraps .venv first (needs only Python 3.11+).
#   make demo   the whole main job on this machine    make test   the test suite
#   make up / down / status / logs   the local stack  make lint   ruff check + format check
#   make up MONITORING=1   the local stack plus a Prometheus scraping it (Debian's prometheus)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_SPEC := uv==0.13.*
STAMP := $(VENV)/.bootstrapped
# Two xdist workers: the suite is mostly waiting on real servers and processes (see README).
# loadgroup keeps a module marked xdist_group (the notebook corpus) on one worker, so its
# module-wide stack starts once; every other test is spread one by one, as with `load`.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: bootstrap up down status logs test lint demo

bootstrap: $(STAMP)

# Re-runs only when the dependencies change. `--inexact` keeps uv itself, which pip put in
# the venv and the lock does not list.
$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed: install Python 3.11+ with venv (Debian: apt-get install python3-venv)" >&2; exit 1; }
	@test -x $(UV) || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null; \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check '$(UV_SPEC)' >$(VENV)/pip-uv.log 2>&1 \
	  || { cat $(VENV)/pip-uv.log >&2; exit 1; }; }
	$(UV) sync --frozen --all-groups --inexact --quiet
	@scripts/ensure_debian_packages.sh $(SANDBOX_TOOLS)
	@touch $@

# The kernel sandbox needs bubblewrap, and LightGBM in the kernel needs the system's OpenMP
# runtime (installed when root or sudo allows; see README).
SANDBOX_TOOLS := bubblewrap:bwrap libgomp1:libgomp.so.1

# MONITORING=1 (or yes/true) adds Debian's Prometheus with the shipped scrape config and alerts.
MONITORING_ON := $(filter 1 yes true,$(MONITORING))

up: $(STAMP)
	@scripts/ensure_debian_packages.sh $(SANDBOX_TOOLS) $(if $(MONITORING_ON),prometheus:prometheus)
	@$(BIN)/python -m local_stack up $(if $(MONITORING_ON),--monitoring)

down: $(STAMP)
	@$(BIN)/python -m local_stack down

status: $(STAMP)
	@$(BIN)/python -m local_stack status

logs: $(STAMP)
	@$(BIN)/python -m local_stack logs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The PostgreSQL variants start a private cluster from Debian's binaries (tests/conftest.py),
# or use TEST_DATABASE_URL when the caller's environment sets it.
test: $(STAMP)
	@scripts/ensure_debian_packages.sh $(SANDBOX_TOOLS) chromium:/usr/bin/chromium git:git \
	  prometheus:prometheus wrk:wrk 'postgresql:/usr/lib/postgresql/*/bin/initdb'
	$(BIN)/pytest $(PYTEST_ARGS)

demo: $(STAMP)
	@scripts/ensure_debian_packages.sh $(SANDBOX_TOOLS) git:git
	@$(BIN)/python scripts/demo.py
