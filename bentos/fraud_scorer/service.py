"""fraud_scorer: the BentoML service. A shell: the routes are pipelines.api (FastAPI), the scoring is
pipelines.serving (ServingEngine); BentoML runs the workers, batches, probes and exports metrics.

Start-up loads the `champion` release (and the `challenger`, when set) from the MLflow registry by alias;
aliases and the challenger weight are re-read every serve.refresh_s without a restart. Params come from
$SLUICE_PARAMS (default: the project's params.yaml), read once at import because the service's
decorator arguments come from them.

Adaptive batching: /predict, /v1/predict and /v2/.../infer put each request's records on ONE BentoML
CorkDispatcher (serve.max_batch_size requests, serve.max_latency_ms), whose batch function is
`ServingEngine.score_calls`: an error while scoring a batch is answered per request, so it never fails
the other requests in it. Routes: see the OpenAPI document at /docs.json (Swagger UI at /, /docs).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import cast

import bentoml
from bentoml._internal.marshal.dispatcher import CorkDispatcher

from pipelines.api import Runtime, Score, build_app
from pipelines.api.runtime import Overloaded
from pipelines.serving import (
    CHAMPION,
    GuardMiddleware,
    LoadedRelease,
    PredictionLogWriter,
    ScoreResponse,
    ServingEngine,
    configure_service_logging,
    get_metrics,
    serving_params,
)
from pipelines.serving.engine import ScoreCall

# pydantic >= 2.11 formats a deprecation warning when BentoML reads `model_fields` on an instance
warnings.filterwarnings("ignore", message=r"Accessing the 'model_fields' attribute on the instance")

PARAMS = serving_params()
CFG = PARAMS.serve
# a GPU is requested where there is one (a PyTorch MLP release then runs on CUDA); CPU otherwise
HAS_GPU = os.path.exists("/dev/nvidiactl")
# written by `make bento`: the BentoML model (the champion at build time) served if the registry is down
BUNDLED = Path(__file__).with_name("bundled_release.json")

RUNTIME = Runtime(PARAMS)
APP = build_app(PARAMS, RUNTIME)


@bentoml.service(
    name="fraud_scorer",
    workers=CFG.workers,
    resources={"gpu": 1} if HAS_GPU else {"cpu": str(CFG.workers)},
    traffic={"timeout": 60},
    http={"host": CFG.host, "port": CFG.port},
    # BentoML's access log is replaced by the guard middleware's JSON line (key id, request id)
    logging={"access": {"enabled": False}},
    # no OpenTelemetry span per scoring/probe request (BentoML creates them even with no exporter set)
    tracing={"excluded_urls": ["/predict", "/v1/predict", "/v2", "/readyz", "/livez", "/metrics", "/health"]},
    labels={"owner": "sluice", "model_name": PARAMS.register_.model_name},
)
class FraudScorer:
    """Scores events with the registry's champion (and challenger) release."""

    def __init__(self) -> None:
        configure_service_logging()
        writer = None
        if CFG.log_enabled:
            writer = PredictionLogWriter(PARAMS.paths.prediction_log, CFG.log_rotate_bytes, CFG.log_flush_s)
        fallback = _load_bundled if BUNDLED.is_file() else None
        self.engine = ServingEngine(
            PARAMS, metrics=get_metrics(), log_writer=writer, fallback_release=fallback
        )
        self.engine.start()
        RUNTIME.install(self.engine, _batched(self.engine) if CFG.batching else None)

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.engine.close()


# what @bentoml.service made of the class (type checkers keep a decorated class's own type)
SERVICE = cast("bentoml.Service[FraudScorer]", FraudScorer)


def _batched(engine: ServingEngine) -> Score:
    """Requests' records through BentoML's adaptive batcher, one batch = one `engine.score_calls`.

    The batcher counts requests (not records) so it never splits one; a request larger than a batch is
    scored on its own. A request the batcher sheds (projected wait over max_latency_ms) is a 503."""

    def overloaded() -> list[ScoreResponse]:
        raise Overloaded("server overloaded: the request's projected wait exceeds serve.max_latency_ms")

    dispatcher: CorkDispatcher[ScoreCall, list[ScoreResponse]] = CorkDispatcher(
        max_latency_in_ms=CFG.max_latency_ms,
        max_batch_size=CFG.max_batch_size,
        fallback=overloaded,
        get_batch_size=lambda call: 1,
    )
    batch = dispatcher(engine.score_calls)  # type: ignore[arg-type]

    async def score(call: ScoreCall) -> list[ScoreResponse]:
        if len(call.records) > CFG.max_batch_size:
            return await engine.score_call(call)
        # the batcher raises the Exception a request's answer is (score_calls isolates failures)
        return cast("list[ScoreResponse]", await batch(call))

    return score


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


SERVICE.mount_asgi_app(APP, path="/")
SERVICE.add_asgi_middleware(
    GuardMiddleware,
    api_key_env=CFG.api_key_env,
    admin_key_env=CFG.admin_key_env,
    rate_limit_per_s=CFG.rate_limit_per_s,
    rate_limit_burst=CFG.rate_limit_burst,
    max_request_bytes=CFG.max_request_bytes,
    docs_public=CFG.docs_public,
    openapi=APP.openapi,
)
