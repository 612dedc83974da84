"""The monitoring project's dashboard in Evidently's UI: tabs of panels over pipelines.monitoring.runs.

Panels are built with Evidently's own panel factories (evidently.sdk.panels); each plots one point per run
(the day's run: tag `monitor`; a registered version's run: tag `training`). Legends use Evidently's
`{{param}}` templates over the metric's parameters: `{{column}}` of a drift metric, `{{classification_name}}`
("v<version> <arm>") of a classification metric, `{{model_version}}` / `{{arm}}` of a MonitorValue.
Panel and tab ids derive from their titles, so the same dashboard compares equal and is not rewritten.
No counter panels: the 0.7.23 UI shows a last value of 0 (no drift, no retrain) as "no value".
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pipelines.monitoring import SCORE
from pipelines.monitoring.runs import TAG_DAY, TAG_TRAINING

if TYPE_CHECKING:
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot, PanelMetric

_NS = uuid.UUID("5d7c3f0e-8a59-4c1e-9b8e-2f6d7f1a9c01")  # namespace of the dashboard's ids
PER_ARM = "v{{model_version}} {{arm}}"


def _metric(metric: str, legend: str | None = None, tag: str = TAG_DAY, **labels: str) -> PanelMetric:
    from evidently.sdk.models import PanelMetric

    return PanelMetric(legend=legend, tags=[tag], metric=metric, metric_labels=labels)


def _fact(fact: str, legend: str | None = PER_ARM, tag: str = TAG_DAY) -> PanelMetric:
    return _metric("MonitorValue", legend, tag, fact=fact)


def _drift_tab() -> list[DashboardPanelPlot]:
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    return [
        line_plot_panel(
            "Dataset drift: share of drifted features",
            [
                _metric("DriftedColumnsCount", "drifted share", value_type="share"),
                _fact("drift_share_threshold", "dataset-drift threshold"),
            ],
            "Model inputs, the score excluded; dataset drift at or above the threshold. A new line when the "
            "drift methods change (tests below monitor.large_sample_rows, distances above).",
            size="half",
        ),
        line_plot_panel(
            "Score (prediction) drift",
            [_metric("ValueDrift", "score: {{method}}", column=SCORE)],
            "Served scores vs the champion's scores on its own training data.",
            size="half",
        ),
        line_plot_panel(
            "Drift score per feature",
            [_metric("ValueDrift", "{{column}} ({{method}})")],
            "p-value of a statistical test (drift below its threshold) or a distance (drift at or above).",
        ),
        line_plot_panel(
            "Missing values per feature",
            [_metric("MissingValueCount", "{{column}}", value_type="share")],
            "Share of the window's sampled rows.",
            size="half",
        ),
        bar_plot_panel(
            "Data-quality alerts",
            [_fact("quality_alerts", "features with a missing-value / range alert")],
            "Missing share up, numeric values outside the reference's range, unseen categories.",
            size="half",
        ),
    ]


def _live_tab() -> list[DashboardPanelPlot]:
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    def per_arm(title: str, metric: str, gate: str | None, what: str) -> DashboardPanelPlot:
        values = [_metric(metric, "{{classification_name}}")]
        values += [_fact(gate, "gate")] if gate else []
        return line_plot_panel(title, values, what, size="half")

    labelled = "Predictions of the metrics window whose label arrived by the window end."
    return [
        per_arm(
            "Live PR AUC per version and arm", "LivePrAuc", "pr_auc_min", "Average precision. " + labelled
        ),
        per_arm(
            "Live recall per version and arm", "Recall", "recall_min", "Of the served decisions. " + labelled
        ),
        per_arm(
            "Live precision per version and arm", "Precision", None, "Of the served decisions. " + labelled
        ),
        per_arm("Live ROC AUC per version and arm", "RocAuc", None, labelled),
        bar_plot_panel(
            "Arrived labels per version and arm",
            [_fact("labelled", PER_ARM + " labels"), _fact("positives", PER_ARM + " positives")],
            labelled,
        ),
    ]


def _traffic_tab() -> list[DashboardPanelPlot]:
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    log_only = "From the prediction log (served traffic); batch predictions have no serving figures."
    return [
        bar_plot_panel(
            "Predictions per version and arm", [_fact("predictions")], "Rows of the window.", "half", True
        ),
        line_plot_panel(
            "Traffic share per arm", [_fact("traffic_share")], "Share of the window's predictions.", "half"
        ),
        line_plot_panel(
            "Latency per arm (ms)",
            [_fact("latency_p50_ms", "p50 " + PER_ARM), _fact("latency_p99_ms", "p99 " + PER_ARM)],
            log_only,
            "half",
        ),
        line_plot_panel(
            "Errors and fallbacks per arm (share of requests)",
            [
                _fact("challenger_fallback_share", "challenger fallback " + PER_ARM),
                _fact("feature_fallback_share", "feature fallback " + PER_ARM),
                _fact("cached_share", "cache hit " + PER_ARM),
            ],
            "Challenger fallback: routed to the challenger, which failed or was too slow, so the champion "
            "answered (the challenger's errors). Feature fallback: no online features (new entity, last "
            "known, defaults). " + log_only,
            "half",
        ),
    ]


def _decision_tab() -> list[DashboardPanelPlot]:
    from evidently.sdk.panels import bar_plot_panel

    return [
        bar_plot_panel(
            "Retrain decision per run",
            [
                _fact("retrain", "retrain (asset event emitted)"),
                _fact("retrain_triggered", "thresholds crossed"),
                _fact("suppressed_by_cooldown", "held back by the cooldown"),
            ],
            "1 = yes. The reasons are in the run's metadata; hover a bar for its tags.",
        ),
        bar_plot_panel(
            "Drift verdicts",
            [_fact("dataset_drift", "dataset drift"), _fact("prediction_drift", "score drift")],
            "1 = drifted.",
        ),
    ]


def _training_tab() -> list[DashboardPanelPlot]:
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    def offline(metric: str) -> PanelMetric:
        return _fact(f"offline_{metric}", metric, TAG_TRAINING)

    return [
        bar_plot_panel(
            "Offline test metrics per registered version",
            [offline(m) for m in ("pr_auc", "roc_auc", "recall_at_fpr", "precision_at_threshold")],
            "At registration, on its test split; hover a bar for the version, its aliases and gate verdict.",
        ),
        bar_plot_panel(
            "Champion gate verdict per version",
            [_fact("gate_pass", "passed (1) / failed (0)", TAG_TRAINING)],
            "The offline challenger-vs-champion gate; versions it never ran on have no bar.",
            size="half",
        ),
        line_plot_panel(
            "Decision threshold per version",
            [offline("threshold")],
            "Chosen on the validation split at evaluate.max_fpr.",
            size="half",
        ),
    ]


def _section(title: str, description: str) -> DashboardPanelPlot:
    """A header panel: Evidently's UI shows a dashboard's panels on one page, in order, not its tabs."""
    from evidently.sdk.panels import text_panel

    return text_panel(title, description)


SECTIONS = {
    "Drift and data quality": "The monitored window against the champion's training data (its reference).",
    "Live quality": "Late labels joined to what each model version and arm served.",
    "Traffic and serving": "Who served the window's predictions, how fast, with how many fallbacks.",
    "Retrain decisions": "What each run decided; a retrain emits sluice://retrain (a new challenger).",
    "Training history": "Every registered version: offline test metrics and the champion gate's verdict.",
}

TABS = {
    "Drift and data quality": _drift_tab,
    "Live quality": _live_tab,
    "Traffic and serving": _traffic_tab,
    "Retrain decisions": _decision_tab,
    "Training history": _training_tab,
}


def dashboard_model() -> DashboardModel:
    """The whole dashboard: every tab of TABS with its panels (stable ids)."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    tabs, panels = [], []
    for title, build in TABS.items():
        section = _section(title, SECTIONS[title]).copy(update={"id": uuid.uuid5(_NS, f"section/{title}")})
        tab_panels = [
            section,
            *(p.copy(update={"id": uuid.uuid5(_NS, f"{title}/{p.title}")}) for p in build()),
        ]
        tabs.append(
            DashboardTabModel(id=uuid.uuid5(_NS, title), title=title, panels=[p.id for p in tab_panels])
        )
        panels += tab_panels
    return DashboardModel(tabs=tabs, panels=panels)


def dashboard_equal(a: Any, b: Any) -> bool:
    """Whether two DashboardModels show the same thing (compared as JSON-like dicts)."""
    return bool(a.dict() == b.dict())
