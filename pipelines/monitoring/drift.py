"""Drift between a reference and a current frame (Evidently), and missing-value / range checks.

Every function takes the categorical columns as an argument; every other column is numeric. The score
column (`SCORE`) is tested like a feature but reported apart, as prediction drift. Evidently is imported
only inside `drift_report`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.errors import StageError
from pipelines.monitoring import SCORE

if TYPE_CHECKING:
    from pipelines.sections import MonitorParams

P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "fisher_exact", "mannw", "t_test"}
)
MISSING_CATEGORY = "__missing__"


def choose_methods(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str],
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


def _categories(frame: pd.DataFrame, cat: list[str]) -> pd.DataFrame:
    """Evidently wants one dtype per categorical column: strings, missing -> its own category."""
    out = frame.copy()
    for c in cat:
        out[c] = out[c].astype(object).where(out[c].notna(), MISSING_CATEGORY).astype(str)
    return out


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str],
) -> tuple[Any, dict]:
    """Run Evidently's DataDriftPreset on the shared feature columns, a ValueDrift of the score column and
    the missing-value share of each column; returns (snapshot, per-column drift results).

    `categorical` names the categorical columns; every other column is numeric. The score is left out of
    the preset so that Evidently's share of drifted columns is the share of drifted features.
    Per-column results: {column: {method, threshold, score, drifted}}; `drifted` is Evidently's own test
    verdict (p-value below / distance at or above the threshold, by method).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, ValueDrift
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
    ref_u, cur_u = _categories(ref[usable], cat), _categories(cur[usable], cat)
    features = [c for c in usable if c != SCORE]
    preset = DataDriftPreset(
        columns=features,
        per_column_method={c: methods[c] for c in features},
        per_column_threshold={c: thresholds[c] for c in features},
        drift_share=cfg.drift_share,
        include_tests=True,
    )
    score = (
        [ValueDrift(column=SCORE, method=methods[SCORE], threshold=thresholds[SCORE])]
        if SCORE in usable
        else []
    )
    # data quality: our own checks give the verdicts (quality_checks), so no Evidently tests here
    missing = [MissingValueCount(column=c, tests=[], share_tests=[]) for c in usable]
    snapshot = Report([preset, *score, *missing], include_tests=True).run(
        current_data=Dataset.from_pandas(cur_u.reset_index(drop=True), data_definition=definition),
        reference_data=Dataset.from_pandas(ref_u.reset_index(drop=True), data_definition=definition),
    )
    return snapshot, _per_column(snapshot.dict(), methods, thresholds, cols)


def _drift_scores(d: dict[str, Any], methods: dict[str, str]) -> dict[str, float]:
    """Per-column drift scores of the snapshot's ValueDrift metrics."""
    scores: dict[str, float] = {}
    for m in d.get("metrics", []):
        cfg = m.get("config") or {}
        if cfg.get("type", "").endswith("ValueDrift") and cfg.get("column") in methods:
            scores[cfg["column"]] = float(m["value"])
    return scores


def _drift_verdicts(d: dict[str, Any], methods: dict[str, str]) -> dict[str, bool]:
    """Per-column verdicts of the snapshot's ValueDrift tests (FAIL = drifted)."""
    verdict: dict[str, bool] = {}
    for t in d.get("tests", []):
        params = (t.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in methods:
            verdict[params["column"]] = t.get("status") == "FAIL"
    return verdict


def _per_column(
    d: dict[str, Any], methods: dict[str, str], thresholds: dict[str, float], cols: list[str]
) -> dict[str, dict[str, Any]]:
    scores = _drift_scores(d, methods)
    verdict = _drift_verdicts(d, methods)
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


def _range_check(reference: pd.Series, current: pd.Series, cfg: MonitorParams) -> tuple[dict[str, Any], bool]:
    """Share of numeric values outside the reference's [min, max] (nothing when a side has no number)."""
    r = pd.to_numeric(reference, errors="coerce").dropna()
    v = pd.to_numeric(current, errors="coerce").dropna()
    if not (len(r) and len(v)):
        return {}, False
    lo, hi = float(r.min()), float(r.max())
    oor = float(((v < lo) | (v > hi)).mean())
    return {
        "reference_min": lo,
        "reference_max": hi,
        "out_of_range_share": oor,
    }, oor > cfg.max_out_of_range_share


def _unseen_check(
    reference: pd.Series, current: pd.Series, cfg: MonitorParams
) -> tuple[dict[str, Any], bool]:
    """Share of categorical values the reference never had."""
    ref_vals = set(reference.dropna().unique().tolist())
    new = current.dropna()
    new_share = float((~new.isin(ref_vals)).mean()) if len(new) else 0.0
    return {"unseen_value_share": new_share}, new_share > cfg.max_out_of_range_share


def quality_checks(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorParams,
    categorical: Collection[str],
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
        check = _range_check if c not in categorical and c != SCORE else _unseen_check
        extra, extra_alert = check(reference[c], current[c], cfg)
        row.update(extra)
        row["alert"] = bool(alert or extra_alert)
        out[c] = row
    return out
