"""Training dataset: validated events of [start, end) + point-in-time Feast features, split by event time.

test = the last dataset.test_fraction of the events' time span, valid = the dataset.valid_fraction slice
before it, train = the rest. The cuts are timestamps, so events at the same instant share a split and no
event is in two splits; nothing is shuffled across time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines import io
from pipelines.config import Params
from pipelines.contract import ENTITY_KEY, EVENT_ID, FEATURE_COLUMNS, LABEL, SPLITS, TIMESTAMP
from pipelines.errors import StageError
from pipelines.sections import DatasetParams


def split_by_time(frame: pd.DataFrame, cfg: DatasetParams) -> dict[str, pd.DataFrame]:
    """Split `frame` on TIMESTAMP into train / valid / test (time order kept, each sorted by time).

    Raises StageError when a split is empty or has no positive label.
    """
    if frame.empty:
        raise StageError("dataset: no events to split; choose a longer range")
    ts = pd.to_datetime(frame[TIMESTAMP], utc=True)
    first, last = ts.min(), ts.max()
    span = last - first
    # cuts rounded to whole microseconds: the same cut whatever the timestamp unit
    test_cut = (last - span * cfg.test_fraction).floor("us")
    valid_cut = (last - span * (cfg.test_fraction + cfg.valid_fraction)).floor("us")
    masks = {
        "train": ts < valid_cut,
        "valid": (ts >= valid_cut) & (ts < test_cut),
        "test": ts >= test_cut,
    }
    out: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        part = frame[masks[name].to_numpy()]
        if part.empty:
            raise StageError(
                f"dataset: split {name!r} is empty (events {first} .. {last}); choose a longer range"
            )
        if LABEL in part.columns and int(part[LABEL].sum()) == 0:
            raise StageError(
                f"dataset: split {name!r} ({len(part)} events, {part[TIMESTAMP].min()} .. "
                f"{part[TIMESTAMP].max()}) has no positive label; choose a longer range "
                f"(or adjust dataset.valid_fraction / dataset.test_fraction)"
            )
        out[name] = part.reset_index(drop=True)
    return out


def _summary(part: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(part),
        "frauds": int(part[LABEL].sum()),
        "fraud_rate": round(float(part[LABEL].mean()), 6),
        "start": part[TIMESTAMP].min().isoformat(),
        "end": part[TIMESTAMP].max().isoformat(),
    }


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Build data/dataset/{train,valid,test}.parquet + summary.json for the events of [start, end)."""
    from pipelines.engines.feast_store import historical_features

    src = params.paths.validated
    events = io.read_partitions(src, start, end)
    if events.empty:
        raise StageError(
            f"dataset: no validated events for [{start}, {end}) under {src}; "
            f"run ingest and validate for this range, or choose a longer range"
        )
    missing = [c for c in (ENTITY_KEY, TIMESTAMP, LABEL) if c not in events.columns]
    if missing:
        raise StageError(f"dataset: validated partitions under {src} lack columns {missing}")
    sort_by = [TIMESTAMP, EVENT_ID] if EVENT_ID in events.columns else [TIMESTAMP, ENTITY_KEY]
    events = events.sort_values(sort_by, kind="stable").reset_index(drop=True)

    joined = historical_features(params, events)
    splits = split_by_time(joined, params.dataset)

    summary: dict[str, Any] = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": len(joined),
        "feature_columns": FEATURE_COLUMNS,
        "feature_service": params.feature_store.feature_service,
        "splits": {name: _summary(part) for name, part in splits.items()},
    }
    # the whole directory is swapped at once: splits and summary always come from the same run
    with io.atomic_dir(params.paths.dataset) as tmp:
        for name, part in splits.items():
            table = pa.Table.from_pandas(part, preserve_index=False).replace_schema_metadata(None)
            io.write_table(table, tmp / params.paths.split(name).name)
        io.atomic_write_json(tmp / "summary.json", summary)
    return {"stage": "dataset", "path": str(params.paths.dataset), **summary}


def describe(summary: dict[str, Any]) -> str:
    """Progress line: rows per split."""
    splits = summary["splits"]
    parts = ", ".join(f"{name} {split['rows']:,}" for name, split in splits.items())
    return f"{summary['rows']:,} rows with point-in-time features: {parts}"


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "dataset", describe)
