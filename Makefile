# The interface users and CI rely on. `make run` and `make test` are the two commands in README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else the one `pip install uv` puts next to python3 (run as a module)
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# uv ignores pip's machine-wide constraints file and resolves from uv.lock only
export UV_LINK_MODE ?= copy
# compile .pyc at install (~1 min once, ~2 s when up to date): every stage, task and server is a new
# process importing Spark/MLflow/Airflow/Evidently, and without cached bytecode (PYTHONDONTWRITEBYTECODE,
# a read-only venv) each recompiles them: the monitor stage took 35 s instead of 15 s
export UV_COMPILE_BYTECODE ?= 1

.PHONY: help setup run test test-slow test-ui lint bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## create .venv from uv.lock (installs uv with pip when missing)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

run: setup  ## run the whole pipeline on the embedded defaults (dvc repro)
	@test -d .dvc || $(VENV)/bin/dvc init --quiet $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	$(VENV)/bin/dvc repro
	@$(PY) -m pipelines.summary

test: setup  ## run the test suite (unit, integration, e2e; not slow/ui)
	$(PY) -m pytest

LINTED := pipelines dags bentos tests benchmarks feature_repo

test-slow: setup  ## the slow set: Spark cluster, PostgreSQL/Airflow, backfills, served canary (not in CI)
	$(PY) -m pytest -m slow -p no:cacheprovider

# Debian's chromium (Playwright's own browser download cannot reach its host from here)
CHROMIUM := $(shell command -v chromium 2>/dev/null)

test-ui: setup  ## the browser set: headless Chromium on the Airflow UI and the dashboards (not in CI)
ifeq ($(CHROMIUM),)
	apt-get update -qq && apt-get install -y -qq chromium
endif
	$(PY) -m pytest -m ui -p no:cacheprovider
	@echo "screenshots: test-artifacts/"

lint: setup  ## ruff, the import contracts (import-linter, pyproject.toml) and the type checker (mypy)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy pipelines bentos dags

bench: setup  ## the benchmarks (slow; not part of CI)
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/batch_inference.py
	$(PY) benchmarks/monitoring.py

clean:  ## remove generated data, reports, models and the local MLflow store
	rm -rf data reports models mlflow.db mlartifacts

# ---- Airflow: dags/ on a local Airflow 3 (api-server, scheduler, dag-processor, triggerer) ------------
AIRFLOW_DIR := $(CURDIR)/airflow_home
AIRFLOW_PORT ?= 8080
AIRFLOW_PW := $(AIRFLOW_DIR)/simple_auth_manager_passwords.json.generated
# SQLite + LocalExecutor by default; export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN for PostgreSQL (README)
AIRFLOW_ENV := AIRFLOW_HOME=$(AIRFLOW_DIR) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) AIRFLOW__API__BASE_URL=http://localhost:$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/

.PHONY: airflow airflow-ui-test

airflow: setup  ## local Airflow 3 on dags/ (SQLite, airflow_home/); prints URL and login
	@mkdir -p $(AIRFLOW_DIR)
	@echo "==> Airflow starting on http://localhost:$(AIRFLOW_PORT) (AIRFLOW_HOME=$(AIRFLOW_DIR)); Ctrl-C stops it"
	@( for i in $$(seq 1 200); do \
	    if $(PY) -c "import urllib.request as u; u.urlopen('http://localhost:$(AIRFLOW_PORT)/api/v2/monitor/health', timeout=2)" 2>/dev/null \
	       && test -f $(AIRFLOW_PW); then \
	      echo "==> Airflow UI: http://localhost:$(AIRFLOW_PORT)  user: admin  password: see $(AIRFLOW_PW) ($$(cat $(AIRFLOW_PW)))"; \
	      break; fi; sleep 3; done ) &
	$(AIRFLOW_ENV) $(VENV)/bin/airflow standalone

airflow-ui-test: test-ui  ## (old name of test-ui)

.PHONY: bento serve

bento: setup  ## build the fraud_scorer Bento around the registry's champion (its version in the labels)
	$(PY) bentos/fraud_scorer/build.py

serve: setup  ## serve the registry's champion (+ challenger) on serve.host:serve.port (127.0.0.1:3000)
	SLUICE_PARAMS=$${SLUICE_PARAMS:-$(CURDIR)/params.yaml} $(VENV)/bin/bentoml serve service:FraudScorer --working-dir bentos/fraud_scorer
