"""The monitoring loop end to end through the DAGs (`dag.test()`, one driver process, tiny data):

the generator's drift mode changes the world from DRIFT_FROM on; a champion trained before it scores the
drifted days (batch_inference); the monitoring DAG detects the drift and emits `sluice://retrain`, which
queues the training DAG; training on the event's window registers a new challenger that passes the
offline gate (`sluice://challenger/gated`, the canary's trigger); a second drifted window inside the
cooldown is still flagged but emits nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import Params
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, run_driver

pytestmark = pytest.mark.e2e

VALIDATED_URI = "sluice://validated/transactions"
RETRAIN_URI = "sluice://retrain"
GATED_URI = "sluice://challenger/gated"
DRIFT_FROM = "2026-01-09"


def _state(step: dict[str, Any]) -> str:
    return step["state"].rsplit(".", 1)[-1].lower()


def _tasks(step: dict[str, Any]) -> dict[str, str]:
    return {k: v.rsplit(".", 1)[-1].lower() for k, v in step["tasks"].items()}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, airflow_db_template: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("retrain-loop")
    home = tmp / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    params = make_project(
        tmp / "project",
        {
            "data": {"start": "2026-01-01", "end": "2026-01-15"},
            "ingest": {
                "synthetic": {
                    "n_entities": 100,
                    "label_delay_hours": 24,
                    "drift": {"enabled": True, "start": DRIFT_FROM, "amount_scale": 3.0},
                }
            },
            "monitor": {"min_labels": 20, "cooldown_days": 7, "retrain_window_days": 10},
            # a 40-tree model on 10 tiny days flags about half of the hand-made obvious frauds: the gate
            # runs in full (vs the champion, behavioural checks); only this bar is lowered for tiny data
            "rollout": {"gate": {"mft_min_fraud_flagged": 0.3}},
        },
    )
    steps: list[dict[str, Any]] = [
        # 0-1: every day, before and after the drift, ingested and featurized
        {"dag": "ingestion", "conf": {"start": "2026-01-01", "end": "2026-01-15"}},
        {"dag": "features", "conf_from_asset": VALIDATED_URI},
        # 2: the champion knows only the world before the drift (the first version becomes champion)
        {"dag": "training", "conf": {"start": "2026-01-01", "end": DRIFT_FROM}},
        # 3-4: it scores the drifted days; monitoring compares them with its training window
        {"dag": "batch_inference", "conf": {"start": DRIFT_FROM, "end": "2026-01-13"}},
        {"dag": "monitoring", "conf": {"start": DRIFT_FROM, "end": "2026-01-13"}},
        # 5: the training run the retrain event asks for (its dates = the event's extra)
        {"dag": "training", "conf_from_asset": RETRAIN_URI},
        # 6-7: the next drifted days, two days later: inside the cooldown
        {"dag": "batch_inference", "conf": {"start": "2026-01-13", "end": "2026-01-15"}},
        {"dag": "monitoring", "conf": {"start": "2026-01-13", "end": "2026-01-15"}},
    ]
    env = airflow_env(home, params.root / "params.yaml")
    # unpaused consumers get queued by asset events, as the scheduler would start them
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    result, output = run_driver("run", {"steps": steps}, env, tmp / "driver", timeout=1500)
    print("dag.test seconds per run:", [(st["dag"], round(st["seconds"], 1)) for st in result["steps"]])
    return {"result": result, "output": output, "params": params}


def test_drift_triggers_a_retrain_that_yields_a_gated_challenger(loop: dict[str, Any]) -> None:
    steps, output = loop["result"]["steps"], loop["output"]
    params: Params = loop["params"]
    assert [_state(st) for st in steps] == ["success"] * len(steps), output[-8000:]

    monitoring = steps[4]
    assert _tasks(monitoring) == {"monitor": "success", "retrain": "success"}
    (event,) = monitoring["asset_events"]
    assert event["uri"].rstrip("/") == RETRAIN_URI and event["source_dag_id"] == "monitoring"
    # retrain_window_days before the monitored window's end
    assert (event["extra"]["start"], event["extra"]["end"]) == ("2026-01-03", "2026-01-13")
    assert any("drift" in r for r in event["extra"]["reasons"]), event["extra"]
    # the event queues the training DAG: the scheduler's next run of it consumes this event
    assert ("training", RETRAIN_URI) in {(dag_id, uri.rstrip("/")) for dag_id, uri in monitoring["queued"]}

    summary = json.loads((params.paths.reports / "monitoring" / "2026-01-12" / "summary.json").read_text())
    assert summary["drift"]["dataset_drift"] and summary["decision"]["retrain"]
    assert summary["champion"]["version"] == "1" and summary["current_source"] == "batch_predictions"

    retraining = steps[5]
    assert retraining["conf"] == {"start": "2026-01-03", "end": "2026-01-13"}
    assert set(_tasks(retraining).values()) == {"success"}
    assert [ev["uri"].rstrip("/") for ev in retraining["asset_events"]] == [GATED_URI]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=params.tracking_uri, registry_uri=params.tracking_uri)
    name = params.register_.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    challenger = client.get_model_version_by_alias(name, "challenger")
    # a new version, trained on the retrain window; it only serves after the canary promotes it
    assert str(champion.version) == "1" and str(challenger.version) == "2"
    assert challenger.tags["train_start"][:10] == "2026-01-03"
    assert challenger.tags["train_end"][:10] == "2026-01-13"
    assert challenger.tags["gate.verdict"] == "pass"
    gate = json.loads(challenger.tags["gate.report"])
    assert gate["champion_version"] == "1"  # judged against the champion on the drifted test days


def test_cooldown_suppresses_a_second_retrain(loop: dict[str, Any]) -> None:
    params: Params = loop["params"]
    again = loop["result"]["steps"][7]
    assert _tasks(again) == {"monitor": "success", "retrain": "skipped"}
    assert again["asset_events"] == []
    summary = json.loads((params.paths.reports / "monitoring" / "2026-01-14" / "summary.json").read_text())
    decision = summary["decision"]
    # still drifted against the champion's window, but a retrain was decided 2 days ago
    assert decision["triggered"] and decision["suppressed_by_cooldown"] and not decision["retrain"]
    assert decision["last_retrain"] == "2026-01-13"
    events = [e for e in loop["result"]["asset_events"] if e["uri"].rstrip("/") == RETRAIN_URI]
    assert len(events) == 1
