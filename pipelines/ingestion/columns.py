"""The canonical event columns as the landing store holds them, and the frame the ingest stage gets back.

Each canonical column has a kind: string, number, integer or timestamp. The store keeps a timestamp as
microseconds since the epoch (UTC) and a number as an IEEE double, so what comes back is exactly what
came in; `landed_frame` rebuilds the dtypes the sources produce (pipelines.sources: strings as `string`,
event_timestamp datetime64[us, UTC], amount and coordinates float64, label int64), which is what makes a
raw partition the same bytes whichever way its events arrived.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines.contract import CANONICAL_COLUMNS, COORD_COLUMNS, ENTITY_KEY, EVENT_ID, LABEL, TIMESTAMP

Kind = Literal["string", "number", "integer", "timestamp", "boolean"]

# the kind of each canonical column (what the sources produce; the suite's type expectations agree)
KINDS: dict[str, Kind] = {
    EVENT_ID: "string",
    ENTITY_KEY: "string",
    TIMESTAMP: "timestamp",
    "amount": "number",
    "merchant": "string",
    "category": "string",
    LABEL: "integer",
    **{c: "number" for c in COORD_COLUMNS},
}
assert set(KINDS) == set(CANONICAL_COLUMNS), "every canonical column needs a kind"

SQL_TYPES: dict[Kind, str] = {
    "string": "TEXT",
    "number": "REAL",
    "integer": "INTEGER",
    "timestamp": "INTEGER",  # microseconds since 1970-01-01 UTC: exact, sortable
    "boolean": "INTEGER",
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


def to_micros(value: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (no float rounding)."""
    return (value - _EPOCH) // _US


def event_date(micros: int) -> str:
    """The UTC date (YYYY-MM-DD) of a timestamp in microseconds: the raw partition the event lands in."""
    return (_EPOCH + dt.timedelta(microseconds=micros)).date().isoformat()


def landed_frame(rows: Sequence[Sequence[Any]], columns: Sequence[str], unlabelled: int) -> pd.DataFrame:
    """Rows read from the store (values in `columns` order) as the canonical event frame.

    A row whose label is NULL (none posted yet) gets `unlabelled`, so the partition keeps the suite's
    not-null label; a later POST /v1/labels replaces it when the day is ingested again.
    """
    data = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    out: dict[str, Any] = {}
    for name, values in zip(columns, data, strict=True):
        kind = KINDS[name]
        if kind == "timestamp":
            micros = np.asarray(values, dtype=np.int64)
            out[name] = pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC")
        elif kind == "number":
            out[name] = pd.Series(np.asarray(values, dtype=np.float64))  # NULL -> NaN, as a log's empty cell
        elif kind == "integer":
            filled = [unlabelled if v is None and name == LABEL else v for v in values]
            out[name] = pd.Series(filled, dtype="Int64" if None in filled else "int64")
        else:
            out[name] = pd.Series(list(values), dtype="string")
    return pd.DataFrame(out, columns=list(columns))


def frame_rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """A canonical frame's rows as store values in `columns` order: timestamps in microseconds, missing
    values as None."""
    values: list[list[Any]] = []
    for name in columns:
        s = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        if KINDS.get(name) == "timestamp":
            values.append(s.astype("datetime64[us, UTC]").astype("int64").tolist())
        else:
            values.append(s.astype(object).where(s.notna(), None).tolist())
    return list(zip(*values, strict=True))
