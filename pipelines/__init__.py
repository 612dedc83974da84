"""sluice: the pipeline stages, importable without Airflow, DVC or BentoML."""
