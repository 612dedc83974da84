"""GET /v1/ingest/stats: per day, what landed, what the ingest stage took, what was refused, labels.

A day's figures, each by its own clock (said in the OpenAPI document too):

- events_landed / events_ingested / events_pending: landed events by their event date (the raw partition
  they belong to); ingested = taken by an ingest run, pending = not yet
- labels_arrived: labels by the day they reached the service
- batches_refused / rows_quarantined: refused uploads by the day they reached the service
- partition_quarantined: the validate stage quarantined that date's partition (data/quarantine/date=D)
- last_run: when the last ingest run took that date's landed events (ISO 8601, UTC)
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from pipelines import io
from pipelines.ingestion import store

MAX_DAYS = 366  # without a range: the most recent days with any activity


def _counts(conn: sqlite3.Connection, sql: str, lo: str, hi: str) -> dict[str, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in conn.execute(sql, (lo, hi))}


def day_stats(
    conn: sqlite3.Connection, validate_quarantine: Path, start: dt.date | None, end: dt.date | None
) -> dict[str, Any]:
    """Per-day figures of [start, end) (None: every day with activity, the last MAX_DAYS), totals and the
    store's watermarks."""
    lo, hi = (start or dt.date.min).isoformat(), (end or dt.date.max).isoformat()
    conn.execute("BEGIN")  # one snapshot for every figure
    try:
        events = _counts(
            conn,
            "SELECT event_date, COUNT(*), COUNT(ingested_at) FROM events "
            "WHERE event_date >= ? AND event_date < ? GROUP BY event_date",
            lo,
            hi,
        )
        labels = _counts(
            conn,
            "SELECT d, COUNT(*) FROM (SELECT date(received_at, 'unixepoch') AS d FROM labels) "
            "WHERE d >= ? AND d < ? GROUP BY d",
            lo,
            hi,
        )
        refused = _counts(
            conn,
            "SELECT d, COUNT(*), SUM(rows) FROM (SELECT date(received_at, 'unixepoch') AS d, rows "
            "FROM batches WHERE status = 'refused') WHERE d >= ? AND d < ? GROUP BY d",
            lo,
            hi,
        )
        runs = _counts(conn, "SELECT day, run_at FROM ingested_days WHERE day >= ? AND day < ?", lo, hi)
        marks = store.watermarks(conn)
        pending = store.pending_days(conn)
    finally:
        conn.execute("COMMIT")
    days = sorted(set(events) | set(labels) | set(refused) | set(runs))
    if start is None and end is None:
        days = days[-MAX_DAYS:]
    rows = [_day(d, events, labels, refused, runs, validate_quarantine) for d in days]
    totals = {k: sum(r[k] for r in rows) for k in _SUMMED}
    return {"days": rows, "totals": totals, "watermarks": marks, "pending_days": pending}


_SUMMED = (
    "events_landed",
    "events_ingested",
    "events_pending",
    "labels_arrived",
    "batches_refused",
    "rows_quarantined",
)


def _day(
    day: str,
    events: dict[str, tuple[Any, ...]],
    labels: dict[str, tuple[Any, ...]],
    refused: dict[str, tuple[Any, ...]],
    runs: dict[str, tuple[Any, ...]],
    validate_quarantine: Path,
) -> dict[str, Any]:
    landed, ingested = events.get(day, (0, 0))
    batches, rows = refused.get(day, (0, 0))
    run = runs.get(day)
    return {
        "date": day,
        "events_landed": landed,
        "events_ingested": ingested,
        "events_pending": landed - ingested,
        "labels_arrived": labels.get(day, (0,))[0],
        "batches_refused": batches,
        "rows_quarantined": rows or 0,
        "partition_quarantined": io.partition_dir(validate_quarantine, dt.date.fromisoformat(day)).is_dir(),
        "last_run": _iso(run[0]) if run else None,
    }


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
