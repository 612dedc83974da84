"""The `monitor` stage: drift of the model inputs and scores, live quality from late labels, the retrain
decision, for the window [start, end) (as-of = end, midnight UTC).

Wiring only; the work is in pipelines.monitoring (see its docstring for each module):
- inputs: the current window (prediction log, else batch predictions + point-in-time features), the
  champion from the registry and its reference (its training window), scored by the champion release;
- drift: Evidently drift and data-quality checks on the model's request-time features (the champion
  release's own spec, else the one params train.request_features names; `_model_features`) and the score;
- live: metrics per model version and arm on the labels arrived by the as-of time
  (event_timestamp + label delay <= as-of), over the trailing `monitor.metrics_window_days`;
- decision: retrain or not, with the cooldown kept in reports/monitoring/state.json.

Outputs under reports/monitoring/: <date>/report.html (Evidently) and <date>/summary.json written
atomically together, metrics.prom (Prometheus textfile), index.html (dashboard over every
<date>/summary.json) and state.json (last retrain, for the cooldown). <date> is the window's last day.
Used by dvc.yaml (`python -m pipelines.monitor`) and the Airflow `monitoring` DAG.
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
from pipelines.monitoring.dashboard import render_dashboard, write_prometheus
from pipelines.monitoring.decision import (
    STATE_FILE,
    Decision,
    decide_retrain,
    last_retrain,
    load_state,
    state_record,
)
from pipelines.monitoring.drift import drift_report, drift_summary, quality_checks
from pipelines.monitoring.live import arrived_labels, join_labels, live_metrics, traffic
from pipelines.monitoring.report import (
    DASHBOARD_FILE,
    PROM_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    Window,
    day_summary,
    load_history,
    run_result,
)


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


def _write_outputs(
    out_root: Path, end: dt.date, summary: dict[str, Any], snapshot: Any, decision: Decision
) -> None:
    """The day's report + summary (one atomic directory), the cooldown state, gauges and dashboard."""
    with io.atomic_dir(out_root / summary["date"]) as tmp:
        snapshot.save_html(str(tmp / REPORT_FILE))
        io.atomic_write_json(tmp / SUMMARY_FILE, summary)
    if decision.retrain:
        io.atomic_write_json(out_root / STATE_FILE, state_record(end, decision))
    write_prometheus(out_root / PROM_FILE, summary)
    io.atomic_write_text(out_root / DASHBOARD_FILE, render_dashboard(load_history(out_root)))


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Monitor [start, end): drift report, live metrics, retrain decision, Prometheus file, dashboard."""
    cfg = params.monitor
    out_root = params.paths.reports / "monitoring"
    as_of = dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)

    champion = inputs.find_champion(params)
    current, source = inputs.current_frame(params, start, end)
    if current.empty:
        raise StageError(
            f"monitor: nothing to monitor in [{start}, {end}): no prediction log rows under "
            f"{params.paths.prediction_log} and no batch predictions under {params.paths.predictions}"
        )
    reference = inputs.reference_frame(params, champion)
    release = inputs.champion_release(params, champion)
    features, categorical = _model_features(params, release)
    ref_x, cur_x = _drift_frames(params, champion, release, features, reference, current)
    snapshot, columns = drift_report(ref_x, cur_x, cfg, categorical)
    drift = drift_summary(columns, cfg)

    labels = inputs.label_window(params, start, end, current)
    joined = join_labels(labels.predictions, arrived_labels(labels.events, as_of, labels.delay_hours))
    live = live_metrics(joined, cfg.calibration_bins)
    decision = decide_retrain(drift, live, end, last_retrain(load_state(out_root)), cfg)

    summary = day_summary(
        Window(start=start, end=end, metrics_start=labels.start),
        source=source,
        rows={"reference": len(reference), "current": len(current), "labelled": len(joined)},
        champion=champion.info() if champion else None,
        drift=drift,
        drift_share_threshold=cfg.drift_share,
        checks=quality_checks(ref_x, cur_x, cfg, categorical),
        label_delay_hours=labels.delay_hours,
        live=live,
        traffic=traffic(current),
        decision=decision,
    )
    _write_outputs(out_root, end, summary, snapshot, decision)
    return run_result(summary, decision, out_root)


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "monitor")
