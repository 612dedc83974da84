"""Train stage: feature selection, the fitted release, MLflow logging and models/release.json."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import train
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.model import training
from pipelines.sections import TrainParams
from tests.conftest import shipped_spec

pytestmark = pytest.mark.integration

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 15)
START_EPOCH = pd.Timestamp(START, tz="UTC").timestamp()
TINY = TrainParams(model="xgboost", seed=3, xgboost={"n_estimators": 20, "max_depth": 3}, mlp={"epochs": 2})


def make_events(
    n: int = 600, seed: int = 0, days: float = 14.0, coords: bool = True, merchant: bool = True
) -> pd.DataFrame:
    """A tiny dataset-shaped frame (canonical event columns + Feast columns + label) with a learnable signal.

    Fraud: large amounts relative to the entity's history, far from home. Shared by the ML test modules.
    """
    rng = np.random.default_rng(seed)
    secs = np.sort(rng.uniform(0, days * 86400, n))
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.round(secs * 1e6), unit="us")
    y = (rng.random(n) < 0.08).astype(np.int64)
    mean_hist = np.exp(rng.normal(3.5, 0.3, n))
    cnt = rng.poisson(3, n).astype(np.int64)
    f = pd.DataFrame(
        {
            "event_id": [f"e{seed}-{i:06d}" for i in range(n)],
            "entity_id": [f"u{i % 40:03d}" for i in range(n)],
            "event_timestamp": ts,
            "amount": np.round(mean_hist * np.exp(rng.normal(0, 0.4, n)) * np.where(y == 1, 2.5, 1.0), 2),
            "category": rng.choice(["grocery", "travel", "online", "fuel"], n),
            "label": y,
        }
    )
    if merchant:
        f["merchant"] = rng.choice([f"Shop {i}" for i in range(25)], n)
    if coords:
        f["latitude"] = 40 + rng.normal(0, 1, n)
        f["longitude"] = -74 + rng.normal(0, 1, n)
        spread = np.where(y == 1, 1.0, 0.3)
        f["merchant_latitude"] = f["latitude"] + rng.normal(0, 1, n) * spread
        f["merchant_longitude"] = f["longitude"] + rng.normal(0, 1, n) * spread
    f["txn_count_1h"] = rng.poisson(0.2, n).astype(np.int64)
    f["amount_sum_1h"] = f["txn_count_1h"] * 30.0
    f["txn_count_24h"] = cnt
    f["amount_sum_24h"] = cnt * mean_hist
    f["amount_mean_24h"] = np.where(cnt > 0, mean_hist, np.nan)
    f["txn_count_7d"] = cnt * 7
    f["amount_sum_7d"] = cnt * 7 * mean_hist
    f["amount_mean_7d"] = mean_hist
    f["distinct_merchants_24h"] = np.minimum(cnt, 5).astype(np.float64) if merchant else np.nan
    f["amount_mean_hist"] = mean_hist
    f["amount_std_hist"] = mean_hist * 0.4
    f["txn_count_hist"] = cnt * 30
    first = rng.random(n) < 0.05  # an entity's first event: no previous state
    f["last_event_ts"] = np.where(first, np.nan, secs + START_EPOCH - rng.exponential(3600 * 8, n))
    f.loc[first, ["amount_mean_hist", "amount_std_hist"]] = np.nan
    return f


def write_dataset(params: Params, seed: int = 0, n: int = 900, **kw: object) -> None:
    """data/dataset/{train,valid,test}.parquet split by time, like the dataset stage."""
    frame = make_events(n, seed, **kw)  # type: ignore[arg-type]
    a, b = int(n * 0.7), int(n * 0.85)
    out = params.paths.dataset
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", frame[:a]), ("valid", frame[a:b]), ("test", frame[b:])):
        part.reset_index(drop=True).to_parquet(out / f"{name}.parquet", index=False)


@pytest.fixture(autouse=True)
def _no_env_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    # an exported MLFLOW_TRACKING_URI would win over the tmp project's sqlite store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_select_features_drops_entirely_null_columns() -> None:
    frame = make_events(200, 1, merchant=False, coords=False)
    kept, dropped = training.select_features(frame, shipped_spec())
    assert dropped == ["distinct_merchants_24h"]
    assert "distance_km" not in kept and "category" in kept and "seconds_since_prev" in kept


def test_fit_release_is_reproducible_and_calibrated() -> None:
    tr, va = make_events(600, 1), make_events(300, 2)
    a, facts = training.fit_release(tr, va, TINY, shipped_spec())
    b, _ = training.fit_release(tr, va, TINY, shipped_spec())
    assert a.fingerprint == b.fingerprint  # same seed, same data -> same bytes
    p = a.score(va)
    assert p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    # the intercept refit on valid makes the mean score match the valid base rate
    assert p.mean() == pytest.approx(va["label"].mean(), abs=1e-6)
    assert facts["n_train"] == 600 and facts["train_positives"] > 0


def test_single_class_train_split_is_refused() -> None:
    tr = make_events(200, 1).assign(label=0)
    with pytest.raises(StageError, match="single class"):
        training.fit_release(tr, make_events(100, 2), TINY, shipped_spec())


def test_run_writes_release_json_and_logs_to_mlflow(project: Params) -> None:
    write_dataset(project)
    params = project.model_copy(update={"train": TINY})
    summary = train.run(params, START, END)
    doc = json.loads((project.paths.models / "release.json").read_text())
    assert doc["model_uri"] == f"runs:/{doc['run_id']}/release" == summary["model_uri"]
    assert doc["model_kind"] == "xgboost" and doc["device"] == "cpu"
    assert doc["train_start"] == "2026-01-01" and doc["train_end"] == "2026-01-15"
    assert "amount" in doc["feature_list"] and len(doc["fingerprint"]) == 64

    import mlflow

    from pipelines.model.packaging import load_release

    run = mlflow.get_run(doc["run_id"])
    assert run.data.params["train.xgboost.n_estimators"] == "20"
    assert "valid_roc_auc" in run.data.metrics
    exp = mlflow.get_experiment(doc["experiment_id"])
    assert exp.name == project.mlflow.experiment
    assert exp.artifact_location == project.paths.mlflow_artifacts.as_uri()
    release = load_release(doc["model_uri"])
    assert release.fingerprint == doc["fingerprint"] and release.feature_list == doc["feature_list"]
    assert Path(project.paths.mlflow_artifacts).is_dir()


def test_run_without_dataset_names_the_missing_file(project: Params) -> None:
    with pytest.raises(StageError, match=r"dataset[/\\]train\.parquet"):
        train.run(project, START, END)
