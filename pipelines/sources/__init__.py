"""Where events come from: a seeded synthetic card-transaction world, or the user's CSV/Parquet log.

`load_events` is the entry point (the ingest stage's): it dispatches on `ingest.source.kind` to
`synthetic` (the generator, on the population of `world`) or `log` (csv | parquet, mapped by
`ingest.source.columns`). Both return the canonical event frame of pipelines.contract
(CANONICAL_COLUMNS; optional columns absent when the source lacks them): event_id/entity_id/merchant/
category strings, event_timestamp datetime64[us, UTC], amount float64, label int64, coordinates float64.

Events landed over HTTP (pipelines.ingestion, read by the ingest stage) join the configured source's
through `load_events(..., landed=)`: same columns, same dtypes, deduplicated by event_id.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.config import Params
from pipelines.contract import CANONICAL_COLUMNS, EVENT_ID, TIMESTAMP
from pipelines.errors import StageError
from pipelines.sections import SourceParams
from pipelines.sources.log import load_log
from pipelines.sources.synthetic import generate


def in_range(events: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows whose event date (UTC) lies in [start, end)."""
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC")
    ts = events[TIMESTAMP]
    return events[(ts >= lo) & (ts < hi)].reset_index(drop=True)


def source_columns(src: SourceParams) -> tuple[str, ...]:
    """The canonical columns the configured source's events carry, in canonical order: all of them for the
    generator; for a log, the mapped ones plus event_id (derived when the log has none)."""
    if src.kind == "synthetic":
        return CANONICAL_COLUMNS
    return tuple(c for c in CANONICAL_COLUMNS if c in src.columns or c == EVENT_ID)


def combine(events: pd.DataFrame, landed: pd.DataFrame | None) -> pd.DataFrame:
    """The source's events, then the landed events whose event_id the source lacks, in the source's columns
    and dtypes (so a partition's bytes do not depend on which way an event came in).

    Only landed rows are deduplicated: a duplicate inside the source itself stays for validate to see.
    """
    if landed is None or landed.empty:
        return events
    extra = landed.loc[~landed[EVENT_ID].isin(events[EVENT_ID]), list(events.columns)]
    extra = extra.astype(events.dtypes.to_dict())
    if events.empty:
        return extra.reset_index(drop=True)
    return pd.concat([events, extra], ignore_index=True)


def load_events(
    params: Params, start: dt.date, end: dt.date, landed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Canonical events of [start, end) from the configured source (synthetic, csv or parquet), plus the
    `landed` events of the range (the ingestion service's, in canonical columns and dtypes) it lacks.

    A range entirely outside the log's own dates, with no landed event in it either, is a StageError that
    gives both ranges and the keys to edit: writing nothing would only surface later as a missing DVC
    output. An empty day inside the log's span is a gap in the data, not an error (ingest then drops
    that day's stale partition).
    """
    landed = None if landed is None else in_range(landed, start, end)
    src = params.ingest.source
    if src.kind == "synthetic":
        return combine(generate(params.ingest.synthetic, start, end), landed)
    log = load_log(src, params.root)
    if landed is not None and not landed.empty:
        return combine(in_range(log, start, end), landed)
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
