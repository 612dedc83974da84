"""The monitor stage on a tiny project: generated events (drift mode from a date), a reference training
set, a prediction log and batch predictions written by hand (no Spark, Feast or MLflow needed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines import io, monitor
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.sources.synthetic import generate
from tests.conftest import REPO_ROOT, make_project, shipped_spec

pytestmark = pytest.mark.integration

D = dt.date
DRIFT_FROM = D(2026, 1, 10)


def _project(root: Path) -> Params:
    params = make_project(
        root,
        {
            "data": {"start": "2026-01-01", "end": "2026-01-14"},
            "ingest": {
                "synthetic": {
                    "n_entities": 150,
                    "label_delay_hours": 24,
                    "drift": {"enabled": True, "start": DRIFT_FROM.isoformat(), "amount_scale": 3.0},
                }
            },
            "monitor": {"min_labels": 20, "cooldown_days": 7},
        },
    )
    events = generate(params.ingest.synthetic, params.data.start, params.data.end)
    for day in io.days(params.data.start, params.data.end):
        ts = pd.to_datetime(events["event_timestamp"], utc=True)
        io.write_partition(
            events[(ts.dt.date == day).to_numpy()].reset_index(drop=True), params.paths.validated, day
        )
    ts = pd.to_datetime(events["event_timestamp"], utc=True)
    params.paths.dataset.mkdir(parents=True)
    events[(ts < pd.Timestamp("2026-01-08", tz="UTC")).to_numpy()].to_parquet(
        params.paths.dataset / "train.parquet"
    )
    return params


def _scores(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.6 * frame["label"].to_numpy() + rng.uniform(0, 0.5, len(frame)), 0, 1)


def _write_log(params: Params, start: D, end: D) -> None:
    """Prediction log rows (pipelines.serving.log layout) for the events of [start, end)."""
    events = io.read_partitions(params.paths.validated, start, end)
    score = _scores(events, 1)
    challenger = (events["entity_id"].map(hash) % 100 < 20).to_numpy()
    for day in io.days(start, end):
        ts = pd.to_datetime(events["event_timestamp"], utc=True)
        m = (ts.dt.date == day).to_numpy()
        d = params.paths.prediction_log / f"date={day.isoformat()}"
        d.mkdir(parents=True, exist_ok=True)
        with (d / "predictions-000000-1-0001.jsonl").open("w") as fh:
            for i in np.flatnonzero(m):
                e = events.iloc[i]
                row = {
                    "prediction_id": f"p{i}",
                    "served_at": e["event_timestamp"].isoformat(),
                    "event_id": e["event_id"],
                    "entity_id": e["entity_id"],
                    "event_timestamp": e["event_timestamp"].isoformat(),
                    "amount": float(e["amount"]),
                    "merchant": e["merchant"],
                    "category": e["category"],
                    "score": float(score[i]),
                    "decision": int(score[i] >= 0.5),
                    "threshold": 0.5,
                    "model_name": "fraud_scorer",
                    "model_version": "2" if challenger[i] else "1",
                    "arm": "challenger" if challenger[i] else "champion",
                }
                fh.write(json.dumps(row) + "\n")


def _write_batch_predictions(params: Params, start: D, end: D) -> None:
    events = io.read_partitions(params.paths.validated, start, end)
    score = _scores(events, 2)
    preds = pd.DataFrame(
        {
            "event_id": events["event_id"],
            "entity_id": events["entity_id"],
            "event_timestamp": events["event_timestamp"],
            "score": score,
            "decision": (score >= 0.5).astype(np.int8),
            "threshold": 0.5,
            "model_name": "fraud_scorer",
            "model_version": "1",
        }
    )
    for day in io.days(start, end):
        ts = pd.to_datetime(preds["event_timestamp"], utc=True)
        io.write_partition(
            preds[(ts.dt.date == day).to_numpy()].reset_index(drop=True), params.paths.predictions, day
        )


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict, dict]:
    """Two monitor runs on a prediction log: before drift (calm) and after (drift -> retrain)."""
    params = _project(tmp_path_factory.mktemp("monitor") / "project")
    _write_log(params, D(2026, 1, 1), D(2026, 1, 14))
    calm = monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))
    drifted = monitor.run(params, D(2026, 1, 11), D(2026, 1, 13))
    return params, calm, drifted


def test_stage_writes_report_summary_prometheus_and_dashboard(monitored: tuple[Params, dict, dict]) -> None:
    params, calm, drifted = monitored
    out = params.paths.reports / "monitoring"
    for s in (calm, drifted):
        assert Path(s["report"]).stat().st_size > 10_000  # the Evidently HTML
        assert json.loads(Path(s["summary"]).read_text())["date"] == s["date"]
        assert s["current_source"] == "prediction_log"
    assert (out / "2026-01-09" / "report.html").is_file() and (out / "2026-01-12" / "summary.json").is_file()
    prom = (out / "metrics.prom").read_text()
    assert 'sluice_drift_score{feature="amount"' in prom and "sluice_retrain_decision 1.0" in prom
    assert 'sluice_live_metric{arm="challenger",metric="pr_auc",model_version="2"}' in prom
    page = (out / "index.html").read_text()
    assert "2026-01-09" in page and "2026-01-12" in page and "challenger" in page


def test_drift_mode_is_detected_and_triggers_one_retrain(monitored: tuple[Params, dict, dict]) -> None:
    params, calm, drifted = monitored
    assert not calm["dataset_drift"] and not calm["retrain"]
    assert drifted["dataset_drift"] and drifted["retrain"]
    assert drifted["retrain_window"] == ["2025-11-14", "2026-01-13"]
    summary = json.loads(Path(drifted["summary"]).read_text())
    assert "amount" in summary["drift"]["drifted_features"]
    live = summary["live"]["by_version_arm"]
    assert {r["arm"] for r in live} == {"champion", "challenger"} and all(r["n"] > 0 for r in live)
    # cooldown: the next window still drifts but no second retrain
    again = monitor.run(params, D(2026, 1, 12), D(2026, 1, 14))
    assert again["dataset_drift"] and not again["retrain"] and again["suppressed_by_cooldown"]
    state = json.loads((params.paths.reports / "monitoring" / "state.json").read_text())
    assert state["last_retrain"] == "2026-01-13"


def test_batch_predictions_when_no_serving_traffic(tmp_path: Path) -> None:
    params = _project(tmp_path / "project")
    _write_batch_predictions(params, D(2026, 1, 8), D(2026, 1, 10))
    summary = monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))
    assert summary["current_source"] == "batch_predictions"
    got = json.loads(Path(summary["summary"]).read_text())
    assert [t["arm"] for t in got["traffic"]] == ["batch"]


def test_nothing_to_monitor_is_a_clear_error(tmp_path: Path) -> None:
    params = _project(tmp_path / "project")
    with pytest.raises(StageError, match="nothing to monitor"):
        monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))


def test_missing_reference_is_a_clear_error(tmp_path: Path) -> None:
    params = _project(tmp_path / "project")
    (params.paths.dataset / "train.parquet").unlink()
    _write_log(params, D(2026, 1, 8), D(2026, 1, 9))
    with pytest.raises(StageError, match="no reference"):
        monitor.run(params, D(2026, 1, 8), D(2026, 1, 9))


class _Champion:
    """A registry with one champion (version 3) and the release it loads: no MLflow needed."""

    def __init__(self, train_start: str, train_end: str) -> None:
        self.tags = {
            "feature_list": json.dumps(["amount", "log_amount", "hour", "category"]),
            "feature_service": "fs",
            "threshold": "0.5",
            "train_start": train_start,
            "train_end": train_end,
            "fingerprint": "f1ng3r",
            "metrics": "{}",
        }
        self.loaded: list[tuple[str, str | None]] = []

    def model_exists(self, name: str) -> bool:
        return True

    def get_version_by_alias(self, name: str, alias: str) -> SimpleNamespace | None:
        return SimpleNamespace(version=3, tags=self.tags) if alias == "champion" else None

    def load_release(self, uri: str, device: str = "cpu", expected_fingerprint: str | None = None) -> Any:
        self.loaded.append((uri, expected_fingerprint))
        return SimpleNamespace(score=lambda frame: _scores(frame, 3), spec=shipped_spec())


def test_champion_reference_and_scores_come_from_its_pinned_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.engines.registry
    import pipelines.model.packaging

    params = _project(tmp_path / "project")
    Path(params.tracking_uri.removeprefix("sqlite:///")).touch()
    registry = _Champion("2026-01-02", "2026-01-06")
    monkeypatch.setattr(pipelines.engines.registry, "open_registry", lambda params: registry)
    monkeypatch.setattr(pipelines.model.packaging, "load_release", registry.load_release)
    _write_log(params, D(2026, 1, 8), D(2026, 1, 10))
    summary = json.loads(Path(monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))["summary"]).read_text())
    assert registry.loaded == [("models:/fraud_scorer/3", "f1ng3r")]  # pinned URI, fingerprint checked
    assert summary["champion"]["version"] == "3" and summary["champion"]["train_start"] == "2026-01-02"
    # train.parquet starts before the champion's window: its window is rebuilt from data/validated
    events = io.read_partitions(params.paths.validated, D(2026, 1, 2), D(2026, 1, 6))
    assert summary["rows"]["reference"] == len(events)
    assert set(summary["drift"]["features"]) == {"amount", "log_amount", "hour", "category"}
    assert summary["drift"]["prediction"]["score"] is not None  # the champion scored its reference


@pytest.mark.ui
def test_dashboard_renders_in_headless_chromium(monitored: tuple[Params, dict, dict]) -> None:
    from playwright.sync_api import sync_playwright

    params, _, _ = monitored
    page_path = params.paths.reports / "monitoring" / "index.html"
    shot = REPO_ROOT / "test-artifacts" / "monitoring" / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            assert page.title() == "sluice monitoring"
            assert page.locator("svg[aria-label='drift share over time'] circle").count() >= 2
            assert page.locator("td.d").count() > 0  # drifted cells are marked
            assert page.get_by_text("Live metrics per model version and arm").is_visible()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not errors
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
