"""Names that cross stage boundaries, defined once.

Every stage, the Feast definitions (feature_repo/definitions.py), serving and monitoring read these names
from here: the canonical event columns a source is mapped onto, the entity key and event time, the label,
the feature rows `features` writes (their Arrow schema is the Feast view's schema), and the registry's
alias names. Nothing here is specific to one use case beyond the canonical event columns that params map a
log onto; a test ties the Feast view to FEATURE_SCHEMA.
"""

from __future__ import annotations

import pyarrow as pa

# ---- events -------------------------------------------------------------------------------------------
ENTITY_KEY = "entity_id"  # the actor events belong to (a card in the fraud use case); Feast's join key
EVENT_ID = "event_id"
TIMESTAMP = "event_timestamp"
LABEL = "label"  # ground truth, 1 = positive; arrives late in the source log

# Canonical event schema. Source logs are mapped onto these names by `ingest.source.columns`.
REQUIRED_COLUMNS: tuple[str, ...] = (ENTITY_KEY, TIMESTAMP, "amount", LABEL)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    EVENT_ID,
    "merchant",
    "category",
    "latitude",
    "longitude",
    "merchant_latitude",
    "merchant_longitude",
)
CANONICAL_COLUMNS: tuple[str, ...] = (
    EVENT_ID,
    ENTITY_KEY,
    TIMESTAMP,
    "amount",
    "merchant",
    "category",
    LABEL,
    "latitude",
    "longitude",
    "merchant_latitude",
    "merchant_longitude",
)
COORD_COLUMNS: tuple[str, ...] = ("latitude", "longitude", "merchant_latitude", "merchant_longitude")

# ---- feature rows (pipelines.features -> data/features -> Feast) --------------------------------------
FEATURE_VIEW = "entity_activity"
# One features partition, in column order: the entity's state after each of its events.
FEATURE_SCHEMA = pa.schema(
    [
        (ENTITY_KEY, pa.string()),
        (TIMESTAMP, pa.timestamp("us", tz="UTC")),
        ("txn_count_1h", pa.int64()),
        ("amount_sum_1h", pa.float64()),
        ("txn_count_24h", pa.int64()),
        ("amount_sum_24h", pa.float64()),
        ("amount_mean_24h", pa.float64()),
        ("txn_count_7d", pa.int64()),
        ("amount_sum_7d", pa.float64()),
        ("amount_mean_7d", pa.float64()),
        ("distinct_merchants_24h", pa.int64()),
        ("amount_mean_hist", pa.float64()),
        ("amount_std_hist", pa.float64()),
        ("txn_count_hist", pa.int64()),
        ("last_event_ts", pa.float64()),
    ]
)
FEATURE_COLUMNS: list[str] = [c for c in FEATURE_SCHEMA.names if c not in (ENTITY_KEY, TIMESTAMP)]
# Feature columns as their Arrow types: what the Feast view's Field dtypes must be (int64 / float64).
FEATURE_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in FEATURE_SCHEMA if f.name in FEATURE_COLUMNS}

# ---- the dataset (dataset writes the splits, train / evaluate / the gate / monitoring read them) -------
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# ---- the prediction log (serving writes it, monitoring and the canary read it) -----------------------
# data/prediction_log/date=D/predictions-<...>.jsonl: one JSON object per scored event
PREDICTION_LOG_GLOB = "predictions-*.jsonl"

# ---- registry aliases ---------------------------------------------------------------------------------
CHAMPION = "champion"  # serves 100 % (or the rest of the canary split)
CHALLENGER = "challenger"  # passed the offline gates; the canary's candidate
PREVIOUS = "previous"  # the last champion, for rollback
