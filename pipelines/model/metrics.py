"""Model metrics and gates: threshold at an FPR budget, ranking and calibration metrics, curves, gate checks.

Pure functions of labels and scores (numpy in, numbers and frames out), shared by the evaluate stage,
the champion gate and the canary. Gates are data: every metric is checked against its `<metric>_min` /
`<metric>_max` threshold from params by one function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipelines.errors import StageError
from pipelines.model.release import decide

MAX_PLOT_POINTS = 1000


CALIBRATION_BINS = 10


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


def valid_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Threshold-free validation metrics (empty when valid has a single class)."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    if len(np.unique(y)) < 2:
        return {}
    return {
        "valid_roc_auc": float(roc_auc_score(y, p)),
        "valid_pr_auc": float(average_precision_score(y, p)),
        "valid_log_loss": float(log_loss(y, p, labels=[0, 1])),
    }
