"""Feast definitions of the sluice feature repo: declare, never compute.

The rows come from pipelines/features.py (data/features/date=D/part-0.parquet): one row per event, the
entity's state after that event. pipelines/feature_store.py applies these objects programmatically and
sets the FeatureView's ttl from params.yaml (features.history_days); the value below is the default used
by a plain `feast apply` run from this directory.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

# features.history_days in params.yaml (default 30)
HISTORY_TTL = timedelta(days=30)

entity = Entity(
    name="entity",
    join_keys=["entity_id"],
    value_type=ValueType.STRING,
    description="The actor events belong to (a card in the fraud use case).",
)

# Every date=YYYY-MM-DD partition written by pipelines.features, as a Parquet glob (what the DuckDB
# offline store reads). Relative to this directory, for `feast` commands run from here; the pipeline
# rewrites it to an absolute path when it applies these definitions.
entity_activity_source = FileSource(
    name="entity_activity_source",
    path="../data/features/date=*/*.parquet",
    timestamp_field="event_timestamp",
    description="Per-event entity state written by pipelines.features.",
)

entity_activity = FeatureView(
    name="entity_activity",
    entities=[entity],
    ttl=HISTORY_TTL,
    schema=[
        Field(name="txn_count_1h", dtype=Int64),
        Field(name="amount_sum_1h", dtype=Float64),
        Field(name="txn_count_24h", dtype=Int64),
        Field(name="amount_sum_24h", dtype=Float64),
        Field(name="amount_mean_24h", dtype=Float64),
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="amount_sum_7d", dtype=Float64),
        Field(name="amount_mean_7d", dtype=Float64),
        Field(name="distinct_merchants_24h", dtype=Int64),
        Field(name="amount_mean_hist", dtype=Float64),
        Field(name="amount_std_hist", dtype=Float64),
        Field(name="txn_count_hist", dtype=Int64),
        Field(name="last_event_ts", dtype=Float64),
    ],
    online=True,
    source=entity_activity_source,
    tags={"owner": "sluice", "produced_by": "pipelines.features"},
)

fraud_scorer_v1 = FeatureService(
    name="fraud_scorer_v1",
    features=[entity_activity],
    description="Features read by the fraud scorer release (training, batch and online serving).",
)
