"""Per-event rules derived from the GX suite: what they accept and refuse, and that GX agrees with them."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import CANONICAL_COLUMNS, LABEL, REQUIRED_COLUMNS
from pipelines.engines.gx_suite import failed_expectations, load_suite, validate_frames
from pipelines.errors import StageError
from pipelines.ingestion.columns import KINDS
from pipelines.ingestion.models import BodyParser, InvalidBody, event_parser, label_parser
from pipelines.ingestion.rules import derive_rules
from pipelines.sections import SourceParams
from pipelines.sources import source_columns
from tests.conftest import REPO_ROOT

SUITE = load_suite(REPO_ROOT / "expectations" / "transactions.json")
PARAMETERS = {"min_rows": 1, "max_rows": 5_000_000, "max_amount": 5_000.0}
GOOD: dict[str, Any] = {
    "event_id": "e-1",
    "entity_id": "card_1",
    "event_timestamp": "2026-01-02T03:04:05.123456Z",
    "amount": 42.5,
    "merchant": "m_1",
    "category": "grocery_pos",
    "label": 0,
    "latitude": 40.0,
    "longitude": -73.9,
    "merchant_latitude": 40.1,
    "merchant_longitude": -74.0,
}


def _parser(columns: tuple[str, ...] = CANONICAL_COLUMNS) -> BodyParser:
    return event_parser(derive_rules(SUITE, PARAMETERS, columns), max_items=10)


def _problems(parser: BodyParser, body: Any) -> dict[str, str]:
    """field -> message of every problem the parser finds ({} = accepted)."""
    try:
        parser.parse(json.dumps(body).encode())
    except InvalidBody as err:
        return {str(e["loc"][-1]): e["msg"] for e in err.errors}
    return {}


@pytest.mark.unit
def test_rules_follow_the_suite_and_its_parameters() -> None:
    rules = derive_rules(SUITE, PARAMETERS, CANONICAL_COLUMNS)
    amount = rules.columns["amount"]
    assert amount.kind == "number" and amount.required and not amount.nullable
    assert (amount.bounds[0].low, amount.bounds[0].high) == (0, 5_000.0)  # validate.max_amount
    assert rules.columns[LABEL].value_set == [0, 1] and not rules.columns[LABEL].required
    assert rules.columns["event_id"].required and rules.columns["event_id"].unique
    assert rules.columns["merchant"].kind == "string" and rules.columns["merchant"].nullable
    # a row count judges a partition, never one event
    assert rules.partition_only == ("expect_table_row_count_to_be_between",)
    parser = _parser()
    assert _problems(parser, GOOD) == {}
    assert _problems(parser, {k: GOOD[k] for k in (*REQUIRED_COLUMNS, "event_id") if k != LABEL}) == {}
    assert _problems(parser, GOOD | {"amount": 5_000.01}) == {
        "amount": "must be <= 5000.0 (expect_column_values_to_be_between)"
    }
    assert _problems(parser, GOOD | {"label": 2}) == {
        "label": "must be one of [0, 1] (expect_column_values_to_be_in_set)"
    }
    assert _problems(parser, GOOD | {"amount": None}) == {
        "amount": "must not be null (expect_column_values_to_not_be_null)"
    }
    assert _problems(parser, [GOOD, GOOD])["event_id"].startswith("repeats body[0]: (event_id) must be")
    assert set(_problems(parser, GOOD | {"surprise": 1})) == {"surprise"}  # unknown fields refused


@pytest.mark.unit
def test_rules_follow_the_sources_column_mapping() -> None:
    """A log that maps only the required columns: events may not carry merchant or coordinates."""
    src = SourceParams(kind="csv", path="x.csv", columns={c: c for c in REQUIRED_COLUMNS})
    columns = source_columns(src)
    assert columns == ("event_id", "entity_id", "event_timestamp", "amount", "label")
    parser = _parser(columns)
    minimal = {k: GOOD[k] for k in columns}
    assert _problems(parser, minimal) == {}
    assert _problems(parser, minimal | {"merchant": "m"}) == {"merchant": "Extra inputs are not permitted"}


@pytest.mark.unit
def test_labels_need_an_id_a_valid_label_and_a_time() -> None:
    labels = label_parser(derive_rules(SUITE, PARAMETERS, CANONICAL_COLUMNS), 10)
    ok = {"event_id": "e-1", "label": 1, "labelled_at": "2026-01-09T00:00:00"}
    [parsed] = labels.parse(json.dumps(ok).encode())
    assert parsed.labelled_at == dt.datetime(2026, 1, 9, tzinfo=dt.UTC)  # naive = UTC
    assert set(_problems(labels, ok | {"label": None})) == {"label"}
    assert set(_problems(labels, ok | {"label": 3})) == {"label"}
    assert set(_problems(labels, {"event_id": "e-1", "label": 1})) == {"labelled_at"}
    later = ok | {"labelled_at": "2026-01-10T00:00:00"}
    assert _problems(labels, [ok, later]) == {}  # one event, two labels over time
    assert set(_problems(labels, [ok, later, ok])) == {"event_id"}  # the same key twice


@pytest.mark.unit
def test_an_expectation_without_a_per_event_check_stops_the_service() -> None:
    """Failure case: an unknown row-level expectation is an error naming it, not a silent gap; with
    `mostly` < 1 it is left to the validate stage."""
    odd = {"type": "expect_column_values_to_be_dateutil_parseable", "kwargs": {"column": "merchant"}}
    suite = {**SUITE, "expectations": [*SUITE["expectations"], odd]}
    with pytest.raises(StageError, match=r"expect_column_values_to_be_dateutil_parseable\(merchant\)"):
        derive_rules(suite, PARAMETERS, CANONICAL_COLUMNS)
    lenient = {**odd, "kwargs": {"column": "merchant", "mostly": 0.9}}
    rules = derive_rules(
        {**SUITE, "expectations": [*SUITE["expectations"], lenient]}, PARAMETERS, CANONICAL_COLUMNS
    )
    assert "expect_column_values_to_be_dateutil_parseable(merchant)" in rules.partition_only
    with pytest.raises(StageError, match="suite parameter 'max_amount' has no value"):
        derive_rules(SUITE, {}, CANONICAL_COLUMNS)


# ---- parity with GX -----------------------------------------------------------------------------------

ROWS: dict[str, dict[str, Any]] = {
    "good": GOOD,
    "good_minimal_unlabelled": {k: GOOD[k] for k in ("event_id", "entity_id", "event_timestamp", "amount")},
    "good_bounds_inclusive": GOOD | {"amount": 0.0, "latitude": -90.0, "longitude": 180.0},
    "good_amount_at_max": GOOD | {"amount": 5_000.0},
    "good_integral_amount": GOOD | {"amount": 12},
    "good_offset_time": GOOD | {"event_timestamp": "2026-01-02T05:04:05+02:00"},
    "good_positive": GOOD | {"label": 1},
    "good_null_optionals": GOOD | {"merchant": None, "latitude": None},
    "bad_negative_amount": GOOD | {"amount": -0.01},
    "bad_amount_over_max": GOOD | {"amount": 5_000.5},
    "bad_amount_string": GOOD | {"amount": "12.5"},
    "bad_amount_bool": GOOD | {"amount": True},
    "bad_amount_null": GOOD | {"amount": None},
    "bad_amount_infinite": GOOD | {"amount": math.inf},
    "bad_label_2": GOOD | {"label": 2},
    "bad_label_float": GOOD | {"label": 1.0},
    "bad_label_string": GOOD | {"label": "1"},
    "bad_latitude": GOOD | {"latitude": 90.5},
    "bad_longitude": GOOD | {"longitude": -180.5},
    "bad_merchant_latitude": GOOD | {"merchant_latitude": 1e9},
    "bad_no_entity": {k: v for k, v in GOOD.items() if k != "entity_id"},
    "good_entity_number": GOOD | {"entity_id": 4_000_000_000_000_123},
    "bad_time_text": GOOD | {"event_timestamp": "yesterday"},
    "bad_time_epoch": GOOD | {"event_timestamp": 1_767_000_000},
    "bad_event_id_null": GOOD | {"event_id": None},
    "bad_two_fields": GOOD | {"amount": -1.0, "label": 5},
}


# Where the rules are stricter than the suite, on purpose: GX's `object` type is a dtype, and an object
# column holds anything; on the wire a string column takes a string (or an integer id), never a float or
# a boolean, which are a producer's bug a JSON body can show and a log cannot.
STRICTER_THAN_GX: dict[str, dict[str, Any]] = {
    "entity_float": GOOD | {"entity_id": 12.5},
    "merchant_bool": GOOD | {"merchant": True},
}


def _typed(kind: str, value: Any) -> Any:
    """`value` as the canonical column holds it, or None when the JSON value is not of the column's kind
    (the column then holds the raw value as an object and GX's type expectation judges it)."""
    if kind == "string":  # an integer id reads as its decimal spelling (sources.log, models.py)
        integral = isinstance(value, int) and not isinstance(value, bool)
        return str(value) if integral else value if isinstance(value, str) else None
    if kind == "number":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _column(name: str, value: Any) -> pd.Series:
    """One row's value as a one-row canonical column (what a raw partition reads back as)."""
    kind = KINDS[name]
    if value is None and name == LABEL:
        value = 0  # deferred: the ingest stage gives an unlabelled event ingest.landing.unlabelled
    if value is None:
        dtype = {"number": np.float64, "timestamp": "datetime64[us, UTC]"}.get(kind, object)
        return pd.Series([None], dtype=dtype)
    typed = _typed(kind, value)
    if typed is None:
        return pd.Series([value], dtype=object)
    if kind == "timestamp":
        return pd.Series([typed]).astype("datetime64[us, UTC]")
    dtype = {"number": np.float64, "integer": np.int64}.get(kind, object)
    return pd.Series([typed], dtype=dtype)


def _as_partition(row: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({c: _column(c, row.get(c)) for c in CANONICAL_COLUMNS})


@pytest.mark.integration
def test_per_event_rules_and_gx_agree_on_good_and_bad_rows() -> None:
    """Every row: accepted by the rules <=> passed by GX, and the same columns fail."""
    parser = _parser()
    rows = ROWS | STRICTER_THAN_GX
    results = validate_frames({name: _as_partition(row) for name, row in rows.items()}, SUITE, PARAMETERS)
    verdicts = {
        name: (set(_problems(parser, row)), {f["column"] for f in failed_expectations(results[name])})
        for name, row in rows.items()
    }
    disagreements = {
        name: {"rules": sorted(ours), "gx": sorted(gx)}
        for name, (ours, gx) in verdicts.items()
        if name in ROWS and (ours != gx or name.startswith("good") != (not ours))
    }
    assert not disagreements
    assert {name: verdicts[name] for name in STRICTER_THAN_GX} == {
        "entity_float": ({"entity_id"}, set()),
        "merchant_bool": ({"merchant"}, set()),
    }
