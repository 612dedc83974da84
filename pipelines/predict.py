"""The one scoring path: request features -> fitted preprocessor -> model -> fraud probability.

Training, evaluation, batch inference, serving and monitoring all score through `Release.score`, so the
features a model was trained on are exactly the ones it sees later (DESIGN habit #8).

A release is one MLflow pyfunc model (`FraudRelease`) whose artifact directory holds the feature list,
the fitted sklearn preprocessor and the model (XGBoost booster or PyTorch MLP weights), plus a sha256
fingerprint over all of them. The fingerprint is recomputed from the bytes before anything is unpickled,
so a preprocessor paired with the wrong model (or edited files) cannot be loaded.

Import cost matters (serving and Spark workers import this module): only numpy/pandas at the top;
sklearn, xgboost, torch and mlflow are imported where they are used.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.contract import FEATURE_COLUMNS
from pipelines.errors import StageError

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

# Feast feature view columns (data contract item 2), declared once in pipelines.features
FEAST_COLUMNS: tuple[str, ...] = tuple(FEATURE_COLUMNS)
# last_event_ts is an absolute time: it only enters the model through seconds_since_prev
# (an absolute epoch would let the model learn the calendar instead of behaviour).
FEAST_MODEL_FEATURES: tuple[str, ...] = tuple(c for c in FEAST_COLUMNS if c != "last_event_ts")
COORD_COLUMNS: tuple[str, ...] = ("latitude", "longitude", "merchant_latitude", "merchant_longitude")
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
MODEL_KINDS: tuple[str, ...] = ("xgboost", "mlp")
NIGHT_HOURS_END = 6  # local-time-agnostic: hours are UTC, [0, 6) counts as night
EARTH_RADIUS_KM = 6371.0088
_MISSING_CATEGORY = "__missing__"
SMALL_BATCH_ROWS = 2048  # at or below this many rows XGBoost scores on one thread (see Release.margin)
_FORMAT = "sluice-release/1"
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000


class ReleaseIntegrityError(StageError):
    """A release's files do not match its fingerprint (mismatched or tampered preprocessor/model)."""


# --------------------------------------------------------------------------------------------------
# Request features
# --------------------------------------------------------------------------------------------------


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


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Decision rule shared by evaluate, batch and serve: flag (1) when score >= threshold."""
    return (np.asarray(scores) >= threshold).astype(np.int8)


# --------------------------------------------------------------------------------------------------
# Preprocessor and models
# --------------------------------------------------------------------------------------------------


def build_preprocessor(feature_list: list[str]) -> Any:
    """Unfitted ColumnTransformer: numeric median imputation + scaling, category one-hot (unknown ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f for f in feature_list if f not in CATEGORICAL_FEATURES]
    cats = [f for f in feature_list if f in CATEGORICAL_FEATURES]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        num = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("num", num, numeric))
    if cats:
        cat = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value=_MISSING_CATEGORY)),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)),
            ]
        )
        transformers.append(("cat", cat, cats))
    return ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False
    )


@dataclass
class FastTransform:
    """The fitted preprocessor's arithmetic in numpy, straight into one float32 matrix.

    Same numbers as `ColumnTransformer.transform` (a test checks equality) at a fraction of the cost:
    sklearn's per-call validation and object-dtype one-hot encoding dominate scoring time otherwise.
    Compiled from a fitted `build_preprocessor`; anything else falls back to sklearn.
    """

    numeric: list[str]
    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    categorical: list[str]
    categories: list[np.ndarray]
    missing_code: list[int]
    _lookup: list[pd.Index] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # an Index per categorical column: its hash table is built once, then reused by every call
        self._lookup = [pd.Index(c, dtype=object) for c in self.categories]

    @classmethod
    def compile(cls, pre: Any) -> FastTransform | None:
        """Extract the fitted statistics, or None when `pre` is not the structure build_preprocessor makes."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        if not isinstance(pre, ColumnTransformer) or not hasattr(pre, "transformers_"):
            return None
        numeric: list[str] = []
        categorical: list[str] = []
        median = mean = scale = np.empty(0)
        categories: list[np.ndarray] = []
        missing: list[int] = []
        for name, trans, cols in pre.transformers_:
            if name == "remainder" and trans == "drop":
                continue
            if not isinstance(trans, Pipeline):
                return None
            steps = [step for _, step in trans.steps]
            if name == "num" and len(steps) == 2:
                imp, sc = steps
                ok = (
                    isinstance(imp, SimpleImputer)
                    and imp.strategy == "median"
                    and not imp.add_indicator
                    and isinstance(sc, StandardScaler)
                    and sc.with_mean
                    and sc.with_std
                )
                if not ok:
                    return None
                numeric = list(cols)
                # keep_empty_features imputes 0 where the training median was undefined
                median = np.nan_to_num(imp.statistics_.astype(np.float64), nan=0.0)
                mean, scale = sc.mean_.astype(np.float64), sc.scale_.astype(np.float64)
            elif name == "cat" and len(steps) == 2:
                imp, ohe = steps
                ok = (
                    isinstance(imp, SimpleImputer)
                    and imp.strategy == "constant"
                    and isinstance(ohe, OneHotEncoder)
                    and ohe.handle_unknown == "ignore"
                    and ohe.drop is None
                    and ohe.max_categories is None
                    and ohe.min_frequency is None
                )
                if not ok:
                    return None
                categorical = list(cols)
                categories = [np.asarray(c, dtype=object) for c in ohe.categories_]
                missing = [
                    int(np.flatnonzero(c == imp.fill_value)[0]) if imp.fill_value in c else -1
                    for c in categories
                ]
            else:
                return None
        return cls(numeric, median, mean, scale, categorical, categories, missing)

    def __call__(self, arrays: dict[str, Any], chunk_rows: int = 65_536) -> np.ndarray:
        n = len(next(iter(arrays.values()))) if arrays else 0
        k = len(self.numeric)
        width = k + sum(len(c) for c in self.categories)
        out = np.empty((n, width), dtype=np.float32)
        out[:, k:] = 0.0
        cols = [arrays[c] for c in self.numeric]
        med, mean, scale = self.median[:, None], self.mean[:, None], self.scale[:, None]
        # column-major blocks of cache-sized chunks, transposed into the row-major output: about 5x
        # faster than writing strided columns straight into a large row-major matrix
        for i in range(0, n, chunk_rows):
            x = np.stack([c[i : i + chunk_rows] for c in cols]) if k else np.empty((0, 0))
            if k:
                np.copyto(x, np.broadcast_to(med, x.shape), where=np.isnan(x))
                x -= mean
                x /= scale
                out[i : i + chunk_rows, :k] = x.T
        pos = k
        rows = np.arange(n)
        for col, lookup, miss in zip(self.categorical, self._lookup, self.missing_code, strict=True):
            values = pd.Series(arrays[col]).astype(object)
            codes = lookup.get_indexer(values).astype(np.int64)
            if miss >= 0:
                codes[values.isna().to_numpy()] = miss
            hit = codes >= 0  # unknown categories stay all-zero, like handle_unknown="ignore"
            out[rows[hit], pos + codes[hit]] = 1.0
            pos += len(lookup)
        return out


def build_mlp(n_inputs: int, hidden: list[int], dropout: float) -> Any:
    """The tabular MLP: [Linear -> ReLU -> Dropout] per hidden layer, then one logit."""
    from torch import nn

    layers: list[Any] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def resolve_device(device: str) -> str:
    """'cpu' | 'cuda' | 'auto' -> the device to use; explicit cuda without a GPU is an error."""
    if device == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise StageError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if device not in ("auto", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return "cuda" if available else "cpu"


def _mlp_state_bytes(module: Any) -> bytes:
    # npz of float32 tensors: deterministic bytes, and loading needs no pickle
    buf = io.BytesIO()
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    np.savez(buf, **state)
    return buf.getvalue()


def model_margin(
    kind: str, model: Any, x: np.ndarray, device: str = "cpu", chunk_rows: int = 262_144
) -> np.ndarray:
    """Raw logits (float64) of an XGBoost booster or a torch MLP for a preprocessed float32 matrix."""
    if kind == "xgboost":
        # inplace_predict skips building a DMatrix: the fast path for numpy input
        return np.asarray(model.inplace_predict(x, predict_type="margin"), dtype=np.float64)
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), chunk_rows):
            t = torch.from_numpy(x[i : i + chunk_rows]).to(device)
            outs.append(model(t).squeeze(1).float().cpu().numpy())
    return np.concatenate(outs).astype(np.float64) if outs else np.empty(0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x.astype(np.float64, copy=False))


# --------------------------------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------------------------------


@dataclass
class Release:
    """A fitted preprocessor + model pair with its feature list; `.score(frame)` -> probabilities.

    `logit_offset` is added to the model's logit before the sigmoid: training reweights positives
    (scale_pos_weight / pos_weight), which inflates the odds; train refits this one intercept on valid
    so scores are calibrated probabilities, while the ranking (and so every AUC) is unchanged.
    The fingerprint covers feature list, model kind, offset, preprocessor bytes and model bytes.
    """

    feature_list: list[str]
    model_kind: str
    preprocessor: Any
    model: Any  # xgboost.Booster or torch.nn.Module
    logit_offset: float = 0.0
    mlp_arch: dict[str, Any] | None = None
    device: str = "cpu"
    fingerprint: str = ""
    chunk_rows: int = 1_048_576
    _fast: FastTransform | None = field(default=None, init=False, repr=False, compare=False)
    _single_thread: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        self.feature_list = list(self.feature_list)
        self._fast = FastTransform.compile(self.preprocessor)
        self._single_thread_copy()
        if not self.fingerprint:
            self.fingerprint = _fingerprint(self._meta_core(), *self._payload())

    @property
    def input_columns(self) -> list[str]:
        """Raw columns the input frame must have."""
        return input_columns(self.feature_list)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Event frame -> preprocessed float32 matrix (what the model sees)."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"release {self.fingerprint[:12]} needs input column(s) {missing} to compute its features "
                f"{self.feature_list}; got {list(frame.columns)}"
            )
        if self._fast is not None:
            return self._fast(feature_arrays(frame))
        feats = request_features(frame)[self.feature_list]
        return np.ascontiguousarray(self.preprocessor.transform(feats), dtype=np.float32)

    def transform_sklearn(self, frame: pd.DataFrame) -> np.ndarray:
        """The same matrix through sklearn's own transform (reference for the fast path)."""
        feats = request_features(frame)[self.feature_list]
        return np.ascontiguousarray(self.preprocessor.transform(feats), dtype=np.float32)

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Raw logits for a preprocessed float32 matrix (before the logit offset)."""
        model = self.model
        if self._single_thread is not None and len(x) <= SMALL_BATCH_ROWS and self.device == "cpu":
            model = self._single_thread
        return model_margin(self.model_kind, model, x, self.device, self.chunk_rows)

    def _single_thread_copy(self) -> None:
        # XGBoost starts its whole OpenMP pool for every call: ~10 ms for one row on a busy 2-core box
        # against 0.4 ms single-threaded. Serving's small batches use a one-thread copy of the booster.
        self._single_thread = None
        if self.model_kind == "xgboost" and hasattr(self.model, "copy"):
            self._single_thread = self.model.copy()
            self._single_thread.set_param({"nthread": 1})

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Fraud probabilities (float64, in [0, 1]) for an event frame, one per row, in row order."""
        if len(frame) == 0:
            return np.empty(0, dtype=np.float64)
        parts = []
        # chunking bounds the memory of the float32 matrix and the feature arrays on very large inputs
        for i in range(0, len(frame), self.chunk_rows):
            x = self.transform(frame.iloc[i : i + self.chunk_rows] if len(frame) > self.chunk_rows else frame)
            parts.append(_sigmoid(self.margin(x) + self.logit_offset))
        return np.concatenate(parts)

    # -- serialisation -----------------------------------------------------------------------------

    def _meta_core(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "feature_list": self.feature_list,
            "model_kind": self.model_kind,
            "logit_offset": float(self.logit_offset),
            "mlp_arch": self.mlp_arch,
        }

    def _payload(self) -> tuple[bytes, bytes]:
        pre = pickle.dumps(self.preprocessor, protocol=5)
        if self.model_kind == "xgboost":
            model = bytes(self.model.save_raw(raw_format="ubj"))
        else:
            model = _mlp_state_bytes(self.model)
        return pre, model

    def save(self, directory: str | Path) -> Path:
        """Write the release files (preprocessor.pkl, model.*, release.json) into `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pre, model = self._payload()
        meta = self._meta_core()
        fp = _fingerprint(meta, pre, model)
        self.fingerprint = fp
        (d / "preprocessor.pkl").write_bytes(pre)
        (d / _model_file(self.model_kind)).write_bytes(model)
        (d / "release.json").write_text(json.dumps({**meta, "fingerprint": fp}, indent=2, sort_keys=True))
        return d


def _model_file(kind: str) -> str:
    return "model.ubj" if kind == "xgboost" else "model.npz"


def _fingerprint(meta: dict[str, Any], pre: bytes, model: bytes) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(b"\0preprocessor\0" + hashlib.sha256(pre).digest())
    h.update(b"\0model\0" + hashlib.sha256(model).digest())
    return h.hexdigest()


def read_release(
    directory: str | Path, device: str = "cpu", expected_fingerprint: str | None = None
) -> Release:
    """Load a release directory, refusing it unless its bytes match the recorded fingerprint."""
    d = Path(directory)
    meta_path = d / "release.json"
    if not meta_path.is_file():
        raise ReleaseIntegrityError(f"{meta_path}: release metadata not found")
    meta = json.loads(meta_path.read_text())
    recorded = meta.pop("fingerprint", None)
    kind = meta.get("model_kind")
    if meta.get("format") != _FORMAT or kind not in MODEL_KINDS:
        raise ReleaseIntegrityError(f"{meta_path}: not a {_FORMAT} release (model_kind {kind!r})")
    pre_path, model_path = d / "preprocessor.pkl", d / _model_file(kind)
    for p in (pre_path, model_path):
        if not p.is_file():
            raise ReleaseIntegrityError(f"{p}: release file missing")
    pre, model_bytes = pre_path.read_bytes(), model_path.read_bytes()
    # verify before unpickling anything: a swapped preprocessor or model never gets loaded
    actual = _fingerprint(meta, pre, model_bytes)
    if actual != recorded:
        raise ReleaseIntegrityError(
            f"release in {d} fails its fingerprint check: recorded {recorded}, files hash to {actual}; "
            "the preprocessor/model pair was modified or mismatched and will not be loaded"
        )
    if expected_fingerprint is not None and actual != expected_fingerprint:
        raise ReleaseIntegrityError(
            f"release in {d} has fingerprint {actual}, expected {expected_fingerprint} (wrong release)"
        )
    preprocessor = pickle.loads(pre)
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(model_bytes))
        # numpy input is scored on CPU; load_release(device=...) moves it for GPU scoring
        booster.set_param({"device": device})
        model: Any = booster
    else:
        import torch

        arch = meta["mlp_arch"]
        module = build_mlp(arch["n_inputs"], arch["hidden"], arch["dropout"])
        with np.load(io.BytesIO(model_bytes)) as z:
            module.load_state_dict({k: torch.from_numpy(z[k].copy()) for k in z.files})
        model = module.to(device).eval()
    return Release(
        feature_list=meta["feature_list"],
        model_kind=kind,
        preprocessor=preprocessor,
        model=model,
        logit_offset=meta["logit_offset"],
        mlp_arch=meta["mlp_arch"],
        device=device,
        fingerprint=actual,
    )


def score(release: Release, frame: pd.DataFrame) -> np.ndarray:
    """Fraud probabilities for an event frame through `release` (the one scoring path)."""
    return release.score(frame)


# --------------------------------------------------------------------------------------------------
# MLflow pyfunc
# --------------------------------------------------------------------------------------------------


def _make_fraud_release_class() -> type:
    import mlflow.pyfunc

    class FraudRelease(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc of a release: `predict(frame)` returns fraud probabilities (not labels)."""

        release: Release | None = None

        def load_context(self, context: Any) -> None:
            # the fingerprint check happens here, so every pyfunc load verifies the pair
            self.release = read_release(context.artifacts["release"])

        # a pd.DataFrame hint: MLflow then validates with the explicit signature, not type hints
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> np.ndarray:
            if self.release is None:
                raise RuntimeError("FraudRelease.predict called before load_context")
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return self.release.score(frame)

    FraudRelease.__module__ = __name__
    FraudRelease.__qualname__ = "FraudRelease"
    return FraudRelease


_LAZY: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # FraudRelease subclasses mlflow's PythonModel; building it lazily keeps `import pipelines.predict`
    # free of mlflow. Cached, so pickling by reference finds the very same class object.
    if name == "FraudRelease":
        if name not in _LAZY:
            _LAZY[name] = _make_fraud_release_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pip_requirements(model_kind: str) -> list[str]:
    """Explicit pip requirements of a release (skips MLflow's ~10 s inference)."""
    from importlib.metadata import version

    pkgs = ["mlflow", "numpy", "pandas", "scikit-learn", "scipy", "pyarrow"]
    pkgs.append("xgboost" if model_kind == "xgboost" else "torch")
    reqs = []
    for p in pkgs:
        v = version(p).split("+")[0]  # torch's local tag (+cu132) is not on PyPI
        reqs.append(f"{p}=={v}")
    return reqs


# Columns whose pandas dtype legitimately varies: tz-aware or naive timestamps (MLflow's datetime type
# refuses tz-aware ones), and counts that are int64 in Parquet but nullable after an online-store miss
# (MLflow refuses both int64 -> double and float -> long). Typed "any" in the pyfunc signature.
_LOOSE_INPUTS = frozenset(
    {
        "event_timestamp",
        "txn_count_1h",
        "txn_count_24h",
        "txn_count_7d",
        "txn_count_hist",
        "distinct_merchants_24h",
    }
)


def _example_frame(release: Release, frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    return frame[release.input_columns].head(n).reset_index(drop=True).copy()


def release_signature(release: Release) -> Any:
    """Explicit pyfunc signature: the release's input columns (all required) -> one double score.

    Built rather than inferred: inference marks a column optional whenever the example happens to hold
    a NaN, and types counts by whatever dtype the example had. Required means present; NaN is fine.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    def spec(c: str) -> Any:
        if c in _LOOSE_INPUTS:
            return ColSpec(AnyType(), c)
        return ColSpec("string" if c == "category" else "double", c)

    inputs = Schema([spec(c) for c in release.input_columns])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))


def log_release(release: Release, example_frame: pd.DataFrame, name: str = "release") -> ModelInfo:
    """Log `release` as a pyfunc (FraudRelease) into the active MLflow run; returns MLflow's ModelInfo.

    `example_frame` is a few event rows (e.g. the head of train) used for the input example and the
    signature: its columns are cut down to the release's input columns.
    """
    import tempfile

    import mlflow

    example = _example_frame(release, example_frame)
    signature = release_signature(release)
    with tempfile.TemporaryDirectory(prefix="sluice-release-") as tmp:
        directory = release.save(Path(tmp) / "release")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=__getattr__("FraudRelease")(),
            artifacts={"release": str(directory)},
            pip_requirements=pip_requirements(release.model_kind),
            signature=signature,
            input_example=example,
        )


def load_release(model_uri: str, device: str = "cpu", expected_fingerprint: str | None = None) -> Release:
    """Load a release from an MLflow model URI (runs:/<id>/release, models:/name@alias, ...).

    Goes through the pyfunc loader, so `FraudRelease.load_context` verifies the fingerprint; the
    optional `expected_fingerprint` (e.g. the registry tag) must match too.
    """
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    release: Release = pyfunc.unwrap_python_model().release
    if expected_fingerprint is not None and release.fingerprint != expected_fingerprint:
        raise ReleaseIntegrityError(
            f"{model_uri}: release fingerprint {release.fingerprint} != expected {expected_fingerprint}"
        )
    if device != "cpu":
        release = _to_device(release, device)
    return release


def _to_device(release: Release, device: str) -> Release:
    device = resolve_device(device)
    if release.model_kind == "xgboost":
        release.model.set_param({"device": device})
        release._single_thread_copy()
    else:
        release.model = release.model.to(device)
    release.device = device
    return release
