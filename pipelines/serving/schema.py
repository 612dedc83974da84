"""What a scoring call takes and answers, and the event frame a release scores.

pydantic models, strict: numbers must be JSON numbers (no strings, no booleans, finite), strings strings,
timestamps ISO 8601 strings inside a window of now, unknown fields refused. Bounds come from params
(`serve.limits`) through `request_model(limits)`. Every request is validated on its own before it joins
a batch, so one bad record fails only its own request, with an error naming the field.
`request_frame` turns requests + their online features into the frame the offline pipeline builds
(canonical event columns + Feast feature columns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from pipelines.sections import InputLimits

# request-time fields (besides entity_id) that become canonical event columns of the scoring frame
_FLOAT_FIELDS: tuple[str, ...] = ("latitude", "longitude", "merchant_latitude", "merchant_longitude")


def _coordinate(bound: float, what: str) -> Any:
    return Field(None, strict=True, ge=-bound, le=bound, allow_inf_nan=False, description=what)


class ScoreRequest(BaseModel):
    """One event to score: the entity id and the request-time fields (the rest comes from Feast)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # the timestamp window (the amount bound is in the schema of `request_model`'s subclass)
    LIMITS: ClassVar[InputLimits] = InputLimits()

    entity_id: str = Field(
        min_length=1, max_length=256, description="The entity (card) the event belongs to."
    )
    amount: float = Field(
        strict=True, ge=0, le=InputLimits().max_amount, allow_inf_nan=False, description="Amount."
    )
    timestamp: dt.datetime | None = Field(
        None,
        description="Event time, an ISO 8601 string (naive = UTC) within serve.limits of now. "
        "Omitted: the server's receive time.",
    )
    merchant: str | None = Field(None, max_length=256)
    category: str | None = Field(None, max_length=256)
    latitude: float | None = _coordinate(90, "Cardholder home latitude.")
    longitude: float | None = _coordinate(180, "Cardholder home longitude.")
    merchant_latitude: float | None = _coordinate(90, "Merchant latitude.")
    merchant_longitude: float | None = _coordinate(180, "Merchant longitude.")
    event_id: str | None = Field(None, max_length=256, description="Client event id (joins late labels).")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_string(cls, v: Any) -> Any:
        # pydantic would read a number as epoch seconds: a timestamp is a string on the wire
        if v is not None and not isinstance(v, str | dt.datetime):
            raise ValueError("expected an ISO 8601 date-time string")
        return v

    @field_validator("timestamp")
    @classmethod
    def _utc_in_window(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        v = v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)
        now = dt.datetime.now(dt.UTC)
        lo = now - dt.timedelta(days=cls.LIMITS.max_age_days)
        hi = now + dt.timedelta(seconds=cls.LIMITS.max_future_s)
        if not lo <= v <= hi:
            raise ValueError(
                f"must lie between {lo.isoformat(timespec='seconds')} and {hi.isoformat(timespec='seconds')}"
                f" (serve.limits: max_age_days={cls.LIMITS.max_age_days}, "
                f"max_future_s={cls.LIMITS.max_future_s:g})"
            )
        return v

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


def request_model(limits: InputLimits) -> type[ScoreRequest]:
    """`ScoreRequest` with the bounds of params `serve.limits` (the amount bound shows in the schema)."""
    amount = Field(strict=True, ge=0, le=limits.max_amount, allow_inf_nan=False, description="Amount.")
    model = create_model("ScoreRequest", __base__=ScoreRequest, amount=(float, amount))
    model.LIMITS = limits
    model.__doc__ = ScoreRequest.__doc__
    return model


class ScoreResponse(BaseModel):
    """One scored event."""

    prediction_id: str
    event_id: str | None = None
    entity_id: str
    score: float = Field(description="The model's probability of the positive class, in [0, 1].")
    decision: int = Field(description="1 when score >= threshold (flag the event), else 0.")
    threshold: float
    model_name: str
    model_version: str
    arm: Literal["champion", "challenger"] = Field(description="The release that answered.")
    features_fresh: bool = Field(
        description="False when the online store could not be read in time or has no row of the entity."
    )
    feature_source: Literal["online", "new_entity", "last_known", "default"] = Field(
        description="online: the store's row; new_entity: the store has none (the empty state of a new "
        "entity was used); last_known: the store was unreachable, this process's last row; default: "
        "unreachable and nothing known."
    )
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
