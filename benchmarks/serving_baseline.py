"""The baseline of benchmarks/serving.py: a plain sync FastAPI app scoring one request at a time.

The seeds' design: one `def` endpoint (FastAPI runs it in its thread pool), per request one Feast online
lookup (one FeatureStore per process, like the service), the request frame, `Release.score` of the
registry's champion, a JSON answer. No batching, cache, prediction log, metrics, auth or gc tuning.

Run: SLUICE_PARAMS=<project>/params.yaml uvicorn benchmarks.serving_baseline:app --port 3100
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from pipelines.artifacts import resolve_version
from pipelines.contract import CHAMPION, FEATURE_COLUMNS
from pipelines.engines.feast_store import OnlineFeatureReader
from pipelines.engines.registry import open_registry
from pipelines.errors import StageError
from pipelines.serving import ScoreRequest, default_release_loader, request_frame, serving_params

PARAMS = serving_params()
try:
    _champion = resolve_version(
        open_registry(PARAMS), PARAMS.register_.model_name, alias=CHAMPION, require_tags=("threshold",)
    )
except StageError as err:
    raise SystemExit(f"{err} ({PARAMS.tracking_uri})") from None
VERSION = _champion.version
THRESHOLD = float(_champion.tags["threshold"])
RELEASE = default_release_loader(PARAMS)(_champion)
READER = OnlineFeatureReader(PARAMS)
READER(["__warmup__"])

app = FastAPI()


class Body(BaseModel):
    records: list[ScoreRequest]  # the service's request body: {"records": [...]}


@app.get("/readyz")
def readyz() -> dict[str, bool]:
    return {"ready": True}


@app.post("/predict")
def predict(body: Body) -> list[dict[str, Any]]:
    records = body.records
    now = dt.datetime.now(dt.UTC)
    feats = READER([r.entity_id for r in records]).values
    scores = RELEASE.score(request_frame(records, feats, FEATURE_COLUMNS, now))
    return [
        {
            "prediction_id": uuid.uuid4().hex,
            "entity_id": r.entity_id,
            "score": float(s),
            "decision": int(s >= THRESHOLD),
            "threshold": THRESHOLD,
            "model_version": VERSION,
        }
        for r, s in zip(records, scores, strict=True)
    ]
