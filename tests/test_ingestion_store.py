"""The landing store and its writer: idempotent, durable across a killed process, group commits that
isolate a failing request, labels that wait for their event, batches landed or refused whole."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks.ingest_world import LOG_COLUMNS, log_frame, log_project
from pipelines import ingest, io
from pipelines.config import Params
from pipelines.ingestion import store
from pipelines.ingestion.service import BatchRefused, Ingestion
from pipelines.ingestion.writer import GroupCommitWriter, Overloaded, WriterClosed
from pipelines.sections import SyntheticParams
from tests.conftest import REPO_ROOT, make_project

D = dt.date
SMALL = SyntheticParams(seed=5, n_entities=30, n_merchants=20, txns_per_entity_per_day=2.0, fraud_rate=0.05)


def event(i: int | str, day: int = 2, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "entity_id": "card_1",
        "event_timestamp": f"2026-01-{day:02d}T12:00:00Z",
        "amount": 10.0,
        **kw,
    }


def body(x: Any) -> bytes:
    return json.dumps(x).encode()


@contextlib.contextmanager
def running(params: Params) -> Iterator[Ingestion]:
    ing = Ingestion(params)
    ing.start()
    try:
        yield ing
    finally:
        ing.close()


def stored_ids(params: Params) -> list[str]:
    conn = store.connect(params.resolve(params.ingest.landing.store), create=False)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY seq")]
    finally:
        conn.close()


# ---- idempotency and group commit ----------------------------------------------------------------------


@pytest.mark.unit
def test_a_retried_event_is_stored_once(project: Params) -> None:
    with running(project) as ing:
        first = asyncio.run(ing.land_events(body([event(1), event(2)])))
        again = asyncio.run(ing.land_events(body(event(1))))

        async def race() -> list[dict[str, Any]]:  # 20 concurrent retries of one new event
            return await asyncio.gather(*(ing.land_events(body(event(3))) for _ in range(20)))

        answers = asyncio.run(race())
    assert first == {"event_ids": ["e1", "e2"], "landed": 2, "duplicates": []}
    assert again == {"event_ids": ["e1"], "landed": 0, "duplicates": ["e1"]}
    assert sorted(a["landed"] for a in answers) == [0] * 19 + [1]
    assert stored_ids(project) == ["e1", "e2", "e3"]


@pytest.mark.unit
def test_a_failing_request_is_rolled_back_alone_in_its_group(tmp_path: Path) -> None:
    path = tmp_path / "landing.db"
    groups: list[int] = []
    writer = GroupCommitWriter(
        lambda: store.connect(path, create=True), on_group=lambda n, _s: groups.append(n)
    )
    writer.start()
    gate, holding = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:  # holds the writer so the next three queue up
        holding.set()
        gate.wait(10)

    blocker = writer.submit(hold)
    assert holding.wait(10)
    row = lambda i: (f"e{i}", "c", 0, 1.0, None, None, None, None, None, None, None, "1970-01-01", 0.0, None)  # noqa: E731

    def bad(conn: sqlite3.Connection) -> None:
        store.insert_events(conn, [row(2)])
        raise ValueError("this request fails after writing")

    futures = [writer.submit(lambda c: store.insert_events(c, [row(1)])), writer.submit(bad)]
    futures.append(writer.submit(lambda c: store.insert_events(c, [row(3)])))
    gate.set()
    blocker.result(10)
    assert futures[0].result(10) == [True] and futures[2].result(10) == [True]
    with pytest.raises(ValueError, match="fails after writing"):
        futures[1].result(10)
    writer.close()
    assert groups == [1, 3]  # the three waiting requests shared one commit
    conn = store.connect(path, create=False)
    assert [r[0] for r in conn.execute("SELECT event_id FROM events")] == ["e1", "e3"]


@pytest.mark.unit
def test_the_writer_refuses_when_closed_or_full(tmp_path: Path) -> None:
    """Failure cases: no writer thread -> WriterClosed; more than max_pending waiting -> Overloaded."""
    writer = GroupCommitWriter(lambda: store.connect(tmp_path / "l.db", create=True), max_pending=1)
    with pytest.raises(WriterClosed):
        writer.submit(lambda conn: None)
    writer.start()
    gate = threading.Event()
    writer.submit(lambda conn: gate.wait(10))
    with contextlib.suppress(Overloaded):  # the writer may not have taken the first one yet
        writer.submit(lambda conn: None)
    with pytest.raises(Overloaded, match="1 requests already wait"):
        for _ in range(3):
            writer.submit(lambda conn: None)
    gate.set()
    writer.close()


# ---- durability -------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pipelines.config import load_params
    from pipelines.ingestion.service import Ingestion

    ing = Ingestion(load_params(sys.argv[1]))
    ing.start()

    async def main():
        for i in range(100_000):
            e = {"event_id": f"k{i}", "entity_id": "c", "event_timestamp": "2026-01-02", "amount": 1.0}
            await ing.land_events(json.dumps(e).encode())
            print(f"k{i}", flush=True)  # answered: durable

    asyncio.run(main())
    """
)


@pytest.mark.integration
def test_answered_events_survive_a_killed_process(project: Params) -> None:
    """A process landing events is SIGKILLed mid-stream: every event it had answered is in the store."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(project.root / "params.yaml")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    answered = [proc.stdout.readline().strip() for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    conn = store.connect(project.resolve(project.ingest.landing.store), create=False)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    landed = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert set(answered) <= landed and len(landed) - len(answered) <= 1  # at most one committed, unanswered


# ---- labels -----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_label_before_its_event_is_joined_when_the_event_lands(project: Params) -> None:
    raw = project.paths.raw
    early = {"event_id": "e1", "label": 1, "labelled_at": "2026-01-05T00:00:00Z"}
    with running(project) as ing:
        answer = asyncio.run(ing.land_labels(body(early)))
        assert answer == {"event_ids": ["e1"], "landed": 1, "duplicates": [], "pending": ["e1"]}
        asyncio.run(ing.land_events(body([event(1), event(2)])))
        ingest.run(project, D(2026, 1, 2), D(2026, 1, 3))
        part = pq.read_table(io.partition_dir(raw, D(2026, 1, 2)) / io.PART_FILE).to_pandas()
        labels = dict(zip(part["event_id"], part["label"], strict=True))
        assert (labels["e1"], labels["e2"]) == (1, 0)  # e2: no label yet -> ingest.landing.unlabelled
        assert ing.stats(None, None)["pending_days"] == []
        # a chargeback reversed later, and a stale label arriving late: the latest labelled_at wins
        later = {"event_id": "e1", "label": 0, "labelled_at": "2026-01-09T00:00:00Z"}
        stale = {"event_id": "e1", "label": 1, "labelled_at": "2026-01-04T00:00:00Z"}
        assert asyncio.run(ing.land_labels(body([later, stale])))["pending"] == []
        assert asyncio.run(ing.land_labels(body(later)))["duplicates"] == ["e1"]
        assert ing.stats(None, None)["pending_days"] == ["2026-01-02"]  # the partition is stale
        ingest.run(project, D(2026, 1, 2), D(2026, 1, 3))
    part = pq.read_table(io.partition_dir(raw, D(2026, 1, 2)) / io.PART_FILE).to_pandas()
    assert dict(zip(part["event_id"], part["label"], strict=True))["e1"] == 0


# ---- batches ----------------------------------------------------------------------------------------


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


@pytest.mark.integration
def test_a_batch_with_one_bad_row_is_refused_whole_and_the_fixed_one_lands(tmp_path: Path) -> None:
    frame = log_frame(SMALL, D(2026, 1, 1), D(2026, 1, 3))
    params = log_project(tmp_path / "p", frame.iloc[:0])  # the log itself is empty: events come by upload
    bad = frame.copy()
    bad.loc[7, "amt"] = -3.0
    with running(params) as ing:
        with pytest.raises(BatchRefused) as refused:
            asyncio.run(ing.land_batch(_csv(bad), "csv", "day.csv"))
        assert stored_ids(params) == []  # nothing applied
        assert [f["type"] for f in refused.value.batch.failed] == ["expect_column_values_to_be_between"]
        kept = params.root / refused.value.quarantine
        assert (kept / "day.csv").read_bytes() == _csv(bad)
        result = json.loads((kept / "validation_result.json").read_text())
        assert result["failed"][0]["column"] == "amount" and result["gx_result"]["success"] is False
        accepted = asyncio.run(ing.land_batch(_csv(frame), "csv", "day.csv"))
        assert (accepted["rows"], accepted["landed"], accepted["duplicates"]) == (len(frame),) * 2 + (0,)
        assert sum(accepted["days"].values()) == len(frame) and accepted["validation"]["success"]
        assert asyncio.run(ing.land_batch(_csv(frame), "csv", None))["duplicates"] == len(frame)
        totals = ing.stats(None, None)["totals"]
    assert totals["events_landed"] == len(frame) and totals["batches_refused"] == 1
    assert totals["rows_quarantined"] == len(frame)
    assert not list((params.paths.landing / "incoming").iterdir())  # uploads are not left behind


@pytest.mark.integration
def test_unreadable_batches_are_refused_and_other_formats_land(tmp_path: Path) -> None:
    frame = log_frame(SMALL, D(2026, 1, 1), D(2026, 1, 2))
    params = log_project(tmp_path / "p", frame.iloc[:0])
    broken = frame.copy().astype({"trans_date_trans_time": object})
    broken.loc[3, "trans_date_trans_time"] = "31/12/2025 25:99"
    with running(params) as ing:
        with pytest.raises(BatchRefused, match=r"readable_batch") as err:
            asyncio.run(ing.land_batch(_csv(broken), "csv", "b.csv"))
        assert "unparsable timestamp" in err.value.batch.failed[0]["error"]
        with pytest.raises(BatchRefused, match=r"readable_batch: b.csv: missing column\(s\) 'cc_num'"):
            asyncio.run(ing.land_batch(_csv(frame.drop(columns=["cc_num"])), "csv", "b.csv"))
        half = len(frame) // 2
        parquet = tmp_path / "b.parquet"
        frame.iloc[:half].to_parquet(parquet)
        jsonl = frame.iloc[half:].to_json(orient="records", lines=True).encode()
        a = asyncio.run(ing.land_batch(parquet.read_bytes(), "parquet", "b.parquet"))
        b = asyncio.run(ing.land_batch(jsonl, "jsonl", "b.jsonl"))
    assert a["landed"] + b["landed"] == len(frame) and len(stored_ids(params)) == len(frame)
    assert set(LOG_COLUMNS.values()) <= set(frame.columns)


@pytest.fixture
def project(tmp_path: Path) -> Params:
    return make_project(tmp_path / "project")
