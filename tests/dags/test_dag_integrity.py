"""DagBag integrity: every DAG file imports cleanly, fast, without heavy libraries, with the house rules.

One child process parses dags/ (tests/dags/airflow_driver.py dagbag) and the tests read its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, make_project
from tests.dags.conftest import DAG_IDS, airflow_env, run_driver

pytestmark = pytest.mark.integration

EXPECTED = set(DAG_IDS)
# what parsing may cost on this 2-core machine (Airflow's own import excluded; the budget)
PARSE_BUDGET_S = 2.0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The DagBag report for the repo's own params.yaml (what `make airflow` parses)."""
    home = tmp_path_factory.mktemp("dagbag-home")
    result, _ = run_driver("dagbag", {}, airflow_env(home), home)
    return result


def test_no_import_errors_and_all_dags(report: dict[str, Any]) -> None:
    assert report["import_errors"] == {}
    assert set(report["dags"]) == EXPECTED


def test_parse_time_under_budget(report: dict[str, Any]) -> None:
    parse, imp = report["parse_s"], report["airflow_import_s"]
    print(f"DagBag parse of dags/: {parse:.3f} s (airflow import {imp:.1f} s)")
    assert report["parse_s"] < PARSE_BUDGET_S


def test_no_heavy_top_level_imports(report: dict[str, Any]) -> None:
    # Spark/Feast/GX/MLflow/torch/xgboost belong inside tasks: the DAG processor re-parses every file often
    assert report["heavy_modules"] == []


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_house_rules(report: dict[str, Any], dag_id: str) -> None:
    dag = report["dags"][dag_id]
    assert "sluice" in dag["tags"] and len(dag["tags"]) >= 2
    assert dag["retries"] >= 2
    assert all(t["retries"] >= 2 for t in dag["tasks"].values())
    assert dag["execution_timeout"] not in ("None", "")
    assert dag["doc_md"].strip().startswith(f"### {dag_id}")
    assert Path(dag["fileloc"]).parent == REPO_ROOT / "dags"


def test_schedules_and_assets(report: dict[str, Any]) -> None:
    dags = report["dags"]
    # daily data intervals OR the landing flag's asset (see test_ingestion_watches_the_landing_flag)
    assert dags["ingestion"]["timetable"] == "AssetOrTimeSchedule"
    assert dags["ingestion"]["catchup"] is True
    assert dags["batch_inference"]["timetable"] == "CronDataIntervalTimetable"
    assert dags["ingestion"]["tasks"]["validate"]["outlets"] == ["sluice://validated/transactions"]
    assert dags["ingestion"]["tasks"]["ingest"]["outlets"] == []
    assert dags["features"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["training"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["canary_rollout"]["timetable"] == "AssetTriggeredTimetable"
    assert list(dags["training"]["tasks"]) == ["dataset", "train", "evaluate", "register", "champion_gate"]


def test_ingestion_watches_the_landing_flag(report: dict[str, Any], tmp_path: Path) -> None:
    """The ingestion DAG is woken by the flag file the ingestion service raises beside its store, through
    Airflow's stock FileDeleteTrigger in the triggerer; with ingest.landing off, daily intervals only."""
    from pipelines.config import load_params
    from pipelines.ingestion.notify import flag_path

    params = load_params(REPO_ROOT / "params.yaml")
    (watcher,) = report["dags"]["ingestion"]["watchers"]
    assert watcher["asset"] == "sluice://landing/events" and watcher["name"] == "landing_flag"
    assert watcher["classpath"] == "airflow.providers.standard.triggers.file.FileDeleteTrigger"
    assert watcher["kwargs"] == {
        "filepath": str(flag_path(params.resolve(params.ingest.landing.store))),
        "poke_interval": params.airflow.landing_poke_s,
    }
    assert all(not d["watchers"] for dag_id, d in report["dags"].items() if dag_id != "ingestion")

    off = make_project(tmp_path / "project", {"ingest": {"landing": {"enabled": False}}})
    result, _ = run_driver("dagbag", {}, airflow_env(tmp_path / "home", off.root / "params.yaml"), tmp_path)
    assert result["import_errors"] == {}
    ingestion = result["dags"]["ingestion"]
    assert ingestion["timetable"] == "CronDataIntervalTimetable" and ingestion["watchers"] == []


def test_training_schedule_from_params(tmp_path: Path) -> None:
    """airflow.training_schedule in params.yaml adds a cron schedule next to the retrain asset."""
    params = make_project(tmp_path / "project", {"airflow": {"training_schedule": "@weekly"}})
    result, _ = run_driver(
        "dagbag", {}, airflow_env(tmp_path / "home", params.root / "params.yaml"), tmp_path
    )
    assert result["import_errors"] == {}
    assert result["dags"]["training"]["timetable"] == "AssetOrTimeSchedule"


def test_bad_params_is_an_import_error(tmp_path: Path) -> None:
    """A broken params.yaml shows up as a DAG import error naming the file, not as silent defaults."""
    bad = tmp_path / "params.yaml"
    bad.write_text("data: {start: 2026-01-02, end: 2026-01-01}\n")
    result, _ = run_driver("dagbag", {}, airflow_env(tmp_path / "home", bad), tmp_path)
    assert set(result["import_errors"]) >= {str(REPO_ROOT / "dags" / "ingestion.py")}
    assert all("params.yaml" in err for err in result["import_errors"].values())
