"""The Open Inference Protocol (KServe v2 REST) on the same scoring path as /predict.

GET /v2, /v2/health/live|ready, /v2/models/{name}[/versions/{v}][/ready], POST .../infer. One input
tensor per event field (pipelines.api.oip); the records go through the adaptive batcher like any other
request. A model name without a version is routed like /predict (the canary split); with a version, that
served release answers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic_core import to_json

from pipelines.api import oip
from pipelines.api.bodies import ModelSelector
from pipelines.api.predict import json_answer, select_arm
from pipelines.api.runtime import Runtime, request_id, runtime, service_version
from pipelines.serving.engine import ScoreCall
from pipelines.serving.schema import ScoreRequest

NAME = Path(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
VERSION = Path(pattern=r"^[0-9]{1,12}$")


def oip_router(request_model: type[ScoreRequest], max_records: int) -> APIRouter:
    """The v2 routes for this process's request model."""
    router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
    _health_routes(router)
    _metadata_routes(router, request_model)
    _infer_routes(router, request_model, max_records)
    return router


def selector(rt: Runtime, name: str, version: str | None) -> str | None:
    """The arm serving `name` (and `version`): 404 when that is not served."""
    engine = rt.ready_engine()
    return select_arm(ModelSelector(name, version=version), engine.routing, engine.model_name)


def _health_routes(router: APIRouter) -> None:
    @router.get("", response_model=oip.ServerMetadata)
    async def server_metadata() -> oip.ServerMetadata:
        """The server's name, version and protocol extensions."""
        return oip.ServerMetadata(name="sluice", version=service_version(), extensions=[])

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        """Liveness: the process answers."""
        return {"live": True}

    @router.get("/health/ready")
    async def ready(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
        """Readiness: a champion release is loaded (503 otherwise)."""
        ok = rt.engine is not None and rt.engine.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _metadata_routes(router: APIRouter, request_model: type[ScoreRequest]) -> None:
    inputs = oip.input_metadata(request_model)

    async def metadata(rt: Runtime, name: str, version: str | None) -> oip.ModelMetadata:
        selector(rt, name, version)
        versions = sorted(r.version for r in rt.ready_engine().routing.arms.values())
        return oip.ModelMetadata(
            name=name,
            versions=[version] if version else versions,
            platform="sluice",
            inputs=inputs,
            outputs=oip.output_metadata(),
        )

    @router.get("/models/{name}", response_model=oip.ModelMetadata)
    async def model_metadata(
        name: Annotated[str, NAME], rt: Annotated[Runtime, Depends(runtime)]
    ) -> oip.ModelMetadata:
        """The model's served versions and its input and output tensors."""
        return await metadata(rt, name, None)

    @router.get("/models/{name}/versions/{version}", response_model=oip.ModelMetadata)
    async def version_metadata(
        name: Annotated[str, NAME], version: Annotated[str, VERSION], rt: Annotated[Runtime, Depends(runtime)]
    ) -> oip.ModelMetadata:
        """One served version's tensors."""
        return await metadata(rt, name, version)

    @router.get("/models/{name}/ready")
    async def model_ready(name: Annotated[str, NAME], rt: Annotated[Runtime, Depends(runtime)]) -> dict:
        """Whether the model can answer now (404 if not served)."""
        selector(rt, name, None)
        return {"name": name, "ready": True}

    @router.get("/models/{name}/versions/{version}/ready")
    async def version_ready(
        name: Annotated[str, NAME], version: Annotated[str, VERSION], rt: Annotated[Runtime, Depends(runtime)]
    ) -> dict:
        """Whether this version is served now (404 if not)."""
        selector(rt, name, version)
        return {"name": name, "version": version, "ready": True}


# the infer routes read their body themselves (pydantic's JSON parser: 2.5x faster than FastAPI's json +
# validate on these tensor bodies); the document still shows it
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    }
}


async def read_request(request: Request) -> oip.InferenceRequest:
    """The inference request in the body; 400 naming the tensor (oip.parse_request) when it is not one."""
    body = await request.body()
    try:
        return oip.InferenceRequest.model_validate_json(body)
    except ValueError:
        pass  # bad JSON, a bare NaN, a wrong shape: the codec's own reading names the place
    header = request.headers.get("inference-header-content-length")
    try:
        return oip.parse_request(body, int(header) if header and header.isdigit() else None)
    except oip.OIPError as err:
        raise HTTPException(err.status, err.message) from None


def _infer_routes(router: APIRouter, request_model: type[ScoreRequest], max_records: int) -> None:
    async def infer(rt: Runtime, request: Request, name: str, version: str | None) -> Response:
        arm = selector(rt, name, version)
        body = await read_request(request)
        try:
            records = oip.records_from_request(body, request_model, max_records)
        except oip.OIPError as err:
            raise HTTPException(err.status, err.message) from None
        answers = await rt.scorer()(ScoreCall(records, arm=arm, request_id=request_id(request), source="v2"))
        try:
            doc = oip.response_document(answers, name, body.outputs, rt.params.serve.labels, body.id)
        except oip.OIPError as err:
            raise HTTPException(err.status, err.message) from None
        return json_answer(to_json(doc))

    @router.post("/models/{name}/infer", response_model=oip.InferenceResponse, openapi_extra=REQUEST_BODY)
    async def infer_model(
        name: Annotated[str, NAME], request: Request, rt: Annotated[Runtime, Depends(runtime)]
    ) -> Response:
        """Score events given as named input tensors (one per field); the canary routing picks the release."""
        return await infer(rt, request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        response_model=oip.InferenceResponse,
        openapi_extra=REQUEST_BODY,
    )
    async def infer_version(
        name: Annotated[str, NAME],
        version: Annotated[str, VERSION],
        request: Request,
        rt: Annotated[Runtime, Depends(runtime)],
    ) -> Response:
        """Score events with one served version."""
        return await infer(rt, request, name, version)
