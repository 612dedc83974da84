"""Unit tests of the monitoring cores: drift both ways, late-label join, live metrics, cooldown."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from pipelines.errors import StageError
from pipelines.monitoring.decision import decide_retrain, retrain_extra
from pipelines.monitoring.drift import choose_methods, drift_report, drift_summary, quality_checks
from pipelines.monitoring.inputs import features_asof
from pipelines.monitoring.live import arrived_labels, join_labels, live_metrics, service_health
from pipelines.sections import MonitorParams
from tests.conftest import make_project

pytestmark = pytest.mark.unit

CFG = MonitorParams()
CATEGORICAL = ("category",)  # of the frames below


def _frame(seed: int, n: int, shift: float = 0.0, new_cat_share: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cats = np.array(["grocery", "travel", "fuel"])
    cat = rng.choice(cats, size=n, p=[0.5, 0.3, 0.2]).astype(object)
    cat[rng.random(n) < new_cat_share] = "digital_goods"
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0 + shift, 0.8, size=n),
            "hour": rng.integers(0, 24, size=n).astype(float),
            "txn_count_24h": rng.poisson(2.0 + 4 * shift, size=n).astype(float),
            "category": cat,
        }
    )


@pytest.mark.parametrize("n", [400, 3000], ids=["small-ks", "large-wasserstein"])
def test_drift_detected_on_shifted_sample_and_not_on_same_distribution(n: int) -> None:
    ref = _frame(1, n)
    same = _frame(2, n)
    shifted = _frame(3, n, shift=0.7, new_cat_share=0.4)

    _, cols_same = drift_report(ref, same, CFG, CATEGORICAL)
    s_same = drift_summary(cols_same, CFG)
    assert s_same["n_drifted"] == 0, cols_same
    assert not s_same["dataset_drift"]

    _, cols_shift = drift_report(ref, shifted, CFG, CATEGORICAL)
    s_shift = drift_summary(cols_shift, CFG)
    assert set(s_shift["drifted_features"]) >= {"amount", "txn_count_24h", "category"}
    assert "hour" not in s_shift["drifted_features"]  # an untouched column stays quiet
    assert s_shift["dataset_drift"]
    expected = ("ks", "chisquare") if n < CFG.large_sample_rows else ("wasserstein", "jensenshannon")
    assert cols_shift["amount"]["method"] == expected[0]
    assert cols_shift["category"]["method"] == expected[1]


def test_prediction_drift_is_reported_apart_from_feature_drift() -> None:
    ref, cur = _frame(1, 400), _frame(2, 400)
    rng = np.random.default_rng(5)
    ref["score"] = rng.beta(1, 20, size=400)
    cur["score"] = rng.beta(4, 6, size=400)
    _, cols = drift_report(ref, cur, CFG, CATEGORICAL)
    s = drift_summary(cols, CFG)
    assert s["prediction_drift"] and "score" not in s["features"]
    assert s["n_drifted"] == 0


def test_methods_need_a_threshold() -> None:
    cfg = MonitorParams(num_method_small="psi", thresholds={"chisquare": 0.05})
    with pytest.raises(StageError, match="psi"):
        choose_methods(_frame(1, 10), _frame(2, 10), cfg, CATEGORICAL)


def test_quality_checks_flag_missing_and_out_of_range() -> None:
    ref = _frame(1, 500)
    cur = _frame(2, 500)
    cur.loc[:200, "hour"] = np.nan
    cur.loc[:100, "amount"] = 1e9
    checks = quality_checks(ref, cur, CFG, CATEGORICAL)
    assert checks["hour"]["alert"] and checks["amount"]["alert"]
    assert not checks["txn_count_24h"]["alert"]


def _preds_and_events(seed: int = 0, n: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    ts = t0 + pd.to_timedelta(rng.uniform(0, 10 * 86400, size=n), unit="s")
    label = (rng.random(n) < 0.15).astype(np.int64)
    score = np.clip(0.5 * label + rng.uniform(0, 0.6, size=n), 0, 1)
    events = pd.DataFrame({"event_id": [f"e{i}" for i in range(n)], "event_timestamp": ts, "label": label})
    preds = pd.DataFrame(
        {
            "event_id": events["event_id"],
            "score": score,
            "decision": (score >= 0.5).astype(int),
            "model_version": np.where(rng.random(n) < 0.8, "1", "2"),
            "arm": "",
        }
    )
    preds["arm"] = np.where(preds["model_version"] == "1", "champion", "challenger")
    return preds, events


def test_only_arrived_labels_count() -> None:
    _, events = _preds_and_events()
    as_of = dt.datetime(2026, 1, 8, tzinfo=dt.UTC)
    got = arrived_labels(events, as_of, delay_hours=48)
    cutoff = pd.Timestamp(as_of) - pd.Timedelta(hours=48)
    expected = set(events.loc[events["event_timestamp"] <= cutoff, "event_id"])
    assert set(got["event_id"]) == expected and 0 < len(expected) < len(events)


def test_live_metrics_equal_metrics_on_the_joined_frame() -> None:
    preds, events = _preds_and_events()
    as_of = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    joined = join_labels(preds, arrived_labels(events, as_of, 24))
    live = live_metrics(joined, bins=10)
    for row in live["by_version_arm"]:
        f = joined[(joined["model_version"] == row["model_version"]) & (joined["arm"] == row["arm"])]
        assert row["n"] == len(f) and row["positives"] == int(f["label"].sum())
        assert row["precision"] == pytest.approx(precision_score(f["label"], f["decision"]))
        assert row["recall"] == pytest.approx(recall_score(f["label"], f["decision"]))
        assert row["pr_auc"] == pytest.approx(average_precision_score(f["label"], f["score"]))
        assert sum(b["n"] for b in row["calibration"]) == len(f)
    assert {r["arm"] for r in live["by_version_arm"]} == {"champion", "challenger"}
    assert live["overall"]["n"] == len(joined)
    # direct join by hand: same rows
    arrived = events[events["event_timestamp"] + pd.Timedelta(hours=24) <= pd.Timestamp(as_of)]
    assert len(joined) == len(preds.merge(arrived[["event_id", "label"]], on="event_id"))


def test_join_rejects_duplicate_labels() -> None:
    preds, events = _preds_and_events(n=10)
    labels = pd.concat([events[["event_id", "label"]]] * 2)
    with pytest.raises(pd.errors.MergeError):
        join_labels(preds, labels)


def test_cooldown_prevents_a_second_retrain() -> None:
    drift = {"dataset_drift": True, "n_drifted": 5, "n_features": 10, "drift_share": 0.5}
    live = {"overall": None}
    cfg = MonitorParams(cooldown_days=7, retrain_window_days=30)
    first = decide_retrain(drift, live, dt.date(2026, 2, 10), None, cfg)
    assert first.retrain and first.window_start == "2026-01-11" and first.window_end == "2026-02-10"
    again = decide_retrain(drift, live, dt.date(2026, 2, 12), dt.date(2026, 2, 10), cfg)
    assert again.triggered and not again.retrain and again.suppressed_by_cooldown
    later = decide_retrain(drift, live, dt.date(2026, 2, 17), dt.date(2026, 2, 10), cfg)
    assert later.retrain
    calm = decide_retrain({"dataset_drift": False}, live, dt.date(2026, 3, 1), None, cfg)
    assert not calm.triggered and not calm.retrain


def test_live_quality_gate_needs_enough_labels() -> None:
    bad = {"n": 500, "positives": 20, "pr_auc": 0.05, "recall": 0.5}
    cfg = MonitorParams(min_labels=200, pr_auc_min=0.2)
    d = decide_retrain({"dataset_drift": False}, {"overall": bad}, dt.date(2026, 2, 1), None, cfg)
    assert d.retrain and "pr_auc" in d.reasons[0]
    few = {**bad, "n": 50}
    d = decide_retrain({"dataset_drift": False}, {"overall": few}, dt.date(2026, 2, 1), None, cfg)
    assert not d.triggered


def test_features_asof_takes_the_state_before_the_event() -> None:
    t = pd.Timestamp("2026-01-05 10:00", tz="UTC")
    events = pd.DataFrame(
        {"event_id": ["a", "b"], "entity_id": ["u1", "u1"], "event_timestamp": [t, t + pd.Timedelta(hours=1)]}
    )
    feats = pd.DataFrame(
        {
            "entity_id": ["u1", "u1"],
            "event_timestamp": [t, t + pd.Timedelta(hours=1)],
            "txn_count_24h": [1, 2],
        }
    )
    out = features_asof(events, feats, history_days=30)
    assert out["event_id"].tolist() == ["a", "b"]
    assert np.isnan(out.loc[0, "txn_count_24h"]) and out.loc[1, "txn_count_24h"] == 1


def test_retrain_extra_only_when_retraining() -> None:
    yes = {
        "retrain": True,
        "retrain_window": ["2026-01-01", "2026-03-01"],
        "reasons": ["x"],
        "date": "2026-02-28",
    }
    assert retrain_extra(yes) == {
        "start": "2026-01-01",
        "end": "2026-03-01",
        "reasons": ["x"],
        "monitored": "2026-02-28",
    }
    assert retrain_extra({**yes, "retrain": False, "retrain_window": None}) is None


def test_window_default_is_the_test_window_only_for_the_data_range(tmp_path: Path) -> None:
    from pipelines.monitoring.window import monitor_window

    params = make_project(tmp_path / "project", {"data": {"start": "2026-01-01", "end": "2026-03-01"}})
    start, end = params.data.start, params.data.end
    with pytest.raises(StageError, match="run the dataset stage"):  # no dataset summary yet
        monitor_window(params, start, end)
    params.paths.dataset.mkdir(parents=True)
    splits = {"valid": {"end": "2026-02-20T03:29:51+00:00"}}
    (params.paths.dataset / "summary.json").write_text(json.dumps({"splits": splits}))
    w = monitor_window(params, start, end)  # what `dvc repro` passes
    assert (w.start, w.end, w.kind, w.metrics_floor) == (dt.date(2026, 2, 21), end, "test", w.start)
    assert "did not train on" in w.reason
    given = monitor_window(params, dt.date(2026, 2, 27), dt.date(2026, 2, 28))  # Airflow's interval
    assert (given.start, given.kind, given.metrics_floor) == (dt.date(2026, 2, 27), "given", None)
    whole = params.model_copy(update={"monitor": params.monitor.model_copy(update={"window": "data"})})
    assert monitor_window(whole, start, end).start == start
    (params.paths.dataset / "summary.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(StageError, match=r"no splits\.valid\.end"):
        monitor_window(params, start, end)


def test_service_health_per_version_and_arm() -> None:
    preds = pd.DataFrame(
        {
            "model_version": ["1", "1", "1", "2"],
            "arm": ["champion", "champion", "champion", "challenger"],
            "latency_ms": [10.0, 20.0, 230.0, 40.0],
            "challenger_fallback": [False, False, True, False],  # the third: routed to v2, which failed
            "feature_source": ["online", "new_entity", "online", "online"],
            "cached": [True, False, False, False],
        }
    )
    health = {r["arm"]: r for r in service_health(preds)}
    champion = health["champion"]
    assert champion["requests"] == 3 and champion["latency_p50_ms"] == 20.0
    assert champion["challenger_fallback_share"] == pytest.approx(1 / 3)
    assert champion["feature_fallback_share"] == pytest.approx(1 / 3) == champion["cached_share"]
    assert health["challenger"]["latency_p99_ms"] == 40.0
    batch = service_health(preds[["model_version", "arm"]])  # batch predictions: requests only
    assert set(batch[0]) == {"model_version", "arm", "requests"}


def test_training_run_and_merge_of_evidently_reports() -> None:
    from pipelines.monitoring.inputs import VersionRecord
    from pipelines.monitoring.runs import facts_report, merge, training_run

    record = VersionRecord("2", dt.datetime(2026, 1, 3), {"pr_auc": 0.61}, "fail", ["challenger"])
    run = training_run(record)
    assert run is not None
    model = run.to_snapshot_model()
    values = {r.metric_value_location.metric.params["fact"]: r.value for r in model.metric_results.values()}
    assert values == {"offline_pr_auc": 0.61, "gate_pass": 0.0}  # metrics the release lacks: no value
    assert model.timestamp == record.created and {"training", "v2", "gate:fail", "alias:challenger"} <= set(
        model.tags
    )
    other = facts_report([("retrain", "", "", True)])
    assert other is not None
    both = merge([("a", "", run), ("b", "", other)], name="x", timestamp=record.created, tags=[], meta={})
    assert len(both.to_snapshot_model().metric_results) == 3
    with pytest.raises(ValueError, match="metric ids in two merged reports"):
        merge([("a", "", run), ("again", "", run)], name="x", timestamp=record.created, tags=[], meta={})
