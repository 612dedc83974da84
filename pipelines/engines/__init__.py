"""Adapters to the engines the platform runs on: Spark, Feast, the MLflow registry, GX data docs."""
