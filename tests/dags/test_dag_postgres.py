"""The DAG tasks on an Airflow metadata DB in PostgreSQL (127.0.0.1:5432), the production-like setup.

Each test creates a throwaway database and drops it afterwards:
- the ingestion DAG for one day with `dag.test()`: the run, its tasks and the asset event land in
  PostgreSQL (CI);
- the chain ingestion -> features -> training run by a real scheduler with the LocalExecutor (every task
  its own process) on `airflow standalone`; features is started by the scheduler from the asset event
  (slow: ~5 minutes here, `pytest -m slow`).
Skipped when PostgreSQL is not reachable or Airflow's drivers (psycopg2 + asyncpg: the
`apache-airflow[postgres]` extra) are not installed.
Server: $SLUICE_TEST_PG (tests/conftest.py; default postgresql://postgres@127.0.0.1:5432, trust auth).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines import io
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, migrate, run_driver

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 3)


@pytest.fixture
def airflow_pg(pg_database: str) -> str:
    """tests/conftest.py's throwaway database, once Airflow 3's async driver is known to be installed."""
    pytest.importorskip("asyncpg", reason="asyncpg not installed (Airflow 3's async PostgreSQL driver)")
    return pg_database


def test_ingestion_tasks_on_postgres(tmp_path: Path, airflow_pg: str) -> None:
    params = make_project(tmp_path / "project")
    home = tmp_path / "airflow_home"
    home.mkdir()
    env = airflow_env(home, params.root / "params.yaml", db_url=airflow_pg)
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
    day, end = DAY.isoformat(), (DAY + dt.timedelta(days=1)).isoformat()
    assert [e["extra"] for e in result["asset_events"]] == [
        {"start": day, "end": end, "ranges": [[day, end]]}
    ]
    assert (io.partition_dir(params.paths.validated, DAY) / io.PART_FILE).is_file()


@pytest.mark.slow
@pytest.mark.e2e
def test_chain_on_postgres_with_local_executor(airflow_pg: str, standalone_factory) -> None:  # type: ignore[no-untyped-def]
    import time

    server, params = standalone_factory(db_url=airflow_pg)
    assert server.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    for dag_id in ("ingestion", "features", "training"):
        server.wait_dag(dag_id)
        server.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    start, end = params.data.start.isoformat(), params.data.end.isoformat()
    t0 = time.monotonic()
    server.trigger("ingestion", {"start": start, "end": end})
    (ingestion,) = server.wait_runs("ingestion", 1, timeout=600)
    # nobody triggers features: the scheduler starts it from the validated-transactions asset event
    (features,) = server.wait_runs("features", 1, timeout=600)
    server.trigger("training")  # nothing given: params data.start/end
    (training,) = server.wait_runs("training", 1, timeout=900)
    seconds = time.monotonic() - t0
    print(f"PostgreSQL + LocalExecutor chain ingestion -> features -> training: {seconds:.0f} s")

    assert [r["state"] for r in (ingestion, features, training)] == ["success"] * 3, server.tail()
    assert features["run_type"] == "asset_triggered"
    tasks = server.api("GET", f"/api/v2/dags/training/dagRuns/{training['dag_run_id']}/taskInstances")
    assert {t["task_id"]: t["state"] for t in tasks["task_instances"]} == dict.fromkeys(
        ["dataset", "train", "evaluate", "register", "champion_gate"], "success"
    )
    # the runs live in PostgreSQL, not in a SQLite file
    assert not (server.home / "airflow.db").exists()
    psycopg2 = pytest.importorskip("psycopg2")
    with psycopg2.connect(airflow_pg.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        cur.execute("SELECT dag_id, state FROM dag_run ORDER BY dag_id")
        assert cur.fetchall() == [("features", "success"), ("ingestion", "success"), ("training", "success")]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=params.tracking_uri, registry_uri=params.tracking_uri)
    assert client.get_model_version_by_alias(params.register_.model_name, "challenger").version
    s, e = params.data.start, params.data.end
    for base in (params.paths.validated, params.paths.features):
        assert {io.partition_date(p) for p in io.existing_partitions(base, s, e)} == set(io.days(s, e)), base
