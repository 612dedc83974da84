"""Prometheus textfile gauges of the latest monitor run (node-exporter's textfile collector reads them).

A pure rendering of the run's summary (reports/monitoring/<date>/summary.json); prometheus_client is
imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _drift_gauges(reg: Any, drift: dict[str, Any]) -> None:
    """Per-feature drift scores and verdicts, the drift share and the dataset / prediction verdicts."""
    from prometheus_client import Gauge

    score = Gauge(
        "sluice_drift_score",
        "Drift score per feature (p-value or distance, see method)",
        ["feature", "method"],
        registry=reg,
    )
    drifted = Gauge("sluice_feature_drifted", "1 when the feature drifted", ["feature"], registry=reg)
    for feat, r in sorted(drift["features"].items()):
        if r.get("score") is not None:
            score.labels(feat, r["method"]).set(r["score"])
            drifted.labels(feat).set(1.0 if r["drifted"] else 0.0)
    Gauge("sluice_drift_share", "Share of drifted features", registry=reg).set(drift["drift_share"])
    Gauge("sluice_dataset_drift", "1 when dataset drift", registry=reg).set(float(drift["dataset_drift"]))
    pred = drift.get("prediction") or {}
    g = Gauge("sluice_prediction_drift_score", "Drift score of the model score", ["method"], registry=reg)
    if pred.get("score") is not None:
        g.labels(pred["method"]).set(pred["score"])
    Gauge("sluice_prediction_drift", "1 when the score drifted", registry=reg).set(
        float(drift["prediction_drift"])
    )


def _live_gauges(reg: Any, summary: dict[str, Any]) -> None:
    """Live metrics and arrived labels per model version and arm, predictions per version and arm."""
    from prometheus_client import Gauge

    live = Gauge(
        "sluice_live_metric",
        "Live quality on arrived labels",
        ["metric", "model_version", "arm"],
        registry=reg,
    )
    for row in summary["live"]["by_version_arm"]:
        for m in ("precision", "recall", "pr_auc", "ece", "brier"):
            if row.get(m) is not None:
                live.labels(m, row["model_version"], row["arm"]).set(row[m])
    lab = Gauge("sluice_live_labels", "Arrived labels joined", ["model_version", "arm"], registry=reg)
    for row in summary["live"]["by_version_arm"]:
        lab.labels(row["model_version"], row["arm"]).set(row["n"])
    tr = Gauge("sluice_predictions", "Predictions in the window", ["model_version", "arm"], registry=reg)
    for row in summary["traffic"]:
        tr.labels(row["model_version"], row["arm"]).set(row["n"])


def write_prometheus(path: Path, summary: dict[str, Any]) -> None:
    """Gauges of the latest run in text exposition format (node-exporter textfile collector style)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    _drift_gauges(reg, summary["drift"])
    _live_gauges(reg, summary)
    Gauge("sluice_retrain_decision", "1 when this run decided to retrain", registry=reg).set(
        float(summary["decision"]["retrain"])
    )
    Gauge("sluice_quality_alerts", "Features with a missing/range alert", registry=reg).set(
        len(summary["quality_alerts"])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)  # writes a temp file and renames it: scrapers never see half a file
