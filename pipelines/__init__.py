"""sluice: the pipeline stages and the libraries they use, importable without Airflow, DVC or BentoML.

The stages are the modules at this level (`python -m pipelines.<stage>`, `run(params, start, end)`):
ingest, validate, features, feature_store, dataset, train, evaluate, register, champion_gate,
batch_predict, monitor. They never import each other; what they share lives below them: the libraries
(ingestion/ over sources/, serving/, monitoring/), artifacts.py (what stages hand each other), model/
and engines/, and the foundations (config.py, sections.py, contract.py, io.py, errors.py,
stage_cli.py, declared.py). ops/ (the `sluice` CLI, the canary, deployments, batch scoring jobs) and
summary.py sit above the stages, and api/ (the HTTP APIs the BentoML services mount: scoring's /predict,
/v1, /v2, and ingestion's /v1/ingest, /v1/labels) above ops.
pyproject.toml's import-linter contracts check this order (`make lint`).
"""
