"""The BentoML service in-process (its ASGI app) on a tiny world built by the real stages.

Covers: start-up from the registry by alias, /readyz, POST /predict (batched) and /predict_batch,
auth 401, rate limit 429, size 413, bad input 422 naming the field, cache never crossing release
versions, sticky routing after a weight change, /health/dependencies, /metrics, the prediction log,
a real online-store outage (private redis-server stopped mid-test) served with flagged
fallback features and never a 5xx, online == Spark batch scores for 200 sampled events, and `make bento`
(build.py) packaging the champion.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.serving import route
from tests.conftest import REPO_ROOT
from tests.service_fixtures import AUTH, EXAMPLE, body, engine, record
from tests.serving_world import API_KEY, CUT, END, MODEL, RATE_KEY, World

pytestmark = pytest.mark.integration

# ---- happy path ---------------------------------------------------------------------------------------


def test_ready_and_predict_example_request(client: Any, world: World) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200
    # the example's card is one of the shipped project's; here, one the world's online store holds
    example = {"records": [{**EXAMPLE["records"][0], "entity_id": str(world.events["entity_id"].iloc[0])}]}
    resp = client.post("/predict", json=example, headers=AUTH)
    assert resp.status_code == 200, resp.text
    [out] = resp.json()
    for key in (
        "prediction_id",
        "score",
        "decision",
        "threshold",
        "model_name",
        "model_version",
        "arm",
        "features_fresh",
        "feature_source",
        "latency_ms",
    ):
        assert key in out
    assert (out["model_name"], out["model_version"], out["arm"]) == (MODEL, world.champion, "champion")
    assert 0.0 <= out["score"] <= 1.0 and out["decision"] == int(out["score"] >= out["threshold"])
    assert out["features_fresh"] and out["feature_source"] == "online"
    assert out["event_id"] == EXAMPLE["records"][0]["event_id"]


def test_concurrent_requests_are_batched(client: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = engine(client).metrics.batch_size.labels("predict")._sum.get()
    with ThreadPoolExecutor(16) as pool:
        resps = list(
            pool.map(
                lambda i: client.post("/predict", json=body(record(f"card_{i}", 10.0 + i)), headers=AUTH),
                range(32),
            )
        )
    assert all(r.status_code == 200 for r in resps)
    assert engine(client).metrics.batch_size.labels("predict")._sum.get() - before == 32


def test_predict_batch_and_its_limit(client: Any) -> None:
    recs = [record(f"card_{i}", 5.0 * i + 1) for i in range(50)]
    resp = client.post("/predict_batch", json=body(*recs), headers=AUTH)
    assert resp.status_code == 200 and len(resp.json()) == 50
    too_many = [record("card_1")] * 301  # serve.max_records = 300 in the world
    assert client.post("/predict_batch", json=body(*too_many), headers=AUTH).status_code == 422


# ---- security --------------------------------------------------------------------------------------


def test_auth_401_but_health_and_metrics_open(client: Any) -> None:
    assert client.post("/predict", json=EXAMPLE).status_code == 401
    assert client.post("/predict", json=EXAMPLE, headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.post("/predict", json=EXAMPLE, headers={"Authorization": f"Bearer {API_KEY}"}).status_code
        == 200
    )
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_bad_input_422_names_the_field(client: Any) -> None:
    resp = client.post("/predict", json=body(record(amount="lots")), headers=AUTH)
    assert resp.status_code == 422 and "amount" in resp.text
    resp = client.post("/predict", json=body({"amount": 3.0}), headers=AUTH)
    assert resp.status_code == 422 and "entity_id" in resp.text
    resp = client.post("/predict", json=body(record(latitude=123.0)), headers=AUTH)
    assert resp.status_code == 422 and "latitude" in resp.text
    resp = client.post("/predict", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 422


def test_size_limit_413(client: Any) -> None:
    big = [record(f"card_{i}", merchant="m" * 200) for i in range(1000)]  # > 200 kB
    assert client.post("/predict_batch", json=body(*big), headers=AUTH).status_code == 413


def _guard(app: Any) -> Any:
    from pipelines.serving.http import GuardMiddleware

    node = app.middleware_stack
    while node is not None and not isinstance(node, GuardMiddleware):
        node = getattr(node, "app", None)
    assert node is not None, "GuardMiddleware not in the app's middleware stack"
    return node


def test_rate_limit_429_per_key(client: Any) -> None:
    import hashlib

    from pipelines.serving.http import TokenBucket

    # the world allows plenty per key; give RATE_KEY a tight bucket (3 requests, then 1 per 10 s)
    guard = _guard(client.app)
    guard._buckets[hashlib.sha256(RATE_KEY.encode()).hexdigest()[:16]] = TokenBucket(0.1, 3, guard.clock())
    codes = [
        client.post("/predict", json=EXAMPLE, headers={"X-API-Key": RATE_KEY}).status_code for _ in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    limited = client.post("/predict", json=EXAMPLE, headers={"X-API-Key": RATE_KEY})
    assert int(limited.headers["retry-after"]) >= 1
    assert client.post("/predict", json=EXAMPLE, headers=AUTH).status_code == 200  # other keys unaffected


# ---- cache, routing, releases ---------------------------------------------------------------------


def test_cache_never_crosses_release_versions(client: Any, world: World) -> None:
    from pipelines.engines.registry import open_registry

    registry = open_registry(world.params)
    req = [record(str(world.events["entity_id"].iloc[1]), 77.7)]  # known to the store: cacheable
    first = client.post("/predict", json=body(*req), headers=AUTH).json()[0]
    second = client.post("/predict", json=body(*req), headers=AUTH).json()[0]
    assert (
        second["cached"] and second["score"] == first["score"] and second["model_version"] == world.champion
    )
    try:
        registry.move_alias(MODEL, "champion", world.challenger, who="tests", why="cache test")
        engine(client).refresh()
        moved = client.post("/predict", json=body(*req), headers=AUTH).json()[0]
        assert moved["model_version"] == world.challenger and not moved["cached"]
        assert moved["score"] != first["score"]
    finally:
        registry.move_alias(MODEL, "champion", world.champion, who="tests", why="cache test done")
        registry.move_alias(MODEL, "challenger", world.challenger, who="tests", why="cache test done")
        engine(client).refresh()
    back = client.post("/predict", json=body(*req), headers=AUTH).json()[0]
    assert back["model_version"] == world.champion


def test_routing_follows_registry_weight_and_sticks(client: Any, world: World) -> None:
    from pipelines.engines.registry import open_registry

    registry = open_registry(world.params)
    entities = [f"card_{i}" for i in range(60)]
    recs = [record(e, 20.0) for e in entities]
    try:
        registry.set_rollout_state(MODEL, challenger_weight=50, who="tests")
        engine(client).refresh()
        a = client.post("/predict_batch", json=body(*recs), headers=AUTH).json()
        b = client.post("/predict_batch", json=body(*recs), headers=AUTH).json()
    finally:
        registry.set_rollout_state(MODEL, challenger_weight=0, who="tests")
        engine(client).refresh()
    arms = [o["arm"] for o in a]
    assert arms == [o["arm"] for o in b]  # sticky
    assert arms == [route(e, 50) for e in entities]
    assert {"champion", "challenger"} == set(arms)
    assert {o["model_version"] for o in a if o["arm"] == "challenger"} == {world.challenger}


# ---- observability ----------------------------------------------------------------------------------


def test_health_dependencies_metrics_and_prediction_log(client: Any, world: World) -> None:
    from pipelines.artifacts import read_prediction_log
    from pipelines.serving.log import wait_flushed

    health = client.get("/health/dependencies")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["ready"] and body["registry"]["releases"]["champion"]["version"] == world.champion
    assert body["online_store"]["ok"] and body["online_store"]["breaker"] == "closed"
    assert {"size", "hits", "ttl_s"} <= set(body["cache"])
    metrics = client.get("/metrics").text
    assert (
        f'sluice_predictions_total{{arm="champion",cached="false",feature_source="online",model_version="{world.champion}"}}'
        in metrics
    )
    assert "sluice_batch_size_bucket" in metrics and "sluice_prediction_latency_seconds_bucket" in metrics
    assert "sluice_cache_hits_total" in metrics
    wait_flushed(engine(client).log_writer)
    log = read_prediction_log(world.params.paths.prediction_log)
    assert len(log) >= 50
    assert {"prediction_id", "entity_id", "score", "model_version", "arm", "txn_count_24h"} <= set(
        log.columns
    )
    assert API_KEY not in json.dumps(log.astype(str).to_dict())


# ---- resilience --------------------------------------------------------------------------------------


def test_online_store_outage_is_served_flagged_never_5xx(client: Any, world: World) -> None:
    if world.redis is None:
        pytest.skip("redis-server not available: the outage is covered by the unit tests' fake store")
    card = str(world.events["entity_id"].iloc[0])  # an entity the online store holds
    known = record(card, 1012.0)  # amounts no other test sends: nothing cached
    fresh = client.post("/predict", json=body(known), headers=AUTH).json()[0]
    assert fresh["feature_source"] == "online"
    world.redis.stop()  # the online store dies mid-test
    try:
        statuses, outs = [], []
        for i in range(6):
            r = client.post(
                "/predict",
                json=body(record(card, 1013.0 + i), record(f"stranger_{i}", 5.0)),
                headers=AUTH,
            )
            statuses.append(r.status_code)
            outs.extend(r.json() if r.status_code == 200 else [])
        assert statuses == [200] * 6
        assert {o["feature_source"] for o in outs if o["entity_id"] == card} == {"last_known"}
        assert {o["feature_source"] for o in outs if o["entity_id"].startswith("stranger")} == {"default"}
        assert not any(o["features_fresh"] for o in outs)
        health = client.get("/health/dependencies")
        assert health.status_code == 503 and health.json()["online_store"]["breaker"] in ("open", "half_open")
        assert health.json()["ready"]
        assert client.get("/readyz").status_code == 200  # still serving: not a readiness failure
        assert "sluice_feature_fallbacks_total" in client.get("/metrics").text
    finally:
        world.redis.start()  # back from its snapshot
    time.sleep(1.2)  # breaker_reset_s = 1: the next call is the half-open trial
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        back = client.post("/predict", json=body(record(card, 99.0)), headers=AUTH).json()[0]
        if back["feature_source"] == "online":
            break
        time.sleep(0.5)
    assert back["feature_source"] == "online" and back["features_fresh"]


# ---- parity with the Spark batch path -----------------------------------------------------------


def test_online_scores_equal_spark_batch_scores(client: Any, world: World, spark: Any) -> None:
    """For 200 events of [CUT, END) that are their entity's first event since the online store's state,
    the online score (Feast online features + request fields) equals batch_predict's Spark score."""
    from pipelines import batch_predict

    params = world.params
    batch_predict.run(params, CUT, END)
    preds = pd.read_parquet(params.paths.predictions)
    live = world.events[world.events["event_timestamp"] >= pd.Timestamp(CUT, tz="UTC")]
    first = live.sort_values("event_timestamp").groupby("entity_id", sort=False).head(1)
    sample = first.sample(n=min(200, len(first)), random_state=0)
    assert len(sample) == 200
    recs = []
    for row in sample.itertuples(index=False):
        recs.append(
            {
                "entity_id": row.entity_id,
                "amount": row.amount,
                "timestamp": row.event_timestamp.isoformat(),
                "merchant": row.merchant,
                "category": row.category,
                "latitude": row.latitude,
                "longitude": row.longitude,
                "merchant_latitude": row.merchant_latitude,
                "merchant_longitude": row.merchant_longitude,
                "event_id": row.event_id,
            }
        )
    resp = client.post("/predict_batch", json=body(*recs), headers=AUTH)
    assert resp.status_code == 200, resp.text
    online = pd.DataFrame(resp.json()).set_index("event_id")
    assert (online["arm"] == "champion").all() and online["features_fresh"].all()
    batch = preds.set_index("event_id").loc[online.index]
    assert (batch["model_version"] == online["model_version"]).all()
    np.testing.assert_allclose(online["score"].to_numpy(), batch["score"].to_numpy(), rtol=0, atol=1e-6)
    assert (online["decision"].to_numpy() == batch["decision"].to_numpy()).all()
    assert dt.date.fromisoformat(str(CUT)) < END


# ---- packaging ---------------------------------------------------------------------------------------


def test_make_bento_builds_around_the_champion(world: World, tmp_path: Path) -> None:
    """`make bento` (bentos/fraud_scorer/build.py) on a copy of the repo: the Bento holds the champion's
    model, labels naming its version, and the code the service imports (pipelines, feature repo)."""
    import os
    import shutil
    import subprocess

    import yaml

    ctx = tmp_path / "repo"  # the build writes bundled_release.json next to build.py: never into the repo
    for sub in ("bentos", "pipelines", "feature_repo"):
        shutil.copytree(REPO_ROOT / sub, ctx / sub, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy2(REPO_ROOT / "params.yaml", ctx / "params.yaml")
    home = tmp_path / "bentoml_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLUICE_", "BENTOML_"))}
    env.update(BENTOML_HOME=str(home), PYTHONPATH=str(ctx))
    proc = subprocess.run(
        [sys.executable, str(ctx / "bentos/fraud_scorer/build.py"), "--params", str(world.params_path)],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    assert built["model_version"] == world.champion and built["alias"] == "champion"
    assert (
        json.loads((ctx / "bentos/fraud_scorer/bundled_release.json").read_text())["bento_model"]
        == (built["model"])
    )

    name, version = built["bento"].split(":")
    bento_dir = home / "bentos" / name / version
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["labels"]["model_version"] == world.champion
    assert info["labels"]["fingerprint"] and info["labels"]["owner"] == "sluice"
    assert [m["tag"] for m in info["models"]] == [built["model"]]
    src = bento_dir / "src"
    for shipped in (
        "bentos/fraud_scorer/service.py",
        "bentos/fraud_scorer/bundled_release.json",
        "pipelines/model/release.py",
        "feature_repo/feature_store.yaml",
        "params.yaml",
    ):
        assert (src / shipped).is_file(), shipped
    model_name, model_version = built["model"].split(":")
    assert (home / "models" / model_name / model_version / "model.yaml").is_file()
