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
from pipelines.sources.log import load_log
from pipelines.sources.synthetic import generate


def in_range(events: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows whose event date (UTC) lies in [start, end)."""
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC")
    ts = events[TIMESTAMP]
    return events[(ts >= lo) & (ts < hi)].reset_index(drop=True)


def load_events(params: Params, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Canonical events of [start, end) from the configured source (synthetic, csv or parquet)."""
    src = params.ingest.source
    if src.kind == "synthetic":
        return generate(params.ingest.synthetic, start, end)
    return in_range(load_log(src, params.root), start, end)
