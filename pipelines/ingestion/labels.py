"""What the monitor takes from the landing store: the labels posted over HTTP (POST /v1/labels), as known
at a time.

A posted label is the delayed ground truth of its event from `labelled_at` on (a chargeback, a review);
an event may get several (a correction), the latest as of the time counts. Labels are looked up by event
id, whichever way the event came (the log, or landed): the monitor joins them to its predictions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from pipelines.config import Params
from pipelines.contract import EVENT_ID, LABEL
from pipelines.ingestion import store
from pipelines.ingestion.columns import to_micros


def read_labels(params: Params, until: dt.datetime, event_ids: Iterable[str]) -> pd.DataFrame | None:
    """The posted labels of `event_ids` as of `until` (aware): one row per event that got any, `label` its
    latest with labelled_at <= until, <NA> when all of them came later. None without a landing store
    (nothing landed, or ingest.landing off): the monitor then goes by the events' own labels."""
    path = store.store_path(params)
    if path is None:
        return None
    conn = store.connect(path, create=False)
    try:
        rows = store.labels_as_of(conn, (str(i) for i in event_ids), to_micros(until))
    finally:
        conn.close()
    return pd.DataFrame(
        {
            EVENT_ID: pd.Series([r[0] for r in rows], dtype=str),
            LABEL: pd.Series([r[1] for r in rows], dtype="Int64"),
        }
    )
