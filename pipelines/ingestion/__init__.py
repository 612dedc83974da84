"""Events and labels in over HTTP: the landing store and the checks behind the ingestion service.

The service (bentos/ingest_service, routes in pipelines.api.ingest_routes) lands what producers post;
the ingest stage reads it back beside its configured source. One concern per module:

- rules: per-event checks derived from the GX suite's row-level expectations (validate.suite)
- models: the pydantic bodies of events and labels built from those rules; one-or-a-list parsing
- columns: canonical column kinds, their store values, the canonical frame the ingest stage gets back
- store: the SQLite landing store (WAL, synchronous=FULL; events by event_id, labels, batches, runs)
- writer: the group-commit writer (one fsync for every request waiting)
- batch: uploads read through the params' column mapping and validated whole with the suite, or
  quarantined
- stats: per-day figures; landed: what the ingest stage reads and records
- notify: the landing flag the service raises after a commit (what wakes Airflow's ingestion DAG)
- labels: the posted labels as of a time, what the monitor's live metrics read
- metrics: Prometheus counters and histograms; service: the facade the HTTP routes call

This package file stays a docstring: the ingest stage imports `landed` (store, columns) alone, the monitor
`labels`, the DAG files `notify` (stdlib only), never GX.
"""
