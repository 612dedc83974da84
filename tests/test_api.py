"""The public API in-process (the service's ASGI app on the served world): /v1 and /v2 shapes, strict
inputs, isolation of bad and failing requests inside one batch, request ids, the OpenAPI document,
admin routes, health while the online store's breaker is open.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.service_fixtures import ADMIN, AUTH, EXAMPLE, body, engine, record
from tests.serving_world import MODEL, World

pytestmark = pytest.mark.integration


def v1(features: dict[str, Any] | None = None, model: str = MODEL, **kw: Any) -> dict[str, Any]:
    return {"model": model, "features": features or record(), **kw}


# ---- /v1/predict -------------------------------------------------------------------------------------


def test_v1_predict_one_event_seed_shape(client: Any, world: World) -> None:
    resp = client.post("/v1/predict", json=v1(record("card_3", 77.0)), headers=AUTH)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model_name"] == MODEL and out["model_version"] == world.champion
    p, label = out["prediction"], out["label"]
    assert 0 <= p <= 1 and label == ("fraud" if p >= out["threshold"] else "legit")
    assert out["confidence"] == pytest.approx(p if out["decision"] else 1 - p)
    for key in ("prediction_id", "latency_ms", "arm", "features_fresh", "feature_source", "cached"):
        assert key in out


def test_v1_predict_instances_and_model_selectors(client: Any, world: World) -> None:
    events = [record(f"card_{i}", 20.0 + i) for i in range(5)]
    routed = client.post("/v1/predict", json={"model": MODEL, "instances": events}, headers=AUTH)
    assert routed.status_code == 200 and len(routed.json()["predictions"]) == 5
    pinned = {
        f"{MODEL}@champion": world.champion,
        f"{MODEL}@challenger": world.challenger,
        f"{MODEL}/{world.challenger}": world.challenger,
    }
    for selector, version in pinned.items():
        resp = client.post("/v1/predict", json={"model": selector, "instances": events}, headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert {o["model_version"] for o in resp.json()["predictions"]} == {version}
    for selector in ("other_model", f"{MODEL}/999", f"{MODEL}@previous"):
        resp = client.post("/v1/predict", json=v1(model=selector), headers=AUTH)
        assert resp.status_code == 404 and selector.split("@")[0].split("/")[0] in resp.json()["error"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (v1(record(amount="12.5")), "features.amount"),
        (v1(record(amount=True)), "features.amount"),
        (v1(record(amount=1e308)), "features.amount"),
        (v1(record(amount=-1.0)), "features.amount"),
        (v1(record(latitude=91.0)), "features.latitude"),
        (v1(record(timestamp="9999-01-01T00:00:00Z")), "features.timestamp"),
        (v1(record(timestamp="0001-01-01T00:00:00Z")), "features.timestamp"),
        (v1(record(timestamp=1767225600)), "features.timestamp"),
        (v1(record(colour="red")), "features.colour"),
        ({**v1(), "extra": 1}, "body.extra"),
        ({"model": MODEL}, "body"),
        ({"model": MODEL, "features": record(), "instances": [record()]}, "body"),
        ({"model": "bad model!", "features": record()}, "body.model"),
    ],
)
def test_strict_inputs_are_422_naming_the_field(client: Any, payload: dict[str, Any], field: str) -> None:
    resp = client.post("/v1/predict", json=payload, headers=AUTH)
    assert resp.status_code == 422, resp.text
    out = resp.json()
    assert field in out["error"] and out["request_id"] and out["detail"]


def test_json_routes_refuse_other_content_types_415(client: Any) -> None:
    raw = json.dumps(EXAMPLE).encode()
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        resp = client.post("/predict", content=raw, headers={**AUTH, **headers})
        assert resp.status_code == 415, (headers, resp.text)
    assert client.post(
        "/predict", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    ).is_success


def test_unknown_entity_is_not_fresh(client: Any, world: World) -> None:
    out = client.post("/v1/predict", json=v1(record("never_seen_card", 31.0)), headers=AUTH).json()
    assert out["features_fresh"] is False and out["feature_source"] == "new_entity"
    entity = str(world.events["entity_id"].iloc[0])  # materialized into the online store
    known = client.post("/v1/predict", json=v1(record(entity, 31.0)), headers=AUTH).json()
    assert known["features_fresh"] is True and known["feature_source"] == "online"


# ---- isolation -----------------------------------------------------------------------------------------


def test_bad_requests_mixed_into_concurrent_traffic_fail_alone(client: Any) -> None:
    bad = [
        v1(record(timestamp="9999-12-31T00:00:00Z")),
        v1(record(timestamp="0001-01-01T00:00:00Z")),
        v1(record(amount="1")),
        v1(record(amount=1e308)),
    ]
    jobs = [(v1(record(f"card_{i}", 100.0 + i)), 200) for i in range(40)] + [(b, 422) for b in bad * 3]

    def send(job: tuple[dict[str, Any], int]) -> tuple[int, int]:
        return client.post("/v1/predict", json=job[0], headers=AUTH).status_code, job[1]

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, jobs[::2] + jobs[1::2]))
    assert all(got == want for got, want in codes), codes


@contextlib.contextmanager
def poisoned_champion(client: Any, poison: float) -> Iterator[None]:
    """The champion release fails any frame holding an event of amount `poison` (an unexpected error)."""
    release = engine(client).routing.champion.release
    original = release.score

    def score(frame: Any) -> Any:
        if (frame["amount"] == poison).any():
            raise RuntimeError("poisoned event")
        return original(frame)

    release.score = score
    try:
        yield
    finally:
        del release.score  # back to the class's method


def test_a_failing_request_never_fails_the_others_in_its_batch(client: Any, world: World) -> None:
    metrics = engine(client).metrics
    errors = metrics.errors.labels(world.champion, "champion", "RuntimeError")
    before = errors._value.get()
    poison = 666.25
    jobs = [(record(f"card_{i}", 300.0 + i), 200) for i in range(30)]
    jobs[7] = (record("card_7", poison), 500)
    jobs[21] = (record("card_21", poison), 500)

    def send(job: tuple[dict[str, Any], int]) -> tuple[int, int]:
        return client.post("/predict", json=body(job[0]), headers=AUTH).status_code, job[1]

    with poisoned_champion(client, poison), ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, jobs))
    assert [got for got, _ in codes] == [want for _, want in codes]
    assert errors._value.get() - before == 2  # each failed request counted once, per version/arm


# ---- ops hygiene ----------------------------------------------------------------------------------------


def test_request_id_echoed_generated_and_logged(client: Any, world: World) -> None:
    from pipelines.artifacts import read_prediction_log
    from pipelines.serving.log import wait_flushed

    mine = "client-req-0001"
    resp = client.post(
        "/v1/predict", json=v1(record("card_9", 4242.0)), headers={**AUTH, "X-Request-ID": mine}
    )
    assert resp.headers["x-request-id"] == mine
    generated = client.post("/predict", json=EXAMPLE, headers={**AUTH, "X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["x-request-id"]) == 32  # a malformed id is replaced
    refused = client.post("/predict", json=EXAMPLE)
    assert refused.status_code == 401 and refused.json()["request_id"] == refused.headers["x-request-id"]
    wait_flushed(engine(client).log_writer)
    log = read_prediction_log(world.params.paths.prediction_log)
    assert mine in set(log["request_id"])


def test_4xx_logged_at_info_without_traceback(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sluice.api"):
        client.post("/v1/predict", json=v1(record(amount="x")), headers=AUTH)
    mine = [r for r in caplog.records if r.name == "sluice.api"]
    assert mine and all(r.levelno == logging.INFO and r.exc_info is None for r in mine)


def test_openapi_document_complete_and_open(client: Any) -> None:
    resp = client.get("/docs.json")  # no key: serve.docs_public
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["version"] not in ("None", "") and "BentoML" not in json.dumps(doc["info"])
    paths = doc["paths"]
    for path in ("/predict", "/v1/predict", "/v1/models", "/v1/batch_predict", "/health/dependencies"):
        assert path in paths
    assert "/v2/models/{name}/infer" in paths and "/v1/deployments/{deployment_id}/rollback" in paths
    codes = set(paths["/v1/predict"]["post"]["responses"])
    assert {"200", "401", "413", "415", "422", "429", "500", "503"} <= codes
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").json() == doc


def test_v1_models_metadata(client: Any, world: World) -> None:
    out = client.get("/v1/models", headers=AUTH).json()
    [model] = out["models"]
    releases = {r["version"]: r for r in model["releases"]}
    champion = releases[world.champion]
    assert champion["arm"] == "champion" and "champion" in champion["aliases"]
    assert champion["framework"] in ("xgboost", "pytorch") and champion["size_bytes"] > 0
    assert isinstance(champion["metrics"], dict) and champion["fingerprint"] and 0 < champion["threshold"] < 1
    assert champion["training_window"]["start"] and champion["input_schema"]["properties"]["amount"]
    shares = sum(r["traffic_share"] for r in model["releases"])
    assert shares == pytest.approx(1.0)
    assert model["alias_history"] and client.get(f"/v1/models/{MODEL}", headers=AUTH).json() == model
    assert client.get("/v1/models/nope", headers=AUTH).status_code == 404


def test_admin_routes_need_an_admin_key(client: Any, world: World) -> None:
    payload = {"version": world.challenger, "traffic_percentage": 5, "reason": "test"}
    resp = client.post(f"/v1/models/{MODEL}/deploy", json=payload, headers=AUTH)
    assert resp.status_code == 403 and "admin" in resp.json()["error"]
    bad = client.post(f"/v1/models/{MODEL}/deploy", json={**payload, "traffic_percentage": 0}, headers=ADMIN)
    assert bad.status_code == 422 and "traffic_percentage" in bad.json()["error"]


def test_health_degraded_while_the_breaker_is_open(client: Any) -> None:
    breaker = engine(client).breaker
    saved = (breaker.opened_at, breaker.consecutive)
    breaker.opened_at, breaker.consecutive = breaker.clock(), breaker.failures
    try:
        resp = client.get("/health/dependencies")
        assert resp.status_code == 503
        assert resp.json()["status"] == "degraded" and not resp.json()["online_store"]["ok"]
    finally:
        breaker.opened_at, breaker.consecutive = saved
    assert client.get("/health/dependencies").json()["status"] == "ok"


# ---- /v2 (Open Inference Protocol) -----------------------------------------------------------------------


def test_v2_metadata_ready_and_infer(client: Any, world: World) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get(f"/v2/models/{MODEL}", headers=AUTH).json()
    assert world.champion in meta["versions"] and {"entity_id", "amount"} <= {
        t["name"] for t in meta["inputs"]
    }
    infer = {
        "id": "r1",
        "inputs": [
            {"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": ["card_1", "card_2"]},
            {"name": "amount", "shape": [2, 1], "datatype": "FP64", "data": [[10.0], [2000.0]]},
            {"name": "timestamp", "shape": [2], "datatype": "BYTES", "data": ["2026-01-07T12:00:00Z"] * 2},
        ],
    }
    resp = client.post(f"/v2/models/{MODEL}/versions/{world.champion}/infer", json=infer, headers=AUTH)
    assert resp.status_code == 200, resp.text
    outputs = {o["name"]: o for o in resp.json()["outputs"]}
    assert outputs["score"]["shape"] == [2] and outputs["model_version"]["data"] == [world.champion] * 2
    same = client.post("/v1/predict", json=v1(record("card_2", 2000.0)), headers=AUTH).json()
    assert outputs["score"]["data"][1] == pytest.approx(same["prediction"])
    bad = {"inputs": [{"name": "amount", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    err = client.post(f"/v2/models/{MODEL}/infer", json=bad, headers=AUTH)
    assert 400 <= err.status_code < 500 and "amount" in err.json()["error"]


def test_deploy_get_and_rollback_over_http(client: Any, world: World) -> None:
    """Deploy the challenger version (forced: the world's versions never ran the champion gate), read the
    deployment, roll it back; the registry is put back as the world had it."""
    from pipelines.engines.registry import open_registry

    reg = open_registry(world.params)
    payload = {"version": world.challenger, "traffic_percentage": 10, "reason": "api test", "force": False}
    refused = client.post(f"/v1/models/{MODEL}/deploy", json=payload, headers=ADMIN)
    assert refused.status_code == 409 and "force" in refused.json()["error"]
    try:
        resp = client.post(f"/v1/models/{MODEL}/deploy", json={**payload, "force": True}, headers=ADMIN)
        assert resp.status_code == 200, resp.text
        dep = resp.json()
        assert dep["status"] == "ramping" and dep["weight"] == 10 and dep["endpoint"] == "/v1/predict"
        assert reg.get_rollout_state(MODEL).challenger_weight == 10
        got = client.get(f"/v1/deployments/{dep['deployment_id']}", headers=AUTH).json()
        assert got["deployment_id"] == dep["deployment_id"] and "guardrails" in got
        listed = client.get("/v1/deployments", headers=AUTH).json()
        assert listed[0]["deployment_id"] == dep["deployment_id"]
        back = client.post(
            f"/v1/deployments/{dep['deployment_id']}/rollback", json={"reason": "api test"}, headers=ADMIN
        )
        assert back.status_code == 200 and back.json()["status"] == "rolled_back"
        assert reg.alias_version(MODEL, "challenger") is None
        again = client.post(
            f"/v1/deployments/{dep['deployment_id']}/rollback", json={"reason": "twice"}, headers=ADMIN
        )
        assert again.status_code == 409
        assert client.get("/v1/deployments/dep-missing", headers=AUTH).status_code == 404
    finally:
        reg.clear_rollout_state(MODEL)
        reg.move_alias(MODEL, "challenger", world.challenger, who="test", why="restore the world")
        engine(client).refresh()
