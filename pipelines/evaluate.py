"""Evaluate stage: score valid and test through the release, pick the threshold on VALID, report on TEST.

Pure core: `choose_threshold`, `evaluate` (metrics) and `check_gates` (every metric against its
`<metric>_min` / `<metric>_max` threshold from params: gates are data, one function checks them all).
`run()` loads the release named by models/release.json, writes reports/metrics.json,
reports/plots/{roc,pr,calibration}.csv and reports/evaluation.json, then raises GateFailed on failure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipelines.config import Params
from pipelines.errors import GateFailed, StageError
from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.model.packaging import load_release
from pipelines.model.release import decide

log = logging.getLogger(__name__)

LABEL = "label"
MAX_PLOT_POINTS = 1000
CALIBRATION_BINS = 10


# --------------------------------------------------------------------------------------------------
# Pure core
# --------------------------------------------------------------------------------------------------


def _check_binary(y: np.ndarray, p: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise StageError(f"evaluate: {split} has {len(y)} labels but {len(p)} scores")
    if len(np.unique(y)) < 2:
        raise StageError(
            f"evaluate: the {split} split has a single class ({len(y)} rows, {int(y.sum())} positives); "
            "ROC/PR metrics and the threshold need both classes"
        )
    if not np.all(np.isfinite(p)):
        raise StageError(f"evaluate: {split} scores contain NaN/inf")
    return y, p


def choose_threshold(y: np.ndarray, p: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold whose false-positive rate on (y, p) is <= max_fpr (decision: score >= threshold).

    With k = floor(max_fpr * negatives) false alarms allowed, the threshold sits just above the
    (k+1)-th highest negative score, so ties never push the FPR over the budget.
    """
    neg = np.sort(np.asarray(p, dtype=np.float64)[np.asarray(y) == 0])[::-1]
    if len(neg) == 0:
        raise StageError("evaluate: no negatives to set a threshold at max_fpr")
    k = math.floor(max_fpr * len(neg) + 1e-9)
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))


def _rates_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    flag = decide(p, threshold).astype(bool)
    pos, neg = y == 1, y == 0
    tp, fp = int(np.sum(flag & pos)), int(np.sum(flag & neg))
    return {
        "recall": tp / max(int(pos.sum()), 1),
        "fpr": fp / max(int(neg.sum()), 1),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "flagged": int(flag.sum()),
    }


def evaluate(
    y_valid: np.ndarray, p_valid: np.ndarray, y_test: np.ndarray, p_test: np.ndarray, max_fpr: float
) -> dict[str, Any]:
    """Threshold at `max_fpr` chosen on valid; every reported metric is measured on test."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y_valid, p_valid = _check_binary(y_valid, p_valid, "valid")
    y_test, p_test = _check_binary(y_test, p_test, "test")
    threshold = choose_threshold(y_valid, p_valid, max_fpr)
    test_at = _rates_at(y_test, p_test, threshold)
    valid_at = _rates_at(y_valid, p_valid, threshold)
    return {
        "roc_auc": float(roc_auc_score(y_test, p_test)),
        "pr_auc": float(average_precision_score(y_test, p_test)),
        "recall_at_fpr": test_at["recall"],
        "precision_at_threshold": test_at["precision"],
        "fpr_at_threshold": test_at["fpr"],
        "log_loss": float(log_loss(y_test, np.clip(p_test, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "threshold": threshold,
        "max_fpr": float(max_fpr),
        "valid_recall_at_fpr": valid_at["recall"],
        "n_test": len(y_test),
        "positives": int(y_test.sum()),
        "n_valid": len(y_valid),
        "valid_positives": int(y_valid.sum()),
    }


def check_gates(metrics: Mapping[str, Any], gates: BaseModel | Mapping[str, float]) -> list[str]:
    """Compare every metric with its `<metric>_min` / `<metric>_max` gate; one message per failure."""
    items = gates.model_dump() if isinstance(gates, BaseModel) else dict(gates)
    failures: list[str] = []
    for key, limit in sorted(items.items()):
        if limit is None:
            continue
        if key.endswith("_min"):
            name, ok = key[: -len("_min")], lambda v, lim: v >= lim
            word = "below"
        elif key.endswith("_max"):
            name, ok = key[: -len("_max")], lambda v, lim: v <= lim
            word = "above"
        else:
            raise ValueError(f"gate {key!r}: gate names end in _min or _max")
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            failures.append(f"{name} = {value!r} is not a number (gate {key} = {limit})")
        elif not ok(float(value), float(limit)):
            failures.append(f"{name} = {float(value):.4f} is {word} {key} = {limit}")
    return failures


def curves(y: np.ndarray, p: np.ndarray) -> dict[str, pd.DataFrame]:
    """ROC (fpr,tpr), PR (recall,precision) and calibration (mean_predicted,fraction_positive,count)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(p, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    cal = (
        pd.DataFrame({"bin": bins, "p": p, "y": y})
        .groupby("bin", sort=True)
        .agg(mean_predicted=("p", "mean"), fraction_positive=("y", "mean"), count=("y", "size"))
        .reset_index(drop=True)
    )
    return {
        "roc": _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})),
        "pr": _thin(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})),
        "calibration": cal,
    }


def _thin(df: pd.DataFrame) -> pd.DataFrame:
    # DVC renders every point; keep the curve's shape with at most MAX_PLOT_POINTS rows (ends included)
    if len(df) <= MAX_PLOT_POINTS:
        return df.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(df) - 1, MAX_PLOT_POINTS).round().astype(int))
    return df.iloc[idx].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# I/O wiring
# --------------------------------------------------------------------------------------------------


def read_release_doc(params: Params) -> dict[str, Any]:
    """models/release.json written by train; StageError naming the file when missing or malformed."""
    path = params.paths.models / "release.json"
    if not path.is_file():
        raise StageError(f"{path}: release not found (run the train stage first)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not valid JSON: {err}") from None
    if "model_uri" not in doc:
        raise StageError(f"{path}: has no model_uri")
    return doc


def _split(params: Params, split: str) -> pd.DataFrame:
    path = params.paths.dataset / f"{split}.parquet"
    if not path.is_file():
        raise StageError(f"{path}: dataset split not found (run the dataset stage first)")
    frame = pd.read_parquet(path)
    if LABEL not in frame.columns:
        raise StageError(f"{path}: no {LABEL!r} column")
    return frame


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Score valid/test with the trained release, write reports, raise GateFailed if a gate fails."""
    from pipelines.engines.registry import use_tracking_uri

    doc = read_release_doc(params)
    valid, test = _split(params, "valid"), _split(params, "test")
    use_tracking_uri(params.tracking_uri)
    release = load_release(doc["model_uri"], expected_fingerprint=doc.get("fingerprint"))
    p_valid, p_test = release.score(valid), release.score(test)
    y_valid, y_test = valid[LABEL].to_numpy(dtype=np.int64), test[LABEL].to_numpy(dtype=np.int64)
    metrics = evaluate(y_valid, p_valid, y_test, p_test, params.evaluate.max_fpr)
    failures = check_gates(metrics, params.evaluate.gates)

    reports = params.paths.reports
    for name, frame in curves(y_test, p_test).items():
        atomic_write_text(reports / "plots" / f"{name}.csv", _csv(frame))
    atomic_write_json(reports / "metrics.json", metrics)
    verdict = {
        "verdict": "fail" if failures else "pass",
        "failed_gates": failures,
        "gates": params.evaluate.gates.model_dump(),
        "metrics": metrics,
        "run_id": doc.get("run_id"),
        "model_uri": doc["model_uri"],
        "fingerprint": release.fingerprint,
        "range": {"start": start.isoformat(), "end": end.isoformat()},
    }
    atomic_write_json(reports / "evaluation.json", verdict)
    if failures:
        raise GateFailed("evaluate: offline gates failed: " + "; ".join(failures))
    log.info("evaluate passed: %s", {k: metrics[k] for k in ("roc_auc", "pr_auc", "recall_at_fpr")})
    return {"verdict": "pass", **{k: metrics[k] for k in ("roc_auc", "pr_auc", "recall_at_fpr", "threshold")}}


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "evaluate")
