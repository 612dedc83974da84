"""Online serving logic: routing, cache, resilient feature lookup, scoring through the one predict path.

The BentoML service in bentos/fraud_scorer/ is a thin shell around `ServingEngine` and imports everything
it needs from this package; nothing here imports BentoML, so the logic is testable (and benchmarkable) on
its own and the import rule of DESIGN.md holds (pipelines never import bentos/).

Request flow of one (adaptive) batch, `ServingEngine.predict(records)` (engine.py):

1. route each record: `bucket(entity_id) < challenger weight` -> challenger, else champion (sticky: the
   bucket is a stable hash of the entity id, never Python's salted `hash()`) (routing.py);
2. answer from the TTL cache keyed by (release version, canonical request) where possible: the version
   is part of the key, so a new release can never be answered from an old release's entries (cache.py);
3. fetch the online features of the remaining entities in ONE lookup of the Feast reader
   (engines.feast_store.OnlineFeatureReader) with a timeout and a circuit breaker; when the store is down
   or slow, the in-process last-known features of the entity (or the empty state a brand-new entity has,
   which training saw too) are used and the answer is flagged (features.py);
4. score each arm's rows with `Release.score` (pipelines.model.release, the path training/batch use); a
   challenger that fails or is slower than its budget is replaced by the champion's answer;
5. cache, log (background JSONL writer, log.py), count (Prometheus, metrics.py).

Aliases and the challenger weight (registry rollout tags) are re-read every `serve.refresh_s` by a daemon
thread; new releases are loaded (pipelines.artifacts: pinned version URI, fingerprint checked) and warmed
before the swap, so an alias move changes answers without a restart and without a failed request
(releases.py).

`ServingEngine.score_calls` scores several requests' records as one batch and answers each request on
its own: an unexpected error while scoring the batch is retried per request, so only the request that
really fails gets it (counted per version/arm); the others are answered.

Modules: schema (strict request/response models, the scoring frame), routing (arms, served releases),
releases (loading, refresh, warm-up), features, cache, engine, http (keys, rate limit, size, content type,
request ids, access log), log (the prediction log), metrics. The HTTP routes are pipelines.api.
"""

from __future__ import annotations

from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.serving.cache import TTLCache
from pipelines.serving.engine import NotReady, ScoreCall, ServingEngine, serving_params
from pipelines.serving.features import (
    SOURCE_DEFAULT,
    SOURCE_LAST_KNOWN,
    SOURCE_NEW_ENTITY,
    SOURCE_ONLINE,
    CircuitBreaker,
    FeatureFetcher,
)
from pipelines.serving.http import GuardMiddleware, TokenBucket, configure_service_logging
from pipelines.serving.log import PredictionLogWriter, wait_flushed
from pipelines.serving.metrics import ServingMetrics, get_metrics
from pipelines.serving.releases import ReleaseSet, default_release_loader
from pipelines.serving.routing import LoadedRelease, Routing, bucket, route
from pipelines.serving.schema import ScoreRequest, ScoreResponse, request_frame, request_model

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "SOURCE_DEFAULT",
    "SOURCE_LAST_KNOWN",
    "SOURCE_NEW_ENTITY",
    "SOURCE_ONLINE",
    "CircuitBreaker",
    "FeatureFetcher",
    "GuardMiddleware",
    "LoadedRelease",
    "NotReady",
    "PredictionLogWriter",
    "ReleaseSet",
    "Routing",
    "ScoreCall",
    "ScoreRequest",
    "ScoreResponse",
    "ServingEngine",
    "ServingMetrics",
    "TTLCache",
    "TokenBucket",
    "bucket",
    "configure_service_logging",
    "default_release_loader",
    "get_metrics",
    "request_frame",
    "request_model",
    "route",
    "serving_params",
    "wait_flushed",
]
