"""The runner of one batch scoring job: `python -m pipelines.ops.batch_job <job_dir>`.

pipelines.ops.batch_jobs.submit validates the job, writes its folder and starts this, detached. The path
is the batch_predict stage's: the input's events + Feast historical features as of 1 µs before each
row's timestamp (engines.feast_store.historical_features, never the online store) -> Parquet -> Spark
`score_spark` with the pinned `models:/<name>/<version>` (fingerprint checked in every worker) ->
`finalize_day`'s columns (score, decision, threshold, model name and version), sorted by
(event_timestamp, event_id). An input without event_id gets the row number as its event_id.

Progress is Spark's, and the input is staged as one file per Spark task for it (pipelines.ops.job_spark).
A thread heartbeats job.json every ~1 s and watches the cancel flag (pipelines.ops.job_store.Reporter);
a cancelled job cancels its Spark job group and publishes nothing. The output is written to a temp file
and hard-linked into place (never over an existing file), so a failed or cancelled job leaves no partial
output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipelines.config import Params, parse_params
from pipelines.contract import ENTITY_KEY, EVENT_ID, TIMESTAMP
from pipelines.errors import StageError
from pipelines.io import write_table
from pipelines.ops import job_store as store
from pipelines.ops.job_spark import run_tracked, scoped_conf, spark_context, stage_input, task_count
from pipelines.ops.job_store import Cancelled, Reporter

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pipelines.ops.batch_job")  # not __name__: `python -m` runs it as __main__

CLAIM_FILE = "runner.claimed"


# ---- the phases ----------------------------------------------------------------------------------------


def read_events(state: dict[str, Any]) -> pd.DataFrame:
    """The input's needed columns, typed: event_timestamp UTC, ids as strings, numbers as numbers."""
    import numpy as np
    import pandas as pd

    src = Path(state["input_uri"])
    cols = list(state["read_columns"])
    if src.suffix.lower() == ".parquet":
        frame = pd.read_parquet(src, columns=cols)
    else:
        frame = pd.read_csv(src, usecols=cols, dtype={c: str for c in (ENTITY_KEY, EVENT_ID) if c in cols})
    frame = frame.rename(columns={state["timestamp_column"]: TIMESTAMP}).reset_index(drop=True)
    if frame.empty:
        raise StageError(f"input_uri {src}: the file holds no rows")
    if EVENT_ID not in frame.columns:
        frame.insert(0, EVENT_ID, np.arange(len(frame)).astype(str))
    for column in (EVENT_ID, ENTITY_KEY):
        values = frame[column]
        frame[column] = values.astype(object).where(values.isna(), values.astype(str))
    for column, kind in state["column_kinds"].items():
        frame[column] = _typed(frame[column], kind, f"input_uri {src}: column {column!r}")
    return frame


def _typed(values: pd.Series, kind: str, where: str) -> pd.Series:
    import pandas as pd

    try:
        if kind == "timestamp":
            mixed = {"format": "mixed"} if values.dtype == object else {}
            return pd.to_datetime(values, utc=True, **mixed)
        if kind == "number":
            return pd.to_numeric(values)
    except (ValueError, TypeError) as err:
        raise StageError(f"{where}: {err}") from None
    return values


def point_in_time_frame(params: Params, state: dict[str, Any]) -> pd.DataFrame:
    """The events + their features as of each row's timestamp (the batch_predict stage's frame)."""
    from pipelines.engines.feast_store import historical_features

    events = read_events(state)
    frame = historical_features(params, events)
    if len(frame) != len(events):
        raise StageError(f"historical_features returned {len(frame)} rows for {len(events)} events")
    return frame


def score_on_spark(params: Params, spark: Any, files: list[Path], out: Path, rep: Reporter) -> None:
    """Score the staged files with the pinned release (score_spark) into Parquet files under `out`."""
    from pipelines.batch_predict import arrow_batch_size, score_spark

    state = rep.state
    batch_size = int(state["batch_size"])
    # one partition per staged file: a split as large as the largest file, and an "open cost" that large
    # so Spark never packs two files into one task
    split = str(max(f.stat().st_size for f in files) + 1)
    files_conf = {"spark.sql.files.maxPartitionBytes": split, "spark.sql.files.openCostInBytes": split}
    with scoped_conf(spark, files_conf), arrow_batch_size(spark, batch_size):
        scored = score_spark(
            spark.read.parquet(*[str(f) for f in files]),
            f"models:/{state['model']}/{state['model_version']}",
            float(state["threshold"]),
            batch_size,
            input_columns=state["input_columns"],
            tracking_uri=params.tracking_uri,
            device=params.batch_predict.device,
            fingerprint=state["fingerprint"],
        )
        group = f"sluice-batch-job-{state['job_id']}"
        run_tracked(spark, group, lambda: scored.write.parquet(str(out)), rep, len(files))


def collect(scored: Path, rows: int, state: dict[str, Any]) -> pd.DataFrame:
    """The scored rows in the batch_predict layout (finalize_day); every input row must be there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.batch_predict import finalize_day

    table = pa.concat_tables([pq.read_table(f) for f in sorted(scored.glob("*.parquet"))])
    if table.num_rows != rows:
        raise StageError(f"scored {table.num_rows} rows but read {rows}")
    return finalize_day(table, float(state["threshold"]), state["model"], str(state["model_version"]))


def publish(frame: pd.DataFrame, dst: Path) -> None:
    """Write `frame` to a temp file beside `dst`, then link it into place: all or nothing, no overwrite."""
    import pyarrow as pa

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{uuid.uuid4().hex[:8]}"
    try:
        if dst.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None), tmp)
        try:
            os.link(tmp, dst)  # fails when dst exists: a file that appeared meanwhile is never overwritten
        except FileExistsError:
            raise StageError(f"output_uri {dst}: a file appeared there while the job ran") from None
        except OSError:  # a filesystem without hard links
            if dst.exists():
                raise StageError(f"output_uri {dst}: a file appeared there while the job ran") from None
            os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def score_job(params: Params, rep: Reporter) -> tuple[int, int]:
    """All phases; returns (rows, flagged). The work folder (staged input, Spark output) never outlives it."""
    from pipelines.engines.spark import get_spark, with_gpu_conf

    work = rep.jdir / "work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        rep.check()
        frame = point_in_time_frame(params, rep.state)
        rep.update(rows=len(frame), phase="scoring")
        rep.check()
        spark = get_spark(
            with_gpu_conf(params.spark, params.batch_predict.device), app_name="sluice-batch_job"
        )
        sc = spark_context(spark)
        tasks = task_count(
            len(frame), rep.state["batch_size"], sc.defaultParallelism if sc is not None else 1
        )
        files = stage_input(frame, work / "input", tasks)
        score_on_spark(params, spark, files, work / "scored", rep)
        rep.check()
        rep.update(phase="publishing")
        out = collect(work / "scored", len(frame), rep.state)
        rep.check()
        publish(out, Path(rep.state["output_uri"]))
        return len(out), int(out["decision"].sum())
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- the runner ----------------------------------------------------------------------------------------


def describe(err: BaseException) -> str:
    """One line for status: a Python error raised inside a Spark task is reported by its own last line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln)]
    text = causes[-1] if causes and any("Traceback" in ln for ln in lines) else (lines[0] if lines else "")
    return f"{type(err).__name__}: {text}"[:2000]


def load_job_params(jdir: Path) -> Params:
    """The submitter's params (params.json, with its project root)."""
    raw = json.loads((jdir / store.PARAMS_FILE).read_text())
    return parse_params(raw, Path(raw.pop("root")))


def _finish(rep: Reporter) -> None:
    """Run the job and record how it ended (a SIGTERM or Ctrl-C too, before it goes on)."""
    try:
        rows, flagged = score_job(load_job_params(rep.jdir), rep)
    except BaseException as err:
        end = {"eta_seconds": None, "finished_at": store.now_iso()}
        if isinstance(err, Cancelled) or rep.cancel_requested():
            log.info("job %s cancelled", rep.state["job_id"])
            rep.update(status=store.CANCELLED, phase=store.CANCELLED, **end)
        else:
            log.exception("job %s failed", rep.state["job_id"])
            rep.update(status=store.FAILED, phase=store.FAILED, error=describe(err), **end)
        if not isinstance(err, Exception):
            raise
        return
    done = {"status": store.SUCCEEDED, "phase": store.SUCCEEDED, "progress": 100.0, "eta_seconds": 0.0}
    rep.update(**done, rows=rows, flagged=flagged, finished_at=store.now_iso())
    log.info("job %s scored %d rows, %d flagged", rep.state["job_id"], rows, flagged)


def run_job(job_dir: str | Path, *, poll_s: float = 1.0) -> dict[str, Any]:
    """Run the queued job in `job_dir` (once: a second runner leaves it alone); returns its final status."""
    jdir = Path(job_dir).resolve()
    state = store.read_state(jdir, jdir.name)
    try:
        os.close(os.open(jdir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        log.warning("job %s: another runner has it", jdir.name)
        return store.public(state)
    if state.get("status") != store.QUEUED:
        return store.public(state)
    with _logging_to(jdir / store.LOG_FILE), Reporter(jdir, state, poll_s) as rep:
        start = {"pid": os.getpid(), "host": store.HOST, "started_at": store.now_iso()}
        rep.update(status=store.RUNNING, phase="features", **start)
        log.info(
            "job %s: %s v%s on %s", jdir.name, state["model"], state["model_version"], state["input_uri"]
        )
        _finish(rep)
    return store.public(state)


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """The `pipelines` loggers (INFO and up) also write to `path` while the job runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_log = logging.getLogger("pipelines")
    level = pkg_log.level
    pkg_log.addHandler(handler)
    pkg_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        pkg_log.removeHandler(handler)
        pkg_log.setLevel(level)
        handler.close()


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"runner terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipelines.ops.batch_job <job_dir>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)  # a plain kill still records the job as failed
    logging.getLogger().addHandler(logging.NullHandler())  # run_job logs to runner.log; no stderr copies
    try:
        final = run_job(args[0])
    finally:
        if "pyspark" in sys.modules:
            from pyspark.sql import SparkSession

            session = SparkSession.getActiveSession()
            if session is not None:
                session.stop()
    return 0 if final["status"] == store.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
