"""Serving logic without BentoML, MLflow or Feast: routing, cache, breaker, fallbacks, guard middleware."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.artifacts import RegisteredVersion, read_prediction_log
from pipelines.contract import FEATURE_COLUMNS
from pipelines.engines.registry import RolloutState
from pipelines.serving import (
    CHALLENGER,
    CHAMPION,
    CircuitBreaker,
    GuardMiddleware,
    NotReady,
    PredictionLogWriter,
    ScoreRequest,
    ServingEngine,
    ServingMetrics,
    TokenBucket,
    TTLCache,
    bucket,
    route,
    wait_flushed,
)
from tests.conftest import make_project

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


# ---- fakes ---------------------------------------------------------------------------------------


class FakeRelease:
    """score = amount / (amount + offset): different offsets = distinguishable releases."""

    def __init__(self, offset: float, fail: bool = False, delay_s: float = 0.0) -> None:
        self.offset = offset
        self.fail = fail
        self.delay_s = delay_s
        self.fingerprint = f"fp-{offset}"
        self.feature_list = ["amount"]
        self.model_kind = "xgboost"
        self.frames: list[pd.DataFrame] = []

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if self.fail:
            raise RuntimeError("broken challenger")
        self.frames.append(frame)
        a = frame["amount"].to_numpy(dtype=float)
        return a / (a + self.offset)


@dataclass
class FakeVersion:
    version: str
    tags: dict[str, str]


@dataclass
class FakeRegistry:
    aliases_: dict[str, str] = field(default_factory=dict)
    weight: float = 0.0
    down: bool = False

    def aliases(self, name: str) -> dict[str, str]:
        if self.down:
            raise ConnectionError("registry unreachable")
        return dict(self.aliases_)

    def get_version(self, name: str, version: str) -> FakeVersion:
        return FakeVersion(version, {"threshold": "0.5", "fingerprint": f"fp-{float(version)}"})

    def get_rollout_state(self, name: str) -> RolloutState:
        return RolloutState(challenger_weight=self.weight)


class FakeStore:
    """Online lookup: features derived from the entity id; can be switched down or slow."""

    def __init__(self) -> None:
        self.down = False
        self.delay_s = 0.0
        self.calls = 0

    def __call__(self, ids: list[str]) -> pd.DataFrame:
        self.calls += 1
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if self.down:
            raise ConnectionError("online store unreachable")
        data: dict[str, Any] = {"entity_id": ids}
        for j, c in enumerate(FEATURE_COLUMNS):
            data[c] = [float(len(e) + j) for e in ids]
        return pd.DataFrame(data)


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = make_project(tmp_path_factory.mktemp("serving_unit") / "project")
    serve = p.serve.model_copy(
        update={
            "feature_timeout_ms": 100.0,
            "breaker_failures": 2,
            "breaker_reset_s": 60.0,
            "challenger_timeout_ms": 100.0,
        }
    )
    return p.model_copy(update={"serve": serve})


def make_engine(
    params: Any, registry: FakeRegistry, store: FakeStore, releases: dict[str, FakeRelease], **kw: Any
):
    def loader(registered: RegisteredVersion) -> FakeRelease:
        assert registered.uri == f"models:/{params.register_.model_name}/{registered.version}"
        assert registered.fingerprint == f"fp-{float(registered.version)}"
        return releases[registered.version]

    engine = ServingEngine(params, registry=registry, release_loader=loader, feature_lookup=store, **kw)
    engine.refresh()
    return engine


def req(entity: str = "e1", amount: float = 50.0, **kw: Any) -> ScoreRequest:
    return ScoreRequest(entity_id=entity, amount=amount, timestamp=kw.pop("timestamp", T0), **kw)


# ---- routing -------------------------------------------------------------------------------------


def test_routing_share_and_stickiness_over_10k_entities() -> None:
    entities = [f"card_{i:06d}" for i in range(10_000)]
    for weight in (5, 20, 50):
        arms = [route(e, weight) for e in entities]
        share = 100 * arms.count(CHALLENGER) / len(entities)
        assert abs(share - weight) <= 2, (weight, share)
        assert arms == [route(e, weight) for e in entities]  # sticky while the weight holds
    # raising the weight only moves entities champion -> challenger, never back
    at5 = {e for e in entities if route(e, 5) == CHALLENGER}
    at20 = {e for e in entities if route(e, 20) == CHALLENGER}
    assert at5 <= at20
    assert all(route(e, 0) == CHAMPION for e in entities[:500])
    assert all(route(e, 100) == CHALLENGER for e in entities[:500])
    assert bucket("card_000001") == bucket("card_000001")


# ---- cache / breaker / token bucket ---------------------------------------------------------------


def test_ttl_cache_expires_and_bounds() -> None:
    now = [0.0]
    cache = TTLCache(maxsize=2, ttl_s=10, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # evicts the least recently used
    assert cache.get("a") is None and cache.get("c") == 3
    now[0] = 11
    assert cache.get("c") is None
    assert TTLCache(0, 10).get("x") is None


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    b = CircuitBreaker(failures=2, reset_s=5, clock=lambda: now[0])
    assert b.allow()
    b.failure("x")
    assert b.state == "closed"
    b.failure("x")
    assert b.state == "open" and not b.allow()
    now[0] = 6
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # a single trial
    b.failure("still down")
    assert b.state == "open"
    now[0] = 12
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_token_bucket() -> None:
    tb = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert tb.take(0.0) == 0 and tb.take(0.0) == 0
    assert tb.take(0.0) > 0
    assert tb.take(0.6) == 0


# ---- engine ----------------------------------------------------------------------------------------


def test_engine_scores_routes_and_never_crosses_release_versions(params: Any) -> None:
    reg = FakeRegistry({"champion": "1"})
    store = FakeStore()
    rels = {"1": FakeRelease(1.0), "2": FakeRelease(2.0), "3": FakeRelease(3.0)}
    engine = make_engine(params, reg, store, rels)
    assert engine.ready
    r = req(amount=2.0)
    first = engine.predict_sync([r])[0]
    assert (first.model_version, first.arm, first.cached) == ("1", CHAMPION, False)
    assert first.score == pytest.approx(2 / 3)
    assert first.feature_source == "online" and first.features_fresh
    again = engine.predict_sync([r])[0]
    assert again.cached and again.score == first.score and again.prediction_id != first.prediction_id
    # the champion moves: the same request is answered by the new release, not the cache
    reg.aliases_ = {"champion": "2"}
    assert engine.refresh()
    moved = engine.predict_sync([r])[0]
    assert (moved.model_version, moved.cached) == ("2", False)
    assert moved.score == pytest.approx(2 / 4)
    # a challenger at 100% takes every entity; at 0% none
    reg.aliases_ = {"champion": "2", "challenger": "3"}
    reg.weight = 100
    engine.refresh()
    out = engine.predict_sync([req(f"e{i}", 3.0) for i in range(20)])
    assert {o.arm for o in out} == {CHALLENGER} and {o.model_version for o in out} == {"3"}
    reg.weight = 0
    engine.refresh()
    assert {o.arm for o in engine.predict_sync([req(f"e{i}", 3.0) for i in range(20)])} == {CHAMPION}
    # features reach the release as the canonical frame
    frame = rels["3"].frames[-1]
    assert list(FEATURE_COLUMNS) == [c for c in frame.columns if c in FEATURE_COLUMNS]
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_challenger_failure_and_timeout_fall_back_to_champion(params: Any) -> None:
    reg = FakeRegistry({"champion": "1", "challenger": "2"}, weight=100)
    rels = {"1": FakeRelease(1.0), "2": FakeRelease(2.0, fail=True)}
    prom = _registry()
    engine = make_engine(params, reg, FakeStore(), rels, metrics=ServingMetrics(registry=prom))
    out = engine.predict_sync([req("a", 1.0), req("b", 1.0)])
    assert all(o.arm == CHAMPION and o.challenger_fallback and o.score == 0.5 for o in out)
    assert _sample(prom, "sluice_prediction_errors_total", arm="challenger") == 2  # one per row
    rels["2"] = FakeRelease(2.0, delay_s=0.5)  # slower than challenger_timeout_ms (100)
    reg.aliases_ = {"champion": "1", "challenger": "2"}
    engine.routing = type(engine.routing)({}, 0)  # force a reload of the slow release
    engine.refresh()
    slow = engine.predict_sync([req("c", 1.0)])[0]
    assert slow.arm == CHAMPION and slow.challenger_fallback
    # fallbacks are not cached under the challenger's version
    assert not engine.predict_sync([req("c", 1.0)])[0].cached


def test_online_store_down_serves_flagged_fallback_and_opens_breaker(params: Any) -> None:
    store = FakeStore()
    engine = make_engine(params, FakeRegistry({"champion": "1"}), store, {"1": FakeRelease(1.0)})
    known = engine.predict_sync([req("known", 1.0)])[0]
    assert known.feature_source == "online"
    store.down = True
    out = engine.predict_sync([req("known", 2.0), req("new", 2.0)])
    assert [o.feature_source for o in out] == ["last_known", "default"]
    assert not any(o.features_fresh for o in out)
    engine.predict_sync([req("known", 3.0)])
    assert engine.breaker.state == "open"
    calls = store.calls
    engine.predict_sync([req("known", 4.0)])
    assert store.calls == calls  # open breaker: the store is not even asked
    # fallback answers are never cached
    assert not engine.predict_sync([req("known", 2.0)])[0].cached
    health = engine.health(probe_timeout_s=0.5)
    assert (
        health["ready"] and not health["online_store"]["ok"] and health["online_store"]["breaker"] == "open"
    )


def test_slow_online_store_times_out(params: Any) -> None:
    store = FakeStore()
    store.delay_s = 0.5  # feature_timeout_ms is 100
    engine = make_engine(params, FakeRegistry({"champion": "1"}), store, {"1": FakeRelease(1.0)})
    out = engine.predict_sync([req("x", 1.0)])[0]
    assert out.feature_source == "default" and engine.breaker.last_error == "timeout"


def test_not_ready_without_champion_and_registry_down_keeps_serving(params: Any) -> None:
    reg = FakeRegistry({})
    engine = make_engine(params, reg, FakeStore(), {"1": FakeRelease(1.0)})
    assert not engine.ready
    with pytest.raises(NotReady):
        engine.predict_sync([req()])
    reg.aliases_ = {"champion": "1"}
    engine.refresh()
    assert engine.ready
    reg.down = True
    assert not engine.refresh()
    assert engine.ready and engine.predict_sync([req()])[0].model_version == "1"
    assert engine.health(0.5)["registry"]["ok"] is False


def test_prediction_log_rotates_and_reads_back(params: Any, tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path / "log", rotate_bytes=2000, flush_s=0.05)
    engine = make_engine(
        params, FakeRegistry({"champion": "1"}), FakeStore(), {"1": FakeRelease(1.0)}, log_writer=writer
    )
    writer.start()
    out = engine.predict_sync([req(f"e{i}", float(i), event_id=f"ev{i}") for i in range(1, 21)])
    wait_flushed(writer)
    writer.close()
    files = sorted((tmp_path / "log").rglob("*.jsonl"))
    assert len(files) > 1  # rotated by size
    df = read_prediction_log(tmp_path / "log")
    assert len(df) == 20
    assert set(df["prediction_id"]) == {o.prediction_id for o in out}
    for col in ("event_id", "entity_id", "score", "model_version", "arm", "feature_source", *FEATURE_COLUMNS):
        assert col in df.columns
    assert "api_key" not in " ".join(df.columns)


def test_default_loader_puts_only_an_mlp_on_cuda(params: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Releases load through pipelines.artifacts.load_version (pinned URI + fingerprint); an MLP is
    reloaded onto CUDA when serving has a GPU, trees stay on CPU."""
    from pipelines.serving import releases

    calls: list[tuple[str, str]] = []

    def load_version(p: Any, registered: RegisteredVersion, *, device: str = "cpu") -> FakeRelease:
        calls.append((registered.version, device))
        rel = FakeRelease(1.0)
        rel.model_kind = "mlp" if registered.version == "2" else "xgboost"
        return rel

    monkeypatch.setattr(releases, "load_version", load_version)
    monkeypatch.setattr(releases, "serving_device", lambda p: "cuda")
    load = releases.default_release_loader(params)
    for version in ("1", "2"):
        load(RegisteredVersion("m", version, {"fingerprint": "fp", "threshold": "0.5"}))
    assert calls == [("1", "cpu"), ("2", "cpu"), ("2", "cuda")]
    calls.clear()
    monkeypatch.setattr(releases, "serving_device", lambda p: "cpu")
    load(RegisteredVersion("m", "2", {}))
    assert calls == [("2", "cpu")]


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="amount"):
        ScoreRequest.model_validate({"entity_id": "e", "amount": -1})
    with pytest.raises(ValueError, match="surprise"):
        ScoreRequest.model_validate({"entity_id": "e", "amount": 1, "surprise": 1})
    naive = ScoreRequest.model_validate({"entity_id": "e", "amount": 1, "timestamp": "2026-01-01T10:00:00"})
    assert naive.timestamp == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


# ---- guard middleware --------------------------------------------------------------------------------


def _asgi_call(
    app: Any,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"{}",
    method: str = "POST",
    content_type: str | None = "application/json",
) -> tuple[int, bytes, dict[bytes, bytes]]:
    """(status, body, headers) of one request through `app`."""
    sent: list[dict[str, Any]] = []
    hdrs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if "content-length" not in (headers or {}):
        hdrs.append((b"content-length", str(len(body)).encode()))
    if content_type is not None:
        hdrs.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "path": path, "method": method, "headers": hdrs, "client": ("1.2.3.4", 1)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0]["headers"])


async def _state_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers 200 with what the guard put in the scope's state."""
    state = scope.get("state", {})
    body = json.dumps({k: v for k, v in state.items() if k.startswith("sluice.")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_guard_auth_rate_size_content_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEYS", "k1, k2")
    monkeypatch.setenv("TEST_ADMIN", "adm")
    guard = GuardMiddleware(
        _state_app,
        api_key_env="TEST_KEYS",
        admin_key_env="TEST_ADMIN",
        rate_limit_per_s=1,
        rate_limit_burst=2,
        max_request_bytes=100,
    )
    assert _asgi_call(guard, "/predict")[0] == 401
    assert _asgi_call(guard, "/predict", {"x-api-key": "nope"})[0] == 401
    status, body, _ = _asgi_call(guard, "/predict", {"x-api-key": "k1"})
    state = json.loads(body)
    assert status == 200 and state["sluice.admin"] is False and "k1" not in body.decode()
    assert _asgi_call(guard, "/predict", {"authorization": "Bearer k1"})[0] == 200
    assert _asgi_call(guard, "/predict", {"x-api-key": "k1"})[0] == 429  # burst of 2 spent
    guard.rate = guard.burst = 1e6  # the rest is about content, not rate
    guard._buckets.clear()
    assert json.loads(_asgi_call(guard, "/x", {"x-api-key": "adm"})[1])["sluice.admin"] is True
    assert _asgi_call(guard, "/predict", {"x-api-key": "k2"}, body=b"x" * 101)[0] == 413
    assert _asgi_call(guard, "/predict", {"x-api-key": "k2"}, content_type="text/plain")[0] == 415
    assert _asgi_call(guard, "/predict", {"x-api-key": "k2"}, content_type=None)[0] == 415
    # the Open Inference Protocol's client sends no type; a bodiless POST and other methods need none
    assert _asgi_call(guard, "/v2/models/m/infer", {"x-api-key": "k2"}, content_type=None)[0] == 200
    assert _asgi_call(guard, "/v1/x/cancel", {"x-api-key": "adm"}, body=b"", content_type=None)[0] == 200
    assert _asgi_call(guard, "/v1/models", {"x-api-key": "adm"}, method="PUT", content_type=None)[0] == 200
    assert _asgi_call(guard, "/metrics", content_type=None)[0] == 200  # open routes: no key, no checks
    assert _asgi_call(guard, "/docs.json", content_type=None)[0] == 200


def test_guard_request_ids_and_open_auth() -> None:
    guard = GuardMiddleware(_state_app)  # no keys: a local service, every caller admin
    status, body, headers = _asgi_call(guard, "/predict", {"x-request-id": "abc-123"})
    assert status == 200 and headers[b"x-request-id"] == b"abc-123"
    assert json.loads(body) == {"sluice.request_id": "abc-123", "sluice.admin": True}
    generated = _asgi_call(guard, "/predict", {"x-request-id": "not valid!"})[2][b"x-request-id"]
    assert len(generated) == 32 and generated != b"not valid!"


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def _sample(prom: Any, name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(prom).decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_labelled_by_version_and_arm(params: Any) -> None:
    reg = _registry()
    metrics = ServingMetrics(registry=reg)
    engine = make_engine(
        params, FakeRegistry({"champion": "1"}), FakeStore(), {"1": FakeRelease(1.0)}, metrics=metrics
    )
    # Deltas, not absolutes: once BentoML is imported in this process (the service tests), it sets
    # PROMETHEUS_MULTIPROC_DIR and same-named series of one pid share storage across registries.
    miss = {"arm": "champion", "cached": "false", "feature_source": "online", "model_version": "1"}
    hits = {"arm": "champion", "model_version": "1"}
    metrics.predictions.labels(**miss)  # materialize the series so `before` reads any shared value
    metrics.cache_hits.labels(**hits)
    before = (
        _sample(reg, "sluice_predictions_total", **miss),
        _sample(reg, "sluice_cache_hits_total", **hits),
    )
    engine.predict_sync([req("a"), req("b")])
    engine.predict_sync([req("a")])
    from prometheus_client import generate_latest

    text = generate_latest(reg).decode()
    assert _sample(reg, "sluice_predictions_total", **miss) - before[0] == 2.0
    assert _sample(reg, "sluice_cache_hits_total", **hits) - before[1] == 1.0
    assert "sluice_batch_size_bucket" in text and "sluice_prediction_latency_seconds_bucket" in text
    json.dumps(engine.health(0.5))  # health is JSON-able
