"""The monitoring DAG for real (`dag.test()` in a child process): drift -> retrain asset event (with the
training window in its extra) (the training DAG's trigger); a second drifted window inside the cooldown
skips the retrain task and emits nothing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import airflow_db_template, airflow_env, run_driver  # noqa: F401 (fixture)
from tests.test_monitor_stage import _project, _write_log

pytestmark = pytest.mark.e2e

RETRAIN_URI = "sluice://retrain"


@pytest.mark.slow  # ~90 s here: Airflow import, DB copy, three dag.test() runs
def test_drift_emits_one_retrain_event_and_queues_training(
    tmp_path: Path,
    airflow_db_template: Path,  # noqa: F811 (the imported fixture)
) -> None:
    home = tmp_path / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    params = _project(tmp_path / "project")
    _write_log(params, dt.date(2026, 1, 1), dt.date(2026, 1, 14))
    params_file = str(params.root / "params.yaml")
    steps: list[dict[str, Any]] = [
        {"dag": "monitoring", "conf": {"start": "2026-01-08", "end": "2026-01-10"}},  # before drift
        {"dag": "monitoring", "conf": {"start": "2026-01-11", "end": "2026-01-13"}},  # drift -> retrain
        {"dag": "monitoring", "conf": {"start": "2026-01-12", "end": "2026-01-14"}},  # cooldown
    ]
    result, out = run_driver("run", {"steps": steps}, airflow_env(home, Path(params_file)), tmp_path)
    calm, drift, cooldown = result["steps"]
    assert all(s["state"] == "success" for s in result["steps"]), out[-4000:]
    assert calm["tasks"] == {"monitor": "success", "retrain": "skipped"}
    assert calm["asset_events"] == [] and cooldown["asset_events"] == []
    assert cooldown["tasks"]["retrain"] == "skipped"
    assert drift["tasks"] == {"monitor": "success", "retrain": "success"}
    (event,) = drift["asset_events"]
    assert event["uri"].rstrip("/") == RETRAIN_URI and event["source_dag_id"] == "monitoring"
    assert event["extra"]["start"] == "2025-11-14" and event["extra"]["end"] == "2026-01-13"
    assert event["extra"]["reasons"]
    # DAGs are paused at creation here, so nothing is queued; tests/dags/test_retrain_loop.py unpauses them
    # and follows the event into the training DAG
