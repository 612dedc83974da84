"""Evaluate stage: metrics on a known toy case, the threshold rule, gates as data, and run()'s reports."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from pipelines import evaluate, train
from pipelines.config import Params
from pipelines.errors import GateFailed, StageError
from pipelines.model import metrics as model_metrics
from pipelines.sections import EvaluateParams, GateParams
from tests.conftest import make_project
from tests.test_train import END, START, TINY, write_dataset

# valid: ten negatives 0.0 .. 0.9 and two positives
Y_VALID = np.array([0] * 10 + [1, 1])
P_VALID = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.5])
Y_TEST = np.array([0, 0, 0, 0, 1, 1])
P_TEST = np.array([0.1, 0.2, 0.3, 0.8, 0.7, 0.9])


@pytest.mark.unit
def test_metrics_on_a_known_toy_case() -> None:
    m = model_metrics.evaluate(Y_VALID, P_VALID, Y_TEST, P_TEST, max_fpr=0.1)
    # one false alarm allowed among 10 valid negatives: flag only scores above 0.8
    assert 0.8 < m["threshold"] < 0.8 + 1e-12
    assert m["valid_recall_at_fpr"] == 0.5
    # on test only 0.9 clears it (0.8 is a negative just at the cut): recall 1/2, precision 1
    assert m["recall_at_fpr"] == 0.5 and m["precision_at_threshold"] == 1.0 and m["fpr_at_threshold"] == 0.0
    assert m["roc_auc"] == pytest.approx(7 / 8)  # positive 0.7 beats 3 of 4 negatives, 0.9 beats all
    assert m["pr_auc"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert m["n_test"] == 6 and m["positives"] == 2
    assert m["log_loss"] == pytest.approx(
        -np.mean(Y_TEST * np.log(P_TEST) + (1 - Y_TEST) * np.log(1 - P_TEST)), rel=1e-9
    )


@pytest.mark.unit
def test_threshold_never_exceeds_the_fpr_budget_with_ties() -> None:
    y = np.array([0] * 100 + [1] * 5)
    p = np.concatenate([np.full(50, 0.3), np.full(50, 0.7), np.full(5, 0.7)])
    t = model_metrics.choose_threshold(y, p, max_fpr=0.2)
    assert t > 0.7  # flagging the tied 0.7 block would mean 50% FPR
    assert model_metrics.choose_threshold(np.array([0, 0, 1]), np.array([0.2, 0.4, 0.9]), 0.01) > 0.4


@pytest.mark.unit
def test_single_class_test_split_is_refused() -> None:
    with pytest.raises(StageError, match="test split has a single class"):
        model_metrics.evaluate(Y_VALID, P_VALID, np.zeros(4), np.full(4, 0.1), 0.1)


@pytest.mark.unit
def test_gates_are_data_and_fail_with_a_clear_message() -> None:
    metrics = {"roc_auc": 0.91, "pr_auc": 0.12, "recall_at_fpr": float("nan"), "log_loss": 0.3}
    assert model_metrics.check_gates(metrics, {"roc_auc_min": 0.9}) == []
    failures = model_metrics.check_gates(
        metrics, GateParams(roc_auc_min=0.95, pr_auc_min=0.1, recall_at_fpr_min=0.2)
    )
    assert len(failures) == 2
    assert "recall_at_fpr = nan is not a number (gate recall_at_fpr_min = 0.2)" in failures
    assert "roc_auc = 0.9100 is below roc_auc_min = 0.95" in failures
    assert model_metrics.check_gates(metrics, {"log_loss_max": 0.2}) == [
        "log_loss = 0.3000 is above log_loss_max = 0.2"
    ]
    with pytest.raises(ValueError, match="_min or _max"):
        model_metrics.check_gates(metrics, {"roc_auc": 0.5})


@pytest.mark.unit
def test_curves_are_dvc_plot_tables() -> None:
    c = model_metrics.curves(Y_TEST, P_TEST)
    assert list(c["roc"].columns) == ["fpr", "tpr"] and c["roc"].iloc[-1].tolist() == [1.0, 1.0]
    assert list(c["pr"].columns) == ["recall", "precision"]
    assert list(c["calibration"].columns) == ["mean_predicted", "fraction_positive", "count"]
    assert c["calibration"]["count"].sum() == 6


# --------------------------------------------------------------------------------------------------
# run(): one trained tiny release shared by the module
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Params]:
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_project(tmp_path_factory.mktemp("eval") / "project")
    params = params.model_copy(update={"train": TINY})
    write_dataset(params, n=1200)
    train.run(params, START, END)
    yield params
    mp.undo()


@pytest.mark.integration
def test_run_writes_reports_and_passes_reachable_gates(trained: Params) -> None:
    params = trained.model_copy(
        update={"evaluate": EvaluateParams(max_fpr=0.05, gates=GateParams(roc_auc_min=0.6, pr_auc_min=0.05))}
    )
    summary = evaluate.run(params, START, END)
    reports = params.paths.reports
    metrics = json.loads((reports / "metrics.json").read_text())
    assert summary["verdict"] == "pass" and metrics["roc_auc"] == summary["roc_auc"]
    assert set(metrics) >= {"roc_auc", "pr_auc", "recall_at_fpr", "precision_at_threshold", "log_loss"}
    assert metrics["threshold"] == summary["threshold"] and metrics["n_test"] == 180
    verdict = json.loads((reports / "evaluation.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["failed_gates"] == []
    assert list(pd.read_csv(reports / "plots" / "roc.csv").columns) == ["fpr", "tpr"]
    assert list(pd.read_csv(reports / "plots" / "pr.csv").columns) == ["recall", "precision"]
    assert "fraction_positive" in pd.read_csv(reports / "plots" / "calibration.csv").columns


@pytest.mark.integration
def test_run_raises_gate_failed_after_writing_reports(trained: Params) -> None:
    strict = trained.model_copy(
        update={"evaluate": EvaluateParams(max_fpr=0.05, gates=GateParams(roc_auc_min=1.0, pr_auc_min=1.0))}
    )
    (strict.paths.reports / "evaluation.json").unlink(missing_ok=True)
    with pytest.raises(GateFailed, match=r"pr_auc = 0\.\d{4} is below pr_auc_min = 1\.0"):
        evaluate.run(strict, START, END)
    verdict = json.loads((strict.paths.reports / "evaluation.json").read_text())
    assert verdict["verdict"] == "fail" and any("pr_auc" in f for f in verdict["failed_gates"])


@pytest.mark.integration
def test_run_without_release_names_the_missing_file(project: Params) -> None:
    with pytest.raises(StageError, match=r"models[/\\]release\.json"):
        evaluate.run(project, START, END)
