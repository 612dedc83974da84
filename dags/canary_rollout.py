"""
### canary_rollout: ramp the challenger on live traffic, roll back on a guardrail breach, else promote

Triggered by the `sluice://challenger/gated` asset (the training DAG's champion gate passed), or by hand.
One task, a thin call into `pipelines.ops.rollout.run_canary`: for each weight of `rollout.steps`
(default 5 -> 20 -> 50 -> 100 %) it writes the registry's rollout tags (the serving process re-reads them
every `serve.refresh_s`), then every `rollout.poll_s` reads the live per-arm figures of the step from the
prediction log (error rate, p99 latency, score PSI vs champion, precision/recall where labels arrived).

- no decision before `rollout.min_requests` challenger requests; a step still short after
  `rollout.max_wait_s` rolls back;
- a guardrail breach (`rollout.guardrails`) rolls back at once: weight 0, alias `challenger` removed,
  reason in the rollout tags and the alias history; the run FAILS with that reason (no retries);
- each step healthy for `rollout.hold_s`: the next one; after 100 %: `champion` <- challenger, the old
  champion -> `previous`.

`sluice canary pause` freezes the ramp (guardrails still apply), `sluice canary start` resumes,
`sluice canary abort --reason ...` rolls back and this run fails. A retried task resumes at the
registry's current step.
"""

from __future__ import annotations

import datetime as dt

from _common import DEFAULT_ARGS, GATED, load
from airflow.sdk import dag, task


def _timeout() -> dt.timedelta:
    """Every step may wait for traffic and then hold; an hour of slack for polls and refresh lag."""
    r = load().rollout
    return dt.timedelta(seconds=len(r.steps) * (r.max_wait_s + r.hold_s) + 3600)


@dag(
    dag_id="canary_rollout",
    # a challenger that passed the offline gate starts the canary; it can also be triggered by hand
    schedule=[GATED],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "execution_timeout": _timeout()},
    doc_md=__doc__,
    tags=["sluice", "rollout", "mlflow"],
)
def canary_rollout() -> None:
    @task
    def canary() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.errors import StageError
        from pipelines.ops.rollout import run_canary

        try:
            return run_canary(load(), who="airflow:canary_rollout")
        except StageError as err:  # rolled back or nothing to roll out: deterministic, never retried
            raise AirflowFailException(f"canary_rollout failed ({type(err).__name__}): {err}") from err

    canary()


canary_rollout()
