"""
### monitoring: drift + live metrics on the prediction log; emits the retrain asset when needed

On `monitor.schedule` from params.yaml (default daily), for the run's data interval `[start, end)`
(or `start`/`end` from the trigger form):

1. **monitor**: `pipelines.monitor.run`: Evidently drift of the champion's inputs and scores (reference =
   its training window) against the prediction log (or batch predictions), missing-value/range checks,
   live precision/recall/PR AUC/calibration per model version and arm from late labels, a retrain
   decision with a cooldown (`monitor.cooldown_days`). The interval is monitored as given (the test-window
   default is for a run over exactly data.start..data.end, what `dvc repro` passes). Adds the day's run to
   the Evidently workspace
   (`monitor.workspace`; its dashboard: `make monitor-ui`) and writes `reports/monitoring/<date>/`
   (Evidently HTML + summary.json) and `reports/monitoring/metrics.prom`.
2. **retrain**: only when the decision says so (otherwise skipped, which emits nothing): emits
   `sluice://retrain` with extra `start`/`end` = the `monitor.retrain_window_days` before the window end,
   which triggers the `training` DAG. The new version is only a challenger: the offline gate and the
   canary still decide whether it ever serves.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, RANGE_PARAMS, RETRAIN, interval, load, run_stage, start_date
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task


@dag(
    dag_id="monitoring",
    schedule=CronDataIntervalTimetable(load().monitor.schedule, timezone="UTC"),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "monitoring", "evidently"],
)
def monitoring() -> None:
    @task
    def monitor() -> dict:
        return run_stage("monitor", *interval())

    @task(outlets=[RETRAIN])
    def retrain(summary: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.monitoring.decision import retrain_extra

        extra = retrain_extra(summary)
        if extra is None:  # a skipped task emits no asset event: no retrain
            raise AirflowSkipException(f"no retrain: {summary.get('reasons') or 'no threshold crossed'}")
        get_current_context()["outlet_events"][RETRAIN].extra = extra
        return extra

    retrain(monitor())  # type: ignore[arg-type]  # TaskFlow hands the XCom value over at run time


monitoring()
