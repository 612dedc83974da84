"""The BentoML service in-process (its ASGI app: guard middleware + the pipelines.api FastAPI app) on the
served world, shared by the service test modules (one world, one service per test process).

A pytest plugin (tests/conftest.py `pytest_plugins`): the fixtures `world` and `client` are everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.serving_world import API_KEY, RATE_KEY, World, build_world

SERVICE_FILE = REPO_ROOT / "bentos" / "fraud_scorer" / "service.py"
EXAMPLE = json.loads((REPO_ROOT / "bentos" / "fraud_scorer" / "example_request.json").read_text())
ADMIN_KEY = "test-admin-key"
AUTH = {"X-API-Key": API_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}


def load_service_module(params_path: Path) -> Any:
    """Import bentos/fraud_scorer/service.py fresh (its decorator arguments come from SLUICE_PARAMS)."""
    name = f"fraud_scorer_service_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, SERVICE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def world(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("serving_world"))


@pytest.fixture(scope="session")
def client(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A TestClient over the service's ASGI app (API keys API_KEY, RATE_KEY; admin key ADMIN_KEY)."""
    from starlette.testclient import TestClient

    mp = pytest.MonkeyPatch()
    mp.setenv("SLUICE_PARAMS", str(world.params_path))
    mp.setenv("SLUICE_API_KEYS", f"{API_KEY},{RATE_KEY}")
    mp.setenv("SLUICE_ADMIN_KEYS", ADMIN_KEY)
    mp.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml_home")))
    module = load_service_module(world.params_path)
    # `bentoml serve` runs workers in Prometheus multiprocess mode (a metrics dir set before any import);
    # in-process there is no such dir, so /metrics reads the process's default registry instead
    from bentoml._internal.container import BentoMLContainer
    from bentoml._internal.server.metrics.prometheus import PrometheusClient

    BentoMLContainer.metrics_client.set(PrometheusClient(multiproc=False))
    app = module.FraudScorer.to_asgi()
    with TestClient(app, raise_server_exceptions=False) as c:
        c.service_module = module  # type: ignore[attr-defined]
        yield c
    mp.undo()


def engine(client: Any) -> Any:
    """The ServingEngine behind the client's service."""
    return client.service_module.RUNTIME.engine


def record(entity: str = "card_1", amount: float = 42.0, **kw: Any) -> dict[str, Any]:
    return {"entity_id": entity, "amount": amount, "timestamp": "2026-01-07T12:00:00Z", **kw}


def body(*records: dict[str, Any]) -> dict[str, Any]:
    """The request body of /predict and /predict_batch."""
    return {"records": list(records)}
