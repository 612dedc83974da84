"""batch_predict: score validated events of [start, end) with a registered release, in Spark.

Core: `score_spark(df, release_uri, threshold, batch_size)` maps Arrow batches through the release with
`mapInArrow` (the fastest Spark path measured here, see STACK.md). Each Python worker loads the release
once (`_cached_release`, a module-level cache that lives as long as the reused worker) and calls
`Release.score`, the one predict path shared with evaluate and serving, so batch and online scores agree.
Device-agnostic: `device` goes to predict.load_release (cpu by default; cuda/auto on GPU executors), and
on CPU each worker's model threads are capped at the task's cores so parallel workers do not fight.

run(): validated events + Feast historical features -> temp Parquet -> Spark -> one Parquet file per
event date under data/predictions/, each replaced atomically, rows sorted by (event_timestamp, event_id).
The alias (params.batch_predict.alias) is resolved to a version once, and `models:/<name>/<version>` is
loaded, so an alias moved mid-job cannot mix two releases in one output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import artifacts
from pipelines.config import Params
from pipelines.contract import LABEL, TIMESTAMP
from pipelines.errors import StageError
from pipelines.io import PART_FILE, days, existing_partitions, read_partitions, write_partition

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame

log = logging.getLogger(__name__)

KEY_COLUMNS: tuple[str, ...] = ("event_id", "entity_id", "event_timestamp")
OUTPUT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "entity_id",
    "event_timestamp",
    "score",
    "decision",
    "threshold",
    "model_name",
    "model_version",
)
SORT_COLUMNS: tuple[str, ...] = ("event_timestamp", "event_id")
_INPUT_ROW_GROUP = 65_536
# One release per (tracking URI, model URI, device, fingerprint) per Python process. Spark reuses Python
# workers (spark.python.worker.reuse), so a worker loads and verifies the release once, not once per batch.
_RELEASES: dict[tuple[str | None, str, str, str | None], Any] = {}


def _cached_release(
    model_uri: str, tracking_uri: str | None, device: str = "cpu", fingerprint: str | None = None
) -> Any:
    """Load (once per process) the release at `model_uri`; registry URIs resolve against `tracking_uri`.

    `fingerprint` (the registry tag) must match the loaded release: a version whose artifacts were
    swapped after registration is refused in every worker.
    """
    key = (tracking_uri, model_uri, device, fingerprint)
    release = _RELEASES.get(key)
    if release is None:
        from pipelines.artifacts import load_release_at

        if device != "cpu":
            from pipelines.engines.spark import pin_task_gpu

            pin_task_gpu()  # the GPU Spark assigned to this task (cluster GPU scheduling), before CUDA init
        # worker processes start with MLflow's default URI (a relative sqlite file): resolved against ours
        release = load_release_at(model_uri, tracking_uri, fingerprint=fingerprint, device=device)
        _fit_threads(release)
        _RELEASES[key] = release
    return release


def _fit_threads(release: Any) -> None:
    """Limit a CPU model to the cores Spark gave this task (spark.task.cpus).

    Spark runs one task per core, each in its own Python worker; XGBoost/torch default to every core,
    so N workers x N OpenMP threads oversubscribe the machine (measured here: ~2x slower at 2 cores).
    Outside a Spark task (driver, tests) nothing changes. GPU releases are left as they are.
    """
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return
    if ctx is None or getattr(release, "device", "cpu") != "cpu":
        return
    cpus = max(1, int(ctx.cpus()))
    if release.model_kind == "xgboost":
        release.model.set_param({"nthread": cpus})
    else:
        import torch

        torch.set_num_threads(cpus)


def _batch_scorer(
    model_uri: str,
    tracking_uri: str | None,
    threshold: float,
    keep: Sequence[str],
    batch_size: int,
    device: str,
    fingerprint: str | None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function: passes `keep` columns through untouched and appends score + decision."""
    keep = list(keep)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pipelines.model.release import decide

        release = _cached_release(model_uri, tracking_uri, device, fingerprint)
        for batch in batches:
            # only the release's raw inputs cross into pandas (ids and labels stay Arrow: no string copies);
            # a missing input is reported by Release.score with the feature that needs it
            wanted = [c for c in release.input_columns if c in batch.schema.names]
            # Spark caps batches at arrow.maxRecordsPerBatch; slicing also bounds memory when it is unset
            for offset in range(0, batch.num_rows, batch_size):
                part = batch.slice(offset, batch_size)
                scores = np.asarray(release.score(part.select(wanted).to_pandas()), dtype=np.float64)
                if scores.shape != (part.num_rows,):
                    raise ValueError(f"release returned {scores.shape} scores for {part.num_rows} rows")
                yield pa.RecordBatch.from_arrays(
                    [part.column(c) for c in keep]
                    + [pa.array(scores, pa.float64()), pa.array(decide(scores, threshold).astype(np.int64))],
                    names=[*keep, "score", "decision"],
                )

    return score_batches


def score_spark(
    df: SparkDataFrame,
    release_uri: str,
    threshold: float,
    batch_size: int,
    *,
    keep: Sequence[str] = KEY_COLUMNS,
    input_columns: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    device: str = "cpu",
    fingerprint: str | None = None,
) -> SparkDataFrame:
    """Score a Spark frame (events + feature columns) with the release at `release_uri`.

    Returns `keep` columns (those present) + `score` (float64 probability) + `decision` (int64,
    score >= threshold, predict.decide). Lazy like any Spark transformation. Workers score at most
    `batch_size` rows per model call; Spark hands them batches of at most
    `spark.sql.execution.arrow.maxRecordsPerBatch` rows, so run the action inside
    `arrow_batch_size(spark, batch_size)` to get batches that large. `device` is
    handed to predict.load_release in each worker (cpu | cuda | auto); `fingerprint`, when given, must
    match the loaded release. `input_columns` (predict.input_columns of the release's feature list), when
    given, prunes the frame before it crosses into Python: the JVM -> Arrow copy is most of Spark's cost.
    """
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    keep = [c for c in keep if c in df.columns]
    if input_columns is not None:
        missing = [c for c in input_columns if c not in df.columns]
        if missing:
            raise ValueError(f"scoring frame lacks the release's input columns {missing}")
        df = df.select(*dict.fromkeys([*keep, *input_columns]))
    schema = StructType(
        [df.schema[c] for c in keep]
        + [StructField("score", DoubleType(), False), StructField("decision", LongType(), False)]
    )
    fn = _batch_scorer(release_uri, tracking_uri, float(threshold), keep, batch_size, device, fingerprint)
    return df.mapInArrow(fn, schema)


@contextlib.contextmanager
def arrow_batch_size(spark: Any, rows: int) -> Iterator[None]:
    """Set spark.sql.execution.arrow.maxRecordsPerBatch for the actions run inside; restore it after.

    The conf is read when a job executes, not when a plan is built, and a session is shared (tests,
    notebooks), so it is scoped to the block rather than left changed.
    """
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def finalize_day(table: pa.Table, threshold: float, model_name: str, model_version: str) -> pd.DataFrame:
    """One day's scored rows in the published layout: fixed columns, deterministic order."""
    df = table.to_pandas()
    df["threshold"] = float(threshold)
    df["model_name"] = model_name
    df["model_version"] = str(model_version)
    df = df.sort_values([c for c in SORT_COLUMNS if c in df.columns], kind="mergesort").reset_index(drop=True)
    return df[[c for c in OUTPUT_COLUMNS if c in df.columns]]


def _scoring_frame(params: Params, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Validated events of [start, end) + their point-in-time features, without the label."""
    from pipelines.engines.feast_store import historical_features

    src = params.paths.validated
    if not existing_partitions(src, start, end):
        raise StageError(f"{src}: no validated partitions in [{start}, {end}) (run validate)")
    events = read_partitions(src, start, end)
    if events.empty:
        raise StageError(f"{src}: validated partitions of [{start}, {end}) hold no rows")
    frame = historical_features(params, events)
    if len(frame) != len(events):
        raise StageError(f"historical_features returned {len(frame)} rows for {len(events)} events")
    return frame.drop(columns=[c for c in (LABEL,) if c in frame.columns])


def _write_input(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow.parquet as pq

    # row groups of 64k rows: Spark splits a file only between row groups, so this is what lets
    # a large range spread over every core (pyarrow's default is one group per 1M rows)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False),
        path,
        row_group_size=_INPUT_ROW_GROUP,
        compression="zstd",
        coerce_timestamps="us",
        allow_truncated_timestamps=True,
    )


def _score_to(
    params: Params, registered: artifacts.RegisteredVersion, release: Any, src: Path, out: Path
) -> None:
    """Score the input Parquet at `src` on Spark into `out`/date=D/ (the release loaded in each worker)."""
    from pyspark.sql import functions as F

    from pipelines.engines.spark import get_spark, wants_gpu, with_gpu_conf

    bp = params.batch_predict
    # GPU only when params ask for it (device cuda|auto) and one exists; the CPU path is unchanged
    batch_size = (bp.gpu_batch_size or bp.batch_size) if wants_gpu(bp.device) else bp.batch_size
    spark = get_spark(with_gpu_conf(params.spark, bp.device), app_name="sluice-batch_predict")
    scored = score_spark(
        spark.read.parquet(str(src)),
        registered.uri,
        float(registered.tags["threshold"]),
        batch_size,
        input_columns=release.input_columns,
        tracking_uri=params.tracking_uri,
        device=bp.device,
        fingerprint=registered.fingerprint,
    )
    # session time zone is UTC (get_spark), so to_date gives the event's UTC date = its partition
    with arrow_batch_size(spark, batch_size):
        scored.withColumn("date", F.to_date(TIMESTAMP)).write.mode("overwrite").partitionBy("date").parquet(
            str(out)
        )


def _publish(
    params: Params,
    registered: artifacts.RegisteredVersion,
    scored: Path,
    start: dt.date,
    end: dt.date,
    rows: int,
) -> list[str]:
    """Replace data/predictions/date=D/ for each scored day, after checking no row went missing."""
    import pyarrow.parquet as pq

    by_day = {
        day: files
        for day in days(start, end)
        if (files := sorted((scored / f"date={day.isoformat()}").glob("*.parquet")))
    }
    # check completeness before replacing any published partition
    got = sum(pq.ParquetFile(f).metadata.num_rows for files in by_day.values() for f in files)
    if got != rows:
        raise StageError(f"scored {got} rows of [{start}, {end}) but read {rows} events")
    threshold = float(registered.tags["threshold"])
    written: list[str] = []
    for day, files in by_day.items():
        # read the day's files directly (not as a hive dataset, which would add the `date` column back)
        table = pa.concat_tables([pq.read_table(f) for f in files])
        day_frame = finalize_day(table, threshold, registered.name, registered.version)
        write_partition(day_frame, params.paths.predictions, day)
        written.append(day.isoformat())
    return written


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Score validated events of [start, end) with the aliased release; write data/predictions/date=D/."""
    from pipelines.engines.registry import open_registry

    registered = artifacts.resolve_version(
        open_registry(params),
        params.register_.model_name,
        alias=params.batch_predict.alias,
        require_tags=("threshold", "feature_list"),
    )
    # loaded once here: a bad release fails before Spark starts, and its spec names the input columns
    release = artifacts.load_version(params, registered)
    frame = _scoring_frame(params, start, end)
    tmp = params.paths.data / f".tmp-batch_predict-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        _write_input(frame, tmp / "input.parquet")
        _score_to(params, registered, release, tmp / "input.parquet", tmp / "scored")
        written = _publish(params, registered, tmp / "scored", start, end, len(frame))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    name, version = registered.name, registered.version
    log.info(
        "scored %d events of [%s, %s) with %s v%s into %d partitions",
        len(frame),
        start,
        end,
        name,
        version,
        len(written),
    )
    return {
        "model_name": name,
        "model_version": version,
        "alias": params.batch_predict.alias,
        "threshold": float(registered.tags["threshold"]),
        "rows": len(frame),
        "partitions": written,
        "output": str(params.paths.predictions),
        "file": PART_FILE,
    }


def describe(summary: dict[str, Any]) -> str:
    """Progress line: rows scored, by which version, how many days."""
    return (
        f"{summary['rows']:,} events scored by {summary['model_name']} v{summary['model_version']} "
        f"({summary['alias']}) in {len(summary['partitions'])} days"
    )


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "batch_predict", describe)
