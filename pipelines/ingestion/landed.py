"""What the ingest stage takes from the landing store: a range's landed events, and the record of the run.

`read_landed` returns the landed events of [start, end) as the canonical frame (the configured source's
columns and dtypes, pipelines.ingestion.columns) with each event's latest posted label, from one read
snapshot; `record_run` marks the events of that snapshot as ingested for the days written. No store
(nothing landed yet, or ingest.landing.enabled false): None, and ingest reads its source alone.

`pending_ranges` is what an Airflow run started by the landing flag (pipelines.ingestion.notify) ingests:
the days whose raw partition lacks landed data, as contiguous [start, end) ranges.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.config import Params
from pipelines.ingestion import store
from pipelines.ingestion.columns import landed_frame
from pipelines.sources import source_columns


@dataclass(frozen=True)
class Landed:
    """Landed events of a range and the store snapshot they were read in."""

    store: Path
    events: pd.DataFrame
    seqs: tuple[int, int]  # (events_seq, labels_seq) of the snapshot


def read_landed(params: Params, start: dt.date, end: dt.date) -> Landed | None:
    """The landed events dated [start, end), or None when there is no landing store to read."""
    path = store.store_path(params)
    if path is None:
        return None
    columns = source_columns(params.ingest.source)
    conn = store.connect(path, create=False)
    try:
        rows, seqs = store.read_landed(conn, start.isoformat(), end.isoformat(), columns)
    finally:
        conn.close()
    return Landed(path, landed_frame(rows, columns, params.ingest.landing.unlabelled), seqs)


def pending_ranges(params: Params) -> list[tuple[dt.date, dt.date]]:
    """Contiguous [start, end) ranges of the days with landed events or labels no ingest run has taken
    (store.pending_days); [] without a landing store."""
    path = store.store_path(params)
    if path is None:
        return []
    conn = store.connect(path, create=False)
    try:
        days = [dt.date.fromisoformat(d) for d in store.pending_days(conn)]
    finally:
        conn.close()
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in days:  # sorted by the query
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + dt.timedelta(days=1))
        else:
            ranges.append((day, day + dt.timedelta(days=1)))
    return ranges


def record_run(landed: Landed, rows_per_day: dict[str, int], landed_per_day: dict[str, int]) -> None:
    """Mark the snapshot's landed events of the written days as ingested, and the days' last run (days
    with landed events only: the others are the source's business)."""
    days = {d: (n, landed_per_day[d]) for d, n in rows_per_day.items() if landed_per_day.get(d)}
    if not days:
        return
    conn = store.connect(landed.store, create=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        store.mark_ingested(conn, days, landed.seqs, time.time())
        conn.execute("COMMIT")
    finally:
        conn.close()
