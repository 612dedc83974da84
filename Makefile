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
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install -qq --disable-pip-version-check --root-user-action=ignore uv
	@test -x $(PY) || echo "==> installing the locked environment into .venv (a few minutes the first time)"
	@$(UV) sync --frozen --quiet

# dvc --quiet: its "Running stage"/lock-file lines go; each stage prints one line itself (pipelines/stage_cli.py)
run: setup  ## run the whole pipeline on the embedded defaults (dvc repro)
	@test -d .dvc || $(VENV)/bin/dvc init --quiet $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	@echo "==> dvc repro: the stages of dvc.yaml whose inputs changed, one line each"
	@$(VENV)/bin/dvc repro --quiet
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

.PHONY: bento serve monitor-ui

bento: setup  ## build the fraud_scorer Bento around the registry's champion (its version in the labels)
	$(PY) bentos/fraud_scorer/build.py

serve: setup  ## serve the registry's champion (+ challenger) on serve.host:serve.port (127.0.0.1:3000)
	SLUICE_PARAMS=$${SLUICE_PARAMS:-$(CURDIR)/params.yaml} $(VENV)/bin/bentoml serve service:FraudScorer --working-dir bentos/fraud_scorer

# ---- Evidently UI: the monitor stage's runs and dashboard (the workspace params.yaml names) -------------
MONITOR_UI_PORT ?= 8000
MONITOR_WORKSPACE ?= $(shell $(PY) -c "from pipelines.config import load_params as l; p = l('params.yaml'); print(p.resolve(p.monitor.workspace))" 2>/dev/null || echo reports/monitoring/workspace)

# DO_NOT_TRACK: otherwise the UI server sends usage telemetry to Evidently's host
monitor-ui: setup  ## Evidently's UI on the monitoring runs (monitor.workspace), 127.0.0.1:8000 (MONITOR_UI_PORT)
	@echo "==> monitoring dashboard: http://127.0.0.1:$(MONITOR_UI_PORT)/projects/$$($(PY) -c 'from pipelines.config import load_params; from pipelines.monitoring.workspace import project_id; print(project_id(load_params().register_.model_name))')"
	DO_NOT_TRACK=1 $(VENV)/bin/evidently ui --workspace $(MONITOR_WORKSPACE) --host 127.0.0.1 --port $(MONITOR_UI_PORT)

# ---- MLflow UI: the runs and the registry of the project's tracking store ---------------------------------
MLFLOW_PORT ?= 5000
# what the stages use when params.yaml says mlflow.tracking_uri: null (train.py: the experiment's artifacts)
MLFLOW_STORE ?= sqlite:///$(CURDIR)/mlflow.db
MLFLOW_ARTIFACTS ?= file://$(CURDIR)/mlartifacts
# MLflow 3's UI opens in its GenAI view, whose sidebar has no model registry; the classic one is asked
# for by this URL query (one page) or chosen with the sidebar's switch, which the browser remembers
MLFLOW_CLASSIC := workflowType=machine_learning

.PHONY: mlflow-ui

mlflow-ui: setup  ## MLflow UI on mlflow.db (127.0.0.1:5000); prints the URLs of its classic view (runs, registry)
	@model=$$($(PY) -c 'from pipelines.config import load_params; print(load_params().register_.model_name)'); \
	url=http://127.0.0.1:$(MLFLOW_PORT); \
	( for i in $$(seq 1 100); do \
	    if $(PY) -c "import urllib.request as u; u.urlopen('$$url/health', timeout=2)" 2>/dev/null; then \
	      echo "==> MLflow UI, classic view: registered model $$model (versions, aliases) and the experiments' runs"; \
	      echo "    $$url/#/models/$$model?$(MLFLOW_CLASSIC)"; \
	      echo "    $$url/#/experiments?$(MLFLOW_CLASSIC)"; \
	      echo "    (a page without that query shows GenAI until 'Model training' is picked in the sidebar, once)"; \
	      break; fi; sleep 2; done ) &
	$(VENV)/bin/mlflow server --backend-store-uri $(MLFLOW_STORE) --default-artifact-root $(MLFLOW_ARTIFACTS) \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# ---- the ingestion service: events, labels and batch uploads in over HTTP (bentos/ingest_service) --------
.PHONY: serve-ingest

serve-ingest: setup  ## serve the ingestion API on ingest_service.host:port (127.0.0.1:3001), landing in ingest.landing.store
	SLUICE_PARAMS=$${SLUICE_PARAMS:-$(CURDIR)/params.yaml} $(VENV)/bin/bentoml serve service:IngestService --working-dir bentos/ingest_service
