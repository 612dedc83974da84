"""Model deployments for the public API (`POST /v1/models/{name}/deploy`, `/v1/deployments/...`).

A deployment puts a registered version behind the `challenger` alias at a traffic weight through the very
registry tags the canary uses (DESIGN.md section 4: alias move with who/why, `rollout.*` weight, step,
started_at, decision), then, where `serve.airflow_url` is set, triggers the `canary_rollout` DAG, which
continues the ramp from that weight with its guardrails (pipelines.ops.rollout.run_canary).

Deployment records are registered-model tags `deployment.<id>` (JSON), so every server worker and the CLI
see the same ones. A record never stores a status: it is derived from the alias history after the
deployment's own `challenger` move (`alias_seq`) and the rollout tags:

- `ramping` / `paused`: the deployment still holds the alias (decision running / paused);
- `promoted`: `champion` moved to its version;
- `rolled_back`: the alias was removed (guardrail breach, abort, this module's rollback, a failed gate);
- `superseded`: the alias moved again (another deployment, or a new registered challenger).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.errors import StageError
from pipelines.ops import rollout

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.engines.registry import AliasMove, Registry, RolloutState
    from pipelines.ops.airflow_client import AirflowClient

log = logging.getLogger(__name__)

RECORD_PREFIX = "deployment."
DAG_ID = "canary_rollout"
ENDPOINT = "/v1/predict"
GATE_TAG = "gate.verdict"  # written by pipelines.champion_gate.run_gate
GATE_PASS = "pass"
MAX_REASON_CHARS = 1000

RAMPING, PAUSED, PROMOTED, ROLLED_BACK, SUPERSEDED = (
    "ramping",
    "paused",
    "promoted",
    "rolled_back",
    "superseded",
)
STATUSES = (RAMPING, PAUSED, PROMOTED, ROLLED_BACK, SUPERSEDED)
LIVE = (RAMPING, PAUSED)

_ID = re.compile(r"dep-\d{8}T\d{6}Z-[0-9a-f]{6}")


class DeployError(StageError):
    """A deployment request refused; `status_code` is the HTTP answer, `field` the request field at fault."""

    status_code = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeploymentNotFound(DeployError):
    """No such deployment (or model) here."""

    status_code = 404


class GateNotPassed(DeployError):
    """The version has no passing champion-gate verdict and the deploy was not forced."""

    status_code = 409


class DeployConflict(DeployError):
    """The request is valid but the registry's state forbids it (the champion, a deployment not live)."""

    status_code = 409


# ---- pure checks ------------------------------------------------------------------------------------


def check_request(version: str | int, traffic_percentage: float, reason: str, force: bool) -> str:
    """The request's own fields (no registry): the version as the registry spells it, else DeployError."""
    v = str(version).strip()
    if not v.isdigit():
        raise DeployError(f"version: must be a registered version number, got {version!r}", "version")
    w = traffic_percentage
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w <= 100:
        raise DeployError(
            f"traffic_percentage: must be a percent in (0, 100], got {traffic_percentage!r}",
            "traffic_percentage",
        )
    if len(reason) > MAX_REASON_CHARS:
        raise DeployError(f"reason: at most {MAX_REASON_CHARS} characters, got {len(reason)}", "reason")
    if force and not reason.strip():
        raise DeployError("reason: required when force=true (it is recorded with the override)", "reason")
    return str(int(v))


def deployment_status(
    record: dict[str, Any], moves: list[AliasMove], state: RolloutState
) -> tuple[str, AliasMove | None]:
    """(status, the alias move that ended the deployment or None) from the history after its own move."""
    version = record["version"]
    later = [m for m in moves if m.seq > int(record["alias_seq"])]
    end = next((m for m in later if m.alias == CHALLENGER), None)
    window = [m for m in later if end is None or m.seq < end.seq]
    promoted = next((m for m in window if m.alias == CHAMPION and m.version == version), None)
    if promoted is not None:
        return PROMOTED, promoted
    if end is not None:
        return (ROLLED_BACK if end.version is None else SUPERSEDED), end
    decision = state.decision or ""
    if decision.startswith(rollout.PAUSED):
        return PAUSED, None
    if decision.startswith(rollout.ROLLED_BACK):  # weight 0 written, alias removal not yet
        return ROLLED_BACK, None
    return RAMPING, None


def _view(record: dict[str, Any], moves: list[AliasMove], state: RolloutState) -> dict[str, Any]:
    """The public shape of one deployment: the record, its endpoint, its status and rollout figures."""
    status, end = deployment_status(record, moves, state)
    live = status in LIVE
    name = record["name"]
    return {
        **{k: v for k, v in record.items() if k != "alias_seq"},
        "model": f"{name}@{CHALLENGER}",
        "endpoint": ENDPOINT,
        "status": status,
        "live": live,
        # the challenger's share now: the rollout tags while live, nothing once ended
        "step": state.step if live else None,
        "weight": state.challenger_weight if live else 0.0,
        "decision": state.decision if live else (end.why if end is not None else state.decision),
        "started_at": state.started_at if live else None,
        "updated_at": state.updated_at if live else None,
        "ended": None if end is None else {"when": end.when, "who": end.who, "why": end.why},
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    # sortable by time, random tail: two workers deploying in the same second never collide
    return f"dep-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


# ---- records in the registry ------------------------------------------------------------------------


def _open(params: Params, name: str, reg: Registry | None) -> Registry:
    """The registry, once `name` is the model this project serves (else a 404 naming both)."""
    from pipelines.engines.registry import open_registry

    if name != params.register_.model_name:
        raise DeploymentNotFound(
            f"model {name!r} not found: this project deploys {params.register_.model_name!r}"
        )
    return reg or open_registry(params)


def _records(reg: Registry, name: str) -> dict[str, dict[str, Any]]:
    if not reg.model_exists(name):
        return {}
    tags = reg.client.get_registered_model(name).tags
    return {k[len(RECORD_PREFIX) :]: json.loads(v) for k, v in tags.items() if k.startswith(RECORD_PREFIX)}


def _write(reg: Registry, record: dict[str, Any]) -> None:
    key = f"{RECORD_PREFIX}{record['deployment_id']}"
    reg.client.set_registered_model_tag(record["name"], key, json.dumps(record, sort_keys=True))


def _record(params: Params, deployment_id: str, reg: Registry | None) -> tuple[Registry, dict[str, Any]]:
    name = params.register_.model_name
    reg = _open(params, name, reg)
    found = _records(reg, name).get(deployment_id) if _ID.fullmatch(deployment_id) else None
    if found is None:
        raise DeploymentNotFound(f"deployment {deployment_id!r} not found for model {name!r}")
    return reg, found


# ---- actions ----------------------------------------------------------------------------------------


def _gate_verdict(reg: Registry, name: str, version: str, force: bool) -> str | None:
    """The version's gate verdict, once it exists, is not the champion and passed (or force)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(reg.get_version(name, version).tags)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise DeployError(f"version: {name} has no version {version}", "version") from None
    if reg.alias_version(name, CHAMPION) == version:
        raise DeployConflict(f"version: v{version} is already the champion of {name}", "version")
    verdict = tags.get(GATE_TAG)
    if verdict != GATE_PASS and not force:
        found = f"champion gate verdict is {verdict!r}" if verdict else "has no champion gate verdict"
        raise GateNotPassed(
            f"{name} v{version}: {found} (tag {GATE_TAG} must be {GATE_PASS!r}); "
            "force=true with a non-empty reason overrides",
            "version",
        )
    return verdict


def _take_challenger(
    params: Params, reg: Registry, record: dict[str, Any], why: str, who: str
) -> tuple[AliasMove, int]:
    """Alias `challenger` -> the version and the rollout tags at its weight, in an order safe for serving."""
    name, version, weight = record["name"], record["version"], record["traffic_percentage"]
    dep = record["deployment_id"]
    # microseconds: a canary loop compares started_at to learn that a deploy restarted the canary
    started = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    old = reg.alias_version(name, CHALLENGER)
    if old not in (None, version) and reg.get_rollout_state(name).challenger_weight > 0:
        # another version is ramping: weight 0 first, or serving could route its share to the new one
        reg.set_rollout_state(
            name, who=who, started_at=started, challenger_weight=0.0, decision=f"superseded: v{old} by {dep}"
        )
    move = reg.move_alias(name, CHALLENGER, version, who=who, why=why)
    step = rollout.step_at_least(params.rollout.steps, weight)
    # started_at first: a DAG run still ramping sees the restart before any weight change
    reg.set_rollout_state(
        name,
        who=who,
        started_at=started,
        challenger_weight=float(weight),
        step=step,
        decision=f"{rollout.RUNNING}: v{version} at {weight:g}% ({dep})",
    )
    return move, step


def deploy(
    params: Params,
    name: str,
    version: str,
    traffic_percentage: float,
    reason: str = "",
    *,
    force: bool = False,
    who: str | None = None,
    reg: Registry | None = None,
    airflow: AirflowClient | None = None,
) -> dict[str, Any]:
    """Make `version` the challenger at `traffic_percentage` and hand the ramp to the canary DAG.

    Refused (DeployError and subclasses, nothing changed) for another model, an unknown version, the
    champion, a weight outside (0, 100], a version whose gate did not pass unless `force` with a reason.
    Once the registry changed, an Airflow failure is recorded in the deployment (`airflow.error`).
    """
    from pipelines.engines.registry import current_user

    reg = _open(params, name, reg)
    reason = reason or ""  # the API's optional field may arrive as None
    version = check_request(version, traffic_percentage, reason, force)
    verdict = _gate_verdict(reg, name, version, force)
    who = who or current_user()
    forced = verdict != GATE_PASS
    record: dict[str, Any] = {
        "deployment_id": _new_id(),
        "name": name,
        "version": version,
        "traffic_percentage": float(traffic_percentage),
        "reason": reason.strip(),
        "forced": forced,
        "gate_verdict": verdict,
        "who": who,
        "created_at": _now(),
        "airflow": None,
        "rollback": None,
    }
    why = f"deployment {record['deployment_id']} at {traffic_percentage:g}%"
    why += f" (forced past gate verdict {verdict or 'none'})" if forced else " (champion gate passed)"
    why += f": {record['reason']}" if record["reason"] else ""
    move, step = _take_challenger(params, reg, record, why, who)
    record.update(alias_seq=move.seq, step=step)
    _write(reg, record)  # recorded before Airflow is called: a crash there leaves a findable deployment
    log.info("deployed %s v%s at %g%% (%s)", name, version, traffic_percentage, record["deployment_id"])
    client = airflow
    if client is None:
        from pipelines.ops.airflow_client import client_from_params

        client = client_from_params(params)
    if client is not None:
        record["airflow"] = _trigger(client, record)
        _write(reg, record)
    state = reg.get_rollout_state(name)
    return _view(record, reg.history(name), state)


def _trigger(client: AirflowClient, record: dict[str, Any]) -> dict[str, Any]:
    """Trigger canary_rollout for the deployment; any failure becomes the recorded error text."""
    conf = {k: record[k] for k in ("deployment_id", "name", "version", "traffic_percentage", "step", "who")}
    try:
        result = client.trigger_dag(DAG_ID, conf, dag_run_id=f"deploy__{record['deployment_id']}").to_dict()
    except Exception as err:  # the registry already changed: a client bug is recorded, never a 500
        result = {
            "dag_id": DAG_ID,
            "dag_run_id": None,
            "state": None,
            "error": f"{type(err).__name__}: {err}",
        }
    if result.get("error"):
        log.warning("deployment %s: canary DAG not triggered: %s", record["deployment_id"], result["error"])
    return result


def get_deployment(params: Params, deployment_id: str, reg: Registry | None = None) -> dict[str, Any]:
    """One deployment: its status, step, weight, decision and, while live, the guardrail readings."""
    reg, record = _record(params, deployment_id, reg)
    name = record["name"]
    view = _view(record, reg.history(name), reg.get_rollout_state(name))
    view["guardrails"] = guardrail_readings(params, record) if view["live"] else None
    return view


def rollback_deployment(
    params: Params, deployment_id: str, reason: str, who: str | None = None, reg: Registry | None = None
) -> dict[str, Any]:
    """Roll the canary back (weight 0, alias removed, reason recorded) if this deployment is the live one."""
    from pipelines.engines.registry import current_user

    reason = reason or ""
    if not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise DeployError(f"reason: required, at most {MAX_REASON_CHARS} characters", "reason")
    reg, record = _record(params, deployment_id, reg)
    name = record["name"]
    status, _ = deployment_status(record, reg.history(name), reg.get_rollout_state(name))
    if status not in LIVE:
        raise DeployConflict(
            f"deployment {deployment_id} is {status}: only the live deployment of {name} can be rolled back",
            "deployment_id",
        )
    who = who or current_user()
    rollout.rollback_canary(params, f"deployment {deployment_id}: {reason.strip()}", reg, who=who)
    record["rollback"] = {"who": who, "when": _now(), "reason": reason.strip()}
    _write(reg, record)
    view = _view(record, reg.history(name), reg.get_rollout_state(name))
    view["guardrails"] = None
    return view


def list_deployments(params: Params, name: str, reg: Registry | None = None) -> list[dict[str, Any]]:
    """Every deployment of `name`, newest first, with its status (no guardrail readings: cheap)."""
    reg = _open(params, name, reg)
    records = sorted(_records(reg, name).values(), key=lambda r: int(r["alias_seq"]), reverse=True)
    if not records:
        return []
    moves, state = reg.history(name), reg.get_rollout_state(name)
    return [_view(r, moves, state) for r in records]


# ---- live readings ----------------------------------------------------------------------------------


def guardrail_readings(params: Params, record: dict[str, Any]) -> dict[str, Any]:
    """Per-arm figures of the prediction log since the deployment, judged by the canary's guardrails.

    verdict: `insufficient_traffic` (under rollout.min_requests challenger requests), `breach` (the DAG
    rolls back at its next poll), `healthy`; `error` when the log cannot be read.
    """
    from pipelines.ops.guardrails import evaluate_step

    cfg = params.rollout
    since = dt.datetime.fromisoformat(record["created_at"])
    out: dict[str, Any] = {"since": record["created_at"], "min_requests": cfg.min_requests}
    out["limits"] = cfg.guardrails.model_dump()
    try:
        stats = rollout.live_stats(params, since, record["version"])
    except (OSError, ValueError, KeyError) as err:  # a damaged log must not fail the status call
        return {**out, "verdict": "error", "reason": f"prediction log unreadable: {err}"}
    decision = evaluate_step(stats, cfg.guardrails, cfg.min_requests)
    verdict = {"wait": "insufficient_traffic", "rollback": "breach"}.get(decision.action, "healthy")
    return {**out, "verdict": verdict, "reason": decision.reason, **decision.figures}
