"""A small client of Airflow 3's REST API: trigger one DAG run (deploy hands the ramp to `canary_rollout`).

Airflow 3's API server (simple or FAB auth manager) issues a JWT at `POST /auth/token` for
{"username", "password"}; `POST /api/v2/dags/{dag_id}/dagRuns` with a Bearer token and
{"logical_date": null, "conf": {...}} queues a manual run now. Nothing here raises on a network or HTTP
failure: the caller (a deploy that already changed the registry) records the error text instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from pipelines.config import Params

# an error body is kept short: it ends up in a registry tag and an API answer
_BODY_CHARS = 300


@dataclass(frozen=True)
class TriggerResult:
    """What a trigger did: the run id Airflow created, or why none was created."""

    dag_id: str
    dag_run_id: str | None = None
    state: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AirflowError(Exception):
    """One failed call (transport or HTTP status); its message is what the deployment records."""


class AirflowClient:
    """Airflow 3 REST API at `url` (e.g. http://127.0.0.1:8080) as `username`; one token per call."""

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        credentials_from: str = "a username and a password",
    ) -> None:
        self.url = url.rstrip("/")
        self.username, self.password = username, password
        self.credentials_from = credentials_from  # named in the error when they are missing
        self.timeout_s = timeout_s
        self.transport = transport  # tests may swap the network out (httpx.MockTransport)

    def trigger_dag(
        self, dag_id: str, conf: Mapping[str, Any], dag_run_id: str | None = None
    ) -> TriggerResult:
        """Queue a manual run of `dag_id` now with `conf`; errors come back as text, never raised."""
        import httpx

        if not self.username or not self.password:
            return TriggerResult(
                dag_id, error=f"no Airflow credentials for {self.url}: set {self.credentials_from}"
            )
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if dag_run_id:
            body["dag_run_id"] = dag_run_id  # a retried trigger is refused (409), never a second run
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self.transport) as http:
                token = self._token(http)
                run = self._call(
                    http, "POST", f"/api/v2/dags/{dag_id}/dagRuns", body, {"Authorization": f"Bearer {token}"}
                )
        except AirflowError as err:
            return TriggerResult(dag_id, error=str(err))
        return TriggerResult(dag_id, dag_run_id=str(run.get("dag_run_id")), state=run.get("state"))

    def _token(self, http: httpx.Client) -> str:
        answer = self._call(
            http, "POST", "/auth/token", {"username": self.username, "password": self.password}
        )
        token = answer.get("access_token")
        if not token:
            raise AirflowError(f"POST {self.url}/auth/token: no access_token in the answer")
        return str(token)

    def _call(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        import httpx

        where = f"{method} {self.url}{path}"
        try:
            r = http.request(method, f"{self.url}{path}", json=body, headers=dict(headers or {}))
        except httpx.HTTPError as err:  # refused, DNS, timeout: the message says which
            raise AirflowError(f"{where}: {type(err).__name__}: {err}") from err
        if r.status_code >= 400:
            raise AirflowError(f"{where}: HTTP {r.status_code}: {r.text[:_BODY_CHARS]}")
        try:
            answer = r.json()
        except ValueError as err:
            raise AirflowError(f"{where}: HTTP {r.status_code} but not JSON: {r.text[:_BODY_CHARS]}") from err
        if not isinstance(answer, dict):
            raise AirflowError(f"{where}: unexpected answer {str(answer)[:_BODY_CHARS]}")
        return answer


def client_from_params(params: Params, env: Mapping[str, str] | None = None) -> AirflowClient | None:
    """The client at `serve.airflow_url` (credentials from the env vars params name); None when unset."""
    cfg = params.serve
    if not cfg.airflow_url:
        return None
    env = os.environ if env is None else env
    return AirflowClient(
        cfg.airflow_url,
        env.get(cfg.airflow_user_env),
        env.get(cfg.airflow_password_env),
        credentials_from=f"the env vars {cfg.airflow_user_env} and {cfg.airflow_password_env}",
    )
