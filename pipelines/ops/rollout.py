"""Canary rollout of the challenger: live per-arm figures, guardrails, ramp, rollback and promotion.

The registry is the one source of truth (DESIGN.md section 4): the canary only writes the `rollout.*`
tags (challenger_weight, step, started_at, decision) and moves aliases; the serving process re-reads them
every `serve.refresh_s` and routes `bucket(entity) < weight` to the challenger. The Airflow DAG
`canary_rollout`, the `sluice canary` CLI and the tests all call the functions below.

- The figures and the step decision are pipelines.ops.guardrails (pure).
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.errors import StageError
from pipelines.ops.guardrails import ArmStats, arm_stats, evaluate_step

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.engines.registry import Registry, RolloutState

log = logging.getLogger(__name__)


# decision tag values (free text follows the colon)
RUNNING = "running"
PAUSED = "paused"
ROLLED_BACK = "rolled_back"
PROMOTED = "promoted"


class CanaryError(StageError):
    """A canary action is impossible (no challenger, challenger == champion, nothing running)."""


class CanaryRolledBack(StageError):
    """The canary was rolled back (guardrail breach, not enough traffic, or aborted); message = reason."""


# ---- pure core ------------------------------------------------------------------------------------


def step_at_least(steps: list[float], weight: float) -> int:
    """Index of the first step whose weight is >= `weight` (steps end at 100, so one always is)."""
    return next((i for i, w in enumerate(steps) if w >= weight), len(steps) - 1)


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
        # a weight set outside the ramp (a deploy at 30%) continues at the first step at or above it:
        # resuming never lowers the challenger's traffic, nor restarts at step 0
        step = min(max(state.step, step_at_least(steps, state.challenger_weight)), len(steps) - 1)
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
    from pipelines.artifacts import read_prediction_log

    frame = read_prediction_log(Path(params.paths.prediction_log), start=since.date())
    return arm_stats(frame, since=since, challenger_version=challenger_version)


def _ensure_ours(reg: Registry, name: str, version: str, started_at: str | None) -> RolloutState:
    """The rollout state, unless the canary was taken from this loop (raises CanaryRolledBack then).

    Taken: alias `challenger` moved, a rollback (abort) was recorded, or `started_at` changed (a deploy
    restarted the canary). Checked again right before each write, as the registry has no compare-and-set.
    """
    state = reg.get_rollout_state(name)
    restarted = started_at is not None and state.started_at != started_at
    if (
        reg.alias_version(name, CHALLENGER) != version
        or (state.decision or "").startswith(ROLLED_BACK)
        or restarted
    ):
        raise CanaryRolledBack(f"canary of v{version} aborted outside the DAG: {state.decision}")
    return state


def _hold_step(
    params: Params,
    reg: Registry,
    version: str,
    step: int,
    stats_fn: Callable[[dt.datetime, str], Mapping[str, ArmStats]],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    who: str | None = None,
    started_at: str | None = None,
) -> dict[str, Any]:
    """Poll one step until it is held healthy for hold_s (its figures returned) or rolls back (raises).

    `started_at`: this canary's start in the registry; another value means a deploy restarted the
    canary (same or another version) and this loop must stop without touching the state.
    """
    name, cfg = params.register_.model_name, params.rollout
    weight = cfg.steps[step]
    # figures of this step only: requests served after its weight was written (+ serving's refresh lag)
    since = dt.datetime.now(dt.UTC)
    t0 = last_poll = clock()
    held = 0.0
    while True:
        sleep(cfg.poll_s)
        now = clock()
        state = _ensure_ours(reg, name, version, started_at)
        paused = (state.decision or "").startswith(PAUSED)
        if not paused:
            held += now - last_poll
        last_poll = now
        decision = evaluate_step(stats_fn(since, version), cfg.guardrails, cfg.min_requests, held, cfg.hold_s)
        log.info(
            "step %d (%g%%): %s: %s %s", step, weight, decision.action, decision.reason, decision.figures
        )
        why = None
        if decision.action == "rollback":
            why = decision.reason
        elif decision.action == "wait" and now - t0 > cfg.max_wait_s:
            why = f"not enough traffic after {cfg.max_wait_s:g} s ({decision.reason})"
        if why is not None:
            reason = f"step {step} ({weight:g}%): {why}"
            _ensure_ours(reg, name, version, started_at)  # never roll back a deploy made meanwhile
            rollback_canary(params, reason, reg, who=who)
            raise CanaryRolledBack(f"canary of v{version} rolled back at {reason}")
        if decision.action == "advance" and not paused:
            return {"step": step, "weight": weight, "held_s": round(held, 3), **decision.figures}


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
    A running or paused canary of the challenger (a retried task, a deploy's weight) is resumed at the
    first step whose weight is at least the registry's, never at step 0; a deploy that restarts the
    canary meanwhile (new `started_at`) stops this loop.
    """
    reg, name = _open(params, reg)
    cfg = params.rollout
    started = start_canary(params, reg, who=who, unpause=False)
    version = started["challenger"]
    started_at = reg.get_rollout_state(name).started_at
    figures = stats_fn or (lambda since, v: live_stats(params, since, v))
    steps_log: list[dict[str, Any]] = []
    for step in range(started["step"], len(cfg.steps)):
        if step != started["step"]:
            _ensure_ours(reg, name, version, started_at)
            set_step(params, step, reg, who=who)
        steps_log.append(_hold_step(params, reg, version, step, figures, sleep, clock, who, started_at))
    _ensure_ours(reg, name, version, started_at)
    promoted = promote_challenger(params, reg, who=who, why=f"canary passed {len(cfg.steps)} steps")
    return {**promoted, "steps": steps_log}
