"""Monitoring outputs people look at: Prometheus textfile gauges and a static HTML dashboard.

Both are pure renderings of monitor summaries (reports/monitoring/<date>/summary.json). The dashboard is
one self-contained page (inline CSS and SVG, no scripts, no network): drift per feature over time (a
heatmap of drift scores, drifted cells marked), dataset drift share over time, live metrics per model
version and arm, traffic per arm, and the retrain decisions.
"""

from __future__ import annotations

import html
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


# ---- dashboard -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;
background:#f7f9fb}
h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:18px}.sub{color:#52606d;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border-radius:8px;padding:12px 16px;
box-shadow:0 1px 3px rgba(0,0,0,.1);min-width:150px}.card b{display:block;font-size:22px}
.bad{color:#c62828}.ok{color:#2e7d32}table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #e4e7eb;padding:4px 8px;text-align:right}th{background:#eef2f6}
td.f,th.f{text-align:left}td.d{outline:2px solid #c62828;outline-offset:-2px;font-weight:bold}
.bar{display:inline-block;height:12px;background:#3f7cac;vertical-align:middle}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return _e(v)


def _cell_color(r: dict[str, Any]) -> str:
    """Red for drifted, green otherwise; the strength follows how far the score is past the threshold."""
    if r.get("score") is None:
        return "#eeeeee"
    if r["drifted"]:
        return "#f4a6a6"
    return "#cfe8cf"


def _svg_line(points: list[tuple[str, float]], threshold: float, width: int = 640, height: int = 160) -> str:
    """A small line chart of (label, value in [0, 1]) with a dashed threshold line."""
    if not points:
        return "<p>no runs yet</p>"
    pad = 30
    n = len(points)
    xs = [pad + (width - 2 * pad) * (i / max(n - 1, 1)) for i in range(n)]
    ys = [height - pad - (height - 2 * pad) * min(max(v, 0.0), 1.0) for _, v in points]
    ty = height - pad - (height - 2 * pad) * threshold
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    )
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#3f7cac"><title>{_e(lbl)}: {v:.2f}</title></circle>'
        for x, y, (lbl, v) in zip(xs, ys, points, strict=True)
    )
    labels = "".join(
        f'<text x="{x:.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{_e(lbl[5:])}</text>'
        for x, (lbl, _) in zip(xs, points, strict=True)
        if n <= 14 or points.index((lbl, _)) % max(n // 14, 1) == 0
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="drift share over time">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>'
        f'<line x1="{pad}" x2="{width - pad}" y1="{ty:.1f}" y2="{ty:.1f}" '
        'stroke="#c62828" stroke-dasharray="4"/>'
        f'<path d="{path}" fill="none" stroke="#3f7cac" stroke-width="2"/>{dots}{labels}</svg>'
    )


def _cards(last: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(title, value, css class) of the latest run's headline cards."""
    d = last["decision"]
    drift = last["drift"]
    overall = last["live"].get("overall") or {}
    status = "bad" if d["retrain"] or d["triggered"] else "ok"
    return [
        ("latest window", f"{last['start']} → {last['end']}", ""),
        (
            "drifted features",
            f"{drift['n_drifted']}/{drift['n_features']}",
            "bad" if drift["dataset_drift"] else "ok",
        ),
        (
            "prediction drift",
            "yes" if drift["prediction_drift"] else "no",
            "bad" if drift["prediction_drift"] else "ok",
        ),
        ("live PR AUC", _fmt(overall.get("pr_auc")), ""),
        ("live recall", _fmt(overall.get("recall")), ""),
        ("retrain", "yes" if d["retrain"] else ("cooldown" if d["suppressed_by_cooldown"] else "no"), status),
    ]


def _header(history: list[dict[str, Any]]) -> list[str]:
    """Title, run count and sources, the headline cards and why the latest run decided what it did."""
    last = history[-1]
    champion_version = (last.get("champion") or {}).get("version", "–")
    parts = [
        "<h1>sluice monitoring</h1>",
        f"<div class='sub'>{len(history)} run(s); latest {_e(last['date'])}, current data from "
        f"{_e(last['current_source'])}, champion {_e(champion_version)}</div>",
        "<div class='cards'>"
        + "".join(f"<div class='card'>{_e(k)}<b class='{c}'>{_e(v)}</b></div>" for k, v, c in _cards(last))
        + "</div>",
    ]
    reasons = last["decision"]["reasons"]
    if reasons:
        parts.append("<p><b>Why:</b> " + "; ".join(_e(r) for r in reasons) + "</p>")
    return parts


def _drift_cell(r: dict[str, Any], title: str | None = None) -> str:
    cls = " class='d'" if r.get("drifted") else ""
    tip = f" title='{_e(title)}'" if title is not None else ""
    return f"<td{cls} style='background:{_cell_color(r)}'{tip}>{_fmt(r.get('score'), 2)}</td>"


def _heatmap(history: list[dict[str, Any]]) -> list[str]:
    """Drift per feature over the last 30 runs (rows features, columns dates), the score last."""
    feats = sorted({f for h in history for f in h["drift"]["features"]})
    shown = history[-30:]
    head = "".join(f"<th>{_e(h['date'][5:])}</th>" for h in shown)
    rows = []
    for f in feats:
        cells = []
        for h in shown:
            r = h["drift"]["features"].get(f) or {}
            cells.append(_drift_cell(r, f"{r.get('method')} threshold {r.get('threshold')}"))
        rows.append(f"<tr><td class='f'>{_e(f)}</td>{''.join(cells)}</tr>")
    pred_cells = [_drift_cell(h["drift"].get("prediction") or {}) for h in shown]
    rows.append(f"<tr><td class='f'><i>score (prediction)</i></td>{''.join(pred_cells)}</tr>")
    return [
        "<h2>Drift per feature over time</h2><p class='sub'>score (p-value for tests, distance "
        "for distances); red = drifted.</p>",
        f"<table><tr><th class='f'>feature</th>{head}</tr>{''.join(rows)}</table>",
    ]


def _live_table(history: list[dict[str, Any]]) -> list[str]:
    """Live metrics per model version and arm of the last 30 runs, newest first."""
    last = history[-1]
    parts = [
        f"<h2>Live metrics per model version and arm</h2><p class='sub'>predictions of "
        f"{_e(last['metrics_window'][0])} → {_e(last['metrics_window'][1])} joined with labels arrived "
        "by the "
        f"window end (delay {_e(last['label_delay_hours'])} h)</p>"
    ]
    cols = ["n", "positives", "precision", "recall", "pr_auc", "ece", "brier"]
    live_rows = []
    for h in history[-30:]:
        for r in h["live"]["by_version_arm"]:
            live_rows.append(
                f"<tr><td class='f'>{_e(h['date'])}</td><td class='f'>{_e(r['model_version'])}</td>"
                f"<td class='f'>{_e(r['arm'])}</td>"
                + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols)
                + "</tr>"
            )
    if not live_rows:
        return [*parts, "<p>No labels arrived yet for these predictions.</p>"]
    return [
        *parts,
        "<table><tr><th class='f'>run</th><th class='f'>version</th><th class='f'>arm</th>"
        + "".join(f"<th>{c}</th>" for c in cols)
        + "</tr>"
        + "".join(reversed(live_rows))
        + "</table>",
    ]


def _traffic(last: dict[str, Any]) -> list[str]:
    """Predictions per version and arm of the latest window."""
    parts = ["<h2>Traffic per arm (latest window)</h2>"]
    if last["traffic"]:
        parts.append(
            "<table><tr><th class='f'>version</th><th class='f'>arm</th><th>predictions</th>"
            "<th class='f'>share</th></tr>"
            + "".join(
                f"<tr><td class='f'>{_e(t['model_version'])}</td><td class='f'>{_e(t['arm'])}</td>"
                f"<td>{t['n']}</td><td class='f'><span class='bar' style='width:{200 * t['share']:.0f}px'>"
                f"</span> {100 * t['share']:.1f}%</td></tr>"
                for t in last["traffic"]
            )
            + "</table>"
        )
    return parts


def _quality(last: dict[str, Any]) -> list[str]:
    """The latest window's missing-value / range alerts."""
    alerts = last.get("quality_alerts") or []
    return [
        "<h2>Data quality (latest window)</h2>",
        "<p>"
        + ("alerts on: " + ", ".join(_e(a) for a in alerts) if alerts else "no missing-value/range alerts")
        + "</p>",
    ]


def _runs(history: list[dict[str, Any]]) -> list[str]:
    """Links to the last 30 runs' Evidently reports with their verdict, newest first."""
    parts = ["<h2>Runs</h2><ul>"]
    for h in reversed(history[-30:]):
        dd = h["decision"]
        verdict = "retrain" if dd["retrain"] else ("cooldown" if dd["suppressed_by_cooldown"] else "ok")
        parts.append(
            f"<li><a href='{_e(h['date'])}/report.html'>{_e(h['date'])}</a> "
            f"[{_e(h['start'])}, {_e(h['end'])}): "
            f"{_e(verdict)}</li>"
        )
    parts.append("</ul>")
    return parts


def render_dashboard(history: list[dict[str, Any]]) -> str:
    """The dashboard page for monitor summaries, oldest first."""
    if not history:
        body = "<h1>sluice monitoring</h1><p>No monitoring runs yet.</p>"
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>"
        )
    last = history[-1]
    share_pts = [(h["date"], float(h["drift"]["drift_share"])) for h in history]
    parts = [
        *_header(history),
        "<h2>Dataset drift share over time</h2>",
        _svg_line(share_pts, float(last.get("drift_share_threshold") or 0.3)),
        *_heatmap(history),
        *_live_table(history),
        *_traffic(last),
        *_quality(last),
        *_runs(history),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>sluice monitoring</title>"
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
