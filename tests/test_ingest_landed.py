"""The ingest stage with landed events beside its configured log: the same bytes whichever way an event came
(the log, POST /v1/ingest/events, POST /v1/labels, an uploaded batch), reruns idempotent, ranges."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.ingest_world import as_json_events, canonical_events, log_frame, log_project
from pipelines import ingest
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.ingestion.service import Ingestion
from pipelines.sections import SyntheticParams

D = dt.date
START, END = D(2026, 1, 1), D(2026, 1, 4)
SMALL = SyntheticParams(seed=9, n_entities=40, n_merchants=25, txns_per_entity_per_day=2.0, fraud_rate=0.05)


def digests(params: Params) -> dict[str, str]:
    raw = params.paths.raw
    return {
        str(p.relative_to(raw)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(raw.rglob("*.parquet"))
    }


def land(
    params: Params, events: list[dict], labels: list[dict] | None = None, batch: bytes | None = None
) -> None:
    """Post events (100 per request), labels and a CSV batch through the service's library."""
    ing = Ingestion(params)
    ing.start()
    try:
        for i in range(0, len(events), 100):
            asyncio.run(ing.land_events(json.dumps(events[i : i + 100]).encode()))
        if labels:
            asyncio.run(ing.land_labels(json.dumps(labels).encode()))
        if batch is not None:
            asyncio.run(ing.land_batch(batch, "csv", "rest.csv"))
    finally:
        ing.close()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Params]:
    """The log (in its own layout), its events as the ingest stage reads them, and the all-log project."""
    frame = log_frame(SMALL, START, END)
    whole = log_project(tmp_path_factory.mktemp("whole"), frame)
    ingest.run(whole, START, END)
    return frame, canonical_events(whole.resolve(whole.ingest.source.path)), whole


@pytest.mark.integration
def test_a_partition_is_the_same_bytes_whichever_way_its_events_came(
    log: tuple[pd.DataFrame, pd.DataFrame, Params], tmp_path: Path
) -> None:
    frame, events, whole = log
    expected = digests(whole)
    assert len(expected) == 3
    odd = frame.index % 2 == 1

    # half the log; the other half posted as events, half of those with their label sent later
    posted = as_json_events(events[odd], with_label=False)
    labels = [
        {"event_id": e["event_id"], "label": int(lbl), "labelled_at": "2026-02-01T00:00:00Z"}
        for e, lbl in zip(posted, events[odd]["label"], strict=True)
        if lbl == 1 or e["event_id"] < "8"  # the positives and about half of the rest; the others: 0
    ]
    http = log_project(tmp_path / "http", frame[~odd])
    land(http, posted, labels)
    summary = ingest.run(http, START, END)
    assert summary["landed_rows"] == int(odd.sum()) and summary["rows"] == len(frame)
    assert digests(http) == expected
    ingest.run(http, START, END)  # a rerun: same bytes, nothing duplicated
    assert digests(http) == expected

    # the other half uploaded as a batch in the log's own layout, one event also posted (a duplicate)
    batch = log_project(tmp_path / "batch", frame[~odd])
    land(batch, as_json_events(events[odd].head(1)), batch=frame[odd].to_csv(index=False).encode())
    ingest.run(batch, START, END)
    assert digests(batch) == expected


@pytest.mark.integration
def test_a_log_event_also_posted_is_kept_once(
    log: tuple[pd.DataFrame, pd.DataFrame, Params], tmp_path: Path
) -> None:
    frame, events, whole = log
    both = log_project(tmp_path / "both", frame)
    land(both, as_json_events(events.head(50)))
    summary = ingest.run(both, START, END)
    assert summary["rows"] == len(frame) and summary["landed_rows"] == 50
    assert digests(both) == digests(whole)


@pytest.mark.unit
def test_landed_events_count_for_a_range_outside_the_log(tmp_path: Path) -> None:
    """The log covers Jan 1-3; events posted for Jan 10 are ingested, and the log's range error stays for a
    range with neither (failure case), and when the landing store is switched off."""
    frame = log_frame(SMALL, START, END)
    params = log_project(tmp_path / "p", frame)
    late = {"event_id": "late-1", "entity_id": "4000000000000001", "event_timestamp": "2026-01-10T08:00:00Z"}
    land(params, [late | {"amount": 12.0, "label": 1}])
    summary = ingest.run(params, D(2026, 1, 10), D(2026, 1, 11))
    assert summary["rows_per_day"] == {"2026-01-10": 1} and summary["landed_rows"] == 1
    with pytest.raises(
        StageError, match=r"events dated 2026-01-01 to 2026-01-03, none in the requested range"
    ):
        ingest.run(params, D(2026, 1, 20), D(2026, 1, 21))
    off = params.model_copy(
        update={
            "ingest": params.ingest.model_copy(
                update={"landing": params.ingest.landing.model_copy(update={"enabled": False})}
            )
        }
    )
    with pytest.raises(StageError, match="none in the requested range"):
        ingest.run(off, D(2026, 1, 10), D(2026, 1, 11))
