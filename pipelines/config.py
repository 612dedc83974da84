"""Typed params (pydantic) and the one place where paths are declared.

The sections' schema is pipelines.sections; this module assembles `Params`, derives `Paths` and loads
the file.

Nothing here touches the filesystem on import. `load_params()` reads params.yaml and returns a frozen
`Params`; `Params.paths` derives every input/output location from the project root (the directory that
holds params.yaml), so tests point the whole pipeline at a tmp dir by writing a params.yaml there.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator

from pipelines.sections import (
    AirflowParams,
    BatchPredictParams,
    DataParams,
    DatasetParams,
    EvaluateParams,
    FeatureParams,
    FeatureStoreParams,
    IngestParams,
    IngestServiceParams,
    MlflowParams,
    MonitorParams,
    RegisterParams,
    RolloutParams,
    Section,
    ServeParams,
    SparkParams,
    TrainParams,
    ValidateParams,
)


class ParamsError(ValueError):
    """params.yaml (or an override) is missing, malformed or out of range."""


class Paths:
    """Every location the stages read or write, derived from the project root. Pure: creates nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.raw = self.data / "raw"
        self.quarantine = self.data / "quarantine"
        self.validated = self.data / "validated"
        self.features = self.data / "features"
        self.feast = self.data / "feast"
        self.dataset = self.data / "dataset"
        self.predictions = self.data / "predictions"
        self.prediction_log = self.data / "prediction_log"
        # the ingestion service's files beside its store: refused batches, uploads being checked
        self.landing = self.data / "landing"
        self.landing_quarantine = self.landing / "quarantine"
        self.reports = root / "reports"
        self.models = root / "models"
        self.mlflow_db = root / "mlflow.db"
        self.mlflow_artifacts = root / "mlartifacts"

    def split(self, name: str) -> Path:
        """data/dataset/<name>.parquet: one of contract.SPLITS."""
        return self.dataset / f"{name}.parquet"

    def partition(self, base: Path, day: dt.date) -> Path:
        """Directory of one event-date partition under `base` (Hive style, readable by Spark)."""
        return base / f"date={day.isoformat()}"


class Params(Section):
    """All of params.yaml. `root` is not in the file: it is the directory the file lives in."""

    root: Path
    data: DataParams
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    spark: SparkParams = SparkParams()
    features: FeatureParams = FeatureParams()
    feature_store: FeatureStoreParams = FeatureStoreParams()
    dataset: DatasetParams = DatasetParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    batch_predict: BatchPredictParams = BatchPredictParams()
    serve: ServeParams = ServeParams()
    ingest_service: IngestServiceParams = IngestServiceParams()
    mlflow: MlflowParams = MlflowParams()
    airflow: AirflowParams = AirflowParams()
    monitor: MonitorParams = MonitorParams()
    rollout: RolloutParams = RolloutParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("root")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.resolve()

    @cached_property
    def paths(self) -> Paths:
        return Paths(self.root)

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: params (where `load_params` put MLFLOW_TRACKING_URI), else SQLite under root.

        The env var is read once, at load time (`registry.use_tracking_uri` keeps mlflow's setters from
        exporting one project's URI into it for the params loaded after).
        """
        return self.mlflow.tracking_uri or f"sqlite:///{self.paths.mlflow_db}"

    def resolve(self, relative: str | Path) -> Path:
        """A path from params.yaml, taken relative to the project root unless absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def with_range(self, start: dt.date, end: dt.date) -> Params:
        """A copy processing [start, end) instead of data.start/data.end (Airflow passes its interval)."""
        return self.model_copy(update={"data": DataParams(start=start, end=end)})


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid params"]
    for e in err.errors():
        loc = (
            ".".join(str(p) for p in e["loc"])
            .replace("validate_", "validate")
            .replace("register_", "register")
        )
        lines.append(f"  {loc or '<top>'}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], root: Path, source: Path | None = None) -> Params:
    """Validate a params mapping; errors name the file and the dotted field."""
    try:
        return Params.model_validate({**raw, "root": root})
    except ValidationError as err:
        raise ParamsError(_format_error(source or root / "params.yaml", err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; the project root is the file's directory."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:  # the environment wins over params.yaml (a shared tracking server in production)
        raw.setdefault("mlflow", {})
        if isinstance(raw["mlflow"], dict):
            raw["mlflow"] = {**raw["mlflow"], "tracking_uri": env_uri}
    return parse_params(raw, path.parent, source=path)
