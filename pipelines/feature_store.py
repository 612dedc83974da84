"""Stage: apply feature_repo/ definitions and materialize a range's feature rows to the online store."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines import io
from pipelines.config import Params
from pipelines.contract import FEATURE_VIEW
from pipelines.engines.feast_store import apply, materialize
from pipelines.errors import StageError


def _as_utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Apply the definitions and materialize the feature rows of [start, end) into the online store.

    A ranged materialize, never materialize-incremental (whose first run starts at now - ttl and skips
    older data). Materializing a range older than what the online store holds would overwrite newer
    state: run ranges in time order.
    """
    parts = io.existing_partitions(params.paths.features, start, end)
    if not parts:
        raise StageError(
            f"feature_store: no feature partitions for [{start}, {end}) under {params.paths.features} "
            f"(expected date=YYYY-MM-DD/); run the features stage for this range first"
        )
    store = apply(params)
    # Feast's end bound is inclusive: stop 1 µs before `end` so the next day's midnight events stay out
    materialize(store, _as_utc(start), _as_utc(end) - dt.timedelta(microseconds=1), [FEATURE_VIEW])
    return {
        "stage": "feature_store",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "feature_view": FEATURE_VIEW,
        "feature_service": params.feature_store.feature_service,
        "online_store": params.feature_store.online_store,
        "partitions": len(parts),
        "registry": str(params.paths.feast / "registry.db"),
    }


def describe(summary: dict[str, Any]) -> str:
    """Progress line: days materialized and where."""
    return (
        f"{summary['partitions']} days of {summary['feature_view']} materialized into the "
        f"{summary['online_store']} online store"
    )


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "feature_store", describe)
