"""Point-in-time per-entity activity features (PySpark) -> data/features/date=D/ (the Feast offline source).

Each output row is the state of an entity AFTER one of its events: aggregates over that entity's events up
to and including the event (events of the same entity at the same microsecond are simultaneous and count
together). Windows are half-open on the left: the 1h window of an event at t holds events in (t-1h, t].
Training joins these rows at `event_timestamp - 1 µs` (pipelines.feature_store), so a labelled event only
sees events strictly before it, which is what the online store holds at serving time.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines import io
from pipelines.config import Params
from pipelines.contract import FEATURE_SCHEMA
from pipelines.errors import StageError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Windows in seconds. The 7d window is the longest fixed one; history_days may be longer.
WINDOWS: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
MIN_LOOKBACK_DAYS = 7

OUTPUT_COLUMNS: list[str] = FEATURE_SCHEMA.names


def lookback_days(history_days: int) -> int:
    """Days of input before `start` needed so every window of an event in [start, end) is complete."""
    return max(history_days, MIN_LOOKBACK_DAYS)


def _micros(day: dt.date) -> int:
    """Epoch microseconds of midnight UTC of `day` (exact integer arithmetic, no float rounding)."""
    return (day - dt.date(1970, 1, 1)).days * 86_400 * 1_000_000


def compute_features(
    df: DataFrame, ts_col: str, start: dt.date, end: dt.date, history_days: int
) -> DataFrame:
    """Per event with `ts_col` in [start, end): the entity's state after that event (contract columns).

    `df` holds events with entity_id, `ts_col` (timestamp), amount and optionally merchant; it must cover
    [start - lookback_days(history_days), end) for the windows of the first events to be complete.
    Without a merchant column distinct_merchants_24h is null, not faked.
    """
    from pyspark.sql import functions as F

    missing = [c for c in ("entity_id", ts_col, "amount") if c not in df.columns]
    if missing:
        raise StageError(f"compute_features: input lacks columns {missing}; has {df.columns}")

    # Integer epoch microseconds: exact range bounds, and a one-day rerun sees the same frames.
    events = df.select(
        F.col("entity_id").cast("string").alias("entity_id"),
        F.unix_micros(F.col(ts_col)).alias("_us"),
        F.col("amount").cast("double").alias("amount"),
        *([F.col("merchant").cast("string").alias("merchant")] if "merchant" in df.columns else []),
    ).where(F.col("_us") < F.lit(_micros(end)))

    out = events.select("entity_id", "_us", *_aggregates(history_days, "merchant" in events.columns))
    return (
        out.where((F.col("_us") >= F.lit(_micros(start))) & (F.col("_us") < F.lit(_micros(end))))
        .withColumn("event_timestamp", F.timestamp_micros("_us"))
        .withColumn("last_event_ts", (F.col("_us") / F.lit(1_000_000.0)).cast("double"))
        .select(*OUTPUT_COLUMNS)
    )


def _aggregates(history_days: int, has_merchant: bool) -> list[Column]:
    """The windowed aggregates of the contract's feature columns, over events ordered by `_us`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    base = Window.partitionBy("entity_id").orderBy("_us")

    def window(seconds: int) -> Any:
        # (t - seconds, t]: an event exactly `seconds` before t has left the window
        return base.rangeBetween(-(seconds * 1_000_000 - 1), 0)

    w1h, w24h, w7d = (window(WINDOWS[k]) for k in ("1h", "24h", "7d"))
    whist = window(history_days * 86_400)

    def count(w: Any) -> Column:
        return F.count(F.lit(1)).over(w).cast("long")

    def total(w: Any) -> Column:
        return F.sum("amount").over(w).cast("double")

    if has_merchant:
        # Spark has no COUNT(DISTINCT) over a window; the size of the set of merchants is the same
        distinct_merchants = F.size(F.collect_set("merchant").over(w24h)).cast("long")
    else:
        distinct_merchants = F.lit(None).cast("long")

    return [
        count(w1h).alias("txn_count_1h"),
        total(w1h).alias("amount_sum_1h"),
        count(w24h).alias("txn_count_24h"),
        total(w24h).alias("amount_sum_24h"),
        F.avg("amount").over(w24h).cast("double").alias("amount_mean_24h"),
        count(w7d).alias("txn_count_7d"),
        total(w7d).alias("amount_sum_7d"),
        F.avg("amount").over(w7d).cast("double").alias("amount_mean_7d"),
        distinct_merchants.alias("distinct_merchants_24h"),
        F.avg("amount").over(whist).cast("double").alias("amount_mean_hist"),
        # sample std: null with a single event (a population std of 0 would make z-scores infinite)
        F.stddev_samp("amount").over(whist).cast("double").alias("amount_std_hist"),
        count(whist).alias("txn_count_hist"),
    ]


def _partition_table(path: Any) -> pa.Table:
    """Read one Spark output partition (any number of part files) into the contract schema, sorted."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path).select(OUTPUT_COLUMNS).cast(FEATURE_SCHEMA)
    # Spark's part-file split depends on partitioning; a full sort makes the bytes depend on rows only.
    keys = ["event_timestamp", "entity_id", *OUTPUT_COLUMNS[2:]]
    order = pc.sort_indices(table, sort_keys=[(c, "ascending", "at_start") for c in keys])
    return table.take(order).replace_schema_metadata(None)


def _replace_days(scratch: Path, dest: Path, start: dt.date, end: dt.date) -> dict[str, int]:
    """Swap each day of [start, end) Spark wrote under `scratch` into `dest` whole; rows per day."""
    rows: dict[str, int] = {}
    for day in io.days(start, end):
        written = scratch / f"date={day.isoformat()}"
        target = io.partition_dir(dest, day)
        if not written.is_dir():
            # no events that day: drop a stale partition so the range holds exactly this run's rows
            if target.exists():
                stale = dest / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
                target.rename(stale)
                shutil.rmtree(stale)
            continue
        table = _partition_table(written)
        with io.atomic_dir(target) as tmp:
            io.write_table(table, tmp / io.PART_FILE)
        rows[day.isoformat()] = table.num_rows
    return rows


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Compute features for events of [start, end) and replace data/features/date=D/ for each date D."""
    from pyspark.sql import functions as F

    from pipelines.engines.spark import get_spark

    src = params.paths.validated
    dest = params.paths.features
    history_days = params.features.history_days
    read_from = start - dt.timedelta(days=lookback_days(history_days))
    in_range = io.existing_partitions(src, start, end)
    if not in_range:
        raise StageError(
            f"features: no validated partitions for [{start}, {end}) under {src} "
            f"(expected {src}/date=YYYY-MM-DD/); run ingest and validate for this range first"
        )
    parts = io.existing_partitions(src, read_from, end)

    spark = get_spark(params.spark, app_name="sluice-features")
    events = spark.read.option("mergeSchema", "true").parquet(*[str(p) for p in parts])
    missing = [c for c in ("entity_id", "event_timestamp", "amount") if c not in events.columns]
    if missing:
        raise StageError(f"features: validated partitions under {src} lack columns {missing}")
    features = compute_features(events, "event_timestamp", start, end, history_days)

    # Spark writes per-date part files into a hidden scratch dir (readers skip dot-dirs); each date is
    # then rewritten as one sorted file and swapped in whole, so a crash never leaves a partial date.
    scratch = dest / f".spark-{uuid.uuid4().hex[:8]}"
    try:
        (
            features.withColumn("date", F.date_format("event_timestamp", "yyyy-MM-dd"))
            .write.partitionBy("date")
            .parquet(str(scratch))
        )
        rows = _replace_days(scratch, dest, start, end)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    return {
        "stage": "features",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "input_partitions": len(parts),
        "dates_written": len(rows),
        "rows": sum(rows.values()),
        "path": str(dest),
    }


def describe(summary: dict[str, Any]) -> str:
    """Progress line: feature rows and days written."""
    return f"{summary['rows']:,} feature rows for {summary['dates_written']} days"


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "features", describe)
