"""The ingestion DAG picks up what the ingestion service landed, as a run the landing flag's asset starts:
a run without dates (dag.test(logical_date=None): no data interval, like an asset-triggered run) ingests
the days the landing store says no ingest run has taken, validates them and emits the validated asset with
exactly those ranges; with nothing new it does nothing; a label posted later makes its day pending again;
a landed day the suite refuses stops at the gate. Events are posted over HTTP (tests.landing_world).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines import io
from pipelines.config import Params
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, run_driver
from tests.landing_world import http_events, label

pytestmark = pytest.mark.e2e

VALIDATED_URI = "sluice://validated/transactions"
D = dt.date
EARLY, LATE, REFUSED = D(2026, 1, 3), D(2026, 1, 9), D(2026, 1, 10)
POST = "tests.landing_world:post"
DIGESTS = "tests.landing_world:raw_digests"


def _state(step: dict[str, Any]) -> str:
    return step["state"].rsplit(".", 1)[-1].lower()


def _tasks(step: dict[str, Any]) -> dict[str, str]:
    return {k: v.rsplit(".", 1)[-1].lower() for k, v in step["tasks"].items()}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, airflow_db_template: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dag-landing")
    home = tmp / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    good = make_project(tmp / "good")
    # every day has ~230 events: a suite asking for 1,000 refuses the landed day (the failure case)
    bad = make_project(tmp / "bad", {"validate": {"min_rows": 1000}})
    early, late = http_events(good, EARLY, 5), http_events(good, LATE, 4)
    g, b = str(good.root / "params.yaml"), str(bad.root / "params.yaml")

    def landed_run(params: str) -> dict[str, Any]:
        return {"dag": "ingestion", "params": params, "logical_date": None}

    steps: list[dict[str, Any]] = [
        {"call": POST, "args": {"params_path": g, "events": early + late}},  # 0
        landed_run(g),  # 1: both days
        {"call": DIGESTS, "args": {"params_path": g}},  # 2
        landed_run(g),  # 3: nothing new
        {"call": DIGESTS, "args": {"params_path": g}},  # 4
        # 5-6: a chargeback for one early event: that day only, its label replaced
        {"call": POST, "args": {"params_path": g, "labels": [label(early[0], 1, 30)]}},
        landed_run(g),
        {"call": POST, "args": {"params_path": b, "events": http_events(bad, REFUSED, 3)}},  # 7
        landed_run(b),  # 8
    ]
    result, output = run_driver("run", {"steps": steps}, airflow_env(home, good.root / "params.yaml"), tmp)
    return {
        "steps": result["steps"],
        "output": output,
        "good": good,
        "bad": bad,
        "early": early,
        "late": late,
    }


def _ids(params: Params, base: Path, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(io.partition_dir(base, day) / io.PART_FILE)


def test_a_run_without_dates_ingests_the_landed_days(scenario: dict[str, Any]) -> None:
    steps, params = scenario["steps"], scenario["good"]
    assert steps[0]["result"]["events"] == 9
    run = steps[1]
    assert _state(run) == "success", scenario["output"][-6000:]
    assert _tasks(run) == {"ingest": "success", "validate": "success"}
    # the exact days, not the span between them: features recomputes only what changed
    ((uri, extra),) = [(ev["uri"], ev["extra"]) for ev in run["asset_events"]]
    assert uri == VALIDATED_URI
    assert extra == {
        "start": "2026-01-03",
        "end": "2026-01-10",
        "ranges": [["2026-01-03", "2026-01-04"], ["2026-01-09", "2026-01-10"]],
    }
    paths = params.paths
    for base in (paths.raw, paths.validated):
        have = sorted(io.partition_date(p) for p in io.existing_partitions(base, EARLY, REFUSED))
        assert have == [EARLY, LATE]
    for day, posted in ((EARLY, scenario["early"]), (LATE, scenario["late"])):
        raw = _ids(params, paths.raw, day)
        assert {e["event_id"] for e in posted} <= set(raw["event_id"])
        assert raw["event_id"].str.startswith("tx").sum() > 100  # the source's events of the day too
    # no label posted for the late day: its landed events carry ingest.landing.unlabelled
    late = _ids(params, paths.raw, LATE)
    assert (late.loc[late["event_id"].str.startswith("http"), "label"] == 0).all()


def test_a_second_run_with_nothing_new_does_nothing(scenario: dict[str, Any]) -> None:
    steps = scenario["steps"]
    run = steps[3]
    assert _state(run) == "success"
    assert _tasks(run) == {"ingest": "skipped", "validate": "skipped"}
    assert run["asset_events"] == []
    assert steps[4]["result"] == steps[2]["result"] and len(steps[2]["result"]) == 2


def test_a_label_posted_later_reingests_its_day_only(scenario: dict[str, Any]) -> None:
    steps, params, early = scenario["steps"], scenario["good"], scenario["early"]
    assert steps[5]["result"] == {"events": 0, "labels": 1, "pending_labels": []}
    run = steps[6]
    assert _tasks(run) == {"ingest": "success", "validate": "success"}
    assert [ev["extra"]["ranges"] for ev in run["asset_events"]] == [[["2026-01-03", "2026-01-04"]]]
    for base in (params.paths.raw, params.paths.validated):
        day = _ids(params, base, EARLY).set_index("event_id")["label"]
        assert day[early[0]["event_id"]] == 1 and day[early[1]["event_id"]] == 0


def test_a_landed_day_the_suite_refuses_stops_at_the_gate(scenario: dict[str, Any]) -> None:
    steps, params = scenario["steps"], scenario["bad"]
    assert steps[7]["result"]["events"] == 3
    run = steps[8]
    assert _state(run) == "failed"
    # failed, not up_for_retry: a refused partition is not retried; nothing downstream is told
    assert _tasks(run) == {"ingest": "success", "validate": "failed"}
    assert run["asset_events"] == []
    assert "GateFailed" in scenario["output"] and f"date={REFUSED}" in scenario["output"]
    paths = params.paths
    assert not io.partition_dir(paths.validated, REFUSED).exists()
    assert (io.partition_dir(paths.quarantine, REFUSED) / io.PART_FILE).is_file()
