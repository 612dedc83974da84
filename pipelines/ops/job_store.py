"""The batch job store: one folder per job, its state file, the status vocabulary, and who writes it.

data/serving_jobs/<job_id>/ holds job.json (the state, written atomically: any server worker reads any
job), params.json (the submitter's params: the runner scores the very same project), runner.pid,
runner.log and, once asked, the `cancel` flag. job.json is written by submit before the launch, then by
the runner while it lives (`Reporter`); `status` marks a job whose runner died failed (`checked_state`),
`cancel` marks a never-launched job cancelled. Job folders are kept until someone removes them.

Both sides use it: pipelines.ops.batch_jobs (submit, status, cancel, list: the API, in the server, with
its submit-time checks in pipelines.ops.job_checks) and pipelines.ops.batch_job (the runner process).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.io import atomic_write_json

JOBS_DIR = "serving_jobs"
STATE_FILE, PARAMS_FILE, PID_FILE, LOG_FILE = "job.json", "params.json", "runner.pid", "runner.log"
CANCEL_FILE = "cancel"
RUNNER_MODULE = "pipelines.ops.batch_job"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
# what status() returns (job.json also keeps the runner's bookkeeping: pid, host, heartbeat, phase, ...)
STATUS_FIELDS: tuple[str, ...] = (
    *("job_id", "status", "progress", "eta_seconds", "model", "model_version", "input_uri", "output_uri"),
    *("batch_size", "rows", "flagged", "error", "created_at", "started_at", "finished_at"),
)
# a runner on another host cannot be probed by pid: it is dead when its heartbeat (every ~1 s) is this old
STALE_HEARTBEAT_S = 120.0
HOST = socket.gethostname()
JOB_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")


class JobError(StageError):
    """A job request was refused (message names the field and what was expected) or a job is unknown.

    `field` is the request field at fault (None when none is), `http_status` the code the API answers.
    """

    def __init__(self, message: str, *, field: str | None = None, http_status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.http_status = http_status


def refused(field: str, value: Any, what: str, http_status: int = 422) -> JobError:
    return JobError(f"{field} {value!r}: {what}", field=field, http_status=http_status)


class JobNotFound(JobError):
    """No job of that id in the store."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job_id {job_id!r}: no such batch job", field="job_id", http_status=404)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def jobs_root(params: Params) -> Path:
    """data/serving_jobs/: one folder per job."""
    return params.paths.data / JOBS_DIR


def job_dir(params: Params, job_id: str) -> Path:
    """The folder of `job_id`; JobNotFound for an id that is not one of ours (no path tricks)."""
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise JobNotFound(str(job_id))
    return jobs_root(params) / job_id


# ---- reading states (the server's side) ----------------------------------------------------------------


def public(state: dict[str, Any]) -> dict[str, Any]:
    """The status fields of a job's state."""
    return {k: state.get(k) for k in STATUS_FIELDS}


def read_state(jdir: Path, job_id: str) -> dict[str, Any]:
    try:
        state = json.loads((jdir / STATE_FILE).read_text())
    except FileNotFoundError:
        raise JobNotFound(job_id) from None
    except (OSError, json.JSONDecodeError) as err:
        raise refused("job_id", job_id, f"unreadable state ({err})", 500) from None
    if not isinstance(state, dict):
        raise refused("job_id", job_id, "state is not a JSON object", 500)
    return state


def runner_pid(jdir: Path, state: dict[str, Any]) -> int | None:
    """The runner's pid: written by the runner when it starts, by submit when it launched it."""
    if state.get("pid"):
        return int(state["pid"])
    try:
        return int((jdir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live batch-job runner (a zombie or a recycled pid is not)."""
    if pid == os.getpid():
        return True  # a runner in this very process (run_job called in-process)
    if Path("/proc/self").is_dir():
        try:
            return RUNNER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checked_state(jdir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """`state`, or failed when it is queued/running and its runner is gone (killed, crashed, OOM)."""
    if state.get("status") in TERMINAL:
        return state
    pid = runner_pid(jdir, state)
    if pid is None:
        return state  # never launched (submit(launch=False)): waits for someone to run it
    if state.get("host", HOST) == HOST:
        alive = pid_alive(pid)
    else:
        beat = state.get("heartbeat_at") or state.get("created_at")
        age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(str(beat))
        alive = age.total_seconds() < STALE_HEARTBEAT_S
    if alive:
        return state
    # re-read: the runner may have written its final state just before exiting
    fresh = read_state(jdir, str(state.get("job_id")))
    if fresh.get("status") in TERMINAL:
        return fresh
    error = f"the runner process (pid {pid}) exited without finishing the job; see {jdir / LOG_FILE}"
    fresh.update(status=FAILED, phase=FAILED, eta_seconds=None, finished_at=now_iso(), error=error)
    atomic_write_json(jdir / STATE_FILE, fresh)
    return fresh


# ---- writing the state (the runner's side) -------------------------------------------------------------


class Cancelled(Exception):
    """The job's cancel flag was seen."""


class Reporter:
    """Owns job.json while the runner lives: field updates, a heartbeat every `poll_s`, the cancel flag."""

    def __init__(self, jdir: Path, state: dict[str, Any], poll_s: float) -> None:
        self.jdir, self.state, self.poll_s = jdir, state, poll_s
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="batch-job-heartbeat", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.state.update(fields, heartbeat_at=now_iso())
            atomic_write_json(self.jdir / STATE_FILE, self.state)

    def _beat(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.cancel_requested()
            self.update()

    def cancel_requested(self) -> bool:
        if (self.jdir / CANCEL_FILE).exists():
            self.cancelled.set()
        return self.cancelled.is_set()

    def check(self) -> None:
        """Raise Cancelled when a cancel was asked for (called between phases)."""
        if self.cancel_requested():
            raise Cancelled
