"""What one monitor run reports.

Layout under reports/monitoring/: <date>/report.html (the day's Evidently run as HTML), <date>/summary.json
(`day_summary`), metrics.prom (Prometheus textfile) and state.json (pipelines.monitoring.decision); the
same run goes to the Evidently workspace (pipelines.monitoring.workspace). <date> is the window's last day.
`run_result` is what the stage returns (and what the monitoring DAG hands to `decision.retrain_extra`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.monitoring.decision import Decision

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
PROM_FILE = "metrics.prom"


def json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


@dataclass(frozen=True)
class Window:
    """The monitored window [start, end), what kind (test / data / given) and why, and the live-metrics
    window [metrics_start, end)."""

    start: dt.date
    end: dt.date
    metrics_start: dt.date
    kind: str = "given"
    reason: str = ""

    @property
    def day(self) -> dt.date:
        """The window's last day: names the run's directory."""
        return self.end - dt.timedelta(days=1)


def day_summary(
    window: Window,
    *,
    source: str,
    rows: dict[str, int],
    champion: dict[str, Any] | None,
    drift: dict[str, Any],
    drift_share_threshold: float,
    checks: dict[str, Any],
    label_delay_hours: float,
    labels: dict[str, Any],
    live: dict[str, Any],
    traffic: list[dict[str, Any]],
    service: list[dict[str, Any]],
    decision: Decision,
) -> dict[str, Any]:
    """The run's summary.json (strict JSON): window, inputs, drift, quality checks, live metrics, traffic
    and serving health, decision."""
    return json_safe(
        {
            "date": window.day.isoformat(),
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "window": {"kind": window.kind, "reason": window.reason},
            "current_source": source,
            "rows": rows,
            "champion": champion,
            "drift": drift,
            "drift_share_threshold": drift_share_threshold,
            "quality_checks": checks,
            "quality_alerts": sorted(c for c, r in checks.items() if r.get("alert")),
            "label_delay_hours": label_delay_hours,
            # where the live metrics' labels came from: landing_store (posted over HTTP) or events
            "labels_source": labels["source"],
            "labelled_by_source": labels["labelled"],
            "metrics_window": [window.metrics_start.isoformat(), window.end.isoformat()],
            "live": live,
            "traffic": traffic,
            "service": service,
            "decision": decision.__dict__,
        }
    )


def run_result(
    summary: dict[str, Any], decision: Decision, out_root: Path, workspace: dict[str, Any]
) -> dict[str, Any]:
    """The stage's return value: the verdicts of `summary` and where its files and Evidently runs are."""
    drift = summary["drift"]
    day_dir = out_root / summary["date"]
    return {
        "date": summary["date"],
        "window": [summary["start"], summary["end"]],
        "window_kind": summary["window"]["kind"],
        "current_source": summary["current_source"],
        "labels_source": summary["labels_source"],
        "rows": summary["rows"],
        "n_drifted": drift["n_drifted"],
        "drift_share": drift["drift_share"],
        "dataset_drift": drift["dataset_drift"],
        "prediction_drift": drift["prediction_drift"],
        "retrain": decision.retrain,
        "reasons": decision.reasons,
        "suppressed_by_cooldown": decision.suppressed_by_cooldown,
        "retrain_window": [decision.window_start, decision.window_end] if decision.retrain else None,
        "report": str(day_dir / REPORT_FILE),
        "summary": str(day_dir / SUMMARY_FILE),
        "workspace": workspace["workspace"],
        "evidently_project": workspace["project_id"],
    }
