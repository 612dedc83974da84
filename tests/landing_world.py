"""Events and labels posted over HTTP to the ingestion API, in-process (Starlette's TestClient over the same
FastAPI app the BentoML service mounts), for the landing DAG and end-to-end tests.

`post` takes a params.yaml path so the Airflow test driver can call it between DAG runs (a `call` step).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipelines.config import Params, load_params
from pipelines.sections import SyntheticParams

# what the test producer's events look like: the tiny world's cards, another seed (other amounts, times)
POSTED_SEED = 97


def http_events(params: Params, day: dt.date, n: int, prefix: str = "http") -> list[dict[str, Any]]:
    """`n` events of `day` for the project's cards, as a producer posts them: ids `<prefix>-<day>-<i>`, no
    label (it comes later, POST /v1/labels)."""
    return http_world(params, [day], n, prefix)[0]


def http_world(
    params: Params, days: list[dt.date], n: int, prefix: str = "http", label_after_h: float = 30.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`n` events a day for the project's cards (the generator with another seed: its planted frauds
    too), without their labels; and those labels, each known `label_after_h` hours after its event."""
    from benchmarks.ingest_world import as_json_events
    from pipelines.sources.synthetic import generate

    cfg: SyntheticParams = params.ingest.synthetic.model_copy(update={"seed": POSTED_SEED})
    events: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for day in days:
        frame = generate(cfg, day, day + dt.timedelta(days=1)).head(n).copy()
        frame["event_id"] = [f"{prefix}-{day.isoformat()}-{i:03d}" for i in range(len(frame))]
        posted = as_json_events(frame, with_label=False)
        events += posted
        labels += [label(e, int(v), label_after_h) for e, v in zip(posted, frame["label"], strict=True)]
    return events, labels


def label(event: dict[str, Any], value: int, hours: float) -> dict[str, Any]:
    """The label of a posted event, known `hours` after the event (a chargeback comes days later)."""
    at = dt.datetime.fromisoformat(event["event_timestamp"]) + dt.timedelta(hours=hours)
    return {"event_id": event["event_id"], "label": value, "labelled_at": at.isoformat()}


def post(
    params_path: str, events: list[dict[str, Any]] | None = None, labels: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """POST the events (100 a request) then the labels to /v1/ingest/events and /v1/labels of the project's
    ingestion API; returns the statuses and how many landed. Any answer but 202 fails."""
    from starlette.testclient import TestClient

    from pipelines.api.ingest_app import build_ingest_app
    from pipelines.ingestion.service import Ingestion

    params = load_params(Path(params_path))
    ingestion = Ingestion(params)
    ingestion.start()
    answers: dict[str, Any] = {"events": 0, "labels": 0, "pending_labels": []}
    try:
        with TestClient(build_ingest_app(params, ingestion)) as client:
            for route, items in (("/v1/ingest/events", events or []), ("/v1/labels", labels or [])):
                for i in range(0, len(items), 100):
                    r = client.post(route, json=items[i : i + 100])
                    assert r.status_code == 202, f"{route}: {r.status_code} {r.text}"
                    key = "events" if route.endswith("events") else "labels"
                    answers[key] += r.json()["landed"]
                    answers["pending_labels"] += r.json().get("pending", [])
    finally:
        ingestion.close()
    return answers


def raw_digests(params_path: str) -> dict[str, str]:
    """sha256 of every raw partition file of the project (relative path -> digest)."""
    import hashlib

    raw = load_params(Path(params_path)).paths.raw
    return {
        str(f.relative_to(raw)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(raw.rglob("*.parquet"))
    }
