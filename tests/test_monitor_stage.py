"""The monitor stage on a tiny project: generated events (drift mode from a date), a reference training
set, a prediction log and batch predictions written by hand (no Spark, Feast or MLflow needed)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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
from tests.browser import CHROMIUM_ARGS, chromium, free_port, network_off
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
    return np.clip(0.45 * frame["label"].to_numpy() + rng.uniform(0, 0.55, len(frame)), 0, 1)


def _write_log(params: Params, start: D, end: D) -> None:
    """Prediction log rows (pipelines.serving.log layout) for the events of [start, end)."""
    events = io.read_partitions(params.paths.validated, start, end)
    rng = np.random.default_rng(5)
    routed = (events["entity_id"].map(hash) % 100 < 20).to_numpy()  # to the challenger
    # 2 % of those fail and the champion answers (what serving logs: arm champion, challenger_fallback)
    fallback = routed & (rng.random(len(events)) < 0.02)
    challenger = routed & ~fallback
    # a good model, not a perfect one, each arm its own (the dashboard's lines differ)
    noise = rng.uniform(0, np.where(challenger, 0.6, 0.55))
    score = np.clip(0.45 * events["label"].to_numpy() + noise, 0, 1)
    latency = rng.lognormal(np.where(challenger, 2.5, 2.0), 0.4) + np.where(fallback, 200.0, 0.0)
    feature_source = np.where(rng.random(len(events)) < 0.05, "new_entity", "online")
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
                    "feature_source": str(feature_source[i]),
                    "cached": False,
                    "challenger_fallback": bool(fallback[i]),
                    "latency_ms": round(float(latency[i]), 3),
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


class _Registry:
    """A registry with versions 1-3 (offline metrics, gate verdicts none / fail / pass), version 3 the
    champion when `train_window` is given, and the release version 3 loads: no MLflow needed."""

    def __init__(self, train_window: tuple[str, str] | None = None) -> None:
        self.train_window = train_window
        start, end = train_window or ("2026-01-01", "2026-01-08")
        self.tags = {
            "feature_list": json.dumps(["amount", "log_amount", "hour", "category"]),
            "feature_service": "fs",
            "threshold": "0.5",
            "train_start": start,
            "train_end": end,
            "fingerprint": "f1ng3r",
            "metrics": "{}",
        }
        self.loaded: list[tuple[str, str | None]] = []

    def model_exists(self, name: str) -> bool:
        return True

    def get_version_by_alias(self, name: str, alias: str) -> SimpleNamespace | None:
        if alias != "champion" or self.train_window is None:
            return None
        return SimpleNamespace(version=3, tags=self.tags)

    def versions(self, name: str) -> list[SimpleNamespace]:
        out = []
        for v, gate in ((1, None), (2, "fail"), (3, "pass")):
            metrics = {
                "pr_auc": 0.4 + 0.1 * v,
                "roc_auc": 0.9,
                "recall_at_fpr": 0.3 + 0.1 * v,
                "precision_at_threshold": 0.2 + 0.05 * v,
                "threshold": 0.4 + 0.05 * v,
            }
            tags = {"metrics": json.dumps(metrics), **({"gate.verdict": gate} if gate else {})}
            created = int(dt.datetime(2026, 1, 1 + v, tzinfo=dt.UTC).timestamp() * 1000)
            out.append(SimpleNamespace(version=v, tags=tags, creation_timestamp=created))
        return out

    def aliases(self, name: str) -> dict[str, str]:
        return {"champion": "3"} if self.train_window else {}

    def load_release(self, uri: str, device: str = "cpu", expected_fingerprint: str | None = None) -> Any:
        self.loaded.append((uri, expected_fingerprint))
        return SimpleNamespace(score=lambda frame: _scores(frame, 3), spec=shipped_spec())


def _use_registry(mp: pytest.MonkeyPatch, params: Params, registry: _Registry) -> None:
    import pipelines.engines.registry
    import pipelines.model.packaging

    Path(params.tracking_uri.removeprefix("sqlite:///")).touch()
    mp.setattr(pipelines.engines.registry, "open_registry", lambda params: registry)
    mp.setattr(pipelines.model.packaging, "load_release", registry.load_release)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict, dict]:
    """Two monitor runs on a prediction log: before drift (calm) and after (drift -> retrain); a registry
    with a training history but no champion."""
    params = _project(tmp_path_factory.mktemp("monitor") / "project")
    _write_log(params, D(2026, 1, 1), D(2026, 1, 14))
    with pytest.MonkeyPatch.context() as mp:
        _use_registry(mp, params, _Registry())
        calm = monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))
        drifted = monitor.run(params, D(2026, 1, 11), D(2026, 1, 13))
    return params, calm, drifted


def _workspace_runs(params: Params) -> tuple[Any, Any, list[Any]]:
    """(workspace, project id, every run's SnapshotModel) of params' Evidently workspace."""
    from evidently.ui.workspace import Workspace

    from pipelines.monitoring.workspace import project_id

    ws = Workspace(str(params.resolve(params.monitor.workspace)))
    pid = project_id(params.register_.model_name)
    assert ws.get_project(pid) is not None
    return ws, pid, [ws.get_run(pid, r) for r in ws.list_runs(pid)]


def _values(run: Any, metric: str) -> dict[tuple[str, ...], float]:
    """{(param values but type...): value} of one metric type in a run (SingleValue results)."""
    out = {}
    for r in run.metric_results.values():
        params = r.metric_value_location.metric.params
        if params["type"].endswith(f":{metric}") and hasattr(r, "value"):
            out[tuple(str(v) for k, v in sorted(params.items()) if k not in ("type", "tests"))] = r.value
    return out


def test_stage_writes_report_summary_prometheus_and_workspace(monitored: tuple[Params, dict, dict]) -> None:
    params, calm, drifted = monitored
    out = params.paths.reports / "monitoring"
    for s in (calm, drifted):
        assert Path(s["report"]).stat().st_size > 10_000  # the Evidently HTML
        got = json.loads(Path(s["summary"]).read_text())
        assert got["date"] == s["date"] and got["window"]["kind"] == "given" == s["window_kind"]
        assert s["current_source"] == "prediction_log"
        assert s["workspace"] == str(out / "workspace")
    assert (out / "2026-01-09" / "report.html").is_file() and (out / "2026-01-12" / "summary.json").is_file()
    assert not (out / "index.html").exists()
    prom = (out / "metrics.prom").read_text()
    assert 'sluice_drift_score{feature="amount"' in prom and "sluice_retrain_decision 1.0" in prom
    assert 'sluice_live_metric{arm="challenger",metric="pr_auc",model_version="2"}' in prom
    service = {r["arm"]: r for r in json.loads(Path(drifted["summary"]).read_text())["service"]}
    assert service["challenger"]["latency_p99_ms"] > service["champion"]["latency_p50_ms"] > 0
    assert 0 < service["champion"]["challenger_fallback_share"] < 0.05  # the champion answered those
    assert service["challenger"]["challenger_fallback_share"] == 0


def test_workspace_has_one_run_per_day_the_history_and_the_dashboard(
    monitored: tuple[Params, dict, dict],
) -> None:
    from pipelines.monitoring.panels import dashboard_model

    params, _, drifted = monitored
    before = sorted(p.name for p in (params.resolve(params.monitor.workspace)).rglob("*.json"))
    with pytest.MonkeyPatch.context() as mp:  # a rerun of the calm day replaces its run
        _use_registry(mp, params, _Registry())
        monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))
    assert sorted(p.name for p in (params.resolve(params.monitor.workspace)).rglob("*.json")) == before
    ws, pid, runs = _workspace_runs(params)
    days = [r for r in runs if "monitor" in r.tags]
    dates = sorted(r.metadata["date"] for r in days)
    assert {"2026-01-09", "2026-01-12"} <= set(dates) and len(dates) == len(set(dates))
    day = next(r for r in days if r.metadata["date"] == "2026-01-12")
    assert day.timestamp == dt.datetime(2026, 1, 13)  # the window end: daily runs plot over time
    assert day.metadata["window_kind"] == "given" and "retrain" in day.tags
    # Evidently's own classification metrics per version and arm, equal to the summary's
    summary = json.loads(Path(drifted["summary"]).read_text())
    precision = {k[0]: v for k, v in _values(day, "Precision").items()}
    for row in summary["live"]["by_version_arm"]:
        assert precision[f"v{row['model_version']} {row['arm']}"] == pytest.approx(row["precision"])
    assert len(_values(day, "LivePrAuc")) == 2 and _values(day, "ValueDrift")
    latency = {k: v for k, v in _values(day, "MonitorValue").items() if k[1] == "latency_p99_ms"}
    assert set(latency) == {("champion", "latency_p99_ms", "1"), ("challenger", "latency_p99_ms", "2")}
    # the training history: a run per registered version at its registration, gate verdicts as values
    training = {r.metadata["model_version"]: r for r in runs if "training" in r.tags}
    assert set(training) == {"1", "2", "3"} and training["3"].timestamp == dt.datetime(2026, 1, 4)
    gates = {v: _values(r, "MonitorValue").get(("", "gate_pass", "")) for v, r in training.items()}
    assert gates == {"1": None, "2": 0.0, "3": 1.0}
    titles = {p.title for p in ws.get_dashboard(pid).panels}
    assert titles == {p.title for p in dashboard_model().panels}
    assert {"Live PR AUC per version and arm", "Latency per arm (ms)", "Retrain decision per run"} <= titles
    assert {"Offline test metrics per registered version", "Drift score per feature"} <= titles


@pytest.mark.parametrize("damage", ["file_in_the_way", "corrupt_project"])
def test_unusable_workspace_is_a_clear_error_and_decides_nothing(tmp_path: Path, damage: str) -> None:
    from pipelines.monitoring.workspace import project_id

    params = _project(tmp_path / "project")
    _write_log(params, D(2026, 1, 8), D(2026, 1, 13))
    ws = params.resolve(params.monitor.workspace)
    if damage == "file_in_the_way":
        ws.parent.mkdir(parents=True)
        ws.write_text("not a workspace")
    else:
        (ws / str(project_id("fraud_scorer"))).mkdir(parents=True)
        (ws / str(project_id("fraud_scorer")) / "metadata.json").write_text("{ half a file")
    with pytest.raises(StageError, match=re.escape(f"Evidently workspace {ws}")):
        monitor.run(params, D(2026, 1, 11), D(2026, 1, 13))  # a drifted window: it would retrain
    # nothing says it retrained, so the retrain is neither lost nor held back by a cooldown
    assert not (params.paths.reports / "monitoring" / "state.json").exists()


def test_default_range_monitors_the_test_window(tmp_path: Path) -> None:
    params = _project(tmp_path / "project")
    _write_log(params, D(2026, 1, 1), D(2026, 1, 14))
    splits = {"valid": {"end": "2026-01-11T05:00:00+00:00"}, "test": {"start": "2026-01-11T05:10:00+00:00"}}
    (params.paths.dataset / "summary.json").write_text(json.dumps({"splits": splits}))
    result = monitor.run(params, params.data.start, params.data.end)  # what `dvc repro` passes
    summary = json.loads(Path(result["summary"]).read_text())
    assert result["window"] == ["2026-01-12", "2026-01-14"] and summary["window"]["kind"] == "test"
    assert "did not train on" in summary["window"]["reason"]
    assert summary["metrics_window"][0] == "2026-01-12"  # live metrics on unseen days only
    _, _, runs = _workspace_runs(params)
    (day,) = [r for r in runs if "monitor" in r.tags]
    assert day.metadata["window_kind"] == "test" and "window:test" in day.tags
    whole = params.model_copy(update={"monitor": params.monitor.model_copy(update={"window": "data"})})
    assert monitor.run(whole, whole.data.start, whole.data.end)["window"] == ["2026-01-01", "2026-01-14"]


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


def test_champion_reference_and_scores_come_from_its_pinned_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _project(tmp_path / "project")
    registry = _Registry(("2026-01-02", "2026-01-06"))
    _use_registry(monkeypatch, params, registry)
    _write_log(params, D(2026, 1, 8), D(2026, 1, 10))
    summary = json.loads(Path(monitor.run(params, D(2026, 1, 8), D(2026, 1, 10))["summary"]).read_text())
    assert registry.loaded == [("models:/fraud_scorer/3", "f1ng3r")]  # pinned URI, fingerprint checked
    assert summary["champion"]["version"] == "3" and summary["champion"]["train_start"] == "2026-01-02"
    # train.parquet starts before the champion's window: its window is rebuilt from data/validated
    events = io.read_partitions(params.paths.validated, D(2026, 1, 2), D(2026, 1, 6))
    assert summary["rows"]["reference"] == len(events)
    assert set(summary["drift"]["features"]) == {"amount", "log_amount", "hour", "category"}
    assert summary["drift"]["prediction"]["score"] is not None  # the champion scored its reference


@pytest.fixture(scope="module")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """A week of daily monitor runs (drift from the 10th) against a champion, with a training history."""
    params = _project(tmp_path_factory.mktemp("monitor_ui") / "project")
    _write_log(params, D(2026, 1, 1), D(2026, 1, 14))
    with pytest.MonkeyPatch.context() as mp:
        _use_registry(mp, params, _Registry(("2026-01-02", "2026-01-06")))
        for day in io.days(D(2026, 1, 7), D(2026, 1, 14)):
            monitor.run(params, day, day + dt.timedelta(days=1))
    return params


@contextlib.contextmanager
def _evidently_ui(workspace: Path, log: Path) -> Iterator[str]:
    """`evidently ui` on the workspace, on a free local port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DO_NOT_TRACK": "1"}  # the server's usage telemetry goes to a remote host
    cmd = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=out, env=env
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/projects", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.ui
def test_evidently_ui_shows_every_panel_populated_offline(ui_project: Params) -> None:
    """The project's dashboard in Evidently's own UI, in headless Chromium with every request to another
    host refused: every plot panel draws points or bars, and the day's run opens."""
    from playwright.sync_api import expect, sync_playwright

    from pipelines.monitoring.panels import dashboard_model
    from pipelines.monitoring.workspace import project_id, run_id

    browser_path = chromium()
    params = ui_project
    pid = project_id(params.register_.model_name)
    shots = REPO_ROOT / "test-artifacts" / "monitoring-ui"
    shots.mkdir(parents=True, exist_ok=True)
    plots = [p.title for p in dashboard_model().panels if p.plot_params.get("plot_type") != "text"]
    errors: list[str] = []
    workspace = params.resolve(params.monitor.workspace)
    with _evidently_ui(workspace, shots / "evidently-ui.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            attempted = network_off(page, local=(url,))  # the issue: the UI works with the network off
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/projects/{pid}")
            for title in plots:
                card = page.locator(".MuiCard-root").filter(has=page.get_by_text(title, exact=True))
                card.scroll_into_view_if_needed()
                drawn = card.locator(".MuiMarkElement-root, .MuiBarElement-root")
                expect(drawn.first, f"panel {title!r} drew nothing").to_be_attached(timeout=20_000)
            expect(page.get_by_text("no value")).to_have_count(0)
            page.wait_for_timeout(1500)  # the charts' entry animation
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            page.goto(f"{url}/projects/{pid}/reports/{run_id(pid, 'day/2026-01-10')}")
            expect(page.get_by_text("Live quality: v2 challenger")).to_be_visible(timeout=20_000)
            expect(page.get_by_text("Dataset Drift is detected").first).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "run-2026-01-10.png"), full_page=True)
        finally:
            browser.close()
    assert not attempted, attempted
    assert not errors, errors
    print(f"screenshots: {shots}")
