"""ingest_service: the BentoML service that lands events and labels. A shell: the routes are
pipelines.api.ingest_app (FastAPI), the checks and the landing store pipelines.ingestion; BentoML runs the
workers, the probes and /metrics. Scaled apart from the scoring service (bentos/fraud_scorer).

Each worker opens the landing store (ingest.landing.store) and its group-commit writer; a request is
answered 202 only once its commit is durable. Params come from $SLUICE_PARAMS (default: the project's
params.yaml), read once at import because the service's decorator arguments come from them.
Routes: the OpenAPI document at /docs.json (Swagger UI at /, /docs).
"""

from __future__ import annotations

import warnings
from typing import cast

import bentoml

from pipelines.api.ingest_app import build_ingest_app
from pipelines.ingestion.metrics import get_ingest_metrics
from pipelines.ingestion.service import Ingestion
from pipelines.serving import GuardMiddleware, configure_service_logging, serving_params

# pydantic >= 2.11 formats a deprecation warning when BentoML reads `model_fields` on an instance
warnings.filterwarnings("ignore", message=r"Accessing the 'model_fields' attribute on the instance")

PARAMS = serving_params()
CFG = PARAMS.ingest_service
INGESTION = Ingestion(PARAMS)
APP = build_ingest_app(PARAMS, INGESTION)
BATCH_ROUTE = "/v1/ingest/batch"


@bentoml.service(
    name="ingest_service",
    workers=CFG.workers,
    resources={"cpu": str(CFG.workers)},
    # an upload is validated whole and landed in one transaction: give it time
    traffic={"timeout": 600},
    http={"host": CFG.host, "port": CFG.port},
    # BentoML's access log is replaced by the guard middleware's JSON line (key id, request id)
    logging={"access": {"enabled": False}},
    # no OpenTelemetry span per request (BentoML creates them even with no exporter set)
    tracing={"excluded_urls": ["/v1/ingest", "/v1/labels", "/readyz", "/livez", "/metrics", "/health"]},
    labels={"owner": "sluice", "role": "ingestion"},
)
class IngestService:
    """Lands events, labels and batch uploads, checked by the project's GX suite."""

    def __init__(self) -> None:
        configure_service_logging()
        INGESTION.metrics = get_ingest_metrics()  # in the worker: Prometheus' multiprocess dir is set
        INGESTION.start()

    def __is_ready__(self) -> bool:
        return INGESTION.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        INGESTION.close()  # commits what is queued


# what @bentoml.service made of the class (type checkers keep a decorated class's own type)
SERVICE = cast("bentoml.Service[IngestService]", IngestService)


SERVICE.mount_asgi_app(APP, path="/")
SERVICE.add_asgi_middleware(
    GuardMiddleware,
    api_key_env=CFG.api_key_env,
    rate_limit_per_s=CFG.rate_limit_per_s,
    rate_limit_burst=CFG.rate_limit_burst,
    max_request_bytes=CFG.max_request_bytes,
    uploads={BATCH_ROUTE: CFG.max_batch_bytes},
    docs_public=CFG.docs_public,
    openapi=APP.openapi,
)
