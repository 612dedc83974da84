"""The ingestion service's HTTP API as one FastAPI app (mounted by bentos/ingest_service).

`build_ingest_app(params, ingestion)` assembles the ingestion routes (ingest_routes.py) over an `Ingestion`
(pipelines.ingestion.service) that the service shell starts in its worker. Errors answer the scoring API's
`ErrorBody` through the same handlers (app.py `error_handlers`): a body that breaks the suite's rules is
a 422 naming each field; a refused upload a 422 with its failed expectations, batch id and quarantine; the
landing store starting, overloaded or unavailable a 503 with Retry-After (retrying is safe: idempotent).
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from pipelines.api.app import allow_cors, error_handlers
from pipelines.api.bodies import ErrorBody
from pipelines.api.ingest_bodies import BatchRefusedBody
from pipelines.api.ingest_routes import ingest_router
from pipelines.api.openapi import complete_openapi
from pipelines.api.runtime import request_id, service_version
from pipelines.config import Params
from pipelines.ingestion.models import InvalidBody
from pipelines.ingestion.service import BatchRefused, Ingestion
from pipelines.ingestion.writer import CommitTimeout, Overloaded, WriterClosed

log = logging.getLogger("sluice.api")

DESCRIPTION = """Events and labels in over HTTP, landed durably before the answer, for the ingest stage.

- **Auth**: `X-API-Key: <key>` or `Authorization: Bearer <key>` when keys are configured
  (ingest_service.api_key_env); per-key rate limit; body limits (JSON routes, uploads).
- **Rules**: each event is checked by the GX suite's per-event rules (validate.suite), for the columns of the
  configured source (ingest.source); an upload by the whole suite. Bad input is a 422 naming the field
  (or the failed expectations); nothing of a refused request is stored.
- **Idempotent**: events by `event_id`, labels by (`event_id`, `labelled_at`): retry on any error.
- **Errors**: every 4xx/5xx body is `{"error", "detail", "request_id"}`.
"""

_COMMON = {
    "401": "Missing or invalid API key.",
    "429": "Rate limit of the key exceeded (see Retry-After).",
    "500": "Unexpected error (logged with the request id).",
    "503": "Starting, overloaded, or the landing store unavailable (see Retry-After); retrying is safe.",
}
_POST = {
    "400": "The body could not be read (bad Content-Length).",
    "413": "Body larger than ingest_service.max_request_bytes (max_batch_bytes for /v1/ingest/batch).",
    "415": "Content-Type is not application/json (for /v1/ingest/batch: not a batch format).",
    "422": "The body breaks the suite's rules: `detail` names each field (or failed expectation).",
}
_INFRA: dict[str, dict[str, Any]] = {
    "/livez": {"get": {"summary": "Liveness probe", "tags": ["health"]}},
    "/readyz": {"get": {"summary": "Readiness probe (the landing store is open)", "tags": ["health"]}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["health"]}},
}


def ingest_codes(path: str, method: str) -> dict[str, str]:
    """The statuses an ingestion operation can answer besides FastAPI's."""
    return {**_COMMON, **(_POST if method == "post" else {})}


def build_ingest_app(params: Params, ingestion: Ingestion | None = None) -> FastAPI:
    """The ingestion API over `ingestion` (a new, not yet started one when None)."""
    ing = ingestion or Ingestion(params)
    app = FastAPI(
        title="sluice ingestion service",
        version=service_version(),
        description=DESCRIPTION,
        docs_url=None,  # Swagger UI from the BentoML shell at /, as the scoring service
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ingestion = ing
    app.include_router(ingest_router(ing))
    cfg = params.ingest_service
    allow_cors(app, cfg.cors_origins)
    error_handlers(app)
    _ingest_handlers(app)
    models = (ErrorBody, BatchRefusedBody, ing.events.model, ing.labels.model)
    app.openapi = lambda: complete_openapi(app, models, ingest_codes, _INFRA)  # type: ignore[method-assign]
    app.add_api_route("/docs", lambda: RedirectResponse("/"), include_in_schema=False)
    return app


def _ingest_handlers(app: FastAPI) -> None:
    """Refused bodies and uploads (422), the landing store not able to take a request now (503)."""
    invalid = app.exception_handlers[RequestValidationError]

    @app.exception_handler(InvalidBody)
    async def invalid_body(request: Request, exc: InvalidBody) -> Any:
        answer = invalid(request, RequestValidationError(exc.errors))
        return await answer if inspect.isawaitable(answer) else answer

    @app.exception_handler(BatchRefused)
    async def refused(request: Request, exc: BatchRefused) -> JSONResponse:
        log.info("422 %s %s: %s", request.method, request.url.path, exc)
        detail = [
            {"loc": ["body", f["column"]] if f.get("column") else ["body"], "msg": _failure(f), **f}
            for f in exc.batch.failed
        ]
        body = {
            "error": str(exc),
            "detail": detail,
            "request_id": request_id(request),
            "batch_id": exc.batch.batch_id,
            "quarantine": exc.quarantine,
        }
        return JSONResponse(body, status_code=422)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, sqlite3.Error):  # the store itself failed: worth a traceback
            log.error("503 %s %s: landing store error", request.method, request.url.path, exc_info=exc)
        error = f"{exc}; retry (landing is idempotent)"
        body = {"error": error, "detail": None, "request_id": request_id(request)}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    for exc_type in (WriterClosed, Overloaded, CommitTimeout, sqlite3.OperationalError):
        app.add_exception_handler(exc_type, unavailable)


def _failure(f: dict[str, Any]) -> str:
    """A failed expectation in words: its type, and what GX observed."""
    if f.get("error"):
        return str(f["error"])
    if "unexpected_count" in f:
        share = f" ({f['unexpected_percent']:.3g}%)" if "unexpected_percent" in f else ""
        return f"{f['type']} failed on {f['unexpected_count']} row(s){share}"
    if "observed_value" in f:
        return f"{f['type']} failed: observed {f['observed_value']!r}"
    return f"{f['type']} failed"
