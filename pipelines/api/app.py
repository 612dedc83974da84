"""The public HTTP API as one FastAPI app: routes, error bodies, CORS, the OpenAPI document.

`build_app(params, runtime)` assembles the routers (scoring, models and deployments, batch jobs, the Open
Inference Protocol) over a `Runtime` the service shell fills in. Errors always answer `ErrorBody`
(`error`, per-field `detail`, `request_id`): a body that fails validation is a 422 naming the field,
logged at INFO without a traceback; only an unexpected error is a 500, logged at ERROR with its traceback
and the request id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from pipelines.api.openapi import complete_openapi
from pipelines.api.runtime import Overloaded, Runtime, request_id, service_version
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.serving import NotReady
from pipelines.serving.engine import ScoringError
from pipelines.serving.schema import request_model

log = logging.getLogger("sluice.api")


def build_app(params: Params, runtime: Runtime | None = None) -> FastAPI:
    """The API over `runtime` (a fresh, not-yet-ready one when None)."""
    from pipelines.api.jobs import jobs_router
    from pipelines.api.models import models_router
    from pipelines.api.oip_routes import oip_router
    from pipelines.api.predict import predict_router

    cfg = params.serve
    app = FastAPI(
        title=f"sluice scoring service: {params.register_.model_name}",
        version=service_version(),
        description=DESCRIPTION,
        # FastAPI's own docs page loads Swagger UI from a CDN (blank offline): /docs goes to the shell's
        # Swagger UI at /, served from the package, over the same document (/docs.json = /openapi.json)
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime or Runtime(params)
    req_model = request_model(cfg.limits)
    # the scoring routes first: Starlette tries routes in order, and they take nearly all the traffic
    app.include_router(predict_router(req_model, cfg.max_records))
    app.include_router(oip_router(req_model, cfg.max_records))
    app.include_router(models_router(req_model))
    app.include_router(jobs_router())
    allow_cors(app, cfg.cors_origins)
    error_handlers(app)
    app.openapi = lambda: complete_openapi(app)  # type: ignore[method-assign]
    app.add_api_route("/docs", lambda: RedirectResponse("/"), include_in_schema=False)
    return app


DESCRIPTION = """Online scoring of events with the model registry's champion (and canary challenger).

- **Auth**: `X-API-Key: <key>` or `Authorization: Bearer <key>` when keys are configured
  (serve.api_key_env); deploy and rollback need an admin key (serve.admin_key_env).
- **Errors**: every 4xx/5xx body is `{"error", "detail", "request_id"}`; a 422 names the field.
- **Tracing**: send `X-Request-ID` (or get one generated); it is echoed and written to the prediction log.
- **Protocols**: `/predict` (records), `/v1/*` (models, deployments, batch jobs), `/v2/*` (the Open
  Inference Protocol, KServe v2 REST).
"""


def allow_cors(app: FastAPI, origins: list[str]) -> None:
    """Browsers on `origins` may call the API (none: CORS off); the ingestion service's app too."""
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )


def _body(request: Request, error: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": error, "detail": detail, "request_id": request_id(request)}


def error_handlers(app: FastAPI) -> None:
    """ErrorBody for every failure; 4xx at INFO (no traceback), unexpected errors at ERROR (the
    ingestion service's app installs them too)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        where = ", ".join(".".join(str(p) for p in d["loc"]) + f": {d['msg']}" for d in detail[:5])
        log.info("422 %s %s: %s", request.method, request.url.path, where)
        return JSONResponse(_body(request, f"invalid request: {where}", detail), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        log.info("%d %s %s: %s", exc.status_code, request.method, request.url.path, exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return JSONResponse(_body(request, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return JSONResponse(_body(request, str(exc)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse(_body(request, str(exc)), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(ScoringError)
    async def scoring_failed(request: Request, exc: ScoringError) -> JSONResponse:
        # logged once with its traceback where it happened (ServingEngine), answered here
        return JSONResponse(_body(request, f"{exc}; see the server log"), status_code=500)

    @app.exception_handler(StageError)
    async def refused(request: Request, exc: StageError) -> JSONResponse:
        # the ops layer's refusals (a job or a deployment that cannot be done): the caller's to fix
        status = _status_of(exc)
        log.info("%d %s %s: %s", status, request.method, request.url.path, exc)
        field = getattr(exc, "field", None)
        detail = [{"loc": ["body", field], "msg": str(exc), "type": type(exc).__name__}] if field else None
        return JSONResponse(_body(request, str(exc), detail), status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "500 %s %s (request %s)", request.method, request.url.path, request_id(request), exc_info=exc
        )
        return JSONResponse(
            _body(request, f"internal error ({type(exc).__name__}); see the server log"), status_code=500
        )


def _allowed_methods(app: FastAPI, scope: Any) -> list[str]:
    """Every method some route serves at the request's path (the Allow header of a 405)."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**scope, "method": next(iter(route.methods))})
            if match == Match.FULL:
                methods |= route.methods
    return sorted(methods)


def _status_of(exc: StageError) -> int:
    """The status the ops layer's error carries (jobs: `http_status`, deployments: `status_code`), else
    422: a request that cannot be done."""
    suggested = getattr(exc, "http_status", None) or getattr(exc, "status_code", None)
    return suggested if isinstance(suggested, int) and 400 <= suggested < 500 else 422
