"""Offline gate of the challenger against the champion, before any live traffic (issue 5).

The challenger passes when ALL hold:
1. the absolute thresholds of `evaluate.gates` (same check as the evaluate stage);
2. it beats the champion on the SAME held-out window (data/dataset valid/test, both releases scored
   here, the threshold of each chosen on valid) on `rollout.gate.metric` by at least `margin`, or, for
   a change marked as a refresh, is not worse by more than `refresh_tolerance` (a tie);
3. behavioural tests on test rows: invariance (the merchant name's case does not move the score),
   directional (a 10x amount far from home does not lower the score), minimum functionality
   (hand-made obvious fraud is flagged, obvious legit is not, at the release's threshold).

`run_gate` writes reports/champion_gate.json and the version tags `gate.verdict` / `gate.report`; on a
failure it removes the `challenger` alias (recorded in the history) so no canary can start, and raises
GateFailed. `run(params, start, end)` is the stage form (`python -m pipelines.champion_gate`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.errors import GateFailed, StageError

if TYPE_CHECKING:
    from pipelines.config import ChampionGateParams, Params
    from pipelines.engines.registry import Registry

log = logging.getLogger(__name__)

ScoreFn = Callable[[pd.DataFrame], np.ndarray]
REPORT_NAME = "champion_gate.json"
# far from home: ~1,100 km north-east of the cardholder (the synthetic world's cities are closer)
_FAR_DEG = 10.0
_DIRECTIONAL_DROP = 0.01


# ---- pure core ------------------------------------------------------------------------------------


def compare_with_champion(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    cfg: ChampionGateParams,
    refresh: bool = False,
) -> list[str]:
    """Failures of the champion comparison on `cfg.metric` (empty = pass; no champion = pass)."""
    if champion is None:
        return []
    m = cfg.metric
    c, b = float(challenger[m]), float(champion[m])
    if refresh:
        if c < b - cfg.refresh_tolerance:
            return [f"{m} {c:.4f} is worse than champion's {b:.4f} by more than {cfg.refresh_tolerance:g}"]
        return []
    if c < b + cfg.margin or (cfg.margin == 0 and c <= b):
        return [f"{m} {c:.4f} does not beat champion's {b:.4f} by margin {cfg.margin:g}"]
    return []


def _swapcase(frame: pd.DataFrame) -> pd.DataFrame | None:
    if "merchant" not in frame:
        return None
    out = frame.copy()
    out["merchant"] = out["merchant"].astype("string").str.swapcase().astype(object)
    return out


def _bigger_and_far(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["amount"] = out["amount"].astype(float) * 10
    if {"latitude", "longitude", "merchant_latitude", "merchant_longitude"} <= set(out.columns):
        out["merchant_latitude"] = np.clip(out["latitude"].astype(float) + _FAR_DEG, -89.0, 89.0)
        out["merchant_longitude"] = out["longitude"].astype(float) + _FAR_DEG
    return out


def obvious_cases(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hand-made (obvious fraud, obvious legit) variants of legit test rows of real cards.

    Fraud: 15x the card's usual amount, at 3 am, far from home, online goods, 5 purchases in the last hour.
    Legit: the card's usual amount, 2 pm, at home, its own category, nothing else in the last hour.
    """
    base = frame[frame["label"] == 0] if "label" in frame else frame
    base = base.head(50).copy()
    usual = base["amount_mean_hist"].astype(float) if "amount_mean_hist" in base else base["amount"]
    usual = usual.fillna(base["amount"].astype(float))
    day = pd.to_datetime(base["event_timestamp"], utc=True).dt.floor("D")
    fraud, legit = base.copy(), base.copy()
    fraud["amount"] = usual * 15
    fraud["event_timestamp"] = day + pd.Timedelta(hours=3)
    legit["amount"] = usual
    legit["event_timestamp"] = day + pd.Timedelta(hours=14)
    if "category" in base:
        fraud["category"] = "shopping_net"
    if {"latitude", "longitude", "merchant_latitude", "merchant_longitude"} <= set(base.columns):
        fraud["merchant_latitude"] = np.clip(base["latitude"].astype(float) + _FAR_DEG, -89.0, 89.0)
        fraud["merchant_longitude"] = base["longitude"].astype(float) + _FAR_DEG
        legit["merchant_latitude"], legit["merchant_longitude"] = base["latitude"], base["longitude"]
    for col, f_val, l_val in (("txn_count_1h", 5, 0), ("amount_sum_1h", None, 0.0)):
        if col in base:
            fraud[col] = usual * 15 * 5 if f_val is None else f_val
            legit[col] = l_val
    if "last_event_ts" in base:
        fraud_ts = pd.to_datetime(fraud["event_timestamp"], utc=True).astype("int64") / 1e9
        fraud["last_event_ts"] = fraud_ts - 60.0  # a minute after the previous purchase
        legit_ts = pd.to_datetime(legit["event_timestamp"], utc=True).astype("int64") / 1e9
        legit["last_event_ts"] = legit_ts - 86_400.0
    return fraud.reset_index(drop=True), legit.reset_index(drop=True)


def behavioural_checks(
    score: ScoreFn, frame: pd.DataFrame, threshold: float, cfg: ChampionGateParams
) -> dict[str, dict[str, Any]]:
    """Invariance, directional and minimum-functionality tests of one scorer on test rows."""
    rows = frame.head(500).reset_index(drop=True)
    base = np.asarray(score(rows), float)
    out: dict[str, dict[str, Any]] = {}

    swapped = _swapcase(rows)
    if swapped is None:
        out["invariance"] = {"ok": True, "skipped": "no merchant column"}
    else:
        delta = float(np.max(np.abs(np.asarray(score(swapped), float) - base))) if len(rows) else 0.0
        out["invariance"] = {
            "ok": delta <= cfg.invariance_tolerance,
            "max_abs_change": delta,
            "detail": "merchant name case swapped",
        }

    moved = np.asarray(score(_bigger_and_far(rows)), float)
    violations = float(np.mean(moved < base - _DIRECTIONAL_DROP)) if len(rows) else 0.0
    out["directional"] = {
        "ok": violations <= cfg.directional_max_violations,
        "violation_share": violations,
        "detail": "amount x10 (far from home where coordinates exist) must not lower the score",
    }

    fraud, legit = obvious_cases(frame)
    f_flag = float(np.mean(np.asarray(score(fraud), float) >= threshold)) if len(fraud) else 0.0
    l_flag = float(np.mean(np.asarray(score(legit), float) >= threshold)) if len(legit) else 0.0
    out["minimum_functionality"] = {
        "ok": f_flag >= cfg.mft_min_fraud_flagged and l_flag <= cfg.mft_max_legit_flagged,
        "fraud_flagged": f_flag,
        "legit_flagged": l_flag,
        "cases": len(fraud) + len(legit),
    }
    return out


def verdict(
    challenger_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    behaviour: Mapping[str, Mapping[str, Any]],
    params: Params,
    refresh: bool = False,
) -> dict[str, Any]:
    """All three parts together: {'verdict': pass|fail, 'failures': [...], ...numbers}."""
    from pipelines.evaluate import check_gates

    cfg = params.rollout.gate
    failures = [f"absolute: {f}" for f in check_gates(challenger_metrics, params.evaluate.gates)]
    failures += [
        f"vs champion: {f}" for f in compare_with_champion(challenger_metrics, champion_metrics, cfg, refresh)
    ]
    failures += [
        f"behavioural: {name} failed ({_figures(r)})" for name, r in behaviour.items() if not r["ok"]
    ]
    keys = ("roc_auc", "pr_auc", "recall_at_fpr", "threshold")
    return {
        "verdict": "fail" if failures else "pass",
        "failures": failures,
        "metric": cfg.metric,
        "margin": cfg.margin,
        "refresh": refresh,
        "challenger": {k: challenger_metrics.get(k) for k in keys},
        "champion": None if champion_metrics is None else {k: champion_metrics.get(k) for k in keys},
        "behavioural": behaviour,
    }


def _figures(result: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.items()
        if k not in ("ok", "detail")
    )


# ---- I/O wiring -----------------------------------------------------------------------------------


def _default_loader(params: Params, reg: Registry, name: str) -> Callable[[str], Any]:
    def load(version: str) -> Any:
        from pipelines.engines.registry import use_tracking_uri, version_uri
        from pipelines.model.packaging import load_release

        use_tracking_uri(params.tracking_uri)
        fp = reg.get_version(name, version).tags.get("fingerprint")
        return load_release(version_uri(name, version), expected_fingerprint=fp)

    return load


def run_gate(
    params: Params,
    version: str | None = None,
    refresh: bool = False,
    reg: Registry | None = None,
    load: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Gate `version` (default: alias challenger) against the champion on data/dataset valid/test.

    Writes reports/champion_gate.json and the version's `gate.*` tags. On failure the `challenger` alias
    is removed (with the reason in the history) and GateFailed is raised.
    """
    from pipelines.contract import CHALLENGER, CHAMPION
    from pipelines.engines.registry import open_registry
    from pipelines.evaluate import LABEL, _split, evaluate
    from pipelines.io import atomic_write_json

    reg = reg or open_registry(params)
    name = params.register_.model_name
    version = version or reg.alias_version(name, CHALLENGER)
    if version is None:
        raise StageError(f"{name}: no version given and no `challenger` alias to gate")
    champion = reg.alias_version(name, CHAMPION)
    load = load or _default_loader(params, reg, name)
    valid, test = _split(params, "valid"), _split(params, "test")
    y_valid, y_test = valid[LABEL].to_numpy(np.int64), test[LABEL].to_numpy(np.int64)

    def metrics_of(release: Any) -> dict[str, Any]:
        return evaluate(y_valid, release.score(valid), y_test, release.score(test), params.evaluate.max_fpr)

    challenger_release = load(version)
    ch_metrics = metrics_of(challenger_release)
    cp_metrics = metrics_of(load(champion)) if champion is not None and champion != version else None
    behaviour = behavioural_checks(
        challenger_release.score, test, ch_metrics["threshold"], params.rollout.gate
    )
    result = {
        **verdict(ch_metrics, cp_metrics, behaviour, params, refresh),
        "model_name": name,
        "version": version,
        "champion_version": champion if cp_metrics is not None else None,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(params.paths.reports / REPORT_NAME, result)
    reg.client.set_model_version_tag(name, version, "gate.verdict", result["verdict"])
    reg.client.set_model_version_tag(
        name, version, "gate.report", json.dumps(result, sort_keys=True, default=str)
    )
    if result["failures"]:
        reason = "; ".join(result["failures"])
        if reg.alias_version(name, CHALLENGER) == version:
            reg.remove_alias(name, CHALLENGER, why=f"champion gate failed: {reason}")
        raise GateFailed(f"champion gate: v{version} failed: {reason}")
    log.info("champion gate passed for v%s (champion %s)", version, champion)
    return {k: result[k] for k in ("verdict", "version", "champion_version", "challenger", "champion")}


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Stage form: gate the current challenger (the dataset of [start, end) is already on disk)."""
    return run_gate(params)


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "champion_gate")
