"""The ingestion routes: POST /v1/ingest/events, /v1/labels, /v1/ingest/batch; GET /v1/ingest/stats and
/health/landing. Thin: the body goes to pipelines.ingestion (`Ingestion`), its answer comes back as 202.

Events and labels are read from the raw body by the suite-derived parsers (one object or a list, checked
whole); their schemas are put in the OpenAPI document by hand (`openapi_extra`), as FastAPI never sees
them. A batch is the file itself (Content-Type says its format, or ?format=) or a multipart form with a
`file` field.
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' annotations at runtime
import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from pipelines.api.ingest_bodies import BatchLanded, BatchRefusedBody, EventsLanded, IngestStats, LabelsLanded
from pipelines.api.runtime import request_id
from pipelines.ingestion.batch import CONTENT_TYPES, batch_format
from pipelines.ingestion.service import Ingestion

_REF = "#/components/schemas/"


async def ingestion(request: Request) -> Ingestion:
    """FastAPI dependency: the app's Ingestion (set by `build_ingest_app`)."""
    ing: Ingestion = request.app.state.ingestion
    return ing


def _accepted(answer: dict[str, Any], request: Request) -> JSONResponse:
    return JSONResponse({**answer, "request_id": request_id(request)}, status_code=202)


def _json_body(parser_schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": parser_schema}}}}


def ingest_router(ing: Ingestion) -> APIRouter:
    """The routes over `ing` (its parsers give the request bodies' schemas)."""
    router = APIRouter(tags=["ingest"])
    _event_routes(router, ing)
    _batch_route(router)
    _read_routes(router)
    return router


def _event_routes(router: APIRouter, ing: Ingestion) -> None:
    events_body = _json_body(ing.events.schema(_REF + ing.events.model.__name__))
    labels_body = _json_body(ing.labels.schema(_REF + ing.labels.model.__name__))

    @router.post("/v1/ingest/events", status_code=202, response_model=EventsLanded, openapi_extra=events_body)
    async def events(request: Request, ing: Annotated[Ingestion, Depends(ingestion)]) -> JSONResponse:
        """Land one event or a list (up to ingest_service.max_events), all or nothing.

        Checked against the GX suite's per-event rules (validate.suite) for the configured source's
        columns; a bad event is a 422 naming the field, and nothing of the request is stored. Durable
        before the 202; a retried event (same event_id) is stored once and reported in `duplicates`."""
        return _accepted(await ing.land_events(await request.body()), request)

    @router.post("/v1/labels", status_code=202, response_model=LabelsLanded, openapi_extra=labels_body)
    async def labels(request: Request, ing: Annotated[Ingestion, Depends(ingestion)]) -> JSONResponse:
        """Land one label or a list: the delayed ground truth ({event_id, label, labelled_at}).

        Idempotent by (event_id, labelled_at). A label for an event not landed yet is kept (`pending`) and
        joined when its event lands; the latest label (by labelled_at) is the one a raw partition gets."""
        return _accepted(await ing.land_labels(await request.body()), request)


_BATCH_TYPES = {t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(CONTENT_TYPES)}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **_BATCH_TYPES,
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _batch_route(router: APIRouter) -> None:
    @router.post(
        "/v1/ingest/batch",
        status_code=202,
        response_model=BatchLanded,
        responses={422: {"model": BatchRefusedBody, "description": "Refused whole: nothing landed."}},
        openapi_extra=_BATCH_BODY,
    )
    async def batch(
        request: Request,
        ing: Annotated[Ingestion, Depends(ingestion)],
        fmt: Annotated[
            Literal["csv", "parquet", "jsonl"] | None,
            Query(alias="format", description="The file's format when Content-Type does not say it."),
        ] = None,
        name: Annotated[
            str | None, Query(max_length=200, description="The file's name, for the record.")
        ] = None,
    ) -> JSONResponse:
        """Land a CSV / Parquet / JSON-lines file, validated as a whole with the GX suite.

        Columns as the configured source's log (ingest.source.columns; canonical names with the synthetic
        source). Accepted: every row lands in one transaction (202). Refused: 422 with the failed
        expectations, nothing landed, the file and its result kept under data/landing/quarantine/."""
        data, ctype, filename = await _upload(request)
        if not data:
            raise HTTPException(422, "empty upload: send the file as the body (or a multipart `file` field)")
        try:
            kind = batch_format(ctype, name or filename, fmt)
        except ValueError as err:
            raise HTTPException(415, str(err)) from None
        return _accepted(await ing.land_batch(data, kind, name or filename), request)


async def _upload(request: Request) -> tuple[bytes, str | None, str | None]:
    """(bytes, content type, file name) of the body, or of a multipart form's `file` field."""
    ctype = request.headers.get("content-type")
    if not (ctype or "").lower().startswith("multipart/form-data"):
        return await request.body(), ctype, None
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, "multipart upload without a `file` field")
    return await upload.read(), upload.content_type, upload.filename


def _read_routes(router: APIRouter) -> None:
    @router.get("/v1/ingest/stats", response_model=IngestStats)
    async def stats(
        ing: Annotated[Ingestion, Depends(ingestion)],
        start: Annotated[dt.date | None, Query(description="First date (event or arrival date).")] = None,
        end: Annotated[dt.date | None, Query(description="Date after the last (exclusive).")] = None,
    ) -> JSONResponse:
        """Per day: events landed / ingested / pending, labels arrived, uploads refused, the partition's
        quarantine and the last ingest run; the store's watermarks and the days waiting for a run."""
        if start is not None and end is not None and end <= start:
            raise HTTPException(422, f"end ({end}) must be after start ({start})")
        if not ing.ready:
            raise HTTPException(503, "the landing store is not open yet")
        return JSONResponse(await run_in_threadpool(ing.stats, start, end))

    @router.get("/health/landing", tags=["health"])
    async def landing(ing: Annotated[Ingestion, Depends(ingestion)]) -> JSONResponse:
        """Readiness of the landing store (its writer runs) and its watermarks; 503 when not ready."""
        report = await run_in_threadpool(ing.health)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)
