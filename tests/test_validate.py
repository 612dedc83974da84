"""Validate: the GX suite on raw partitions; pass -> validated/, fail -> quarantine/ + report + GateFailed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import ingest, io, validate
from pipelines.contract import REQUIRED_COLUMNS
from pipelines.errors import GateFailed, StageError
from tests.conftest import REPO_ROOT, make_project
from tests.test_source import KAGGLE_COLUMNS, csv_project, kaggle_frame

pytestmark = pytest.mark.integration

D = dt.date


def _part(base: Path, day: dt.date) -> Path:
    return io.partition_dir(base, day) / io.PART_FILE


def test_good_partitions_pass_and_are_copied_with_data_docs(tmp_path: Path) -> None:
    params = make_project(tmp_path / "p")
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 3))
    summary = validate.run(params, D(2026, 1, 1), D(2026, 1, 3))
    assert summary["passed"] == 2 and summary["failed"] == 0
    for day in (D(2026, 1, 1), D(2026, 1, 2)):
        assert _part(params.paths.validated, day).read_bytes() == _part(params.paths.raw, day).read_bytes()
    assert not params.paths.quarantine.exists()
    docs = params.paths.reports / "validation"
    index = (docs / "index.html").read_text()
    assert "Great Expectations" in index and "date=2026-01-02" in index
    assert len(list((docs / "validations").rglob("*.html"))) == 2
    assert json.loads((docs / "summary.json").read_text())["partitions"]["2026-01-01"]["success"] is True


def test_corrupted_partitions_are_quarantined_and_gate_fails(tmp_path: Path) -> None:
    days = (D(2026, 1, 1), D(2026, 1, 2), D(2026, 1, 3))
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 4))
    params, src = csv_project(tmp_path, frame, KAGGLE_COLUMNS)
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    validate.run(params, D(2026, 1, 1), D(2026, 1, 4))  # all clean: three validated partitions
    assert all(_part(params.paths.validated, d).exists() for d in days)

    # day 2 of the user's log goes bad: null / non-numeric / negative amounts, a null card, label 2
    bad = frame.astype({"amt": object, "cc_num": object})
    rows = bad.index[pd.to_datetime(bad["trans_date_trans_time"]).dt.date == days[1]]
    bad.loc[rows[0], "amt"] = None
    bad.loc[rows[1], "amt"] = "abc"
    bad.loc[rows[2], "amt"] = -12.5
    bad.loc[rows[3], "cc_num"] = None
    bad.loc[rows[4], "is_fraud"] = 2
    bad.to_csv(src)
    source_bytes = src.read_bytes()
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 4))
    # day 3 gets wrong types from a broken writer: amounts and labels as strings
    raw3 = _part(params.paths.raw, days[2])
    df3 = pq.read_table(raw3).to_pandas()
    df3["amount"] = df3["amount"].astype(str)
    df3["label"] = df3["label"].astype(str)
    pq.write_table(pa.Table.from_pandas(df3, preserve_index=False), raw3)

    with pytest.raises(GateFailed) as err:
        validate.run(params, D(2026, 1, 1), D(2026, 1, 4))
    msg = str(err.value)
    assert "2 of 3 partition(s)" in msg and "date=2026-01-01" not in msg
    day2 = msg.split("date=2026-01-02", 1)[1].split("date=2026-01-03")[0]
    for expected in (
        "expect_column_values_to_not_be_null(amount)",
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_not_be_null(entity_id)",
        "expect_column_values_to_be_in_set(label)",
    ):
        assert expected in day2
    day3 = msg.split("date=2026-01-03", 1)[1]
    assert "expect_column_type_to_be(amount)" in day3 and "expect_column_type_to_be(label)" in day3

    for day in days[1:]:
        q = io.partition_dir(params.paths.quarantine, day)
        assert (q / io.PART_FILE).read_bytes() == _part(params.paths.raw, day).read_bytes()
        report = json.loads((q / validate.RESULT_FILE).read_text())
        assert report["success"] is False and report["gx_result"]["success"] is False and report["failed"]
        assert not io.partition_dir(params.paths.validated, day).exists()  # stale copy removed
    assert _part(params.paths.validated, days[0]).exists()
    assert not io.partition_dir(params.paths.quarantine, days[0]).exists()
    assert src.read_bytes() == source_bytes  # the user's log is never modified
    summary = json.loads((params.paths.reports / "validation" / "summary.json").read_text())
    assert (summary["passed"], summary["failed"]) == (1, 2)
    assert (params.paths.reports / "validation" / "index.html").is_file()


def test_optional_columns_skipped_and_bounds_come_from_params(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2))[["trans_date_trans_time", "cc_num", "amt", "is_fraud"]]
    required = {k: KAGGLE_COLUMNS[k] for k in REQUIRED_COLUMNS}
    params, _ = csv_project(tmp_path, frame, required)
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 2))
    summary = validate.run(params, D(2026, 1, 1), D(2026, 1, 2))
    entry = summary["partitions"]["2026-01-01"]
    assert entry["success"] and "merchant" in entry["skipped_optional_columns"]
    assert "event_id" not in entry["skipped_optional_columns"]  # ingest derived it
    # the suite's $PARAMETER bounds are filled from params.yaml at run time
    strict = params.model_copy(
        update={"validate_": params.validate_.model_copy(update={"max_amount": 1.0, "min_rows": 10_000})}
    )
    with pytest.raises(GateFailed) as err:
        validate.run(strict, D(2026, 1, 1), D(2026, 1, 2))
    assert "expect_column_values_to_be_between(amount)" in str(err.value)
    assert "expect_table_row_count_to_be_between" in str(err.value)


def test_no_raw_partitions_and_missing_suite_are_stage_errors(tmp_path: Path) -> None:
    params = make_project(tmp_path / "p")
    with pytest.raises(StageError, match=r"no raw partitions for \[2026-01-01, 2026-01-02\)"):
        validate.run(params, D(2026, 1, 1), D(2026, 1, 2))
    with pytest.raises(StageError, match=r"nope\.json: expectation suite not found"):
        validate.load_suite(tmp_path / "nope.json")
    # a typo in the suite must not silently drop an expectation (GX itself would only log it)
    suite_file = params.resolve(params.validate_.suite)
    suite = json.loads(suite_file.read_text())
    suite["expectations"].append(
        {"type": "expect_column_values_to_be_postive", "kwargs": {"column": "amount"}}
    )
    suite_file.write_text(json.dumps(suite))
    ingest.run(params, D(2026, 1, 1), D(2026, 1, 2))
    with pytest.raises(
        StageError,
        match=r"transactions\.json: invalid expectation\(s\) \['expect_column_values_to_be_postive'\]",
    ):
        validate.run(params, D(2026, 1, 1), D(2026, 1, 2))
    assert not params.paths.validated.exists() and not params.paths.quarantine.exists()


def test_suite_file_covers_the_contract() -> None:
    suite = validate.load_suite(REPO_ROOT / "expectations" / "transactions.json")
    by_type: dict[str, set] = {}
    for e in suite["expectations"]:
        by_type.setdefault(e["type"], set()).add(e["kwargs"].get("column"))
    assert set(REQUIRED_COLUMNS) <= by_type["expect_column_to_exist"]
    assert set(REQUIRED_COLUMNS) <= by_type["expect_column_values_to_not_be_null"]
    assert {"amount", "label", "event_timestamp"} <= by_type["expect_column_type_to_be"]
    assert "event_id" in by_type["expect_column_values_to_be_unique"]
    assert "expect_table_row_count_to_be_between" in by_type
    reduced, skipped = validate.suite_for_columns(suite, list(REQUIRED_COLUMNS))
    assert "merchant" in skipped and "event_id" in skipped
    assert all(e["kwargs"].get("column") not in skipped for e in reduced["expectations"])
