"""Scoring routes: POST /predict and /predict_batch (the first API, unchanged shapes), POST /v1/predict
(seed 000's shape), and GET /health/dependencies.

Every route validates its own body (strict, bounded) before anything joins a batch; /predict and
/v1/predict go through the adaptive batcher (`Runtime.score`), /predict_batch is scored on its own.
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' annotations at runtime, and
# the body types are local to `predict_router`
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter

from pipelines.api.bodies import ModelSelector, Prediction, Predictions
from pipelines.api.runtime import Runtime, request_id, runtime
from pipelines.serving import ScoreRequest, ScoreResponse
from pipelines.serving.engine import ScoreCall
from pipelines.serving.routing import Routing

# The scoring routes answer serialized bytes: FastAPI would validate the answers again against their
# response model (a third of a request's Python time), and they are built from validated data already.
# The decorators' response_model still documents them.
_ANSWERS = TypeAdapter(list[ScoreResponse])


def json_answer(content: bytes | str) -> Response:
    """A 200 JSON answer of already serialized content."""
    return Response(content=content, media_type="application/json")


def _records_body(request_model: type[ScoreRequest], max_records: int) -> type[BaseModel]:
    from pydantic import ConfigDict, create_model

    return create_model(
        "RecordsRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Events to score: `records`, one per event.",
        records=(list[request_model], Field(min_length=1, max_length=max_records)),  # type: ignore[valid-type]
    )


def predict_router(request_model: type[ScoreRequest], max_records: int) -> APIRouter:
    """/predict, /predict_batch and /v1/predict for this process's request model."""
    from pipelines.api.bodies import request_bodies

    records_body = _records_body(request_model, max_records)
    v1_body = request_bodies(request_model, max_records)
    router = APIRouter()

    @router.post("/predict", response_model=list[ScoreResponse], tags=["scoring"])
    async def predict(
        body: Annotated[records_body, Body()],  # type: ignore[valid-type]
        request: Request,
        rt: Annotated[Runtime, Depends(runtime)],
    ) -> Response:
        """Score events (one per request is typical; concurrent requests are batched together)."""
        answers = await rt.scorer()(ScoreCall(body.records, request_id=request_id(request)))  # type: ignore[attr-defined]
        return json_answer(_ANSWERS.dump_json(answers))

    @router.post("/predict_batch", response_model=list[ScoreResponse], tags=["scoring"])
    async def predict_batch(
        body: Annotated[records_body, Body()],  # type: ignore[valid-type]
        request: Request,
        rt: Annotated[Runtime, Depends(runtime)],
    ) -> Response:
        """Score up to serve.max_records events in one call (not merged with other requests)."""
        call = ScoreCall(body.records, request_id=request_id(request), source="api_batch")  # type: ignore[attr-defined]
        return json_answer(_ANSWERS.dump_json(await rt.ready_engine().score_call(call)))

    @router.post("/v1/predict", response_model=Prediction | Predictions, tags=["v1"])
    async def predict_v1(
        body: Annotated[v1_body, Body()],  # type: ignore[valid-type]
        request: Request,
        rt: Annotated[Runtime, Depends(runtime)],
    ) -> Response:
        """Score one event (`features`) or several (`instances`) with `model` (name, @alias or /version)."""
        engine = rt.ready_engine()
        arm = select_arm(ModelSelector.parse(body.model), engine.routing, engine.model_name)  # type: ignore[attr-defined]
        one = body.features is not None  # type: ignore[attr-defined]
        records = [body.features] if one else body.instances  # type: ignore[attr-defined]
        call = ScoreCall(records, arm=arm, request_id=request_id(request), source="v1")
        answers = await rt.scorer()(call)
        labels = rt.params.serve.labels
        out = [to_prediction(a, labels) for a in answers]
        return json_answer(
            (out[0] if one else Predictions.model_construct(predictions=out)).model_dump_json()
        )

    @router.get("/health/dependencies", tags=["health"])
    async def dependencies(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
        """Registry, online store (with its circuit breaker), cache and prediction log; 503 if not ok."""
        if rt.engine is None:
            return JSONResponse({"ready": False, "ok": False, "status": "starting"}, status_code=503)
        report: dict[str, Any] = await run_in_threadpool(rt.engine.health)
        report["status"] = "ok" if report["ok"] else ("degraded" if report["ready"] else "down")
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    return router


def select_arm(selector: ModelSelector, routing: Routing, model_name: str) -> str | None:
    """The arm a selector asks for (None: the canary routing decides); 404 for what is not served."""
    if selector.name != model_name:
        raise HTTPException(404, f"model {selector.name!r} is not served here; served: {model_name!r}")
    served = {rel.version: arm for arm, rel in routing.arms.items()}
    if selector.alias is not None:
        if selector.alias not in routing.arms:  # the arms are the served aliases: champion, challenger
            raise HTTPException(
                404,
                f"alias {selector.alias!r} of {model_name!r} is not served; "
                f"served aliases: {sorted(routing.arms)}",
            )
        return selector.alias
    if selector.version is not None:
        if selector.version not in served:
            raise HTTPException(
                404, f"version {selector.version} of {model_name!r} is not served; served: {sorted(served)}"
            )
        return served[selector.version]
    return None


def to_prediction(r: ScoreResponse, labels: tuple[str, str]) -> Prediction:
    """seed 000's answer for one scored event (from a validated answer: not validated again)."""
    return Prediction.model_construct(
        prediction_id=r.prediction_id,
        event_id=r.event_id,
        entity_id=r.entity_id,
        prediction=r.score,
        label=labels[r.decision],
        decision=r.decision,
        confidence=r.score if r.decision else 1.0 - r.score,
        threshold=r.threshold,
        model_name=r.model_name,
        model_version=r.model_version,
        arm=r.arm,
        features_fresh=r.features_fresh,
        feature_source=r.feature_source,
        cached=r.cached,
        challenger_fallback=r.challenger_fallback,
        latency_ms=r.latency_ms,
    )
