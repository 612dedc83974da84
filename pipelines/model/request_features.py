"""Request-time features: the model inputs computed from an event and its entity's Feast state.

One vectorised computation serves training, evaluation, batch scoring, online serving and monitoring, so
a model sees the same features everywhere (DESIGN habit #8). Features whose inputs are absent are left
out, never faked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.contract import COORD_COLUMNS, FEATURE_COLUMNS

# Feast feature view columns (data contract item 2), declared once in pipelines.features
FEAST_COLUMNS: tuple[str, ...] = tuple(FEATURE_COLUMNS)


# last_event_ts is an absolute time: it only enters the model through seconds_since_prev
# (an absolute epoch would let the model learn the calendar instead of behaviour).
FEAST_MODEL_FEATURES: tuple[str, ...] = tuple(c for c in FEAST_COLUMNS if c != "last_event_ts")

CATEGORICAL_FEATURES: tuple[str, ...] = ("category",)


# Every feature request_features can produce, in output order.
ALL_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "hour",
    "is_night",
    "day_of_week",
    "seconds_since_prev",
    "amount_to_mean_hist",
    "amount_zscore",
    "distance_km",
    *FEAST_MODEL_FEATURES,
    *CATEGORICAL_FEATURES,
)


# Raw input columns each model feature is computed from (the release's input schema derives from this).
FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "amount": ("amount",),
    "log_amount": ("amount",),
    "hour": ("event_timestamp",),
    "is_night": ("event_timestamp",),
    "day_of_week": ("event_timestamp",),
    "seconds_since_prev": ("event_timestamp", "last_event_ts"),
    "amount_to_mean_hist": ("amount", "amount_mean_hist"),
    "amount_zscore": ("amount", "amount_mean_hist", "amount_std_hist"),
    "distance_km": COORD_COLUMNS,
    "category": ("category",),
    **{c: (c,) for c in FEAST_MODEL_FEATURES},
}

NIGHT_HOURS_END = 6  # local-time-agnostic: hours are UTC, [0, 6) counts as night

EARTH_RADIUS_KM = 6371.0088

_US_PER_HOUR = 3_600_000_000

_US_PER_DAY = 86_400_000_000


def _epoch_us(ts: pd.Series) -> np.ndarray:
    """Event timestamps as int64 microseconds since the epoch (UTC; naive timestamps are taken as UTC)."""
    if ts.dtype.kind == "M":
        # datetime64 (naive or tz-aware): .values is the UTC instant as numpy, no per-row objects
        values = np.asarray(ts.values).astype("datetime64[us]")
    else:
        values = pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    nat = np.isnat(values)
    if nat.any():
        raise ValueError(f"event_timestamp has {int(nat.sum())} null value(s); every event needs a time")
    return values.view(np.int64)


def _float(frame: pd.DataFrame, col: str) -> np.ndarray:
    # nullable ints (online store misses) and plain ints both become float64 with NaN for missing
    v = frame[col]
    if v.dtype == np.float64:
        return v.to_numpy()
    if v.dtype.kind in "iub":
        return v.to_numpy().astype(np.float64)
    return pd.to_numeric(v, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    rad = np.pi / 180.0
    dlat, dlon = (lat2 - lat1) * rad, (lon2 - lon1) * rad
    h = np.sin(dlat / 2) ** 2 + np.cos(lat1 * rad) * np.cos(lat2 * rad) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def feature_arrays(frame: pd.DataFrame) -> dict[str, Any]:
    """The computation behind `request_features`, as {feature: column} without building a DataFrame.

    Numeric features are float64 arrays; `category` is the frame's own column (a Series, nulls as-is).
    Scoring uses this directly: assembling a 20-column DataFrame costs more than computing it.
    """
    missing = [c for c in ("amount", "event_timestamp") if c not in frame.columns]
    if missing:
        raise ValueError(f"request_features: event frame lacks required column(s) {missing}")
    cols = set(frame.columns)
    out: dict[str, Any] = {}
    amount = _float(frame, "amount")
    us = _epoch_us(frame["event_timestamp"])
    hour = (us // _US_PER_HOUR) % 24
    out["amount"] = amount
    out["log_amount"] = np.log1p(np.clip(amount, 0.0, None))
    out["hour"] = hour.astype(np.float64)
    out["is_night"] = (hour < NIGHT_HOURS_END).astype(np.float64)
    # 1970-01-01 was a Thursday; +3 makes Monday 0 like pandas' dayofweek
    out["day_of_week"] = ((us // _US_PER_DAY + 3) % 7).astype(np.float64)
    if "last_event_ts" in cols:
        # NaN on an entity's first event (no previous state): left for the imputer, not faked as 0
        out["seconds_since_prev"] = us / 1e6 - _float(frame, "last_event_ts")
    with np.errstate(divide="ignore", invalid="ignore"):
        if "amount_mean_hist" in cols:
            mean = _float(frame, "amount_mean_hist")
            out["amount_to_mean_hist"] = np.where(mean > 0, amount / mean, np.nan)
            if "amount_std_hist" in cols:
                std = _float(frame, "amount_std_hist")
                out["amount_zscore"] = np.where(std > 0, (amount - mean) / std, np.nan)
    if cols.issuperset(COORD_COLUMNS):
        out["distance_km"] = _haversine_km(*(_float(frame, c) for c in COORD_COLUMNS))
    for c in FEAST_MODEL_FEATURES:
        if c in cols:
            out[c] = _float(frame, c)
    if "category" in cols:
        out["category"] = frame["category"]
    return {k: out[k] for k in ALL_FEATURES if k in out}


def request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Model input columns computed from an event frame (canonical event columns + Feast columns).

    Vectorised and deterministic; same index as `frame`. Features whose inputs are absent are left out,
    never faked: no coordinates -> no distance_km, no category column -> no category, no Feast column ->
    neither it nor what derives from it. Missing values inside a present column stay NaN (the release's
    imputer handles them), e.g. an entity's first event has NaN seconds_since_prev.
    """
    arrays = feature_arrays(frame)
    if "category" in arrays:
        cat = arrays["category"].astype(object)
        arrays["category"] = cat.where(cat.notna(), np.nan).to_numpy(dtype=object)
    return pd.DataFrame(arrays, index=frame.index)


def input_columns(feature_list: list[str] | tuple[str, ...]) -> list[str]:
    """Raw event/Feast columns a release with this feature list needs in its input frame."""
    unknown = [f for f in feature_list if f not in FEATURE_INPUTS]
    if unknown:
        raise ValueError(f"unknown model feature(s) {unknown}; known: {list(ALL_FEATURES)}")
    needed = {c for f in feature_list for c in FEATURE_INPUTS[f]}
    order = ["event_timestamp", "amount", "category", *COORD_COLUMNS, *FEAST_COLUMNS]
    return [c for c in order if c in needed]
