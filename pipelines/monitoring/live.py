"""Live model quality from late labels: which labels have arrived, their join to the predictions, and
precision / recall / PR AUC / calibration overall and per (model_version, arm); traffic and serving health
per arm.

A label counts only once arrived. Labels posted to the ingestion service (the landing store; `posted`, read
as of the as-of time by pipelines.ingestion.labels) are the ground truth of their events from their
`labelled_at` on: the latest one by then counts, and an event whose labels all came later has none yet.
Every other event goes by its own label once event_timestamp + label delay <= as-of (the log's labels;
a landed event nobody labelled carries ingest.landing.unlabelled: no chargeback by then reads as
legitimate). Predictions and labels join by event id; a prediction frame has the `SCORE`, `DECISION`,
`MODEL_VERSION` and `ARM` columns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contract import EVENT_ID, LABEL, TIMESTAMP
from pipelines.monitoring import ARM, DECISION, MODEL_VERSION, SCORE

LANDING_STORE, EVENTS = "landing_store", "events"


def arrived_labels(
    events: pd.DataFrame, as_of: dt.datetime, delay_hours: float, posted: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Labels known at `as_of` (event_id, label): the `posted` ones already as of `as_of` (event_id, label
    with <NA> for an event labelled only later), then those of the other events with event_timestamp +
    delay <= as_of."""
    out = _empty_labels()
    if not events.empty:
        ts = pd.to_datetime(events[TIMESTAMP], utc=True)
        ok = ts + pd.Timedelta(hours=delay_hours) <= pd.Timestamp(as_of)
        out = events.loc[ok.to_numpy(), [EVENT_ID, LABEL]].dropna(subset=[LABEL])
        out = out.drop_duplicates(EVENT_ID, keep="last").astype({EVENT_ID: str, LABEL: "int64"})
    if posted is None or posted.empty:
        return out
    out = out[~out[EVENT_ID].isin(posted[EVENT_ID])]  # a posted label outranks the event's own
    known = posted.dropna(subset=[LABEL]).astype({EVENT_ID: str, LABEL: "int64"})
    return pd.concat([known[[EVENT_ID, LABEL]], out], ignore_index=True)


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame({EVENT_ID: pd.Series(dtype=str), LABEL: pd.Series(dtype="int64")})


def label_sources(joined: pd.DataFrame, posted: pd.DataFrame | None) -> dict[str, Any]:
    """Where the labels of the joined predictions came from: `source` is landing_store when the landing
    store holds labels for the window's predictions (they are the ground truth then), else events; with
    the count of labelled predictions from each."""
    from_store = 0 if posted is None else int(joined[EVENT_ID].astype(str).isin(posted[EVENT_ID]).sum())
    return {
        "source": LANDING_STORE if posted is not None and not posted.empty else EVENTS,
        "labelled": {LANDING_STORE: from_store, EVENTS: len(joined) - from_store},
    }


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions with an arrived label, joined by event_id (the last prediction of an event counts once
    per model version and arm: a retried request is not two observations)."""
    if predictions.empty or labels.empty:
        return predictions.iloc[0:0].assign(**{LABEL: pd.Series(dtype="int64")})
    # a label already on the frame (batch predictions joined to their events) is not "arrived" yet
    p = predictions.drop(columns=[LABEL], errors="ignore").astype({EVENT_ID: str})
    if {MODEL_VERSION, ARM} <= set(p.columns):
        p = p.drop_duplicates([EVENT_ID, MODEL_VERSION, ARM], keep="last")
    return p.merge(labels, on=EVENT_ID, how="inner", validate="many_to_one")


def calibration(y: np.ndarray, s: np.ndarray, bins: int) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width score bins, and the bins (kept in the summary)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(s, edges[1:-1]), 0, bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        mp, fp = float(s[m].mean()), float(y[m].mean())
        ece += m.mean() * abs(mp - fp)
        rows.append({"bin": b, "n": int(m.sum()), "mean_predicted": mp, "fraction_positive": fp})
    return float(ece), rows


def quality(y: np.ndarray, s: np.ndarray, d: np.ndarray, bins: int) -> dict[str, Any]:
    """Precision/recall of the served decisions, PR AUC (average precision) and calibration of scores."""
    from sklearn.metrics import average_precision_score, brier_score_loss

    tp = int(((d == 1) & (y == 1)).sum())
    fp = int(((d == 1) & (y == 0)).sum())
    fn = int(((d == 0) & (y == 1)).sum())
    both = 0 < y.sum() < len(y)
    ece, cal = calibration(y, s, bins)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "pr_auc": float(average_precision_score(y, s)) if both else None,
        "brier": float(brier_score_loss(y, s)) if len(y) else None,
        "ece": ece,
        "calibration": cal,
    }


def _frame_quality(joined: pd.DataFrame, bins: int) -> dict[str, Any]:
    return quality(
        joined[LABEL].to_numpy(dtype=np.int64),
        joined[SCORE].to_numpy(dtype=np.float64),
        joined[DECISION].to_numpy(dtype=np.int64),
        bins,
    )


def live_metrics(joined: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """Live quality overall and per (model_version, arm) on predictions joined with arrived labels."""
    out: dict[str, Any] = {
        "overall": _frame_quality(joined, bins) if len(joined) else None,
        "by_version_arm": [],
    }
    if len(joined):
        for (version, arm), f in joined.groupby([MODEL_VERSION, ARM], sort=True, dropna=False):
            out["by_version_arm"].append(
                {"model_version": str(version), "arm": str(arm), **_frame_quality(f, bins)}
            )
    return out


def traffic(predictions: pd.DataFrame) -> list[dict[str, Any]]:
    """Prediction counts per (model_version, arm) in the window."""
    if predictions.empty:
        return []
    g = predictions.groupby([MODEL_VERSION, ARM], sort=True, dropna=False).size()
    total = int(g.sum())
    return [
        {"model_version": str(v), "arm": str(a), "n": int(n), "share": int(n) / total}
        for (v, a), n in g.items()
    ]


def _share(part: pd.DataFrame, column: str, bad: Any) -> float | None:
    """Share of rows where `bad(column)` holds, None when the log has no such column."""
    if column not in part.columns:
        return None
    return float(bad(part[column]).mean())


def service_health(predictions: pd.DataFrame) -> list[dict[str, Any]]:
    """Serving figures per (model_version, arm) from the prediction log's columns: requests, latency p50 /
    p99 (ms), challenger fallbacks (the challenger failed or was too slow: its errors), feature fallbacks
    (no online features: new entity, last known, defaults) and cache hits. Batch predictions have none of
    these columns: only requests then."""
    if predictions.empty:
        return []
    out = []
    for (version, arm), part in predictions.groupby([MODEL_VERSION, ARM], sort=True, dropna=False):
        row: dict[str, Any] = {"model_version": str(version), "arm": str(arm), "requests": len(part)}
        if "latency_ms" in part.columns:
            lat = pd.to_numeric(part["latency_ms"], errors="coerce").dropna().to_numpy(float)
            row["latency_p50_ms"] = float(np.percentile(lat, 50)) if len(lat) else None
            row["latency_p99_ms"] = float(np.percentile(lat, 99)) if len(lat) else None
        row["challenger_fallback_share"] = _share(
            part, "challenger_fallback", lambda c: c.fillna(False).astype(bool)
        )
        row["feature_fallback_share"] = _share(
            part, "feature_source", lambda c: c.fillna("online") != "online"
        )
        row["cached_share"] = _share(part, "cached", lambda c: c.fillna(False).astype(bool))
        out.append({k: v for k, v in row.items() if v is not None})
    return out
