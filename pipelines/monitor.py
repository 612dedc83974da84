"""Monitoring: drift of the model inputs and scores, live quality from late labels, the retrain decision.

Inputs of `run(params, start, end)` (the monitored window is [start, end), as-of = end, midnight UTC):
- reference: the current champion's training data: data/dataset/train.parquet restricted to the
  champion's `train_start`/`train_end` registry tags (the whole file when there is no champion yet);
  when the file holds another range (a newer dataset), the window is rebuilt from validated events +
  data/features the same way as the current side (below). Scored by the champion release when one exists.
- current: the prediction log (data/prediction_log/, rows served in [start, end)) when serving wrote
  any; otherwise (a laptop `dvc repro`, no serving traffic) the batch predictions of the range
  (data/predictions) joined to their validated events, with each event's features taken as the entity's
  state after its previous event (data/features, as-of join), which is what Feast serves online.
- labels: the validated events' `label`, counted only once arrived: event_timestamp + label delay <= as-of.

Outputs under reports/monitoring/: <date>/report.html (Evidently), <date>/summary.json, metrics.prom
(Prometheus textfile, node-exporter style), index.html (dashboard over every <date>/summary.json) and
state.json (last retrain, for the cooldown). <date> is the window's last day.

The pure cores (drift_summary, quality_checks, join_labels, live_metrics, decide_retrain) take frames
and typed params; Evidently is imported only inside `drift_report`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import io
from pipelines.config import MonitorParams, Params
from pipelines.errors import StageError
from pipelines.model.request_features import CATEGORICAL_FEATURES

log = logging.getLogger(__name__)

SCORE = "score"
P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "fisher_exact", "mannw", "t_test"}
)
STATE_FILE = "state.json"
PROM_FILE = "metrics.prom"
DASHBOARD_FILE = "index.html"


# ---- drift (Evidently) ---------------------------------------------------------------------------------


def choose_methods(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str] = CATEGORICAL_FEATURES,
) -> tuple[dict[str, str], dict[str, float]]:
    """Per column drift method and threshold: tests on small samples, distances on large (from params)."""
    large = min(len(reference), len(current)) >= cfg.large_sample_rows
    methods: dict[str, str] = {}
    for col in reference.columns:
        if col in categorical:
            methods[col] = cfg.cat_method_large if large else cfg.cat_method_small
        else:
            methods[col] = cfg.num_method_large if large else cfg.num_method_small
    missing = sorted({m for m in methods.values() if m not in cfg.thresholds})
    if missing:
        raise StageError(f"monitor.thresholds has no threshold for drift method(s) {missing}")
    return methods, {c: float(cfg.thresholds[m]) for c, m in methods.items()}


def sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most max_rows rows, a seeded sample (same input, same rows) keeping the original order."""
    if len(frame) <= max_rows:
        return frame
    idx = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[idx]


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str] = CATEGORICAL_FEATURES,
) -> tuple[Any, dict]:
    """Run Evidently's DataDriftPreset on the shared columns; returns (snapshot, per-column results).

    `categorical` names the categorical columns (default: the model's); every other column is numeric.
    Per-column results: {column: {method, threshold, score, drifted}}; `drifted` is Evidently's own test
    verdict (p-value below / distance at or above the threshold, by method).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = [c for c in reference.columns if c in current.columns]
    if not cols:
        raise StageError("monitor: reference and current share no feature column")
    ref, cur = reference[cols], current[cols]
    # a column Evidently cannot test (all-missing on one side) is reported as such, not as a crash
    usable = [c for c in cols if ref[c].notna().any() and cur[c].notna().any()]
    methods, thresholds = choose_methods(ref[usable], cur[usable], cfg, categorical)
    cat = [c for c in usable if c in categorical]
    num = [c for c in usable if c not in categorical]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    ref_u, cur_u = ref[usable].copy(), cur[usable].copy()
    for c in cat:  # Evidently wants one dtype per categorical column; missing -> its own category
        ref_u[c] = ref_u[c].astype(object).where(ref_u[c].notna(), "__missing__").astype(str)
        cur_u[c] = cur_u[c].astype(object).where(cur_u[c].notna(), "__missing__").astype(str)
    preset = DataDriftPreset(
        columns=usable,
        per_column_method=methods,
        per_column_threshold=thresholds,
        drift_share=cfg.drift_share,
        include_tests=True,
    )
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(cur_u.reset_index(drop=True), data_definition=definition),
        reference_data=Dataset.from_pandas(ref_u.reset_index(drop=True), data_definition=definition),
    )
    return snapshot, _per_column(snapshot.dict(), methods, thresholds, cols)


def _per_column(
    d: dict[str, Any], methods: dict[str, str], thresholds: dict[str, float], cols: list[str]
) -> dict[str, dict[str, Any]]:
    scores: dict[str, float] = {}
    for m in d.get("metrics", []):
        cfg = m.get("config") or {}
        if cfg.get("type", "").endswith("ValueDrift") and cfg.get("column") in methods:
            scores[cfg["column"]] = float(m["value"])
    verdict: dict[str, bool] = {}
    for t in d.get("tests", []):
        params = (t.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in methods:
            verdict[params["column"]] = t.get("status") == "FAIL"
    out: dict[str, dict[str, Any]] = {}
    for c in cols:
        if c not in methods:
            out[c] = {"method": None, "threshold": None, "score": None, "drifted": None}
            continue
        score = scores.get(c)
        drifted = verdict.get(c)
        if drifted is None and score is not None:  # no test in the snapshot: apply the rule ourselves
            p_value = methods[c] in P_VALUE_METHODS
            drifted = score < thresholds[c] if p_value else score >= thresholds[c]
        out[c] = {"method": methods[c], "threshold": thresholds[c], "score": score, "drifted": bool(drifted)}
    return out


def drift_summary(columns: dict[str, dict[str, Any]], cfg: MonitorParams) -> dict[str, Any]:
    """Dataset-level verdict from per-column results; the score column counts as prediction drift only."""
    feats = {c: r for c, r in columns.items() if c != SCORE and r["drifted"] is not None}
    n_drifted = sum(bool(r["drifted"]) for r in feats.values())
    share = n_drifted / len(feats) if feats else 0.0
    pred = columns.get(SCORE)
    return {
        "features": {c: r for c, r in columns.items() if c != SCORE},
        "n_features": len(feats),
        "n_drifted": n_drifted,
        "drift_share": share,
        "dataset_drift": bool(feats) and share >= cfg.drift_share,
        "drifted_features": sorted(c for c, r in feats.items() if r["drifted"]),
        "prediction": pred,
        "prediction_drift": bool(pred and pred["drifted"]),
    }


def quality_checks(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str] = CATEGORICAL_FEATURES,
) -> dict[str, Any]:
    """Missing-value share increase, share of numeric values outside the reference's [min, max] and
    share of categorical values the reference never had."""
    out: dict[str, Any] = {}
    for c in reference.columns:
        if c not in current.columns:
            out[c] = {"missing_in_current": True, "alert": True}
            continue
        ref_missing = float(reference[c].isna().mean()) if len(reference) else 0.0
        cur_missing = float(current[c].isna().mean()) if len(current) else 0.0
        row: dict[str, Any] = {"missing_reference": ref_missing, "missing_current": cur_missing}
        alert = cur_missing - ref_missing > cfg.max_missing_increase
        if c not in categorical and c != SCORE:
            r = pd.to_numeric(reference[c], errors="coerce").dropna()
            v = pd.to_numeric(current[c], errors="coerce").dropna()
            if len(r) and len(v):
                lo, hi = float(r.min()), float(r.max())
                oor = float(((v < lo) | (v > hi)).mean())
                row.update(reference_min=lo, reference_max=hi, out_of_range_share=oor)
                alert = alert or oor > cfg.max_out_of_range_share
        else:
            ref_vals = set(reference[c].dropna().unique().tolist())
            new = current[c].dropna()
            new_share = float((~new.isin(ref_vals)).mean()) if len(new) else 0.0
            row["unseen_value_share"] = new_share
            alert = alert or new_share > cfg.max_out_of_range_share
        row["alert"] = bool(alert)
        out[c] = row
    return out


# ---- late labels and live metrics ---------------------------------------------------------------------


def arrived_labels(events: pd.DataFrame, as_of: dt.datetime, delay_hours: float) -> pd.DataFrame:
    """Labels known at `as_of`: those of events with event_timestamp + delay <= as_of (event_id, label)."""
    if events.empty:
        return pd.DataFrame({"event_id": pd.Series(dtype=str), "label": pd.Series(dtype="int64")})
    ts = pd.to_datetime(events["event_timestamp"], utc=True)
    ok = ts + pd.Timedelta(hours=delay_hours) <= pd.Timestamp(as_of)
    out = events.loc[ok.to_numpy(), ["event_id", "label"]].dropna(subset=["label"])
    return out.drop_duplicates("event_id", keep="last").astype({"event_id": str, "label": "int64"})


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions with an arrived label, joined by event_id (the last prediction of an event counts once
    per model version and arm: a retried request is not two observations)."""
    if predictions.empty or labels.empty:
        return predictions.iloc[0:0].assign(label=pd.Series(dtype="int64"))
    # a label already on the frame (batch predictions joined to their events) is not "arrived" yet
    p = predictions.drop(columns=["label"], errors="ignore").astype({"event_id": str})
    if {"model_version", "arm"} <= set(p.columns):
        p = p.drop_duplicates(["event_id", "model_version", "arm"], keep="last")
    return p.merge(labels, on="event_id", how="inner", validate="many_to_one")


def calibration(y: np.ndarray, s: np.ndarray, bins: int) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width score bins, and the bins (for the dashboard)."""
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


def live_metrics(joined: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """Live quality overall and per (model_version, arm) on predictions joined with arrived labels."""

    def one(f: pd.DataFrame) -> dict[str, Any]:
        return quality(
            f["label"].to_numpy(dtype=np.int64),
            f[SCORE].to_numpy(dtype=np.float64),
            f["decision"].to_numpy(dtype=np.int64),
            bins,
        )

    out: dict[str, Any] = {"overall": one(joined) if len(joined) else None, "by_version_arm": []}
    if len(joined):
        for (version, arm), f in joined.groupby(["model_version", "arm"], sort=True, dropna=False):
            out["by_version_arm"].append({"model_version": str(version), "arm": str(arm), **one(f)})
    return out


def traffic(predictions: pd.DataFrame) -> list[dict[str, Any]]:
    """Prediction counts per (model_version, arm) in the window."""
    if predictions.empty:
        return []
    g = predictions.groupby(["model_version", "arm"], sort=True, dropna=False).size()
    total = int(g.sum())
    return [
        {"model_version": str(v), "arm": str(a), "n": int(n), "share": int(n) / total}
        for (v, a), n in g.items()
    ]


# ---- retrain decision ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    retrain: bool
    triggered: bool  # thresholds crossed (retrain unless in cooldown)
    reasons: list[str]
    suppressed_by_cooldown: bool
    last_retrain: str | None
    window_start: str | None
    window_end: str | None


def decide_retrain(
    drift: dict[str, Any],
    live: dict[str, Any],
    as_of: dt.date,
    last_retrain: dt.date | None,
    cfg: MonitorParams,
) -> Decision:
    """Retrain when dataset drift, prediction drift (if enabled) or live quality below the gates, unless a
    retrain was decided less than cooldown_days before `as_of` (data time: reruns and backfills agree)."""
    reasons: list[str] = []
    if drift.get("dataset_drift"):
        reasons.append(
            f"dataset drift: {drift['n_drifted']}/{drift['n_features']} features drifted "
            f"(share {drift['drift_share']:.2f} >= {cfg.drift_share})"
        )
    if cfg.retrain_on_prediction_drift and drift.get("prediction_drift"):
        reasons.append("prediction (score) drift")
    overall = live.get("overall")
    if overall and overall["n"] >= cfg.min_labels and overall["positives"] >= cfg.min_positives:
        if overall["pr_auc"] is not None and overall["pr_auc"] < cfg.pr_auc_min:
            reasons.append(f"live pr_auc {overall['pr_auc']:.3f} < {cfg.pr_auc_min}")
        if overall["recall"] is not None and overall["recall"] < cfg.recall_min:
            reasons.append(f"live recall {overall['recall']:.3f} < {cfg.recall_min}")
    triggered = bool(reasons)
    cooling = (
        last_retrain is not None and abs((as_of - last_retrain).total_seconds()) < cfg.cooldown_days * 86400
    )
    retrain = triggered and not cooling
    start = as_of - dt.timedelta(days=cfg.retrain_window_days)
    return Decision(
        retrain=retrain,
        triggered=triggered,
        reasons=reasons,
        suppressed_by_cooldown=triggered and cooling,
        last_retrain=last_retrain.isoformat() if last_retrain else None,
        window_start=start.isoformat() if retrain else None,
        window_end=as_of.isoformat() if retrain else None,
    )


def _as_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value[:10])


# ---- inputs --------------------------------------------------------------------------------------------


def features_asof(events: pd.DataFrame, features: pd.DataFrame, history_days: int) -> pd.DataFrame:
    """Events + the entity's feature state after its previous event (strictly before it, within the
    history TTL): the point-in-time view Feast gives training and the online store gives serving."""
    if events.empty:
        return events
    ev = events.copy()
    ev["event_timestamp"] = pd.to_datetime(ev["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    ev["_order"] = np.arange(len(ev))
    if features.empty:
        return ev.drop(columns="_order")
    ft = features.copy()
    ft["event_timestamp"] = pd.to_datetime(ft["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    ft = ft.rename(columns={"event_timestamp": "_feature_ts"}).sort_values("_feature_ts")
    ev = ev.sort_values("event_timestamp")
    merged = pd.merge_asof(
        ev,
        ft,
        left_on="event_timestamp",
        right_on="_feature_ts",
        by="entity_id",
        allow_exact_matches=False,
        tolerance=pd.Timedelta(days=history_days),
    )
    return merged.sort_values("_order").drop(columns=["_order", "_feature_ts"]).reset_index(drop=True)


def read_prediction_log(directory: Path, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Logged predictions served in [start, end) (pipelines.serving_log's reader; empty when none)."""
    if not directory.is_dir():
        return pd.DataFrame()
    from pipelines.serving_log import read_prediction_log as read

    frame = read(directory, start, end)
    if frame.empty:
        return frame
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True, format="ISO8601")
    if "event_id" not in frame.columns or frame["event_id"].isna().all():
        frame["event_id"] = frame.get("prediction_id")
    return frame


def current_frame(params: Params, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, str]:
    """Predictions of [start, end) with their event and feature columns, and where they came from."""
    p = params.paths
    logged = read_prediction_log(p.prediction_log, start, end)
    if not logged.empty:
        return logged, "prediction_log"
    preds = io.read_partitions(p.predictions, start, end)
    if preds.empty:
        return preds, "none"
    events = io.read_partitions(p.validated, start, end)
    if events.empty:
        raise StageError(f"monitor: batch predictions for [{start}, {end}) but no validated events there")
    keep = [c for c in preds.columns if c not in events.columns or c == "event_id"]
    frame = events.merge(preds[keep], on="event_id", how="inner")
    hist = params.features.history_days
    feats = io.read_partitions(p.features, start - dt.timedelta(days=hist), end)
    frame = features_asof(frame, feats, hist)
    frame["arm"] = "batch"
    return frame, "batch_predictions"


def champion_info(params: Params) -> dict[str, Any] | None:
    """{version, train_start, train_end, feature_list, threshold} of the champion, or None (no registry)."""
    uri = params.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    try:
        from pipelines.contract import CHAMPION
        from pipelines.engines.registry import open_registry

        reg = open_registry(params)
        name = params.register_.model_name
        if not reg.model_exists(name):
            return None
        version = reg.alias_version(name, CHAMPION)
        if version is None:
            return None
        tags = reg.release_tags(name, version)
    except Exception as err:  # a registry that cannot answer: monitor without it, say so in the summary
        log.warning("monitor: no champion info from the registry: %s", err)
        return None
    return {
        "model_name": name,
        "version": str(version),
        "train_start": tags.train_start,
        "train_end": tags.train_end,
        "feature_list": tags.feature_list,
        "threshold": tags.threshold,
    }


def reference_frame(params: Params, champion: dict[str, Any] | None) -> pd.DataFrame:
    """The champion's training data (see the module docstring for the fallbacks)."""
    path = params.paths.dataset / "train.parquet"
    frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    if champion is None:
        if frame.empty:
            raise StageError(f"monitor: no reference: {path} is missing and there is no champion")
        return frame
    s, e = _as_date(champion["train_start"]), _as_date(champion["train_end"])
    if not frame.empty:
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        lo = pd.Timestamp(dt.datetime(s.year, s.month, s.day, tzinfo=dt.UTC))
        hi = pd.Timestamp(dt.datetime(e.year, e.month, e.day, tzinfo=dt.UTC))
        inside = frame[((ts >= lo) & (ts < hi)).to_numpy()]
        if len(inside) and ts.min() >= lo:  # this file is the champion's dataset (or a part of it)
            return inside.reset_index(drop=True)
    events = io.read_partitions(params.paths.validated, s, e)
    if events.empty:
        raise StageError(
            f"monitor: no reference: the champion trained on [{s}, {e}) but {path} holds another range "
            f"and data/validated has no partition there"
        )
    hist = params.features.history_days
    feats = io.read_partitions(params.paths.features, s - dt.timedelta(days=hist), e)
    return features_asof(events, feats, hist)


def model_inputs(frame: pd.DataFrame, feature_list: list[str] | None) -> pd.DataFrame:
    """The model input columns (model.request_features), restricted to the release's list."""
    from pipelines.model.request_features import request_features

    feats = request_features(frame)
    if feature_list:
        feats = feats[[c for c in feature_list if c in feats.columns]]
    return feats


# ---- run -----------------------------------------------------------------------------------------------


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def load_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Monitor [start, end): drift report, live metrics, retrain decision, Prometheus file, dashboard."""
    cfg = params.monitor
    out_root = params.paths.reports / "monitoring"
    day = end - dt.timedelta(days=1)
    as_of = dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)

    champion = champion_info(params)
    current, source = current_frame(params, start, end)
    if current.empty:
        raise StageError(
            f"monitor: nothing to monitor in [{start}, {end}): no prediction log rows under "
            f"{params.paths.prediction_log} and no batch predictions under {params.paths.predictions}"
        )
    reference = reference_frame(params, champion)
    feature_list = champion["feature_list"] if champion else None
    ref_x = sample(model_inputs(reference, feature_list), cfg.max_rows, cfg.seed)
    cur_x = sample(model_inputs(current, feature_list), cfg.max_rows, cfg.seed)
    ref_x = ref_x.drop(columns=[c for c in cfg.exclude_features if c in ref_x.columns])
    cur_x = cur_x.drop(columns=[c for c in cfg.exclude_features if c in cur_x.columns])
    cur_x[SCORE] = current.loc[cur_x.index, SCORE].astype(float).to_numpy()
    ref_scored = False
    if champion is not None:
        try:  # prediction drift needs the champion's scores on its own training data
            from pipelines.engines.registry import use_tracking_uri, version_uri
            from pipelines.model.packaging import load_release

            # registry URIs resolve against the global URI (as batch_predict does)
            use_tracking_uri(params.tracking_uri)
            release = load_release(version_uri(champion["model_name"], champion["version"]))
            ref_x[SCORE] = release.score(reference.loc[ref_x.index])
            ref_scored = True
        except Exception as err:
            log.warning("monitor: reference not scored (no prediction drift): %s", err)
    if not ref_scored:
        cur_x = cur_x.drop(columns=SCORE)

    snapshot, columns = drift_report(ref_x, cur_x, cfg)
    drift = drift_summary(columns, cfg)
    checks = quality_checks(ref_x, cur_x, cfg)

    # live metrics: predictions of the trailing metrics window, labels arrived by as_of
    m_start = min(start, end - dt.timedelta(days=cfg.metrics_window_days))
    preds, _ = current_frame(params, m_start, end) if m_start < start else (current, source)
    delay = cfg.label_delay_hours
    if delay is None:
        delay = params.ingest.synthetic.label_delay_hours
    events = io.read_partitions(
        params.paths.validated, m_start, end, columns=["event_id", "event_timestamp", "label"]
    )
    joined = join_labels(preds, arrived_labels(events, as_of, delay))
    live = live_metrics(joined, cfg.calibration_bins)

    state = load_state(out_root)
    last = _as_date(state["last_retrain"]) if state.get("last_retrain") else None
    decision = decide_retrain(drift, live, end, last, cfg)

    summary = _json_safe(
        {
            "date": day.isoformat(),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "current_source": source,
            "rows": {"reference": len(reference), "current": len(current), "labelled": len(joined)},
            "champion": champion,
            "drift": drift,
            "drift_share_threshold": cfg.drift_share,
            "quality_checks": checks,
            "quality_alerts": sorted(c for c, r in checks.items() if r.get("alert")),
            "label_delay_hours": delay,
            "metrics_window": [m_start.isoformat(), end.isoformat()],
            "live": live,
            "traffic": traffic(current),
            "decision": decision.__dict__,
        }
    )
    day_dir = out_root / day.isoformat()
    with io.atomic_dir(day_dir) as tmp:
        snapshot.save_html(str(tmp / "report.html"))
        io.atomic_write_json(tmp / "summary.json", summary)
    if decision.retrain:
        io.atomic_write_json(
            out_root / STATE_FILE,
            {"last_retrain": end.isoformat(), "window": [decision.window_start, decision.window_end]},
        )

    from pipelines.monitor_dashboard import render_dashboard, write_prometheus

    write_prometheus(out_root / PROM_FILE, summary)
    history = load_history(out_root)
    io.atomic_write_text(out_root / DASHBOARD_FILE, render_dashboard(history))
    return {
        "date": day.isoformat(),
        "current_source": source,
        "rows": summary["rows"],
        "n_drifted": drift["n_drifted"],
        "drift_share": drift["drift_share"],
        "dataset_drift": drift["dataset_drift"],
        "prediction_drift": drift["prediction_drift"],
        "retrain": decision.retrain,
        "reasons": decision.reasons,
        "suppressed_by_cooldown": decision.suppressed_by_cooldown,
        "retrain_window": [decision.window_start, decision.window_end] if decision.retrain else None,
        "report": str(day_dir / "report.html"),
        "summary": str(day_dir / "summary.json"),
        "dashboard": str(out_root / DASHBOARD_FILE),
    }


def retrain_extra(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The retrain asset event's extra from a run() summary (training window + why), None = no retrain."""
    if not summary.get("retrain") or not summary.get("retrain_window"):
        return None
    start, end = summary["retrain_window"]
    return {
        "start": start,
        "end": end,
        "reasons": list(summary.get("reasons") or []),
        "monitored": summary["date"],
    }


def load_history(directory: Path) -> list[dict[str, Any]]:
    """Every reports/monitoring/<date>/summary.json, oldest first (what the dashboard plots)."""
    out = []
    for f in sorted(directory.glob("*/summary.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "monitor")
