"""pipelines.ops.batch_jobs / batch_job: /v1/batch_predict jobs on the served world (v1 champion, v2
challenger, a Feast store, a week of events).

Every refusal happens at submit (no job folder is left behind); a job's scores equal the release's own
`Release.score` on the point-in-time (Feast historical) frame of the same events, i.e. the batch_predict
path; progress comes from Spark and ends at 100; a cancelled job publishes nothing; a runner killed
mid-job is reported failed. Two runner subprocesses (one full job, one killed early); the other jobs run
the runner in-process on the session's Spark.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines import artifacts
from pipelines.batch_predict import OUTPUT_COLUMNS
from pipelines.config import Params
from pipelines.contract import LABEL
from pipelines.engines.feast_store import historical_features
from pipelines.engines.registry import open_registry
from pipelines.ops import batch_job, batch_jobs, job_spark, job_store
from pipelines.ops.batch_jobs import JobError, JobNotFound
from tests.serving_world import CUT, MODEL, World, build_world

pytestmark = pytest.mark.integration

WAIT_S = 300  # generous: a loaded 2-core machine; nothing here asserts on speed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("serving_world"))


@pytest.fixture(scope="module")
def params(world: World) -> Params:
    return world.params


@pytest.fixture(scope="module")
def inputs(params: Params) -> dict[str, str]:
    """Input files under data/batch_inputs/ (paths relative to the project root, as a client sends them)."""
    folder = params.paths.data / "batch_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    events = pd.read_parquet(params.paths.validated).drop(columns=[LABEL, "date"], errors="ignore")
    events = events.sort_values(["event_timestamp", "event_id"]).reset_index(drop=True)
    last_day = events[events["event_timestamp"] >= pd.Timestamp(CUT, tz="UTC")].reset_index(drop=True)
    files = {
        "all": events,
        "day": last_day,
        "empty": last_day.head(0),
        "no_amount": last_day.drop(columns=["amount"]),
        "amount_text": last_day.assign(amount=last_day["amount"].astype(str)),
    }
    out = {}
    for name, frame in files.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        out[name] = f"data/batch_inputs/{name}.parquet"
    # CSV with `timestamp` for event_timestamp and a column the job ignores
    last_day.rename(columns={"event_timestamp": "timestamp"}).assign(note="x").to_csv(
        folder / "day.csv", index=False
    )
    out["csv"] = "data/batch_inputs/day.csv"
    last_day.head(3).assign(event_timestamp="not a time").to_csv(folder / "bad_time.csv", index=False)
    out["bad_time"] = "data/batch_inputs/bad_time.csv"
    (folder / "day.json").write_text("{}")
    out["json"] = "data/batch_inputs/day.json"
    # outside the allowed folders (serve.job_roots = [data]): the project root, and a link to it from data/
    last_day.to_parquet(params.root / "outside.parquet", index=False)
    link = folder / "link.parquet"
    if not link.exists():
        link.symlink_to(params.root / "outside.parquet")
    out["link"] = "data/batch_inputs/link.parquet"
    return out


def expected_scores(params: Params, version: str, events: pd.DataFrame) -> pd.DataFrame:
    """What the batch_predict path gives: the release's score on the point-in-time features frame."""
    registered = artifacts.resolve_version(open_registry(params), MODEL, version=version)
    release = artifacts.load_version(params, registered)
    frame = historical_features(params, events)
    scores = release.score(frame)
    threshold = float(registered.tags["threshold"])
    return pd.DataFrame(
        {"event_id": events["event_id"].astype(str), "score": scores, "decision": (scores >= threshold)}
    ).set_index("event_id")


def assert_same_scores(out: pd.DataFrame, expected: pd.DataFrame, version: str, threshold: float) -> None:
    assert list(out.columns) == list(OUTPUT_COLUMNS)  # the batch_predict stage's output layout
    assert len(out) == len(expected) and set(out["event_id"].astype(str)) == set(expected.index)
    got = out.set_index(out["event_id"].astype(str)).loc[expected.index]
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=0, atol=1e-6)
    assert (got["decision"].astype(bool).to_numpy() == expected["decision"].to_numpy()).all()
    assert (out["threshold"] == threshold).all() and (out["model_name"] == MODEL).all()
    assert (out["model_version"].astype(str) == version).all()
    assert pd.to_datetime(out["event_timestamp"], utc=True).is_monotonic_increasing


def job_count(params: Params) -> int:
    root = job_store.jobs_root(params)
    return len(list(root.iterdir())) if root.is_dir() else 0


def wait_for(predicate: Any, what: str, timeout: float = WAIT_S, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def raw_state(params: Params, job_id: str) -> dict[str, Any]:
    return json.loads((job_store.job_dir(params, job_id) / job_store.STATE_FILE).read_text())


# ---- refused at submit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"input_uri": "data/batch_inputs/missing.parquet"}, "input_uri", "file not found"),
        ({"input_uri": ""}, "input_uri", "empty path"),
        ({"input_uri": "   "}, "input_uri", "empty path"),
        ({"input_uri": "data/../outside.parquet"}, "input_uri", "outside the allowed folders"),
        ({"input_uri": "@outside"}, "input_uri", "outside the allowed folders"),
        ({"input_uri": "@link"}, "input_uri", "outside the allowed folders"),
        ({"input_uri": "s3://bucket/x.parquet"}, "input_uri", "only local paths"),
        ({"input_uri": "@json"}, "input_uri", "suffix '.json' not accepted"),
        ({"input_uri": "@no_amount"}, "input_uri", "missing column(s) ['amount']"),
        ({"input_uri": "@empty"}, "input_uri", "holds no rows"),
        (
            {"input_uri": "@amount_text"},
            "input_uri",
            "column 'amount' holds string values, expected a number",
        ),
        ({"input_uri": "@bad_time"}, "input_uri", "column 'event_timestamp' holds 'not a time'"),
        ({"model": "fraud_scorer/99"}, "model", "has no version 99"),
        ({"model": "fraud_scorer@nope"}, "model", "no alias 'nope'"),
        ({"model": "other_model"}, "model", "unknown"),
        ({"model": "fraud_scorer/latest"}, "model", "version number"),
        ({"batch_size": 0}, "batch_size", "expected an integer in [1, 1000000]"),
        ({"batch_size": -5}, "batch_size", "expected an integer"),
        ({"batch_size": 2.5}, "batch_size", "expected an integer"),
        ({"batch_size": True}, "batch_size", "expected an integer"),
        ({"output_uri": "data/batch_inputs/day.csv"}, "output_uri", "already exists"),
        ({"output_uri": "../escape.parquet"}, "output_uri", "outside the allowed folders"),
        ({"output_uri": "data/out/predictions.txt"}, "output_uri", "suffix '.txt' not accepted"),
        ({"output_uri": ""}, "output_uri", "empty path"),
    ],
)
def test_submit_refuses_bad_requests(
    params: Params,
    inputs: dict[str, str],
    tmp_path: Path,
    kwargs: dict[str, Any],
    field: str,
    says: str,
) -> None:
    request: dict[str, Any] = {"model": MODEL, "input_uri": inputs["day"], "batch_size": 100, **kwargs}
    uri = request["input_uri"]
    if uri == "@outside":  # an absolute path outside every job root
        pd.read_parquet(params.root / inputs["day"]).to_parquet(tmp_path / "abs.parquet")
        request["input_uri"] = str(tmp_path / "abs.parquet")
    elif uri.startswith("@"):
        request["input_uri"] = inputs[uri[1:]]
    before = job_count(params)
    with pytest.raises(JobError) as err:
        batch_jobs.submit(params, launch=False, **request)
    assert err.value.field == field
    assert says in str(err.value) and str(err.value).startswith(field)
    assert 400 <= err.value.http_status < 500
    assert job_count(params) == before  # nothing was accepted


def test_unknown_job_ids(params: Params) -> None:
    for job_id in ("20990101T000000-00000000", "../../etc", "", "x" * 300):
        with pytest.raises(JobNotFound) as err:
            batch_jobs.status(params, job_id)
        assert err.value.http_status == 404 and err.value.field == "job_id"
        with pytest.raises(JobNotFound):
            batch_jobs.cancel(params, job_id)


def test_read_events_csv_without_event_id(tmp_path: Path) -> None:
    """`timestamp` alias, naive times taken as UTC, ids as strings, the row number as event_id."""
    src = tmp_path / "in.csv"
    src.write_text("entity_id,timestamp,amount\n17,2026-01-07 10:00:00,12.5\n18,2026-01-07T11:00:00Z,3\n")
    state = {
        "input_uri": str(src),
        "read_columns": ["entity_id", "timestamp", "amount"],
        "timestamp_column": "timestamp",
        "column_kinds": {"event_timestamp": "timestamp", "amount": "number"},
    }
    frame = batch_job.read_events(state)
    assert list(frame["event_id"]) == ["0", "1"] and list(frame["entity_id"]) == ["17", "18"]
    assert list(frame["event_timestamp"]) == [
        pd.Timestamp("2026-01-07 10:00", tz="UTC"),
        pd.Timestamp("2026-01-07 11:00", tz="UTC"),
    ]
    assert frame["amount"].dtype.kind == "f"


def test_progress_and_task_arithmetic() -> None:
    assert job_spark.progress_fields(0, 10, 5.0) == {
        "progress": 0.0,
        "eta_seconds": None,
        "tasks_done": 0,
        "tasks": 10,
    }
    assert job_spark.progress_fields(4, 10, 8.0)["eta_seconds"] == 12.0
    assert job_spark.progress_fields(10, 10, 8.0)["progress"] == 100.0
    assert job_spark.task_count(5_000, 500, 1) == 10
    assert job_spark.task_count(5_000, 1, 1) == job_spark.MAX_TASKS
    assert job_spark.task_count(3, 10_000, 8) == 3  # never more tasks than rows
    assert job_spark.task_count(5_000, 10_000, 4) == 4  # at least one per core


def test_cancel_before_any_runner(params: Params, inputs: dict[str, str]) -> None:
    job = batch_jobs.submit(params, MODEL, inputs["day"], launch=False)
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["model_version"] == "1"
    assert batch_jobs.cancel(params, job["job_id"])["status"] == "cancelled"
    # a runner started afterwards leaves it alone
    final = batch_job.run_job(job_store.job_dir(params, job["job_id"]))
    assert final["status"] == "cancelled" and not Path(final["output_uri"]).exists()
    assert batch_jobs.list_jobs(params, limit=1)[0]["job_id"] == job["job_id"]


# ---- jobs that run ---------------------------------------------------------------------------------------


def test_in_process_job_csv_pinned_version(
    spark: Any, params: Params, inputs: dict[str, str], world: World
) -> None:
    """The challenger by version number, a CSV input with `timestamp`, a CSV output under data/."""
    out_uri = "data/batch_outputs/challenger.csv"
    (params.root / out_uri).unlink(missing_ok=True)
    job = batch_jobs.submit(params, f"{MODEL}/{world.challenger}", inputs["csv"], out_uri, 300, launch=False)
    assert job["output_uri"] == str((params.root / out_uri).resolve())
    final = batch_job.run_job(job_store.job_dir(params, job["job_id"]), poll_s=0.2)
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"] == 100.0 and final["started_at"] and final["finished_at"]
    out = pd.read_csv(final["output_uri"], dtype={"event_id": str, "entity_id": str})
    events = pd.read_parquet(params.root / inputs["day"])
    expected = expected_scores(params, world.challenger, events)
    assert_same_scores(out, expected, world.challenger, 0.2)
    assert final["rows"] == len(events) and final["flagged"] == int(expected["decision"].sum())
    assert not (job_store.job_dir(params, job["job_id"]) / "work").exists()
    assert batch_jobs.status(params, job["job_id"]) == final


def test_cancel_running_job(spark: Any, params: Params, inputs: dict[str, str]) -> None:
    """batch_size 1 over the whole week: hundreds of Spark tasks; cancelled once the first ones are done."""
    job = batch_jobs.submit(
        params, MODEL, inputs["all"], "data/batch_outputs/cancelled.parquet", 1, launch=False
    )
    job_id = job["job_id"]
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(batch_job.run_job(job_store.job_dir(params, job_id), poll_s=0.2))
    )
    runner.start()
    try:
        wait_for(
            lambda: (
                raw_state(params, job_id).get("tasks_done", 0) > 0
                or raw_state(params, job_id)["status"] in job_store.TERMINAL
            ),
            "the first Spark tasks",
        )
        running = batch_jobs.status(params, job_id)
        assert running["status"] == "running" and 0 < running["progress"] < 100
        assert running["eta_seconds"] is not None and running["eta_seconds"] >= 0
        assert batch_jobs.cancel(params, job_id)["status"] in ("running", "cancelled")
    finally:
        runner.join(WAIT_S)
    assert not runner.is_alive()
    final = batch_jobs.status(params, job_id)
    assert final["status"] == "cancelled" and final["error"] is None and result["status"] == "cancelled"
    assert final["progress"] < 100  # the Spark job group was cancelled, not run to its end
    out = Path(final["output_uri"])
    assert not out.exists() and not list(out.parent.glob(f".tmp-{out.name}-*"))
    assert not (job_store.job_dir(params, job_id) / "work").exists()
    assert batch_jobs.cancel(params, job_id)["status"] == "cancelled"  # idempotent


def test_runner_killed_is_reported_failed(params: Params, inputs: dict[str, str]) -> None:
    job = batch_jobs.submit(params, MODEL, inputs["day"])
    job_id = job["job_id"]
    jdir = job_store.job_dir(params, job_id)
    wait_for(lambda: batch_jobs.status(params, job_id)["status"] != "queued", "the runner to start")
    state = raw_state(params, job_id)
    assert state["status"] == "running" and state["pid"] == int((jdir / job_store.PID_FILE).read_text())
    os.killpg(state["pid"], signal.SIGKILL)  # its own session: the runner and anything it started
    wait_for(lambda: batch_jobs.status(params, job_id)["status"] == "failed", "the death to be noticed")
    final = batch_jobs.status(params, job_id)
    assert "exited without finishing" in final["error"] and final["finished_at"]
    assert not Path(final["output_uri"]).exists()


def test_launched_job_end_to_end(params: Params, inputs: dict[str, str], world: World) -> None:
    """submit -> the detached runner -> Spark -> the published Parquet; transitions watched through status."""
    job = batch_jobs.submit(params, MODEL, inputs["day"], batch_size=100, who="tests")
    seen: list[tuple[str, float]] = [(job["status"], job["progress"])]

    def finished() -> bool:
        now = batch_jobs.status(params, job["job_id"])
        seen.append((now["status"], now["progress"]))
        return now["status"] in job_store.TERMINAL

    wait_for(finished, "the job to finish", poll=0.25)
    final = batch_jobs.status(params, job["job_id"])
    log_text = (job_store.job_dir(params, job["job_id"]) / job_store.LOG_FILE).read_text()
    assert final["status"] == "succeeded", f"{final['error']}\n{log_text[-3000:]}"
    statuses = [s for s, _ in seen]
    order = ["queued", "running", "succeeded"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert final["eta_seconds"] == 0.0 and final["model_version"] == world.champion
    out = pd.read_parquet(final["output_uri"])
    events = pd.read_parquet(params.root / inputs["day"])
    assert_same_scores(out, expected_scores(params, world.champion, events), world.champion, 0.2)
    assert final["rows"] == len(events) and "scored" in log_text
    assert batch_jobs.list_jobs(params)[0] == final
