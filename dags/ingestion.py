"""
### ingestion: one event day from the source into validated partitions

Daily, with catchup from `airflow.start_date` (else `data.start`) in params.yaml; each run processes its
data interval `[start, end)`:

1. **ingest**: `pipelines.ingest.run` reads the source (synthetic generator or the CSV/Parquet log) and
   rewrites `data/raw/date=D/` whole.
2. **validate** (the gate): `pipelines.validate.run` checks the partition against the GX suite. A failing
   day is moved to `data/quarantine/` with its report, this task fails at once (no retries: the data will
   not change by waiting) and its log says which expectation failed. Nothing downstream runs.

On success the validate task emits the asset `sluice://validated/transactions` with `{"start", "end"}`
in the event extra; the **features** DAG is scheduled on it.

Backfill a range with `airflow backfill create --dag-id ingestion --from-date A --to-date B`, or trigger
with `start`/`end` in the form to process a range in one run: rerunning a date replaces its partitions.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, RANGE_PARAMS, VALIDATED, interval, run_stage, start_date
from airflow.sdk import CronDataIntervalTimetable, dag, task


@dag(
    dag_id="ingestion",
    # a data-interval timetable, not "@daily" (a CronTriggerTimetable in Airflow 3 with empty intervals)
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=start_date(),
    catchup=True,
    # in order, one day at a time: features of day D read the days before it (backfills may override)
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "ingestion", "data"],
)
def ingestion() -> None:
    @task
    def ingest() -> dict:
        return run_stage("ingest", *interval())

    @task(outlets=[VALIDATED])
    def validate() -> dict:
        return run_stage("validate", *interval(), outlet=VALIDATED)

    ingest() >> validate()


ingestion()
