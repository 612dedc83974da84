"""The DAG tasks on an Airflow metadata DB in PostgreSQL (127.0.0.1:5432), the production-like setup.

Creates a throwaway database, migrates it, runs the ingestion DAG for one day with `dag.test()` and
checks the run, its tasks and the asset event landed in PostgreSQL; drops the database afterwards.
Skipped when PostgreSQL is not reachable or Airflow's drivers (psycopg2 + asyncpg: the
`apache-airflow[postgres]` extra) are not installed.
Server: $SLUICE_TEST_PG (default postgresql://postgres@127.0.0.1:5432, trust auth as on the dev machines).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipelines import io
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, migrate, run_driver

pytestmark = pytest.mark.integration

SERVER = os.environ.get("SLUICE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
DAY = dt.date(2026, 1, 3)


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh database on the server; yields its SQLAlchemy URL; dropped after the test."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 not installed (Airflow's PostgreSQL driver)")
    pytest.importorskip("asyncpg", reason="asyncpg not installed (Airflow 3's async PostgreSQL driver)")
    if not _reachable(SERVER):
        pytest.skip(f"PostgreSQL not reachable at {SERVER}")
    name = f"sluice_airflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{SERVER}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{SERVER.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def test_ingestion_tasks_on_postgres(tmp_path: Path, pg_database: str) -> None:
    params = make_project(tmp_path / "project")
    home = tmp_path / "airflow_home"
    home.mkdir()
    env = airflow_env(home, params.root / "params.yaml", db_url=pg_database)
    migrate(env)
    logical = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
    steps = [{"dag": "ingestion", "logical_date": logical}]
    result, output = run_driver("run", {"steps": steps}, env, tmp_path / "driver")
    (run,) = result["steps"]
    assert run["state"].lower().endswith("success"), output[-6000:]
    assert {k: v.rsplit(".", 1)[-1].lower() for k, v in run["tasks"].items()} == {
        "ingest": "success",
        "validate": "success",
    }
    assert result["env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert [e["extra"] for e in result["asset_events"]] == [
        {"start": DAY.isoformat(), "end": (DAY + dt.timedelta(days=1)).isoformat()}
    ]
    assert (io.partition_dir(params.paths.validated, DAY) / io.PART_FILE).is_file()
