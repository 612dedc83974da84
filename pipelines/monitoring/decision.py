"""The retrain decision: thresholds crossed (drift, live quality), debounced by a cooldown in data time.

The last retrain is kept in reports/monitoring/state.json (`load_state` / `state_record`), so reruns and
backfills of the same window agree. `retrain_extra` turns a monitor run's summary into the extra of the
`sluice://retrain` asset event (the training window and why), which the monitoring DAG emits.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.sections import MonitorParams

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Decision:
    retrain: bool
    triggered: bool  # thresholds crossed (retrain unless in cooldown)
    reasons: list[str]
    suppressed_by_cooldown: bool
    last_retrain: str | None
    window_start: str | None
    window_end: str | None


def _live_reasons(live: dict[str, Any], cfg: MonitorParams) -> list[str]:
    """Live quality below the gates, judged only on enough arrived labels and positives."""
    overall = live.get("overall")
    if not (overall and overall["n"] >= cfg.min_labels and overall["positives"] >= cfg.min_positives):
        return []
    reasons: list[str] = []
    if overall["pr_auc"] is not None and overall["pr_auc"] < cfg.pr_auc_min:
        reasons.append(f"live pr_auc {overall['pr_auc']:.3f} < {cfg.pr_auc_min}")
    if overall["recall"] is not None and overall["recall"] < cfg.recall_min:
        reasons.append(f"live recall {overall['recall']:.3f} < {cfg.recall_min}")
    return reasons


def retrain_reasons(drift: dict[str, Any], live: dict[str, Any], cfg: MonitorParams) -> list[str]:
    """Why to retrain: dataset drift, prediction drift (if enabled), live quality below the gates."""
    reasons: list[str] = []
    if drift.get("dataset_drift"):
        reasons.append(
            f"dataset drift: {drift['n_drifted']}/{drift['n_features']} features drifted "
            f"(share {drift['drift_share']:.2f} >= {cfg.drift_share})"
        )
    if cfg.retrain_on_prediction_drift and drift.get("prediction_drift"):
        reasons.append("prediction (score) drift")
    return reasons + _live_reasons(live, cfg)


def decide_retrain(
    drift: dict[str, Any],
    live: dict[str, Any],
    as_of: dt.date,
    last_retrain: dt.date | None,
    cfg: MonitorParams,
) -> Decision:
    """Retrain when dataset drift, prediction drift (if enabled) or live quality below the gates, unless a
    retrain was decided less than cooldown_days before `as_of` (data time: reruns and backfills agree)."""
    reasons = retrain_reasons(drift, live, cfg)
    triggered = bool(reasons)
    cooling = (
        last_retrain is not None and abs((as_of - last_retrain).total_seconds()) < cfg.cooldown_days * 86400
    )
    retrain = triggered and not cooling
    start = as_of - dt.timedelta(days=cfg.retrain_window_days)
    return Decision(
        retrain=retrain,
        triggered=triggered,
        reasons=reasons,
        suppressed_by_cooldown=triggered and cooling,
        last_retrain=last_retrain.isoformat() if last_retrain else None,
        window_start=start.isoformat() if retrain else None,
        window_end=as_of.isoformat() if retrain else None,
    )


def _as_date(value: str) -> dt.date:
    """The date of an ISO date or datetime string."""
    return dt.date.fromisoformat(value[:10])


def load_state(directory: Path) -> dict[str, Any]:
    """The monitor's state file under `directory` ({} before the first retrain)."""
    path = directory / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def last_retrain(state: dict[str, Any]) -> dt.date | None:
    """The data date of the last retrain decision in a state file, None when there was none."""
    return _as_date(state["last_retrain"]) if state.get("last_retrain") else None


def state_record(end: dt.date, decision: Decision) -> dict[str, Any]:
    """What the state file records when a run decides to retrain (its window end is the retrain's date)."""
    return {"last_retrain": end.isoformat(), "window": [decision.window_start, decision.window_end]}


def retrain_extra(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The retrain asset event's extra from a run() summary (training window + why), None = no retrain."""
    if not summary.get("retrain") or not summary.get("retrain_window"):
        return None
    start, end = summary["retrain_window"]
    return {
        "start": start,
        "end": end,
        "reasons": list(summary.get("reasons") or []),
        "monitored": summary["date"],
    }
