"""Evaluate stage: score valid and test through the release, pick the threshold on VALID, report on TEST.

The metrics and gate checks are pipelines.model.metrics. `run()` loads the release named by
models/release.json, writes reports/metrics.json, reports/plots/{roc,pr,calibration}.csv and
reports/evaluation.json, then raises GateFailed when a gate fails.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipelines import artifacts
from pipelines.config import Params
from pipelines.contract import LABEL
from pipelines.errors import GateFailed
from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.model.metrics import check_gates, curves, evaluate

log = logging.getLogger(__name__)


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Score valid/test with the trained release, write reports, raise GateFailed if a gate fails."""
    doc = artifacts.read_release_doc(params)
    valid, test = artifacts.read_split(params, "valid"), artifacts.read_split(params, "test")
    release = artifacts.load_release_at(
        doc["model_uri"], params.tracking_uri, fingerprint=doc.get("fingerprint")
    )
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


def describe(summary: dict[str, Any]) -> str:
    """Progress line: the test-window metrics that passed the thresholds."""
    return (
        f"{summary['verdict']}: test PR AUC {summary['pr_auc']:.3f}, ROC AUC {summary['roc_auc']:.3f}, "
        f"recall {summary['recall_at_fpr']:.3f} at the FPR budget"
    )


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "evaluate", describe)
