"""pipelines.batch_predict: Spark mapInArrow scoring equals Release.score; deterministic daily outputs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Params
from pipelines.engines.registry import ReleaseTags, open_registry
from pipelines.errors import StageError
from pipelines.io import write_partition, write_table
from pipelines.model.packaging import load_release
from pipelines.sections import BatchPredictParams, RegisterParams
from tests.conftest import make_project
from tests.test_register import FEAST_COLUMNS, START, tiny_events, train_tiny_release

pytestmark = pytest.mark.integration

MODEL = "batch_model"
N_DAYS = 2


@pytest.fixture(scope="module")
def scored_project(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny project: one trained release registered as champion, validated events, a stub feature join.

    Feast is stubbed (historical_features returns the precomputed feature columns joined by event_id):
    its own tests cover the join, here only the scoring path is under test.
    """
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_project(tmp_path_factory.mktemp("batch") / "project")
    params = params.model_copy(
        update={
            "register_": RegisterParams(model_name=MODEL),
            "batch_predict": BatchPredictParams(alias="champion", batch_size=64),
        }
    )
    release = train_tiny_release(params, seed=3)
    events = tiny_events(240, seed=4, n_days=N_DAYS)
    # a threshold that flags ~20% of the tiny set, so decisions are not all one value
    scores = load_release(release["model_uri"]).score(events)
    threshold = float(np.quantile(scores, 0.8))
    registry = open_registry(params)
    tags = ReleaseTags(
        feature_list=release["feature_list"],
        feature_service="fraud_scorer_v1",
        threshold=threshold,
        train_start=release["train_start"],
        train_end=release["train_end"],
        fingerprint=release["fingerprint"],
    )
    version = registry.register_release(MODEL, release["model_uri"], release["run_id"], tags)
    registry.move_alias(MODEL, "champion", version, who="test", why="bootstrap")

    features = events.set_index("event_id")[list(FEAST_COLUMNS)]
    validated = events.drop(columns=list(FEAST_COLUMNS))
    for i in range(N_DAYS):
        day = START + dt.timedelta(days=i)
        part = validated[validated["event_timestamp"].dt.date == day]
        write_partition(part.reset_index(drop=True), params.paths.validated, day)

    def fake_historical_features(_: Params, ev: pd.DataFrame) -> pd.DataFrame:
        return ev.join(features, on="event_id")

    mp.setattr("pipelines.engines.feast_store.historical_features", fake_historical_features)
    yield params, threshold, version, events
    mp.undo()


def test_spark_scores_equal_release_score(spark: Any, scored_project: Any, tmp_path: Path) -> None:
    import pyarrow as pa

    from pipelines.batch_predict import arrow_batch_size, score_spark

    params, threshold, version, events = scored_project
    uri = f"models:/{MODEL}/{version}"
    frame = events.drop(columns=["label"])
    write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet")
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    # Arrow batches of 50 over 240 rows, sliced to 30 per model call; one release load per worker
    df = spark.read.parquet(str(tmp_path / "in.parquet"))
    with arrow_batch_size(spark, 50):
        out = score_spark(df, uri, threshold, 30, tracking_uri=params.tracking_uri).toPandas()
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == previous
    assert list(out.columns) == ["event_id", "entity_id", "event_timestamp", "score", "decision"]
    expected = load_release(uri).score(frame)
    got = out.set_index("event_id").loc[frame["event_id"], "score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (out["decision"] == (out["score"] >= threshold)).all()
    assert 0 < out["decision"].sum() < len(out)  # the threshold actually splits the tiny set


def test_run_writes_daily_partitions_and_rerun_is_identical(spark: Any, scored_project: Any) -> None:
    from pipelines import batch_predict

    params, threshold, version, events = scored_project
    end = START + dt.timedelta(days=N_DAYS)
    summary = batch_predict.run(params, START, end)
    assert summary["rows"] == len(events) and summary["model_version"] == version
    files = sorted(params.paths.predictions.glob("date=*/part-0.parquet"))
    assert [f.parent.name for f in files] == [f"date={START + dt.timedelta(days=i)}" for i in range(N_DAYS)]
    first = [f.read_bytes() for f in files]

    day0 = pd.read_parquet(files[0])
    assert list(day0.columns) == list(batch_predict.OUTPUT_COLUMNS)
    assert day0["event_timestamp"].is_monotonic_increasing
    assert (day0["model_name"] == MODEL).all() and (day0["model_version"] == version).all()
    assert (day0["threshold"] == threshold).all()
    frame = events.set_index("event_id").loc[day0["event_id"]].reset_index()
    expected = load_release(f"models:/{MODEL}/{version}").score(frame)
    np.testing.assert_allclose(day0["score"].to_numpy(), expected, rtol=0, atol=1e-6)

    # a one-day rerun replaces that day with the same bytes and leaves the other day alone
    batch_predict.run(params, START, START + dt.timedelta(days=1))
    assert [f.read_bytes() for f in files] == first
    assert not list(params.paths.predictions.glob(".tmp-*")) and not list(params.paths.data.glob(".tmp-*"))


def test_missing_alias_and_missing_data_are_refused(spark: Any, scored_project: Any) -> None:
    from pipelines import batch_predict

    params, *_ = scored_project
    end = START + dt.timedelta(days=N_DAYS)
    no_alias = params.model_copy(update={"batch_predict": BatchPredictParams(alias="nobody")})
    with pytest.raises(StageError, match=f"'{MODEL}' has no alias 'nobody'"):
        batch_predict.run(no_alias, START, end)
    with pytest.raises(StageError, match="no validated partitions"):
        batch_predict.run(params, dt.date(2030, 1, 1), dt.date(2030, 1, 2))
