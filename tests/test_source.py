"""Source: the seeded synthetic generator and the user's CSV/Parquet log with a column mapping."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.contract import CANONICAL_COLUMNS
from pipelines.errors import StageError
from pipelines.sections import DriftParams, SyntheticParams
from pipelines.sources import load_events
from pipelines.sources.log import canonicalize
from pipelines.sources.synthetic import generate
from pipelines.sources.world import NEW_CATEGORIES
from tests.conftest import make_project

pytestmark = pytest.mark.unit

D = dt.date
SMALL = SyntheticParams(seed=3, n_entities=80, n_merchants=40, txns_per_entity_per_day=2.0, fraud_rate=0.02)

KAGGLE_COLUMNS = {
    "event_id": "trans_num",
    "entity_id": "cc_num",
    "event_timestamp": "trans_date_trans_time",
    "amount": "amt",
    "merchant": "merchant",
    "category": "category",
    "label": "is_fraud",
    "latitude": "lat",
    "longitude": "long",
    "merchant_latitude": "merch_lat",
    "merchant_longitude": "merch_long",
}


def kaggle_frame(start: dt.date, end: dt.date) -> pd.DataFrame:
    """Synthetic events in the Kaggle "credit card transactions" layout (with unmapped extra columns)."""
    ev = generate(SMALL, start, end)
    card = ev["entity_id"].str.removeprefix("card_").astype(int) + 4_000_000_000_000_000
    return pd.DataFrame(
        {
            "trans_date_trans_time": ev["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "cc_num": card,
            "merchant": "fraud_" + ev["merchant"],
            "category": ev["category"],
            "amt": ev["amount"],
            "first": "Jane",
            "lat": ev["latitude"].round(4),
            "long": ev["longitude"].round(4),
            "trans_num": [hashlib.md5(e.encode()).hexdigest() for e in ev["event_id"]],
            "unix_time": ev["event_timestamp"].astype("int64") // 1_000_000,
            "merch_lat": ev["merchant_latitude"].round(6),
            "merch_long": ev["merchant_longitude"].round(6),
            "is_fraud": ev["label"],
        }
    )


def csv_project(tmp_path: Path, frame: pd.DataFrame, columns: dict[str, str], **source: object):
    path = tmp_path / "project" / "external" / "transactions.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path)  # keeps the unnamed index column, like the Kaggle file
    params = make_project(
        tmp_path / "project",
        {
            "ingest": {
                "source": {"kind": "csv", "path": "external/transactions.csv", "columns": columns, **source}
            }
        },
    )
    return params, path


# --- synthetic -------------------------------------------------------------------------------------


def test_generator_is_deterministic_and_seeded() -> None:
    a = generate(SMALL, D(2026, 1, 1), D(2026, 1, 4))
    b = generate(SMALL, D(2026, 1, 1), D(2026, 1, 4))
    pd.testing.assert_frame_equal(a, b)
    other = generate(SMALL.model_copy(update={"seed": 4}), D(2026, 1, 1), D(2026, 1, 4))
    assert not a["amount"].equals(other["amount"])


def test_generator_is_composable_per_day() -> None:
    whole = generate(SMALL, D(2026, 1, 1), D(2026, 1, 6))
    parts = pd.concat(
        [generate(SMALL, D(2026, 1, 1), D(2026, 1, 3)), generate(SMALL, D(2026, 1, 3), D(2026, 1, 6))],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(whole, parts)
    one_day = generate(SMALL, D(2026, 1, 4), D(2026, 1, 5)).reset_index(drop=True)
    inside = whole[whole["event_timestamp"].dt.date == D(2026, 1, 4)].reset_index(drop=True)
    pd.testing.assert_frame_equal(one_day, inside)


def test_generator_emits_the_canonical_schema() -> None:
    ev = generate(SMALL, D(2026, 1, 1), D(2026, 1, 3))
    assert list(ev.columns) == list(CANONICAL_COLUMNS)
    assert str(ev["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert ev["label"].dtype == np.int64 and set(ev["label"].unique()) <= {0, 1}
    assert ev["amount"].dtype == np.float64 and (ev["amount"] > 0).all()
    assert ev["event_id"].is_unique and ev[["event_id", "entity_id", "merchant"]].notna().all().all()
    assert ev.equals(ev.sort_values(["event_timestamp", "event_id"]))
    # every event falls inside its own day, so per-day generation never leaks into the next date
    assert (ev["event_timestamp"].dt.date < D(2026, 1, 3)).all()


@pytest.mark.parametrize("rate", [0.005, 0.01, 0.02])
def test_fraud_rate_follows_params(rate: float) -> None:
    cfg = SyntheticParams(seed=5, n_entities=400, n_merchants=120, fraud_rate=rate)
    ev = generate(cfg, D(2026, 1, 1), D(2026, 1, 31))
    assert 0.6 * rate < ev["label"].mean() < 1.5 * rate
    assert len(ev) == pytest.approx(400 * 2.0 * 30, rel=0.15)


def test_planted_fraud_signals_are_present_but_noisy() -> None:
    cfg = SyntheticParams(seed=5, n_entities=400, n_merchants=120, fraud_rate=0.02)
    ev = generate(cfg, D(2026, 1, 1), D(2026, 1, 31))
    fraud, legit = ev[ev["label"] == 1], ev[ev["label"] == 0]
    night = ev["event_timestamp"].dt.hour.isin([22, 23, 0, 1, 2, 3, 4])
    dist = np.hypot(ev["latitude"] - ev["merchant_latitude"], ev["longitude"] - ev["merchant_longitude"])
    assert fraud["amount"].median() > 2 * legit["amount"].median()
    assert night[fraud.index].mean() > 3 * night[legit.index].mean()
    assert dist[fraud.index].median() > 5 * dist[legit.index].median()
    # not trivially separable: some legit events are far from home, at night or large
    assert (dist[legit.index] > 5).sum() > 0 and night[legit.index].sum() > 0
    assert (legit["amount"] > fraud["amount"].median()).sum() > 0


def test_drift_mode_changes_the_distribution_from_its_start() -> None:
    start, end, drift_day = D(2026, 1, 1), D(2026, 1, 21), D(2026, 1, 11)
    base = generate(SMALL, start, end)
    drifted = generate(
        SMALL.model_copy(
            update={"drift": DriftParams(enabled=True, start=drift_day, new_merchant_share=0.3)}
        ),
        start,
        end,
    )
    before = drifted["event_timestamp"].dt.date < drift_day
    # days before drift.start are untouched
    pd.testing.assert_frame_equal(drifted[before], base[base["event_timestamp"].dt.date < drift_day])
    after, base_after = drifted[~before], base[base["event_timestamp"].dt.date >= drift_day]
    assert after["amount"].median() > 1.3 * base_after["amount"].median()
    new_cats = {c for c, _ in NEW_CATEGORIES}
    share_new = after["category"].isin(new_cats).mean()
    assert 0.2 < share_new < 0.4
    assert not drifted.loc[before, "category"].isin(new_cats).any()
    # the new fraud pattern: card testing, tiny amounts at the new merchants
    new_fraud = after[(after["label"] == 1) & after["category"].isin(new_cats)]
    assert len(new_fraud) > 0 and new_fraud["amount"].median() < 10


# --- the user's log ------------------------------------------------------------------------------


def test_kaggle_shaped_csv_maps_to_canonical(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 3))
    params, _ = csv_project(tmp_path, frame, KAGGLE_COLUMNS)
    ev = load_events(params, D(2026, 1, 1), D(2026, 1, 2))
    assert list(ev.columns) == list(CANONICAL_COLUMNS)
    assert str(ev["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert ev["label"].dtype == "Int64" and ev["amount"].dtype == np.float64
    # card numbers stay exact strings (no float round-trip), timestamps naive -> UTC
    assert ev["entity_id"].iloc[0].startswith("40000000000")
    assert ev["entity_id"].str.fullmatch(r"\d{16}").all()
    assert (ev["event_timestamp"].dt.date == D(2026, 1, 1)).all()
    n_day1 = (pd.to_datetime(frame["trans_date_trans_time"]).dt.date == D(2026, 1, 1)).sum()
    assert len(ev) == n_day1
    assert set(ev["event_id"]) <= set(frame["trans_num"])


def test_missing_optional_columns_are_tolerated_and_event_id_derived(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2))[["trans_date_trans_time", "cc_num", "amt", "is_fraud"]]
    required = {k: KAGGLE_COLUMNS[k] for k in ("entity_id", "event_timestamp", "amount", "label")}
    params, _ = csv_project(tmp_path, frame, required)
    first = load_events(params, D(2026, 1, 1), D(2026, 1, 2))
    assert list(first.columns) == ["event_id", "entity_id", "event_timestamp", "amount", "label"]
    second = load_events(params, D(2026, 1, 1), D(2026, 1, 2))
    pd.testing.assert_series_equal(first["event_id"], second["event_id"])
    assert first["event_id"].is_unique and first["event_id"].str.fullmatch(r"[0-9a-f]{20}").all()
    # the id depends on the row's values, not on its position in the file
    shuffled = canonicalize(frame.iloc[::-1], required, None, "x.csv")
    assert set(shuffled["event_id"]) == set(first["event_id"])


def test_missing_mapped_column_names_file_and_column(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2)).drop(columns=["amt"])
    params, path = csv_project(tmp_path, frame, KAGGLE_COLUMNS)
    with pytest.raises(StageError, match=r"'amt' \(mapped to amount\)") as err:
        load_events(params, D(2026, 1, 1), D(2026, 1, 2))
    assert str(err.value).startswith(str(path))


def test_missing_source_file_is_a_stage_error(tmp_path: Path) -> None:
    params = make_project(
        tmp_path / "p",
        {"ingest": {"source": {"kind": "parquet", "path": "nope.parquet", "columns": KAGGLE_COLUMNS}}},
    )
    with pytest.raises(StageError, match=r"nope\.parquet: source file not found"):
        load_events(params, D(2026, 1, 1), D(2026, 1, 2))


def test_bad_values_are_kept_but_bad_shape_raises() -> None:
    cols = {"entity_id": "card", "event_timestamp": "ts", "amount": "amt", "label": "y"}
    raw = pd.DataFrame(
        {
            "card": ["1", None, "3"],
            "ts": ["2026-01-01 10:00:00", "2026-01-01T11:00:00+01:00", "2026-01-01 12:00"],
            "amt": ["12.5", "abc", "-3"],
            "y": ["0", "1", "2"],
        }
    )
    ev = canonicalize(raw, cols, None, "log.csv")
    assert ev["amount"].isna().tolist() == [False, True, False] and ev["amount"].iloc[2] == -3
    assert ev["entity_id"].isna().iloc[1] and ev["label"].tolist() == [0, 1, 2]
    assert ev["event_timestamp"].dt.hour.tolist() == [10, 10, 12]  # +01:00 converted to UTC
    with pytest.raises(
        StageError, match=r"log\.csv: column 'ts' \(mapped to event_timestamp\): 1 unparsable"
    ):
        canonicalize(raw.assign(ts=["2026-01-01", "yesterday", "2026-01-02"]), cols, None, "log.csv")
    with pytest.raises(StageError, match=r"column 'amt' \(mapped to amount\): expected numbers"):
        canonicalize(raw.assign(amt=["a", "b", "c"]), cols, None, "log.csv")
    with pytest.raises(StageError, match=r"format '%d/%m/%Y'"):
        canonicalize(raw, cols, "%d/%m/%Y", "log.csv")


def test_parquet_source_with_native_types(tmp_path: Path) -> None:
    frame = kaggle_frame(D(2026, 1, 1), D(2026, 1, 2))
    frame["trans_date_trans_time"] = pd.to_datetime(frame["trans_date_trans_time"])  # tz-naive -> UTC
    path = tmp_path / "p" / "log.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    params = make_project(
        tmp_path / "p",
        {"ingest": {"source": {"kind": "parquet", "path": "log.parquet", "columns": KAGGLE_COLUMNS}}},
    )
    ev = load_events(params, D(2026, 1, 1), D(2026, 1, 2))
    assert len(ev) == len(frame) and ev["entity_id"].str.fullmatch(r"\d{16}").all()
    assert str(ev["event_timestamp"].dtype) == "datetime64[us, UTC]"
