"""pipelines.features: exact window values on a hand-made frame, byte-identical reruns, clear failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import features, io
from pipelines.config import Params
from pipelines.errors import StageError

pytestmark = pytest.mark.integration

D = dt.date


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def make_events(
    start: dt.date, end: dt.date, n_entities: int = 6, per_day: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Tiny canonical validated events for [start, end), deterministic per day, with frauds every day."""
    frames = []
    for day in io.days(start, end):
        rng = np.random.default_rng([seed, day.toordinal()])
        n = n_entities * per_day
        secs = np.sort(rng.integers(0, 86_400, n))
        ts_ = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(secs, unit="s")
        labels = np.zeros(n, dtype="int64")
        labels[rng.choice(n, 2, replace=False)] = 1
        frames.append(
            pd.DataFrame(
                {
                    "event_id": [f"{day:%Y%m%d}-{i:04d}" for i in range(n)],
                    "entity_id": [f"e{k}" for k in rng.integers(0, n_entities, n)],
                    "event_timestamp": ts_.astype("datetime64[us, UTC]"),
                    "amount": rng.gamma(2.0, 30.0, n).round(2),
                    "merchant": [f"m{k}" for k in rng.integers(0, 5, n)],
                    "category": [f"c{k}" for k in rng.integers(0, 3, n)],
                    "label": labels,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_validated(params: Params, events: pd.DataFrame) -> None:
    """Write `events` as data/validated/date=D/ partitions (sorted like validate's output)."""
    events = events.sort_values(["event_timestamp", "event_id"], kind="stable")
    for day, part in events.groupby(events["event_timestamp"].dt.date):
        io.write_partition(part.reset_index(drop=True), params.paths.validated, day)


HAND = pd.DataFrame(
    {
        "entity_id": ["a", "a", "a", "a", "a", "b", "b", "a"],
        "event_timestamp": [
            ts("2026-01-10 00:00"),
            ts("2026-01-10 00:30"),
            ts("2026-01-10 01:00"),  # exactly 1h after the first: the first has left the 1h window
            ts("2026-01-11 00:30"),  # exactly 24h after the second: it has left the 24h window
            ts("2026-01-17 00:00"),  # exactly 7d after the first
            ts("2026-01-09 23:00"),  # before start: counts in b's windows, is not an output row
            ts("2026-01-10 00:15"),
            ts("2026-01-18 00:00"),  # at end (exclusive): never an output row, never seen by others
        ],
        "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 5.0, 100.0, 1000.0],
        "merchant": ["m1", "m2", "m1", "m3", "m1", "m1", "m1", "m9"],
    }
)


def test_compute_features_exact_windows(spark) -> None:
    out = (
        features.compute_features(
            spark.createDataFrame(HAND), "event_timestamp", D(2026, 1, 10), D(2026, 1, 18), 2
        )
        .toPandas()
        .sort_values(["entity_id", "event_timestamp"])
        .reset_index(drop=True)
    )
    assert list(out.columns) == features.OUTPUT_COLUMNS
    assert out["entity_id"].tolist() == ["a"] * 5 + ["b"]
    cols = [
        "txn_count_1h",
        "amount_sum_1h",
        "txn_count_24h",
        "amount_sum_24h",
        "txn_count_7d",
        "amount_sum_7d",
    ]
    assert out[cols].values.tolist() == [
        [1, 10, 1, 10, 1, 10],  # sees only itself, never later events
        [2, 30, 2, 30, 2, 30],
        [2, 50, 3, 60, 3, 60],
        [1, 40, 2, 70, 4, 100],
        [1, 50, 1, 50, 4, 140],
        [1, 100, 2, 105, 2, 105],
    ]
    assert out["distinct_merchants_24h"].tolist() == [1, 2, 2, 2, 1, 1]
    assert out["amount_mean_24h"].tolist() == [10, 15, 20, 35, 50, 52.5]
    assert out["amount_mean_7d"].tolist() == [10, 15, 20, 25, 35, 52.5]
    # history = 2 days: the 2026-01-17 event is alone in it (sample std undefined -> null)
    assert out["txn_count_hist"].tolist() == [1, 2, 3, 4, 1, 2]
    assert out["amount_mean_hist"].tolist() == [10, 15, 20, 25, 50, 52.5]
    assert np.isnan(out["amount_std_hist"][0]) and np.isnan(out["amount_std_hist"][4])
    assert out["amount_std_hist"][3] == pytest.approx(np.std([10, 20, 30, 40], ddof=1))
    assert out["last_event_ts"][0] == ts("2026-01-10 00:00").timestamp()
    assert out.dtypes["txn_count_1h"] == np.int64 and out.dtypes["amount_sum_1h"] == np.float64


def test_compute_features_without_merchant_is_null(spark) -> None:
    frame = spark.createDataFrame(HAND.drop(columns="merchant"))
    out = features.compute_features(frame, "event_timestamp", D(2026, 1, 10), D(2026, 1, 11), 30).toPandas()
    assert len(out) == 4 and out["distinct_merchants_24h"].isna().all()


def test_run_one_day_equals_same_day_in_long_run(spark, project: Params, tmp_path: Path) -> None:
    params = project.model_copy(update={"features": project.features.model_copy(update={"history_days": 2})})
    write_validated(params, make_events(D(2026, 1, 1), D(2026, 1, 5)))
    long = features.run(params, D(2026, 1, 1), D(2026, 1, 5))
    assert long["dates_written"] == 4 and long["rows"] == 4 * 24
    day = io.partition_dir(params.paths.features, D(2026, 1, 3)) / io.PART_FILE
    before = day.read_bytes()
    again = features.run(params, D(2026, 1, 3), D(2026, 1, 4))
    assert again["rows"] == 24 and day.read_bytes() == before
    table = pd.read_parquet(day)
    assert str(table["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert table["event_timestamp"].is_monotonic_increasing
    assert not any(p.name.startswith(".") for p in params.paths.features.iterdir())  # no scratch left


def test_run_without_validated_data_fails(project: Params) -> None:
    with pytest.raises(StageError, match=r"no validated partitions .*data/validated"):
        features.run(project, D(2026, 1, 1), D(2026, 1, 3))
