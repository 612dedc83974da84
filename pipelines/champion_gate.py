"""Offline gate of the challenger against the champion, before any live traffic (issue 5).

The challenger passes when ALL hold:
1. the absolute thresholds of `evaluate.gates` (same check as the evaluate stage);
2. it beats the champion on the SAME held-out window (data/dataset valid/test, both releases scored
   here, the threshold of each chosen on valid) on `rollout.gate.metric` by at least `margin`, or, for
   a change marked as a refresh, is not worse by more than `refresh_tolerance` (a tie);
3. behavioural tests on test rows (pipelines.model.behaviour), declared as data in the file params name
   (`rollout.gate.behaviour_cases`, shipped: expectations/behaviour.yaml): invariance, directional and
   minimum functionality (hand-made obvious positives flagged, negatives not, at the release's threshold).

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

from pipelines import artifacts
from pipelines.contract import CHALLENGER, CHAMPION, LABEL
from pipelines.errors import GateFailed, StageError
from pipelines.io import atomic_write_json
from pipelines.model.behaviour import behavioural_checks, load_suite
from pipelines.model.metrics import check_gates, evaluate

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.engines.registry import Registry
    from pipelines.sections import ChampionGateParams

log = logging.getLogger(__name__)

REPORT_NAME = "champion_gate.json"


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


def verdict(
    challenger_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    behaviour: Mapping[str, Mapping[str, Any]],
    params: Params,
    refresh: bool = False,
) -> dict[str, Any]:
    """All three parts together: {'verdict': pass|fail, 'failures': [...], ...numbers}."""
    cfg = params.rollout.gate
    cases = cfg.behaviour_cases
    failures = [f"absolute: {f}" for f in check_gates(challenger_metrics, params.evaluate.gates)]
    failures += [
        f"vs champion: {f}" for f in compare_with_champion(challenger_metrics, champion_metrics, cfg, refresh)
    ]
    failures += [
        f"behavioural: {name} failed ({_figures(r)}; cases in {cases}, tolerances in rollout.gate)"
        for name, r in behaviour.items()
        if not r["ok"]
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
        return artifacts.load_version(params, artifacts.resolve_version(reg, name, version=version))

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
    from pipelines.engines.registry import open_registry

    reg = reg or open_registry(params)
    name = params.register_.model_name
    version = version or reg.alias_version(name, CHALLENGER)
    if version is None:
        raise StageError(f"{name}: no version given and no `challenger` alias to gate")
    champion = reg.alias_version(name, CHAMPION)
    load = load or _default_loader(params, reg, name)
    suite = load_suite(params.resolve(params.rollout.gate.behaviour_cases))
    valid, test = artifacts.read_split(params, "valid"), artifacts.read_split(params, "test")
    y_valid, y_test = valid[LABEL].to_numpy(np.int64), test[LABEL].to_numpy(np.int64)

    def metrics_of(release: Any) -> dict[str, Any]:
        return evaluate(y_valid, release.score(valid), y_test, release.score(test), params.evaluate.max_fpr)

    challenger_release = load(version)
    ch_metrics = metrics_of(challenger_release)
    cp_metrics = metrics_of(load(champion)) if champion is not None and champion != version else None
    behaviour = behavioural_checks(
        challenger_release.score, test, ch_metrics["threshold"], params.rollout.gate, suite
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


def describe(summary: dict[str, Any]) -> str:
    """Progress line: the verdict and against which champion."""
    against = (
        "no champion yet: it becomes the first"
        if summary["champion_version"] is None
        else f"against champion v{summary['champion_version']}"
    )
    return f"v{summary['version']} {summary['verdict']}, {against}"


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "champion_gate", describe)
