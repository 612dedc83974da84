"""Canary guardrails: live per-arm figures from the prediction log, and the step decision they lead to.

Pure: `arm_stats(log, since, labels)` turns prediction-log rows into per-arm figures (requests, errors =
challenger requests answered by the champion's fallback, p99 latency, scores, precision/recall where labels
arrived); `psi(expected, actual)`; `evaluate_step(stats, guardrails, min_requests, ...)` ->
Decision(wait | hold | advance | rollback, reason). pipelines.ops.rollout acts on the decision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from pipelines.contract import CHALLENGER, CHAMPION, EVENT_ID, LABEL

if TYPE_CHECKING:
    from pipelines.sections import GuardrailParams

Action = Literal["wait", "hold", "advance", "rollback"]


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
        part[[EVENT_ID, "decision"]]
        .astype({EVENT_ID: str})
        .merge(labels[[EVENT_ID, LABEL]].astype({EVENT_ID: str}).drop_duplicates(EVENT_ID), on=EVENT_ID)
    )
    if j.empty:
        return 0, None, None
    pred = j["decision"].astype(bool).to_numpy()
    y = j[LABEL].astype(int).to_numpy() == 1
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
