"""Behavioural checks of a scorer, declared as data: invariance, directional and minimum functionality.

The cases live in a YAML file a data scientist edits (params `rollout.gate.behaviour_cases`, shipped as
expectations/behaviour.yaml); this module only knows the small vocabulary of edits that turn copies of
real test rows into a case (scale, set, swapcase, from another column, time of day, seconds before).
Tolerances stay in params (`rollout.gate.*`). Nothing here knows the use case.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.contract import LABEL
from pipelines.declared import load_declared

if TYPE_CHECKING:
    from pipelines.sections import ChampionGateParams

ScoreFn = Callable[[pd.DataFrame], np.ndarray]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Edit(_Strict):
    """One column rewrite; exactly one of scale / set / swapcase / from / time_of_day / seconds_before."""

    scale: float | None = None
    set: Any = None
    swapcase: bool | None = None
    from_: str | None = Field(None, alias="from")
    fallback: str | None = None
    times: float | None = None
    plus: float | None = None
    clip: tuple[float, float] | None = None
    time_of_day: str | None = None
    seconds_before: str | None = None
    seconds: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Edit:
        kinds = [
            k
            for k in ("scale", "set", "swapcase", "from_", "time_of_day", "seconds_before")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "an edit needs exactly one of scale, set, swapcase, from, time_of_day, seconds_before; "
                f"got {[k.rstrip('_') for k in kinds] or 'none'}"
            )
        if self.seconds_before is not None and self.seconds is None:
            raise ValueError("seconds_before needs `seconds`")
        if self.time_of_day is not None:
            pd.Timedelta(f"{self.time_of_day}:00")  # "HH:MM"; raises ValueError naming the value
        return self

    def reads(self) -> list[str]:
        """Columns this edit reads besides its own (all must exist for it to apply)."""
        return [c for c in (self.from_, self.seconds_before) if c is not None]


class Case(_Strict):
    name: str
    detail: str = ""
    edit: dict[str, Edit]


class InvarianceSet(_Strict):
    rows: int = Field(500, gt=0)
    cases: list[Case] = []


class DirectionalSet(_Strict):
    rows: int = Field(500, gt=0)
    max_drop: float = Field(0.01, ge=0)
    cases: list[Case] = []


class MinimumFunctionality(_Strict):
    rows: int = Field(50, gt=0)
    positive: Case
    negative: Case


class BehaviourSuite(_Strict):
    """The whole file."""

    invariance: InvarianceSet = InvarianceSet()
    directional: DirectionalSet = DirectionalSet()
    minimum_functionality: MinimumFunctionality | None = None
    source: str = ""  # the file it came from, for messages (not in the file)


def load_suite(path: Path) -> BehaviourSuite:
    """Read and validate a behaviour file; StageError naming the file and the offending field."""
    return load_declared(
        path, BehaviourSuite, "behaviour cases", "rollout.gate.behaviour_cases", source=str(path)
    )


# ---- applying edits ---------------------------------------------------------------------------------


def _edited(out: pd.DataFrame, col: str, e: Edit) -> Any:
    """The new value of `col` under edit `e` (out already holds the earlier edits)."""
    if e.scale is not None:
        return out[col].astype(float) * e.scale
    if e.swapcase:
        return out[col].astype("string").str.swapcase().astype(object)
    if e.from_ is not None:
        return _derived(out, e)
    if e.time_of_day is not None:
        day = pd.to_datetime(out[col], utc=True).dt.floor("D")
        return day + pd.Timedelta(f"{e.time_of_day}:00")
    if e.seconds_before is not None:
        return pd.to_datetime(out[e.seconds_before], utc=True).astype("int64") / 1e9 - float(e.seconds or 0)
    return e.set


def _derived(out: pd.DataFrame, e: Edit) -> Any:
    """`from` with optional fallback, times, plus and clip; a plain `from` copies the column as it is."""
    assert e.from_ is not None
    if e.fallback is None and e.times is None and e.plus is None and e.clip is None:
        return out[e.from_]
    if e.from_ in out:
        value = out[e.from_].astype(float)
        if e.fallback is not None:
            value = value.fillna(out[e.fallback].astype(float))
    else:
        value = out[e.fallback]
    if e.times is not None:
        value = value * e.times
    if e.plus is not None:
        value = value + e.plus
    if e.clip is not None:
        value = np.clip(value, *e.clip)
    return value


def _applies(frame: pd.DataFrame, col: str, e: Edit) -> bool:
    if col not in frame:
        return False
    if e.from_ is not None and e.fallback is not None:
        return e.from_ in frame or e.fallback in frame
    return all(c in frame for c in e.reads())


def apply_case(frame: pd.DataFrame, case: Case) -> pd.DataFrame | None:
    """A copy of `frame` with the case's edits applied in order; None when none applies to these rows."""
    out = frame.copy()
    applied = 0
    for col, e in case.edit.items():
        if _applies(out, col, e):
            out[col] = _edited(out, col, e)
            applied += 1
    return out if applied else None


# ---- the checks -------------------------------------------------------------------------------------


def _scores(score: ScoreFn, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(score(frame), float)


def invariance(
    score: ScoreFn, frame: pd.DataFrame, suite: BehaviourSuite, tolerance: float
) -> dict[str, Any]:
    """Largest |score change| over the invariance cases; ok when within `tolerance`."""
    rows = frame.head(suite.invariance.rows).reset_index(drop=True)
    base = _scores(score, rows)
    changes, details, skipped = [], [], []
    for case in suite.invariance.cases:
        edited = apply_case(rows, case)
        if edited is None:
            skipped.append(f"{case.name}: no column {sorted(case.edit)}")
            continue
        changes.append(float(np.max(np.abs(_scores(score, edited) - base))) if len(rows) else 0.0)
        details.append(case.detail or case.name)
    if not changes:
        return {"ok": True, "skipped": "; ".join(skipped) or "no invariance case"}
    worst = max(changes)
    return {"ok": worst <= tolerance, "max_abs_change": worst, "detail": "; ".join(details)}


def directional(
    score: ScoreFn, frame: pd.DataFrame, suite: BehaviourSuite, max_violations: float
) -> dict[str, Any]:
    """Largest share of rows whose score drops by more than `max_drop` over the directional cases."""
    rows = frame.head(suite.directional.rows).reset_index(drop=True)
    base = _scores(score, rows)
    shares, details = [], []
    for case in suite.directional.cases:
        edited = apply_case(rows, case)
        if edited is None:
            continue
        moved = _scores(score, edited)
        shares.append(float(np.mean(moved < base - suite.directional.max_drop)) if len(rows) else 0.0)
        details.append(case.detail or case.name)
    if not shares:
        return {"ok": True, "skipped": "no directional case applies"}
    worst = max(shares)
    return {"ok": worst <= max_violations, "violation_share": worst, "detail": "; ".join(details)}


def obvious_cases(frame: pd.DataFrame, suite: BehaviourSuite) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(obvious positives, obvious negatives) made from the first negative rows of `frame`."""
    mft = suite.minimum_functionality
    if mft is None:
        empty = frame.head(0)
        return empty, empty
    base = frame[frame[LABEL] == 0] if LABEL in frame else frame
    base = base.head(mft.rows)
    positive = apply_case(base, mft.positive)
    negative = apply_case(base, mft.negative)
    return (
        (base if positive is None else positive).reset_index(drop=True),
        (base if negative is None else negative).reset_index(drop=True),
    )


def minimum_functionality(
    score: ScoreFn, frame: pd.DataFrame, threshold: float, suite: BehaviourSuite, cfg: ChampionGateParams
) -> dict[str, Any]:
    """Share of obvious positives flagged and of obvious negatives flagged at `threshold`."""
    if suite.minimum_functionality is None:
        return {"ok": True, "skipped": "no minimum functionality cases"}
    pos, neg = obvious_cases(frame, suite)
    pos_flag = float(np.mean(_scores(score, pos) >= threshold)) if len(pos) else 0.0
    neg_flag = float(np.mean(_scores(score, neg) >= threshold)) if len(neg) else 0.0
    return {
        "ok": pos_flag >= cfg.mft_min_fraud_flagged and neg_flag <= cfg.mft_max_legit_flagged,
        "fraud_flagged": pos_flag,
        "legit_flagged": neg_flag,
        "cases": len(pos) + len(neg),
    }


def behavioural_checks(
    score: ScoreFn, frame: pd.DataFrame, threshold: float, cfg: ChampionGateParams, suite: BehaviourSuite
) -> dict[str, dict[str, Any]]:
    """Invariance, directional and minimum-functionality results of one scorer on test rows."""
    return {
        "invariance": invariance(score, frame, suite, cfg.invariance_tolerance),
        "directional": directional(score, frame, suite, cfg.directional_max_violations),
        "minimum_functionality": minimum_functionality(score, frame, threshold, suite, cfg),
    }
