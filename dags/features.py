"""
### features: Spark features and Feast materialization of newly validated days

Scheduled on the asset `sluice://validated/transactions` (emitted by **ingestion**). An asset-triggered
run has no data interval of its own in Airflow 3: the dates come from the triggering events' extra
(`start`, `end`); events queued while a run was busy are merged into contiguous ranges, processed in order.
A manual trigger takes `start`/`end` from the form.

1. **features**: `pipelines.features.run` computes point-in-time per-entity aggregates into
   `data/features/date=D/` (reads `features.history_days` of validated history before the range).
2. **materialize**: `pipelines.feature_store.run` applies `feature_repo/` and materializes the range into
   the online store.

Emits `sluice://features/entity_activity` with the processed range on success.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, FEATURES, RANGE_PARAMS, VALIDATED, run_ranges, run_stage_ranges
from airflow.sdk import dag, task


@dag(
    dag_id="features",
    schedule=VALIDATED,
    catchup=False,
    # ranges are processed in date order; two runs at once could compute day D before D-1 exists
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "features", "feast"],
)
def features() -> None:
    @task
    def compute_features() -> list:
        return run_stage_ranges("features", run_ranges(VALIDATED))

    @task(outlets=[FEATURES])
    def materialize() -> list:
        return run_stage_ranges("feature_store", run_ranges(VALIDATED), outlet=FEATURES)

    compute_features() >> materialize()


features()
