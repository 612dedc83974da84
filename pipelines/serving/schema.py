"""What a scoring call takes and answers, and the event frame a release scores.

pydantic models: BentoML validates a request against them before batching, so one bad record fails only
its own request, and the error names the field. `request_frame` turns requests + their online features
into the frame the offline pipeline builds (canonical event columns + Feast feature columns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

# request-time fields (besides entity_id) that become canonical event columns of the scoring frame
_FLOAT_FIELDS: tuple[str, ...] = ("latitude", "longitude", "merchant_latitude", "merchant_longitude")


class ScoreRequest(BaseModel):
    """One event to score: the entity id and the request-time fields (the rest comes from Feast)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_id: str = Field(
        min_length=1, max_length=256, description="The entity (card) the event belongs to."
    )
    amount: float = Field(ge=0, allow_inf_nan=False, description="Transaction amount.")
    timestamp: dt.datetime | None = Field(
        None, description="Event time (ISO 8601; naive = UTC). Omitted: the server's receive time."
    )
    merchant: str | None = Field(None, max_length=256)
    category: str | None = Field(None, max_length=256)
    latitude: float | None = Field(None, ge=-90, le=90, description="Cardholder home latitude.")
    longitude: float | None = Field(None, ge=-180, le=180, description="Cardholder home longitude.")
    merchant_latitude: float | None = Field(None, ge=-90, le=90)
    merchant_longitude: float | None = Field(None, ge=-180, le=180)
    event_id: str | None = Field(None, max_length=256, description="Client event id (joins late labels).")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)

    def canonical(self) -> tuple[Any, ...]:
        """The cache identity of the request: every field the score depends on (not event_id)."""
        return (
            self.entity_id,
            self.amount,
            self.timestamp,
            self.merchant,
            self.category,
            self.latitude,
            self.longitude,
            self.merchant_latitude,
            self.merchant_longitude,
        )


class ScoreResponse(BaseModel):
    """One scored event."""

    prediction_id: str
    event_id: str | None = None
    entity_id: str
    score: float = Field(description="Fraud probability in [0, 1].")
    decision: int = Field(description="1 when score >= threshold (flag the event), else 0.")
    threshold: float
    model_name: str
    model_version: str
    arm: Literal["champion", "challenger"] = Field(description="The release that answered.")
    features_fresh: bool = Field(description="False when the online store could not be read in time.")
    feature_source: Literal["online", "last_known", "default"]
    cached: bool = False
    challenger_fallback: bool = Field(
        False, description="Routed to the challenger, answered by the champion."
    )
    latency_ms: float = Field(description="Server-side time of the batch this event was scored in.")


def request_frame(
    records: Sequence[ScoreRequest], feats: np.ndarray, feature_columns: Sequence[str], now: dt.datetime
) -> pd.DataFrame:
    """The event frame the offline pipeline builds (canonical event columns + Feast feature columns), for
    requests; absent optional fields are NaN/None, as in a source without them for that event."""
    ts = [r.timestamp or now for r in records]
    data: dict[str, Any] = {
        "entity_id": [r.entity_id for r in records],
        "event_timestamp": pd.DatetimeIndex(ts).as_unit("us"),
        "amount": np.fromiter((r.amount for r in records), dtype=np.float64, count=len(records)),
        "merchant": [r.merchant for r in records],
        "category": [r.category for r in records],
    }
    for f in _FLOAT_FIELDS:
        data[f] = np.array([np.nan if (v := getattr(r, f)) is None else v for r in records], dtype=np.float64)
    for j, c in enumerate(feature_columns):
        data[c] = feats[:, j]
    return pd.DataFrame(data)
