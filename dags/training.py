"""
### training: dataset, train, evaluate (gate), register as challenger, champion gate

Runs when triggered by hand, on `airflow.training_schedule` from params.yaml (when set), or when the
retraining asset `sluice://retrain` gets an event (the monitoring DAG emits it on drift).

Training range, first that applies: `start`/`end` from the trigger form; the retrain event's extra
(`start`, `end`); for scheduled runs the `airflow.training_window_days` before the interval end;
else `data.start`/`data.end` from params.yaml.

1. **dataset**: `pipelines.dataset.run`: Feast point-in-time features for the labelled events, split
   by time into train/valid/test.
2. **train**: `pipelines.train.run`: preprocessor + model as one MLflow release.
3. **evaluate**: `pipelines.evaluate.run`: metrics and the offline gates; a failed gate fails the task
   at once (no retries) and nothing is registered.
4. **register**: `pipelines.register.run`: a registered model version with alias `challenger`.
5. **champion_gate**: `pipelines.champion_gate.run`: the challenger must beat the champion on the same
   test window (by `rollout.gate.margin`) and pass behavioural checks (invariance, directional,
   minimum functionality); failing removes the `challenger` alias and fails the task. Passing emits
   `sluice://challenger/gated`, which starts the `canary_rollout` DAG.
"""

from __future__ import annotations

from _common import (
    DEFAULT_ARGS,
    GATED,
    RANGE_PARAMS,
    RETRAIN,
    load,
    run_stage,
    start_date,
    training_range,
)
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, dag, task


def _schedule() -> object:
    """The retrain asset, or (with airflow.training_schedule set) the asset OR that cron schedule."""
    cron = load().airflow.training_schedule
    if not cron:
        return RETRAIN
    return AssetOrTimeSchedule(timetable=CronDataIntervalTimetable(cron, timezone="UTC"), assets=RETRAIN)


@dag(
    dag_id="training",
    schedule=_schedule(),
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=RANGE_PARAMS,
    doc_md=__doc__,
    tags=["sluice", "training", "mlflow"],
)
def training() -> None:
    @task
    def dataset() -> dict:
        return run_stage("dataset", *training_range())

    @task
    def train() -> dict:
        return run_stage("train", *training_range())

    @task
    def evaluate() -> dict:
        return run_stage("evaluate", *training_range())

    @task
    def register() -> dict:
        return run_stage("register", *training_range())

    @task(outlets=[GATED])
    def champion_gate() -> dict:
        return run_stage("champion_gate", *training_range(), outlet=GATED)

    dataset() >> train() >> evaluate() >> register() >> champion_gate()


training()
