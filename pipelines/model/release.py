"""A release: one fitted preprocessor + model pair with its feature list, fingerprinted, and its scoring path.

Training, evaluation, batch inference, serving and monitoring all score through `Release.score`. The
release's files (feature list, the fitted sklearn preprocessor, the model: XGBoost booster or PyTorch MLP
weights) carry a sha256 fingerprint over all of them, recomputed from the bytes before anything is
unpickled, so a preprocessor paired with the wrong model (or edited files) cannot be loaded.

Import cost matters (serving and Spark workers import this module): only numpy/pandas at the top;
sklearn, xgboost and torch are imported where they are used."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import StageError
from pipelines.model.request_features import FeatureSpec
from pipelines.model.transform import FastTransform

MODEL_KINDS: tuple[str, ...] = ("xgboost", "mlp")

SMALL_BATCH_ROWS = 2048  # at or below this many rows XGBoost scores on one thread (see Release.margin)

# /2: the request feature spec travels inside the release (it was code before)
_FORMAT = "sluice-release/2"


class ReleaseIntegrityError(StageError):
    """A release's files do not match its fingerprint (mismatched or tampered preprocessor/model)."""


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Decision rule shared by evaluate, batch and serve: flag (1) when score >= threshold."""
    return (np.asarray(scores) >= threshold).astype(np.int8)


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


@dataclass
class Release:
    """A fitted preprocessor + model pair with its feature list and feature spec; `.score(frame)` -> scores.

    `spec` is how the release computes its features from an event frame (request_features): it is part
    of the release, so a change to the spec file never changes how an already trained model scores.

    `logit_offset` is added to the model's logit before the sigmoid: training reweights positives
    (scale_pos_weight / pos_weight), which inflates the odds; train refits this one intercept on valid
    so scores are calibrated probabilities, while the ranking (and so every AUC) is unchanged.
    The fingerprint covers spec, feature list, model kind, offset, preprocessor bytes and model bytes.
    """

    feature_list: list[str]
    model_kind: str
    preprocessor: Any
    model: Any  # xgboost.Booster or torch.nn.Module
    spec: FeatureSpec
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
        return self.spec.input_columns(self.feature_list)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Event frame -> preprocessed float32 matrix (what the model sees)."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"release {self.fingerprint[:12]} needs input column(s) {missing} to compute its features "
                f"{self.feature_list}; got {list(frame.columns)}"
            )
        if self._fast is not None:
            return self._fast(self.spec.arrays(frame))
        feats = self.spec.frame(frame)[self.feature_list]
        return np.ascontiguousarray(self.preprocessor.transform(feats), dtype=np.float32)

    def transform_sklearn(self, frame: pd.DataFrame) -> np.ndarray:
        """The same matrix through sklearn's own transform (reference for the fast path)."""
        feats = self.spec.frame(frame)[self.feature_list]
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
        """Positive-class probabilities (float64, in [0, 1]) of an event frame, one per row, in row order."""
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
            "request_features": self.spec.model_dump(mode="json"),
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
        spec=FeatureSpec.model_validate(meta["request_features"]),
        logit_offset=meta["logit_offset"],
        mlp_arch=meta["mlp_arch"],
        device=device,
        fingerprint=actual,
    )


def score(release: Release, frame: pd.DataFrame) -> np.ndarray:
    """Scores (probabilities of the positive class) for an event frame through `release`."""
    return release.score(frame)


def _to_device(release: Release, device: str) -> Release:
    device = resolve_device(device)
    if release.model_kind == "xgboost":
        release.model.set_param({"device": device})
        release._single_thread_copy()
    else:
        release.model = release.model.to(device)
    release.device = device
    return release
