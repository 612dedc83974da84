"""Request-time features: the model inputs computed from an event and its entity's Feast state.

What to compute is data: a spec file (params `train.request_features`, shipped as
feature_repo/request_features.yaml) lists each feature as one operation of a small, use-case-free
vocabulary over named input columns. Training stores the spec inside the release, so training, evaluation,
batch scoring, online serving and monitoring all compute a release's features through the one vectorised
function here (DESIGN habit #8). A feature whose inputs are absent is left out, never faked; a missing
value inside a present column stays NaN for the release's imputer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from pipelines.declared import load_declared

EARTH_RADIUS_KM = 6371.0088
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000

Op = Literal[
    "value",
    "log1p",
    "hour_of_day",
    "hour_below",
    "day_of_week",
    "seconds_since",
    "ratio",
    "zscore",
    "haversine_km",
    "category",
]
# how many input columns each operation takes; the first input of a time operation is a timestamp
ARITY: dict[str, int] = {
    "value": 1,
    "log1p": 1,
    "hour_of_day": 1,
    "hour_below": 1,
    "day_of_week": 1,
    "seconds_since": 2,
    "ratio": 2,
    "zscore": 3,
    "haversine_km": 4,
    "category": 1,
}
TIME_OPS = frozenset({"hour_of_day", "hour_below", "day_of_week", "seconds_since"})


class Feature(BaseModel):
    """One model feature: `op` over `inputs` (+ `hour` for hour_below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    op: Op
    inputs: tuple[str, ...]
    hour: int | None = None

    @model_validator(mode="after")
    def _shape(self) -> Feature:
        if len(self.inputs) != ARITY[self.op]:
            raise ValueError(
                f"{self.name}: op {self.op} takes {ARITY[self.op]} input(s), got {list(self.inputs)}"
            )
        if (self.op == "hour_below") != (self.hour is not None):
            raise ValueError(f"{self.name}: `hour` goes with op hour_below (and only with it)")
        return self


class FeatureSpec(BaseModel):
    """The whole spec: required event columns and the features, in output order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: tuple[str, ...] = ()
    features: tuple[Feature, ...]

    @model_validator(mode="after")
    def _unique(self) -> FeatureSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, repeated: {dupes}")
        return self

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        """Features the preprocessor one-hot encodes (op category)."""
        return [f.name for f in self.features if f.op == "category"]

    def timestamp_inputs(self) -> list[str]:
        """Input columns read as timestamps."""
        return list(dict.fromkeys(f.inputs[0] for f in self.features if f.op in TIME_OPS))

    def input_columns(self, feature_list: list[str] | tuple[str, ...]) -> list[str]:
        """Raw event/Feast columns a release with this feature list needs in its input frame."""
        by_name = {f.name: f for f in self.features}
        unknown = [n for n in feature_list if n not in by_name]
        if unknown:
            raise ValueError(f"unknown model feature(s) {unknown}; known: {self.names}")
        needed = {c for n in feature_list for c in by_name[n].inputs}
        order = [*self.required, *(c for f in self.features for c in f.inputs)]
        return [c for c in dict.fromkeys(order) if c in needed]

    def arrays(self, frame: pd.DataFrame) -> dict[str, Any]:
        """{feature: column} for every feature whose inputs `frame` has, in spec order.

        Numeric features are float64 arrays; categorical ones are the frame's own column (a Series, nulls
        as-is). Scoring uses this directly: assembling a DataFrame costs more than computing it.
        """
        present = set(frame.columns)  # one set: this runs on every online batch
        missing = [c for c in self.required if c not in present]
        if missing:
            raise ValueError(f"request_features: event frame lacks required column(s) {missing}")
        cols = _Columns(frame)
        return {f.name: OPS[f.op](cols, f) for f in self.features if present.issuperset(f.inputs)}

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The features as a DataFrame (same index as `frame`), categorical nulls as NaN."""
        arrays = self.arrays(frame)
        for name in self.categorical:
            if name in arrays:
                cat = arrays[name].astype(object)
                arrays[name] = cat.where(cat.notna(), np.nan).to_numpy(dtype=object)
        return pd.DataFrame(arrays, index=frame.index)


def load_spec(path: Path) -> FeatureSpec:
    """Read and validate a spec file; StageError naming the file and the offending entry."""
    return load_declared(path, FeatureSpec, "request feature spec", "train.request_features")


def request_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Model input columns computed from an event frame (canonical event columns + Feast columns)."""
    return spec.frame(frame)


# ---- the operations ------------------------------------------------------------------------------------


class _Columns:
    """Input columns of one frame, converted once per call (a timestamp feeds several features)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._float: dict[str, np.ndarray] = {}
        self._us: dict[str, np.ndarray] = {}

    def num(self, col: str) -> np.ndarray:
        if col not in self._float:
            self._float[col] = _float(self.frame[col])
        return self._float[col]

    def epoch_us(self, col: str) -> np.ndarray:
        if col not in self._us:
            self._us[col] = _epoch_us(self.frame[col], col)
        return self._us[col]


def _epoch_us(ts: pd.Series, name: str) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC; naive timestamps are taken as UTC)."""
    if ts.dtype.kind == "M":
        # datetime64 (naive or tz-aware): .values is the UTC instant as numpy, no per-row objects
        values = np.asarray(ts.values).astype("datetime64[us]")
    else:
        values = pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    nat = np.isnat(values)
    if nat.any():
        raise ValueError(f"{name} has {int(nat.sum())} null value(s); every event needs a time")
    return values.view(np.int64)


def _float(v: pd.Series) -> np.ndarray:
    # nullable ints (online store misses) and plain ints both become float64 with NaN for missing
    if v.dtype == np.float64:
        return v.to_numpy()
    if v.dtype.kind in "iub":
        return v.to_numpy().astype(np.float64)
    return pd.to_numeric(v, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _hours(c: _Columns, f: Feature) -> np.ndarray:
    return (c.epoch_us(f.inputs[0]) // _US_PER_HOUR) % 24


def _ratio(c: _Columns, f: Feature) -> np.ndarray:
    a, b = c.num(f.inputs[0]), c.num(f.inputs[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / b, np.nan)


def _zscore(c: _Columns, f: Feature) -> np.ndarray:
    x, mean, std = (c.num(i) for i in f.inputs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, (x - mean) / std, np.nan)


def _haversine_km(c: _Columns, f: Feature) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (c.num(i) for i in f.inputs)
    rad = np.pi / 180.0
    dlat, dlon = (lat2 - lat1) * rad, (lon2 - lon1) * rad
    h = np.sin(dlat / 2) ** 2 + np.cos(lat1 * rad) * np.cos(lat2 * rad) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


OPS: dict[str, Callable[[_Columns, Feature], Any]] = {
    "value": lambda c, f: c.num(f.inputs[0]),
    "log1p": lambda c, f: np.log1p(np.clip(c.num(f.inputs[0]), 0.0, None)),
    "hour_of_day": lambda c, f: _hours(c, f).astype(np.float64),
    "hour_below": lambda c, f: (_hours(c, f) < f.hour).astype(np.float64),
    # 1970-01-01 was a Thursday; +3 makes Monday 0 like pandas' dayofweek
    "day_of_week": lambda c, f: ((c.epoch_us(f.inputs[0]) // _US_PER_DAY + 3) % 7).astype(np.float64),
    # NaN on an entity's first event (no previous state): left for the imputer, not faked as 0
    "seconds_since": lambda c, f: c.epoch_us(f.inputs[0]) / 1e6 - c.num(f.inputs[1]),
    "ratio": _ratio,
    "zscore": _zscore,
    "haversine_km": _haversine_km,
    "category": lambda c, f: c.frame[f.inputs[0]],
}
