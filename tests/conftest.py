"""Shared fixtures: one local[1] Spark session per test run, and a tiny project in tmp_path."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from benchmarks.world import TINY_PARAMS, lay_out_project
from pipelines.config import Params
from pipelines.model.request_features import FeatureSpec, load_spec

# the served world and the in-process service (fixtures `world`, `client`)
pytest_plugins = ["tests.service_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# the PostgreSQL server the "production" configurations are tested against (trust auth here)
PG_SERVER = os.environ.get("SLUICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@functools.cache
def shipped_spec() -> FeatureSpec:
    """The request feature spec the repo ships (feature_repo/request_features.yaml)."""
    return load_spec(REPO_ROOT / "feature_repo" / "request_features.yaml")


def make_project(root: Path, overrides: dict[str, Any] | None = None) -> Params:
    """Lay out a project in `root` (params.yaml, expectations/, feature_repo/) and return its params."""
    # the repo's params.yaml, so every section DVC lists exists, shrunk to the tiny world
    return lay_out_project(root, TINY_PARAMS, overrides or {})


@pytest.fixture(autouse=True)
def _no_global_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; never let one test's URI reach the next."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


@pytest.fixture
def project(tmp_path: Path) -> Params:
    """A fresh tiny project in tmp_path."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local[1] SparkSession shared by every Spark test (start-up costs ~9 s)."""
    from pipelines.engines.spark import get_spark
    from pipelines.sections import SparkParams

    session = get_spark(SparkParams(master="local[1]"), app_name="sluice-tests")
    yield session
    session.stop()


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connection to host:port opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database; yields its SQLAlchemy URL (psycopg2 driver); dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 not installed")
    parts = urlsplit(PG_SERVER)
    if not reachable(parts.hostname or "127.0.0.1", parts.port or 5432):
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}")
    name = f"sluice_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{PG_SERVER}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        # SQLAlchemy 2's bare postgresql:// means psycopg 3, which is not installed: name the driver
        yield f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
