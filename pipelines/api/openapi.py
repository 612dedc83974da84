"""The OpenAPI document, complete: FastAPI's, plus every status the service can answer, with its body.

FastAPI documents 200 and 422 of each route. The guard middleware (pipelines.serving.http) can also
answer 401 (key), 413 (size), 415 (content type), 429 (rate) on any API route; every route can answer
503 while starting or overloaded and 500 on an unexpected error; the BentoML shell adds the probes and
/metrics. All of them carry `ErrorBody` (bodies.py) and are added here, with the auth schemes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from pipelines.api.bodies import ErrorBody
from pipelines.api.oip import InferenceRequest

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_COMMON: dict[str, str] = {
    "401": "Missing or invalid API key.",
    "429": "Rate limit of the key exceeded (see Retry-After).",
    "500": "Unexpected error (logged with the request id).",
    "503": "Not ready yet, or overloaded (see Retry-After).",
}
_WITH_BODY: dict[str, str] = {
    "400": "The body could not be read (not UTF-8), or an Open Inference Protocol request is malformed.",
    "413": "Request body larger than serve.max_request_bytes.",
    "415": "Content-Type is not application/json.",
    "422": "The body failed validation: `detail` names each field.",
}
# the BentoML shell's own routes (open: probes and Prometheus carry no key)
_INFRA: dict[str, dict[str, Any]] = {
    "/livez": {"get": {"summary": "Liveness probe", "tags": ["health"]}},
    "/readyz": {"get": {"summary": "Readiness probe (a champion release is loaded)", "tags": ["health"]}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["health"]}},
}


# the statuses an operation can answer beyond FastAPI's, by (path, method): description per code
OperationCodes = Callable[[str, str], dict[str, str]]


def complete_openapi(
    app: FastAPI,
    models: Sequence[type[BaseModel]] = (ErrorBody, InferenceRequest),
    codes: OperationCodes | None = None,
    infra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The app's OpenAPI document with every status code and the security schemes (cached on the app).

    The defaults are the scoring service's; the ingestion service passes its own bodies (`models`: those a
    route reads or answers outside FastAPI's view), its statuses per operation and its shell's routes."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    doc["components"]["securitySchemes"] = {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            _complete_operation(path, method, op, (codes or scoring_codes)(path, method))
    for path, item in (_INFRA if infra is None else infra).items():
        doc["paths"].setdefault(path, _infra_item(item))
    app.openapi_schema = doc
    return doc


def scoring_codes(path: str, method: str) -> dict[str, str]:
    """The statuses a scoring-service operation can answer besides FastAPI's."""
    codes = dict(_COMMON)
    if method in ("post", "put", "patch"):
        codes.update(_WITH_BODY)
    if "{" in path or method == "post":
        codes["404"] = "No such model, version, alias, job or deployment (served)."
    if path.endswith(("/deploy", "/rollback", "/cancel")):
        codes["403"] = "Deploy and rollback need an admin key (serve.admin_key_env)."
        codes["409"] = "The state does not allow it (gate not passed, not live, already finished)."
    return codes


def _complete_operation(path: str, method: str, op: dict[str, Any], codes: dict[str, str]) -> None:
    responses = op.setdefault("responses", {})
    for code, text in codes.items():
        resp = responses.setdefault(code, {"description": text})
        if not _declared(resp):  # a body the route declared itself (an ErrorBody subclass) stays
            resp["content"] = {"application/json": {"schema": _ERROR_REF}}
    if "422" in responses and _declared(responses["422"]).endswith("/HTTPValidationError"):
        # FastAPI's HTTPValidationError: the service answers ErrorBody instead
        responses["422"]["content"] = {"application/json": {"schema": _ERROR_REF}}
    if not path.startswith("/health") and not path.startswith("/v2/health"):
        op["security"] = [{"apiKey": []}, {"bearer": []}]


def _declared(response: dict[str, Any]) -> str:
    """The $ref of a response's JSON body ('' when it has none)."""
    return str(response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", ""))


def _infra_item(item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for method, op in item.items():
        out[method] = {**op, "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}}}
    return out
