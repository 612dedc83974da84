"""Issue 13's end-to-end judgement: events and labels posted over HTTP for a few days reach training and the
monitor through the DAGs (`dag.test()`, one driver process, tiny data).

The days are ingested as usual first; then a producer posts events for three of them and their labels
(known 30 h after each event) to the ingestion API (tests.landing_world: the FastAPI app in-process); a run
without dates (what the landing flag's asset starts) ingests exactly those days, features follows its
asset event, training's dataset holds the posted events with their posted labels, the champion scores the
days (batch_inference) and the monitor's live metrics count the posted labels that had arrived by its
as-of time, from the landing store.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines import io
from pipelines.config import Params
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, run_driver
from tests.landing_world import http_world

pytestmark = pytest.mark.e2e

VALIDATED_URI = "sluice://validated/transactions"
D = dt.date
POSTED_DAYS = [D(2026, 1, 10), D(2026, 1, 11), D(2026, 1, 12)]
WINDOW = ("2026-01-10", "2026-01-13")


def _state(step: dict[str, Any]) -> str:
    return step["state"].rsplit(".", 1)[-1].lower()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, airflow_db_template: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("landing-e2e")
    home = tmp / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    params = make_project(
        tmp / "project",
        {
            "ingest": {"synthetic": {"n_entities": 80, "label_delay_hours": 24}},
            "monitor": {"min_labels": 20},
            # tiny data: only the champion gate's bar for hand-made obvious frauds is lowered
            "rollout": {"gate": {"mft_min_fraud_flagged": 0.3}},
        },
    )
    events, labels = http_world(params, POSTED_DAYS, 40)
    p = str(params.root / "params.yaml")
    start, end = params.data.start.isoformat(), params.data.end.isoformat()
    steps: list[dict[str, Any]] = [
        # 0-1: the days as the source has them, ingested and featurized
        {"dag": "ingestion", "conf": {"start": start, "end": end}},
        {"dag": "features", "conf_from_asset": VALIDATED_URI},
        # 2-4: events and labels over HTTP; the landed run; features of what it validated
        {"call": "tests.landing_world:post", "args": {"params_path": p, "events": events, "labels": labels}},
        {"dag": "ingestion", "logical_date": None},
        {"dag": "features", "conf_from_asset": VALIDATED_URI},
        # 5: training on the whole range (the first version becomes the champion)
        {"dag": "training"},
        # 6-7: the champion scores the posted days; the monitor's window is theirs (as-of: its end)
        {"dag": "batch_inference", "conf": {"start": WINDOW[0], "end": WINDOW[1]}},
        {"dag": "monitoring", "conf": {"start": WINDOW[0], "end": WINDOW[1]}},
    ]
    env = airflow_env(home, params.root / "params.yaml")
    result, output = run_driver("run", {"steps": steps}, env, tmp / "driver", timeout=1500)
    timing = [(st.get("dag", "post"), round(st.get("seconds", 0), 1)) for st in result["steps"]]
    print("dag.test seconds per run:", timing)
    return {"steps": result["steps"], "output": output, "params": params, "events": events, "labels": labels}


def test_posted_events_reach_training_with_their_posted_labels(world: dict[str, Any]) -> None:
    steps, params = world["steps"], world["params"]
    runs = [st for st in steps if "dag" in st]
    assert [_state(st) for st in runs] == ["success"] * len(runs), world["output"][-8000:]
    posted = steps[2]["result"]
    assert posted["events"] == len(world["events"]) == 120 and posted["labels"] == 120

    landed = steps[3]
    assert [ev["extra"]["ranges"] for ev in landed["asset_events"]] == [[["2026-01-10", "2026-01-13"]]]
    assert steps[4]["conf"] == {"start": "2026-01-10", "end": "2026-01-13"}

    truth = {lb["event_id"]: lb["label"] for lb in world["labels"]}
    dataset = pd.concat(
        [pd.read_parquet(params.paths.dataset / f"{s}.parquet") for s in ("train", "valid", "test")]
    )
    seen = dataset[dataset["event_id"].isin(truth)]
    assert set(seen["event_id"]) == set(truth)  # every posted event, once
    assert len(seen) == len(truth)
    assert dict(zip(seen["event_id"], seen["label"], strict=True)) == truth
    assert sum(truth.values()) >= 1  # the posted days carry fraud the model learns from
    for day in POSTED_DAYS:  # and the source's events of those days are still there
        raw = pd.read_parquet(io.partition_dir(params.paths.raw, day) / io.PART_FILE)
        assert raw["event_id"].str.startswith("tx").sum() > 100


def test_the_monitor_counts_the_posted_labels_arrived_by_its_as_of(world: dict[str, Any]) -> None:
    params: Params = world["params"]
    summary = json.loads((params.paths.reports / "monitoring" / "2026-01-12" / "summary.json").read_text())
    assert summary["labels_source"] == "landing_store"
    as_of = dt.datetime(2026, 1, 13, tzinfo=dt.UTC)
    arrived = [lb for lb in world["labels"] if dt.datetime.fromisoformat(lb["labelled_at"]) <= as_of]
    # the posted labels known by 2026-01-13 00:00 (30 h after their events: those of the 10th and 11th,
    # none of the 12th's), each joined to the champion's score of its event
    assert 0 < len(arrived) < len(world["labels"])
    counts = summary["labelled_by_source"]
    assert counts["landing_store"] == len(arrived)
    assert counts["events"] > 0 and summary["rows"]["labelled"] == sum(counts.values())
    assert summary["live"]["overall"]["n"] == summary["rows"]["labelled"]
