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

.PHONY: help setup run test lint bench clean

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

lint: setup  ## ruff
	$(VENV)/bin/ruff check pipelines dags bentos tests benchmarks
	$(VENV)/bin/ruff format --check pipelines dags bentos tests benchmarks

bench: setup  ## the benchmarks (slow; not part of CI)
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/batch_inference.py

clean:  ## remove generated data, reports, models and the local MLflow store
	rm -rf data reports models mlflow.db mlartifacts
