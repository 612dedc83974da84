"""
### ingestion: event days from the source and the landing store into validated partitions

Two kinds of run, one at a time (`max_active_runs=1`, so they never write the same day at once):

- **daily**, with catchup from `airflow.start_date` (else `data.start`) in params.yaml: the run's data
  interval `[start, end)`, or `start`/`end` from the trigger form;
- **landed**: when the ingestion service (`make serve-ingest`) lands events or labels. After each commit
  that landed something new it creates an empty flag file beside its store (`<ingest.landing.store>.landed`);
  the asset `sluice://landing/events` watches that file with Airflow's stock `FileDeleteTrigger` (an
  `AssetWatcher`, run by the triggerer every `airflow.landing_poke_s`), which deletes it and emits an asset
  event: event-driven scheduling, and nothing ever polls the service. A run without dates (these, or a
  manual trigger with no logical date) ingests the days the landing store says no ingest run has taken:
  events landed for them, or labels posted after their last run. With nothing new the tasks are skipped.
  The flag only wakes the DAG: what to ingest is read from the store, so a flag raised twice costs at most
  an empty run, and events landing during a run raise it again for the next one.

1. **ingest**: `pipelines.ingest.run` reads the source (synthetic generator or the CSV/Parquet log) plus the
   day's landed events and rewrites `data/raw/date=D/` whole (a rerun gives the same bytes).
2. **validate** (the gate): `pipelines.validate.run` checks what ingest wrote against the GX suite. A
   failing day is moved to `data/quarantine/` with its report, this task fails at once (no retries: the
   data will not change by waiting) and its log says which expectation failed. Nothing downstream runs.

On success the validate task emits the asset `sluice://validated/transactions` with `{"start", "end",
"ranges"}` in the event extra; the **features** DAG is scheduled on it.

Backfill a range with `airflow backfill create --dag-id ingestion --from-date A --to-date B`, or trigger
with `start`/`end` in the form to process a range in one run: rerunning a date replaces its partitions.
"""

from __future__ import annotations

from _common import (
    DEFAULT_ARGS,
    RANGE_PARAMS,
    VALIDATED,
    ingest_ranges,
    landing_asset,
    ranges_from_extras,
    run_stage_ranges,
    start_date,
)
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, dag, task


def _schedule() -> object:
    """Daily data intervals, OR the landing flag's asset when the landing store is on."""
    # a data-interval timetable, not "@daily" (a CronTriggerTimetable in Airflow 3 with empty intervals)
    daily = CronDataIntervalTimetable("@daily", timezone="UTC")
    landed = landing_asset()
    return daily if landed is None else AssetOrTimeSchedule(timetable=daily, assets=landed)


@dag(
    dag_id="ingestion",
    schedule=_schedule(),
    start_date=start_date(),
    catchup=True,
    # in order, one run at a time: features of day D read the days before it (backfills may override),
    # and a landed run never rewrites a day a daily run is writing
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "ingestion", "data"],
)
def ingestion() -> None:
    @task
    def ingest() -> list:
        return run_stage_ranges("ingest", ingest_ranges())

    @task(outlets=[VALIDATED])
    def validate(ingested: list) -> list:
        # the ranges ingest wrote (its summaries' start/end): the pending days are gone once it ran
        return run_stage_ranges("validate", ranges_from_extras(ingested), outlet=VALIDATED)

    validate(ingest())  # type: ignore[arg-type]  # TaskFlow hands the XCom value over at run time


ingestion()
