"""Ingest: one raw partition per event date, replaced whole; the user's source file is only read."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines import ingest, io
from pipelines.errors import StageError
from pipelines.sources.synthetic import generate
from tests.conftest import make_project
from tests.test_source import KAGGLE_COLUMNS, csv_project, kaggle_frame

pytestmark = pytest.mark.unit

D = dt.date


def _digests(base: Path) -> dict[str, str]:
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*.parquet"))
    }


def test_synthetic_ingest_writes_sorted_day_partitions(tmp_path: Path) -> None:
    params = make_project(tmp_path / "p")
    summary = ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    raw = params.paths.raw
    assert [p.name for p in sorted(raw.iterdir())] == [
        "date=2026-01-01",
        "date=2026-01-02",
        "date=2026-01-03",
    ]
    assert summary["partitions_written"] == 3 and summary["rows"] == sum(summary["rows_per_day"].values())
    table = pq.read_table(io.partition_dir(raw, D(2026, 1, 2)) / io.PART_FILE)
    assert str(table.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert (
        str(table.schema.field("label").type) == "int64"
        and str(table.schema.field("event_id").type) == "string"
    )
    df = table.to_pandas()
    assert df.equals(df.sort_values(["event_timestamp", "event_id"]).reset_index(drop=True))
    assert (df["event_timestamp"].dt.date == D(2026, 1, 2)).all()
    expected = generate(params.ingest.synthetic, D(2026, 1, 2), D(2026, 1, 3))
    assert len(df) == len(expected) == summary["rows_per_day"]["2026-01-02"]


def test_rerun_and_one_day_runs_give_identical_bytes(tmp_path: Path) -> None:
    params = make_project(tmp_path / "p")
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    first = _digests(params.paths.raw)
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    assert _digests(params.paths.raw) == first
    # Airflow-style one-day runs in another project produce the same files as the long range
    daily = make_project(tmp_path / "daily")
    for day in io.days(D(2026, 1, 1), D(2026, 1, 4)):
        ingest.run(daily, day, day + dt.timedelta(days=1))
    assert _digests(daily.paths.raw) == first


def test_csv_rerun_replaces_partitions_and_leaves_source_untouched(tmp_path: Path) -> None:
    params, src = csv_project(tmp_path, kaggle_frame(D(2026, 1, 1), D(2026, 1, 4)), KAGGLE_COLUMNS)
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    s1 = ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    first = _digests(params.paths.raw)
    s2 = ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    assert _digests(params.paths.raw) == first and s1["rows_per_day"] == s2["rows_per_day"]
    total = sum(len(pq.read_table(p / io.PART_FILE)) for p in params.paths.raw.iterdir())
    assert total == s1["rows"] == len(pd.read_csv(src))  # no duplicates after the rerun
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before
    # the source changes: a day that lost its events loses its stale partition on the next run
    kaggle_frame(D(2026, 1, 1), D(2026, 1, 3)).to_csv(src)
    s3 = ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    assert s3["partitions_removed"] == ["2026-01-03"]
    assert not io.partition_dir(params.paths.raw, D(2026, 1, 3)).exists()


def test_csv_missing_mapped_column_fails_without_writing(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2)).drop(columns=["cc_num"])
    params, _ = csv_project(tmp_path, frame, KAGGLE_COLUMNS)
    with pytest.raises(
        StageError, match=r"transactions\.csv: missing column\(s\) 'cc_num' \(mapped to entity_id\)"
    ):
        ingest.run(params, D(2026, 1, 1), D(2026, 1, 2))
    assert not params.paths.raw.exists()


def test_unparsable_timestamps_fail_with_the_column_named(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2))
    frame.loc[5, "trans_date_trans_time"] = "31/12/2025 25:99"
    params, _ = csv_project(tmp_path, frame, KAGGLE_COLUMNS)
    with pytest.raises(
        StageError, match=r"'trans_date_trans_time' \(mapped to event_timestamp\): 1 unparsable"
    ):
        ingest.run(params, D(2026, 1, 1), D(2026, 1, 2))


def test_log_outside_the_configured_range_says_both_ranges_and_what_to_edit(tmp_path: Path) -> None:
    params, _ = csv_project(tmp_path, kaggle_frame(D(2026, 1, 1), D(2026, 1, 4)), KAGGLE_COLUMNS)
    with pytest.raises(StageError) as err:
        ingest.run(params, D(2025, 6, 1), D(2025, 7, 1))
    message = str(err.value)
    assert "events dated 2026-01-01 to 2026-01-03" in message
    assert "[2025-06-01, 2025-07-01)" in message
    assert 'data.start: "2026-01-01" and data.end: "2026-01-04"' in message
    assert not params.paths.raw.exists()
    # a day without events inside the log's span is a gap, not an error
    assert ingest.run(params, D(2026, 1, 2), D(2026, 1, 3))["rows"] > 0
