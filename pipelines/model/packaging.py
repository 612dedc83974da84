"""A release as an MLflow pyfunc model: logging it into a run, and loading it back by model URI.

The pyfunc (`ReleaseModel`) wraps the release directory; loading it verifies the fingerprint. Building the
class lazily keeps `import pipelines.model.packaging` free of mlflow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.contract import FEATURE_TYPES
from pipelines.model.release import Release, ReleaseIntegrityError, _to_device, read_release

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo


def _make_release_model_class() -> type:
    from mlflow.pyfunc import PythonModel

    class ReleaseModel(PythonModel):
        """MLflow pyfunc of a release: `predict(frame)` returns probabilities of the positive class."""

        release: Release | None = None

        def load_context(self, context: Any) -> None:
            # the fingerprint check happens here, so every pyfunc load verifies the pair
            self.release = read_release(context.artifacts["release"])

        # a pd.DataFrame hint: MLflow then validates with the explicit signature, not type hints
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> np.ndarray:
            if self.release is None:
                raise RuntimeError("ReleaseModel.predict called before load_context")
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return self.release.score(frame)

    ReleaseModel.__module__ = __name__
    ReleaseModel.__qualname__ = "ReleaseModel"
    return ReleaseModel


_LAZY: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # ReleaseModel subclasses mlflow's PythonModel; built lazily, so importing this module needs no
    # mlflow. Cached, so pickling by reference finds the very same class object.
    if name == "ReleaseModel":
        if name not in _LAZY:
            _LAZY[name] = _make_release_model_class()
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


def _loose_inputs(release: Release) -> set[str]:
    """Input columns whose pandas dtype legitimately varies, typed "any" in the pyfunc signature.

    Timestamps (tz-aware or naive: MLflow's datetime type refuses tz-aware ones) and the Feast view's
    integer counts, int64 in Parquet but nullable after an online-store miss (MLflow refuses both
    int64 -> double and float -> long).
    """
    counts = {c for c, t in FEATURE_TYPES.items() if pa.types.is_integer(t)}
    return {*release.spec.timestamp_inputs(), *counts}


def _example_frame(release: Release, frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    return frame[release.input_columns].head(n).reset_index(drop=True).copy()


def release_signature(release: Release) -> Any:
    """Explicit pyfunc signature: the release's input columns (all required) -> one double score.

    Built rather than inferred: inference marks a column optional whenever the example happens to hold
    a NaN, and types counts by whatever dtype the example had. Required means present; NaN is fine.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    loose = _loose_inputs(release)
    text = {c for f in release.spec.features if f.op == "category" for c in f.inputs}

    def spec(c: str) -> Any:
        if c in loose:
            return ColSpec(AnyType(), c)
        return ColSpec("string" if c in text else "double", c)

    inputs = Schema([spec(c) for c in release.input_columns])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))


def log_release(release: Release, example_frame: pd.DataFrame, name: str = "release") -> ModelInfo:
    """Log `release` as a pyfunc (ReleaseModel) into the active MLflow run; returns MLflow's ModelInfo.

    `example_frame` is a few event rows (e.g. the head of train) used for the input example and the
    signature: its columns are cut down to the release's input columns.
    """

    import mlflow

    example = _example_frame(release, example_frame)
    signature = release_signature(release)
    with tempfile.TemporaryDirectory(prefix="sluice-release-") as tmp:
        directory = release.save(Path(tmp) / "release")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=__getattr__("ReleaseModel")(),
            artifacts={"release": str(directory)},
            pip_requirements=pip_requirements(release.model_kind),
            signature=signature,
            input_example=example,
        )


def load_release(model_uri: str, device: str = "cpu", expected_fingerprint: str | None = None) -> Release:
    """Load a release from an MLflow model URI (runs:/<id>/release, models:/name@alias, ...).

    Goes through the pyfunc loader, so `ReleaseModel.load_context` verifies the fingerprint; the
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
