"""pipelines.feature_store: apply + ranged materialize, online state, point-in-time historical join."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines import contract, feature_store, features, io
from pipelines.config import Params
from pipelines.engines import feast_store
from pipelines.errors import StageError
from tests.conftest import make_project
from tests.test_features import make_events, write_validated

pytestmark = pytest.mark.integration

D = dt.date
START, END = D(2026, 1, 1), D(2026, 1, 4)


@pytest.fixture(scope="module")
def store_project(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, pd.DataFrame]:
    """A tiny project with validated events, features and an applied + materialized store."""
    params = make_project(tmp_path_factory.mktemp("fs") / "project", {"features": {"history_days": 2}})
    events = make_events(START, END, n_entities=4, per_day=3)
    write_validated(params, events)
    features.run(params, START, END)
    summary = feature_store.run(params, START, END)
    assert summary["partitions"] == 3
    return params, events


def _feature_rows(params: Params) -> pd.DataFrame:
    return io.read_partitions(params.paths.features, START, END)


def test_ttl_comes_from_params(store_project) -> None:
    params, _ = store_project
    view = feast_store.get_store(params).get_feature_view(contract.FEATURE_VIEW)
    assert view.ttl == dt.timedelta(days=2)
    assert sorted(f.name for f in view.features) == sorted(contract.FEATURE_COLUMNS)


def test_online_features_hold_state_after_last_event(store_project) -> None:
    """The reader serving uses (OnlineFeatureReader): one row per asked entity, in order, NaN if unknown,
    and which entities the store holds at all."""
    params, _ = store_project
    rows = _feature_rows(params)
    last = rows.sort_values("event_timestamp").groupby("entity_id").tail(1).set_index("entity_id")
    read = feast_store.OnlineFeatureReader(params)
    answer = read(["e2", "nobody", "e0"])
    assert answer.found.tolist() == [True, False, True]
    online = answer.values
    assert online.shape == (3, len(contract.FEATURE_COLUMNS)) and online.dtype == np.float64
    for i, entity in ((0, "e2"), (2, "e0")):
        expected = last.loc[entity, contract.FEATURE_COLUMNS].astype("float64").to_numpy()
        np.testing.assert_allclose(online[i], expected)
    assert np.isnan(online[1]).all()
    np.testing.assert_array_equal(read(["e0"]).values[0], online[2])  # the reader's one store, asked again


def test_historical_features_point_in_time_same_rows_and_order(store_project) -> None:
    params, events = store_project
    # shuffled, with a duplicate row, an unknown entity and an event far beyond the ttl: an offline store
    # may drop or merge such rows; the helper must still return one row per input row, in order
    extra = pd.DataFrame(
        {
            "entity_id": ["nobody", "e1"],
            "event_timestamp": pd.to_datetime(["2026-01-02 12:00", "2026-03-01 00:00"], utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "event_id": ["x1", "x2"],
        }
    )
    request = pd.concat([events, events.iloc[[5]], extra], ignore_index=True).sample(frac=1, random_state=3)
    out = feast_store.historical_features(params, request)
    assert len(out) == len(request) and out.index.equals(request.index)
    assert out["event_id"].tolist() == request["event_id"].tolist()
    assert all(out[c].dtype == np.float64 for c in contract.FEATURE_COLUMNS)

    rows = _feature_rows(params).sort_values("event_timestamp")
    for entity, group in events.sort_values("event_timestamp").groupby("entity_id"):
        got = out[out["entity_id"] == entity].drop_duplicates("event_id").set_index("event_id")
        first = group.iloc[0]["event_id"]
        assert got.loc[first, contract.FEATURE_COLUMNS].isna().all()  # first event: no state yet
        state = rows[rows["entity_id"] == entity].reset_index(drop=True)
        for i, event_id in enumerate(group["event_id"].iloc[1:]):
            # the state after the PREVIOUS event, never including the event itself
            expected = state.loc[i, contract.FEATURE_COLUMNS].astype("float64").to_numpy()
            np.testing.assert_allclose(got.loc[event_id, contract.FEATURE_COLUMNS].to_numpy(float), expected)
    dup = out[out["event_id"] == events.iloc[5]["event_id"]]
    assert len(dup) == 2 and dup[contract.FEATURE_COLUMNS].iloc[0].equals(
        dup[contract.FEATURE_COLUMNS].iloc[1]
    )
    assert out.loc[out["event_id"].isin(["x1", "x2"]), contract.FEATURE_COLUMNS].isna().all().all()


def test_historical_features_rejects_events_without_keys(store_project) -> None:
    params, events = store_project
    with pytest.raises(StageError, match=r"lack columns \['event_timestamp'\]"):
        feast_store.historical_features(params, events.drop(columns="event_timestamp"))


def test_run_without_features_fails(project: Params) -> None:
    with pytest.raises(StageError, match=r"no feature partitions .*data/features"):
        feature_store.run(project, START, END)


def test_redis_online_store_config(tmp_path) -> None:
    params = make_project(
        tmp_path / "p", {"feature_store": {"online_store": "redis", "redis_connection_string": "redis:6380"}}
    )
    config = feast_store.repo_config(params)
    assert config.online_store.type == "redis" and config.online_store.connection_string == "redis:6380"
    assert config.project == "sluice" and config.repo_path == params.root / "feature_repo"


def test_features_before_apply_fail_clearly(project: Params) -> None:
    events = make_events(START, D(2026, 1, 2), n_entities=2, per_day=2)
    with pytest.raises(StageError, match=r"fraud_scorer_v1.*run the feature_store stage"):
        feast_store.historical_features(project, events)


def test_source_glob_is_made_absolute_and_must_point_at_data_features(project: Params) -> None:
    """DuckDB reads a FileSource relative to the working directory: load_definitions makes the repo's
    relative glob absolute, and refuses a source outside data/features (Feast would read other data)."""
    from feast.infra.offline_stores.file_source import FileSource

    (source,) = [o for o in feast_store.load_definitions(project) if isinstance(o, FileSource)]
    assert source.path == str(project.paths.features.resolve() / "date=*" / "*.parquet")

    definitions = project.root / "feature_repo" / "definitions.py"
    definitions.write_text(definitions.read_text().replace("../data/features/", "../data/elsewhere/"))
    with pytest.raises(StageError, match=r"data/elsewhere, but features are written to .*data/features"):
        feast_store.load_definitions(project)
