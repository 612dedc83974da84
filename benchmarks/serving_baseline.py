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

from pipelines.contract import CHAMPION, FEATURE_COLUMNS
from pipelines.engines.registry import open_registry, version_uri
from pipelines.serving import (
    OnlineFeatureReader,
    ScoreRequest,
    default_release_loader,
    request_frame,
    serving_params,
)

PARAMS = serving_params()
_name = PARAMS.register_.model_name
_mv = open_registry(PARAMS).get_version_by_alias(_name, CHAMPION)
if _mv is None:
    raise SystemExit(f"no {CHAMPION} for {_name!r} in {PARAMS.tracking_uri}")
VERSION = str(_mv.version)
THRESHOLD = float(_mv.tags["threshold"])
RELEASE = default_release_loader(PARAMS)(version_uri(_name, VERSION), _mv.tags.get("fingerprint"))
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
    feats = READER([r.entity_id for r in records])
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
