"""fraud_scorer: the BentoML service. Thin: every decision lives in pipelines.serving (ServingEngine).

Start-up loads the `champion` release (and the `challenger`, when set) from the MLflow registry by alias;
aliases and the challenger weight are re-read every serve.refresh_s without a restart. Params come from
$SLUICE_PARAMS (default: the project's params.yaml), read once at import because the batching knobs are
decorator arguments.

Routes: POST /predict (adaptive batching; body = {"records": [...]}, usually one), POST /predict_batch
(up to serve.max_records records in one call), POST /score_file/submit + GET /score_file/status|get (a
BentoML task over a Parquet/CSV file), GET /health/dependencies; /livez, /readyz (true once a release is
loaded) and /metrics are BentoML's.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Annotated, Any, cast

import bentoml
from bentoml.exceptions import ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import Field
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipelines.serving import (
    CHAMPION,
    GuardMiddleware,
    LoadedRelease,
    NotReady,
    PredictionLogWriter,
    ScoreRequest,
    ScoreResponse,
    ServingEngine,
    get_metrics,
    serving_params,
)

# BentoML 1.4.39 reads `model_fields` on each request's input model instance; pydantic >= 2.11 then
# formats a deprecation warning to stderr on EVERY request (the registry of shown warnings is reset by
# other libraries): ~1% CPU and ~150 kB/s of logs under load. Silenced for that one message only.
warnings.filterwarnings("ignore", message=r"Accessing the 'model_fields' attribute on the instance")

PARAMS = serving_params()
CFG = PARAMS.serve
# a GPU is requested where there is one (a PyTorch MLP release then runs on CUDA); CPU otherwise
HAS_GPU = os.path.exists("/dev/nvidiactl")
API_PATHS = ("/predict", "/predict_batch", "/score_file", "/score_file/submit")
# written by `make bento`: the BentoML model (the champion at build time) served if the registry is down
BUNDLED = Path(__file__).with_name("bundled_release.json")

# BentoML 1.4.39 rebuilds a JSON schema on every request for a root (positional-only) input and on every
# response for a root output without a declared media type: together a third of the server's CPU under
# load (py-spy, benchmarks/serving.py --profile). Hence a named input (body {"records": [...]}) and an
# explicit content type on the output.
Records = Annotated[list[ScoreRequest], Field(min_length=1, max_length=CFG.max_records)]
Responses = Annotated[list[ScoreResponse], ContentType("application/json")]

_engine: ServingEngine | None = None


@bentoml.service(
    name="fraud_scorer",
    workers=CFG.workers,
    resources={"gpu": 1} if HAS_GPU else {"cpu": str(CFG.workers)},
    traffic={"timeout": 60},
    http={"host": CFG.host, "port": CFG.port},
    # per-request access logs cost CPU on the hot path; Prometheus metrics and the prediction log remain
    logging={"access": {"enabled": False}},
    # no span per scoring/probe request (BentoML creates OpenTelemetry spans even with no exporter set)
    tracing={
        "excluded_urls": [
            "/predict",
            "/predict_batch",
            "/readyz",
            "/livez",
            "/healthz",
            "/metrics",
            "/health",
        ]
    },
    labels={"owner": "sluice", "model_name": PARAMS.register_.model_name},
)
class FraudScorer:
    """Scores events with the registry's champion (and challenger) release."""

    def __init__(self) -> None:
        global _engine
        writer = None
        if CFG.log_enabled:
            writer = PredictionLogWriter(PARAMS.paths.prediction_log, CFG.log_rotate_bytes, CFG.log_flush_s)
        fallback = _load_bundled if BUNDLED.is_file() else None
        self.engine = ServingEngine(
            PARAMS, metrics=get_metrics(), log_writer=writer, fallback_release=fallback
        )
        self.engine.start()
        _engine = self.engine
        _bind_api_methods(self)

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.engine.close()

    @bentoml.api(batchable=CFG.batching, max_batch_size=CFG.max_batch_size, max_latency_ms=CFG.max_latency_ms)
    async def predict(self, records: Records) -> Responses:
        """Score events (one per request is typical; concurrent requests are batched together)."""
        try:
            return await self.engine.predict(records)
        except NotReady as err:
            raise ServiceUnavailable(str(err)) from None

    @bentoml.api
    async def predict_batch(self, records: Records) -> Responses:
        """Score up to serve.max_records events in one call (not merged with other requests)."""
        try:
            return await self.engine.predict(records, source="api_batch")
        except NotReady as err:
            raise ServiceUnavailable(str(err)) from None

    @bentoml.task
    def score_file(self, input_path: str, output_path: str | None = None) -> dict[str, Any]:
        """Job: score a Parquet/CSV file of records under the project root; result written as Parquet."""
        dest = output_path or str(PARAMS.paths.data / "serving_jobs" / f"{uuid.uuid4().hex}.parquet")
        return self.engine.score_file(input_path, dest)


# what @bentoml.service made of the class (type checkers keep a decorated class's own type)
SERVICE = cast("bentoml.Service[FraudScorer]", FraudScorer)


def _bind_api_methods(instance: Any) -> None:
    """Bind the API methods once. BentoML 1.4.39 resolves `instance.<api>` through a descriptor that
    rebuilds a wrapper (with `inspect.signature`) on EVERY request: ~10% of the server's CPU under load.
    The per-instance attribute shadows the (non-data) descriptor with the very same local caller."""
    for name in SERVICE.apis:
        method = getattr(type(instance), name)
        setattr(instance, name, method.__get__(instance, type(instance)))


def _load_bundled() -> LoadedRelease:
    """The release bundled in the Bento (BentoML model store), verified against its fingerprint label."""
    from pipelines.artifacts import load_release_at

    info = json.loads(BUNDLED.read_text())
    model = bentoml.models.get(info["bento_model"])
    release = load_release_at(
        model.path_of("mlflow_model"), None, fingerprint=info.get("fingerprint") or None
    )
    return LoadedRelease(
        arm=CHAMPION,
        model_name=info["model_name"],
        version=str(info["model_version"]),
        threshold=float(info["threshold"]),
        release=release,
        fingerprint=release.fingerprint,
    )


async def _dependencies(_: Request) -> JSONResponse:
    if _engine is None:
        return JSONResponse(
            {"ready": False, "ok": False, "error": "service not initialised"}, status_code=503
        )
    report = await run_in_threadpool(_engine.health)
    return JSONResponse(report, status_code=200 if report["ok"] else 503)


SERVICE.mount_asgi_app(Starlette(routes=[Route("/dependencies", _dependencies)]), path="/health")
SERVICE.add_asgi_middleware(
    GuardMiddleware,
    api_key_env=CFG.api_key_env,
    rate_limit_per_s=CFG.rate_limit_per_s,
    rate_limit_burst=CFG.rate_limit_burst,
    max_request_bytes=CFG.max_request_bytes,
    api_paths=API_PATHS,
)
