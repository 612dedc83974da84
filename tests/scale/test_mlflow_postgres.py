"""MLflow on PostgreSQL: train -> evaluate -> register by configuration only, then load the champion back.

CI test: the PostgreSQL URI itself is the tracking URI (MLFLOW_TRACKING_URI, read by load_params).
Slow test: a real `mlflow server` with that backend store and a local artifact root, reached over HTTP.
A throwaway database is created and dropped around each test.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

from pipelines.config import load_params
from tests.conftest import make_project
from tests.scale.conftest import free_port, http_ok, start_process, stop_process, wait_until
from tests.test_register import tiny_events

pytestmark = pytest.mark.integration

START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 3)
MODEL = "scale_fraud_scorer"


def _pipeline_against(tracking_uri: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train, evaluate, register on tiny data with MLFLOW_TRACKING_URI=tracking_uri; load the champion."""
    from pipelines import evaluate, register, train
    from pipelines.engines.registry import open_registry
    from pipelines.model.packaging import load_release

    # random tiny data: the gates only have to pass, quality is not what is under test here
    gates = {"roc_auc_min": 0.0, "pr_auc_min": 0.0, "recall_at_fpr_min": 0.0}
    make_project(root, {"register": {"model_name": MODEL}, "evaluate": {"gates": gates}})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    params = load_params(root / "params.yaml")  # configuration only: the env var selects the server
    assert params.tracking_uri == tracking_uri
    frame = tiny_events(400, seed=5)
    params.paths.dataset.mkdir(parents=True)
    frame.iloc[:260].to_parquet(params.paths.dataset / "train.parquet")
    frame.iloc[260:330].to_parquet(params.paths.dataset / "valid.parquet")
    frame.iloc[330:].to_parquet(params.paths.dataset / "test.parquet")

    trained = train.run(params, START, END)
    evaluate.run(params, START, END)
    registered = register.run(params, START, END)
    assert "champion" in registered["aliases"]

    version = open_registry(params).get_version_by_alias(MODEL, "champion")
    assert version is not None and str(version.version) == str(registered["version"])
    assert version.tags["fingerprint"] == trained["fingerprint"]
    # serving's path: load the champion release from the shared tracking store
    release = load_release(f"models:/{MODEL}@champion")
    assert release.fingerprint == trained["fingerprint"]
    scores = release.score(frame.iloc[330:])
    assert scores.shape == (70,) and ((scores >= 0) & (scores <= 1)).all()
    metrics = json.loads((params.paths.reports / "metrics.json").read_text())
    assert 0 <= metrics["roc_auc"] <= 1


def test_pipeline_on_postgres_backend_store(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pipeline_against(pg_database, tmp_path / "project", monkeypatch)


@pytest.mark.slow
def test_pipeline_on_mlflow_server_with_postgres(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    artifacts = tmp_path / "artifacts"
    log = tmp_path / "mlflow-server" / "server.log"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", pg_database,
        "--default-artifact-root", artifacts.as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = start_process(cmd, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/health"), 180, "mlflow server", log)
        _pipeline_against(url, tmp_path / "project", monkeypatch)
    finally:
        stop_process(server)
