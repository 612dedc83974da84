"""Batch scoring jobs behind `POST /v1/batch_predict`: submit, status, cancel, list.

A job scores a .parquet/.csv file of events with one pinned release on Spark, through the batch_predict
stage's path; its runner is a separate process (pipelines.ops.batch_job). `submit` checks all it can
before accepting a job (pipelines.ops.job_checks), so a bad request is a JobError naming the field and
what was expected, never a job that fails later. The jobs live in the job store (pipelines.ops.job_store:
one folder per job, its job.json state); `status` marks a job whose runner died failed, `cancel` marks a
never-launched job cancelled.

This is the API the HTTP layer (pipelines.api) calls: JobError, JobNotFound, submit, status, cancel,
list_jobs.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from pipelines.config import Params
from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.ops.job_checks import check_batch_size, check_input, output_path, pin_model, resolve_path
from pipelines.ops.job_store import (
    CANCEL_FILE,
    CANCELLED,
    FAILED,
    HOST,
    JOB_ID,
    LOG_FILE,
    PARAMS_FILE,
    PID_FILE,
    QUEUED,
    RUNNER_MODULE,
    STATE_FILE,
    STATUS_FIELDS,
    TERMINAL,
    JobError,
    JobNotFound,
    checked_state,
    job_dir,
    jobs_root,
    now_iso,
    public,
    read_state,
    runner_pid,
)

__all__ = ["JobError", "JobNotFound", "cancel", "list_jobs", "status", "submit"]


def submit(
    params: Params,
    model: str,
    input_uri: str,
    output_uri: str | None = None,
    batch_size: int = 10_000,
    *,
    who: str | None = None,
    launch: bool = True,
) -> dict[str, Any]:
    """Validate a job, write its state (queued) and launch its runner, detached; returns its status."""
    batch_size = check_batch_size(batch_size)
    src = resolve_path(params, input_uri, "input_uri")
    pinned = pin_model(params, model)
    stamp, read_columns = check_input(src, input_uri, pinned)
    job_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    dst = output_path(params, output_uri, job_id, src)
    state: dict[str, Any] = {
        **dict.fromkeys(STATUS_FIELDS),
        "job_id": job_id,
        "status": QUEUED,
        "progress": 0.0,
        "model": pinned.name,
        "model_version": pinned.version,
        "input_uri": str(src),
        "output_uri": str(dst),
        "batch_size": batch_size,
        "created_at": now_iso(),
        # what the runner needs, fixed at submit
        "requested_model": model,
        "threshold": pinned.threshold,
        "fingerprint": pinned.fingerprint,
        "input_columns": list(pinned.input_columns),
        "read_columns": read_columns,
        "timestamp_column": stamp,
        "column_kinds": {c: kind for c, kind in pinned.event_columns.items() if kind != "any"},
        "submitted_by": who,
        "host": HOST,
        "pid": None,
        "phase": QUEUED,
    }
    jdir = job_dir(params, job_id)
    jdir.mkdir(parents=True)
    atomic_write_json(jdir / PARAMS_FILE, params.model_dump(mode="json", by_alias=True))
    atomic_write_json(jdir / STATE_FILE, state)
    if launch:
        try:
            _launch(params, jdir)
        except OSError as err:  # no runner will ever pick it up: say so, then let the caller see a 5xx
            state.update(status=FAILED, phase=FAILED, error=f"could not start the runner: {err}")
            atomic_write_json(jdir / STATE_FILE, {**state, "finished_at": now_iso()})
            raise
    return public(state)


def _launch(params: Params, jdir: Path) -> None:
    """Start the runner in its own session (a server restart or a Ctrl-C does not take it down)."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])  # the runner imports the same `pipelines`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with (jdir / LOG_FILE).open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE, str(jdir)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=params.root,
            env=env,
            start_new_session=True,
        )
    atomic_write_text(jdir / PID_FILE, f"{proc.pid}\n")
    # reap it when it ends, so a long-lived server does not collect zombies (status probes /proc)
    threading.Thread(target=proc.wait, name=f"batch-job-{proc.pid}", daemon=True).start()


def status(params: Params, job_id: str) -> dict[str, Any]:
    """The job's status (STATUS_FIELDS); a queued/running job whose runner is gone becomes failed."""
    jdir = job_dir(params, job_id)
    return public(checked_state(jdir, read_state(jdir, job_id)))


def cancel(params: Params, job_id: str) -> dict[str, Any]:
    """Ask the job to stop; returns its status (a finished job is returned unchanged).

    A live runner notices the flag within about a second, cancels its Spark job group and publishes
    nothing: status becomes "cancelled" then. A job no runner was launched for is cancelled at once.
    """
    jdir = job_dir(params, job_id)
    state = checked_state(jdir, read_state(jdir, job_id))
    if state["status"] in TERMINAL:
        return public(state)
    atomic_write_json(jdir / CANCEL_FILE, {"requested_at": now_iso()})
    if runner_pid(jdir, state) is None:
        state.update(status=CANCELLED, phase=CANCELLED, eta_seconds=None, finished_at=now_iso())
        atomic_write_json(jdir / STATE_FILE, state)
    return public(state)


def list_jobs(params: Params, limit: int = 50) -> list[dict[str, Any]]:
    """The statuses of the newest `limit` jobs, newest first."""
    root = jobs_root(params)
    if limit <= 0 or not root.is_dir():
        return []
    states = []
    for jdir in root.iterdir():
        if JOB_ID.match(jdir.name) and (jdir / STATE_FILE).is_file():
            try:
                states.append(checked_state(jdir, read_state(jdir, jdir.name)))
            except JobError:  # removed or half-created meanwhile: not listed
                continue
    states.sort(key=lambda s: (str(s.get("created_at")), str(s.get("job_id"))), reverse=True)
    return [public(s) for s in states[:limit]]
