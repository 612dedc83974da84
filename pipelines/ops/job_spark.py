"""Spark for a batch job's runner: staging its input as tasks, and its progress from the status tracker.

Progress is Spark's: the scoring action runs in a job group whose stages' completed / total tasks
(statusTracker) give the percentage; the input is staged as one file per task (about batch_size rows
each, at most MAX_TASKS files) so the fraction moves as rows get scored; eta = elapsed x remaining /
completed tasks. While the action runs, progress goes to job.json through the runner's Reporter
(pipelines.ops.job_store), and a cancel request cancels the Spark job group. The runner itself, and
its phases, are pipelines.ops.batch_job.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import write_table
from pipelines.ops.job_store import Cancelled, Reporter

if TYPE_CHECKING:
    import pandas as pd

MAX_TASKS = 200  # Spark tasks (= staged input files): the progress resolution, bounded scheduling overhead


def task_count(rows: int, batch_size: int, parallelism: int) -> int:
    """Spark tasks for `rows`: one per batch_size rows, at least one per core, at most MAX_TASKS."""
    return max(1, min(rows, MAX_TASKS, max(parallelism, math.ceil(rows / batch_size))))


def stage_input(frame: pd.DataFrame, folder: Path, tasks: int) -> list[Path]:
    """Write `frame` as `tasks` Parquet files of consecutive rows (one Spark task each)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    size = math.ceil(table.num_rows / tasks)
    folder.mkdir(parents=True)
    files = []
    for i, offset in enumerate(range(0, table.num_rows, size)):
        write_table(table.slice(offset, size), folder / f"part-{i:05d}.parquet")
        files.append(folder / f"part-{i:05d}.parquet")
    return files


@contextlib.contextmanager
def scoped_conf(spark: Any, conf: dict[str, str]) -> Iterator[None]:
    """Set session confs for the actions run inside, then put them back (the session may be shared)."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def spark_context(spark: Any) -> Any:
    """The SparkContext, or None for a Spark Connect session (no status tracker: progress stays 0 until
    the end; cancel interrupts the job by tag)."""
    try:
        return spark.sparkContext
    except Exception:  # pyspark's Connect session raises its own not-implemented error
        return None


def spark_tasks(spark: Any, group: str) -> tuple[int, int]:
    """(completed, total) tasks of the stages of `group`'s Spark jobs so far, from the status tracker."""
    sc = spark_context(spark)
    if sc is None:
        return 0, 0
    tracker = sc.statusTracker()
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job is not None else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done, total = done + stage.numCompletedTasks, total + stage.numTasks
    return done, total


def progress_fields(done: int, total: int, elapsed: float) -> dict[str, Any]:
    """progress (percent of tasks completed) and eta (at the rate measured so far; None before any)."""
    done = min(done, total)
    eta = round(elapsed * (total - done) / done, 1) if done else None
    return {
        "progress": round(100.0 * done / total, 1),
        "eta_seconds": eta,
        "tasks_done": done,
        "tasks": total,
    }


def run_tracked(spark: Any, group: str, action: Callable[[], None], rep: Reporter, tasks: int) -> None:
    """Run `action` in a thread under Spark job group `group`; report its progress; cancel it on request."""
    failure: list[BaseException] = []
    sc = spark_context(spark)

    def target() -> None:
        try:
            # job groups (and Connect tags) are per thread: pyspark pins Python threads to JVM threads
            if sc is not None:
                sc.setJobGroup(group, "sluice batch job", interruptOnCancel=True)
            else:
                spark.addTag(group)
            action()
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=target, name=group, daemon=True)
    started = time.monotonic()
    worker.start()
    while worker.is_alive():
        worker.join(rep.poll_s)
        if rep.cancelled.is_set():  # repeated each poll: cheap, and catches a job submitted late
            sc.cancelJobGroup(group) if sc is not None else spark.interruptTag(group)
        done, total = spark_tasks(spark, group)
        rep.update(**progress_fields(done, max(total, tasks), time.monotonic() - started))
    if rep.cancel_requested():
        raise Cancelled
    if failure:
        raise failure[0]
