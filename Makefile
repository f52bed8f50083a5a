# tollgate: set up, run and test the platform. Everything works on a fresh Debian machine as root:
# missing system packages are installed (apt-get), Kafka jars come through Maven, Python through uv.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PY := .venv/bin/python
TOLLGATE := .venv/bin/tollgate
STACK := bash infra/stack.sh
SYNC_STAMP := .venv/.synced
PYPROJECTS := pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
NATIVE_SOURCES := $(wildcard libs/*/Cargo.toml libs/*/Cargo.lock libs/*/src/*.rs)
TEST_DIRS := tests/unit tests/integration tests/e2e
PYTEST_ARGS ?=

export DEBIAN_FRONTEND := noninteractive
# Services started by `make up` (infra/stack.sh reads STACK_SERVICES).
ifdef SERVICES
export STACK_SERVICES := $(SERVICES)
endif
# Replicas started by `make up`: REPLICAS=3 (every service), REPLICAS_validator=2 (one; - becomes _).
export REPLICAS
$(foreach v,$(filter REPLICAS_%,$(.VARIABLES)),$(eval export $(v)))

.PHONY: help venv deps up down status infra-up infra-down topics test test-unit test-scorer-alone demo bench lint generate clean

help:
	@echo "make demo       set up everything, start the local stack, run the closed-loop scenario"
	@echo "make test       set up everything, start Kafka + PostgreSQL, run the whole test suite"
	@echo "make test-unit  unit tests only (no infrastructure)"
	@echo "make test-scorer-alone  the scorer's unit tests with only the scorer's package installed (no scikit-learn)"
	@echo "make up | down | status   the local stack (Kafka, PostgreSQL, services) in the background;"
	@echo "                 make up REPLICAS=3 (every service) REPLICAS_validator=2 (one service)"
	@echo "make infra-up | infra-down  Kafka and PostgreSQL only"
	@echo "make bench      benchmarks (results under .local/bench/)"
	@echo "make lint       ruff check + format check, mypy (strict) on libs and services"
	@echo "make generate   regenerate schema files"
	@echo "make deps       Python env + system packages + Kafka jars"
	@echo "make clean      stop everything and delete .local/ state"

# The Python environment, re-synced only when uv.lock, a pyproject.toml or the Rust sources changed.
venv: $(SYNC_STAMP)

$(SYNC_STAMP): uv.lock $(PYPROJECTS) $(NATIVE_SOURCES)
	$(STACK) venv
	@touch $@

deps: venv
	$(STACK) deps
	@bash infra/helm/tools.sh || echo "make: deps: helm and the operators' CRDs could not be fetched (no network?); the chart tests need them: run make deps with network"

infra-up: deps
	$(STACK) infra-up

infra-down:
	$(STACK) infra-down

# Topics and the ACLs the topic catalog implies, created as the broker's super user.
topics: infra-up
	$(STACK) topics

up: deps
	$(STACK) up

down:
	$(STACK) down

status:
	@$(STACK) status

test: topics test-scorer-alone
	$(TOLLGATE) dev check
	$(TOLLGATE) dev history
	.venv/bin/pytest $(TEST_DIRS) $(PYTEST_ARGS)

# The scorer serves ONNX only: its package must not need scikit-learn or the trainer, and neither may its unit
# tests. They run here in an environment of their own holding tollgate-scorer, tollgate-core and the scorer's
# `test` dependency group only (versions from uv.lock), after checking that scikit-learn cannot be imported.
SCORER_VENV := .local/scorer-venv
UV = $(shell command -v uv >/dev/null 2>&1 && echo uv || echo python3 -m uv)

test-scorer-alone: venv
	UV_PROJECT_ENVIRONMENT=$(SCORER_VENV) $(UV) sync --quiet --frozen --package tollgate-scorer --no-default-groups --group test </dev/null
	@if $(SCORER_VENV)/bin/python -c 'import sklearn' 2>/dev/null; then \
		echo "make: test-scorer-alone: scikit-learn is importable in $(SCORER_VENV): the scorer's package pulls it in"; exit 1; fi
	@if $(SCORER_VENV)/bin/python -c 'import tollgate_trainer' 2>/dev/null; then \
		echo "make: test-scorer-alone: the trainer is importable in $(SCORER_VENV)"; exit 1; fi
	$(SCORER_VENV)/bin/python -m pytest tests/unit/scorer -q -p no:cacheprovider $(SCORER_PYTEST_ARGS)

test-unit: venv
	.venv/bin/pytest tests/unit $(PYTEST_ARGS)

# The demo watches drift windows of 10 s (the default is 60 s) and lets the monitor ask for retraining
# again after a minute (default: an hour), so the closed loop shows within minutes, run after run.
demo: export TOLLGATE_MONITOR_WINDOW_SECONDS ?= 10
demo: export TOLLGATE_MONITOR_RETRAIN_COOLDOWN_SECONDS ?= 60
demo: up
	$(STACK) as operator $(TOLLGATE) demo

bench: topics
	@mkdir -p .local/bench
	$(STACK) as admin $(PY) tests/bench/run.py

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy libs services

generate: venv
	$(TOLLGATE) dev generate
	$(TOLLGATE) dev helm write

clean:
	$(STACK) down
	rm -rf .local
