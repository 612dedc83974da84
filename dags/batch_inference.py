"""
### batch_inference: score each day with the champion release

Daily on its data interval `[start, end)` (no catchup: use a backfill for past days, which needs their
features and a champion). `pipelines.batch_predict.run` loads the release by alias
(`batch_predict.alias`, default `champion`) once per Spark Python worker and writes
`data/predictions/date=D/`, each partition replaced atomically, so a rerun replaces the day's scores.
A missing input (no features for the day, no champion yet) fails at once with the reason in the log.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, RANGE_PARAMS, interval, run_stage, start_date
from airflow.sdk import CronDataIntervalTimetable, dag, task


@dag(
    dag_id="batch_inference",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "inference", "spark"],
)
def batch_inference() -> None:
    @task
    def batch_predict() -> dict:
        return run_stage("batch_predict", *interval())

    batch_predict()


batch_inference()
