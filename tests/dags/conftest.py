"""Fixtures for the Airflow tests: an isolated AIRFLOW_HOME per session, a migrated SQLite DB, a driver.

Airflow reads AIRFLOW_HOME and its DB URL once, at import. This conftest sets them before anything in
the session imports airflow (in-process tests only import airflow.sdk), and the tests that need a DB run
Airflow in a child process (tests/dags/airflow_driver.py) with an environment built by airflow_env().
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

DAGS = REPO_ROOT / "dags"
DRIVER = Path(__file__).with_name("airflow_driver.py")
VENV_BIN = Path(sys.executable).parent

# Never the user's ~/airflow: a throwaway home for whatever imports airflow in this pytest process.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="sluice-airflow-"))
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_HOME / 'airflow.db'}"


# Every DAG in dags/: the integrity test checks the DagBag holds exactly these, the UI test lists them
DAG_IDS: tuple[str, ...] = (
    "batch_inference",
    "canary_rollout",
    "features",
    "ingestion",
    "monitoring",
    "training",
)


def airflow_env(home: Path, params: Path | None = None, db_url: str | None = None) -> dict[str, str]:
    """Environment of a child Airflow process: its own home and DB, this repo's dags/, a project's params."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SLUICE_", "MLFLOW_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url or f"sqlite:///{home / 'airflow.db'}",
            # `airflow standalone` and the executor spawn `airflow` by name
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if params is not None:
        env["SLUICE_PARAMS"] = str(params)
    return env


def migrate(env: dict[str, str], timeout: float = 300) -> None:
    """`airflow db migrate` for the DB in env (a failure shows Airflow's output)."""
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def run_driver(
    mode: str, spec: dict[str, Any], env: dict[str, str], workdir: Path, timeout: float = 600
) -> tuple[dict[str, Any], str]:
    """Run airflow_driver.py MODE in a child process; return its JSON result and its combined output."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = workdir / f"{mode}-spec.json", workdir / f"{mode}-out.json"
    spec_path.write_text(json.dumps({"dags": str(DAGS), **spec}))
    out_path.unlink(missing_ok=True)
    # like the dag-processor, make dags/ importable (`import _common`)
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(DAGS), env.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(DRIVER), mode, str(spec_path), str(out_path)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out_path.is_file(), f"driver {mode} failed:\n{output[-6000:]}"
    return json.loads(out_path.read_text()), output


@pytest.fixture(scope="session")
def airflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite metadata DB, made once per session (~10 s) and copied by each test."""
    home = tmp_path_factory.mktemp("airflow-template")
    migrate(airflow_env(home))
    return home / "airflow.db"


@pytest.fixture
def airflow_home(tmp_path: Path, airflow_db_template: Path) -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the migrated DB."""
    home = tmp_path / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    return home


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Standalone:
    """A running `airflow standalone` (api-server, scheduler, dag-processor, triggerer) and its REST API."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / "standalone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    def start(self, timeout: float = 240) -> Standalone:
        import time
        import urllib.request

        with self.log.open("wb") as log:
            # own process group: stop() ends the whole tree it spawned, and nothing else
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "airflow"), "standalone"],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"airflow standalone exited:\n{self.tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                    health = json.loads(r.read())
                if (
                    all(
                        (health.get(c) or {}).get("status") == "healthy"
                        for c in ("metadatabase", "scheduler", "dag_processor")
                    )
                    and self.password_file.is_file()
                ):
                    return self
            except OSError:
                pass
            time.sleep(2)
        raise AssertionError(f"airflow standalone not healthy after {timeout} s:\n{self.tail()}")

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def password(self) -> str:
        return str(json.loads(self.password_file.read_text())["admin"])

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the REST API (`/api/v2/...`) as admin; returns the decoded JSON."""
        import urllib.request

        if self._token is None:
            req = urllib.request.Request(
                f"{self.url}/auth/token",
                data=json.dumps({"username": "admin", "password": self.password}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.loads(r.read())["access_token"]
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
            method=method,
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """A manual run of dag_id now (no logical date), with `conf` as its params; returns the run."""
        body = {"logical_date": None, "conf": conf or {}}
        return dict(self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body))

    def wait_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed `dag_id` into the DB."""
        import time
        import urllib.error

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError:
                time.sleep(2)
        raise AssertionError(f"{dag_id} never showed up:\n{self.tail()}")

    def wait_runs(self, dag_id: str, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        """Wait until `count` runs of dag_id have finished; return them."""
        import time

        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
            done = [r for r in runs if r["state"] in ("success", "failed")]
            if len(done) >= count and len(done) == len(runs):
                return runs
            time.sleep(3)
        raise AssertionError(f"{dag_id}: runs not finished after {timeout} s: {runs}\n{self.tail()}")

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's backfills, oldest first (REST: GET /api/v2/backfills?dag_id=...)."""
        found = self.api("GET", f"/api/v2/backfills?dag_id={dag_id}&limit=100")["backfills"]
        return sorted(found, key=lambda b: b["id"])

    def wait_backfill_complete(self, backfill_id: int, timeout: float = 180) -> dict[str, Any]:
        """Wait until Airflow marks the backfill complete (`completed_at` set by the scheduler).

        Its runs succeeding is not enough: Airflow refuses a second backfill of the same DAG
        (AlreadyRunningBackfill) until the scheduler's next pass has completed the first one.
        """
        import time

        deadline = time.monotonic() + timeout
        backfill: dict[str, Any] = {}
        while time.monotonic() < deadline:
            backfill = self.api("GET", f"/api/v2/backfills/{backfill_id}")
            if backfill.get("completed_at"):
                return backfill
            time.sleep(2)
        raise AssertionError(
            f"backfill {backfill_id} not marked complete by the scheduler after {timeout} s "
            f"(completed_at still null; a DAG's next backfill cannot start before): {backfill}\n{self.tail()}"
        )

    def stop(self) -> None:
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def standalone_env(home: Path, params: Path, port: int, db_url: str | None = None) -> dict[str, str]:
    """airflow_env() plus what a server on a non-default port needs (tasks call the API back)."""
    env = airflow_env(home, params, db_url)
    env.update(
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "3",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        }
    )
    return env


@pytest.fixture
def standalone_factory(tmp_path: Path, airflow_db_template: Path) -> Any:
    """Start `airflow standalone` for a project made by make_project(overrides); stopped after the test.

    The project's airflow.start_date is today (UTC), so unpausing a daily DAG schedules no catchup
    run (today's interval is not over) and only the runs the test creates happen. The metadata DB is a
    copy of the migrated SQLite template, or `db_url` (standalone migrates it on start).
    """
    import datetime as dt

    from tests.conftest import make_project

    started: list[Standalone] = []

    def start(overrides: dict[str, Any] | None = None, db_url: str | None = None) -> tuple[Standalone, Any]:
        today = dt.datetime.now(dt.UTC).date()
        params = make_project(
            tmp_path / "project", {"airflow": {"start_date": today.isoformat()}, **(overrides or {})}
        )
        home = tmp_path / "airflow_home"
        home.mkdir(exist_ok=True)
        if db_url is None:
            shutil.copy2(airflow_db_template, home / "airflow.db")
        port = free_port()
        env = standalone_env(home, params.root / "params.yaml", port, db_url)
        server = Standalone(home, env, port)
        started.append(server)
        return server.start(), params

    yield start
    for server in started:
        server.stop()
