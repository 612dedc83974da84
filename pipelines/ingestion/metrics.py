"""Prometheus metrics of the ingestion service, exported on BentoML's /metrics.

Created lazily, once per process, like pipelines.serving.metrics (BentoML workers set up Prometheus'
multiprocess directory after the service module is imported):

- sluice_ingest_events_total{route, outcome}     route events|batch; outcome accepted|duplicate|refused
- sluice_ingest_labels_total{outcome}            accepted|duplicate|refused
- sluice_ingest_batches_total{outcome}           accepted|refused
- sluice_ingest_landing_lag_seconds              event time -> landed (how late events arrive)
- sluice_ingest_commit_seconds                   request received -> durable (group commit included)
- sluice_ingest_commit_group_size                requests per commit
"""

from __future__ import annotations

import threading
from typing import Any

LAG_BUCKETS: tuple[float, ...] = (1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
COMMIT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
GROUP_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class IngestMetrics:
    """The service's metric families (on `registry`, default prometheus_client's global one)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        reg = registry if registry is not None else REGISTRY
        self.events = Counter(
            "sluice_ingest_events", "Events received, by outcome", ["route", "outcome"], registry=reg
        )
        self.labels = Counter("sluice_ingest_labels", "Labels, by outcome", ["outcome"], registry=reg)
        self.batches = Counter("sluice_ingest_batches", "Uploads, by outcome", ["outcome"], registry=reg)
        self.landing_lag = Histogram(
            "sluice_ingest_landing_lag_seconds",
            "Time from an event's timestamp to its landing",
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.commit = Histogram(
            "sluice_ingest_commit_seconds",
            "Time from a request's arrival to its durable commit",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self.group_size = Histogram(
            "sluice_ingest_commit_group_size", "Requests per commit", buckets=GROUP_BUCKETS, registry=reg
        )

    def landed(self, route: str, accepted: int, duplicates: int, lags: list[float]) -> None:
        """Count one request's landed and duplicate events and observe the new ones' lag."""
        if accepted:
            self.events.labels(route, "accepted").inc(accepted)
        if duplicates:
            self.events.labels(route, "duplicate").inc(duplicates)
        for lag in lags:
            self.landing_lag.observe(max(lag, 0.0))


_LOCK = threading.Lock()
_METRICS: IngestMetrics | None = None


def get_ingest_metrics() -> IngestMetrics:
    """The process-wide IngestMetrics on prometheus_client's global registry (created on first call)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            _METRICS = IngestMetrics()
        return _METRICS
