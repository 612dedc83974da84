"""Train stage: dataset splits -> preprocessor + model (one release) -> MLflow run + models/release.json.

The fitting is pipelines.model.training (pure: frames and typed params in, a `Release` out). `run()` reads
data/dataset/{train,valid}.parquet, logs params, valid metrics and the release to MLflow and writes
models/release.json, which evaluate and register read.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import artifacts
from pipelines.config import Params
from pipelines.contract import LABEL
from pipelines.io import atomic_write_json
from pipelines.model.metrics import valid_metrics
from pipelines.model.packaging import log_release
from pipelines.model.release import resolve_device
from pipelines.model.request_features import load_spec
from pipelines.model.training import fit_release

log = logging.getLogger(__name__)

RELEASE_ARTIFACT = "release"
# MLflow 3's UI opens an experiment by its kind: this one's is model training (runs, metrics, models), not
# the GenAI traces view it assumes for an experiment without the tag
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(params: Params) -> str:
    """Set the tracking URI and return the experiment id (created with artifacts under the project)."""
    import mlflow

    from pipelines.engines.registry import use_tracking_uri

    use_tracking_uri(params.tracking_uri)
    name = params.mlflow.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = params.paths.mlflow_artifacts.as_uri()
        return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:  # an experiment created before the tag
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _flat(prefix: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


def _log_run(
    params: Params,
    release: Any,
    train: Any,
    metrics: dict[str, float],
    facts: dict[str, Any],
    span: tuple[dt.date, dt.date],
    device: str,
) -> tuple[str, str, Any]:
    """One MLflow run: params, metrics, tags and the release; (experiment id, run id, model info)."""
    import mlflow

    start, end = span
    experiment_id = ensure_experiment(params)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train {start}..{end}") as active:
        mlflow.log_params(
            {
                **_flat("train", params.train.model_dump()),
                "data.train_start": start.isoformat(),
                "data.train_end": end.isoformat(),
                "device": device,
                "n_features": len(release.feature_list),
            }
        )
        mlflow.log_metrics(
            {
                **metrics,
                "n_train": facts["n_train"],
                "n_valid": facts["n_valid"],
                **{k: facts[k] for k in ("best_iteration", "best_epoch") if k in facts},
            }
        )
        mlflow.set_tags(
            {
                "sluice.stage": "train",
                "sluice.model_kind": release.model_kind,
                "sluice.fingerprint": release.fingerprint,
                "sluice.feature_list": ",".join(release.feature_list),
            }
        )
        info = log_release(release, train, name=RELEASE_ARTIFACT)
    return experiment_id, active.info.run_id, info


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Train on data/dataset for [start, end), log the MLflow run, write models/release.json."""
    train = artifacts.read_split(params, "train")
    valid = artifacts.read_split(params, "valid")
    device = resolve_device(params.train.device)
    spec = load_spec(params.resolve(params.train.request_features))
    release, facts = fit_release(train, valid, params.train, spec, device)
    metrics = valid_metrics(valid[LABEL].to_numpy(dtype=np.int64), release.score(valid))
    experiment_id, run_id, info = _log_run(params, release, train, metrics, facts, (start, end), device)
    doc = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": f"runs:/{run_id}/{RELEASE_ARTIFACT}",
        "logged_model_uri": info.model_uri,
        "model_kind": release.model_kind,
        "feature_list": release.feature_list,
        "input_columns": release.input_columns,
        "dropped_features": facts["dropped_features"],
        "fingerprint": release.fingerprint,
        "train_start": start.isoformat(),
        "train_end": end.isoformat(),
        "device": device,
        "n_train": facts["n_train"],
        "n_valid": facts["n_valid"],
        "valid_metrics": metrics,
    }
    out: Path = params.paths.models / artifacts.RELEASE_DOC
    atomic_write_json(out, doc)
    log.info("trained %s release %s (run %s)", release.model_kind, release.fingerprint[:12], run_id)
    return {**{k: doc[k] for k in ("run_id", "model_uri", "model_kind", "fingerprint", "device")}, **metrics}


def describe(summary: dict[str, Any]) -> str:
    """Progress line: model kind, device, validation metrics, MLflow run."""
    return (
        f"{summary['model_kind']} on {summary['device']}: valid PR AUC {summary['valid_pr_auc']:.3f}, "
        f"ROC AUC {summary['valid_roc_auc']:.3f} (MLflow run {summary['run_id'][:8]})"
    )


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "train", describe)
