"""The API app without a served model: CORS from params, 503 before the engine is installed, the
OpenAPI document's completeness, the model selector and the label/confidence of an answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.api import build_app
from pipelines.api.bodies import ModelSelector
from pipelines.api.predict import to_prediction
from pipelines.serving import ScoreResponse
from tests.conftest import make_project

pytestmark = pytest.mark.unit

ORIGIN = "https://console.example"


@pytest.fixture
def app_client(tmp_path: Path) -> Any:
    from starlette.testclient import TestClient

    params = make_project(tmp_path / "project", {"serve": {"cors_origins": [ORIGIN]}})
    with TestClient(build_app(params), raise_server_exceptions=False) as c:
        yield c


def test_cors_origins_from_params(app_client: Any) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    resp = app_client.options("/v1/predict", headers=preflight)
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == ORIGIN
    other = app_client.options("/v1/predict", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_not_ready_before_the_engine_is_installed(app_client: Any) -> None:
    resp = app_client.post("/predict", json={"records": [{"entity_id": "e", "amount": 1.0}]})
    assert resp.status_code == 503 and resp.headers["retry-after"] and "starting" in resp.json()["error"]
    assert app_client.get("/v2/health/ready").status_code == 503
    assert app_client.get("/v2/health/live").status_code == 200
    assert app_client.get("/health/dependencies").json()["status"] == "starting"


def test_every_operation_documents_its_errors(app_client: Any) -> None:
    doc = app_client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]
    for path, item in doc["paths"].items():
        if path in ("/livez", "/readyz", "/metrics"):  # the BentoML shell's probes
            continue
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"401", "429", "500", "503"} <= codes, (method, path)
            if method == "post":
                assert {"400", "404", "413", "415", "422"} <= codes, path
                for code in ("413", "415", "422"):
                    ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("m", ModelSelector("m")),
        ("m@challenger", ModelSelector("m", alias="challenger")),
        ("m/12", ModelSelector("m", version="12")),
    ],
)
def test_model_selector(text: str, parsed: ModelSelector) -> None:
    assert ModelSelector.parse(text) == parsed


@pytest.mark.parametrize("text", ["", "m@", "m/x", "m@a/1", "a b"])
def test_model_selector_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected <name>"):
        ModelSelector.parse(text)


def test_label_and_confidence_follow_the_decision() -> None:
    base = dict(
        prediction_id="p",
        entity_id="e",
        threshold=0.3,
        model_name="m",
        model_version="1",
        arm="champion",
        features_fresh=True,
        feature_source="online",
        latency_ms=1.0,
    )
    flagged = to_prediction(ScoreResponse(score=0.4, decision=1, **base), ("ok", "bad"))
    assert (flagged.label, flagged.confidence) == ("bad", 0.4)
    passed = to_prediction(ScoreResponse(score=0.1, decision=0, **base), ("ok", "bad"))
    assert (passed.label, passed.confidence) == ("ok", pytest.approx(0.9))
