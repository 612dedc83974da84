"""pipelines.ops.deploy: deployments on a real MLflow registry, the Airflow trigger over real HTTP.

Versions are stub registrations (no model is trained or loaded: deploy only moves aliases, writes tags and
reads the prediction log); the Airflow API is a tiny http.server in a thread, or, in the slow test, a real
`airflow standalone` whose canary_rollout run continues from the deployed weight.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.engines.registry import Registry, open_registry
from pipelines.ops.airflow_client import AirflowClient
from pipelines.ops.deploy import (
    DeployConflict,
    DeployError,
    DeploymentNotFound,
    GateNotPassed,
    deploy,
    get_deployment,
    list_deployments,
    rollback_deployment,
)
from pipelines.ops.guardrails import ArmStats
from pipelines.ops.rollout import CanaryRolledBack, pause_canary, run_canary
from tests.conftest import make_project
from tests.test_rollout import _arm, _Clock, _log_rows

pytestmark = pytest.mark.integration

ROLLOUT = {"hold_s": 0, "min_requests": 20, "poll_s": 1, "max_wait_s": 5}
_names = itertools.count()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # one registry DB per module: creating MLflow's schema costs ~1 s
    return f"sqlite:///{tmp_path_factory.mktemp('deploy') / 'mlflow.db'}"


@pytest.fixture
def params(tracking_uri: str, tmp_path: Path) -> Params:
    """Own project (own prediction log) and model: v1 champion, v2 gate pass, v3 gate fail, v4 never gated."""
    name = f"d{next(_names)}"
    p = make_project(
        tmp_path / "project",
        {"rollout": ROLLOUT, "register": {"model_name": name}, "mlflow": {"tracking_uri": tracking_uri}},
    )
    reg = open_registry(p)
    reg.ensure_model(name)
    for verdict in (None, "pass", "fail", None):
        tags = {"gate.verdict": verdict} if verdict else None
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None, tags=tags)
    reg.move_alias(name, CHAMPION, "1", why="bootstrap")
    return p


def _reg(p: Params) -> Registry:
    return open_registry(p)


def _with_airflow(p: Params, url: str) -> Params:
    return p.model_copy(update={"serve": p.serve.model_copy(update={"airflow_url": url})})


# ---- deploy --------------------------------------------------------------------------------------------


def test_deploy_gated_version_sets_the_canary_tags(params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_USER", "alice")
    reg, name = _reg(params), params.register_.model_name
    out = deploy(params, name, "2", 20, "new features")
    assert out["deployment_id"].startswith("dep-")
    assert {k: out[k] for k in ("status", "endpoint", "model", "version", "traffic_percentage")} == {
        "status": "ramping",
        "endpoint": "/v1/predict",
        "model": f"{name}@challenger",
        "version": "2",
        "traffic_percentage": 20.0,
    }
    assert (out["reason"], out["forced"], out["who"], out["airflow"]) == (
        "new features",
        False,
        "alice",
        None,
    )
    assert out["created_at"] and (out["step"], out["weight"], out["live"]) == (1, 20.0, True)

    # exactly what the canary and serving read: alias challenger + rollout.* tags
    assert reg.aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}
    state = reg.get_rollout_state(name)
    assert (state.challenger_weight, state.step, state.updated_by) == (20.0, 1, "alice")
    assert state.started_at and state.decision == f"running: v2 at 20% ({out['deployment_id']})"
    move = reg.history(name)[-1]
    assert (move.alias, move.version, move.who) == (CHALLENGER, "2", "alice")
    assert out["deployment_id"] in move.why and "new features" in move.why
    assert [d["deployment_id"] for d in list_deployments(params, name)] == [out["deployment_id"]]


def test_run_canary_continues_from_the_deployed_weight(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    dep = deploy(params, name, "2", 30, "ramp from 30")  # between steps 20 and 50: continues at 50
    assert reg.get_rollout_state(name).step == 2
    seen: list[float] = []

    def healthy(since: dt.datetime, version: str) -> dict[str, ArmStats]:
        seen.append(reg.get_rollout_state(name).challenger_weight)
        return {CHAMPION: _arm(1000), CHALLENGER: _arm(100)}

    clock = _Clock()
    out = run_canary(params, reg, stats_fn=healthy, sleep=clock.sleep, clock=clock)
    assert [s["weight"] for s in out["steps"]] == [50, 100] and seen[0] == 50.0
    got = get_deployment(params, dep["deployment_id"])
    assert (got["status"], got["live"], got["weight"], got["guardrails"]) == ("promoted", False, 0.0, None)
    assert reg.aliases(name) == {CHAMPION: "2", "previous": "1"}


@pytest.mark.parametrize(
    ("kwargs", "error", "field", "text"),
    [
        ({"version": "3"}, GateNotPassed, "version", r"v3: champion gate verdict is 'fail'.*force=true"),
        ({"version": "4"}, GateNotPassed, "version", r"v4: has no champion gate verdict.*force=true"),
        ({"version": "3", "force": True}, DeployError, "reason", r"reason: required when force=true"),
        ({"version": "3", "force": True, "reason": "  "}, DeployError, "reason", "required when force"),
        ({"traffic_percentage": 0}, DeployError, "traffic_percentage", r"percent in \(0, 100\], got 0"),
        ({"traffic_percentage": 100.5}, DeployError, "traffic_percentage", "got 100.5"),
        ({"traffic_percentage": float("nan")}, DeployError, "traffic_percentage", "got nan"),
        ({"version": "99"}, DeployError, "version", "has no version 99"),
        ({"version": "two"}, DeployError, "version", "registered version number"),
        ({"version": "1"}, DeployConflict, "version", "v1 is already the champion"),
        ({"name": "other"}, DeploymentNotFound, None, "model 'other' not found"),
    ],
)
def test_refusals_change_nothing(
    params: Params, kwargs: dict[str, Any], error: type[DeployError], field: str | None, text: str
) -> None:
    reg, name = _reg(params), params.register_.model_name
    call = {"name": name, "version": "2", "traffic_percentage": 10.0, **kwargs}
    with pytest.raises(error, match=text) as info:
        deploy(params, **call)
    assert type(info.value) is error and info.value.field == field
    assert info.value.status_code == {DeployError: 422, GateNotPassed: 409, DeployConflict: 409}.get(
        error, 404
    )
    assert reg.aliases(name) == {CHAMPION: "1"} and list_deployments(params, name) == []
    assert reg.get_rollout_state(name).challenger_weight == 0.0


def test_force_with_reason_overrides_a_failed_gate(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    out = deploy(params, name, "3", 5, "hotfix, gate data stale", force=True, who="bob")
    assert (out["forced"], out["gate_verdict"], out["status"], out["who"]) == (True, "fail", "ramping", "bob")
    assert reg.alias_version(name, CHALLENGER) == "3"
    assert "forced past gate verdict fail" in reg.history(name)[-1].why
    # force on a version that passed overrides nothing
    assert deploy(params, name, "2", 5, "just in case", force=True)["forced"] is False


# ---- status and rollback ---------------------------------------------------------------------------------


def test_get_reports_step_weight_decision_and_guardrails(params: Params) -> None:
    from pipelines.serving.log import PredictionLogWriter

    name = params.register_.model_name
    dep = deploy(params, name, "2", 5, "first look")["deployment_id"]
    got = get_deployment(params, dep)
    assert (got["status"], got["step"], got["weight"]) == ("ramping", 0, 5.0)
    assert got["decision"].startswith("running: v2 at 5%")
    assert got["guardrails"]["verdict"] == "insufficient_traffic"

    # 25 challenger-routed requests of the deployed v2, 5 answered by the champion's fallback
    writer = PredictionLogWriter(params.paths.prediction_log, rotate_bytes=1 << 20, flush_s=0.05)
    writer.write_many(_log_rows(dt.datetime.now(dt.UTC)).to_dict("records"))
    writer.flush()
    writer.close()
    g = get_deployment(params, dep)["guardrails"]
    assert (g["verdict"], g[CHALLENGER]["n"], g[CHALLENGER]["errors"], g[CHAMPION]["n"]) == (
        "breach",
        25,
        5,
        75,
    )
    assert "error rate 20.00%" in g["reason"] and g["limits"]["max_error_rate"] == 0.02

    pause_canary(params, why="investigating")
    assert get_deployment(params, dep)["status"] == "paused"


def test_rollback_live_deployment_and_refuse_superseded(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    first = deploy(params, name, "2", 20, "v2 first")["deployment_id"]
    second = deploy(params, name, "3", 5, "v3 instead", force=True)["deployment_id"]
    assert [d["deployment_id"] for d in list_deployments(params, name)] == [second, first]
    old = get_deployment(params, first)
    assert (old["status"], old["live"], old["weight"], old["guardrails"]) == ("superseded", False, 0.0, None)
    assert second in old["ended"]["why"]
    # superseding a ramping version: its weight was zeroed before the alias moved, then the new weight set
    assert reg.get_rollout_state(name).challenger_weight == 5.0

    with pytest.raises(DeployConflict, match=f"{first} is superseded: only the live deployment") as info:
        rollback_deployment(params, first, "too late")
    assert info.value.status_code == 409 and reg.alias_version(name, CHALLENGER) == "3"
    with pytest.raises(DeployError, match="reason: required"):
        rollback_deployment(params, second, " ")

    out = rollback_deployment(params, second, "p99 up", who="carol")
    assert (out["status"], out["weight"], out["live"]) == ("rolled_back", 0.0, False)
    assert out["rollback"]["who"] == "carol" and out["rollback"]["reason"] == "p99 up"
    state = reg.get_rollout_state(name)
    assert state.challenger_weight == 0.0 and state.decision == f"rolled_back: deployment {second}: p99 up"
    assert reg.aliases(name) == {CHAMPION: "1"}
    last = reg.history(name)[-1]
    assert (last.alias, last.version, last.previous, last.who) == (CHALLENGER, None, "3", "carol")
    assert get_deployment(params, second)["status"] == "rolled_back"
    with pytest.raises(DeployConflict, match="is rolled_back"):
        rollback_deployment(params, second, "again")
    for bad in ("dep-nope", "../x", second.replace("dep-", "dap-")):
        with pytest.raises(DeploymentNotFound, match="not found") as nf:
            get_deployment(params, bad)
        assert nf.value.status_code == 404


def test_a_deploy_mid_ramp_stops_the_running_canary_loop(params: Params) -> None:
    """The DAG run ramping v2 sees the redeploy (new started_at) and stops without touching its weight."""
    reg, name = _reg(params), params.register_.model_name
    deploy(params, name, "2", 5, "start")
    redeployed: list[str] = []

    def stats(since: dt.datetime, version: str) -> dict[str, ArmStats]:
        if not redeployed:  # an operator deploys the same version at 50% while the DAG holds step 0
            redeployed.append(deploy(params, name, "2", 50, "faster")["deployment_id"])
        return {CHAMPION: _arm(1000), CHALLENGER: _arm(100)}

    clock = _Clock()
    with pytest.raises(CanaryRolledBack, match="aborted outside the DAG"):
        run_canary(params, reg, stats_fn=stats, sleep=clock.sleep, clock=clock)
    state = reg.get_rollout_state(name)
    assert (state.challenger_weight, state.step) == (50.0, 2)
    assert get_deployment(params, redeployed[0])["status"] == "ramping"


# ---- the Airflow trigger ---------------------------------------------------------------------------------


class _FakeAirflow(ThreadingHTTPServer):
    """Airflow 3's two endpoints deploy calls: POST /auth/token and POST /api/v2/dags/{id}/dagRuns."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _FakeAirflow

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append((self.path, dict(self.headers), body))
        if self.path == "/auth/token":
            ok = body == {"username": "ops", "password": "s3cret"}
            self._answer(201, {"access_token": "tok-1"} if ok else {"detail": "Invalid credentials"}, ok)
        elif self.path == "/api/v2/dags/canary_rollout/dagRuns":
            ok = self.headers.get("Authorization") == "Bearer tok-1"
            run = {"dag_run_id": body.get("dag_run_id"), "state": "queued", "conf": body.get("conf")}
            self._answer(200, run if ok else {"detail": "Not authenticated"}, ok)
        else:
            self._answer(404, {"detail": "Not Found"}, False)

    def _answer(self, code: int, payload: dict[str, Any], ok: bool) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code if ok else (401 if code < 400 else code))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def fake_airflow() -> Iterator[_FakeAirflow]:
    server = _FakeAirflow()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_deploy_triggers_canary_dag_with_token(
    params: Params, fake_airflow: _FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_AIRFLOW_USER", "ops")
    monkeypatch.setenv("SLUICE_AIRFLOW_PASSWORD", "s3cret")
    p, name = _with_airflow(params, fake_airflow.url), params.register_.model_name
    out = deploy(p, name, "2", 20, "with airflow", who="alice")
    dep = out["deployment_id"]
    assert out["airflow"] == {
        "dag_id": "canary_rollout",
        "dag_run_id": f"deploy__{dep}",
        "state": "queued",
        "error": None,
    }
    (token_path, _, _), (run_path, headers, body) = fake_airflow.calls
    assert (token_path, run_path) == ("/auth/token", "/api/v2/dags/canary_rollout/dagRuns")
    assert headers["Authorization"] == "Bearer tok-1" and body["logical_date"] is None
    assert body["conf"] == {
        "deployment_id": dep,
        "name": name,
        "version": "2",
        "traffic_percentage": 20.0,
        "step": 1,
        "who": "alice",
    }
    assert get_deployment(p, dep)["airflow"]["dag_run_id"] == f"deploy__{dep}"  # recorded in the registry


def test_airflow_failures_are_recorded_after_the_registry_change(
    params: Params, fake_airflow: _FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.conftest import free_port

    reg, name = _reg(params), params.register_.model_name
    # unreachable: nothing listens on that port
    down = deploy(
        params, name, "2", 5, "", airflow=AirflowClient(f"http://127.0.0.1:{free_port()}", "u", "p", 2)
    )
    assert down["airflow"]["dag_run_id"] is None and "ConnectError" in down["airflow"]["error"]
    assert get_deployment(params, down["deployment_id"])["airflow"] == down["airflow"]
    assert reg.alias_version(name, CHALLENGER) == "2" and down["status"] == "ramping"

    # wrong password: Airflow's 401 and its body
    bad = deploy(params, name, "2", 5, "", airflow=AirflowClient(fake_airflow.url, "ops", "nope"))
    assert "POST" in bad["airflow"]["error"] and "HTTP 401" in bad["airflow"]["error"]
    assert "Invalid credentials" in bad["airflow"]["error"]

    # configured URL without credentials: no request, the env vars named
    monkeypatch.delenv("SLUICE_AIRFLOW_USER", raising=False)
    calls = len(fake_airflow.calls)
    unset = deploy(_with_airflow(params, fake_airflow.url), name, "2", 5, "")
    assert "SLUICE_AIRFLOW_USER and SLUICE_AIRFLOW_PASSWORD" in unset["airflow"]["error"]
    assert len(fake_airflow.calls) == calls and len(list_deployments(params, name)) == 3


# ---- CLI -------------------------------------------------------------------------------------------------


def test_cli_deploy_and_deployments(params: Params) -> None:
    from pipelines.ops.cli import app

    args = ["--params", str(params.root / "params.yaml")]
    runner = CliRunner()
    out = runner.invoke(app, ["deploy", "3", "--weight", "5", *args])
    assert out.exit_code == 1 and "force=true with a non-empty reason overrides" in out.output
    out = runner.invoke(app, ["deploy", "2", "--weight", "5", "--reason", "cli", *args])
    assert out.exit_code == 0, out.output
    dep = json.loads(out.output)["deployment_id"]
    out = runner.invoke(app, ["deployments", *args])
    assert out.exit_code == 0 and [d["deployment_id"] for d in json.loads(out.output)["deployments"]] == [dep]
    out = runner.invoke(app, ["deployments", dep, *args])
    assert out.exit_code == 0 and json.loads(out.output)["guardrails"]["verdict"] == "insufficient_traffic"


# ---- a real Airflow ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deploy_creates_a_canary_run_in_real_airflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """airflow standalone: deploy at 20% -> canary_rollout run deploy__<id>, which resumes at step 1 (20%)
    and, with no traffic at all, rolls back there after max_wait_s: proof it did not restart at 5%."""
    from tests.dags.conftest import Standalone, free_port, standalone_env

    today = dt.datetime.now(dt.UTC).date().isoformat()
    rollout = {"hold_s": 0, "min_requests": 10, "poll_s": 0.5, "max_wait_s": 4}
    params = make_project(tmp_path / "project", {"airflow": {"start_date": today}, "rollout": rollout})
    reg, name = open_registry(params), params.register_.model_name
    reg.ensure_model(name)
    for verdict in (None, "pass"):
        tags = {"gate.verdict": verdict} if verdict else None
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None, tags=tags)
    reg.move_alias(name, CHAMPION, "1", why="bootstrap")
    home = tmp_path / "airflow_home"
    home.mkdir()
    port = free_port()
    server = Standalone(home, standalone_env(home, params.root / "params.yaml", port), port)
    try:
        server.start(timeout=420)
        server.wait_dag("canary_rollout", timeout=240)
        server.api("PATCH", "/api/v2/dags/canary_rollout", {"is_paused": False})
        monkeypatch.setenv("SLUICE_AIRFLOW_USER", "admin")
        monkeypatch.setenv("SLUICE_AIRFLOW_PASSWORD", server.password)
        out = deploy(_with_airflow(params, server.url), name, "2", 20, "slow test")
        dep = out["deployment_id"]
        assert out["airflow"]["error"] is None and out["airflow"]["dag_run_id"] == f"deploy__{dep}"
        (run,) = server.wait_runs("canary_rollout", 1, timeout=420)
        assert run["dag_run_id"] == f"deploy__{dep}" and run["conf"]["deployment_id"] == dep
        assert run["state"] == "failed", server.tail()  # no traffic: rolled back, as designed
    finally:
        server.stop()
    state = reg.get_rollout_state(name)
    assert state.decision.startswith("rolled_back: step 1 (20%): not enough traffic"), state
    assert get_deployment(params, dep)["status"] == "rolled_back"
