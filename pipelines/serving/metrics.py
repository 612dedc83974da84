"""Prometheus metrics of the online service, labelled by model version and arm.

Created lazily with prometheus_client (BentoML workers set PROMETHEUS_MULTIPROC_DIR after the service
module is imported, so metrics must be built inside the service's __init__, never at import time), once
per process (`get_metrics()`), and exported on BentoML's /metrics. Updates are aggregated per batch: one
`.inc(n)` per (version, arm) rather than one per request, to keep the hot path cheap.

- sluice_predictions_total{model_version, arm, cached, feature_source}
- sluice_prediction_errors_total{model_version, arm, kind}   (challenger failures/timeouts too)
- sluice_prediction_latency_seconds{model_version, arm}      (server-side batch time, per prediction)
- sluice_batch_size{endpoint}                                (records per scoring call)
- sluice_cache_hits_total{model_version, arm}
- sluice_feature_fallbacks_total{model_version, arm, feature_source}
- sluice_challenger_fallbacks_total{model_version}            (challenger routed, champion answered)
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# `source` of a scoring call -> its `endpoint` label
ENDPOINTS: dict[str, str] = {
    "api": "predict",
    "api_batch": "predict_batch",
    "v1": "v1_predict",
    "v2": "v2_infer",
}


class ServingMetrics:
    """The service's metric families (prometheus_client objects on `registry`, default the global one)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        reg = registry if registry is not None else REGISTRY
        self.predictions = Counter(
            "sluice_predictions",
            "Predictions served",
            ["model_version", "arm", "cached", "feature_source"],
            registry=reg,
        )
        self.errors = Counter(
            "sluice_prediction_errors",
            "Scoring errors and timeouts",
            ["model_version", "arm", "kind"],
            registry=reg,
        )
        self.latency = Histogram(
            "sluice_prediction_latency_seconds",
            "Server-side time of the batch a prediction was scored in",
            ["model_version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "sluice_batch_size", "Records per scoring call", ["endpoint"], buckets=BATCH_BUCKETS, registry=reg
        )
        self.cache_hits = Counter(
            "sluice_cache_hits", "Predictions answered from the cache", ["model_version", "arm"], registry=reg
        )
        self.feature_fallbacks = Counter(
            "sluice_feature_fallbacks",
            "Predictions scored without fresh online features",
            ["model_version", "arm", "feature_source"],
            registry=reg,
        )
        self.challenger_fallbacks = Counter(
            "sluice_challenger_fallbacks",
            "Challenger-routed predictions answered by the champion (challenger failed or too slow)",
            ["model_version"],
            registry=reg,
        )

    def observe_batch(
        self,
        responses: Sequence[Any],
        seconds: float,
        errors: Iterable[tuple[str, str, str, int]] = (),
        endpoint: str = "predict",
    ) -> None:
        """Count one scored batch (ScoreResponse-like objects) and its (version, arm, kind, rows) errors.

        A challenger failure counts its rows as errors of the challenger; the champion's answers for them
        count as champion predictions (challenger_fallback in the log). The challenger's error rate is
        errors{arm=challenger} / (errors{arm=challenger} + predictions{arm=challenger}).
        """
        self.batch_size.labels(endpoint).observe(len(responses))
        groups: Tally[tuple[str, str, bool, str]] = Tally()
        for r in responses:
            groups[(r.model_version, r.arm, r.cached, r.feature_source)] += 1
        per_arm: Tally[tuple[str, str]] = Tally()
        for (version, arm, cached, source), n in groups.items():
            self.predictions.labels(version, arm, str(cached).lower(), source).inc(n)
            per_arm[(version, arm)] += n
            if cached:
                self.cache_hits.labels(version, arm).inc(n)
            if source != "online":
                self.feature_fallbacks.labels(version, arm, source).inc(n)
        for (version, arm), n in per_arm.items():
            hist = self.latency.labels(version, arm)
            for _ in range(n):
                hist.observe(seconds)
        for version, arm, kind, rows in errors:
            self.errors.labels(version, arm, kind).inc(rows)
            if arm == "challenger":
                self.challenger_fallbacks.labels(version).inc(rows)

    def error(self, version: str, arm: str, kind: str, n: int = 1) -> None:
        self.errors.labels(version, arm, kind).inc(n)


_LOCK = threading.Lock()
_METRICS: ServingMetrics | None = None


def get_metrics() -> ServingMetrics:
    """The process-wide ServingMetrics on prometheus_client's global registry (created on first call)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            _METRICS = ServingMetrics()
        return _METRICS
