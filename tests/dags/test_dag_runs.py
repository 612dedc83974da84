"""The DAGs run for real with `dag.test()` (tasks in-process, a migrated SQLite DB in a temp AIRFLOW_HOME).

One driver process runs every scenario (Airflow, GX, Spark, Feast and MLflow are imported once):
- the chain ingestion -> features -> training on a tiny generated project: outputs on disk, a registered
  model version with alias `challenger` in MLflow;
- a corrupted day stops at the validation gate: nothing downstream, the inputs untouched;
- backfill idempotence: 3 days as one ranged run == 3 one-day runs, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines import io
from pipelines.config import Params
from pipelines.contract import CANONICAL_COLUMNS
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, run_driver

pytestmark = pytest.mark.e2e

VALIDATED_URI = "sluice://validated/transactions"
FEATURES_URI = "sluice://features/entity_activity"
D = dt.date
ONE = dt.timedelta(days=1)
BAD_DAY = D(2026, 1, 2)
FIRST, END = D(2026, 1, 1), D(2026, 1, 4)


def _midnight(day: dt.date) -> str:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).isoformat()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _partition_bytes(base: Path) -> dict[str, str]:
    return {str(f.relative_to(base)): _digest(f) for f in sorted(base.rglob("*")) if f.is_file()}


def _state(step: dict[str, Any]) -> str:
    return step["state"].rsplit(".", 1)[-1].lower()


def _tasks(step: dict[str, Any]) -> dict[str, str]:
    return {k: v.rsplit(".", 1)[-1].lower() for k, v in step["tasks"].items()}


def _csv_project(root: Path, bad_day: dt.date) -> tuple[Params, Path]:
    """A project whose source is a CSV log; `bad_day` has negative amounts (a gate must refuse it)."""
    from pipelines.sources import synthetic as source

    base = make_project(root)
    events = source.generate(base.ingest.synthetic, base.data.start, base.data.start + 3 * ONE)
    on_bad_day = events["event_timestamp"].dt.date == bad_day
    assert on_bad_day.any()
    events.loc[on_bad_day, "amount"] = -events.loc[on_bad_day, "amount"].abs() - 1.0
    csv = root / "data" / "external" / "transactions.csv"
    csv.parent.mkdir(parents=True)
    events.to_csv(csv, index=False)
    columns = {c: c for c in CANONICAL_COLUMNS}
    params = make_project(root, {"ingest": {"source": {"kind": "csv", "path": str(csv), "columns": columns}}})
    return params, csv


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, airflow_db_template: Path) -> dict[str, Any]:
    """Runs all steps in one driver; each test reads its own steps from the result."""
    tmp = tmp_path_factory.mktemp("dag-runs")
    home = tmp / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    chain = make_project(tmp / "chain")
    bad, csv = _csv_project(tmp / "bad", BAD_DAY)
    ranged, daily = make_project(tmp / "ranged"), make_project(tmp / "daily")
    csv_digest = _digest(csv)

    def at(params: Params, **step: Any) -> dict[str, Any]:
        return {"dag": "ingestion", "params": str(params.root / "params.yaml"), **step}

    s, e = chain.data.start.isoformat(), chain.data.end.isoformat()
    steps: list[dict[str, Any]] = [
        # 0-2: the chain; ingestion of the whole tiny range in one run (trigger-form start/end)
        at(chain, conf={"start": s, "end": e}),
        # features gets its dates from the asset event's extra, as an asset-triggered run does
        {"dag": "features", "conf_from_asset": VALIDATED_URI},
        # a manual training run with nothing given trains on params data.start/end
        {"dag": "training"},
        # 3: the corrupted day; its daily run's data interval is [BAD_DAY, BAD_DAY + 1)
        at(bad, logical_date=_midnight(BAD_DAY + ONE)),
        # 4: [FIRST, END) as one ranged run; 5-7: the same days as three daily runs
        at(ranged, conf={"start": FIRST.isoformat(), "end": END.isoformat()}),
        *[at(daily, logical_date=_midnight(day + ONE)) for day in io.days(FIRST, END)],
    ]
    env = airflow_env(home, chain.root / "params.yaml")
    result, output = run_driver("run", {"steps": steps}, env, tmp / "driver", timeout=1200)
    timing = [(st["dag"], round(st["seconds"], 1)) for st in result["steps"]]
    print(f"dag.test seconds per run: {timing}")
    return {
        "result": result,
        "output": output,
        "chain": chain,
        "bad": bad,
        "csv": csv,
        "csv_digest": csv_digest,
        "ranged": ranged,
        "daily": daily,
    }


def test_chain_ingestion_features_training(scenario: dict[str, Any]) -> None:
    ingestion, features, training = scenario["result"]["steps"][:3]
    params: Params = scenario["chain"]
    seconds = sum(st["seconds"] for st in (ingestion, features, training))
    print(f"dag.test chain ingestion -> features -> training: {seconds:.1f} s")
    assert [_state(st) for st in (ingestion, features, training)] == ["success"] * 3, scenario["output"][
        -8000:
    ]
    assert _tasks(ingestion) == {"ingest": "success", "validate": "success"}
    assert _tasks(features) == {"compute_features": "success", "materialize": "success"}
    assert _tasks(training) == dict.fromkeys(
        ["dataset", "train", "evaluate", "register", "champion_gate"], "success"
    )

    # the asset events carry the processed range: that is how the asset-triggered DAG gets its dates
    start, end = params.data.start.isoformat(), params.data.end.isoformat()
    assert [(ev["uri"], ev["extra"]) for ev in ingestion["asset_events"]] == [
        (VALIDATED_URI, {"start": start, "end": end, "ranges": [[start, end]]})
    ]
    assert features["conf"] == {"start": start, "end": end}
    (feat_event,) = features["asset_events"]
    assert feat_event["uri"] == FEATURES_URI and feat_event["extra"]["ranges"] == [[start, end]]
    # a gated challenger is announced: that event starts the canary_rollout DAG
    assert [(ev["uri"], ev["extra"]) for ev in training["asset_events"]] == [
        ("sluice://challenger/gated", {"start": start, "end": end})
    ]
    _assert_outputs(params)


def _assert_outputs(params: Params) -> None:
    paths = params.paths
    days = set(io.days(params.data.start, params.data.end))
    for base in (paths.raw, paths.validated, paths.features):
        have = {
            io.partition_date(p) for p in io.existing_partitions(base, params.data.start, params.data.end)
        }
        assert have == days, f"{base}: partitions {sorted(have)}"
    assert not paths.quarantine.exists() or not any(paths.quarantine.iterdir())
    assert (paths.feast / "online.db").is_file()
    for split in ("train", "valid", "test"):
        assert (paths.dataset / f"{split}.parquet").is_file()
    release = json.loads((paths.models / "release.json").read_text())
    assert (paths.reports / "metrics.json").is_file()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=params.tracking_uri, registry_uri=params.tracking_uri)
    name = params.register_.model_name
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.version == versions[0].version
    assert challenger.run_id == release["run_id"]


def test_corrupted_day_stops_at_the_gate(scenario: dict[str, Any]) -> None:
    params: Params = scenario["bad"]
    run = scenario["result"]["steps"][3]
    output = scenario["output"]
    assert _state(run) == "failed"
    # failed, not up_for_retry: a refused partition is not retried (AirflowFailException)
    assert _tasks(run) == {"ingest": "success", "validate": "failed"}
    assert "GateFailed" in output and f"date={BAD_DAY}" in output and "amount" in output
    # nothing downstream: no asset event, so no features run is queued by it
    assert run["asset_events"] == []
    paths = params.paths
    assert not io.partition_dir(paths.validated, BAD_DAY).exists()
    quarantined = io.partition_dir(paths.quarantine, BAD_DAY)
    assert (quarantined / io.PART_FILE).is_file()
    assert any(f.suffix == ".json" for f in quarantined.iterdir())
    # the inputs are untouched: the user's CSV, and the raw partition ingest wrote
    assert _digest(scenario["csv"]) == scenario["csv_digest"]
    raw = io.partition_dir(paths.raw, BAD_DAY) / io.PART_FILE
    assert _digest(raw) == _digest(quarantined / io.PART_FILE)
    assert not paths.features.exists()


def test_backfill_range_equals_one_day_runs(scenario: dict[str, Any]) -> None:
    """The same 3 days as one ranged run and as 3 daily runs give byte-identical partitions."""
    runs = scenario["result"]["steps"][4:]
    assert [_state(st) for st in runs] == ["success"] * 4, scenario["output"][-6000:]
    extras = [ev["extra"] for st in runs for ev in st["asset_events"]]
    expected = [(FIRST, END)] + [(d, d + ONE) for d in io.days(FIRST, END)]
    assert extras == [
        {"start": s.isoformat(), "end": e.isoformat(), "ranges": [[s.isoformat(), e.isoformat()]]}
        for s, e in expected
    ]
    ranged, daily = scenario["ranged"].paths, scenario["daily"].paths
    for sub in ("raw", "validated"):
        a, b = _partition_bytes(getattr(ranged, sub)), _partition_bytes(getattr(daily, sub))
        assert len(a) == 3 and a == b, f"{sub}: ranged {a} != daily {b}"
