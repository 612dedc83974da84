"""The `monitor` stage: drift of the model inputs and scores, live quality from late labels, the retrain
decision, for the window [start, end) (as-of = end, midnight UTC), recorded in Evidently's workspace.

Wiring only; the work is in pipelines.monitoring (see its docstring for each module):
- window: which days: a run over exactly data.start..data.end (what `dvc repro` passes) monitors the test
  window (days the champion did not train on) when `monitor.window` is `test`, the default; any other
  range as given;
- inputs: the current window (prediction log, else batch predictions + point-in-time features), the
  champion from the registry and its reference (its training window), scored by the champion release,
  and every registered version (the training history);
- drift: Evidently drift and data-quality checks on the model's request-time features (the champion
  release's own spec, else the one params train.request_features names; `_model_features`) and the score;
- live: metrics per model version and arm on the labels arrived by the as-of time, over the trailing
  `monitor.metrics_window_days`: the labels posted to the ingestion service (labelled_at <= as-of) when the
  landing store has them for the window's predictions, the events' own labels otherwise
  (event_timestamp + label delay <= as-of); `labels_source` in the summary says which; serving health;
- decision: retrain or not, with the cooldown kept in reports/monitoring/state.json;
- runs, workspace, panels: the day's Evidently run (drift, quality, live metrics per version and arm,
  facts) and one run per registered version, in the project of `monitor.workspace`, with its dashboard
  (`make monitor-ui`).

Outputs: the Evidently runs (a rerun of a day replaces its run); under reports/monitoring/:
<date>/report.html (the day's Evidently run) and <date>/summary.json written atomically together,
metrics.prom (Prometheus textfile) and state.json (last retrain, for the cooldown). <date> is the
window's last day. Used by dvc.yaml (`python -m pipelines.monitor`) and the Airflow `monitoring` DAG.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import io
from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.model.release import Release
from pipelines.model.request_features import load_spec, request_features
from pipelines.monitoring import SCORE, inputs
from pipelines.monitoring.decision import (
    STATE_FILE,
    Decision,
    decide_retrain,
    last_retrain,
    load_state,
    state_record,
)
from pipelines.monitoring.drift import drift_report, drift_summary, quality_checks
from pipelines.monitoring.live import (
    arrived_labels,
    join_labels,
    label_sources,
    live_metrics,
    service_health,
    traffic,
)
from pipelines.monitoring.prometheus import write_prometheus
from pipelines.monitoring.report import PROM_FILE, REPORT_FILE, SUMMARY_FILE, Window, day_summary, run_result
from pipelines.monitoring.runs import day_run, training_run
from pipelines.monitoring.window import MonitorWindow, monitor_window
from pipelines.monitoring.workspace import write_workspace


def _model_features(params: Params, release: Release | None) -> tuple[inputs.FeatureFn, list[str]]:
    """The model's request-time features and categorical columns: what drift compares. The champion's own
    spec (the one it scores with); without a champion, the spec params name (train.request_features).
    The one place monitoring meets the model's features."""
    spec = release.spec if release is not None else load_spec(params.resolve(params.train.request_features))
    return (lambda frame: request_features(frame, spec)), spec.categorical


def _drift_frames(
    params: Params,
    champion: inputs.Champion | None,
    release: Release | None,
    features: inputs.FeatureFn,
    reference: pd.DataFrame,
    current: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The compared frames: sampled model inputs of each side plus the score (served on the current side,
    the champion's on its own training data); without a score when the champion cannot score."""
    feature_list = champion.tags.feature_list if champion else None
    ref_x = inputs.drift_inputs(reference, features, feature_list, params.monitor)
    cur_x = inputs.drift_inputs(current, features, feature_list, params.monitor)
    cur_x[SCORE] = inputs.current_scores(current, cur_x.index)
    ref_scores = inputs.champion_scores(release, reference.loc[ref_x.index])
    if ref_scores is None:  # prediction drift needs the champion's scores on its own training data
        return ref_x, cur_x.drop(columns=SCORE)
    ref_x[SCORE] = ref_scores
    return ref_x, cur_x


def _compared(
    params: Params, champion: inputs.Champion | None, current: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], int]:
    """(reference inputs, current inputs, categorical columns, reference rows) of the drift report."""
    reference = inputs.reference_frame(params, champion)
    release = inputs.champion_release(params, champion)
    features, categorical = _model_features(params, release)
    ref_x, cur_x = _drift_frames(params, champion, release, features, reference, current)
    return ref_x, cur_x, list(categorical), len(reference)


def _training_runs(params: Params) -> dict[str, Any]:
    """An Evidently run per registered version (the dashboard's training history), keyed for the workspace."""
    runs = {f"version/{r.version}": training_run(r) for r in inputs.registry_history(params)}
    return {k: v for k, v in runs.items() if v is not None}


def _write_outputs(
    params: Params, out_root: Path, summary: dict[str, Any], runs: dict[str, Any], decision: Decision
) -> dict[str, Any]:
    """The Evidently runs, the day's report + summary (one atomic directory), the cooldown state, gauges.

    The workspace first: a run that fails there leaves no state.json saying it retrained (its retrain
    asset would never be emitted, and the cooldown would hold back the next one)."""
    day = runs[f"day/{summary['date']}"]
    ws = write_workspace(params.resolve(params.monitor.workspace), params.register_.model_name, runs)
    with io.atomic_dir(out_root / summary["date"]) as tmp:
        day.save_html(str(tmp / REPORT_FILE))
        io.atomic_write_json(tmp / SUMMARY_FILE, summary)
    if decision.retrain:
        io.atomic_write_json(
            out_root / STATE_FILE, state_record(dt.date.fromisoformat(summary["end"]), decision)
        )
    write_prometheus(out_root / PROM_FILE, summary)
    return ws


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Monitor [start, end) (or its test window): drift, live metrics, retrain decision, Evidently runs."""
    cfg = params.monitor
    out_root = params.paths.reports / "monitoring"
    window: MonitorWindow = monitor_window(params, start, end)
    start, end = window.start, window.end
    as_of = dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)

    champion = inputs.find_champion(params)
    current, source = inputs.current_frame(params, start, end)
    if current.empty:
        raise StageError(
            f"monitor: nothing to monitor in [{start}, {end}) ({window.kind} window): no prediction log rows "
            f"under {params.paths.prediction_log} and no batch predictions under {params.paths.predictions}"
        )
    ref_x, cur_x, categorical, n_reference = _compared(params, champion, current)
    snapshot, columns = drift_report(ref_x, cur_x, cfg, categorical)
    drift = drift_summary(columns, cfg)

    labels = inputs.label_window(params, start, end, current, floor=window.metrics_floor, as_of=as_of)
    arrived = arrived_labels(labels.events, as_of, labels.delay_hours, labels.posted)
    joined = join_labels(labels.predictions, arrived)
    live = live_metrics(joined, cfg.calibration_bins)
    decision = decide_retrain(drift, live, end, last_retrain(load_state(out_root)), cfg)

    summary = day_summary(
        Window(start=start, end=end, metrics_start=labels.start, kind=window.kind, reason=window.reason),
        source=source,
        rows={"reference": n_reference, "current": len(current), "labelled": len(joined)},
        champion=champion.info() if champion else None,
        drift=drift,
        drift_share_threshold=cfg.drift_share,
        checks=quality_checks(ref_x, cur_x, cfg, categorical),
        label_delay_hours=labels.delay_hours,
        labels=label_sources(joined, labels.posted),
        live=live,
        traffic=traffic(current),
        service=service_health(current),
        decision=decision,
    )
    runs = {f"day/{summary['date']}": day_run(snapshot, joined, summary, cfg), **_training_runs(params)}
    ws = _write_outputs(params, out_root, summary, runs, decision)
    return run_result(summary, decision, out_root, ws)


def describe(summary: dict[str, Any]) -> str:
    """Progress line: which window, drift, the decision, where to look."""
    verdict = (
        "retrain"
        if summary["retrain"]
        else ("cooldown" if summary["suppressed_by_cooldown"] else "no retrain")
    )
    start, end = summary["window"]
    drifted = f"{summary['n_drifted']} features drifted"
    return (
        f"{summary['window_kind']} window {start}..{end}: {drifted}, {verdict}; Evidently UI: make monitor-ui"
    )


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "monitor", describe)
