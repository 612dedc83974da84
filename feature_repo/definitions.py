"""Feast definitions of the sluice feature repo: declare, never compute.

The rows come from pipelines/features.py (data/features/date=D/part-0.parquet): one row per event, the
entity's state after that event. pipelines/engines/feast_store.py applies these objects programmatically and
sets the FeatureView's ttl from params.yaml (features.history_days); the value below is the default used
by a plain `feast apply` run from this directory.
"""

from datetime import timedelta

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from pipelines.contract import ENTITY_KEY, FEATURE_TYPES, FEATURE_VIEW, TIMESTAMP

# Arrow types of the feature rows (pipelines.contract.FEATURE_SCHEMA) -> Feast types
FEAST_TYPES = {pa.int64(): Int64, pa.float64(): Float64}

# features.history_days in params.yaml (default 30)
HISTORY_TTL = timedelta(days=30)

entity = Entity(
    name="entity",
    join_keys=[ENTITY_KEY],
    value_type=ValueType.STRING,
    description="The actor events belong to (a card in the fraud use case).",
)

# Every date=YYYY-MM-DD partition written by pipelines.features, as a Parquet glob (what the DuckDB
# offline store reads). Relative to this directory, for `feast` commands run from here; the pipeline
# rewrites it to an absolute path when it applies these definitions.
entity_activity_source = FileSource(
    name="entity_activity_source",
    path="../data/features/date=*/*.parquet",
    timestamp_field=TIMESTAMP,
    description="Per-event entity state written by pipelines.features.",
)

entity_activity = FeatureView(
    name=FEATURE_VIEW,
    entities=[entity],
    ttl=HISTORY_TTL,
    # the schema is the contract's: one list of feature columns for features, Feast, training and serving
    schema=[Field(name=name, dtype=FEAST_TYPES[dtype]) for name, dtype in FEATURE_TYPES.items()],
    online=True,
    source=entity_activity_source,
    tags={"owner": "sluice", "produced_by": "pipelines.features"},
)


fraud_scorer_v1 = FeatureService(
    name="fraud_scorer_v1",
    features=[entity_activity],
    description="Features read by the fraud scorer release (training, batch and online serving).",
)
