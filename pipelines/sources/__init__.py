"""Where events come from: a seeded synthetic card-transaction world, or the user's CSV/Parquet log.

`load_events` is the entry point (the ingest stage's): it dispatches on `ingest.source.kind` to
`synthetic` (the generator, on the population of `world`) or `log` (csv | parquet, mapped by
`ingest.source.columns`). Both return the canonical event frame of pipelines.contract
(CANONICAL_COLUMNS; optional columns absent when the source lacks them): event_id/entity_id/merchant/
category strings, event_timestamp datetime64[us, UTC], amount float64, label int64, coordinates float64.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.config import Params
from pipelines.contract import TIMESTAMP
from pipelines.errors import StageError
from pipelines.sources.log import load_log
from pipelines.sources.synthetic import generate


def in_range(events: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows whose event date (UTC) lies in [start, end)."""
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC")
    ts = events[TIMESTAMP]
    return events[(ts >= lo) & (ts < hi)].reset_index(drop=True)


def load_events(params: Params, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Canonical events of [start, end) from the configured source (synthetic, csv or parquet).

    A range entirely outside the log's own dates is a StageError that gives both ranges and the keys to
    edit: writing nothing would only surface later as a missing DVC output. An empty day inside the log's
    span is a gap in the data, not an error (ingest then drops that day's stale partition).
    """
    src = params.ingest.source
    if src.kind == "synthetic":
        return generate(params.ingest.synthetic, start, end)
    log = load_log(src, params.root)
    if log.empty:
        raise StageError(f"ingest: {src.path} has no events (ingest.source.path in params.yaml)")
    first, last = log[TIMESTAMP].min().date(), log[TIMESTAMP].max().date()
    if end <= first or start > last:
        raise StageError(
            f"ingest: {src.path} has {len(log):,} events dated {first} to {last}, none in the requested "
            f'range [{start}, {end}); set data.start: "{first}" and data.end: '
            f'"{last + dt.timedelta(days=1)}" in params.yaml (end is exclusive) to ingest all of it'
        )
    return in_range(log, start, end)
