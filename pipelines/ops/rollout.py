"""Canary rollout of the challenger: live per-arm figures, guardrails, ramp, rollback and promotion.

The registry is the one source of truth (DESIGN.md section 4): the canary only writes the `rollout.*`
tags (challenger_weight, step, started_at, decision) and moves aliases; the serving process re-reads them
every `serve.refresh_s` and routes `bucket(entity) < weight` to the challenger. The Airflow DAG
`canary_rollout`, the `sluice canary` CLI and the tests all call the functions below.

- Pure core: `arm_stats(log, since, labels)` turns prediction-log rows into per-arm figures (requests,
  errors = challenger requests answered by the champion's fallback, p99 latency, scores, precision/recall
  where labels arrived); `psi(expected, actual)`; `evaluate_step(stats, guardrails, min_requests, ...)`
  -> Decision(wait | hold | advance | rollback, reason).
- Actions: `start_canary`, `pause_canary`, `set_step`, `rollback_canary` (weight 0, alias challenger
  removed, reason in the rollout tags and the alias history), `promote_challenger` (champion <- challenger,
  old champion -> previous, challenger alias removed, weight 0, decision recorded).
- `run_canary(params)`: the loop the DAG runs: each step held `rollout.hold_s` on live figures; a breach
  rolls back and raises CanaryRolledBack (a StageError: the DAG run fails with the reason).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.errors import StageError

if TYPE_CHECKING:
    from pipelines.config import GuardrailParams, Params
    from pipelines.engines.registry import Registry

log = logging.getLogger(__name__)


# decision tag values (free text follows the colon)
RUNNING = "running"
PAUSED = "paused"
ROLLED_BACK = "rolled_back"
PROMOTED = "promoted"

Action = Literal["wait", "hold", "advance", "rollback"]


class CanaryError(StageError):
    """A canary action is impossible (no challenger, challenger == champion, nothing running)."""


class CanaryRolledBack(StageError):
    """The canary was rolled back (guardrail breach, not enough traffic, or aborted); message = reason."""


# ---- pure core ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmStats:
    """Live figures of one arm over a window of the prediction log."""

    n: int = 0
    errors: int = 0
    p99_ms: float = float("nan")
    scores: np.ndarray = field(default_factory=lambda: np.empty(0), compare=False, repr=False)
    labelled: int = 0
    precision: float | None = None
    recall: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able figures (for logs, XCom and the rollout decision)."""
        return {
            "n": self.n,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p99_ms": None if np.isnan(self.p99_ms) else round(float(self.p99_ms), 3),
            "labelled": self.labelled,
            "precision": self.precision,
            "recall": self.recall,
        }


@dataclass(frozen=True)
class Decision:
    """What a canary step does next, and why (the reason is recorded in the registry on rollback)."""

    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def _served_at(log_df: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(log_df["served_at"], utc=True, format="ISO8601")


def arm_stats(
    log_df: pd.DataFrame,
    since: dt.datetime | None = None,
    labels: pd.DataFrame | None = None,
    challenger_version: str | None = None,
) -> dict[str, ArmStats]:
    """Per-arm figures of prediction-log rows served at or after `since`.

    The challenger arm is every request ROUTED to it: answered by it (arm challenger) or, when it failed
    or was too slow, by the champion (`challenger_fallback`): those are its errors, and their latency
    counts too (the client waited for the timeout). With `challenger_version`, rows answered by another
    challenger version (a previous canary) are left out. `labels` (event_id, label) gives
    precision/recall of each arm's decisions where labels arrived.
    """
    empty = {CHAMPION: ArmStats(), CHALLENGER: ArmStats()}
    if log_df is None or log_df.empty:
        return empty
    df = log_df
    if since is not None:
        df = df[(_served_at(df) >= pd.Timestamp(since)).to_numpy()]
    if df.empty:
        return empty
    fallback = df.get("challenger_fallback", pd.Series(False, index=df.index)).fillna(False).astype(bool)
    to_challenger = (df["arm"] == CHALLENGER) | fallback
    if challenger_version is not None:
        stale = (df["arm"] == CHALLENGER) & (df["model_version"].astype(str) != str(challenger_version))
        to_challenger &= ~stale
        keep = ~stale
    else:
        keep = pd.Series(True, index=df.index)
    out: dict[str, ArmStats] = {}
    for arm, mask, err in (
        (CHAMPION, keep & ~to_challenger, None),
        (CHALLENGER, to_challenger, fallback),
    ):
        part = df[mask.to_numpy()]
        n = len(part)
        errors = int(err[mask].sum()) if err is not None else 0
        lat = pd.to_numeric(part["latency_ms"], errors="coerce").dropna().to_numpy(float)
        p99 = float(np.percentile(lat, 99)) if len(lat) else float("nan")
        # figures of the model itself: only rows this arm's release answered
        answered = part if err is None else part[~err[mask].to_numpy()]
        scores = pd.to_numeric(answered["score"], errors="coerce").dropna().to_numpy(float)
        labelled, precision, recall = _precision_recall(answered, labels)
        out[arm] = ArmStats(n, errors, p99, scores, labelled, precision, recall)
    return out


def _precision_recall(
    part: pd.DataFrame, labels: pd.DataFrame | None
) -> tuple[int, float | None, float | None]:
    if labels is None or labels.empty or part.empty or "decision" not in part:
        return 0, None, None
    j = (
        part[["event_id", "decision"]]
        .astype({"event_id": str})
        .merge(
            labels[["event_id", "label"]].astype({"event_id": str}).drop_duplicates("event_id"), on="event_id"
        )
    )
    if j.empty:
        return 0, None, None
    pred = j["decision"].astype(bool).to_numpy()
    y = j["label"].astype(int).to_numpy() == 1
    tp = int((pred & y).sum())
    precision = tp / int(pred.sum()) if pred.any() else None
    recall = tp / int(y.sum()) if y.any() else None
    return len(j), precision, recall


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of `actual` vs `expected` on quantile bins of `expected`."""
    expected = np.asarray(expected, float)
    actual = np.asarray(actual, float)
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # constant champion scores: one bin, PSI only sees mass outside it
        edges = np.array([edges[0] - eps, edges[0] + eps])
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, eps, None), np.clip(a, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def evaluate_step(
    stats: Mapping[str, ArmStats],
    guardrails: GuardrailParams,
    min_requests: int,
    held_s: float = float("inf"),
    hold_s: float = 0.0,
) -> Decision:
    """Decide a canary step from live per-arm figures.

    wait: fewer than `min_requests` challenger-routed requests (no decision on 3 requests);
    rollback: a guardrail breached (reason lists every breach with its figure and limit);
    hold: healthy but the step has been held for less than `hold_s`; advance: healthy and held long enough.
    Comparisons with the champion need `min_requests` champion requests too (at 100% it has none).
    """
    ch = stats.get(CHALLENGER, ArmStats())
    cp = stats.get(CHAMPION, ArmStats())
    figures: dict[str, Any] = {CHALLENGER: ch.summary(), CHAMPION: cp.summary()}
    if ch.n < min_requests:
        return Decision("wait", f"challenger has {ch.n} requests, need {min_requests} to decide", figures)
    g = guardrails
    champion_ok = cp.n >= min_requests
    breaches: list[str] = []
    if ch.error_rate > g.max_error_rate:
        breaches.append(f"challenger error rate {ch.error_rate:.2%} > {g.max_error_rate:.2%}")
    if (
        g.max_error_ratio_vs_champion is not None
        and champion_ok
        and cp.error_rate > 0
        and ch.error_rate > g.max_error_ratio_vs_champion * cp.error_rate
    ):
        breaches.append(
            f"challenger error rate {ch.error_rate:.2%} > {g.max_error_ratio_vs_champion:g}x "
            f"champion's {cp.error_rate:.2%}"
        )
    if not np.isnan(ch.p99_ms) and ch.p99_ms > g.p99_budget_ms:
        breaches.append(f"challenger p99 {ch.p99_ms:.1f} ms > budget {g.p99_budget_ms:g} ms")
    if (
        g.max_p99_ratio_vs_champion is not None
        and champion_ok
        and not np.isnan(cp.p99_ms)
        and ch.p99_ms > g.max_p99_ratio_vs_champion * cp.p99_ms
    ):
        breaches.append(
            f"challenger p99 {ch.p99_ms:.1f} ms > {g.max_p99_ratio_vs_champion:g}x "
            f"champion's {cp.p99_ms:.1f} ms"
        )
    if g.max_psi is not None and champion_ok and len(ch.scores) and len(cp.scores):
        value = psi(cp.scores, ch.scores)
        figures["psi"] = round(value, 6)
        if value > g.max_psi:
            breaches.append(f"score PSI challenger vs champion {value:.3f} > {g.max_psi:g}")
    if breaches:
        return Decision("rollback", "guardrail breach: " + "; ".join(breaches), figures)
    if held_s < hold_s:
        return Decision("hold", f"healthy, held {held_s:.0f}/{hold_s:g} s", figures)
    return Decision("advance", f"healthy over {ch.n} challenger requests", figures)


# ---- actions on the registry -----------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _open(params: Params, reg: Registry | None) -> tuple[Registry, str]:
    from pipelines.engines.registry import open_registry

    return (reg or open_registry(params)), params.register_.model_name


def _challenger(reg: Registry, name: str) -> str:

    version = reg.alias_version(name, CHALLENGER)
    if version is None:
        raise CanaryError(f"{name}: no `challenger` alias: register a release that passed the gates first")
    if version == reg.alias_version(name, CHAMPION):
        raise CanaryError(f"{name}: challenger v{version} is already champion")
    return version


def start_canary(
    params: Params, reg: Registry | None = None, who: str | None = None, unpause: bool = True
) -> dict[str, Any]:
    """Route the first step's share to the challenger (or resume a paused/running canary at its step).

    `unpause=False` (the DAG) leaves a paused canary paused: only an operator's `canary start` resumes it.
    """
    reg, name = _open(params, reg)
    version = _challenger(reg, name)
    state = reg.get_rollout_state(name)
    steps = params.rollout.steps
    # a paused canary, or one whose DAG task is retried, resumes at the registry's step
    decision = state.decision or ""
    same = f" v{version} " in decision  # never resume another version's canary
    if decision.startswith((PAUSED, RUNNING)) and same and state.challenger_weight > 0:
        step = state.step
        if decision.startswith(PAUSED) and not unpause:
            return {"challenger": version, "step": step, "weight": steps[step], "paused": True}
        started = state.started_at or _now()
    else:
        step, started = 0, _now()
    reg.set_rollout_state(
        name,
        who=who,
        challenger_weight=steps[step],
        step=step,
        started_at=started,
        decision=f"{RUNNING}: v{version} at {steps[step]:g}%",
    )
    log.info("canary of v%s: step %d, weight %g%%", version, step, steps[step])
    return {"challenger": version, "step": step, "weight": steps[step]}


def set_step(
    params: Params, step: int, reg: Registry | None = None, who: str | None = None
) -> dict[str, Any]:
    """Move the canary to step `step` of rollout.steps (weight written to the registry)."""
    reg, name = _open(params, reg)
    version = _challenger(reg, name)
    weight = params.rollout.steps[step]
    reg.set_rollout_state(
        name, who=who, challenger_weight=weight, step=step, decision=f"{RUNNING}: v{version} at {weight:g}%"
    )
    return {"challenger": version, "step": step, "weight": weight}


def pause_canary(params: Params, reg: Registry | None = None, who: str | None = None, why: str = "") -> dict:
    """Keep the current weight and stop ramping (the DAG holds, guardrails still apply); start resumes."""
    reg, name = _open(params, reg)
    state = reg.get_rollout_state(name)
    if state.challenger_weight <= 0:
        raise CanaryError(f"{name}: no canary running")
    version = reg.alias_version(name, CHALLENGER)
    why = why or "by operator"
    reg.set_rollout_state(
        name, who=who, decision=f"{PAUSED}: v{version} at {state.challenger_weight:g}% ({why})"
    )
    return {"step": state.step, "weight": state.challenger_weight}


def rollback_canary(params: Params, reason: str, reg: Registry | None = None, who: str | None = None) -> dict:
    """Weight 0 first (serving stops routing), then alias `challenger` removed; reason in tags + history."""

    reg, name = _open(params, reg)
    version = reg.alias_version(name, CHALLENGER)
    reg.set_rollout_state(name, who=who, challenger_weight=0.0, decision=f"{ROLLED_BACK}: {reason}")
    reg.remove_alias(name, CHALLENGER, who=who, why=f"canary rolled back: {reason}")
    log.warning("canary of v%s rolled back: %s", version, reason)
    return {"rolled_back": version, "reason": reason}


def promote_challenger(
    params: Params, reg: Registry | None = None, who: str | None = None, why: str = "canary passed"
) -> dict[str, Any]:
    """champion <- challenger (old champion -> previous), then weight 0 and alias `challenger` removed.

    Order matters for zero failed requests: while champion already points at the new version, a serving
    process that still routes some entities to `challenger` gets the same release either way.
    """

    reg, name = _open(params, reg)
    version = _challenger(reg, name)
    move = reg.promote(name, version, who=who, why=why)
    reg.set_rollout_state(name, who=who, challenger_weight=0.0, decision=f"{PROMOTED}: v{version} ({why})")
    reg.remove_alias(name, CHALLENGER, who=who, why=f"promoted to champion: {why}")
    return {"champion": version, "previous": move.previous}


# ---- the loop the DAG runs -----------------------------------------------------------------------------


def live_stats(
    params: Params, since: dt.datetime, challenger_version: str | None = None
) -> dict[str, ArmStats]:
    """Per-arm figures from the prediction log served since `since` (UTC days from since's date on)."""
    from pipelines.serving_log import read_prediction_log

    frame = read_prediction_log(Path(params.paths.prediction_log), start=since.date())
    return arm_stats(frame, since=since, challenger_version=challenger_version)


def run_canary(
    params: Params,
    reg: Registry | None = None,
    who: str | None = None,
    stats_fn: Callable[[dt.datetime, str], Mapping[str, ArmStats]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Ramp the challenger through rollout.steps; promote on success, roll back (and raise) on a breach.

    Each step: weight written, then every `poll_s` the live figures since the step began are judged by
    evaluate_step (wait / hold / advance / rollback). A step short of `min_requests` after `max_wait_s`
    rolls back. A pause from the CLI freezes the ramp (guardrails still apply); an abort stops the loop.
    """
    reg, name = _open(params, reg)
    cfg = params.rollout
    started = start_canary(params, reg, who=who, unpause=False)
    version = started["challenger"]
    stats_fn = stats_fn or (lambda since, v: live_stats(params, since, v))
    steps_log: list[dict[str, Any]] = []
    step = started["step"]
    while step < len(cfg.steps):
        weight = cfg.steps[step]
        if step != started["step"]:
            set_step(params, step, reg, who=who)
        # figures of this step only: requests served after its weight was written (+ serving's refresh lag)
        since = dt.datetime.now(dt.UTC)
        t0 = clock()
        held = 0.0
        last_poll = t0
        while True:
            sleep(cfg.poll_s)
            now = clock()
            state = reg.get_rollout_state(name)
            if reg.alias_version(name, CHALLENGER) != version or (state.decision or "").startswith(
                ROLLED_BACK
            ):
                raise CanaryRolledBack(f"canary of v{version} aborted outside the DAG: {state.decision}")
            paused = (state.decision or "").startswith(PAUSED)
            if not paused:
                held += now - last_poll
            last_poll = now
            decision = evaluate_step(
                stats_fn(since, version), cfg.guardrails, cfg.min_requests, held, cfg.hold_s
            )
            log.info(
                "step %d (%g%%): %s: %s %s", step, weight, decision.action, decision.reason, decision.figures
            )
            if decision.action == "rollback":
                reason = f"step {step} ({weight:g}%): {decision.reason}"
                rollback_canary(params, reason, reg, who=who)
                raise CanaryRolledBack(f"canary of v{version} rolled back at {reason}")
            if decision.action == "wait" and now - t0 > cfg.max_wait_s:
                reason = (
                    f"step {step} ({weight:g}%): not enough traffic after {cfg.max_wait_s:g} s "
                    f"({decision.reason})"
                )
                rollback_canary(params, reason, reg, who=who)
                raise CanaryRolledBack(f"canary of v{version} rolled back at {reason}")
            if decision.action == "advance" and not paused:
                steps_log.append(
                    {"step": step, "weight": weight, "held_s": round(held, 3), **decision.figures}
                )
                break
        step += 1
    promoted = promote_challenger(params, reg, who=who, why=f"canary passed {len(cfg.steps)} steps")
    return {**promoted, "steps": steps_log}
