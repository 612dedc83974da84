"""The Evidently runs (snapshots) a monitor run adds to the workspace (pipelines.monitoring.workspace).

- The day's run, timestamped at the monitored window's end: the drift and data-quality report
  (drift.drift_report), Evidently's precision / recall / ROC AUC plus PR AUC (`LivePrAuc`) per
  (model_version, arm) on the predictions whose labels arrived, and `MonitorValue` facts: traffic and
  serving health per arm, the retrain decision, the gates' thresholds. Evidently runs one Report per
  dataset, so these are several Reports merged into one snapshot: every dashboard panel then has one point
  per day and its lines connect (snapshots sharing a timestamp would be separate x positions, each series
  blank at the others'). The merged snapshot is also the day's report.html.
- A training run per registered version, timestamped at its registration: its offline test metrics and
  the champion gate's verdict (the training history).

Per-version/arm metrics carry the version and arm in a parameter (`classification_name`,
`MonitorValue.model_version/arm`): panels label their lines with it. Evidently's GroupBy is not used: in
0.7.23 it gives every group of a classification metric the first group's value (the legacy metric is
cached per report). Evidently is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.contract import LABEL
from pipelines.monitoring import ARM, DECISION, MODEL_VERSION, SCORE

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

    from pipelines.monitoring.inputs import VersionRecord
    from pipelines.sections import MonitorParams

TAG_DAY = "monitor"  # every day's run; the dashboard's monitoring panels select it
TAG_TRAINING = "training"  # every registered version's run
OFFLINE_METRICS = ("pr_auc", "roc_auc", "recall_at_fpr", "precision_at_threshold", "threshold")
SERVICE_FIGURES = (
    "latency_p50_ms",
    "latency_p99_ms",
    "challenger_fallback_share",
    "feature_fallback_share",
    "cached_share",
)
Fact = tuple[str, str, str, Any]  # (fact, model_version, arm, value)


def classification_name(version: object, arm: object) -> str:
    """The name of one (model_version, arm)'s classification task: the dashboard's line label."""
    return f"v{version} {arm}"


def live_reports(joined: pd.DataFrame) -> list[tuple[tuple[str, str], Snapshot]]:
    """((model_version, arm), its Evidently classification report) of the labelled predictions; groups
    whose labels are all one class are left out (their scores are undefined, and Evidently misreports
    them rather than saying so)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import Precision, Recall, RocAuc

    from pipelines.monitoring.evidently_metrics import LivePrAuc

    if joined.empty:
        return []
    out = []
    for (version, arm), part in joined.groupby([MODEL_VERSION, ARM], sort=True, dropna=False):
        if part[LABEL].nunique() < 2:
            continue
        name = classification_name(version, arm)
        frame = pd.DataFrame(
            {
                LABEL: part[LABEL].astype(int).to_numpy(),
                DECISION: part[DECISION].astype(int).to_numpy(),
                SCORE: part[SCORE].astype(float).to_numpy(),
            }
        )
        task = BinaryClassification(
            name=name, target=LABEL, prediction_labels=DECISION, prediction_probas=SCORE, pos_label=1
        )
        definition = DataDefinition(
            classification=[task], numerical_columns=[SCORE], categorical_columns=[LABEL, DECISION]
        )
        metrics = [
            Precision(classification_name=name),  # with the confusion matrix, once per version and arm
            Recall(classification_name=name, conf_matrix=False),
            RocAuc(classification_name=name),
            LivePrAuc(classification_name=name),
        ]
        dataset = Dataset.from_pandas(frame, data_definition=definition)
        out.append(((str(version), str(arm)), Report(metrics).run(dataset, None)))
    return out


def facts_report(facts: Iterable[Fact], **run_kwargs: Any) -> Snapshot | None:
    """A report of MonitorValue facts (None when there is none); `run_kwargs` go to Report.run."""
    from evidently import Report

    from pipelines.monitoring.evidently_metrics import facts_frame, facts_metrics

    frame = facts_frame(facts)
    if frame.empty:
        return None
    dataset, metrics = facts_metrics(frame)
    return Report(list(metrics)).run(dataset, None, **run_kwargs)


def day_facts(summary: dict[str, Any], cfg: MonitorParams) -> list[Fact]:
    """The figures of a day's summary that Evidently does not compute itself."""
    facts: list[Fact] = []
    for t in summary["traffic"]:
        facts += [("predictions", t["model_version"], t["arm"], t["n"])]
        facts += [("traffic_share", t["model_version"], t["arm"], t["share"])]
    for r in summary["live"]["by_version_arm"]:
        facts += [("labelled", r["model_version"], r["arm"], r["n"])]
        facts += [("positives", r["model_version"], r["arm"], r["positives"])]
    for s in summary.get("service") or []:
        facts += [(k, s["model_version"], s["arm"], s.get(k)) for k in SERVICE_FIGURES]
    d, drift = summary["decision"], summary["drift"]
    facts += [
        ("retrain", "", "", d["retrain"]),
        ("retrain_triggered", "", "", d["triggered"]),
        ("suppressed_by_cooldown", "", "", d["suppressed_by_cooldown"]),
        ("dataset_drift", "", "", drift["dataset_drift"]),
        ("prediction_drift", "", "", drift["prediction_drift"]),
        ("quality_alerts", "", "", len(summary["quality_alerts"])),
        ("drift_share_threshold", "", "", summary["drift_share_threshold"]),
        ("pr_auc_min", "", "", cfg.pr_auc_min),
        ("recall_min", "", "", cfg.recall_min),
    ]
    return facts


Part = tuple[str, str, "Snapshot"]  # (section title, its markdown text, the report's snapshot)


def merge(parts: list[Part], *, name: str, timestamp: dt.datetime, tags: list[str], meta: dict) -> Snapshot:
    """One snapshot holding the metrics of `parts` and their widgets, each part under a text header (the
    classification widgets do not say which version and arm they are of); see the module docstring."""
    from evidently.core.report import Snapshot
    from evidently.core.serialization import ReportModel, SnapshotModel
    from evidently.legacy.renderers.html_widgets import text_widget

    models = [(title, text, p.to_snapshot_model()) for title, text, p in parts]
    results: dict[str, Any] = {}
    for _, _, m in models:
        clash = results.keys() & m.metric_results.keys()
        if clash:  # the same metric (same parameters) in two reports: one would hide the other
            raise ValueError(f"monitor: metric ids in two merged reports: {sorted(clash)}")
        results.update(m.metric_results)
    merged = SnapshotModel(
        report=ReportModel(items=[]),
        name=name,
        timestamp=timestamp,
        metadata=meta,
        tags=tags,
        metric_results=results,
        top_level_metrics=[i for _, _, m in models for i in m.top_level_metrics],
        widgets=[w for title, text, m in models for w in [text_widget(title=title, text=text), *m.widgets]],
        tests_widgets=[w for _, _, m in models for w in m.tests_widgets],
    )
    return Snapshot.load_model(merged)


def _day_labels(summary: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Tags (shown on hover in the UI's plots) and metadata of a day's run: the window and why."""
    d = summary["decision"]
    verdict = "retrain" if d["retrain"] else ("cooldown" if d["suppressed_by_cooldown"] else "no-retrain")
    champion = (summary.get("champion") or {}).get("version")
    window = summary["window"]
    tags = [TAG_DAY, f"window:{window['kind']}", f"source:{summary['current_source']}", verdict]
    tags += [f"champion:v{champion}"] if champion else []
    meta = {
        "date": summary["date"],
        "window": f"[{summary['start']}, {summary['end']})",
        "window_kind": window["kind"],
        "window_reason": window["reason"],
        "metrics_window": f"[{summary['metrics_window'][0]}, {summary['metrics_window'][1]})",
        "current_source": summary["current_source"],
        "decision": verdict,
        "reasons": "; ".join(d["reasons"]) or "none",
    }
    return tags, meta


def _parts(
    drift_snapshot: Snapshot, joined: pd.DataFrame, summary: dict[str, Any], cfg: MonitorParams
) -> list[Part]:
    """The day's reports with their section headers, in the order the report shows them."""
    window = summary["window"]
    m_start, m_end = summary["metrics_window"]
    parts: list[Part] = [
        (
            f"Monitored window [{summary['start']}, {summary['end']}): {window['kind']}",
            f"{window['reason']}. Current data: {summary['current_source']}. Drift and data quality of "
            "the model's inputs and score against the champion's training data.",
            drift_snapshot,
        )
    ]
    for (version, arm), snapshot in live_reports(joined):
        text = f"Predictions of [{m_start}, {m_end}) whose label arrived by {m_end}."
        parts.append((f"Live quality: {classification_name(version, arm)}", text, snapshot))
    facts = facts_report(day_facts(summary, cfg))
    if facts is not None:
        what = (
            "Traffic and serving health per version and arm, the retrain decision and the gates' thresholds."
        )
        parts.append(("Figures", what, facts))
    return parts


def day_run(
    drift_snapshot: Snapshot, joined: pd.DataFrame, summary: dict[str, Any], cfg: MonitorParams
) -> Snapshot:
    """The day's run: drift + quality report, live classification metrics per version/arm, facts."""
    end = dt.date.fromisoformat(summary["end"])
    tags, meta = _day_labels(summary)
    timestamp = dt.datetime(end.year, end.month, end.day)  # naive UTC, like Evidently's own timestamps
    parts = _parts(drift_snapshot, joined, summary, cfg)
    return merge(parts, name=f"monitor {summary['date']}", timestamp=timestamp, tags=tags, meta=meta)


def training_run(record: VersionRecord) -> Snapshot | None:
    """A registered version's run: its offline test metrics and gate verdict (None: nothing to show)."""
    facts: list[Fact] = [(f"offline_{k}", "", "", record.metrics.get(k)) for k in OFFLINE_METRICS]
    if record.gate_verdict is not None:
        facts.append(("gate_pass", "", "", record.gate_verdict == "pass"))
    tags = [TAG_TRAINING, f"v{record.version}", f"gate:{record.gate_verdict or 'none'}"]
    tags += [f"alias:{a}" for a in record.aliases]
    meta = {"model_version": record.version, "gate_verdict": record.gate_verdict or "none"}
    return facts_report(facts, timestamp=record.created, tags=tags, metadata=meta, name=f"v{record.version}")
