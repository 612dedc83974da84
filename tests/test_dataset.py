"""pipelines.dataset: time-based split of events + point-in-time features, clear failures."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from pipelines import contract, dataset, feature_store, features
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.sections import DatasetParams
from tests.test_features import make_events, write_validated

D = dt.date


@pytest.mark.integration
def test_run_splits_by_time_without_overlap(spark, project: Params) -> None:
    start, end = D(2026, 1, 1), D(2026, 1, 8)
    events = make_events(start, end, n_entities=4, per_day=3)
    write_validated(project, events)
    features.run(project, start, end)
    feature_store.run(project, start, end)

    summary = dataset.run(project, start, end)
    parts = {name: pd.read_parquet(project.paths.dataset / f"{name}.parquet") for name in dataset.SPLITS}
    assert sum(len(p) for p in parts.values()) == len(events) == summary["rows"]
    assert parts["train"]["event_timestamp"].max() < parts["valid"]["event_timestamp"].min()
    assert parts["valid"]["event_timestamp"].max() < parts["test"]["event_timestamp"].min()
    ids = [set(p["event_id"]) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    for part in parts.values():
        assert set(events.columns) | set(contract.FEATURE_COLUMNS) == set(part.columns)
        assert part["label"].sum() > 0 and part["event_timestamp"].is_monotonic_increasing
    written = json.loads((project.paths.dataset / "summary.json").read_text())
    assert written["splits"]["test"]["rows"] == len(parts["test"])
    assert written["splits"]["train"]["frauds"] == int(parts["train"]["label"].sum())
    # the test split is about the last test_fraction of the time span
    assert 0.05 < len(parts["test"]) / len(events) < 0.3


@pytest.mark.integration
def test_run_without_validated_data_fails(project: Params) -> None:
    with pytest.raises(StageError, match=r"no validated events .*data/validated.*longer range"):
        dataset.run(project, D(2026, 1, 1), D(2026, 1, 8))


@pytest.mark.unit
def test_split_without_positive_label_names_the_split() -> None:
    ts = pd.date_range("2026-01-01", periods=100, freq="h", tz="UTC")
    labels = [1 if i < 80 and i % 10 == 0 else 0 for i in range(100)]  # no fraud in the last 20%
    frame = pd.DataFrame({"event_timestamp": ts, "label": labels})
    with pytest.raises(StageError, match=r"split 'test' .*no positive label; choose a longer range"):
        dataset.split_by_time(frame, DatasetParams(valid_fraction=0.15, test_fraction=0.15))
    frame.loc[95, "label"] = 1
    splits = dataset.split_by_time(frame, DatasetParams(valid_fraction=0.15, test_fraction=0.15))
    assert [len(splits[s]) for s in dataset.SPLITS] == [70, 15, 15]
