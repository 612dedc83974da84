"""Ingest: the source's events of [start, end) -> data/raw/date=D/part-0.parquet, one partition per day.

A day's events are the configured source's (ingest.source) plus the events landed over HTTP by the
ingestion service (ingest.landing.store, pipelines.ingestion), deduplicated by event_id, in the source's
columns and dtypes: a partition is the same bytes whichever way its events came. Each date partition is
replaced whole (atomic swap), so a rerun never duplicates rows; a date of the range without events loses
any stale partition. The user's source file is only ever read; the landing store is told which landed
events a run took (its stats and the `pending_days` an Airflow sensor reads).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from typing import Any

import pandas as pd

from pipelines import io, sources
from pipelines.config import Params
from pipelines.ingestion.landed import Landed, read_landed, record_run

log = logging.getLogger(__name__)


def split_by_day(events: pd.DataFrame, start: dt.date, end: dt.date) -> dict[dt.date, pd.DataFrame]:
    """Events of [start, end) grouped by UTC event date, each sorted by (event_timestamp, event_id)."""
    events = sources.in_range(events, start, end)
    events = events.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)
    dates = events["event_timestamp"].dt.date
    return {day: frame.reset_index(drop=True) for day, frame in events.groupby(dates, sort=True)}


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Write one raw partition per event date of [start, end); returns rows per day."""
    landed = read_landed(params, start, end)
    events = sources.load_events(params, start, end, landed=landed.events if landed else None)
    by_day = split_by_day(events, start, end)
    raw = params.paths.raw
    written, removed = [], []
    for day in io.days(start, end):
        frame = by_day.get(day)
        if frame is None or frame.empty:
            stale = io.partition_dir(raw, day)
            if stale.exists():  # the source has nothing for this day any more
                shutil.rmtree(stale)
                removed.append(day.isoformat())
            continue
        io.write_partition(frame, raw, day)
        written.append(day.isoformat())
    rows_per_day = {d.isoformat(): len(f) for d, f in by_day.items()}
    landed_per_day = _landed_per_day(by_day, landed)
    if landed is not None:
        record_run(landed, rows_per_day, landed_per_day)
    total = sum(rows_per_day.values())
    labels = pd.concat([f["label"] for f in by_day.values()]) if by_day else pd.Series(dtype=float)
    summary = {
        "source": params.ingest.source.kind,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": total,
        "label_rate": round(float(labels.mean()), 6) if total else None,
        "rows_per_day": rows_per_day,
        "partitions_written": len(written),
        "partitions_removed": removed,
        "output": str(raw),
        "landed_rows": sum(landed_per_day.values()),
        "landing_store": str(landed.store) if landed else None,
    }
    log.info("ingest wrote %d rows in %d partitions under %s", total, len(written), raw)
    return summary


def _landed_per_day(by_day: dict[dt.date, pd.DataFrame], landed: Landed | None) -> dict[str, int]:
    """Per written day, how many of its events are landed ones (whether or not the source had them too)."""
    if landed is None or landed.events.empty:
        return {}
    ids = landed.events["event_id"]
    counts = {d.isoformat(): int(f["event_id"].isin(ids).sum()) for d, f in by_day.items()}
    return {d: n for d, n in counts.items() if n}


def describe(summary: dict[str, Any]) -> str:
    """Progress line: events and days written, the label rate, stale days removed."""
    days, source = summary["partitions_written"], summary["source"]
    text = f"{summary['rows']:,} events in {days} days from the {source} source"
    if summary.get("landed_rows"):
        text += f" ({summary['landed_rows']:,} of them landed over HTTP)"
    if summary["label_rate"] is not None:
        text += f", {summary['label_rate']:.2%} labelled positive"
    if summary["partitions_removed"]:
        text += f"; {len(summary['partitions_removed'])} stale day(s) removed"
    return text


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "ingest", describe)
