"""The monitor's labels from the landing store: labels posted over HTTP (POST /v1/labels) are the delayed
ground truth of their events from `labelled_at` on (the latest by the as-of time counts); the other events
go by their own label after the label delay; without a landing store nothing changes.

Unit tests on tiny frames, then the monitor's inputs over a prediction log and a real landing store
(labels landed through the ingestion service's library), then one stage run for the summary."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines import io, monitor
from pipelines.config import Params
from pipelines.ingestion.labels import read_labels
from pipelines.ingestion.service import Ingestion
from pipelines.monitoring import inputs
from pipelines.monitoring.live import arrived_labels, join_labels, label_sources, live_metrics
from tests.test_monitor_stage import _project, _Registry, _use_registry, _write_log

D = dt.date
UTC = dt.UTC
START, END = D(2026, 1, 8), D(2026, 1, 10)
AS_OF = dt.datetime(2026, 1, 10, tzinfo=UTC)


def _frame(**cols: Any) -> pd.DataFrame:
    return pd.DataFrame(cols)


@pytest.mark.unit
def test_posted_labels_outrank_the_events_own_and_count_from_labelled_at() -> None:
    as_of = dt.datetime(2026, 1, 5, tzinfo=UTC)
    ts = pd.to_datetime(
        ["2026-01-01T00:00", "2026-01-01T00:00", "2026-01-01T00:00", "2026-01-04T12:00"], utc=True
    )
    events = _frame(event_id=["a", "b", "c", "d"], event_timestamp=ts, label=[0, 0, 1, 0])
    # a: posted 1 (outranks its 0); b: posted only after as_of (none yet, though its delay passed);
    # c: nothing posted (its own label after the delay); d: posted already, before its delay ended
    posted = _frame(event_id=["a", "b", "d"], label=pd.array([1, pd.NA, 1], dtype="Int64"))
    got = arrived_labels(events, as_of, delay_hours=24, posted=posted)
    assert dict(zip(got["event_id"], got["label"], strict=True)) == {"a": 1, "c": 1, "d": 1}
    assert got["label"].dtype == "int64"
    # no landing store: the old rule alone
    old = arrived_labels(events, as_of, delay_hours=24)
    assert dict(zip(old["event_id"], old["label"], strict=True)) == {"a": 0, "b": 0, "c": 1}
    assert arrived_labels(events, as_of, 24, posted.iloc[0:0]).equals(old)

    preds = _frame(event_id=["a", "c", "d", "e"], score=[0.9, 0.2, 0.8, 0.1], decision=[1, 0, 1, 0])
    joined = join_labels(preds, got)
    assert label_sources(joined, posted) == {
        "source": "landing_store",
        "labelled": {"landing_store": 2, "events": 1},
    }
    assert label_sources(join_labels(preds, old), None) == {
        "source": "events",
        "labelled": {"landing_store": 0, "events": 2},
    }


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """A project with validated events and a prediction log for Jan 1-13 (tests.test_monitor_stage)."""
    params = _project(tmp_path_factory.mktemp("labels") / "project")
    _write_log(params, D(2026, 1, 1), D(2026, 1, 14))
    return params


def _own_store(params: Params, store: Path, enabled: bool = True) -> Params:
    """`params` with a landing store of its own (the tests share one logged project)."""
    landing = params.ingest.landing.model_copy(update={"store": str(store), "enabled": enabled})
    return params.model_copy(update={"ingest": params.ingest.model_copy(update={"landing": landing})})


def _post(params: Params, labels: list[dict[str, Any]]) -> None:
    """Labels through the ingestion service's library (what POST /v1/labels calls), 1,000 a request."""
    ing = Ingestion(params)
    ing.start()
    try:
        for i in range(0, len(labels), 1000):
            asyncio.run(ing.land_labels(json.dumps(labels[i : i + 1000]).encode()))
    finally:
        ing.close()


def _posted(events: pd.DataFrame, labels: Any, after: dt.timedelta) -> list[dict[str, Any]]:
    at = pd.to_datetime(events["event_timestamp"], utc=True) + after
    return [
        {"event_id": e, "label": int(v), "labelled_at": t.isoformat()}
        for e, v, t in zip(events["event_id"], labels, at, strict=True)
    ]


def _live(params: Params, as_of: dt.datetime = AS_OF) -> tuple[dict[str, Any], dict[str, Any]]:
    current, _ = inputs.current_frame(params, START, END)
    window = inputs.label_window(params, START, END, current, as_of=as_of)
    joined = join_labels(window.predictions, arrived_labels(window.events, as_of, 24, window.posted))
    return live_metrics(joined)["overall"], label_sources(joined, window.posted)


@pytest.mark.integration
def test_posted_labels_drive_the_live_metrics(logged: Params, tmp_path: Path) -> None:
    params = _own_store(logged, tmp_path / "landing.db")
    before, source = _live(params)  # no landing store: the events' labels after 24 h
    assert source["source"] == "events" and before["n"] > 500 and 0 < before["recall"] < 1

    # the same labels posted when the events' delay ends: exactly the same metrics, now from the store
    events = io.read_partitions(params.paths.validated, D(2026, 1, 1), END)
    _post(params, _posted(events, events["label"], dt.timedelta(hours=24)))
    same, source = _live(params)
    assert same == before
    assert source == {"source": "landing_store", "labelled": {"landing_store": before["n"], "events": 0}}

    # corrections an hour before the as-of time, for labels that had arrived by then: every positive
    # turns out legitimate, and the flagged negatives fraud; recall moves, and only from then on
    at = AS_OF - dt.timedelta(hours=1)
    earlier = _live(params, at - dt.timedelta(hours=1))
    preds, _ = inputs.current_frame(params, START, END)
    arrived = events[pd.to_datetime(events["event_timestamp"], utc=True) + dt.timedelta(hours=24) <= at]
    flagged = arrived["event_id"].isin(preds.loc[preds["decision"] == 1, "event_id"])
    flips = arrived[(arrived["label"] == 1) | flagged]
    _post(
        params,
        [
            {"event_id": e, "label": 1 - int(v), "labelled_at": at.isoformat()}
            for e, v in zip(flips["event_id"], flips["label"], strict=True)
        ],
    )
    flipped, _ = _live(params)
    assert flipped["n"] == before["n"] and flipped["positives"] != before["positives"]
    assert flipped["recall"] != before["recall"] and flipped["precision"] != before["precision"]
    assert _live(params, at - dt.timedelta(hours=1)) == earlier


@pytest.mark.integration
def test_a_label_for_an_unknown_event_is_kept_out_of_the_metrics(logged: Params, tmp_path: Path) -> None:
    params = _own_store(logged, tmp_path / "landing.db")
    before, _ = _live(params)
    _post(params, [{"event_id": "never-seen", "label": 1, "labelled_at": "2026-01-09T00:00:00Z"}])
    stored = read_labels(params, AS_OF, ["never-seen", "tx20260109-0000000"])
    assert stored is not None and stored.to_dict("records") == [{"event_id": "never-seen", "label": 1}]
    # no prediction has its id: the metrics are the events' as before
    after, source = _live(params)
    assert after == before and source == {
        "source": "events",
        "labelled": {"landing_store": 0, "events": before["n"]},
    }
    # with ingest.landing off the store is not read at all
    off = _own_store(logged, tmp_path / "landing.db", enabled=False)
    assert read_labels(off, AS_OF, ["never-seen"]) is None


@pytest.mark.integration
def test_the_monitor_summary_says_where_labels_came_from(logged: Params, tmp_path: Path) -> None:
    params = _own_store(logged, tmp_path / "landing.db")
    events = io.read_partitions(params.paths.validated, D(2026, 1, 1), END)
    _post(params, _posted(events, events["label"], dt.timedelta(hours=24)))
    with pytest.MonkeyPatch.context() as mp:
        _use_registry(mp, params, _Registry())
        result = monitor.run(params, START, END)
    summary = json.loads(Path(result["summary"]).read_text())
    assert result["labels_source"] == summary["labels_source"] == "landing_store"
    assert summary["labelled_by_source"]["landing_store"] == summary["rows"]["labelled"] > 500
