"""The landing flag through a real Airflow (`airflow standalone`: scheduler, triggerer, dag-processor):
events posted to the ingestion API raise the flag, the triggerer's FileDeleteTrigger takes it and emits
the landing asset's event, and the scheduler starts an ingestion run that ingests the posted day. Nobody
triggers anything by hand, and nothing asks the ingestion service. Slow (a server start): not in CI.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from pipelines import io
from pipelines.ingestion.notify import flag_path
from tests.landing_world import http_events, post

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAY = dt.date(2026, 1, 5)


def test_posted_events_start_an_ingestion_run(standalone_factory: Any) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()  # no catchup run: only what the flag starts
    server, params = standalone_factory({"airflow": {"start_date": today, "landing_poke_s": 2}})
    server.wait_dag("ingestion")
    server.api("PATCH", "/api/v2/dags/ingestion", {"is_paused": False})
    events = http_events(params, DAY, 6)
    assert post(str(params.root / "params.yaml"), events)["events"] == 6
    assert flag_path(params.resolve(params.ingest.landing.store)).is_file()

    (run,) = server.wait_runs("ingestion", 1, timeout=300)
    assert run["run_type"] == "asset_triggered" and run["state"] == "success", server.tail()
    assert not flag_path(params.resolve(params.ingest.landing.store)).exists()  # the trigger took it
    raw = pd.read_parquet(io.partition_dir(params.paths.validated, DAY) / io.PART_FILE)
    assert {e["event_id"] for e in events} <= set(raw["event_id"])
