"""Feast online store on Redis: materialize with feature_store.online_store=redis, same values as SQLite.

Uses a unique Feast project name (the tmp copy of feature_repo/feature_store.yaml) and deletes only that
project's keys afterwards: the Redis server is shared, never FLUSHALL it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.contract import FEATURE_COLUMNS
from pipelines.engines import feast_store
from pipelines.io import write_partition
from tests.conftest import make_project
from tests.scale.conftest import REDIS, reachable

pytestmark = pytest.mark.integration

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 3)
ENTITIES = [f"c{i}" for i in range(12)]


def _features(day: dt.date, seed: int) -> pd.DataFrame:
    """A features partition in the layout of pipelines.features (data contract 2), tiny and random."""
    rng = np.random.default_rng(seed)
    n = 36
    ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 86_000, n)).round(), unit="s")
    df = pd.DataFrame({"entity_id": [ENTITIES[i % len(ENTITIES)] for i in range(n)], "event_timestamp": ts})
    df["event_timestamp"] = df["event_timestamp"].astype("datetime64[us, UTC]")
    for c in ("txn_count_1h", "txn_count_24h", "txn_count_7d", "txn_count_hist"):
        df[c] = rng.integers(0, 30, n).astype(np.int64)
    for c in (
        "amount_sum_1h",
        "amount_sum_24h",
        "amount_mean_24h",
        "amount_sum_7d",
        "amount_mean_7d",
        "distinct_merchants_24h",
        "amount_mean_hist",
        "amount_std_hist",
    ):
        df[c] = rng.uniform(0, 500, n)
    df["last_event_ts"] = df["event_timestamp"].astype("int64") / 1e6
    return df.sort_values(["event_timestamp", "entity_id"]).reset_index(drop=True)


def _redis_keys(client, project: str) -> list[bytes]:
    # Feast's Redis keys are <serialized entity key><project name>
    return list(client.scan_iter(match=f"*{project}".encode(), count=1000))


def test_redis_online_store_matches_sqlite(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    host, _, port = REDIS.partition(":")
    if not reachable(host, int(port or 6379)):
        pytest.skip(f"Redis not reachable at {REDIS}")
    from pipelines import feature_store

    project_name = f"sluice_test_{uuid.uuid4().hex[:8]}"
    sqlite_params = make_project(tmp_path / "project")
    repo_yaml = sqlite_params.root / "feature_repo" / "feature_store.yaml"
    doc = yaml.safe_load(repo_yaml.read_text())
    repo_yaml.write_text(yaml.safe_dump({**doc, "project": project_name}))
    for i, day in enumerate((START, START + dt.timedelta(days=1))):
        write_partition(_features(day, seed=i), sqlite_params.paths.features, day)
    redis_params = sqlite_params.model_copy(
        update={
            "feature_store": sqlite_params.feature_store.model_copy(
                update={"online_store": "redis", "redis_connection_string": REDIS}
            )
        }
    )
    client = redis.Redis(host=host, port=int(port or 6379))
    try:
        feature_store.run(sqlite_params, START, END)
        summary = feature_store.run(redis_params, START, END)
        assert summary["online_store"] == "redis"
        assert _redis_keys(client, project_name), "materialize wrote no keys for our project to Redis"
        asked = [*ENTITIES, "unknown-entity"]
        # the reader serving uses: rows = asked entities in order, columns = FEATURE_COLUMNS
        sqlite_rows = feast_store.OnlineFeatureReader(sqlite_params)(asked)
        redis_rows = feast_store.OnlineFeatureReader(redis_params)(asked)
        from_sqlite, from_redis = sqlite_rows.values, redis_rows.values
        assert from_redis.shape == (len(asked), len(FEATURE_COLUMNS))
        np.testing.assert_array_equal(from_redis, from_sqlite)
        # both stores tell a never-seen entity from a known one
        expected_found = [True] * len(ENTITIES) + [False]
        assert redis_rows.found.tolist() == sqlite_rows.found.tolist() == expected_found
        # state after each entity's last event (what serving reads)
        last = pd.concat([_features(START, 0), _features(START + dt.timedelta(days=1), 1)])
        last = last.sort_values("event_timestamp").groupby("entity_id").tail(1).set_index("entity_id")
        got = from_redis[: len(ENTITIES), FEATURE_COLUMNS.index("amount_sum_24h")]
        np.testing.assert_allclose(got, last.loc[ENTITIES, "amount_sum_24h"].to_numpy())
        assert np.isnan(from_redis[-1]).all()
    finally:
        keys = _redis_keys(client, project_name)
        if keys:
            client.delete(*keys)
        client.close()
