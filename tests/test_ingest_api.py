"""The ingestion HTTP API (FastAPI app behind the guard middleware, as the BentoML shell wires it), called
in-process: answers, refusals naming the field, uploads, security, the OpenAPI document, and bad input
mixed into concurrent valid traffic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from pipelines.api.ingest_app import build_ingest_app
from pipelines.config import Params
from pipelines.contract import CANONICAL_COLUMNS
from pipelines.ingestion import store
from pipelines.ingestion.metrics import IngestMetrics
from pipelines.ingestion.service import Ingestion
from pipelines.serving import GuardMiddleware
from tests.conftest import make_project

pytestmark = pytest.mark.integration
KEY = "ingest-test-key"
AUTH = {"X-API-Key": KEY}
LIMITS = {"max_events": 50, "max_request_bytes": 20_000, "max_batch_bytes": 400_000}


def guarded(params: Params, app: Any, **kw: Any) -> GuardMiddleware:
    """The guard as bentos/ingest_service wires it (keys given here instead of from the environment)."""
    cfg = params.ingest_service
    return GuardMiddleware(
        app,
        api_keys=[KEY],
        rate_limit_per_s=kw.get("rate", cfg.rate_limit_per_s),
        rate_limit_burst=kw.get("burst", cfg.rate_limit_burst),
        max_request_bytes=cfg.max_request_bytes,
        uploads={"/v1/ingest/batch": cfg.max_batch_bytes},
        openapi=app.openapi,
    )


class World:
    def __init__(self, base: Path) -> None:
        self.params = make_project(base / "project", {"ingest_service": LIMITS})
        self.metrics = IngestMetrics(registry=CollectorRegistry())
        self.ingestion = Ingestion(self.params, metrics=self.metrics)
        self.ingestion.start()
        self.app = build_ingest_app(self.params, self.ingestion)
        self.asgi = guarded(self.params, self.app)

    def stored(self) -> set[str]:
        conn = store.connect(self.ingestion.store_path, create=False)
        try:
            return {r[0] for r in conn.execute("SELECT event_id FROM events")}
        finally:
            conn.close()

    def count(self, route: str, outcome: str) -> float:
        return self.metrics.events.labels(route, outcome)._value.get()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("ingest_api"))
    yield w
    w.ingestion.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.asgi, raise_server_exceptions=False) as c:
        yield c


def event(i: int | str, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"api-{i}",
        "entity_id": "card_7",
        "event_timestamp": "2026-01-03T09:30:00Z",
        "amount": 25.0,
        **kw,
    }


def test_events_are_landed_and_answered_202(client: TestClient, world: World) -> None:
    one = client.post("/v1/ingest/events", json=event(1), headers=AUTH | {"X-Request-ID": "trace-1"})
    assert one.status_code == 202 and one.headers["x-request-id"] == "trace-1"
    assert one.json() == {"event_ids": ["api-1"], "landed": 1, "duplicates": [], "request_id": "trace-1"}
    many = client.post("/v1/ingest/events", json=[event(1), event(2), event(3, merchant="m")], headers=AUTH)
    assert many.status_code == 202
    assert (many.json()["landed"], many.json()["duplicates"]) == (2, ["api-1"])
    assert {"api-1", "api-2", "api-3"} <= world.stored()


def test_a_bad_event_is_a_422_naming_the_field_and_nothing_of_it_is_stored(
    client: TestClient, world: World
) -> None:
    batch = [event("ok-1"), event("bad-1", amount=-5.0), event("ok-2", label=7)]
    answer = client.post("/v1/ingest/events", json=batch, headers=AUTH)
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == [
        {
            "loc": ["body", 1, "amount"],
            "msg": "must be >= 0 (expect_column_values_to_be_between)",
            "type": "expectation",
        },
        {
            "loc": ["body", 2, "label"],
            "msg": "must be one of [0, 1] (expect_column_values_to_be_in_set)",
            "type": "expectation",
        },
    ]
    assert body["error"].startswith("invalid request: body.1.amount: must be >= 0") and body["request_id"]
    assert not {"api-ok-1", "api-bad-1", "api-ok-2"} & world.stored()  # all or nothing
    assert (
        client.post(
            "/v1/ingest/events", content=b"[{", headers=AUTH | {"Content-Type": "application/json"}
        ).status_code
        == 422
    )
    too_many = client.post("/v1/ingest/events", json=[event(f"n{i}") for i in range(51)], headers=AUTH)
    assert too_many.status_code == 422 and "at most 50" in too_many.json()["error"]


def test_labels_are_landed_and_wait_for_their_event(client: TestClient) -> None:
    label = {"event_id": "api-later", "label": 1, "labelled_at": "2026-01-09T00:00:00Z"}
    answer = client.post("/v1/labels", json=[label, label | {"event_id": "api-1"}], headers=AUTH)
    assert answer.status_code == 202
    assert (answer.json()["landed"], answer.json()["pending"]) == (2, ["api-later"])
    bad = client.post("/v1/labels", json=label | {"label": "yes"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "label"]


def test_batches_land_whole_or_are_refused_with_their_failed_expectations(
    client: TestClient, world: World
) -> None:
    rows = _canonical_csv_rows()
    ok = client.post(
        "/v1/ingest/batch?name=day.csv", content=rows, headers=AUTH | {"Content-Type": "text/csv"}
    )
    assert ok.status_code == 202, ok.text
    assert (ok.json()["rows"], ok.json()["landed"], ok.json()["name"]) == (3, 3, "day.csv")
    form = client.post("/v1/ingest/batch", files={"file": ("again.csv", rows, "text/csv")}, headers=AUTH)
    assert form.status_code == 202 and form.json()["duplicates"] == 3
    bad = client.post(
        "/v1/ingest/batch",
        content=rows.replace(b",12.5,", b",-12.5,", 1),
        headers=AUTH | {"Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    body = bad.json()
    assert body["detail"][0]["loc"] == ["body", "amount"] and body["detail"][0]["unexpected_count"] == 1
    assert (world.params.root / body["quarantine"] / "validation_result.json").is_file() and body["batch_id"]
    unknown = client.post("/v1/ingest/batch", content=rows, headers=AUTH | {"Content-Type": "image/png"})
    assert unknown.status_code == 415 and "format" in unknown.json()["error"]
    assert (
        client.post("/v1/ingest/batch", content=b"", headers=AUTH | {"Content-Type": "text/csv"}).status_code
        == 422
    )


def _canonical_csv_rows() -> bytes:
    """Three events in canonical columns (the synthetic source's batch layout)."""
    header = ",".join(CANONICAL_COLUMNS)
    rows = [
        f"b-{i},card_{i},2026-01-04T10:0{i}:00Z,12.5,m,grocery_pos,0,40.0,-73.0,40.1,-73.1" for i in range(3)
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def test_the_guard_applies_keys_limits_and_content_types(client: TestClient, world: World) -> None:
    assert client.post("/v1/ingest/events", json=event("k")).status_code == 401
    assert (
        client.post(
            "/v1/ingest/events", content=b"{}", headers=AUTH | {"Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    big = [event(f"big-{i}", merchant="x" * 400) for i in range(50)]  # ~25 kB > max_request_bytes
    assert client.post("/v1/ingest/events", json=big, headers=AUTH).status_code == 413
    # the upload route has its own, larger, limit
    assert (
        client.post(
            "/v1/ingest/batch", content=b"x" * 500_000, headers=AUTH | {"Content-Type": "text/csv"}
        ).status_code
        == 413
    )
    slow = guarded(world.params, world.app, rate=0.001, burst=2)
    with TestClient(slow, raise_server_exceptions=False) as limited:
        codes = [limited.get("/v1/ingest/stats", headers=AUTH).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_stats_and_readiness(client: TestClient) -> None:
    stats = client.get("/v1/ingest/stats", params={"start": "2026-01-01", "end": "2026-01-31"}, headers=AUTH)
    assert stats.status_code == 200
    days = {d["date"]: d for d in stats.json()["days"]}
    assert days["2026-01-03"]["events_landed"] >= 3 and days["2026-01-03"]["events_pending"] >= 3
    assert stats.json()["watermarks"]["events_seq"] >= 3 and "2026-01-03" in stats.json()["pending_days"]
    assert (
        client.get(
            "/v1/ingest/stats", params={"start": "2026-01-05", "end": "2026-01-01"}, headers=AUTH
        ).status_code
        == 422
    )
    health = client.get("/health/landing")  # open: a probe carries no key
    assert health.status_code == 200 and health.json()["ready"] is True


def test_a_service_not_started_answers_503(world: World, tmp_path: Path) -> None:
    """Failure case: the landing store is not open yet -> 503 with Retry-After, never a 500."""
    idle = Ingestion(world.params)
    with TestClient(
        guarded(world.params, build_ingest_app(world.params, idle)), raise_server_exceptions=False
    ) as c:
        answer = c.post("/v1/ingest/events", json=event("idle"), headers=AUTH)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert c.get("/health/landing").status_code == 503


def test_the_openapi_document_is_complete(client: TestClient) -> None:
    doc = client.get("/docs.json").json()
    schemas = doc["components"]["schemas"]
    assert {"IngestEvent", "IngestLabel", "ErrorBody", "BatchRefusedBody", "IngestStats"} <= set(schemas)
    assert schemas["IngestEvent"]["properties"]["amount"]["maximum"] == 1_000_000
    events = doc["paths"]["/v1/ingest/events"]["post"]
    assert events["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0] == {
        "$ref": "#/components/schemas/IngestEvent"
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            if path in ("/livez", "/readyz", "/metrics"):
                continue
            assert {"401", "429", "500", "503"} <= codes, (path, method)
            if method == "post":
                assert {"202", "400", "413", "415", "422"} <= codes, (path, method)
    refused = doc["paths"]["/v1/ingest/batch"]["post"]["responses"]["422"]["content"]["application/json"]
    assert refused["schema"] == {"$ref": "#/components/schemas/BatchRefusedBody"}
    assert "text/csv" in doc["paths"]["/v1/ingest/batch"]["post"]["requestBody"]["content"]


def test_bad_input_mixed_into_concurrent_valid_traffic(world: World) -> None:
    """200 valid events and 50 bad ones, sent concurrently: every valid one 202 and landed once, every bad one
    422 and not stored; the counters agree."""
    accepted0, refused0 = world.count("events", "accepted"), world.count("events", "refused")
    valid = [event(f"mix-ok-{i}", amount=float(i)) for i in range(200)]
    bad_fields: list[dict[str, Any]] = [
        {"amount": -1.0},
        {"amount": "12.5"},
        {"label": 3},
        {"latitude": 1000.0},
        {"event_timestamp": "not a time"},
    ]
    bad = [event(f"mix-bad-{i}") | bad_fields[i % 5] for i in range(50)]

    async def send() -> list[tuple[int, int]]:
        transport = httpx.ASGITransport(app=world.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", headers=AUTH) as c:

            async def one(payload: dict[str, Any], want: int) -> tuple[int, int]:
                return (
                    await c.post(
                        "/v1/ingest/events",
                        content=json.dumps(payload),
                        headers={"Content-Type": "application/json"},
                    )
                ).status_code, want

            jobs = [one(p, 202) for p in valid] + [one(p, 422) for p in bad]
            return await asyncio.gather(*jobs[::2], *jobs[1::2])

    codes = asyncio.run(send())
    assert [got for got, _ in codes] == [want for _, want in codes]
    stored = world.stored()
    assert {e["event_id"] for e in valid} <= stored and not {e["event_id"] for e in bad} & stored
    assert world.count("events", "accepted") - accepted0 == 200
    assert world.count("events", "refused") - refused0 == 50


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": ""}, "event_id"),  # an empty id is no id (the suite's value-length expectation)
        ({"entity_id": ""}, "entity_id"),
        ({"event_timestamp": "0001-01-01T02:01:00+12:04"}, "event_timestamp"),  # before UTC's year 1
        ({"event_timestamp": "0144-12-07T14:19:49Z"}, "event_timestamp"),  # before the epoch
        ({"event_timestamp": "9999-12-31T23:00:00-05:00"}, "event_timestamp"),  # after UTC's year 9999
        ({"event_timestamp": "2999-01-01T00:00:00Z"}, "event_timestamp"),  # in the future
    ],
)
def test_fuzzed_events_are_refused_naming_the_field(
    client: TestClient, world: World, change: dict[str, Any], field: str
) -> None:
    """What schemathesis found: empty ids landed, a year-0001 timestamp with an offset was a 500."""
    body = event("fuzz-" + field) | change
    response = client.post("/v1/ingest/events", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert [d["loc"][-1] for d in response.json()["detail"]] == [field]
    assert body["event_id"] not in world.stored()


def test_out_of_range_label_time_is_a_422_not_a_500(client: TestClient) -> None:
    label = {"event_id": "e-1", "label": 1, "labelled_at": "0001-01-01T02:01:00+12:04"}
    response = client.post("/v1/labels", json=label, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == "labelled_at"


def test_string_fields_document_the_integer_ids_they_take(client: TestClient) -> None:
    schema = client.get("/docs.json").json()["components"]["schemas"]
    entity = schema["IngestEvent"]["properties"]["entity_id"]
    assert {"type": "integer"} in entity["anyOf"] and {"type": "string"} in entity["anyOf"]
    assert entity["minLength"] == 1
